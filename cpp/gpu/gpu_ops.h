// Which ops have GPU kernels in this build (the rest raise in eval_gpu), so Python
// layers can put each op on the GPU stream only where it runs there.
#pragma once

#include <string>
#include <vector>

namespace marlin {

inline std::vector<std::string> gpu_ops() {
  std::vector<std::string> ops;
#if defined(MLX_MARLIN_CUDA)
  ops.push_back("fp4_gemm");
#endif
  return ops;
}

} // namespace marlin
