#include "ops/attention.h"

#include <cmath>

#include "common/attention_plan.h"
#include "ops/validate.h"

#if defined(MLX_MARLIN_CUDA)
#include "mlx/fast.h"
#endif

namespace marlin {

namespace {
const char* kOp = "attention";

// Additive masks must promote to q's dtype (as MLX requires): float32 q takes
// float16 / bfloat16 / float32 masks, half-precision q only its own dtype.
bool additive_mask_dtype_ok(mx::Dtype mask, mx::Dtype q) {
  if (q == mx::float32) return is_float_dtype(mask);
  return mask == q;
}
} // namespace

mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                    const AttentionMaskArg& mask, const std::optional<mx::array>& sinks, mx::StreamOrDevice s) {
  check_ndim(kOp, "q", q, 4, "[B, Hq, Lq, D]");
  check_ndim(kOp, "k", k, 4, "[B, Hkv, Lk, D]");
  check_ndim(kOp, "v", v, 4, "[B, Hkv, Lk, D]");
  check_float_input(kOp, "q", q);
  if (k.dtype() != q.dtype())
    invalid_argument(kOp, "k must have the dtype of q (" + dtype_name(q.dtype()) + "), got " + dtype_name(k.dtype()) + ".");
  if (v.dtype() != q.dtype())
    invalid_argument(kOp, "v must have the dtype of q (" + dtype_name(q.dtype()) + "), got " + dtype_name(v.dtype()) + ".");
  const int B = q.shape(0), Hq = q.shape(1), Lq = q.shape(2), D = q.shape(3);
  const int Hkv = k.shape(1), Lk = k.shape(2);
  if (!is_supported_head_dim(D))
    invalid_argument(kOp, "q head dim (q.shape[3]) must be 64, 80, 96, 128 or 256, got " + std::to_string(D) + ".");
  if (k.shape(0) != B)
    invalid_argument(kOp, "k batch size (k.shape[0] = " + std::to_string(k.shape(0)) + ") must equal q's (" + std::to_string(B) + ").");
  if (v.shape(0) != B)
    invalid_argument(kOp, "v batch size (v.shape[0] = " + std::to_string(v.shape(0)) + ") must equal q's (" + std::to_string(B) + ").");
  if (k.shape(3) != D)
    invalid_argument(kOp, "k head dim (k.shape[3] = " + std::to_string(k.shape(3)) + ") must equal q's (" + std::to_string(D) + ").");
  if (v.shape(3) != D)
    invalid_argument(kOp, "v head dim (v.shape[3] = " + std::to_string(v.shape(3)) + ") must equal q's (" + std::to_string(D) + ").");
  if (v.shape(1) != Hkv)
    invalid_argument(kOp, "v must have the kv heads of k (k.shape[1] = " + std::to_string(Hkv) + "), got v.shape[1] = " +
                              std::to_string(v.shape(1)) + ".");
  if (v.shape(2) != Lk)
    invalid_argument(kOp, "v must have the length of k (k.shape[2] = " + std::to_string(Lk) + "), got v.shape[2] = " +
                              std::to_string(v.shape(2)) + ".");
  if (Hkv < 1 || Hq % Hkv != 0)
    invalid_argument(kOp, "q heads (q.shape[1] = " + std::to_string(Hq) + ") must be a multiple of the kv heads of k (k.shape[1] = " +
                              std::to_string(Hkv) + ").");
  if (!std::isfinite(scale)) invalid_argument(kOp, "scale must be finite, got " + std::to_string(scale) + ".");

  auto stream = mx::to_stream(s);
  AttentionMask kind = AttentionMask::None;
  std::vector<mx::array> inputs = {q, k, v};
  if (auto* name = std::get_if<std::string>(&mask)) {
    if (*name != "causal") invalid_argument(kOp, "mask must be None, 'causal' or an array, got '" + *name + "'.");
    kind = AttentionMask::Causal;
  } else if (auto* m = std::get_if<mx::array>(&mask)) {
    const mx::Shape target = {B, Hq, Lq, Lk};
    bool ok = m->ndim() <= 4;
    for (int i = 0; ok && i < m->ndim(); ++i) {
      int dim = m->shape(m->ndim() - 1 - i);
      ok = dim == 1 || dim == target[3 - i];
    }
    if (!ok)
      invalid_argument(kOp, "mask of shape " + shape_str(m->shape()) + " is not broadcastable to [B, Hq, Lq, Lk] = " +
                                shape_str(target) + ".");
    if (m->dtype() == mx::bool_) {
      kind = AttentionMask::Bool;
    } else if (additive_mask_dtype_ok(m->dtype(), q.dtype())) {
      kind = AttentionMask::Additive;
    } else {
      invalid_argument(kOp, "mask must be bool (True = attend) or an additive float mask whose dtype promotes to q's (" +
                                dtype_name(q.dtype()) + "), got " + dtype_name(m->dtype()) + ".");
    }
    inputs.push_back(*m);
  }
  if (sinks) {
    if (sinks->ndim() != 1 || sinks->shape(0) != Hq)
      invalid_argument(kOp, "sinks must have shape [Hq] = [" + std::to_string(Hq) + "] (one logit per query head), got " +
                                shape_str(sinks->shape()) + ".");
    if (!is_float_dtype(sinks->dtype()))
      invalid_argument(kOp, "sinks must be float16, bfloat16 or float32, got " + dtype_name(sinks->dtype()) + ".");
#if defined(MLX_MARLIN_CUDA)
    // The CUDA kernels take no sinks: MLX's own attention computes these calls.
    if (stream.device == mx::Device::gpu) {
      std::optional<mx::array> mask_arr;
      std::string mask_mode;
      if (kind == AttentionMask::Causal) mask_mode = "causal";
      if (kind == AttentionMask::Bool || kind == AttentionMask::Additive) {
        mask_mode = "array";
        mask_arr = inputs[3];
      }
      return mx::fast::scaled_dot_product_attention(q, k, v, scale, mask_mode, mask_arr, mx::astype(*sinks, q.dtype(), stream),
                                                    false, stream);
    }
#endif
    inputs.push_back(mx::astype(*sinks, mx::float32, stream));
  }
  return mx::array({B, Hq, Lq, D}, q.dtype(), std::make_shared<Attention>(stream, scale, kind, sinks.has_value()),
                   std::move(inputs));
}

std::vector<mx::Shape> Attention::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape()};
}

bool Attention::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const Attention&>(other);
  return scale_ == o.scale_ && mask_ == o.mask_ && has_sinks_ == o.has_sinks_;
}

std::vector<mx::array> Attention::vjp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&,
                                      const std::vector<mx::array>&) {
  throw std::invalid_argument(
      "[attention] mlx_marlin.attention is inference-only and cannot be differentiated; use "
      "mx.fast.scaled_dot_product_attention for training.");
}

std::vector<mx::array> Attention::jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) {
  throw std::invalid_argument(
      "[attention] mlx_marlin.attention is inference-only and cannot be differentiated; use "
      "mx.fast.scaled_dot_product_attention for training.");
}

} // namespace marlin
