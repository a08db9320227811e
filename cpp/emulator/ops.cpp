// eval_cpu of the op primitives in a Metal-emulator build (MLX_MARLIN_METAL_EMULATOR):
// the GPU encoders (cpp/gpu/) run on the emulator, so the op tests exercise the .metal
// kernels.  Ops without Metal kernels yet (moe_*, attention) keep their CPU eval.
#include "emulator/emulator_launcher.h"
#include "gpu/fp4_gemm.h"
#include "ops/fp4_gemm.h"

namespace marlin::emulator {

void eval_fp4_gemm(FP4Gemm& op, const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs = {out};
  run_on_emulator(op.stream(), outs, [&](gpu::KernelLauncher& l) {
    gpu::encode_fp4_gemm(l, inputs, out, op.group_size(), op.activation(), op.transpose());
  });
}

} // namespace marlin::emulator
