// Backend-neutral GPU encoding of FP4Gemm (see kernel_launcher.h).
#pragma once

#include <vector>

#include "common/activation.h"
#include "gpu/kernel_launcher.h"

namespace marlin::gpu {

// inputs: x [..., K] (or g [..., N] with transpose; row-major, M = the product of the
// leading dims), w [K/8, N], scales [K/g, N], optional
// bias [N] float32.  `out` must already have its data (the launcher binds it as is).
void encode_fp4_gemm(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out,
                     int group_size, Activation activation, bool transpose);

} // namespace marlin::gpu
