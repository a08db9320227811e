// MSL atomics. Threadgroups run on one OS thread with cooperative lanes, so
// a plain read-modify-write is atomic with respect to other lanes. Atomic
// accesses are bounds checked in checked builds but deliberately excluded
// from race tracking.
#pragma once
#include "mtlemu/math.h"
#include "mtlemu/rt.h"

#define MTLEMU_AS_DEVICE __attribute__((address_space(1)))
#define MTLEMU_AS_CONSTANT __attribute__((address_space(2)))
#define MTLEMU_AS_THREADGROUP __attribute__((address_space(3)))

namespace metal {

enum memory_order {
  memory_order_relaxed,
  memory_order_acquire,
  memory_order_release,
  memory_order_acq_rel,
  memory_order_seq_cst,
};
enum class memory_scope { memory_scope_thread, memory_scope_simdgroup, memory_scope_threadgroup, memory_scope_device };

template <class T>
struct atomic {
  T __value;
};
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<bool> atomic_bool;
typedef atomic<float> atomic_float;
typedef atomic<ulong> atomic_ulong;

namespace detail {
template <class T>
inline T* atomic_ptr(volatile MTLEMU_AS_DEVICE atomic<T>* o) {
#ifdef MTLEMU_CHECKED
  return static_cast<T*>(mtlemu_check_atomic((void*)o, sizeof(T), 1));
#else
  return (T*)(void*)o;
#endif
}
template <class T>
inline T* atomic_ptr(volatile MTLEMU_AS_THREADGROUP atomic<T>* o) {
#ifdef MTLEMU_CHECKED
  return static_cast<T*>(mtlemu_check_atomic((void*)o, sizeof(T), 3));
#else
  return (T*)(void*)o;
#endif
}
template <class T>
inline T* atomic_ptr(volatile atomic<T>* o) {
  return (T*)(void*)o;
}
template <class T>
using atomic_value_t = std::remove_cv_t<decltype(T::__value)>;
}  // namespace detail

// One template per operation; P is the (address-space qualified) pointer.
#define MTLEMU_ATOMIC_RMW(name, expr)                                                  \
  template <class P, class V>                                                         \
  inline auto name(P obj, V operand, memory_order = memory_order_relaxed,             \
                   memory_scope = memory_scope::memory_scope_device) {                 \
    auto* p = detail::atomic_ptr(obj);                                                \
    using T = std::remove_pointer_t<decltype(p)>;                                      \
    T old = *p;                                                                       \
    T arg = static_cast<T>(operand);                                                  \
    *p = static_cast<T>(expr);                                                        \
    return old;                                                                       \
  }
MTLEMU_ATOMIC_RMW(atomic_fetch_add_explicit, old + arg)
MTLEMU_ATOMIC_RMW(atomic_fetch_sub_explicit, old - arg)
MTLEMU_ATOMIC_RMW(atomic_fetch_and_explicit, old & arg)
MTLEMU_ATOMIC_RMW(atomic_fetch_or_explicit, old | arg)
MTLEMU_ATOMIC_RMW(atomic_fetch_xor_explicit, old ^ arg)
MTLEMU_ATOMIC_RMW(atomic_fetch_max_explicit, old > arg ? old : arg)
MTLEMU_ATOMIC_RMW(atomic_fetch_min_explicit, old < arg ? old : arg)
MTLEMU_ATOMIC_RMW(atomic_exchange_explicit, arg)
#undef MTLEMU_ATOMIC_RMW

template <class P>
inline auto atomic_load_explicit(P obj, memory_order = memory_order_relaxed,
                                 memory_scope = memory_scope::memory_scope_device) {
  return *detail::atomic_ptr(obj);
}
template <class P, class V>
inline void atomic_store_explicit(P obj, V value, memory_order = memory_order_relaxed,
                                  memory_scope = memory_scope::memory_scope_device) {
  auto* p = detail::atomic_ptr(obj);
  *p = static_cast<std::remove_pointer_t<decltype(p)>>(value);
}
template <class P, class E, class V>
inline bool atomic_compare_exchange_weak_explicit(P obj, E expected, V desired, memory_order = memory_order_relaxed,
                                                  memory_order = memory_order_relaxed,
                                                  memory_scope = memory_scope::memory_scope_device) {
  auto* p = detail::atomic_ptr(obj);
  using T = std::remove_pointer_t<decltype(p)>;
  if (*p == *expected) {
    *p = static_cast<T>(desired);
    return true;
  }
  *expected = *p;
  return false;
}
template <class P, class E, class V>
inline bool atomic_compare_exchange_strong_explicit(P obj, E expected, V desired, memory_order s = memory_order_relaxed,
                                                    memory_order f = memory_order_relaxed) {
  return atomic_compare_exchange_weak_explicit(obj, expected, desired, s, f);
}

}  // namespace metal
