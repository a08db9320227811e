// Attention::eval_gpu on MLX's Metal backend (compiled only with MLX_BUILD_METAL): the
// shared encoder (cpp/gpu/attention.cpp) dispatches on a MetalLauncher.  q / k / v and
// the mask are bound with their strides as they are (no copies).
#include "gpu/attention.h"
#include "metal/metal_launcher.h"
#include "mlx/allocator.h"
#include "ops/attention.h"

namespace marlin {

void Attention::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  metal::MetalLauncher launcher(stream());
  gpu::encode_attention(launcher, inputs, out, scale(), mask(), attention_sinks(*this, inputs));
}

} // namespace marlin
