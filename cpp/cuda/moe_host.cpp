// MoeRoute / MoeGemm / MoeMlp ::eval_gpu for MLX's CUDA backend: the pipeline of
// cpp/common/moe_plan.h (CUDA plan) recorded on MLX's command encoder, everything on
// the device (routing, grouping, tile list, GEMMs, combine: no host round trip).
// Grouping tables and intermediates are encoder temporaries (cuda::scratch).
//
// Indices are data: on CUDA an expert id outside [0, E) cannot raise (that would need
// a read-back); such pairs go to a bucket of their own, their moe_gemm rows are zeros
// and the weighted combine leaves them out (docs/moe.md).
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/fp4_format.h"
#include "common/moe_plan.h"
#include "cuda/cuda_host.h"
#include "cuda/moe_launch.h"
#include "mlx/backend/cuda/device.h"
#include "mlx/backend/cuda/utils.h"
#include "ops/moe.h"
#include "ops/validate.h"

namespace marlin {

namespace {

bool is_signed_int(mx::Dtype t) {
  return t == mx::int8 || t == mx::int16 || t == mx::int32 || t == mx::int64;
}

// MLX_MARLIN_CUDA_MOE=decode|prefill|decode_u3|decode_u4 forces the GEMM tile variant
// (tests, benchmarks); read at every call so tests can switch it.
int variant_override() {
  const char* v = std::getenv("MLX_MARLIN_CUDA_MOE");
  if (!v) return -1;
  const std::string s(v);
  return s == "decode" ? 0 : s == "prefill" ? 1 : s == "decode_u3" ? 2 : s == "decode_u4" ? 3 : -1;
}

// Direct mode (no grouping) for calls of at most kCudaMoeDirectMaxPairs pairs with
// uint32 / int32 indices: 1 / 2, else 0.  MLX_MARLIN_CUDA_MOE_DIRECT=0 turns it off.
int direct_mode(const mx::array& indices) {
  const char* v = std::getenv("MLX_MARLIN_CUDA_MOE_DIRECT");
  if (v && v[0] == '0') return 0;
  if (indices.size() > static_cast<size_t>(kCudaMoeDirectMaxPairs)) return 0;
  return indices.dtype() == mx::uint32 ? 1 : indices.dtype() == mx::int32 ? 2 : 0;
}

unsigned cdiv(int64_t a, int64_t b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

// idx [T, k] uint32 and weights [T, k] (logits' dtype or float32) from logits [T, E].
void encode_route(mx::cu::CommandEncoder& enc, const mx::array& logits, mx::array& idx, mx::array& weights, int top_k,
                  bool normalize, const char* op) {
  cuda::MoeRouteArgs a{};
  a.logits = mx::gpu_ptr<void>(logits);
  a.idx = static_cast<uint32_t*>(mx::gpu_ptr<void>(idx));
  a.weights = mx::gpu_ptr<void>(weights);
  a.T = leading_rows(op, "logits", logits);  // [..., E], row-major
  a.E = logits.shape(-1);
  a.k = top_k;
  a.normalize = normalize ? 1 : 0;
  void* fn = cuda::moe_route_fn(cuda::elem_type(logits.dtype(), op, "logits"), cuda::elem_type(weights.dtype(), op, "weights"));
  cuda::launch(enc, fn, dim3(cdiv(a.T, kCudaMoeRouteWarps)), dim3(32 * kCudaMoeRouteWarps), 0, &a, {&logits},
               {&idx, &weights}, op);
}

// The grouping tables, in one int32 scratch array (one allocation): offsets [E + 2],
// pairs [P], position [P], tiles [max_tiles][4] (16-byte aligned), status [4].
struct Grouping {
  mx::array table;
  int64_t offsets, pairs, position, tiles, status;  // element offsets into table
  const int* ptr(int64_t at) const { return mx::gpu_ptr<int>(table) + at; }
};

// The counting sort of the P = T * k pairs of indices [T, k] (any integer dtype) by
// expert, and the GEMM tile list for tiles of `plan.tile_m` rows.
Grouping encode_group(mx::cu::CommandEncoder& enc, const mx::array& indices, int E, const CudaMoePlan& plan,
                      const char* op) {
  const int P = static_cast<int>(indices.size());
  const int warps = cuda_moe_group_warps(E);
  if (warps < 1)
    throw std::invalid_argument(std::string("[") + op + "] the CUDA grouping kernel takes at most " +
                                std::to_string(kCudaMoeGroupMaxSmem / 4 - 1) + " experts, got " + std::to_string(E) + ".");
  const int64_t offsets = 0, pairs = int64_t(E) + 2, position = pairs + P;
  const int64_t tiles = (position + P + 3) / 4 * 4;
  const int64_t status = tiles + 4 * int64_t(plan.max_tiles);
  Grouping g{cuda::scratch(enc, {static_cast<int>(status + 4)}, mx::int32), offsets, pairs, position, tiles, status};
  int* base = mx::gpu_ptr<int>(g.table);
  cuda::MoeGroupArgs a{};
  a.indices = mx::gpu_ptr<void>(indices);
  a.offsets = base + offsets;
  a.pairs = base + pairs;
  a.position = base + position;
  a.tiles = base + tiles;
  a.status = base + status;
  a.P = P;
  a.E = E;
  a.tile_m = plan.tile_m;
  void* fn = cuda::moe_group_fn(static_cast<int>(mx::size_of(indices.dtype()) * 8), is_signed_int(indices.dtype()));
  const uint32_t smem = static_cast<uint32_t>(warps) * (E + 1) * 4;
  cuda::launch(enc, fn, dim3(1), dim3(32 * warps), smem, &a, {&indices}, {&g.table}, op);
  return g;
}

// Where a grouped GEMM takes its rows: the grouping's tile list, or (direct mode) one
// pair per block with the expert read from `indices` (uint32 / int32).
struct RowSource {
  const Grouping* groups = nullptr;
  const mx::array* indices = nullptr;
  int direct = 0;
  int P = 0;
  int E = 0;
};

// One grouped GEMM over the tile list of `g`.  Glu: `w2`/`s2` hold the up columns
// (from column up_col), w/s the gate columns, ldw = their common row length.
void encode_gemm(mx::cu::CommandEncoder& enc, const CudaMoePlan& plan, cuda::MoeOutMode mode, cuda::MoeXMode x_mode,
                 const mx::array& x, const mx::array& w, const mx::array& s, const mx::array* w2, const mx::array* s2,
                 int up_col, const RowSource& rows, mx::array& out, int N, int k, int group_size, Activation act,
                 const char* op) {
  const int K = w.shape(1) * kCodesPerWord;
  const int ldw = w.shape(2);
  cuda::MoeGemmArgs a{};
  a.x = mx::gpu_ptr<void>(x);
  a.w = static_cast<const uint32_t*>(mx::gpu_ptr<void>(w));
  a.scales = mx::gpu_ptr<void>(s);
  a.w2 = w2 ? static_cast<const uint32_t*>(mx::gpu_ptr<void>(*w2)) : a.w;
  a.scales2 = s2 ? mx::gpu_ptr<void>(*s2) : a.scales;
  if (rows.direct) {
    a.direct_idx = static_cast<const uint32_t*>(mx::gpu_ptr<void>(*rows.indices));
  } else {
    a.pairs = rows.groups->ptr(rows.groups->pairs);
    a.tiles = rows.groups->ptr(rows.groups->tiles);
    a.status = rows.groups->ptr(rows.groups->status);
  }
  a.direct = rows.direct;
  a.E = rows.E;
  a.out = mx::gpu_ptr<void>(out);
  a.N = N;
  a.K = K;
  a.ldw = ldw;
  a.up_col = up_col;
  a.group_size = group_size;
  a.act = static_cast<int>(act);
  a.k = k;
  a.x_mode = static_cast<int>(x_mode);
  // 16-byte accesses where every row start they touch is 16-byte aligned.
  a.vec_w = ldw % 4 == 0 && up_col % 4 == 0 && cuda::aligned16(a.w) && cuda::aligned16(a.w2);
  a.vec_s = ldw % 8 == 0 && up_col % 8 == 0 && cuda::aligned16(a.scales) && cuda::aligned16(a.scales2);
  a.vec_x = cuda::aligned16(a.x);  // K % 32 == 0: rows are 16-byte multiples
  a.vec_out = (static_cast<int64_t>(N) * mx::size_of(out.dtype())) % 16 == 0 && cuda::aligned16(a.out);
  void* fn = cuda::moe_gemm_fn(plan.variant, mode, cuda::elem_type(x.dtype(), op, "x"), cuda::elem_type(s.dtype(), op, "scales"));
  const mx::array& w2r = w2 ? *w2 : w;
  const mx::array& s2r = s2 ? *s2 : s;
  const mx::array& table = rows.direct ? *rows.indices : rows.groups->table;
  cuda::launch(enc, fn, dim3(plan.grid_x, rows.direct ? rows.P : plan.max_tiles), dim3(plan.threads), 0, &a,
               {&x, &w, &s, &w2r, &s2r, &table}, {&out}, op);
}

// out [T, N] = slot-order weighted sum of the float32 rows y (grouped rows through the
// grouping's position table, or pair rows when rows.direct; y null for k = 0).
void encode_combine(mx::cu::CommandEncoder& enc, const mx::array* y, const mx::array& weights, const RowSource& rows,
                    mx::array& out, int T, int k, int N, const char* op) {
  cuda::MoeCombineArgs a{};
  a.y = y ? mx::gpu_ptr<float>(*y) : nullptr;
  a.weights = static_cast<const float*>(mx::gpu_ptr<void>(weights));
  const bool grouped = y && !rows.direct;
  a.position = grouped ? rows.groups->ptr(rows.groups->position) : nullptr;
  a.out = mx::gpu_ptr<void>(out);
  a.T = T;
  a.k = y ? k : 0;
  a.N = N;
  void* fn = cuda::moe_combine_fn(cuda::elem_type(out.dtype(), op, "output"));
  if (grouped)
    cuda::launch(enc, fn, dim3(T, cdiv(N, kCudaMoeCombineThreads)), dim3(kCudaMoeCombineThreads), 0, &a,
                 {y, &weights, &rows.groups->table}, {&out}, op);
  else if (y)
    cuda::launch(enc, fn, dim3(T, cdiv(N, kCudaMoeCombineThreads)), dim3(kCudaMoeCombineThreads), 0, &a,
                 {y, &weights}, {&out}, op);
  else
    cuda::launch(enc, fn, dim3(T, cdiv(N, kCudaMoeCombineThreads)), dim3(kCudaMoeCombineThreads), 0, &a, {&weights},
                 {&out}, op);
}

} // namespace

// ------------------------------------------------------------------ MoeRoute
void MoeRoute::eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& enc = mx::cu::get_command_encoder(stream());
  const auto& logits = inputs[0];
  cuda::allocate_on_device(outputs[0], enc);
  cuda::allocate_on_device(outputs[1], enc);
  if (logits.size() == 0) return;  // no tokens (E >= 1)
  cuda::poison(outputs[0], enc, "moe_route");
  cuda::poison(outputs[1], enc, "moe_route");
  enc.device().make_current();
  encode_route(enc, logits, outputs[0], outputs[1], top_k_, normalize_, "moe_route");
}

// ------------------------------------------------------------------ MoeGemm
void MoeGemm::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const char* op = "moe_gemm";
  auto& enc = mx::cu::get_command_encoder(stream());
  const auto& x = inputs[0];
  const auto& w = inputs[1];
  const auto& sc = inputs[2];
  const auto& indices = inputs[3];
  const MoeGemmLayout layout = moe_gemm_layout(x, indices);
  const int T = layout.T;
  const int k = layout.k;
  const int E = w.shape(0);
  const int N = w.shape(2);
  const int P = T * k;
  cuda::allocate_on_device(out, enc);
  if (out.size() == 0) return;
  cuda::poison(out, enc, op);
  enc.device().make_current();
  if (P == 0) {  // k = 0: the weighted combine of nothing is zero
    encode_combine(enc, nullptr, inputs[4], RowSource{}, out, T, 0, N, op);
    return;
  }
  const CudaMoePlan plan = plan_cuda_moe(P, E, N, false, variant_override());
  RowSource rows{nullptr, &indices, plan.config.direct ? direct_mode(indices) : 0, P, E};
  std::optional<Grouping> g;
  if (!rows.direct) {
    g = encode_group(enc, indices, E, plan, op);
    rows.groups = &*g;
  }
  const cuda::MoeXMode xm = layout.shared_x ? cuda::MoeXMode::Shared : cuda::MoeXMode::PerSlot;
  if (has_weights_) {
    mx::array y = cuda::scratch(enc, {P, N}, mx::float32);
    encode_gemm(enc, plan, cuda::MoeOutMode::Grouped, xm, x, w, sc, nullptr, nullptr, 0, rows, y, N, k, group_size_,
                activation_, op);
    encode_combine(enc, &y, inputs[4], rows, out, T, k, N, op);
  } else {
    encode_gemm(enc, plan, cuda::MoeOutMode::Pairs, xm, x, w, sc, nullptr, nullptr, 0, rows, out, N, k, group_size_,
                activation_, op);
  }
}

