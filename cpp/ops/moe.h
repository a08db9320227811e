// Fused Mixture-of-Experts ops over FP4 expert weights:
//   moe_route  logits -> (top-k expert indices, weights)
//   moe_gemm   one grouped expert GEMM (+ activation, + optional weighted combine)
//   moe_mlp    the whole SwiGLU-style expert MLP: route -> gate/up -> act(gate)*up ->
//              down -> weighted combine
// Routing and grouping semantics live in common/moe_plan.h (shared by all backends).
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "common/activation.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace marlin {

namespace mx = mlx::core;

// logits [..., E] float -> (indices [..., k] uint32, weights [..., k] logits.dtype)
std::pair<mx::array, mx::array> moe_route(const mx::array& logits, int top_k, bool normalize,
                                          mx::StreamOrDevice s = {});

// x [..., K] (shared by a token's k slots) or [..., k, K]; w [E, K/8, N] uint32;
// scales [E, K/g, N]; indices [..., k] integer, its leading dims holding the T tokens.
// Returns [..., k, N], or [..., N] when weights [..., k] is given.
mx::array moe_gemm(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& indices,
                   int group_size, const std::optional<mx::array>& weights,
                   const std::optional<std::string>& activation, mx::StreamOrDevice s = {});

// x [..., K]; router_logits [..., E]; gate/up [E, K/8, I] (or, with w_up/s_up absent,
// w_gate [E, K/8, 2I] = [gate | up] along N); down [E, I/8, N_out].  Returns [..., N_out].
mx::array moe_mlp(const mx::array& x, const mx::array& router_logits, const mx::array& w_gate,
                  const mx::array& s_gate, const std::optional<mx::array>& w_up,
                  const std::optional<mx::array>& s_up, const mx::array& w_down, const mx::array& s_down,
                  int top_k, int group_size, const std::optional<std::string>& activation, bool normalize,
                  mx::StreamOrDevice s = {});

// Inputs: logits [..., E] (row-contiguous; its leading dims hold the T tokens).
// Outputs: indices [..., k] uint32, weights [..., k].  output_shapes derives them from
// the input, so a shapeless mx.compile replays any leading shape.
class MoeRoute : public mx::Primitive {
 public:
  MoeRoute(mx::Stream stream, int top_k, bool normalize)
      : mx::Primitive(stream), top_k_(top_k), normalize_(normalize) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  const char* name() const override { return "MoeRoute"; }
  bool is_equivalent(const mx::Primitive& other) const override;

  int top_k() const { return top_k_; }
  bool normalize() const { return normalize_; }

 private:
  int top_k_;
  bool normalize_;
};

// moe_gemm's token layout, read from its inputs by every backend: T tokens (the
// product of indices' leading dims), k slots each, and whether x holds one row per
// token (x [..., K], shared by its k slots) or one per slot (x [..., k, K]).
struct MoeGemmLayout {
  int T;
  int k;
  bool shared_x;
};
inline MoeGemmLayout moe_gemm_layout(const mx::array& x, const mx::array& indices) {
  int64_t T = 1;
  for (int i = 0; i + 1 < indices.ndim(); ++i) T *= indices.shape(i);
  return {static_cast<int>(T), indices.shape(-1), x.ndim() == indices.ndim()};
}

// Inputs: x [..., K] or [..., k, K] (contiguous), w [E, K/8, N], scales [E, K/g, N],
// indices [..., k] (any integer dtype), optional weights [..., k] float32; the leading
// dims are the T tokens, row-major (moe_gemm_layout).
// Output: [..., k, N], or [..., N] with weights (the combine is fused), its shape derived
// from the inputs (shapeless compile).
class MoeGemm : public mx::UnaryPrimitive {
 public:
  MoeGemm(mx::Stream stream, int group_size, Activation activation, bool has_weights)
      : mx::UnaryPrimitive(stream), group_size_(group_size), activation_(activation), has_weights_(has_weights) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  const char* name() const override { return "MoeGemm"; }
  bool is_equivalent(const mx::Primitive& other) const override;

  int group_size() const { return group_size_; }
  Activation activation() const { return activation_; }
  bool has_weights() const { return has_weights_; }

 private:
  int group_size_;
  Activation activation_;
  bool has_weights_;
};

// Inputs: x [..., K], router_logits [..., E] (the same leading dims, holding the T
// tokens), w_gate, s_gate, [w_up, s_up,] w_down, s_down (all contiguous).  Output:
// [..., N_out] in x's dtype, its shape derived from the inputs (shapeless compile).
class MoeMlp : public mx::UnaryPrimitive {
 public:
  MoeMlp(mx::Stream stream, int top_k, int group_size, Activation activation, bool normalize, bool fused_gate_up)
      : mx::UnaryPrimitive(stream),
        top_k_(top_k),
        group_size_(group_size),
        activation_(activation),
        normalize_(normalize),
        fused_gate_up_(fused_gate_up) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  const char* name() const override { return "MoeMlp"; }
  bool is_equivalent(const mx::Primitive& other) const override;

  int top_k() const { return top_k_; }
  int group_size() const { return group_size_; }
  Activation activation() const { return activation_; }
  bool normalize() const { return normalize_; }
  bool fused_gate_up() const { return fused_gate_up_; }

 private:
  int top_k_;
  int group_size_;
  Activation activation_;
  bool normalize_;
  bool fused_gate_up_;
};

} // namespace marlin
