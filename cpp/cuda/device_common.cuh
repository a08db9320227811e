// Device helpers shared by the CUDA kernels (fp4_gemm, MoE, attention): element
// conversions, the fused epilogue's activation, exact E2M1 decodes into fp16/bf16
// register pairs, the m16n8k16 tensor-core MMA, and streaming / async loads.
// Includes no MLX header.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <map>
#include <utility>

#include "common/activation.h"
#include "common/fp4_format.h"

namespace marlin::cuda {

// Quiet NaN, for outputs that depend on invalid data (e.g. an expert id outside [0, E)).
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ float apply_activation(float v, int act) {
  switch (act) {
    case static_cast<int>(Activation::Relu):
      return v > 0.f ? v : 0.f;
    // The CPU backend's forms (cpp/cpu/activation.h): no 1 + erf / 1 + tanh, which lose
    // every digit where GELU's negative tail is tiny.
    case static_cast<int>(Activation::Gelu):
      return 0.5f * v * erfcf(v * -0.70710678118654752f);
    case static_cast<int>(Activation::GeluApprox): {
      const float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
      return v / (1.f + expf(-2.f * u));
    }
    case static_cast<int>(Activation::Silu):
      return v / (1.f + expf(-v));
    default:
      return v;
  }
}

// Bias for the 8 consecutive output columns a thread stores (zeros without a bias); the
// MMA epilogues only take this path when N % 8 == 0, so both float4 loads are in range.
__device__ __forceinline__ void load_bias8(const float* bias, int col, float out[8]) {
  if (bias) {
    const float4 b0 = *reinterpret_cast<const float4*>(bias + col);
    const float4 b1 = *reinterpret_cast<const float4*>(bias + col + 4);
    out[0] = b0.x; out[1] = b0.y; out[2] = b0.z; out[3] = b0.w;
    out[4] = b1.x; out[5] = b1.y; out[6] = b1.z; out[7] = b1.w;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Two floats as a packed pair of T (__half / __nv_bfloat16), a in the low half; one
// paired round-to-nearest conversion.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  if constexpr (std::is_same<T, __half>::value) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

// Exact E2M1 decode to fp32: the magnitude bits as an fp32 subnormal/normal pattern
// (value * 2^-126), rescaled by 2^126 (exact; needs denormals, i.e. no -ftz).
__device__ __forceinline__ float e2m1_to_float(uint32_t code) {
  return __uint_as_float(((code & 7u) << 22) | ((code & 8u) << 28)) * 0x1p126f;
}


// The 8 codes of a packed word (k order) times their group scale, in fp32 (exact: 2
// significant bits times a half-precision scale).
__device__ __forceinline__ void decode_word_scaled(uint32_t word, float scale, float (&v)[kCodesPerWord]) {
#pragma unroll
  for (int j = 0; j < kCodesPerWord; ++j) v[j] = e2m1_to_float(extract_code(word, j)) * scale;
}

// E2M1 pairs (nibble i, nibble i+4) of a word as fp16x2 = e2m1 * 2^-14, exact.
template <int I>
__device__ __forceinline__ uint32_t decode_pair_f16(uint32_t w) {
  constexpr int kMag = 9 - 4 * I;   // magnitude bits 4i..4i+2 -> 9..11
  constexpr int kSign = 12 - 4 * I; // sign bit 4i+3 -> 15
  const uint32_t mag = kMag >= 0 ? (w << (kMag >= 0 ? kMag : 0)) : (w >> (kMag < 0 ? -kMag : 0));
  return (mag & 0x0E000E00u) | ((w << kSign) & 0x80008000u);
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 ldg_cached(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

template <typename S>
__device__ __forceinline__ float scale_to_float(uint32_t packed, int hi) {
  const uint16_t bits = hi ? static_cast<uint16_t>(packed >> 16) : static_cast<uint16_t>(packed & 0xFFFFu);
  if constexpr (std::is_same<S, __half>::value) {
    return __half2float(__ushort_as_half(bits));
  } else {
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  }
}


// BM decode (see fp4_gemv): E2M1 bits placed straight into bf16 (e2m1 * 2^-126), then one
// bf16x2 FMA by 2^112 (exact).
template <int I>
__device__ __forceinline__ uint32_t decode_pair_bf16_raw(uint32_t w) {
  constexpr int kMag = 6 - 4 * I;   // magnitude bits 4i..4i+2 -> 6..8
  constexpr int kSign = 12 - 4 * I; // sign bit 4i+3 -> 15
  const uint32_t mag = kMag >= 0 ? (w << (kMag >= 0 ? kMag : 0)) : (w >> (kMag < 0 ? -kMag : 0));
  const uint32_t raw = (mag & 0x01C001C0u) | ((w << kSign) & 0x80008000u);
  uint32_t out;
  // raw * 2^112 + (-0): exact (powers of two; bf16 subnormals are kept by fma.bf16x2).
  asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(out) : "r"(raw), "r"(0x77807780u), "r"(0x80008000u));
  return out;
}


// d = A * B + {c0, c1, 0, 0}; rows 8..15 of A are zero (a1 = a3 = 0): d2, d3 dropped.
template <typename T>
__device__ __forceinline__ void mma_16816_top(float& c0, float& c1, uint32_t a0, uint32_t a2, uint32_t b0,
                                              uint32_t b1) {
  float d2, d3;
  if constexpr (std::is_same<T, __half>::value) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%12};\n"
        : "=f"(c0), "=f"(c1), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(0.f));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%12};\n"
        : "=f"(c0), "=f"(c1), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(0.f));
  }
}

