// CUDA kernels of the MoE ops (pipeline and plan: cpp/common/moe_plan.h, CUDA plan;
// arguments: cpp/cuda/moe_launch.h).  Includes no MLX header.
//
//   moe_route_kernel    softmax + top-k of route_token (common/moe_plan.h), warp per token
//   moe_group_kernel    the stable counting sort of build_expert_groups + the GEMM tile list
//   moe_gemm_kernel     grouped FP4 GEMM on tensor cores over the tile list
//   moe_combine_kernel  slot-order fp32 weighted combine
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "common/activation.h"
#include "common/fp4_format.h"
#include "common/moe_plan.h"
#include "cuda/device_common.cuh"
#include "cuda/fp4_mma_tile.cuh"
#include "cuda/moe_launch.h"

namespace marlin::cuda {

// ---------------------------------------------------------------- routing
// Rank key of expert e with logit x: smaller = routed first.  Descending logit (NaN
// ranked as -inf, after a real -inf; -0 == +0), then ascending id: route_token's order.
// Never 0 (the largest logit, +inf, gives a high word of 0x007FFFFF).
__device__ __forceinline__ uint64_t route_key(float x, uint32_t e) {
  const bool nan = isnan(x);
  float key = nan ? -INFINITY : x;
  if (key == 0.f) key = 0.f;
  const uint32_t b = __float_as_uint(key);
  const uint32_t ord = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // increases with the float
  return (static_cast<uint64_t>(~ord) << 32) | (static_cast<uint64_t>(nan) << 31) | e;
}

// One warp per token, any E.  Selection j takes the smallest rank key above selection
// j - 1's (keys are distinct), so no per-expert state is kept: k passes over the row.
// With `normalize` the k passes run twice (first for the denominator).
template <typename L, typename W>
__global__ void __launch_bounds__(32 * kCudaMoeRouteWarps) moe_route_kernel(MoeRouteArgs a) {
  const int lane = threadIdx.x & 31;
  const int t = blockIdx.x * kCudaMoeRouteWarps + (threadIdx.x >> 5);
  if (t >= a.T) return;  // the whole warp
  const L* row = static_cast<const L*>(a.logits) + static_cast<int64_t>(t) * a.E;
  float m = -INFINITY;
  for (int e = lane; e < a.E; e += 32) m = fmaxf(m, to_float(row[e]));  // fmaxf ignores NaN
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (!isfinite(m)) m = 0.f;  // all -inf / +inf: let the arithmetic give NaN / 0 honestly
  float total = 0.f;
  for (int e = lane; e < a.E; e += 32) total += expf(to_float(row[e]) - m);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);

  auto next = [&](uint64_t prev) {
    uint64_t best = ~0ull;
    for (int e = lane; e < a.E; e += 32) {
      const uint64_t key = route_key(to_float(row[e]), static_cast<uint32_t>(e));
      if (key > prev && key < best) best = key;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const uint64_t other = __shfl_xor_sync(0xffffffffu, best, o);
      best = other < best ? other : best;
    }
    return best;
  };
  float denom = total;
  if (a.normalize) {
    float selected = 0.f;
    uint64_t prev = 0;
    for (int j = 0; j < a.k; ++j) {
      prev = next(prev);
      selected += expf(to_float(row[prev & 0x7FFFFFFFu]) - m);
    }
    denom = selected;
  }
  uint64_t prev = 0;
  W* weights = static_cast<W*>(a.weights);
  for (int j = 0; j < a.k; ++j) {
    prev = next(prev);
    const uint32_t e = static_cast<uint32_t>(prev & 0x7FFFFFFFu);
    if (lane == 0) {
      a.idx[static_cast<int64_t>(t) * a.k + j] = e;
      weights[static_cast<int64_t>(t) * a.k + j] = from_float<W>(expf(to_float(row[e]) - m) / denom);
    }
  }
}

// ---------------------------------------------------------------- grouping
// Bucket of pair q: its expert id, or E for an id outside [0, E) (uint64 ids above
// INT64_MAX become negative, so they never wrap onto a valid expert).
template <typename I>
__device__ __forceinline__ uint32_t bucket_of(const I* idx, int q, int E) {
  const int64_t v = static_cast<int64_t>(idx[q]);
  return (v >= 0 && v < E) ? static_cast<uint32_t>(v) : static_cast<uint32_t>(E);
}

