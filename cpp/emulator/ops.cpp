// eval_cpu of the op primitives in a Metal-emulator build (MLX_MARLIN_METAL_EMULATOR):
// the GPU encoders (cpp/gpu/) run on the emulator, so the op tests exercise the .metal
// kernels.  fp4_gemm, attention and moe_route run here; moe_gemm / moe_mlp keep
// their CPU eval (no Metal kernels yet), as does moe_route with more than 256 experts.
#include "emulator/emulator_launcher.h"
#include "gpu/attention.h"
#include "gpu/fp4_gemm.h"
#include "gpu/moe_route.h"
#include "ops/attention.h"
#include "ops/fp4_gemm.h"
#include "ops/moe.h"

namespace marlin::emulator {

void eval_fp4_gemm(FP4Gemm& op, const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs = {out};
  run_on_emulator(op.stream(), outs, [&](gpu::KernelLauncher& l) {
    gpu::encode_fp4_gemm(l, inputs, out, op.group_size(), op.activation(), op.transpose());
  });
}

void eval_attention(Attention& op, const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs = {out};
  run_on_emulator(op.stream(), outs, [&](gpu::KernelLauncher& l) {
    gpu::encode_attention(l, inputs, out, op.scale(), op.mask());
  });
}

bool eval_moe_route(MoeRoute& op, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  if (!gpu::moe_route_supported(inputs[0].shape(1))) return false;
  run_on_emulator(op.stream(), outputs, [&](gpu::KernelLauncher& l) {
    gpu::encode_moe_route(l, inputs[0], outputs[0], outputs[1], op.top_k(), op.normalize());
  });
  return true;
}

} // namespace marlin::emulator
