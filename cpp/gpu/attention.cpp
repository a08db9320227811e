// encode_attention: plan (cpp/common/attention_plan.h) -> AttentionParams
// (cpp/common/attention_params.h) -> kernel dispatches of metal/attention.metal.
// Shared by the Metal backend and the Metal emulator; no backend headers here.
//
//   plan.splits == 1:  attention_prefill  grid (num_tasks), 32 * ceil(rows / 8) threads
//                      buffers q, k, v, mask, out, params, sinks
//   plan.splits  > 1:  attention_decode   same grid; buffers q, k, v, mask, part_o, part_ml, params
//                      attention_merge    grid (num_tasks / splits, rows), 32 threads;
//                                         buffers part_o, part_ml, out, params, sinks
// part_o [num_tasks * rows * D] and part_ml [num_tasks * rows * 2] are fp32 scratch.
#include "gpu/attention.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "gpu/encode_util.h"

namespace marlin::gpu {

namespace {

int mask_type(mx::Dtype t) {
  if (t == mx::float16) return kAttnMaskF16;
  if (t == mx::bfloat16) return kAttnMaskBF16;
  return kAttnMaskF32;
}

// Right-aligned to 4 dims; broadcast (size-1 or missing) dims get stride 0.
void strides4(const mx::array& a, marlin_i64* out) {
  const int nd = a.ndim();
  for (int i = 0; i < 4; ++i) {
    const int src = nd - 4 + i;
    out[i] = (src >= 0 && a.shape(src) != 1) ? static_cast<marlin_i64>(a.strides()[src]) : 0;
  }
}

uint32_t u32(int64_t v) {
  if (v < 0 || v > int64_t(UINT32_MAX)) throw std::invalid_argument("[attention] grid too large for one dispatch");
  return static_cast<uint32_t>(v);
}

} // namespace

void encode_attention(KernelLauncher& launcher, const std::vector<mx::array>& inputs, mx::array& out, float scale,
                      AttentionMask mask, const mx::array* sinks) {
  const mx::array& q = inputs[0];
  const mx::array& k = inputs[1];
  const mx::array& v = inputs[2];
  if (out.size() == 0) return;
  const int B = q.shape(0), Hq = q.shape(1), Lq = q.shape(2), D = q.shape(3);
  const int Hkv = k.shape(1), Lk = k.shape(2);
  const GpuDtype dt = gpu_dtype(q.dtype(), "attention");
  const AttentionPlan plan = plan_attention(B, Hq, Hkv, Lq, Lk, launcher.parallel_units());

  AttentionParams p{};
  for (int i = 0; i < 4; ++i) {
    p.q_stride[i] = q.strides()[i];
    p.k_stride[i] = k.strides()[i];
    p.v_stride[i] = v.strides()[i];
  }
  p.keys_per_split = plan.keys_per_split;
  p.B = B;
  p.Hq = Hq;
  p.Hkv = Hkv;
  p.Lq = Lq;
  p.Lk = Lk;
  p.heads_per_task = plan.heads_per_task;
  p.head_blocks = plan.head_blocks;
  p.block_q = plan.block_q;
  p.query_blocks = plan.query_blocks;
  p.rows = plan.rows;
  p.splits = plan.splits;
  p.mask_kind = static_cast<int>(mask);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  const bool has_mask_array = mask == AttentionMask::Bool || mask == AttentionMask::Additive;
  if (has_mask_array) {
    strides4(inputs[3], p.mask_stride);
    if (mask == AttentionMask::Additive) p.mask_type = mask_type(inputs[3].dtype());
  }
  // Without a mask array (sinks) the kernels never read that buffer; q stands in so every
  // slot is bound.
  const mx::array& mask_arr = has_mask_array ? inputs[3] : q;
  p.has_sinks = sinks != nullptr;
  const mx::array& sinks_arr = sinks ? *sinks : q;

  const uint32_t threads = 32u * static_cast<uint32_t>((plan.rows + kAttnRowsPerSimdgroup - 1) / kAttnRowsPerSimdgroup);
  Dispatch d;
  d.threadgroups = {u32(plan.num_tasks), 1, 1};
  d.threads_per_group = {threads, 1, 1};
  if (plan.splits == 1) {
    d.kernel = attention_kernel_name(AttentionKernel::Prefill, D, dt);
    launcher.dispatch(d, {KernelArg::input(q), KernelArg::input(k), KernelArg::input(v), KernelArg::input(mask_arr),
                          KernelArg::output(out), KernelArg::value(p), KernelArg::input(sinks_arr)});
    return;
  }
  mx::array part_o = launcher.scratch({static_cast<int>(plan.num_tasks * plan.rows * D)}, mx::float32);
  mx::array part_ml = launcher.scratch({static_cast<int>(plan.num_tasks * plan.rows * 2)}, mx::float32);
  d.kernel = attention_kernel_name(AttentionKernel::Decode, D, dt);
  launcher.dispatch(d, {KernelArg::input(q), KernelArg::input(k), KernelArg::input(v), KernelArg::input(mask_arr),
                        KernelArg::output(part_o), KernelArg::output(part_ml), KernelArg::value(p)});
  Dispatch m;
  m.kernel = attention_kernel_name(AttentionKernel::Merge, D, dt);
  m.threadgroups = {u32(plan.num_tasks / plan.splits), static_cast<uint32_t>(plan.rows), 1};
  m.threads_per_group = {32, 1, 1};
  launcher.dispatch(m, {KernelArg::input(part_o), KernelArg::input(part_ml), KernelArg::output(out),
                        KernelArg::value(p), KernelArg::input(sinks_arr)});
}

} // namespace marlin::gpu