// Inclusive prefix sum of v over the warp's lanes.
__device__ __forceinline__ int warp_inclusive_scan(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  return v;
}

// Exclusive prefix sum of v over the block's threads (thread order); `total` = the sum.
// sh: 33 ints of shared memory.  Every thread of the block must call it.
__device__ __forceinline__ int block_exclusive_scan(int v, int& total, int* sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nw = blockDim.x >> 5;
  const int incl = warp_inclusive_scan(v, lane);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 31) sh[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int s = lane < nw ? sh[lane] : 0;
    const int si = warp_inclusive_scan(s, lane);
    if (lane < nw) sh[lane] = si - s;
    if (lane == 31) sh[32] = si;
  }
  __syncthreads();
  total = sh[32];
  return sh[warp] + incl - v;
}

// One block of W warps (blockDim.x = 32 W; dynamic shared memory W (E + 1) ints).
// Warp w owns the contiguous pairs [w per, (w + 1) per), taken in chunks of 32:
//   1. per-warp histograms: __match_any_sync finds the lanes of a chunk with the same
//      bucket, the lowest of them adds their count (no atomics on the counters);
//   2. per bucket: totals and per-warp exclusive prefixes, block scans of the counts
//      (offsets) and of the tile counts (tile list), tiles written by the bucket's thread;
//   3. scatter in pair order: position = warp cursor + rank among the chunk's earlier
//      lanes of the same bucket (stable, deterministic, like build_expert_groups).
template <typename I>
__global__ void __launch_bounds__(1024) moe_group_kernel(MoeGroupArgs a) {
  extern __shared__ int hist[];  // [warps][E + 1]
  __shared__ int scan_sh[33];
  __shared__ int stat[4];
  const int lane = threadIdx.x & 31;
  const int w = threadIdx.x >> 5;
  const int nw = blockDim.x >> 5;
  const int B = a.E + 1;
  const I* idx = static_cast<const I*>(a.indices);
  for (int i = threadIdx.x; i < nw * B; i += blockDim.x) hist[i] = 0;
  if (threadIdx.x == 0) {
    stat[0] = 0;
    stat[1] = INT_MAX;
    stat[2] = 0;
    stat[3] = 0;
  }
  __syncthreads();
  const int per = (a.P + nw - 1) / nw;
  const int begin = min(a.P, w * per);
  const int end = min(a.P, begin + per);
  int* my = hist + w * B;
  for (int c = begin; c < end; c += 32) {
    const int q = c + lane;
    const uint32_t b = q < end ? bucket_of(idx, q, a.E) : 0xFFFFFFFFu;
    const uint32_t peers = __match_any_sync(0xffffffffu, b);
    if (q < end) {
      if (lane == __ffs(peers) - 1) my[b] += __popc(peers);
      if (b == static_cast<uint32_t>(a.E)) atomicMin(&stat[1], q);
    }
    __syncwarp();
  }
  __syncthreads();

  int rows_carry = 0, tiles_carry = 0;
  int4* tiles = reinterpret_cast<int4*>(a.tiles);
  for (int b0 = 0; b0 < B; b0 += blockDim.x) {
    const int b = b0 + threadIdx.x;
    int count = 0;
    if (b < B) {
      for (int ww = 0; ww < nw; ++ww) {
        const int c = hist[ww * B + b];
        hist[ww * B + b] = count;
        count += c;
      }
    }
    const int ntiles = (count + a.tile_m - 1) / a.tile_m;
    int rows_total, tiles_total;
    const int start = rows_carry + block_exclusive_scan(count, rows_total, scan_sh);
    const int tile0 = tiles_carry + block_exclusive_scan(ntiles, tiles_total, scan_sh);
    if (b < B) {
      a.offsets[b] = start;
      for (int ww = 0; ww < nw; ++ww) hist[ww * B + b] += start;
      const int e = b < a.E ? b : -1;
      for (int i = 0; i < ntiles; ++i)
        tiles[tile0 + i] = make_int4(e, start + i * a.tile_m, min(start + (i + 1) * a.tile_m, start + count), 0);
      if (e >= 0 && count > 0) {
        atomicAdd(&stat[2], 1);
        atomicMax(&stat[3], count);
      }
    }
    rows_carry += rows_total;
    tiles_carry += tiles_total;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    a.offsets[B] = a.P;
    a.status[0] = tiles_carry;
    a.status[1] = stat[1] == INT_MAX ? 0 : stat[1] + 1;
    a.status[2] = stat[2];
    a.status[3] = stat[3];
  }

  for (int c = begin; c < end; c += 32) {
    const int q = c + lane;
    const uint32_t b = q < end ? bucket_of(idx, q, a.E) : 0xFFFFFFFFu;
    const uint32_t peers = __match_any_sync(0xffffffffu, b);
    int base = 0;
    if (q < end) {
      base = my[b];
      const int i = base + __popc(peers & ((1u << lane) - 1u));
      a.pairs[i] = q;
      a.position[q] = b == static_cast<uint32_t>(a.E) ? -1 : i;
    }
    __syncwarp();
    if (q < end && lane == __ffs(peers) - 1) my[b] = base + __popc(peers);
    __syncwarp();
  }
}

