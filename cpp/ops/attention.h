// attention: softmax(scale * q @ k^T + mask) @ v with grouped-query heads, the
// semantics of mx.fast.scaled_dot_product_attention (see bindings_attention.cpp).
#pragma once

#include <optional>
#include <string>
#include <variant>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace marlin {

namespace mx = mlx::core;

enum class AttentionMask : int { None = 0, Causal = 1, Bool = 2, Additive = 3 };

using AttentionMaskArg = std::variant<std::monostate, std::string, mx::array>;

// q [B, Hq, Lq, D], k / v [B, Hkv, Lk, D]; mask None, "causal", or a bool /
// additive array broadcastable to [B, Hq, Lq, Lk].  Returns [B, Hq, Lq, D] in q's dtype.
mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                    const AttentionMaskArg& mask, mx::StreamOrDevice s = {});

// Inputs: q, k, v and (for Bool / Additive) the mask as given (any strides; the
// kernel broadcasts it through zero strides).
class Attention : public mx::UnaryPrimitive {
 public:
  Attention(mx::Stream stream, float scale, AttentionMask mask) : mx::UnaryPrimitive(stream), scale_(scale), mask_(mask) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  std::vector<mx::array> jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                             const std::vector<int>& argnums) override;

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  const char* name() const override { return "MarlinAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override;

  float scale() const { return scale_; }
  AttentionMask mask() const { return mask_; }

 private:
  float scale_;
  AttentionMask mask_;
};

} // namespace marlin
