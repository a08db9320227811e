#include "metal/metal_launcher.h"

#include <dlfcn.h>

#include <string>

#include "mlx/allocator.h"
#include "mlx/backend/metal/device.h"

namespace marlin::metal {

namespace {
// Directory of this extension module: mlx_marlin.metallib is installed beside it.
std::string binary_dir() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&binary_dir), &info) || !info.dli_fname) return ".";
  std::string path = info.dli_fname;
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
} // namespace

void MetalLauncher::dispatch(const gpu::Dispatch& d, const std::vector<gpu::KernelArg>& args) {
  auto& dev = mx::metal::device(stream_.device);
  auto* lib = dev.get_library("mlx_marlin", binary_dir() + "/mlx_marlin.metallib");
  auto* kernel = dev.get_kernel(d.kernel, lib);
  auto& enc = mx::metal::get_command_encoder(stream_);
  enc.set_compute_pipeline_state(kernel);
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    const int idx = static_cast<int>(i);
    if (a.array && a.writable)
      enc.set_output_array(*const_cast<mx::array*>(a.array), idx);
    else if (a.array)
      enc.set_input_array(*a.array, idx);
    else
      enc.set_bytes(static_cast<const char*>(a.bytes), static_cast<int>(a.num_bytes), idx);
  }
  for (size_t i = 0; i < d.threadgroup_bytes.size(); ++i)
    enc.set_threadgroup_memory_length(d.threadgroup_bytes[i], static_cast<int>(i));
  enc.dispatch_threadgroups(MTL::Size(d.threadgroups[0], d.threadgroups[1], d.threadgroups[2]),
                            MTL::Size(d.threads_per_group[0], d.threads_per_group[1], d.threads_per_group[2]));
}

mx::array MetalLauncher::scratch(const mx::Shape& shape, mx::Dtype dtype) {
  mx::array a(shape, dtype, nullptr, {});
  a.set_data(mx::allocator::malloc(a.nbytes()));
  mx::metal::get_command_encoder(stream_).add_temporary(a);
  return a;
}

int MetalLauncher::parallel_units() const {
  // Apple GPUs: 8..80 cores; a plan that sizes grids by this only needs the order.
  return 32;
}

} // namespace marlin::metal
