// CUDA kernels of attention (see the CUDA section of cpp/common/attention_plan.h for
// which runs when, and docs/cuda_attention.md for the design).
//
// attention_mma (float16 / bfloat16): flash attention on mma.sync m16n8k16.
//   * A block owns BM = 16 * WM query rows (one 16-row MMA tile per warp row) and one
//     key range; K/V tiles of BK keys are copied to shared memory with cp.async,
//     double-buffered (tile t + 1 is in flight while tile t is used).  Rows of the
//     shared tiles are padded by 8 elements so that the 8 rows an ldmatrix reads fall
//     in distinct banks (the padding works for every head dim, XOR swizzles need
//     D >= 64 and a power of two chunks).
//   * Q fragments are loaded once into registers with ldmatrix (D <= 128; at D = 256
//     they are re-read from shared memory per tile so O keeps its 128 registers).
//   * S = Q K^T: K fragments by ldmatrix (K rows are the MMA's B columns, feature-
//     contiguous); the online softmax runs in fp32 on the accumulators in the base-2
//     domain (scores times scale * log2 e, then ex2.approx), row max / sum over the
//     four lanes of a quad.  P is converted to f16/bf16 in registers: the accumulator
//     layout of two 8-key tiles is exactly the A-operand layout of one k16 step.
//     O += P V with V fragments by ldmatrix.trans.
//   * Masks: key range end, causal limit and bool / additive masks (read per element
//     through broadcast strides) only on tiles that need them; causal tiles entirely
//     above the diagonal are never loaded (the block's key range ends at its last
//     query's limit) and a warp skips the MMAs of a key slice none of its rows sees.
//   * Epilogue through shared memory: the WN warps sharing rows (decode splits each
//     key tile over warps) are merged there, and rows go out as coalesced vectors.
//   * Split-K (decode): the last block of a row block to finish merges the splits'
//     partials itself (merge_splits_if_last), so decode is one kernel (without
//     counters, the host runs attention_merge after it).
// attention_simt (float32, or strides the MMA kernel cannot copy with cp.async): one
// warp per (row, key range), lanes over keys for scores, over features for P V.
// attention_merge: combines split-K partials (O, m, l) into the normalized output
// where the kernel did not (SIMT kernel, attention_mma without counters).
//
// NaN: a NaN score (NaN in q/k or an additive mask) gives p = exp2(NaN) = NaN, which
// reaches its row's sum and P V, so that row's output is NaN (like the CPU backend);
// the SIMT kernel and the merges also keep NaN in their running max.  A row without a
// visible key keeps m = -inf, l = 0 and is written as zeros (never exp2(-inf + inf)).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "cuda/attention_launch.h"
#include "cuda/device_common.cuh"

