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

// ---- CUDA (cpp/cuda/attention_kernels.cuh; host cpp/cuda/attention_host.cpp)
//
// Rows: one block owns `heads_per_block` query heads of one kv group x `block_q`
// consecutive queries (row r = head (r / block_q), query (r % block_q)), i.e. the
// rows of one task of the plan above, sized for 16-row MMA tiles; and one key range
// of `keys_per_split` keys (split `blockIdx.z`).
//   * Mma (float16 / bfloat16, unit feature stride, 16-byte aligned rows): flash
//     attention on mma.sync m16n8k16.  A block has warps_m x warps_n warps: warp
//     (wm, wn) owns MMA rows 16*wm.. and keys [wn * BK/warps_n, ...) of each BK-key
//     tile.  Prefill: warps_m = 4, warps_n = 1 (64 queries of one head per block).
//     Decode (Lq * G small): warps_m = 1, warps_n = 4 (all G heads x Lq queries in
//     one 16-row tile; the warps split each key tile and are merged in the block),
//     plus split-K over blocks and the Merge kernel.
//   * Simt (float32, odd strides / alignment): one warp per (row, split), fp32 FMA,
//     lanes over keys for Q K^T and over features for P V.  Same split-K + Merge.
//   * Merge: one block per output row combines the splits' (O, m, l) partials.
//   * Wgmma (Hopper only: compute capability 9.0, the sm_90a build; prefill, f16/bf16,
//     D = 64 / 128, no mask array, rows copyable as for Mma): flash attention on
//     warpgroup MMAs (attention_wgmma.cuh).  A block is kCudaAttnWgmmaRows queries of
//     one head, 64 per warpgroup, over kCudaAttnWgmmaKeys-key tiles in 128-byte-swizzled
//     shared memory; no split-K.  Every other case takes Mma / Simt.
enum class CudaAttentionKernel : int { Mma = 0, Simt = 1, Wgmma = 2 };

struct CudaAttentionConfig {
  int warps_m;  // 16-row MMA tiles (one per warp) along the rows
  int warps_n;  // warps splitting each key tile
  int block_k;  // keys per shared-memory tile (double-buffered)
  int min_blocks;  // __launch_bounds__ blocks per SM
  int m_tiles = 1; // 16-row MMA tiles per warp (2: every K / V fragment feeds two)
  constexpr int threads() const { return 32 * warps_m * warps_n; }
  constexpr int rows() const { return 16 * m_tiles * warps_m; }
};
// Compiled variants (attention_kernels.cu instantiates each for every D where
// cuda_attention_config_ok holds).  MLX_MARLIN_CUDA_ATTN=<index> forces one (benchmarks).
constexpr CudaAttentionConfig kCudaAttnConfigs[] = {
    {4, 1, 64, 2},  // 0: prefill, D <= 128
    {4, 1, 32, 2},  // 1: prefill, D = 256 (Q from shared memory: registers hold O)
    {1, 4, 64, 3},  // 2: decode, D <= 128
    {1, 2, 32, 3},  // 3: decode, D = 256
    {8, 1, 64, 1},  // 4: prefill, 128 rows per block (D <= 128)
    {4, 1, 32, 2, 2},  // 5: prefill, 128 rows per block, 2 row tiles per warp (D <= 128)
    {1, 8, 128, 1},  // 6: decode, D <= 128, 8 warps over 128-key tiles (forced only: not yet timed)
};
constexpr int kCudaAttnVariants = sizeof(kCudaAttnConfigs) / sizeof(kCudaAttnConfigs[0]);
constexpr int kCudaAttnDecodeMaxRows = 16;    // Lq * heads_per_block of the decode tile
constexpr int kCudaAttnMinKeysPerSplit = 128;  // multiple of every block_k
constexpr int kCudaAttnMaxSplits = 256;       // split-K: partials to scratch and to merge per row
// Split-K decode: blocks per SM the splits aim at.  One: fewer, longer splits leave less
// for the fused merge (H200, Lq = 1, Hq / Hkv = 32 / 8, D = 128, kernel time: Lk = 4096
// 13.5 -> 12.6 us, 32 -> 16 splits; Lk = 16384 27.5 -> 24.9 us; B = 4, Lk = 4096: 4 splits
// 24.7 us against 16 splits 28.7 us; three per SM, the occupancy limit, was the earlier choice).
constexpr int kCudaAttnDecodeBlocksPerSm = 1;
constexpr int kCudaAttnSimtWarps = 4;         // Simt: rows (warps) per block
constexpr int kCudaAttnWideMinQueries = 2048; // prefill: config 5 (128-row blocks) from this Lq
constexpr int kCudaAttnWgmmaRows = 128;       // Wgmma: queries per block (64 per warpgroup)
constexpr int kCudaAttnWgmmaKeys = 128;       // Wgmma: keys per shared-memory tile (double-buffered)
constexpr int kCudaAttnWgmmaThreads = 3 * 128;  // Wgmma: a TMA producer + one MMA warpgroup per 64 rows
constexpr int kCudaAttnWgmmaStages = 2;       // Wgmma: K / V tiles in flight (shared-memory ring)
constexpr bool kCudaAttnWgmmaPingPong = true;  // Wgmma: the MMA warpgroups take turns issuing (named barriers)
// Wgmma: one block per SM walking the (head, query block) items, the next item's Q and
// first K / V loaded under the current one's last tile (attention_wgmma_persistent).
constexpr bool kCudaAttnWgmmaPersistent = true;

