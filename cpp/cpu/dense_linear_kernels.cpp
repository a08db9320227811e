// CPU dense-linear kernels: y[M, N] = x[M, K] @ W[N, K]^T + bias, W in float32,
// float16 or bfloat16, or in MLX's affine 4 / 8-bit codes (affine_linear: each weight
// vector dequantized in registers by one FMA with its group's scale and bias).
// Compiled once per instruction set (see simd.h).
//
// W's rows are contiguous along K, so each output is a dot product of an x row and a
// W row, accumulated lane-wise over K and summed across lanes once at the end.  A
// register block of MR x rows and NR W rows loads MR + NR vectors per MR * NR FMAs and
// converts each W vector once for all MR rows; nothing is packed or transposed, so a
// decode step (M = 1) streams W straight from memory once, NR rows side by side.
//
// bfloat16 W (most output heads) skips the widening shift: interleaving 2 * kLanes
// bf16 values with zeros (unpacklo / unpackhi of 16-bit elements) gives two float
// vectors directly, one instruction each, in a fixed lane order (kInterleaved below);
// x is stored once per call in that order, since a dot product does not care which
// lane holds which k.
#include <algorithm>
#include <vector>

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
inline void dot_step(const DenseLinearArgs& a, const float* x, int64_t x_stride, int64_t w0, int64_t k, int valid,
                     vf (&acc)[MR][NR]) {
  vf xv[MR];
  for (int r = 0; r < MR; ++r) xv[r] = load_partial<vf>(x + r * x_stride + k, valid);
  for (int j = 0; j < NR; ++j) {
    const vf wv = load_weights<W>(a.w, w0 + j * a.w_row_stride + k, valid);
    for (int r = 0; r < MR; ++r) acc[r][j] += xv[r] * wv;
  }
}

// ---------------------------------------------------------------- bfloat16, interleaved
// 2 * kLanes bf16 values of W as two float vectors: `low` holds elements
// 8b + {0..3} of each 8-element block b, `high` 8b + {4..7} (the 16-bit unpacks work
// within 128-bit lanes).
constexpr int kInterleaved = 2 * kLanes;
typedef uint16_t vh2 __attribute__((vector_size(kVectorBytes)));

inline int interleaved_source(int lane, bool high) {
  return 8 * (lane / 4) + (high ? 4 : 0) + lane % 4;
}

template <bool High>
inline vf widen_interleaved(vh2 h) {
#if defined(__AVX512F__)
  const __m512i z = _mm512_setzero_si512();
  return (vf)(High ? _mm512_unpackhi_epi16(z, (__m512i)h) : _mm512_unpacklo_epi16(z, (__m512i)h));
#elif defined(__AVX2__)
  const __m256i z = _mm256_setzero_si256();
  return (vf)(High ? _mm256_unpackhi_epi16(z, (__m256i)h) : _mm256_unpacklo_epi16(z, (__m256i)h));
#else
  vu u;
  for (int l = 0; l < kLanes; ++l) u[l] = static_cast<uint32_t>(h[interleaved_source(l, High)]) << 16;
  return (vf)u;
#endif
}

// x [M, K] -> [M, Kp] in interleaved order, Kp = K rounded up to kInterleaved, zero-padded.
void store_x_interleaved(const DenseLinearArgs& a, int64_t Kp, float* out) {
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t k0 = 0; k0 < Kp; k0 += kInterleaved)
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < kLanes; ++l) {
          const int64_t k = k0 + interleaved_source(l, half == 1);
          out[m * Kp + k0 + half * kLanes + l] = k < a.K ? a.x[m * a.K + k] : 0.f;
        }
}

template <int MR, int NR>
inline void dot_step_bf16(const DenseLinearArgs& a, const float* x, int64_t x_stride, int64_t w0, int64_t k, int valid,
                          vf (&acc)[MR][NR]) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + w0 + k;
  // Low halves, then high halves: MR x vectors live at a time, and each W vector is
  // loaded twice (the second time from L1) rather than kept.
  for (int half = 0; half < 2; ++half) {
    vf xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = load(x + r * x_stride + k + half * kLanes);
    for (int j = 0; j < NR; ++j) {
      vh2 raw;
      if (valid == kInterleaved) {
        std::memcpy(&raw, w + j * a.w_row_stride, sizeof(raw));
      } else {
        uint16_t tmp[kInterleaved] = {};
        std::memcpy(tmp, w + j * a.w_row_stride, sizeof(uint16_t) * valid);
        std::memcpy(&raw, tmp, sizeof(raw));
      }
      const vf wv = half ? widen_interleaved<true>(raw) : widen_interleaved<false>(raw);
      for (int r = 0; r < MR; ++r) acc[r][j] += xv[r] * wv;
    }
  }
}