namespace marlin::cuda {

namespace attn {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

// 2^x, ~2 ulp; exp2(-inf) = +0, NaN stays NaN.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// max that keeps a NaN from either side (fmaxf would drop it).
__device__ __forceinline__ float nanmax(float a, float b) { return (a > b || a != a) ? a : b; }

// One key tile of the online softmax on a thread's two rows (g and g + 8 of an MMA
// tile): s[n] is an 8-key accumulator tile (registers 0, 1: row 0; 2, 3: row 1) of scores
// already in the base-2 domain up to the factor `sc` (1 where the scale was applied
// before).  Updates the running max m and sum l (this lane's columns only; quad-reduced
// at the end), turns s into p = exp2(s sc - m) in place and returns the rescale factors
// alpha for O.  fmaxf drops NaN scores from the max, but their p = exp2(NaN) = NaN still
// reaches the row's sum and P V, so a NaN score makes its row NaN (and only its row).
// Shared by attention_mma and attention_wgmma.
template <int NT>
__device__ __forceinline__ void online_softmax_tile(float (&s)[NT][4], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                                    float sc) {
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
  }
  float mu[2];
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
  for (int n = 0; n < NT; ++n) {
    s[n][0] = ex2(fmaf(s[n][0], sc, -mu[0]));
    s[n][1] = ex2(fmaf(s[n][1], sc, -mu[0]));
    s[n][2] = ex2(fmaf(s[n][2], sc, -mu[1]));
    s[n][3] = ex2(fmaf(s[n][3], sc, -mu[1]));
    rs[0] += s[n][0] + s[n][1];
    rs[1] += s[n][2] + s[n][3];
  }
  l[0] = l[0] * alpha[0] + rs[0];
  l[1] = l[1] * alpha[1] + rs[1];
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}


template <typename T>
__device__ __forceinline__ void store4(T* p, float4 v) {
  if constexpr (std::is_same<T, float>::value) {
    *reinterpret_cast<float4*>(p) = v;
  } else {
    uint2 u;
    u.x = pack2<T>(v.x, v.y);
    u.y = pack2<T>(v.z, v.w);
    *reinterpret_cast<uint2*>(p) = u;
  }
}

__device__ __forceinline__ float mask_value(const void* m, int type, int64_t i) {
  if (type == kAttnMaskF16) return __half2float(static_cast<const __half*>(m)[i]);
  if (type == kAttnMaskBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(m)[i]);
  return static_cast<const float*>(m)[i];
}

// Row r of a block: head g0 + r / block_q of the kv group, query q0 + r % block_q.
struct Row {
  bool valid;
  int hq;  // query head
  int q;   // query position
};
__device__ __forceinline__ Row block_row(const AttnArgs& a, int r, int hkv, int g0, int q0) {
  const int hi = r / a.block_q;
  const int g = g0 + hi;
  Row row;
  row.q = q0 + r % a.block_q;
  row.hq = hkv * a.G + g;
  row.valid = hi < a.heads_per_block && g < a.G && row.q < a.Lq;
  return row;
}

// Features 4c..4c+3 of one output row from its `P` split partials (part_ml: the row's
// (m, l) pairs; part_o: the row's first partial, advanced to float4 c; partials C float4
// apart): one pass with a running max M (NaN-sticky), sum L and O rescaled to it, 16
// splits' loads in flight.  O / L, zeros when L = 0, NaN stays NaN.  Every thread of a row
// recomputes the row's M and L rather than waiting for them (one round trip to L2 less).
__device__ __forceinline__ float4 merge_split_partials(const float2* part_ml, const float4* part_o, int P, int C) {
  constexpr int kBatch = 16;  // loads issued before any is used
  float M = neg_inf(), L = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int p0 = 0; p0 < P; p0 += kBatch) {
    float2 v[kBatch];
    float4 x[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      // Past the last split: m = -inf, l = 0 and O = 0 leave M, L and O as they are.
      const bool in = p0 + j < P;
      v[j] = in ? __ldcg(part_ml + p0 + j) : make_float2(neg_inf(), 0.f);
      x[j] = in ? __ldcg(part_o + (p0 + j) * C) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const float Mn = nanmax(M, v[j].x);
      const float Mu = Mn == neg_inf() ? 0.f : Mn;  // all -inf so far: no inf - inf
      const float keep = ex2(M - Mu), w = ex2(v[j].x - Mu);
      L = fmaf(L, keep, w * v[j].y);
      acc.x = fmaf(acc.x, keep, w * x[j].x);
      acc.y = fmaf(acc.y, keep, w * x[j].y);
      acc.z = fmaf(acc.z, keep, w * x[j].z);
      acc.w = fmaf(acc.w, keep, w * x[j].w);
      M = Mn;
    }
  }
  const float f = L == 0.f ? 0.f : 1.f / L;
  acc.x *= f; acc.y *= f; acc.z *= f; acc.w *= f;
  return acc;
}

