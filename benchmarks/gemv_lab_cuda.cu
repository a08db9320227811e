// Where does fp4_gemv's time go?  Standalone (no MLX), M = 1, bf16, K x N = 4096 x 14336:
//   nvcc -O3 -std=c++17 --expt-relaxed-constexpr -arch=sm_90a -Icpp benchmarks/gemv_lab_cuda.cu -o /tmp/lab && /tmp/lab
// Times (CUDA events over back-to-back launches, weights rotating over enough copies to
// miss L2) the shipped kernel's variants next to lab variants that leave one stage out:
//   full     = the shipped loop (decode + MMA), rebuilt here with knobs
//   nodecode = raw words straight into the MMA (what the E2M1 decode costs)
//   readonly = the cp.async ring alone, words XORed (what the memory path delivers)
//   decodeonly = decode, no MMA
//   zdecode  = the two-word decode (decode_word_z below), checked bit-exact vs full
//   L2PF     = the register ring plus prefetch.global.L2 of the warp's rows (all at the
//              start, or d steps ahead)
//   lab_gemv_pre = activations / scales copied to shared memory once per block
//   lab_gemv_tma = weights by TMA into a per-warp ring of shared-memory slots
// and prefetch hints on the weight copies (L2::128B / L2::256B).  Needs sm_90a (TMA).
// `--lean`: lab_gemv_lean, the M = 1 loop with x / scales in shared memory once, group
// size fixed at compile time and three decodes (DEC 0 decode_word, 1 bit placement with
// no multiply, 2 the same bits with one multiply per pair), and the shape sweep that
// showed the 3.4-blocks-per-SM imbalance.  `--lean2`: the shipped fp4_gemv_token (per-warp
// staging, K split over blocks) at forced variants / splits.  Its first lab copy
// (lab_gemv_lean2, which the session of 2026-12-05 (second) timed) was the same loop and is gone.
// Results: benchmarks/RESULTS.md, sessions of 2026-12-04 (second and fourth), 2026-12-05 (second).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/fp4_gemm_kernels.cuh"
#include "cuda/tma.h"
#include "cuda/wgmma.cuh"

using namespace marlin;
using namespace marlin::cuda;
using bf16 = __nv_bfloat16;

enum Mode { kFull = 0, kNoDecode = 1, kReadOnly = 2, kDecodeOnly = 3, kZDecode = 4 };

template <int I>
__device__ __forceinline__ uint32_t bf16_scale_up(uint32_t raw) {
  uint32_t out;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(out) : "r"(raw), "r"(0x77807780u), "r"(0x80008000u));
  return out;
}

// Same values as decode_word<bf16>: nibbles (i, i + 4) -> pair i, e2m1 * 2^-14.  The two
// nibbles of a byte share their sign move: z holds magnitude bits at 0..2 / 4..6 and signs
// at 9 / 13 (both halves), so each pair is one shift + one mask.
__device__ __forceinline__ void decode_word_z(uint32_t w, uint32_t (&b)[4]) {
  constexpr uint32_t M = 0x00770077u, OUT = 0x81C081C0u;
  const uint32_t za = (w & M) | ((w << 6) & ~M);
  const uint32_t zb = ((w >> 8) & M) | ((w >> 2) & ~M);
  b[0] = bf16_scale_up<0>((za << 6) & OUT);
  b[1] = bf16_scale_up<1>((za << 2) & OUT);
  b[2] = bf16_scale_up<2>((zb << 6) & OUT);
  b[3] = bf16_scale_up<3>((zb << 2) & OUT);
}

// Pieces every lab loop shares.  The MMAs of one k32 step from its decoded words
// (pw[column][pair]) and B fragments: the shipped kernel's, for one token tile.
__device__ __forceinline__ void lab_step_mmas(const uint32_t (&pw)[4][4], const uint32_t (&bf)[4], float (&part)[2][4]) {
  gemv_step_mmas<bf16, 1>(pw, reinterpret_cast<const uint32_t(&)[1][4]>(bf), reinterpret_cast<float(&)[1][2][4]>(part));
}
// Decode (ZDEC: decode_word_z) and MMAs of one step.
template <bool ZDEC>
__device__ __forceinline__ void lab_step(const uint4& cw, const uint32_t (&bf)[4], float (&part)[2][4]) {
  uint32_t pw[4][4];
  const uint32_t words[4] = {cw.x, cw.y, cw.z, cw.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if constexpr (ZDEC) decode_word_z(words[j], pw[j]);
    else decode_word<bf16>(words[j], pw[j]);
  }
  lab_step_mmas(pw, bf, part);
}
// A group's end: its scales (4 columns) times the partial sums, into acc.
__device__ __forceinline__ void lab_apply_scales(uint2 s_grp, float (&acc)[2][4], float (&part)[2][4]) {
  const float sc[4] = {scale_to_float<bf16>(s_grp.x, 0), scale_to_float<bf16>(s_grp.x, 1),
                       scale_to_float<bf16>(s_grp.y, 0), scale_to_float<bf16>(s_grp.y, 1)};
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc[j][e] = fmaf(part[j][e], sc[2 * j + (e >> 1)], acc[j][e]);
      part[j][e] = 0.f;
    }
}
// The WK warps reduced through shared memory (`red`, free by now), then warp 0's lanes
// t == 0 (token 0) store their 4 columns from `col` (the decode's 2^-14 undone).
template <int WK>
__device__ __forceinline__ void lab_reduce_store(float* red, const GemmArgs& a, float (&acc)[2][4], int wk, int lane,
                                                 int col) {
  __syncthreads();
  if (wk > 0)
#pragma unroll
    for (int r = 0; r < 8; ++r) red[((wk - 1) * 8 + r) * 32 + lane] = (&acc[0][0])[r];
  __syncthreads();
  if (wk > 0) return;
  for (int o = 0; o < WK - 1; ++o)
#pragma unroll
    for (int r = 0; r < 8; ++r) (&acc[0][0])[r] += red[(o * 8 + r) * 32 + lane];
  if ((lane & 3) != 0) return;
  const float v[4] = {acc[0][0] * 16384.f, acc[0][2] * 16384.f, acc[1][0] * 16384.f, acc[1][2] * 16384.f};
  bf16* out = static_cast<bf16*>(a.out);
  for (int c = 0; c < 4; ++c) out[col + c] = __float2bfloat16_rn(v[c]);
}

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

