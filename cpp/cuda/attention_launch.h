// Interface between the host code (attention_host.cpp, plain C++ with MLX headers) and
// the kernels (attention_kernels.cu, CUDA with no MLX header).
#pragma once

#include <cstdint>

#include "common/attention_plan.h"
#include "cuda/elem_type.h"

namespace marlin::cuda {

// One attention call.  Strides in elements (q/k/v as given, mask right-aligned to
// [B, Hq, Lq, Lk] with 0 for broadcast dims); out is contiguous [B, Hq, Lq, D].
// With splits > 1 the attention kernel writes, per output row and split s, the
// unnormalized O to part_o[(row * splits + s) * D ..] and (m, l) (base-2 running max,
// sum) to part_ml[(row * splits + s) * 2 ..].  Given split_counters, attention_mma
// merges them into out itself, counting finished splits in split_counters[blockIdx.y *
// gridDim.x + blockIdx.x] (zero before the launch, zero again after it); otherwise
// (and always after attention_simt) the merge kernel does.
struct AttnArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* mask;  // nullptr unless mask_kind is Bool / Additive
  void* out;
  float* part_o;
  float* part_ml;
  int* split_counters;  // attention_mma with splits > 1: one per (x, y) block of the grid, or nullptr
  int64_t q_stride[4];
  int64_t k_stride[4];
  int64_t v_stride[4];
  int64_t mask_stride[4];
  int64_t keys_per_split;
  int B, Hq, Hkv, Lq, Lk, G;
  int heads_per_block;
  int block_q;
  int head_blocks;
  int query_blocks;
  int splits;
  int mask_kind;  // kAttnMask* (common/attention_params.h)
  int mask_type;  // kAttnMaskF32 / F16 / BF16 (additive masks)
  float scale_log2;  // scale * log2(e)
};

// Driver-API handles (CUfunction as void*), or nullptr where no instantiation exists.
// The Mma kernel's dynamic shared memory limit is raised to `smem` bytes.
void* attention_mma_kernel(int variant, int head_dim, ElemType t, int smem);
void* attention_simt_kernel(int head_dim, ElemType t);
void* attention_merge_kernel(int head_dim, ElemType t);
// Hopper's kernel (CudaAttentionKernel::Wgmma; head dims 64 / 128, f16 / bf16).  It takes
// AttnArgs and then the TMA tensor maps of q, k and v (cuda/tma.h: encode_rows_tma with
// kCudaAttnWgmmaRows / kCudaAttnWgmmaKeys rows per box).
void* attention_wgmma_kernel(int head_dim, ElemType t, int smem, bool persistent);

// The merge kernel's block: (head_dim / 4) x kAttnMergeGroups threads, one output row per y.
constexpr int kAttnMergeGroups = 4;

}  // namespace marlin::cuda
