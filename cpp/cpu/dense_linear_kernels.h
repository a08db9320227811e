// Entry point of the CPU dense-linear kernel (y = x @ W^T + bias, W [N, K] in float16,
// bfloat16 or float32: the layers left unquantized, e.g. output heads).  Compiled once
// per instruction set like the FP4 GEMM kernels; cpu/dense_linear.cpp picks the build
// matching select_kernels().isa.
#pragma once

#include <cstdint>

#include "cpu/fp4_gemm_kernels.h"  // ElemType

namespace marlin::cpu {

struct DenseLinearArgs {
  const float* x;        // [M, K] row-major fp32
  int64_t M, K;
  const void* w;         // [N, K], rows w_row_stride elements apart
  ElemType w_type;
  int64_t N, w_row_stride;
  const float* bias;     // [N] fp32 or nullptr
  void* out;             // [M, N] row-major
  ElemType out_type;
};

struct DenseLinearKernelTable {
  const char* isa;
  void (*linear)(const DenseLinearArgs&);
};

DenseLinearKernelTable dense_linear_kernels_generic();
DenseLinearKernelTable dense_linear_kernels_avx2();
DenseLinearKernelTable dense_linear_kernels_avx512();

const DenseLinearKernelTable& select_dense_linear_kernels();

} // namespace marlin::cpu
