// The pure C++ dispatch plans, exposed for tests (tests/test_plans.py checks grid
// coverage and limits over many problem sizes and GPU core counts).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "common/gemm_plan.h"
#include "common/moe_plan.h"

namespace nb = nanobind;
using namespace nb::literals;

void init_plans(nb::module_& m) {
  m.def("_plan_gpu_gemm", [](int64_t M, int64_t N) {
    auto p = marlin::plan_gpu_gemm(M, N);
    nb::dict d;
    d["variant"] = std::string(marlin::variant_name(p.variant));
    d["tile_m"] = p.tile.tile_m;
    d["tile_n"] = p.tile.tile_n;
    d["tile_k"] = p.tile.tile_k;
    d["simdgroups"] = p.tile.simdgroups;
    d["grid_x"] = p.grid_x;
    d["grid_y"] = p.grid_y;
    d["threads_per_group"] = p.threads_per_group;
    return d;
  }, "M"_a, "N"_a);
  m.def("_attention_tile", [](int head_dim, int elem_bytes) {
    return nb::make_tuple(marlin::attention_block_k(head_dim, elem_bytes),
                          marlin::attention_threadgroup_bytes(head_dim, elem_bytes));
  }, "head_dim"_a, "elem_bytes"_a, "(keys per tile, threadgroup bytes) of the Metal attention kernels.");
  m.def("_plan_attention", [](int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int units) {
    auto p = marlin::plan_attention(B, Hq, Hkv, Lq, Lk, units);
    nb::dict d;
    d["decode"] = p.decode;
    d["heads_per_task"] = p.heads_per_task;
    d["head_blocks"] = p.head_blocks;
    d["block_q"] = p.block_q;
    d["query_blocks"] = p.query_blocks;
    d["rows"] = p.rows;
    d["block_k"] = p.block_k;
    d["splits"] = p.splits;
    d["keys_per_split"] = p.keys_per_split;
    d["num_tasks"] = p.num_tasks;
    d["max_rows"] = marlin::AttentionPlan::kMaxRows;
    return d;
  }, "B"_a, "Hq"_a, "Hkv"_a, "Lq"_a, "Lk"_a, "parallel_units"_a);
  // CUDA plans (pure C++, compiled in every build so CI checks them without a GPU).
  m.def("_plan_cuda_gemm", [](int64_t M, int64_t N, int64_t K, bool half_input, bool aligned, bool transpose,
                              int64_t group_size, int gemv_variant, int sm_count, int token_splits) {
    auto p = marlin::plan_cuda_gemm(M, N, K, half_input, aligned, transpose, group_size, gemv_variant, sm_count,
                                    token_splits);
    nb::dict d;
    d["kernel"] = std::string(marlin::cuda_kernel_name(p.kernel));
    d["grid_x"] = p.grid_x;
    d["grid_y"] = p.grid_y;
    d["threads"] = p.threads;
    d["block_m"] = p.block_m;
    d["block_n"] = p.block_n;
    d["gemv_variant"] = p.gemv_variant;
    d["rows16"] = p.rows16;
    d["smem"] = p.smem;
    d["gemv_max_smem"] = marlin::kCudaGemvMaxSmem;
    d["splits"] = p.splits;
    d["gemv_token_by_default"] = marlin::kCudaGemvTokenByDefault;
    d["gemv_blocks_per_sm"] =
        p.kernel == marlin::CudaGemmKernel::Gemv ? marlin::kCudaGemvConfigs[p.gemv_variant].blocks_per_sm(p.rows16)
        : p.kernel == marlin::CudaGemmKernel::GemvToken
        ? marlin::cuda_blocks_per_sm(p.smem, marlin::kCudaGemvTokenConfigs[p.gemv_variant].min_blocks)
        : 0;
    return d;
  }, "M"_a, "N"_a, "K"_a, "half_input"_a, "aligned"_a, "transpose"_a, "group_size"_a, "gemv_variant"_a = -1,
     "sm_count"_a = 132, "token_splits"_a = -1);
  m.def("_plan_cuda_gemv_token", [](int64_t N, int64_t K, int64_t group_size, int sm_count, int variant, int splits) {
    const auto p = marlin::plan_cuda_gemv_token(N, K, group_size, sm_count, variant, splits);
    nb::dict d;
    d["variant"] = p.variant;
    d["splits"] = p.splits;
    d["smem"] = p.smem;
    d["blocks_per_sm"] = p.blocks_per_sm;
    const int wk = p.variant >= 0 ? marlin::kCudaGemvTokenConfigs[p.variant].wk : 0;
    d["wk"] = wk;
    d["variants"] = marlin::kCudaGemvTokenVariants;
    d["max_splits"] = marlin::kCudaGemvTokenMaxSplits;
    if (p.variant >= 0) {  // the K slices each warp works on, for the coverage test
      nb::list slices;
      for (int sl = 0; sl < p.splits; ++sl)
        for (int w = 0; w < wk; ++w) {
          const auto r = marlin::cuda_gemv_token_slice(int(K), int(group_size), p.splits, sl, wk, w);
          slices.append(nb::make_tuple(r.grp_begin, r.grp_end));
        }
      d["slices"] = slices;
      d["warp_bytes"] = marlin::cuda_gemv_token_warp_bytes(int(K), int(group_size), p.splits, wk);
    }
    return d;
  }, "N"_a, "K"_a, "group_size"_a, "sm_count"_a = 132, "variant"_a = -1, "splits"_a = -1);
  m.def("_cuda_gemm_via_dense", [](int64_t M, bool half_input, int override_mode) {
    return marlin::cuda_gemm_via_dense(M, half_input, override_mode);
  }, "M"_a, "half_input"_a, "override_mode"_a = -1);
  m.def("_plan_cuda_attention", [](int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int head_dim,
                                   bool half_input, bool aligned, int sm_count, int variant, bool wgmma_device,
                                   bool mask_array, bool persistent) {
    auto p = marlin::plan_cuda_attention(B, Hq, Hkv, Lq, Lk, head_dim, half_input, aligned, sm_count, variant,
                                         wgmma_device, mask_array, persistent);
    nb::dict d;
    d["mma"] = p.kernel == marlin::CudaAttentionKernel::Mma;
    d["wgmma"] = p.kernel == marlin::CudaAttentionKernel::Wgmma;
    d["variant"] = p.variant;
    d["heads_per_block"] = p.heads_per_block;
    d["block_q"] = p.block_q;
    d["head_blocks"] = p.head_blocks;
    d["query_blocks"] = p.query_blocks;
    d["splits"] = p.splits;
    d["keys_per_split"] = p.keys_per_split;
    d["grid"] = nb::make_tuple(p.grid_x, p.grid_y, p.grid_z);
    d["persistent"] = p.kernel == marlin::CudaAttentionKernel::Wgmma && p.persistent;
    d["threads"] = p.threads;
    d["smem"] = p.smem;
    d["max_splits"] = marlin::kCudaAttnMaxSplits;
    return d;
  }, "B"_a, "Hq"_a, "Hkv"_a, "Lq"_a, "Lk"_a, "head_dim"_a, "half_input"_a, "aligned"_a, "sm_count"_a,
     "variant"_a = -1, "wgmma_device"_a = false, "mask_array"_a = false,
     "persistent"_a = marlin::kCudaAttnWgmmaPersistent);
  m.def("_plan_cuda_moe", [](int64_t pairs, int E, int64_t N, bool glu, int force) {
    auto p = marlin::plan_cuda_moe(pairs, E, N, glu, force);
    nb::dict d;
    d["variant"] = static_cast<int>(p.variant);
    d["tile_m"] = p.tile_m;
    d["block_n"] = p.block_n;
    d["grid_x"] = p.grid_x;
    d["max_tiles"] = p.max_tiles;
    d["threads"] = p.threads;
    return d;
  }, "pairs"_a, "E"_a, "N"_a, "glu"_a, "force"_a = -1);
}
