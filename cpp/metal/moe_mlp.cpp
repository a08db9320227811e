// MoeMlp::eval_gpu on MLX's Metal backend (compiled only with MLX_BUILD_METAL): the
// shared encoder (cpp/gpu/moe_mlp.cpp) dispatches route -> group -> gate/up GEMM with
// act(gate) * up fused -> down GEMM -> combine on a MetalLauncher.  moe_mlp()
// (cpp/ops/moe.cpp) puts E > kMoeMaxExperts on the CPU stream.
#include "gpu/moe_mlp.h"
#include "metal/metal_launcher.h"
#include "mlx/allocator.h"
#include "ops/moe.h"

namespace marlin {

void MoeMlp::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  metal::MetalLauncher launcher(stream());
  gpu::encode_moe_mlp(launcher, inputs, out, top_k_, group_size_, activation_, normalize_, fused_gate_up_);
}

} // namespace marlin