// A fragments (row-major 16 x 16 tile, two k halves) of the fp4 kernels' k order: each
// thread holds 8 consecutive activations of row g (lo) and row g + 8 (hi) as 4 packed
// pairs; element i of the 8 sits at logical k slot (i % 4) * 2 + i / 4 of the k32 step,
// which matches decode_pair_f16<I> (nibbles I and I + 4 of the thread's weight word).
__device__ __forceinline__ void a_frags_from_pairs(const uint4& lo, const uint4& hi, uint32_t (&af)[2][4]) {
  af[0][0] = __byte_perm(lo.x, lo.z, 0x5410);
  af[0][1] = __byte_perm(hi.x, hi.z, 0x5410);
  af[0][2] = __byte_perm(lo.x, lo.z, 0x7632);
  af[0][3] = __byte_perm(hi.x, hi.z, 0x7632);
  af[1][0] = __byte_perm(lo.y, lo.w, 0x5410);
  af[1][1] = __byte_perm(hi.y, hi.w, 0x5410);
  af[1][2] = __byte_perm(lo.y, lo.w, 0x7632);
  af[1][3] = __byte_perm(hi.y, hi.w, 0x7632);
}

// B fragments (two k16 halves of a k32 step) of 8 consecutive activations x of one
// token, in decode_word's k order: register i holds the pair (x[i'], x[i' + 4]) that meets
// pair i of a weight word (fp4_gemv, where the weights are the A operand).
__device__ __forceinline__ void b_frags_from_pairs(const uint4& x, uint32_t (&bf)[4]) {
  bf[0] = __byte_perm(x.x, x.z, 0x5410);
  bf[1] = __byte_perm(x.x, x.z, 0x7632);
  bf[2] = __byte_perm(x.y, x.w, 0x5410);
  bf[3] = __byte_perm(x.y, x.w, 0x7632);
}

// The four B registers (k halves 0, 1 of two mmas) of one packed weight word, as T pairs
// of e2m1 * 2^-14 (exact); bf16 by bit placement + one bf16x2 FMA.
template <typename T>
__device__ __forceinline__ void decode_word(uint32_t w, uint32_t (&b)[4]) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    b[0] = decode_pair_bf16_raw<0>(w);
    b[1] = decode_pair_bf16_raw<1>(w);
    b[2] = decode_pair_bf16_raw<2>(w);
    b[3] = decode_pair_bf16_raw<3>(w);
  } else {
    b[0] = decode_pair_f16<0>(w);
    b[1] = decode_pair_f16<1>(w);
    b[2] = decode_pair_f16<2>(w);
    b[3] = decode_pair_f16<3>(w);
  }
}

