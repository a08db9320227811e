// Attention::eval_gpu for MLX's CUDA backend: plans with plan_cuda_attention
// (cpp/common/attention_plan.h) and records the kernels of attention_kernels.cu on
// MLX's command encoder.  Plain C++ (nvcc's front end rejects parts of MLX's ops.h).
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "cuda/attention_launch.h"
#include "cuda/cuda_host.h"
#include "cuda/tma.h"
#include "mlx/backend/cuda/device.h"
#include "mlx/backend/cuda/utils.h"
#include "ops/attention.h"

namespace marlin {

namespace {

const char* kOp = "attention";

// MLX_MARLIN_CUDA_ATTN=<index into kCudaAttnConfigs> forces an MMA configuration
// (benchmarks); read at every call so one process can compare them.
int config_override() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_ATTN");
  if (!v || !v[0]) return -1;
  return std::atoi(v);
}

// Device address of an input; empty arrays (Lk = 0) may have no buffer at all.
const void* data_ptr(const mx::array& a) {
  return a.size() == 0 ? nullptr : mx::gpu_ptr<void>(a);
}

// What the MMA kernel's 16-byte cp.async rows need: unit feature stride, every other
// stride a multiple of 8 elements, a 16-byte aligned base.
bool rows_aligned(const mx::array& a) {
  const auto& st = a.strides();
  return st[3] == 1 && st[0] % 8 == 0 && st[1] % 8 == 0 && st[2] % 8 == 0 && cuda::aligned16(data_ptr(a));
}

// Right-aligned to [B, Hq, Lq, Lk]; broadcast (size-1 or missing) dims get stride 0.
void mask_strides(const mx::array& m, int64_t* out) {
  const int nd = m.ndim();
  for (int i = 0; i < 4; ++i) {
    const int src = nd - 4 + i;
    out[i] = (src >= 0 && m.shape(src) != 1) ? static_cast<int64_t>(m.strides()[src]) : 0;
  }
}

mx::array scratch(int64_t n, mx::cu::CommandEncoder& enc) {
  if (n > INT32_MAX) throw std::invalid_argument("[attention] split-K scratch too large");
  mx::array a({static_cast<int>(n)}, mx::float32, nullptr, {});
  cuda::allocate_on_device(a, enc);
  cuda::poison(a, enc, kOp);  // tests: every partial the merge reads must be written
  enc.add_temporary(a);
  return a;
}

// MLX_MARLIN_CUDA_ATTN_MERGE=kernel: the tensor-core kernel's split-K partials are
// merged by the separate merge kernel, as after the SIMT kernel (A/B in benchmarks and
// tests); read at every call.
// MLX_MARLIN_CUDA_ATTN_PERSISTENT=0|1 forces the Wgmma kernel's form (A/B in benchmarks
// and tests); read at every call.
bool wgmma_persistent() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_ATTN_PERSISTENT");
  if (!v || !v[0]) return kCudaAttnWgmmaPersistent;
  return std::string(v) != "0";
}

bool separate_merge_kernel() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_ATTN_MERGE");
  return v && std::string(v) == "kernel";
}

} // namespace

