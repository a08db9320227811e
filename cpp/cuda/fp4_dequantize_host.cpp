// FP4Dequantize::eval_gpu for MLX's CUDA backend (see ops/fp4_dequantize.h for why).
#include <stdexcept>

#include "common/fp4_format.h"
#include "cuda/cuda_host.h"
#include "cuda/fp4_dequantize_launch.h"
#include "mlx/backend/cuda/device.h"
#include "mlx/backend/cuda/utils.h"
#include "ops/fp4_dequantize.h"

namespace marlin {

void FP4Dequantize::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const char* op = "fp4_dequantize";
  auto& enc = mx::cu::get_command_encoder(stream());
  const auto& w = inputs[0];
  const auto& sc = inputs[1];
  cuda::allocate_on_device(out, enc);
  if (out.size() == 0) return;
  cuda::poison(out, enc, op);
  for (const auto& in : inputs) enc.set_input_array(in);
  enc.set_output_array(out);

  cuda::DequantArgs args{};
  args.w = static_cast<const uint32_t*>(mx::gpu_ptr<void>(w));
  args.scales = mx::gpu_ptr<void>(sc);
  args.out = mx::gpu_ptr<void>(out);
  args.N = w.shape(1);
  args.K = w.shape(0) * kCodesPerWord;
  args.group_size = group_size_;
  args.vector_ok = args.N % 4 == 0 && cuda::aligned16(args.w) && cuda::aligned16(args.out) &&
      (reinterpret_cast<uintptr_t>(args.scales) & 7u) == 0;

  void* fn = cuda::fp4_dequantize_kernel(cuda::elem_type(out.dtype(), op, "dtype"), cuda::elem_type(sc.dtype(), op, "scales"));
  if (!fn) throw std::logic_error("[fp4_dequantize] no CUDA kernel for these dtypes");
  const int64_t threads = static_cast<int64_t>(args.K / kCodesPerWord) * ((args.N + 3) / 4);
  const unsigned blocks = static_cast<unsigned>((threads + cuda::kDequantThreads - 1) / cuda::kDequantThreads);
  enc.device().make_current();
  void* params[] = {&args};
  enc.add_kernel_node_raw(static_cast<CUfunction>(fn), dim3(blocks), dim3(cuda::kDequantThreads), dim3(1, 1, 1), 0, params);
}

} // namespace marlin
