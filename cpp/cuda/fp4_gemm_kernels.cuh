// CUDA kernels of fp4_gemm (see cpp/common/gemm_plan.h for which runs when).
//
// Tensor-core kernel (f16/bf16 activations), Marlin-style:
//   * Weights are streamed from global memory straight into registers with one
//     16-byte load per thread per k32 step (4 packed words = 4 columns x 8 k), several
//     steps in flight, and never staged in shared memory (each word is used by one warp).
//   * Decode is pure bit arithmetic: the 3 magnitude bits of an E2M1 code land on the
//     low exponent bits + top mantissa bit of an fp16, the sign on the sign bit, which
//     gives exactly e2m1 * 2^-14 (codes 0 and 0.5 become fp16 zero / subnormal).  Pairs
//     (nibble i, nibble i+4) share one shift, so a word decodes to 4 half2 registers in
//     about 12 integer instructions.  bf16 goes through fp32 (exact for these values).
//   * The k order inside an mma is permuted so that each thread's B registers are the
//     nibbles of the one word it loaded, and its A registers 8 consecutive activations
//     (one 16-byte load, rearranged with byte permutes).  The n order inside a warp is
//     permuted so that one 16-byte load covers the thread's column of 4 MMA tiles and
//     the epilogue writes 8 consecutive outputs per row.
//   * Group scales are applied to fp32 partial sums once per group (exact; the 2^14 of
//     the decode is folded in there), bias + activation are fused in the epilogue.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <type_traits>

#include "common/activation.h"
#include "common/fp4_format.h"
#include "common/gemm_plan.h"
#include "cuda/device_common.cuh"
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
      float v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = e2m1_to_float((word >> (4 * j)) & 0xFu) * s;
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
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = e2m1_to_float((word >> (4 * j)) & 0xFu) * s;
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
  static_assert(NI % 4 == 0, "NI must be a multiple of 4");
  constexpr int NQ = NI / 4;  // 16-byte word loads (32 columns) per step
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

  float acc[MI][NI][4];
  float part[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = part[i][j][e] = 0.f;

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

        // A fragments: two mmas (k halves) per step.
        uint32_t af[MI][2][4];
#pragma unroll
        for (int i = 0; i < MI; ++i) {
          const uint4 lo = cx[i][0];
          const uint4 hi = cx[i][1];
          af[i][0][0] = __byte_perm(lo.x, lo.z, 0x5410);
          af[i][0][1] = __byte_perm(hi.x, hi.z, 0x5410);
          af[i][0][2] = __byte_perm(lo.x, lo.z, 0x7632);
          af[i][0][3] = __byte_perm(hi.x, hi.z, 0x7632);
          af[i][1][0] = __byte_perm(lo.y, lo.w, 0x5410);
          af[i][1][1] = __byte_perm(hi.y, hi.w, 0x5410);
          af[i][1][2] = __byte_perm(lo.y, lo.w, 0x7632);
          af[i][1][3] = __byte_perm(hi.y, hi.w, 0x7632);
        }
#pragma unroll
        for (int j = 0; j < NI; ++j) {
          const uint4 wq = cw[j / 4];
          const uint32_t word = (j % 4 == 0) ? wq.x : (j % 4 == 1) ? wq.y : (j % 4 == 2) ? wq.z : wq.w;
          const uint32_t b0 = decode_pair<T>(word, decode_pair_f16<0>(word));
          const uint32_t b1 = decode_pair<T>(word, decode_pair_f16<1>(word));
          const uint32_t b2 = decode_pair<T>(word, decode_pair_f16<2>(word));
          const uint32_t b3 = decode_pair<T>(word, decode_pair_f16<3>(word));
#pragma unroll
          for (int i = 0; i < MI; ++i) {
            mma_16816<T>(part[i][j], af[i][0], b0, b1);
            mma_16816<T>(part[i][j], af[i][1], b2, b3);
          }
        }
        // End of a group: acc += part * scale * 2^14.
        if ((step + 1) % spg == 0) {
#pragma unroll
          for (int j = 0; j < NI; ++j) {
            const uint4 sq = cs[j / 4];
            // columns 8t + (j%4) (c0/c2) and 8t + 4 + (j%4) (c1/c3) of quad j/4
            const int e0 = j % 4;
            const uint32_t p0 = e0 < 2 ? sq.x : sq.y;
            const uint32_t p1 = e0 < 2 ? sq.z : sq.w;
            const float s0f = scale_to_float<S>(p0, e0 & 1);
            const float s1f = scale_to_float<S>(p1, e0 & 1);
#pragma unroll
            for (int i = 0; i < MI; ++i) {
              acc[i][j][0] = fmaf(part[i][j][0] * 16384.f, s0f, acc[i][j][0]);
              acc[i][j][1] = fmaf(part[i][j][1] * 16384.f, s1f, acc[i][j][1]);
              acc[i][j][2] = fmaf(part[i][j][2] * 16384.f, s0f, acc[i][j][2]);
              acc[i][j][3] = fmaf(part[i][j][3] * 16384.f, s1f, acc[i][j][3]);
              part[i][j][0] = part[i][j][1] = part[i][j][2] = part[i][j][3] = 0.f;
            }
          }
        }
      }
    }
  }

  // Reduce the K-split warps through shared memory.
  if constexpr (WK > 1) {
    constexpr int kRegs = MI * NI * 4;
    __shared__ float red[WK - 1][WM * WN][kRegs][32];
    const int tile = wm * WN + wn;
    if (wk > 0) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) red[wk - 1][tile][(i * NI + j) * 4 + e][lane] = acc[i][j][e];
    }
    __syncthreads();
    if (wk > 0) return;
