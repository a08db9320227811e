// Attention::eval_cpu: hands the arrays (with their strides) to the attention
// kernel built for this CPU's instruction set.
#include <cstring>

#include "common/attention_plan.h"
#include "cpu/attention_kernels.h"
#include "cpu/tensor_view.h"
#include "cpu/thread_pool.h"
#include "mlx/backend/cpu/encoder.h"
#include "ops/attention.h"

namespace marlin {

namespace cpu {
const AttentionKernelTable& select_attention_kernels() {
  static const AttentionKernelTable table =
      table_for_selected_isa(attention_kernels_generic, attention_kernels_avx2, attention_kernels_avx512);
  return table;
}
} // namespace cpu

namespace {
void strides4(const mx::array& a, int64_t* out) {
  // Right-aligned to 4 dims; broadcast (size-1 or missing) dims get stride 0.
  const int nd = a.ndim();
  for (int i = 0; i < 4; ++i) {
    int src = nd - 4 + i;
    out[i] = (src >= 0 && a.shape(src) != 1) ? static_cast<int64_t>(a.strides()[src]) : 0;
  }
}
} // namespace

#if defined(MLX_MARLIN_METAL_EMULATOR)
namespace emulator {
void eval_attention(Attention& op, const std::vector<mx::array>& inputs, mx::array& out);  // emulator/ops.cpp
}
#endif

void Attention::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
#if defined(MLX_MARLIN_METAL_EMULATOR)
  // Emulator build: the Metal kernels run here, on the CPU stream (docs/metal.md).
  emulator::eval_attention(*this, inputs, out);
  return;
#endif
  auto& encoder = cpu::begin_cpu_eval(stream(), inputs, {&out});

  const auto& q = inputs[0];
  const auto& k = inputs[1];
  const auto& v = inputs[2];
  cpu::AttentionArgs a{};
  a.q = q.data<void>();
  a.k = k.data<void>();
  a.v = v.data<void>();
  a.type = cpu::elem_type(q.dtype());
  a.B = q.shape(0);
  a.Hq = q.shape(1);
  a.Lq = q.shape(2);
  a.D = q.shape(3);
  a.Hkv = k.shape(1);
  a.Lk = k.shape(2);
  for (int i = 0; i < 4; ++i) {
    a.q_stride[i] = q.strides()[i];
    a.k_stride[i] = k.strides()[i];
    a.v_stride[i] = v.strides()[i];
  }
  a.scale = scale_;
  a.mask_kind = static_cast<cpu::MaskKind>(mask_);
  if (mask_ == AttentionMask::Bool || mask_ == AttentionMask::Additive) {
    const auto& m = inputs[3];
    a.mask = m.data<void>();
    a.mask_type = mask_ == AttentionMask::Additive ? cpu::elem_type(m.dtype()) : cpu::ElemType::Float32;
    strides4(m, a.mask_stride);
  }
  if (const mx::array* sinks = attention_sinks(*this, inputs)) a.sinks = sinks->data<float>();
  a.out = out.data<void>();
  if (out.size() == 0) return;
  a.plan = plan_attention(a.B, a.Hq, a.Hkv, a.Lq, a.Lk, cpu::num_threads());

  encoder.dispatch([a]() { cpu::select_attention_kernels().attention(a); });
}

} // namespace marlin
