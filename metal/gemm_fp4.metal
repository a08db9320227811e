// FP4 (E2M1) GEMM kernels: out[M, N] = act(x[M, K] @ dequant(w, scales) + bias).
//
// Tiling (cpp/common/gemm_plan.h picks the variant and grid):
//   * a threadgroup owns a BM x BN output tile and loops over K in BK steps;
//   * the x tile is double-buffered in threadgroup memory (load step t+1 while the
//     simdgroups multiply step t: one barrier per step);
//   * the WM x WN simdgroups each own an SM x SN = 32 x 32 block (4 x 4 fragments of
//     8x8 simdgroup_matrix with float accumulators); packed weights are decoded on the
//     fly, 8 k x SN columns at a time, into the simdgroup's private staging slice
//     (8 x 32 elements, 512 bytes for half), so no full decoded B tile is ever stored;
//   * the epilogue adds the bias and applies the activation (runtime fields of
//     GemmParams: a uniform branch, not template parameters) while storing fragments
//     with bounds checks, so any M >= 1 and any N work; K is a multiple of the group
//     size (>= 32), hence of BK.
// Inputs of float32 run the same kernels in float (BK = 16 keeps the double-buffered
// float tile of large_m within 32 KB).  The output type O is the input type, or float32
// for half/bfloat inputs (the vjp recomputes the pre-activation product in float32).
#include <metal_stdlib>
#include <metal_simdgroup_matrix>

#include "common/gemm_params.h"
#include "marlin/gemm_core.h"

using namespace metal;
using namespace marlin;

template <typename T, typename S, typename O, int BM, int BN, int BK, int WM, int WN>
[[kernel]] void fp4_gemm(const device T* x [[buffer(0)]],
                         const device uint* w [[buffer(1)]],
                         const device S* scales [[buffer(2)]],
                         const device float* bias [[buffer(3)]],
                         device O* out [[buffer(4)]],
                         constant GemmParams& p [[buffer(5)]],
                         uint3 tgid [[threadgroup_position_in_grid]],
                         uint tid [[thread_index_in_threadgroup]],
                         uint sgid [[simdgroup_index_in_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]]) {
  threadgroup T As[2 * BM * BK];
  threadgroup T Bs[WM * WN * 8 * (BN / WN)];
  const int row0 = int(tgid.y) * BM;
  const DenseRows rows{row0, min(BM, p.M - row0)};
  const Epilogue ep{bias, p.has_bias, p.activation};
  gemm_tile<T, S, O, BM, BN, BK, WM, WN>(x, w, scales, out, p.N, p.K, p.group_size, rows, int(tgid.x) * BN, ep, As,
                                         Bs, tid, sgid, lane);
}

// g[M, N] @ dequant(w)^T -> out[M, K] (the input gradient; no bias or activation).
// Thread (x, y) computes the 8 outputs of packed word x of row y, streaming over N.
template <typename T, typename S>
[[kernel]] void fp4_gemm_transposed(const device T* g [[buffer(0)]],
                                    const device uint* w [[buffer(1)]],
                                    const device S* scales [[buffer(2)]],
                                    device T* out [[buffer(3)]],
                                    constant GemmParams& p [[buffer(4)]],
                                    uint2 gid [[thread_position_in_grid]]) {
  const int kw = int(gid.x);
  const int m = int(gid.y);
  if (kw >= p.K / kCodesPerWord || m >= p.M) return;
  const ulong srow = ulong(kw * kCodesPerWord / p.group_size) * ulong(p.N);
  const device uint* wrow = w + ulong(kw) * ulong(p.N);
  const device T* grow = g + ulong(m) * ulong(p.N);
  float acc[kCodesPerWord];
  for (int i = 0; i < kCodesPerWord; ++i) acc[i] = 0.0f;
  for (int n = 0; n < p.N; ++n) {
    const uint word = wrow[n];
    const float s = float(scales[srow + ulong(n)]);
    const float gv = float(grow[n]);
    for (int i = 0; i < kCodesPerWord; ++i) acc[i] += decode_scaled(word, i, s) * gv;
  }
  device T* orow = out + ulong(m) * ulong(p.K) + ulong(kw * kCodesPerWord);
  for (int i = 0; i < kCodesPerWord; ++i) orow[i] = T(acc[i]);
}

// Host names: gemm_kernel_name / gemm_transposed_kernel_name (cpp/common/gemm_plan.h).
// Tile shapes: tile_for(GemmVariant) there; float32 inputs use BK = 16.
// scripts/kernel_report.py parses the MARLIN_GEMM_VARIANTS lines below and the tile
// shapes of MARLIN_GEMM_VARIANTS' body.
#define MARLIN_GEMM(variant, xname, T, sname, S, oname, O, BM, BN, BK, WM, WN)                        \
  template [[host_name("fp4_gemm_" #variant "_" #xname "_" #sname oname)]] [[kernel]]                  \
  decltype(fp4_gemm<T, S, O, BM, BN, BK, WM, WN>) fp4_gemm<T, S, O, BM, BN, BK, WM, WN>;

#define MARLIN_GEMM_T(xname, T, sname, S)                                                       \
  template [[host_name("fp4_gemm_transposed_" #xname "_" #sname)]] [[kernel]]                  \
  decltype(fp4_gemm_transposed<T, S>) fp4_gemm_transposed<T, S>;

#define MARLIN_GEMM_VARIANTS(xname, T, sname, S, oname, O, BK)                 \
  MARLIN_GEMM(decode, xname, T, sname, S, oname, O, 32, 128, BK, 1, 4)        \
  MARLIN_GEMM(default, xname, T, sname, S, oname, O, 64, 64, BK, 2, 2)        \
  MARLIN_GEMM(large_m, xname, T, sname, S, oname, O, 128, 64, BK, 4, 2)

MARLIN_GEMM_VARIANTS(f16, half, f16, half, "", half, 32)
MARLIN_GEMM_VARIANTS(f32, float, f16, half, "", float, 16)
MARLIN_GEMM_VARIANTS(f16, half, f16, half, "_out_f32", float, 32)
MARLIN_GEMM_T(f16, half, f16, half)
MARLIN_GEMM_T(f32, float, f16, half)

#if defined(__HAVE_BFLOAT__)  // bfloat: Metal 3.1+ (macOS 14); missing kernels fail at lookup
MARLIN_GEMM_VARIANTS(f16, half, bf16, bfloat, "", half, 32)
MARLIN_GEMM_VARIANTS(bf16, bfloat, f16, half, "", bfloat, 32)
MARLIN_GEMM_VARIANTS(bf16, bfloat, bf16, bfloat, "", bfloat, 32)
MARLIN_GEMM_VARIANTS(f32, float, bf16, bfloat, "", float, 16)
MARLIN_GEMM_VARIANTS(f16, half, bf16, bfloat, "_out_f32", float, 32)
MARLIN_GEMM_VARIANTS(bf16, bfloat, f16, half, "_out_f32", float, 32)
MARLIN_GEMM_VARIANTS(bf16, bfloat, bf16, bfloat, "_out_f32", float, 32)
MARLIN_GEMM_T(f16, half, bf16, bfloat)
MARLIN_GEMM_T(bf16, bfloat, f16, half)
MARLIN_GEMM_T(bf16, bfloat, bf16, bfloat)
MARLIN_GEMM_T(f32, float, bf16, bfloat)
#endif
