// Backend-neutral GPU encoding of MoeGemm (see kernel_launcher.h, common/moe_params.h).
#pragma once

#include <optional>
#include <vector>

#include "common/activation.h"
#include "gpu/kernel_launcher.h"

namespace marlin::gpu {

// inputs: x [T, K] or [T, k, K], w [E, K/8, N], scales [E, K/g, N], indices [T, k]
// (integer), optional weights [T, k] float32; `out` already has its data.  Returns the
// grouping kernel's status buffer (int32 [4]: tile count, 1 + first pair with an
// invalid expert id or 0), for backends that can read it back after the launches
// (the emulator raises on it; on Metal such pairs are dropped), or nullopt when
// nothing was launched.
std::optional<mx::array> encode_moe_gemm(KernelLauncher& launcher, const std::vector<mx::array>& inputs,
                                         mx::array& out, int group_size, Activation activation, bool has_weights);

} // namespace marlin::gpu
