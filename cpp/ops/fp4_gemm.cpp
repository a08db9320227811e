#include "ops/fp4_gemm.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include "common/fp4_format.h"
#include "common/gemm_plan.h"
#include "ops/fp4_dequantize.h"
#include "ops/row_contiguous.h"
#include "ops/validate.h"

namespace marlin {

namespace {
const char* kOp = "fp4_gemm";

// Derivative of the activation at the pre-activation value, built from MLX ops so
// it runs on any stream.
mx::array activation_grad(Activation act, const mx::array& pre, mx::StreamOrDevice s) {
  using namespace mx;
  switch (act) {
    case Activation::None:
      return ones_like(pre, s);
    case Activation::Relu:
      return astype(greater(pre, array(0.f), s), float32, s);
    case Activation::Silu: {
      auto sig = sigmoid(pre, s);
      return multiply(sig, add(array(1.f), multiply(pre, subtract(array(1.f), sig, s), s), s), s);
    }
    case Activation::Gelu: {
      auto cdf = multiply(array(0.5f), add(array(1.f), erf(multiply(pre, array(float(M_SQRT1_2)), s), s), s), s);
      auto pdf = multiply(array(float(0.5 * M_2_SQRTPI * M_SQRT1_2)),
                          exp(multiply(array(-0.5f), square(pre, s), s), s), s);
      return add(cdf, multiply(pre, pdf, s), s);
    }
    case Activation::GeluApprox: {
      const float c = float(std::sqrt(2.0 / M_PI));
      auto x2 = square(pre, s);
      auto u = multiply(array(c), add(pre, multiply(array(0.044715f), multiply(x2, pre, s), s), s), s);
      auto t = tanh(u, s);
      auto du = multiply(array(c), add(array(1.f), multiply(array(3.f * 0.044715f), x2, s), s), s);
      auto left = multiply(array(0.5f), add(array(1.f), t, s), s);
      auto right = multiply(multiply(array(0.5f), pre, s), multiply(subtract(array(1.f), square(t, s), s), du, s), s);
      return add(left, right, s);
    }
  }
  return ones_like(pre, s);
}

// act(v) from MLX ops, in v's dtype (the dense route's epilogue).
mx::array activation_ops(Activation act, const mx::array& v, mx::StreamOrDevice s) {
  using namespace mx;
  switch (act) {
    case Activation::None:
      return v;
    case Activation::Relu:
      return maximum(v, array(0.f), s);
    case Activation::Silu:
      return multiply(v, sigmoid(v, s), s);
    case Activation::Gelu:
      return multiply(multiply(array(0.5f), v, s), add(array(1.f), erf(multiply(v, array(float(M_SQRT1_2)), s), s), s), s);
    case Activation::GeluApprox: {
      auto u = multiply(array(float(std::sqrt(2.0 / M_PI))),
                        add(v, multiply(array(0.044715f), multiply(square(v, s), v, s), s), s), s);
      return multiply(multiply(array(0.5f), v, s), add(array(1.f), tanh(u, s), s), s);
    }
  }
  return v;
}

#if defined(MLX_MARLIN_CUDA)
// MLX_MARLIN_CUDA_PREFILL=dense|kernel forces the route (benchmarks, tests); read at
// every call so tests can switch it.
int dense_route_override() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_PREFILL");
  if (!v || !v[0]) return -1;
  return std::string(v) == "dense" ? 1 : std::string(v) == "kernel" ? 0 : -1;
}
#endif

// The dense route of large-M products on CUDA (gemm_plan.h, cuda_gemm_via_dense):
// act(x @ dequantize(w) + bias), the matmul on MLX's cuBLAS path; the epilogue (only
// with a bias or an activation) runs in float32 and rounds once, like the kernels.
// x keeps its leading dims ([..., K] @ [K, N]): no reshape whose target would be fixed
// when a shapeless mx.compile traces it.
mx::array dense_route(const mx::array& x, const mx::array& w, const mx::array& scales,
                      const std::optional<mx::array>& bias, int group_size, Activation act, mx::Stream s) {
  auto wd = fp4_dequantize(w, scales, group_size, x.dtype(), s);
  auto y = mx::matmul(x, wd, s);
  if (!bias && act == Activation::None) return y;
  auto v = mx::astype(y, mx::float32, s);
  if (bias) v = mx::add(v, mx::astype(*bias, mx::float32, s), s);
  return mx::astype(activation_ops(act, v, s), x.dtype(), s);
}
} // namespace

Activation parse_activation(const std::string& op, const std::optional<std::string>& name) {
  if (!name || *name == "none" || name->empty()) return Activation::None;
  if (*name == "relu") return Activation::Relu;
  if (*name == "gelu") return Activation::Gelu;
  if (*name == "gelu_approx") return Activation::GeluApprox;
  if (*name == "silu") return Activation::Silu;
  invalid_argument(op, "activation must be None, 'relu', 'gelu', 'gelu_approx' or 'silu', got '" + *name + "'.");
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::None: return "none";
    case Activation::Relu: return "relu";
    case Activation::Gelu: return "gelu";
    case Activation::GeluApprox: return "gelu_approx";
    case Activation::Silu: return "silu";
  }
  return "none";
}

