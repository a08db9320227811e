// Interface between the MoE host code (moe_host.cpp, plain C++ with MLX headers) and
// the MoE kernels (moe_kernels.cu, CUDA with no MLX header).  The pipeline and its
// plan: cpp/common/moe_plan.h (CUDA plan).
#pragma once

#include <cstdint>

#include "common/moe_plan.h"
#include "cuda/elem_type.h"

namespace marlin::cuda {

// logits [T, E] (row-contiguous) -> idx [T, k] uint32, weights [T, k].
struct MoeRouteArgs {
  const void* logits;
  uint32_t* idx;
  void* weights;
  int T;
  int E;
  int k;
  int normalize;
};

// The grouping of indices [T, k] (P = T * k pairs; common/moe_plan.h build_expert_groups)
// into buckets 0..E-1 (experts) and E (ids outside [0, E)):
//   offsets [E + 2]       bucket starts in grouped order (offsets[E] = valid pairs)
//   pairs [P]             grouped position -> pair (ascending pair within a bucket)
//   position [P]          pair -> grouped position, -1 for an invalid id
//   tiles [max_tiles][4]  (expert or -1, row begin, row end, 0) in grouped order
//   status [4]            (tiles, 1 + first invalid pair or 0, active experts, largest group)
struct MoeGroupArgs {
  const void* indices;
  int* offsets;
  int* pairs;
  int* position;
  int* tiles;
  int* status;
  int P;
  int E;
  int tile_m;
};

// How a grouped GEMM reads its A rows and writes its result.
enum class MoeXMode : int { PerSlot = 0, Shared = 1, Grouped = 2 };   // x [P, K], [T, K], grouped [P, K]
enum class MoeOutMode : int { Pairs = 0, Grouped = 1, Glu = 2 };
//   Pairs:   out [P, N] in x's type, row = pair, act applied (unweighted moe_gemm);
//            rows of invalid pairs are written as zeros
//   Grouped: out [P, N] float32, row = grouped position, act applied
//   Glu:     out [P, N] float32 grouped, act(gate) * up, gate = columns of w, up =
//            columns up_col.. of w2 (same row stride ldw)

struct MoeGemmArgs {
  const void* x;
  const uint32_t* w;       // [E, K/8, ldw]
  const void* scales;      // [E, K/g, ldw]
  const uint32_t* w2;      // Glu: up weights (may be w), else unused
  const void* scales2;
  const int* pairs;         // grouped mode: the grouping tables
  const int* tiles;
  const int* status;
  const uint32_t* direct_idx;  // direct mode: indices [P] (uint32 or int32), block y = pair y
  void* out;
  int N;           // output columns
  int K;
  int ldw;         // columns of the weight arrays
  int up_col;      // Glu: first up column in w2 / scales2
  int group_size;
  int act;
  int k;           // slots per token (Shared x: row = pair / k)
  int x_mode;      // MoeXMode
  int vec_w;       // 16-byte loads of weight words / scales / x allowed, 16-byte stores
  int vec_s;
  int vec_x;
  int vec_out;
  int direct;      // 0: tile list; 1: direct_idx uint32; 2: direct_idx int32
  int E;           // direct mode: ids outside [0, E) give zero rows
};

// out[t] = sum_j weights[t, j] * y[position[t k + j]] (j ascending, fp32; -1 skipped;
// position == nullptr: y holds pair rows).
struct MoeCombineArgs {
  const float* y;
  const float* weights;
  const int* position;
  void* out;
  int T;
  int k;
  int N;
};

// Driver-API handles (CUfunction as void*), nullptr for combinations that do not exist.
void* moe_route_fn(ElemType logits, ElemType weights);
// index_bits 8/16/32/64, signed or not.
void* moe_group_fn(int index_bits, bool index_signed);
// x: activations (float32 runs the tensor cores on a bf16 hi + lo split); s: scales.
void* moe_gemm_fn(CudaMoeVariant v, MoeOutMode mode, ElemType x, ElemType s);
void* moe_combine_fn(ElemType out);

}  // namespace marlin::cuda
