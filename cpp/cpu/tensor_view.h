// Bridges between MLX arrays and the plain structs the CPU kernels take.
#pragma once

#include <vector>

#include "cpu/fp4_gemm_kernels.h"
#include <initializer_list>

#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"

namespace marlin::cpu {

namespace mx = mlx::core;

ElemType elem_type(mx::Dtype t);

// View of expert `expert` of a packed weight (leading_dims = 0 for a single matrix).
PackedWeight packed_weight_view(const mx::array& words, const mx::array& scales, int group_size, int64_t expert);

// Returns `data` as fp32: the pointer itself for float32, otherwise a converted copy
// held in `storage`.
const float* as_float32(const void* data, mx::Dtype type, int64_t count, std::vector<float>& storage);

void store_from_float32(const float* src, void* dst, ElemType type, int64_t count);

// The start of every eval_cpu: allocates the outputs and registers inputs and outputs
// with the stream's CPU command encoder, which the caller then dispatches on.
mx::cpu::CommandEncoder& begin_cpu_eval(mx::Stream s, const std::vector<mx::array>& inputs,
                                        std::initializer_list<mx::array*> outputs);

} // namespace marlin::cpu
