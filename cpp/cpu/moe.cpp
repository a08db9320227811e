// CPU evaluation of the MoE primitives.  Every op follows the same plan:
//   1. group the (token, slot) pairs by expert (counting sort, common/moe_plan.h);
//   2. gather each expert's input rows into one contiguous fp32 panel;
//   3. one call of the CPU FP4 GEMM kernel per active expert (its weights are read
//      once per call, however many tokens chose it);
//   4. scatter back to (token, slot) order, or combine with the routing weights.
// Work is spread over the thread pool by the GEMM kernel itself or, for many small
// expert GEMMs, across experts (plan_cpu_moe).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/fp4_format.h"
#include "common/moe_plan.h"
#include "cpu/expert_grouping.h"
#include "cpu/tensor_view.h"
#include "mlx/backend/cpu/encoder.h"
#include "ops/moe.h"
#include "ops/validate.h"

namespace marlin {

namespace {

// Views of every expert of an [E, K/8, N] weight.
std::vector<cpu::PackedWeight> expert_views(const mx::array& words, const mx::array& scales, int group_size) {
  std::vector<cpu::PackedWeight> v;
  const int E = words.shape(0);
  v.reserve(E);
  for (int e = 0; e < E; ++e) v.push_back(cpu::packed_weight_view(words, scales, group_size, e));
  return v;
}

// Routes T tokens (logits [T, E] fp32) in parallel: idx/weight [T, k].
void route_tokens(const float* logits, int64_t T, int E, int k, bool normalize, uint32_t* idx, float* weight) {
  constexpr int64_t kPerTask = 8;
  cpu::parallel_for(static_cast<int>((T + kPerTask - 1) / kPerTask), [&](int task) {
    std::vector<int> scratch;
    const int64_t end = std::min<int64_t>(T, (task + 1) * kPerTask);
    for (int64_t t = task * kPerTask; t < end; ++t)
      route_token(logits + t * E, E, k, normalize, idx + t * k, weight + t * k, scratch);
  });
}

// MLX_MARLIN_MOE_PROFILE=1: per-call phase times (wall, us) on stderr; off by default.
struct PhaseTimer {
  bool on;
  const char* op;
  std::chrono::steady_clock::time_point t;
  char buf[512];
  int len = 0;
  explicit PhaseTimer(const char* name) : on(enabled()), op(name), t(std::chrono::steady_clock::now()) {}
  static bool enabled() {
    static const bool e = [] {
      const char* v = std::getenv("MLX_MARLIN_MOE_PROFILE");
      return v && *v && *v != '0';
    }();
    return e;
  }
  void mark(const char* phase) {
    if (!on) return;
    auto now = std::chrono::steady_clock::now();
    double us = std::chrono::duration<double, std::micro>(now - t).count();
    t = now;
    len += std::snprintf(buf + len, sizeof(buf) - len, " %s=%.0f", phase, us);
    if (len >= int(sizeof(buf))) len = sizeof(buf) - 1;
  }
  ~PhaseTimer() {
    if (on) std::fprintf(stderr, "[moe-profile] %s:%s\n", op, buf);
  }
};

// Uninitialized fp32 scratch from MLX's allocator: its buffer cache hands back the
// pages of an earlier call, where a std::vector would zero-fill (and, for large sizes,
// page-fault in) fresh memory on every call.
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : data_(mx::allocator::malloc(std::max<int64_t>(1, n) * sizeof(float))),
        ptr_(static_cast<float*>(data_.buffer().raw_ptr())) {}
  float* data() const { return ptr_; }

 private:
  mx::allocator::Data data_;  // returned to MLX's cache on destruction
  float* ptr_;
};

} // namespace

// ------------------------------------------------------------------ MoeRoute
#if defined(MLX_MARLIN_METAL_EMULATOR)
namespace emulator {
// emulator/ops.cpp; false when the Metal kernels do not take this shape (E > 256).
bool eval_moe_route(MoeRoute& op, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs);
}
#endif

void MoeRoute::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
#if defined(MLX_MARLIN_METAL_EMULATOR)
  // Emulator build: the Metal routing kernel runs here, on the CPU stream (docs/metal.md).
  if (emulator::eval_moe_route(*this, inputs, outputs)) return;
