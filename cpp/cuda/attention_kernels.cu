// Instantiates the attention kernels and hands out their entry points (see
// attention_launch.h).  Includes no MLX header.
#include <mutex>

#include "cuda/attention_kernels.cuh"
#include "cuda/attention_wgmma.cuh"

namespace marlin::cuda {

namespace {

template <typename T, int D, int V>
void* mma_stub() {
  constexpr CudaAttentionConfig c = kCudaAttnConfigs[V];
  if constexpr (!cuda_attention_config_ok(c, D)) {
    return nullptr;
  } else {
    return reinterpret_cast<void*>(&attention_mma<T, D, c.warps_m, c.warps_n, c.block_k, c.min_blocks, c.m_tiles>);
  }
}

template <typename T, int D, int V = 0>
void* mma_for(int variant) {
  if constexpr (V >= kCudaAttnVariants) {
    return nullptr;
  } else {
    if (variant == V) return mma_stub<T, D, V>();
    return mma_for<T, D, V + 1>(variant);
  }
}

// F<T, D>() for the supported head dims.
template <typename T, template <typename, int> class F>
void* by_head_dim(int head_dim) {
  switch (head_dim) {
    case 64: return F<T, 64>::get();
    case 80: return F<T, 80>::get();
    case 96: return F<T, 96>::get();
    case 128: return F<T, 128>::get();
    case 256: return F<T, 256>::get();
  }
  return nullptr;
}

template <template <typename, int> class F>
void* by_type(ElemType t, int head_dim) {
  if (t == ElemType::Float16) return by_head_dim<__half, F>(head_dim);
  if (t == ElemType::BFloat16) return by_head_dim<__nv_bfloat16, F>(head_dim);
  if (t == ElemType::Float32) return by_head_dim<float, F>(head_dim);
  return nullptr;
}

template <typename T, int D>
struct SimtF {
  static void* get() { return reinterpret_cast<void*>(&attention_simt<T, D>); }
};
template <typename T, int D>
struct MergeF {
  static void* get() { return reinterpret_cast<void*>(&attention_merge<T, D>); }
};

}  // namespace

void* attention_mma_kernel(int variant, int head_dim, ElemType t, int smem) {
  void* stub = nullptr;
  auto pick = [&](auto tag) -> void* {
    using T = decltype(tag);
    switch (head_dim) {
      case 64: return mma_for<T, 64>(variant);
      case 80: return mma_for<T, 80>(variant);
      case 96: return mma_for<T, 96>(variant);
      case 128: return mma_for<T, 128>(variant);
      case 256: return mma_for<T, 256>(variant);
    }
    return nullptr;
  };
  if (t == ElemType::Float16) stub = pick(__half{});
  else if (t == ElemType::BFloat16) stub = pick(__nv_bfloat16{});
  // More than the default 48 KiB of dynamic shared memory needs a per-kernel opt-in.
  return driver_handle(stub, smem);
}

void* attention_wgmma_kernel(int head_dim, ElemType t, int smem, bool persistent) {
  auto pick = [&](auto tag) -> void* {
    using T = decltype(tag);
    if (head_dim == 64)
      return persistent ? reinterpret_cast<void*>(&attention_wgmma_persistent<T, 64>)
                        : reinterpret_cast<void*>(&attention_wgmma<T, 64, kCudaAttnWgmmaPingPong>);
    if (head_dim == 128)
      return persistent ? reinterpret_cast<void*>(&attention_wgmma_persistent<T, 128>)
                        : reinterpret_cast<void*>(&attention_wgmma<T, 128, kCudaAttnWgmmaPingPong>);
    return nullptr;
  };
  void* stub = nullptr;
  if (t == ElemType::Float16) stub = pick(__half{});
  else if (t == ElemType::BFloat16) stub = pick(__nv_bfloat16{});
  return driver_handle(stub, smem);
}

void* attention_simt_kernel(int head_dim, ElemType t) {
  return driver_handle(by_type<SimtF>(t, head_dim));
}

void* attention_merge_kernel(int head_dim, ElemType t) {
  return driver_handle(by_type<MergeF>(t, head_dim));
}

}  // namespace marlin::cuda
