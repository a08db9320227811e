// MoE expert GEMM over FP4 expert weights w [E, K/8, N], scales [E, K/g, N]:
// grouping (stable counting sort by expert), grouped GEMM tiles with the fp4_gemm
// machinery (plain, or gate/up with act(gate) * up fused for moe_mlp), weighted
// combine.  cpp/common/moe_params.h describes the pipeline and bindings;
// cpp/gpu/moe_gemm.cpp and cpp/gpu/moe_mlp.cpp encode it.
#include <metal_stdlib>
#include <metal_simdgroup_matrix>

#include "common/moe_params.h"
#include "marlin/gemm_core.h"

using namespace metal;
using namespace marlin;

// A quiet NaN of each storage type, from its bit pattern: Metal compiles with fast math,
// under which a NaN produced by arithmetic or a float conversion may be assumed away.
template <typename O>
METAL_FUNC O quiet_nan();
template <>
METAL_FUNC float quiet_nan<float>() {
  return as_type<float>(0x7FC00000u);
}
template <>
METAL_FUNC half quiet_nan<half>() {
  return as_type<half>(ushort(0x7E00));
}
#if defined(__HAVE_BFLOAT__)
template <>
METAL_FUNC bfloat quiet_nan<bfloat>() {
  return as_type<bfloat>(ushort(0x7FC0));
}
#endif

// One chunk of 32 pairs (one per lane; e = 0xFFFFFFFF for lanes without a pair of the
// current expert window): `rank` = earlier lanes holding this lane's expert; every lane
// also adds the chunk's pairs of the experts it owns (e % 32 == lane) to its register
// counters cnt[e / 32].  All data moves by simd_shuffle: no atomics, no shared counters.
METAL_FUNC uint chunk_rank_and_count(uint e, uint lane, uint W, thread uint* cnt) {
  uint rank = 0;
  for (ushort j = 0; j < 32; ++j) {
    const uint ej = simd_shuffle(e, j);
    if (ej == e && j < lane) ++rank;
    if (ej < W && (ej & 31u) == lane) ++cnt[ej >> 5];
  }
  return rank;
}

// Expert id of pair q relative to the window [w0, w0 + W), or 0xFFFFFFFF outside it
// (and for ids outside [0, E)).
template <typename I>
METAL_FUNC uint window_expert(const device I* indices, int q, long w0, long W) {
  const long e = long(indices[q]) - w0;
  return (e >= 0 && e < W) ? uint(e) : 0xFFFFFFFFu;
}

