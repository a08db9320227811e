// Flash attention on Apple GPUs: softmax(scale * q k^T + mask) v with grouped-query
// heads, the semantics of marlin::attention (cpp/ops/attention.h) and of the CPU
// backend (cpp/cpu/attention_kernels.cpp).
//
// Work split (cpp/common/attention_plan.h, shared with the CPU backend): one
// threadgroup = one task = (batch, kv head, block of query heads of that kv group,
// block of queries, key range).  Its R <= 64 query rows (head-major) are spread
// over ceil(rows / 8) simdgroups of 8 rows each.  Per simdgroup:
//   * Q (8 rows x D) lives in D/8 fp32 fragments, pre-scaled by scale*log2(e), so
//     the softmax runs on exp2; O (8 x D) in D/8 fp32 accumulator fragments.
//   * For each key tile of BK keys (attention_block_k(D, sizeof(T)): 64, or 32/16
//     for wide heads so the tiles stay within 32 KiB), the threadgroup stages the
//     K and V tiles in threadgroup memory (input dtype, zero past the range) with
//     one barrier, then
//       S (8 x BK) = Q K^T : BK/8 independent accumulators per D step (ILP);
//       mask: key range / causal limit (aligned to the end) / bool / additive
//             (read through broadcast strides), masked -> -inf;
//       online softmax: row max and sum over the 4 lanes of a row
//             (simd_shuffle_xor), running max m and sum l, O *= exp2(m_old - m_new);
//       O += P V : P stays in the S fragments (an accumulator fragment has the
//             layout of an A operand), D/8 independent accumulators.
//   * Causal tiles above the diagonal are never visited: the task's key range ends
//     at its last query's limit.
// Prefill writes O / l (0 for fully masked rows; with attention sinks, l gains the
// row's exp2(sink - m): attention_row_scale in attention_params.h).  Decode (Lq <= 8)
// splits the keys over plan.splits threadgroups; each writes its unnormalized (O, m, l)
// to scratch and attention_merge combines them (and adds the sink).
#include "common/attention_params.h"
#include <metal_stdlib>
#include "attention_tiles.h"

using namespace metal;