// L2PF: 0 = no prefetch; d > 0 = lanes 0..3 prefetch (to L2) the 128-byte rows of the step
// d steps ahead; -1 = every row of the warp's K range at the start.
template <int WK, int ST, int MODE, int PF, int MINB, bool PRED = true, int WSRC = 0, bool EARLY = false, int L2PF = 0>
__global__ void __launch_bounds__(32 * WK, MINB) lab_gemv(GemmArgs a) {
  extern __shared__ uint4 smem[];
  const int lane = threadIdx.x & 31, wk = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int N = a.N, K = a.K;
  const int col = blockIdx.x * 32 + 4 * g;
  const int spg = a.group_size / 32, groups = K / a.group_size;
  const int grp_begin = groups * wk / WK, grp_end = groups * (wk + 1) / WK;
  const int s_begin = grp_begin * spg, s_end = grp_end * spg;
  constexpr int kSlot = 512 * 2 + 64, kXOff = 512, kSOff = 1024;
  const uint32_t ring = static_cast<uint32_t>(__cvta_generic_to_shared(smem)) + wk * ST * kSlot;
  auto chunk = [](int gg, int tt) { return (4 * gg + (tt ^ ((gg >> 1) & 3))) * 16; };
  const int my_chunk = chunk(g, t);
  const int64_t step_bytes = int64_t(N) * 16;
  const char* next_w = reinterpret_cast<const char*>(a.w + int64_t(t) * N + col) + s_begin * step_bytes;
  const char* next_x = reinterpret_cast<const char*>(static_cast<const bf16*>(a.x) + 8 * t + s_begin * 32);
  const int x_size = g == 0 ? 16 : 0;
  const int x_read = kXOff + chunk(0, t);
  const char* next_s = reinterpret_cast<const char*>(static_cast<const bf16*>(a.scales) + int64_t(grp_begin) * N + col);
  const int64_t group_bytes = int64_t(N) * 2;
  const int s_size = t == 0 ? 8 : 0;
  const uint32_t group_mask = spg - 1;
  uint4 rw[ST];
  const char* w_row0 = reinterpret_cast<const char*>(a.w + int64_t(t) * N + col);  // row t of step 0
  if constexpr (L2PF < 0) {
    for (int r = lane; r < 4 * (s_end - s_begin); r += 32)
      prefetch_l2(reinterpret_cast<const char*>(a.w + int64_t(4 * s_begin + r) * N + blockIdx.x * 32));
  } else if constexpr (L2PF > 0) {
    if (g == 0)
      for (int d = ST; d < L2PF && s_begin + d < s_end; ++d) prefetch_l2(w_row0 + (s_begin + d) * step_bytes);
  }
  auto issue = [&](int u, bool valid) {
    const uint32_t slot = ring + u * kSlot;
    const bool first = (uint32_t(u) & group_mask) == 0;
    if (valid && WSRC == 1) rw[u] = ldg_stream(next_w);
    if (valid && WSRC == 2) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(slot + my_chunk), "l"(next_w) : "memory");
    } else if (valid) {
      if (WSRC == 1) {
      } else if (PF == 0)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(slot + my_chunk), "l"(next_w) : "memory");
      else if (PF == 1)
        asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;\n" ::"r"(slot + my_chunk), "l"(next_w) : "memory");
      else
        asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(slot + my_chunk), "l"(next_w) : "memory");
      if (PRED) {
        cp_async16_if(slot + kXOff + my_chunk, next_x, x_size != 0);
        if (first) cp_async8_if(slot + kSOff + g * 8, next_s, s_size != 0);
      } else {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(slot + kXOff + my_chunk), "l"(next_x),
                     "r"(x_size) : "memory");
        if (first)
          asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(slot + kSOff + g * 8), "l"(next_s),
                       "r"(s_size) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    next_w += step_bytes;
    next_x += 64;
    if (first) next_s += group_bytes;
  };
