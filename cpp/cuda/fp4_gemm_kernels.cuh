// CUDA kernels of fp4_gemm (see cpp/common/gemm_plan.h for which runs when).
//
// Tensor-core kernel (f16/bf16 activations), Marlin-style; its register tile (decode,
// MMAs, group scales, K-split reduction, output order) is Fp4MmaTile
// (cpp/cuda/fp4_mma_tile.cuh), shared with MoE's grouped GEMM:
//   * Weights are streamed from global memory straight into registers with one
//     16-byte load per thread per k32 step (4 packed words = 4 columns x 8 k), several
//     steps in flight, and never staged in shared memory (each word is used by one warp).
//   * Decode is pure bit arithmetic (decode_word): the 3 magnitude bits of an E2M1 code
//     land on the low exponent bits + top mantissa bit of an fp16, the sign on the sign
//     bit, which gives exactly e2m1 * 2^-14 (codes 0 and 0.5 become fp16 zero /
//     subnormal).  Pairs (nibble i, nibble i+4) share one shift, so a word decodes to 4
//     half2 registers in about 12 integer instructions.  bf16: the bits land on a bf16
//     subnormal, then one exact bf16x2 FMA by 2^112.
//   * The k order inside an mma is permuted so that each thread's B registers are the
//     nibbles of the one word it loaded, and its A registers 8 consecutive activations
//     (one 16-byte load, rearranged with byte permutes).  The n order inside a warp is
//     permuted so that one 16-byte load covers the thread's column of 4 MMA tiles and
//     the epilogue writes 8 consecutive outputs per row.
//   * Group scales are applied to fp32 partial sums once per group, the decode's 2^-14
//     undone once before the epilogue; bias + activation are fused in the epilogue.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <type_traits>

#include "common/activation.h"
#include "common/fp4_format.h"
#include "common/gemm_plan.h"
#include "cuda/device_common.cuh"
#include "cuda/fp4_mma_tile.cuh"
#include "cuda/fp4_gemm_launch.h"