#endif
  cpu::begin_cpu_eval(stream(), inputs, {&outputs[0], &outputs[1]});
  const auto& logits = inputs[0];  // [..., E], row-major: T rows
  const int64_t T = leading_rows("moe_route", "logits", logits);
  const int E = logits.shape(-1);
  const int k = top_k_;
  const bool normalize = normalize_;
  const mx::Dtype in_type = logits.dtype();
  const void* in_ptr = logits.data<void>();
  uint32_t* idx_ptr = outputs[0].data<uint32_t>();
  void* w_ptr = outputs[1].data<void>();
  const cpu::ElemType w_type = cpu::elem_type(outputs[1].dtype());

  mx::cpu::get_command_encoder(stream()).dispatch([=]() {
    std::vector<float> l_storage;
    const float* l32 = cpu::as_float32(in_ptr, in_type, T * E, l_storage);
    std::vector<float> w32(T * k);
    route_tokens(l32, T, E, k, normalize, idx_ptr, w32.data());
    cpu::store_from_float32(w32.data(), w_ptr, w_type, T * k);
  });
}

// ------------------------------------------------------------------ MoeGemm
#if defined(MLX_MARLIN_METAL_EMULATOR)
namespace emulator {
void eval_moe_gemm(MoeGemm& op, const std::vector<mx::array>& inputs, mx::array& out);  // emulator/ops.cpp
}
#endif

void MoeGemm::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
#if defined(MLX_MARLIN_METAL_EMULATOR)
  // Emulator build: the Metal kernels run here, on the CPU stream (docs/metal.md).
  emulator::eval_moe_gemm(*this, inputs, out);
  return;
#endif
  cpu::begin_cpu_eval(stream(), inputs, {&out});
  const auto& x = inputs[0];
  const auto& indices = inputs[3];
  const MoeGemmLayout layout = moe_gemm_layout(x, indices);
  const int64_t T = layout.T;
  const int64_t k = layout.k;
  const int E = inputs[1].shape(0);
  const int64_t K = int64_t(inputs[1].shape(1)) * kCodesPerWord;
  const int64_t N = inputs[1].shape(2);
  const bool shared_x = layout.shared_x;
  const mx::Dtype x_type = x.dtype();
  const void* x_ptr = x.data<void>();
  const mx::Dtype idx_type = indices.dtype();
  const void* idx_ptr = indices.data<void>();
  const float* weight_ptr = has_weights_ ? inputs[4].data<float>() : nullptr;
  auto views = expert_views(inputs[1], inputs[2], group_size_);
  void* out_ptr = out.data<void>();
  const cpu::ElemType out_type = cpu::elem_type(out.dtype());
  const Activation act = activation_;

  mx::cpu::get_command_encoder(stream()).dispatch([=, views = std::move(views)]() {
    const int64_t pairs = T * k;
    if (pairs == 0) {
      if (weight_ptr) {
        std::vector<float> zeros(N, 0.f);
        for (int64_t t = 0; t < T; ++t) cpu::store_row(zeros.data(), out_ptr, out_type, t, N);
      }
      return;
    }
    PhaseTimer timer("moe_gemm");
    ExpertGroups groups;
    const int64_t invalid =
        build_expert_groups(pairs, E, [&](int64_t p) { return cpu::read_index(idx_ptr, idx_type, p); }, groups);
    std::vector<float> x_storage;
    const float* x32 = cpu::as_float32(x_ptr, x_type, (shared_x ? T : pairs) * K, x_storage);
    Scratch panel(pairs * K);
    cpu::gather_rows(x32, K, pairs, [&](int64_t i) { return shared_x ? groups.pairs[i] / k : groups.pairs[i]; },
                     panel.data());
    timer.mark("group+gather");
    Scratch y(pairs * N);
    cpu::for_each_active_expert(groups, N, [&](int e) {
      cpu::expert_gemm(groups, e, panel.data(), K, views[e], act, y.data(), N);
    });
    if (invalid) cpu::fill_invalid_rows(groups, y.data(), N);
    timer.mark("gemms");
    if (weight_ptr)
      cpu::combine_pairs(groups, y.data(), N, weight_ptr, T, k, out_ptr, out_type);
    else
      cpu::scatter_pairs(groups, y.data(), N, out_ptr, out_type);
    timer.mark("scatter");
  });
}

// ------------------------------------------------------------------ MoeMlp
#if defined(MLX_MARLIN_METAL_EMULATOR)
namespace emulator {
// emulator/ops.cpp; false when the Metal kernels do not take this shape (E > 256).
bool eval_moe_mlp(MoeMlp& op, const std::vector<mx::array>& inputs, mx::array& out);
}
#endif

void MoeMlp::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
#if defined(MLX_MARLIN_METAL_EMULATOR)
  // Emulator build: the Metal MoE pipeline runs here, on the CPU stream (docs/metal.md).
  if (emulator::eval_moe_mlp(*this, inputs, out)) return;