// One threadgroup of kMoeGroupSimdgroups simdgroups: the grouping of build_expert_groups
// (cpp/common/moe_plan.h), a stable counting sort of the (token, slot) pairs by expert
// with simdgroup prefix sums and no atomics.  Simdgroup s owns a contiguous range of
// pairs, taken in chunks of 32.  Experts are processed in windows of
// kMoeGroupWindow (= 256, 8 per lane; one window covers E <= 256, larger E costs one
// more pass over the pairs per window).  Per window:
//   1. per-simdgroup histograms: in a chunk every lane gets its rank among earlier
//      lanes with the same expert (32 simd_shuffles) and the owner lane of expert e
//      (lane e % 32, register e / 32) counts it: counters live in registers;
//   2. expert totals (thread tid = expert w0 + tid) -> simd_prefix_inclusive_sum, then
//      across the simdgroup totals -> offsets[] and each simdgroup's start cursor per
//      expert; the same two-level scan over ceil(count / tile_m) places each expert's
//      tiles (expert, row begin, row end, 0) in the tile list, written by its thread;
//   3. scatter pairs[] / position[] in pair order, cursors fetched from their owner
//      lanes by shuffle (stable, deterministic).
// Pairs with an expert id outside [0, E) belong to no expert (position -1) and the first
// one is reported in status[1] (the emulator build raises it as the CPU backend does).
// A kernel cannot raise on Metal, so they are never dropped silently either: they are
// listed after the valid pairs (pairs[offsets[E] ..) in pair order) under tiles of
// expert -1, for which the GEMM kernels write NaN rows, and moe_combine writes NaN for a
// token with a pair at position -1.  status = (tiles, including expert -1's,
// 1 + first bad pair or 0, active experts, largest group); offsets[E] = valid pairs.
template <typename I>
[[kernel]] void moe_group(const device I* indices [[buffer(0)]],
                          device int* offsets [[buffer(1)]],
                          device int* pairs [[buffer(2)]],
                          device int* position [[buffer(3)]],
                          device int4* tiles [[buffer(4)]],
                          device int* status [[buffer(5)]],
                          constant MoeGemmParams& p [[buffer(6)]],
                          uint tid [[thread_index_in_threadgroup]],
                          uint sg [[simdgroup_index_in_threadgroup]],
                          uint lane [[thread_index_in_simdgroup]]) {
  constexpr int S = kMoeGroupSimdgroups;
  constexpr int W = kMoeGroupWindow;
  constexpr int kSlots = W / 32;     // experts of a window owned per lane
  threadgroup uint hist[S][W];       // per-simdgroup counts, then start cursors
  threadgroup uint red_bad[S];
  threadgroup uint red_nbad[S];
  threadgroup uint red_rows[S];
  threadgroup uint red_tiles[S];
  threadgroup uint red_active[S];
  threadgroup uint red_max[S];
  const int N = p.pairs;
  const int E = p.E;
  const int per = (N + S - 1) / S;
  const int begin = min(N, int(sg) * per);
  const int end = min(N, begin + per);

  // Invalid ids: position -1, first one reported, counted per simdgroup.
  uint first_bad = 0xFFFFFFFFu;
  uint nbad = 0;
  for (int q = begin + int(lane); q < end; q += 32) {
    if (window_expert(indices, q, 0, E) == 0xFFFFFFFFu) {
      first_bad = min(first_bad, uint(q));
      position[q] = -1;
      ++nbad;
    }
  }
  first_bad = simd_min(first_bad);
  nbad = simd_sum(nbad);
  if (lane == 0) {
    red_bad[sg] = first_bad;
    red_nbad[sg] = nbad;
  }

  uint rows_before = 0, tiles_before = 0, active = 0, largest = 0;  // uniform: windows so far
  for (int w0 = 0; w0 < E; w0 += W) {
    const int wn = min(W, E - w0);
    // Pass 1: per-simdgroup histograms of this window, in the owners' registers.
    uint cnt[kSlots];
    for (int i = 0; i < kSlots; ++i) cnt[i] = 0;
    for (int c = begin; c < end; c += 32) {
      const int q = c + int(lane);
      const uint e = q < end ? window_expert(indices, q, w0, wn) : 0xFFFFFFFFu;
      chunk_rank_and_count(e, lane, uint(wn), cnt);
    }
    for (int i = 0; i < kSlots; ++i) hist[sg][i * 32 + int(lane)] = cnt[i];
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // Pass 2: totals of expert w0 + tid, two-level prefix sums of rows and tiles.
    uint total = 0;
    if (int(tid) < wn)
      for (int s = 0; s < S; ++s) total += hist[s][tid];
    const uint ntiles = (total + uint(p.tile_m) - 1) / uint(p.tile_m);
    const uint incl = simd_prefix_inclusive_sum(total);
    const uint tincl = simd_prefix_inclusive_sum(ntiles);
    const uint act = simd_sum(uint(total > 0));
    const uint big = simd_max(total);
    if (lane == 31) {
      red_rows[sg] = incl;
      red_tiles[sg] = tincl;
    }
    if (lane == 0) {
      red_active[sg] = act;
      red_max[sg] = big;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    uint before = rows_before, tbefore = tiles_before;
    for (int s = 0; s < S; ++s) {
      if (s < int(sg)) {
        before += red_rows[s];
        tbefore += red_tiles[s];
      }
      rows_before += red_rows[s];
      tiles_before += red_tiles[s];
      active += red_active[s];
      largest = max(largest, red_max[s]);
    }
    if (int(tid) < wn) {
      const uint off = before + incl - total;
      uint run = off;  // simdgroup s starts this expert's pairs after those of s' < s
      for (int s = 0; s < S; ++s) {
        const uint h = hist[s][tid];
        hist[s][tid] = run;
        run += h;
      }
      offsets[w0 + int(tid)] = int(off);
      uint t = tbefore + tincl - ntiles;
      for (uint r = 0; r < total; r += uint(p.tile_m))
        tiles[t++] = int4(w0 + int(tid), int(off + r), int(off + min(total, r + uint(p.tile_m))), 0);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // Pass 3: scatter in pair order; cursors live in the owners' registers.
    for (int i = 0; i < kSlots; ++i) cnt[i] = hist[sg][i * 32 + int(lane)];
    for (int c = begin; c < end; c += 32) {
      const int q = c + int(lane);
      const uint e = q < end ? window_expert(indices, q, w0, wn) : 0xFFFFFFFFu;
      uint base = 0;
      for (int i = 0; i < kSlots; ++i) {  // fetch cursor[e] from its owner, slot by slot
        const uint v = simd_shuffle(cnt[i], ushort(e & 31u));
        if (e != 0xFFFFFFFFu && int(e >> 5) == i) base = v;
      }
      const uint rank = chunk_rank_and_count(e, lane, uint(wn), cnt);
      if (e != 0xFFFFFFFFu) {
        pairs[base + rank] = q;
        position[q] = int(base + rank);
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // hist / red_* are reused by the next window
  }

  threadgroup_barrier(mem_flags::mem_threadgroup);  // red_bad / red_nbad (E = 0 runs no window)
  // Invalid pairs (uniform branch: none in a well-formed call): appended after the valid
  // ones in pair order, simdgroup by simdgroup, under tiles of expert -1.
  uint bad_before = 0, bad_total = 0;
  for (int s = 0; s < S; ++s) {
    if (s < int(sg)) bad_before += red_nbad[s];
    bad_total += red_nbad[s];
  }
  if (bad_total > 0) {
    uint cursor = rows_before + bad_before;
    for (int c = begin; c < end; c += 32) {
      const int q = c + int(lane);
      const bool bad = q < end && window_expert(indices, q, 0, E) == 0xFFFFFFFFu;
      const uint at = cursor + simd_prefix_exclusive_sum(uint(bad));
      if (bad) pairs[at] = q;
      cursor += simd_sum(uint(bad));
    }
    for (uint r = tid * uint(p.tile_m); r < bad_total; r += kMoeGroupThreads * uint(p.tile_m))
      tiles[tiles_before + r / uint(p.tile_m)] =
          int4(-1, int(rows_before + r), int(rows_before + min(bad_total, r + uint(p.tile_m))), 0);
  }
  if (tid == 0) {
    for (int s = 0; s < S; ++s) first_bad = min(first_bad, red_bad[s]);
    offsets[E] = int(rows_before);
    status[0] = int(tiles_before + (bad_total + uint(p.tile_m) - 1) / uint(p.tile_m));
    status[1] = first_bad != 0xFFFFFFFFu ? int(first_bad) + 1 : 0;
    status[2] = int(active);
    status[3] = int(largest);
  }
}

// Row tables of tile `tile` (grouped rows [tile.y, tile.z), at most BM): the x row of
// each tile row (grouped row for x in grouped order, token for a shared x, else the
// pair) and its output row (grouped row when weighted, else the pair).
METAL_FUNC void load_row_tables(constant MoeGemmParams& p, const device int* pairs, int4 tile,
                                threadgroup int* src_rows, threadgroup int* dst_rows, uint tid, int threads) {
  const int count = tile.z - tile.y;
  for (int r = int(tid); r < count; r += threads) {
    const int q = pairs[tile.y + r];
    src_rows[r] = p.shared_x == 2 ? tile.y + r : (p.shared_x ? q / p.k : q);
    dst_rows[r] = p.weighted ? tile.y + r : q;
  }
}

// A tile of expert -1 (pairs with an invalid expert id, see moe_group): NaN in its output
// rows' columns [col0, col0 + width) (< N), so bad ids never pass as numbers on Metal,
// where the kernels cannot raise.
template <typename O>
METAL_FUNC void store_nan_rows(device O* out, int N, const threadgroup int* dst_rows, int count, int col0, int width,
                               uint tid, int threads) {
  for (int e = int(tid); e < count * width; e += threads) {
    const int n = col0 + e % width;
    if (n < N) out[ulong(dst_rows[e / width]) * ulong(N) + ulong(n)] = quiet_nan<O>();
  }
}

// Threadgroup (x, y): columns [x BN, x BN + BN) of tile y of the list (one expert's
// grouped rows, at most BM); threadgroups past the tile count return at once.
template <typename T, typename S, typename O, int BM, int BN, int BK, int WM, int WN>
[[kernel]] void moe_gemm(const device T* x [[buffer(0)]],
                         const device uint* w [[buffer(1)]],
                         const device S* scales [[buffer(2)]],
                         const device int* pairs [[buffer(3)]],
                         const device int4* tiles [[buffer(4)]],
                         const device int* status [[buffer(5)]],
                         device O* out [[buffer(6)]],
                         constant MoeGemmParams& p [[buffer(7)]],
                         uint3 tgid [[threadgroup_position_in_grid]],
                         uint tid [[thread_index_in_threadgroup]],
                         uint sgid [[simdgroup_index_in_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]]) {
  constexpr int kThreads = WM * WN * 32;
  threadgroup T As[2 * BM * BK];
  threadgroup T Bs[WM * WN * 8 * (BN / WN)];
  threadgroup int src_rows[BM];
  threadgroup int dst_rows[BM];
  if (int(tgid.y) >= status[0]) return;  // uniform: the whole threadgroup leaves

  const int4 tile = tiles[tgid.y];
  load_row_tables(p, pairs, tile, src_rows, dst_rows, tid, kThreads);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const TableRows rows{src_rows, dst_rows, tile.z - tile.y};
  if (tile.x < 0) {  // invalid expert ids
    store_nan_rows(out, p.N, dst_rows, rows.count, int(tgid.x) * BN, BN, tid, kThreads);
    return;
  }

  const ulong e = ulong(tile.x);
  const device uint* we = w + e * ulong(p.K / kCodesPerWord) * ulong(p.N);
  const device S* se = scales + e * ulong(p.K / p.group_size) * ulong(p.N);
  const Epilogue ep{nullptr, 0, p.activation};
  gemm_tile<T, S, O, BM, BN, BK, WM, WN>(x, we, se, out, p.N, p.K, p.group_size, rows, int(tgid.x) * BN, ep, As, Bs,
                                         tid, sgid, lane);
}

// moe_mlp's gate/up GEMM with the SwiGLU fused into its epilogue: threadgroup (x, y)
// computes h columns [x BN/2, x BN/2 + BN/2) (< p.N = I) of tile y's grouped rows,
//   h[row, n] = act(x_row @ gate[:, n]) * (x_row @ up[:, n]),
// decoding BN/2 gate and the BN/2 matching up columns (GatedB), so the gate and up
// values of one h element sit in the same lane's accumulators.  gate = w_gate[e] with
// row stride p.ld; up = w_up[e] from column p.up_col with the same stride: [gate | up]
// in one tensor (w_up = w_gate, ld = 2 I, up_col = I) or two (ld = I, up_col = 0).
// h is stored in T (the activations' dtype; accumulation is fp32).
template <typename T, typename S, int BM, int BN, int BK, int WM, int WN>
[[kernel]] void moe_gemm_glu(const device T* x [[buffer(0)]],
                             const device uint* w_gate [[buffer(1)]],
                             const device S* s_gate [[buffer(2)]],
                             const device int* pairs [[buffer(3)]],
                             const device int4* tiles [[buffer(4)]],
                             const device int* status [[buffer(5)]],
                             device T* h [[buffer(6)]],
                             constant MoeGemmParams& p [[buffer(7)]],
                             const device uint* w_up [[buffer(8)]],
                             const device S* s_up [[buffer(9)]],
                             uint3 tgid [[threadgroup_position_in_grid]],
                             uint tid [[thread_index_in_threadgroup]],
                             uint sgid [[simdgroup_index_in_threadgroup]],
                             uint lane [[thread_index_in_simdgroup]]) {
  constexpr int kThreads = WM * WN * 32;
  threadgroup T As[2 * BM * BK];
  threadgroup T Bs[WM * WN * 8 * (BN / WN)];
  threadgroup int src_rows[BM];
  threadgroup int dst_rows[BM];
  if (int(tgid.y) >= status[0]) return;  // uniform: the whole threadgroup leaves

  const int4 tile = tiles[tgid.y];
  load_row_tables(p, pairs, tile, src_rows, dst_rows, tid, kThreads);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const TableRows rows{src_rows, dst_rows, tile.z - tile.y};
  const int col0 = int(tgid.x) * (BN / 2);
  if (tile.x < 0) {  // invalid expert ids
    store_nan_rows(h, p.N, dst_rows, rows.count, col0, BN / 2, tid, kThreads);
    return;
  }

  const ulong e = ulong(tile.x);
  const ulong wstride = ulong(p.K / kCodesPerWord) * ulong(p.ld);
  const ulong sstride = ulong(p.K / p.group_size) * ulong(p.ld);
  const GatedB<S, BN / WN> bsrc{w_gate + e * wstride,          s_gate + e * sstride,
                                w_up + e * wstride + p.up_col, s_up + e * sstride + p.up_col,
                                p.ld,                          p.N,
                                p.group_size,                  col0};
  gemm_gated_tile<T, S, T, BM, BN, BK, WM, WN>(x, bsrc, h, p.K, rows, p.activation, As, Bs, tid, sgid, lane);
}

// out[t, n] = sum_j weights[t, j] * y[position[t k + j], n], slot order, fp32
// accumulation; y holds the expert outputs in the output's dtype.  A token with a pair
// of an invalid expert id (position -1) gets a NaN row.
template <typename O>
[[kernel]] void moe_combine(const device O* y [[buffer(0)]],
                            const device float* weights [[buffer(1)]],
                            const device int* position [[buffer(2)]],
                            device O* out [[buffer(3)]],
                            constant MoeGemmParams& p [[buffer(4)]],
                            uint2 gid [[thread_position_in_grid]]) {
  const int n = int(gid.x);
  const int t = int(gid.y);
  if (n >= p.N || t >= p.T) return;
  float acc = 0.0f;
  bool bad = false;
  for (int j = 0; j < p.k; ++j) {
    const int q = t * p.k + j;
    const int pos = position[q];
    if (pos >= 0)
      acc += weights[q] * float(y[ulong(pos) * ulong(p.N) + ulong(n)]);
    else
      bad = true;
  }
  out[ulong(t) * ulong(p.N) + ulong(n)] = bad ? quiet_nan<O>() : O(acc);
}

// Host names: moe_gemm_kernel_name / moe_glu_gemm_kernel_name / moe_group_kernel_name /
// moe_combine_kernel_name (cpp/common/moe_plan.h).  Tiles: decode and default of
// tile_for(GemmVariant); float32 inputs use BK = 16.  Every GEMM writes its input's
// dtype (h, and y for the combine, in bfloat for bfloat activations).
#define MARLIN_MOE_GEMM(variant, xname, T, sname, S, BM, BN, BK, WM, WN)                                    \
  template [[host_name("moe_gemm_" #variant "_" #xname "_" #sname)]] [[kernel]]                            \
  decltype(moe_gemm<T, S, T, BM, BN, BK, WM, WN>) moe_gemm<T, S, T, BM, BN, BK, WM, WN>;                  \
  template [[host_name("moe_gemm_glu_" #variant "_" #xname "_" #sname)]] [[kernel]]                        \
  decltype(moe_gemm_glu<T, S, BM, BN, BK, WM, WN>) moe_gemm_glu<T, S, BM, BN, BK, WM, WN>;

#define MARLIN_MOE_VARIANTS(xname, T, sname, S, BK)                    \
  MARLIN_MOE_GEMM(decode, xname, T, sname, S, 32, 128, BK, 1, 4)      \
  MARLIN_MOE_GEMM(default, xname, T, sname, S, 64, 64, BK, 2, 2)

#define MARLIN_MOE_GROUP(name, I) \
  template [[host_name("moe_group_" #name)]] [[kernel]] decltype(moe_group<I>) moe_group<I>;
MARLIN_MOE_GROUP(i8, char)
MARLIN_MOE_GROUP(u8, uchar)
MARLIN_MOE_GROUP(i16, short)
MARLIN_MOE_GROUP(u16, ushort)
MARLIN_MOE_GROUP(i32, int)
MARLIN_MOE_GROUP(u32, uint)
MARLIN_MOE_GROUP(i64, long)
MARLIN_MOE_GROUP(u64, ulong)

#define MARLIN_MOE_COMBINE(name, O) \
  template [[host_name("moe_combine_" #name)]] [[kernel]] decltype(moe_combine<O>) moe_combine<O>;

MARLIN_MOE_VARIANTS(f16, half, f16, half, 32)
MARLIN_MOE_VARIANTS(f32, float, f16, half, 16)
MARLIN_MOE_COMBINE(f16, half)
MARLIN_MOE_COMBINE(f32, float)

#if defined(__HAVE_BFLOAT__)  // bfloat: Metal 3.1+ (macOS 14); missing kernels fail at lookup
MARLIN_MOE_VARIANTS(f16, half, bf16, bfloat, 32)
MARLIN_MOE_VARIANTS(bf16, bfloat, f16, half, 32)
MARLIN_MOE_VARIANTS(bf16, bfloat, bf16, bfloat, 32)
MARLIN_MOE_VARIANTS(f32, float, bf16, bfloat, 16)
MARLIN_MOE_COMBINE(bf16, bfloat)
#endif