namespace marlin::cuda {


// ---------------------------------------------------------------- SIMT kernels
// Block: 32 columns (lanes) x 8 K-slices (warps); kCudaSimtRows rows.  fp32 FMA,
// exact decode; used for float32 activations and shapes the MMA kernel skips.
template <typename T, typename S>
__global__ void __launch_bounds__(256) fp4_gemm_simt(GemmArgs a) {
  constexpr int R = kCudaSimtRows;
  __shared__ float red[8][R][32];
  const int lane = threadIdx.x & 31;
  const int slice = threadIdx.x >> 5;
  const int n = blockIdx.x * 32 + lane;
  const int m0 = blockIdx.y * R;
  const T* x = static_cast<const T*>(a.x);
  const S* sc = static_cast<const S*>(a.scales);
  const int KW = a.K / kCodesPerWord;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
  if (n < a.N) {
    for (int kw = slice; kw < KW; kw += 8) {
      const uint32_t word = a.w[static_cast<int64_t>(kw) * a.N + n];
      const float s = to_float(sc[static_cast<int64_t>(kw * kCodesPerWord / a.group_size) * a.N + n]);
      float v[kCodesPerWord];
      decode_word_scaled(word, s, v);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (m0 + r < a.M) {
          const T* xr = x + static_cast<int64_t>(m0 + r) * a.K + kw * kCodesPerWord;
          float sum = 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j) sum = fmaf(to_float(xr[j]), v[j], sum);
          acc[r] += sum;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) red[slice][r][lane] = acc[r];
  __syncthreads();
  if (slice == 0 && n < a.N) {
    T* out = static_cast<T*>(a.out);
    const float b = a.bias ? a.bias[n] : 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (m0 + r < a.M) {
        float v = 0.f;
#pragma unroll
        for (int s2 = 0; s2 < 8; ++s2) v += red[s2][r][lane];
        out[static_cast<int64_t>(m0 + r) * a.N + n] = from_float<T>(apply_activation(v + b, a.act));
      }
    }
  }
}

// out[m, k] = sum_n g[m, n] * W[k, n].  Block: 8 warps = 8 word rows (64 k); lanes
// stride over n; warp-shuffle reduction at the end.
template <typename T, typename S>
__global__ void __launch_bounds__(256) fp4_gemm_simt_transposed(GemmArgs a) {
  constexpr int R = kCudaSimtTransposedRows;
  const int lane = threadIdx.x & 31;
  const int kw = blockIdx.x * 8 + (threadIdx.x >> 5);
  const int m0 = blockIdx.y * R;
  const int KW = a.K / kCodesPerWord;
  if (kw >= KW) return;
  const T* g = static_cast<const T*>(a.x);
  const S* sc = static_cast<const S*>(a.scales);
  const int64_t srow = static_cast<int64_t>(kw * kCodesPerWord / a.group_size) * a.N;
  float acc[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[r][j] = 0.f;
  for (int n = lane; n < a.N; n += 32) {
    const uint32_t word = a.w[static_cast<int64_t>(kw) * a.N + n];
    const float s = to_float(sc[srow + n]);
    float v[kCodesPerWord];
    decode_word_scaled(word, s, v);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float gv = (m0 + r < a.M) ? to_float(g[static_cast<int64_t>(m0 + r) * a.N + n]) : 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[r][j] = fmaf(gv, v[j], acc[r][j]);
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r][j] += __shfl_xor_sync(0xffffffffu, acc[r][j], o);
  if (lane == 0) {
    T* out = static_cast<T*>(a.out);
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (m0 + r < a.M)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          out[static_cast<int64_t>(m0 + r) * a.K + kw * kCodesPerWord + j] = from_float<T>(acc[r][j]);
  }
}

// ---------------------------------------------------------------- MMA kernel
// T: activation/output type (__half or __nv_bfloat16); S: scale type.
template <typename T, typename S, int MI, int NI, int WM, int WN, int WK, int U>
__global__ void __launch_bounds__(32 * WM * WN * WK, (WK > 1 ? 2 : 1)) fp4_gemm_mma(GemmArgs a) {
  constexpr int NQ = Fp4MmaTile<MI, NI>::kQuads;  // 16-byte word loads (32 columns) per step
  constexpr int BM = 16 * MI * WM;
  constexpr int BN = 8 * NI * WN;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int wk = warp % WK;
  const int wn = (warp / WK) % WN;
  const int wm = warp / (WK * WN);
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * BN + wn * 8 * NI;
  const int m0 = blockIdx.y * BM + wm * 16 * MI;
  const int N = a.N;
  const int K = a.K;

  // K range of this warp, in whole groups.
  const int spg = a.group_size / 32;  // k32 steps per group
  const int groups = K / a.group_size;
  const int g_begin = static_cast<int>((static_cast<int64_t>(groups) * wk) / WK);
  const int g_end = static_cast<int>((static_cast<int64_t>(groups) * (wk + 1)) / WK);
  const int s_begin = g_begin * spg;
  const int s_end = g_end * spg;

  const T* x = static_cast<const T*>(a.x);
  const S* sc = static_cast<const S*>(a.scales);

  bool col_ok[NQ];
#pragma unroll
  for (int q = 0; q < NQ; ++q) col_ok[q] = n0 + 32 * q + 4 * g < N;
  bool sc_ok[NQ];
#pragma unroll
  for (int q = 0; q < NQ; ++q) sc_ok[q] = n0 + 32 * q + 8 * t < N;
  bool row_ok[MI][2];
  const T* xrow[MI][2];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = m0 + 16 * i + 8 * h + g;
      row_ok[i][h] = r < a.M;
      xrow[i][h] = x + static_cast<int64_t>(row_ok[i][h] ? r : 0) * K + 8 * t;
    }

  Fp4MmaTile<MI, NI> sums;
  sums.zero();

  // Ring of U steps of loads in flight: words, activations, scales.
  uint4 rw[U][NQ];
  uint4 rx[U][MI][2];
  uint4 rs[U][NQ];
  auto load_step = [&](int u, int step) {
    if (step < s_end) {
      const int kw = step * 4 + t;
#pragma unroll
      for (int q = 0; q < NQ; ++q)
        rw[u][q] = col_ok[q] ? ldg_stream(a.w + static_cast<int64_t>(kw) * N + n0 + 32 * q + 4 * g)
                             : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          rx[u][i][h] = row_ok[i][h] ? ldg_cached(xrow[i][h] + step * 32) : make_uint4(0, 0, 0, 0);
      const int grp = step / spg;
#pragma unroll
      for (int q = 0; q < NQ; ++q)
        rs[u][q] = sc_ok[q] ? ldg_cached(sc + static_cast<int64_t>(grp) * N + n0 + 32 * q + 8 * t)
                            : make_uint4(0, 0, 0, 0);
    }
  };

#pragma unroll
  for (int u = 0; u < U; ++u) load_step(u, s_begin + u);

  for (int s0 = s_begin; s0 < s_end; s0 += U) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int step = s0 + u;
      if (step < s_end) {
        uint4 cw[NQ];
        uint4 cx[MI][2];
        uint4 cs[NQ];
#pragma unroll
        for (int q = 0; q < NQ; ++q) {
          cw[q] = rw[u][q];
          cs[q] = rs[u][q];
        }
#pragma unroll
        for (int i = 0; i < MI; ++i) {
          cx[i][0] = rx[u][i][0];
          cx[i][1] = rx[u][i][1];
        }
        load_step(u, step + U);

        uint32_t af[1][MI][2][4];
#pragma unroll
        for (int i = 0; i < MI; ++i) a_frags_from_pairs(cx[i][0], cx[i][1], af[0][i]);
        sums.template mma_step<T>(af, cw);
        if ((step + 1) % spg == 0) sums.template fold_group<S>(cs);
      }
    }
  }

  // Reduce the K-split warps through shared memory.
  if constexpr (WK > 1) {
    __shared__ float red[WK - 1][WM * WN][Fp4MmaTile<MI, NI>::kRegs][32];
    sums.reduce_k_splits(red, wk, wm * WN + wn, lane);
    if (wk > 0) return;
  }
  sums.undo_decode_scale();

  // Epilogue: per row, 8 consecutive columns 32q + 8t .. +7 per thread.
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    const int col = n0 + 32 * q + 8 * t;
    if (col >= N) continue;
    float bias[8];
    load_bias8(a.bias, col, bias);
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (!row_ok[i][h]) continue;
        const int r = m0 + 16 * i + 8 * h + g;
        float v[8];
        sums.row8(q, i, h, v);
        uint32_t packed[4];
