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
//   * Block = 3 warpgroups for kCudaAttnWgmmaRows = 128 queries of one head: a producer
//     and two MMA warpgroups of 64 rows each, one pass over the keys in tiles of
//     BN = kCudaAttnWgmmaKeys.  Q, K and V tiles live in shared memory in the
//     128-byte-swizzled layout of cuda/wgmma.cuh ([D / 64][rows][64]).
//   * The producer's first thread copies them with TMA (cp.async.bulk.tensor, tensor
//     maps of cuda/tma.h built by the host; rows past Lq / Lk read as zeros) into a ring
//     of kCudaAttnWgmmaStages K and V stages, completing on per-stage "full" barriers;
//     the MMA warpgroups release a stage on its "empty" barrier once their wgmma has
//     read it.  No block-wide barrier in the loop: the two MMA warpgroups drift apart, so
//     one's softmax overlaps the other's MMAs.  The producer gives its registers to them
//     (setmaxnreg).  Versus every thread copying with cp.async and one __syncthreads per
//     tile (the first version): 378 -> 283 us at L = 4096 causal on an H200.  Issuing
//     tile t's Q K^T together with tile t - 1's P V and running t's softmax under it
//     (FlashAttention-3's intra-warpgroup overlap) measured slower (290 us; at D = 128
//     it needs more than the 232 registers a warpgroup gets and spills), so each
//     warpgroup runs its tile's two products in order.  Three stages instead of two
//     (225 KiB of shared memory) also measured slower (291 us).
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
#include "cuda/tma.h"
#include "cuda/wgmma.cuh"

namespace marlin::cuda {

namespace attn_wg {

constexpr int BM = kCudaAttnWgmmaRows;
constexpr int BN = kCudaAttnWgmmaKeys;

// S (64 x BN per warpgroup) = Q rows (K-major A at q_rows) x K tile^T (K-major B).
// The *_issue halves only issue (the caller fences before and commits / waits after).
template <typename T, int D>
__device__ __forceinline__ void qk_issue(float (&s)[BN / 2], uint32_t q_rows, uint32_t k_tile) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint32_t koff = (kk & 3) * 32;  // k16 = 32 bytes into the 128-byte block
    const uint64_t da = wg::desc_sw128(q_rows + (kk >> 2) * BM * 128 + koff, 16, 1024);
    const uint64_t db = wg::desc_sw128(k_tile + (kk >> 2) * BN * 128 + koff, 16, 1024);
    wg::mma_ss<T, 0>(s, da, db, kk > 0);
  }
}
template <typename T, int D>
__device__ __forceinline__ void qk_product(float (&s)[BN / 2], uint32_t q_rows, uint32_t k_tile) {
  wg::fence();
  qk_issue<T, D>(s, q_rows, k_tile);
  wg::commit();
  wg::wait<0>();
}

// O (64 x D per warpgroup) += P (registers) x V tile (N-major B: 64-feature blocks
// BN * 128 bytes apart, 8-key groups 1024 apart).
template <typename T, int D>
__device__ __forceinline__ void pv_issue(float (&o)[D / 2], const uint32_t (&pa)[BN / 16][4], uint32_t v_tile) {
#pragma unroll
  for (int ks = 0; ks < BN / 16; ++ks) wg::mma_rs<T, 1>(o, pa[ks], wg::desc_sw128(v_tile + ks * 16 * 128, BN * 128, 1024), 1);
}
template <typename T, int D>
__device__ __forceinline__ void pv_product(float (&o)[D / 2], const uint32_t (&pa)[BN / 16][4], uint32_t v_tile) {
  wg::fence();
  pv_issue<T, D>(o, pa, v_tile);
  wg::commit();
  wg::wait<0>();
}

