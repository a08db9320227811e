// Dispatch planning for the FP4 GEMM: which kernel variant runs, with which tiles
// and grid.  Pure C++ with no backend headers, so the CPU backend, the Metal host
// code, the Metal emulator and the CUDA host code all take their decisions from
// the same functions (and tests can enumerate every plan).
#pragma once

#include <cstdint>
#include <string>

#include "fp4_format.h"

namespace marlin {

// ---------------------------------------------------------------- CPU backend
struct CpuGemmPlan {
  // Rows at or below this go through the streaming kernel that decodes packed
  // words straight into FMAs (each weight is used by so few rows that staging a
  // decoded tile would cost more than it saves).
  static constexpr int kStreamingMaxRows = 8;
  // Rows handled together by the streaming kernel (weights decoded once per chunk).
  static constexpr int kStreamingRowChunk = 4;
  // Columns a streaming task owns: 4 vectors of 16 floats.
  static constexpr int kStreamingCols = 64;
  // Tiled kernel: a decoded [kKc x kNc] fp32 tile (32 KiB) stays in L1 while a
  // register block of kMr rows x kNc columns accumulates against it.
  static constexpr int kNc = 64;
  static constexpr int kKc = 128;
  static constexpr int kMr = 6;

  bool streaming;
  int col_block;  // columns per task
  int num_col_blocks;
};

inline CpuGemmPlan plan_cpu_gemm(int64_t M, int64_t N) {
  CpuGemmPlan p{};
  p.streaming = M <= CpuGemmPlan::kStreamingMaxRows;
  p.col_block = p.streaming ? CpuGemmPlan::kStreamingCols : CpuGemmPlan::kNc;
  p.num_col_blocks = static_cast<int>((N + p.col_block - 1) / p.col_block);
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

} // namespace marlin
