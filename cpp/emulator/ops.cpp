// eval_cpu of the op primitives in a Metal-emulator build (MLX_MARLIN_METAL_EMULATOR):
// the GPU encoders (cpp/gpu/) run on the emulator, so the op tests exercise the .metal
// kernels: fp4_gemm, moe_gemm, attention, moe_route and moe_mlp (E <= 256 for the last
// two; larger E keeps the CPU eval) run here.
#include <stdexcept>
#include <string>

#include "cpu/expert_grouping.h"
#include "emulator/emulator_launcher.h"
#include "gpu/attention.h"
#include "gpu/fp4_gemm.h"
#include "gpu/moe_mlp.h"
#include "gpu/moe_route.h"
#include "ops/attention.h"
#include "gpu/moe_gemm.h"
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
    gpu::encode_attention(l, inputs, out, op.scale(), op.mask(), attention_sinks(op, inputs));
  });
}

bool eval_moe_route(MoeRoute& op, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  if (!gpu::moe_route_supported(inputs[0].shape(-1))) return false;
  run_on_emulator(op.stream(), outputs, [&](gpu::KernelLauncher& l) {
    gpu::encode_moe_route(l, inputs[0], outputs[0], outputs[1], op.top_k(), op.normalize());
  });
  return true;
}

} // namespace marlin::emulator

namespace marlin::emulator {

void eval_moe_gemm(MoeGemm& op, const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs = {out};
  run_on_emulator(op.stream(), outs, [&](gpu::KernelLauncher& l) {
    // Invalid expert ids give NaN rows from the kernels themselves, as on a Metal GPU
    // and the CPU backend (docs/moe.md).
    gpu::encode_moe_gemm(l, inputs, out, op.group_size(), op.activation(), op.has_weights());
  });
}

} // namespace marlin::emulator

namespace marlin::emulator {

bool eval_moe_mlp(MoeMlp& op, const std::vector<mx::array>& inputs, mx::array& out) {
  if (!gpu::moe_route_supported(inputs[1].shape(-1))) return false;
  std::vector<mx::array> outs = {out};
  run_on_emulator(op.stream(), outs, [&](gpu::KernelLauncher& l) {
    gpu::encode_moe_mlp(l, inputs, out, op.top_k(), op.group_size(), op.activation(), op.normalize(),
                        op.fused_gate_up());
  });
  return true;
}

} // namespace marlin::emulator
