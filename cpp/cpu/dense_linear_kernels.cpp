// CPU dense-linear kernel: y[M, N] = x[M, K] @ W[N, K]^T + bias, W in float32,
// float16 or bfloat16.  Compiled once per instruction set (see simd.h).
//
// W's rows are contiguous along K, so each output is a dot product of an x row and a
// W row, accumulated lane-wise over K and summed across lanes once at the end.  A
// register block of MR x rows and NR W rows loads MR + NR vectors per MR * NR FMAs and
// converts each W vector once for all MR rows; nothing is packed or transposed, so a
// decode step (M = 1) streams W straight from memory once, NR rows side by side.
#include <algorithm>

#include "common/gemm_plan.h"
#include "cpu/dense_linear_kernels.h"
#include "cpu/half_convert.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"

namespace marlin::cpu {
namespace MARLIN_ISA {
namespace {

template <ElemType W>
inline vf load_weights(const void* base, int64_t i, int valid) {
  if constexpr (W == ElemType::Float32) {
    return load_partial<vf>(static_cast<const float*>(base) + i, valid);
  } else {
    return widen_halves(load_partial<vh>(static_cast<const uint16_t*>(base) + i, valid), W == ElemType::BFloat16);
  }
}

// W rows per register block for MR x rows: MR * NR accumulators, MR x vectors and one
// weight vector must fit the register file (AVX2: 1 x 8, 2 x 6, 3 x 3; AVX-512: up to
// 4 x 6), capped at 8 rows read side by side.
template <int MR>
constexpr int block_cols() {
  constexpr int fit = (kVectorRegisters - 2 - MR) / MR;
  return fit < 8 ? fit : 8;
}
constexpr int kMaxBlockRows = kVectorRegisters >= 32 ? 4 : 3;

template <ElemType W, int MR, int NR>
inline void dot_step(const DenseLinearArgs& a, const float* x, int64_t w0, int64_t k, int valid, vf (&acc)[MR][NR]) {
  vf xv[MR];
  for (int r = 0; r < MR; ++r) xv[r] = load_partial<vf>(x + r * a.K + k, valid);
  for (int j = 0; j < NR; ++j) {
    const vf wv = load_weights<W>(a.w, w0 + j * a.w_row_stride + k, valid);
    for (int r = 0; r < MR; ++r) acc[r][j] += xv[r] * wv;
  }
}

template <ElemType W, int MR, int NR>
void dot_block(const DenseLinearArgs& a, int64_t m0, int64_t n0, float (&sums)[MR][NR]) {
  const float* x = a.x + m0 * a.K;
  const int64_t w0 = n0 * a.w_row_stride;
  vf acc[MR][NR] = {};
  int64_t k = 0;
  for (; k + kLanes <= a.K; k += kLanes) dot_step<W, MR, NR>(a, x, w0, k, kLanes, acc);
  if (k < a.K) dot_step<W, MR, NR>(a, x, w0, k, static_cast<int>(a.K - k), acc);  // ragged K, zero-filled
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) sums[r][j] = hsum(acc[r][j]);
}

template <int MR, int NR>
void store_block(const DenseLinearArgs& a, int64_t m0, int64_t n0, const float (&sums)[MR][NR]) {
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) {
      const float v = sums[r][j] + (a.bias ? a.bias[n0 + j] : 0.f);
      const int64_t i = (m0 + r) * a.N + n0 + j;
      switch (a.out_type) {
        case ElemType::Float32: static_cast<float*>(a.out)[i] = v; break;
        case ElemType::Float16: static_cast<uint16_t*>(a.out)[i] = float_to_fp16(v); break;
        case ElemType::BFloat16: static_cast<uint16_t*>(a.out)[i] = float_to_bf16(v); break;
      }
    }
}

// MR x rows against W rows [n_begin, n_end): full blocks of NR rows, then one at a time.
template <ElemType W, int MR>
void row_block(const DenseLinearArgs& a, int64_t m0, int64_t n_begin, int64_t n_end) {
  constexpr int NR = block_cols<MR>();
  int64_t n = n_begin;
  for (; n + NR <= n_end; n += NR) {
    float sums[MR][NR];
    dot_block<W, MR, NR>(a, m0, n, sums);
    store_block<MR, NR>(a, m0, n, sums);
  }
  for (; n < n_end; ++n) {
    float sums[MR][1];
    dot_block<W, MR, 1>(a, m0, n, sums);
    store_block<MR, 1>(a, m0, n, sums);
  }
}

template <ElemType W, int MR = kMaxBlockRows>
void rows_tail(const DenseLinearArgs& a, int rows, int64_t m0, int64_t n_begin, int64_t n_end) {
  if constexpr (MR > 0) {
    if (rows == MR) return row_block<W, MR>(a, m0, n_begin, n_end);
    rows_tail<W, MR - 1>(a, rows, m0, n_begin, n_end);
  }
}

template <ElemType W>
void linear_typed(const DenseLinearArgs& a) {
  const int weight_bytes = W == ElemType::Float32 ? 4 : 2;
  const CpuDenseLinearPlan plan = plan_cpu_dense_linear(a.N, a.K, weight_bytes, block_cols<kMaxBlockRows>());
  parallel_for(plan.num_tasks, [&](int task) {
    const int64_t n_begin = int64_t(task) * plan.rows_per_task;
    const int64_t n_end = std::min<int64_t>(a.N, n_begin + plan.rows_per_task);
    // Every block of x rows passes over the task's W rows (L2-resident after the first).
    int64_t m = 0;
    for (; m + kMaxBlockRows <= a.M; m += kMaxBlockRows) row_block<W, kMaxBlockRows>(a, m, n_begin, n_end);
    if (m < a.M) rows_tail<W>(a, static_cast<int>(a.M - m), m, n_begin, n_end);
  });
}

void linear(const DenseLinearArgs& a) {
  switch (a.w_type) {
    case ElemType::Float32: return linear_typed<ElemType::Float32>(a);
    case ElemType::Float16: return linear_typed<ElemType::Float16>(a);
    case ElemType::BFloat16: return linear_typed<ElemType::BFloat16>(a);
  }
}

} // namespace
} // namespace MARLIN_ISA

DenseLinearKernelTable MARLIN_CAT(dense_linear_kernels_, MARLIN_ISA)() {
  return {MARLIN_STRINGIFY(MARLIN_ISA), &MARLIN_ISA::linear};
}

} // namespace marlin::cpu
