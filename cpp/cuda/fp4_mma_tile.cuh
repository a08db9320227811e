// A warp's register tile in the FP4 tensor-core GEMMs (fp4_gemm_mma and MoE's
// moe_gemm_kernel): MI x NI m16n8 fp32 tiles, the packed weights as the B operand.
// Both kernels load their own operands (plain rows vs gathered expert rows, bounds
// handled differently) and hand this tile one k32 step at a time; what the tile
// does with them — the decode, the MMAs, the per-group scaling, the reduction of warps
// that split K and the epilogue's column order — lives only here.
//
// Layout (per thread (g, t) = (lane / 4, lane % 4)):
//   * A: rows g and g + 8 of each m16 tile, 8 consecutive activations each per step
//     (a_frags_from_pairs' k order), as NS fragment sets (float32 activations carry two
//     bf16 halves, summed by running both through the MMAs).
//   * B: word quad q (one 16-byte load) holds columns 32q + 4g .. + 3 of k-words
//     4 step + t; word j % 4 of quad j / 4 feeds MMA tile column j (decode_word's k order).
//   * C: tile j's registers 0 / 2 (rows g / g + 8) are column 32 (j / 4) + 8t + j % 4,
//     registers 1 / 3 the column 4 further: a thread ends with 8 consecutive output
//     columns per row and quad, stored with one 16-byte write.
#pragma once

#include "cuda/device_common.cuh"

namespace marlin::cuda {

__device__ __forceinline__ uint32_t word_of(const uint4& quad, int j) {
  return j == 0 ? quad.x : j == 1 ? quad.y : j == 2 ? quad.z : quad.w;
}

template <int MI, int NI>
struct Fp4MmaTile {
  static_assert(NI % 4 == 0, "NI must be a multiple of 4: one 16-byte word load per 4 tile columns");
  static constexpr int kQuads = NI / 4;  // 16-byte weight / scale loads per step
  static constexpr int kRegs = MI * NI * 4;

  float acc[MI][NI][4];   // scaled sum of the groups done (x 2^-14 until undo_decode_scale)
  float part[MI][NI][4];  // unscaled sum of the current group

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = part[i][j][e] = 0.f;
  }

  // part += A x B over one k32 step; MT is the MMA's input type.
  template <typename MT, int NS>
  __device__ __forceinline__ void mma_step(const uint32_t (&af)[NS][MI][2][4], const uint4 (&words)[kQuads]) {
#pragma unroll
    for (int j = 0; j < NI; ++j) {
      uint32_t b[4];
      decode_word<MT>(word_of(words[j / 4], j % 4), b);
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          mma_16816<MT>(part[i][j], af[s][i][0], b[0], b[1]);
          mma_16816<MT>(part[i][j], af[s][i][1], b[2], b[3]);
        }
    }
  }

  // End of a group: acc += part * scale, part = 0.  `scales` quad q: the group's
  // scales of columns 32q + 8t .. + 7, packed in pairs.  The decode's 2^-14 stays in
  // acc until undo_decode_scale (one multiply per register, not one per group).
  template <typename S>
  __device__ __forceinline__ void fold_group(const uint4 (&scales)[kQuads]) {
#pragma unroll
    for (int j = 0; j < NI; ++j) {
      const uint4 sq = scales[j / 4];
      const int e0 = j % 4;  // column 8t + e0 (registers 0 / 2) and 8t + 4 + e0 (1 / 3)
      const float s0 = scale_to_float<S>(e0 < 2 ? sq.x : sq.y, e0 & 1);
      const float s1 = scale_to_float<S>(e0 < 2 ? sq.z : sq.w, e0 & 1);
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        acc[i][j][0] = fmaf(part[i][j][0], s0, acc[i][j][0]);
        acc[i][j][1] = fmaf(part[i][j][1], s1, acc[i][j][1]);
        acc[i][j][2] = fmaf(part[i][j][2], s0, acc[i][j][2]);
        acc[i][j][3] = fmaf(part[i][j][3], s1, acc[i][j][3]);
        part[i][j][0] = part[i][j][1] = part[i][j][2] = part[i][j][3] = 0.f;
      }
    }
  }

  // acc *= 2^14 (exact): the decoded weights were e2m1 * 2^-14.  Scaling the sums
  // rather than the scales keeps a scale near the top of bf16's range finite.
  __device__ __forceinline__ void undo_decode_scale() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] *= 16384.f;
  }

  // Sums acc over the SPLITS + 1 warps that split K (index wk; output sub-tile `sub`)
  // into warp wk = 0's, through `red`.  Every thread of the block must call it (one
  // __syncthreads); acc of the warps with wk > 0 is left partial.
  template <int SPLITS, int SUBS>
  __device__ __forceinline__ void reduce_k_splits(float (&red)[SPLITS][SUBS][kRegs][32], int wk, int sub, int lane) {
    if (wk > 0) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) red[wk - 1][sub][(i * NI + j) * 4 + e][lane] = acc[i][j][e];
    }
    __syncthreads();
    if (wk == 0) {
#pragma unroll
      for (int o = 0; o < SPLITS; ++o)
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
          for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] += red[o][sub][(i * NI + j) * 4 + e][lane];
    }
  }

  // The thread's 8 consecutive output columns 32q + 8t .. + 7 of row 16i + 8h + g.
  __device__ __forceinline__ void row8(int q, int i, int h, float (&v)[8]) const {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = acc[i][4 * q + (e % 4)][(e < 4 ? 0 : 1) + 2 * h];
  }
};

}  // namespace marlin::cuda
