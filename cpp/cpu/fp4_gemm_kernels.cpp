// CPU FP4 GEMM kernels.  This file is compiled once per instruction set
// (MARLIN_ISA = generic / avx2 / avx512, with matching -m flags); the vector code is
// written with GCC/Clang vector extensions so each build gets the widest registers
// its flags allow, and only the 16-entry table lookup and the half-precision loads
// use ISA intrinsics.
//
// Two kernels, chosen by plan_cpu_gemm (common/gemm_plan.h):
//  * streaming (few rows): each packed word is decoded once and fed straight into
//    FMAs for every row; the per-group scale is applied once per group to a partial
//    sum instead of once per weight.  Bound by reading the packed weights.
//  * tiled (many rows): a [Kc x 64] tile is decoded (scale applied) into an L1-sized
//    fp32 buffer and reused by every row through a 6x64 register block.  Bound by FMA.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/fp4_format.h"
#include "common/gemm_plan.h"
#include "cpu/fp4_gemm_kernels.h"
#include "cpu/activation.h"
#include "cpu/half_convert.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"

namespace marlin::cpu {
namespace MARLIN_ISA {
namespace {

// Loads `valid` (1..16) consecutive elements, zero-filling the rest, so ragged
// column tails run through the same vector code as full blocks.
template <typename V, typename T>
inline V load_partial(const T* p, int valid) {
  V v{};
  if (valid >= kLanes) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    T tmp[kLanes] = {};
    std::memcpy(tmp, p, sizeof(T) * valid);
    std::memcpy(&v, tmp, sizeof(v));
  }
  return v;
}

// Decodes nibble `shift/4` of 16 packed words into 16 floats through the E2M1 table.
struct Decoder {
#if defined(__AVX512F__)
  __m512 table = _mm512_loadu_ps(kE2M1Table);
  // vpermps reads only bits 3:0 of each index, so the code needs no mask.
  inline vf operator()(vu words, int shift) const {
    vu idx = words >> shift;
    return (vf)_mm512_permutexvar_ps((__m512i)idx, table);
  }
#elif defined(__AVX2__)
  // 8-entry magnitude table; the sign bit of the code moves straight into the
  // float's sign bit.
  __m256 table = _mm256_loadu_ps(kE2M1Table);
  inline vf operator()(vu words, int shift) const {
    vu idx = (words >> shift);
    vu magnitude = idx & 7u;
    vu sign = (idx & kSignBit) << 28;
    return (vf)_mm256_xor_ps(_mm256_permutevar8x32_ps(table, (__m256i)magnitude), (__m256)sign);
  }
#else
  inline vf operator()(vu words, int shift) const {
    vu idx = (words >> shift) & kCodeMask;
    vf r;
    for (int i = 0; i < kLanes; ++i) r[i] = kE2M1Table[idx[i]];
    return r;
  }
#endif
};

inline vf widen_scales(vh h, bool bf16) {
  if (bf16) {
    vu u = __builtin_convertvector(h, vu) << 16;
    return (vf)u;
  }
#if defined(__AVX512F__)
  __m256i hi;
  std::memcpy(&hi, &h, sizeof(hi));
  return (vf)_mm512_cvtph_ps(hi);
#elif defined(__AVX2__) && defined(__F16C__)
  return (vf)_mm256_cvtph_ps((__m128i)h);
#else
  vf r;
  for (int i = 0; i < kLanes; ++i) r[i] = fp16_to_float(h[i]);
  return r;
#endif
}

inline vf load_scales(const PackedWeight& w, int64_t group, int64_t n, int valid) {
  return widen_scales(load_partial<vh>(w.scales + group * w.N + n, valid), w.scales_bf16);
}

inline vu load_words(const PackedWeight& w, int64_t word_row, int64_t n, int valid) {
  return load_partial<vu>(w.words + word_row * w.N + n, valid);
}

inline int lanes_valid(int64_t n, int64_t N) {
  return static_cast<int>(std::min<int64_t>(kLanes, N - n));
}

// Writes rows of fp32 accumulators (64 wide) as act(acc + bias) in the output type.
void write_epilogue(const GemmArgs& a, const float* acc, int64_t acc_stride, int64_t m0,
                    int rows, int64_t n0, int cols) {
  if (a.out_type == ElemType::Float32 && a.activation == Activation::None && !a.bias) {
    // Plain fp32 product (MoE expert GEMMs): a row copy, not a per-element switch.
    for (int r = 0; r < rows; ++r)
      std::memcpy(static_cast<float*>(a.out) + (m0 + r) * a.out_row_stride + n0, acc + r * acc_stride,
                  cols * sizeof(float));
    return;
  }
  for (int r = 0; r < rows; ++r) {
    const float* src = acc + r * acc_stride;
    int64_t base = (m0 + r) * a.out_row_stride + n0;
    for (int c = 0; c < cols; ++c) {
      float v = src[c] + (a.bias ? a.bias[n0 + c] : 0.f);
      v = apply_activation(v, a.activation);
      switch (a.out_type) {
        case ElemType::Float32:
          static_cast<float*>(a.out)[base + c] = v;
          break;
        case ElemType::Float16:
          static_cast<uint16_t*>(a.out)[base + c] = float_to_fp16(v);
          break;
        case ElemType::BFloat16:
          static_cast<uint16_t*>(a.out)[base + c] = float_to_bf16(v);
          break;
      }
    }
  }
}

// Software prefetch distances.  Weight rows are N*4 bytes apart (a new page almost
// every row), so the hardware prefetchers do not follow a column strip down K.
constexpr int64_t kWordPrefetchRows = 16;
constexpr int64_t kScalePrefetchGroups = 2;

// ------------------------------------------------------------------ streaming
// R rows x NV*kLanes columns, all of K; the packed words are decoded in registers
// and never stored.  Two forms:
//  * R <= 2 (partial sums): within a quantization group the products code * x are
//    summed unscaled and the group's scale is applied once at the group's end (no
//    multiply per weight).  With one row, even and odd codes of a word go to two
//    sets of partial sums so 2*NV independent FMA chains hide the FMA latency.
//  * R >= 3 (scaled decode): each decoded vector is multiplied by its scale once
//    (code * scale is exact in fp32: 2 and 8 significant bits) and then used by all
//    R rows, so only R*NV accumulators live in registers and R can reach 8.
template <int R, int NV>
void stream_rows(const GemmArgs& a, const Decoder& dec, int64_t m0, int64_t n0, float* acc_out,
                 int64_t acc_stride) {
  const PackedWeight& w = a.w;
  const int64_t words_per_group = w.group_size / kCodesPerWord;
  const int64_t num_groups = w.K / w.group_size;
  int valid[NV];
  for (int v = 0; v < NV; ++v) valid[v] = std::max<int64_t>(0, std::min<int64_t>(kLanes, w.N - n0 - v * kLanes));
  const float* x0 = a.x + m0 * a.x_row_stride;
  vf acc[R][NV] = {};
  for (int64_t g = 0; g < num_groups; ++g) {
    vf s[NV];
    for (int v = 0; v < NV; ++v) {
      s[v] = valid[v] ? load_scales(w, g, n0 + v * kLanes, valid[v]) : vf{};
      // Scale rows are N*2 bytes apart: one line (32 columns) per two vectors.
      if (v % 2 == 0) __builtin_prefetch(w.scales + (g + kScalePrefetchGroups) * w.N + n0 + v * kLanes);
    }
    constexpr int kSets = R == 1 ? 2 : 1;
    vf part[kSets][R <= 2 ? R : 1][NV] = {};
    for (int64_t kb = g * words_per_group; kb < (g + 1) * words_per_group; ++kb) {
      vu words[NV];
      for (int v = 0; v < NV; ++v) {
        words[v] = valid[v] ? load_words(w, kb, n0 + v * kLanes, valid[v]) : vu{};
        __builtin_prefetch(w.words + (kb + kWordPrefetchRows) * w.N + n0 + v * kLanes);
      }
      const float* xk = x0 + kb * kCodesPerWord;
      for (int j = 0; j < kCodesPerWord; ++j) {
        vf d[NV];
        for (int v = 0; v < NV; ++v) d[v] = dec(words[v], kBitsPerCode * j);
        if constexpr (R <= 2) {
          for (int r = 0; r < R; ++r) {
            vf xs = splat(xk[r * a.x_row_stride + j]);
            for (int v = 0; v < NV; ++v) part[j % kSets][r][v] += xs * d[v];
          }
        } else {
          for (int v = 0; v < NV; ++v) d[v] *= s[v];
          for (int r = 0; r < R; ++r) {
            vf xs = splat(xk[r * a.x_row_stride + j]);
            for (int v = 0; v < NV; ++v) acc[r][v] += xs * d[v];
          }
        }
      }
    }
    if constexpr (R <= 2) {
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) {
          vf p = part[0][r][v];
          if constexpr (kSets == 2) p += part[kSets - 1][r][v];
          acc[r][v] += p * s[v];
        }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store(acc_out + r * acc_stride + v * kLanes, acc[r][v]);
}

// Vectors per row that fit the register file, capped at one task's width:
//  partial sums (R <= 2): running sums, partial sums and words;
//  scaled decode: R*NV accumulators plus scales, words and decoded vectors.
template <int R>
constexpr int streaming_vectors() {
  constexpr int cap = CpuGemmPlan::kStreamingCols / kLanes;
  constexpr int fit = R == 1 ? kVectorRegisters / 4
      : R == 2           ? kVectorRegisters / 5
                         : (kVectorRegisters - 2) / (R + 3);
  // A power of two, so the vectors tile the task's width exactly.
  constexpr int nv = fit >= 8 ? 8 : fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
  return nv < cap ? nv : cap;
}

template <int R>
void stream_task_rows(const GemmArgs& a, const Decoder& dec, int64_t m0, int64_t n0, int cols, float* acc,
                      int64_t acc_stride) {
  constexpr int NV = streaming_vectors<R>();
  for (int c = 0; c < cols; c += NV * kLanes) stream_rows<R, NV>(a, dec, m0, n0 + c, acc + c, acc_stride);
}

using StreamTask = void (*)(const GemmArgs&, const Decoder&, int64_t, int64_t, int, float*, int64_t);
constexpr StreamTask kStreamTasks[CpuGemmPlan::kStreamingRowChunk + 1] = {
    nullptr, stream_task_rows<1>, stream_task_rows<2>, stream_task_rows<3>, stream_task_rows<4>,
    stream_task_rows<5>, stream_task_rows<6>, stream_task_rows<7>, stream_task_rows<8>};

void gemm_streaming(const GemmArgs& a) {
  constexpr int kCols = CpuGemmPlan::kStreamingCols;
  constexpr int kChunk = CpuGemmPlan::kStreamingRowChunk;
  const CpuGemmPlan plan = plan_cpu_gemm(a.M, a.w.N);
  const Decoder dec;
  // Rows in chunks of at most kChunk, of balanced sizes (M = 12: 6 + 6, not 8 + 4).
  const int64_t chunks = (a.M + kChunk - 1) / kChunk;
  parallel_for(plan.num_col_blocks, [&](int block) {
    const int64_t n0 = int64_t(block) * kCols;
    const int cols = static_cast<int>(std::min<int64_t>(kCols, a.w.N - n0));
    // Padded so the last sub-block may store full vectors past `cols`.
    alignas(64) float acc[kChunk * (kCols + 64)];
    const int64_t stride = kCols + 64;
    for (int64_t c = 0, m0 = 0; c < chunks; ++c) {
      const int rows = static_cast<int>((a.M - m0) / (chunks - c));
      kStreamTasks[rows](a, dec, m0, n0, cols, acc, stride);
      write_epilogue(a, acc, stride, m0, rows, n0, cols);
      m0 += rows;
    }
  });
}

// ---------------------------------------------------------------------- tiled
constexpr int kNc = CpuGemmPlan::kNc;
constexpr int kKc = CpuGemmPlan::kKc;
constexpr int kMr = CpuGemmPlan::kMr;
constexpr int kNv = kNc / kLanes;

// Decodes W[k0:k0+kc, n0:n0+64] with scales applied into tile[kc][64].
void decode_tile(const PackedWeight& w, const Decoder& dec, int64_t k0, int kc, int64_t n0, float* tile) {
  int valid[kNv];
  for (int v = 0; v < kNv; ++v) valid[v] = std::max<int64_t>(0, std::min<int64_t>(kLanes, w.N - n0 - v * kLanes));
  vf s[kNv] = {};
  int64_t current_group = -1;
  for (int64_t k = k0; k < k0 + kc; k += kCodesPerWord) {
    int64_t kb = k / kCodesPerWord;
    int64_t g = k / w.group_size;
    if (g != current_group) {
      for (int v = 0; v < kNv; ++v) s[v] = valid[v] ? load_scales(w, g, n0 + v * kLanes, valid[v]) : vf{};
      current_group = g;
    }
    // The next tile's rows (and scales) while this one decodes.
    for (int line = 0; line < kNc / 16; ++line)  // 16 words per 64-byte line
      __builtin_prefetch(w.words + (kb + kKc / kCodesPerWord) * w.N + n0 + 16 * line);
    if ((k + kKc) % w.group_size == 0) {
      __builtin_prefetch(w.scales + ((k + kKc) / w.group_size) * w.N + n0);
      __builtin_prefetch(w.scales + ((k + kKc) / w.group_size) * w.N + n0 + 32);
    }
    for (int v = 0; v < kNv; ++v) {
      vu words = valid[v] ? load_words(w, kb, n0 + v * kLanes, valid[v]) : vu{};
      for (int j = 0; j < kCodesPerWord; ++j)
        store(tile + (k - k0 + j) * kNc + v * kLanes, dec(words, kBitsPerCode * j) * s[v]);
    }
  }
}

// Column vectors of one register block: kMr rows x kCv vectors of accumulators
// plus kCv tile vectors and one broadcast must fit the register file (6x4 zmm with
// AVX-512, the classic 6x2 ymm/xmm otherwise).
constexpr int kCv = kVectorRegisters >= 32 ? 4 : 2;
static_assert(kNv % kCv == 0, "register block must divide the tile width");

// c[R][64] += x[R][kc] @ tile[kc][64], one kCv-vector column panel at a time.
template <int R>
void micro_kernel(const float* x, int64_t x_stride, const float* tile, int kc, float* c) {
  for (int v0 = 0; v0 < kNv; v0 += kCv) {
    vf acc[R][kCv];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kCv; ++v) acc[r][v] = load(c + r * kNc + (v0 + v) * kLanes);
    for (int k = 0; k < kc; ++k) {
      vf b[kCv];
      for (int v = 0; v < kCv; ++v) b[v] = load(tile + k * kNc + (v0 + v) * kLanes);
      for (int r = 0; r < R; ++r) {
        vf xs = splat(x[r * x_stride + k]);
        for (int v = 0; v < kCv; ++v) acc[r][v] += xs * b[v];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kCv; ++v) store(c + r * kNc + (v0 + v) * kLanes, acc[r][v]);
  }
}

using MicroKernel = void (*)(const float*, int64_t, const float*, int, float*);
constexpr MicroKernel kMicroKernels[kMr + 1] = {nullptr,          micro_kernel<1>, micro_kernel<2>,
                                                micro_kernel<3>, micro_kernel<4>, micro_kernel<5>,
                                                micro_kernel<6>};

void gemm_tiled(const GemmArgs& a) {
  const CpuGemmPlan plan = plan_cpu_gemm(a.M, a.w.N);
  // Split rows too when there are too few column blocks to feed every thread; each
  // row block re-decodes its weight tiles, which is cheap next to rows*K*64 FMAs.
  const int want_tasks = 4 * num_threads();
  int64_t row_blocks = std::max<int64_t>(1, std::min<int64_t>((want_tasks + plan.num_col_blocks - 1) / plan.num_col_blocks,
                                                              (a.M + 8 * kMr - 1) / (8 * kMr)));
  int64_t rows_per_task = (a.M + row_blocks - 1) / row_blocks;
  rows_per_task = (rows_per_task + kMr - 1) / kMr * kMr;
  row_blocks = (a.M + rows_per_task - 1) / rows_per_task;
  const Decoder dec;
  parallel_for(static_cast<int>(plan.num_col_blocks * row_blocks), [&](int task) {
    const int64_t n0 = int64_t(task % plan.num_col_blocks) * kNc;
    const int64_t m_begin = int64_t(task / plan.num_col_blocks) * rows_per_task;
    const int64_t m_end = std::min<int64_t>(a.M, m_begin + rows_per_task);
    const int cols = static_cast<int>(std::min<int64_t>(kNc, a.w.N - n0));
    thread_local std::vector<float> tile, c;
    tile.resize(kKc * kNc);
    c.assign((m_end - m_begin) * kNc, 0.f);
    for (int64_t k0 = 0; k0 < a.w.K; k0 += kKc) {
      int kc = static_cast<int>(std::min<int64_t>(kKc, a.w.K - k0));
      decode_tile(a.w, dec, k0, kc, n0, tile.data());
      // Register blocks of balanced sizes (9 rows: 5 + 4, not 6 + 3).
      const int64_t blocks = (m_end - m_begin + kMr - 1) / kMr;
      for (int64_t b = 0, m = m_begin; b < blocks; ++b) {
        const int rows = static_cast<int>((m_end - m) / (blocks - b));
        kMicroKernels[rows](a.x + m * a.x_row_stride + k0, a.x_row_stride, tile.data(), kc,
                            c.data() + (m - m_begin) * kNc);
        m += rows;
      }
    }
    write_epilogue(a, c.data(), kNc, m_begin, static_cast<int>(m_end - m_begin), n0, cols);
  });
}

void gemm(const GemmArgs& a) {
  if (a.M <= CpuGemmPlan::kStreamingMaxRows)
    gemm_streaming(a);
  else
    gemm_tiled(a);
}

// ------------------------------------------------------------------ transposed
// dx[m, k] = sum_n g[m, n] * W[k, n]: rows of W are contiguous along n, so each
// output element is a vectorized dot product over n.
void gemm_transposed(const GemmTransposedArgs& a) {
  const PackedWeight& w = a.w;
  const int64_t word_rows = w.K / kCodesPerWord;
  constexpr int kWordRowsPerTask = 4;
  const Decoder dec;
  parallel_for(static_cast<int>((word_rows + kWordRowsPerTask - 1) / kWordRowsPerTask), [&](int task) {
    int64_t kb_end = std::min<int64_t>(word_rows, int64_t(task + 1) * kWordRowsPerTask);
    for (int64_t kb = int64_t(task) * kWordRowsPerTask; kb < kb_end; ++kb) {
      int64_t g = kb * kCodesPerWord / w.group_size;
      for (int64_t m0 = 0; m0 < a.M; m0 += 2) {
        int rows = static_cast<int>(std::min<int64_t>(2, a.M - m0));
        vf acc[2][kCodesPerWord] = {};
        for (int64_t n = 0; n < w.N; n += kLanes) {
          int valid = lanes_valid(n, w.N);
          vu words = load_words(w, kb, n, valid);
          vf s = load_scales(w, g, n, valid);
          vf grad[2];
          for (int r = 0; r < rows; ++r) grad[r] = load_partial<vf>(a.g + (m0 + r) * w.N + n, valid) * s;
          for (int j = 0; j < kCodesPerWord; ++j) {
            vf d = dec(words, kBitsPerCode * j);
            for (int r = 0; r < rows; ++r) acc[r][j] += grad[r] * d;
          }
        }
        for (int r = 0; r < rows; ++r)
          for (int j = 0; j < kCodesPerWord; ++j)
            a.out[(m0 + r) * w.K + kb * kCodesPerWord + j] = hsum(acc[r][j]);
      }
    }
  });
}

} // namespace
} // namespace MARLIN_ISA

KernelTable MARLIN_CAT(kernels_, MARLIN_ISA)() {
  return {MARLIN_STRINGIFY(MARLIN_ISA), &MARLIN_ISA::gemm, &MARLIN_ISA::gemm_transposed};
}

} // namespace marlin::cpu