// Unscaled decode (fp4_gemv_token): the same pairs as decode_word without its bf16x2
// multiply, for kernels that move the exponent offset onto the activations instead.
// bf16: e2m1 * 2^-126 straight from bit placement (the +-0.5 codes are bf16 subnormals,
// which the tensor cores take as they are, as they take the f16 decode's); the pair's
// two nibbles are isolated, copied to the magnitude (bits 6..8) and sign (15) positions of
// both halves by one multiply by 2^a + 2^b (the copies do not overlap: no carries), and
// masked; pairs 2, 3 come from w >> 8.  Three instructions a pair instead of five.
// f16: decode_pair_f16 (e2m1 * 2^-14, no multiply to begin with).
template <int I>
__device__ __forceinline__ uint32_t place_pair_bf16(uint32_t w, uint32_t w8) {
  constexpr int J = I & 1;
  const uint32_t u = (I < 2 ? w : w8) & (0x000F000Fu << (4 * J));
  uint32_t p;
  asm("mul.lo.u32 %0, %1, %2;" : "=r"(p) : "r"(u), "n"(J == 0 ? 0x1040 : 0x104));
  return p & 0x81C081C0u;
}

template <typename T>
struct UnscaledDecode;
template <>
struct UnscaledDecode<__nv_bfloat16> {
  // A fixed x * 2^64 (benchmarks/gemv_lab_cuda.cu); fp4_gemv_token scales each group of
  // x by its own power of two instead (bf16_group_shift).
  static constexpr uint32_t kXScale = 0x5F805F80u;  // bf16x2 {2^64, 2^64}: x * 2^64 meets e2m1 * 2^-126
  static constexpr float kOutScale = 0x1p62f;       // undoes the product's 2^-62
};
template <>
struct UnscaledDecode<__half> {
  static constexpr uint32_t kXScale = 0x3C003C00u;  // f16x2 {1, 1}: x as it is
  static constexpr float kOutScale = 16384.f;       // undoes the decode's 2^-14
};

template <typename T>
__device__ __forceinline__ void decode_word_unscaled(uint32_t w, uint32_t (&b)[4]) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    const uint32_t w8 = w >> 8;
    b[0] = place_pair_bf16<0>(w, w8);
    b[1] = place_pair_bf16<1>(w, w8);
    b[2] = place_pair_bf16<2>(w, w8);
    b[3] = place_pair_bf16<3>(w, w8);
  } else {
    decode_word<T>(w, b);
  }
}

// v * mul per bf16 pair; the -0 addend keeps -0 (exact where mul is a power of two and
// nothing over- or underflows).
__device__ __forceinline__ uint32_t mul_bf16_pair(uint32_t v, uint32_t mul) {
  uint32_t out;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(out) : "r"(v), "r"(mul), "r"(0x80008000u));
  return out;
}

// x * UnscaledDecode<T>::kXScale per pair (bf16 overflows for |x| >= 2^64).
template <typename T>
__device__ __forceinline__ uint32_t scale_activation_pair(uint32_t v) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return mul_bf16_pair(v, UnscaledDecode<T>::kXScale);
  } else {
    return v;
  }
}

// The largest |x| of 8 bf16 values, as its bits (magnitudes order as integers).
__device__ __forceinline__ uint32_t max_abs_bf16_bits(const uint4& v) {
  const uint32_t m = __vmaxu2(__vmaxu2(v.x & 0x7FFF7FFFu, v.y & 0x7FFF7FFFu), __vmaxu2(v.z & 0x7FFF7FFFu, v.w & 0x7FFF7FFFu));
  return max(m & 0xFFFFu, m >> 16);
}

