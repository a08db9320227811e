// CPU side of the MoE ops: reading index matrices of any integer dtype, grouping
// (token, slot) pairs by expert (common/moe_plan.h), gathering each expert's rows
// into one contiguous fp32 panel, running one GEMM per active expert through the
// CPU kernel table, and scattering / combining the results.  Shared by MoeGemm and
// MoeMlp so both group, schedule and combine the same way.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/moe_plan.h"
#include "cpu/activation.h"
#include "cpu/fp4_gemm_kernels.h"
#include "cpu/half_convert.h"
#include "cpu/thread_pool.h"
#include "mlx/array.h"

namespace marlin::cpu {

namespace mx = mlx::core;

// Element i of an integer array as int64 (uint64 values above INT64_MAX become
// negative, i.e. out of range, rather than wrapping onto a valid expert).
inline int64_t read_index(const void* data, mx::Dtype t, int64_t i) {
  switch (t) {
    case mx::uint8: return static_cast<const uint8_t*>(data)[i];
    case mx::uint16: return static_cast<const uint16_t*>(data)[i];
    case mx::uint32: return static_cast<const uint32_t*>(data)[i];
    case mx::uint64: return static_cast<int64_t>(static_cast<const uint64_t*>(data)[i]);
    case mx::int8: return static_cast<const int8_t*>(data)[i];
    case mx::int16: return static_cast<const int16_t*>(data)[i];
    case mx::int32: return static_cast<const int32_t*>(data)[i];
    case mx::int64: return static_cast<const int64_t*>(data)[i];
    default: return -1;
  }
}

// Rows of the invalid-id group (after every expert, see build_expert_groups) get NaN:
// a bad index shows up as NaN in exactly the outputs it feeds, on every backend.
inline void fill_invalid_rows(const ExpertGroups& groups, float* y, int64_t N) {
  const int64_t begin = groups.offsets[groups.num_experts];
  const int64_t end = static_cast<int64_t>(groups.pairs.size());
  std::fill(y + begin * N, y + end * N, std::numeric_limits<float>::quiet_NaN());
}

// rows x cols fp32 panel: dst[i] = src[row_of(i)] for i in [0, rows).
template <class RowOf>
void gather_rows(const float* src, int64_t cols, int64_t rows, RowOf row_of, float* dst) {
  constexpr int64_t kRowsPerTask = 16;
  parallel_for(static_cast<int>((rows + kRowsPerTask - 1) / kRowsPerTask), [&](int task) {
    const int64_t end = std::min<int64_t>(rows, (task + 1) * kRowsPerTask);
    for (int64_t i = task * kRowsPerTask; i < end; ++i)
      std::memcpy(dst + i * cols, src + row_of(i) * cols, cols * sizeof(float));
  });
}

// Runs body(e) once for every expert with rows, parallel over experts or with the
// parallelism left to the GEMM kernel inside body, as plan_cpu_moe decides for the
// widest GEMM (N columns) of the call.
inline void for_each_active_expert(const ExpertGroups& groups, int64_t N, const std::function<void(int)>& body) {
  std::vector<int> active;
  active.reserve(groups.active_experts);
  for (int e = 0; e < groups.num_experts; ++e)
    if (groups.count(e) > 0) active.push_back(e);
  const CpuMoePlan plan = plan_cpu_moe(static_cast<int>(active.size()), groups.max_rows, N, num_threads(),
                                       select_kernels().byte_table_streaming);
  if (plan.parallel_over_experts) {
    // Largest groups first so the dynamic hand-out balances (nested GEMMs run serially).
    std::stable_sort(active.begin(), active.end(), [&](int a, int b) { return groups.count(a) > groups.count(b); });
    parallel_for(static_cast<int>(active.size()), [&](int i) { body(active[i]); });
  } else {
    for (int e : active) body(e);
  }
}

// One FP4 GEMM over the grouped panel rows of expert e:
//   out[offsets[e] ..) (fp32, rows out_stride apart) = act(panel[offsets[e] ..] @ W_e)
inline void expert_gemm(const ExpertGroups& groups, int e, const float* panel, int64_t panel_stride,
                        const PackedWeight& w, Activation act, float* out, int64_t out_stride) {
  const int64_t begin = groups.offsets[e];
  GemmArgs args{panel + begin * panel_stride, panel_stride, w,     nullptr, act, groups.count(e),
                out + begin * out_stride,     out_stride,   ElemType::Float32};
  select_kernels().gemm(args);
}

inline void store_row(const float* src, void* dst, ElemType type, int64_t row, int64_t n) {
  switch (type) {
    case ElemType::Float32:
      std::memcpy(static_cast<float*>(dst) + row * n, src, n * sizeof(float));
      break;
    case ElemType::Float16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + row * n;
      for (int64_t c = 0; c < n; ++c) d[c] = float_to_fp16(src[c]);
      break;
    }
    case ElemType::BFloat16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + row * n;
      for (int64_t c = 0; c < n; ++c) d[c] = float_to_bf16(src[c]);
      break;
    }
  }
}

// Grouped results y [T*k, N] (grouped order) back to pair order: out[p] = y[position[p]].
inline void scatter_pairs(const ExpertGroups& groups, const float* y, int64_t N, void* out, ElemType type) {
  const int64_t pairs = static_cast<int64_t>(groups.position.size());
  constexpr int64_t kPerTask = 16;
  parallel_for(static_cast<int>((pairs + kPerTask - 1) / kPerTask), [&](int task) {
    const int64_t end = std::min<int64_t>(pairs, (task + 1) * kPerTask);
    for (int64_t p = task * kPerTask; p < end; ++p) store_row(y + groups.position[p] * N, out, type, p, N);
  });
}

// Weighted combine: out[t] = sum_j weight[t, j] * y[position[t*k + j]], summed in slot
// order j = 0..k-1 in fp32 (deterministic: no atomics, one writer per token).
inline void combine_pairs(const ExpertGroups& groups, const float* y, int64_t N, const float* weight, int64_t T,
                          int64_t k, void* out, ElemType type) {
  constexpr int64_t kPerTask = 4;
  parallel_for(static_cast<int>((T + kPerTask - 1) / kPerTask), [&](int task) {
    std::vector<float> acc(N);
    const int64_t end = std::min<int64_t>(T, (task + 1) * kPerTask);
    for (int64_t t = task * kPerTask; t < end; ++t) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < k; ++j) {
        const float wj = weight[t * k + j];
        const float* row = y + groups.position[t * k + j] * N;
        for (int64_t c = 0; c < N; ++c) acc[c] += wj * row[c];
      }
      store_row(acc.data(), out, type, t, N);
    }
  });
}

} // namespace marlin::cpu
