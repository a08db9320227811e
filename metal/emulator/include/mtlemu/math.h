// MSL math library (metal::, metal::fast::, metal::precise::).
//
// Functions are templates over float/half/bfloat scalars and vectors; half
// and bfloat are evaluated in float and rounded once, which is at least as
// accurate as the GPU. No <cmath> on purpose: its global ::abs/::exp would be
// ambiguous with metal:: under `using namespace metal`.
#pragma once
#include "mtlemu/types.h"

namespace metal {

namespace detail {
template <class T, class F>
inline T map1(T x, F f) {
  if constexpr (mtlemu::is_vector_v<T>) {
    T r;
    for (int i = 0; i < mtlemu::vec_size_v<T>; ++i) r[i] = f(x[i]);
    return r;
  } else {
    return f(x);
  }
}
template <class T, class F>
inline T map2(T x, T y, F f) {
  if constexpr (mtlemu::is_vector_v<T>) {
    T r;
    for (int i = 0; i < mtlemu::vec_size_v<T>; ++i) r[i] = f(x[i], y[i]);
    return r;
  } else {
    return f(x, y);
  }
}
template <class T, class F>
inline T map3(T x, T y, T z, F f) {
  if constexpr (mtlemu::is_vector_v<T>) {
    T r;
    for (int i = 0; i < mtlemu::vec_size_v<T>; ++i) r[i] = f(x[i], y[i], z[i]);
    return r;
  } else {
    return f(x, y, z);
  }
}
template <class T>
concept Floating = mtlemu::is_floating_v<T>;
template <class T>
concept Arith = std::is_arithmetic_v<mtlemu::elem_t<T>> || mtlemu::is_floating_v<T>;
}  // namespace detail

#define MTLEMU_UNARY_FLOAT(name, expr)                                              \
  template <detail::Floating T>                                                    \
  inline T name(T x) {                                                             \
    using E = mtlemu::elem_t<T>;                                                   \
    return detail::map1(x, [](E e) -> E { float v = static_cast<float>(e); return static_cast<E>(expr); }); \
  }

MTLEMU_UNARY_FLOAT(exp, __builtin_expf(v))
MTLEMU_UNARY_FLOAT(exp2, __builtin_exp2f(v))
MTLEMU_UNARY_FLOAT(exp10, __builtin_powf(10.0f, v))
MTLEMU_UNARY_FLOAT(log, __builtin_logf(v))
MTLEMU_UNARY_FLOAT(log2, __builtin_log2f(v))
MTLEMU_UNARY_FLOAT(log10, __builtin_log10f(v))
MTLEMU_UNARY_FLOAT(log1p, __builtin_log1pf(v))
MTLEMU_UNARY_FLOAT(sqrt, __builtin_sqrtf(v))
MTLEMU_UNARY_FLOAT(rsqrt, 1.0f / __builtin_sqrtf(v))
MTLEMU_UNARY_FLOAT(sin, __builtin_sinf(v))
MTLEMU_UNARY_FLOAT(cos, __builtin_cosf(v))
MTLEMU_UNARY_FLOAT(tan, __builtin_tanf(v))
MTLEMU_UNARY_FLOAT(asin, __builtin_asinf(v))
MTLEMU_UNARY_FLOAT(acos, __builtin_acosf(v))
MTLEMU_UNARY_FLOAT(atan, __builtin_atanf(v))
MTLEMU_UNARY_FLOAT(sinh, __builtin_sinhf(v))
MTLEMU_UNARY_FLOAT(cosh, __builtin_coshf(v))
MTLEMU_UNARY_FLOAT(tanh, __builtin_tanhf(v))
MTLEMU_UNARY_FLOAT(asinh, __builtin_asinhf(v))
MTLEMU_UNARY_FLOAT(acosh, __builtin_acoshf(v))
MTLEMU_UNARY_FLOAT(atanh, __builtin_atanhf(v))
MTLEMU_UNARY_FLOAT(erf, __builtin_erff(v))
MTLEMU_UNARY_FLOAT(erfc, __builtin_erfcf(v))
MTLEMU_UNARY_FLOAT(floor, __builtin_floorf(v))
MTLEMU_UNARY_FLOAT(ceil, __builtin_ceilf(v))
MTLEMU_UNARY_FLOAT(round, __builtin_roundf(v))
MTLEMU_UNARY_FLOAT(rint, __builtin_rintf(v))
MTLEMU_UNARY_FLOAT(trunc, __builtin_truncf(v))
MTLEMU_UNARY_FLOAT(fabs, __builtin_fabsf(v))
MTLEMU_UNARY_FLOAT(fract, __builtin_fminf(v - __builtin_floorf(v), 0x1.fffffep-1f))
MTLEMU_UNARY_FLOAT(saturate, __builtin_fminf(__builtin_fmaxf(v, 0.0f), 1.0f))
MTLEMU_UNARY_FLOAT(sign, v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f))
MTLEMU_UNARY_FLOAT(sinpi, __builtin_sinf(v * 3.14159265358979323846f))
MTLEMU_UNARY_FLOAT(cospi, __builtin_cosf(v * 3.14159265358979323846f))
MTLEMU_UNARY_FLOAT(tanpi, __builtin_tanf(v * 3.14159265358979323846f))
#undef MTLEMU_UNARY_FLOAT