#pragma unroll
        for (int e = 0; e < 8; e += 2)
          packed[e / 2] = pack2<T>(apply_activation(v[e] + bias[e], a.act), apply_activation(v[e + 1] + bias[e + 1], a.act));
        *reinterpret_cast<uint4*>(out + static_cast<int64_t>(r) * N + col) =
            make_uint4(packed[0], packed[1], packed[2], packed[3]);
      }
  }
}


// ---------------------------------------------------------------- GEMV kernel (M <= 16)
// Decode-sized products only stream the weights, so what limits them is the work per
// byte (issue slots) and the bytes in flight per SM.  Hence:
//   * The weights are the MMA's A operand (16 output columns x k16 per mma) and the
//     activations its B operand (an n8 tile holds up to 8 tokens): one mma per 256
//     weights, and M = 1 carries no zero rows through the decode.
//   * A warp owns a 32-column strip and a contiguous run of whole groups of K.  Per k32
//     step s, lane (g, t) takes the 16 bytes of k-word 4s + t, columns 4g .. 4g + 3 (the
//     warp reads 4 rows of 128 contiguous bytes).  Column 4g + j is row g (j even) or
//     g + 8 (j odd) of MMA tile j / 2, so a lane's accumulators are 4 consecutive output
//     columns per token.  The k order inside an mma is that of decode_word: pair i of a
//     word holds codes i and i + 4, and the activations are permuted to match.
//   * Each step's weights are loaded into a per-warp ring of `ST` steps of registers
//     (ld.global.nc), a step's refill issued once the step's MMAs are issued.
//     Its activations and (with a group's first step) the group's scales go global ->
//     shared memory by cp.async, `ST` steps ahead, into a per-warp ring that no other
//     warp touches (no barrier): nothing the step needs is waited for in the loop (x
//     re-read from L1/L2 every step had stalled the warps on its latency).  Weights
//     through that cp.async ring instead of registers streamed at ~1.6 TB/s on an H200
//     against ~2.9 TB/s for the register ring, the same bytes in the same pattern
//     (benchmarks/gemv_lab_cuda.cu).
//   * Decode is bit placement (decode_word: e2m1 * 2^-14, exact); group scales are
//     applied to fp32 partial sums once per group, the 2^-14 undone in the epilogue.
//     The warps of a block are reduced once through shared memory, then bias +
//     activation, 8-byte stores.
// The WK warps' R partial sums per lane added into warp 0's, through shared memory `red`
// ((WK - 1) * R * 32 floats, free by then), in warp order; false for the other warps,
// which are done.
template <int WK, int R>
__device__ __forceinline__ bool reduce_gemv_warps(float* red, float* sums, int wk, int lane) {
  __syncthreads();
  if (wk > 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) red[((wk - 1) * R + r) * 32 + lane] = sums[r];
  }
  __syncthreads();
  if (wk > 0) return false;