// One key tile of the online softmax on this thread's two rows, in two halves:
// softmax_scores scales (base 2) and masks the scores (keys >= ke or past the row's causal
// limit lim[i] are invisible; `full`: none is), turns them into p = exp2(s - m) in place,
// updates the running max m and sum l and returns the rescale factors alpha;
// softmax_rescale applies alpha to O and leaves P in the input dtype as k16 A fragments.
// Same arithmetic as attention_mma.
template <int D>
__device__ __forceinline__ void softmax_scores(float (&s)[BN / 2], float (&m)[2], float (&l)[2], float (&alpha)[2], int k0,
                                               int ke, const int (&lim)[2], bool full, float scale_log2, int lane) {
  using namespace attn;
  // Unmasked tiles with a positive scale fold it into the exponent's FMA
  // (max(s) * scale = max(s * scale) for scale > 0).
  const bool fold = full && scale_log2 > 0.f;
  const float sc = fold ? scale_log2 : 1.f;
  if (!fold) {
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + n * 8 + (lane & 3) * 2 + (e & 1);
        const bool vis = full || (j < ke && j <= lim[e >> 1]);
        s[4 * n + e] = vis ? s[4 * n + e] * scale_log2 : neg_inf();
      }
    }
  }
  // s as BN / 8 accumulator tiles of 4 (the wgmma layout: tile n = registers 4n .. 4n + 3)
  online_softmax_tile(reinterpret_cast<float(&)[BN / 8][4]>(s), m, l, alpha, sc);
}
template <typename T, int D>
__device__ __forceinline__ void softmax_rescale(const float (&s)[BN / 2], float (&o)[D / 2], const float (&alpha)[2],
                                                uint32_t (&pa)[BN / 16][4]) {
  using namespace attn;
#pragma unroll
  for (int d = 0; d < D / 8; ++d) {
    o[4 * d] *= alpha[0];
    o[4 * d + 1] *= alpha[0];
    o[4 * d + 2] *= alpha[1];
    o[4 * d + 3] *= alpha[1];
  }
  // Two 8-key accumulator tiles = one k16 A fragment.
#pragma unroll
  for (int ks = 0; ks < BN / 16; ++ks) {
    pa[ks][0] = pack2<T>(s[8 * ks], s[8 * ks + 1]);
    pa[ks][1] = pack2<T>(s[8 * ks + 2], s[8 * ks + 3]);
    pa[ks][2] = pack2<T>(s[8 * ks + 4], s[8 * ks + 5]);
    pa[ks][3] = pack2<T>(s[8 * ks + 6], s[8 * ks + 7]);
  }
}

// O / l of this thread's two rows (queries qr[i] of head hq), straight from the
// accumulators: 0 for rows without a visible key, NaN stays NaN.
template <typename T, int D>
__device__ __forceinline__ void store_rows(const AttnArgs& a, int b, int hq, const int (&qr)[2], float (&o)[D / 2],
                                           float (&l)[2], int lane) {
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    if (qr[i] >= a.Lq) continue;
    const float f = l[i] == 0.f ? 0.f : 1.f / l[i];
    T* dst = out + ((int64_t(b) * a.Hq + hq) * a.Lq + qr[i]) * D + (lane & 3) * 2;
#pragma unroll
    for (int d = 0; d < D / 8; ++d)
      *reinterpret_cast<uint32_t*>(dst + 8 * d) = pack2<T>(o[4 * d + 2 * i] * f, o[4 * d + 2 * i + 1] * f);
  }
}

// The block's (batch, kv head, query head, first query) and key range end.
struct BlockWork {
  int b, hkv, hq, q0, ke, ntiles;
  bool causal;
  int causal_off;
};
// (bx, by): the block's coordinates in the grid of plan_cuda_attention's non-persistent
// form, (batch, kv head, head) x query block.
__device__ __forceinline__ BlockWork block_work(const AttnArgs& a, int bx, int by) {
  BlockWork w;
  const int g = bx % a.head_blocks;  // heads_per_block = 1: head blocks are the group's heads
  bx /= a.head_blocks;
  w.hkv = bx % a.Hkv;
  w.b = bx / a.Hkv;
  // Reversed: with a causal mask the last query blocks have the most keys; run them first.
  w.q0 = (a.query_blocks - 1 - by) * BM;
  w.hq = w.hkv * a.G + g;
  w.causal = a.mask_kind == kAttnMaskCausal;
  w.causal_off = a.Lk - a.Lq;
  w.ke = a.Lk;
  if (w.causal) w.ke = min(w.ke, min(a.Lq - 1, w.q0 + BM - 1) + w.causal_off + 1);
  w.ntiles = w.ke > 0 ? (w.ke + BN - 1) / BN : 0;
  return w;
}

