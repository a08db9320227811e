#include "cuda/cuda_host.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
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
// benchmark): "async" (default) takes every buffer stream-ordered from our pool
// (marlin_pool) on the encoder's stream and returns it with cudaFreeAsync; "cache"
// keeps freed device buffers in a size-keyed cache of our own, as MLX's allocator does for its arrays; "mlx" asks
// MLX's allocator through its exported interface (which gives unified memory).  On the
// H100 the three cost within ~1 us of each other per op (benchmarks/RESULTS.md); the
// cache hung the bench_gemm_cuda.py run that keeps 40 x 117 MB outputs alive (not
// understood yet), so it is not the default.
enum class AllocMode { Cache, Async, Mlx };
AllocMode alloc_mode() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_ALLOC");
  if (!v || !v[0]) return AllocMode::Async;
  const std::string m(v);
  return m == "cache" ? AllocMode::Cache : m == "mlx" ? AllocMode::Mlx : AllocMode::Async;
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

// Size-keyed cache of device buffers (sizes rounded up so near sizes share entries).
// Reuse at deleter time is safe for the same reason it is in MLX's allocator: MLX keeps
// every array a kernel node reads or writes alive until the node's graph completed, so
// an array's deleter runs only after the GPU is done with it.
//
// Deleters may run inside MLX's completion callbacks, where CUDA API calls are not
// allowed (a cudaFree there deadlocked the device): they only record the buffer, and
// every CUDA call (cudaMalloc, trimming, deferred frees) happens in take(), on the
// thread that encodes kernels.
class DeviceBufferCache {
 public:
  enum class Release { Cache, FreeAsync, Free };

  static size_t rounded(size_t bytes) {
    const size_t page = bytes < (1u << 20) ? 256 : (1u << 16);
    return (bytes + page - 1) / page * page;
  }

  void* take(size_t bytes, int device, cudaStream_t stream, bool from_cache) {
    std::vector<std::pair<void*, Release>> pending;
    void* hit = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending.swap(pending_);
      if (from_cache) {
        auto it = free_.find({device, bytes});
        if (it != free_.end()) {
          hit = it->second;
          free_.erase(it);
          cached_ -= bytes;
        }
      }
    }
    for (auto& [p, how] : pending) {
      if (how == Release::FreeAsync) cudaFreeAsync(p, stream);
      else cudaFree(p);
    }
    if (cached_ > kMaxCached) trim(kMaxCached / 2);
    if (hit) return hit;
    void* p = nullptr;
    cudaMemPool_t pool = from_cache ? nullptr : marlin_pool(device);
    auto allocate = [&] {
      return from_cache ? cudaMalloc(&p, bytes)
          : pool        ? cudaMallocFromPoolAsync(&p, bytes, pool, stream)
                        : cudaMallocAsync(&p, bytes, stream);
    };
    cudaError_t err = allocate();
    if (err == cudaErrorMemoryAllocation) {  // give the cache back and retry once
      cudaGetLastError();
      trim(0);
      err = allocate();
    }
    check(err, "mlx_marlin", from_cache ? "cudaMalloc" : "cudaMallocAsync");
    return p;
  }

  // No CUDA call here (see above).
  void give(void* p, size_t bytes, int device, Release how) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (how == Release::Cache) {
      free_.emplace(std::make_pair(device, bytes), p);
      cached_ += bytes;
    } else {
      pending_.emplace_back(p, how);
    }
  }

 private:
  static constexpr size_t kMaxCached = size_t(1) << 30;
  void trim(size_t keep) {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.begin(); it != free_.end() && cached_ > keep;) {
        drop.push_back(it->second);
        cached_ -= it->first.second;
        it = free_.erase(it);
      }
    }
    for (void* p : drop) cudaFree(p);
  }
  std::mutex mutex_;
  std::multimap<std::pair<int, size_t>, void*> free_;
  std::vector<std::pair<void*, Release>> pending_;
  std::atomic<size_t> cached_{0};
};

DeviceBufferCache& buffer_cache() {
  static auto* cache = new DeviceBufferCache;  // never destroyed: arrays may outlive statics
  return *cache;
}

// Releases whichever kind of memory a CudaBuffer holds by then (a host read may have
// moved it to unified memory, device = -1, which MLX's cudaMallocManaged gave).
void release_cuda_buffer(mx::cu::CudaBuffer* cb, bool cached) {
  using R = DeviceBufferCache::Release;
  if (cb->data)
    buffer_cache().give(cb->data, cb->size, cb->device,
                        cb->device < 0 ? R::Free : cached ? R::Cache : R::FreeAsync);
  delete cb;
}

}  // namespace

// MLX 0.32 does not export its CUDA allocator's stream-ordered entry point
// (cu::malloc_async), and its exported allocator interface hands out unified memory.
// So outputs are device memory of our own, wrapped in MLX's CudaBuffer so every MLX
// kernel and host read (which may move it to unified memory) sees an ordinary device
// array.  These bytes are not counted by mx.get_active_memory().
void allocate_on_device(mx::array& out, mx::cu::CommandEncoder& enc) {
  const size_t bytes = std::max<size_t>(out.nbytes(), 16);
  auto& dev = enc.device();
  dev.make_current();
  const AllocMode mode = alloc_mode();
  if (mode == AllocMode::Mlx) {
    auto& a = mx::allocator::allocator();
    out.set_data(mx::allocator::Data(a.malloc(bytes), [](mx::allocator::Buffer b) { mx::allocator::allocator().free(b); }));
    return;
  }
  const bool cached = mode == AllocMode::Cache;
  const size_t size = cached ? DeviceBufferCache::rounded(bytes) : bytes;
  void* data = buffer_cache().take(size, dev.cuda_device(), enc.stream(), cached);
  auto* buf = new mx::cu::CudaBuffer{data, size, dev.cuda_device()};
  out.set_data(mx::allocator::Data(
      mx::allocator::Buffer(buf),
      cached ? +[](mx::allocator::Buffer b) { release_cuda_buffer(static_cast<mx::cu::CudaBuffer*>(b.ptr()), true); }
             : +[](mx::allocator::Buffer b) { release_cuda_buffer(static_cast<mx::cu::CudaBuffer*>(b.ptr()), false); }));
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
