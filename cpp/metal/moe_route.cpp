// MoeRoute::eval_gpu on MLX's Metal backend (compiled only with MLX_BUILD_METAL): the
// shared encoder (cpp/gpu/moe_route.cpp) dispatches on a MetalLauncher.  The kernels
// take E <= kMoeMaxExperts; moe_route() (cpp/ops/moe.cpp) puts larger E on the CPU
// stream, and encode_moe_route raises for it.
#include "gpu/moe_route.h"
#include "metal/metal_launcher.h"
#include "mlx/allocator.h"
#include "ops/moe.h"

namespace marlin {

void MoeRoute::eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
  metal::MetalLauncher launcher(stream());
  gpu::encode_moe_route(launcher, inputs[0], outputs[0], outputs[1], top_k(), normalize());
}

} // namespace marlin
