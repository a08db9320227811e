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
//  * AVX2 only, 1-3 rows: streaming with the codes looked up 32 at a time through
//    byte tables (ByteTables), over strips visited group by group.
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

inline vf load_scales(const PackedWeight& w, int64_t group, int64_t n, int valid) {
  return widen_halves(load_partial<vh>(w.scales + group * w.N + n, valid), w.scales_bf16);
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

#if defined(__AVX2__) && !defined(__AVX512F__)
// ------------------------------------------------------- streaming, AVX2 byte tables
// One or two rows with AVX2.  Why not Decoder: vpermps turns one code per lane into a
// float per instruction, and AVX2 needs four more instructions per code to move its
// nibble and sign into place (~7 per 8 weights with the FMA).  vpshufb looks up 32
// codes at once instead: every E2M1 value is exact in bf16, so a code's float is its
// bf16 bits << 16, and two 16-entry byte tables (the bf16's low and high byte) give
// them for the 32 low (or high) nibbles of 8 words; one unpack pairs the bytes into
// bf16 elements, and a shift or a mask per 32-bit lane makes each half a float.
// ~27 instructions per 8 words (64 weights) instead of ~60.
//
// The lanes of those floats hold a fixed mix of columns and k.  With the 8 words of
// columns c0..c7 (byte b of word c holds codes 2b, 2b + 1) and n the low or high
// nibbles, unpacklo(L, H) holds columns (0,0,1,1 | 4,4,5,5) and unpackhi columns
// (2,2,3,3 | 6,6,7,7); << 16 takes codes (0, 4) of each lane pair, the mask codes
// (2, 6), each + 1 for the high nibbles.  So x is stored once per call as the pairs
// (x0,x4, x2,x6, x1,x5, x3,x7) of each word row and met by 64-bit broadcasts, the
// scales are permuted into the two column patterns once per group, and one hadd
// puts the sums back in column order.
struct ByteTables {
  __m256i low_byte, high_byte;
  ByteTables() {
    alignas(32) uint8_t lo[32], hi[32];
    for (int c = 0; c < 32; ++c) {
      uint32_t bits;
      std::memcpy(&bits, &kE2M1Table[c % kNumCodes], sizeof(bits));
      lo[c] = static_cast<uint8_t>(bits >> 16);  // bits 0..15 are zero: exact in bf16
      hi[c] = static_cast<uint8_t>(bits >> 24);
    }
    low_byte = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    high_byte = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  }
};

// Word row kb of x as the pairs the decoded lanes meet (see ByteTables).
constexpr int kPairOrder[kCodesPerWord] = {0, 4, 2, 6, 1, 5, 3, 7};

void store_x_pairs(const GemmArgs& a, int64_t rows, float* pairs) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.x + r * a.x_row_stride;
    float* out = pairs + r * a.w.K;
    for (int64_t k = 0; k < a.w.K; k += kCodesPerWord)
      for (int i = 0; i < kCodesPerWord; ++i) out[k + i] = x[k + kPairOrder[i]];
  }
}

// One quantization group g of one 8-column vector (columns n0..n0+7): total[r] +=
// scale * (the group's products, summed unscaled in C independent chains per column
// pattern), as stream_rows does per group.
template <int R, int C>
inline void group_vector_bytes(const GemmArgs& a, const ByteTables& t, const float* x_pairs, int64_t g, int64_t n0,
                               __m256 (&total)[R][2]) {
  const PackedWeight& w = a.w;
  const int valid = lanes_valid(n0, w.N);
  const int64_t words_per_group = w.group_size / kCodesPerWord;
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i high_half = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 part[R][2][C];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < 2; ++p)
      for (int c = 0; c < C; ++c) part[r][p][c] = _mm256_setzero_ps();
  for (int64_t kb = g * words_per_group; kb < (g + 1) * words_per_group; ++kb) {
    const __m256i words = (__m256i)load_words(w, kb, n0, valid);
    const __m256i nibbles[2] = {_mm256_and_si256(words, nibble), _mm256_and_si256(_mm256_srli_epi32(words, 4), nibble)};
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i lo = _mm256_shuffle_epi8(t.low_byte, nibbles[h]);
      const __m256i hi = _mm256_shuffle_epi8(t.high_byte, nibbles[h]);
      const __m256i bf16[2] = {_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi)};
