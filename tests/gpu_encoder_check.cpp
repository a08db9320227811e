// Runs the backend-neutral GPU encoders (cpp/gpu/attention.cpp, moe_route.cpp, moe_gemm.cpp,
// moe_mlp.cpp) on the
// Metal-on-CPU emulator through a minimal KernelLauncher, and compares them with the
// CPU backend of the same ops.  Built and run by tests/test_gpu_encoders.py:
//   gpu_encoder_check <emulator module .so>
// Prints one JSON object: {"cases": [[name, max_abs_err, tolerance, dispatches], ...]}.
#include <algorithm>
#include <cmath>
#include <optional>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu/attention.h"
#include "gpu/moe_gemm.h"
#include "gpu/moe_mlp.h"
#include "gpu/moe_route.h"
#include "mlx/mlx.h"
#include "ops/attention.h"
#include "ops/moe.h"
#include "mtlemu/launch.h"

namespace mx = mlx::core;
using namespace marlin;

// Minimal launcher: binds each array at its data pointer with its data extent.
class TestLauncher : public gpu::KernelLauncher {
 public:
  explicit TestLauncher(const mtlemu::Module& m) : mod_(m) {}
  void dispatch(const gpu::Dispatch& d, const std::vector<gpu::KernelArg>& args) override {
    std::vector<mtlemu::Buffer> bufs;
    std::vector<std::vector<char>> values;
    values.reserve(args.size());
    for (const auto& a : args) {
      if (a.array) {
        const mx::array& arr = *a.array;
        bufs.push_back(mtlemu::Buffer{const_cast<void*>(arr.data<void>()), arr.data_size() * arr.itemsize()});
      } else {
        values.emplace_back(static_cast<const char*>(a.bytes), static_cast<const char*>(a.bytes) + a.num_bytes);
        bufs.push_back(mtlemu::Buffer{values.back().data(), a.num_bytes});
      }
    }
    mod_.launch(d.kernel, {d.threadgroups[0], d.threadgroups[1], d.threadgroups[2]},
                {d.threads_per_group[0], d.threads_per_group[1], d.threads_per_group[2]}, bufs, d.threadgroup_bytes, 0);
    ++dispatches;
  }
  mx::array scratch(const mx::Shape& shape, mx::Dtype dtype) override {
    mx::array a = mx::full(shape, std::nanf(""), mx::float32);  // poisoned
    a = mx::view(a, dtype);
    a = mx::reshape(mx::slice(mx::flatten(a), {0}, {int(mx::array(shape, dtype, nullptr, {}).size())}), shape);
    a = mx::contiguous(a);
    a.eval();
    keep_.push_back(a);
    if (dtype == mx::float32) f32_scratch += a.size();
    return a;
  }
  int parallel_units() const override { return 8; }
  int dispatches = 0;
  size_t f32_scratch = 0;  // float32 scratch elements allocated (intermediates' storage)

 private:
  const mtlemu::Module& mod_;
  std::vector<mx::array> keep_;
};

mx::array poisoned(const mx::Shape& shape, mx::Dtype t) {
  mx::array a = mx::astype(mx::full(shape, std::nanf(""), mx::float32), t);
  a.eval();
  return a;
}

float max_err(const mx::array& a, const mx::array& b) {
  mx::array e = mx::max(mx::abs(mx::astype(a, mx::float32) - mx::astype(b, mx::float32)));
  e.eval();
  const float v = e.item<float>();
  return std::isnan(v) ? INFINITY : v;
}

