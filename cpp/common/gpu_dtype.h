// Element types of the GPU kernels, one enum for every kernel family: the values name
// kernel instantiations (gpu_dtype_name) and travel in parameter structs.
#pragma once

namespace marlin {

enum class GpuDtype : int { Float16 = 0, BFloat16 = 1, Float32 = 2 };

inline const char* gpu_dtype_name(GpuDtype t) {
  return t == GpuDtype::Float16 ? "f16" : t == GpuDtype::BFloat16 ? "bf16" : "f32";
}

} // namespace marlin
