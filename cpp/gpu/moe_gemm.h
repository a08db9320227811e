// Backend-neutral GPU encoding of MoeGemm (see kernel_launcher.h, common/moe_params.h).
#pragma once

#include <optional>
#include <vector>

#include "common/activation.h"
#include "common/moe_params.h"
#include "gpu/kernel_launcher.h"

namespace marlin::gpu {

// The grouping kernel moe_group_<index type> on indices [T, k] (any integer dtype,
// contiguous, T * k = p.pairs >= 1), reading p.pairs, p.E and p.tile_m: int32 scratch
// offsets [E + 1], pairs [P], position [P] (-1: invalid id), tiles [p.max_tiles, 4] and
// status [4] = (tiles, 1 + first invalid pair or 0, active experts, largest group), valid
// until the launcher's command completes (common/moe_params.h).
struct MoeGrouping {
  mx::array offsets;
  mx::array pairs;
  mx::array position;
  mx::array tiles;
  mx::array status;
};
MoeGrouping encode_moe_group(KernelLauncher& launcher, const mx::array& indices, const MoeGemmParams& p);

// inputs: x [T, K] or [T, k, K], w [E, K/8, N], scales [E, K/g, N], indices [T, k]
// (integer), optional weights [T, k] float32; `out` (x's dtype) already has its data.
// The weighted path keeps y [P, N] in x's dtype between the GEMM and the combine.
// Returns the grouping kernel's status buffer (int32 [4]: tile count, 1 + first pair
// with an invalid expert id or 0), for backends that can read it back after the
// launches (the emulator raises on it), or nullopt when nothing was launched.  Without
// a read-back (Metal) a pair with an invalid expert id is never dropped silently: its
// row of out [T, k, N], or its token's row of the combined out [T, N], is NaN.
std::optional<mx::array> encode_moe_gemm(KernelLauncher& launcher, const std::vector<mx::array>& inputs,
                                         mx::array& out, int group_size, Activation activation, bool has_weights);

} // namespace marlin::gpu