// ---------------------------------------------------------------- grouped GEMM
// Raw registers of 8 consecutive activations of one row (one k32 step of a thread).
template <typename AT>
struct XRaw {
  uint4 v;
};
template <>
struct XRaw<float> {
  uint4 v[2];
};

template <typename AT>
__device__ __forceinline__ XRaw<AT> load_x8(const AT* p, bool ok, bool vec) {
  XRaw<AT> r;
  if constexpr (std::is_same<AT, float>::value) {
    if (!ok) {
      r.v[0] = r.v[1] = make_uint4(0, 0, 0, 0);
    } else if (vec) {
      r.v[0] = ldg_cached(p);
      r.v[1] = ldg_cached(p + 4);
    } else {
      r.v[0] = make_uint4(__float_as_uint(p[0]), __float_as_uint(p[1]), __float_as_uint(p[2]), __float_as_uint(p[3]));
      r.v[1] = make_uint4(__float_as_uint(p[4]), __float_as_uint(p[5]), __float_as_uint(p[6]), __float_as_uint(p[7]));
    }
  } else {
    if (!ok) {
      r.v = make_uint4(0, 0, 0, 0);
    } else if (vec) {
      r.v = ldg_cached(p);
    } else {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
      uint32_t u[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) u[j] = static_cast<uint32_t>(h[2 * j]) | (static_cast<uint32_t>(h[2 * j + 1]) << 16);
      r.v = make_uint4(u[0], u[1], u[2], u[3]);
    }
  }
  return r;
}

// 4 consecutive weight words (columns) with `valid` of them in range (zeros past it).
__device__ __forceinline__ uint4 load_w4(const uint32_t* p, int valid, bool vec) {
  if (vec && valid >= 4) return ldg_stream(p);
  uint32_t u[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) u[j] = j < valid ? __ldg(p + j) : 0u;
  return make_uint4(u[0], u[1], u[2], u[3]);
}

// 8 consecutive 16-bit scales (packed in pairs), zeros past `valid`.
template <typename S>
__device__ __forceinline__ uint4 load_s8(const S* p, int valid, bool vec) {
  if (vec && valid >= 8) return ldg_cached(p);
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  uint32_t u[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t lo = 2 * j < valid ? h[2 * j] : 0u;
    const uint32_t hi = 2 * j + 1 < valid ? h[2 * j + 1] : 0u;
    u[j] = lo | (hi << 16);
  }
  return make_uint4(u[0], u[1], u[2], u[3]);
}

