// Backend-neutral GPU encoding of Attention (see kernel_launcher.h and
// metal/attention.metal).
#pragma once

#include <vector>

#include "gpu/kernel_launcher.h"
#include "ops/attention.h"

namespace marlin::gpu {

// inputs: q [B, Hq, Lq, D], k / v [B, Hkv, Lk, D] (any strides), and for Bool / Additive
// masks the mask as given (broadcast through zero strides); `sinks` float32 [Hq] or
// nullptr.  `out` [B, Hq, Lq, D] must already have its (row-contiguous) data; the
// launcher binds it as is.
void encode_attention(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out, float scale,
                      AttentionMask mask, const mx::array* sinks);

} // namespace marlin::gpu
