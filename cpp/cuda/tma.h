// Host side of the Tensor Memory Accelerator (TMA, Hopper): tensor maps that the
// wgmma kernels' producer thread copies tiles with (cp.async.bulk.tensor, see
// cuda/wgmma.cuh).  Header-only so that the standalone labs (benchmarks/*_lab_cuda.cu)
// build the same maps as eval_gpu; no MLX header.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace marlin::cuda {

// cuTensorMapEncodeTiled from the driver the runtime already loaded (no -lcuda at link
// time); nullptr where the driver has none.
inline decltype(&cuTensorMapEncodeTiled) tensor_map_encoder() {
  static decltype(&cuTensorMapEncodeTiled) fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<decltype(&cuTensorMapEncodeTiled)>(p);
  }();
  return fn;
}

// Map of a [B, H, L, D] f16 / bf16 tensor (element strides `stride`, stride[3] == 1) for
// boxes of 64 features x `box_rows` rows of one (b, h): what one 128-byte-swizzled
// block of a wgmma operand tile holds ([D / 64][rows][64], cuda/wgmma.cuh), so a tile is
// D / 64 copies.  Rows past L read as zeros.  False where TMA cannot address the tensor
// (strides not multiples of 16 bytes, broadcast (zero) strides, misaligned base, no
// driver support): the caller takes another kernel.
inline bool encode_rows_tma(CUtensorMap* map, const void* base, bool f16, int64_t B, int64_t H, int64_t L, int64_t D,
                            const int64_t stride[4], int box_rows) {
  auto encode = tensor_map_encoder();
  if (!encode || !base || stride[3] != 1 || D % 64 != 0 || (reinterpret_cast<uintptr_t>(base) & 15u) != 0) return false;
  const cuuint64_t dims[4] = {cuuint64_t(D), cuuint64_t(L), cuuint64_t(H), cuuint64_t(B)};
  cuuint64_t strides[3];
  for (int i = 0; i < 3; ++i) {
    // A dim of size 1 is never stepped over: any valid stride does (MLX may report 0).
    const int64_t bytes = dims[i + 1] == 1 ? (i == 0 ? D * 2 : int64_t(strides[i - 1] * dims[i])) : stride[2 - i] * 2;
    if (bytes <= 0 || bytes % 16 != 0 || bytes >= (int64_t(1) << 40)) return false;
    strides[i] = cuuint64_t(bytes);
  }
  const cuuint32_t box[4] = {64, cuuint32_t(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  return encode(map, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<void*>(base), dims,
                strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace marlin::cuda
