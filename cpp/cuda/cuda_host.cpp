#include "cuda/cuda_host.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "mlx/backend/cuda/allocator.h"
#include "mlx/backend/cuda/utils.h"

namespace marlin::cuda {

void check(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("[") + op + "] " + what + ": " + cudaGetErrorString(err));
}

namespace {

// Where outputs come from (MLX_MARLIN_CUDA_ALLOC, read per call for the overhead
// benchmark): by default MLX's allocator through its exported interface, as MLX's own
// ops do (its buffer cache hands a freed buffer back without a CUDA call); "pool" takes
// them stream-ordered from our pool (marlin_pool) on the encoder's stream, returned with
// cudaFreeAsync.  On the H100 (2026-12-05, sixth session) MLX's allocator took the
// 1 x 14336 x 4096 op from 0.019-0.024 to 0.0165 ms, attention decode at Lk = 4096 from
// 0.0175-0.018 to 0.0126-0.013 ms and prefill at L = 4096 from 0.294 to 0.269-0.289 ms
// (benchmarks/RESULTS.md).
bool use_mlx_allocator() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_ALLOC");
  return !(v && std::string(v) == "pool");
}

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

// Buffers released by array deleters, freed at the next allocation.  MLX keeps every
// array a kernel node reads or writes alive until the node's graph completed, so a
// deleter runs only after the GPU is done with the buffer; but deleters may run inside
// MLX's completion callbacks, where CUDA API calls are not allowed (a cudaFree there
// deadlocked the device).  So they only record the buffer, and every CUDA call happens
// in take(), on the thread that encodes kernels.
class DeferredFrees {
 public:
  void* take(size_t bytes, int device, cudaStream_t stream) {
    std::vector<std::pair<void*, bool>> pending;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending.swap(pending_);
    }
    for (auto& [p, moved] : pending) {
      if (!moved) {
        cudaFreeAsync(p, stream);
        continue;
      }
      cudaPointerAttributes attr{};
      if (cudaPointerGetAttributes(&attr, p) == cudaSuccess && attr.type == cudaMemoryTypeHost) cudaFreeHost(p);
      else cudaFree(p);
    }
    void* p = nullptr;
    cudaMemPool_t pool = marlin_pool(device);
    check(pool ? cudaMallocFromPoolAsync(&p, bytes, pool, stream) : cudaMallocAsync(&p, bytes, stream), "mlx_marlin",
          "cudaMallocAsync");
    return p;
  }

  // No CUDA call here (see above).  `moved`: a host read made MLX move the buffer out
  // of our pool (unified or host memory, CudaBuffer::device = -1).
  void give(void* p, bool moved) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.emplace_back(p, moved);
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<void*, bool>> pending_;
};

DeferredFrees& deferred_frees() {
  static auto* frees = new DeferredFrees;  // never destroyed: arrays may outlive statics
  return *frees;
}

}  // namespace

// By default MLX's allocator (see use_mlx_allocator).  With MLX_MARLIN_CUDA_ALLOC=pool:
// MLX 0.32 does not export its CUDA allocator's stream-ordered entry point
// (cu::malloc_async), so outputs are device memory of our own pool, wrapped in MLX's
// CudaBuffer so every MLX kernel and host read (which may move it to unified memory)
// sees an ordinary device array; those bytes are not counted by mx.get_active_memory().
void allocate_on_device(mx::array& out, mx::cu::CommandEncoder& enc) {
  const size_t bytes = std::max<size_t>(out.nbytes(), 16);
  auto& dev = enc.device();
  dev.make_current();
  if (use_mlx_allocator()) {
    auto& a = mx::allocator::allocator();
    out.set_data(mx::allocator::Data(a.malloc(bytes), [](mx::allocator::Buffer b) { mx::allocator::allocator().free(b); }));
    return;
  }
  void* data = deferred_frees().take(bytes, dev.cuda_device(), enc.stream());
  auto* buf = new mx::cu::CudaBuffer{data, bytes, dev.cuda_device()};
  out.set_data(mx::allocator::Data(mx::allocator::Buffer(buf), [](mx::allocator::Buffer b) {
    auto* cb = static_cast<mx::cu::CudaBuffer*>(b.ptr());
    if (cb->data) deferred_frees().give(cb->data, cb->device < 0);
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

int sm_count(mx::cu::Device& dev) {
  // One device per process in MLX's CUDA backend.
  static const int n = [&] {
    int v = 0;
    cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev.cuda_device());
    return v > 0 ? v : 1;
  }();
  return n;
}

bool wgmma_device(mx::cu::Device& dev) {
#if defined(MLX_MARLIN_CUDA_SM90A)
  static const bool ok = [&] {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev.cuda_device());
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev.cuda_device());
    return major == 9 && minor == 0;
  }();
  return ok;
#else
  (void)dev;
  return false;
#endif
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// See cuda_host.h.  Every call takes its own run of a per-encoder ring, so independent
// kernels in one command buffer (MLX orders graph nodes only through the arrays they
// name, and may run them at once) never share a counter.  Before the ring wraps the
// stream is synchronized: every launch that used its start has finished, since a ring
// turn (at least 256 calls) outlasts what one command buffer holds (fewer than 255
// nodes) and earlier buffers were submitted.
int* split_counters(mx::cu::CommandEncoder& enc, int64_t n, const char* op) {
  constexpr int64_t kRing = int64_t(1) << 20;
  if (n > kRing / 256) return nullptr;
  struct Ring {
    int* base = nullptr;
    int64_t next = 0;
  };
  static std::mutex mutex;
  static auto* rings = new std::unordered_map<const void*, Ring>;  // never destroyed (nor the rings)
  std::lock_guard<std::mutex> lock(mutex);
  Ring& r = (*rings)[&enc];
  if (!r.base) {
    void* p = nullptr;
    check(cudaMalloc(&p, kRing * sizeof(int)), op, "split-K counters");
    check(cudaMemsetAsync(p, 0, kRing * sizeof(int), enc.stream()), op, "split-K counters");
    r.base = static_cast<int*>(p);
  }
  if (r.next + n > kRing) {
    check(cudaStreamSynchronize(enc.stream()), op, "split-K counters");
    r.next = 0;
  }
  int* out = r.base + r.next;
  r.next += n;
  return out;
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
