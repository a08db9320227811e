// encode_moe_route: MoeRouteParams (cpp/common/moe_params.h) -> a dispatch of
// metal/moe_route.metal.
//   route: marlin_moe_route_<dtype>, grid (ceil(T / 4)), 128 threads (a simdgroup per token);
//          buffers logits, idx, weights, params
#include "gpu/moe_route.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/moe_params.h"
#include "common/moe_plan.h"
#include "gpu/encode_util.h"
#include "ops/validate.h"

namespace marlin::gpu {

namespace {
} // namespace

bool moe_route_supported(int num_experts) {
  return num_experts >= 1 && num_experts <= kMoeMaxExperts;
}

void encode_moe_route(KernelLauncher& launcher, const mx::array& logits, mx::array& idx, mx::array& weights, int top_k,
                      bool normalize) {
  // logits: [T, E] with any strides, or [..., E] row-major (what MoeRoute and MoeMlp
  // hand over) whose leading dims hold the T tokens.
  const int T = leading_rows("moe_route", "logits", logits);
  const int E = logits.shape(-1);
  if (!moe_route_supported(E))
    throw std::invalid_argument("[moe_route] the GPU kernels take at most " + std::to_string(kMoeMaxExperts) +
                                " experts, got " + std::to_string(E) + ".");
  if (T == 0) return;
  MoeRouteParams p{};
  p.T = T;
  p.E = E;
  p.k = top_k;
  p.normalize = normalize ? 1 : 0;
  const bool matrix = logits.ndim() == 2;
  p.token_stride = matrix ? static_cast<int>(logits.strides()[0]) : E;
  p.expert_stride = matrix ? static_cast<int>(logits.strides()[1]) : 1;
  Dispatch d;
  if (weights.dtype() != logits.dtype() && weights.dtype() != mx::float32)
    throw std::invalid_argument("[moe_route] the GPU kernels write weights in the logits' dtype or float32");
  d.kernel = moe_kernel_name(weights.dtype() == logits.dtype() ? MoeKernel::Route : MoeKernel::RouteWeightsF32,
                             gpu_dtype(logits.dtype(), "moe_route"));
  d.threadgroups = {static_cast<uint32_t>((T + kMoeRouteTokensPerGroup - 1) / kMoeRouteTokensPerGroup), 1, 1};
  d.threads_per_group = {32u * kMoeRouteTokensPerGroup, 1, 1};
  launcher.dispatch(d, {KernelArg::input(logits), KernelArg::output(idx), KernelArg::output(weights),
                        KernelArg::value(p)});
}

} // namespace marlin::gpu
