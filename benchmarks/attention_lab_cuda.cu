// Prefill attention lab: the Hopper wgmma kernel (attention_wgmma) next to the mma.sync
// kernel (attention_mma) without MLX, so one device call builds, checks and times both:
//   nvcc -O3 -std=c++17 --expt-relaxed-constexpr -arch=sm_90a -Icpp \
//        benchmarks/attention_lab_cuda.cu -o /tmp/attn_lab && /tmp/attn_lab
// Checks: every kernel against a float64 reference on the host, shapes that are not
// tile multiples (Lq != Lk, causal with Lq > Lk), outputs poisoned with NaN first.
// Times: CUDA events over back-to-back launches, B = 1, Hq / Hkv = 32 / 8, bf16.
// Arguments come from plan_cuda_attention, as in attention_host.cpp.  Variants: -1 the
// shipped wgmma kernel (persistent, ping-pong), -2 one block per item (ping-pong, shipped
// until 2026-12-05), -4 one block per item with the other ping-pong setting.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "cuda/attention_wgmma.cuh"

using namespace marlin;
using namespace marlin::cuda;

#define CK(x)                                                                      \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

struct Case {
  int B, Hq, Hkv, Lq, Lk, D;
  bool causal;
};

// Host-side conversions of cuda_fp16.h / cuda_bf16.h (round to nearest even).
static float bf16_to_f(uint16_t h) { return __bfloat162float(__ushort_as_bfloat16(h)); }
static uint16_t f_to_bf16(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
static float f16_to_f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
static uint16_t f_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }

struct Launch {
  void* fn;
  dim3 grid, block;
  int smem;
  bool tma;           // the TMA kernel: three tensor maps follow the arguments
  CUtensorMap tm[3];  // q, k, v
};

static const char* variant_name(int v) { return v == -4 ? "wg-alt" : v == -2 ? "wg-item" : v < 0 ? "wgmma" : v == 5 ? "mma5" : v == 2 ? "dec2" : v == 6 ? "dec6" : "mma0"; }

// SMs the plan sizes split-K by (decode): the device's, or fewer to try fewer splits.
static int g_plan_sms = 132;
// Decode: keys per split instead of the plan's (0: the plan's), a multiple of 64.
static int g_decode_keys_per_split = 0;