// Split-K merge inside attention_mma (no second kernel, no second graph node): a
// block whose partials are out adds itself to its row block's counter; the last of the
// row block's `splits` blocks merges them and puts the counter back to zero for the next
// launch.  The count's release publishes this block's partials, its acquire orders the
// last block's reads, and those read L2 (ld.global.cg): L1 is not kept coherent with
// other SMs' writes.  Same result as attention_merge: M = max m_s (NaN-sticky),
// O = sum 2^(m_s - M) O_s / sum 2^(m_s - M) l_s, zeros when l = 0.
template <typename T, int D, int BM, int THREADS>
__device__ __forceinline__ void merge_splits_if_last(const AttnArgs& a, int b, int hkv, int g0, int q0) {
  constexpr int C = D / 4;
  __shared__ int last;
  const int tid = threadIdx.x;
  int* counter = a.split_counters + blockIdx.y * gridDim.x + blockIdx.x;
  // The barrier orders every thread's partials before thread 0's count, whose release
  // (gpu scope, cumulative) publishes them; its acquire orders the last block's reads.
  __syncthreads();
  if (tid == 0) last = atomic_add_acq_rel(counter, 1) == a.splits - 1;
  __syncthreads();
  if (!last) return;
  const int P = a.splits;
  for (int i = tid; i < BM * C; i += THREADS) {
    const int r = i / C, c = i % C;
    const Row row = block_row(a, r, hkv, g0, q0);
    if (!row.valid) continue;
    const int64_t orow = (int64_t(b) * a.Hq + row.hq) * a.Lq + row.q;
    const float4 o = merge_split_partials(reinterpret_cast<const float2*>(a.part_ml) + orow * P,
                                          reinterpret_cast<const float4*>(a.part_o + orow * P * D) + c, P, C);
    store4(static_cast<T*>(a.out) + orow * D + c * 4, o);
  }
  if (tid == 0) *counter = 0;
}

}  // namespace attn

