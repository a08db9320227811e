// FP4Gemm::eval_gpu for MLX's CUDA backend: picks a kernel with plan_cuda_gemm
// (cpp/common/gemm_plan.h) and records it on MLX's command encoder.
//
// Host code is plain C++ (g++): nvcc's front end rejects parts of MLX 0.32's ops.h,
// so the kernels live in fp4_gemm_kernels.cu, which includes no MLX header and hands
// out kernel entry points by (kernel, activation type, scale type).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/gemm_plan.h"
#include "cuda/fp4_gemm_launch.h"
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

// MLX_MARLIN_CUDA_DECODE=<index> forces a Gemv variant for M <= 16 (see
// kCudaGemvConfigs), =mma the older MmaDecode kernel; read at every call so tests can
// switch it.
int gemv_override() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_DECODE");
  if (!v || !v[0]) return -1;
  if (std::string(v) == "mma") return -2;
  return std::atoi(v);
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

cuda::ElemType elem_type(mx::Dtype t, const char* what) {
  if (t == mx::float16) return cuda::ElemType::Float16;
  if (t == mx::bfloat16) return cuda::ElemType::BFloat16;
  if (t == mx::float32) return cuda::ElemType::Float32;
  throw std::invalid_argument(std::string("[fp4_gemm] unsupported dtype for ") + what + ".");
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
  const CudaGemmPlan p =
      plan_cuda_gemm(M, N, K, half_input && !force_simt(), aligned, transpose_, group_size_, gemv_override());

  enc.device().make_current();
  void* fn = p.kernel == CudaGemmKernel::Gemv
      ? cuda::fp4_gemv_kernel(p.gemv_variant, p.rows16, elem_type(x.dtype(), "x"), elem_type(sc.dtype(), "scales"))
      : cuda::fp4_gemm_kernel(p.kernel, elem_type(x.dtype(), "x"), elem_type(sc.dtype(), "scales"));
  if (!fn) throw std::logic_error(std::string("[fp4_gemm] no CUDA kernel for plan ") + cuda_kernel_name(p.kernel));
  void* params[] = {&args};
  enc.add_kernel_node_raw(static_cast<CUfunction>(fn), dim3(p.grid_x, p.grid_y), dim3(p.threads), dim3(1, 1, 1), p.smem, params);
}

} // namespace marlin