namespace marlin {

struct AttnTask {
  int b, hkv, g0, q0, nh, nq, R;
  marlin_i64 key_begin, key_end;
};

// Query head hq's sink logit in the scores' base-2 domain; -inf without sinks.
METAL_FUNC float sink_log2(const device float* sinks, constant AttentionParams& p, marlin_i64 hq) {
  return p.has_sinks ? sinks[hq] * 1.4426950408889634f : -INFINITY;
}

// Same decoding as task_range() of the CPU backend.
METAL_FUNC AttnTask attention_task(constant AttentionParams& p, uint task) {
  const int G = p.Hq / p.Hkv;
  AttnTask t;
  const int split = int(task % uint(p.splits));
  uint rest = task / uint(p.splits);
  const int qb = int(rest % uint(p.query_blocks));
  rest /= uint(p.query_blocks);
  const int hb = int(rest % uint(p.head_blocks));
  rest /= uint(p.head_blocks);
  t.hkv = int(rest % uint(p.Hkv));
  t.b = int(rest / uint(p.Hkv));
  t.g0 = hb * p.heads_per_task;
  t.nh = min(p.heads_per_task, G - t.g0);
  t.q0 = qb * p.block_q;
  t.nq = min(p.block_q, p.Lq - t.q0);
  t.R = t.nh * t.nq;
  t.key_begin = marlin_i64(split) * p.keys_per_split;
  t.key_end = min(marlin_i64(p.Lk), t.key_begin + p.keys_per_split);
  if (p.mask_kind == kAttnMaskCausal) {
    // Row (query i) sees keys j <= i + Lk - Lq: the block's last query bounds the range.
    t.key_end = min(t.key_end, marlin_i64(t.q0 + t.nq) + p.Lk - p.Lq);
  }
  return t;
}

// Runs one task.  PARTIAL: write unnormalized O and (m, l) per row (split-K);
// otherwise the normalized output.
template <typename T, int D, bool PARTIAL>
METAL_FUNC void attention_block(const device T* q, const device T* k, const device T* v, const device uchar* mask,
                                device T* out, device float* part_o, device float* part_ml, const device float* sinks,
                                constant AttentionParams& p, threadgroup T* ktile, threadgroup T* vtile, uint task,
                                uint sg, uint lane, uint tid, uint nthreads) {
  constexpr int BK = attention_block_k(D, sizeof(T));
  constexpr int DF = D / 8;   // fragments along the head dim
  constexpr int KF = BK / 8;  // fragments along a key tile
  const AttnTask t = attention_task(p, task);

  const int fr = frag_row(lane);
  const int fc = frag_col(lane);
  const int r = int(sg) * kAttnRowsPerSimdgroup + fr;  // task row of this lane's elements
  const bool row_ok = r < t.R;
  const bool sg_active = int(sg) * kAttnRowsPerSimdgroup < t.R;  // uniform per simdgroup
  const int G = p.Hq / p.Hkv;
  const int qi = t.q0 + (row_ok ? r % t.nq : 0);
  const marlin_i64 hq = marlin_i64(t.hkv) * G + t.g0 + (row_ok ? r / t.nq : 0);
  const marlin_i64 causal_lim = marlin_i64(qi) + p.Lk - p.Lq;  // last visible key (causal)
  const marlin_i64 mask_row = t.b * p.mask_stride[0] + hq * p.mask_stride[1] + qi * p.mask_stride[2];
  const marlin_i64 ms3 = p.mask_stride[3];

  frag_t qf[DF];
  frag_t of[DF];
  {
    const device T* qrow = q + t.b * p.q_stride[0] + hq * p.q_stride[1] + marlin_i64(qi) * p.q_stride[2];
    const marlin_i64 qs3 = p.q_stride[3];
    for (int f = 0; f < DF; ++f) {
      float2 e = float2(0.0f);
      if (row_ok) {
        e.x = float(qrow[(f * 8 + fc) * qs3]) * p.scale_log2;
        e.y = float(qrow[(f * 8 + fc + 1) * qs3]) * p.scale_log2;
      }
      qf[f].thread_elements() = e;
      of[f] = zero_frag();
    }
  }
  float m_run = -INFINITY;
  float l_run = 0.0f;

  const device T* kbase = k + t.b * p.k_stride[0] + marlin_i64(t.hkv) * p.k_stride[1];
  const device T* vbase = v + t.b * p.v_stride[0] + marlin_i64(t.hkv) * p.v_stride[1];
  for (marlin_i64 k0 = t.key_begin; k0 < t.key_end; k0 += BK) {
    const int nk = int(min(marlin_i64(BK), t.key_end - k0));
    // K and V tiles of this step, zero past the range (0 * garbage could be NaN).
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the previous tiles are consumed
    for (uint i = tid; i < uint(BK * D); i += nthreads) {
      const int j = int(i) / D;
      const int d = int(i) % D;
      T kx = T(0), vx = T(0);
      if (j < nk) {
        kx = kbase[(k0 + j) * p.k_stride[2] + d * p.k_stride[3]];
        vx = vbase[(k0 + j) * p.v_stride[2] + d * p.v_stride[3]];
      }
      ktile[i] = kx;
      vtile[i] = vx;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (!sg_active) continue;

    // S = Q K^T; the KF accumulators are independent chains.
    frag_t sf[KF];
    for (int kb = 0; kb < KF; ++kb) sf[kb] = zero_frag();
    for (int f = 0; f < DF; ++f) {
      for (int kb = 0; kb < KF; ++kb) {
        frag_t kt;  // K^T block: (d = f*8 + row, key = kb*8 + col)
        kt.thread_elements() = float2(float(ktile[(kb * 8 + fc) * D + f * 8 + fr]),
                                      float(ktile[(kb * 8 + fc + 1) * D + f * 8 + fr]));
        simdgroup_multiply_accumulate(sf[kb], qf[f], kt, sf[kb]);
      }
    }

    // Masks, then the online softmax of this tile.
    float mloc = -INFINITY;
    bool vis[KF][2];
    for (int kb = 0; kb < KF; ++kb) {
      thread float2& se = sf[kb].thread_elements();
      for (int e = 0; e < 2; ++e) {
        const int j = kb * 8 + fc + e;
        const marlin_i64 key = k0 + j;
        bool ok = row_ok && j < nk;
        if (p.mask_kind == kAttnMaskCausal) ok = ok && key <= causal_lim;
        float s = se[e];
        if (ok && p.mask_kind == kAttnMaskBool) ok = mask[mask_row + key * ms3] != 0;
        if (ok && p.mask_kind == kAttnMaskAdditive) {
          s += load_additive_mask(mask, p.mask_type, mask_row + key * ms3) * M_LOG2E_F;
          ok = s > -INFINITY;
        }
        vis[kb][e] = ok;
        s = ok ? s : -INFINITY;
        se[e] = s;
        mloc = max(mloc, s);
      }
    }
    mloc = row_max(mloc);
    const float m_new = max(m_run, mloc);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // fully masked so far: p = 0
    const float alpha = exp2(m_run - m_use);
    float psum = 0.0f;
    for (int kb = 0; kb < KF; ++kb) {
      thread float2& se = sf[kb].thread_elements();
      for (int e = 0; e < 2; ++e) {
        const float pe = vis[kb][e] ? exp2(se[e] - m_use) : 0.0f;
        se[e] = pe;
        psum += pe;
      }
    }
    l_run = l_run * alpha + row_sum(psum);
    m_run = m_new;

    // O = alpha * O + P V; the DF accumulators are independent chains.
    for (int f = 0; f < DF; ++f) of[f].thread_elements() *= alpha;
    for (int f = 0; f < DF; ++f) {
      for (int kb = 0; kb < KF; ++kb) {
        frag_t vf;  // V block: (key = kb*8 + row, d = f*8 + col)
        const int vi = (kb * 8 + fr) * D + f * 8 + fc;
        vf.thread_elements() = float2(float(vtile[vi]), float(vtile[vi + 1]));
        simdgroup_multiply_accumulate(of[f], sf[kb], vf, of[f]);
      }
    }
  }

  if (!row_ok) return;
  if (PARTIAL) {
    device float* po = part_o + (marlin_i64(task) * p.rows + r) * D;
    for (int f = 0; f < DF; ++f) {
      const float2 e = of[f].thread_elements();
      po[f * 8 + fc] = e.x;
      po[f * 8 + fc + 1] = e.y;
    }
    if (fc == 0) {
      part_ml[(marlin_i64(task) * p.rows + r) * 2] = m_run;
      part_ml[(marlin_i64(task) * p.rows + r) * 2 + 1] = l_run;
    }
  } else {
    const float inv = attention_row_scale(l_run, m_run, sink_log2(sinks, p, hq));
    device T* orow = out + ((t.b * marlin_i64(p.Hq) + hq) * p.Lq + qi) * D;
    for (int f = 0; f < DF; ++f) {
      const float2 e = of[f].thread_elements() * inv;
      orow[f * 8 + fc] = T(e.x);
      orow[f * 8 + fc + 1] = T(e.y);
    }
  }
}

// Prefill: grid (plan.num_tasks), threads 32 * ceil(plan.rows / 8).
template <typename T, int D>
[[kernel]] void attention_prefill(const device T* q [[buffer(0)]], const device T* k [[buffer(1)]],
                                  const device T* v [[buffer(2)]], const device uchar* mask [[buffer(3)]],
                                  device T* out [[buffer(4)]], constant AttentionParams& p [[buffer(5)]],
                                  const device float* sinks [[buffer(6)]],
                                  uint task [[threadgroup_position_in_grid]],
                                  uint sg [[simdgroup_index_in_threadgroup]],
                                  uint lane [[thread_index_in_simdgroup]],
                                  uint tid [[thread_index_in_threadgroup]],
                                  uint nthreads [[threads_per_threadgroup]]) {
  constexpr int BK = attention_block_k(D, sizeof(T));
  threadgroup T ktile[BK * D];
  threadgroup T vtile[BK * D];
  attention_block<T, D, false>(q, k, v, mask, out, nullptr, nullptr, sinks, p, ktile, vtile, task, sg, lane, tid,
                               nthreads);
}

// Decode split-K: grid (plan.num_tasks), threads 32 * ceil(plan.rows / 8); writes
// part_o [num_tasks, rows, D] (unnormalized) and part_ml [num_tasks, rows, 2] (m, l).
template <typename T, int D>
[[kernel]] void attention_decode(const device T* q [[buffer(0)]], const device T* k [[buffer(1)]],
                                 const device T* v [[buffer(2)]], const device uchar* mask [[buffer(3)]],
                                 device float* part_o [[buffer(4)]], device float* part_ml [[buffer(5)]],
                                 constant AttentionParams& p [[buffer(6)]],
                                 uint task [[threadgroup_position_in_grid]],
                                 uint sg [[simdgroup_index_in_threadgroup]],
                                 uint lane [[thread_index_in_simdgroup]],
                                 uint tid [[thread_index_in_threadgroup]],
                                 uint nthreads [[threads_per_threadgroup]]) {
  constexpr int BK = attention_block_k(D, sizeof(T));
  threadgroup T ktile[BK * D];
  threadgroup T vtile[BK * D];
  attention_block<T, D, true>(q, k, v, mask, nullptr, part_o, part_ml, nullptr, p, ktile, vtile, task, sg, lane, tid,
                              nthreads);
}

// Merge of the split-K partials: grid (num_tasks / splits, rows), 32 threads; the
// threadgroup (row task, row) combines its row over the splits:
//   M = max m_s,  l = sum exp2(m_s - M) l_s,  out = sum exp2(m_s - M) O_s / (l + the sink's exp2(sink - M)).
template <typename T, int D>
[[kernel]] void attention_merge(const device float* part_o [[buffer(0)]], const device float* part_ml [[buffer(1)]],
                                device T* out [[buffer(2)]], constant AttentionParams& p [[buffer(3)]],
                                const device float* sinks [[buffer(4)]],
                                uint2 tg [[threadgroup_position_in_grid]],
                                uint lane [[thread_index_in_threadgroup]],
                                uint nthreads [[threads_per_threadgroup]]) {
  const uint row_task = tg.x;
  const int r = int(tg.y);
  const AttnTask t = attention_task(p, row_task * uint(p.splits));
  if (r >= t.R) return;
  const marlin_i64 first = marlin_i64(row_task) * p.splits;
  float M = -INFINITY;
  for (int s = 0; s < p.splits; ++s) M = max(M, part_ml[((first + s) * p.rows + r) * 2]);
  float l = 0.0f;
  for (int s = 0; s < p.splits; ++s) {
    // A split without visible keys has l_s == 0 and is skipped; NaN partials (NaN inputs)
    // are not, so the NaN reaches the output as on the CPU.
    const float ms = part_ml[((first + s) * p.rows + r) * 2];
    const float ls = part_ml[((first + s) * p.rows + r) * 2 + 1];
    if (ls != 0.0f) l += exp2(ms - M) * ls;
  }
  const int G = p.Hq / p.Hkv;
  const marlin_i64 hq = marlin_i64(t.hkv) * G + t.g0 + r / t.nq;
  const float inv = attention_row_scale(l, M, sink_log2(sinks, p, hq));  // as the CPU backend
  const int qi = t.q0 + r % t.nq;
  device T* orow = out + ((t.b * marlin_i64(p.Hq) + hq) * p.Lq + qi) * D;
  for (int c = int(lane); c < D; c += int(nthreads)) {
    float acc = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float ms = part_ml[((first + s) * p.rows + r) * 2];
      if (part_ml[((first + s) * p.rows + r) * 2 + 1] != 0.0f)
        acc += exp2(ms - M) * part_o[((first + s) * p.rows + r) * D + c];
    }
    orow[c] = T(acc * inv);
  }
}

} // namespace marlin

