// The FP4 GEMM main loop shared by the dense kernel (metal/gemm_fp4.metal) and the MoE
// expert GEMMs (metal/moe_gemm.metal): one BM x BN output tile of
//   out[dst(r), n] = act(sum_k x[src(r), k] * dequant(w, scales)[k, n] + bias[n])
// for tile rows r < rows.count, where a Rows policy maps tile rows to x rows and output
// rows (identity for the dense GEMM, the expert grouping for MoE), or (gemm_gated_tile,
// moe_mlp's gate/up GEMM) BN/2 columns of h = act(x @ gate) * (x @ up), the gate and up
// columns of one h column computed by the same lane.  gemm_accumulate (main loop, a
// B-source policy: DenseB / GatedB) and the epilogues (store_tile / store_gated_tile)
// are separate so the two share the main loop.
//
// Threadgroup memory is declared by the kernels (MSL allows `threadgroup` variables at
// kernel scope only) and passed in: As [2 * BM * BK] (double-buffered x tile) and
// Bs [WM * WN * 8 * (BN / WN)] (one staging slice per simdgroup).
#pragma once

#include <metal_stdlib>
#include <metal_simdgroup_matrix>

#include "marlin/gemm_tiles.h"

namespace marlin {

using namespace metal;

// Threadgroup memory of one kernel: double-buffered x tile + per-simdgroup B slices.
#define MARLIN_GEMM_TG_BYTES(T, BM, BN, BK, WM, WN) \
  (sizeof(T) * (2 * (BM) * (BK) + (WM) * (WN) * 8 * ((BN) / (WN))))

// Rows row0 .. row0 + count of a row-major matrix, in place.
struct DenseRows {
  int row0;
  int count;
  METAL_FUNC int src(int r) const { return row0 + r; }
  METAL_FUNC int dst(int r) const { return row0 + r; }
};

// Rows given by tables in threadgroup memory (filled by the kernel).
struct TableRows {
  const threadgroup int* src_rows;
  const threadgroup int* dst_rows;
  int count;
  METAL_FUNC int src(int r) const { return src_rows[r]; }
  METAL_FUNC int dst(int r) const { return dst_rows[r]; }
};

struct Epilogue {
  const device float* bias;  // read only when has_bias
  int has_bias;
  int activation;
};

// fp32 accumulators of one simdgroup: TM x TN fragments of 8 x 8.
template <int TM, int TN>
struct TileAccumulators {
  simdgroup_matrix<float, 8, 8> frag[TM][TN];
};

// Where the B operand (packed FP4 weights) of a tile comes from.  stage() decodes k rows
// [k, k + 8) of simdgroup column block wn's SN columns into its slice.
//   DenseB:  columns [col0 + wn SN, + SN) of one matrix w [K/8, N].
//   GatedB:  h columns [col0 + wn SN/2, + SN/2) of a gate and an up matrix, gate in the
//            slice's first half and up in its second (moe_mlp's fused act(gate) * up).
template <typename S, int SN>
struct DenseB {
  const device uint* w;
  const device S* scales;
  int N;
  int group_size;
  int col0;
  template <typename T>
  METAL_FUNC void stage(int k, int wn, threadgroup T* slice, uint lane) const {
    BStager<T, S, SN>::stage(w, scales, N, group_size, k, col0 + wn * SN, slice, lane);
  }
};

template <typename S, int SN>
struct GatedB {
  const device uint* wg;  // gate: first column of the gate matrix
  const device S* sg;
  const device uint* wu;  // up: first column of the up matrix
  const device S* su;
  int ld;                 // row stride of both (2 I for [gate | up] in one tensor, else I)
  int cols;               // I
  int group_size;
  int col0;               // first h column of the tile
  template <typename T>
  METAL_FUNC void stage(int k, int wn, threadgroup T* slice, uint lane) const {
    BStager<T, S, SN>::stage_gated(wg, sg, wu, su, ld, cols, group_size, k, col0 + wn * (SN / 2), slice, lane);
  }
};

// The main loop: acc (simdgroup sgid's SM x SN block of the tile) = x[rows] @ B over all
// of K.  Fragment rows entirely past the tile's rows are skipped (uniform per
// simdgroup): a decode tile at M = 1 multiplies one 8-row fragment instead of four.
template <typename T, int BM, int BN, int BK, int WM, int WN, typename Rows, typename BSrc>
METAL_FUNC void gemm_accumulate(const device T* x, int K, thread const Rows& rows, thread const BSrc& bsrc,
                                threadgroup T* As, threadgroup T* Bs, uint tid, uint sgid, uint lane,
                                thread TileAccumulators<BM / WM / 8, BN / WN / 8>& acc) {
  constexpr int kThreads = WM * WN * 32;
  constexpr int SM = BM / WM;
  constexpr int SN = BN / WN;
  constexpr int TM = SM / 8;
  constexpr int TN = SN / 8;
  static_assert(BM % 8 == 0 && BN % 8 == 0 && BK % 8 == 0 && SM % 8 == 0 && SN % 8 == 0,
                "tile dims must be multiples of 8");
  static_assert(MARLIN_GEMM_TG_BYTES(T, BM, BN, BK, WM, WN) <= 32768, "threadgroup memory over 32 KB");

  const int sm = int(sgid / WN) * SM;
  const int wn = int(sgid % WN);
  threadgroup T* bslice = Bs + sgid * 8 * SN;
  const int live_tm = clamp((rows.count - sm + 7) / 8, 0, TM);

  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc.frag[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  using ALoader = ATileLoader<T, BM, BK, kThreads>;
  const int num_k_tiles = K / BK;

  ALoader::load(x, rows, K, 0, As, tid);
  threadgroup_barrier(mem_flags::mem_threadgroup);

  for (int kt = 0; kt < num_k_tiles; ++kt) {
    if (kt + 1 < num_k_tiles) ALoader::load(x, rows, K, (kt + 1) * BK, As + ((kt + 1) & 1) * BM * BK, tid);
    const threadgroup T* a_tile = As + (kt & 1) * BM * BK;

    for (int kk = 0; kk < BK; kk += 8) {
      bsrc.stage(kt * BK + kk, wn, bslice, lane);
#if !defined(MARLIN_PLANT_RACE)  // tests/test_metal_gemm.py: the emulator must report this
      simdgroup_barrier(mem_flags::mem_threadgroup);
#endif
      simdgroup_matrix<T, 8, 8> b[TN];
      for (int j = 0; j < TN; ++j) simdgroup_load(b[j], bslice, SN, ulong2(j * 8, 0));
      for (int i = 0; i < TM; ++i) {
        if (i < live_tm) {
          simdgroup_matrix<T, 8, 8> a;
          simdgroup_load(a, a_tile, BK, ulong2(kk, sm + i * 8));
          for (int j = 0; j < TN; ++j) simdgroup_multiply_accumulate(acc.frag[i][j], a, b[j], acc.frag[i][j]);
        }
      }
      simdgroup_barrier(mem_flags::mem_threadgroup);  // the slice is restaged next step
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
}

// Epilogue: each lane stores its two elements of every fragment, bounds-checked:
// out[dst(r), n] = O(act(acc + bias[n])).
template <typename O, int BM, int BN, int WM, int WN, typename Rows>
METAL_FUNC void store_tile(thread TileAccumulators<BM / WM / 8, BN / WN / 8>& acc, device O* out, int N,
                           thread const Rows& rows, int col0, thread const Epilogue& ep, uint sgid, uint lane) {
  constexpr int SM = BM / WM;
  constexpr int SN = BN / WN;
  constexpr int TM = SM / 8;
  constexpr int TN = SN / 8;
  const int sm = int(sgid / WN) * SM;
  const int sn = int(sgid % WN) * SN;
  const int live_tm = clamp((rows.count - sm + 7) / 8, 0, TM);
  const short2 rc = fragment_coord(lane);
  for (int i = 0; i < live_tm; ++i) {
    const int r = sm + i * 8 + rc.y;
    if (r >= rows.count) continue;
    device O* orow = out + ulong(rows.dst(r)) * ulong(N);
    for (int j = 0; j < TN; ++j) {
      const float2 v = acc.frag[i][j].thread_elements();
      for (int e = 0; e < 2; ++e) {
        const int n = col0 + sn + j * 8 + rc.x + e;
        if (n < N) {
          float y = v[e];
          if (ep.has_bias) y += ep.bias[n];
          orow[n] = O(apply_activation(y, ep.activation));
        }
      }
    }
  }
}

// Gated epilogue (GatedB accumulators): fragment j < TN/2 holds gate columns and
// fragment j + TN/2 the same up columns, with the same lane layout, so each lane forms
// h = act(gate) * up from its own registers: out[dst(r), n] = O(act(g) * u) for the
// h columns n < I of simdgroup column block wn, [col0 + wn SN/2, + SN/2).
template <typename O, int BM, int BN, int WM, int WN, typename Rows>
METAL_FUNC void store_gated_tile(thread TileAccumulators<BM / WM / 8, BN / WN / 8>& acc, device O* out, int I,
                                 thread const Rows& rows, int col0, int activation, uint sgid, uint lane) {
  constexpr int SM = BM / WM;
  constexpr int SN = BN / WN;
  constexpr int TM = SM / 8;
  constexpr int TH = SN / 16;  // gate fragments per row block
  const int sm = int(sgid / WN) * SM;
  const int sh = int(sgid % WN) * (SN / 2);
  const int live_tm = clamp((rows.count - sm + 7) / 8, 0, TM);
  const short2 rc = fragment_coord(lane);
  for (int i = 0; i < live_tm; ++i) {
    const int r = sm + i * 8 + rc.y;
    if (r >= rows.count) continue;
    device O* orow = out + ulong(rows.dst(r)) * ulong(I);
    for (int j = 0; j < TH; ++j) {
      const float2 g = acc.frag[i][j].thread_elements();
      const float2 u = acc.frag[i][j + TH].thread_elements();
      for (int e = 0; e < 2; ++e) {
        const int n = col0 + sh + j * 8 + rc.x + e;
        if (n < I) orow[n] = O(apply_activation(g[e], activation) * u[e]);
      }
    }
  }
}

// One BM x BN output tile of out = act(x[rows] @ dequant(w, scales) + bias).
template <typename T, typename S, typename O, int BM, int BN, int BK, int WM, int WN, typename Rows>
METAL_FUNC void gemm_tile(const device T* x, const device uint* w, const device S* scales, device O* out, int N,
                          int K, int group_size, thread const Rows& rows, int col0, thread const Epilogue& ep,
                          threadgroup T* As, threadgroup T* Bs, uint tid, uint sgid, uint lane) {
  const DenseB<S, BN / WN> bsrc{w, scales, N, group_size, col0};
  TileAccumulators<BM / WM / 8, BN / WN / 8> acc;
  gemm_accumulate<T, BM, BN, BK, WM, WN>(x, K, rows, bsrc, As, Bs, tid, sgid, lane, acc);
  store_tile<O, BM, BN, WM, WN>(acc, out, N, rows, col0, ep, sgid, lane);
}

// One tile of moe_mlp's fused gate/up GEMM: h columns [col0, col0 + BN/2) of
// out = act(x[rows] @ gate) * (x[rows] @ up); the tile's BN decoded columns are BN/2
// gate and the BN/2 matching up columns.
template <typename T, typename S, typename O, int BM, int BN, int BK, int WM, int WN, typename Rows>
METAL_FUNC void gemm_gated_tile(const device T* x, thread const GatedB<S, BN / WN>& bsrc, device O* out, int K,
                                thread const Rows& rows, int activation, threadgroup T* As, threadgroup T* Bs,
                                uint tid, uint sgid, uint lane) {
  TileAccumulators<BM / WM / 8, BN / WN / 8> acc;
  gemm_accumulate<T, BM, BN, BK, WM, WN>(x, K, rows, bsrc, As, Bs, tid, sgid, lane, acc);
  store_gated_tile<O, BM, BN, WM, WN>(acc, out, bsrc.cols, rows, bsrc.col0, activation, sgid, lane);
}

} // namespace marlin
