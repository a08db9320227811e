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
// additive array broadcastable to [B, Hq, Lq, Lk]; sinks: optional [Hq] logits that
// join each row's softmax with a zero value (attention sinks).  Returns [B, Hq, Lq, D]
// in q's dtype.
mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                    const AttentionMaskArg& mask, const std::optional<mx::array>& sinks = std::nullopt,
                    mx::StreamOrDevice s = {});

// Inputs: q, k, v, (for Bool / Additive) the mask as given (any strides; the kernel
// broadcasts it through zero strides), then (with sinks) the sinks as float32 [Hq].
class Attention : public mx::UnaryPrimitive {
 public:
  Attention(mx::Stream stream, float scale, AttentionMask mask, bool has_sinks)
      : mx::UnaryPrimitive(stream), scale_(scale), mask_(mask), has_sinks_(has_sinks) {}

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
  bool has_sinks() const { return has_sinks_; }

 private:
  float scale_;
  AttentionMask mask_;
  bool has_sinks_;
};

// The sinks input of an Attention primitive's inputs, or nullptr.
inline const mx::array* attention_sinks(const Attention& op, const std::vector<mx::array>& inputs) {
  return op.has_sinks() ? &inputs.back() : nullptr;
}

} // namespace marlin
