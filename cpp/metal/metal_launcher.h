// KernelLauncher on MLX's Metal backend: kernels from mlx_marlin.metallib (built by
// CMake's mlx_build_metallib from metal/*.metal, installed beside the extension),
// encoded on the stream's command encoder.  Compiled only when MLX has Metal
// (MLX_BUILD_METAL); it cannot be compiled or run on the Linux CI machines, where
// the same .metal sources run on the emulator instead (cpp/emulator/).  Kept thin:
// every decision lives in the backend-neutral encoders (cpp/gpu/).
#pragma once

#include <vector>

#include "gpu/kernel_launcher.h"
#include "mlx/stream.h"

namespace marlin::metal {

namespace mx = mlx::core;

class MetalLauncher : public gpu::KernelLauncher {
 public:
  explicit MetalLauncher(mx::Stream s) : stream_(s) {}
  void dispatch(const gpu::Dispatch& d, const std::vector<gpu::KernelArg>& args) override;
  mx::array scratch(const mx::Shape& shape, mx::Dtype dtype) override;
  int parallel_units() const override;

 private:
  mx::Stream stream_;
};

} // namespace marlin::metal
