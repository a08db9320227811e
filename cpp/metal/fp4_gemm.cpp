// FP4Gemm::eval_gpu on MLX's Metal backend (compiled only with MLX_BUILD_METAL): the
// shared encoder (cpp/gpu/fp4_gemm.cpp) dispatches on a MetalLauncher.
#include "gpu/fp4_gemm.h"
#include "metal/metal_launcher.h"
#include "mlx/allocator.h"
#include "ops/fp4_gemm.h"

namespace marlin {

void FP4Gemm::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  metal::MetalLauncher launcher(stream());
  gpu::encode_fp4_gemm(launcher, inputs, out, group_size_, activation_, transpose_);
}

} // namespace marlin
