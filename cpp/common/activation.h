// Epilogue activations shared by every backend: the enum values are part of the
// kernel ABI (they travel in parameter structs), so they are fixed here once.
#pragma once

#include "portable.h"

namespace marlin {

enum class Activation : int {
  None = 0,
  Relu = 1,
  Gelu = 2,        // exact: 0.5 x (1 + erf(x / sqrt 2))
  GeluApprox = 3,  // tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  Silu = 4,        // x * sigmoid(x)
};

MARLIN_CONST int kNumActivations = 5;

} // namespace marlin