// A fragments of rows g (lo) and g + 8 (hi).  Half types: one set.  float32: two bf16
// sets, hi = bf16(x) and lo = bf16(x - hi) (16 significant bits, and float32's range),
// whose two MMAs sum to x within 2^-17 relative.
template <typename AT, int NS>
__device__ __forceinline__ void x_frags(const XRaw<AT>& lo, const XRaw<AT>& hi, uint32_t (&af)[NS][2][4]) {
  if constexpr (std::is_same<AT, float>::value) {
    float f[2][8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      f[0][j] = __uint_as_float((&lo.v[0].x)[j]);
      f[0][4 + j] = __uint_as_float((&lo.v[1].x)[j]);
      f[1][j] = __uint_as_float((&hi.v[0].x)[j]);
      f[1][4 + j] = __uint_as_float((&hi.v[1].x)[j]);
    }
    float r[2][8];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float b = __bfloat162float(__float2bfloat16_rn(f[h][j]));
        r[h][j] = f[h][j] - b;
        f[h][j] = b;
      }
#pragma unroll
    for (int s = 0; s < NS; ++s) {
      const float(&v)[2][8] = s == 0 ? f : r;
      // element i of the 8 sits at slot (i % 4) * 2 + i / 4 (a_frags_from_pairs)
      af[s][0][0] = pack2<__nv_bfloat16>(v[0][0], v[0][4]);
      af[s][0][1] = pack2<__nv_bfloat16>(v[1][0], v[1][4]);
      af[s][0][2] = pack2<__nv_bfloat16>(v[0][1], v[0][5]);
      af[s][0][3] = pack2<__nv_bfloat16>(v[1][1], v[1][5]);
      af[s][1][0] = pack2<__nv_bfloat16>(v[0][2], v[0][6]);
      af[s][1][1] = pack2<__nv_bfloat16>(v[1][2], v[1][6]);
      af[s][1][2] = pack2<__nv_bfloat16>(v[0][3], v[0][7]);
      af[s][1][3] = pack2<__nv_bfloat16>(v[1][3], v[1][7]);
    }
  } else {
    a_frags_from_pairs(lo.v, hi.v, af[0]);
  }
}

