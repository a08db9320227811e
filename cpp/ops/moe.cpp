#include "ops/moe.h"

#include <climits>

#include "common/fp4_format.h"
#include "common/moe_params.h"
#include "ops/fp4_gemm.h"
#include "ops/row_contiguous.h"
#include "ops/validate.h"

namespace marlin {

namespace {

bool is_integer_dtype(mx::Dtype t) {
  switch (t) {
    case mx::uint8: case mx::uint16: case mx::uint32: case mx::uint64:
    case mx::int8: case mx::int16: case mx::int32: case mx::int64:
      return true;
    default:
      return false;
  }
}

std::string num(int64_t v) { return std::to_string(v); }

void check_top_k(const std::string& op, int top_k, int E) {
  if (top_k < 1 || top_k > E)
    invalid_argument(op, "top_k must be in [1, E] = [1, " + num(E) + "], got " + num(top_k) + ".");
}

// indices [..., k] -> [..., k, N], or [..., N] when the k slots are combined.
mx::Shape moe_gemm_output_shape(const mx::Shape& indices_shape, int N, bool combined) {
  mx::Shape s = indices_shape;
  if (combined) s.pop_back();
  s.push_back(N);
  return s;
}

} // namespace

// ------------------------------------------------------------------ moe_route
std::pair<mx::array, mx::array> moe_route(const mx::array& logits, int top_k, bool normalize, mx::StreamOrDevice s) {
  const std::string op = "moe_route";
  check_float_input(op, "logits", logits);
  if (logits.ndim() < 1 || logits.shape(-1) < 1)
    invalid_argument(op, "logits must have shape [..., E] with E >= 1, got " + shape_str(logits.shape()) + ".");
  const int E = logits.shape(-1);
  check_top_k(op, top_k, E);
  auto stream = mx::to_stream(s);
#if defined(MLX_MARLIN_METAL)
  // The Metal routing kernel takes E <= kMoeMaxExperts; larger E routes on the CPU
  // stream (unified memory: the logits are not copied).
  if (stream.device.type == mx::Device::gpu && E > kMoeMaxExperts) stream = mx::default_stream(mx::Device::cpu);
#endif
  leading_rows(op, "logits", logits);  // more than 2^31 - 1 tokens are refused
  // MoeRoute takes the logits as [..., E] (row-major) and keeps their leading dims: no
  // reshape around it, whose target a shapeless mx.compile would fix at trace time.
  mx::Shape out_shape = logits.shape();
  out_shape.back() = top_k;
  auto outs = mx::array::make_arrays({out_shape, out_shape}, {mx::uint32, logits.dtype()},
                                     std::make_shared<MoeRoute>(stream, top_k, normalize),
                                     {row_contiguous(logits, stream)});
  return {outs[0], outs[1]};
}

// logits [..., E] -> indices and weights [..., top_k], from the inputs (shapeless compile).
std::vector<mx::Shape> MoeRoute::output_shapes(const std::vector<mx::array>& inputs) {
  mx::Shape s = inputs[0].shape();
  s.back() = top_k_;
  return {s, s};
}

bool MoeRoute::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const MoeRoute&>(other);
  return top_k_ == o.top_k_ && normalize_ == o.normalize_;
}

