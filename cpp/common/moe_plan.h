// Mixture-of-Experts planning shared by every backend: routing semantics (softmax +
// top-k with deterministic ties), expert grouping (counting sort over (token, slot)
// pairs) and the CPU scheduling decision.  Pure C++ with no backend headers, so the
// CPU backend runs exactly these functions and the Metal/CUDA host code (and their
// tests) can use them as the reference for the plans their kernels build on device.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm_plan.h"

namespace marlin {

// ------------------------------------------------------------------ routing
// Routing of one token over E experts:
//   * ranking: experts sorted by descending logit, ties broken by lower expert id
//     (softmax is monotone, so this is the order of the softmax probabilities; ranking
//     on the logits keeps two distinct logits distinct even where their fp32
//     probabilities would round to the same value).  NaN logits rank last.
//   * weights: softmax over all E experts in fp32 (max-subtracted), taken at the
//     top-k experts; with `normalize` the k weights are divided by their sum.
// Writes idx[0..k) (descending weight) and weight[0..k).  `scratch` holds E ints.
inline void route_token(const float* logits, int E, int k, bool normalize, uint32_t* idx, float* weight,
                        std::vector<int>& scratch) {
  scratch.resize(E);
  for (int e = 0; e < E; ++e) scratch[e] = e;
  auto key = [&](int e) {
    float v = logits[e];
    return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  };
  auto before = [&](int a, int b) {
    float ka = key(a), kb = key(b);
    if (ka != kb) return ka > kb;
    // Equal keys: NaN after -inf, then lower id first.
    bool na = std::isnan(logits[a]), nb = std::isnan(logits[b]);
    if (na != nb) return nb;
    return a < b;
  };
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(), before);
  float m = -std::numeric_limits<float>::infinity();
  for (int e = 0; e < E; ++e) m = std::max(m, logits[e]);  // NaN-ignoring max
  if (!std::isfinite(m)) m = 0.f;  // all -inf / +inf: let the arithmetic produce NaN/0 honestly
  float total = 0.f;
  for (int e = 0; e < E; ++e) total += std::exp(logits[e] - m);
  float selected = 0.f;
  for (int j = 0; j < k; ++j) {
    idx[j] = static_cast<uint32_t>(scratch[j]);
    weight[j] = std::exp(logits[scratch[j]] - m);
    selected += weight[j];
  }
  const float denom = normalize ? selected : total;
  for (int j = 0; j < k; ++j) weight[j] /= denom;
}

// ------------------------------------------------------------------ grouping
// The (token, slot) pairs p = t * k + j of a [T, k] index matrix, grouped by expert
// with a stable counting sort:
//   offsets[e] .. offsets[e + 1]   the positions (in grouped order) of expert e's pairs
//   pairs[i]                       the pair at grouped position i (ascending p within
//                                  an expert, so the grouping is deterministic)
//   position[p]                    the grouped position of pair p (inverse of pairs)
// Count, exclusive prefix sum, scatter: no atomics and no comparison sort, the same
// three passes a GPU backend runs (histogram, scan, scatter).
struct ExpertGroups {
  int num_experts = 0;
  std::vector<int64_t> offsets;   // [E + 1]
  std::vector<int64_t> pairs;     // [T * k]
  std::vector<int64_t> position;  // [T * k]
  int active_experts = 0;         // experts with at least one pair
  int64_t max_rows = 0;           // largest group

  int64_t count(int e) const { return offsets[e + 1] - offsets[e]; }
};