// ---------------------------------------------------------------- tensor-core kernel
// WM x WN warps; warp (wm, wn) owns MT 16-row MMA tiles (rows 16 * (wm * MT + mt) ..)
// and keys [wn * BK / WN, (wn + 1) * BK / WN) of every tile.  MT = 2 halves the
// shared-memory reads per MMA (each K / V fragment feeds two row tiles).
template <typename T, int D, int WM, int WN, int BK, int MINB, int MT>
__global__ void __launch_bounds__(32 * WM * WN, MINB) attention_mma(AttnArgs a) {
  using namespace attn;
  constexpr int BM = 16 * MT * WM;
  constexpr int KW = BK / WN;  // keys per warp per tile
  constexpr int NT = KW / 8;   // 8-key MMA tiles of S per warp
  constexpr int DP = D + 8;    // padded shared row (elements)
  constexpr int CH = D / 8;    // 16-byte chunks per row
  constexpr int THREADS = 32 * WM * WN;
  constexpr bool QREG = cuda_attention_q_in_registers(D) && MT == 1;
  constexpr int RP = D + 8;    // padded fp32 row of the epilogue
  static_assert(KW % 16 == 0 && D % 16 == 0, "whole k16 steps");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [BM][DP]
  T* Ks = Qs + BM * DP;                    // [2][BK][DP]
  T* Vs = Ks + 2 * BK * DP;                // [2][BK][DP]
  __shared__ float ml_s[WN][BM][2];

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wm = warp % WM;
  const int wn = warp / WM;

  int bx = blockIdx.x;
  const int hb = bx % a.head_blocks;
  bx /= a.head_blocks;
  const int hkv = bx % a.Hkv;
  const int b = bx / a.Hkv;
  // Reversed: with a causal mask the last query blocks have the most keys; run them first.
  const int qb = a.query_blocks - 1 - static_cast<int>(blockIdx.y);
  const int split = blockIdx.z;
  const int g0 = hb * a.heads_per_block;
  const int q0 = qb * a.block_q;
  const bool causal = a.mask_kind == kAttnMaskCausal;
  const bool mask_array = a.mask_kind == kAttnMaskBool || a.mask_kind == kAttnMaskAdditive;
  const int causal_off = a.Lk - a.Lq;

  // Key range of the block.
  const int kb = static_cast<int>(split * a.keys_per_split);
  int ke = static_cast<int>(min(int64_t(a.Lk), int64_t(kb) + a.keys_per_split));
  if (causal) ke = min(ke, min(a.Lq - 1, q0 + a.block_q - 1) + causal_off + 1);
  const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;

  const T* qg = static_cast<const T*>(a.q);
  const T* kg = static_cast<const T*>(a.k) + b * a.k_stride[0] + hkv * a.k_stride[1];
  const T* vg = static_cast<const T*>(a.v) + b * a.v_stride[0] + hkv * a.v_stride[1];

  // This thread's rows: lane / 4 and lane / 4 + 8 of each of its MT tiles.
  int lim[MT][2];        // last visible key (causal), INT_MAX otherwise
  int64_t mbase[MT][2];  // mask offset of (b, hq, q, 0)
  bool rvalid[MT][2];
  int lmax = INT_MIN, lmin = INT_MAX;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const Row row = block_row(a, (wm * MT + mt) * 16 + (lane >> 2) + 8 * i, hkv, g0, q0);
      rvalid[mt][i] = row.valid;
      lim[mt][i] = causal ? row.q + causal_off : INT_MAX;
      mbase[mt][i] = b * a.mask_stride[0] + row.hq * a.mask_stride[1] + int64_t(row.q) * a.mask_stride[2];
      if (row.valid) {
        lmax = max(lmax, lim[mt][i]);
        lmin = min(lmin, lim[mt][i]);
      }
    }
  }
  // Key limits over the warp's valid rows: a key slice past the max is skipped, one
  // before the min needs no causal test.
  const int warp_lim_max = __reduce_max_sync(0xffffffffu, lmax);
  const int warp_lim_min = __reduce_min_sync(0xffffffffu, lmin);

  auto load_kv = [&](int t, int buf) {
    const int k0 = kb + t * BK;
    T* ks = Ks + buf * BK * DP;
    T* vs = Vs + buf * BK * DP;
    constexpr int RSTEP = THREADS / CH;  // rows per pass when a thread keeps its chunk
    if constexpr (THREADS % CH == 0 && BK % RSTEP == 0) {
      // Each thread copies chunk c of rows r0, r0 + RSTEP, ...: addresses by increments
      // (the generic loop's divisions and 64-bit products cost as much issue as the MMAs).
      const int c = tid % CH, r0 = tid / CH;
      const int64_t kstep = RSTEP * a.k_stride[2], vstep = RSTEP * a.v_stride[2];
      const T* kp = kg + int64_t(k0 + r0) * a.k_stride[2] + c * 8;
      const T* vp = vg + int64_t(k0 + r0) * a.v_stride[2] + c * 8;
#pragma unroll
      for (int it = 0; it < BK / RSTEP; ++it) {
        const bool ok = k0 + r0 + it * RSTEP < ke;  // zero-filled past the range
        cp_async16(ks + (r0 + it * RSTEP) * DP + c * 8, ok ? kp : kg, ok);
        cp_async16(vs + (r0 + it * RSTEP) * DP + c * 8, ok ? vp : vg, ok);
        kp += kstep;
        vp += vstep;
      }
    } else {
      for (int i = tid; i < BK * CH; i += THREADS) {
        const int r = i / CH, c = i % CH;
        const int j = k0 + r;
        const bool ok = j < ke;  // zero-filled past the range: P V never meets garbage
        cp_async16(ks + r * DP + c * 8, ok ? kg + int64_t(j) * a.k_stride[2] + c * 8 : kg, ok);
        cp_async16(vs + r * DP + c * 8, ok ? vg + int64_t(j) * a.v_stride[2] + c * 8 : vg, ok);
      }
    }
  };

  // Q tile (zeros for rows past Lq / the group).
  for (int i = tid; i < BM * CH; i += THREADS) {
    const int r = i / CH, c = i % CH;
    const Row row = block_row(a, r, hkv, g0, q0);
    const T* src = row.valid ? qg + b * a.q_stride[0] + row.hq * a.q_stride[1] + int64_t(row.q) * a.q_stride[2] + c * 8 : qg;
    cp_async16(Qs + r * DP + c * 8, src, row.valid);
  }
  if (ntiles > 0) load_kv(0, 0);
  cp_async_commit();

  uint32_t qf[QREG ? D / 16 : 1][4];
  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int d = 0; d < D / 8; ++d) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
    m[mt][0] = m[mt][1] = neg_inf();
    l[mt][0] = l[mt][1] = 0.f;
  }
  const T* q_frag_base = Qs + (wm * MT * 16 + (lane & 15)) * DP + (lane >> 4) * 8;

  for (int t = 0; t < ntiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < ntiles) load_kv(t + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (QREG) {
      if (t == 0) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qf[kk], q_frag_base + kk * 16);
      }
    }
    const int k0 = kb + t * BK + wn * KW;  // first key of this warp's slice
    if (k0 < ke && !(causal && k0 > warp_lim_max)) {
      const T* Kt = Ks + (buf * BK + wn * KW) * DP;
      const T* Vt = Vs + (buf * BK + wn * KW) * DP;
      float s[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < NT; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if constexpr (QREG) {
            af[mt][0] = qf[kk][0]; af[mt][1] = qf[kk][1]; af[mt][2] = qf[kk][2]; af[mt][3] = qf[kk][3];
          } else {
            ldsm_x4(af[mt], q_frag_base + mt * 16 * DP + kk * 16);
          }
        }
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, Kt + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * DP + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_16816<T>(s[mt][2 * np], af[mt], bf[0], bf[1]);
            mma_16816<T>(s[mt][2 * np + 1], af[mt], bf[2], bf[3]);
          }
        }
      }
      // Scale (base 2) and mask.  Unmasked tiles with a positive scale fold the scale
      // into the exponent's FMA (max(s) * scale = max(s * scale) for scale > 0).
      const bool full = k0 + KW <= ke && (!causal || k0 + KW - 1 <= warp_lim_min) && !mask_array;
      const bool fold = full && a.scale_log2 > 0.f;
      const float sc = fold ? a.scale_log2 : 1.f;
      uint32_t pa[MT][KW / 16][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (!fold) {
#pragma unroll
          for (int n = 0; n < NT; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int j = k0 + n * 8 + (lane & 3) * 2 + (e & 1);
              const int ri = e >> 1;
              bool vis = full || (rvalid[mt][ri] && j < ke && j <= lim[mt][ri]);
              float x = s[mt][n][e] * a.scale_log2;
              if (!full && vis && a.mask_kind == kAttnMaskBool) {
                vis = static_cast<const uint8_t*>(a.mask)[mbase[mt][ri] + int64_t(j) * a.mask_stride[3]] != 0;
              } else if (!full && vis && a.mask_kind == kAttnMaskAdditive) {
                x += mask_value(a.mask, a.mask_type, mbase[mt][ri] + int64_t(j) * a.mask_stride[3]) * kLog2e;
              }
              s[mt][n][e] = vis ? x : neg_inf();
            }
          }
        }
        // Online softmax (per row: max over the quad's lanes).
        float alpha[2];
        online_softmax_tile(s[mt], m[mt], l[mt], alpha, sc);
        // Once the running max settles most tiles leave it unchanged (alpha = 1 on every
        // row of the warp): skip the D / 2 multiplies then (NaN alphas do rescale).
        if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
          for (int d = 0; d < D / 8; ++d) {
            o[mt][d][0] *= alpha[0];
            o[mt][d][1] *= alpha[0];
            o[mt][d][2] *= alpha[1];
            o[mt][d][3] *= alpha[1];
          }
        }
        // P in the input dtype: two 8-key accumulator tiles = one k16 A operand.