// A warpgroup's 64 rows starting at query wg_q0: which tiles it needs, which it must mask.
struct WarpgroupRows {
  int q0, q1;  // first / last query (clamped to Lq)
  bool any;    // any row < Lq
  int lim_min, lim_max;  // causal key limits of the first / last row (INT_MAX without)
  int qr[2], lim[2];     // this thread's two rows and their limits
  __device__ __forceinline__ WarpgroupRows(const AttnArgs& a, const BlockWork& w, int wg_q0, int warp, int lane) {
    q0 = wg_q0;
    q1 = min(a.Lq - 1, wg_q0 + 63);
    any = wg_q0 < a.Lq;
    lim_min = w.causal ? q0 + w.causal_off : INT_MAX;
    lim_max = w.causal ? q1 + w.causal_off : INT_MAX;
    qr[0] = wg_q0 + 16 * warp + (lane >> 2);
    qr[1] = qr[0] + 8;
    lim[0] = w.causal ? qr[0] + w.causal_off : INT_MAX;
    lim[1] = w.causal ? qr[1] + w.causal_off : INT_MAX;
  }
  __device__ __forceinline__ bool sees(const BlockWork& w, int k0) const { return any && !(w.causal && k0 > lim_max); }
  __device__ __forceinline__ bool full(const BlockWork& w, int k0) const {
    return k0 + BN <= w.ke && (!w.causal || k0 + BN - 1 <= lim_min);
  }
};

// Work item j of persistent block c out of G: zig-zag over the items (heavy first, as
// block_work orders them), c, 2G - 1 - c, 2G + c, ..., so a block that takes a heavy
// causal item in one band takes a light one in the next.
__device__ __forceinline__ int zigzag_item(int c, int G, int j) {
  const int band = j >> 1;
  return (j & 1) ? 2 * G * band + 2 * G - 1 - c : 2 * G * band + c;
}

__device__ __forceinline__ BlockWork item_work(const AttnArgs& a, int item) {
  const int gx = a.B * a.Hkv * a.head_blocks;
  return block_work(a, item % gx, item / gx);
}

// The K / V ring: kCudaAttnWgmmaStages stages of a K and a V tile, each with a "full"
// barrier (the producer's TMA completes it) and an "empty" one (both MMA warpgroups
// release it).  `bars` points at the 4 * S barriers in that order.
template <int D>
struct KvRing {
  static constexpr int S = kCudaAttnWgmmaStages;
  static constexpr uint32_t kTileBytes = BN * D * 2;
  uint32_t k_smem, v_smem, bars;
  __device__ __forceinline__ uint32_t k_full(int s) const { return bars + 8 * s; }
  __device__ __forceinline__ uint32_t v_full(int s) const { return bars + 8 * (S + s); }
  __device__ __forceinline__ uint32_t k_empty(int s) const { return bars + 8 * (2 * S + s); }
  __device__ __forceinline__ uint32_t v_empty(int s) const { return bars + 8 * (3 * S + s); }
  __device__ __forceinline__ uint32_t k_tile(int s) const { return k_smem + s * kTileBytes; }
  __device__ __forceinline__ uint32_t v_tile(int s) const { return v_smem + s * kTileBytes; }
};

// The producer's copies of one work item: its Q tile, then every K / V tile through the
// ring from position it0, a stage refilled once both MMA warpgroups have released it.
template <int D>
__device__ __forceinline__ void load_item(const BlockWork& w, const KvRing<D>& ring, int it0, uint32_t q_smem,
                                          uint32_t q_full, const CUtensorMap* tm_q, const CUtensorMap* tm_k,
                                          const CUtensorMap* tm_v) {
  constexpr int S = KvRing<D>::S;
  wg::mbar_arrive_expect(q_full, BM * D * 2);
#pragma unroll
  for (int db = 0; db < D / 64; ++db) wg::tma_load_4d(q_smem + db * BM * 128, tm_q, db * 64, w.q0, w.hq, w.b, q_full);
  for (int t = 0; t < w.ntiles; ++t) {
    const int it = it0 + t, s = it % S;
    const uint32_t ph = (it / S) & 1;
    if (it >= S) wg::mbar_wait(ring.k_empty(s), ph ^ 1);
    wg::mbar_arrive_expect(ring.k_full(s), KvRing<D>::kTileBytes);
#pragma unroll
    for (int db = 0; db < D / 64; ++db)
      wg::tma_load_4d(ring.k_tile(s) + db * BN * 128, tm_k, db * 64, t * BN, w.hkv, w.b, ring.k_full(s));
    if (it >= S) wg::mbar_wait(ring.v_empty(s), ph ^ 1);
    wg::mbar_arrive_expect(ring.v_full(s), KvRing<D>::kTileBytes);
#pragma unroll
    for (int db = 0; db < D / 64; ++db)
      wg::tma_load_4d(ring.v_tile(s) + db * BN * 128, tm_v, db * 64, t * BN, w.hkv, w.b, ring.v_full(s));
  }
}

