// FP4 (E2M1) weight format: the single source of truth for every backend.
//
// This header is included by the C++ CPU kernels, the CUDA kernels and the Metal
// kernels (real Metal and the CPU emulator), so it sticks to the subset of C++ that
// all three compilers accept: constexpr scalars and plain functions, no std::.
//
// Format (see docs/format.md):
//   * A 4-bit code holds sign (bit 3) and a 3-bit magnitude index into
//     {0, 0.5, 1, 1.5, 2, 3, 4, 6} (OCP MX E2M1).
//   * Packed weight [K/8, N] uint32: element (k, n) lives in word (k/8, n) at bits
//     4*(k%8) .. 4*(k%8)+3.  Reading one row of words therefore yields 8 consecutive
//     k values for N consecutive columns, which is what every kernel streams.
//   * Scales [K/group_size, N] (float16 or bfloat16): w(k, n) = e2m1(code) * scale(k/g, n).
//   * Expert-batched weights prepend an expert axis: [E, K/8, N] and [E, K/g, N].
#pragma once

#include "portable.h"

// MARLIN_TABLE declares a lookup table: in Metal's constant address space (program
// scope `constant` variables must be initialised constant expressions; constexpr also
// gives internal linkage, so several .metal sources of one library may include this),
// in CUDA constant memory, and as a plain constexpr array in C++.
#if defined(__METAL_VERSION__)
#define MARLIN_TABLE constant constexpr
#define MARLIN_INLINE inline
#elif defined(__CUDACC__)
#define MARLIN_TABLE __device__ __constant__
#define MARLIN_INLINE __host__ __device__ __forceinline__
#else
#define MARLIN_TABLE constexpr
#define MARLIN_INLINE inline
#endif

namespace marlin {

// Number of FP4 codes packed in one uint32 word (along K).
MARLIN_CONST int kCodesPerWord = 8;
MARLIN_CONST int kBitsPerCode = 4;
MARLIN_CONST unsigned kCodeMask = 0xFu;
MARLIN_CONST unsigned kSignBit = 0x8u;
MARLIN_CONST int kNumCodes = 16;

// Largest E2M1 magnitude: quantization maps a group's absmax onto it.
MARLIN_CONST float kE2M1Max = 6.0f;

// Supported group sizes along K.  Every group size divides the largest, so a K
// that is a multiple of kMaxGroupSize works with all of them.
MARLIN_CONST int kGroupSizes[3] = {32, 64, 128};
MARLIN_CONST int kMaxGroupSize = 128;

constexpr bool is_supported_group_size(int g) {
  return g == 32 || g == 64 || g == 128;
}

// Decode table, indexed by the full 4-bit code (sign included) so a decode is one
// table lookup: no branch, no bit arithmetic in the inner loop.
MARLIN_TABLE float kE2M1Table[kNumCodes] = {
    0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Position of element k inside its word (used by packers and kernels alike).
MARLIN_INLINE constexpr int code_shift(int k) {
  return kBitsPerCode * (k % kCodesPerWord);
}

MARLIN_INLINE constexpr unsigned extract_code(unsigned word, int index_in_word) {
  return (word >> (kBitsPerCode * index_in_word)) & kCodeMask;
}

// Round a magnitude already divided by its scale to the nearest E2M1 magnitude code,
// ties to the even code (the code whose mantissa bit is 0).  The thresholds are the
// midpoints between neighbouring values; `>=` at a midpoint rounds up exactly when
// the upper neighbour has the even code.
MARLIN_INLINE constexpr unsigned round_to_e2m1_magnitude(float a) {
  return (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
      (a >= 3.5f) + (a > 5.0f);
}

} // namespace marlin
