// Dispatch planning for flash attention: how the work of one attention call is cut
// into tasks (query rows x key ranges) and tiles.  Pure C++ with no backend
// headers, so the CPU backend and the Metal/CUDA host code take the same decisions
// (and tests can enumerate plans).
//
// Work unit: one (batch, kv head) pair owns the G = Hq / Hkv query heads that share
// its keys and values.  A task takes `heads_per_task` of those heads x `block_q`
// consecutive queries (rows = heads_per_task * block_q, ordered head-major) and one
// range of keys; K/V tiles are loaded (and converted to fp32) once per task and
// reused by every row.  Decode (Lq <= kDecodeMaxQueries) additionally splits the
// keys over `splits` tasks (split-K) whose partial (max, sum, acc) are merged.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu_dtype.h"

namespace marlin {

struct AttentionPlan {
  // Limits shared by every backend.
  static constexpr int kDecodeMaxQueries = 8;  // Lq at or below: decode path (split-K)
  static constexpr int kMaxRows = 64;          // query rows per task (score-tile height)
  static constexpr int kBlockK = 64;           // keys per tile
  static constexpr int kMinKeysPerSplit = 256; // a split-K task gets at least this many keys

  bool decode;
  int heads_per_task;    // query heads of one kv group handled together
  int head_blocks;       // ceil(G / heads_per_task)
  int block_q;           // consecutive queries per task
  int query_blocks;      // ceil(Lq / block_q)
  int rows;              // heads_per_task * block_q
  int block_k;           // keys per tile
  int splits;            // key ranges per row block (1 unless decode)
  int64_t keys_per_split;// multiple of block_k
  int64_t num_tasks;     // B * Hkv * head_blocks * query_blocks * splits
};

inline bool is_supported_head_dim(int d) {
  return d == 64 || d == 80 || d == 96 || d == 128 || d == 256;
}

// parallel_units: CPU threads, or GPU threadgroups that can be resident at once.
inline AttentionPlan plan_attention(int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int parallel_units) {
  AttentionPlan p{};
  const int64_t G = Hq / std::max<int64_t>(1, Hkv);
  p.decode = Lq <= AttentionPlan::kDecodeMaxQueries;
  p.block_k = AttentionPlan::kBlockK;
  const int64_t g_cap = std::min<int64_t>(G, AttentionPlan::kMaxRows);
  p.block_q = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(Lq, AttentionPlan::kMaxRows / g_cap)));
  p.heads_per_task = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(G, AttentionPlan::kMaxRows / p.block_q)));
  p.head_blocks = static_cast<int>((G + p.heads_per_task - 1) / p.heads_per_task);
  p.query_blocks = static_cast<int>((std::max<int64_t>(Lq, 1) + p.block_q - 1) / p.block_q);
  p.rows = p.heads_per_task * p.block_q;

  const int64_t row_tasks = B * Hkv * p.head_blocks * p.query_blocks;
  const int64_t key_blocks = std::max<int64_t>(1, (Lk + p.block_k - 1) / p.block_k);
  p.splits = 1;
  if (p.decode && Lk > AttentionPlan::kMinKeysPerSplit) {
    // Enough tasks to keep every unit busy (x4 for balance), but never tiny key ranges.
    const int64_t want = (4 * int64_t(parallel_units) + row_tasks - 1) / row_tasks;
    const int64_t max_by_len = std::max<int64_t>(1, Lk / AttentionPlan::kMinKeysPerSplit);
    p.splits = static_cast<int>(std::max<int64_t>(1, std::min({want, max_by_len, key_blocks})));
  }
  const int64_t blocks_per_split = (key_blocks + p.splits - 1) / p.splits;
  p.keys_per_split = blocks_per_split * p.block_k;
  p.splits = static_cast<int>((key_blocks + blocks_per_split - 1) / blocks_per_split);
  p.num_tasks = row_tasks * p.splits;
  return p;
}

// ---- GPU kernel names (metal/attention.metal instantiates every value returned here;
// tests/test_metal_attention.py checks that against the compiled module).
enum class AttentionKernel : int {
  Prefill = 0,  // normalized output; one key range per task (plan.splits == 1)
  Decode = 1,   // split-K partial (unnormalized O, running max, sum) per task
  Merge = 2,    // combines the splits' partials into the normalized output
};

inline std::string attention_kernel_name(AttentionKernel kind, int head_dim, GpuDtype dtype) {
  static const char* kinds[] = {"prefill", "decode", "merge"};
  static const char* dtypes[] = {"f16", "bf16", "f32"};
  return std::string("marlin_attention_") + kinds[static_cast<int>(kind)] + "_d" + std::to_string(head_dim) + "_" +
         dtypes[static_cast<int>(dtype)];
}

// Every name attention_kernel_name can return for a supported head dim.
inline std::vector<std::string> all_attention_kernel_names() {
  std::vector<std::string> names;
  for (int kind = 0; kind < 3; ++kind)
    for (int d : {64, 80, 96, 128, 256})
      for (int t = 0; t < 3; ++t)
        names.push_back(attention_kernel_name(static_cast<AttentionKernel>(kind), d, static_cast<GpuDtype>(t)));
  return names;
}

} // namespace marlin