#pragma unroll
  for (int u = 0; u < ST; ++u) issue(u, s_begin + u < s_end);
  float acc[2][4] = {}, part[2][4] = {};
  uint32_t sink = 0;
  uint2 s_grp = make_uint2(0, 0);
  for (int s0 = s_begin; s0 < s_end; s0 += ST) {
#pragma unroll
    for (int u = 0; u < ST; ++u) {
      const int step = s0 + u;
      if (step >= s_end) break;
      const uint32_t slot = ring + u * kSlot;
      asm volatile("cp.async.wait_group %0;\n" ::"n"(ST - 1) : "memory");
      uint4 cw, cx;
      if (WSRC == 1)
        cw = rw[u];
      else
        asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(cw.x), "=r"(cw.y), "=r"(cw.z), "=r"(cw.w)
                     : "r"(slot + my_chunk) : "memory");
      asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(cx.x), "=r"(cx.y), "=r"(cx.z), "=r"(cx.w)
                   : "r"(slot + x_read) : "memory");
      if ((uint32_t(u) & group_mask) == 0)
        asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n" : "=r"(s_grp.x), "=r"(s_grp.y) : "r"(slot + kSOff + g * 8) : "memory");
      if (EARLY) {
        __syncwarp();
        issue(u, step + ST < s_end);
      }
      if constexpr (MODE == kReadOnly) {
        sink ^= cw.x ^ cw.y ^ cw.z ^ cw.w ^ cx.x ^ s_grp.x;
      } else {
        uint32_t bf[4];
        b_frags_from_pairs(cx, bf);
        uint32_t pw[4][4];
        const uint32_t words[4] = {cw.x, cw.y, cw.z, cw.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if constexpr (MODE == kNoDecode) {
#pragma unroll
            for (int i = 0; i < 4; ++i) pw[j][i] = words[j] & 0x3F803F80u;  // harmless normal values
          } else if constexpr (MODE == kZDecode) {
            decode_word_z(words[j], pw[j]);
          } else {
            decode_word<bf16>(words[j], pw[j]);
          }
        }
        if constexpr (MODE == kDecodeOnly) {
#pragma unroll
          for (int j = 0; j < 4; ++j) sink ^= pw[j][0] ^ pw[j][1] ^ pw[j][2] ^ pw[j][3] ^ bf[j];
        } else {
          lab_step_mmas(pw, bf, part);
        }
      }
      if constexpr (L2PF > 0) {
        if (g == 0 && step + L2PF < s_end) prefetch_l2(w_row0 + (step + L2PF) * step_bytes);
      }
      if (!EARLY) issue(u, step + ST < s_end);
      if (((u + 1) & group_mask) == 0) lab_apply_scales(s_grp, acc, part);
    }
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  if (MODE == kReadOnly || MODE == kDecodeOnly) acc[0][0] += __uint_as_float(sink & 0x3F800000u);
  lab_reduce_store<WK>(reinterpret_cast<float*>(smem), a, acc, wk, lane, col);
}


// Activations and scales copied to shared memory once per block (the activations already
// permuted into B fragments), so the loop is: one weight load, one 16-byte LDS, the
// decode and the MMAs; a group's scales with one 8-byte LDS.
template <int WK, int ST, bool ZDEC, int MINB>
__global__ void __launch_bounds__(32 * WK, MINB) lab_gemv_pre(GemmArgs a) {
  extern __shared__ uint4 smem[];
  const int lane = threadIdx.x & 31, wk = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int N = a.N, K = a.K;
  const int col = blockIdx.x * 32 + 4 * g;
  const int spg = a.group_size / 32, groups = K / a.group_size;
  const int grp_begin = groups * wk / WK, grp_end = groups * (wk + 1) / WK;
  const int s_begin = grp_begin * spg, s_end = grp_end * spg;
  const int64_t step_bytes = int64_t(N) * 16;
  const char* next_w = reinterpret_cast<const char*>(a.w + int64_t(t) * N + col) + s_begin * step_bytes;
  uint4 rw[ST];
#pragma unroll
  for (int u = 0; u < ST; ++u)
    if (s_begin + u < s_end) rw[u] = ldg_stream(next_w + u * step_bytes);
  next_w += ST * step_bytes;
  uint4* xs = smem;                                            // [K / 32][4] B fragments
  uint2* ss = reinterpret_cast<uint2*>(smem + K / 8);          // [groups][8] column quads
  const bf16* x = static_cast<const bf16*>(a.x);
  for (int c = threadIdx.x; c < K / 8; c += 32 * WK) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(x) + c);
    uint32_t bf[4];
    b_frags_from_pairs(v, bf);
    xs[c] = make_uint4(bf[0], bf[1], bf[2], bf[3]);
  }
  const bf16* sc_g = static_cast<const bf16*>(a.scales) + blockIdx.x * 32;
  for (int c = threadIdx.x; c < groups * 8; c += 32 * WK)
    ss[c] = __ldg(reinterpret_cast<const uint2*>(sc_g + int64_t(c >> 3) * N + 4 * (c & 7)));
  __syncthreads();
  float acc[2][4] = {}, part[2][4] = {};
  uint2 s_grp = make_uint2(0, 0);
  const uint32_t group_mask = spg - 1;
  for (int s0 = s_begin; s0 < s_end; s0 += ST) {
#pragma unroll
    for (int u = 0; u < ST; ++u) {
      const int step = s0 + u;
      if (step >= s_end) break;
      const uint4 cw = rw[u];
      const uint4 bx = xs[step * 4 + t];
      if ((uint32_t(u) & group_mask) == 0) s_grp = ss[(step / spg) * 8 + g];
      const uint32_t bf[4] = {bx.x, bx.y, bx.z, bx.w};
      lab_step<ZDEC>(cw, bf, part);
      if (step + ST < s_end) rw[u] = ldg_stream(next_w);
      next_w += step_bytes;
      if (((u + 1) & group_mask) == 0) lab_apply_scales(s_grp, acc, part);
    }
  }
  lab_reduce_store<WK>(reinterpret_cast<float*>(smem), a, acc, wk, lane, col);
}


