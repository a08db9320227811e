// MSL scalar and vector types mapped onto clang builtins.
//
// Vectors are clang ext_vector_type rather than wrapper structs: that gives
// MSL swizzles (.xy, .rgba, .s0, swizzle assignment) and element-wise
// operators for free, with the layout and cost of the GPU types. The MSL
// constructor forms clang lacks are provided by mtlemu::vctor, which the
// pre-pass (mtlpp.py) substitutes for `float4(...)`-style calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

typedef _Float16 half;
typedef __bf16 bfloat;
typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef unsigned long ulong;

#define MTLEMU_VECTOR_TYPES(T, name)                           \
  typedef T name##2 __attribute__((ext_vector_type(2)));       \
  typedef T name##3 __attribute__((ext_vector_type(3)));       \
  typedef T name##4 __attribute__((ext_vector_type(4)));       \
  typedef T name##8 __attribute__((ext_vector_type(8)));       \
  typedef T name##16 __attribute__((ext_vector_type(16)));

MTLEMU_VECTOR_TYPES(float, float)
MTLEMU_VECTOR_TYPES(half, half)
MTLEMU_VECTOR_TYPES(bfloat, bfloat)
MTLEMU_VECTOR_TYPES(int, int)
MTLEMU_VECTOR_TYPES(uint, uint)
MTLEMU_VECTOR_TYPES(short, short)
MTLEMU_VECTOR_TYPES(ushort, ushort)
MTLEMU_VECTOR_TYPES(char, char)
MTLEMU_VECTOR_TYPES(uchar, uchar)
MTLEMU_VECTOR_TYPES(long, long)
MTLEMU_VECTOR_TYPES(ulong, ulong)
MTLEMU_VECTOR_TYPES(bool, bool)
#undef MTLEMU_VECTOR_TYPES

namespace metal {
template <class T, int N>
using vec = T __attribute__((ext_vector_type(N)));

// MSL also spells the vector types metal::float4 etc.
#define MTLEMU_USING_VECTORS(name) using ::name##2; using ::name##3; using ::name##4; using ::name##8; using ::name##16;
MTLEMU_USING_VECTORS(float)
MTLEMU_USING_VECTORS(half)
MTLEMU_USING_VECTORS(bfloat)
MTLEMU_USING_VECTORS(int)
MTLEMU_USING_VECTORS(uint)
MTLEMU_USING_VECTORS(short)
MTLEMU_USING_VECTORS(ushort)
MTLEMU_USING_VECTORS(char)
MTLEMU_USING_VECTORS(uchar)
MTLEMU_USING_VECTORS(long)
MTLEMU_USING_VECTORS(ulong)
MTLEMU_USING_VECTORS(bool)
#undef MTLEMU_USING_VECTORS
}  // namespace metal