// sums[r][j] = x[m0 + r, :] . W[n0 + j, :]; x rows are x_stride apart (in
// interleaved order for bfloat16 W).
template <ElemType W, int MR, int NR>
void dot_block(const DenseLinearArgs& a, const float* x_rows, int64_t x_stride, int64_t m0, int64_t n0, float* sums,
               int64_t sums_stride) {
  const float* x = x_rows + m0 * x_stride;
  const int64_t w0 = n0 * a.w_row_stride;
  vf acc[MR][NR] = {};
  const int64_t K = a.K;
  int64_t k = 0;
  if constexpr (W == ElemType::BFloat16) {
    for (; k + kInterleaved <= K; k += kInterleaved) dot_step_bf16<MR, NR>(a, x, x_stride, w0, k, kInterleaved, acc);
    if (k < K) dot_step_bf16<MR, NR>(a, x, x_stride, w0, k, static_cast<int>(K - k), acc);  // ragged end
  } else {
    for (; k + kLanes <= K; k += kLanes) dot_step<W, MR, NR>(a, x, x_stride, w0, k, kLanes, acc);
    if (k < K) dot_step<W, MR, NR>(a, x, x_stride, w0, k, static_cast<int>(K - k), acc);  // ragged end, zero-filled
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) sums[r * sums_stride + j] = hsum(acc[r][j]);
}

