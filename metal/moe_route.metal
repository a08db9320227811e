// MoE routing on Apple GPUs, with the exact semantics of route_token in
// cpp/common/moe_plan.h (the CPU backend).
//
// moe_route_<dtype>: one simdgroup per token.  The E <= 256 experts are spread over
//   the 32 lanes (E padded to P = max(32, next power of two), P/32 <= 8 per lane,
//   expert lane*P/32 + j in register j) and sorted by a bitonic network: compare-
//   exchanges at distance < P/32 stay in a lane's registers, larger distances use
//   simd_shuffle_xor.  The sort key is one 64-bit value (as uint2, lexicographic):
//   descending logit (NaN ranked as -inf, after a real -inf), then ascending expert
//   id, so ties go to the lower id and the sorted order is the CPU's partial_sort
//   order.  Softmax statistics (NaN-ignoring max, sum of exp) are simd_max /
//   simd_sum reductions; the top-k weights are exp(l - max) / (sum of all, or of the
//   k selected with `normalize`), written in the logits' dtype, or in float32 (the
//   _wf32 kernels, for moe_mlp).
// Expert grouping (a stable counting sort by expert with simdgroup prefix sums) is
// moe_group_<index type> in metal/moe_gemm.metal.
#include "common/moe_params.h"
#include <metal_stdlib>

using namespace metal;

namespace marlin {

// Ascending order of the returned keys = routing rank.
METAL_FUNC uint2 route_sort_key(float x, uint e) {
  const bool nan = isnan(x);
  float key = nan ? -INFINITY : x;
  if (key == 0.0f) key = 0.0f;  // -0 and +0 are equal logits: tie on the id
  const uint b = as_type<uint>(key);
  const uint ord = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // increases with the float
  return uint2(~ord, (uint(nan) << 16) | e);
}
METAL_FUNC bool key_less(uint2 a, uint2 b) {
  return a.x < b.x || (a.x == b.x && a.y < b.y);
}

template <typename T, typename W = T>
[[kernel]] void moe_route(const device T* logits [[buffer(0)]], device uint* idx [[buffer(1)]],
                          device W* weights [[buffer(2)]], constant MoeRouteParams& p [[buffer(3)]],
                          uint group [[threadgroup_position_in_grid]],
                          uint sg [[simdgroup_index_in_threadgroup]],
                          uint lane [[thread_index_in_simdgroup]]) {
  const int t = int(group) * kMoeRouteTokensPerGroup + int(sg);
  if (t >= p.T) return;  // the whole simdgroup
  const device T* row = logits + long(t) * p.token_stride;
  const long es = p.expert_stride;
  int P = 32;
  while (P < p.E) P <<= 1;
  const int epl = P / 32;  // experts per lane (1, 2, 4 or 8)

  uint2 key[8];
  for (int j = 0; j < epl; ++j) {
    const int e = int(lane) * epl + j;
    key[j] = e < p.E ? route_sort_key(float(row[e * es]), uint(e)) : uint2(0xFFFFFFFFu);
  }
  // Bitonic sort, ascending, of element i = lane * epl + j.
  for (int size = 2; size <= P; size <<= 1) {
    for (int d = size / 2; d > 0; d /= 2) {
      if (d < epl) {
        for (int j = 0; j < epl; ++j) {
          if (j & d) continue;
          const int l = j | d;
          const bool asc = ((int(lane) * epl + j) & size) == 0;
          if (asc ? key_less(key[l], key[j]) : key_less(key[j], key[l])) {
            const uint2 tmp = key[j];
            key[j] = key[l];
            key[l] = tmp;
          }
        }
      } else {
        const ushort lane_mask = ushort(d / epl);
        for (int j = 0; j < epl; ++j) {
          const uint2 other = simd_shuffle_xor(key[j], lane_mask);
          const int i = int(lane) * epl + j;
          const bool keep_min = ((i & d) == 0) == ((i & size) == 0);
          const bool other_less = key_less(other, key[j]);
          if (keep_min == other_less) key[j] = other;
        }
      }
    }
  }

  // Softmax over all E experts (fp32, max-subtracted; NaN-ignoring max).
  float m = -INFINITY;
  for (int e = int(lane); e < p.E; e += 32) {
    const float x = float(row[e * es]);
    if (!isnan(x)) m = max(m, x);
  }
  m = simd_max(m);
  if (!isfinite(m)) m = 0.0f;  // all -inf / +inf: let the arithmetic give NaN / 0 honestly
  float total = 0.0f;
  for (int e = int(lane); e < p.E; e += 32) total += exp(float(row[e * es]) - m);
  total = simd_sum(total);
  float w[8];
  float selected = 0.0f;
  for (int j = 0; j < epl; ++j) {
    w[j] = 0.0f;
    if (int(lane) * epl + j < p.k) {
      w[j] = exp(float(row[(key[j].y & 0xFFFFu) * es]) - m);
      selected += w[j];
    }
  }
  selected = simd_sum(selected);
  const float denom = p.normalize ? selected : total;
  for (int j = 0; j < epl; ++j) {
    const int pos = int(lane) * epl + j;
    if (pos < p.k) {
      idx[long(t) * p.k + pos] = key[j].y & 0xFFFFu;
      weights[long(t) * p.k + pos] = W(w[j] / denom);
    }
  }
}

} // namespace marlin

// Host names: moe_kernel_name(kind, dtype) in cpp/common/moe_plan.h.
template [[host_name("marlin_moe_route_f16")]] [[kernel]] decltype(marlin::moe_route<half>) marlin::moe_route<half>;
template [[host_name("marlin_moe_route_bf16")]] [[kernel]] decltype(marlin::moe_route<bfloat>) marlin::moe_route<bfloat>;
template [[host_name("marlin_moe_route_f32")]] [[kernel]] decltype(marlin::moe_route<float>) marlin::moe_route<float>;
// float32 weights from half / bfloat logits (moe_mlp: the combine weights are never rounded).
template [[host_name("marlin_moe_route_f16_wf32")]] [[kernel]] decltype(marlin::moe_route<half, float>)
    marlin::moe_route<half, float>;
template [[host_name("marlin_moe_route_bf16_wf32")]] [[kernel]] decltype(marlin::moe_route<bfloat, float>)
    marlin::moe_route<bfloat, float>;
