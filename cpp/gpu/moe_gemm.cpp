// encode_moe_gemm: grouping kernel -> grouped expert GEMM -> (weighted) combine.
#include "gpu/moe_gemm.h"

#include <stdexcept>
#include <string>

#include "common/fp4_format.h"
#include "common/moe_params.h"
#include "common/moe_plan.h"
#include "gpu/encode_util.h"
#include "ops/moe.h"

namespace marlin::gpu {

namespace {
bool is_signed_int(mx::Dtype t) {
  return t == mx::int8 || t == mx::int16 || t == mx::int32 || t == mx::int64;
}

} // namespace

MoeGrouping encode_moe_group(KernelLauncher& launcher, const mx::array& indices, const MoeGemmParams& p) {
  MoeGrouping g{launcher.scratch({p.E + 1}, mx::int32), launcher.scratch({p.pairs}, mx::int32),
                launcher.scratch({p.pairs}, mx::int32), launcher.scratch({p.max_tiles, 4}, mx::int32),
                launcher.scratch({4}, mx::int32)};
  Dispatch d;
  d.kernel = moe_group_kernel_name(static_cast<int>(mx::size_of(indices.dtype()) * 8), is_signed_int(indices.dtype()));
  d.threadgroups = {1, 1, 1};
  d.threads_per_group = {kMoeGroupThreads, 1, 1};
  launcher.dispatch(d, {KernelArg::input(indices), KernelArg::output(g.offsets), KernelArg::output(g.pairs),
                        KernelArg::output(g.position), KernelArg::output(g.tiles), KernelArg::output(g.status),
                        KernelArg::value(p)});
  return g;
}

std::optional<mx::array> encode_moe_gemm(KernelLauncher& launcher, const std::vector<mx::array>& inputs,
                                         mx::array& out, int group_size, Activation activation, bool has_weights) {
  const mx::array& x = inputs[0];
  const mx::array& w = inputs[1];
  const mx::array& scales = inputs[2];
  const mx::array& indices = inputs[3];
  MoeGemmParams p{};
  const MoeGemmLayout layout = moe_gemm_layout(x, indices);
  p.T = layout.T;
  p.k = layout.k;
  p.E = w.shape(0);
  p.N = w.shape(2);
  p.K = w.shape(1) * kCodesPerWord;
  p.group_size = group_size;
  p.activation = static_cast<int>(activation);
  p.shared_x = layout.shared_x ? 1 : 0;
  p.pairs = p.T * p.k;
  p.weighted = has_weights ? 1 : 0;
  p.ld = p.N;
  p.up_col = 0;
  if (p.T == 0 || p.N == 0) return std::nullopt;
  const GpuDtype xt = gpu_dtype(x.dtype(), "moe_gemm");
  const GpuDtype st = gpu_dtype(scales.dtype(), "moe_gemm");
  if (out.dtype() != x.dtype()) throw std::logic_error("[moe_gemm] the GPU kernels write x's dtype");

  if (p.pairs == 0) {  // k = 0: a weighted combine of nothing is zero
    if (!has_weights) return std::nullopt;
    Dispatch c;
    c.kernel = moe_combine_kernel_name(gpu_dtype(out.dtype(), "moe_gemm"));
    c.threadgroups = {cdiv(p.N, kMoeCombineThreads), static_cast<uint32_t>(p.T), 1};
    c.threads_per_group = {kMoeCombineThreads, 1, 1};
    launcher.dispatch(c, {KernelArg::input(x), KernelArg::input(x), KernelArg::input(x), KernelArg::output(out),
                          KernelArg::value(p)});
    return std::nullopt;
  }

  const GpuMoePlan plan = plan_gpu_moe(p.pairs, p.E, p.N);
  p.tile_m = plan.tile.tile_m;
  p.max_tiles = plan.max_tiles;

  const MoeGrouping grp = encode_moe_group(launcher, indices, p);

  // Unweighted: rows land in out [T, k, N] at their pair row; weighted: grouped rows of
  // y [P, N] for the combine, stored in x's dtype like out (bfloat16 activations stay
  // bfloat16 between the launches; the combine accumulates in fp32).
  std::optional<mx::array> y;
  if (has_weights) y = launcher.scratch({p.pairs, p.N}, x.dtype());
  mx::array& gemm_out = has_weights ? *y : out;
  Dispatch m;
  m.kernel = moe_gemm_kernel_name(plan.variant, xt, st);
  m.threadgroups = {static_cast<uint32_t>(plan.grid_x), static_cast<uint32_t>(plan.max_tiles), 1};
  m.threads_per_group = {static_cast<uint32_t>(plan.threads_per_group), 1, 1};
  launcher.dispatch(m, {KernelArg::input(x), KernelArg::input(w), KernelArg::input(scales), KernelArg::input(grp.pairs),
                        KernelArg::input(grp.tiles), KernelArg::input(grp.status), KernelArg::output(gemm_out),
                        KernelArg::value(p)});

  if (has_weights) {
    Dispatch c;
    c.kernel = moe_combine_kernel_name(gpu_dtype(out.dtype(), "moe_gemm"));
    c.threadgroups = {cdiv(p.N, kMoeCombineThreads), static_cast<uint32_t>(p.T), 1};
    c.threads_per_group = {kMoeCombineThreads, 1, 1};
    launcher.dispatch(c, {KernelArg::input(*y), KernelArg::input(inputs[4]), KernelArg::input(grp.position),
                          KernelArg::output(out), KernelArg::value(p)});
  }
  return grp.status;
}

} // namespace marlin::gpu
