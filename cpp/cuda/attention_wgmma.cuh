// attention_wgmma: prefill flash attention on Hopper's warpgroup MMAs (wgmma.mma_async),
// for the cases the plan routes to it (CudaAttentionKernel::Wgmma in
// cpp/common/attention_plan.h: f16/bf16, D = 64 / 128, no mask array, Lq > 8).
//
// Why a second tensor-core kernel: mma.sync issues one 16x8x16 product per instruction
// and needs its operands in registers (ldmatrix per fragment); the FlashAttention-2
// structure of attention_mma tops out near half of Hopper's tensor-core rate.  wgmma
// reads both Q and K (and V) straight from shared memory, one instruction per
// 64 x 128 x 16 product, asynchronously, so the warps keep their issue slots for the
// softmax.
//
//   * Block = 2 warpgroups x 64 query rows of one head (kCudaAttnWgmmaRows = 128), one
//     pass over the keys in tiles of BN = kCudaAttnWgmmaKeys.  Q, K and V tiles live in
//     shared memory in the 128-byte-swizzled layout of cuda/wgmma.cuh ([D / 64][rows][64]),
//     copied with cp.async (16 bytes per thread-instruction, zero-filled past Lq / the key
//     range); K / V double-buffered: tile t + 1 is in flight while tile t is used.
//   * S = Q K^T: D / 16 wgmma m64nBNk16 per warpgroup, both operands from shared memory
//     (K rows are B's columns, feature-contiguous = K-major).
//   * Softmax as in attention_mma (base 2, fp32, row max / sum over a quad; the
//     accumulator layout per warp is m16n8k16's), key-range / causal tests only on tiles
//     that need them; a warpgroup skips a tile none of its rows sees.
//   * O += P V: P stays in registers (two 8-key accumulator tiles = one k16 A fragment)
//     and V is the N-major B operand (keys x features as stored).
//   * Epilogue: O / l written from registers (4-byte pairs; 0 for rows without a visible
//     key, NaN stays NaN as in attention_mma).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <climits>
#include <cstdint>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "cuda/attention_kernels.cuh"
#include "cuda/attention_launch.h"
#include "cuda/device_common.cuh"
#include "cuda/wgmma.cuh"

