// Dispatch planning for the FP4 GEMM: which kernel variant runs, with which tiles
// and grid.  Pure C++ with no backend headers, so the CPU backend, the Metal host
// code, the Metal emulator and the CUDA host code all take their decisions from
// the same functions (and tests can enumerate every plan).
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "fp4_format.h"
#include "gpu_dtype.h"

namespace marlin {

// ---------------------------------------------------------------- CPU backend
struct CpuGemmPlan {
  // Rows at or below this go through the streaming kernel that decodes packed
  // words straight into FMAs (each weight is used by so few rows that staging a
  // decoded tile would cost more than it saves).
  static constexpr int kStreamingMaxRows = 8;
  // Rows handled together by the streaming kernel (weights decoded once per chunk).
  static constexpr int kStreamingRowChunk = 8;
  // Columns a streaming task owns: 4 vectors of 16 floats.
  static constexpr int kStreamingCols = 64;
  // Tiled kernel: a decoded [kKc x kNc] fp32 tile (32 KiB) stays in L1 while a
  // register block of kMr rows x kNc columns accumulates against it.
  static constexpr int kNc = 64;
  static constexpr int kKc = 128;
  static constexpr int kMr = 6;
  // Builds that decode through byte tables (AVX2: vpshufb, cpu/fp4_gemm_kernels.cpp)
  // stream up to this many rows that way, over strips of kByteStripCols columns
  // visited one quantization group at a time: each group's word rows are then read as
  // 2 KiB sequential runs the hardware prefetchers follow (a 64-column strip walked
  // down all of K reads 256 bytes per page and ran at ~4 GB/s per core from DRAM).
  static constexpr int kByteTableMaxRows = 3;
  static constexpr int kByteStripCols = 512;