#pragma unroll 4
  for (int o = 0; o < WK - 1; ++o)
#pragma unroll
    for (int r = 0; r < R; ++r) sums[r] += red[(o * R + r) * 32 + lane];
  return true;
}

// Output row r, columns col .. col + 3 (a lane's column quad) of the decode kernels:
// bias, activation, one 8-byte store.
template <typename T>
__device__ __forceinline__ void store_gemv_quad(const GemmArgs& a, int r, int col, const float (&v)[4]) {
  float bias[4] = {0.f, 0.f, 0.f, 0.f};
  if (a.bias) {
    const float4 b = *reinterpret_cast<const float4*>(a.bias + col);
    bias[0] = b.x; bias[1] = b.y; bias[2] = b.z; bias[3] = b.w;
  }
  uint16_t o[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const T y = from_float<T>(apply_activation(v[c] + bias[c], a.act));
    o[c] = *reinterpret_cast<const uint16_t*>(&y);
  }
  *reinterpret_cast<uint2*>(static_cast<T*>(a.out) + static_cast<int64_t>(r) * a.N + col) =
      make_uint2(o[0] | (uint32_t(o[1]) << 16), o[2] | (uint32_t(o[3]) << 16));
}

// The MMAs of one fp4_gemv k32 step: the decoded words pw[column j][pair i] as A (MMA
// tile j / 2 takes columns 4g + j as its rows g / g + 8), the H token tiles' activation
// pairs bf[h] as B.  Also what benchmarks/gemv_lab_cuda.cu's loops run.
template <typename T, int H>
__device__ __forceinline__ void gemv_step_mmas(const uint32_t (&pw)[4][4], const uint32_t (&bf)[H][4],
                                               float (&part)[H][2][4]) {
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint32_t af[4] = {pw[2 * j][2 * half], pw[2 * j + 1][2 * half], pw[2 * j][2 * half + 1],
                              pw[2 * j + 1][2 * half + 1]};
#pragma unroll
      for (int h = 0; h < H; ++h) mma_16816<T>(part[h][j], af, bf[h][2 * half], bf[h][2 * half + 1]);
    }
}

