// Barriers and simdgroup collectives.
//
// A collective is an exchange: each lane deposits its value in its slot of
// the simdgroup's exchange area, then blocks in mtlemu_simd_arrive until all
// live lanes of the simdgroup have arrived; afterwards every lane reads what
// it needs. Lanes that already returned from the kernel are inactive, as on
// the GPU. Reductions run in lane order, so results are deterministic.
#pragma once
#include "mtlemu/math.h"
#include "mtlemu/rt.h"

namespace metal {

enum class mem_flags : unsigned {
  mem_none = 0,
  mem_device = 1,
  mem_threadgroup = 2,
  mem_texture = 4,
  mem_threadgroup_imageblock = 8,
  mem_object_data = 16,
};
constexpr mem_flags operator|(mem_flags a, mem_flags b) {
  return static_cast<mem_flags>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}

inline void threadgroup_barrier(mem_flags = mem_flags::mem_none) { mtlemu_threadgroup_barrier(); }
inline void simdgroup_barrier(mem_flags = mem_flags::mem_none) { mtlemu_simd_arrive(mtlemu::kOpSimdBarrier); }

namespace detail {

template <class T>
struct Exchange {
  const unsigned char* slots;
  uint me;
  uint32_t mask;
  bool active(uint lane) const { return lane < mtlemu::kSimdWidth && (mask >> lane) & 1u; }
  T at(uint lane) const {
    T v;
    __builtin_memcpy(&v, slots + lane * mtlemu::kSlotBytes, sizeof(T));
    return v;
  }
  uint first() const { return mask ? __builtin_ctz(mask) : 0; }
};

template <class T>
inline Exchange<T> exchange(const T& v, int op) {
  static_assert(sizeof(T) <= mtlemu::kSlotBytes, "value too large for a simd collective");
  unsigned char* slots = mtlemu_simd_slots();
  uint me = mtlemu_lane()->thread_index_in_simdgroup;
  __builtin_memcpy(slots + me * mtlemu::kSlotBytes, &v, sizeof(T));
  uint32_t mask = mtlemu_simd_arrive(op);
  return {slots, me, mask};
}

template <class T>
inline T from_lane(const Exchange<T>& x, int src, T own) {
  return src >= 0 && x.active(uint(src)) ? x.at(uint(src)) : own;
}

template <class T, class F>
inline T reduce(const T& v, int op, F f, uint lo = 0, uint hi = mtlemu::kSimdWidth) {
  auto x = exchange(v, op);
  bool first = true;
  T acc{};
  for (uint l = lo; l < hi; ++l) {
    if (!x.active(l)) continue;
    acc = first ? x.at(l) : f(acc, x.at(l));
    first = false;
  }
  return acc;
}

template <class T, class F>
inline T prefix(const T& v, int op, F f, bool inclusive, T identity) {
  auto x = exchange(v, op);
  T acc = identity;
  for (uint l = 0; l < x.me + (inclusive ? 1 : 0); ++l)
    if (x.active(l)) acc = f(acc, x.at(l));
  return acc;
}

}  // namespace detail

// ---- shuffles
template <class T>
inline T simd_shuffle(T v, ushort lane) {
  auto x = detail::exchange(v, mtlemu::kOpShuffle);
  return detail::from_lane(x, lane, v);
}
template <class T>
inline T simd_broadcast(T v, ushort lane) {
  auto x = detail::exchange(v, mtlemu::kOpBroadcast);
  return detail::from_lane(x, lane, v);
}
template <class T>
inline T simd_broadcast_first(T v) {
  auto x = detail::exchange(v, mtlemu::kOpBroadcastFirst);
  return x.at(x.first());
}
template <class T>
inline T simd_shuffle_xor(T v, ushort mask) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleXor);
  return detail::from_lane(x, int(x.me ^ (mask & 31u)), v);
}
// Lanes whose source is out of range keep their own value.
template <class T>
inline T simd_shuffle_down(T v, ushort delta) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleDown);
  return detail::from_lane(x, int(x.me + delta), v);
}
template <class T>
inline T simd_shuffle_up(T v, ushort delta) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleUp);
  return detail::from_lane(x, int(x.me) - int(delta), v);
}
template <class T>
inline T simd_shuffle_rotate_down(T v, ushort delta) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleDown);
  return detail::from_lane(x, int((x.me + delta) % mtlemu::kSimdWidth), v);
}
template <class T>
inline T simd_shuffle_rotate_up(T v, ushort delta) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleUp);
  return detail::from_lane(x, int((x.me + mtlemu::kSimdWidth - (delta % mtlemu::kSimdWidth)) % mtlemu::kSimdWidth), v);
}
// Within segments of `modulo` lanes (default: the whole simdgroup), lanes
// shifted past the segment end read `fill` from the lane that many places
// into the segment, as in MSL.
template <class T>
inline T simd_shuffle_and_fill_down(T v, T fill, ushort delta, ushort modulo = mtlemu::kSimdWidth) {
  struct Pair {
    T value, fill;
  };
  auto x = detail::exchange(Pair{v, fill}, mtlemu::kOpShuffleDown);
  uint base = x.me - x.me % modulo, src = x.me % modulo + delta;
  if (src < modulo) return x.active(base + src) ? x.at(base + src).value : v;
  src -= modulo;
  return x.active(base + src) ? x.at(base + src).fill : fill;
}
template <class T>
inline T simd_shuffle_and_fill_up(T v, T fill, ushort delta, ushort modulo = mtlemu::kSimdWidth) {
  struct Pair {
    T value, fill;
  };
  auto x = detail::exchange(Pair{v, fill}, mtlemu::kOpShuffleUp);
  uint base = x.me - x.me % modulo;
  int src = int(x.me % modulo) - int(delta);
  if (src >= 0) return x.active(base + src) ? x.at(base + src).value : v;
  src += modulo;
  return x.active(base + src) ? x.at(base + src).fill : fill;
}

