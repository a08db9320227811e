// Interface between FP4Dequantize::eval_gpu (fp4_dequantize_host.cpp, MLX headers) and
// its kernel (fp4_dequantize_kernels.cu, no MLX header).
#pragma once

#include <cstdint>

#include "cuda/elem_type.h"

namespace marlin::cuda {

struct DequantArgs {
  const uint32_t* w;     // [K/8, N]
  const void* scales;    // [K/g, N]
  void* out;             // [K, N]
  int N;
  int K;
  int group_size;
  bool vector_ok;        // N % 4 == 0 and every pointer 16-byte aligned: 4 columns per load
};

constexpr int kDequantThreads = 256;

// Driver-API handle of the kernel for output type `out` and scale type `s` (nullptr if
// the combination does not exist).
void* fp4_dequantize_kernel(ElemType out, ElemType s);

} // namespace marlin::cuda