namespace mtlemu {

template <class T>
struct vec_traits {
  using elem = T;
  static constexpr int size = 1;
  static constexpr bool is_vector = false;
};
template <class T, int N>
struct vec_traits<T __attribute__((ext_vector_type(N)))> {
  using elem = T;
  static constexpr int size = N;
  static constexpr bool is_vector = true;
};
template <class T>
struct vec_traits<const T> : vec_traits<T> {};

template <class T>
inline constexpr bool is_vector_v = vec_traits<std::remove_cvref_t<T>>::is_vector;
template <class T>
using elem_t = typename vec_traits<std::remove_cvref_t<T>>::elem;
template <class T>
inline constexpr int vec_size_v = vec_traits<std::remove_cvref_t<T>>::size;

template <class T>
inline constexpr bool is_floating_v =
    std::is_same_v<elem_t<T>, float> || std::is_same_v<elem_t<T>, half> || std::is_same_v<elem_t<T>, bfloat>;

// Element-wise conversion that follows MSL (value conversion; clang's cast
// between same-sized vectors would reinterpret bits instead). Everything here
// is constexpr (vectors are built with brace initialisation), so
// `constexpr float2 k = float2(1, 2);` works.
// Scalar conversion with MSL rules: clang refuses any conversion between
// _Float16 and __bf16 (their ranks are unordered), MSL allows explicit ones;
// go through float, which represents both exactly.
template <class T, class A>
constexpr T fp_cast(A a) {  // by value: MSL conversion operators are often non-const
  using S = std::remove_cvref_t<A>;
  if constexpr ((std::is_same_v<T, half> && std::is_same_v<S, bfloat>) ||
                (std::is_same_v<T, bfloat> && std::is_same_v<S, half>)) {
    return static_cast<T>(static_cast<float>(a));
  } else {
    return static_cast<T>(a);
  }
}

// Vector component access usable in constant expressions (clang does not
// constant-evaluate vector subscripts, but it does bit_cast vectors).
template <class V>
struct vec_storage {
  elem_t<V> v[sizeof(V) / sizeof(elem_t<V>)];
};
template <int K, class V>
constexpr elem_t<V> get(const V& v) {
  if (__builtin_is_constant_evaluated()) return __builtin_bit_cast(vec_storage<V>, v).v[K];
  return v[K];
}

template <class V, class U, size_t... I>
constexpr V convert_each(const U& u, std::index_sequence<I...>) {
  return V{fp_cast<elem_t<V>>(get<int(I)>(u))...};
}
template <class V, class U>
constexpr V convert(const U& u) {
  if constexpr (is_vector_v<V> && is_vector_v<U>) {
    static_assert(vec_size_v<V> == vec_size_v<U>, "vector conversion needs equal component counts");
    return convert_each<V>(u, std::make_index_sequence<vec_size_v<V>>{});
  } else if constexpr (is_vector_v<V>) {
    return V(fp_cast<elem_t<V>>(u));  // scalar splat
  } else {
    static_assert(!is_vector_v<U>, "cannot convert a vector to a scalar");
    return fp_cast<V>(u);
  }
}

template <class... A>
inline constexpr int total_components = (vec_size_v<A> + ... + 0);

// Component K of the concatenation of args (scalars count as one component).
// K is a template parameter: clang only constant-evaluates vector subscripts
// with constant indices.
template <class E, int K, class A, class... Rest>
constexpr E component(const A& a, const Rest&... rest) {
  if constexpr (K < vec_size_v<A>) {
    if constexpr (is_vector_v<A>) return fp_cast<E>(get<K>(a));
    else return fp_cast<E>(a);
  } else if constexpr (sizeof...(Rest) > 0) {
    return component<E, K - vec_size_v<A>>(rest...);
  } else {
    return E(0);
  }
}
template <class V, class... A, size_t... I>
constexpr V concat(std::index_sequence<I...>, const A&... args) {
  return V{component<elem_t<V>, int(I)>(args...)...};
}

// MSL vector constructor: float4(x) splats a scalar or converts a vector,
// float4(a, b, c, d), float4(f2, f2), float4(f3, w) concatenate.
template <class V, class... A>
constexpr V vctor(const A&... args) {
  static_assert(is_vector_v<V>, "vctor target must be a vector type");
  if constexpr (sizeof...(A) == 0) {
    return V(elem_t<V>(0));
  } else if constexpr (sizeof...(A) == 1) {
    return convert<V>(args...);
  } else {
    static_assert(total_components<A...> == vec_size_v<V>, "vector constructor: wrong number of components");
    return concat<V>(std::make_index_sequence<vec_size_v<V>>{}, args...);
  }
}

// Explicit conversions the pre-pass routes here: `static_cast<X>(..)`, and
// functional casts `T(..)` whose type is a template parameter or
// half/bfloat. Vectors get MSL constructor semantics (a template's `T(x)`
// with T = uint4 would otherwise reinterpret a float4's bits), half<->bfloat
// goes through float, everything else is the plain C++ cast.
template <class T, class A>
constexpr decltype(auto) construct1(A&& a) {
  using S = std::remove_cvref_t<T>;
  if constexpr (!std::is_reference_v<T> &&
                (std::is_arithmetic_v<S> || std::is_same_v<S, half> || std::is_same_v<S, bfloat>)) {
    return fp_cast<std::remove_cv_t<T>>(a);
  } else {
    return static_cast<T>(std::forward<A>(a));
  }
}
// Arguments are taken by value (clang cannot bind references to vector
// elements such as `T(tid.y)`), except for casts to reference types.
template <class T, class... A>
  requires(!std::is_reference_v<T>)
constexpr T construct(A... a) {
  if constexpr (is_vector_v<T>) {
    return vctor<T>(a...);
  } else if constexpr (sizeof...(A) == 0) {
    return T{};
  } else if constexpr (sizeof...(A) == 1) {
    return construct1<T>(a...);
  } else {
    return T(a...);
  }
}
template <class T, class A>
  requires std::is_reference_v<T>
constexpr T construct(A&& a) {
  return static_cast<T>(std::forward<A>(a));
}

// `(float4)x` C-style casts are rewritten to `mtlemu::vcast<float4>()->*x`:
// ->* binds tighter than every binary operator, so the operand is the same
// expression the cast would have applied to.
template <class V>
struct vcast {};
template <class V, class U>
constexpr V operator->*(vcast<V>, const U& u) {
  return convert<V>(u);
}
// `-(float4)x` becomes `-vcast<float4>()->*x`: the minus lands on the tag.
template <class V>
struct vcast_negated {};
template <class V>
constexpr vcast_negated<V> operator-(vcast<V>) {
  return {};
}
template <class V>
constexpr vcast<V> operator+(vcast<V> c) {
  return c;
}
template <class V, class U>
constexpr V operator->*(vcast_negated<V>, const U& u) {
  return -convert<V>(u);
}

}  // namespace mtlemu
