// fp4_gemm: y[..., N] = act(x[..., K] @ dequant(w, scales) + bias)
#pragma once

#include <optional>
#include <string>

#include "common/activation.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace marlin {

namespace mx = mlx::core;

// The packed weight and scales take no gradient (fp4_gemm's kernel and dense routes alike).
inline constexpr const char* kFrozenWeightsMessage =
    "[fp4_gemm] gradients are available for x and bias only: the packed weight and scales are frozen "
    "(train an adapter such as LoRA on top instead).";

Activation parse_activation(const std::string& op, const std::optional<std::string>& name);
const char* activation_name(Activation a);

mx::array fp4_gemm(const mx::array& x, const mx::array& w, const mx::array& scales,
                   const std::optional<mx::array>& bias, int group_size,
                   const std::optional<std::string>& activation, mx::StreamOrDevice s = {});

// Inputs: x [..., K] (row-contiguous, any number of leading dims: the kernels see its
// product M of leading dims as rows), w [K/8, N], scales [K/g, N], optional bias [N]
// float32; output [..., N].  With `transpose`, computes g [..., N] @ dequant(w)^T ->
// [..., K] instead: the input gradient of the forward product (no bias, no activation).
// output_shapes derives the shape from the inputs, so shapeless mx.compile works.
class FP4Gemm : public mx::UnaryPrimitive {
 public:
  FP4Gemm(mx::Stream stream, int group_size, Activation activation, bool has_bias, bool transpose)
      : mx::UnaryPrimitive(stream),
        group_size_(group_size),
        activation_(activation),
        has_bias_(has_bias),
        transpose_(transpose) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

  const char* name() const override {
    return transpose_ ? "FP4GemmTransposed" : "FP4Gemm";
  }
  bool is_equivalent(const mx::Primitive& other) const override;

  int group_size() const { return group_size_; }
  Activation activation() const { return activation_; }
  bool has_bias() const { return has_bias_; }
  bool transpose() const { return transpose_; }

 private:
  int group_size_;
  Activation activation_;
  bool has_bias_;
  bool transpose_;
};

} // namespace marlin