// `expert_of(p)` returns pair p's expert id as int64.  Pairs whose id lies outside
// [0, E) are grouped after every expert (rows offsets[E] .. num_pairs): no expert
// computes them and the id never indexes memory; callers fill their rows with NaN, as
// the Metal kernels do (indices are data, known only at evaluation, where MLX cannot
// reliably raise).  Returns the number of such pairs.
template <class ExpertOf>
int64_t build_expert_groups(int64_t num_pairs, int E, ExpertOf expert_of, ExpertGroups& g) {
  g.num_experts = E;
  g.offsets.assign(static_cast<size_t>(E) + 1, 0);
  int64_t invalid = 0;
  for (int64_t p = 0; p < num_pairs; ++p) {
    const int64_t e = expert_of(p);
    if (e < 0 || e >= E) ++invalid;
    else ++g.offsets[e + 1];
  }
  g.active_experts = 0;
  g.max_rows = 0;
  for (int e = 0; e < E; ++e) {
    g.active_experts += g.offsets[e + 1] > 0;
    g.max_rows = std::max(g.max_rows, g.offsets[e + 1]);
    g.offsets[e + 1] += g.offsets[e];
  }
  g.pairs.resize(num_pairs);
  g.position.resize(num_pairs);
  std::vector<int64_t> cursor(g.offsets.begin(), g.offsets.end());  // [E] = the invalid group
  for (int64_t p = 0; p < num_pairs; ++p) {
    const int64_t e = expert_of(p);
    const int64_t i = cursor[(e < 0 || e >= E) ? E : e]++;
    g.pairs[i] = p;
    g.position[p] = i;
  }
  return invalid;
}

// ------------------------------------------------------------------ GPU plan
// The Metal expert GEMM (cpp/common/moe_params.h describes the pipeline).  Rows per
// expert are only known on the device, so the variant follows the average: decode
// tiles (32 x 128) when experts get <= kDecodeMaxRows rows on average, else the
// default tiles (64 x 64).  The tile list has room for every group's partial tile:
// G non-empty groups (the experts, plus the group of invalid ids, so G <= min(E + 1, P))
// need sum_g ceil(c_g / tile_m) <= ceil(P / tile_m) + G - 1 <= ceil(P / tile_m) + min(E, P).
struct GpuMoePlan {
  GemmVariant variant;
  GemmTile tile;
  int grid_x;     // tiles along N
  int max_tiles;  // threadgroups along y (those past the device's tile count exit)
  int threads_per_group;
};

inline GpuMoePlan plan_gpu_moe(int64_t pairs, int E, int64_t N) {
  GpuMoePlan p{};
  p.variant = pairs <= int64_t(kDecodeMaxRows) * E ? GemmVariant::Decode : GemmVariant::Default;
  p.tile = tile_for(p.variant);
  p.grid_x = static_cast<int>((N + p.tile.tile_n - 1) / p.tile.tile_n);
  p.max_tiles = static_cast<int>((pairs + p.tile.tile_m - 1) / p.tile.tile_m + std::min<int64_t>(E, pairs));
  p.threads_per_group = 32 * p.tile.simdgroups;
  return p;
}

// moe_mlp's gate/up GEMM with act(gate) * up fused (moe_gemm_glu_*): a tile decodes
// tile_n columns, tile_n / 2 of gate and the matching tile_n / 2 of up, and writes
// tile_n / 2 columns of h [P, I]; so the grid is that of a plain GEMM over 2 I columns,
// with the same variant and tile list as the down GEMM (both depend only on P and E).
inline GpuMoePlan plan_gpu_moe_glu(int64_t pairs, int E, int64_t I) {
  return plan_gpu_moe(pairs, E, 2 * I);
}

// Host names of the MoE kernels (metal/moe_gemm.metal instantiates every one).  The
// GEMMs write x's dtype: h, y and the unweighted output all stay in the activations'
// dtype (accumulation is fp32 in registers).
inline std::string moe_gemm_kernel_name(GemmVariant v, GpuDtype x, GpuDtype scales) {
  return std::string("moe_gemm_") + variant_name(v) + "_" + gpu_dtype_name(x) + "_" + gpu_dtype_name(scales);
}

// Gate/up GEMM of moe_mlp with h = act(gate) * up in its epilogue.
inline std::string moe_glu_gemm_kernel_name(GemmVariant v, GpuDtype x, GpuDtype scales) {
  return std::string("moe_gemm_glu_") + variant_name(v) + "_" + gpu_dtype_name(x) + "_" + gpu_dtype_name(scales);
}

