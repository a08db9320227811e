// Threadgroup memory, barriers and the checkers: correct kernels and the
// same kernels with planted bugs.
#include <metal_stdlib>
using namespace metal;

// Tree reduction over a threadgroup of 256 threads.
kernel void tg_reduce(device const float* x [[buffer(0)]],
                      device float* out [[buffer(1)]],
                      uint gid [[thread_position_in_grid]],
                      uint lid [[thread_position_in_threadgroup]],
                      uint tg [[threadgroup_position_in_grid]]) {
  threadgroup float buf[256];
  buf[lid] = x[gid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint s = 128; s > 0; s >>= 1) {
    if (lid < s) buf[lid] += buf[lid + s];
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (lid == 0) out[tg] = buf[0];
}

// Planted bug: no barrier between filling buf and the first reduction step.
kernel void tg_reduce_missing_barrier(device const float* x [[buffer(0)]],
                                      device float* out [[buffer(1)]],
                                      uint gid [[thread_position_in_grid]],
                                      uint lid [[thread_position_in_threadgroup]],
                                      uint tg [[threadgroup_position_in_grid]]) {
  threadgroup float buf[256];
  buf[lid] = x[gid];
  for (uint s = 128; s > 0; s >>= 1) {
    if (lid < s) buf[lid] += buf[lid + s];
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (lid == 0) out[tg] = buf[0];
}

// Neighbour exchange; without the barrier thread i reads what i-1 wrote.
kernel void rotate(device const float* x [[buffer(0)]],
                   device float* out [[buffer(1)]],
                   constant uint& with_barrier [[buffer(2)]],
                   uint lid [[thread_index_in_threadgroup]],
                   uint n [[threads_per_threadgroup]]) {
  threadgroup float tile[128];
  tile[lid] = x[lid];
  if (with_barrier) threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = tile[(lid + n - 1) % n];
}

// Two threads store to one word in the same barrier interval.
kernel void write_write(device float* out [[buffer(0)]], uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float flag;
  if (lid < 2) flag = float(lid);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = flag;
}

// Within one simdgroup, simdgroup_barrier orders threadgroup memory.
kernel void simd_exchange(device float* out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float t[32];
  t[lane] = float(lane);
  simdgroup_barrier(mem_flags::mem_threadgroup);
  out[lane] = t[31 - lane];
}

// Each threadgroup sees its own copy of `mine`.
kernel void tg_private(device uint* out [[buffer(0)]],
                       uint tg [[threadgroup_position_in_grid]],
                       uint lid [[thread_index_in_threadgroup]]) {
  threadgroup uint mine[64];
  mine[lid] = tg * 1000 + lid;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tg * 64 + lid] = mine[63 - lid];
}

// [[threadgroup(0)]] argument with a host-specified size.
kernel void tg_argument(device float* out [[buffer(0)]],
                        threadgroup float* scratch [[threadgroup(0)]],
                        uint lid [[thread_index_in_threadgroup]],
                        uint n [[threads_per_threadgroup]]) {
  scratch[lid] = float(lid) * 2.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = scratch[n - 1 - lid];
}

// Planted bug: some threads return before a barrier.
kernel void early_return_barrier(device float* out [[buffer(0)]], uint lid [[thread_index_in_threadgroup]]) {
  if (lid < 16) return;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = 1.0f;
}

// Device buffer bounds: `shift` = 1 writes one element past the end.
kernel void copy_shifted(device const float* in [[buffer(0)]],
                         device float* out [[buffer(1)]],
                         constant uint& shift [[buffer(2)]],
                         uint gid [[thread_position_in_grid]]) {
  out[gid + shift] = in[gid];
}

// Threadgroup array bounds: threads beyond 32 index past the end of `small`.
kernel void tg_overflow(device float* out [[buffer(0)]],
                        constant uint& limit [[buffer(1)]],
                        uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float small[32];
  threadgroup float after[32];
  if (lid < limit) small[lid] = 1.0f;
  if (lid < 32) after[lid] = 2.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = small[lid % 32];
}

// Atomics on device and threadgroup memory.
kernel void histogram(device const uint* keys [[buffer(0)]],
                      device atomic_uint* global_counts [[buffer(1)]],
                      device atomic<float>* total [[buffer(2)]],
                      uint gid [[thread_position_in_grid]],
                      uint lid [[thread_index_in_threadgroup]]) {
  threadgroup atomic_uint local_counts[8];
  if (lid < 8) atomic_store_explicit(&local_counts[lid], 0u, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  atomic_fetch_add_explicit(&local_counts[keys[gid] % 8], 1u, memory_order_relaxed);
  atomic_fetch_add_explicit(total, 0.5f, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (lid < 8)
    atomic_fetch_add_explicit(&global_counts[lid], atomic_load_explicit(&local_counts[lid], memory_order_relaxed),
                              memory_order_relaxed);
}

// Program-scope constant table (like an FP4 dequantisation LUT).
constant constexpr float kLut[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

kernel void dequant_fp4(device const uchar* packed [[buffer(0)]],
                        device half* out [[buffer(1)]],
                        uint gid [[thread_position_in_grid]]) {
  constant float local_scale[2] = {1.0f, 0.25f};
  uchar b = packed[gid];
  out[2 * gid] = half(kLut[b & 0xf] * local_scale[0]);
  out[2 * gid + 1] = half(kLut[b >> 4] * local_scale[0]);
}

// Planted bug: lanes of one simdgroup call different collectives.
kernel void divergent_collectives(device float* out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
  float v = float(lane);
  out[lane] = lane < 16 ? simd_sum(v) : simd_max(v);
}

// Planted bug: half of a simdgroup waits in simd_sum while the other half
// waits at a threadgroup barrier.
kernel void collective_vs_barrier(device float* out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
  float v = float(lane);
  if (lane < 16) v = simd_sum(v);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lane] = v;
}

// Lanes that skip a collective by returning are inactive: the rest proceed.
kernel void collective_after_return(device float* out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
  if (lane >= 8) return;
  out[lane] = simd_sum(float(lane));
}

// Too much threadgroup memory for an Apple GPU.
kernel void too_much_tg_memory(device float* out [[buffer(0)]], uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float big[9000];
  big[lid] = 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = big[lid];
}

// Planted bug: MSL forbids writing through a constant pointer; without
// address-space types the emulator reports it at run time.
kernel void write_constant(constant float* table [[buffer(0)]], uint lid [[thread_index_in_threadgroup]]) {
  float* t = (float*)table;
  t[lid] = 0.0f;
}

// Several declarators, a threadgroup scalar and a declaration from a macro.
#define DECLARE_STAGE(name, n) threadgroup float name[n];
kernel void tg_declarators(device float* out [[buffer(0)]], uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float a[32], b[2][32];
  threadgroup uint counter;
  DECLARE_STAGE(stage, 32)
  if (lid == 0) counter = 7;
  a[lid] = float(lid);
  b[1][lid] = float(2 * lid);
  stage[lid] = 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = a[31 - lid] + b[1][31 - lid] + float(counter) + stage[31 - lid];
}

// Spin-wait on a flag another thread of the threadgroup sets: atomic loads
// yield, so this terminates.
kernel void spin_handoff(device uint* out [[buffer(0)]],
                         device atomic_uint* flag [[buffer(1)]],
                         uint lid [[thread_index_in_threadgroup]],
                         uint tg [[threadgroup_position_in_grid]]) {
  if (lid == 0) {
    while (atomic_load_explicit(&flag[tg], memory_order_relaxed) == 0) {
    }
    out[tg] = 1;
  } else if (lid == 63) {
    atomic_store_explicit(&flag[tg], 1u, memory_order_relaxed);
  }
}

// Planted bug: threadgroup 0 waits for threadgroup 1, which in the emulator
// only starts after threadgroup 0 finished.
kernel void spin_on_later_threadgroup(device atomic_uint* flag [[buffer(0)]],
                                      uint tg [[threadgroup_position_in_grid]]) {
  if (tg == 1) atomic_store_explicit(flag, 1u, memory_order_relaxed);
  while (atomic_load_explicit(flag, memory_order_relaxed) == 0) {
  }
}

// Planted bug: a thread loops forever without any synchronisation.
kernel void endless(device uint* out [[buffer(0)]], uint lid [[thread_index_in_threadgroup]]) {
  volatile device uint* p = out;
  while (p[0] == 0) {
  }
}
