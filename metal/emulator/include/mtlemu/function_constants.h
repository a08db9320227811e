// [[function_constant(i)]] program-scope constants. The pre-pass turns
//   constant bool has_mask [[function_constant(3)]];
// into a FunctionConstant<bool> that reads the running launch's value each
// time it is used, and program-scope constants initialised from function
// constants into DerivedConstants that re-evaluate their initialiser, since
// a plain global would be initialised once when the module is loaded.
#pragma once
#include "mtlemu/rt.h"

namespace mtlemu {

template <class T>
struct FunctionConstant {
  int index;
  T value() const {
    double v;
    mtlemu_function_constant(index, &v);
    return static_cast<T>(v);
  }
  bool defined() const {
    double v;
    return mtlemu_function_constant(index, &v) != 0;
  }
  operator T() const { return value(); }
};

template <class T, class F>
struct DerivedConstant {
  F init;
  operator T() const { return static_cast<T>(init()); }
};
template <class T, class F>
constexpr DerivedConstant<T, F> derived_constant(F f) {
  return {f};
}

}  // namespace mtlemu

namespace metal {
template <class T>
inline bool is_function_constant_defined(const mtlemu::FunctionConstant<T>& c) {
  return c.defined();
}
}  // namespace metal
