// Parameter block of the MoE expert-GEMM GPU kernels (metal/moe_gemm.metal), shared with
// the host encoder (cpp/gpu/moe_gemm.cpp).  Plain ints: same layout in C++ and MSL.
//
// Pipeline (one moe_gemm call):
//   1. moe_group_<index type>  (1 threadgroup of kMoeGroupThreads): the expert grouping
//      of cpp/common/moe_plan.h build_expert_groups (stable counting sort of the (token,
//      slot) pairs by expert, simdgroup prefix sums, no atomics; experts in windows of
//      kMoeGroupWindow, any E): offsets [E + 1], pairs [P] (grouped position -> pair),
//      position [P] (pair -> grouped position, -1 for an invalid expert id), the tile
//      list tiles [max_tiles][4] = (expert, row begin, row end, 0) in grouped order,
//      and status [4] = (number of tiles, 1 + first pair with an invalid id or 0,
//      active experts, largest group).  Pairs with an invalid id follow the valid ones
//      in pairs[] under tiles of expert -1 (the GEMMs write NaN rows for them; the
//      tile-list capacity of plan_gpu_moe covers this extra group).  Also the grouping
//      step of moe_mlp (only pairs, E, tile_m of the params are read).
//   2. moe_gemm_<variant>_<x>_<s>: grid (N tiles, max_tiles); threadgroup y computes
//      tile y of one expert's grouped rows with the fp4_gemm tile machinery
//      (metal/include/marlin/gemm_core.h), rows gathered from x.  Output rows, in x's
//      dtype: the pair row of out [T, k, N] (unweighted), or the grouped row of y [P, N].
//      moe_gemm_glu_<variant>_<x>_<s> (moe_mlp): the same over gate and up weights,
//      writing h = act(gate) * up [P, I] (N = I; ld, up_col below; bindings + kMoeWUp,
//      kMoeSUp).
//   3. moe_combine_<out> (weighted only): out[t] = sum_j weights[t, j] * y[position[t k + j]]
//      in slot order, fp32 accumulation (deterministic, one writer per token) like the
//      CPU backend; NaN for a token with an invalid expert id.
#pragma once

#include "portable.h"

namespace marlin {

struct MoeGemmParams {
  int T;           // tokens
  int k;           // slots per token
  int E;           // experts
  int N;           // output columns
  int K;           // reduction length
  int group_size;
  int activation;  // marlin::Activation, applied per pair before the combine
  int shared_x;    // 1: x [T, K] shared by a token's slots; 0: x [T, k, K];
                   // 2: x [P, K] in grouped order (moe_mlp's down projection)
  int pairs;       // T * k
  int tile_m;      // rows per tile (the GEMM variant's BM)
  int max_tiles;   // capacity of the tile list: ceil(pairs / tile_m) + min(E, pairs)
  int weighted;    // 1: the GEMM writes grouped rows of y [P, N] for moe_combine
  int ld;          // moe_gemm_glu: row stride (columns) of the gate / up weights (2 I for
                   // [gate | up] in one tensor, else I); moe_gemm: N
  int up_col;      // moe_gemm_glu: first up column in w_up (I for [gate | up], else 0)
};

MARLIN_CONST int kMoeGroupThreads = 256;
MARLIN_CONST int kMoeGroupSimdgroups = kMoeGroupThreads / 32;
MARLIN_CONST int kMoeGroupWindow = 256;  // experts per histogram pass (8 register counters per lane)
MARLIN_CONST int kMoeCombineThreads = 128;

// Buffer bindings.
enum MoeGroupBinding { kMoeGIndices = 0, kMoeGOffsets = 1, kMoeGPairs = 2, kMoeGPosition = 3, kMoeGTiles = 4,
                       kMoeGStatus = 5, kMoeGParams = 6 };
enum MoeGemmBinding { kMoeX = 0, kMoeW = 1, kMoeScales = 2, kMoePairs = 3, kMoeTiles = 4, kMoeStatus = 5,
                      kMoeOut = 6, kMoeParams = 7, kMoeWUp = 8, kMoeSUp = 9 };
enum MoeCombineBinding { kMoeCY = 0, kMoeCWeights = 1, kMoeCPosition = 2, kMoeCOut = 3, kMoeCParams = 4 };

// ---- Routing kernels (metal/moe_route.metal, cpp/gpu/moe_route.cpp)
MARLIN_CONST int kMoeMaxExperts = 256;           // routing: E <= 256 (8 experts per lane)
MARLIN_CONST int kMoeRouteTokensPerGroup = 4;    // routing: one simdgroup per token

// moe_route_*: grid (ceil(T / kMoeRouteTokensPerGroup)), 32 * kMoeRouteTokensPerGroup threads.
struct MoeRouteParams {
  int T;             // tokens
  int E;             // experts (1 .. kMoeMaxExperts)
  int k;             // top-k (1 .. E)
  int normalize;     // divide the k weights by their sum
  int token_stride;  // elements between the logits of consecutive tokens
  int expert_stride; // elements between consecutive experts of one token
};

} // namespace marlin
