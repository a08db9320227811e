// encode_moe_mlp: route -> group -> gate/up grouped GEMM -> act(gate) * up -> down
// grouped GEMM -> weighted combine, from the existing MoE encoders and kernels.
#include "gpu/moe_mlp.h"

#include <optional>
#include <stdexcept>
#include <string>

#include "common/fp4_format.h"
#include "common/moe_params.h"
#include "common/moe_plan.h"
#include "gpu/encode_util.h"
#include "gpu/moe_gemm.h"
#include "gpu/moe_route.h"

namespace marlin::gpu {

namespace {
// One grouped GEMM over the grouping `grp`, writing float32 grouped rows y [P, N].
void grouped_gemm(KernelLauncher& launcher, const MoeGemmParams& p, const GpuMoePlan& plan, const mx::array& x,
                  const mx::array& w, const mx::array& scales, const MoeGrouping& grp, mx::array& y) {
  Dispatch m;
  m.kernel = moe_gemm_kernel_name(plan.variant, gpu_dtype(x.dtype(), "moe_mlp"), gpu_dtype(scales.dtype(), "moe_mlp"),
                                  GpuDtype::Float32);
  m.threadgroups = {static_cast<uint32_t>(plan.grid_x), static_cast<uint32_t>(plan.max_tiles), 1};
  m.threads_per_group = {static_cast<uint32_t>(plan.threads_per_group), 1, 1};
  launcher.dispatch(m, {KernelArg::input(x), KernelArg::input(w), KernelArg::input(scales), KernelArg::input(grp.pairs),
                        KernelArg::input(grp.tiles), KernelArg::input(grp.status), KernelArg::output(y),
                        KernelArg::value(p)});
}
} // namespace

void encode_moe_mlp(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out, int top_k,
                    int group_size, Activation activation, bool normalize, bool fused_gate_up) {
  const mx::array& x = inputs[0];
  const mx::array& logits = inputs[1];
  const mx::array& w_gate = inputs[2];
  const mx::array& s_gate = inputs[3];
  const mx::array& w_down = inputs[inputs.size() - 2];
  const mx::array& s_down = inputs[inputs.size() - 1];
  const int T = x.shape(0);
  const int K = x.shape(1);
  const int E = logits.shape(1);
  const int k = top_k;
  const int I = fused_gate_up ? w_gate.shape(2) / 2 : w_gate.shape(2);
  const int N_out = w_down.shape(2);
  if (T == 0 || N_out == 0) return;
  if (!moe_route_supported(E))
    throw std::invalid_argument("[moe_mlp] the GPU routing kernel takes at most " + std::to_string(kMoeMaxExperts) +
                                " experts, got " + std::to_string(E) + ".");
  const int P = T * k;

  // 1. routing: idx [T, k] uint32, float32 weights (never rounded to the logits' dtype)
  mx::array idx = launcher.scratch({T, k}, mx::uint32);
  mx::array weights = launcher.scratch({T, k}, mx::float32);
  encode_moe_route(launcher, logits, idx, weights, k, normalize);

  // 2. grouping (the tile height depends only on P and E, so it serves both GEMMs)
  MoeGemmParams pg{};
  pg.T = T;
  pg.k = k;
  pg.E = E;
  pg.K = K;
  pg.group_size = group_size;
  pg.activation = static_cast<int>(Activation::None);
  pg.shared_x = 1;
  pg.pairs = P;
  pg.weighted = 1;
  pg.N = fused_gate_up ? 2 * I : I;
  const GpuMoePlan plan_gu = plan_gpu_moe(P, E, pg.N);
  pg.tile_m = plan_gu.tile.tile_m;
  pg.max_tiles = plan_gu.max_tiles;
  const MoeGrouping grp = encode_moe_group(launcher, idx, pg);

  // 3. gate / up (or [gate | up]) for every grouped row, float32
  mx::array gu = launcher.scratch({P, pg.N}, mx::float32);
  grouped_gemm(launcher, pg, plan_gu, x, w_gate, s_gate, grp, gu);
  MoeGluParams pa{};
  pa.rows = P;
  pa.I = I;
  pa.gate_stride = pg.N;
  pa.activation = static_cast<int>(activation);
  std::optional<mx::array> up;
  if (fused_gate_up) {
    pa.up_stride = 2 * I;
    pa.up_offset = I;
  } else {
    up = launcher.scratch({P, I}, mx::float32);
    grouped_gemm(launcher, pg, plan_gu, x, inputs[4], inputs[5], grp, *up);
    pa.up_stride = I;
    pa.up_offset = 0;
  }

  // 4. h = act(gate) * up
  mx::array h = launcher.scratch({P, I}, mx::float32);
  Dispatch a;
  a.kernel = moe_glu_kernel_name();
  a.threadgroups = {cdiv(I, kMoeCombineThreads), static_cast<uint32_t>(P), 1};
  a.threads_per_group = {kMoeCombineThreads, 1, 1};
  launcher.dispatch(a, {KernelArg::input(gu), KernelArg::input(fused_gate_up ? gu : *up), KernelArg::output(h),
                        KernelArg::value(pa)});

  // 5. down projection of the grouped rows (x = h, shared_x = 2), float32
  MoeGemmParams pd = pg;
  pd.N = N_out;
  pd.K = I;
  pd.shared_x = 2;
  const GpuMoePlan plan_d = plan_gpu_moe(P, E, N_out);
  if (plan_d.tile.tile_m != pg.tile_m || plan_d.max_tiles != pg.max_tiles)
    throw std::logic_error("[moe_mlp] the two grouped GEMMs need the same tile list");
  mx::array y = launcher.scratch({P, N_out}, mx::float32);
  grouped_gemm(launcher, pd, plan_d, h, w_down, s_down, grp, y);

  // 6. weighted combine in slot order
  Dispatch c;
  c.kernel = moe_combine_kernel_name(gpu_dtype(out.dtype(), "moe_mlp"));
  c.threadgroups = {cdiv(N_out, kMoeCombineThreads), static_cast<uint32_t>(T), 1};
  c.threads_per_group = {kMoeCombineThreads, 1, 1};
  launcher.dispatch(c, {KernelArg::input(y), KernelArg::input(weights), KernelArg::input(grp.position),
                        KernelArg::output(out), KernelArg::value(pd)});
}

} // namespace marlin::gpu