// One MMA warpgroup's pass over a work item in ping-pong: the first Q K^T, then per
// tile the softmax and one batch (the tile's P V with the next tile's Q K^T), the two
// warpgroups taking turns to issue (named barriers my_turn / other_turn).  `it0`: the
// ring position of the item's first tile.  RELEASE_Q: `q_empty` is arrived on once the
// item's last Q K^T has completed, so the producer may overwrite Q (persistent form).
template <typename T, int D, bool RELEASE_Q>
__device__ __forceinline__ void pingpong_item(const AttnArgs& a, const BlockWork& w, const WarpgroupRows& rows,
                                              const KvRing<D>& ring, uint32_t q_rows, int it0, int my_turn,
                                              int other_turn, uint32_t q_empty, float (&o)[D / 2], float (&m)[2],
                                              float (&l)[2], int lane) {
  constexpr int S = KvRing<D>::S;
  constexpr int kConsumers = kCudaAttnWgmmaThreads - 128;
  float sc[BN / 2], alpha[2];
  uint32_t pa[BN / 16][4];
  bool next_active = w.ntiles > 0 && rows.sees(w, 0);
  if (w.ntiles > 0) wg::mbar_wait(ring.k_full(it0 % S), (it0 / S) & 1);
  wg::named_bar_sync(my_turn, kConsumers);
  if (next_active) {
    wg::fence();
    qk_issue<T, D>(sc, q_rows, ring.k_tile(it0 % S));
    wg::commit();
  }
  wg::named_bar_arrive(other_turn, kConsumers);
  wg::wait<0>();
  if (w.ntiles > 0) wg::mbar_arrive(ring.k_empty(it0 % S));
  if (RELEASE_Q && w.ntiles <= 1) wg::mbar_arrive(q_empty);
  for (int t = 0; t < w.ntiles; ++t) {
    const int i0 = it0 + t, i1 = i0 + 1;
    const int s = i0 % S, s1 = i1 % S;
    const uint32_t ph = (i0 / S) & 1, ph1 = (i1 / S) & 1;
    const int k0 = t * BN;
    const bool active = next_active, has_next = t + 1 < w.ntiles;
    next_active = has_next && rows.sees(w, k0 + BN);
    if (active) {
      softmax_scores<D>(sc, m, l, alpha, k0, w.ke, rows.lim, rows.full(w, k0), a.scale_log2, lane);
      softmax_rescale<T, D>(sc, o, alpha, pa);
    }
    wg::mbar_wait(ring.v_full(s), ph);
    if (has_next) wg::mbar_wait(ring.k_full(s1), ph1);
    wg::named_bar_sync(my_turn, kConsumers);
    // One fence per branch: a branch between the fence and a wgmma serializes them all.
    if (active && next_active) {
      wg::fence();
      pv_issue<T, D>(o, pa, ring.v_tile(s));
      qk_issue<T, D>(sc, q_rows, ring.k_tile(s1));
      wg::commit();
    } else if (active) {
      wg::fence();
      pv_issue<T, D>(o, pa, ring.v_tile(s));
      wg::commit();
    } else if (next_active) {
      wg::fence();
      qk_issue<T, D>(sc, q_rows, ring.k_tile(s1));
      wg::commit();
    }
    wg::named_bar_arrive(other_turn, kConsumers);
    wg::wait<0>();
    wg::mbar_arrive(ring.v_empty(s));
    if (has_next) wg::mbar_arrive(ring.k_empty(s1));
    if (RELEASE_Q && t + 2 == w.ntiles) wg::mbar_arrive(q_empty);  // this batch held the last Q K^T
  }
}

}  // namespace attn_wg

