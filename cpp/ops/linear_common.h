// What dense_linear and affine_linear share: rows x [..., K] against weights of N rows.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mlx/ops.h"
#include "ops/row_contiguous.h"
#include "ops/validate.h"

namespace marlin {

namespace mx = mlx::core;

// x's shape with its last dim N.
inline mx::Shape linear_output_shape(const mx::array& x, int N) {
  mx::Shape shape = x.shape();
  shape.back() = N;
  return shape;
}

// K = 0: the bias (else zeros) in every row.  The zeros [..., 1] come from a sum over x's
// empty last axis, so a shapeless mx.compile replays the result for any leading shape.
inline mx::array empty_k_linear(const mx::array& x, int N, const std::optional<mx::array>& bias, mx::Dtype out_type,
                                mx::Stream s) {
  auto zeros = mx::astype(mx::sum(x, -1, true, s), out_type, s);
  return mx::add(zeros, bias ? mx::astype(*bias, out_type, s) : mx::zeros({N}, out_type, s), s);
}

// Checks the layer's optional bias ([N], float) and returns out_type promoted by its dtype.
inline mx::Dtype check_linear_bias(const char* op, const std::optional<mx::array>& bias, int N, mx::Dtype out_type) {
  if (!bias) return out_type;
  if (bias->ndim() != 1 || bias->shape(0) != N)
    invalid_argument(op, "bias must have shape [N] = (" + std::to_string(N) + ",), got " + shape_str(bias->shape()) + ".");
  check_float_input(op, "bias", *bias);
  return mx::promote_types(out_type, bias->dtype());
}

// The bias as the CPU kernels read it: float32, row-contiguous (appended when given).
inline void push_bias_input(std::vector<mx::array>& inputs, const std::optional<mx::array>& bias, mx::Stream s) {
  if (bias) inputs.push_back(row_contiguous(bias->dtype() == mx::float32 ? *bias : mx::astype(*bias, mx::float32, s), s));
}

// d/dbias: the cotangent g [..., N] summed over its leading dims, in float32.
inline mx::array bias_gradient(const mx::array& g, mx::Stream s) {
  std::vector<int> lead_axes(g.ndim() - 1);
  for (int i = 0; i + 1 < g.ndim(); ++i) lead_axes[i] = i;
  return mx::sum(mx::astype(g, mx::float32, s), lead_axes, false, s);
}

} // namespace marlin
