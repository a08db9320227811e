// Read-bandwidth microbenchmark for fp4_gemv's weight access patterns (no MLX): how fast
// can an H100 read a [K/8, N] uint32 matrix when blocks own narrow column strips versus
// wide row segments?  Standalone:  nvcc -O3 -arch=sm_90 benchmarks/read_pattern_cuda.cu -o /tmp/rp && /tmp/rp
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// Block = WN x WK warps: WN adjacent 32-column strips (128 B per row each) x WK K-slices;
// blockIdx.y = K split across blocks (KS).  Lane (g, t) reads row 4s + t, columns 4g..4g+3.
template <int WN, int WK, int U>
__global__ void __launch_bounds__(32 * WN * WK) strips(const uint32_t* w, int rows, int N, int KS, uint32_t* sink) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wn = warp % WN, wk = warp / WN;
  const int g = lane >> 2, t = lane & 3;
  const int col = (blockIdx.x * WN + wn) * 32 + 4 * g;
  const int steps = rows / 4;
  const int slices = KS * WK, slice = blockIdx.y * WK + wk;
  const int s0 = steps * slice / slices, s1 = steps * (slice + 1) / slices;
  const uint32_t* p = w + (int64_t)t * N + col;
  uint32_t acc = 0;
  for (int s = s0; s < s1; s += U) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = s + u < s1 ? ldg_stream(p + (int64_t)(s + u) * 4 * N) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

// Contiguous: every warp reads consecutive 512-byte chunks of the flat array.
template <int U>
__global__ void __launch_bounds__(256) flat(const uint4* w, int64_t n16, uint32_t* sink) {
  const int64_t warps = (int64_t)gridDim.x * 8, warp = blockIdx.x * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  uint32_t acc = 0;
  for (int64_t c = warp * U; c * 32 < n16; c += warps * U) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t i = (c + u) * 32 + lane;
      v[u] = i < n16 ? ldg_stream(w + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

int main() {
  const int K = 4096, N = 14336, rows = K / 8, sets = 4;
  const size_t bytes = (size_t)rows * N * 4;
  uint32_t* buf; uint32_t* sink;
  cudaMalloc(&buf, bytes * sets); cudaMalloc(&sink, 4);
  cudaMemset(buf, 1, bytes * sets);
  int sms = 0; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  auto run = [&](const char* name, auto launch) {
    for (int i = 0; i < 8; ++i) launch(buf + (i % sets) * (bytes / 4));
    cudaEventRecord(e0);
    const int reps = 200;
    for (int i = 0; i < reps; ++i) launch(buf + (i % sets) * (bytes / 4));
    cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms = 0; cudaEventElapsedTime(&ms, e0, e1);
    const double us = ms * 1e3 / reps;
    printf("%-44s %7.2f us  %5.2f TB/s  (%s)\n", name, us, bytes / us / 1e6, cudaGetErrorString(cudaGetLastError()));
  };
  run("strip32: 8 warps split K in block (fp4_gemv)", [&](const uint32_t* w) { strips<1, 8, 8><<<dim3(N / 32, 1), 256>>>(w, rows, N, 1, sink); });
  run("strip32: 8 warps split K, 4 loads in flight", [&](const uint32_t* w) { strips<1, 8, 4><<<dim3(N / 32, 1), 256>>>(w, rows, N, 1, sink); });
  run("strip32: 4 warps split K in block", [&](const uint32_t* w) { strips<1, 4, 8><<<dim3(N / 32, 1), 128>>>(w, rows, N, 1, sink); });
  run("rows 256B: 2 strips x 4 K-slices, KS=2", [&](const uint32_t* w) { strips<2, 4, 8><<<dim3(N / 64, 2), 256>>>(w, rows, N, 2, sink); });
  run("rows 512B: 4 strips x 2 K-slices, KS=4", [&](const uint32_t* w) { strips<4, 2, 8><<<dim3(N / 128, 4), 256>>>(w, rows, N, 4, sink); });
  run("rows 1KB: 8 strips, KS=8", [&](const uint32_t* w) { strips<8, 1, 8><<<dim3(N / 256, 8), 256>>>(w, rows, N, 8, sink); });
  run("rows 2KB: 16 strips, KS=8", [&](const uint32_t* w) { strips<16, 1, 8><<<dim3(N / 512, 8), 512>>>(w, rows, N, 8, sink); });
  run("rows 2KB: 16 strips, KS=16", [&](const uint32_t* w) { strips<16, 1, 4><<<dim3(N / 512, 16), 512>>>(w, rows, N, 16, sink); });
  run("rows 4KB: 32 strips, KS=16", [&](const uint32_t* w) { strips<32, 1, 4><<<dim3(N / 1024, 16), 1024>>>(w, rows, N, 16, sink); });
  run("flat: contiguous 512 B per warp", [&](const uint32_t* w) { flat<8><<<sms * 8, 256>>>((const uint4*)w, bytes / 16, sink); });
  return 0;
}
