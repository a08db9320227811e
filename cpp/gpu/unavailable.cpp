// eval_gpu for builds without a GPU backend of ours (MLX's CPU build, or a Metal /
// CUDA MLX before those kernels are compiled in).  The message tells the user the
// one thing that works: running on the CPU stream.
#include <stdexcept>
#include <string>

#include "ops/attention.h"
#include "ops/fp4_dequantize.h"
#include "ops/fp4_gemm.h"
#include "ops/moe.h"

namespace marlin {

[[noreturn]] void gpu_backend_unavailable(const char* op) {
  throw std::runtime_error(std::string("[") + op +
                           "] this build of mlx_marlin has no GPU kernels for the current MLX backend; "
                           "pass stream=mx.cpu (or run under `with mx.stream(mx.cpu):`).");
}

#if !defined(MLX_MARLIN_CUDA) && !defined(MLX_MARLIN_METAL)
// With the CUDA backend compiled in, cpp/cuda/fp4_gemm_host.cpp defines this instead;
// with the Metal backend, cpp/metal/fp4_gemm.cpp.
void FP4Gemm::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  gpu_backend_unavailable("fp4_gemm");
}
#endif

#if !defined(MLX_MARLIN_CUDA)
// Only the CUDA backend has this kernel (cpp/cuda/fp4_dequantize_host.cpp): the
// dense route of large-M fp4_gemm, which only the CUDA build takes.
void FP4Dequantize::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  gpu_backend_unavailable("fp4_dequantize");
}
#endif

#if !defined(MLX_MARLIN_CUDA) && !defined(MLX_MARLIN_METAL)
// With the CUDA backend, cpp/cuda/moe_host.cpp defines this instead; with the Metal
// backend, cpp/metal/moe_route.cpp.
void MoeRoute::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  gpu_backend_unavailable("moe_route");
}
#endif

#if !defined(MLX_MARLIN_CUDA) && !defined(MLX_MARLIN_METAL)
// With the CUDA backend, cpp/cuda/moe_host.cpp defines this instead; with the Metal
// backend, cpp/metal/moe_gemm.cpp.
void MoeGemm::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  gpu_backend_unavailable("moe_gemm");
}
#endif

#if !defined(MLX_MARLIN_CUDA) && !defined(MLX_MARLIN_METAL)
// With the CUDA backend, cpp/cuda/moe_host.cpp defines this instead; with the Metal
// backend, cpp/metal/moe_mlp.cpp.
void MoeMlp::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  gpu_backend_unavailable("moe_mlp");
}
#endif

#if !defined(MLX_MARLIN_METAL) && !defined(MLX_MARLIN_CUDA)
// With the Metal backend, cpp/metal/attention.cpp defines this instead; with the CUDA
// backend, cpp/cuda/attention_host.cpp.
void Attention::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  gpu_backend_unavailable("attention");
}
#endif

} // namespace marlin
