// Apple's internal `__metal_*` builtins. MSL library headers are built on
// them, and so are MLX's kernel headers (bf16_math.h wraps every math and
// simd function for bfloat with them), so kernels that include MLX headers
// need these. Each forwards to the emulator's metal:: implementation; the
// fast-math mode argument is accepted and ignored.
#pragma once
#include "mtlemu/matrix.h"

#define __METAL_MAYBE_FAST_MATH__ 0
#define __METAL_FAST_MATH__ 1
#define __METAL_PRECISE_MATH__ 2
#ifndef __METAL_MEMORY_SCOPE_SYSTEM__
#define __METAL_MEMORY_SCOPE_SYSTEM__ 3
#endif

#define MTLEMU_INTRINSIC1(name)                    \
  template <class T>                               \
  inline T __metal_##name(T x, int = 0) {          \
    return metal::name(x);                         \
  }
#define MTLEMU_INTRINSIC2(name)                    \
  template <class T>                               \
  inline T __metal_##name(T x, T y, int = 0) {     \
    return metal::name(x, y);                      \
  }
#define MTLEMU_INTRINSIC3(name)                    \
  template <class T>                               \
  inline T __metal_##name(T x, T y, T z, int = 0) { \
    return metal::name(x, y, z);                   \
  }

MTLEMU_INTRINSIC1(fabs) MTLEMU_INTRINSIC1(acos) MTLEMU_INTRINSIC1(acosh) MTLEMU_INTRINSIC1(asin)
MTLEMU_INTRINSIC1(asinh) MTLEMU_INTRINSIC1(atan) MTLEMU_INTRINSIC1(atanh) MTLEMU_INTRINSIC1(ceil)
MTLEMU_INTRINSIC1(cos) MTLEMU_INTRINSIC1(cosh) MTLEMU_INTRINSIC1(cospi) MTLEMU_INTRINSIC1(exp)
MTLEMU_INTRINSIC1(exp10) MTLEMU_INTRINSIC1(exp2) MTLEMU_INTRINSIC1(floor) MTLEMU_INTRINSIC1(fract)
MTLEMU_INTRINSIC1(log) MTLEMU_INTRINSIC1(log10) MTLEMU_INTRINSIC1(log2) MTLEMU_INTRINSIC1(rint)
MTLEMU_INTRINSIC1(round) MTLEMU_INTRINSIC1(rsqrt) MTLEMU_INTRINSIC1(sin) MTLEMU_INTRINSIC1(sinh)
MTLEMU_INTRINSIC1(sinpi) MTLEMU_INTRINSIC1(sqrt) MTLEMU_INTRINSIC1(tan) MTLEMU_INTRINSIC1(tanh)
MTLEMU_INTRINSIC1(tanpi) MTLEMU_INTRINSIC1(trunc)
MTLEMU_INTRINSIC2(atan2) MTLEMU_INTRINSIC2(divide) MTLEMU_INTRINSIC2(fmax) MTLEMU_INTRINSIC2(fmin)
MTLEMU_INTRINSIC2(fmod) MTLEMU_INTRINSIC2(pow) MTLEMU_INTRINSIC2(powr)
MTLEMU_INTRINSIC3(fma) MTLEMU_INTRINSIC3(fmax3) MTLEMU_INTRINSIC3(fmin3) MTLEMU_INTRINSIC3(fmedian3)
#undef MTLEMU_INTRINSIC1
#undef MTLEMU_INTRINSIC2
#undef MTLEMU_INTRINSIC3

template <class T>
inline T __metal_frexp(T x, int* exponent) { return metal::frexp(x, *exponent); }
template <class T>
inline T __metal_ldexp(T x, int k, int = 0) { return metal::ldexp(x, k); }
template <class T>
inline T __metal_nextafter(T x, T y) { return metal::nextafter(x, y); }

template <class T>
inline T __metal_get_simdgroup_size(T) { return T(mtlemu::kSimdWidth); }
template <class T>
inline T __metal_get_thread_index_in_simdgroup(T) { return T(mtlemu_lane()->thread_index_in_simdgroup); }

template <class T>
inline T __metal_simd_broadcast(T v, ushort lane) { return metal::simd_broadcast(v, lane); }
template <class T>
inline T __metal_simd_shuffle(T v, ushort lane) { return metal::simd_shuffle(v, lane); }
template <class T>
inline T __metal_simd_shuffle_down(T v, ushort d) { return metal::simd_shuffle_down(v, d); }
template <class T>
inline T __metal_simd_shuffle_up(T v, ushort d) { return metal::simd_shuffle_up(v, d); }
template <class T>
inline T __metal_simd_shuffle_rotate_down(T v, ushort d) { return metal::simd_shuffle_rotate_down(v, d); }
template <class T>
inline T __metal_simd_shuffle_rotate_up(T v, ushort d) { return metal::simd_shuffle_rotate_up(v, d); }
template <class T>
inline T __metal_simd_shuffle_xor(T v, ushort m) { return metal::simd_shuffle_xor(v, m); }
template <class T>
inline T __metal_simd_shuffle_and_fill_down(T v, T fill, ushort d, ushort modulo) {
  return metal::simd_shuffle_and_fill_down(v, fill, d, modulo);
}
template <class T>
inline T __metal_simd_shuffle_and_fill_up(T v, T fill, ushort d, ushort modulo) {
  return metal::simd_shuffle_and_fill_up(v, fill, d, modulo);
}
template <class T>
inline T __metal_simd_max(T v) { return metal::simd_max(v); }
template <class T>
inline T __metal_simd_min(T v) { return metal::simd_min(v); }
template <class T>
inline T __metal_simd_sum(T v) { return metal::simd_sum(v); }
template <class T>
inline T __metal_simd_product(T v) { return metal::simd_product(v); }
template <class T>
inline T __metal_simd_xor(T v) { return metal::simd_xor(v); }
template <class T>
inline T __metal_simd_prefix_inclusive_sum(T v) { return metal::simd_prefix_inclusive_sum(v); }
template <class T>
inline T __metal_simd_prefix_exclusive_sum(T v) { return metal::simd_prefix_exclusive_sum(v); }
template <class T>
inline T __metal_simd_prefix_inclusive_product(T v) { return metal::simd_prefix_inclusive_product(v); }
template <class T>
inline T __metal_simd_prefix_exclusive_product(T v) { return metal::simd_prefix_exclusive_product(v); }
