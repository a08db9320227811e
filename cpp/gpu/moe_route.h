// Backend-neutral GPU encoding of MoE routing and expert grouping (see
// kernel_launcher.h and metal/moe_route.metal).
#pragma once

#include "gpu/kernel_launcher.h"

namespace marlin::gpu {

// Largest expert count the routing / grouping kernels take (kMoeMaxExperts); callers
// with more experts keep the CPU path.
bool moe_route_supported(int num_experts);

// logits [T, E] (f16 / bf16 / f32, any strides) -> idx [T, k] uint32 (descending
// weight, ties to the lower id) and weights [T, k] in logits' dtype; `idx` and
// `weights` must already have their (contiguous) data.
void encode_moe_route(KernelLauncher& launcher, const mx::array& logits, mx::array& idx, mx::array& weights, int top_k,
                      bool normalize);

// Grouping of the (token, slot) pairs of expert_ids [T, k] (uint32 / int32, contiguous)
// by expert: the arrays of build_expert_groups (common/moe_plan.h) as uint32 scratch,
// valid until the command completes.  stats = [first invalid pair or -1, active experts,
// largest group] (int32); offsets / pairs / position are not written when an id is
// outside [0, E).
struct MoeGroupArrays {
  mx::array offsets;   // [E + 1]
  mx::array pairs;     // [T * k]
  mx::array position;  // [T * k]
  mx::array stats;     // [3]
};
MoeGroupArrays encode_moe_group(KernelLauncher& launcher, const mx::array& expert_ids, int num_experts);

} // namespace marlin::gpu