#pragma unroll
    for (int o = 0; o < WK - 1; ++o)
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][j][e] += red[o][tile][(i * NI + j) * 4 + e][lane];
  }

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
        uint32_t packed[4];
#pragma unroll
        for (int e = 0; e < 8; e += 2) {
          // element e: tile 4q + (e % 4), register (e < 4 ? 0 : 1) + 2h
          const float v0 = apply_activation(acc[i][4 * q + (e % 4)][(e < 4 ? 0 : 1) + 2 * h] + bias[e], a.act);
          const float v1 =
              apply_activation(acc[i][4 * q + ((e + 1) % 4)][((e + 1) < 4 ? 0 : 1) + 2 * h] + bias[e + 1], a.act);
          const T t0 = from_float<T>(v0);
          const T t1 = from_float<T>(v1);
          packed[e / 2] = static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&t0)) |
              (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&t1)) << 16);
        }
        *reinterpret_cast<uint4*>(out + static_cast<int64_t>(r) * N + col) =
            make_uint4(packed[0], packed[1], packed[2], packed[3]);
      }
  }
}


// ---------------------------------------------------------------- GEMV kernel (M <= 16)
// Same fragment mapping as fp4_gemm_mma (one 16-row MMA tile), restructured for
// streaming: a block is WK warps over one strip of 32*NQ columns, each warp a
// contiguous run of whole groups of K; weights go global -> registers through a ring
// of U k32 steps (U*NQ 16-byte loads per lane in flight), x is loaded one step ahead
// (it lives in L1/L2), the strip's group scales are copied to shared memory once
// (cp.async, overlapped with the first weight loads), and the WK partial sums are
// reduced once through shared memory.  R16 = false (M <= 8): rows 8..15 of the MMA
// tile are zero, so their A registers are constants and their accumulators are not
// kept.  BM (bf16 only): decode by placing the E2M1 bits straight into bf16
// (e2m1 * 2^-126) and one bf16x2 FMA by 2^112 (exact), instead of fp16 -> fp32 -> bf16.
template <typename T, bool BM, int I>
__device__ __forceinline__ uint32_t gemv_decode(uint32_t w) {
  if constexpr (BM && std::is_same<T, __nv_bfloat16>::value) return decode_pair_bf16_raw<I>(w);
  else return decode_pair<T>(w, decode_pair_f16<I>(w));
}

