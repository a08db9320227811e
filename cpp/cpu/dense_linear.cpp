// DenseLinear::eval_cpu: x to fp32 rows once, then the kernel build matching the FP4
// kernels' instruction set (including MLX_MARLIN_CPU_ISA).
#include <vector>

#include "cpu/dense_linear_kernels.h"
#include "cpu/tensor_view.h"
#include "ops/dense_linear.h"
#include "ops/validate.h"

namespace marlin {

namespace cpu {
const DenseLinearKernelTable& select_dense_linear_kernels() {
  static const DenseLinearKernelTable table =
      table_for_selected_isa(dense_linear_kernels_generic, dense_linear_kernels_avx2, dense_linear_kernels_avx512);
  return table;
}
} // namespace cpu

void DenseLinear::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu::begin_cpu_eval(stream(), inputs, {&out});
  const auto& x = inputs[0];
  const auto& w = inputs[1];
  const int64_t M = leading_rows("dense_linear", "x", x);
  const int64_t K = x.shape(-1);
  const mx::Dtype x_type = x.dtype();
  const void* x_ptr = x.data<void>();
  cpu::DenseLinearArgs args{};
  args.M = M;
  args.K = K;
  args.w = w.data<void>();
  args.w_type = cpu::elem_type(w.dtype());
  args.N = w.shape(0);
  args.w_row_stride = K;
  args.bias = has_bias_ ? inputs[2].data<float>() : nullptr;
  args.out = out.data<void>();
  args.out_type = cpu::elem_type(out.dtype());
  encoder.dispatch([=]() mutable {
    std::vector<float> x_f32;
    args.x = cpu::as_float32(x_ptr, x_type, M * K, x_f32);
    cpu::select_dense_linear_kernels().linear(args);
  });
}

} // namespace marlin