void Attention::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  // marlin::attention hands calls with sinks to MLX's sdpa on CUDA; these kernels never see them.
  if (has_sinks()) throw std::logic_error("[attention] the CUDA kernels take no attention sinks");
  auto& s = stream();
  auto& enc = mx::cu::get_command_encoder(s);
  const auto& q = inputs[0];
  const auto& k = inputs[1];
  const auto& v = inputs[2];
  cuda::allocate_on_device(out, enc);
  if (out.size() == 0) return;
  cuda::poison(out, enc, kOp);

  const int B = q.shape(0), Hq = q.shape(1), Lq = q.shape(2), D = q.shape(3);
  const int Hkv = k.shape(1), Lk = k.shape(2);
  const cuda::ElemType t = cuda::elem_type(q.dtype(), kOp, "q");
  const bool has_mask_array = mask_ == AttentionMask::Bool || mask_ == AttentionMask::Additive;
  const bool aligned = rows_aligned(q) && rows_aligned(k) && rows_aligned(v);
  const bool half = t != cuda::ElemType::Float32;
  CudaAttentionPlan p = plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, cuda::sm_count(enc.device()),
                                            config_override(), cuda::wgmma_device(enc.device()), has_mask_array,
                                            wgmma_persistent());
  // The Wgmma kernel reads q/k/v through TMA tensor maps; where TMA cannot address them
  // (e.g. broadcast strides), plan without it.
  CUtensorMap maps[3] = {};
  if (p.kernel == CudaAttentionKernel::Wgmma) {
    const bool f16 = t == cuda::ElemType::Float16;
    int64_t qs[4], ks[4], vs[4];
    for (int i = 0; i < 4; ++i) {
      qs[i] = q.strides()[i];
      ks[i] = k.strides()[i];
      vs[i] = v.strides()[i];
    }
    const bool ok = cuda::encode_rows_tma(&maps[0], data_ptr(q), f16, B, Hq, Lq, D, qs, kCudaAttnWgmmaRows) &&
                    (Lk == 0 || (cuda::encode_rows_tma(&maps[1], data_ptr(k), f16, B, Hkv, Lk, D, ks, kCudaAttnWgmmaKeys) &&
                                 cuda::encode_rows_tma(&maps[2], data_ptr(v), f16, B, Hkv, Lk, D, vs, kCudaAttnWgmmaKeys)));
    if (!ok) p = plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, cuda::sm_count(enc.device()), config_override());
  }

  cuda::AttnArgs a{};
  a.q = data_ptr(q);
  a.k = data_ptr(k);
  a.v = data_ptr(v);
  a.mask = has_mask_array ? data_ptr(inputs[3]) : nullptr;
  a.out = mx::gpu_ptr<void>(out);
  for (int i = 0; i < 4; ++i) {
    a.q_stride[i] = q.strides()[i];
    a.k_stride[i] = k.strides()[i];
    a.v_stride[i] = v.strides()[i];
  }
  if (has_mask_array) mask_strides(inputs[3], a.mask_stride);
  a.keys_per_split = p.keys_per_split;
  a.B = B;
  a.Hq = Hq;
  a.Hkv = Hkv;
  a.Lq = Lq;
  a.Lk = Lk;
  a.G = Hq / Hkv;
  a.heads_per_block = p.heads_per_block;
  a.block_q = p.block_q;
  a.head_blocks = p.head_blocks;
  a.query_blocks = p.query_blocks;
  a.splits = p.splits;
  a.mask_kind = static_cast<int>(mask_);
  a.mask_type = kAttnMaskF32;
  if (mask_ == AttentionMask::Additive) {
    const auto mt = inputs[3].dtype();
    a.mask_type = mt == mx::float16 ? kAttnMaskF16 : mt == mx::bfloat16 ? kAttnMaskBF16 : kAttnMaskF32;
  }
  a.scale_log2 = static_cast<float>(scale_ * 1.4426950408889634);

  enc.device().make_current();
  void* fn = p.kernel == CudaAttentionKernel::Mma     ? cuda::attention_mma_kernel(p.variant, D, t, p.smem)
             : p.kernel == CudaAttentionKernel::Wgmma ? cuda::attention_wgmma_kernel(D, t, p.smem, p.persistent)
                                                      : cuda::attention_simt_kernel(D, t);
  if (!fn) throw std::logic_error("[attention] no CUDA kernel for this plan (D = " + std::to_string(D) + ")");

  for (const auto& in : inputs) enc.set_input_array(in);
  mx::array part = q;  // placeholder unless split-K
  const int64_t rows_out = int64_t(B) * Hq * Lq;
  if (p.splits > 1) {
    // One allocation for both partial arrays (every allocation costs host time per call).
    const int64_t n_o = rows_out * p.splits * D;
    part = scratch(n_o + rows_out * p.splits * 2, enc);
    a.part_o = mx::gpu_ptr<float>(part);
    a.part_ml = a.part_o + n_o;  // D % 4 == 0: stays 16-byte aligned
    enc.set_output_array(part);
  }
  if (p.splits > 1 && p.kernel == CudaAttentionKernel::Mma && !separate_merge_kernel())
    a.split_counters = cuda::split_counters(enc, int64_t(p.grid_x) * p.grid_y, kOp);
  const bool fused_merge = a.split_counters != nullptr;
  if (p.splits == 1 || fused_merge) enc.set_output_array(out);
  void* params[] = {&a, &maps[0], &maps[1], &maps[2]};  // the tensor maps: Wgmma only
  enc.add_kernel_node_raw(static_cast<CUfunction>(fn), dim3(p.grid_x, p.grid_y, p.grid_z), dim3(p.threads), dim3(1, 1, 1),
                          p.smem, params);
  if (p.splits > 1 && !fused_merge) {
    void* merge = cuda::attention_merge_kernel(D, t);
    if (!merge) throw std::logic_error("[attention] no CUDA merge kernel");
    if (rows_out > INT32_MAX) throw std::invalid_argument("[attention] too many rows for one merge launch");
    enc.set_input_array(part);
    enc.set_output_array(out);
    const int64_t merge_blocks = (rows_out + cuda::kAttnMergeGroups - 1) / cuda::kAttnMergeGroups;
    enc.add_kernel_node_raw(static_cast<CUfunction>(merge), dim3(static_cast<unsigned>(merge_blocks)),
                            dim3(D / 4, cuda::kAttnMergeGroups), dim3(1, 1, 1), 0, params);
  }
}

} // namespace marlin