// Host names: attention_kernel_name(kind, head_dim, dtype) in cpp/common/attention_plan.h.
#define MARLIN_ATTN_INSTANTIATE(D, T, TN)                                                                      \
  template [[host_name("marlin_attention_prefill_d" #D "_" #TN)]] [[kernel]] decltype(marlin::attention_prefill<T, D>) \
      marlin::attention_prefill<T, D>;                                                                          \
  template [[host_name("marlin_attention_decode_d" #D "_" #TN)]] [[kernel]] decltype(marlin::attention_decode<T, D>)   \
      marlin::attention_decode<T, D>;                                                                           \
  template [[host_name("marlin_attention_merge_d" #D "_" #TN)]] [[kernel]] decltype(marlin::attention_merge<T, D>)     \
      marlin::attention_merge<T, D>;

#define MARLIN_ATTN_INSTANTIATE_DTYPES(D) \
  MARLIN_ATTN_INSTANTIATE(D, half, f16)   \
  MARLIN_ATTN_INSTANTIATE(D, bfloat, bf16) \
  MARLIN_ATTN_INSTANTIATE(D, float, f32)

MARLIN_ATTN_INSTANTIATE_DTYPES(64)
MARLIN_ATTN_INSTANTIATE_DTYPES(80)
MARLIN_ATTN_INSTANTIATE_DTYPES(96)
MARLIN_ATTN_INSTANTIATE_DTYPES(128)
MARLIN_ATTN_INSTANTIATE_DTYPES(256)