// ------------------------------------------------------------------ MoeMlp
void MoeMlp::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const char* op = "moe_mlp";
  auto& enc = mx::cu::get_command_encoder(stream());
  const auto& x = inputs[0];
  const auto& logits = inputs[1];
  const auto& w_gate = inputs[2];
  const auto& s_gate = inputs[3];
  const auto& w_down = inputs[inputs.size() - 2];
  const auto& s_down = inputs[inputs.size() - 1];
  const int T = leading_rows(op, "x", x);  // x [..., K] and logits [..., E], row-major
  const int E = logits.shape(-1);
  const int k = top_k_;
  const int I = fused_gate_up_ ? w_gate.shape(2) / 2 : w_gate.shape(2);
  const int N_out = w_down.shape(2);
  const int P = T * k;
  cuda::allocate_on_device(out, enc);
  if (out.size() == 0) return;
  cuda::poison(out, enc, op);
  enc.device().make_current();

  // 1. routing: idx [T, k] uint32 and float32 weights (never rounded to x's dtype)
  mx::array idx = cuda::scratch(enc, {T, k}, mx::uint32);
  mx::array weights = cuda::scratch(enc, {T, k}, mx::float32);
  encode_route(enc, logits, idx, weights, k, normalize_, op);

  // 2. grouping; the two GEMMs share the tile list (same tile height, common/moe_plan.h)
  const CudaMoePlan plan_gu = plan_cuda_moe(P, E, I, true, variant_override());
  const CudaMoePlan plan_d = plan_cuda_moe(P, E, N_out, false, variant_override());
  if (plan_gu.tile_m != plan_d.tile_m || plan_gu.max_tiles != plan_d.max_tiles)
    throw std::logic_error("[moe_mlp] the two grouped GEMMs need the same tile list");
  RowSource rows{nullptr, &idx, plan_gu.config.direct && plan_d.config.direct ? direct_mode(idx) : 0, P, E};
  std::optional<Grouping> g;
  if (!rows.direct) {
    g = encode_group(enc, idx, E, plan_gu, op);
    rows.groups = &*g;
  }

  // 3. h = act(x @ W_gate) * (x @ W_up) for every grouped row, float32 [P, I]
  mx::array h = cuda::scratch(enc, {P, I}, mx::float32);
  const mx::array* w_up = fused_gate_up_ ? &w_gate : &inputs[4];
  const mx::array* s_up = fused_gate_up_ ? &s_gate : &inputs[5];
  encode_gemm(enc, plan_gu, cuda::MoeOutMode::Glu, cuda::MoeXMode::Shared, x, w_gate, s_gate, w_up, s_up,
              fused_gate_up_ ? I : 0, rows, h, I, k, group_size_, activation_, op);

  // 4. down projection of the grouped rows, float32 [P, N_out] (h enters the tensor
  //    cores as a bf16 hi + lo split: float32 intermediates stay ~float32)
  mx::array y = cuda::scratch(enc, {P, N_out}, mx::float32);
  encode_gemm(enc, plan_d, cuda::MoeOutMode::Grouped, cuda::MoeXMode::Grouped, h, w_down, s_down, nullptr, nullptr, 0,
              rows, y, N_out, k, group_size_, Activation::None, op);

  // 5. weighted combine in slot order
  encode_combine(enc, &y, weights, rows, out, T, k, N_out, op);
}

} // namespace marlin
