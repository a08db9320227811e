// Parameters and tile sizes of the Metal flash-attention kernels
// (metal/attention.metal), shared by the kernels and the host encoder
// (cpp/gpu/attention.cpp).  Like fp4_format.h this header is compiled by C++ and
// by Metal (real and emulated), so it uses only constexpr scalars, plain structs
// and fixed-width types that both sides lay out identically.
#pragma once

#if defined(__METAL_VERSION__)
typedef long marlin_i64;
#define MARLIN_ATTN_CONSTEXPR constexpr
#define MARLIN_ATTN_EXP2 metal::exp2
#else
#include <cmath>
#include <cstdint>
typedef int64_t marlin_i64;
#define MARLIN_ATTN_CONSTEXPR constexpr
#define MARLIN_ATTN_EXP2 std::exp2
#endif

namespace marlin {

// Threadgroup memory budget of one attention threadgroup (Apple GPUs: 32 KiB).
constexpr int kAttnThreadgroupBytes = 32768;
// Query rows per simdgroup (one 8x8 simdgroup_matrix row block); a threadgroup
// runs ceil(plan.rows / 8) simdgroups, at most AttentionPlan::kMaxRows / 8 = 8.
constexpr int kAttnRowsPerSimdgroup = 8;
constexpr int kAttnMaxSimdgroups = 8;
// Largest key tile; every tile size divides AttentionPlan::kBlockK (64), so the
// split-K key ranges (multiples of 64) are whole numbers of tiles.
constexpr int kAttnMaxBlockK = 64;

// Keys per threadgroup tile: the largest power of two <= 64 such that the K and V
// tiles (stored in the input dtype, elem_bytes each) fit the threadgroup budget.
//   half/bfloat: D 64/80/96/128 -> 64, D 256 -> 32
//   float:       D 64 -> 64, D 80/96/128 -> 32, D 256 -> 16
// THE one place tile sizes come from (kernels, host and tests).
MARLIN_ATTN_CONSTEXPR inline int attention_block_k(int head_dim, int elem_bytes) {
  int bk = kAttnMaxBlockK;
  while (bk > 8 && 2 * bk * head_dim * elem_bytes > kAttnThreadgroupBytes) bk /= 2;
  return bk;
}
MARLIN_ATTN_CONSTEXPR inline int attention_threadgroup_bytes(int head_dim, int elem_bytes) {
  return 2 * attention_block_k(head_dim, elem_bytes) * head_dim * elem_bytes;
}

// Mask kinds (values of AttentionMask in ops/attention.h) and additive-mask dtypes.
constexpr int kAttnMaskNone = 0;
constexpr int kAttnMaskCausal = 1;
constexpr int kAttnMaskBool = 2;
constexpr int kAttnMaskAdditive = 3;
constexpr int kAttnMaskF32 = 0;
constexpr int kAttnMaskF16 = 1;
constexpr int kAttnMaskBF16 = 2;

// One attention call.  Strides are in elements; mask strides are right-aligned to
// [B, Hq, Lq, Lk] with 0 for broadcast dimensions.  Task t (threadgroup t of the
// grid) decodes like the CPU backend: split fastest, then query block, head block,
// kv head, batch (see AttentionPlan).
struct AttentionParams {
  marlin_i64 q_stride[4];
  marlin_i64 k_stride[4];
  marlin_i64 v_stride[4];
  marlin_i64 mask_stride[4];
  marlin_i64 keys_per_split;  // keys of one split-K range (multiple of 64)
  int B, Hq, Hkv, Lq, Lk;
  int heads_per_task;  // plan.heads_per_task
  int head_blocks;     // plan.head_blocks
  int block_q;         // plan.block_q
  int query_blocks;    // plan.query_blocks
  int rows;            // plan.rows (<= 64); partial buffers hold `rows` rows per task
  int splits;          // plan.splits
  int mask_kind;       // kAttnMask*
  int mask_type;       // kAttnMaskF32 / F16 / BF16 (additive masks)
  float scale_log2;    // scale * log2(e): scores live in the base-2 domain
  int has_sinks;       // 1: the sinks buffer holds one float32 logit per query head
  int reserved;
};

// What a row's unnormalized output is multiplied by: 1 / the softmax denominator.
// l = sum of exp2(score - m) over the row's visible keys (m: their running max, base-2
// domain); an attention sink (a per-head logit that joins the softmax with a zero value
// vector, as in mx.fast.scaled_dot_product_attention's `sinks`) adds exp2(sink - m), with
// sink_log2 = -inf for none.  A row with no visible key gives 0 (zeros out, sink or
// not: all weight is on the sink); NaN stays NaN.  Shared by the CPU and Metal kernels.
inline float attention_row_scale(float l, float m, float sink_log2) {
  if (l == 0.0f) return 0.0f;
  return 1.0f / (l + MARLIN_ATTN_EXP2(sink_log2 - m));
}

} // namespace marlin
