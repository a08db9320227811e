// KernelLauncher on the Metal-on-CPU emulator (metal/emulator): runs the same .metal
// kernels as the Metal backend, compiled at extension build time into
// mlx_marlin_metal_emu.so (build option MLX_MARLIN_METAL_EMULATOR), which is found
// beside the extension module (or at $MLX_MARLIN_EMULATOR_MODULE).
//
// Launches run synchronously on the calling thread: MLX's CPU stream threads do not
// catch exceptions, and emulator diagnostics (bounds, races, deadlocks) must reach
// Python as exceptions.  So an op's eval_cpu first waits for its stream (its inputs
// are then computed), then encodes and runs its kernels in place.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gpu/kernel_launcher.h"
#include "mlx/allocator.h"
#include "mlx/stream.h"

namespace mtlemu {
class Module;
}

namespace marlin::emulator {

namespace mx = mlx::core;

class EmulatorLauncher : public gpu::KernelLauncher {
 public:
  EmulatorLauncher();
  void dispatch(const gpu::Dispatch& d, const std::vector<gpu::KernelArg>& args) override;
  mx::array scratch(const mx::Shape& shape, mx::Dtype dtype) override;
  int parallel_units() const override { return 8; }

 private:
  const mtlemu::Module& module_;
  std::vector<mx::array> scratch_;  // alive until the launcher (one op's eval) is done
};

// The loaded kernel module (loaded once per process).
const mtlemu::Module& kernel_module();
std::string kernel_module_path();
std::vector<std::string> kernel_module_names();
bool kernel_module_checked();

// eval_cpu of an emulator build: wait for the stream, allocate `outs`, then run `encode`.
template <class F>
void run_on_emulator(mx::Stream s, std::vector<mx::array>& outs, F&& encode) {
  mx::synchronize(s);
  for (auto& o : outs) o.set_data(mx::allocator::malloc(o.nbytes()));
  EmulatorLauncher launcher;
  encode(launcher);
}

} // namespace marlin::emulator
