// FP4 (E2M1) decoding for the Metal kernels: one constant-memory table lookup per
// code (cpp/common/fp4_format.h holds the table, shared with every backend).
#pragma once

#include <metal_stdlib>

#include "common/fp4_format.h"

namespace marlin {

// Value of code `i` (0..7) of a packed word, times its group scale, in float (exact:
// an E2M1 value has 2 significant bits, a half/bfloat scale at most 11).
METAL_FUNC float decode_scaled(uint word, int i, float scale) {
  return kE2M1Table[(word >> (kBitsPerCode * i)) & kCodeMask] * scale;
}

} // namespace marlin
