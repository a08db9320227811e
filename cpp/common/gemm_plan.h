// Dispatch planning for the FP4 GEMM: which kernel variant runs, with which tiles
// and grid.  Pure C++ with no backend headers, so the CPU backend, the Metal host
// code, the Metal emulator and the CUDA host code all take their decisions from
// the same functions (and tests can enumerate every plan).
#pragma once

#include <cstdint>
#include <stdexcept>
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

// Kernel host names (Metal library and emulator module).  These functions are the
// only place a name is formed; metal/gemm_fp4.metal instantiates every name they can
// return (tests/test_metal_gemm.py checks that against the compiled module).
enum class GpuDtype : int { Float16 = 0, BFloat16 = 1, Float32 = 2 };

inline const char* gpu_dtype_name(GpuDtype t) {
  return t == GpuDtype::Float16 ? "f16" : t == GpuDtype::BFloat16 ? "bf16" : "f32";
}

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
enum class CudaGemmKernel : int { MmaDecode = 0, MmaPrefill = 1, Simt = 2, SimtTransposed = 3 };

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

struct CudaGemmPlan {
  CudaGemmKernel kernel;
  int grid_x;
  int grid_y;
  int threads;
};

// `half_input`: x is float16/bfloat16.  `aligned`: every pointer the MMA kernel
// reads or writes with 16-byte accesses is 16-byte aligned.
inline CudaGemmPlan plan_cuda_gemm(int64_t M, int64_t N, int64_t K, bool half_input, bool aligned,
                                   bool transpose) {
  CudaGemmPlan p{};
  if (transpose) {
    p.kernel = CudaGemmKernel::SimtTransposed;
    p.grid_x = static_cast<int>((K / kCodesPerWord + 7) / 8);
    p.grid_y = static_cast<int>((M + kCudaSimtTransposedRows - 1) / kCudaSimtTransposedRows);
    p.threads = 256;
    return p;
  }
  if (!half_input || !aligned || N % 8 != 0 || K % 32 != 0) {
    p.kernel = CudaGemmKernel::Simt;
    p.grid_x = static_cast<int>((N + 31) / 32);
    p.grid_y = static_cast<int>((M + kCudaSimtRows - 1) / kCudaSimtRows);
    p.threads = 256;
    return p;
  }
  const CudaMmaConfig c = M <= kDecodeMaxRows ? kCudaDecodeConfig : kCudaPrefillConfig;
  p.kernel = M <= kDecodeMaxRows ? CudaGemmKernel::MmaDecode : CudaGemmKernel::MmaPrefill;
  p.grid_x = static_cast<int>((N + c.block_n() - 1) / c.block_n());
  p.grid_y = static_cast<int>((M + c.block_m() - 1) / c.block_m());
  p.threads = c.threads();
  return p;
}

inline const char* cuda_kernel_name(CudaGemmKernel k) {
  return k == CudaGemmKernel::MmaDecode  ? "mma_decode"
      : k == CudaGemmKernel::MmaPrefill ? "mma_prefill"
      : k == CudaGemmKernel::Simt       ? "simt"
                                        : "simt_transposed";
}

} // namespace marlin
