// Interface between the host code (fp4_gemm_host.cpp, plain C++ with MLX headers) and
// the kernels (fp4_gemm_kernels.cu, CUDA with no MLX header).
#pragma once

#include <cstdint>

#include "common/gemm_plan.h"
#include "cuda/elem_type.h"

namespace marlin::cuda {

struct GemmArgs {
  const void* x;        // [M, K] (transposed mode: g [M, N])
  const uint32_t* w;    // [K/8, N]
  const void* scales;   // [K/g, N]
  const float* bias;    // [N] or nullptr
  void* out;            // [M, N] (transposed mode: [M, K])
  int M;
  int N;
  int K;
  int group_size;
  int act;
  float* split_part;    // fp4_gemv_token with K split over blocks: [splits, N] fp32 sums
  int* split_counters;  // [grid_x], zero between launches (the last block of a strip resets its own)
};

// Driver-API function handle (CUfunction, as void*) of the `__global__ void(GemmArgs)` kernel `k` for activations of type
// `x` and scales of type `s`, or nullptr when that combination does not exist (MMA
// kernels take float16/bfloat16 activations only).
void* fp4_gemm_kernel(CudaGemmKernel k, ElemType x, ElemType s);

// The same for the Gemv kernel: variant = index into kCudaGemvConfigs; rows16 = M > 8.
void* fp4_gemv_kernel(int variant, bool rows16, ElemType x, ElemType s);

// The same for the one-token kernel: variant = index into kCudaGemvTokenConfigs; nullptr
// for a group size other than 32, 64, 128.
void* fp4_gemv_token_kernel(int variant, int group_size, uint32_t smem, ElemType x, ElemType s);

} // namespace marlin::cuda