// ---- reductions
template <class T>
inline T simd_sum(T v) { return detail::reduce(v, mtlemu::kOpSum, [](T a, T b) { return T(a + b); }); }
template <class T>
inline T simd_product(T v) { return detail::reduce(v, mtlemu::kOpProduct, [](T a, T b) { return T(a * b); }); }
template <class T>
inline T simd_max(T v) { return detail::reduce(v, mtlemu::kOpMax, [](T a, T b) { return metal::max(a, b); }); }
template <class T>
inline T simd_min(T v) { return detail::reduce(v, mtlemu::kOpMin, [](T a, T b) { return metal::min(a, b); }); }
namespace detail {
// Bitwise reductions act on the bits, so they also accept floating types
// (MLX's bfloat wrappers instantiate them for float).
template <class T, class F>
inline T bitwise(T a, T b, F f) {
  if constexpr (std::is_integral_v<mtlemu::elem_t<T>>) {
    return T(f(a, b));
  } else {
    using B = std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
    return __builtin_bit_cast(T, B(f(__builtin_bit_cast(B, a), __builtin_bit_cast(B, b))));
  }
}
}  // namespace detail
template <class T>
inline T simd_and(T v) {
  return detail::reduce(v, mtlemu::kOpAnd, [](T a, T b) { return detail::bitwise(a, b, [](auto x, auto y) { return x & y; }); });
}
template <class T>
inline T simd_or(T v) {
  return detail::reduce(v, mtlemu::kOpOr, [](T a, T b) { return detail::bitwise(a, b, [](auto x, auto y) { return x | y; }); });
}
template <class T>
inline T simd_xor(T v) {
  return detail::reduce(v, mtlemu::kOpXor, [](T a, T b) { return detail::bitwise(a, b, [](auto x, auto y) { return x ^ y; }); });
}