int main(int argc, char** argv) {
  mtlemu::Module mod(argv[1]);
  mx::set_default_device(mx::Device::cpu);
  std::vector<std::string> rows;
  auto report = [&](const std::string& name, float err, float tol, int n) {
    char buf[256];
    std::snprintf(buf, sizeof(buf), "[\"%s\", %.3g, %.3g, %d]", name.c_str(), err, tol, n);
    rows.push_back(buf);
  };
  mx::random::seed(7);
  struct AttnCase {
    const char* name;
    int B, Hq, Hkv, Lq, Lk, D;
    mx::Dtype t;
    int mask;  // 0 none, 1 causal, 2 bool [Lq, Lk], 3 additive [B, 1, 1, Lk]
    bool transposed_kv;
    float tol;
    bool sinks = false;
  };
  const AttnCase cases[] = {
      {"attn_prefill_causal_f16", 1, 4, 1, 13, 37, 64, mx::float16, 1, false, 2e-3f},
      {"attn_prefill_bool_f32_strided_kv", 2, 4, 2, 9, 21, 128, mx::float32, 2, true, 2e-5f},
      {"attn_prefill_additive_bf16", 1, 2, 2, 17, 40, 80, mx::bfloat16, 3, false, 1.6e-2f},
      {"attn_decode_splitk_f32", 1, 8, 2, 2, 600, 96, mx::float32, 0, false, 2e-5f},
      {"attn_decode_splitk_causal_f16", 2, 4, 4, 1, 520, 256, mx::float16, 1, false, 2e-3f},
      {"attn_prefill_sinks_bool_f32", 1, 4, 2, 9, 21, 64, mx::float32, 2, false, 2e-5f, true},
      {"attn_decode_splitk_sinks_bf16", 1, 4, 1, 1, 600, 128, mx::bfloat16, 0, false, 1.6e-2f, true},
  };
  for (const auto& c : cases) {
    mx::array q = mx::astype(mx::random::normal({c.B, c.Hq, c.Lq, c.D}), c.t);
    mx::array k = mx::astype(mx::random::normal({c.B, c.Hkv, c.Lk, c.D}), c.t);
    mx::array v = mx::astype(mx::random::normal({c.B, c.Hkv, c.Lk, c.D}), c.t);
    if (c.transposed_kv) {
      k = mx::transpose(mx::contiguous(mx::transpose(k, {0, 2, 1, 3})), {0, 2, 1, 3});
      v = mx::transpose(mx::contiguous(mx::transpose(v, {0, 2, 1, 3})), {0, 2, 1, 3});
    }
    const float scale = 1.0f / std::sqrt(float(c.D));
    std::vector<mx::array> inputs = {q, k, v};
    AttentionMaskArg marg;
    AttentionMask kind = AttentionMask::None;
    if (c.mask == 1) {
      marg = std::string("causal");
      kind = AttentionMask::Causal;
    } else if (c.mask == 2) {
      mx::array m = mx::random::uniform({c.Lq, c.Lk}) > mx::array(0.3f);
      marg = m;
      inputs.push_back(m);
      kind = AttentionMask::Bool;
    } else if (c.mask == 3) {
      mx::array m = mx::astype(mx::random::normal({c.B, 1, 1, c.Lk}), c.t);
      marg = m;
      inputs.push_back(m);
      kind = AttentionMask::Additive;
    }
    std::optional<mx::array> sinks;
    if (c.sinks) sinks = mx::random::normal({c.Hq}) * mx::array(3.0f);
    mx::array ref = attention(q, k, v, scale, marg, sinks, mx::Device::cpu);
    mx::eval(inputs);
    mx::eval(ref);
    if (sinks) mx::eval(*sinks);
    mx::array out = poisoned({c.B, c.Hq, c.Lq, c.D}, c.t);
    TestLauncher l(mod);
    gpu::encode_attention(l, inputs, out, scale, kind, sinks ? &*sinks : nullptr);
    report(c.name, max_err(out, ref), c.tol, l.dispatches);
  }

  // moe routing on strided logits, then grouping of its output.
  for (auto t : {mx::float32, mx::bfloat16}) {
    const int T = 29, E = 72, k = 6;
    mx::array logits = mx::transpose(mx::contiguous(mx::transpose(mx::astype(mx::random::normal({T, E}), t))));
    mx::eval(logits);
    auto ref = moe_route(logits, k, true, mx::Device::cpu);
    mx::eval({ref.first, ref.second});
    mx::array idx = mx::full({T, k}, 0xFFFFFFFFu, mx::uint32);
    mx::array w = poisoned({T, k}, t);
    mx::eval(idx);
    TestLauncher l(mod);
    gpu::encode_moe_route(l, logits, idx, w, k, true);
    const float idx_err = max_err(idx, ref.first);
    report(std::string("moe_route_idx_") + (t == mx::float32 ? "f32" : "bf16"), idx_err, 0.f, l.dispatches);
    report(std::string("moe_route_w_") + (t == mx::float32 ? "f32" : "bf16"), max_err(w, ref.second),
           t == mx::float32 ? 2e-6f : 8e-3f, l.dispatches);
    // The routing output through encode_moe_gemm (moe_group_u32 -> grouped GEMM ->
    // weighted combine) against the CPU backend's moe_gemm.
    const int K = 64, N = 40, gs = 32;
    mx::array x = mx::astype(mx::random::normal({T, K}), t);
    mx::array wq = mx::random::bits({E, K / 8, N}, 4);
    mx::array sc = mx::astype(mx::random::uniform(0.05f, 0.2f, {E, K / gs, N}), mx::float16);
    mx::array wts = mx::astype(ref.second, mx::float32);
    mx::array ref_out = moe_gemm(x, wq, sc, ref.first, gs, wts, std::string("silu"), mx::Device::cpu);
    mx::eval({x, wq, sc, wts, ref_out});
    mx::array out = poisoned({T, N}, t);
    TestLauncher lg(mod);
    auto status = gpu::encode_moe_gemm(lg, {x, wq, sc, idx, wts}, out, gs, Activation::Silu, true);
    const std::string sfx = t == mx::float32 ? "f32" : "bf16";
    report("moe_gemm_of_route_" + sfx, max_err(out, ref_out), t == mx::float32 ? 1e-3f : 0.1f, lg.dispatches);
    status->eval();
    report("moe_group_status_" + sfx, float(std::abs(status->data<int32_t>()[1])), 0.f, lg.dispatches);
  }
  // moe_mlp (route -> group -> fused gate/up GEMM -> down GEMM -> combine) against the
  // CPU backend, both gate/up layouts; the only float32 scratch of a bf16 / f16 call
  // must be the routing weights [T, k] (h and y stay in x's dtype).
  for (auto t : {mx::float32, mx::bfloat16, mx::float16})
    for (bool fused : {false, true}) {
      const int T = 23, E = 12, k = 3, K = 64, I = 96, N_out = 40, gs = 32;
      auto words = [](mx::Shape s) { return mx::random::bits(s, 4); };
      auto scales = [](mx::Shape s) { return mx::astype(mx::random::uniform(0.02f, 0.06f, s), mx::float16); };
      mx::array x = mx::astype(mx::random::normal({T, K}), t);
      mx::array logits = mx::astype(mx::random::normal({T, E}), t);
      mx::array wg = words({E, K / 8, fused ? 2 * I : I}), sg = scales({E, K / gs, fused ? 2 * I : I});
      mx::array wu = words({E, K / 8, I}), su = scales({E, K / gs, I});
      mx::array wd = words({E, I / 8, N_out}), sd = scales({E, I / gs, N_out});
      std::optional<mx::array> ou, osu;
      if (!fused) ou = wu, osu = su;
      mx::array ref = moe_mlp(x, logits, wg, sg, ou, osu, wd, sd, k, gs, std::string("silu"), true, mx::Device::cpu);
      mx::eval({x, logits, wg, sg, wu, su, wd, sd, ref});
      std::vector<mx::array> in = fused ? std::vector<mx::array>{x, logits, wg, sg, wd, sd}
                                        : std::vector<mx::array>{x, logits, wg, sg, wu, su, wd, sd};
      mx::array out = poisoned({T, N_out}, t);
      TestLauncher l(mod);
      gpu::encode_moe_mlp(l, in, out, k, gs, Activation::Silu, true, fused);
      mx::array scale = mx::max(mx::abs(ref));
      scale.eval();
      const float tol = (t == mx::float32 ? 2e-5f : t == mx::float16 ? 4e-3f : 3.2e-2f) *
          std::max(1.0f, scale.item<float>());
      const std::string name = std::string("moe_mlp_") + (fused ? "fused_" : "separate_") +
          (t == mx::float32 ? "f32" : t == mx::float16 ? "f16" : "bf16");
      report(name, max_err(out, ref), tol, l.dispatches);
      // float32 scratch beyond the routing weights (0 for f16 / bf16; f32 keeps h and y in f32)
      const size_t extra = l.f32_scratch - size_t(T) * k;
      report(name + "_f32_scratch", float(t == mx::float32 ? (extra == size_t(T) * k * (I + N_out) ? 0 : 1) : extra),
             0.f, l.dispatches);
    }

  // Invalid expert ids on the encoder path without a status read-back (Metal): NaN rows,
  // every other row equal to the CPU backend on the same call with the bad ids replaced.
  for (bool weighted : {false, true}) {
    const int T = 9, E = 6, k = 2, K = 64, N = 40, gs = 32;
    mx::array x = mx::astype(mx::random::normal({T, K}), mx::bfloat16);
    mx::array wq = mx::random::bits({E, K / 8, N}, 4);
    mx::array sc = mx::astype(mx::random::uniform(0.05f, 0.2f, {E, K / gs, N}), mx::float16);
    std::vector<int32_t> ids(T * k);
    for (int i = 0; i < T * k; ++i) ids[i] = (i * 7) % E;
    std::vector<int32_t> fixed = ids;
    ids[3] = E;      // token 1
    ids[10] = -1;    // token 5
    ids[11] = 1000;  // token 5
    fixed[3] = fixed[10] = fixed[11] = 0;
    mx::array idx(ids.data(), {T, k}, mx::int32), idx_ok(fixed.data(), {T, k}, mx::int32);
    mx::array wts = mx::random::uniform(0.1f, 1.0f, {T, k});
    std::optional<mx::array> wopt;
    if (weighted) wopt = wts;
    mx::array ref = moe_gemm(x, wq, sc, idx_ok, gs, wopt, std::nullopt, mx::Device::cpu);
    mx::eval({x, wq, sc, idx, idx_ok, wts, ref});
    mx::array out = mx::zeros(ref.shape(), mx::bfloat16);  // not NaN: the kernels must write the NaN rows
    out.eval();
    TestLauncher l(mod);
    std::vector<mx::array> in = {x, wq, sc, idx};
    if (weighted) in.push_back(wts);
    gpu::encode_moe_gemm(l, in, out, gs, Activation::None, weighted);
    // rows: [T, k, N] pairs (unweighted) or [T, N] tokens (weighted)
    mx::array got = mx::reshape(mx::astype(out, mx::float32), {-1, N});
    mx::array want = mx::reshape(mx::astype(ref, mx::float32), {-1, N});
    got.eval();
    want.eval();
    const std::vector<int> bad_rows = weighted ? std::vector<int>{1, 5} : std::vector<int>{3, 10, 11};
    float nan_ok = 1.f, err = 0.f, scale = 1.f;
    const float* g = got.data<float>();
    const float* w = want.data<float>();
    for (int r = 0; r < got.shape(0); ++r) {
      const bool bad = std::find(bad_rows.begin(), bad_rows.end(), r) != bad_rows.end();
      for (int n = 0; n < N; ++n) {
        const float v = g[r * N + n];
        if (bad) nan_ok = std::min(nan_ok, std::isnan(v) ? 1.f : 0.f);
        else err = std::max(err, std::isnan(v) ? INFINITY : std::abs(v - w[r * N + n]));
        if (!bad) scale = std::max(scale, std::abs(w[r * N + n]));
      }
    }
    const std::string sfx = weighted ? "weighted" : "unweighted";
    report("moe_gemm_invalid_ids_nan_rows_" + sfx, 1.f - nan_ok, 0.f, l.dispatches);
    report("moe_gemm_invalid_ids_other_rows_" + sfx, err, 1.6e-2f * scale, l.dispatches);  // bf16 rounding
  }
  std::printf("{\"cases\": [");
  for (size_t i = 0; i < rows.size(); ++i) std::printf("%s%s", i ? ", " : "", rows[i].c_str());
  std::printf("]}\n");
}
