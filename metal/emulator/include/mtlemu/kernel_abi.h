// Binding of kernel parameters for the launch shims emitted by mtlpp.py.
// Every kernel gets a table of ArgRoles (from its MSL attributes); the shim
// materialises each parameter from the running launch according to the
// parameter's C++ type, so template kernels need no per-instantiation text.
#pragma once
#include <utility>

#include "mtlemu/rt.h"
#include "mtlemu/types.h"

namespace mtlemu {

template <class P>
inline P builtin_value(int which) {
  const LaneInfo* li = mtlemu_lane();
  uint32_t v[3] = {0, 0, 0};
  auto set3 = [&](const uint32_t* s) { v[0] = s[0], v[1] = s[1], v[2] = s[2]; };
  switch (which) {
    case kThreadPositionInGrid: set3(li->thread_position_in_grid); break;
    case kThreadPositionInThreadgroup: set3(li->thread_position_in_threadgroup); break;
    case kThreadgroupPositionInGrid: set3(li->threadgroup_position_in_grid); break;
    case kThreadsPerThreadgroup: set3(li->threads_per_threadgroup); break;
    case kThreadgroupsPerGrid: set3(li->threadgroups_per_grid); break;
    case kThreadsPerGrid: set3(li->threads_per_grid); break;
    case kThreadIndexInThreadgroup: v[0] = li->thread_index_in_threadgroup; break;
    case kThreadIndexInSimdgroup: v[0] = li->thread_index_in_simdgroup; break;
    case kSimdgroupIndexInThreadgroup: v[0] = li->simdgroup_index_in_threadgroup; break;
    case kSimdgroupsPerThreadgroup: v[0] = li->simdgroups_per_threadgroup; break;
    case kThreadsPerSimdgroup: v[0] = kSimdWidth; break;
    case kThreadIndexInQuadgroup: v[0] = li->thread_index_in_simdgroup % 4; break;
    case kQuadgroupIndexInThreadgroup: v[0] = li->thread_index_in_threadgroup / 4; break;
  }
  using V = std::remove_cv_t<P>;
  if constexpr (is_vector_v<V>) {
    V r;
    for (int i = 0; i < vec_size_v<V>; ++i) r[i] = static_cast<elem_t<V>>(v[i]);
    return r;
  } else {
    return static_cast<V>(v[0]);
  }
}

template <class P>
inline P bind_arg(const ArgRole& role) {
  if constexpr (std::is_pointer_v<P>) {
    if (role.kind == kArgThreadgroup) return (P)mtlemu_arg_threadgroup(role.index);
    if (role.optional) return (P)mtlemu_arg_buffer_optional(role.index, 0);
    return (P)mtlemu_arg_buffer(role.index, 0);
  } else if constexpr (std::is_reference_v<P>) {
    using V = std::remove_reference_t<P>;
    if (role.optional) return *(V*)mtlemu_arg_buffer_optional(role.index, sizeof(V));
    return *(V*)mtlemu_arg_buffer(role.index, sizeof(V));
  } else {
    return builtin_value<P>(role.index);
  }
}

template <class... A, size_t... I>
inline void invoke_with(void (*fn)(A...), const ArgRole* roles, std::index_sequence<I...>) {
  fn(bind_arg<A>(roles[I])...);
}

template <class... A>
constexpr size_t kernel_arity(void (*)(A...)) {
  return sizeof...(A);
}

template <auto Fn, const ArgRole* Roles>
void shim() {
  invoke_with(Fn, Roles, std::make_index_sequence<kernel_arity(Fn)>{});
}

struct Registrar {
  template <class... A>
  Registrar(const char* host_name, void (*)(A...), void (*shim_fn)(), const ArgRole* roles) {
    constexpr int n = static_cast<int>(sizeof...(A));
    int max_threads = roles[n].kind == kArgLimits ? roles[n].index : 0;
    mtlemu_register_kernel(host_name, shim_fn, roles, n, max_threads);
  }
};

}  // namespace mtlemu

#define MTLEMU_ROLES(kernel) __mtlemu_roles_##kernel
#define MTLEMU_CAT2(a, b) a##b
#define MTLEMU_CAT(a, b) MTLEMU_CAT2(a, b)
// MTLEMU_REGISTER("host_name", roles_array, function-id): emitted by mtlpp.py
// after kernels and in place of `template [[host_name(..)]] [[kernel]] ...;`
// instantiations (also inside macros, hence __COUNTER__).
#define MTLEMU_REGISTER(host_name, roles, ...)                                                       \
  static ::mtlemu::Registrar MTLEMU_CAT(mtlemu_registrar_, __COUNTER__)(                             \
      host_name, &__VA_ARGS__, &::mtlemu::shim<&__VA_ARGS__, roles>, roles)
