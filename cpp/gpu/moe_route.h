// Backend-neutral GPU encoding of MoE routing (see kernel_launcher.h and
// metal/moe_route.metal).  Expert grouping is part of encode_moe_gemm (gpu/moe_gemm.h).
#pragma once

#include "gpu/kernel_launcher.h"

namespace marlin::gpu {

// Largest expert count the routing kernels take (kMoeMaxExperts); callers
// with more experts keep the CPU path.
bool moe_route_supported(int num_experts);

// logits [T, E] (f16 / bf16 / f32, any strides) or [..., E] (row-major, T = the
// product of the leading dims) -> idx [T, k] uint32 (descending
// weight, ties to the lower id) and weights [T, k] in logits' dtype or float32; `idx`
// and `weights` must already have their (contiguous) data.
void encode_moe_route(KernelLauncher& launcher, const mx::array& logits, mx::array& idx, mx::array& weights, int top_k,
                      bool normalize);

} // namespace marlin::gpu