// The plan's kernel for this case: Wgmma (variant -1 with wgmma_device) or a Mma config.
template <typename T>
static Launch make_launch(const Case& c, int variant, AttnArgs& a) {
  CudaAttentionPlan p = plan_cuda_attention(c.B, c.Hq, c.Hkv, c.Lq, c.Lk, c.D, true, true, g_plan_sms, variant < 0 ? -1 : variant,
                                                  /*wgmma_device=*/variant < 0, /*mask_array=*/false,
                                                  /*persistent=*/variant == -1 && kCudaAttnWgmmaPersistent);
  if (g_decode_keys_per_split > 0 && p.splits > 1) {
    const int bk = kCudaAttnConfigs[p.variant].block_k;
    const int64_t key_blocks = (c.Lk + bk - 1) / bk, bps = std::max(1, g_decode_keys_per_split / bk);
    p.splits = static_cast<int>((key_blocks + bps - 1) / bps);
    p.keys_per_split = bps * bk;
    p.grid_z = p.splits;
  }
  a.keys_per_split = p.keys_per_split;
  a.B = c.B; a.Hq = c.Hq; a.Hkv = c.Hkv; a.Lq = c.Lq; a.Lk = c.Lk; a.G = c.Hq / c.Hkv;
  a.heads_per_block = p.heads_per_block;
  a.block_q = p.block_q;
  a.head_blocks = p.head_blocks;
  a.query_blocks = p.query_blocks;
  a.splits = p.splits;
  a.mask_kind = c.causal ? kAttnMaskCausal : kAttnMaskNone;
  a.mask_type = kAttnMaskF32;
  a.scale_log2 = static_cast<float>(1.0 / std::sqrt(double(c.D)) * 1.4426950408889634);
  void* fn = nullptr;
  Launch l{};
  if (p.kernel == CudaAttentionKernel::Wgmma) {
    // -1: the shipped choice (the plan's persistent form, kCudaAttnWgmmaPingPong); -2: one
    // block per item, same ping-pong setting; -4: one block per item, the other setting.
    const bool pp = (variant != -4) == kCudaAttnWgmmaPingPong;
    if (p.persistent)
      fn = c.D == 64 ? reinterpret_cast<void*>(&attention_wgmma_persistent<T, 64>)
                     : reinterpret_cast<void*>(&attention_wgmma_persistent<T, 128>);
    else
      fn = c.D == 64 ? (pp ? reinterpret_cast<void*>(&attention_wgmma<T, 64, true>) : reinterpret_cast<void*>(&attention_wgmma<T, 64, false>))
                     : (pp ? reinterpret_cast<void*>(&attention_wgmma<T, 128, true>) : reinterpret_cast<void*>(&attention_wgmma<T, 128, false>));
    l.tma = true;
    const bool f16 = std::is_same<T, __half>::value;
    bool ok = encode_rows_tma(&l.tm[0], a.q, f16, c.B, c.Hq, c.Lq, c.D, a.q_stride, kCudaAttnWgmmaRows);
    ok = ok && encode_rows_tma(&l.tm[1], a.k, f16, c.B, c.Hkv, c.Lk, c.D, a.k_stride, kCudaAttnWgmmaKeys);
    ok = ok && encode_rows_tma(&l.tm[2], a.v, f16, c.B, c.Hkv, c.Lk, c.D, a.v_stride, kCudaAttnWgmmaKeys);
    if (!ok) {
      std::printf("tensor map encoding failed\n");
      std::exit(1);
    }
  } else if (p.variant == 2 || p.variant == 6) {
    // Decode: split-K with the merge fused (partials and zeroed counters as eval_gpu's).
    // Config 2 (4 warps, 64-key tiles) or 6 (8 warps, 128-key tiles).
    if (p.variant == 6)
      fn = c.D == 64 ? reinterpret_cast<void*>(&attention_mma<T, 64, 1, 8, 128, 1, 1>)
                     : reinterpret_cast<void*>(&attention_mma<T, 128, 1, 8, 128, 1, 1>);
    else
      fn = c.D == 64 ? reinterpret_cast<void*>(&attention_mma<T, 64, 1, 4, 64, 3, 1>)
                     : reinterpret_cast<void*>(&attention_mma<T, 128, 1, 4, 64, 3, 1>);
    if (p.splits > 1) {
      const int64_t rows = int64_t(c.B) * c.Hq * c.Lq;
      CK(cudaMalloc(&a.part_o, rows * p.splits * (c.D + 2) * sizeof(float)));
      a.part_ml = a.part_o + rows * p.splits * c.D;
      CK(cudaMalloc(&a.split_counters, int64_t(p.grid_x) * p.grid_y * sizeof(int)));
      CK(cudaMemset(a.split_counters, 0, int64_t(p.grid_x) * p.grid_y * sizeof(int)));
      // LAB_NO_MERGE=1: partials only (what the merge costs; the output is not checked then).
      if (std::getenv("LAB_NO_MERGE")) a.split_counters = nullptr;
    }
    std::printf("  plan (%d SMs): %d splits of %lld keys, grid %d x %d x %d\n", g_plan_sms, p.splits,
                (long long)p.keys_per_split, p.grid_x, p.grid_y, p.grid_z);
  } else if (p.splits == 1) {
    // Prefill configs only (no split-K scratch in the lab).
    auto pick = [&](auto d) -> void* {
      constexpr int D = decltype(d)::value;
      switch (p.variant) {
        case 0: return reinterpret_cast<void*>(&attention_mma<T, D, 4, 1, 64, 2, 1>);
        case 5: return reinterpret_cast<void*>(&attention_mma<T, D, 4, 1, 32, 2, 2>);
      }
      return nullptr;
    };
    fn = c.D == 64 ? pick(std::integral_constant<int, 64>{}) : pick(std::integral_constant<int, 128>{});
  }
  if (!fn) {
    std::printf("no kernel for variant %d\n", variant);
    std::exit(1);
  }
  CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, p.smem));
  l.fn = fn;
  l.grid = dim3(p.grid_x, p.grid_y, p.grid_z);
  if (l.block.x == 1) l.block = dim3(p.threads);
  l.smem = p.smem;
  return l;
}