  bool streaming;
  bool byte_tables;  // the byte-table streaming kernel (only where the build has one)
  int col_block;     // columns per task
  int num_col_blocks;
};

// `byte_tables`: whether the kernel build streams through byte tables
// (KernelTable::byte_table_streaming).
inline CpuGemmPlan plan_cpu_gemm(int64_t M, int64_t N, bool byte_tables = false) {
  CpuGemmPlan p{};
  p.streaming = M <= CpuGemmPlan::kStreamingMaxRows;
  p.byte_tables = byte_tables && M >= 1 && M <= CpuGemmPlan::kByteTableMaxRows;
  p.col_block = p.byte_tables ? CpuGemmPlan::kByteStripCols
      : p.streaming           ? CpuGemmPlan::kStreamingCols
                              : CpuGemmPlan::kNc;
  p.num_col_blocks = static_cast<int>((N + p.col_block - 1) / p.col_block);
  return p;
}

// dense_linear on the CPU (y = x @ W^T with W [N, K] in float16/bfloat16/float32):
// each output is a dot product over all of K of one x row and one W row, in register
// blocks of up to `block_cols` W rows (from the ISA's register file).  Tasks own
// `rows_per_task` W rows, sized so they stay in L2 while every block of x rows passes
// over them.  (Walking K in L1-sized chunks, partial sums in memory, measured slower at
// K = 2048 and 8192 on AVX2: the whole-row streams prefetch well.)
struct CpuDenseLinearPlan {
  static constexpr int64_t kTaskWeightBytes = 128 * 1024;
  static constexpr int kMaxRowsPerTask = 64;
  int rows_per_task;
  int num_tasks;
};

// `weight_bits`: 32 / 16 for float weights, 8 / 4 for MLX's affine codes (affine_linear).
inline CpuDenseLinearPlan plan_cpu_dense_linear(int64_t N, int64_t K, int weight_bits, int block_cols) {
  const int64_t row_bytes = std::max<int64_t>(1, K * weight_bits / 8);
  int64_t rows = CpuDenseLinearPlan::kTaskWeightBytes / row_bytes;
  rows = std::min<int64_t>(CpuDenseLinearPlan::kMaxRowsPerTask, std::max<int64_t>(block_cols, rows / block_cols * block_cols));
  CpuDenseLinearPlan p{};
  p.rows_per_task = static_cast<int>(rows);
  p.num_tasks = static_cast<int>((N + rows - 1) / rows);
  return p;
}

// ---------------------------------------------------------------- GPU backends
enum class GemmVariant : int { Decode = 0, Default = 1, LargeM = 2 };

struct GemmTile {
  int tile_m;
  int tile_n;
  int tile_k;
  int simdgroups;  // 32-lane groups (Metal simdgroups / CUDA warps) per threadgroup
};

struct GpuGemmPlan {
  GemmVariant variant;
  GemmTile tile;
  int grid_x;  // threadgroups along N
  int grid_y;  // threadgroups along M
  int threads_per_group;
};

constexpr GemmTile tile_for(GemmVariant v) {
  return v == GemmVariant::Decode ? GemmTile{32, 128, 32, 4}
      : v == GemmVariant::LargeM  ? GemmTile{128, 64, 32, 8}
                                  : GemmTile{64, 64, 32, 4};
}

// Decode tiles favour parallelism over N (few rows, many columns); large-M tiles
// favour reuse of each decoded weight tile across many rows.
constexpr int kDecodeMaxRows = 16;
constexpr int kLargeMMinRows = 256;

inline GemmVariant choose_gemm_variant(int64_t M) {
  if (M <= kDecodeMaxRows) return GemmVariant::Decode;
  if (M >= kLargeMMinRows) return GemmVariant::LargeM;
  return GemmVariant::Default;
}

inline GpuGemmPlan plan_gpu_gemm(int64_t M, int64_t N) {
  GpuGemmPlan p{};
  p.variant = choose_gemm_variant(M);
  p.tile = tile_for(p.variant);
  p.grid_x = static_cast<int>((N + p.tile.tile_n - 1) / p.tile.tile_n);
  p.grid_y = static_cast<int>((M + p.tile.tile_m - 1) / p.tile.tile_m);
  p.threads_per_group = 32 * p.tile.simdgroups;
  return p;
}

inline const char* variant_name(GemmVariant v) {
  return v == GemmVariant::Decode ? "decode"
      : v == GemmVariant::LargeM  ? "large_m"
                                  : "default";
}

// Kernel host names (Metal library and emulator module).  These functions are the
// only place a name is formed; metal/gemm_fp4.metal instantiates every name they can
// return (tests/test_metal_gemm.py checks that against the compiled module).

// Activations x: f16, bf16, f32.  Scales: f16, bf16.  Output: the type of x, or f32
// for f16/bf16 x (the vjp recomputes the pre-activation product in float32); any other
// combination throws.
inline std::string gemm_kernel_name(GemmVariant v, GpuDtype x, GpuDtype scales, GpuDtype out) {
  if (out != x && out != GpuDtype::Float32) throw std::invalid_argument("gemm_kernel_name: unsupported output dtype");
  return std::string("fp4_gemm_") + variant_name(v) + "_" + gpu_dtype_name(x) + "_" + gpu_dtype_name(scales) +
      (out != x ? "_out_f32" : "");
}

// The vjp product g @ W^T (one simple kernel per dtype pair, no variants).
inline std::string gemm_transposed_kernel_name(GpuDtype x, GpuDtype scales) {
  return std::string("fp4_gemm_transposed_") + gpu_dtype_name(x) + "_" + gpu_dtype_name(scales);
}

// Every name the two functions above can return.
template <class F>
inline void for_each_gemm_kernel_name(F&& f) {
  const GpuDtype xs[] = {GpuDtype::Float16, GpuDtype::BFloat16, GpuDtype::Float32};
  const GpuDtype ss[] = {GpuDtype::Float16, GpuDtype::BFloat16};
  const GemmVariant vs[] = {GemmVariant::Decode, GemmVariant::Default, GemmVariant::LargeM};
  for (GemmVariant v : vs)
    for (GpuDtype x : xs)
      for (GpuDtype s : ss) {
        f(gemm_kernel_name(v, x, s, x));
        if (x != GpuDtype::Float32) f(gemm_kernel_name(v, x, s, GpuDtype::Float32));
      }
  for (GpuDtype x : xs)
    for (GpuDtype s : ss) f(gemm_transposed_kernel_name(x, s));
}

// ---------------------------------------------------------------- CUDA backend
// Kernels of cpp/cuda/fp4_gemm.cu.  The tensor-core kernel (mma.sync m16n8k16,
// f16/bf16 activations) is compiled for a fixed set of tile configurations; the
// plan picks one of them by name so host code, benchmarks and tests agree.
//   * MmaDecode:  M <= kDecodeMaxRows.  One 16-row MMA tile; the 8 warps of a block
//                 share the same 32 columns and split K (reduced in shared memory),
//                 so N/32 blocks of 256 threads stream the weights once.
//   * MmaPrefill: larger M.  Warps tile M x N (2 x 4 warps, 32 x 32 each).
//   * Simt:       float32 activations (exact fp32 FMA path), or shapes/alignments the
//                 MMA kernel does not take (N % 8 != 0, unaligned pointers).
//   * SimtTransposed: the vjp product g @ W^T.
//   * Gemv:       M <= kDecodeMaxRows, the streaming decode kernel (fp4_gemv, see
//                 CudaGemvConfig).  MmaDecode stays as a forced alternative.
enum class CudaGemmKernel : int { MmaDecode = 0, MmaPrefill = 1, Simt = 2, SimtTransposed = 3, Gemv = 4, GemvToken = 5 };

struct CudaMmaConfig {
  int mi;       // 16-row MMA tiles per warp
  int ni;       // 8-column MMA tiles per warp (multiple of 4: one 16-byte load per 4)
  int warps_m;
  int warps_n;
  int warps_k;  // warps splitting K inside a block (reduced through shared memory)
  int unroll;   // k32 steps whose loads are in flight per warp
  constexpr int threads() const { return 32 * warps_m * warps_n * warps_k; }
  constexpr int block_m() const { return 16 * mi * warps_m; }
  constexpr int block_n() const { return 8 * ni * warps_n; }
};

constexpr CudaMmaConfig kCudaDecodeConfig{1, 4, 1, 1, 8, 3};
constexpr CudaMmaConfig kCudaPrefillConfig{2, 4, 2, 4, 1, 2};

// SIMT kernels: 32 columns x 8 K-slices per block, kCudaSimtRows rows per block.
constexpr int kCudaSimtRows = 8;
constexpr int kCudaSimtTransposedRows = 4;

// Decode kernel (fp4_gemv, M <= kDecodeMaxRows): one block per 32-column strip (and
// 16-row tile of M), its `wk` warps splitting K.  Every warp streams 512 bytes of
// weights per k32 step through a ring of `stages` steps in registers, and that step's
// activations and its group's scales through a cp.async ring of as many steps in shared
// memory.
struct CudaGemvConfig {
  int wk;          // warps per block, each a contiguous run of whole groups of K
  int stages;      // k32 steps of weights in flight per warp
  int min_blocks;  // __launch_bounds__ blocks per SM for M <= 8 (registers <= 64K / (32 wk min_blocks))
  // M > 8 keeps twice the accumulators: half the blocks per SM, no spills.
  constexpr int blocks_per_sm(bool rows16) const { return rows16 && min_blocks > 1 ? min_blocks / 2 : min_blocks; }
};
constexpr int kCudaGemvBlockN = 32;
constexpr int kCudaGemvStepBytes = 512;  // one warp's weights per k32 step: 32 lanes x 16 B
// Compiled variants (cpp/cuda/fp4_gemm_kernels.cu instantiates each), widest K split
// first.  The plan takes the widest split whose blocks all fit on the GPU at once (one
// wave: no SM idles while another runs a second block) and that gives every warp at
// least one group; MLX_MARLIN_CUDA_DECODE=<index> (or =mma for MmaDecode) overrides it.
constexpr CudaGemvConfig kCudaGemvConfigs[] = {
    {32, 4, 1},
    {16, 4, 2},
    {8, 4, 4},
    {4, 4, 8},
    {8, 8, 3},
};
constexpr int kCudaGemvVariants = sizeof(kCudaGemvConfigs) / sizeof(kCudaGemvConfigs[0]);
constexpr int kCudaGemvPlanned = 4;  // the plan chooses among variants [0, kCudaGemvPlanned)
constexpr uint32_t kCudaGemvMaxSmem = 227 * 1024;  // sm_90 opt-in limit per block

// One warp's shared-memory ring slot per k32 step: the activations (16 B per lane and n8
// token tile) and the group scales of its 8 column quads (8 B each).
constexpr uint32_t cuda_gemv_slot_bytes(bool rows16) {
  return uint32_t(kCudaGemvStepBytes * (rows16 ? 2 : 1) + 8 * 8);
}

// Dynamic shared memory of fp4_gemv: the warps' cp.async rings, reused afterwards for the
// K reduction (wk - 1 warps x 8 accumulators per n8 token tile x 32 lanes, fp32).
constexpr uint32_t cuda_gemv_smem(const CudaGemvConfig& c, bool rows16) {
  const uint32_t ring = uint32_t(c.wk * c.stages) * cuda_gemv_slot_bytes(rows16);
  const uint32_t red = uint32_t((c.wk - 1) * (rows16 ? 2 : 1) * 8 * 32 * 4);
  return ring > red ? ring : red;
}

// One-token decode kernel (fp4_gemv_token, M = 1): fp4_gemv's 32-column strips and
// weight register ring, with each warp's x and scales staged once in its own
// shared-memory area, and K optionally split over `splits` blocks per strip (so that
// strips x splits spread evenly over the SMs; the strip's last block adds the slices).
struct CudaGemvTokenConfig {
  int wk;          // warps per block, each a contiguous run of whole groups of its K slice
  int stages;      // k32 steps of weights in flight per warp
  int min_blocks;  // __launch_bounds__ blocks per SM (64 registers: 32 warps per SM)
};
constexpr CudaGemvTokenConfig kCudaGemvTokenConfigs[] = {
    {8, 4, 4},
    {4, 4, 8},
    {2, 4, 16},
};
constexpr int kCudaGemvTokenVariants = sizeof(kCudaGemvTokenConfigs) / sizeof(kCudaGemvTokenConfigs[0]);
constexpr int kCudaGemvTokenMaxSplits = 16;
constexpr int kCudaGemvTokenLongWarp = 32;  // k32 steps per warp beyond which more warps beat fewer splits
constexpr int64_t kCudaSmemPerSm = 228 * 1024;      // sm_90 shared memory per SM
constexpr int64_t kCudaSmemReservedPerBlock = 1024;  // the runtime's share of it per block

// Groups [grp_begin, grp_end) of K (group_size each) that warp `wk` of `wk_count` works
// on in the block of K slice `slice` of `splits`.
struct CudaGemvTokenSlice {
  int grp_begin;
  int grp_end;
};
constexpr CudaGemvTokenSlice cuda_gemv_token_slice(int K, int group_size, int splits, int slice, int wk_count,
                                                   int wk) {
  const int64_t groups = K / group_size;
  const int64_t g0 = groups * slice / splits, g1 = groups * (slice + 1) / splits;
  return {static_cast<int>(g0 + (g1 - g0) * wk / wk_count), static_cast<int>(g0 + (g1 - g0) * (wk + 1) / wk_count)};
}

// Shared memory of one warp: the most groups a warp gets, each its k32 steps' B
// fragments (64 bytes a step), its 8 column quads' scales (8 bytes each) and its
// activation exponent's fp32 factor (4 bytes), rounded up to 16 bytes (the next
// warp's fragments are uint4).
constexpr uint32_t cuda_gemv_token_warp_bytes(int K, int group_size, int splits, int wk_count) {
  const int64_t per_block = (K / group_size + splits - 1) / splits;
  const int64_t per_warp = (per_block + wk_count - 1) / wk_count;
  return static_cast<uint32_t>((per_warp * (group_size / 32 * 64 + 8 * 8 + 4) + 15) / 16 * 16);
}
// ... of the block, reused afterwards for the warps' reduction (4 sums per lane).
constexpr uint32_t cuda_gemv_token_smem(int K, int group_size, int splits, int wk_count) {
  const int64_t stage = int64_t(wk_count) * cuda_gemv_token_warp_bytes(K, group_size, splits, wk_count);
  const int64_t red = int64_t(wk_count - 1) * 4 * 32 * 4;
  return static_cast<uint32_t>(stage > red ? stage : red);
}

struct CudaGemvTokenPlan {
  int variant = -1;  // index into kCudaGemvTokenConfigs; -1: the kernel does not apply
  int splits = 1;
  uint32_t smem = 0;
  int blocks_per_sm = 0;
};

// Blocks of `smem` bytes that one SM holds at once, at most `min_blocks`.
constexpr int cuda_blocks_per_sm(uint32_t smem, int min_blocks) {
  const int64_t by_smem = kCudaSmemPerSm / (int64_t(smem) + kCudaSmemReservedPerBlock);
  return static_cast<int>(by_smem < min_blocks ? by_smem : min_blocks);
}

// The busiest SM's share of the work decides the time of a memory-bound single wave, so
// the plan takes the (variant, splits) whose blocks all fit at once and give the busiest
// SM the least work: ceil(blocks / SMs) blocks of ceil(groups / splits) groups each.
// Ties go to fewer splits (the slices' sums cost a round trip through L2 at the end),
// unless the warps' chains of steps are long, where more warps on that SM (more loads
// in flight) pay: H200, K x N = 4096 x 4096: 1 split 7.7 us, 4 splits 9.3 us; 14336 x
// 4096 (56 steps per warp unsplit): 17.6 us, 15.3 us (benchmarks/gemv_lab_cuda.cu).  No
// single wave possible (huge N): the most blocks per SM, no split.  `variant` /
// `splits` >= 0 force them (benchmarks, tests).
inline CudaGemvTokenPlan plan_cuda_gemv_token(int64_t N, int64_t K, int64_t group_size, int sm_count,
                                              int variant = -1, int splits = -1) {
  CudaGemvTokenPlan best;
  if (group_size != 32 && group_size != 64 && group_size != 128) return best;
  if (K % group_size != 0 || K < group_size || N % 8 != 0 || N < 1) return best;
  const int64_t strips = (N + kCudaGemvBlockN - 1) / kCudaGemvBlockN;
  const int64_t groups = K / group_size;
  int64_t best_cost = 0, best_warps = 0, best_steps = 0;
  bool best_wave = false;
  for (int s = 1; s <= kCudaGemvTokenMaxSplits; ++s) {
    if (splits > 0 && s != splits) continue;
    for (int v = 0; v < kCudaGemvTokenVariants; ++v) {
      if (variant >= 0 && v != variant) continue;
      const CudaGemvTokenConfig& c = kCudaGemvTokenConfigs[v];
      if (splits <= 0 && s > 1 && groups / s < c.wk) continue;  // a split leaves every warp a group
      const uint32_t smem = cuda_gemv_token_smem(static_cast<int>(K), static_cast<int>(group_size), s, c.wk);
      const int bps = cuda_blocks_per_sm(smem, c.min_blocks);
      if (smem > kCudaGemvMaxSmem || bps < 1) continue;
      const int64_t blocks = strips * s;
      const bool wave = blocks <= int64_t(sm_count) * bps;
      if (!wave && s > 1 && splits <= 0) continue;  // several waves: no split
      const int64_t busiest = (blocks + sm_count - 1) / sm_count;  // blocks on the busiest SM
      const int64_t cost = wave ? busiest * ((groups + s - 1) / s) : -int64_t(bps);
      const int64_t warps = wave ? busiest * c.wk : 0;  // the busiest SM's warps in flight
      // Equal work: a warp chain longer than kCudaGemvTokenLongWarp steps is latency-bound
      // (more warps in flight pay), a shorter one is not (fewer splits to add pay).
      const bool long_chain = best_steps > kCudaGemvTokenLongWarp;
      const bool tie_better = long_chain ? warps > best_warps : s < best.splits;
      if (best.variant < 0 || (wave && !best_wave) ||
          (wave == best_wave && (cost < best_cost || (cost == best_cost && tie_better)))) {
        best = {v, s, smem, bps};
        best_cost = cost;
        best_wave = wave;
        best_warps = warps;
        best_steps = (groups + int64_t(s) * c.wk - 1) / (int64_t(s) * c.wk) * (group_size / 32);
      }
    }
  }
  return best;
}

struct CudaGemmPlan {
  CudaGemmKernel kernel;
  int grid_x;
  int grid_y;
  int threads;
  int gemv_variant = -1;  // Gemv: index into kCudaGemvConfigs; GemvToken: into kCudaGemvTokenConfigs
  int splits = 1;         // GemvToken: blocks per strip along K (grid_y)
  bool rows16 = false;    // Gemv: M > 8 (both 8-row halves of the MMA tile)
  uint32_t smem = 0;      // dynamic shared memory bytes
  int block_m = 0;        // rows of the output each block covers
  int block_n = 0;        // output columns each block covers (K for the transposed product)
};

// `half_input`: x is float16/bfloat16.  `aligned`: every pointer the MMA kernel
// reads or writes with 16-byte accesses is 16-byte aligned.
// `group_size` > 0 enables the Gemv kernels (GemvToken for M = 1 where it applies);
// `gemv_variant` >= 0 forces one of Gemv's variants, -2 forces MmaDecode, -3 GemvToken
// with the plan's variant, -4 - v GemvToken variant v (benchmarks/tests), -1 lets the
// plan choose; `token_splits` > 0 forces GemvToken's K split.
constexpr int kCudaGemvTokenForced = -3;
// Whether M = 1 takes GemvToken without being asked (else MLX_MARLIN_CUDA_DECODE=token):
// its MLX path passed the CUDA tests and the fp4_gemm op suite on an H200 and took the 1 x 14336 x
// 4096 op from ~0.026 to ~0.021-0.022 ms (benchmarks/RESULTS.md, 2026-12-05 (fifth)).
constexpr bool kCudaGemvTokenByDefault = true;
inline CudaGemmPlan plan_cuda_gemm(int64_t M, int64_t N, int64_t K, bool half_input, bool aligned,
                                   bool transpose, int64_t group_size = 0, int gemv_variant = -1,
                                   int sm_count = 132, int token_splits = -1) {
  CudaGemmPlan p{};
  if (transpose) {
    p.kernel = CudaGemmKernel::SimtTransposed;
    p.block_n = 8 * kCodesPerWord;  // 8 warps, one packed row (8 values of K) each
    p.block_m = kCudaSimtTransposedRows;
    p.grid_x = static_cast<int>((K + p.block_n - 1) / p.block_n);
    p.grid_y = static_cast<int>((M + p.block_m - 1) / p.block_m);
    p.threads = 256;
    return p;
  }
  if (!half_input || !aligned || N % 8 != 0 || K % 32 != 0) {
    p.kernel = CudaGemmKernel::Simt;
    p.block_n = 32;
    p.block_m = kCudaSimtRows;
    p.grid_x = static_cast<int>((N + p.block_n - 1) / p.block_n);
    p.grid_y = static_cast<int>((M + p.block_m - 1) / p.block_m);
    p.threads = 256;
    return p;
  }
  if (M == 1 && group_size > 0 &&
      ((gemv_variant == -1 && kCudaGemvTokenByDefault) || gemv_variant <= kCudaGemvTokenForced)) {
    const int forced = gemv_variant <= kCudaGemvTokenForced ? kCudaGemvTokenForced - gemv_variant - 1 : -1;
    const CudaGemvTokenPlan t = plan_cuda_gemv_token(N, K, group_size, sm_count, forced, token_splits);
    if (t.variant >= 0) {
      p.kernel = CudaGemmKernel::GemvToken;
      p.gemv_variant = t.variant;
      p.splits = t.splits;
      p.smem = t.smem;
      p.block_n = kCudaGemvBlockN;
      p.block_m = 1;
      p.grid_x = static_cast<int>((N + kCudaGemvBlockN - 1) / kCudaGemvBlockN);
      p.grid_y = t.splits;
      p.threads = 32 * kCudaGemvTokenConfigs[t.variant].wk;
      return p;
    }
  }
  if (M <= kDecodeMaxRows && group_size > 0 && gemv_variant != -2) {
    const bool rows16 = M > 8;
    const int64_t blocks = (N + kCudaGemvBlockN - 1) / kCudaGemvBlockN;
    const int64_t groups = K / group_size;
    int v = gemv_variant;
    if (v < 0 || v >= kCudaGemvVariants) {
      v = kCudaGemvPlanned - 1;  // many strips: the narrowest split, several waves
      for (int i = 0; i < kCudaGemvPlanned; ++i) {
        const CudaGemvConfig& c = kCudaGemvConfigs[i];
        // M > 8 needs ~92 registers: no 1024-thread blocks (64 registers at most).
        if (rows16 && c.wk * 32 > 512) continue;
        if (blocks <= int64_t(sm_count) * c.blocks_per_sm(rows16) && groups >= c.wk) {
          v = i;
          break;
        }
      }
    }
    const CudaGemvConfig& g = kCudaGemvConfigs[v];
    p.kernel = CudaGemmKernel::Gemv;
    p.gemv_variant = v;
    p.rows16 = rows16;
    p.smem = cuda_gemv_smem(g, rows16);
    p.block_n = kCudaGemvBlockN;
    p.block_m = 16;  // one n8 MMA tile of tokens, two when rows16
    p.grid_x = static_cast<int>(blocks);
    p.grid_y = static_cast<int>((M + p.block_m - 1) / p.block_m);
    p.threads = 32 * g.wk;
    return p;
  }
  const CudaMmaConfig c = M <= kDecodeMaxRows ? kCudaDecodeConfig : kCudaPrefillConfig;
  p.kernel = M <= kDecodeMaxRows ? CudaGemmKernel::MmaDecode : CudaGemmKernel::MmaPrefill;
  p.block_n = c.block_n();
  p.block_m = c.block_m();
  p.grid_x = static_cast<int>((N + p.block_n - 1) / p.block_n);
  p.grid_y = static_cast<int>((M + p.block_m - 1) / p.block_m);
  p.threads = c.threads();
  return p;
}

// Large M on CUDA: fp4_gemm becomes fp4_dequantize (one memory-bound pass writing a
// [K, N] tile in x's dtype, ~2.5 bytes per weight) + MLX's cuBLAS matmul, which runs
// near bf16 tensor-core peak; the extra pass costs about as much as ~100 rows of
// compute at K = 4096, so it pays from kCudaDenseMinRows rows on (the crossover lies
// between 64 and 128 rows on the H100: benchmarks/RESULTS.md).  `override_mode`: 1 forces the dense route, 0 forbids
// it, -1 lets the plan choose (MLX_MARLIN_CUDA_PREFILL=dense|kernel).
constexpr int64_t kCudaDenseMinRows = 96;
inline bool cuda_gemm_via_dense(int64_t M, bool half_input, int override_mode = -1) {
  if (!half_input) return false;  // float32 x: the exact SIMT kernel (cuBLAS would round through TF32)
  if (override_mode >= 0) return override_mode == 1;
  return M >= kCudaDenseMinRows;
}

inline const char* cuda_kernel_name(CudaGemmKernel k) {
  return k == CudaGemmKernel::Gemv ? "gemv"
      : k == CudaGemmKernel::GemvToken  ? "gemv_token"
      : k == CudaGemmKernel::MmaDecode  ? "mma_decode"
      : k == CudaGemmKernel::MmaPrefill ? "mma_prefill"
      : k == CudaGemmKernel::Simt       ? "simt"
                                        : "simt_transposed";
}

} // namespace marlin
