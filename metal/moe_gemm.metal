// MoE expert GEMM over FP4 expert weights w [E, K/8, N], scales [E, K/g, N]:
// grouping (stable counting sort by expert), grouped GEMM tiles with the fp4_gemm
// machinery, weighted combine.  cpp/common/moe_params.h describes the pipeline and
// bindings; cpp/gpu/moe_gemm.cpp encodes it.
#include <metal_stdlib>
#include <metal_simdgroup_matrix>

#include "common/moe_params.h"
#include "marlin/gemm_core.h"

using namespace metal;
using namespace marlin;

// One threadgroup.  The grouping of build_expert_groups (cpp/common/moe_plan.h): each
// thread owns experts e = tid, tid + 256, ... and scans the pairs in order, so counts
// and the scatter are deterministic and stable without atomics.  Pairs with an expert
// id outside [0, E) are left out of every group (position -1) and the first one is
// reported in status[1] (the emulator build raises it as the CPU backend does).
template <typename I>
[[kernel]] void moe_group(const device I* indices [[buffer(0)]],
                          device int* offsets [[buffer(1)]],
                          device int* pairs [[buffer(2)]],
                          device int* position [[buffer(3)]],
                          device int4* tiles [[buffer(4)]],
                          device int* status [[buffer(5)]],
                          constant MoeGemmParams& p [[buffer(6)]],
                          uint tid [[thread_index_in_threadgroup]]) {
  threadgroup int first_bad[kMoeGroupThreads];
  const int P = p.pairs;
  const int E = p.E;
  int bad = P;
  for (int q = int(tid); q < P; q += kMoeGroupThreads) {
    const long e = long(indices[q]);
    if (e < 0 || e >= long(E)) {
      bad = min(bad, q);
      position[q] = -1;
    }
  }
  first_bad[tid] = bad;
  for (int e = int(tid); e < E; e += kMoeGroupThreads) {
    int c = 0;
    for (int q = 0; q < P; ++q) c += long(indices[q]) == long(e) ? 1 : 0;
    offsets[e + 1] = c;
  }
  threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);

  if (tid == 0) {
    int min_bad = P;
    for (int i = 0; i < kMoeGroupThreads; ++i) min_bad = min(min_bad, first_bad[i]);
    offsets[0] = 0;
    int num_tiles = 0;
    for (int e = 0; e < E; ++e) {
      const int begin = offsets[e];
      const int end = begin + offsets[e + 1];
      offsets[e + 1] = end;
      for (int r = begin; r < end; r += p.tile_m) tiles[num_tiles++] = int4(e, r, min(end, r + p.tile_m), 0);
    }
    status[0] = num_tiles;
    status[1] = min_bad < P ? min_bad + 1 : 0;
    status[2] = 0;
    status[3] = 0;
  }
  threadgroup_barrier(mem_flags::mem_device);

  for (int e = int(tid); e < E; e += kMoeGroupThreads) {
    int cursor = offsets[e];
    for (int q = 0; q < P; ++q) {
      if (long(indices[q]) == long(e)) {
        pairs[cursor] = q;
        position[q] = cursor;
        ++cursor;
      }
    }
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
  const int count = tile.z - tile.y;
  for (int r = int(tid); r < count; r += kThreads) {
    const int q = pairs[tile.y + r];
    src_rows[r] = p.shared_x ? q / p.k : q;
    dst_rows[r] = p.weighted ? tile.y + r : q;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  const ulong e = ulong(tile.x);
  const device uint* we = w + e * ulong(p.K / kCodesPerWord) * ulong(p.N);
  const device S* se = scales + e * ulong(p.K / p.group_size) * ulong(p.N);
  const TableRows rows{src_rows, dst_rows, count};
  const Epilogue ep{nullptr, 0, p.activation};
  gemm_tile<T, S, O, BM, BN, BK, WM, WN>(x, we, se, out, p.N, p.K, p.group_size, rows, int(tgid.x) * BN, ep, As, Bs,
                                         tid, sgid, lane);
}

// out[t, n] = sum_j weights[t, j] * y[position[t k + j], n], slot order, fp32.
template <typename O>
[[kernel]] void moe_combine(const device float* y [[buffer(0)]],
                            const device float* weights [[buffer(1)]],
                            const device int* position [[buffer(2)]],
                            device O* out [[buffer(3)]],
                            constant MoeGemmParams& p [[buffer(4)]],
                            uint2 gid [[thread_position_in_grid]]) {
  const int n = int(gid.x);
  const int t = int(gid.y);
  if (n >= p.N || t >= p.T) return;
  float acc = 0.0f;
  for (int j = 0; j < p.k; ++j) {
    const int q = t * p.k + j;
    const int pos = position[q];
    if (pos >= 0) acc += weights[q] * y[ulong(pos) * ulong(p.N) + ulong(n)];
  }
  out[ulong(t) * ulong(p.N) + ulong(n)] = O(acc);
}

// Host names: moe_gemm_kernel_name / moe_group_kernel_name / moe_combine_kernel_name
// (cpp/common/moe_plan.h).  Tiles: decode and default of tile_for(GemmVariant).
#define MARLIN_MOE_GEMM(variant, xname, T, sname, S, oname, O, BM, BN, BK, WM, WN)                     \
  template [[host_name("moe_gemm_" #variant "_" #xname "_" #sname oname)]] [[kernel]]                  \
  decltype(moe_gemm<T, S, O, BM, BN, BK, WM, WN>) moe_gemm<T, S, O, BM, BN, BK, WM, WN>;

#define MARLIN_MOE_VARIANTS(xname, T, sname, S, oname, O, BK)                    \
  MARLIN_MOE_GEMM(decode, xname, T, sname, S, oname, O, 32, 128, BK, 1, 4)      \
  MARLIN_MOE_GEMM(default, xname, T, sname, S, oname, O, 64, 64, BK, 2, 2)

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

MARLIN_MOE_VARIANTS(f16, half, f16, half, "", half, 32)
MARLIN_MOE_VARIANTS(f32, float, f16, half, "", float, 16)
MARLIN_MOE_VARIANTS(f16, half, f16, half, "_out_f32", float, 32)
MARLIN_MOE_COMBINE(f16, half)
MARLIN_MOE_COMBINE(f32, float)

#if defined(__HAVE_BFLOAT__)  // bfloat: Metal 3.1+ (macOS 14); missing kernels fail at lookup
MARLIN_MOE_VARIANTS(f16, half, bf16, bfloat, "", half, 32)
MARLIN_MOE_VARIANTS(bf16, bfloat, f16, half, "", bfloat, 32)
MARLIN_MOE_VARIANTS(bf16, bfloat, bf16, bfloat, "", bfloat, 32)
MARLIN_MOE_VARIANTS(f32, float, bf16, bfloat, "", float, 16)
MARLIN_MOE_VARIANTS(f16, half, bf16, bfloat, "_out_f32", float, 32)
MARLIN_MOE_VARIANTS(bf16, bfloat, f16, half, "_out_f32", float, 32)
MARLIN_MOE_VARIANTS(bf16, bfloat, bf16, bfloat, "_out_f32", float, 32)
MARLIN_MOE_COMBINE(bf16, bfloat)
#endif