// ------------------------------------------------------------------ moe_gemm
mx::array moe_gemm(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& indices,
                   int group_size, const std::optional<mx::array>& weights,
                   const std::optional<std::string>& activation, mx::StreamOrDevice s) {
  const std::string op = "moe_gemm";
  check_float_input(op, "x", x);
  if (x.ndim() < 1) invalid_argument(op, "x must have shape [..., K] or [..., k, K], got a scalar.");
  const int K = check_packed_weight(op, "w", w, "scales", scales, group_size, 1);
  const int E = w.shape(0);
  const int N = w.shape(2);
  if (E < 1) invalid_argument(op, "w must hold at least one expert, got shape " + shape_str(w.shape()) + ".");
  if (x.shape(-1) != K)
    invalid_argument(op, "x must have shape [..., K] or [..., k, K] with K = 8 * w.shape[1] = " + num(K) + ", got " +
                             shape_str(x.shape()) + ".");
  if (!is_integer_dtype(indices.dtype()))
    invalid_argument(op, "indices must have an integer dtype, got " + dtype_name(indices.dtype()) + ".");
  if (indices.ndim() < 1) invalid_argument(op, "indices must have shape [..., k], got a scalar.");
  // x's leading dims are indices' leading dims (one row per token, shared by its k
  // slots) or indices' whole shape (one row per slot); the rank tells them apart.
  const mx::Shape token_dims(indices.shape().begin(), indices.shape().end() - 1);
  const mx::Shape x_lead(x.shape().begin(), x.shape().end() - 1);
  if (x_lead != token_dims && x_lead != indices.shape()) {
    mx::Shape shared = token_dims, per_slot = indices.shape();
    shared.push_back(K);
    per_slot.push_back(K);
    invalid_argument(op, "x must have shape [..., K] = " + shape_str(shared) + " (one row per token) or [..., k, K] = " +
                             shape_str(per_slot) + " (one row per slot) for indices of shape [..., k] = " +
                             shape_str(indices.shape()) + ", got " + shape_str(x.shape()) + ".");
  }
  leading_rows(op, "indices", indices);  // more than 2^31 - 1 tokens are refused
  if (indices.size() > static_cast<size_t>(INT32_MAX))
    invalid_argument(op, "indices of shape " + shape_str(indices.shape()) + " hold " + std::to_string(indices.size()) +
                             " (token, slot) pairs, more than 2^31 - 1.");
  if (weights) {
    check_float_input(op, "weights", *weights);
    if (weights->shape() != indices.shape())
      invalid_argument(op, "weights must have shape [..., k] = " + shape_str(indices.shape()) + " like indices, got " +
                               shape_str(weights->shape()) + ".");
  }
  const Activation act = parse_activation(op, activation);
  auto stream = mx::to_stream(s);
#if defined(MLX_MARLIN_METAL)
  // The Metal routing kernel takes E <= kMoeMaxExperts; larger E runs on the CPU stream.
  if (stream.device.type == mx::Device::gpu && E > kMoeMaxExperts) stream = mx::default_stream(mx::Device::cpu);
#endif

  std::vector<mx::array> inputs = {row_contiguous(x, stream), row_contiguous(w, stream),
                                    row_contiguous(scales, stream), row_contiguous(indices, stream)};
  if (weights) inputs.push_back(row_contiguous(mx::astype(*weights, mx::float32, stream), stream));
  // No reshape around MoeGemm (whose target a shapeless mx.compile would fix at trace
  // time): it takes the leading dims as they are and derives its output from them.
  return mx::array(moe_gemm_output_shape(indices.shape(), N, weights.has_value()), x.dtype(),
                   std::make_shared<MoeGemm>(stream, group_size, act, weights.has_value()), std::move(inputs));
}

std::vector<mx::Shape> MoeGemm::output_shapes(const std::vector<mx::array>& inputs) {
  return {moe_gemm_output_shape(inputs[3].shape(), inputs[1].shape(2), has_weights_)};
}

bool MoeGemm::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const MoeGemm&>(other);
  return group_size_ == o.group_size_ && activation_ == o.activation_ && has_weights_ == o.has_weights_;
}