__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// Weights by TMA: each warp's lane 0 copies its K range in slots of SPS k32 steps (4 SPS
// word rows x the block's 128-byte strip, 128-byte swizzled) into a ring of SLOTS slots
// of the warp's own, completing on one mbarrier per slot; lanes read their 16 bytes with
// one LDS.  Column quad q(g) = g / 2 + 4 (g % 2) keeps each 8-lane phase of the LDS on
// 8 distinct 16-byte bank groups.  Activations / scales as lab_gemv_pre.
template <int WK, int SLOTS, int SPS, bool ZDEC, bool READONLY, int MINB>
__global__ void __launch_bounds__(32 * WK, MINB) lab_gemv_tma(GemmArgs a, const __grid_constant__ CUtensorMap tm_w) {
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bars[WK * SLOTS];
  constexpr uint32_t kSlot = SPS * 512;
  const int lane = threadIdx.x & 31, wk = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int q = (g >> 1) + 4 * (g & 1);
  const int N = a.N, K = a.K;
  const int col = blockIdx.x * 32 + 4 * q;
  const int spg = a.group_size / 32, groups = K / a.group_size;
  const int grp_begin = groups * wk / WK, grp_end = groups * (wk + 1) / WK;
  const int s_begin = grp_begin * spg, s_end = grp_end * spg;
  const int nchunks = (s_end - s_begin + SPS - 1) / SPS;
  const uint32_t base = (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t ring = base + wk * SLOTS * kSlot;
  const uint32_t bar0 = static_cast<uint32_t>(__cvta_generic_to_shared(bars)) + wk * SLOTS * 8;
  if (lane == 0) {
    for (int j = 0; j < SLOTS; ++j) wg::mbar_init(bar0 + 8 * j, 1);
    wg::mbar_init_fence();
  }
  __syncwarp();
  auto issue = [&](int slot, int c) {
    if (lane == 0) {
      wg::mbar_arrive_expect(bar0 + 8 * slot, kSlot);
      tma_load_2d(ring + slot * kSlot, &tm_w, blockIdx.x * 32, 4 * (s_begin + c * SPS), bar0 + 8 * slot);
    }
  };
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
    if (j < nchunks) issue(j, j);
  // Activations / scales once per block (after the weight copies are on their way).
  uint4* xs = reinterpret_cast<uint4*>(smem_raw + (base - static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw))) + WK * SLOTS * kSlot);
  uint2* ss = reinterpret_cast<uint2*>(xs + K / 8);
  const bf16* x = static_cast<const bf16*>(a.x);
  for (int c = threadIdx.x; c < K / 8; c += 32 * WK) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(x) + c);
    uint32_t bf[4];
    b_frags_from_pairs(v, bf);
    xs[c] = make_uint4(bf[0], bf[1], bf[2], bf[3]);
  }
  const bf16* sc_g = static_cast<const bf16*>(a.scales) + blockIdx.x * 32;
  for (int c = threadIdx.x; c < groups * 8; c += 32 * WK) {
    const int qq = c & 7;  // stored by physical quad
    ss[c] = __ldg(reinterpret_cast<const uint2*>(sc_g + int64_t(c >> 3) * N + 4 * qq));
  }
  __syncthreads();
  float acc[2][4] = {}, part[2][4] = {};
  uint2 s_grp = make_uint2(0, 0);
  uint32_t sink = 0;
  for (int c = 0; c < nchunks; ++c) {
    const int slot = c % SLOTS;
    wg::mbar_wait(bar0 + 8 * slot, (c / SLOTS) & 1);
    const uint32_t sa = ring + slot * kSlot;
#pragma unroll
    for (int i = 0; i < SPS; ++i) {
      const int step = s_begin + c * SPS + i;
      const int r = 4 * i + t;
      uint4 cw;
      asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(cw.x), "=r"(cw.y), "=r"(cw.z), "=r"(cw.w)
                   : "r"(sa + r * 128 + ((q ^ (r & 7)) << 4)) : "memory");
      if constexpr (READONLY) {
        sink ^= cw.x ^ cw.y ^ cw.z ^ cw.w;
        continue;
      }
      const uint4 bx = xs[step * 4 + t];
      if ((step & (spg - 1)) == 0) s_grp = ss[(step / spg) * 8 + q];
      const uint32_t bf[4] = {bx.x, bx.y, bx.z, bx.w};
      lab_step<ZDEC>(cw, bf, part);
      if (((step + 1) & (spg - 1)) == 0) lab_apply_scales(s_grp, acc, part);
    }
    __syncwarp();
    if (c + SLOTS < nchunks) issue(slot, c + SLOTS);
  }
  if (READONLY) acc[0][0] += __uint_as_float(sink & 0x3F800000u);
  lab_reduce_store<WK>(reinterpret_cast<float*>(smem_raw), a, acc, wk, lane, col);
}


// ---- lean M = 1 loop (session of 2026-12-05, second) ----
// DEC 0: decode_word (bits + one bf16x2 multiply by 2^112).  DEC 1: the same bits without
// the multiply (e2m1 * 2^-126; the +-0.5 codes are bf16 subnormals, taken as they are by
// the tensor cores, as the f16 decode's already are), the 2^-112 moved onto the
// activations (x * 2^64 once per block in shared memory) and the epilogue (2^62).  DEC 2:
// DEC 1's bits with one multiply per pair (the shipped place_pair_bf16).
template <int I>
__device__ __forceinline__ uint32_t place_pair_bf16_shift(uint32_t w) {
  constexpr int kMag = 6 - 4 * I, kSign = 12 - 4 * I;
  const uint32_t mag = kMag >= 0 ? (w << (kMag >= 0 ? kMag : 0)) : (w >> (kMag < 0 ? -kMag : 0));
  return (mag & 0x01C001C0u) | ((w << kSign) & 0x80008000u);
}
template <int DEC>
__device__ __forceinline__ void lean_decode(uint32_t w, uint32_t (&b)[4]) {
  if constexpr (DEC == 0) {
    decode_word<bf16>(w, b);
  } else if constexpr (DEC == 1) {
    b[0] = place_pair_bf16_shift<0>(w); b[1] = place_pair_bf16_shift<1>(w);
    b[2] = place_pair_bf16_shift<2>(w); b[3] = place_pair_bf16_shift<3>(w);
  } else {
    decode_word_unscaled<bf16>(w, b);  // the shipped place_pair_bf16
  }
}

