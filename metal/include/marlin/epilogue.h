// Epilogue activations (cpp/common/activation.h numbering), in float, in the forms of the
// CPU backend (cpp/cpu/activation.h): GELU as 0.5 x erfc(-x / sqrt 2) and the tanh GELU as
// x / (1 + exp(-2u)), so that neither subtracts from 1 where the result is tiny (1 + erf(z)
// at z = -3.3 keeps 2% of its digits in float; 1 + tanh(u) is exactly 0 from u = -9).
// Metal has no erfc: erfc_approx is the Chebyshev fit of Numerical Recipes' erfcc (Press
// et al., 2nd ed., 6.2), fractional error < 1.2e-7 everywhere.  precise:: functions: Metal
// compiles with fast math by default.
#pragma once

#include <metal_stdlib>

#include "common/activation.h"

namespace marlin {

METAL_FUNC float erfc_approx(float x) {
  const float z = metal::fabs(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float poly =
      -1.26551223f +
      t * (1.00002368f +
           t * (0.37409196f +
                t * (0.09678418f +
                     t * (-0.18628806f +
                          t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  const float r = t * metal::precise::exp(poly - z * z);
  return x >= 0.0f ? r : 2.0f - r;  // erfc(-z) = 2 - erfc(z); NaN stays NaN
}

METAL_FUNC float apply_activation(float y, int activation) {
  switch (activation) {
    case int(Activation::Relu):
      return metal::max(y, 0.0f);
    case int(Activation::Gelu):
      return 0.5f * y * erfc_approx(y * -0.70710678118654752f);
    case int(Activation::GeluApprox): {
      const float u = 0.79788456080286536f * (y + 0.044715f * y * y * y);
      return y / (1.0f + metal::precise::exp(-2.0f * u));
    }
    case int(Activation::Silu):
      return y / (1.0f + metal::precise::exp(-y));
    default:
      return y;
  }
}

} // namespace marlin
