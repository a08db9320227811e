// encode_fp4_gemm: plan (cpp/common/gemm_plan.h) -> GemmParams -> one kernel dispatch.
// Shared by the Metal backend and the Metal emulator; no backend headers here.
#include "gpu/fp4_gemm.h"

#include <stdexcept>
#include <string>

#include "common/fp4_format.h"
#include "common/gemm_params.h"
#include "common/gemm_plan.h"
#include "gpu/encode_util.h"
#include "ops/validate.h"

namespace marlin::gpu {

void encode_fp4_gemm(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out,
                     int group_size, Activation activation, bool transpose) {
  const mx::array& a = inputs[0];
  const mx::array& w = inputs[1];
  const mx::array& scales = inputs[2];
  GemmParams p{};
  p.M = leading_rows("fp4_gemm", "x", a);  // a: x [..., K] (g [..., N] transposed), row-major
  p.N = w.shape(1);
  p.K = w.shape(0) * kCodesPerWord;
  p.group_size = group_size;
  p.activation = static_cast<int>(activation);
  p.has_bias = inputs.size() > 3 ? 1 : 0;
  // Nothing to write (K >= group_size, so only the transposed product with N = 0 has
  // an empty reduction; its kernel then writes zeros).
  if (p.M == 0 || p.K == 0 || (p.N == 0 && !transpose)) return;
  const GpuDtype xt = gpu_dtype(a.dtype(), "fp4_gemm");
  const GpuDtype st = gpu_dtype(scales.dtype(), "fp4_gemm");

  if (transpose) {
    if (out.dtype() != a.dtype()) throw std::invalid_argument("[fp4_gemm] transposed product: out dtype must match g");
    Dispatch d;
    d.kernel = gemm_transposed_kernel_name(xt, st);
    const uint32_t words = static_cast<uint32_t>(p.K / kCodesPerWord);
    d.threadgroups = {(words + kGemmTransposedThreadsX - 1) / kGemmTransposedThreadsX,
                      static_cast<uint32_t>((p.M + kGemmTransposedThreadsY - 1) / kGemmTransposedThreadsY), 1};
    d.threads_per_group = {kGemmTransposedThreadsX, kGemmTransposedThreadsY, 1};
    launcher.dispatch(d, {KernelArg::input(a), KernelArg::input(w), KernelArg::input(scales), KernelArg::output(out),
                          KernelArg::value(p)});
    return;
  }

  const GpuGemmPlan plan = plan_gpu_gemm(p.M, p.N);
  Dispatch d;
  d.kernel = gemm_kernel_name(plan.variant, xt, st, gpu_dtype(out.dtype(), "fp4_gemm"));
  d.threadgroups = {static_cast<uint32_t>(plan.grid_x), static_cast<uint32_t>(plan.grid_y), 1};
  d.threads_per_group = {static_cast<uint32_t>(plan.threads_per_group), 1, 1};
  // Without a bias the kernel never reads buffer(3); x stands in so every slot is bound.
  const mx::array& bias = p.has_bias ? inputs[3] : a;
  launcher.dispatch(d, {KernelArg::input(a), KernelArg::input(w), KernelArg::input(scales), KernelArg::input(bias),
                        KernelArg::output(out), KernelArg::value(p)});
}

} // namespace marlin::gpu
