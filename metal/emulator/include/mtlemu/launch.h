// Host-side API of the Metal-on-CPU emulator.
//
// A kernel module is a shared object built by metal/emulator/build.py from
// one or more .metal files. It exports a single symbol, mtlemu_get_registry,
// through which the host lists kernels and launches them. This header gives
// both the raw C ABI (usable from ctypes) and a small C++ wrapper.
//
// Do not include this header from .metal sources.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {

struct mtlemu_buffer {
  void* ptr;    // host memory bound to [[buffer(i)]]; written in place
  size_t size;  // bytes; accesses outside [ptr, ptr+size) are errors
};

enum mtlemu_launch_flags {
  // Checked modules only: skip threadgroup race tracking (bounds checks stay).
  MTLEMU_NO_RACE_CHECK = 1,
  // Checked modules: report reads of threadgroup memory that no thread of the
  // threadgroup has written (atomic writes do not count).
  MTLEMU_CHECK_UNINITIALIZED = 2,
};

// Value of a [[function_constant(index)]] for one launch. Every MSL function
// constant type (bool, integers up to 32 bits, half, float) is exact in a double.
struct mtlemu_function_constant {
  int index;
  double value;
};

struct mtlemu_launch_desc {
  const char* kernel;               // host name of the kernel
  uint32_t grid[3];                 // threadgroups per grid
  uint32_t threads[3];              // threads per threadgroup
  const mtlemu_buffer* buffers;     // buffers[i] binds [[buffer(i)]]
  int n_buffers;
  const size_t* threadgroup_bytes;  // sizes for [[threadgroup(i)]] arguments
  int n_threadgroup;
  int flags;                        // mtlemu_launch_flags
  const mtlemu_function_constant* function_constants;  // unset ones are undefined
  int n_function_constants;
};

struct mtlemu_registry {
  int abi_version;  // MTLEMU_ABI_VERSION
  int checked;      // 1 when built with bounds/race instrumentation
  int (*kernel_count)(void);
  const char* (*kernel_name)(int index);
  // Runs the whole grid. Returns 0 on success; otherwise non-zero and
  // last_error() describes every problem found (bounds, races, deadlock,
  // bad launch parameters).
  int (*launch)(const mtlemu_launch_desc* desc);
  const char* (*last_error)(void);
};

#define MTLEMU_ABI_VERSION 1
#define MTLEMU_REGISTRY_SYMBOL "mtlemu_get_registry"
typedef const mtlemu_registry* (*mtlemu_get_registry_fn)(void);
}

#if defined(__cplusplus) && !defined(MTLEMU_NO_HOST_WRAPPER)
#include <dlfcn.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace mtlemu {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Dim3 {
  uint32_t x = 1, y = 1, z = 1;
};

struct Buffer {
  void* ptr;
  size_t size;
  template <class T>
  static Buffer of(std::vector<T>& v) {
    return {v.data(), v.size() * sizeof(T)};
  }
  template <class T>
  static Buffer of_value(T& v) {
    return {&v, sizeof(T)};
  }
};

// A loaded kernel module (.so built by build.py).
class Module {
 public:
  explicit Module(const std::string& path) {
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) throw Error(std::string("mtlemu: dlopen failed: ") + dlerror());
    auto get = reinterpret_cast<mtlemu_get_registry_fn>(dlsym(handle_, MTLEMU_REGISTRY_SYMBOL));
    if (!get) throw Error("mtlemu: " + path + " has no " MTLEMU_REGISTRY_SYMBOL);
    reg_ = get();
    if (reg_->abi_version != MTLEMU_ABI_VERSION) throw Error("mtlemu: ABI version mismatch");
  }
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  ~Module() {
    if (handle_) dlclose(handle_);
  }

  bool checked() const { return reg_->checked != 0; }

  std::vector<std::string> kernels() const {
    std::vector<std::string> names;
    for (int i = 0; i < reg_->kernel_count(); ++i) names.emplace_back(reg_->kernel_name(i));
    return names;
  }

  // Throws mtlemu::Error with the collected diagnostics on any failure.
  void launch(const std::string& kernel, Dim3 grid, Dim3 threads,
              const std::vector<Buffer>& buffers,
              const std::vector<size_t>& threadgroup_bytes = {}, int flags = 0,
              const std::vector<mtlemu_function_constant>& function_constants = {}) const {
    std::vector<mtlemu_buffer> raw;
    for (const Buffer& b : buffers) raw.push_back({b.ptr, b.size});
    mtlemu_launch_desc d{};
    d.kernel = kernel.c_str();
    d.grid[0] = grid.x, d.grid[1] = grid.y, d.grid[2] = grid.z;
    d.threads[0] = threads.x, d.threads[1] = threads.y, d.threads[2] = threads.z;
    d.buffers = raw.data();
    d.n_buffers = static_cast<int>(raw.size());
    d.threadgroup_bytes = threadgroup_bytes.data();
    d.n_threadgroup = static_cast<int>(threadgroup_bytes.size());
    d.flags = flags;
    d.function_constants = function_constants.data();
    d.n_function_constants = static_cast<int>(function_constants.size());
    if (reg_->launch(&d) != 0) throw Error(reg_->last_error());
  }

 private:
  void* handle_ = nullptr;
  const mtlemu_registry* reg_ = nullptr;
};

}  // namespace mtlemu
#endif
