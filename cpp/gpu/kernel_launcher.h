// The seam between backend-neutral GPU encoding and a concrete GPU.
//
// Each op's GPU path is written once as `encode_<op>(KernelLauncher&, ...)` (in
// cpp/gpu/<op>.cpp): it takes the dispatch plan from cpp/common/*_plan.h, fills the
// parameter struct shared with the .metal sources (cpp/common/*_params.h), and calls
// `dispatch` with the kernel's host name and its buffers in [[buffer(i)]] order.
// Implementations:
//  * MetalLauncher (cpp/metal/): MLX's Metal command encoder and mlx_marlin.metallib;
//    compiled only when MLX was built with Metal — the one piece that cannot run here.
//  * EmulatorLauncher (cpp/emulator/): the Metal-on-CPU emulator running the same
//    .metal sources (build option MLX_MARLIN_METAL_EMULATOR), used by CI.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mlx/array.h"

namespace marlin::gpu {

namespace mx = mlx::core;

// One [[buffer(i)]] binding: an MLX array (device memory), or raw bytes copied into
// the command (a `constant Params&` struct), like Metal's setBytes.
struct KernelArg {
  const mx::array* array = nullptr;  // bound at its data offset
  bool writable = false;             // output (or scratch written by the kernel)
  const void* bytes = nullptr;       // used when array == nullptr
  size_t num_bytes = 0;

  static KernelArg input(const mx::array& a) { return {&a, false, nullptr, 0}; }
  static KernelArg output(mx::array& a) { return {&a, true, nullptr, 0}; }
  template <typename T>
  static KernelArg value(const T& v) { return {nullptr, false, &v, sizeof(T)}; }
};

struct Dispatch {
  std::string kernel;                       // host name in the metallib / emulator module
  std::array<uint32_t, 3> threadgroups;     // grid size in threadgroups
  std::array<uint32_t, 3> threads_per_group;
  std::vector<size_t> threadgroup_bytes;    // sizes of [[threadgroup(i)]] arguments, if any
};

class KernelLauncher {
 public:
  virtual ~KernelLauncher() = default;
  // Encodes one kernel launch; launches on one launcher run in order.
  virtual void dispatch(const Dispatch& d, const std::vector<KernelArg>& args) = 0;
  // Scratch device memory owned by the launcher until the command completes.
  virtual mx::array scratch(const mx::Shape& shape, mx::Dtype dtype) = 0;
  // GPU core count (threadgroups resident at once, for plans that size grids by it).
  virtual int parallel_units() const = 0;
};

} // namespace marlin::gpu