template <typename T, typename S, int WK, int ST, bool R16, int MINB>
__global__ void __launch_bounds__(32 * WK, MINB) fp4_gemv(GemmArgs a) {
  constexpr int H = R16 ? 2 : 1;  // n8 token tiles
  static_assert((ST & (ST - 1)) == 0, "ring slots are indexed by step % ST");
  extern __shared__ uint4 gemv_smem[];
  const int lane = threadIdx.x & 31;
  const int wk = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int N = a.N;
  const int K = a.K;
  const int col = blockIdx.x * kCudaGemvBlockN + 4 * g;
  const bool col_ok = col < N;  // N % 4 == 0: a lane's 4 columns are all in or all out
  const int m0 = blockIdx.y * 16;
  const int spg = a.group_size / 32;
  const int groups = K / a.group_size;
  const int grp_begin = static_cast<int>(static_cast<int64_t>(groups) * wk / WK);
  const int grp_end = static_cast<int>(static_cast<int64_t>(groups) * (wk + 1) / WK);
  const int s_begin = grp_begin * spg;
  const int s_end = grp_end * spg;
  // Slot u of the warp's shared-memory ring (cuda_gemv_slot_bytes): the step's
  // activations (16 B per lane and token tile), then the 4 scales of each column quad
  // (8 B per g, copied with the first step of a group).
  constexpr int kSlot = static_cast<int>(cuda_gemv_slot_bytes(R16));
  constexpr int kXOff = 0;
  constexpr int kSOff = kCudaGemvStepBytes * H;
  const uint32_t ring = static_cast<uint32_t>(__cvta_generic_to_shared(gemv_smem)) + static_cast<uint32_t>(wk * ST * kSlot);
  // 16-byte chunk of lane (g, t) inside a 512-byte area, swizzled so that both the
  // cp.async writes (8 lanes of one t = one 128-byte global segment) and the reads (8
  // consecutive lanes) hit 8 distinct 4-bank groups: no bank conflicts either way.
  auto chunk = [](int gg, int tt) { return (4 * gg + (tt ^ ((gg >> 1) & 3))) * 16; };
  const int my_chunk = chunk(g, t);
  const int64_t step_bytes = static_cast<int64_t>(N) * 16;  // 4 k-words x N columns
  const char* next_w = reinterpret_cast<const char*>(a.w + static_cast<int64_t>(t) * N + (col_ok ? col : 0)) +
      s_begin * step_bytes;
  // B column n of the MMA only feeds output column n: only lanes of real tokens copy
  // activations, and the others read token min(g, last)'s copy (results dropped).
  const char* next_x[H];
  bool x_copy[H];
  int x_read[H];  // ring offset this lane reads its activations from
#pragma unroll
  for (int h = 0; h < H; ++h) {
    const int last = a.M - 1 - m0 - 8 * h;  // last token of tile h (may be < 0)
    const int r = m0 + 8 * h + min(g, max(last, 0));
    next_x[h] = reinterpret_cast<const char*>(static_cast<const T*>(a.x) + static_cast<int64_t>(min(r, a.M - 1)) * K +
                                              8 * t + s_begin * 32);
    x_copy[h] = g <= last;
    x_read[h] = kXOff + h * kCudaGemvStepBytes + chunk(min(g, max(last, 0)), t);
  }
  const char* next_s = reinterpret_cast<const char*>(static_cast<const S*>(a.scales) +
                                                      static_cast<int64_t>(grp_begin) * N + (col_ok ? col : 0));
  const int64_t group_bytes = static_cast<int64_t>(N) * sizeof(S);
  const bool s_copy = col_ok && t == 0;
  const uint32_t group_mask = static_cast<uint32_t>(spg - 1);  // spg is 1, 2 or 4; ST a multiple of it

  // One commit group per step (empty past the end) keeps wait_group's count uniform.
  uint4 rw[ST];
  auto issue = [&](int u, bool valid) {
    const uint32_t slot = ring + u * kSlot;
    const bool first = (static_cast<uint32_t>(u) & group_mask) == 0;
    if (valid) {
      rw[u] = col_ok ? ldg_stream(next_w) : make_uint4(0, 0, 0, 0);
      // Activations and scales: only the lanes that own a copy issue one (a lane of an
      // absent token reads a present token's chunk; t > 0 reads t = 0's scales).
#pragma unroll
      for (int h = 0; h < H; ++h)
        cp_async16_if(slot + kXOff + h * kCudaGemvStepBytes + my_chunk, next_x[h], x_copy[h]);
      if (first) cp_async8_if(slot + kSOff + g * 8, next_s, s_copy);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    next_w += step_bytes;
#pragma unroll
    for (int h = 0; h < H; ++h) next_x[h] += 64;
    if (first) next_s += group_bytes;
  };

#pragma unroll
  for (int u = 0; u < ST; ++u) issue(u, s_begin + u < s_end);

  float acc[H][2][4];
  float part[H][2][4];
#pragma unroll
  for (int h = 0; h < H; ++h)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[h][j][e] = part[h][j][e] = 0.f;

  uint2 s_grp = make_uint2(0, 0);
  for (int s0 = s_begin; s0 < s_end; s0 += ST) {
#pragma unroll
    for (int u = 0; u < ST; ++u) {
      const int step = s0 + u;
      if (step >= s_end) break;
      const uint32_t slot = ring + u * kSlot;
      asm volatile("cp.async.wait_group %0;\n" ::"n"(ST - 1) : "memory");
      const uint4 cw = rw[u];
      uint4 cx[H];
#pragma unroll
      for (int h = 0; h < H; ++h)
        asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(cx[h].x), "=r"(cx[h].y), "=r"(cx[h].z), "=r"(cx[h].w)
                     : "r"(slot + x_read[h])
                     : "memory");
      if ((static_cast<uint32_t>(u) & group_mask) == 0)
        asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n" : "=r"(s_grp.x), "=r"(s_grp.y) : "r"(slot + kSOff + g * 8) : "memory");

      // B: activations k = 8w + (i, i + 4) as pair i (decode_word's order).
      uint32_t bf[H][4];
#pragma unroll
      for (int h = 0; h < H; ++h) b_frags_from_pairs(cx[h], bf[h]);
      uint32_t pw[4][4];  // [column j][pair i]
      decode_word<T>(cw.x, pw[0]);
      decode_word<T>(cw.y, pw[1]);
      decode_word<T>(cw.z, pw[2]);
      decode_word<T>(cw.w, pw[3]);
      gemv_step_mmas<T, H>(pw, bf, part);
      // Refill the slot just consumed.  Issuing it before the arithmetic keeps one more
      // step of words live: at 64 registers that spilled and ran 27 us instead of 17
      // (H200, M = 1, benchmarks/gemv_lab_cuda.cu).
      issue(u, step + ST < s_end);

      if (((u + 1) & group_mask) == 0) {
        // rows g / g + 8 of tile j are columns 4g + 2j / 4g + 2j + 1 (the decode's 2^-14
        // is undone once, in the epilogue)
        const float sc[4] = {scale_to_float<S>(s_grp.x, 0), scale_to_float<S>(s_grp.x, 1),
                             scale_to_float<S>(s_grp.y, 0), scale_to_float<S>(s_grp.y, 1)};
#pragma unroll
        for (int h = 0; h < H; ++h)
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              acc[h][j][e] = fmaf(part[h][j][e], sc[2 * j + (e >> 1)], acc[h][j][e]);
              part[h][j][e] = 0.f;
            }
      }
    }
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");

  // Reduce the WK warps through shared memory (the rings are no longer needed).
  if constexpr (WK > 1) {
    if (!reduce_gemv_warps<WK, H * 8>(reinterpret_cast<float*>(gemv_smem), &acc[0][0][0], wk, lane)) return;
  }

  if (!col_ok) return;
#pragma unroll
  for (int h = 0; h < H; ++h)
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // token m0 + 8h + 2t + i
      const int r = m0 + 8 * h + 2 * t + i;
      if (r >= a.M) continue;
      const float v[4] = {acc[h][0][i] * 16384.f, acc[h][0][2 + i] * 16384.f, acc[h][1][i] * 16384.f,
                          acc[h][1][2 + i] * 16384.f};
      store_gemv_quad<T>(a, r, col, v);
    }
}