mx::array fp4_gemm(const mx::array& x, const mx::array& w, const mx::array& scales,
                   const std::optional<mx::array>& bias, int group_size,
                   const std::optional<std::string>& activation, mx::StreamOrDevice s) {
  check_float_input(kOp, "x", x);
  if (x.ndim() < 1) invalid_argument(kOp, "x must have at least 1 dimension [..., K], got a scalar.");
  const int K = check_packed_weight(kOp, "w", w, "scales", scales, group_size, 0);
  const int N = w.shape(1);
  if (x.shape(-1) != K)
    invalid_argument(kOp, "x must have shape [..., K] with K = 8 * w.shape[0] = " + std::to_string(K) + ", got " +
                              shape_str(x.shape()) + ".");
  if (bias) {
    if (bias->ndim() != 1 || bias->shape(0) != N)
      invalid_argument(kOp, "bias must have shape [N] = (" + std::to_string(N) + ",), got " + shape_str(bias->shape()) + ".");
    check_float_input(kOp, "bias", *bias);
  }
  const Activation act = parse_activation(kOp, activation);
  auto stream = mx::to_stream(s);

  // Every array below keeps x's leading dims, and FP4Gemm takes x as [..., K] itself:
  // no reshape (whose target a shapeless mx.compile would fix at trace time) is needed.
  [[maybe_unused]] const int M = leading_rows(kOp, "x", x);  // rows past int32 are refused here
  if (K == 0) {
    // No products to sum: act(bias) everywhere, from MLX ops (no kernel sees K = 0).
    // The zeros [..., 1] (a sum over the empty K axis) broadcast against [N] give
    // [..., N] from x's shape at run time, as broadcast_to a fixed shape would not.
    auto v = bias ? mx::astype(*bias, mx::float32, stream) : mx::zeros({N}, mx::float32, stream);
    v = mx::add(mx::astype(mx::sum(x, -1, true, stream), mx::float32, stream), v, stream);
    return mx::astype(activation_ops(act, v, stream), x.dtype(), stream);
  }
#if defined(MLX_MARLIN_CUDA)
  // The route is picked from this call's row count (a shapeless mx.compile keeps the
  // route of its trace; both compute the same product).
  const bool half_input = x.dtype() == mx::float16 || x.dtype() == mx::bfloat16;
  if (stream.device == mx::Device::gpu && cuda_gemm_via_dense(M, half_input, dense_route_override()))
    return dense_route(x, w, scales, bias, group_size, act, stream);
#endif
  // The kernels read x as row-major rows of K; a contiguous copy only when needed.
  std::vector<mx::array> inputs = {row_contiguous(x, stream), row_contiguous(w, stream), row_contiguous(scales, stream)};
  if (bias) inputs.push_back(row_contiguous(bias->dtype() == mx::float32 ? *bias : mx::astype(*bias, mx::float32, stream), stream));
  mx::Shape out_shape = x.shape();
  out_shape.back() = N;
  return mx::array(std::move(out_shape), x.dtype(),
                   std::make_shared<FP4Gemm>(stream, group_size, act, bias.has_value(), false), std::move(inputs));
}

// x [..., K] -> [..., N]; transposed, g [..., N] -> [..., K].  Derived from the inputs
// (as MLX's QuantizedMatmul does), so a shapeless mx.compile replays any leading shape.
std::vector<mx::Shape> FP4Gemm::output_shapes(const std::vector<mx::array>& inputs) {
  const auto& w = inputs[1];
  mx::Shape shape = inputs[0].shape();
  shape.back() = transpose_ ? w.shape(0) * kCodesPerWord : w.shape(1);
  return {std::move(shape)};
}

bool FP4Gemm::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const FP4Gemm&>(other);
  return group_size_ == o.group_size_ && activation_ == o.activation_ && has_bias_ == o.has_bias_ &&
      transpose_ == o.transpose_;
}

std::vector<mx::array> FP4Gemm::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                    const std::vector<int>& argnums, const std::vector<mx::array>&) {
  if (transpose_)
    throw std::invalid_argument("[fp4_gemm] second-order gradients through fp4_gemm are not supported.");
  auto s = stream();
  const auto& x = primals[0];
  const auto& w = primals[1];
  const auto& scales = primals[2];
  // Gradient at the pre-activation: dy * act'(x W + b).  The output alone does not
  // determine act' for gelu/silu, so the product is recomputed without activation.
  mx::array g = cotangents[0];
  if (activation_ != Activation::None) {
    std::vector<mx::array> pre_inputs(primals.begin(), primals.end());
    // The CPU and Metal kernels can write float32 for half inputs; the CUDA kernels
    // write x's dtype (act' is then taken at the rounded pre-activation).
    mx::Dtype pre_dtype = mx::float32;
#if defined(MLX_MARLIN_CUDA)
    if (s.device == mx::Device::gpu) pre_dtype = x.dtype();
#endif
    auto pre = mx::array(cotangents[0].shape(), pre_dtype,
                         std::make_shared<FP4Gemm>(s, group_size_, Activation::None, has_bias_, false),
                         std::move(pre_inputs));
    g = mx::multiply(mx::astype(g, mx::float32, s), activation_grad(activation_, mx::astype(pre, mx::float32, s), s), s);
  }
  std::vector<mx::array> grads;
  for (int arg : argnums) {
    if (arg == 0) {
      auto g_in = mx::contiguous(mx::astype(g, x.dtype(), s), false, s);
      grads.push_back(mx::array(x.shape(), x.dtype(),
                                std::make_shared<FP4Gemm>(s, group_size_, Activation::None, false, true),
                                {g_in, w, scales}));
    } else if (arg == 3 && has_bias_) {
      // Summed over every leading dim of g [..., N] (none for a 1-D x).
      std::vector<int> lead_axes(g.ndim() - 1);
      for (int i = 0; i + 1 < g.ndim(); ++i) lead_axes[i] = i;
      grads.push_back(mx::sum(mx::astype(g, mx::float32, s), lead_axes, false, s));
    } else {
      throw std::invalid_argument(kFrozenWeightsMessage);
    }
  }
  return grads;
}

} // namespace marlin
