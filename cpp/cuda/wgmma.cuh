// Hopper warpgroup MMA (wgmma.mma_async, sm_90a) and its shared-memory operand
// descriptors, for kernels that keep an mma.sync path for other GPUs.  Includes no
// MLX header.
//
// Operands in shared memory use the 128-byte swizzle: a tile of R rows is stored as
// [cols / 64][R][64] 16-bit elements (128-byte rows), and 16-byte chunk c of row r sits
// at chunk c ^ (r % 8) of its row (swizzled_offset).  The hardware applies the same XOR
// to address bits 4..6 from bits 7..9, so tiles must start on 1024-byte boundaries.
// One layout serves both roles of the attention tiles: K-major (rows = M or N, the
// 64-element blocks along K) and N-major (rows = K, the 64-element blocks along N).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <type_traits>

// wgmma exists only in the arch-specific sm_90a target; everything else compiles the
// callers' fallbacks (the host only launches wgmma kernels on compute capability 9.0).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MARLIN_HAS_WGMMA 1
#else
#define MARLIN_HAS_WGMMA 0
#endif

namespace marlin::cuda::wg {

// Named barriers (ids 1..15; 0 is __syncthreads'): `threads` arrivals complete one phase.
// arrive does not wait, so one warpgroup can hand a turn to another (ping-pong).
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Byte offset of 16-byte chunk `c` of row `r` in a swizzled tile of `rows` rows.
__host__ __device__ constexpr uint32_t swizzled_offset(int rows, int r, int c) {
  return static_cast<uint32_t>((c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

// Descriptor of a 128-byte-swizzled operand starting at shared address `addr`.
// K-major: `sbo` = bytes between 8-row groups (1024 for packed rows), `lbo` unused.
// N-major: `lbo` = bytes between 64-element blocks along N, `sbo` = bytes between
// 8-row groups along K.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t((lbo & 0x3FFFFu) >> 4) << 16) |
         (uint64_t((sbo & 0x3FFFFu) >> 4) << 32) | (uint64_t(1) << 62);
}

#if MARLIN_HAS_WGMMA
// Orders this thread's register writes (accumulators, A fragments) before the next
// wgmma of the warpgroup reads them.
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes shared-memory writes of the generic proxy (st.shared, cp.async) visible to
// the async proxy that wgmma reads operands through.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ---- mbarriers (shared-memory transaction barriers) and TMA tile copies.
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialized barriers visible to the async proxy (TMA completes on them).
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives and announces `bytes` of TMA transactions that complete the current phase.
__device__ __forceinline__ void mbar_arrive_expect(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Waits until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}
// One box of the 4-D tensor map at coordinates (c0 innermost .. c3) into shared memory,
// completing `bytes` of transactions on `bar`.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* map, int c0, int c1, int c2, int c3, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
// Moves registers between warpgroups: the producer gives its up, the MMA warpgroups
// take them (the launch bound sizes every warp for the average).
template <int N>
__device__ __forceinline__ void regs_release() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void regs_acquire() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
#else
__device__ __forceinline__ void fence() {}
__device__ __forceinline__ void commit() {}
template <int N>
__device__ __forceinline__ void wait() {}
__device__ __forceinline__ void fence_proxy_async() {}
__device__ __forceinline__ void mbar_init(uint32_t, int) {}
__device__ __forceinline__ void mbar_init_fence() {}
__device__ __forceinline__ void mbar_arrive(uint32_t) {}
__device__ __forceinline__ void mbar_arrive_expect(uint32_t, uint32_t) {}
__device__ __forceinline__ void mbar_wait(uint32_t, uint32_t) {}
__device__ __forceinline__ void tma_load_4d(uint32_t, const void*, int, int, int, int, uint32_t) {}
template <int N>
__device__ __forceinline__ void regs_release() {}
template <int N>
__device__ __forceinline__ void regs_acquire() {}
#endif

// Accumulator register lists of m64n64 (32 fp32 per thread) and m64n128 (64).
#define MARLIN_WGMMA_D32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define MARLIN_WGMMA_D32_OPERANDS "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define MARLIN_WGMMA_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define MARLIN_WGMMA_D64_OPERANDS "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// "wgmma ... d, a-desc, b-desc, p, 1, 1, 0, trans-b" with scale-d p = (accumulate != 0).
#define MARLIN_WGMMA_SS(N, TY, DREGS, A, B, ACC, TB)                                               \
  "{\n.reg .pred p;\nsetp.ne.b32 p, " ACC ", 0;\nwgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY \
  "." TY " " DREGS ", " A ", " B ", p, 1, 1, 0, " TB ";\n}\n"
// "wgmma ... d, {a0..a3}, b-desc, p, 1, 1, trans-b": A from registers.
#define MARLIN_WGMMA_RS(N, TY, DREGS, A, B, ACC, TB)                                               \
  "{\n.reg .pred p;\nsetp.ne.b32 p, " ACC ", 0;\nwgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY \
  "." TY " " DREGS ", " A ", " B ", p, 1, 1, " TB ";\n}\n"

// The instruction strings of the four forms used, for element type TY ("f16" / "bf16").
#define MARLIN_WGMMA_SS_N64(TY) MARLIN_WGMMA_SS("64", TY, MARLIN_WGMMA_D32, "%32", "%33", "%34", "%35")
#define MARLIN_WGMMA_SS_N128(TY) MARLIN_WGMMA_SS("128", TY, MARLIN_WGMMA_D64, "%64", "%65", "%66", "%67")
#define MARLIN_WGMMA_RS_N64(TY) MARLIN_WGMMA_RS("64", TY, MARLIN_WGMMA_D32, "{%32, %33, %34, %35}", "%36", "%37", "%38")
#define MARLIN_WGMMA_RS_N128(TY) MARLIN_WGMMA_RS("128", TY, MARLIN_WGMMA_D64, "{%64, %65, %66, %67}", "%68", "%69", "%70")
// asm volatile(FORM(type of T) OPERANDS): the element type is part of the instruction name.
#define MARLIN_WGMMA_ASM(T, FORM, ...)                              \
  if constexpr (std::is_same<T, __half>::value) {                  \
    asm volatile(FORM("f16") __VA_ARGS__);                          \
  } else {                                                          \
    asm volatile(FORM("bf16") __VA_ARGS__);                         \
  }

// D (64 x N, fp32) (+)= A (64 x 16) * B (16 x N), B in shared memory K-major (TRANS_B = 0)
// or N-major (1).  ss: A in shared memory (K-major); rs: A in registers, each warp's 16
// rows in the m16n8k16 A-fragment layout.  The accumulator layout of each warp's 16 rows
// is that of m16n8k16 for every 8 columns (d[4 * j ..] = columns 8j..8j+7).  Issued
// asynchronously: the registers must not be touched until wait().
template <typename T, int TRANS_B>
__device__ __forceinline__ void mma_ss(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
#if MARLIN_HAS_WGMMA
  MARLIN_WGMMA_ASM(T, MARLIN_WGMMA_SS_N64, : MARLIN_WGMMA_D32_OPERANDS : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_B))
#endif
}
template <typename T, int TRANS_B>
__device__ __forceinline__ void mma_ss(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
#if MARLIN_HAS_WGMMA
  MARLIN_WGMMA_ASM(T, MARLIN_WGMMA_SS_N128, : MARLIN_WGMMA_D64_OPERANDS : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_B))
#endif
}
template <typename T, int TRANS_B>
__device__ __forceinline__ void mma_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate) {
#if MARLIN_HAS_WGMMA
  MARLIN_WGMMA_ASM(T, MARLIN_WGMMA_RS_N64, : MARLIN_WGMMA_D32_OPERANDS
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TRANS_B))
#endif
}
template <typename T, int TRANS_B>
__device__ __forceinline__ void mma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t b, int accumulate) {
#if MARLIN_HAS_WGMMA
  MARLIN_WGMMA_ASM(T, MARLIN_WGMMA_RS_N128, : MARLIN_WGMMA_D64_OPERANDS
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TRANS_B))
#endif
}

}  // namespace marlin::cuda::wg
