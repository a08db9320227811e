// MoE routing and expert grouping on Apple GPUs, with the exact semantics of
// route_token / build_expert_groups in cpp/common/moe_plan.h (the CPU backend).
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
//   k selected with `normalize`).
// moe_group: one threadgroup of 8 simdgroups runs a stable counting sort of the
//   (token, slot) pairs by expert without atomics.  Simdgroup s owns a contiguous
//   range of pairs, processed in chunks of 32; within a chunk each lane finds its
//   rank among the earlier lanes with the same expert (32 simd_shuffle steps), and
//   the simdgroup's per-expert counters live in registers of the owning lane
//   (expert e: lane e % 32, slot e / 32), updated during the same 32 shuffles.  A simdgroup prefix sum (simd_prefix_inclusive_sum over experts, then
//   over the 8 simdgroup totals) gives offsets[] and each simdgroup's start cursor
//   per expert; a second pass over the chunks scatters pairs[] / position[] in pair
//   order (stable, deterministic: the grouping of build_expert_groups).
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

template <typename T>
[[kernel]] void moe_route(const device T* logits [[buffer(0)]], device uint* idx [[buffer(1)]],
                          device T* weights [[buffer(2)]], constant MoeRouteParams& p [[buffer(3)]],
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
      weights[long(t) * p.k + pos] = T(w[j] / denom);
    }
  }
}

// One chunk of 32 pairs (one per lane; e = 0xFFFFFFFF for lanes past the range):
// `rank` = earlier lanes holding this lane's expert; every lane also adds the chunk's
// pairs of the experts it owns (e % 32 == lane) to its register counters cnt[e / 32].
// All data moves by simd_shuffle: no atomics, no shared counters.
METAL_FUNC uint chunk_rank_and_count(uint e, uint lane, uint E, thread uint* cnt) {
  uint rank = 0;
  for (ushort j = 0; j < 32; ++j) {
    const uint ej = simd_shuffle(e, j);
    if (ej == e && j < lane) ++rank;
    if (ej < E && (ej & 31u) == lane) ++cnt[ej >> 5];
  }
  return rank;
}

// stats: [first pair with an expert id outside [0, E) or -1, active experts, largest group].
// offsets [E + 1], pairs [num_pairs], position [num_pairs] (uint32); none of them is
// written when an id is invalid.
[[kernel]] void marlin_moe_group(const device uint* experts [[buffer(0)]], device uint* offsets [[buffer(1)]],
                                 device uint* pairs [[buffer(2)]], device uint* position [[buffer(3)]],
                                 device int* stats [[buffer(4)]], constant MoeGroupParams& p [[buffer(5)]],
                                 uint tid [[thread_index_in_threadgroup]],
                                 uint sg [[simdgroup_index_in_threadgroup]],
                                 uint lane [[thread_index_in_simdgroup]]) {
  constexpr int S = kMoeGroupSimdgroups;
  constexpr int kSlots = kMoeMaxExperts / 32;  // experts owned per lane
  threadgroup uint hist[S][kMoeMaxExperts];    // per-simdgroup counts, then start cursors
  threadgroup uint red_bad[S];
  threadgroup uint red_sum[S];
  threadgroup uint red_active[S];
  threadgroup uint red_max[S];
  const int N = p.num_pairs;
  const uint E = uint(p.E);
  const int per = (N + S - 1) / S;
  const int begin = min(N, int(sg) * per);
  const int end = min(N, begin + per);

  // Pass 1: per-simdgroup histograms, in the owners' registers.
  uint cnt[kSlots];
  for (int i = 0; i < kSlots; ++i) cnt[i] = 0;
  uint first_bad = 0xFFFFFFFFu;
  for (int c = begin; c < end; c += 32) {
    const int pi = c + int(lane);
    const bool live = pi < end;
    const uint e = live ? experts[pi] : 0xFFFFFFFFu;
    if (live && e >= E) first_bad = min(first_bad, uint(pi));
    chunk_rank_and_count(e, lane, E, cnt);
  }
  for (int i = 0; i < kSlots; ++i) hist[sg][i * 32 + int(lane)] = cnt[i];
  first_bad = simd_min(first_bad);
  if (lane == 0) red_bad[sg] = first_bad;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int s = 0; s < S; ++s) first_bad = min(first_bad, red_bad[s]);
  if (first_bad != 0xFFFFFFFFu) {
    if (tid == 0) {
      stats[0] = int(first_bad);
      stats[1] = 0;
      stats[2] = 0;
    }
    return;  // uniform: every thread saw the same minimum
  }

  // Pass 2: expert totals and their exclusive prefix sum (thread tid = expert tid):
  // simd_prefix_inclusive_sum within a simdgroup, then over the simdgroup totals.
  uint total = 0;
  if (tid < E)
    for (int s = 0; s < S; ++s) total += hist[s][tid];
  const uint incl = simd_prefix_inclusive_sum(total);
  const uint active = simd_sum(uint(total > 0));
  const uint largest = simd_max(total);
  if (lane == 31) red_sum[sg] = incl;
  if (lane == 0) {
    red_active[sg] = active;
    red_max[sg] = largest;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  uint before = 0;
  for (int s = 0; s < int(sg); ++s) before += red_sum[s];
  const uint off = before + incl - total;
  if (tid < E) {
    uint run = off;  // simdgroup s starts expert tid's pairs after those of s' < s
    for (int s = 0; s < S; ++s) {
      const uint h = hist[s][tid];
      hist[s][tid] = run;
      run += h;
    }
    offsets[tid] = off;
  }
  if (tid == 0) {
    offsets[E] = uint(N);
    uint act = 0, mx = 0;
    for (int s = 0; s < S; ++s) {
      act += red_active[s];
      mx = max(mx, red_max[s]);
    }
    stats[0] = -1;
    stats[1] = int(act);
    stats[2] = int(mx);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  // Pass 3: scatter in pair order; cursors live in the owners' registers.
  for (int i = 0; i < kSlots; ++i) cnt[i] = hist[sg][i * 32 + int(lane)];
  for (int c = begin; c < end; c += 32) {
    const int pi = c + int(lane);
    const bool live = pi < end;
    const uint e = live ? experts[pi] : 0xFFFFFFFFu;
    uint base = 0;
    for (int i = 0; i < kSlots; ++i) {  // fetch cursor[e] from its owner, slot by slot
      const uint v = simd_shuffle(cnt[i], ushort(e & 31u));
      if (live && int(e >> 5) == i) base = v;
    }
    const uint rank = chunk_rank_and_count(e, lane, E, cnt);
    if (live) {
      const uint dest = base + rank;
      pairs[dest] = uint(pi);
      position[pi] = dest;
    }
  }
}

} // namespace marlin

// Host names: moe_kernel_name(kind, dtype) in cpp/common/moe_plan.h.
template [[host_name("marlin_moe_route_f16")]] [[kernel]] decltype(marlin::moe_route<half>) marlin::moe_route<half>;
template [[host_name("marlin_moe_route_bf16")]] [[kernel]] decltype(marlin::moe_route<bfloat>) marlin::moe_route<bfloat>;
template [[host_name("marlin_moe_route_f32")]] [[kernel]] decltype(marlin::moe_route<float>) marlin::moe_route<float>;
