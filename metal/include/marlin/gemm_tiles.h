// Tile building blocks of the FP4 GEMM (metal/gemm_fp4.metal), templated on the tile
// shape so the decode / default / large_m variants share them.
//
//   ATileLoader  x [M, K] -> threadgroup tile [BM][BK] (double-buffered by the caller),
//                rows past M are zero-filled.
//   BStager      one simdgroup's private slice: 8 k x SN columns, decoded from packed
//                words (one uint32 = 8 consecutive k of one column per lane, so lanes
//                read consecutive words) times the group scale, in the MMA input type.
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

  // Decodes k rows [k, k + 8) (k a multiple of 8) of columns [col0, col0 + SN) into
  // slice[8][SN]; columns past N are zero.
  static METAL_FUNC void stage(const device uint* w, const device S* scales, int N, int group_size, int k,
                               int col0, threadgroup T* slice, uint lane) {
    for (int c = int(lane); c < SN; c += 32) {
      const int n = col0 + c;
      if (n < N) {
        const uint word = w[ulong(k / kCodesPerWord) * ulong(N) + ulong(n)];
        const float s = float(scales[ulong(k / group_size) * ulong(N) + ulong(n)]);
        for (int i = 0; i < kCodesPerWord; ++i) slice[i * SN + c] = T(decode_scaled(word, i, s));
      } else {
        for (int i = 0; i < kCodesPerWord; ++i) slice[i * SN + c] = T(0);
      }
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