constexpr bool cuda_attention_wgmma_head_dim(int head_dim) { return head_dim == 64 || head_dim == 128; }
// Wgmma's dynamic shared memory: Q tile + the ring of K and V tiles (16-bit, packed
// 128-byte swizzled rows) and 1 KiB to align the base to the swizzle's 1024 bytes.
constexpr int cuda_attention_wgmma_smem(int head_dim) {
  return 1024 + (kCudaAttnWgmmaRows + 2 * kCudaAttnWgmmaStages * kCudaAttnWgmmaKeys) * head_dim * 2;
}

// Q stays in registers up to D = 128 (8 x 4 registers) with one row tile per warp; at
// D = 256 (or two row tiles) the O accumulators alone need 128, so Q fragments are
// re-read from shared memory per key tile.
constexpr bool cuda_attention_q_in_registers(int head_dim) { return head_dim <= 128; }

constexpr bool cuda_attention_config_ok(const CudaAttentionConfig& c, int head_dim) {
  const int kw = c.block_k / c.warps_n;  // keys per warp per tile: whole k16 steps of P V
  return kw % 16 == 0 && (head_dim <= 128 || (c.block_k <= 32 && c.warps_m <= 4 && c.m_tiles == 1));
}

// Dynamic shared memory of the Mma kernel: Q tile + double-buffered K and V tiles in
// the input dtype (rows padded by 8 elements: ldmatrix rows hit distinct banks), reused
// by the epilogue for the warps' fp32 O tiles (padded likewise).
constexpr int cuda_attention_smem(const CudaAttentionConfig& c, int head_dim) {
  const int tiles = (c.rows() + 4 * c.block_k) * (head_dim + 8) * 2;
  const int red = c.warps_n * c.rows() * (head_dim + 8) * 4;
  return tiles > red ? tiles : red;
}

struct CudaAttentionPlan {
  CudaAttentionKernel kernel;
  int variant;          // Mma: index into kCudaAttnConfigs
  int heads_per_block;
  int block_q;
  int head_blocks;      // ceil(G / heads_per_block)
  int query_blocks;     // ceil(Lq / block_q)
  int splits;           // key ranges (blocks along grid z); > 1 runs Merge after
  int64_t keys_per_split;
  int grid_x, grid_y, grid_z;  // x: (batch, kv head, head block); y: query block; z: split
                               // (persistent Wgmma: x = blocks, one per SM at most; y = z = 1)
  bool persistent;      // Wgmma: the persistent kernel over head_blocks x query_blocks items
  int threads;
  int smem;             // dynamic shared memory bytes
};