// 8 consecutive outputs at dst (columns col .. col + 7 of a row of N).
template <typename OT>
__device__ __forceinline__ void store8(OT* dst, const float (&v)[8], int col, int N, bool vec) {
  if (vec && col + 8 <= N) {
    if constexpr (std::is_same<OT, float>::value) {
      reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      *reinterpret_cast<uint4*>(dst) =
          make_uint4(pack2<OT>(v[0], v[1]), pack2<OT>(v[2], v[3]), pack2<OT>(v[4], v[5]), pack2<OT>(v[6], v[7]));
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (col + e < N) dst[e] = from_float<OT>(v[e]);
  }
}

// Grouped FP4 GEMM.  Block (x, y): output columns [x BN, (x + 1) BN) of tile y of the
// device's tile list (one expert's grouped rows [rb, re), at most BM of them).  Warps:
// WM x WN output sub-tiles (MI x NI MMA tiles each: an Fp4MmaTile, as in fp4_gemm_mma),
// WK splitting K (reduced through shared memory), WG = 2 for the Glu mode (warp group 1
// computes the up columns matching group 0's gate columns).  Weights stream global ->
// registers (U k32 steps in flight), decoded exactly; group scales are applied to fp32
// partial sums once per group.  A rows are gathered: pair / k (shared x), pair (x per
// slot) or the grouped row itself (moe_mlp's hidden activations).
template <typename AT, typename S, int MI, int NI, int WM, int WN, int WK, int U, int WG, int MINB, bool DIRECT,
          int MODE>
__global__ void __launch_bounds__(32 * WM * WN * WK * WG, MINB) moe_gemm_kernel(MoeGemmArgs a) {
  using MT = typename std::conditional<std::is_same<AT, float>::value, __nv_bfloat16, AT>::type;
  constexpr int NS = std::is_same<AT, float>::value ? 2 : 1;
  constexpr int NQ = Fp4MmaTile<MI, NI>::kQuads;
  constexpr int BN = 8 * NI * WN;
  constexpr bool kGlu = MODE == static_cast<int>(MoeOutMode::Glu);
  constexpr bool kPairs = MODE == static_cast<int>(MoeOutMode::Pairs);
  static_assert(!kGlu || WG == 2, "Glu needs two warp groups");

  int expert, rb, re;
  const bool direct = DIRECT && a.direct != 0;  // kernels without DIRECT ignore it
  if (direct) {
    const int p = blockIdx.y;
    const uint32_t u = a.direct_idx[p];
    const int64_t v = a.direct == 2 ? static_cast<int64_t>(static_cast<int32_t>(u)) : static_cast<int64_t>(u);
    expert = (v >= 0 && v < a.E) ? static_cast<int>(v) : -1;
    rb = p;
    re = p + 1;
  } else {
    // Both loads issued together (the tile list has max_tiles entries, the ones past
    // the device's count are unused).
    const int tile_count = a.status[0];
    const int4 tile = reinterpret_cast<const int4*>(a.tiles)[blockIdx.y];
    if (static_cast<int>(blockIdx.y) >= tile_count) return;
    expert = tile.x;
    rb = tile.y;
    re = tile.z;
  }
  auto pair_of = [&](int r) { return direct ? r : a.pairs[r]; };
  const int N = a.N;
  if (expert < 0) {
    // Pairs with an id outside [0, E): NaN rows in the pair-order output (and in the
    // pair rows a direct-mode combine reads), as on every backend (docs/moe.md).
    const int c0 = blockIdx.x * BN;
    if constexpr (kPairs) {
      AT* out = static_cast<AT*>(a.out);
      for (int i = threadIdx.x; i < (re - rb) * BN; i += blockDim.x) {
        const int r = rb + i / BN;
        const int c = c0 + i % BN;
        if (c < N) out[static_cast<int64_t>(pair_of(r)) * N + c] = from_float<AT>(quiet_nan());
      }
    } else {
      if (direct) {
        float* out = static_cast<float*>(a.out);
        for (int i = threadIdx.x; i < (re - rb) * BN; i += blockDim.x) {
          const int r = rb + i / BN;
          const int c = c0 + i % BN;
          if (c < N) out[static_cast<int64_t>(r) * N + c] = quiet_nan();
        }
      }
    }
    return;
  }

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int wk = warp % WK;
  const int wn = (warp / WK) % WN;
  const int wm = (warp / (WK * WN)) % WM;
  const int wg = warp / (WK * WN * WM);
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * BN + wn * 8 * NI;
  const int m0 = rb + wm * 16 * MI;
  const int K = a.K;
  const int ldw = a.ldw;

  const int spg = a.group_size / 32;
  const int groups = K / a.group_size;
  const int s_begin = static_cast<int>((static_cast<int64_t>(groups) * wk) / WK) * spg;
  const int s_end = static_cast<int>((static_cast<int64_t>(groups) * (wk + 1)) / WK) * spg;

  const bool up = kGlu && wg == 1;
  const int col_off = up ? a.up_col : 0;
  const uint32_t* we = (up ? a.w2 : a.w) + static_cast<int64_t>(expert) * (K / kCodesPerWord) * ldw + col_off;
  const S* se = static_cast<const S*>(up ? a.scales2 : a.scales) + static_cast<int64_t>(expert) * groups * ldw + col_off;
  const bool vec_w = a.vec_w != 0;
  const bool vec_s = a.vec_s != 0;
  const bool vec_x = a.vec_x != 0;

  int wvalid[NQ];
  int svalid[NQ];
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    wvalid[q] = N - (n0 + 32 * q + 4 * g);
    svalid[q] = N - (n0 + 32 * q + 8 * t);
  }
  const AT* x = static_cast<const AT*>(a.x);
  bool row_ok[MI][2];
  const AT* xrow[MI][2];

  Fp4MmaTile<MI, NI> sums;
  sums.zero();

  uint4 rw[U][NQ];
  XRaw<AT> rx[U][MI][2];
  uint4 rs[U][NQ];
  // Weights and scales of a step depend on the tile only; activations also on the
  // grouped rows' pairs (one more dependent load), so the prologue issues them later.
  auto load_ws = [&](int u, int step) {
    if (step < s_end) {
      const int kw = step * 4 + t;
#pragma unroll
      for (int q = 0; q < NQ; ++q)
        rw[u][q] = wvalid[q] > 0 ? load_w4(we + static_cast<int64_t>(kw) * ldw + n0 + 32 * q + 4 * g, wvalid[q], vec_w)
                                 : make_uint4(0, 0, 0, 0);
      const int grp = step / spg;
#pragma unroll
      for (int q = 0; q < NQ; ++q)
        rs[u][q] = svalid[q] > 0 ? load_s8<S>(se + static_cast<int64_t>(grp) * ldw + n0 + 32 * q + 8 * t, svalid[q], vec_s)
                                 : make_uint4(0, 0, 0, 0);
    }
  };
  auto load_x = [&](int u, int step) {
    if (step < s_end) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) rx[u][i][h] = load_x8<AT>(xrow[i][h] + step * 32, row_ok[i][h], vec_x);
    }
  };
  auto load_step = [&](int u, int step) {
    load_ws(u, step);
    load_x(u, step);
  };

#pragma unroll
  for (int u = 0; u < U; ++u) load_ws(u, s_begin + u);
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = m0 + 16 * i + 8 * h + g;
      row_ok[i][h] = r < re;
      int64_t src = 0;
      if (row_ok[i][h]) {
        if (a.x_mode == static_cast<int>(MoeXMode::Grouped)) src = r;
        else if (a.x_mode == static_cast<int>(MoeXMode::PerSlot)) src = pair_of(r);
        else src = pair_of(r) / a.k;
      }
      xrow[i][h] = x + src * K + 8 * t;
    }
