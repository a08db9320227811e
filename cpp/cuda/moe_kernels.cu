// Instantiates the MoE kernels and hands out their entry points (see moe_launch.h).
// Includes no MLX header.
#include "cuda/moe_kernels.cuh"

namespace marlin::cuda {

namespace {

template <typename L>
const void* route_for(ElemType w) {
  if (w == ElemType::Float32) return reinterpret_cast<const void*>(&moe_route_kernel<L, float>);
  if constexpr (!std::is_same<L, float>::value) {
    // weights in the logits' half type (moe_route's own output)
    if ((w == ElemType::Float16) == std::is_same<L, __half>::value) return reinterpret_cast<const void*>(&moe_route_kernel<L, L>);
  }
  return nullptr;
}

template <typename AT, typename S, int MODE, int V>
const void* gemm_stub() {
  constexpr bool glu = MODE == static_cast<int>(MoeOutMode::Glu);
  constexpr CudaMoeConfig c = cuda_moe_config(static_cast<CudaMoeVariant>(V), glu);
  constexpr int u = std::is_same<AT, float>::value ? c.unroll_f32 : c.unroll;
  return reinterpret_cast<const void*>(&moe_gemm_kernel<AT, S, c.mi, c.ni, c.warps_m, c.warps_n, c.warps_k, u,
                                                        c.warp_groups, c.min_blocks, c.direct, MODE>);
}

template <typename AT, typename S, int MODE>
const void* gemm_for(CudaMoeVariant v) {
  switch (v) {
    case CudaMoeVariant::Decode: return gemm_stub<AT, S, MODE, 0>();
    case CudaMoeVariant::Prefill: return gemm_stub<AT, S, MODE, 1>();
    case CudaMoeVariant::DecodeU3: return gemm_stub<AT, S, MODE, 2>();
    case CudaMoeVariant::DecodeU4: return gemm_stub<AT, S, MODE, 3>();
  }
  return nullptr;
}

template <typename AT, typename S>
const void* gemm_mode(CudaMoeVariant v, MoeOutMode m) {
  switch (m) {
    case MoeOutMode::Pairs: return gemm_for<AT, S, static_cast<int>(MoeOutMode::Pairs)>(v);
    case MoeOutMode::Grouped: return gemm_for<AT, S, static_cast<int>(MoeOutMode::Grouped)>(v);
    case MoeOutMode::Glu: return gemm_for<AT, S, static_cast<int>(MoeOutMode::Glu)>(v);
  }
  return nullptr;
}

template <typename AT>
const void* gemm_scale(CudaMoeVariant v, MoeOutMode m, ElemType s) {
  if (s == ElemType::Float16) return gemm_mode<AT, __half>(v, m);
  if (s == ElemType::BFloat16) return gemm_mode<AT, __nv_bfloat16>(v, m);
  return nullptr;
}

} // namespace

void* moe_route_fn(ElemType logits, ElemType weights) {
  const void* stub = logits == ElemType::Float16 ? route_for<__half>(weights)
      : logits == ElemType::BFloat16             ? route_for<__nv_bfloat16>(weights)
      : logits == ElemType::Float32              ? route_for<float>(weights)
                                                 : nullptr;
  return driver_handle(stub);
}

void* moe_group_fn(int index_bits, bool index_signed) {
  const void* stub = nullptr;
  switch (index_bits) {
    case 8: stub = index_signed ? reinterpret_cast<const void*>(&moe_group_kernel<int8_t>)
                                : reinterpret_cast<const void*>(&moe_group_kernel<uint8_t>); break;
    case 16: stub = index_signed ? reinterpret_cast<const void*>(&moe_group_kernel<int16_t>)
                                 : reinterpret_cast<const void*>(&moe_group_kernel<uint16_t>); break;
    case 32: stub = index_signed ? reinterpret_cast<const void*>(&moe_group_kernel<int32_t>)
                                 : reinterpret_cast<const void*>(&moe_group_kernel<uint32_t>); break;
    case 64: stub = index_signed ? reinterpret_cast<const void*>(&moe_group_kernel<int64_t>)
                                 : reinterpret_cast<const void*>(&moe_group_kernel<uint64_t>); break;
    default: break;
  }
  return driver_handle(stub);
}

void* moe_gemm_fn(CudaMoeVariant v, MoeOutMode m, ElemType x, ElemType s) {
  const void* stub = x == ElemType::Float16 ? gemm_scale<__half>(v, m, s)
      : x == ElemType::BFloat16             ? gemm_scale<__nv_bfloat16>(v, m, s)
      : x == ElemType::Float32              ? gemm_scale<float>(v, m, s)
                                            : nullptr;
  return driver_handle(stub);
}

void* moe_combine_fn(ElemType out) {
  const void* stub = out == ElemType::Float16 ? reinterpret_cast<const void*>(&moe_combine_kernel<__half>)
      : out == ElemType::BFloat16             ? reinterpret_cast<const void*>(&moe_combine_kernel<__nv_bfloat16>)
      : out == ElemType::Float32              ? reinterpret_cast<const void*>(&moe_combine_kernel<float>)
                                              : nullptr;
  return driver_handle(stub);
}

} // namespace marlin::cuda
