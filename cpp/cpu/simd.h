// Portable vector layer of the per-ISA CPU kernels.  Included by the kernel sources
// that are compiled once per instruction set (MARLIN_ISA = generic / avx2 / avx512
// with matching -m flags): each build gets GCC/Clang vector types of exactly its
// native register width (wider-than-native vector types are lowered through memory,
// which is slower than scalar code) and knows its register-file size, from which the
// kernels derive their register blocks.
//
// Everything here lives in namespace marlin::cpu::MARLIN_ISA so the builds link side
// by side; include it inside no namespace.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "cpu/half_convert.h"

#ifndef MARLIN_ISA
#define MARLIN_ISA generic
#endif
#define MARLIN_CAT_(a, b) a##b
#define MARLIN_CAT(a, b) MARLIN_CAT_(a, b)
#define MARLIN_STRINGIFY_(a) #a
#define MARLIN_STRINGIFY(a) MARLIN_STRINGIFY_(a)

namespace marlin::cpu::MARLIN_ISA {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kVectorRegisters = 32;
#elif defined(__AVX2__)
constexpr int kVectorBytes = 32;
constexpr int kVectorRegisters = 16;
#else
constexpr int kVectorBytes = 16;
constexpr int kVectorRegisters = 16;
#endif
constexpr int kLanes = kVectorBytes / 4;
typedef float vf __attribute__((vector_size(kVectorBytes)));
typedef int32_t vi __attribute__((vector_size(kVectorBytes)));
typedef uint32_t vu __attribute__((vector_size(kVectorBytes)));
typedef uint16_t vh __attribute__((vector_size(kVectorBytes / 2)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) {
  std::memcpy(p, &v, sizeof(v));
}
// Broadcast.  (`vf{} + s` would compile to an add of +0.0 before the broadcast: one
// extra dependent instruction per splat in the inner loops.)
inline vf splat(float s) {
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(s);
#elif defined(__AVX2__)
  return (vf)_mm256_set1_ps(s);
#else
  vf v;
  for (int i = 0; i < kLanes; ++i) v[i] = s;
  return v;
#endif
}
inline float hsum(vf v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps((__m512)v);
#elif defined(__AVX2__)
  // A shuffle tree (3 dependent adds) rather than 7 dependent scalar adds.
  __m128 q = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
#else
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
#endif
}

// Loads `valid` (1..kLanes) consecutive elements, zero-filling the rest, so ragged
// tails run through the same vector code as full blocks.
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

// kLanes float16 or bfloat16 values (raw bits) as floats.
inline vf widen_halves(vh h, bool bf16) {
  if (bf16) {
#if defined(__AVX512F__)
    __m256i hi;
    std::memcpy(&hi, &h, sizeof(hi));
    return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16);
#elif defined(__AVX2__)
    // One vpmovzxwd (GCC lowers the generic convert to four shuffles).
    return (vf)_mm256_slli_epi32(_mm256_cvtepu16_epi32((__m128i)h), 16);
#else
    vu u = __builtin_convertvector(h, vu) << 16;
    return (vf)u;
#endif
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

} // namespace marlin::cpu::MARLIN_ISA
