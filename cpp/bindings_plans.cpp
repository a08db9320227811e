// The pure C++ dispatch plans, exposed for tests (tests/test_plans.py checks grid
// coverage and limits over many problem sizes and GPU core counts).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "common/gemm_plan.h"

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
}
