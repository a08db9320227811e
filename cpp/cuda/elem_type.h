// Element types of the CUDA kernels' activations and scales, shared by host code (MLX
// headers) and kernel code (no MLX header).
#pragma once

namespace marlin::cuda {

enum class ElemType : int { Float16 = 0, BFloat16 = 1, Float32 = 2 };

}  // namespace marlin::cuda