#endif
  cpu::begin_cpu_eval(stream(), inputs, {&out});
  const auto& x = inputs[0];
  const auto& logits = inputs[1];
  // x [..., K] and logits [..., E], row-major: T rows each.
  const int64_t T = leading_rows("moe_mlp", "x", x);
  const int64_t K = x.shape(-1);
  const int E = logits.shape(-1);
  const int k = top_k_;
  const bool fused = fused_gate_up_;
  const int64_t I = fused ? inputs[2].shape(2) / 2 : inputs[2].shape(2);
  const int64_t N_out = out.shape(-1);
  auto gate = expert_views(inputs[2], inputs[3], group_size_);
  auto up = fused ? std::vector<cpu::PackedWeight>{} : expert_views(inputs[4], inputs[5], group_size_);
  auto down = expert_views(inputs[inputs.size() - 2], inputs[inputs.size() - 1], group_size_);
  const mx::Dtype x_type = x.dtype();
  const void* x_ptr = x.data<void>();
  const mx::Dtype l_type = logits.dtype();
  const void* l_ptr = logits.data<void>();
  void* out_ptr = out.data<void>();
  const cpu::ElemType out_type = cpu::elem_type(out.dtype());
  const Activation act = activation_;
  const bool normalize = normalize_;

  mx::cpu::get_command_encoder(stream()).dispatch(
      [=, gate = std::move(gate), up = std::move(up), down = std::move(down)]() {
        const int64_t pairs = T * k;
        if (pairs == 0) return;
        PhaseTimer timer("moe_mlp");
        // 1. routing (fp32 weights, never rounded to x's dtype)
        std::vector<float> l_storage;
        const float* l32 = cpu::as_float32(l_ptr, l_type, T * E, l_storage);
        std::vector<uint32_t> idx(pairs);
        std::vector<float> weight(pairs);
        route_tokens(l32, T, E, k, normalize, idx.data(), weight.data());
        timer.mark("route");
        // 2. grouping + gather of x rows (each token's row once per chosen expert)
        ExpertGroups groups;
        build_expert_groups(pairs, E, [&](int64_t p) { return int64_t(idx[p]); }, groups);
        std::vector<float> x_storage;
        const float* x32 = cpu::as_float32(x_ptr, x_type, T * K, x_storage);
        Scratch panel(pairs * K);
        cpu::gather_rows(x32, K, pairs, [&](int64_t i) { return groups.pairs[i] / k; }, panel.data());
        timer.mark("group+gather");
        // 3. per expert: [gate | up] = x @ [W_gate | W_up] (fp32, rows 2I apart), then
        //    h = act(gate) * up in place of the gate half, then down = h @ W_down.
        const int64_t gu_stride = 2 * I;
        Scratch gu(pairs * gu_stride);
        Scratch y(pairs * N_out);
        std::atomic<int64_t> t_gu{0}, t_act{0}, t_down{0};
        auto now = [&] { return timer.on ? std::chrono::steady_clock::now().time_since_epoch().count() : 0; };
        cpu::for_each_active_expert(groups, std::max<int64_t>(2 * I, N_out), [&](int e) {
          int64_t c0 = now();
          if (fused) {
            cpu::expert_gemm(groups, e, panel.data(), K, gate[e], Activation::None, gu.data(), gu_stride);
          } else {
            cpu::expert_gemm(groups, e, panel.data(), K, gate[e], Activation::None, gu.data(), gu_stride);
            cpu::expert_gemm(groups, e, panel.data(), K, up[e], Activation::None, gu.data() + I, gu_stride);
          }
          int64_t c1 = now();
          for (int64_t r = groups.offsets[e]; r < groups.offsets[e + 1]; ++r) {
            float* row = gu.data() + r * gu_stride;
            for (int64_t c = 0; c < I; ++c) row[c] = cpu::apply_activation(row[c], act) * row[I + c];
          }
          int64_t c2 = now();
          cpu::expert_gemm(groups, e, gu.data(), gu_stride, down[e], Activation::None, y.data(), N_out);
          int64_t c3 = now();
          t_gu += c1 - c0;
          t_act += c2 - c1;
          t_down += c3 - c2;
        });
        if (timer.on)
          std::fprintf(stderr, "[moe-profile] moe_mlp experts (summed over tasks, us): gate_up=%.0f act=%.0f down=%.0f\n",
                       t_gu * 1e-3, t_act * 1e-3, t_down * 1e-3);
        timer.mark("experts");
        // 4. weighted combine in slot order
        cpu::combine_pairs(groups, y.data(), N_out, weight.data(), T, k, out_ptr, out_type);
        timer.mark("combine");
      });
}

} // namespace marlin