// `half_input`: q/k/v are float16 or bfloat16; `aligned`: unit feature stride, every
// other stride a multiple of 8 elements and 16-byte aligned bases (the Mma kernel's
// cp.async rows).  sm_count: the device's SMs; variant >= 0 forces a Mma config.
// `wgmma_device`: the Wgmma kernel can run here (Hopper, sm_90a build); `mask_array`:
// a bool / additive mask array is given (Wgmma handles none and causal only);
// `persistent`: the Wgmma kernel's persistent form (benchmarks force either).
inline CudaAttentionPlan plan_cuda_attention(int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int head_dim,
                                             bool half_input, bool aligned, int sm_count, int variant = -1,
                                             bool wgmma_device = false, bool mask_array = false,
                                             bool persistent = kCudaAttnWgmmaPersistent) {
  CudaAttentionPlan p{};
  const int64_t G = Hq / std::max<int64_t>(1, Hkv);
  const bool mma = half_input && aligned;
  const bool decode = Lq <= AttentionPlan::kDecodeMaxQueries;
  if (mma && !decode && variant < 0 && wgmma_device && !mask_array && cuda_attention_wgmma_head_dim(head_dim)) {
    p.kernel = CudaAttentionKernel::Wgmma;
    p.variant = -1;
    p.heads_per_block = 1;
    p.block_q = kCudaAttnWgmmaRows;
    p.head_blocks = static_cast<int>(G);
    p.query_blocks = static_cast<int>((Lq + p.block_q - 1) / p.block_q);
    p.splits = 1;
    p.keys_per_split = std::max<int64_t>(Lk, 1);
    p.grid_x = static_cast<int>(B * Hkv * p.head_blocks);
    p.grid_y = p.query_blocks;
    p.grid_z = 1;
    p.persistent = persistent;
    if (persistent) {
      const int64_t items = int64_t(p.grid_x) * p.grid_y;
      p.grid_x = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(items, std::max(1, sm_count))));
      p.grid_y = 1;
    }
    p.threads = kCudaAttnWgmmaThreads;
    p.smem = cuda_attention_wgmma_smem(head_dim);
    return p;
  }
  p.kernel = mma ? CudaAttentionKernel::Mma : CudaAttentionKernel::Simt;
  int rows = kCudaAttnSimtWarps;
  int block_k = 64;
  if (mma) {
    int v = variant;
    if (v < 0 || v >= kCudaAttnVariants || !cuda_attention_config_ok(kCudaAttnConfigs[v], head_dim)) {
      // Prefill at D <= 128: 128-row blocks with two row tiles per warp once there are
      // enough queries (half the K/V traffic and shared-memory reads per MMA: 0.53 vs
      // 0.57 ms at L = 4096 on an H100); 64-row blocks below (at L = 1024 the 128-row grid
      // is one ragged wave: 69 vs 52 us kernel time).
      v = decode ? (head_dim <= 128 ? 2 : 3) : (head_dim <= 128 ? (Lq >= kCudaAttnWideMinQueries ? 5 : 0) : 1);
    }
    const CudaAttentionConfig& c = kCudaAttnConfigs[v];
    p.variant = v;
    rows = c.rows();
    block_k = c.block_k;
    p.threads = c.threads();
    p.smem = cuda_attention_smem(c, head_dim);
  } else {
    p.variant = -1;
    p.threads = 32 * kCudaAttnSimtWarps;
  }
  if (p.kernel == CudaAttentionKernel::Mma && rows <= kCudaAttnDecodeMaxRows) {
    // Decode tile: every head of the group at once (K/V read once per block).
    p.block_q = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(Lq, rows)));
    p.heads_per_block = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(G, rows / p.block_q)));
  } else {
    // Prefill (and Simt): consecutive queries of one head per block.
    p.heads_per_block = 1;
    p.block_q = rows;
  }
  p.head_blocks = static_cast<int>((G + p.heads_per_block - 1) / p.heads_per_block);
  p.query_blocks = static_cast<int>((std::max<int64_t>(Lq, 1) + p.block_q - 1) / p.block_q);
  const int64_t row_blocks = B * Hkv * p.head_blocks * p.query_blocks;
  const int64_t key_blocks = std::max<int64_t>(1, (Lk + block_k - 1) / block_k);
  p.splits = 1;
  if (decode && Lk > kCudaAttnMinKeysPerSplit) {
    // At most kCudaAttnDecodeBlocksPerSm blocks per SM (one wave: a few blocks more
    // than the SMs run a second wave, B = 4 at Lk = 4096: 160 blocks 27.3 us, 128 blocks
    // 24.7 us), never fewer than kCudaAttnMinKeysPerSplit keys each.
    const int64_t want = kCudaAttnDecodeBlocksPerSm * int64_t(std::max(sm_count, 1)) / row_blocks;
    const int64_t max_by_len = std::max<int64_t>(1, Lk / kCudaAttnMinKeysPerSplit);
    p.splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, max_by_len, key_blocks, kCudaAttnMaxSplits})));
  }
  const int64_t blocks_per_split = (key_blocks + p.splits - 1) / p.splits;
  p.keys_per_split = blocks_per_split * block_k;
  p.splits = static_cast<int>((key_blocks + blocks_per_split - 1) / blocks_per_split);
  p.grid_x = static_cast<int>(B * Hkv * p.head_blocks);
  p.grid_y = p.query_blocks;
  p.grid_z = p.splits;
  if (p.kernel == CudaAttentionKernel::Simt) {
    // One warp per output row: x runs over blocks of kCudaAttnSimtWarps rows of all
    // (batch, head, query), y is unused, z the split.
    p.heads_per_block = 1;
    p.block_q = 1;
    p.head_blocks = static_cast<int>(G);
    p.query_blocks = static_cast<int>(std::max<int64_t>(Lq, 1));
    p.grid_x = static_cast<int>((B * Hq * Lq + kCudaAttnSimtWarps - 1) / kCudaAttnSimtWarps);
    p.grid_y = 1;
    p.smem = 0;
  }
  return p;
}

} // namespace marlin
