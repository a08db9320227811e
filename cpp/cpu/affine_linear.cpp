// AffineLinear::eval_cpu: x to fp32 rows once, then the dense-linear kernel build
// matching the FP4 kernels' instruction set (including MLX_MARLIN_CPU_ISA).
#include <vector>

#include "cpu/dense_linear_kernels.h"
#include "cpu/tensor_view.h"
#include "ops/affine_linear.h"
#include "ops/validate.h"

namespace marlin {

void AffineLinear::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu::begin_cpu_eval(stream(), inputs, {&out});
  const auto& x = inputs[0];
  const int64_t M = leading_rows("affine_linear", "x", x);
  const int64_t K = x.shape(-1);
  const mx::Dtype x_type = x.dtype();
  const void* x_ptr = x.data<void>();
  cpu::AffineLinearArgs args{};
  args.M = M;
  args.K = K;
  args.w = inputs[1].data<uint8_t>();
  args.bits = bits_;
  args.group_size = group_size_;
  args.scales = inputs[2].data<void>();
  args.biases = inputs[3].data<void>();
  args.scale_type = cpu::elem_type(inputs[2].dtype());
  args.N = inputs[1].shape(0);
  args.bias = has_bias_ ? inputs[4].data<float>() : nullptr;
  args.out = out.data<void>();
  args.out_type = cpu::elem_type(out.dtype());
  encoder.dispatch([=]() mutable {
    std::vector<float> x_f32;
    args.x = cpu::as_float32(x_ptr, x_type, M * K, x_f32);
    cpu::select_dense_linear_kernels().affine_linear(args);
  });
}

} // namespace marlin