// Index dtypes: signed/unsigned integers of 8, 16, 32 or 64 bits.
inline std::string moe_group_kernel_name(int bits, bool is_signed) {
  if (bits != 8 && bits != 16 && bits != 32 && bits != 64) throw std::invalid_argument("moe_group_kernel_name: bits");
  return std::string("moe_group_") + (is_signed ? "i" : "u") + std::to_string(bits);
}

inline std::string moe_combine_kernel_name(GpuDtype out) {
  return std::string("moe_combine_") + gpu_dtype_name(out);
}

template <class F>
inline void for_each_moe_kernel_name(F&& f) {
  const GpuDtype xs[] = {GpuDtype::Float16, GpuDtype::BFloat16, GpuDtype::Float32};
  const GpuDtype ss[] = {GpuDtype::Float16, GpuDtype::BFloat16};
  for (GemmVariant v : {GemmVariant::Decode, GemmVariant::Default})
    for (GpuDtype x : xs)
      for (GpuDtype s : ss) {
        f(moe_gemm_kernel_name(v, x, s));
        f(moe_glu_gemm_kernel_name(v, x, s));
      }
  for (int bits : {8, 16, 32, 64})
    for (bool sgn : {true, false}) f(moe_group_kernel_name(bits, sgn));
  for (GpuDtype x : xs) f(moe_combine_kernel_name(x));
}

// ------------------------------------------------------------------ CUDA plan
// The CUDA MoE pipeline (cpp/cuda/moe_kernels.cuh, cpp/cuda/moe_host.cpp):
//   moe_route_kernel   one warp per token (kCudaMoeRouteWarps per block), any E
//   moe_group_kernel   one block: the counting sort of build_expert_groups over the
//                      (token, slot) pairs plus the tile list of the grouped GEMM
//   moe_gemm_kernel    grid (column blocks, max_tiles): block y takes tile y of the
//                      list (one expert's grouped rows); mma.sync m16n8k16 with FP4
//                      decoded in registers, the fragment layout of fp4_gemm_mma
//   moe_combine_kernel slot-order fp32 weighted combine, one writer per output
// The GEMM tile (rows per tile) follows the average rows per expert, which is all the
// host knows: decode tiles (16 rows, K split over warps) when experts get at most
// kDecodeMaxRows rows on average, else prefill tiles (64 x 128).  The GLU variant
// (moe_mlp's gate/up GEMM with act(gate) * up in the epilogue) doubles the warps: half
// compute gate columns, half the matching up columns, exchanged through shared memory.
// Both variants of one pipeline have the same tile height, so moe_mlp's gate/up and
// down GEMMs share one tile list.
// DecodeU3 / DecodeU4: decode tiles with 3 / 4 k32 steps in flight (benchmarks and
// tests select them with MLX_MARLIN_CUDA_MOE=decode_u3 / decode_u4).
enum class CudaMoeVariant : int { Decode = 0, Prefill = 1, DecodeU3 = 2, DecodeU4 = 3 };
constexpr int kCudaMoeVariants = 4;

// Warp tiling of moe_gemm_kernel (the fields of CudaMmaConfig plus min_blocks, the
// __launch_bounds__ blocks per SM).  Decode tiles are latency-bound weight streams:
// two blocks per SM (<= 128 registers) and 4 k32 steps of loads in flight per warp
// keep ~32 KB of weights in flight per SM.
struct CudaMoeConfig {
  int mi;          // 16-row MMA tiles per warp
  int ni;          // 8-column MMA tiles per warp (multiple of 4)
  int warps_m;
  int warps_n;
  int warps_k;     // warps splitting K (reduced through shared memory)
  int unroll;      // k32 steps of loads in flight per warp
  int min_blocks;  // blocks per SM the registers must allow
  int warp_groups; // 2: gate / up warp groups (GLU)
  int unroll_f32;  // k32 steps in flight with float32 activations (twice the registers)
  bool direct;     // compiled with direct mode (one pair per block, no tile list)
  constexpr int threads() const { return 32 * warps_m * warps_n * warps_k * warp_groups; }
  constexpr int block_m() const { return 16 * mi * warps_m; }
  constexpr int block_n() const { return 8 * ni * warps_n; }
};