template <typename T, typename S, int NQ, int WK, int U, bool BM, bool R16, int MINB>
__global__ void __launch_bounds__(32 * WK, MINB) fp4_gemv(GemmArgs a) {
  constexpr int NI = 4 * NQ;
  constexpr int H = R16 ? 2 : 1;   // 8-row halves of the MMA tile in use
  constexpr int E = R16 ? 4 : 2;   // accumulator registers per n-tile
  constexpr int BN = 32 * NQ;
  extern __shared__ uint4 gemv_smem[];
  const int lane = threadIdx.x & 31;
  const int wk = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * BN;
  const int m0 = blockIdx.y * 16;
  const int N = a.N;
  const int K = a.K;
  const int spg = a.group_size / 32;
  const int groups = K / a.group_size;
  const int s_begin = static_cast<int>((static_cast<int64_t>(groups) * wk) / WK) * spg;
  const int s_end = static_cast<int>((static_cast<int64_t>(groups) * (wk + 1)) / WK) * spg;
  const T* x = static_cast<const T*>(a.x);
  const S* sc = static_cast<const S*>(a.scales);

  bool col_ok[NQ];
  const uint32_t* wp[NQ];
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    col_ok[q] = n0 + 32 * q + 4 * g < N;
    wp[q] = a.w + static_cast<int64_t>(t) * N + n0 + 32 * q + 4 * g;
  }
  bool row_ok[H];
  const T* xrow[H];
