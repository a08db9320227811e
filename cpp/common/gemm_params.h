// Parameter block of the FP4 GEMM GPU kernels, shared by the host encoders
// (cpp/gpu/fp4_gemm.cpp) and the .metal kernels (metal/gemm_fp4.metal), which receive
// it as `constant GemmParams&` (bytes copied into the command, like Metal's setBytes).
// Plain ints only: the layout is identical in C++, MSL and the emulator.
#pragma once

#include "portable.h"

namespace marlin {

struct GemmParams {
  int M;           // rows of x / out
  int N;           // columns of the packed weight (forward output width)
  int K;           // reduction length (multiple of group_size)
  int group_size;  // 32, 64 or 128
  int activation;  // marlin::Activation value, applied in the epilogue (uniform branch)
  int has_bias;    // 1: add bias[N] (float32) before the activation
};

// Buffer bindings ([[buffer(i)]]) of the kernels, in order.
//   fp4_gemm_*:            x [M,K], w [K/8,N] uint32, scales [K/g,N], bias [N] f32, out [M,N], params
//   fp4_gemm_transposed_*: g [M,N], w [K/8,N] uint32, scales [K/g,N], out [M,K], params
enum GemmBinding { kGemmX = 0, kGemmW = 1, kGemmScales = 2, kGemmBias = 3, kGemmOut = 4, kGemmParams = 5 };
enum GemmTransposedBinding { kGemmTG = 0, kGemmTW = 1, kGemmTScales = 2, kGemmTOut = 3, kGemmTParams = 4 };

// The transposed kernel: threads (x: packed K words, y: rows) per threadgroup.
MARLIN_CONST int kGemmTransposedThreadsX = 32;
MARLIN_CONST int kGemmTransposedThreadsY = 4;

} // namespace marlin