// M = 1 only, group size 32 * SPG fixed at compile time: x (as B fragments) and the
// block's scales (as fp32) in shared memory once, weights in a register ring; per step
// one weight load, one 16-byte LDS, the decode and 4 MMAs; per group one LDS.128 and the 4
// FMAs that token 0 needs (c0, c2 of the two tiles).
template <int WK, int ST, int SPG, int DEC, int MINB>
__global__ void __launch_bounds__(32 * WK, MINB) lab_gemv_lean(GemmArgs a) {
  static_assert(ST % SPG == 0, "a ring pass holds whole groups");
  extern __shared__ uint4 smem[];
  const int lane = threadIdx.x & 31, wk = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int N = a.N, K = a.K;
  const int col = blockIdx.x * 32 + 4 * g;
  const int groups = K / (32 * SPG);
  const int grp_begin = groups * wk / WK, grp_end = groups * (wk + 1) / WK;
  const int s_begin = grp_begin * SPG, s_end = grp_end * SPG;
  const int64_t step_bytes = int64_t(N) * 16;
  const char* next_w = reinterpret_cast<const char*>(a.w + int64_t(t) * N + col) + s_begin * step_bytes;
  uint4 rw[ST];
#pragma unroll
  for (int u = 0; u < ST; ++u)
    if (s_begin + u < s_end) rw[u] = ldg_stream(next_w + u * step_bytes);
  next_w += ST * step_bytes;
  uint4* xs = smem;
  float4* ss = reinterpret_cast<float4*>(smem + K / 8);
  const bf16* x = static_cast<const bf16*>(a.x);
  for (int c = threadIdx.x; c < K / 8; c += 32 * WK) {
    uint4 v = __ldg(reinterpret_cast<const uint4*>(x) + c);
    if constexpr (DEC > 0) {
      v.x = scale_activation_pair<bf16>(v.x); v.y = scale_activation_pair<bf16>(v.y);
      v.z = scale_activation_pair<bf16>(v.z); v.w = scale_activation_pair<bf16>(v.w);
    }
    uint32_t bf[4];
    b_frags_from_pairs(v, bf);
    xs[c] = make_uint4(bf[0], bf[1], bf[2], bf[3]);
  }
  const bf16* sc_g = static_cast<const bf16*>(a.scales) + blockIdx.x * 32;
  for (int c = threadIdx.x; c < groups * 8; c += 32 * WK) {
    const uint2 s = __ldg(reinterpret_cast<const uint2*>(sc_g + int64_t(c >> 3) * N + 4 * (c & 7)));
    ss[c] = make_float4(scale_to_float<bf16>(s.x, 0), scale_to_float<bf16>(s.x, 1), scale_to_float<bf16>(s.y, 0),
                        scale_to_float<bf16>(s.y, 1));
  }
  __syncthreads();
  float acc[2][2] = {};
  const float4* sq = ss + grp_begin * 8 + g;
  for (int s0 = s_begin; s0 < s_end; s0 += ST) {
    float part[2][4];
#pragma unroll
    for (int u = 0; u < ST; ++u) {
      const int step = s0 + u;
      if (step >= s_end) break;
      const uint4 cw = rw[u];
      const uint4 bx = xs[step * 4 + t];
      uint32_t pw[4][4];
      lean_decode<DEC>(cw.x, pw[0]);
      lean_decode<DEC>(cw.y, pw[1]);
      lean_decode<DEC>(cw.z, pw[2]);
      lean_decode<DEC>(cw.w, pw[3]);
      if (u % SPG == 0) {
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[j][e] = 0.f;
      }
      const uint32_t bf[4] = {bx.x, bx.y, bx.z, bx.w};
      lab_step_mmas(pw, bf, part);
      if (step + ST < s_end) rw[u] = ldg_stream(next_w);
      next_w += step_bytes;
      if ((u + 1) % SPG == 0) {
        const float4 sc = *sq;
        sq += 8;
        acc[0][0] = fmaf(part[0][0], sc.x, acc[0][0]);
        acc[0][1] = fmaf(part[0][2], sc.y, acc[0][1]);
        acc[1][0] = fmaf(part[1][0], sc.z, acc[1][0]);
        acc[1][1] = fmaf(part[1][2], sc.w, acc[1][1]);
      }
    }
  }
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  if (wk > 0)
#pragma unroll
    for (int r = 0; r < 4; ++r) red[((wk - 1) * 4 + r) * 32 + lane] = (&acc[0][0])[r];
  __syncthreads();
  if (wk > 0) return;
  for (int o = 0; o < WK - 1; ++o)
#pragma unroll
    for (int r = 0; r < 4; ++r) (&acc[0][0])[r] += red[(o * 4 + r) * 32 + lane];
  if (t != 0 || col >= N) return;
  const float k = DEC > 0 ? 0x1p62f : 16384.f;
  bf16* out = static_cast<bf16*>(a.out);
  out[col + 0] = __float2bfloat16_rn(acc[0][0] * k);
  out[col + 1] = __float2bfloat16_rn(acc[0][1] * k);
  out[col + 2] = __float2bfloat16_rn(acc[1][0] * k);
  out[col + 3] = __float2bfloat16_rn(acc[1][1] * k);
}


#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA error %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

struct Problem {
  int K, N, sets;
  std::vector<uint32_t*> w;
  std::vector<bf16*> s;
  bf16* x;
  bf16* out;
  double bytes() const { return double(K / 8) * N * 4 + double(K / 64) * N * 2; }
};

static Problem make_problem(int K, int N, int sets) {
  Problem p{K, N, sets, {}, {}, nullptr, nullptr};
  std::vector<uint32_t> hw(size_t(K / 8) * N);
  std::vector<uint16_t> hs(size_t(K / 64) * N), hx(K);
  uint64_t r = 12345;
  auto rnd = [&]() { r = r * 6364136223846793005ull + 1442695040888963407ull; return uint32_t(r >> 32); };
  for (auto& v : hx) { float f = (int(rnd() % 2001) - 1000) / 1000.f; uint32_t b; memcpy(&b, &f, 4); v = uint16_t(b >> 16); }
  for (int k = 0; k < sets; ++k) {
    for (auto& v : hw) v = rnd();
    for (auto& v : hs) { float f = 0.001f * (1 + rnd() % 16); uint32_t b; memcpy(&b, &f, 4); v = uint16_t(b >> 16); }
    uint32_t* dw; bf16* ds;
    CK(cudaMalloc(&dw, hw.size() * 4)); CK(cudaMemcpy(dw, hw.data(), hw.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&ds, hs.size() * 2)); CK(cudaMemcpy(ds, hs.data(), hs.size() * 2, cudaMemcpyHostToDevice));
    p.w.push_back(dw); p.s.push_back(ds);
  }
  CK(cudaMalloc(&p.x, K * 2)); CK(cudaMemcpy(p.x, hx.data(), K * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&p.out, N * 2));
  return p;
}

