// FP4Gemm::eval_gpu for MLX's CUDA backend: picks a kernel with plan_cuda_gemm
// (cpp/common/gemm_plan.h) and records it on MLX's command encoder.
//
// Host code is plain C++ (g++): nvcc's front end rejects parts of MLX 0.32's ops.h,
// so the kernels live in fp4_gemm_kernels.cu, which includes no MLX header and hands
// out kernel entry points by (kernel, activation type, scale type).
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/gemm_plan.h"
#include "cuda/cuda_host.h"
#include "cuda/fp4_gemm_launch.h"
#include "mlx/backend/cuda/device.h"
#include "mlx/backend/cuda/utils.h"
#include "ops/fp4_gemm.h"
#include "ops/validate.h"

namespace marlin {

namespace {

// Benchmark/test override of the MMA configuration: MLX_MARLIN_CUDA_KERNEL=simt forces
// the fp32 SIMT kernel for any input.
bool force_simt() {
  static const bool on = [] {
    const char* v = std::getenv("MLX_MARLIN_CUDA_KERNEL");
    return v && std::string(v) == "simt";
  }();
  return on;
}

// MLX_MARLIN_CUDA_DECODE=<index> forces a Gemv variant for M <= 16 (see
// kCudaGemvConfigs), =mma the older MmaDecode kernel, =token / =token<index> the
// one-token kernel (M = 1; kCudaGemvTokenConfigs), whose K split
// MLX_MARLIN_CUDA_TOKEN_SPLITS=<n> forces; read at every call so tests can switch them.
int gemv_override() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_DECODE");
  if (!v || !v[0]) return -1;
  const std::string s(v);
  if (s == "mma") return -2;
  if (s.rfind("token", 0) == 0) return s.size() == 5 ? kCudaGemvTokenForced : kCudaGemvTokenForced - 1 - std::atoi(v + 5);
  return std::atoi(v);
}

int token_splits_override() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_TOKEN_SPLITS");
  return v && v[0] ? std::atoi(v) : -1;
}

} // namespace

void FP4Gemm::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& s = stream();
  auto& enc = mx::cu::get_command_encoder(s);
  const auto& x = inputs[0];
  const auto& w = inputs[1];
  const auto& sc = inputs[2];
  const int M = leading_rows("fp4_gemm", "x", x);  // x [..., K] (g [..., N] transposed), row-major
  const int K = w.shape(0) * kCodesPerWord;
  const int N = w.shape(1);

  if (out.dtype() != x.dtype())  // the kernels write x's type (FP4Gemm::vjp asks for that)
    throw std::logic_error("[fp4_gemm] the CUDA kernels write the activations' dtype; got a different output dtype.");
  cuda::allocate_on_device(out, enc);
  if (out.size() == 0) return;
  cuda::poison(out, enc, "fp4_gemm");

  for (const auto& in : inputs) enc.set_input_array(in);
  enc.set_output_array(out);

  cuda::GemmArgs args{};
  args.x = mx::gpu_ptr<void>(x);
  args.w = static_cast<const uint32_t*>(mx::gpu_ptr<void>(w));
  args.scales = mx::gpu_ptr<void>(sc);
  args.bias = has_bias_ ? static_cast<const float*>(mx::gpu_ptr<void>(inputs[3])) : nullptr;
  args.out = mx::gpu_ptr<void>(out);
  args.M = M;
  args.N = N;
  args.K = K;
  args.group_size = group_size_;
  args.act = static_cast<int>(activation_);

  const bool half_input = x.dtype() == mx::float16 || x.dtype() == mx::bfloat16;
  const bool aligned = cuda::aligned16(args.x) && cuda::aligned16(args.w) && cuda::aligned16(args.scales) && cuda::aligned16(args.out) &&
      (!args.bias || cuda::aligned16(args.bias));
  auto plan = [&](int token_splits) {
    return plan_cuda_gemm(M, N, K, half_input && !force_simt(), aligned, transpose_, group_size_, gemv_override(),
                          cuda::sm_count(enc.device()), token_splits);
  };
  CudaGemmPlan p = plan(token_splits_override());
  if (p.kernel == CudaGemmKernel::GemvToken && p.splits > 1) {
    args.split_counters = cuda::split_counters(enc, p.grid_x, "fp4_gemm");
    if (!args.split_counters) p = plan(1);  // more strips than a counter run holds: no K split
  }
  std::optional<mx::array> split_part;  // [splits, N] fp32 sums of the K slices
  if (p.kernel == CudaGemmKernel::GemvToken && p.splits > 1) {
    split_part = cuda::scratch(enc, {p.splits, N}, mx::float32);
    args.split_part = mx::gpu_ptr<float>(*split_part);
  }

  enc.device().make_current();
  const cuda::ElemType xt = cuda::elem_type(x.dtype(), "fp4_gemm", "x"), st = cuda::elem_type(sc.dtype(), "fp4_gemm", "scales");
  void* fn = p.kernel == CudaGemmKernel::Gemv ? cuda::fp4_gemv_kernel(p.gemv_variant, p.rows16, xt, st)
      : p.kernel == CudaGemmKernel::GemvToken ? cuda::fp4_gemv_token_kernel(p.gemv_variant, group_size_, p.smem, xt, st)
                                              : cuda::fp4_gemm_kernel(p.kernel, xt, st);
  if (!fn) throw std::logic_error(std::string("[fp4_gemm] no CUDA kernel for plan ") + cuda_kernel_name(p.kernel));
  void* params[] = {&args};
  enc.add_kernel_node_raw(static_cast<CUfunction>(fn), dim3(p.grid_x, p.grid_y), dim3(p.threads), dim3(1, 1, 1), p.smem, params);
}

} // namespace marlin
