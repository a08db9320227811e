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
// between same-sized vectors would reinterpret bits instead).
template <class V, class U>
inline V convert(U u) {
  if constexpr (is_vector_v<V> && is_vector_v<U>) {
    static_assert(vec_size_v<V> == vec_size_v<U>, "vector conversion needs equal component counts");
    V r;
    for (int i = 0; i < vec_size_v<V>; ++i) r[i] = static_cast<elem_t<V>>(u[i]);
    return r;
  } else if constexpr (is_vector_v<V>) {
    return V(static_cast<elem_t<V>>(u));  // scalar splat
  } else {
    static_assert(!is_vector_v<U>, "cannot convert a vector to a scalar");
    return static_cast<V>(u);
  }
}

template <class E, int N, class A>
constexpr void vctor_append(E (&out)[N], int& k, const A& a) {
  if constexpr (is_vector_v<A>) {
    for (int i = 0; i < vec_size_v<A>; ++i) out[k++] = static_cast<E>(a[i]);
  } else {
    out[k++] = static_cast<E>(a);
  }
}

template <class... A>
inline constexpr int total_components = (vec_size_v<A> + ... + 0);

// MSL vector constructor: float4(x) splats a scalar or converts a vector,
// float4(a, b, c, d), float4(f2, f2), float4(f3, w) concatenate.
template <class V, class... A>
inline V vctor(const A&... args) {
  static_assert(is_vector_v<V>, "vctor target must be a vector type");
  using E = elem_t<V>;
  constexpr int N = vec_size_v<V>;
  if constexpr (sizeof...(A) == 0) {
    return V(E(0));
  } else if constexpr (sizeof...(A) == 1) {
    return convert<V>(args...);
  } else {
    static_assert(total_components<A...> == N, "vector constructor: wrong number of components");
    E vals[N];
    int k = 0;
    (vctor_append<E, N>(vals, k, args), ...);
    V r;
    for (int i = 0; i < N; ++i) r[i] = vals[i];
    return r;
  }
}

// `(float4)x` C-style casts are rewritten to `mtlemu::vcast<float4>()->*x`:
// ->* binds tighter than every binary operator, so the operand is the same
// expression the cast would have applied to.
template <class V>
struct vcast {};
template <class V, class U>
inline V operator->*(vcast<V>, const U& u) {
  return convert<V>(u);
}

}  // namespace mtlemu
