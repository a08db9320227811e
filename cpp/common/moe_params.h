// Parameters of the Metal MoE routing / grouping kernels (metal/moe_route.metal),
// shared by the kernels and the host encoder (cpp/gpu/moe_route.cpp).  Compiled by
// C++ and Metal (real and emulated): constexpr scalars and plain structs only.
#pragma once

namespace marlin {

constexpr int kMoeMaxExperts = 256;           // routing: E <= 256 (8 experts per lane)
constexpr int kMoeRouteTokensPerGroup = 4;    // routing: one simdgroup per token
constexpr int kMoeGroupThreads = 256;         // grouping: one threadgroup of 8 simdgroups
constexpr int kMoeGroupSimdgroups = kMoeGroupThreads / 32;

// moe_route_*: grid (ceil(T / kMoeRouteTokensPerGroup)), 32 * kMoeRouteTokensPerGroup threads.
struct MoeRouteParams {
  int T;             // tokens
  int E;             // experts (1 .. kMoeMaxExperts)
  int k;             // top-k (1 .. E)
  int normalize;     // divide the k weights by their sum
  int token_stride;  // elements between the logits of consecutive tokens
  int expert_stride; // elements between consecutive experts of one token
};

// moe_group: grid (1), kMoeGroupThreads threads.  Stable counting sort of the
// num_pairs (token, slot) pairs by expert id, as build_expert_groups (moe_plan.h).
struct MoeGroupParams {
  int num_pairs;  // T * k
  int E;          // experts (1 .. kMoeMaxExperts)
};

} // namespace marlin