static void run(Launch& l, AttnArgs& a, cudaStream_t s = 0) {
  void* params[] = {&a, &l.tm[0], &l.tm[1], &l.tm[2]};
  CK(cudaLaunchKernel(l.fn, l.grid, l.block, params, l.smem, s));
}

// q/k/v contiguous [B, H, L, D]; float64 reference of softmax(q k^T * scale) v.
static void reference(const Case& c, const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                      std::vector<double>& out) {
  const int G = c.Hq / c.Hkv, D = c.D;
  const double scale = 1.0 / std::sqrt(double(D));
  out.assign(size_t(c.B) * c.Hq * c.Lq * D, 0.0);
  std::vector<double> sc(c.Lk);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hq; ++h)
      for (int i = 0; i < c.Lq; ++i) {
        const float* qr = &q[((size_t(b) * c.Hq + h) * c.Lq + i) * D];
        const int hk = h / G;
        const int lim = c.causal ? i + c.Lk - c.Lq : c.Lk - 1;
        double mx = -INFINITY;
        for (int j = 0; j <= lim && j < c.Lk; ++j) {
          const float* kr = &k[((size_t(b) * c.Hkv + hk) * c.Lk + j) * D];
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(qr[d]) * kr[d];
          sc[j] = dot * scale;
          mx = std::max(mx, sc[j]);
        }
        double* o = &out[((size_t(b) * c.Hq + h) * c.Lq + i) * D];
        if (lim < 0) continue;  // no visible key: zeros
        double sum = 0;
        for (int j = 0; j <= lim && j < c.Lk; ++j) {
          const double p = std::exp(sc[j] - mx);
          sum += p;
          const float* vr = &v[((size_t(b) * c.Hkv + hk) * c.Lk + j) * D];
          for (int d = 0; d < D; ++d) o[d] += p * vr[d];
        }
        for (int d = 0; d < D; ++d) o[d] /= sum;
      }
}

template <typename T>
struct Problem {
  Case c;
  std::vector<float> q, k, v;  // values as rounded to T
  uint16_t *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr;
  size_t nq, nk, no;
  explicit Problem(const Case& cc, int seed) : c(cc) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    nq = size_t(c.B) * c.Hq * c.Lq * c.D;
    nk = size_t(c.B) * c.Hkv * c.Lk * c.D;
    no = nq;
    auto fill = [&](std::vector<float>& h, uint16_t*& d, size_t n) {
      std::vector<uint16_t> raw(n);
      h.resize(n);
      for (size_t i = 0; i < n; ++i) {
        raw[i] = std::is_same<T, __half>::value ? f_to_f16(nd(rng)) : f_to_bf16(nd(rng));
        h[i] = std::is_same<T, __half>::value ? f16_to_f(raw[i]) : bf16_to_f(raw[i]);
      }
      CK(cudaMalloc(&d, std::max<size_t>(n, 1) * 2));
      CK(cudaMemcpy(d, raw.data(), n * 2, cudaMemcpyHostToDevice));
    };
    fill(q, dq, nq);
    fill(k, dk, nk);
    fill(v, dv, nk);
    CK(cudaMalloc(&dout, std::max<size_t>(no, 1) * 2));
  }
  ~Problem() {
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout);
  }
  AttnArgs args() const {
    AttnArgs a{};
    a.q = dq; a.k = dk; a.v = dv; a.out = dout;
    const int64_t qs[4] = {int64_t(c.Hq) * c.Lq * c.D, int64_t(c.Lq) * c.D, c.D, 1};
    const int64_t ks[4] = {int64_t(c.Hkv) * c.Lk * c.D, int64_t(c.Lk) * c.D, c.D, 1};
    for (int i = 0; i < 4; ++i) {
      a.q_stride[i] = qs[i];
      a.k_stride[i] = ks[i];
      a.v_stride[i] = ks[i];
    }
    return a;
  }
  std::vector<float> output() const {
    std::vector<uint16_t> raw(no);
    CK(cudaMemcpy(raw.data(), dout, no * 2, cudaMemcpyDeviceToHost));
    std::vector<float> f(no);
    for (size_t i = 0; i < no; ++i) f[i] = std::is_same<T, __half>::value ? f16_to_f(raw[i]) : bf16_to_f(raw[i]);
    return f;
  }
};

