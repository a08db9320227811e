// Tile building blocks of the FP4 GEMM (metal/gemm_fp4.metal), templated on the tile
// shape so the decode / default / large_m variants share them.
//
//   ATileLoader  x [M, K] -> threadgroup tile [BM][BK] (double-buffered by the caller),
//                rows past M are zero-filled.
//   BStager      one simdgroup's private slice: 8 k x SN columns, decoded from packed
//                words (one uint32 = 8 consecutive k of one column per lane, so lanes
//                read consecutive words) times the group scale, in the MMA input type;
//                stage_gated fills the two halves of a slice from the matching
//                columns of a gate and an up matrix (moe_mlp's fused SwiGLU).
//   fragment_coord  where a lane's two elements of an 8x8 simdgroup_matrix live.
#pragma once

#include <metal_stdlib>
#include <metal_simdgroup_matrix>

#include "marlin/epilogue.h"
#include "marlin/fp4_decode.h"

namespace marlin {

using namespace metal;

template <typename T, int BM, int BK, int kThreads>
struct ATileLoader {
  static_assert(BM % 8 == 0 && BK % 8 == 0, "tile dims must be multiples of 8");

  // Tile rows r < rows.count come from x row rows.src(r) (the rest of the tile is
  // zero); columns [k0, k0 + BK) always exist because K is a multiple of BK.
  template <typename Rows>
  static METAL_FUNC void load(const device T* x, thread const Rows& rows, int K, int k0, threadgroup T* dst,
                              uint tid) {
    for (int e = int(tid); e < BM * BK; e += kThreads) {
      const int r = e / BK;
      const int c = e % BK;
      dst[e] = r < rows.count ? x[ulong(rows.src(r)) * ulong(K) + ulong(k0 + c)] : T(0);
    }
  }
};

template <typename T, typename S, int SN>
struct BStager {
  static_assert(SN % 8 == 0, "tile dims must be multiples of 8");

  // Decodes k rows [k, k + 8) (k a multiple of 8) of column n of a packed matrix with
  // row stride ld (words / scales per k row) into dst[i * SN], i < 8; zeros when the
  // column does not exist (!valid).
  static METAL_FUNC void column(const device uint* w, const device S* scales, int ld, int group_size, int k, int n,
                                bool valid, threadgroup T* dst) {
    if (valid) {
      const uint word = w[ulong(k / kCodesPerWord) * ulong(ld) + ulong(n)];
      const float s = float(scales[ulong(k / group_size) * ulong(ld) + ulong(n)]);
      for (int i = 0; i < kCodesPerWord; ++i) dst[i * SN] = T(decode_scaled(word, i, s));
    } else {
      for (int i = 0; i < kCodesPerWord; ++i) dst[i * SN] = T(0);
    }
  }

  // Decodes k rows [k, k + 8) of columns [col0, col0 + SN) into slice[8][SN]; columns
  // past N are zero.
  static METAL_FUNC void stage(const device uint* w, const device S* scales, int N, int group_size, int k,
                               int col0, threadgroup T* slice, uint lane) {
    for (int c = int(lane); c < SN; c += 32) column(w, scales, N, group_size, k, col0 + c, col0 + c < N, slice + c);
  }

  // Gated (GLU) slice: columns [0, SN/2) are gate columns [col0, col0 + SN/2) of
  // (wg, sg), columns [SN/2, SN) the same columns of (wu, su); both matrices have row
  // stride ld and `cols` existing columns (zeros past them).  One lane per slice column,
  // so the two halves decode side by side.
  static METAL_FUNC void stage_gated(const device uint* wg, const device S* sg, const device uint* wu,
                                     const device S* su, int ld, int cols, int group_size, int k, int col0,
                                     threadgroup T* slice, uint lane) {
    static_assert(SN % 16 == 0, "gated slices hold two halves of whole 8-column fragments");
    constexpr int H = SN / 2;
    for (int c = int(lane); c < SN; c += 32) {
      const bool up = c >= H;
      const int n = col0 + (up ? c - H : c);
      column(up ? wu : wg, up ? su : sg, ld, group_size, k, n, n < cols, slice + c);
    }
  }
};

// Position of this lane's two elements in an 8x8 simdgroup_matrix (Apple GPUs; the
// emulator uses the same layout): (row, col) and (row, col + 1).
METAL_FUNC short2 fragment_coord(uint lane) {
  const short qid = short(lane / 4);
  const short row = (qid & 4) + short((lane / 2) % 4);
  const short col = (qid & 2) * 2 + short(lane % 2) * 2;
  return short2(col, row);
}

} // namespace marlin
