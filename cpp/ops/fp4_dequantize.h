// fp4_dequantize: w [K/8, N] + scales [K/g, N] -> [K, N] in a float dtype (the weight
// in the orientation fp4_gemm multiplies by: y = x @ result).
//
// fp4_gemm uses it on MLX's CUDA backend for large M, where one dequantization
// (memory-bound, ~N*K*2.5 bytes) followed by MLX's cuBLAS matmul beats computing on
// packed weights (cpp/common/gemm_plan.h, cuda_gemm_via_dense).
#pragma once

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace marlin {

namespace mx = mlx::core;

mx::array fp4_dequantize(const mx::array& w, const mx::array& scales, int group_size, mx::Dtype dtype,
                         mx::StreamOrDevice s = {});

class FP4Dequantize : public mx::UnaryPrimitive {
 public:
  FP4Dequantize(mx::Stream stream, int group_size) : mx::UnaryPrimitive(stream), group_size_(group_size) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

  const char* name() const override { return "FP4Dequantize"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return group_size_ == static_cast<const FP4Dequantize&>(other).group_size_;
  }
  int group_size() const { return group_size_; }

 private:
  int group_size_;
};

} // namespace marlin