// ---------------------------------------------------------------- MLX affine codes
// kLanes codes from a row's byte stream (8 bits: one byte each; 4 bits: two per byte,
// low nibble first) as floats.
template <int Bits>
inline vf widen_codes(const uint8_t* p) {
#if defined(__AVX512F__) || defined(__AVX2__)
  __m128i bytes;
  if constexpr (Bits == 8) {
#if defined(__AVX512F__)
    bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
#else
    bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
#endif
  } else {
    int64_t packed = 0;
    std::memcpy(&packed, p, kLanes / 2);
    const __m128i v = _mm_cvtsi64_si128(packed);
    const __m128i nibble = _mm_set1_epi8(0x0f);
    bytes = _mm_unpacklo_epi8(_mm_and_si128(v, nibble), _mm_and_si128(_mm_srli_epi16(v, 4), nibble));
  }
#if defined(__AVX512F__)
  return (vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
#else
  return (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
#endif
#else
  vf r;
  for (int l = 0; l < kLanes; ++l)
    r[l] = static_cast<float>(Bits == 8 ? p[l] : (p[l / 2] >> (4 * (l & 1))) & 0x0f);
  return r;
#endif
}

inline float load_scale(const void* p, int64_t i, ElemType t) {
  switch (t) {
    case ElemType::Float32: return static_cast<const float*>(p)[i];
    case ElemType::Float16: return fp16_to_float(static_cast<const uint16_t*>(p)[i]);
    case ElemType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.f;
}

// W rows per register block for MR x rows: the accumulators, each row's scale and bias
// splat for the group, MR x vectors and one weight vector.
template <int MR>
constexpr int affine_block_cols() {
  constexpr int fit = (kVectorRegisters - 1 - MR) / (MR + 2);
  return fit < 8 ? fit : 8;
}

// sums[r][j] = x[m0 + r, :] . W[n0 + j, :], each group's weights dequantized in
// registers (one FMA per weight vector) before the MR products.
template <int Bits, int MR, int NR>
void affine_dot_block(const AffineLinearArgs& a, const float* x_rows, int64_t x_stride, int64_t m0, int64_t n0,
                      float* sums, int64_t sums_stride) {
  const float* x = x_rows + m0 * x_stride;
  const int64_t groups = a.K / a.group_size;
  const int64_t row_bytes = a.K * Bits / 8;
  const uint8_t* w = a.w + n0 * row_bytes;
  vf acc[MR][NR] = {};
  for (int64_t g = 0; g < groups; ++g) {
    vf scale[NR], offset[NR];
    for (int j = 0; j < NR; ++j) {
      scale[j] = splat(load_scale(a.scales, (n0 + j) * groups + g, a.scale_type));
      offset[j] = splat(load_scale(a.biases, (n0 + j) * groups + g, a.scale_type));
    }
    const int64_t k_end = (g + 1) * a.group_size;
    for (int64_t k = g * a.group_size; k < k_end; k += kLanes) {  // group_size % kLanes == 0
      vf xv[MR];
      for (int r = 0; r < MR; ++r) xv[r] = load(x + r * x_stride + k);
      for (int j = 0; j < NR; ++j) {
        const vf wv = widen_codes<Bits>(w + j * row_bytes + k * Bits / 8) * scale[j] + offset[j];
        for (int r = 0; r < MR; ++r) acc[r][j] += xv[r] * wv;
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) sums[r * sums_stride + j] = hsum(acc[r][j]);
}

// The two weight formats as block policies of the shared task loop below.
template <ElemType W>
struct DenseBlocks {
  using Args = DenseLinearArgs;
  template <int MR>
  static constexpr int cols() { return block_cols<MR>(); }
  template <int MR, int NR>
  static void dot(const Args& a, const float* x, int64_t x_stride, int64_t m0, int64_t n0, float* sums,
                  int64_t sums_stride) {
    dot_block<W, MR, NR>(a, x, x_stride, m0, n0, sums, sums_stride);
  }
};

template <int Bits>
struct AffineBlocks {
  using Args = AffineLinearArgs;
  template <int MR>
  static constexpr int cols() { return affine_block_cols<MR>(); }
  template <int MR, int NR>
  static void dot(const Args& a, const float* x, int64_t x_stride, int64_t m0, int64_t n0, float* sums,
                  int64_t sums_stride) {
    affine_dot_block<Bits, MR, NR>(a, x, x_stride, m0, n0, sums, sums_stride);
  }
};

// MR x rows against W rows [n_begin, n_end): full blocks of NR rows,
// then one at a time.  sums holds the task's [MR][n_end - n_begin] running sums.
template <typename Blocks, int MR>
void row_block(const typename Blocks::Args& a, const float* x, int64_t x_stride, int64_t m0, int64_t n_begin,
               int64_t n_end, float* sums, int64_t sums_stride) {
  constexpr int NR = Blocks::template cols<MR>();
  int64_t n = n_begin;
  for (; n + NR <= n_end; n += NR)
    Blocks::template dot<MR, NR>(a, x, x_stride, m0, n, sums + (n - n_begin), sums_stride);
  for (; n < n_end; ++n) Blocks::template dot<MR, 1>(a, x, x_stride, m0, n, sums + (n - n_begin), sums_stride);
}

template <typename Blocks, int MR = kMaxBlockRows>
void rows_tail(const typename Blocks::Args& a, const float* x, int64_t x_stride, int rows, int64_t m0,
               int64_t n_begin, int64_t n_end, float* sums, int64_t sums_stride) {
  if constexpr (MR > 0) {
    if (rows == MR) return row_block<Blocks, MR>(a, x, x_stride, m0, n_begin, n_end, sums, sums_stride);
    rows_tail<Blocks, MR - 1>(a, x, x_stride, rows, m0, n_begin, n_end, sums, sums_stride);
  }
}

template <typename Args>
void store_rows(const Args& a, int64_t n_begin, int cols, const float* sums) {
  for (int64_t m = 0; m < a.M; ++m)
    for (int j = 0; j < cols; ++j) {
      const float v = sums[m * cols + j] + (a.bias ? a.bias[n_begin + j] : 0.f);
      const int64_t i = m * a.N + n_begin + j;
      switch (a.out_type) {
        case ElemType::Float32: static_cast<float*>(a.out)[i] = v; break;
        case ElemType::Float16: static_cast<uint16_t*>(a.out)[i] = float_to_fp16(v); break;
        case ElemType::BFloat16: static_cast<uint16_t*>(a.out)[i] = float_to_bf16(v); break;
      }
    }
}

// Tasks of whole W rows over every x row: the x rows in register blocks of
// kMaxBlockRows (then the remainder), each against the task's W rows.
template <typename Blocks>
void run_tasks(const typename Blocks::Args& a, const float* x, int64_t x_stride, int weight_bits) {
  const CpuDenseLinearPlan plan =
      plan_cpu_dense_linear(a.N, a.K, weight_bits, Blocks::template cols<kMaxBlockRows>());
  parallel_for(plan.num_tasks, [&](int task) {
    const int64_t n_begin = int64_t(task) * plan.rows_per_task;
    const int64_t n_end = std::min<int64_t>(a.N, n_begin + plan.rows_per_task);
    const int cols = static_cast<int>(n_end - n_begin);
    thread_local std::vector<float> sums;
    sums.resize(a.M * cols);  // every element written by its dot block
    int64_t m = 0;
    for (; m + kMaxBlockRows <= a.M; m += kMaxBlockRows)
      row_block<Blocks, kMaxBlockRows>(a, x, x_stride, m, n_begin, n_end, sums.data() + m * cols, cols);
    if (m < a.M)
      rows_tail<Blocks>(a, x, x_stride, static_cast<int>(a.M - m), m, n_begin, n_end, sums.data() + m * cols,
                        cols);
    store_rows(a, n_begin, cols, sums.data());
  });
}

template <ElemType W>
void linear_typed(const DenseLinearArgs& a) {
  const float* x = a.x;
  int64_t x_stride = a.K;
  std::vector<float> x_interleaved;
  if constexpr (W == ElemType::BFloat16) {
    x_stride = (a.K + kInterleaved - 1) / kInterleaved * kInterleaved;
    x_interleaved.resize(a.M * x_stride);
    store_x_interleaved(a, x_stride, x_interleaved.data());
    x = x_interleaved.data();
  }
  run_tasks<DenseBlocks<W>>(a, x, x_stride, W == ElemType::Float32 ? 32 : 16);
}

void affine_linear(const AffineLinearArgs& a) {
  if (a.bits == 8) return run_tasks<AffineBlocks<8>>(a, a.x, a.K, 8);
  run_tasks<AffineBlocks<4>>(a, a.x, a.K, 4);
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
  return {MARLIN_STRINGIFY(MARLIN_ISA), &MARLIN_ISA::linear, &MARLIN_ISA::affine_linear};
}

} // namespace marlin::cpu
