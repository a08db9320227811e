#include "ops/validate.h"

#include <cstdint>

#include "common/fp4_format.h"

namespace marlin {

std::string dtype_name(mx::Dtype t) {
  switch (t) {
    case mx::bool_: return "bool";
    case mx::uint8: return "uint8";
    case mx::uint16: return "uint16";
    case mx::uint32: return "uint32";
    case mx::uint64: return "uint64";
    case mx::int8: return "int8";
    case mx::int16: return "int16";
    case mx::int32: return "int32";
    case mx::int64: return "int64";
    case mx::float16: return "float16";
    case mx::bfloat16: return "bfloat16";
    case mx::float32: return "float32";
    case mx::float64: return "float64";
    case mx::complex64: return "complex64";
  }
  return "unknown";
}

std::string shape_str(const mx::Shape& s) {
  // Plain string building rather than an ostringstream: no iostream locale state, which a
  // build that carries its own copy of the C++ runtime (seen with the CUDA toolchain) may
  // not have initialized.
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  if (s.size() == 1) out += ",";
  return out + ")";
}

bool is_float_dtype(mx::Dtype t) {
  return t == mx::float16 || t == mx::bfloat16 || t == mx::float32;
}

void check_float_input(const std::string& op, const char* name, const mx::array& a) {
  if (!is_float_dtype(a.dtype()))
    invalid_argument(op, std::string(name) + " must be float16, bfloat16 or float32, got " + dtype_name(a.dtype()) + ".");
}

void check_dtype(const std::string& op, const char* name, const mx::array& a, mx::Dtype expected) {
  if (a.dtype() != expected)
    invalid_argument(op, std::string(name) + " must have dtype " + dtype_name(expected) + ", got " + dtype_name(a.dtype()) + ".");
}

void check_ndim(const std::string& op, const char* name, const mx::array& a, int ndim, const char* layout) {
  if (a.ndim() != ndim)
    invalid_argument(op, std::string(name) + " must have " + std::to_string(ndim) + " dimensions " + layout + ", got shape " +
                             shape_str(a.shape()) + ".");
}

int leading_rows(const std::string& op, const char* name, const mx::array& a) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < a.ndim(); ++i) rows *= a.shape(i);
  if (rows > INT32_MAX)
    invalid_argument(op, std::string(name) + " of shape " + shape_str(a.shape()) + " has " + std::to_string(rows) +
                             " rows (the product of its leading dims), more than 2^31 - 1.");
  return static_cast<int>(rows);
}

int check_packed_weight(const std::string& op, const char* w_name, const mx::array& w, const char* s_name,
                        const mx::array& scales, int group_size, int leading_dims) {
  if (!is_supported_group_size(group_size))
    invalid_argument(op, "group_size must be 32, 64 or 128, got " + std::to_string(group_size) + ".");
  const char* w_layout = leading_dims ? "[E, K/8, N]" : "[K/8, N]";
  const char* s_layout = leading_dims ? "[E, K/group_size, N]" : "[K/group_size, N]";
  check_ndim(op, w_name, w, 2 + leading_dims, w_layout);
  check_dtype(op, w_name, w, mx::uint32);
  check_ndim(op, s_name, scales, 2 + leading_dims, s_layout);
  if (scales.dtype() != mx::float16 && scales.dtype() != mx::bfloat16)
    invalid_argument(op, std::string(s_name) + " must be float16 or bfloat16, got " + dtype_name(scales.dtype()) + ".");
  const int64_t K64 = int64_t(w.shape(-2)) * kCodesPerWord;
  if (K64 > INT32_MAX)
    invalid_argument(op, "K = 8 * " + std::string(w_name) + ".shape[-2] = " + std::to_string(K64) +
                             " is more than 2^31 - 1.");
  const int K = static_cast<int>(K64);
  const int N = w.shape(-1);
  if (K % group_size != 0)
    invalid_argument(op, "K = 8 * " + std::string(w_name) + ".shape[-2] = " + std::to_string(K) +
                             " must be a multiple of group_size = " + std::to_string(group_size) + ".");
  mx::Shape expected = w.shape();
  expected[expected.size() - 2] = K / group_size;
  expected[expected.size() - 1] = N;
  if (scales.shape() != expected)
    invalid_argument(op, std::string(s_name) + " must have shape " + s_layout + " = " + shape_str(expected) + " for " + w_name +
                             " of shape " + shape_str(w.shape()) + " and group_size " + std::to_string(group_size) +
                             ", got " + shape_str(scales.shape()) + ".");
  return K;
}

} // namespace marlin