namespace marlin::cuda {

template <typename T, int D>
__global__ void __launch_bounds__(kCudaAttnWgmmaThreads, 1) attention_wgmma(AttnArgs a) {
#if MARLIN_HAS_WGMMA
  using namespace attn;
  constexpr int BM = kCudaAttnWgmmaRows;
  constexpr int BN = kCudaAttnWgmmaKeys;
  constexpr int THREADS = kCudaAttnWgmmaThreads;
  constexpr int CH = D / 8;  // 16-byte chunks per row
  constexpr uint32_t kQBytes = BM * D * 2, kTileBytes = BN * D * 2;
  static_assert(BM == 64 * (THREADS / 128) && D % 64 == 0 && BN % 16 == 0, "64 rows per warpgroup, whole 128-byte blocks");
  static_assert(THREADS % CH == 0 && BN % (THREADS / CH) == 0 && BM % (THREADS / CH) == 0, "whole copy passes");

  extern __shared__ unsigned char smem_raw[];
  // The swizzle repeats every 1024 bytes of shared address: align the base (the plan's
  // smem has 1 KiB of slack for this).
  const uint32_t smem0 = (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t q_smem = smem0;
  const uint32_t k_smem = q_smem + kQBytes;              // [2] tiles
  const uint32_t v_smem = k_smem + 2 * kTileBytes;       // [2] tiles

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int wg = tid >> 7;              // warpgroup: rows 64 * wg ..
  const int wq = (tid >> 5) & 3;        // warp in the warpgroup: rows 16 * wq ..

  int bx = blockIdx.x;
  const int g = bx % a.head_blocks;     // heads_per_block = 1: head blocks are the group's heads
  bx /= a.head_blocks;
  const int hkv = bx % a.Hkv;
  const int b = bx / a.Hkv;
  // Reversed: with a causal mask the last query blocks have the most keys; run them first.
  const int q0 = (a.query_blocks - 1 - static_cast<int>(blockIdx.y)) * BM;
  const int hq = hkv * a.G + g;
  const bool causal = a.mask_kind == kAttnMaskCausal;
  const int causal_off = a.Lk - a.Lq;

  int ke = a.Lk;
  if (causal) ke = min(ke, min(a.Lq - 1, q0 + BM - 1) + causal_off + 1);
  const int ntiles = ke > 0 ? (ke + BN - 1) / BN : 0;

  // Rows of this warpgroup: queries [wg_q0, wg_q1] (clamped to Lq); their key limits.
  const int wg_q0 = q0 + 64 * wg;
  const int wg_q1 = min(a.Lq - 1, wg_q0 + 63);
  const bool wg_rows = wg_q0 < a.Lq;
  const int wg_lim_min = causal ? wg_q0 + causal_off : INT_MAX;
  const int wg_lim_max = causal ? wg_q1 + causal_off : INT_MAX;
  // This thread's two rows (lane / 4 and lane / 4 + 8 of its warp's 16).
  const int qr[2] = {wg_q0 + 16 * wq + (lane >> 2), wg_q0 + 16 * wq + (lane >> 2) + 8};
  const int lim[2] = {causal ? qr[0] + causal_off : INT_MAX, causal ? qr[1] + causal_off : INT_MAX};

  const T* qg = static_cast<const T*>(a.q) + b * a.q_stride[0] + hq * a.q_stride[1];
  const T* kg = static_cast<const T*>(a.k) + b * a.k_stride[0] + hkv * a.k_stride[1];
  const T* vg = static_cast<const T*>(a.v) + b * a.v_stride[0] + hkv * a.v_stride[1];

  // Each thread copies chunk c of rows r0, r0 + RSTEP, ...: (r & 7) is the same for all
  // of them, so is the swizzled chunk.
  constexpr int RSTEP = THREADS / CH;
  const int c = tid % CH, r0 = tid / CH;
  auto load_rows = [&](uint32_t dst, int rows, const T* src, int64_t row_stride, int first, int end) {
    const T* p = src + int64_t(first + r0) * row_stride + c * 8;
    const int64_t step = RSTEP * row_stride;
    for (int r = r0; r < rows; r += RSTEP) {
      const bool ok = first + r < end;  // zero-filled past the end: P V never meets garbage
      cp_async16(dst + wg::swizzled_offset(rows, r, c), ok ? p : src, ok);
      p += step;
    }
  };
  auto load_kv = [&](int t) {
    const int buf = t & 1;
    load_rows(k_smem + buf * kTileBytes, BN, kg, a.k_stride[2], t * BN, ke);
    load_rows(v_smem + buf * kTileBytes, BN, vg, a.v_stride[2], t * BN, ke);
  };
  load_rows(q_smem, BM, qg, a.q_stride[2], q0, a.Lq);
  if (ntiles > 0) load_kv(0);
  cp_async_commit();

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.f, 0.f};

  // Descriptors: Q rows of this warpgroup (K-major A), K tile (K-major B), V tile
  // (N-major B: 64-feature blocks BN * 128 bytes apart, 8-key groups 1024 apart).
  const uint32_t q_wg = q_smem + 64 * wg * 128;

  for (int t = 0; t < ntiles; ++t) {
    const int buf = t & 1;
    cp_async_wait<0>();
    wg::fence_proxy_async();
    __syncthreads();  // tile t landed for every thread; tile t - 1's buffers are free
    if (t + 1 < ntiles) load_kv(t + 1);
    cp_async_commit();

    const int k0 = t * BN;
    if (!wg_rows || (causal && k0 > wg_lim_max)) continue;  // warpgroup-uniform

    // ---- S = Q K^T
    float s[BN / 2];
    const uint32_t k_tile = k_smem + buf * kTileBytes;
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk & 3) * 32;  // k16 = 32 bytes into the 128-byte block
      const uint64_t da = wg::desc_sw128(q_wg + (kk >> 2) * BM * 128 + koff, 16, 1024);
      const uint64_t db = wg::desc_sw128(k_tile + (kk >> 2) * BN * 128 + koff, 16, 1024);
      wg::mma_ss<T, 0>(s, da, db, kk > 0);
    }
    wg::commit();
    wg::wait<0>();