// Decode unroll chosen on the H100 (benchmarks/RESULTS.md, CUDA MoE): 3 steps for the
// plain GEMM with half activations (a few spilled registers, faster than 2), 2 for
// float32 activations and for the GLU GEMM (3 spills hundreds of bytes there).
constexpr CudaMoeConfig kCudaMoeDecodeConfig{1, 4, 1, 1, 8, 3, 2, 1, 2, true};
constexpr CudaMoeConfig kCudaMoeDecodeGluConfig{1, 4, 1, 1, 4, 2, 2, 2, 2, true};
constexpr CudaMoeConfig kCudaMoeDecodeU3Config{1, 4, 1, 1, 8, 3, 2, 1, 3, true};
constexpr CudaMoeConfig kCudaMoeDecodeU3GluConfig{1, 4, 1, 1, 4, 3, 2, 2, 3, true};
constexpr CudaMoeConfig kCudaMoeDecodeU4Config{1, 4, 1, 1, 8, 4, 1, 1, 4, true};
constexpr CudaMoeConfig kCudaMoeDecodeU4GluConfig{1, 4, 1, 1, 4, 4, 1, 2, 4, true};
// Prefill tiles never run direct (<= kCudaMoeDirectMaxPairs pairs plan decode tiles):
// compiled without it, the prefill kernels keep their registers for the main loop.
constexpr CudaMoeConfig kCudaMoePrefillConfig{2, 4, 2, 4, 1, 2, 1, 1, 2, false};
constexpr CudaMoeConfig kCudaMoePrefillGluConfig{2, 4, 2, 2, 1, 2, 1, 2, 2, false};

constexpr int kCudaMoeRouteWarps = 4;       // tokens per routing block
constexpr int kCudaMoeCombineThreads = 256;
constexpr int kCudaMoeGroupMaxWarps = 32;   // the grouping block: up to 1024 threads
constexpr int kCudaMoeGroupMaxSmem = 46 * 1024;  // + the static scan scratch < 48 KB

constexpr CudaMoeConfig cuda_moe_config(CudaMoeVariant v, bool glu) {
  if (v == CudaMoeVariant::Decode) return glu ? kCudaMoeDecodeGluConfig : kCudaMoeDecodeConfig;
  if (v == CudaMoeVariant::DecodeU3) return glu ? kCudaMoeDecodeU3GluConfig : kCudaMoeDecodeU3Config;
  if (v == CudaMoeVariant::DecodeU4) return glu ? kCudaMoeDecodeU4GluConfig : kCudaMoeDecodeU4Config;
  return glu ? kCudaMoePrefillGluConfig : kCudaMoePrefillConfig;
}

struct CudaMoePlan {
  CudaMoeVariant variant;
  CudaMoeConfig config;
  bool glu;
  int tile_m;     // rows per tile of the tile list
  int block_n;    // output columns per block
  int grid_x;     // column blocks
  int max_tiles;  // blocks along y (those past the device's tile count exit)
  int threads;
};

