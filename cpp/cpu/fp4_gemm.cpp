// FP4Gemm::eval_cpu: converts the activations to fp32 rows once, then runs the
// kernel table picked for this CPU (cpu/kernel_select.cpp).
#include <vector>

#include "cpu/fp4_gemm_kernels.h"
#include "cpu/half_convert.h"
#include "cpu/tensor_view.h"
#include "mlx/backend/cpu/encoder.h"
#include "ops/fp4_gemm.h"
#include "ops/validate.h"

namespace marlin {

#if defined(MLX_MARLIN_METAL_EMULATOR)
namespace emulator {
void eval_fp4_gemm(FP4Gemm& op, const std::vector<mx::array>& inputs, mx::array& out);  // emulator/ops.cpp
}
#endif

void FP4Gemm::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
#if defined(MLX_MARLIN_METAL_EMULATOR)
  // Emulator build: the Metal kernels run here, on the CPU stream (docs/metal.md).
  emulator::eval_fp4_gemm(*this, inputs, out);
  return;
#endif
  auto& encoder = cpu::begin_cpu_eval(stream(), inputs, {&out});

  const auto& a = inputs[0];
  cpu::PackedWeight w = cpu::packed_weight_view(inputs[1], inputs[2], group_size_, 0);
  const float* bias = has_bias_ ? inputs[3].data<float>() : nullptr;
  // a is x [..., K] (or g [..., N] transposed), row-major: M rows of `cols` values.
  const int64_t M = leading_rows("fp4_gemm", "x", a);
  const int64_t cols = a.shape(-1);
  const mx::Dtype in_type = a.dtype();
  const void* a_ptr = a.data<void>();
  void* out_ptr = out.data<void>();
  const cpu::ElemType out_type = cpu::elem_type(out.dtype());
  const Activation act = activation_;
  const bool transpose = transpose_;

  encoder.dispatch([=]() {
    std::vector<float> a_f32;
    const float* a32 = cpu::as_float32(a_ptr, in_type, M * cols, a_f32);
    const auto& kernels = cpu::select_kernels();
    if (!transpose) {
      kernels.gemm({a32, cols, w, bias, act, M, out_ptr, w.N, out_type});
      return;
    }
    if (out_type == cpu::ElemType::Float32) {
      kernels.gemm_transposed({a32, w, M, static_cast<float*>(out_ptr)});
      return;
    }
    std::vector<float> result(M * w.K);
    kernels.gemm_transposed({a32, w, M, result.data()});
    cpu::store_from_float32(result.data(), out_ptr, out_type, M * w.K);
  });
}

} // namespace marlin