static std::vector<uint16_t> fetch(const Problem& p) {
  std::vector<uint16_t> h(p.N);
  CK(cudaMemcpy(h.data(), p.out, p.N * 2, cudaMemcpyDeviceToHost));
  return h;
}

template <typename Launch>
static double time_it(const Problem& p, Launch launch, int reps = 400) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (int i = 0; i < 20; ++i) launch(i % p.sets);
  cudaEventRecord(e0);
  for (int i = 0; i < reps; ++i) launch(i % p.sets);
  cudaEventRecord(e1);
  CK(cudaEventSynchronize(e1));
  CK(cudaGetLastError());
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  return ms * 1e3 / reps;
}

static GemmArgs args(const Problem& p, int set) {
  return GemmArgs{p.x, p.w[set], p.s[set], nullptr, p.out, 1, p.N, p.K, 64, 0};
}

template <int V>
static void shipped(const Problem& p, const char* tag, std::vector<uint16_t>* ref) {
  constexpr CudaGemvConfig c = kCudaGemvConfigs[V];
  auto k = &fp4_gemv<bf16, bf16, c.wk, c.stages, false, c.blocks_per_sm(false)>;
  const int smem = cuda_gemv_smem(c, false);
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  auto launch = [&](int set) { k<<<dim3((p.N + 31) / 32, 1), 32 * c.wk, smem>>>(args(p, set)); };
  const double us = time_it(p, launch);
  launch(0);
  CK(cudaDeviceSynchronize());
  if (ref && ref->empty()) *ref = fetch(p);
  printf("%-34s K=%5d wk=%2d st=%d     %7.2f us  %5.2f TB/s\n", tag, p.K, c.wk, c.stages, us, p.bytes() / us / 1e6);
}

template <int WK, int ST, int MODE, int PF, int MINB, bool PRED = true, int WSRC = 0, bool EARLY = false, int L2PF = 0>
static void lab(const Problem& p, const char* tag, const std::vector<uint16_t>* ref) {
  auto k = &lab_gemv<WK, ST, MODE, PF, MINB, PRED, WSRC, EARLY, L2PF>;
  const int ring = WK * ST * (512 * 2 + 64), red = (WK - 1) * 8 * 32 * 4;
  const int smem = ring > red ? ring : red;
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  auto launch = [&](int set) { k<<<dim3((p.N + 31) / 32, 1), 32 * WK, smem>>>(args(p, set)); };
  const double us = time_it(p, launch);
  const char* check = "";
  if (ref && (MODE == kFull || MODE == kZDecode)) {
    CK(cudaMemset(p.out, 0xFF, p.N * 2));
    launch(0);
    CK(cudaDeviceSynchronize());
    check = fetch(p) == *ref ? "  bit-exact vs shipped" : "  MISMATCH vs shipped";
  }
  printf("%-34s K=%5d wk=%2d st=%d pf=%d pred=%d wsrc=%d early=%d l2pf=%d %7.2f us  %5.2f TB/s%s\n", tag, p.K, WK, ST, PF, int(PRED), WSRC, int(EARLY), L2PF, us, p.bytes() / us / 1e6, check);
}


template <int WK, int ST, bool ZDEC, int MINB>
static void lab_pre(const Problem& p, const char* tag, const std::vector<uint16_t>* ref) {
  auto k = &lab_gemv_pre<WK, ST, ZDEC, MINB>;
  const int pre = p.K * 2 + (p.K / 64) * 64, red = (WK - 1) * 8 * 32 * 4;
  const int smem = pre > red ? pre : red;
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  auto launch = [&](int set) { k<<<dim3((p.N + 31) / 32, 1), 32 * WK, smem>>>(args(p, set)); };
  const double us = time_it(p, launch);
  const char* check = "";
  if (ref) {
    CK(cudaMemset(p.out, 0xFF, p.N * 2));
    launch(0);
    CK(cudaDeviceSynchronize());
    check = fetch(p) == *ref ? "  bit-exact vs shipped" : "  MISMATCH vs shipped";
  }
  printf("%-34s K=%5d wk=%2d st=%d zdec=%d minb=%d %7.2f us  %5.2f TB/s%s\n", tag, p.K, WK, ST, int(ZDEC), MINB, us, p.bytes() / us / 1e6, check);
}


