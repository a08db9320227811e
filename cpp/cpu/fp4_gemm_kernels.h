// Entry points of the CPU FP4 GEMM kernels.  The implementation
// (fp4_gemm_kernels.cpp) is compiled once per instruction set; `select_kernels`
// picks the best one the running CPU supports.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/activation.h"

namespace marlin::cpu {

enum class ElemType : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

// One FP4 weight matrix as the kernels see it.
struct PackedWeight {
  const uint32_t* words;  // [K/8, N]
  const uint16_t* scales; // [K/group_size, N], float16 or bfloat16 bits
  bool scales_bf16;
  int64_t K, N;
  int group_size;
};

// y[M, N] = act(x[M, K] @ W + bias)
struct GemmArgs {
  const float* x;       // [M, K] row-major fp32 (rows x_row_stride apart)
  int64_t x_row_stride;
  PackedWeight w;
  const float* bias;    // [N] or nullptr
  Activation activation;
  int64_t M;
  void* out;            // [M, N] rows out_row_stride elements apart
  int64_t out_row_stride;
  ElemType out_type;
};

// dx[M, K] = g[M, N] @ W^T  (the input gradient of a GEMM against W)
struct GemmTransposedArgs {
  const float* g;  // [M, N] row-major fp32
  PackedWeight w;
  int64_t M;
  float* out;      // [M, K] fp32
};

struct KernelTable {
  const char* isa;
  bool byte_table_streaming;  // plan_cpu_gemm's byte_tables (common/gemm_plan.h)
  void (*gemm)(const GemmArgs&);
  void (*gemm_transposed)(const GemmTransposedArgs&);
};

// Defined by each ISA build of fp4_gemm_kernels.cpp.
KernelTable kernels_generic();
KernelTable kernels_avx2();
KernelTable kernels_avx512();

// The best table for this CPU (decided once).
const KernelTable& select_kernels();

// Another per-ISA kernel family's table for the instruction set select_kernels() chose
// (including MLX_MARLIN_CPU_ISA), so every family runs the same build.
template <typename Table>
Table table_for_selected_isa(Table (*generic)(), Table (*avx2)(), Table (*avx512)()) {
#if defined(MARLIN_HAVE_X86_KERNELS)
  const std::string_view isa = select_kernels().isa;
  if (isa == "avx512") return avx512();
  if (isa == "avx2") return avx2();
#else
  (void)avx2;
  (void)avx512;
#endif
  return generic();
}

} // namespace marlin::cpu
