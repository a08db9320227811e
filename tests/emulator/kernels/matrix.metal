// simdgroup_matrix per-lane layout and load/store variants.
#include <metal_stdlib>
using namespace metal;

// Each lane reports the two elements it owns after a load.
kernel void frag_layout(device const float* src [[buffer(0)]],
                        device float* owned [[buffer(1)]],
                        device float* owned_t [[buffer(2)]],
                        device float* stored [[buffer(3)]],
                        uint lane [[thread_index_in_simdgroup]]) {
  simdgroup_float8x8 m;
  simdgroup_load(m, src, 8);
  owned[2 * lane] = m.thread_elements()[0];
  owned[2 * lane + 1] = m.thread_elements()[1];
  simdgroup_float8x8 t;
  simdgroup_load(t, src, 16, ulong2(8, 0), true);     // right half of a 8x16 block, transposed
  owned_t[2 * lane] = t.thread_elements()[0];
  owned_t[2 * lane + 1] = t.thread_elements()[1];
  simdgroup_float8x8 w;
  w.thread_elements()[0] = float(2 * lane);
  w.thread_elements()[1] = float(2 * lane + 1);
  simdgroup_store(w, stored, 8);
}

// D = A * B + C and D = A * B with mixed precision and the diagonal constructor.
kernel void mma_small(device const half* a [[buffer(0)]],
                      device const half* b [[buffer(1)]],
                      device const float* c [[buffer(2)]],
                      device float* d [[buffer(3)]],
                      device float* e [[buffer(4)]],
                      uint lane [[thread_index_in_simdgroup]]) {
  simdgroup_half8x8 A, B;
  simdgroup_float8x8 C, D, E;
  simdgroup_load(A, a, 8);
  simdgroup_load(B, b, 8);
  simdgroup_load(C, c, 8);
  simdgroup_multiply_accumulate(D, A, B, C);
  simdgroup_store(D, d, 8);
  simdgroup_float8x8 I = simdgroup_float8x8(3.0f);
  simdgroup_multiply(E, I, C);
  simdgroup_store(E, e, 8);
}