template <int WK, int SLOTS, int SPS, bool ZDEC, bool READONLY, int MINB>
static void lab_tma(const Problem& p, const char* tag, const std::vector<uint16_t>* ref) {
  auto k = &lab_gemv_tma<WK, SLOTS, SPS, ZDEC, READONLY, MINB>;
  const int smem = 1024 + WK * SLOTS * SPS * 512 + p.K * 2 + (p.K / 64) * 64;
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  std::vector<CUtensorMap> maps(p.sets);
  auto encode = tensor_map_encoder();
  for (int i = 0; i < p.sets; ++i) {
    const cuuint64_t dims[2] = {cuuint64_t(p.N), cuuint64_t(p.K / 8)};
    const cuuint64_t strides[1] = {cuuint64_t(p.N) * 4};
    const cuuint32_t box[2] = {32, cuuint32_t(4 * SPS)};
    const cuuint32_t unit[2] = {1, 1};
    if (encode(&maps[i], CU_TENSOR_MAP_DATA_TYPE_UINT32, 2, p.w[i], dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
      printf("tensor map encoding failed\n");
      return;
    }
  }
  auto launch = [&](int set) { k<<<dim3((p.N + 31) / 32, 1), 32 * WK, smem>>>(args(p, set), maps[set]); };
  const double us = time_it(p, launch);
  const char* check = "";
  if (ref && !READONLY) {
    CK(cudaMemset(p.out, 0xFF, p.N * 2));
    launch(0);
    CK(cudaDeviceSynchronize());
    check = fetch(p) == *ref ? "  bit-exact vs shipped" : "  MISMATCH vs shipped";
  }
  printf("%-34s K=%5d wk=%2d slots=%d sps=%d zdec=%d ro=%d minb=%d smem=%d %7.2f us  %5.2f TB/s%s\n", tag, p.K, WK, SLOTS, SPS, int(ZDEC),
         int(READONLY), MINB, smem, us, p.bytes() / us / 1e6, check);
}

template <int WK, int ST, int SPG, int DEC, int MINB>
static void lab_lean(const Problem& p, const char* tag, const std::vector<uint16_t>* ref) {
  auto k = &lab_gemv_lean<WK, ST, SPG, DEC, MINB>;
  const int smem = p.K * 2 + (p.K / (32 * SPG)) * 8 * 16;
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  auto launch = [&](int set) { k<<<dim3((p.N + 31) / 32, 1), 32 * WK, smem>>>(args(p, set)); };
  const double us = time_it(p, launch);
  const char* check = "";
  if (ref && !ref->empty()) {
    CK(cudaMemset(p.out, 0xFF, p.N * 2));
    launch(0);
    CK(cudaDeviceSynchronize());
    check = fetch(p) == *ref ? "  bit-exact vs shipped" : "  MISMATCH vs shipped";
  }
  printf("%-34s K=%5d N=%5d wk=%2d st=%d dec=%d minb=%d %7.2f us  %5.2f TB/s%s\n", tag, p.K, p.N, WK, ST, DEC, MINB, us,
         p.bytes() / us / 1e6, check);
}

// The shipped one-token kernel (fp4_gemv_token), variant V, K split over S blocks.
template <int V>
static void token(const Problem& p, int S, const char* tag, const std::vector<uint16_t>* ref) {
  constexpr CudaGemvTokenConfig c = kCudaGemvTokenConfigs[V];
  auto k = &fp4_gemv_token<bf16, bf16, c.wk, c.stages, 2, c.min_blocks>;
  const int smem = cuda_gemv_token_smem(p.K, 64, S, c.wk);
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  float* part = nullptr;
  int* counters = nullptr;
  CK(cudaMalloc(&part, size_t(S) * p.N * 4));
  CK(cudaMalloc(&counters, p.N * 4));
  CK(cudaMemset(counters, 0, p.N * 4));
  auto launch = [&](int set) {
    GemmArgs a = args(p, set);
    a.split_part = part;
    a.split_counters = counters;
    k<<<dim3((p.N + 31) / 32, S), 32 * c.wk, smem>>>(a);
  };
  const double us = time_it(p, launch);
  const char* check = "";
  if (ref && !ref->empty()) {
    CK(cudaMemset(p.out, 0xFF, p.N * 2));
    launch(0);
    CK(cudaDeviceSynchronize());
    check = fetch(p) == *ref ? "  bit-exact vs shipped" : "  differs from shipped (summation order)";
  }
  CK(cudaFree(part));
  CK(cudaFree(counters));
  const CudaGemvTokenPlan plan = plan_cuda_gemv_token(p.N, p.K, 64, 132);
  printf("%-34s K=%5d N=%5d wk=%2d S=%d smem=%d (plan: v%d S=%d) %7.2f us  %5.2f TB/s%s\n", tag, p.K, p.N, c.wk, S, smem,
         plan.variant, plan.splits, us, p.bytes() / us / 1e6, check);
}

int main(int argc, char** argv) {
  const bool ncu = argc > 1 && !strcmp(argv[1], "--ncu");
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
  Problem p = make_problem(4096, 14336, ncu ? 1 : 8);
  std::vector<uint16_t> ref;
  if (argc > 1 && !strcmp(argv[1], "--lean2")) {
    shipped<2>(p, "shipped v2 (plan's choice)", &ref);
    lab<8, 4, kReadOnly, 0, 4, true, 1>(p, "readonly, register ring", nullptr);
    lab_lean<8, 4, 2, 2, 4>(p, "lean dec2", &ref);
    token<0>(p, 1, "token v0 (wk8) S1", &ref);
    token<1>(p, 1, "token v1 (wk4) S1", &ref);
    token<1>(p, 2, "token v1 (wk4) S2", &ref);
    token<2>(p, 4, "token v2 (wk2) S4", &ref);
    token<0>(p, 2, "token v0 (wk8) S2 (2 waves)", &ref);
    for (int N : {12672, 16896, 4096, 28672}) {
      Problem q = make_problem(4096, N, N == 28672 ? 4 : 8);
      std::vector<uint16_t> r2;
      shipped<2>(q, "shipped v2", &r2);
      lab<8, 4, kReadOnly, 0, 4, true, 1>(q, "readonly, register ring", nullptr);
      token<0>(q, 1, "token v0 S1", &r2);
      token<1>(q, 2, "token v1 S2", &r2);
      token<0>(q, 4, "token v0 S4", &r2);
    }
    for (int K : {8192, 16384, 14336}) {
      Problem q = make_problem(K, K == 14336 ? 4096 : 14336, K == 16384 ? 2 : 4);
      std::vector<uint16_t> r2;
      shipped<2>(q, "shipped v2", &r2);
      lab<8, 4, kReadOnly, 0, 4, true, 1>(q, "readonly, register ring", nullptr);
      token<0>(q, 1, "token v0 S1", &r2);
      token<1>(q, 2, "token v1 S2", &r2);
      token<0>(q, 4, "token v0 S4", &r2);
    }
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "--lean")) {
    shipped<2>(p, "shipped v2 (plan's choice)", &ref);
    lab<8, 4, kFull, 0, 4, true, 1>(p, "full, register ring", &ref);
    lab<8, 4, kReadOnly, 0, 4, true, 1>(p, "readonly, register ring", nullptr);
    lab_lean<8, 4, 2, 0, 4>(p, "lean dec0", &ref);
    lab_lean<8, 4, 2, 1, 4>(p, "lean dec1 (subnormal A)", &ref);
    lab_lean<8, 4, 2, 2, 4>(p, "lean dec2 (mul placement)", &ref);
    lab_lean<8, 6, 2, 2, 3>(p, "lean dec2 st6", &ref);
    lab_lean<8, 8, 2, 2, 3>(p, "lean dec2 st8", &ref);
    lab_lean<4, 4, 2, 2, 8>(p, "lean dec2 wk4", &ref);
    lab_lean<16, 4, 2, 2, 2>(p, "lean dec2 wk16", &ref);
    for (int N : {12672, 16896}) {  // 3 and 4 blocks per SM exactly (132 SMs)
      Problem q = make_problem(4096, N, 8);
      std::vector<uint16_t> r2;
      shipped<2>(q, "shipped v2", &r2);
      lab<8, 4, kReadOnly, 0, 4, true, 1>(q, "readonly, register ring", nullptr);
      lab_lean<8, 4, 2, 2, 4>(q, "lean dec2", &r2);
    }
    for (int K : {8192, 16384}) {
      Problem q = make_problem(K, 14336, K == 8192 ? 4 : 2);
      std::vector<uint16_t> r2;
      shipped<2>(q, "shipped v2", &r2);
      lab<8, 4, kReadOnly, 0, 4, true, 1>(q, "readonly, register ring", nullptr);
      lab_lean<8, 4, 2, 2, 4>(q, "lean dec2", &r2);
    }
    return 0;
  }
  if (ncu) {
    shipped<2>(p, "shipped v2", &ref);
    lab<8, 4, kZDecode, 0, 4>(p, "lab zdecode", &ref);
    lab<8, 4, kReadOnly, 0, 4>(p, "lab readonly", nullptr);
    return 0;
  }
  shipped<2>(p, "shipped v2 (plan's choice)", &ref);
  lab<8, 4, kReadOnly, 0, 4, true, 1>(p, "readonly, register ring", &ref);
  lab<8, 4, kFull, 0, 4, true, 1>(p, "full, register ring", &ref);
  lab<8, 4, kReadOnly, 0, 4, true, 1, false, -1>(p, "readonly, L2 prefetch all", &ref);
  lab<8, 4, kFull, 0, 4, true, 1, false, -1>(p, "full, L2 prefetch all", &ref);
  lab<8, 4, kFull, 0, 4, true, 1, false, 8>(p, "full, L2 prefetch +8", &ref);
  lab<8, 4, kFull, 0, 4, true, 1, false, 12>(p, "full, L2 prefetch +12", &ref);
  lab<8, 4, kZDecode, 0, 4, true, 1, false, 8>(p, "zdecode, L2 prefetch +8", &ref);
  lab<8, 4, kZDecode, 0, 4, true, 1, false, -1>(p, "zdecode, L2 prefetch all", &ref);
  lab<16, 4, kZDecode, 0, 2, true, 1, false, -1>(p, "zdecode wk16, L2 prefetch all", &ref);
  lab<4, 4, kZDecode, 0, 8, true, 1, false, -1>(p, "zdecode wk4, L2 prefetch all", nullptr);
  lab<8, 2, kZDecode, 0, 4, true, 1, false, 8>(p, "zdecode st2, L2 prefetch +8", &ref);
  lab<8, 2, kZDecode, 0, 4, true, 1, false, -1>(p, "zdecode st2, L2 prefetch all", &ref);
  lab<8, 4, kNoDecode, 0, 4, true, 1>(p, "nodecode, register ring", &ref);
  lab<8, 4, kDecodeOnly, 0, 4, true, 1>(p, "decodeonly, register ring", &ref);
  lab_pre<8, 4, false, 4>(p, "pre: x/scales in smem once", &ref);
  lab_pre<8, 4, true, 4>(p, "pre + zdecode", &ref);
  lab_pre<8, 6, true, 3>(p, "pre + zdecode, 6 steps", &ref);
  lab_tma<8, 4, 2, true, true, 4>(p, "tma readonly 4x1KB/warp", &ref);
  lab_tma<8, 2, 4, true, true, 4>(p, "tma readonly 2x2KB/warp", &ref);
  lab_tma<8, 4, 2, true, false, 4>(p, "tma full 4x1KB", &ref);
  lab_tma<8, 2, 4, true, false, 4>(p, "tma full 2x2KB", &ref);
  // Fixed cost vs per-byte cost: the same kernels over twice and four times the K.
  for (int K : {8192, 16384}) {
    Problem q = make_problem(K, 14336, K == 8192 ? 4 : 2);
    shipped<2>(q, "shipped v2", nullptr);
    lab<8, 4, kReadOnly, 0, 4, true, 1>(q, "lab readonly, register ring", nullptr);
    lab<8, 4, kFull, 0, 4, true, 1>(q, "lab full, register ring", nullptr);
    lab<8, 4, kZDecode, 0, 4, true, 1, false, 8>(q, "zdecode, L2 prefetch +8", nullptr);
    lab<8, 4, kZDecode, 0, 4, true, 1, false, 16>(q, "zdecode, L2 prefetch +16", nullptr);
    lab<8, 4, kZDecode, 0, 4, true, 1, false, -1>(q, "zdecode, L2 prefetch all", nullptr);
  }
  return 0;
}