template <typename T, int D, bool PINGPONG>
__global__ void __launch_bounds__(kCudaAttnWgmmaThreads, 1)
    attention_wgmma(const __grid_constant__ AttnArgs a, const __grid_constant__ CUtensorMap tm_q,
                    const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v) {
#if MARLIN_HAS_WGMMA
  using namespace attn;
  using namespace attn_wg;
  constexpr int S = kCudaAttnWgmmaStages;
  constexpr uint32_t kQBytes = BM * D * 2, kTileBytes = BN * D * 2;
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bars[1 + 4 * S];  // q_full, k_full[S], v_full[S], k_empty[S], v_empty[S]
  const uint32_t smem0 = (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t q_smem = smem0, k_smem = q_smem + kQBytes, v_smem = k_smem + S * kTileBytes;
  const uint32_t bar0 = static_cast<uint32_t>(__cvta_generic_to_shared(bars));
  const uint32_t q_full = bar0;
  const KvRing<D> ring{k_smem, v_smem, bar0 + 8};
  constexpr int kConsumers = kCudaAttnWgmmaThreads - 128;

  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7;
  const BlockWork w = block_work(a, blockIdx.x, blockIdx.y);
  if (tid == 0) {
    wg::mbar_init(q_full, 1);
    for (int s = 0; s < S; ++s) {
      wg::mbar_init(ring.k_full(s), 1);
      wg::mbar_init(ring.v_full(s), 1);
      wg::mbar_init(ring.k_empty(s), kConsumers);
      wg::mbar_init(ring.v_empty(s), kConsumers);
    }
    wg::mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    // Producer: one thread issues every copy; a stage is refilled once both MMA
    // warpgroups have released it.
    wg::regs_release<40>();
    if (tid == 0) load_item<D>(w, ring, 0, q_smem, q_full, &tm_q, &tm_k, &tm_v);
    return;
  }
  wg::regs_acquire<232>();
  const int cw = wg - 1;
  const WarpgroupRows rows(a, w, w.q0 + 64 * cw, (tid >> 5) & 3, lane);
  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.f, 0.f};
  wg::mbar_wait(q_full, 0);
  const uint32_t q_rows = q_smem + 64 * cw * 128;
  float sc[BN / 2], alpha[2];
  uint32_t pa[BN / 16][4];
  if constexpr (PINGPONG) {
    // Ping-pong: a warpgroup's products are issued as one batch per tile (tile t's P V
    // with tile t + 1's Q K^T, one wait), and the two warpgroups take turns issuing
    // (named barrier 1 + cw is this warpgroup's turn), so one's softmax runs while the
    // tensor cores work through the other's batch.  Warpgroup 0 goes first; it takes
    // one extra turn at the end so both barriers finish with whole phases.
    const int my_turn = 1 + cw, other_turn = 2 - cw;
    if (cw == 1) wg::named_bar_arrive(1, kConsumers);
    pingpong_item<T, D, false>(a, w, rows, ring, q_rows, 0, my_turn, other_turn, 0u, o,
                               m, l, lane);
    if (cw == 0) wg::named_bar_sync(my_turn, kConsumers);
  } else {
    for (int t = 0; t < w.ntiles; ++t) {
      const int s = t % S;
      const uint32_t ph = (t / S) & 1;
      const int k0 = t * BN;
      // Every consumer waits for and releases every stage (also those it skips), so a
      // stage's release count is always both warpgroups of the same tile.
      const bool active = rows.sees(w, k0);
      wg::mbar_wait(ring.k_full(s), ph);
      if (active) qk_product<T, D>(sc, q_rows, ring.k_tile(s));
      wg::mbar_arrive(ring.k_empty(s));
      if (active) {
        softmax_scores<D>(sc, m, l, alpha, k0, w.ke, rows.lim, rows.full(w, k0), a.scale_log2, lane);
        softmax_rescale<T, D>(sc, o, alpha, pa);
      }
      wg::mbar_wait(ring.v_full(s), ph);
      if (active) pv_product<T, D>(o, pa, ring.v_tile(s));
      wg::mbar_arrive(ring.v_empty(s));
    }
  }
  store_rows<T, D>(a, w.b, w.hq, rows.qr, o, l, lane);
#else
  __trap();  // the host launches this kernel only where wgmma exists
#endif
}


