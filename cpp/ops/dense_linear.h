// dense_linear: y[..., N] = x[..., K] @ w[N, K]^T + bias, with w a float16 / bfloat16 /
// float32 matrix in nn.Linear orientation: the layers a model keeps unquantized (the
// output head, tied embeddings, MoE routers).  On CPU streams it runs our kernel (MLX's
// CPU matmul on Linux is a reference BLAS at a few GFLOP/s); on GPU streams it is MLX's
// own matmul / addmm, which is fast there, so the primitive never sees a GPU stream.
#pragma once

#include <optional>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace marlin {

namespace mx = mlx::core;

mx::array dense_linear(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias,
                       mx::StreamOrDevice s = {});

// Inputs: x [..., K] (row-contiguous), w [N, K] (row-contiguous), optional bias [N]
// float32; output [..., N] in the promoted dtype of x, w and bias.
class DenseLinear : public mx::UnaryPrimitive {
 public:
  DenseLinear(mx::Stream stream, bool has_bias) : mx::UnaryPrimitive(stream), has_bias_(has_bias) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

  const char* name() const override { return "DenseLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return has_bias_ == static_cast<const DenseLinear&>(other).has_bias_;
  }

  bool has_bias() const { return has_bias_; }

 private:
  bool has_bias_;
};

} // namespace marlin