#pragma unroll
        for (int ks = 0; ks < KW / 16; ++ks) {
          pa[mt][ks][0] = pack2<T>(s[mt][2 * ks][0], s[mt][2 * ks][1]);
          pa[mt][ks][1] = pack2<T>(s[mt][2 * ks][2], s[mt][2 * ks][3]);
          pa[mt][ks][2] = pack2<T>(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
          pa[mt][ks][3] = pack2<T>(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
        }
      }
      // O += P V.
#pragma unroll
      for (int ks = 0; ks < KW / 16; ++ks) {
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t bv[4];
          ldsm_x4_trans(bv, Vt + (ks * 16 + (lane & 15)) * DP + dp * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_16816<T>(o[mt][2 * dp], pa[mt][ks], bv[0], bv[1]);
            mma_16816<T>(o[mt][2 * dp + 1], pa[mt][ks], bv[2], bv[3]);
          }
        }
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the next iteration's prefetch
  }

  // ---- epilogue: merge the WN warps of each row in shared memory, write coalesced.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      l[mt][i] += __shfl_xor_sync(0xffffffffu, l[mt][i], 1);
      l[mt][i] += __shfl_xor_sync(0xffffffffu, l[mt][i], 2);
    }
  }
  cp_async_wait<0>();  // no tile: the Q copy may still be in flight
  __syncthreads();
  if ((lane & 3) == 0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int r0 = (wm * MT + mt) * 16 + (lane >> 2);
      ml_s[wn][r0][0] = m[mt][0];
      ml_s[wn][r0][1] = l[mt][0];
      ml_s[wn][r0 + 8][0] = m[mt][1];
      ml_s[wn][r0 + 8][1] = l[mt][1];
    }
  }
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem_raw);  // [WN][BM][RP]
  const bool direct = a.splits == 1;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = (wm * MT + mt) * 16 + (lane >> 2) + 8 * i;
      float M = neg_inf();
