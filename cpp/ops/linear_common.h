// What dense_linear and affine_linear share: rows x [..., K] against weights of N rows.
#pragma once

#include <optional>

#include "mlx/ops.h"

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

} // namespace marlin
