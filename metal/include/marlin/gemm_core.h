// The FP4 GEMM main loop shared by the dense kernel (metal/gemm_fp4.metal) and the MoE
// expert GEMM (metal/moe_gemm.metal): one BM x BN output tile of
//   out[dst(r), n] = act(sum_k x[src(r), k] * dequant(w, scales)[k, n] + bias[n])
// for tile rows r < rows.count, where a Rows policy maps tile rows to x rows and output
// rows (identity for the dense GEMM, the expert grouping for MoE).
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

template <typename T, typename S, typename O, int BM, int BN, int BK, int WM, int WN, typename Rows>
METAL_FUNC void gemm_tile(const device T* x, const device uint* w, const device S* scales, device O* out, int N,
                          int K, int group_size, thread const Rows& rows, int col0, thread const Epilogue& ep,
                          threadgroup T* As, threadgroup T* Bs, uint tid, uint sgid, uint lane) {
  constexpr int kThreads = WM * WN * 32;
  constexpr int SM = BM / WM;
  constexpr int SN = BN / WN;
  constexpr int TM = SM / 8;
  constexpr int TN = SN / 8;
  static_assert(BM % 8 == 0 && BN % 8 == 0 && BK % 8 == 0 && SM % 8 == 0 && SN % 8 == 0,
                "tile dims must be multiples of 8");
  static_assert(MARLIN_GEMM_TG_BYTES(T, BM, BN, BK, WM, WN) <= 32768, "threadgroup memory over 32 KB");

  const int sm = int(sgid / WN) * SM;
  const int sn = int(sgid % WN) * SN;
  threadgroup T* bslice = Bs + sgid * 8 * SN;
  // Fragment rows entirely past the tile's rows are skipped (uniform per simdgroup):
  // a decode tile at M = 1 multiplies one 8-row fragment instead of four.
  const int live_tm = clamp((rows.count - sm + 7) / 8, 0, TM);

  simdgroup_matrix<float, 8, 8> acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  using ALoader = ATileLoader<T, BM, BK, kThreads>;
  using BLoader = BStager<T, S, SN>;
  const int num_k_tiles = K / BK;

  ALoader::load(x, rows, K, 0, As, tid);
  threadgroup_barrier(mem_flags::mem_threadgroup);

  for (int kt = 0; kt < num_k_tiles; ++kt) {
    if (kt + 1 < num_k_tiles) ALoader::load(x, rows, K, (kt + 1) * BK, As + ((kt + 1) & 1) * BM * BK, tid);
    const threadgroup T* a_tile = As + (kt & 1) * BM * BK;

    for (int kk = 0; kk < BK; kk += 8) {
      BLoader::stage(w, scales, N, group_size, kt * BK + kk, col0 + sn, bslice, lane);
#if !defined(MARLIN_PLANT_RACE)  // tests/test_metal_gemm.py: the emulator must report this
      simdgroup_barrier(mem_flags::mem_threadgroup);
#endif
      simdgroup_matrix<T, 8, 8> b[TN];
      for (int j = 0; j < TN; ++j) simdgroup_load(b[j], bslice, SN, ulong2(j * 8, 0));
      for (int i = 0; i < TM; ++i) {
        if (i < live_tm) {
          simdgroup_matrix<T, 8, 8> a;
          simdgroup_load(a, a_tile, BK, ulong2(kk, sm + i * 8));
          for (int j = 0; j < TN; ++j) simdgroup_multiply_accumulate(acc[i][j], a, b[j], acc[i][j]);
        }
      }
      simdgroup_barrier(mem_flags::mem_threadgroup);  // the slice is restaged next step
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  // Epilogue: each lane stores its two elements of every fragment, bounds-checked.
  const short2 rc = fragment_coord(lane);
  for (int i = 0; i < live_tm; ++i) {
    const int r = sm + i * 8 + rc.y;
    if (r >= rows.count) continue;
    device O* orow = out + ulong(rows.dst(r)) * ulong(N);
    for (int j = 0; j < TN; ++j) {
      const float2 v = acc[i][j].thread_elements();
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

} // namespace marlin
