// Which ops have GPU kernels in this build (the rest raise in eval_gpu), so Python
// layers can put each op on the GPU stream only where it runs there.
#pragma once

#include <string>
#include <vector>

namespace marlin {

inline std::vector<std::string> gpu_ops() {
  std::vector<std::string> ops;
#if defined(MLX_MARLIN_CUDA)
  for (const char* op : {"fp4_gemm", "fp4_dequantize", "attention", "moe_gemm", "moe_route", "moe_mlp"})
    ops.push_back(op);
#endif
#if defined(MLX_MARLIN_METAL)  // cpp/metal/: MetalLauncher + the encoders of cpp/gpu/
  for (const char* op : {"fp4_gemm", "moe_gemm", "moe_route", "moe_mlp", "attention"}) ops.push_back(op);
#endif
  return ops;
}

} // namespace marlin