#define MTLEMU_BINARY_FLOAT(name, expr)                                                   \
  template <detail::Floating T>                                                          \
  inline T name(T x, T y) {                                                              \
    using E = mtlemu::elem_t<T>;                                                         \
    return detail::map2(x, y, [](E a, E b) -> E {                                        \
      float u = static_cast<float>(a), w = static_cast<float>(b);                        \
      return static_cast<E>(expr);                                                       \
    });                                                                                  \
  }
MTLEMU_BINARY_FLOAT(pow, __builtin_powf(u, w))
MTLEMU_BINARY_FLOAT(powr, __builtin_powf(u, w))
MTLEMU_BINARY_FLOAT(atan2, __builtin_atan2f(u, w))
MTLEMU_BINARY_FLOAT(fmod, __builtin_fmodf(u, w))
MTLEMU_BINARY_FLOAT(copysign, __builtin_copysignf(u, w))
MTLEMU_BINARY_FLOAT(fmax, __builtin_fmaxf(u, w))
MTLEMU_BINARY_FLOAT(fmin, __builtin_fminf(u, w))
MTLEMU_BINARY_FLOAT(step, w < u ? 0.0f : 1.0f)
MTLEMU_BINARY_FLOAT(divide, u / w)
MTLEMU_BINARY_FLOAT(nextafter, __builtin_nextafterf(u, w))
#undef MTLEMU_BINARY_FLOAT

template <detail::Floating T>
inline T fma(T a, T b, T c) {
  using E = mtlemu::elem_t<T>;
  return detail::map3(a, b, c, [](E x, E y, E z) -> E {
    return static_cast<E>(__builtin_fmaf(float(x), float(y), float(z)));
  });
}
template <detail::Floating T>
inline T mad(T a, T b, T c) { return fma(a, b, c); }
template <detail::Floating T>
inline T fmax3(T a, T b, T c) { return fmax(fmax(a, b), c); }
template <detail::Floating T>
inline T fmin3(T a, T b, T c) { return fmin(fmin(a, b), c); }
template <detail::Floating T>
inline T fmedian3(T a, T b, T c) { return fmax(fmin(a, b), fmin(fmax(a, b), c)); }
template <detail::Floating T>
inline T ldexp(T x, int k) { return static_cast<T>(__builtin_ldexpf(float(x), k)); }
template <detail::Floating T>
inline T frexp(T x, int& exponent) { return static_cast<T>(__builtin_frexpf(float(x), &exponent)); }

