// FP4Gemm::eval_gpu for MLX's CUDA backend: picks a kernel with plan_cuda_gemm
// (cpp/common/gemm_plan.h) and records it on MLX's command encoder.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/gemm_plan.h"
#include "cuda/fp4_gemm_kernels.cuh"
#include "mlx/backend/cuda/device.h"
#include "mlx/backend/cuda/utils.h"
#include "ops/fp4_gemm.h"

namespace marlin {

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("[fp4_gemm] ") + what + ": " + cudaGetErrorString(err));
}

// MLX 0.32 does not export its CUDA allocator's stream-ordered entry point
// (cu::malloc_async), and allocator::malloc hands out unified memory.  So outputs
// are taken from the device's default memory pool (the pool MLX itself allocates
// from) on the encoder's stream, in MLX's CudaBuffer wrapper so every MLX kernel and
// host read (which may move it to unified memory) sees an ordinary device array.
// The deleter frees whichever kind of memory the buffer holds by then.
// Note: these bytes are not counted by mx.get_active_memory().
void allocate_on_device(mx::array& out, mx::cu::CommandEncoder& enc) {
  const size_t bytes = std::max<size_t>(out.nbytes(), 16);
  auto& dev = enc.device();
  dev.make_current();
  void* data = nullptr;
  check(cudaMallocAsync(&data, bytes, enc.stream()), "cudaMallocAsync");
  auto* buf = new mx::cu::CudaBuffer{data, bytes, dev.cuda_device()};
  out.set_data(mx::allocator::Data(mx::allocator::Buffer(buf), [](mx::allocator::Buffer b) {
    auto* cb = static_cast<mx::cu::CudaBuffer*>(b.ptr());
    if (!cb) return;
    if (cb->data) {
      if (cb->device >= 0) {
        cudaSetDevice(cb->device);
        cudaFreeAsync(cb->data, nullptr);
      } else {
        cudaPointerAttributes attr{};
        if (cudaPointerGetAttributes(&attr, cb->data) == cudaSuccess && attr.type == cudaMemoryTypeHost)
          cudaFreeHost(cb->data);
        else
          cudaFree(cb->data);
      }
    }
    delete cb;
  }));
}

bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("MLX_MARLIN_CUDA_POISON");
    return v && v[0] == '1';
  }();
  return on;
}

// Benchmark/test override of the MMA configuration: MLX_MARLIN_CUDA_KERNEL=simt forces
// the fp32 SIMT kernel for any input.
bool force_simt() {
  static const bool on = [] {
    const char* v = std::getenv("MLX_MARLIN_CUDA_KERNEL");
    return v && std::string(v) == "simt";
  }();
  return on;
}

// Records `kernel(args)` on the encoder's graph.  (CommandEncoder::add_kernel_node's
// reinterpret_cast of the function pointer is rejected by nvcc's front end here.)
template <typename Kernel>
void add_kernel(mx::cu::CommandEncoder& enc, Kernel* kernel, dim3 grid, dim3 block, cuda::GemmArgs args) {
  void* fn = nullptr;
  static_assert(sizeof(kernel) == sizeof(fn));
  std::memcpy(&fn, &kernel, sizeof(fn));
  void* params[] = {&args};
  enc.add_kernel_node_raw(fn, grid, block, dim3(1, 1, 1), 0, params);
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

template <typename F>
void dispatch_types(mx::Dtype xt, mx::Dtype st, F&& f) {
  auto with_scale = [&](auto xtag) {
    using X = decltype(xtag);
    if (st == mx::float16)
      f(X{}, __half{});
    else if (st == mx::bfloat16)
      f(X{}, __nv_bfloat16{});
    else
      throw std::invalid_argument("[fp4_gemm] scales must be float16 or bfloat16.");
  };
  if (xt == mx::float16)
    with_scale(__half{});
  else if (xt == mx::bfloat16)
    with_scale(__nv_bfloat16{});
  else if (xt == mx::float32)
    with_scale(float{});
  else
    throw std::invalid_argument("[fp4_gemm] x must be float16, bfloat16 or float32.");
}

template <typename T, typename S, const CudaMmaConfig& C>
void launch_mma(mx::cu::CommandEncoder& enc, const CudaGemmPlan& p, const cuda::GemmArgs& args) {
  add_kernel(enc, cuda::fp4_gemm_mma<T, S, C.mi, C.ni, C.warps_m, C.warps_n, C.warps_k, C.unroll>,
             dim3(p.grid_x, p.grid_y), dim3(p.threads), args);
}

} // namespace

void FP4Gemm::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& s = stream();
  auto& enc = mx::cu::get_command_encoder(s);
  const auto& x = inputs[0];
  const auto& w = inputs[1];
  const auto& sc = inputs[2];
  const int M = x.shape(0);
  const int K = w.shape(0) * kCodesPerWord;
  const int N = w.shape(1);

  allocate_on_device(out, enc);
  if (out.size() == 0) return;
  if (poison_outputs()) check(cudaMemsetAsync(mx::gpu_ptr<void>(out), 0xFF, out.nbytes(), enc.stream()), "poison");

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
  const bool aligned = aligned16(args.x) && aligned16(args.w) && aligned16(args.scales) && aligned16(args.out) &&
      (!args.bias || aligned16(args.bias));
  const CudaGemmPlan p = plan_cuda_gemm(M, N, K, half_input && !force_simt(), aligned, transpose_);

  dispatch_types(x.dtype(), sc.dtype(), [&](auto xtag, auto stag) {
    using T = decltype(xtag);
    using S = decltype(stag);
    switch (p.kernel) {
      case CudaGemmKernel::SimtTransposed:
        add_kernel(enc, cuda::fp4_gemm_simt_transposed<T, S>, dim3(p.grid_x, p.grid_y), dim3(p.threads), args);
        break;
      case CudaGemmKernel::Simt:
        add_kernel(enc, cuda::fp4_gemm_simt<T, S>, dim3(p.grid_x, p.grid_y), dim3(p.threads), args);
        break;
      case CudaGemmKernel::MmaDecode:
      case CudaGemmKernel::MmaPrefill:
        if constexpr (std::is_same<T, float>::value) {
          throw std::logic_error("[fp4_gemm] MMA kernel planned for float32 input.");
        } else if (p.kernel == CudaGemmKernel::MmaDecode) {
          launch_mma<T, S, kCudaDecodeConfig>(enc, p, args);
        } else {
          launch_mma<T, S, kCudaPrefillConfig>(enc, p, args);
        }
        break;
    }
  });
}

} // namespace marlin