#pragma unroll
      for (int w = 0; w < WN; ++w) M = nanmax(M, ml_s[w][r][0]);
      const float Mu = M == neg_inf() ? 0.f : M;
      float L = 0.f;
#pragma unroll
      for (int w = 0; w < WN; ++w) L += ex2(ml_s[w][r][0] - Mu) * ml_s[w][r][1];
      float f = ex2(m[mt][i] - Mu);
      if (direct) f *= L == 0.f ? 0.f : 1.f / L;  // NaN L stays NaN
      float* dst = red + (wn * BM + r) * RP + (lane & 3) * 2;
#pragma unroll
      for (int d = 0; d < D / 8; ++d)
        *reinterpret_cast<float2*>(dst + d * 8) = make_float2(o[mt][d][2 * i] * f, o[mt][d][2 * i + 1] * f);
      if (!direct && wn == 0 && (lane & 3) == 0 && rvalid[mt][i]) {
        const Row row = block_row(a, r, hkv, g0, q0);
        const int64_t orow = (int64_t(b) * a.Hq + row.hq) * a.Lq + row.q;
        *reinterpret_cast<float2*>(a.part_ml + (orow * a.splits + split) * 2) = make_float2(M, L);
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < BM * (D / 4); i += THREADS) {
    const int r = i / (D / 4), c = i % (D / 4);
    const Row row = block_row(a, r, hkv, g0, q0);
    if (!row.valid) continue;
    float4 acc = *reinterpret_cast<const float4*>(red + r * RP + c * 4);
#pragma unroll
    for (int w = 1; w < WN; ++w) {
      const float4 x = *reinterpret_cast<const float4*>(red + (w * BM + r) * RP + c * 4);
      acc.x += x.x; acc.y += x.y; acc.z += x.z; acc.w += x.w;
    }
    const int64_t orow = (int64_t(b) * a.Hq + row.hq) * a.Lq + row.q;
    if (direct)
      store4(static_cast<T*>(a.out) + orow * D + c * 4, acc);
    else
      *reinterpret_cast<float4*>(a.part_o + (orow * a.splits + split) * D + c * 4) = acc;
  }
  if (!direct && a.split_counters) merge_splits_if_last<T, D, BM, THREADS>(a, b, hkv, g0, q0);
}

