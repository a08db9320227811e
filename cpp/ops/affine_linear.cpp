#include "ops/affine_linear.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <string>

#include "ops/linear_common.h"
#include "ops/row_contiguous.h"
#include "ops/validate.h"

namespace marlin {

namespace {
const char* kOp = "affine_linear";

// MLX's own product (GPU streams), as nn.QuantizedLinear computes it: quantized_matmul,
// then the layer's bias.  K = 0 (any stream): empty_k_linear.
mx::array mlx_affine_linear(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                            const std::optional<mx::array>& bias, int group_size, int bits, mx::Dtype out_type,
                            mx::Stream s) {
  if (w.shape(1) == 0) return empty_k_linear(x, w.shape(0), bias, out_type, s);
  auto y = mx::astype(mx::quantized_matmul(x, w, scales, biases, true, group_size, bits, "affine", s), out_type, s);
  return bias ? mx::add(y, mx::astype(*bias, out_type, s), s) : y;
}
} // namespace

mx::array affine_linear(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                        const std::optional<mx::array>& bias, int group_size, int bits, mx::StreamOrDevice s) {
  if (std::find(std::begin(kAffineBits), std::end(kAffineBits), bits) == std::end(kAffineBits))
    invalid_argument(kOp, "bits must be 4 or 8, got " + std::to_string(bits) + ".");
  if (std::find(std::begin(kAffineGroupSizes), std::end(kAffineGroupSizes), group_size) == std::end(kAffineGroupSizes))
    invalid_argument(kOp, "group_size must be 32, 64 or 128, got " + std::to_string(group_size) + ".");
  check_float_input(kOp, "x", x);
  if (x.ndim() < 1) invalid_argument(kOp, "x must have at least 1 dimension [..., K], got a scalar.");
  check_dtype(kOp, "w", w, mx::uint32);
  check_ndim(kOp, "w", w, 2, "[N, K * bits / 32]");
  const int N = w.shape(0);
  const int64_t K = int64_t(w.shape(1)) * 32 / bits;
  if (x.shape(-1) != K)
    invalid_argument(kOp, "x must have shape [..., K] with K = w.shape[1] * 32 / bits = " + std::to_string(K) +
                              ", got " + shape_str(x.shape()) + ".");
  if (K % group_size != 0)
    invalid_argument(kOp, "K = " + std::to_string(K) + " must be a multiple of group_size = " +
                              std::to_string(group_size) + ".");
  const mx::Shape group_shape = {N, static_cast<int>(K / group_size)};
  for (auto [name, a] : {std::pair<const char*, const mx::array*>{"scales", &scales}, {"biases", &biases}}) {
    check_float_input(kOp, name, *a);
    if (a->shape() != group_shape)
      invalid_argument(kOp, std::string(name) + " must have shape [N, K / group_size] = " + shape_str(group_shape) +
                                ", got " + shape_str(a->shape()) + ".");
  }
  if (biases.dtype() != scales.dtype())
    invalid_argument(kOp, "biases must have the dtype of scales (" + dtype_name(scales.dtype()) + "), got " +
                              dtype_name(biases.dtype()) + ".");
  mx::Dtype out_type = mx::promote_types(x.dtype(), scales.dtype());
  out_type = check_linear_bias(kOp, bias, N, out_type);
  auto stream = mx::to_stream(s);
  leading_rows(kOp, "x", x);  // rows past int32 are refused here
  if (stream.device == mx::Device::gpu || K == 0)
    return mlx_affine_linear(x, w, scales, biases, bias, group_size, bits, out_type, stream);

  std::vector<mx::array> inputs = {row_contiguous(x, stream), row_contiguous(w, stream),
                                   row_contiguous(scales, stream), row_contiguous(biases, stream)};
  push_bias_input(inputs, bias, stream);
  return mx::array(linear_output_shape(x, N), out_type,
                   std::make_shared<AffineLinear>(stream, group_size, bits, bias.has_value()), std::move(inputs));
}

std::vector<mx::Shape> AffineLinear::output_shapes(const std::vector<mx::array>& inputs) {
  return {linear_output_shape(inputs[0], inputs[1].shape(0))};
}

void AffineLinear::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  // affine_linear builds MLX's quantized_matmul on GPU streams instead of this primitive.
  throw std::logic_error("[affine_linear] the AffineLinear primitive only runs on CPU streams.");
}

// d/dx = g @ dequantize(w) and d/dbias = sum of g, as MLX ops; like MLX's
// quantized_matmul, no gradient for the quantized weights, scales or biases.
std::vector<mx::array> AffineLinear::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                         const std::vector<int>& argnums, const std::vector<mx::array>&) {
  auto s = stream();
  const auto& x = primals[0];
  const auto& g = cotangents[0];
  std::vector<mx::array> grads;
  for (int arg : argnums) {
    if (arg == 0) {
      auto w = mx::dequantize(primals[1], primals[2], primals[3], group_size_, bits_, "affine", std::nullopt,
                              mx::float32, s);
      grads.push_back(mx::astype(mx::matmul(mx::astype(g, mx::float32, s), w, s), x.dtype(), s));
    } else if (arg == 4) {
      grads.push_back(bias_gradient(g, s));
    } else {
      throw std::invalid_argument("[affine_linear] no gradient with respect to the quantized weights, scales or biases.");
    }
  }
  return grads;
}

} // namespace marlin
