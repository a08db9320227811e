// Every simd collective, written to out[tid * kOut + j]. `active` limits the
// lanes that stay: the others return before the collectives, which makes
// them inactive (like lanes of a partial simdgroup).
#include <metal_stdlib>
using namespace metal;

constant constexpr int kOut = 20;

kernel void collectives(device const float* x [[buffer(0)]],
                        device float* out [[buffer(1)]],
                        constant uint& active [[buffer(2)]],
                        uint tid [[thread_index_in_threadgroup]],
                        uint lane [[thread_index_in_simdgroup]],
                        uint sg [[simdgroup_index_in_threadgroup]],
                        uint nsg [[simdgroups_per_threadgroup]]) {
  if (lane >= active) return;
  float v = x[tid];
  device float* o = out + tid * kOut;
  o[0] = simd_shuffle(v, (lane * 7 + 3) % 32);
  o[1] = simd_shuffle_xor(v, 5);
  o[2] = simd_shuffle_down(v, 3);
  o[3] = simd_shuffle_up(v, 3);
  o[4] = simd_broadcast(v, 4);
  o[5] = simd_sum(v);
  o[6] = simd_max(v);
  o[7] = simd_min(v);
  o[8] = simd_prefix_inclusive_sum(v);
  o[9] = simd_prefix_exclusive_sum(v);
  simd_vote vote = simd_ballot(v > 0.5f);
  uint64_t bits = uint64_t(vote);
  o[10] = float(uint(bits & 0xffff));
  o[11] = float(uint(bits >> 16));
  o[12] = simd_all(v > -10.0f) ? 1.0f : 0.0f;
  o[13] = simd_all(v > 0.1f) ? 1.0f : 0.0f;
  o[14] = simd_any(v > 0.9f) ? 1.0f : 0.0f;
  o[15] = simd_any(v > 10.0f) ? 1.0f : 0.0f;
  o[16] = float(simd_sum(int(lane)));
  o[17] = float(simd_prefix_exclusive_sum(ushort(1)));
  float4 v4 = simd_shuffle_xor(float4(v, 2 * v, 3 * v, 4 * v), 1);
  o[18] = v4.w;
  o[19] = float(simd_max(half(v)));
  (void)sg;
  (void)nsg;
}

constant constexpr int kOut2 = 16;

// The remaining collectives, on integer and float values.
kernel void collectives2(device const uint* x [[buffer(0)]],
                         device float* out [[buffer(1)]],
                         constant uint& active [[buffer(2)]],
                         uint tid [[thread_index_in_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]]) {
  if (lane >= active) return;
  uint v = x[tid];
  float f = 1.0f + float(v % 4) * 0.25f;
  device float* o = out + tid * kOut2;
  o[0] = simd_product(f);
  o[1] = float(simd_and(v | 0xf0u));
  o[2] = float(simd_or(v));
  o[3] = float(simd_xor(v));
  o[4] = float(simd_broadcast_first(v));
  o[5] = float(simd_shuffle_rotate_down(v, 5));
  o[6] = float(simd_shuffle_rotate_up(v, 5));
  o[7] = float(simd_shuffle_and_fill_down(v, v + 1000u, 3));
  o[8] = simd_is_first() ? 1.0f : 0.0f;
  o[9] = simd_prefix_inclusive_product(f);
  o[10] = simd_prefix_exclusive_product(f);
  o[11] = float(simd_min(int(v) - 50));
  o[12] = float(quad_sum(v));
  o[13] = float(quad_shuffle_xor(v, 2));
  o[14] = float(quad_broadcast(v, 3));
  o[15] = float(uint64_t(simd_active_threads_mask()));
}