// ---------------------------------------------------------------- SIMT kernel
template <typename T, int D>
__global__ void __launch_bounds__(32 * kCudaAttnSimtWarps) attention_simt(AttnArgs a) {
  using namespace attn;
  constexpr int NPL = (D + 31) / 32;  // output features per lane
  __shared__ float qs[kCudaAttnSimtWarps][D];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t row = int64_t(blockIdx.x) * kCudaAttnSimtWarps + warp;
  if (row >= int64_t(a.B) * a.Hq * a.Lq) return;  // whole warp; no block barrier below
  const int split = blockIdx.z;
  const int q = static_cast<int>(row % a.Lq);
  const int hq = static_cast<int>((row / a.Lq) % a.Hq);
  const int b = static_cast<int>(row / (int64_t(a.Lq) * a.Hq));
  const int hkv = hq / a.G;
  const T* qr = static_cast<const T*>(a.q) + b * a.q_stride[0] + hq * a.q_stride[1] + int64_t(q) * a.q_stride[2];
  for (int d = lane; d < D; d += 32) qs[warp][d] = to_float(qr[d * a.q_stride[3]]) * a.scale_log2;
  __syncwarp();
  const T* kg = static_cast<const T*>(a.k) + b * a.k_stride[0] + hkv * a.k_stride[1];
  const T* vg = static_cast<const T*>(a.v) + b * a.v_stride[0] + hkv * a.v_stride[1];
  const int64_t mbase = b * a.mask_stride[0] + hq * a.mask_stride[1] + int64_t(q) * a.mask_stride[2];

  const int kb = static_cast<int>(split * a.keys_per_split);
  int ke = static_cast<int>(min(int64_t(a.Lk), int64_t(kb) + a.keys_per_split));
  if (a.mask_kind == kAttnMaskCausal) ke = min(ke, q + a.Lk - a.Lq + 1);

  float m = neg_inf(), l = 0.f;
  float o[NPL];
#pragma unroll
  for (int i = 0; i < NPL; ++i) o[i] = 0.f;
  for (int j0 = kb; j0 < ke; j0 += 32) {
    const int j = j0 + lane;
    float x = neg_inf();
    if (j < ke) {
      const T* kr = kg + int64_t(j) * a.k_stride[2];
      float dot = 0.f;
#pragma unroll 8
      for (int d = 0; d < D; ++d) dot = fmaf(qs[warp][d], to_float(kr[d * a.k_stride[3]]), dot);
      x = dot;
      const int64_t mi = mbase + int64_t(j) * a.mask_stride[3];
      if (a.mask_kind == kAttnMaskBool) {
        if (!static_cast<const uint8_t*>(a.mask)[mi]) x = neg_inf();
      } else if (a.mask_kind == kAttnMaskAdditive) {
        x += mask_value(a.mask, a.mask_type, mi) * kLog2e;
      }
    }
    float mx = x;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = nanmax(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float m_new = nanmax(m, mx);
    const float mu = m_new == neg_inf() ? 0.f : m_new;
    const float alpha = ex2(m - mu);
    const float p = ex2(x - mu);
    l = l * alpha + p;
    m = m_new;
#pragma unroll
    for (int i = 0; i < NPL; ++i) o[i] *= alpha;
    const int nj = min(32, ke - j0);
    for (int jj = 0; jj < nj; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const T* vr = vg + int64_t(j0 + jj) * a.v_stride[2];
#pragma unroll
      for (int i = 0; i < NPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) o[i] = fmaf(pj, to_float(vr[d * a.v_stride[3]]), o[i]);
      }
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
  if (a.splits == 1) {
    const float f = l == 0.f ? 0.f : 1.f / l;
    T* out = static_cast<T*>(a.out) + row * D;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      const int d = lane + 32 * i;
      if (d < D) out[d] = from_float<T>(o[i] * f);
    }
  } else {
    float* po = a.part_o + (row * a.splits + split) * D;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      const int d = lane + 32 * i;
      if (d < D) po[d] = o[i];
    }
    if (lane == 0) *reinterpret_cast<float2*>(a.part_ml + (row * a.splits + split) * 2) = make_float2(m, l);
  }
}

// ---------------------------------------------------------------- split-K merge
// Block (D / 4, kAttnMergeGroups): output row blockIdx.x * kAttnMergeGroups + y, thread x
// features 4x..4x+3, the same one-pass merge as the fused one.
template <typename T, int D>
__global__ void __launch_bounds__(D / 4 * kAttnMergeGroups) attention_merge(AttnArgs a) {
  using namespace attn;
  constexpr int C = D / 4;
  const int64_t row = int64_t(blockIdx.x) * kAttnMergeGroups + threadIdx.y;
  if (row >= int64_t(a.B) * a.Hq * a.Lq) return;
  const int P = a.splits;
  const float4 o = merge_split_partials(reinterpret_cast<const float2*>(a.part_ml) + row * P,
                                        reinterpret_cast<const float4*>(a.part_o + row * P * D) + threadIdx.x, P, C);
  store4(static_cast<T*>(a.out) + row * D + threadIdx.x * 4, o);
}

}  // namespace marlin::cuda
