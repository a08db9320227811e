// encode_moe_mlp: route -> group -> gate/up grouped GEMM with act(gate) * up in its
// epilogue -> down grouped GEMM -> weighted combine: five launches, every intermediate
// between them (h, y) in x's dtype.
#include "gpu/moe_mlp.h"

#include <stdexcept>
#include <string>

#include "common/fp4_format.h"
#include "common/moe_params.h"
#include "common/moe_plan.h"
#include "gpu/encode_util.h"
#include "gpu/moe_gemm.h"
#include "gpu/moe_route.h"
#include "ops/validate.h"

namespace marlin::gpu {

void encode_moe_mlp(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out, int top_k,
                    int group_size, Activation activation, bool normalize, bool fused_gate_up) {
  const mx::array& x = inputs[0];
  const mx::array& logits = inputs[1];
  const mx::array& w_gate = inputs[2];
  const mx::array& s_gate = inputs[3];
  const mx::array& w_up = fused_gate_up ? w_gate : inputs[4];
  const mx::array& s_up = fused_gate_up ? s_gate : inputs[5];
  const mx::array& w_down = inputs[inputs.size() - 2];
  const mx::array& s_down = inputs[inputs.size() - 1];
  // x [..., K] and logits [..., E], row-major: T rows each.
  const int T = leading_rows("moe_mlp", "x", x);
  const int K = x.shape(-1);
  const int E = logits.shape(-1);
  const int k = top_k;
  const int I = fused_gate_up ? w_gate.shape(2) / 2 : w_gate.shape(2);
  const int N_out = w_down.shape(2);
  if (T == 0 || N_out == 0) return;
  if (!moe_route_supported(E))
    throw std::invalid_argument("[moe_mlp] the GPU routing kernel takes at most " + std::to_string(kMoeMaxExperts) +
                                " experts, got " + std::to_string(E) + ".");
  if (out.dtype() != x.dtype()) throw std::logic_error("[moe_mlp] the GPU kernels write x's dtype");
  const int P = T * k;
  const GpuDtype xt = gpu_dtype(x.dtype(), "moe_mlp");

  // 1. routing: idx [T, k] uint32, float32 weights (never rounded to the logits' dtype)
  mx::array idx = launcher.scratch({T, k}, mx::uint32);
  mx::array weights = launcher.scratch({T, k}, mx::float32);
  encode_moe_route(launcher, logits, idx, weights, k, normalize);

  // 2. grouping (the tile height depends only on P and E, so it serves both GEMMs)
  MoeGemmParams pg{};
  pg.T = T;
  pg.k = k;
  pg.E = E;
  pg.N = I;  // h columns
  pg.K = K;
  pg.group_size = group_size;
  pg.activation = static_cast<int>(activation);  // on the gate, in the fused epilogue
  pg.shared_x = 1;
  pg.pairs = P;
  pg.weighted = 1;  // grouped output rows
  pg.ld = fused_gate_up ? 2 * I : I;
  pg.up_col = fused_gate_up ? I : 0;
  const GpuMoePlan plan_gu = plan_gpu_moe_glu(P, E, I);
  pg.tile_m = plan_gu.tile.tile_m;
  pg.max_tiles = plan_gu.max_tiles;
  const MoeGrouping grp = encode_moe_group(launcher, idx, pg);

  // 3. h = act(x @ gate) * (x @ up) for every grouped row, one launch for either layout
  //    (the act(gate) * up is the GEMM's epilogue), stored in x's dtype.
  mx::array h = launcher.scratch({P, I}, x.dtype());
  Dispatch g;
  g.kernel = moe_glu_gemm_kernel_name(plan_gu.variant, xt, gpu_dtype(s_gate.dtype(), "moe_mlp"));
  g.threadgroups = {static_cast<uint32_t>(plan_gu.grid_x), static_cast<uint32_t>(plan_gu.max_tiles), 1};
  g.threads_per_group = {static_cast<uint32_t>(plan_gu.threads_per_group), 1, 1};
  launcher.dispatch(g, {KernelArg::input(x), KernelArg::input(w_gate), KernelArg::input(s_gate),
                        KernelArg::input(grp.pairs), KernelArg::input(grp.tiles), KernelArg::input(grp.status),
                        KernelArg::output(h), KernelArg::value(pg), KernelArg::input(w_up), KernelArg::input(s_up)});

  // 4. down projection of the grouped rows (x = h, shared_x = 2): y [P, N_out], x's dtype
  MoeGemmParams pd = pg;
  pd.N = N_out;
  pd.K = I;
  pd.shared_x = 2;
  pd.activation = static_cast<int>(Activation::None);
  pd.ld = N_out;
  pd.up_col = 0;
  const GpuMoePlan plan_d = plan_gpu_moe(P, E, N_out);
  if (plan_d.tile.tile_m != pg.tile_m || plan_d.max_tiles != pg.max_tiles)
    throw std::logic_error("[moe_mlp] the two grouped GEMMs need the same tile list");
  mx::array y = launcher.scratch({P, N_out}, x.dtype());
  Dispatch d;
  d.kernel = moe_gemm_kernel_name(plan_d.variant, xt, gpu_dtype(s_down.dtype(), "moe_mlp"));
  d.threadgroups = {static_cast<uint32_t>(plan_d.grid_x), static_cast<uint32_t>(plan_d.max_tiles), 1};
  d.threads_per_group = {static_cast<uint32_t>(plan_d.threads_per_group), 1, 1};
  launcher.dispatch(d, {KernelArg::input(h), KernelArg::input(w_down), KernelArg::input(s_down),
                        KernelArg::input(grp.pairs), KernelArg::input(grp.tiles), KernelArg::input(grp.status),
                        KernelArg::output(y), KernelArg::value(pd)});

  // 5. weighted combine in slot order (fp32 accumulation)
  Dispatch c;
  c.kernel = moe_combine_kernel_name(xt);
  c.threadgroups = {cdiv(N_out, kMoeCombineThreads), static_cast<uint32_t>(T), 1};
  c.threads_per_group = {kMoeCombineThreads, 1, 1};
  launcher.dispatch(c, {KernelArg::input(y), KernelArg::input(weights), KernelArg::input(grp.position),
                        KernelArg::output(out), KernelArg::value(pd)});
}

} // namespace marlin::gpu