// max/min follow fmax/fmin for floating types (NaN-ignoring) as in MSL.
template <detail::Arith T>
inline T max(T x, T y) {
  using E = mtlemu::elem_t<T>;
  return detail::map2(x, y, [](E a, E b) -> E {
    if constexpr (mtlemu::is_floating_v<E>) return static_cast<E>(__builtin_fmaxf(float(a), float(b)));
    else return a > b ? a : b;
  });
}
template <detail::Arith T>
inline T min(T x, T y) {
  using E = mtlemu::elem_t<T>;
  return detail::map2(x, y, [](E a, E b) -> E {
    if constexpr (mtlemu::is_floating_v<E>) return static_cast<E>(__builtin_fminf(float(a), float(b)));
    else return a < b ? a : b;
  });
}
// Vector/scalar mixes (max(v, 0.0f)) splat the scalar, as MSL does.
template <class V>
  requires mtlemu::is_vector_v<V>
inline V max(V x, mtlemu::elem_t<V> y) { return max(x, V(y)); }
template <class V>
  requires mtlemu::is_vector_v<V>
inline V min(V x, mtlemu::elem_t<V> y) { return min(x, V(y)); }

template <detail::Arith T>
inline T clamp(T x, T lo, T hi) { return min(max(x, lo), hi); }
template <class V>
  requires mtlemu::is_vector_v<V>
inline V clamp(V x, mtlemu::elem_t<V> lo, mtlemu::elem_t<V> hi) { return clamp(x, V(lo), V(hi)); }

template <detail::Arith T>
inline T abs(T x) {
  using E = mtlemu::elem_t<T>;
  return detail::map1(x, [](E e) -> E {
    if constexpr (mtlemu::is_floating_v<E>) return static_cast<E>(__builtin_fabsf(float(e)));
    else if constexpr (std::is_signed_v<E>) return e < 0 ? E(-e) : e;
    else return e;
  });
}

template <detail::Floating T>
inline T mix(T x, T y, T a) { return x + (y - x) * a; }
template <class V>
  requires mtlemu::is_vector_v<V>
inline V mix(V x, V y, mtlemu::elem_t<V> a) { return mix(x, y, V(a)); }

template <detail::Floating T>
inline T smoothstep(T e0, T e1, T x) {
  T t = clamp((x - e0) / (e1 - e0), T(0), T(1));
  return t * t * (T(3) - T(2) * t);
}

template <class T>
inline bool isnan(T x) requires(!mtlemu::is_vector_v<T>) { return __builtin_isnan(float(x)); }
template <class T>
inline bool isinf(T x) requires(!mtlemu::is_vector_v<T>) { return __builtin_isinf(float(x)); }
template <class T>
inline bool isfinite(T x) requires(!mtlemu::is_vector_v<T>) { return __builtin_isfinite(float(x)); }
template <class T>
inline bool signbit(T x) requires(!mtlemu::is_vector_v<T>) { return __builtin_signbit(float(x)); }

// ---- geometric
template <class V>
  requires mtlemu::is_vector_v<V>
inline mtlemu::elem_t<V> dot(V a, V b) {
  using E = mtlemu::elem_t<V>;
  E s = E(0);
  for (int i = 0; i < mtlemu::vec_size_v<V>; ++i) s += a[i] * b[i];
  return s;
}
template <class V>
  requires mtlemu::is_vector_v<V>
inline mtlemu::elem_t<V> length(V a) { return sqrt(dot(a, a)); }
template <class V>
  requires mtlemu::is_vector_v<V>
inline V normalize(V a) { return a * rsqrt(dot(a, a)); }
template <class V>
  requires(mtlemu::vec_size_v<V> == 3)
inline V cross(V a, V b) { return a.yzx * b.zxy - a.zxy * b.yzx; }

