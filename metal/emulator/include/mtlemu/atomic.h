// MSL atomics, on device and threadgroup memory alike. Loads and failed
// compare-exchanges yield to other lanes (spin-waits make progress). They are compiled to
// LLVM atomic instructions, which the checked-build instrumentation leaves
// alone: atomics are bounds checked here but never reported as races.
#pragma once
#include "mtlemu/math.h"
#include "mtlemu/rt.h"

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
inline T* atomic_ptr(volatile atomic<T>* o) {
  void* p = const_cast<atomic<T>*>(o);
#ifdef MTLEMU_CHECKED
  p = mtlemu_check_atomic(p, sizeof(T));
#endif
  return static_cast<T*>(p);
}
template <class T>
using bits_t = std::conditional_t<sizeof(T) == 1, uint8_t,
               std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>>;

// Read-modify-write as a compare-exchange loop on the value's bits: works for
// every MSL atomic type (float included).
template <class T, class F>
inline T atomic_rmw(T* p, F f) {
  using B = bits_t<T>;
  B* bp = reinterpret_cast<B*>(p);
  B old_bits = __atomic_load_n(bp, __ATOMIC_RELAXED);
  for (;;) {
    T old = __builtin_bit_cast(T, old_bits);
    B new_bits = __builtin_bit_cast(B, static_cast<T>(f(old)));
    if (__atomic_compare_exchange_n(bp, &old_bits, new_bits, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      mtlemu_atomic_progress();
      return old;
    }
  }
}
}  // namespace detail

#define MTLEMU_ATOMIC_RMW(name, expr)                                                        \
  template <class T, class V>                                                               \
  inline T name(volatile atomic<T>* obj, V operand, memory_order = memory_order_relaxed,    \
                memory_scope = memory_scope::memory_scope_device) {                          \
    T arg = static_cast<T>(operand);                                                        \
    return detail::atomic_rmw(detail::atomic_ptr(obj), [&](T old) { return expr; });        \
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

template <class T>
inline T atomic_load_explicit(volatile atomic<T>* obj, memory_order = memory_order_relaxed,
                              memory_scope = memory_scope::memory_scope_device) {
  using B = detail::bits_t<T>;
  mtlemu_atomic_spin();
  return __builtin_bit_cast(T, __atomic_load_n(reinterpret_cast<B*>(detail::atomic_ptr(obj)), __ATOMIC_RELAXED));
}
template <class T, class V>
inline void atomic_store_explicit(volatile atomic<T>* obj, V value, memory_order = memory_order_relaxed,
                                  memory_scope = memory_scope::memory_scope_device) {
  using B = detail::bits_t<T>;
  __atomic_store_n(reinterpret_cast<B*>(detail::atomic_ptr(obj)), __builtin_bit_cast(B, static_cast<T>(value)),
                   __ATOMIC_RELAXED);
  mtlemu_atomic_progress();
}
template <class T, class V>
inline bool atomic_compare_exchange_weak_explicit(volatile atomic<T>* obj, T* expected, V desired,
                                                  memory_order = memory_order_relaxed,
                                                  memory_order = memory_order_relaxed,
                                                  memory_scope = memory_scope::memory_scope_device) {
  using B = detail::bits_t<T>;
  B exp_bits = __builtin_bit_cast(B, *expected);
  bool ok = __atomic_compare_exchange_n(reinterpret_cast<B*>(detail::atomic_ptr(obj)), &exp_bits,
                                        __builtin_bit_cast(B, static_cast<T>(desired)), false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED);
  *expected = __builtin_bit_cast(T, exp_bits);
  if (ok) mtlemu_atomic_progress();
  else mtlemu_atomic_spin();
  return ok;
}
template <class T, class V>
inline bool atomic_compare_exchange_strong_explicit(volatile atomic<T>* obj, T* expected, V desired,
                                                    memory_order s = memory_order_relaxed,
                                                    memory_order f = memory_order_relaxed) {
  return atomic_compare_exchange_weak_explicit(obj, expected, desired, s, f);
}

}  // namespace metal
