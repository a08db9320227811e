// Row softmax: one threadgroup per row, simd_max/simd_sum within simdgroups
// and threadgroup memory across them.
#include <metal_stdlib>
using namespace metal;

template <typename T>
[[kernel]] void softmax(const device T* in [[buffer(0)]],
                        device T* out [[buffer(1)]],
                        constant int& row_len [[buffer(2)]],
                        uint row [[threadgroup_position_in_grid]],
                        uint lid [[thread_index_in_threadgroup]],
                        uint tg_size [[threads_per_threadgroup]],
                        uint sg [[simdgroup_index_in_threadgroup]],
                        uint lane [[thread_index_in_simdgroup]],
                        uint n_sg [[simdgroups_per_threadgroup]]) {
  threadgroup float partial[32];
  const device T* x = in + row * row_len;
  float m = -INFINITY;
  for (int i = lid; i < row_len; i += tg_size) m = max(m, float(x[i]));
  m = simd_max(m);
  if (lane == 0) partial[sg] = m;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  m = lane < n_sg ? partial[lane] : -INFINITY;
  m = simd_max(m);
  threadgroup_barrier(mem_flags::mem_threadgroup);

  float s = 0.0f;
  for (int i = lid; i < row_len; i += tg_size) s += fast::exp(float(x[i]) - m);
  s = simd_sum(s);
  if (lane == 0) partial[sg] = s;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  s = lane < n_sg ? partial[lane] : 0.0f;
  s = simd_sum(s);
  const float inv = 1.0f / s;
  for (int i = lid; i < row_len; i += tg_size) out[row * row_len + i] = T(fast::exp(float(x[i]) - m) * inv);
}

template [[host_name("softmax_float32")]] [[kernel]] decltype(softmax<float>) softmax<float>;
template [[host_name("softmax_float16")]] [[kernel]] void softmax<half>(
    const device half* in [[buffer(0)]], device half* out [[buffer(1)]], constant int& row_len [[buffer(2)]],
    uint row [[threadgroup_position_in_grid]], uint lid [[thread_index_in_threadgroup]],
    uint tg_size [[threads_per_threadgroup]], uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]], uint n_sg [[simdgroups_per_threadgroup]]);
