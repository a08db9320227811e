// Kernels in the shapes the project's real kernels take: MLX-steel-style
// helper structs holding threadgroup pointers, METAL_FUNC helpers taking
// address-space-qualified pointers, bitonic sort in threadgroup memory,
// prefix sums for MoE routing and a LUT-based FP4 dequantising GEMV.
#include <metal_stdlib>
#include <metal_simdgroup>
using namespace metal;

#define STEEL_CONST static constant constexpr const
#define STEEL_PRAGMA_UNROLL _Pragma("clang loop unroll(full)")

template <typename T, short ROWS, short COLS, short TGP_SIZE>
struct TileLoader {
  STEEL_CONST short n_reads = (ROWS * COLS) / TGP_SIZE;
  const int src_ld;
  const short thread_idx;
  threadgroup T* dst;
  const device T* src;

  METAL_FUNC TileLoader(const device T* src_, int src_ld_, threadgroup T* dst_, ushort thread_idx_) thread
      : src_ld(src_ld_), thread_idx(thread_idx_), dst(dst_), src(src_) {}

  METAL_FUNC void load() const thread {
    STEEL_PRAGMA_UNROLL
    for (short i = 0; i < n_reads; ++i) {
      short idx = thread_idx * n_reads + i;
      dst[idx] = src[(idx / COLS) * src_ld + idx % COLS];
    }
  }
};

template <typename T>
METAL_FUNC T tg_sum(threadgroup T* scratch, T v, uint lid, uint n) {
  scratch[lid] = v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  T total = T(0);
  for (uint i = 0; i < n; ++i) total += scratch[i];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return total;
}

// Tile copy through a loader struct plus a threadgroup sum helper.
kernel void loader_copy(const device float* src [[buffer(0)]],
                        device float* dst [[buffer(1)]],
                        device float* total [[buffer(2)]],
                        uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[16 * 32];
  threadgroup float scratch[64];
  TileLoader<float, 16, 32, 64> loader(src, 48, tile, lid);
  loader.load();
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int i = lid; i < 16 * 32; i += 64) dst[i] = tile[i];
  float t = tg_sum(scratch, float(lid), lid, 64);
  if (lid == 0) total[0] = t;
}

// Per-token top-k over expert scores: bitonic sort (descending) of
// (score, expert) pairs in threadgroup memory, then counts per expert with
// atomics and an exclusive prefix sum giving each expert's offset.
struct RouteParams {
  uint n_experts;  // power of two, == threads per threadgroup
  uint top_k;
};

kernel void moe_route(const device float* scores [[buffer(0)]],
                      device uint* topk_ids [[buffer(1)]],
                      device float* topk_w [[buffer(2)]],
                      device atomic_uint* expert_counts [[buffer(3)]],
                      constant RouteParams& p [[buffer(4)]],
                      uint token [[threadgroup_position_in_grid]],
                      uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float key[256];
  threadgroup uint val[256];
  key[lid] = scores[token * p.n_experts + lid];
  val[lid] = lid;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint size = 2; size <= p.n_experts; size <<= 1) {
    for (uint stride = size >> 1; stride > 0; stride >>= 1) {
      uint partner = lid ^ stride;
      if (partner > lid) {
        bool descending = (lid & size) == 0;
        float a = key[lid], b = key[partner];
        if ((a < b) == descending) {
          key[lid] = b;
          key[partner] = a;
          uint t = val[lid];
          val[lid] = val[partner];
          val[partner] = t;
        }
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
  }
  if (lid < p.top_k) {
    topk_ids[token * p.top_k + lid] = val[lid];
    topk_w[token * p.top_k + lid] = key[lid];
    atomic_fetch_add_explicit(&expert_counts[val[lid]], 1u, memory_order_relaxed);
  }
}

kernel void exclusive_scan(const device uint* counts [[buffer(0)]],
                           device uint* offsets [[buffer(1)]],
                           constant uint& n [[buffer(2)]],
                           uint lid [[thread_index_in_threadgroup]],
                           uint lane [[thread_index_in_simdgroup]],
                           uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup uint sg_totals[32];
  uint v = lid < n ? counts[lid] : 0;
  uint prefix = simd_prefix_exclusive_sum(v);
  if (lane == 31) sg_totals[sg] = prefix + v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {
    uint t = sg_totals[lane];
    sg_totals[lane] = simd_prefix_exclusive_sum(t);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (lid < n) offsets[lid] = prefix + sg_totals[sg];
}

// FP4 (e2m1) GEMV: each simdgroup computes one output row; weights are
// packed two per byte, dequantised through a constant LUT and a per-32
// group scale, partial dot products reduced with simd_shuffle_xor.
constant constexpr half FP4_LUT[16] = {0.0h, 0.5h, 1.0h, 1.5h, 2.0h, 3.0h, 4.0h, 6.0h,
                                       -0.0h, -0.5h, -1.0h, -1.5h, -2.0h, -3.0h, -4.0h, -6.0h};

template <typename T>
[[kernel]] void fp4_gemv(const device uchar* w [[buffer(0)]],
                         const device half* scales [[buffer(1)]],
                         const device T* x [[buffer(2)]],
                         device T* y [[buffer(3)]],
                         constant uint2& shape [[buffer(4)]],
                         uint2 tgid [[threadgroup_position_in_grid]],
                         uint sg [[simdgroup_index_in_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]]) {
  const uint K = shape.y;
  const uint row = tgid.x * 2 + sg;
  if (row >= shape.x) return;
  const device uchar* wr = w + row * (K / 2);
  float acc = 0.0f;
  for (uint k = lane * 2; k < K; k += 64) {
    uchar b = wr[k / 2];
    half s = scales[row * (K / 32) + k / 32];
    half2 wv = half2(FP4_LUT[b & 0xf], FP4_LUT[b >> 4]) * s;
    float2 xv = float2(x[k], x[k + 1]);
    acc += dot(float2(wv), xv);
  }
  for (ushort off = 16; off > 0; off >>= 1) acc += simd_shuffle_xor(acc, off);
  if (lane == 0) y[row] = T(acc);
}

#define instantiate_fp4_gemv(name, type) \
  template [[host_name("fp4_gemv_" #name)]] [[kernel]] decltype(fp4_gemv<type>) fp4_gemv<type>;
instantiate_fp4_gemv(f32, float)
instantiate_fp4_gemv(f16, half)

// Struct copies between device, threadgroup and thread memory, including the
// MLX loader idiom of copying vectors as an aligned byte struct.
template <typename T, int N>
struct alignas(N * sizeof(T)) ReadVector {
  uint8_t v[sizeof(T) * N];
};
struct Pair {
  float a;
  int b;
};

kernel void struct_copies(device const float* src [[buffer(0)]],
                          device float* dst [[buffer(1)]],
                          device Pair* pairs [[buffer(2)]],
                          uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[128];
  threadgroup Pair ptile[32];
  *((threadgroup ReadVector<float, 4>*)(&tile[lid * 4])) = *((const device ReadVector<float, 4>*)(&src[lid * 4]));
  ptile[lid] = pairs[lid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  Pair p = ptile[31 - lid];
  p.a += tile[127 - lid];
  pairs[lid] = p;
  dst[lid] = tile[lid * 4 + 3];
}
