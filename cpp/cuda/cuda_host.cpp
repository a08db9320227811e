#include "cuda/cuda_host.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <mutex>
#include <string>
#include <unordered_map>

#include "mlx/backend/cuda/allocator.h"
#include "mlx/backend/cuda/utils.h"

namespace marlin::cuda {

void check(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("[") + op + "] " + what + ": " + cudaGetErrorString(err));
}

namespace {

// Bytes our pool keeps reserved across synchronizations (beyond them it trims).
constexpr uint64_t kPoolKeepBytes = uint64_t(2) << 30;

// mlx_marlin's own stream-ordered memory pool on `device`.  The device's default pool
// (the one MLX's allocator falls back to, behind its own buffer cache) has a release
// threshold of 0: every synchronization hands its free memory back to the driver, so
// an op that allocates per call (outputs, MoE scratch) maps fresh memory each time.
// Ours keeps up to kPoolKeepBytes.  MLX_MARLIN_CUDA_POOL=default uses the default pool.
cudaMemPool_t marlin_pool(int device) {
  static const bool use_default = [] {
    const char* v = std::getenv("MLX_MARLIN_CUDA_POOL");
    return v && std::string(v) == "default";
  }();
  if (use_default) return nullptr;
  static std::mutex mutex;
  static std::unordered_map<int, cudaMemPool_t> pools;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = pools.find(device);
  if (it != pools.end()) return it->second;
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  check(cudaMemPoolCreate(&pool, &props), "mlx_marlin", "cudaMemPoolCreate");
  uint64_t keep = kPoolKeepBytes;
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "mlx_marlin", "pool threshold");
  pools.emplace(device, pool);
  return pool;
}

} // namespace

// MLX 0.32 does not export its CUDA allocator's stream-ordered entry point
// (cu::malloc_async), and allocator::malloc hands out unified memory.  So outputs
// are taken from a stream-ordered pool of ours (marlin_pool) on the encoder's stream,
// in MLX's CudaBuffer wrapper so every MLX kernel and host read (which may move it to
// unified memory) sees an ordinary device array.  The deleter frees whichever kind of
// memory the buffer holds by then.
// Note: these bytes are not counted by mx.get_active_memory().
void allocate_on_device(mx::array& out, mx::cu::CommandEncoder& enc) {
  const size_t bytes = std::max<size_t>(out.nbytes(), 16);
  auto& dev = enc.device();
  dev.make_current();
  void* data = nullptr;
  if (cudaMemPool_t pool = marlin_pool(dev.cuda_device()))
    check(cudaMallocFromPoolAsync(&data, bytes, pool, enc.stream()), "mlx_marlin", "cudaMallocFromPoolAsync");
  else
    check(cudaMallocAsync(&data, bytes, enc.stream()), "mlx_marlin", "cudaMallocAsync");
  auto* buf = new mx::cu::CudaBuffer{data, bytes, dev.cuda_device()};
  out.set_data(mx::allocator::Data(mx::allocator::Buffer(buf), [](mx::allocator::Buffer b) {
    auto* cb = static_cast<mx::cu::CudaBuffer*>(b.ptr());
    if (!cb) return;
    if (cb->data) {
      if (cb->device >= 0) {
        cudaSetDevice(cb->device);
        cudaFreeAsync(cb->data, nullptr);
      } else {
        cudaPointerAttributes attr{};
        if (cudaPointerGetAttributes(&attr, cb->data) == cudaSuccess && attr.type == cudaMemoryTypeHost)
          cudaFreeHost(cb->data);
        else
          cudaFree(cb->data);
      }
    }
    delete cb;
  }));
}

bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("MLX_MARLIN_CUDA_POISON");
    return v && v[0] == '1';
  }();
  return on;
}

void poison(mx::array& out, mx::cu::CommandEncoder& enc, const char* op) {
  if (poison_outputs() && out.nbytes() > 0)
    check(cudaMemsetAsync(mx::gpu_ptr<void>(out), 0xFF, out.nbytes(), enc.stream()), op, "poison");
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

mx::array scratch(mx::cu::CommandEncoder& enc, mx::Shape shape, mx::Dtype dtype) {
  mx::array a(std::move(shape), dtype, nullptr, {});
  allocate_on_device(a, enc);
  enc.add_temporary(a);
  return a;
}

void launch(mx::cu::CommandEncoder& enc, void* fn, dim3 grid, dim3 block, uint32_t smem, void* args,
            std::initializer_list<const mx::array*> reads, std::initializer_list<const mx::array*> writes,
            const char* op) {
  if (!fn) throw std::logic_error(std::string("[") + op + "] no CUDA kernel for this configuration");
  for (const mx::array* a : reads) enc.set_input_array(*a);
  for (const mx::array* a : writes) enc.set_output_array(*a);
  void* params[] = {args};
  enc.add_kernel_node_raw(static_cast<CUfunction>(fn), grid, block, dim3(1, 1, 1), smem, params);
}

ElemType elem_type(mx::Dtype t, const char* op, const char* what) {
  if (t == mx::float16) return ElemType::Float16;
  if (t == mx::bfloat16) return ElemType::BFloat16;
  if (t == mx::float32) return ElemType::Float32;
  throw std::invalid_argument(std::string("[") + op + "] unsupported dtype for " + what + ".");
}

}  // namespace marlin::cuda
