// Single-head attention O = softmax(Q K^T * scale) V in the style of MLX's
// steel attention: each simdgroup owns 8 query rows, S = Q K^T fragments come
// from simdgroup_multiply with K loaded transposed, row max/sum use
// thread_elements() plus simd_shuffle_xor between the lanes sharing a row,
// and the softmax is computed online over blocks of 8 keys.
#include <metal_stdlib>
using namespace metal;

struct AttnParams {
  int q_len;
  int kv_len;
  float scale;
};

template <typename T, int D>
[[kernel]] void attention(const device T* Q [[buffer(0)]],
                          const device T* K [[buffer(1)]],
                          const device T* V [[buffer(2)]],
                          device T* O [[buffer(3)]],
                          constant AttnParams& p [[buffer(4)]],
                          uint tgid [[threadgroup_position_in_grid]],
                          uint sg [[simdgroup_index_in_threadgroup]],
                          uint lane [[thread_index_in_simdgroup]]) {
  constexpr int kFrags = D / 8;
  const int q0 = (tgid * 2 + sg) * 8;
  if (q0 >= p.q_len) return;

  simdgroup_matrix<T, 8, 8> q[kFrags];
  for (int d = 0; d < kFrags; ++d) simdgroup_load(q[d], Q, D, ulong2(d * 8, q0));

  simdgroup_matrix<float, 8, 8> o[kFrags];
  for (int d = 0; d < kFrags; ++d) o[d] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  float row_max = -INFINITY;
  float row_sum = 0.0f;

  for (int k0 = 0; k0 < p.kv_len; k0 += 8) {
    simdgroup_matrix<float, 8, 8> s = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    for (int d = 0; d < kFrags; ++d) {
      simdgroup_matrix<T, 8, 8> kt;
      simdgroup_load(kt, K, D, ulong2(d * 8, k0), true);  // K^T block
      simdgroup_multiply_accumulate(s, q[d], kt, s);
    }
    thread auto& se = s.thread_elements();
    se *= p.scale;
    // The lanes holding one row differ in lane bits 0 and 3.
    float m = max(se[0], se[1]);
    m = max(m, simd_shuffle_xor(m, 1));
    m = max(m, simd_shuffle_xor(m, 8));
    const float new_max = max(row_max, m);
    const float correction = fast::exp(row_max - new_max);
    se[0] = fast::exp(se[0] - new_max);
    se[1] = fast::exp(se[1] - new_max);
    float sum = se[0] + se[1];
    sum += simd_shuffle_xor(sum, 1);
    sum += simd_shuffle_xor(sum, 8);
    row_sum = row_sum * correction + sum;
    row_max = new_max;

    simdgroup_matrix<T, 8, 8> pm;
    pm.thread_elements() = vec<T, 2>(se);
    for (int d = 0; d < kFrags; ++d) {
      o[d].thread_elements() *= correction;
      simdgroup_matrix<T, 8, 8> v;
      simdgroup_load(v, V, D, ulong2(d * 8, k0));
      simdgroup_multiply_accumulate(o[d], pm, v, o[d]);
    }
  }
  for (int d = 0; d < kFrags; ++d) {
    simdgroup_matrix<T, 8, 8> out;
    out.thread_elements() = vec<T, 2>(o[d].thread_elements() / row_sum);
    simdgroup_store(out, O, D, ulong2(d * 8, q0));
  }
}

template [[host_name("attention_f32_d32")]] [[kernel]] decltype(attention<float, 32>) attention<float, 32>;
template [[host_name("attention_f16_d64")]] [[kernel]] decltype(attention<half, 64>) attention<half, 64>;