#pragma unroll
  for (int u = 0; u < U; ++u) load_x(u, s_begin + u);

  for (int s0 = s_begin; s0 < s_end; s0 += U) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int step = s0 + u;
      if (step < s_end) {
        uint4 cw[NQ];
        uint4 cs[NQ];
        uint32_t af[NS][MI][2][4];
#pragma unroll
        for (int q = 0; q < NQ; ++q) {
          cw[q] = rw[u][q];
          cs[q] = rs[u][q];
        }
#pragma unroll
        for (int i = 0; i < MI; ++i) {
          uint32_t f[NS][2][4];
          x_frags<AT, NS>(rx[u][i][0], rx[u][i][1], f);
#pragma unroll
          for (int s = 0; s < NS; ++s)
#pragma unroll
            for (int kh = 0; kh < 2; ++kh)
#pragma unroll
              for (int r = 0; r < 4; ++r) af[s][i][kh][r] = f[s][kh][r];
        }
        load_step(u, step + U);

        sums.template mma_step<MT>(af, cw);
        if ((step + 1) % spg == 0) sums.template fold_group<S>(cs);
      }
    }
  }

  constexpr int kRegs = Fp4MmaTile<MI, NI>::kRegs;
  const int sub = (wg * WM + wm) * WN + wn;  // output sub-tile of this warp
  if constexpr (WK > 1) {
    __shared__ float red[WK - 1][WG * WM * WN][kRegs][32];
    sums.reduce_k_splits(red, wk, sub, lane);
  }
  sums.undo_decode_scale();
  if constexpr (kGlu) {
    // Up sums to shared memory; the gate warps form act(gate) * up.
    __shared__ float xch[WM * WN][kRegs][32];
    const int pair_tile = wm * WN + wn;
    if (wk == 0 && wg == 1) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) xch[pair_tile][(i * NI + j) * 4 + e][lane] = sums.acc[i][j][e];
    }
    __syncthreads();
    if (wk != 0 || wg != 0) return;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          sums.acc[i][j][e] = apply_activation(sums.acc[i][j][e], a.act) * xch[pair_tile][(i * NI + j) * 4 + e][lane];
  } else {
    if (wk != 0) return;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) sums.acc[i][j][e] = apply_activation(sums.acc[i][j][e], a.act);
  }

  // Epilogue: per row, the 8 consecutive columns 32q + 8t .. + 7 of this thread.
  const bool vec_out = a.vec_out != 0;
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    const int col = n0 + 32 * q + 8 * t;
    if (col >= N) continue;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (!row_ok[i][h]) continue;
        const int r = m0 + 16 * i + 8 * h + g;
        float v[8];
        sums.row8(q, i, h, v);
        if constexpr (kPairs) {
          AT* out = static_cast<AT*>(a.out) + static_cast<int64_t>(pair_of(r)) * N + col;
          store8<AT>(out, v, col, N, vec_out);
        } else {
          float* out = static_cast<float*>(a.out) + static_cast<int64_t>(r) * N + col;
          store8<float>(out, v, col, N, vec_out);
        }
      }
  }
}

// ---------------------------------------------------------------- combine
// grid (T, ceil(N / kCudaMoeCombineThreads)): out[t, c] = sum_j w[t, j] y[position[t k + j], c],
// j ascending, fp32; a pair with position -1 (invalid id) makes the token's row NaN.
template <typename OT>
__global__ void __launch_bounds__(kCudaMoeCombineThreads) moe_combine_kernel(MoeCombineArgs a) {
  const int t = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= a.N) return;
  float acc = 0.f;
  for (int j = 0; j < a.k; ++j) {
    const int64_t p = static_cast<int64_t>(t) * a.k + j;
    const int pos = a.position ? a.position[p] : static_cast<int>(p);
    acc += pos >= 0 ? a.weights[p] * a.y[static_cast<int64_t>(pos) * a.N + c] : quiet_nan();
  }
  static_cast<OT*>(a.out)[static_cast<int64_t>(t) * a.N + c] = from_float<OT>(acc);
}

}  // namespace marlin::cuda
