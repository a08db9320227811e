// Argument checks shared by every op.  Each failure throws std::invalid_argument,
// which MLX's and nanobind's bindings turn into a Python ValueError; messages name
// the op, the argument and what was expected.
#pragma once

#include <stdexcept>
#include <string>

#include "mlx/array.h"

namespace marlin {

namespace mx = mlx::core;

std::string dtype_name(mx::Dtype t);
std::string shape_str(const mx::Shape& s);

[[noreturn]] inline void invalid_argument(const std::string& op, const std::string& msg) {
  throw std::invalid_argument("[" + op + "] " + msg);
}

bool is_float_dtype(mx::Dtype t);

// x must be float16, bfloat16 or float32.
void check_float_input(const std::string& op, const char* name, const mx::array& a);

void check_dtype(const std::string& op, const char* name, const mx::array& a, mx::Dtype expected);

void check_ndim(const std::string& op, const char* name, const mx::array& a, int ndim, const char* layout);

// The rows of a [..., C] array (the product of its leading dims), which the kernels
// index with 32-bit ints: more than 2^31 - 1 is refused, naming `name`.
int leading_rows(const std::string& op, const char* name, const mx::array& a);

// The packed-weight contract shared by fp4_gemm and moe ops: words [.., K/8, N]
// uint32 and scales [.., K/group_size, N] float16/bfloat16.  Returns K (< 2^31).
int check_packed_weight(const std::string& op, const char* w_name, const mx::array& w, const char* s_name,
                        const mx::array& scales, int group_size, int leading_dims);

} // namespace marlin
