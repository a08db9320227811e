// Tiled GEMM in the style of MLX's steel kernels: tiles of A and B are staged
// in threadgroup memory, each simdgroup accumulates TM x TN 8x8 fragments.
#include <metal_stdlib>
#include <metal_simdgroup_matrix>
using namespace metal;

struct GemmParams {
  int M, N, K;
};

template <typename T, int BM, int BN, int BK, int WM, int WN>
[[kernel]] void gemm(const device T* A [[buffer(0)]],
                     const device T* B [[buffer(1)]],
                     device T* C [[buffer(2)]],
                     constant GemmParams& p [[buffer(3)]],
                     uint3 tgid [[threadgroup_position_in_grid]],
                     uint lid [[thread_index_in_threadgroup]],
                     uint sgid [[simdgroup_index_in_threadgroup]],
                     uint lane [[thread_index_in_simdgroup]]) {
  constexpr int kThreads = WM * WN * 32;
  constexpr int TM = BM / (8 * WM);
  constexpr int TN = BN / (8 * WN);
  threadgroup T As[BM * BK];
  threadgroup T Bs[BK * BN];

  const int row0 = tgid.y * BM;
  const int col0 = tgid.x * BN;
  const int sm = (sgid / WN) * TM * 8;
  const int sn = (sgid % WN) * TN * 8;

  simdgroup_matrix<float, 8, 8> acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  for (int k0 = 0; k0 < p.K; k0 += BK) {
    for (int i = lid; i < BM * BK; i += kThreads) {
      int r = i / BK, c = i % BK;
      As[i] = A[(row0 + r) * p.K + k0 + c];
    }
    for (int i = lid; i < BK * BN; i += kThreads) {
      int r = i / BN, c = i % BN;
      Bs[i] = B[(k0 + r) * p.N + col0 + c];
    }
#ifndef PLANT_MISSING_BARRIER
    threadgroup_barrier(mem_flags::mem_threadgroup);
#endif
    for (int kk = 0; kk < BK; kk += 8) {
      simdgroup_matrix<T, 8, 8> a[TM];
      simdgroup_matrix<T, 8, 8> b[TN];
      for (int i = 0; i < TM; ++i) simdgroup_load(a[i], As, BK, ulong2(kk, sm + i * 8));
      for (int j = 0; j < TN; ++j) simdgroup_load(b[j], Bs, BN, ulong2(sn + j * 8, kk));
      for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) simdgroup_multiply_accumulate(acc[i][j], a[i], b[j], acc[i][j]);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) {
      simdgroup_matrix<T, 8, 8> out;
      out.thread_elements() = vec<T, 2>(acc[i][j].thread_elements());
      simdgroup_store(out, C, p.N, ulong2(col0 + sn + j * 8, row0 + sm + i * 8));
    }
}

#define instantiate_gemm(tname, type, bm, bn, bk, wm, wn)                         \
  template [[host_name("gemm_" #tname "_" #bm "x" #bn)]] [[kernel]]            \
  decltype(gemm<type, bm, bn, bk, wm, wn>) gemm<type, bm, bn, bk, wm, wn>;

instantiate_gemm(f32, float, 64, 64, 16, 2, 2)
instantiate_gemm(f16, half, 64, 64, 16, 2, 2)
instantiate_gemm(f32, float, 32, 32, 16, 2, 2)
template [[host_name("gemm_bf16_64x64")]] [[kernel]] decltype(gemm<bfloat, 64, 64, 16, 2, 2>) gemm<bfloat, 64, 64, 16, 2, 2>;