// ---- relational
template <class T>
inline bool all(T v) {
  if constexpr (mtlemu::is_vector_v<T>) {
    for (int i = 0; i < mtlemu::vec_size_v<T>; ++i)
      if (!v[i]) return false;
    return true;
  } else {
    return bool(v);
  }
}
template <class T>
inline bool any(T v) {
  if constexpr (mtlemu::is_vector_v<T>) {
    for (int i = 0; i < mtlemu::vec_size_v<T>; ++i)
      if (v[i]) return true;
    return false;
  } else {
    return bool(v);
  }
}
// select(a, b, c): c ? b : a, per component.
template <class T, class C>
inline T select(T a, T b, C c) {
  if constexpr (mtlemu::is_vector_v<T>) {
    T r;
    for (int i = 0; i < mtlemu::vec_size_v<T>; ++i) {
      bool ci;
      if constexpr (mtlemu::is_vector_v<C>) ci = c[i] != 0;
      else ci = bool(c);
      r[i] = ci ? b[i] : a[i];
    }
    return r;
  } else {
    return c ? b : a;
  }
}

// ---- integer
template <class T>
inline T popcount(T x) {
  using E = mtlemu::elem_t<T>;
  return detail::map1(x, [](E e) -> E { return E(__builtin_popcountll((unsigned long long)std::make_unsigned_t<E>(e))); });
}
template <class T>
inline T clz(T x) {
  using E = mtlemu::elem_t<T>;
  return detail::map1(x, [](E e) -> E {
    auto u = (unsigned long long)std::make_unsigned_t<E>(e);
    return u == 0 ? E(sizeof(E) * 8) : E(__builtin_clzll(u) - (64 - sizeof(E) * 8));
  });
}
template <class T>
inline T ctz(T x) {
  using E = mtlemu::elem_t<T>;
  return detail::map1(x, [](E e) -> E {
    auto u = (unsigned long long)std::make_unsigned_t<E>(e);
    return u == 0 ? E(sizeof(E) * 8) : E(__builtin_ctzll(u));
  });
}
template <class T>
inline T reverse_bits(T x) {
  using E = mtlemu::elem_t<T>;
  return detail::map1(x, [](E e) -> E {
    std::make_unsigned_t<E> u = e, r = 0;
    for (unsigned i = 0; i < sizeof(E) * 8; ++i) r |= ((u >> i) & 1) << (sizeof(E) * 8 - 1 - i);
    return E(r);
  });
}
template <class T>
inline T mulhi(T a, T b) {
  using E = mtlemu::elem_t<T>;
  return detail::map2(a, b, [](E x, E y) -> E {
    if constexpr (std::is_signed_v<E>) return E((long long)(x) * (long long)(y) >> (sizeof(E) * 8));
    else return E((unsigned long long)(x) * (unsigned long long)(y) >> (sizeof(E) * 8));
  });
}
template <class T>
inline T extract_bits(T x, uint offset, uint bits) {
  using E = mtlemu::elem_t<T>;
  return detail::map1(x, [=](E e) -> E {
    if (bits == 0) return E(0);
    using U = std::make_unsigned_t<E>;
    U mask = bits >= sizeof(E) * 8 ? U(~U(0)) : U((U(1) << bits) - 1);
    return E((U(e) >> offset) & mask);
  });
}

// ---- bit casts
template <class To, class From>
inline To as_type(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "as_type requires equal sizes");
  return __builtin_bit_cast(To, x);
}

namespace fast {
using metal::abs; using metal::acos; using metal::asin; using metal::atan; using metal::atan2;
using metal::ceil; using metal::clamp; using metal::cos; using metal::cosh; using metal::divide;
using metal::exp; using metal::exp10; using metal::exp2; using metal::fabs; using metal::floor;
using metal::fma; using metal::fmax; using metal::fmin; using metal::fmod; using metal::fract;
using metal::log; using metal::log10; using metal::log2; using metal::max; using metal::min;
using metal::pow; using metal::powr; using metal::rint; using metal::round; using metal::rsqrt;
using metal::saturate; using metal::sign; using metal::sin; using metal::sinh; using metal::sqrt;
using metal::tan; using metal::tanh; using metal::trunc; using metal::erf; using metal::length;
using metal::normalize; using metal::dot; using metal::sinpi; using metal::cospi; using metal::tanpi;
using metal::fmax3; using metal::fmin3; using metal::fmedian3; using metal::ldexp;
}  // namespace fast
namespace precise {
using namespace fast;
}  // namespace precise

}  // namespace metal