// ------------------------------------------------------------------ moe_mlp
mx::array moe_mlp(const mx::array& x, const mx::array& router_logits, const mx::array& w_gate,
                  const mx::array& s_gate, const std::optional<mx::array>& w_up,
                  const std::optional<mx::array>& s_up, const mx::array& w_down, const mx::array& s_down,
                  int top_k, int group_size, const std::optional<std::string>& activation, bool normalize,
                  mx::StreamOrDevice s) {
  const std::string op = "moe_mlp";
  check_float_input(op, "x", x);
  if (x.ndim() < 1) invalid_argument(op, "x must have shape [..., K], got a scalar.");
  check_float_input(op, "router_logits", router_logits);
  if (w_up.has_value() != s_up.has_value())
    invalid_argument(op, "w_up and s_up must be given together (or both None for a concatenated "
                         "w_gate [E, K/8, 2*I] holding [gate | up] along N).");
  const bool fused = !w_up.has_value();
  const int K = check_packed_weight(op, "w_gate", w_gate, "s_gate", s_gate, group_size, 1);
  const int E = w_gate.shape(0);
  if (E < 1) invalid_argument(op, "w_gate must hold at least one expert, got shape " + shape_str(w_gate.shape()) + ".");
  int I = w_gate.shape(2);
  if (fused) {
    if (I % 2 != 0)
      invalid_argument(op, "w_gate without w_up must have shape [E, K/8, 2*I] ([gate | up] along N), got an odd N in " +
                               shape_str(w_gate.shape()) + ".");
    I /= 2;
  } else {
    const int K_up = check_packed_weight(op, "w_up", *w_up, "s_up", *s_up, group_size, 1);
    if (w_up->shape(0) != E || K_up != K || w_up->shape(2) != I)
      invalid_argument(op, "w_up must have the shape of w_gate [E, K/8, I] = " + shape_str(w_gate.shape()) + ", got " +
                               shape_str(w_up->shape()) + ".");
  }
  const int K_down = check_packed_weight(op, "w_down", w_down, "s_down", s_down, group_size, 1);
  if (w_down.shape(0) != E)
    invalid_argument(op, "w_down must have E = w_gate.shape[0] = " + num(E) + " experts [E, I/8, N_out], got " +
                             shape_str(w_down.shape()) + ".");
  if (K_down != I)
    invalid_argument(op, "w_down must have shape [E, I/8, N_out] with I = " + num(I) + " (the gate/up width), so " +
                             "w_down.shape[1] = " + num(I / kCodesPerWord) + ", got " + shape_str(w_down.shape()) + ".");
  const int N_out = w_down.shape(2);
  if (x.shape(-1) != K)
    invalid_argument(op, "x must have shape [..., K] with K = 8 * w_gate.shape[1] = " + num(K) + ", got " +
                             shape_str(x.shape()) + ".");
  mx::Shape lead(x.shape().begin(), x.shape().end() - 1);
  mx::Shape expected_logits = lead;
  expected_logits.push_back(E);
  if (router_logits.shape() != expected_logits)
    invalid_argument(op, "router_logits must have shape [..., E] = " + shape_str(expected_logits) +
                             " (x's leading dims, E = w_gate.shape[0]), got " + shape_str(router_logits.shape()) + ".");
  check_top_k(op, top_k, E);
  const Activation act = parse_activation(op, activation);
  auto stream = mx::to_stream(s);
#if defined(MLX_MARLIN_METAL)
  // The Metal routing kernel takes E <= kMoeMaxExperts; larger E runs on the CPU stream.
  if (stream.device.type == mx::Device::gpu && E > kMoeMaxExperts) stream = mx::default_stream(mx::Device::cpu);
#endif

  leading_rows(op, "x", x);  // more than 2^31 - 1 tokens are refused
  // K = 0: the gate / up products are 0, so is act(0) * 0 and every expert's output.
  // Zeros [..., 1] (x summed over its empty K axis) broadcast against [N_out]: the
  // shape follows x's at run time (a shapeless mx.compile replays this too).
  if (K == 0) return mx::add(mx::sum(x, -1, true, stream), mx::zeros({N_out}, x.dtype(), stream), stream);
  // MoeMlp takes x [..., K] and the logits [..., E] (row-major) with their leading dims:
  // no reshape around it, whose target a shapeless mx.compile would fix at trace time.
  std::vector<mx::array> inputs = {row_contiguous(x, stream), row_contiguous(router_logits, stream),
                                   row_contiguous(w_gate, stream), row_contiguous(s_gate, stream)};
  if (!fused) {
    inputs.push_back(row_contiguous(*w_up, stream));
    inputs.push_back(row_contiguous(*s_up, stream));
  }
  inputs.push_back(row_contiguous(w_down, stream));
  inputs.push_back(row_contiguous(s_down, stream));
  mx::Shape out_shape = lead;
  out_shape.push_back(N_out);
  return mx::array(std::move(out_shape), x.dtype(),
                   std::make_shared<MoeMlp>(stream, top_k, group_size, act, normalize, fused), std::move(inputs));
}

// x [..., K] -> [..., N_out] (N_out = w_down.shape[2]), from the inputs (shapeless compile).
std::vector<mx::Shape> MoeMlp::output_shapes(const std::vector<mx::array>& inputs) {
  mx::Shape s = inputs[0].shape();
  s.back() = inputs.back().shape(2);
  return {s};
}

bool MoeMlp::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const MoeMlp&>(other);
  return top_k_ == o.top_k_ && group_size_ == o.group_size_ && activation_ == o.activation_ &&
      normalize_ == o.normalize_ && fused_gate_up_ == o.fused_gate_up_;
}

} // namespace marlin