    // ---- scale (base 2), mask, online softmax
    const bool full = k0 + BN <= ke && (!causal || k0 + BN - 1 <= wg_lim_min);
    const bool fold = full && a.scale_log2 > 0.f;
    const float sc = fold ? a.scale_log2 : 1.f;
    if (!fold) {
#pragma unroll
      for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = k0 + n * 8 + (lane & 3) * 2 + (e & 1);
          const bool vis = full || (j < ke && j <= lim[e >> 1]);
          s[4 * n + e] = vis ? s[4 * n + e] * a.scale_log2 : neg_inf();
        }
      }
    }
    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[4 * n], s[4 * n + 1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    float mu[2], alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2)) * sc;
      const float m_new = fmaxf(m[i], mx[i]);
      mu[i] = m_new == neg_inf() ? 0.f : m_new;  // nothing visible yet: p = 0, no inf - inf
      alpha[i] = ex2(m[i] - mu[i]);
      m[i] = m_new;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      s[4 * n] = ex2(fmaf(s[4 * n], sc, -mu[0]));
      s[4 * n + 1] = ex2(fmaf(s[4 * n + 1], sc, -mu[0]));
      s[4 * n + 2] = ex2(fmaf(s[4 * n + 2], sc, -mu[1]));
      s[4 * n + 3] = ex2(fmaf(s[4 * n + 3], sc, -mu[1]));
      rs[0] += s[4 * n] + s[4 * n + 1];
      rs[1] += s[4 * n + 2] + s[4 * n + 3];
    }
    l[0] = l[0] * alpha[0] + rs[0];  // this lane's columns only; quad-reduced at the end
    l[1] = l[1] * alpha[1] + rs[1];
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      o[4 * d] *= alpha[0];
      o[4 * d + 1] *= alpha[0];
      o[4 * d + 2] *= alpha[1];
      o[4 * d + 3] *= alpha[1];
    }
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      pa[ks][0] = pack2<T>(s[8 * ks], s[8 * ks + 1]);
      pa[ks][1] = pack2<T>(s[8 * ks + 2], s[8 * ks + 3]);
      pa[ks][2] = pack2<T>(s[8 * ks + 4], s[8 * ks + 5]);
      pa[ks][3] = pack2<T>(s[8 * ks + 6], s[8 * ks + 7]);
    }

    // ---- O += P V
    const uint32_t v_tile = v_smem + buf * kTileBytes;
    wg::fence();
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      const uint64_t db = wg::desc_sw128(v_tile + ks * 16 * 128, BN * 128, 1024);
      wg::mma_rs<T, 1>(o, pa[ks], db, 1);
    }
    wg::commit();
    wg::wait<0>();
  }
  cp_async_wait<0>();

  // ---- epilogue: O / l, straight from the accumulators.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (qr[i] >= a.Lq) continue;
    const float f = l[i] == 0.f ? 0.f : 1.f / l[i];  // NaN l stays NaN
    T* dst = out + ((int64_t(b) * a.Hq + hq) * a.Lq + qr[i]) * D + (lane & 3) * 2;
#pragma unroll
    for (int d = 0; d < D / 8; ++d)
      *reinterpret_cast<uint32_t*>(dst + 8 * d) = pack2<T>(o[4 * d + 2 * i] * f, o[4 * d + 2 * i + 1] * f);
  }
#else
  __trap();  // the host launches this kernel only where wgmma exists
#endif
}

}  // namespace marlin::cuda
