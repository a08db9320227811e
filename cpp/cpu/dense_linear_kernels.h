// Entry points of the CPU dense-linear kernels (y = x @ W^T + bias, W [N, K] in float16,
// bfloat16 or float32: the layers left unquantized, e.g. output heads; or W in MLX's
// affine 4 / 8-bit quantization: the layers a conversion leaves MLX-quantized).  Compiled once
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

// y[M, N] = x[M, K] @ W^T + bias with W in MLX's affine quantization (mode "affine"):
// w = code * scale + bias_g per group of `group_size` along K.  `w` is MLX's uint32
// matrix [N, K * bits / 32] read as bytes: little-endian words put code i of a row at
// bits [i * bits, (i + 1) * bits) of the row's byte stream (8 bits: byte i; 4 bits:
// byte i / 2, low nibble first).
struct AffineLinearArgs {
  const float* x;        // [M, K] row-major fp32
  int64_t M, K;
  const uint8_t* w;      // [N, K * bits / 8] bytes, row-contiguous
  int bits;              // 4 or 8
  int group_size;        // 32, 64 or 128 (K % group_size == 0)
  const void* scales;    // [N, K / group_size] of scale_type, row-contiguous
  const void* biases;    // same shape and type
  ElemType scale_type;
  int64_t N;
  const float* bias;     // [N] fp32 or nullptr (the layer's bias, added after the sum)
  void* out;             // [M, N] row-major
  ElemType out_type;
};

struct DenseLinearKernelTable {
  const char* isa;
  void (*linear)(const DenseLinearArgs&);
  void (*affine_linear)(const AffineLinearArgs&);
};

DenseLinearKernelTable dense_linear_kernels_generic();
DenseLinearKernelTable dense_linear_kernels_avx2();
DenseLinearKernelTable dense_linear_kernels_avx512();

const DenseLinearKernelTable& select_dense_linear_kernels();

} // namespace marlin::cpu
