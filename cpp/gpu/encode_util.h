// Helpers shared by the backend-neutral GPU encoders (cpp/gpu/*.cpp).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/gpu_dtype.h"
#include "mlx/array.h"

namespace marlin::gpu {

inline GpuDtype gpu_dtype(mlx::core::Dtype t, const char* op) {
  if (t == mlx::core::float16) return GpuDtype::Float16;
  if (t == mlx::core::bfloat16) return GpuDtype::BFloat16;
  if (t == mlx::core::float32) return GpuDtype::Float32;
  throw std::invalid_argument(std::string("[") + op + "] unsupported dtype for the GPU kernels");
}

// Threadgroups needed to cover `a` items `b` at a time.
inline uint32_t cdiv(int64_t a, int64_t b) {
  return static_cast<uint32_t>((a + b - 1) / b);
}

} // namespace marlin::gpu
