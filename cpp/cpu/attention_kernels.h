// Entry point of the CPU flash-attention kernel.  The implementation
// (attention_kernels.cpp) is compiled once per instruction set, like the FP4 GEMM
// kernels; cpu/attention.cpp picks the build matching select_kernels().isa.
#pragma once

#include <cstdint>

#include "common/attention_plan.h"
#include "cpu/fp4_gemm_kernels.h"  // ElemType

namespace marlin::cpu {

enum class MaskKind : int { None = 0, Causal = 1, Bool = 2, Additive = 3 };

// out[b, h, i, :] = softmax_j(scale * q[b,h,i,:] . k[b,h/G,j,:] + mask) @ v[b,h/G,:,:]
// All strides are in elements, ordered (batch, head, position, feature); a mask
// stride is 0 along every broadcast dimension (mask indexed [b, hq, i, j]).
struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  ElemType type;  // of q, k, v and out
  int64_t B, Hq, Hkv, Lq, Lk, D;
  int64_t q_stride[4], k_stride[4], v_stride[4];
  float scale;
  MaskKind mask_kind;
  const void* mask;     // bool (1 byte) or additive in mask_type
  ElemType mask_type;
  int64_t mask_stride[4];
  const float* sinks;   // [Hq] attention-sink logits, or nullptr
  void* out;            // contiguous [B, Hq, Lq, D]
  AttentionPlan plan;
};

struct AttentionKernelTable {
  const char* isa;
  void (*attention)(const AttentionArgs&);
};

AttentionKernelTable attention_kernels_generic();
AttentionKernelTable attention_kernels_avx2();
AttentionKernelTable attention_kernels_avx512();

const AttentionKernelTable& select_attention_kernels();

} // namespace marlin::cpu