// The power of two 2^d one group of bf16 activations is multiplied by before meeting the
// unscaled decode's e2m1 * 2^-126, and the 2^(126 - d) its fp32 sums are multiplied by
// afterwards.  d puts the group's largest |x| near 2^64, so every product that matters
// is a normal fp32 whatever x's exponent: a fixed 2^64 overflowed for |x| >= 2^64 and
// lost groups below ~2^-62 (bf16 activations span 2^-133 .. 2^128).  2^d travels as two
// bf16 factors (2^191 is not a bf16); -1 <= d <= 191, so 2^(126 - d) is a normal float.
struct Bf16GroupShift {
  uint32_t mul_lo;  // bf16x2 {2^min(d, 127)} twice
  uint32_t mul_hi;  // bf16x2 {2^(d - min(d, 127))} twice
  float out;        // 2^(126 - d)
};
__device__ __forceinline__ Bf16GroupShift bf16_group_shift(uint32_t max_abs_bits) {
  const int exponent_field = static_cast<int>(max_abs_bits >> 7);  // 0 (zero / subnormal) .. 255 (inf / NaN)
  const int d = max(191 - exponent_field, -1);
  const int d_lo = min(d, 127);
  const uint32_t e_lo = static_cast<uint32_t>(d_lo + 127) << 7, e_hi = static_cast<uint32_t>(d - d_lo + 127) << 7;
  return {e_lo | e_lo << 16, e_hi | e_hi << 16, __uint_as_float(static_cast<uint32_t>(253 - d) << 23)};
}

// atomicAdd with acquire-release semantics at gpu scope; returns the old value.  The
// split-K "last block finishes" counters (attention decode, fp4_gemv_token).
__device__ __forceinline__ int atomic_add_acq_rel(int* p, int v) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// Copies only where `pred` holds, where a zero-size copy (cp_async16's src-size 0) would
// still write zeros: lanes without data of their own issue nothing, and several lanes
// never target one shared address.
__device__ __forceinline__ void cp_async16_if(uint32_t smem, const void* gmem, bool pred) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %2, 0;\n @p cp.async.cg.shared.global [%0], [%1], 16;\n}\n" ::"r"(smem),
      "l"(gmem), "r"(static_cast<int>(pred))
      : "memory");
}
__device__ __forceinline__ void cp_async8_if(uint32_t smem, const void* gmem, bool pred) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %2, 0;\n @p cp.async.ca.shared.global [%0], [%1], 8;\n}\n" ::"r"(smem),
      "l"(gmem), "r"(static_cast<int>(pred))
      : "memory");
}

// 16 bytes, or 16 zeros where !valid (gmem is not read then).
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem, valid);
}


// Driver-API handle (CUfunction, as void*) of a kernel stub, for MLX's
// add_kernel_node_raw: valid in the device's primary context whichever copy of the
// CUDA runtime (ours or MLX's) registered the kernel.  nullptr for a null stub, or when
// the kernel cannot get `smem` bytes of dynamic shared memory.  Looked up once per stub
// and device (cudaGetFuncBySymbol is not free on the per-op path); more than the
// default 48 KiB of dynamic shared memory needs a per-kernel opt-in, raised here to the
// largest `smem` asked for so far (the runtime applies it to the same function).
inline void* driver_handle(const void* stub, int smem = 0) {
  if (!stub) return nullptr;
  struct Entry {
    void* fn = nullptr;
    int smem = 0;
  };
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, Entry> handles;
  int dev = 0;
  cudaGetDevice(&dev);
  std::lock_guard<std::mutex> lock(mutex);
  Entry& e = handles[{stub, dev}];
  if (smem > e.smem) {
    if (cudaFuncSetAttribute(stub, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess) return nullptr;
    e.smem = smem;
  }
  if (!e.fn) {
    cudaFunction_t fn = nullptr;
    if (cudaGetFuncBySymbol(&fn, stub) != cudaSuccess) return nullptr;
    e.fn = reinterpret_cast<void*>(fn);
  }
  return e.fn;
}

}  // namespace marlin::cuda
