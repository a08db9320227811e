#include "ops/dense_linear.h"

#include <stdexcept>
#include <string>

#include "ops/linear_common.h"
#include "ops/row_contiguous.h"
#include "ops/validate.h"

namespace marlin {

namespace {
const char* kOp = "dense_linear";

// x @ w.T (+ bias) from MLX ops, each of which takes its output shape from its inputs
// when a shapeless mx.compile replays it: matmul keeps x's leading dims, the bias is
// added by broadcasting, and K = 0 is empty_k_linear.
// (addmm, which nn.Linear uses, reshapes [..., K] rows to a shape the trace fixes, and
// its K = 0 result broadcasts c to the traced shape as well.)  2-D x keeps addmm, bit
// for bit nn.Linear's product.
mx::array mlx_linear(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias, mx::Dtype out_type,
                     mx::Stream s) {
  if (w.shape(1) == 0) return empty_k_linear(x, w.shape(0), bias, out_type, s);
  auto wt = mx::transpose(w, s);
  if (bias && x.ndim() <= 2) return mx::addmm(*bias, x, wt, 1.f, 1.f, s);
  auto y = mx::matmul(x, wt, s);
  return bias ? mx::add(y, *bias, s) : y;
}
} // namespace

mx::array dense_linear(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias,
                       mx::StreamOrDevice s) {
  check_float_input(kOp, "x", x);
  check_float_input(kOp, "w", w);
  if (x.ndim() < 1) invalid_argument(kOp, "x must have at least 1 dimension [..., K], got a scalar.");
  if (w.ndim() != 2) invalid_argument(kOp, "w must have 2 dimensions [N, K], got shape " + shape_str(w.shape()) + ".");
  const int N = w.shape(0);
  const int K = w.shape(1);
  if (x.shape(-1) != K)
    invalid_argument(kOp, "x must have shape [..., K] with K = w.shape[1] = " + std::to_string(K) + ", got " +
                              shape_str(x.shape()) + ".");
  mx::Dtype out_type = mx::promote_types(x.dtype(), w.dtype());
  out_type = check_linear_bias(kOp, bias, N, out_type);
  auto stream = mx::to_stream(s);
  leading_rows(kOp, "x", x);  // rows past int32 are refused here
  if (stream.device == mx::Device::gpu || K == 0) return mlx_linear(x, w, bias, out_type, stream);

  std::vector<mx::array> inputs = {row_contiguous(x, stream), row_contiguous(w, stream)};
  push_bias_input(inputs, bias, stream);
  return mx::array(linear_output_shape(x, N), out_type, std::make_shared<DenseLinear>(stream, bias.has_value()),
                   std::move(inputs));
}

std::vector<mx::Shape> DenseLinear::output_shapes(const std::vector<mx::array>& inputs) {
  return {linear_output_shape(inputs[0], inputs[1].shape(0))};
}

void DenseLinear::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  // dense_linear builds MLX's matmul on GPU streams instead of this primitive.
  throw std::logic_error("[dense_linear] the DenseLinear primitive only runs on CPU streams.");
}

// d/dx = g @ w, d/dw = g^T x (over every leading dim), d/dbias = sum of g: MLX ops.
std::vector<mx::array> DenseLinear::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                        const std::vector<int>& argnums, const std::vector<mx::array>&) {
  auto s = stream();
  const auto& x = primals[0];
  const auto& w = primals[1];
  const auto& g = cotangents[0];
  std::vector<mx::array> grads;
  for (int arg : argnums) {
    if (arg == 0) {
      grads.push_back(mx::astype(mx::matmul(g, mx::astype(w, g.dtype(), s), s), x.dtype(), s));
    } else if (arg == 1) {
      const int K = w.shape(1);
      const int N = w.shape(0);
      auto g2 = mx::reshape(g, {-1, N}, s);
      auto x2 = mx::reshape(mx::astype(x, g.dtype(), s), {-1, K}, s);
      grads.push_back(mx::astype(mx::matmul(mx::transpose(g2, s), x2, s), w.dtype(), s));
    } else {
      grads.push_back(bias_gradient(g, s));
    }
  }
  return grads;
}

} // namespace marlin