template <typename T>
static bool check(const Case& c, int variant, int seed) {
  Problem<T> pr(c, seed);
  AttnArgs a = pr.args();
  Launch l = make_launch<T>(c, variant, a);
  CK(cudaMemset(pr.dout, 0xFF, pr.no * 2));  // NaN: every element must be written
  run(l, a);
  CK(cudaDeviceSynchronize());
  std::vector<double> ref;
  reference(c, pr.q, pr.k, pr.v, ref);
  const std::vector<float> out = pr.output();
  const double tol = std::is_same<T, __half>::value ? 4e-3 : 2e-2;
  double worst = 0;
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double err = std::fabs(out[i] - ref[i]);
    if (!(err <= tol * (1.0 + std::fabs(ref[i])))) {
      if (!bad) first_bad = i;
      ++bad;
    }
    if (err > worst || err != err) worst = err;
  }
  std::printf("check %-5s %-6s B%d Hq%d Hkv%d Lq%d Lk%d D%d %s: max err %.3g %s", std::is_same<T, __half>::value ? "f16" : "bf16",
              variant_name(variant), c.B, c.Hq, c.Hkv, c.Lq, c.Lk, c.D,
              c.causal ? "causal" : "full", worst, bad ? "FAIL" : "ok");
  if (bad) {
    const size_t row = first_bad / c.D;
    std::printf(" (%zu bad; first row %zu col %zu: %g vs %g)", bad, row, first_bad % c.D, out[first_bad], ref[first_bad]);
  }
  std::printf("\n");
  return bad == 0;
}

