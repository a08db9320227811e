// Scalar epilogue activations of the CPU backend: one definition for the GEMM
// epilogue and for MoE (where the activation applies to part of a product, e.g. the
// gate half of a concatenated [gate | up] GEMM).
#pragma once

#include <cmath>

#include "common/activation.h"

namespace marlin::cpu {

inline float apply_activation(float v, Activation act) {
  switch (act) {
    case Activation::None:
      return v;
    case Activation::Relu:
      return v > 0.f ? v : 0.f;
    case Activation::Gelu:
      // 1 + erf(z) = erfc(-z): without the cancellation of 1 + erf(z) for z << 0, where
      // the result is far smaller than float's rounding of 1 (at v = -4.7, 1% off).
      return 0.5f * v * std::erfc(v * -0.70710678118654752f);
    case Activation::GeluApprox: {
      // 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)): no cancellation for u << 0.
      float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
      return v / (1.f + std::exp(-2.f * u));
    }
    case Activation::Silu:
      return v / (1.f + std::exp(-v));
  }
  return v;
}

} // namespace marlin::cpu