// Persistent form (plan.persistent): one block per SM walks the work items of the grid
// above (zigzag_item), ping-pong only.  The producer keeps one K / V ring across items
// and loads the next item's Q as soon as both MMA warpgroups have issued the current
// one's last Q K^T (q_empty), so the next item's first tiles are in flight during this
// one's last P V and epilogue: what a fresh block pays at its start (Q and the first
// K / V from L2, the ring filling) is hidden.  H200 lab (attention_lab_cuda.cu):
// L = 1024 causal D 128 31.6 -> 28.0 us, L = 4096 causal D 64 208.7 -> 194.6 us.
template <typename T, int D>
__global__ void __launch_bounds__(kCudaAttnWgmmaThreads, 1)
    attention_wgmma_persistent(const __grid_constant__ AttnArgs a, const __grid_constant__ CUtensorMap tm_q,
                               const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v) {
#if MARLIN_HAS_WGMMA
  using namespace attn;
  using namespace attn_wg;
  constexpr int S = kCudaAttnWgmmaStages;
  constexpr uint32_t kQBytes = BM * D * 2, kTileBytes = BN * D * 2;
  extern __shared__ unsigned char smem_raw[];
  // q_full, q_empty, k_full[S], v_full[S], k_empty[S], v_empty[S]
  __shared__ __align__(8) uint64_t bars[2 + 4 * S];
  const uint32_t smem0 = (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t q_smem = smem0, k_smem = q_smem + kQBytes, v_smem = k_smem + S * kTileBytes;
  const uint32_t bar0 = static_cast<uint32_t>(__cvta_generic_to_shared(bars));
  const uint32_t q_full = bar0, q_empty = bar0 + 8;
  const KvRing<D> ring{k_smem, v_smem, bar0 + 16};
  constexpr int kConsumers = kCudaAttnWgmmaThreads - 128;
  const int G = gridDim.x, c = blockIdx.x;
  const int total = a.B * a.Hkv * a.head_blocks * a.query_blocks;

  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7;
  if (tid == 0) {
    wg::mbar_init(q_full, 1);
    wg::mbar_init(q_empty, kConsumers);
    for (int s = 0; s < S; ++s) {
      wg::mbar_init(ring.k_full(s), 1);
      wg::mbar_init(ring.v_full(s), 1);
      wg::mbar_init(ring.k_empty(s), kConsumers);
      wg::mbar_init(ring.v_empty(s), kConsumers);
    }
    wg::mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    wg::regs_release<40>();
    if (tid == 0) {
      int it = 0;  // K / V ring position, continued across items
      for (int j = 0;; ++j) {
        const int item = zigzag_item(c, G, j);
        if (item >= total) break;
        const BlockWork w = item_work(a, item);
        if (j > 0) wg::mbar_wait(q_empty, (j - 1) & 1);
        load_item<D>(w, ring, it, q_smem, q_full, &tm_q, &tm_k, &tm_v);
        it += w.ntiles;
      }
    }
    return;
  }
  wg::regs_acquire<232>();
  const int cw = wg - 1;
  // The ping-pong turns of attention_wgmma, continued across items.
  const int my_turn = 1 + cw, other_turn = 2 - cw;
  const uint32_t q_rows = q_smem + 64 * cw * 128;
  if (cw == 1) wg::named_bar_arrive(1, kConsumers);
  int it = 0;
  for (int j = 0;; ++j) {
    const int item = zigzag_item(c, G, j);
    if (item >= total) break;
    const BlockWork w = item_work(a, item);
    const WarpgroupRows rows(a, w, w.q0 + 64 * cw, (tid >> 5) & 3, lane);
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.f, 0.f};
    wg::mbar_wait(q_full, j & 1);
    pingpong_item<T, D, true>(a, w, rows, ring, q_rows, it, my_turn, other_turn,
                              q_empty, o, m, l, lane);
    it += w.ntiles;
    store_rows<T, D>(a, w.b, w.hq, rows.qr, o, l, lane);
  }
  if (cw == 0) wg::named_bar_sync(my_turn, kConsumers);
#else
  __trap();  // the host launches this kernel only where wgmma exists
#endif
}

}  // namespace marlin::cuda