template <typename T>
static void time_case(const Case& c, int variant, const std::vector<float>* baseline_out, std::vector<float>* out_copy) {
  // Decode reads K / V once per call: rotate 4 copies (67 MB at Lk = 4096) past the L2.
  const int sets = c.Lq <= 8 ? 4 : 1;
  std::vector<std::unique_ptr<Problem<T>>> prs;
  std::vector<AttnArgs> as;
  std::vector<Launch> ls;
  for (int i = 0; i < sets; ++i) {
    prs.emplace_back(new Problem<T>(c, 7 + i));
    as.push_back(prs.back()->args());
    ls.push_back(make_launch<T>(c, variant, as.back()));
  }
  Problem<T>& pr = *prs[0];
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3 * sets; ++i) run(ls[i % sets], as[i % sets]);
  CK(cudaDeviceSynchronize());
  const int iters = 48;
  float best = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    CK(cudaEventRecord(e0));
    for (int i = 0; i < iters; ++i) run(ls[i % sets], as[i % sets]);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms / iters);
  }
  // FLOPs: 4 * D per visible (query, key) pair per head.
  double pairs = 0;
  for (int i = 0; i < c.Lq; ++i) {
    const int lim = c.causal ? i + c.Lk - c.Lq : c.Lk - 1;
    pairs += std::max(0, std::min(lim, c.Lk - 1) + 1);
  }
  const double flops = 4.0 * c.D * pairs * c.Hq * c.B;
  std::vector<float> out = pr.output();
  double diff = -1;
  if (baseline_out) {
    diff = 0;
    for (size_t i = 0; i < out.size(); ++i) diff = std::max(diff, double(std::fabs(out[i] - (*baseline_out)[i])));
  }
  std::printf("time  %-6s L%d/%d D%d %s: %8.1f us  %6.1f TFLOP/s%s", variant_name(variant),
              c.Lq, c.Lk, c.D, c.causal ? "causal" : "full", best * 1e3, flops / (best * 1e-3) / 1e12,
              baseline_out ? "" : "\n");
  if (baseline_out) std::printf("  max |diff| vs mma %.3g\n", diff);
  if (out_copy) *out_copy = out;
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
  const Case checks[] = {
      {1, 4, 2, 200, 200, 128, true},  {1, 2, 1, 133, 301, 128, false}, {2, 4, 4, 77, 77, 64, true},
      {1, 4, 1, 300, 250, 128, true},  {1, 2, 2, 129, 1000, 64, false}, {1, 2, 1, 9, 700, 128, true},
      {1, 3, 1, 255, 129, 128, false}, {1, 2, 2, 513, 513, 128, true},
  };
  // LAB_DECODE_ONLY=1: only the decode timings (e.g. under ncu).
  const bool decode_only = std::getenv("LAB_DECODE_ONLY") != nullptr;
  bool ok = true;
  for (const Case& c : checks) {
    if (decode_only) break;
    ok &= check<__nv_bfloat16>(c, -1, 1);
    ok &= check<__half>(c, -1, 2);
    ok &= check<__nv_bfloat16>(c, -2, 5);
    ok &= check<__nv_bfloat16>(c, -4, 8);
    ok &= check<__half>(c, -4, 9);
  }
  ok &= check<__nv_bfloat16>(checks[0], 5, 3);
  ok &= check<__nv_bfloat16>(Case{1, 32, 8, 1, 4096, 128, false}, 2, 4);
  ok &= check<__nv_bfloat16>(Case{1, 32, 8, 1, 4096, 128, false}, 6, 10);
  ok &= check<__half>(Case{2, 8, 2, 3, 3000, 64, false}, 6, 11);
  ok &= check<__nv_bfloat16>(Case{1, 4, 1, 1, 200, 128, false}, 6, 12);
  std::printf("checks: %s\n", ok ? "all ok" : "FAILED");

  const Case timed[] = {{1, 32, 8, 4096, 4096, 128, true}, {1, 32, 8, 1024, 1024, 128, true}, {1, 32, 8, 4096, 4096, 128, false},
                        {1, 32, 8, 4096, 4096, 64, true}};
  for (const Case& c : timed) {
    if (decode_only) break;
    std::vector<float> base;
    time_case<__nv_bfloat16>(c, c.Lq >= 2048 ? 5 : 0, nullptr, &base);
    time_case<__nv_bfloat16>(c, -1, &base, nullptr);
    time_case<__nv_bfloat16>(c, -2, &base, nullptr);
    time_case<__nv_bfloat16>(c, -4, &base, nullptr);
  }
  // Decode: config 2 (4 warps over 64-key tiles) against config 6 (8 warps over 128-key
  // tiles) at the plan's splits (one block per SM), then config 6 at other split lengths.
  const Case decodes[] = {{1, 32, 8, 1, 1024, 128, false}, {1, 32, 8, 1, 4096, 128, false}, {1, 32, 8, 1, 16384, 128, false},
                          {4, 32, 8, 1, 4096, 128, false}, {1, 32, 8, 1, 4096, 64, false}};
  for (const Case& c : decodes) {
    time_case<__nv_bfloat16>(c, 2, nullptr, nullptr);
    time_case<__nv_bfloat16>(c, 6, nullptr, nullptr);
  }
  for (int kps : {128, 384, 512, 1024}) {
    g_decode_keys_per_split = kps;
    time_case<__nv_bfloat16>(Case{1, 32, 8, 1, 4096, 128, false}, 6, nullptr, nullptr);
    time_case<__nv_bfloat16>(Case{1, 32, 8, 1, 16384, 128, false}, 6, nullptr, nullptr);
  }
  g_decode_keys_per_split = 0;
  return ok ? 0 : 1;
}
