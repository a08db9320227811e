// fp4_dequantize: each thread expands one packed word for 4 adjacent columns (one
// 16-byte load) into 8 rows x 4 columns; a warp's stores of one row are 128 columns
// wide, so writes (4/5 of the traffic) stay coalesced.  Memory-bound by design.
#include "cuda/device_common.cuh"
#include "cuda/fp4_dequantize_launch.h"

namespace marlin::cuda {

namespace {

template <typename T, typename S>
__device__ __forceinline__ void dequant_column(const DequantArgs& a, int kw, int n) {
  const uint32_t word = a.w[static_cast<int64_t>(kw) * a.N + n];
  const float s = to_float(static_cast<const S*>(a.scales)[static_cast<int64_t>(kw * kCodesPerWord / a.group_size) * a.N + n]);
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < kCodesPerWord; ++i)
    out[static_cast<int64_t>(kw * kCodesPerWord + i) * a.N + n] = from_float<T>(e2m1_to_float(extract_code(word, i)) * s);
}

template <typename T>
struct Quad;  // 4 values of T, stored with one access
template <>
struct Quad<float> { using type = float4; };
template <>
struct Quad<__half> { using type = uint2; };
template <>
struct Quad<__nv_bfloat16> { using type = uint2; };

template <typename T, typename S>
__global__ void __launch_bounds__(kDequantThreads) fp4_dequantize(DequantArgs a) {
  const int quads = (a.N + 3) / 4;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= static_cast<int64_t>(quads) * (a.K / kCodesPerWord)) return;
  const int kw = static_cast<int>(t / quads);
  const int n = static_cast<int>(t % quads) * 4;
  if (!a.vector_ok || n + 4 > a.N) {
    for (int c = n; c < a.N && c < n + 4; ++c) dequant_column<T, S>(a, kw, c);
    return;
  }
  const uint4 words = ldg_stream(a.w + static_cast<int64_t>(kw) * a.N + n);
  const uint2 sbits = *reinterpret_cast<const uint2*>(static_cast<const S*>(a.scales) +
                                                       static_cast<int64_t>(kw * kCodesPerWord / a.group_size) * a.N + n);
  const float s[4] = {scale_to_float<S>(sbits.x, 0), scale_to_float<S>(sbits.x, 1), scale_to_float<S>(sbits.y, 0),
                      scale_to_float<S>(sbits.y, 1)};
  const uint32_t w[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
  for (int i = 0; i < kCodesPerWord; ++i) {
    T v[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = from_float<T>(e2m1_to_float(extract_code(w[c], i)) * s[c]);
    using Q = typename Quad<T>::type;
    *reinterpret_cast<Q*>(static_cast<T*>(a.out) + static_cast<int64_t>(kw * kCodesPerWord + i) * a.N + n) =
        *reinterpret_cast<const Q*>(v);
  }
}

template <typename T>
void* with_scale(ElemType s) {
  if (s == ElemType::Float16) return reinterpret_cast<void*>(&fp4_dequantize<T, __half>);
  if (s == ElemType::BFloat16) return reinterpret_cast<void*>(&fp4_dequantize<T, __nv_bfloat16>);
  return nullptr;
}

} // namespace

void* fp4_dequantize_kernel(ElemType out, ElemType s) {
  void* stub = out == ElemType::Float16 ? with_scale<__half>(s)
      : out == ElemType::BFloat16      ? with_scale<__nv_bfloat16>(s)
                                       : with_scale<float>(s);
  return driver_handle(stub);
}

} // namespace marlin::cuda