#pragma GCC unroll 2
      for (int p = 0; p < 2; ++p) {
        const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(bf16[p], 16));
        const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(bf16[p], high_half));
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) {
          const double* xq = reinterpret_cast<const double*>(x_pairs + r * w.K + kb * kCodesPerWord) + 2 * h;
          __m256& even_sum = part[r][p][(2 * h) % C];
          __m256& odd_sum = part[r][p][(2 * h + 1) % C];
          even_sum = _mm256_fmadd_ps(even, _mm256_castpd_ps(_mm256_broadcast_sd(xq)), even_sum);
          odd_sum = _mm256_fmadd_ps(odd, _mm256_castpd_ps(_mm256_broadcast_sd(xq + 1)), odd_sum);
        }
      }
    }
  }
  const __m256 s = (__m256)load_scales(w, g, n0, valid);
  const __m256 s_pattern[2] = {_mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 0, 1, 1, 4, 4, 5, 5)),
                               _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(2, 2, 3, 3, 6, 6, 7, 7))};
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < 2; ++p) {
      __m256 sum = part[r][p][0];
      for (int c = 1; c < C; ++c) sum = _mm256_add_ps(sum, part[r][p][c]);
      total[r][p] = _mm256_fmadd_ps(sum, s_pattern[p], total[r][p]);
    }
}

constexpr bool kByteTableStreaming = true;

// R rows x one strip of `cols` (<= kByteStripCols) columns, group by group: within a
// group the strip's vectors are visited in turn, so the group's word rows are read as
// sequential runs (plan_cpu_gemm says why).
template <int R>
void stream_strip_bytes(const GemmArgs& a, const ByteTables& t, const float* x_pairs, int64_t n0, int cols, float* acc,
                        int64_t acc_stride) {
  constexpr int C = R == 1 ? 4 : R == 2 ? 2 : 1;  // chains per pattern that fit the 16 registers
  const int vectors = (cols + kLanes - 1) / kLanes;
  alignas(32) __m256 totals[CpuGemmPlan::kByteStripCols / kLanes][R][2];
  for (int v = 0; v < vectors; ++v)
    for (int r = 0; r < R; ++r) totals[v][r][0] = totals[v][r][1] = _mm256_setzero_ps();
  const int64_t num_groups = a.w.K / a.w.group_size;
  for (int64_t g = 0; g < num_groups; ++g) {
    __builtin_prefetch(a.w.scales + (g + kScalePrefetchGroups) * a.w.N + n0);
    for (int v = 0; v < vectors; ++v) group_vector_bytes<R, C>(a, t, x_pairs, g, n0 + v * kLanes, totals[v]);
  }
  for (int v = 0; v < vectors; ++v)
    for (int r = 0; r < R; ++r)
      _mm256_storeu_ps(acc + r * acc_stride + v * kLanes, _mm256_hadd_ps(totals[v][r][0], totals[v][r][1]));
}

using ByteStripTask = void (*)(const GemmArgs&, const ByteTables&, const float*, int64_t, int, float*, int64_t);
constexpr ByteStripTask kByteStripTasks[CpuGemmPlan::kByteTableMaxRows + 1] = {
    nullptr, stream_strip_bytes<1>, stream_strip_bytes<2>, stream_strip_bytes<3>};

void gemm_streaming_bytes(const GemmArgs& a, const CpuGemmPlan& plan) {
  constexpr int kCols = CpuGemmPlan::kByteStripCols;
  const ByteTables tables;
  std::vector<float> x_pairs(a.M * a.w.K);
  store_x_pairs(a, a.M, x_pairs.data());
  parallel_for(plan.num_col_blocks, [&](int block) {
    const int64_t n0 = int64_t(block) * kCols;
    const int cols = static_cast<int>(std::min<int64_t>(kCols, a.w.N - n0));
    // Padded so the last vector may store 8 columns past `cols`.
    alignas(64) float acc[CpuGemmPlan::kByteTableMaxRows * (kCols + kLanes)];
    const int64_t stride = kCols + kLanes;
    kByteStripTasks[a.M](a, tables, x_pairs.data(), n0, cols, acc, stride);
    write_epilogue(a, acc, stride, 0, static_cast<int>(a.M), n0, cols);
  });
}
#else
constexpr bool kByteTableStreaming = false;
#endif

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
  const CpuGemmPlan plan = plan_cpu_gemm(a.M, a.w.N, kByteTableStreaming);
#if defined(__AVX2__) && !defined(__AVX512F__)
  if (plan.byte_tables) return gemm_streaming_bytes(a, plan);
#endif
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
  return {MARLIN_STRINGIFY(MARLIN_ISA), MARLIN_ISA::kByteTableStreaming, &MARLIN_ISA::gemm,
          &MARLIN_ISA::gemm_transposed};
}

} // namespace marlin::cpu