#pragma unroll
  for (int h = 0; h < H; ++h) {
    const int r = m0 + 8 * h + g;
    row_ok[h] = r < a.M;
    xrow[h] = x + static_cast<int64_t>(row_ok[h] ? r : 0) * K + 8 * t;
  }

  uint4 rw[U][NQ];
  auto load_w = [&](int u, int step) {
    if (step < s_end) {
#pragma unroll
      for (int q = 0; q < NQ; ++q)
        rw[u][q] = col_ok[q] ? ldg_stream(wp[q] + static_cast<int64_t>(step) * 4 * N) : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 nx[H];
  auto load_x = [&](int step) {
    if (step < s_end) {
#pragma unroll
      for (int h = 0; h < H; ++h) nx[h] = row_ok[h] ? ldg_cached(xrow[h] + step * 32) : make_uint4(0, 0, 0, 0);
    }
  };

  // Prologue: the first U steps of weights, the strip's scales into shared memory
  // ([group][4*NQ chunks of 8 columns]), the first step of x.
#pragma unroll
  for (int u = 0; u < U; ++u) load_w(u, s_begin + u);
  {
    const int chunks = groups * 4 * NQ;
    for (int c = threadIdx.x; c < chunks; c += 32 * WK) {
      const int grp = c / (4 * NQ);
      const int col = n0 + 8 * (c % (4 * NQ));
      const bool ok = col < N;
      cp_async16(gemv_smem + c, sc + static_cast<int64_t>(grp) * N + (ok ? col : 0), ok);
    }
    asm volatile("cp.async.commit_group;\n" ::);
  }
  load_x(s_begin);
  asm volatile("cp.async.wait_all;\n" ::);
  __syncthreads();

  float acc[NI][E];
  float part[NI][E];
#pragma unroll
  for (int j = 0; j < NI; ++j)
#pragma unroll
    for (int e = 0; e < E; ++e) acc[j][e] = part[j][e] = 0.f;

  for (int s0 = s_begin; s0 < s_end; s0 += U) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int step = s0 + u;
      if (step < s_end) {
        uint4 cw[NQ];
        uint4 cx[H];
#pragma unroll
        for (int q = 0; q < NQ; ++q) cw[q] = rw[u][q];
#pragma unroll
        for (int h = 0; h < H; ++h) cx[h] = nx[h];
        load_w(u, step + U);
        load_x(step + 1);

        uint32_t af[2][4];
        {
          const uint4 lo = cx[0];
          af[0][0] = __byte_perm(lo.x, lo.z, 0x5410);
          af[0][2] = __byte_perm(lo.x, lo.z, 0x7632);
          af[1][0] = __byte_perm(lo.y, lo.w, 0x5410);
          af[1][2] = __byte_perm(lo.y, lo.w, 0x7632);
          if constexpr (R16) {
            const uint4 hi = cx[H - 1];
            af[0][1] = __byte_perm(hi.x, hi.z, 0x5410);
            af[0][3] = __byte_perm(hi.x, hi.z, 0x7632);
            af[1][1] = __byte_perm(hi.y, hi.w, 0x5410);
            af[1][3] = __byte_perm(hi.y, hi.w, 0x7632);
          }
        }
#pragma unroll
        for (int j = 0; j < NI; ++j) {
          const uint4 wq = cw[j / 4];
          const uint32_t word = (j % 4 == 0) ? wq.x : (j % 4 == 1) ? wq.y : (j % 4 == 2) ? wq.z : wq.w;
          const uint32_t b0 = gemv_decode<T, BM, 0>(word);
          const uint32_t b1 = gemv_decode<T, BM, 1>(word);
          const uint32_t b2 = gemv_decode<T, BM, 2>(word);
          const uint32_t b3 = gemv_decode<T, BM, 3>(word);
          if constexpr (R16) {
            float(&c)[4] = reinterpret_cast<float(&)[4]>(part[j]);
            mma_16816<T>(c, af[0], b0, b1);
            mma_16816<T>(c, af[1], b2, b3);
          } else {
            mma_16816_top<T>(part[j][0], part[j][1], af[0][0], af[0][2], b0, b1);
            mma_16816_top<T>(part[j][0], part[j][1], af[1][0], af[1][2], b2, b3);
          }
        }
        if ((step + 1) % spg == 0) {
          const uint4* srow = gemv_smem + (step / spg) * 4 * NQ;
#pragma unroll
          for (int q = 0; q < NQ; ++q) {
            const uint4 sq = srow[4 * q + t];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
              const int j = 4 * q + jj;
              const uint32_t p0 = jj < 2 ? sq.x : sq.y;
              const uint32_t p1 = jj < 2 ? sq.z : sq.w;
              const float s0f = scale_to_float<S>(p0, jj & 1) * 16384.f;
              const float s1f = scale_to_float<S>(p1, jj & 1) * 16384.f;
#pragma unroll
              for (int e = 0; e < E; ++e) {
                acc[j][e] = fmaf(part[j][e], (e & 1) ? s1f : s0f, acc[j][e]);
                part[j][e] = 0.f;
              }
            }
          }
        }
      }
    }
  }

  // Reduce the WK warps through shared memory (the scales are no longer needed).
  __syncthreads();
  float* red = reinterpret_cast<float*>(gemv_smem);
  if (wk > 0) {
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < E; ++e) red[((wk - 1) * NI * E + j * E + e) * 32 + lane] = acc[j][e];
  }
  __syncthreads();
  if (wk > 0) return;
#pragma unroll
  for (int o = 0; o < WK - 1; ++o)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < E; ++e) acc[j][e] += red[(o * NI * E + j * E + e) * 32 + lane];

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    const int col = n0 + 32 * q + 8 * t;
    if (col >= N) continue;
    float bias[8];
    load_bias8(a.bias, col, bias);
#pragma unroll
    for (int h = 0; h < H; ++h) {
      if (!row_ok[h]) continue;
      const int r = m0 + 8 * h + g;
      uint32_t packed[4];
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        // element e: tile 4q + (e % 4), register (e < 4 ? 0 : 1) + 2h
        const float v0 = apply_activation(acc[4 * q + (e % 4)][(e < 4 ? 0 : 1) + 2 * h] + bias[e], a.act);
        const float v1 =
            apply_activation(acc[4 * q + ((e + 1) % 4)][((e + 1) < 4 ? 0 : 1) + 2 * h] + bias[e + 1], a.act);
        const T t0 = from_float<T>(v0);
        const T t1 = from_float<T>(v1);
        packed[e / 2] = static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&t0)) |
            (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&t1)) << 16);
      }
      *reinterpret_cast<uint4*>(out + static_cast<int64_t>(r) * N + col) =
          make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
  }
}

} // namespace marlin::cuda
