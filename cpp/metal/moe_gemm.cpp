// MoeGemm::eval_gpu on MLX's Metal backend (compiled only with MLX_BUILD_METAL).
// The grouping kernel's status (invalid expert ids) cannot be read back without a
// sync, and kernels cannot raise: the rows that depend on an invalid id are NaN
// (docs/metal.md), where the CPU and emulator backends raise.
#include "gpu/moe_gemm.h"
#include "metal/metal_launcher.h"
#include "mlx/allocator.h"
#include "ops/moe.h"

namespace marlin {

void MoeGemm::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  metal::MetalLauncher launcher(stream());
  gpu::encode_moe_gemm(launcher, inputs, out, group_size_, activation_, has_weights_);
}

} // namespace marlin
