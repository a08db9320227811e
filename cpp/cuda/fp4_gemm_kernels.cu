// Instantiates the fp4_gemm kernels and hands out their entry points (see
// fp4_gemm_launch.h).  Includes no MLX header.
#include "cuda/fp4_gemm_kernels.cuh"

namespace marlin::cuda {

namespace {

template <typename T, typename S>
void* kernel_for(CudaGemmKernel k) {
  constexpr CudaMmaConfig D = kCudaDecodeConfig;
  constexpr CudaMmaConfig P = kCudaPrefillConfig;
  switch (k) {
    case CudaGemmKernel::Simt:
      return reinterpret_cast<void*>(&fp4_gemm_simt<T, S>);
    case CudaGemmKernel::SimtTransposed:
      return reinterpret_cast<void*>(&fp4_gemm_simt_transposed<T, S>);
    case CudaGemmKernel::MmaDecode:
      if constexpr (std::is_same<T, float>::value) return nullptr;
      else return reinterpret_cast<void*>(&fp4_gemm_mma<T, S, D.mi, D.ni, D.warps_m, D.warps_n, D.warps_k, D.unroll>);
    case CudaGemmKernel::Gemv:
      return nullptr;  // see fp4_gemv_kernel
    case CudaGemmKernel::MmaPrefill:
      if constexpr (std::is_same<T, float>::value) return nullptr;
      else return reinterpret_cast<void*>(&fp4_gemm_mma<T, S, P.mi, P.ni, P.warps_m, P.warps_n, P.warps_k, P.unroll>);
  }
  return nullptr;
}

template <typename T>
void* with_scale(CudaGemmKernel k, ElemType s) {
  if (s == ElemType::Float16) return kernel_for<T, __half>(k);
  if (s == ElemType::BFloat16) return kernel_for<T, __nv_bfloat16>(k);
  return nullptr;
}

template <typename T, typename S, int V, bool R16>
void* gemv_stub() {
  constexpr CudaGemvConfig c = kCudaGemvConfigs[V];
  return reinterpret_cast<void*>(&fp4_gemv<T, S, c.wk, c.stages, R16, c.blocks_per_sm(R16)>);
}

template <typename T, typename S, int V = 0>
void* gemv_for(int variant, bool rows16) {
  if constexpr (V >= kCudaGemvVariants) {
    return nullptr;
  } else {
    if (variant == V) return rows16 ? gemv_stub<T, S, V, true>() : gemv_stub<T, S, V, false>();
    return gemv_for<T, S, V + 1>(variant, rows16);
  }
}

template <typename T>
void* gemv_with_scale(int variant, bool rows16, ElemType s) {
  if (s == ElemType::Float16) return gemv_for<T, __half>(variant, rows16);
  if (s == ElemType::BFloat16) return gemv_for<T, __nv_bfloat16>(variant, rows16);
  return nullptr;
}

template <typename T, typename S, int V, int SPG>
void* gemv_token_stub() {
  constexpr CudaGemvTokenConfig c = kCudaGemvTokenConfigs[V];
  return reinterpret_cast<void*>(&fp4_gemv_token<T, S, c.wk, c.stages, SPG, c.min_blocks>);
}

template <typename T, typename S, int V = 0>
void* gemv_token_for(int variant, int group_size) {
  if constexpr (V >= kCudaGemvTokenVariants) {
    return nullptr;
  } else {
    if (variant != V) return gemv_token_for<T, S, V + 1>(variant, group_size);
    return group_size == 32 ? gemv_token_stub<T, S, V, 1>()
        : group_size == 64  ? gemv_token_stub<T, S, V, 2>()
        : group_size == 128 ? gemv_token_stub<T, S, V, 4>()
                            : nullptr;
  }
}

template <typename T>
void* gemv_token_with_scale(int variant, int group_size, ElemType s) {
  if (s == ElemType::Float16) return gemv_token_for<T, __half>(variant, group_size);
  if (s == ElemType::BFloat16) return gemv_token_for<T, __nv_bfloat16>(variant, group_size);
  return nullptr;
}

} // namespace

void* fp4_gemv_token_kernel(int variant, int group_size, uint32_t smem, ElemType x, ElemType s) {
  void* stub = x == ElemType::Float16 ? gemv_token_with_scale<__half>(variant, group_size, s)
      : x == ElemType::BFloat16      ? gemv_token_with_scale<__nv_bfloat16>(variant, group_size, s)
                                     : nullptr;
  return driver_handle(stub, static_cast<int>(smem));
}

void* fp4_gemv_kernel(int variant, bool rows16, ElemType x, ElemType s) {
  void* stub = x == ElemType::Float16 ? gemv_with_scale<__half>(variant, rows16, s)
      : x == ElemType::BFloat16      ? gemv_with_scale<__nv_bfloat16>(variant, rows16, s)
                                     : nullptr;
  if (variant < 0 || variant >= kCudaGemvVariants) return nullptr;
  return driver_handle(stub, static_cast<int>(cuda_gemv_smem(kCudaGemvConfigs[variant], rows16)));
}

void* fp4_gemm_kernel(CudaGemmKernel k, ElemType x, ElemType s) {
  void* stub = x == ElemType::Float16 ? with_scale<__half>(k, s)
      : x == ElemType::BFloat16      ? with_scale<__nv_bfloat16>(k, s)
      : x == ElemType::Float32       ? with_scale<float>(k, s)
                                     : nullptr;
  return driver_handle(stub);
}

} // namespace marlin::cuda
