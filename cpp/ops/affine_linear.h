// affine_linear: y[..., N] = x[..., K] @ dequantize(w, scales, biases)^T + bias, with w
// in MLX's affine quantization (mx.quantize(..., mode="affine"), bits 4 or 8): the layers
// a conversion leaves MLX-quantized, e.g. the 8-bit attention and output head of an
// "MXFP4-Q8" gpt-oss.  On CPU streams it runs our kernel (MLX's CPU quantized_matmul
// takes ~85 ms for one token through a 2880 x 4096 8-bit layer); on GPU streams it is
// MLX's own quantized_matmul, so the primitive never sees a GPU stream.
#pragma once

#include <optional>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace marlin {

namespace mx = mlx::core;

// What the CPU kernel takes of MLX's affine mode (Python reads them as
// _ext.AFFINE_BITS / _ext.AFFINE_GROUP_SIZES).
constexpr int kAffineBits[] = {4, 8};
constexpr int kAffineGroupSizes[] = {32, 64, 128};

mx::array affine_linear(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                        const std::optional<mx::array>& bias, int group_size, int bits, mx::StreamOrDevice s = {});

// Inputs: x [..., K] (row-contiguous), w [N, K * bits / 32] uint32, scales and biases
// [N, K / group_size] (row-contiguous, one float dtype), optional bias [N] float32;
// output [..., N] in the promoted dtype of x, scales and bias.
class AffineLinear : public mx::UnaryPrimitive {
 public:
  AffineLinear(mx::Stream stream, int group_size, int bits, bool has_bias)
      : mx::UnaryPrimitive(stream), group_size_(group_size), bits_(bits), has_bias_(has_bias) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

  const char* name() const override { return "AffineLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const AffineLinear&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_ && has_bias_ == o.has_bias_;
  }

  int group_size() const { return group_size_; }
  int bits() const { return bits_; }
  bool has_bias() const { return has_bias_; }

 private:
  int group_size_;
  int bits_;
  bool has_bias_;
};

} // namespace marlin
