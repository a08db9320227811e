// Backend-neutral GPU encoding of MoeMlp (see kernel_launcher.h, common/moe_params.h).
#pragma once

#include <vector>

#include "common/activation.h"
#include "gpu/kernel_launcher.h"

namespace marlin::gpu {

// inputs: x [..., K], router_logits [..., E] (row-major, T = the product of the leading
// dims; E <= kMoeMaxExperts, see moe_route_supported),
// w_gate [E, K/8, I or 2I], s_gate, [w_up, s_up,] w_down [E, I/8, N_out], s_down (all
// contiguous); `out` [..., N_out] (x's dtype) already has its data.  Composes the MoE
// kernels:
//   marlin_moe_route_<l>[_wf32]   idx [T, k], float32 weights [T, k]
//   moe_group_u32                 grouping of idx by expert (+ tile list)
//   moe_gemm_glu_<v>_<x>_<s>      h = act(x @ gate) * (x @ up), grouped rows [P, I]: gate and
//                                 up columns in one tile, act(gate) * up in the epilogue
//   moe_gemm_<v>_<x>_<s>          down projection of the grouped rows h -> y [P, N_out]
//   moe_combine_<x>               out[t] = sum_j weights[t, j] y[position[t k + j]]
// h and y are stored in x's dtype (bfloat16 activations stay bfloat16 end to end);
// accumulation is fp32 in registers, and the combine accumulates in fp32.
void encode_moe_mlp(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out, int top_k,
                    int group_size, Activation activation, bool normalize, bool fused_gate_up);

} // namespace marlin::gpu
