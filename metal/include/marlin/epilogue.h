// Epilogue activations (cpp/common/activation.h numbering), in float.  Metal has no
// erf, so erf is computed here: a Taylor series for |x| < 1 (error < 1e-8 before
// float rounding) and Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7) beyond.
// precise:: functions: Metal compiles with fast math by default.
#pragma once

#include <metal_stdlib>

#include "common/activation.h"

namespace marlin {

METAL_FUNC float erf_approx(float x) {
  const float ax = metal::fabs(x);
  if (ax < 1.0f) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)); terms to n = 10.
    const float x2 = x * x;
    float term = x;  // (-1)^n x^(2n+1) / n!
    float sum = x;
    for (int n = 1; n <= 10; ++n) {
      term = -term * x2 / float(n);
      sum += term / float(2 * n + 1);
    }
    return 1.12837916709551257f * sum;
  }
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  const float poly =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float r = 1.0f - poly * metal::precise::exp(-ax * ax);
  return x < 0.0f ? -r : r;
}

METAL_FUNC float apply_activation(float y, int activation) {
  switch (activation) {
    case int(Activation::Relu):
      return metal::max(y, 0.0f);
    case int(Activation::Gelu):
      return 0.5f * y * (1.0f + erf_approx(y * 0.70710678118654752f));
    case int(Activation::GeluApprox): {
      const float u = 0.79788456080286536f * (y + 0.044715f * y * y * y);
      return 0.5f * y * (1.0f + metal::precise::tanh(u));
    }
    case int(Activation::Silu):
      return y / (1.0f + metal::precise::exp(-y));
    default:
      return y;
  }
}

} // namespace marlin