template <class T>
inline T simd_prefix_inclusive_sum(T v) {
  return detail::prefix(v, mtlemu::kOpPrefixInclusive, [](T a, T b) { return T(a + b); }, true, T(0));
}
template <class T>
inline T simd_prefix_exclusive_sum(T v) {
  return detail::prefix(v, mtlemu::kOpPrefixExclusive, [](T a, T b) { return T(a + b); }, false, T(0));
}
template <class T>
inline T simd_prefix_inclusive_product(T v) {
  return detail::prefix(v, mtlemu::kOpPrefixInclusive, [](T a, T b) { return T(a * b); }, true, T(1));
}
template <class T>
inline T simd_prefix_exclusive_product(T v) {
  return detail::prefix(v, mtlemu::kOpPrefixExclusive, [](T a, T b) { return T(a * b); }, false, T(1));
}

// ---- votes
struct simd_vote {
  using vote_t = uint64_t;
  vote_t bits = 0;
  constexpr simd_vote() = default;
  constexpr explicit simd_vote(vote_t v) : bits(v) {}
  constexpr explicit operator vote_t() const { return bits; }
  constexpr bool all() const { return bits == ~vote_t(0) >> (64 - mtlemu::kSimdWidth); }
  constexpr bool any() const { return bits != 0; }
};

inline simd_vote simd_ballot(bool pred) {
  auto x = detail::exchange(pred, mtlemu::kOpBallot);
  uint64_t bits = 0;
  for (uint l = 0; l < mtlemu::kSimdWidth; ++l)
    if (x.active(l) && x.at(l)) bits |= uint64_t(1) << l;
  return simd_vote(bits);
}
inline simd_vote simd_active_threads_mask() {
  auto x = detail::exchange(true, mtlemu::kOpBallot);
  return simd_vote(x.mask);
}
inline bool simd_all(bool pred) {
  return detail::reduce(pred, mtlemu::kOpAll, [](bool a, bool b) { return a && b; });
}
inline bool simd_any(bool pred) {
  return detail::reduce(pred, mtlemu::kOpAny, [](bool a, bool b) { return a || b; });
}
inline bool simd_is_first() {
  auto x = detail::exchange(true, mtlemu::kOpBroadcastFirst);
  return x.me == x.first();
}

// ---- quad (4-lane) variants
template <class T>
inline T quad_shuffle(T v, ushort lane) {
  auto x = detail::exchange(v, mtlemu::kOpShuffle);
  return detail::from_lane(x, int((x.me & ~3u) | (lane & 3u)), v);
}
template <class T>
inline T quad_broadcast(T v, ushort lane) { return quad_shuffle(v, lane); }
template <class T>
inline T quad_shuffle_xor(T v, ushort mask) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleXor);
  return detail::from_lane(x, int((x.me & ~3u) | ((x.me ^ mask) & 3u)), v);
}
template <class T>
inline T quad_shuffle_down(T v, ushort delta) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleDown);
  uint q = x.me & 3u;
  return q + delta < 4 ? detail::from_lane(x, int(x.me + delta), v) : v;
}
template <class T>
inline T quad_shuffle_up(T v, ushort delta) {
  auto x = detail::exchange(v, mtlemu::kOpShuffleUp);
  uint q = x.me & 3u;
  return q >= delta ? detail::from_lane(x, int(x.me - delta), v) : v;
}
template <class T>
inline T quad_sum(T v) {
  uint base = mtlemu_lane()->thread_index_in_simdgroup & ~3u;
  return detail::reduce(v, mtlemu::kOpSum, [](T a, T b) { return T(a + b); }, base, base + 4);
}
template <class T>
inline T quad_max(T v) {
  uint base = mtlemu_lane()->thread_index_in_simdgroup & ~3u;
  return detail::reduce(v, mtlemu::kOpMax, [](T a, T b) { return metal::max(a, b); }, base, base + 4);
}
template <class T>
inline T quad_min(T v) {
  uint base = mtlemu_lane()->thread_index_in_simdgroup & ~3u;
  return detail::reduce(v, mtlemu::kOpMin, [](T a, T b) { return metal::min(a, b); }, base, base + 4);
}

}  // namespace metal
