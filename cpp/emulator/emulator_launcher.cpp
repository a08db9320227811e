#include "emulator/emulator_launcher.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "mtlemu/launch.h"

namespace marlin::emulator {

namespace {
constexpr const char* kModuleFile = "mlx_marlin_metal_emu.so";

// Checked modules: bounds, races and reads of never-written threadgroup memory.
// MLX_MARLIN_EMULATOR_RACES=0 skips race tracking, MLX_MARLIN_EMULATOR_UNINIT=0 the
// uninitialized-read check (bounds checks stay), for speed.
int launch_flags() {
  auto off = [](const char* name) {
    const char* v = std::getenv(name);
    return v && v[0] == '0';
  };
  return (off("MLX_MARLIN_EMULATOR_RACES") ? MTLEMU_NO_RACE_CHECK : 0) |
      (off("MLX_MARLIN_EMULATOR_UNINIT") ? 0 : MTLEMU_CHECK_UNINITIALIZED);
}
} // namespace

std::string kernel_module_path() {
  if (const char* env = std::getenv("MLX_MARLIN_EMULATOR_MODULE"); env && *env) return env;
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&kernel_module_path), &info) || !info.dli_fname)
    throw std::runtime_error("[mlx_marlin] cannot locate the extension module to find " + std::string(kModuleFile));
  std::string dir = info.dli_fname;
  const auto slash = dir.find_last_of('/');
  dir = slash == std::string::npos ? "." : dir.substr(0, slash);
  return dir + "/" + kModuleFile;
}

const mtlemu::Module& kernel_module() {
  static std::once_flag once;
  static std::unique_ptr<mtlemu::Module> mod;
  std::call_once(once, [] { mod = std::make_unique<mtlemu::Module>(kernel_module_path()); });
  return *mod;
}

std::vector<std::string> kernel_module_names() {
  return kernel_module().kernels();
}

bool kernel_module_checked() {
  return kernel_module().checked();
}

EmulatorLauncher::EmulatorLauncher() : module_(kernel_module()) {}

void EmulatorLauncher::dispatch(const gpu::Dispatch& d, const std::vector<gpu::KernelArg>& args) {
  std::vector<mtlemu::Buffer> buffers;
  std::vector<std::vector<char>> values;  // bytes bound by value, copied like setBytes
  values.reserve(args.size());
  for (const auto& a : args) {
    if (a.array) {
      const mx::array& arr = *a.array;
      // The bytes this view really spans from its data pointer: smaller than nbytes() for
      // broadcast (stride-0) inputs, larger for strided slices.
      buffers.push_back(mtlemu::Buffer{const_cast<void*>(arr.data<void>()), arr.data_size() * arr.itemsize()});
    } else {
      values.emplace_back(static_cast<const char*>(a.bytes), static_cast<const char*>(a.bytes) + a.num_bytes);
      buffers.push_back(mtlemu::Buffer{values.back().data(), a.num_bytes});
    }
  }
  try {
    module_.launch(d.kernel, {d.threadgroups[0], d.threadgroups[1], d.threadgroups[2]},
                   {d.threads_per_group[0], d.threads_per_group[1], d.threads_per_group[2]}, buffers,
                   d.threadgroup_bytes, launch_flags());
  } catch (const mtlemu::Error& e) {
    throw std::runtime_error("[mlx_marlin] Metal emulator: kernel " + d.kernel + " failed:\n" + e.what());
  }
}

mx::array EmulatorLauncher::scratch(const mx::Shape& shape, mx::Dtype dtype) {
  mx::array a(shape, dtype, nullptr, {});
  a.set_data(mx::allocator::malloc(a.nbytes()));
  scratch_.push_back(a);
  return a;
}

} // namespace marlin::emulator