// ---------------------------------------------------------------- GEMV kernel, one token (M = 1)
// The decode step of LLM inference, where fp4_gemv left ~60% of the memory bandwidth
// unused: its loop was bound by instructions per weight byte (~160 per warp step) and by
// a prologue that waited on dependent loads.  This kernel is fp4_gemv's loop for one
// token with everything that is not weights taken out of it (~72 instructions per step
// in bf16; benchmarks/gemv_lab_cuda.cu measured the steps one by one):
//   * Each warp copies its own K range of x, already permuted into B fragments and (bf16)
//     each group times its own power of two, and its groups' scales into its own
//     shared-memory area once, right after issuing its first weight loads, every load
//     before any use: no block barrier and one round trip before the loop.  Per step:
//     one weight load, one 16-byte LDS, the decode, 4 MMAs; per group one 8-byte LDS (and
//     in bf16 a 4-byte one) and the 4 FMAs token 0 needs.
//   * The bf16 decode has no multiply (decode_word_unscaled): e2m1 * 2^-126 meets
//     x * 2^d, d per group of x from its largest |x| (bf16_group_shift), and the group's
//     sums are multiplied by 2^(126 - d) as its scale is applied (exact, as fp4_gemv's
//     2^-14; one fp32 multiply per group and sum, bf16 activations of any exponent).
//   * Group size is a template parameter (SPG = k32 steps per group), so the loop has no
//     group bookkeeping; each group's first MMA starts from zero.
//   * `gridDim.y` = S > 1 splits K over S blocks per strip as well (the plan uses it to
//     spread the strips evenly over the SMs): each block's fp32 sums go to
//     split_part[S][N], and the strip's last block (split_counters, reset by it) adds them
//     in slice order (deterministic) and stores.
// Weights, B operand order, column quads, the 2^-14-style rescale and the K-split warp
// reduction are fp4_gemv's (see above).
template <typename T, typename S, int WK, int ST, int SPG, int MINB>
__global__ void __launch_bounds__(32 * WK, MINB) fp4_gemv_token(GemmArgs a) {
  static_assert(ST % SPG == 0 && (ST & (ST - 1)) == 0, "a ring pass holds whole groups");
  extern __shared__ uint4 gemv_smem[];
  const int lane = threadIdx.x & 31;
  const int wk = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int N = a.N;
  const int col = blockIdx.x * kCudaGemvBlockN + 4 * g;
  const bool col_ok = col < N;  // N % 4 == 0: a lane's 4 columns are all in or all out
  const int splits = gridDim.y, slice = blockIdx.y;
  const CudaGemvTokenSlice sl = cuda_gemv_token_slice(a.K, a.group_size, splits, slice, WK, wk);
  const int s_begin = sl.grp_begin * SPG, s_end = sl.grp_end * SPG;
  const int64_t step_bytes = static_cast<int64_t>(N) * 16;  // 4 k-words x N columns
  const char* next_w = reinterpret_cast<const char*>(a.w + static_cast<int64_t>(t) * N + (col_ok ? col : 0)) +
      s_begin * step_bytes;
  // Lanes past N read column 0's words (their sums are never stored): no branch per load.
  uint4 rw[ST];
#pragma unroll
  for (int u = 0; u < ST; ++u)
    if (s_begin + u < s_end) rw[u] = ldg_stream(next_w + u * step_bytes);
  next_w += ST * step_bytes;

  // The warp's area: its steps' B fragments (4 x 16 B per step), then its groups' scales
  // (8 column quads x 8 B per group).
  uint4* xs = gemv_smem + wk * (cuda_gemv_token_warp_bytes(a.K, a.group_size, splits, WK) / 16);
  const int nx = (s_end - s_begin) * 4, ng = (sl.grp_end - sl.grp_begin) * 8;
  uint2* ss = reinterpret_cast<uint2*>(xs + nx);
  float* fs = reinterpret_cast<float*>(ss + ng);  // bf16: the groups' 2^(126 - d)
  constexpr bool kGroupShift = std::is_same<T, __nv_bfloat16>::value;
  constexpr int kChunksPerGroup = 4 * SPG;  // 16-byte chunks of x (8 values) per group
  const uint4* xg = reinterpret_cast<const uint4*>(static_cast<const T*>(a.x)) + s_begin * 4;
  const S* sg = static_cast<const S*>(a.scales) + static_cast<int64_t>(sl.grp_begin) * N + blockIdx.x * kCudaGemvBlockN;
  const int quads = min(8, (N - static_cast<int>(blockIdx.x) * kCudaGemvBlockN) / 4);  // in range
  for (int c0 = 0; c0 < nx || c0 < ng; c0 += 64) {
    uint4 v[2];
    uint2 sv[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // every load of the pass before any store
      const int c = c0 + 32 * i + lane;
      if (c < nx) v[i] = __ldg(xg + c);
      sv[i] = make_uint2(0, 0);
      if (c < ng && (c & 7) < quads) sv[i] = __ldg(reinterpret_cast<const uint2*>(sg + static_cast<int64_t>(c >> 3) * N + 4 * (c & 7)));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = c0 + 32 * i + lane;
      uint4 sx = v[i];
      if constexpr (kGroupShift) {
        // A group's chunks sit on kChunksPerGroup consecutive lanes (c0 and the warp's
        // first chunk start groups): their largest |x| by a butterfly within them.
        uint32_t m = c < nx ? max_abs_bf16_bits(v[i]) : 0u;
#pragma unroll
        for (int o = 1; o < kChunksPerGroup; o <<= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
        const Bf16GroupShift sh = bf16_group_shift(m);
        sx = make_uint4(mul_bf16_pair(mul_bf16_pair(sx.x, sh.mul_lo), sh.mul_hi),
                        mul_bf16_pair(mul_bf16_pair(sx.y, sh.mul_lo), sh.mul_hi),
                        mul_bf16_pair(mul_bf16_pair(sx.z, sh.mul_lo), sh.mul_hi),
                        mul_bf16_pair(mul_bf16_pair(sx.w, sh.mul_lo), sh.mul_hi));
        if (c < nx && c % kChunksPerGroup == 0) fs[c / kChunksPerGroup] = sh.out;
      }
      if (c < nx) {
        uint32_t bf[4];
        b_frags_from_pairs(sx, bf);
        xs[c] = make_uint4(bf[0], bf[1], bf[2], bf[3]);
      }
      if (c < ng) ss[c] = sv[i];
    }
  }
  __syncwarp();

  float acc[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // tile j: rows g (column 4g + 2j), g + 8 (4g + 2j + 1)
  const uint2* sq = ss + g;
  const float* fq = fs;
  const uint4* xq = xs + t;
  for (int s0 = s_begin; s0 < s_end; s0 += ST) {
    float part[1][2][4];
#pragma unroll
    for (int u = 0; u < ST; ++u) {
      const int step = s0 + u;
      if (step >= s_end) break;  // whole groups per warp: breaks only at a group's end
      const uint4 cw = rw[u];
      const uint4 bx = *xq;
      xq += 4;
      uint32_t pw[4][4];  // [column j][pair i]
      decode_word_unscaled<T>(cw.x, pw[0]);
      decode_word_unscaled<T>(cw.y, pw[1]);
      decode_word_unscaled<T>(cw.z, pw[2]);
      decode_word_unscaled<T>(cw.w, pw[3]);
      if (u % SPG == 0) {
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[0][j][e] = 0.f;
      }
      const uint32_t bf[1][4] = {{bx.x, bx.y, bx.z, bx.w}};
      gemv_step_mmas<T, 1>(pw, bf, part);
      // Refill after the step's MMAs (see fp4_gemv).
      if (step + ST < s_end) rw[u] = ldg_stream(next_w);
      next_w += step_bytes;
      if ((u + 1) % SPG == 0) {
        const uint2 sc = *sq;
        sq += 8;
        // bf16: the group's 2^(126 - d), on the sums before the scale (a scale of 2^120
        // times such a factor could be inf).
        float f = 1.f;
        if constexpr (kGroupShift) f = *fq++;
        // Token 0 is the B operand's column 0: c0 (row g) and c2 (row g + 8) of lanes t = 0.
        acc[0][0] = fmaf(part[0][0][0] * f, scale_to_float<S>(sc.x, 0), acc[0][0]);
        acc[0][1] = fmaf(part[0][0][2] * f, scale_to_float<S>(sc.x, 1), acc[0][1]);
        acc[1][0] = fmaf(part[0][1][0] * f, scale_to_float<S>(sc.y, 0), acc[1][0]);
        acc[1][1] = fmaf(part[0][1][2] * f, scale_to_float<S>(sc.y, 1), acc[1][1]);
      }
    }
  }

  float* sums = &acc[0][0];
  if constexpr (WK > 1) {
    if (!reduce_gemv_warps<WK, 4>(reinterpret_cast<float*>(gemv_smem), sums, wk, lane)) return;
  }
  if (splits > 1) {
    // Publish this slice's sums; the strip's last block to arrive adds all slices.
    if (t == 0 && col_ok)
      *reinterpret_cast<float4*>(a.split_part + static_cast<int64_t>(slice) * N + col) =
          make_float4(sums[0], sums[1], sums[2], sums[3]);
    __syncwarp();  // orders the lanes' stores before lane 0's release
    int last = 0;
    if (lane == 0) last = atomic_add_acq_rel(a.split_counters + blockIdx.x, 1) == splits - 1;
    last = __shfl_sync(0xffffffffu, last, 0);
    __syncwarp();  // and lane 0's acquire before the lanes' loads
    if (!last) return;
    if (t == 0 && col_ok) {
      float4 total = __ldcg(reinterpret_cast<const float4*>(a.split_part + col));
      for (int o = 1; o < splits; ++o) {
        const float4 p = __ldcg(reinterpret_cast<const float4*>(a.split_part + static_cast<int64_t>(o) * N + col));
        total.x += p.x; total.y += p.y; total.z += p.z; total.w += p.w;
      }
      sums[0] = total.x; sums[1] = total.y; sums[2] = total.z; sums[3] = total.w;
    }
    if (lane == 0) a.split_counters[blockIdx.x] = 0;
  }
  if (t != 0 || !col_ok) return;
  constexpr float k = kGroupShift ? 1.f : UnscaledDecode<T>::kOutScale;  // bf16: undone per group
  const float v[4] = {sums[0] * k, sums[1] * k, sums[2] * k, sums[3] * k};
  store_gemv_quad<T>(a, 0, col, v);
}

} // namespace marlin::cuda
