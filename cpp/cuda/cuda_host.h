// Host-side helpers shared by every CUDA eval_gpu (fp4_gemm, moe_*, attention): output
// allocation on MLX's stream, error checks, the test-only output poisoning, and the
// mapping of MLX dtypes to the kernels' element types.  Plain C++ with MLX headers.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "mlx/array.h"
#include "cuda/elem_type.h"
#include "mlx/backend/cuda/device.h"

namespace mx = mlx::core;

namespace marlin::cuda {

// Throws std::runtime_error "[op] what: <cuda message>" unless err == cudaSuccess.
void check(cudaError_t err, const char* op, const char* what);

// Gives `out` memory from MLX's allocator, or with MLX_MARLIN_CUDA_ALLOC=pool device
// memory stream-ordered on the encoder's stream from mlx_marlin's own pool (see
// cuda_host.cpp for the measurements behind the default).
void allocate_on_device(mx::array& out, mx::cu::CommandEncoder& enc);

// MLX_MARLIN_CUDA_POISON=1: tests fill every output with NaN bits before the kernel, so
// an element the kernel forgets to write fails the float64 comparison.
bool poison_outputs();
void poison(mx::array& out, mx::cu::CommandEncoder& enc, const char* op);

bool aligned16(const void* p);

// Device scratch for a multi-kernel eval_gpu (grouping tables, intermediates): allocated
// like an output and handed to the encoder as a temporary, so MLX keeps it alive until
// the command buffer that uses it has completed.
mx::array scratch(mx::cu::CommandEncoder& enc, mx::Shape shape, mx::Dtype dtype);

// `n` counters for a split-K "last block finishes" kernel (attention decode's fused
// merge, fp4_gemv_token), zero on entry; the kernel's last block of each group puts its
// counter back to zero.  nullptr for n > 4096 (the caller then needs another path).
int* split_counters(mx::cu::CommandEncoder& enc, int64_t n, const char* op);

// Records kernel `fn` (a driver-API handle from the kernels' *_fn / *_kernel getters;
// nullptr throws std::logic_error naming `op`) taking one argument struct `*args`, after
// declaring what it reads and writes: the encoder orders kernels through these arrays
// (each node waits for the last writer of every array it names).
void launch(mx::cu::CommandEncoder& enc, void* fn, dim3 grid, dim3 block, uint32_t smem, void* args,
            std::initializer_list<const mx::array*> reads, std::initializer_list<const mx::array*> writes,
            const char* op);

// The device's multiprocessor count (plans size their grids by it); looked up once.
int sm_count(mx::cu::Device& dev);

// Whether kernels on Hopper's wgmma can run: this build has sm_90a code (CMake defines
// MLX_MARLIN_CUDA_SM90A when CMAKE_CUDA_ARCHITECTURES lists 90a) and the device is
// compute capability 9.0 (sm_90a code runs on nothing else).  Looked up once.
bool wgmma_device(mx::cu::Device& dev);

// float16 / bfloat16 / float32, or std::invalid_argument naming `what`.
ElemType elem_type(mx::Dtype t, const char* op, const char* what);

}  // namespace marlin::cuda