// `N`: output columns (moe_mlp's gate/up GEMM: I, the GLU output width).
// `force`: -1 lets the rows per expert choose, else a CudaMoeVariant (benchmarks/tests).
inline CudaMoePlan plan_cuda_moe(int64_t pairs, int E, int64_t N, bool glu, int force = -1) {
  CudaMoePlan p{};
  p.variant = pairs <= int64_t(kDecodeMaxRows) * E ? CudaMoeVariant::Decode : CudaMoeVariant::Prefill;
  if (force >= 0 && force < kCudaMoeVariants) p.variant = static_cast<CudaMoeVariant>(force);
  p.config = cuda_moe_config(p.variant, glu);
  p.glu = glu;
  p.tile_m = p.config.block_m();
  p.block_n = p.config.block_n();
  p.grid_x = static_cast<int>((N + p.block_n - 1) / p.block_n);
  // Every bucket (E experts + the bucket of invalid ids) adds at most one partial tile.
  p.max_tiles = static_cast<int>((pairs + p.tile_m - 1) / p.tile_m + std::min<int64_t>(int64_t(E) + 1, pairs));
  p.threads = p.config.threads();
  return p;
}

// Calls with at most this many (token, slot) pairs skip the grouping: block y of the
// GEMM takes pair y (one row, its expert read from the indices), and the combine reads
// pair rows.  One launch and the grouping tables less, for decode steps.
constexpr int kCudaMoeDirectMaxPairs = 32;

// Warps of the grouping block: per-warp histograms of E + 1 buckets live in shared
// memory (kCudaMoeGroupMaxSmem); 0 when even one warp's histogram does not fit.
inline int cuda_moe_group_warps(int E) {
  const int64_t per_warp = (int64_t(E) + 1) * 4;
  return static_cast<int>(std::min<int64_t>(kCudaMoeGroupMaxWarps, kCudaMoeGroupMaxSmem / per_warp));
}

// ------------------------------------------------------------------ CPU schedule
// How the CPU backend spreads one grouped GEMM (one GEMM per active expert) over its
// threads.  The GEMM kernel parallelizes internally over column (and row) blocks;
// when every expert's GEMM is too small to occupy the threads that way (few column
// blocks, e.g. many experts with a narrow N), the experts themselves become the
// parallel tasks instead and each GEMM runs on one thread.  Either way each active
// expert's weights are streamed once per call.
struct CpuMoePlan {
  bool parallel_over_experts;
};

inline CpuMoePlan plan_cpu_moe(int active_experts, int64_t max_rows, int64_t N, int threads, bool byte_tables = false) {
  CpuMoePlan p{};
  const CpuGemmPlan gemm = plan_cpu_gemm(std::max<int64_t>(1, max_rows), N, byte_tables);
  // Tasks one expert's GEMM offers; the tiled kernel also splits rows.
  int64_t tasks = gemm.num_col_blocks;
  if (!gemm.streaming) tasks *= std::max<int64_t>(1, max_rows / (8 * CpuGemmPlan::kMr));
  p.parallel_over_experts = threads > 1 && active_experts >= 2 * threads && tasks < 2 * threads;
  return p;
}

// ------------------------------------------------------------------ GPU kernel names
// metal/moe_route.metal instantiates every value returned here (checked by
// tests/test_metal_moe_route.py against the compiled module).  Grouping is
// moe_group_kernel_name (metal/moe_gemm.metal).
enum class MoeKernel : int { Route = 0, RouteWeightsF32 = 1 };

// Route kernels, one per logits dtype; RouteWeightsF32 writes float32 weights (the same
// kernel as Route for float32 logits).
inline std::string moe_kernel_name(MoeKernel kind, GpuDtype dtype = GpuDtype::Float32) {
  static const char* dtypes[] = {"f16", "bf16", "f32"};
  const bool wf32 = kind == MoeKernel::RouteWeightsF32 && dtype != GpuDtype::Float32;
  return std::string("marlin_moe_route_") + dtypes[static_cast<int>(dtype)] + (wf32 ? "_wf32" : "");
}

inline std::vector<std::string> all_moe_kernel_names() {
  std::vector<std::string> names;
  for (int t = 0; t < 3; ++t) names.push_back(moe_kernel_name(MoeKernel::Route, static_cast<GpuDtype>(t)));
  for (int t = 0; t < 2; ++t) names.push_back(moe_kernel_name(MoeKernel::RouteWeightsF32, static_cast<GpuDtype>(t)));
  return names;
}

} // namespace marlin
