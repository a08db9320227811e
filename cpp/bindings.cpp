// Python bindings: each op is exposed as a lazy mlx.core-style function.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "common/attention_plan.h"
#include "common/fp4_format.h"
#include "common/gemm_plan.h"
#include "common/moe_plan.h"
#include "cpu/fp4_gemm_kernels.h"
#include "gpu/gpu_ops.h"
#include "ops/affine_linear.h"
#include "ops/dense_linear.h"
#include "ops/fp4_dequantize.h"
#include "ops/fp4_gemm.h"
#if defined(MLX_MARLIN_METAL_EMULATOR)
#include "emulator/emulator_launcher.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

void init_moe(nb::module_& m);
void init_plans(nb::module_& m);  // bindings_plans.cpp
void init_attention(nb::module_& m);

NB_MODULE(_ext, m) {
  m.doc() = "mlx-marlin C++ ops (FP4 E2M1 GEMM, MoE, attention) as lazy MLX primitives.";

  m.def("fp4_gemm", &marlin::fp4_gemm, "x"_a, "w"_a, "scales"_a, "bias"_a = nb::none(), nb::kw_only(),
        "group_size"_a, "activation"_a = nb::none(), "stream"_a = nb::none(),
        nb::sig("def fp4_gemm(x: mlx.core.array, w: mlx.core.array, scales: mlx.core.array, "
                "bias: mlx.core.array | None = None, *, group_size: int, activation: str | None = None, "
                "stream: mlx.core.Stream | mlx.core.Device | None = None) -> mlx.core.array"),
        R"(FP4 (E2M1) matrix product with fused dequantization, bias and activation.

Computes ``act(x @ dequantize(w, scales).T + bias)`` lazily, accumulating in float32.

Args:
    x (array): Activations ``[..., K]``; float16, bfloat16 or float32.
    w (array): Packed weights ``[K/8, N]`` uint32 from :func:`mlx_marlin.quantize`.
    scales (array): Group scales ``[K/group_size, N]``, float16 or bfloat16.
    bias (array, optional): ``[N]`` added before the activation.
    group_size (int): 32, 64 or 128 (must match the quantization).
    activation (str, optional): None, ``"relu"``, ``"gelu"`` (erf), ``"gelu_approx"`` (tanh)
        or ``"silu"``.
    stream (Stream or Device, optional): Where to run.

Returns:
    array: ``[..., N]`` in the dtype of ``x``.

Differentiable with respect to ``x`` and ``bias`` (the packed weights are frozen).)");

  m.def("fp4_dequantize", &marlin::fp4_dequantize, "w"_a, "scales"_a, nb::kw_only(), "group_size"_a,
        "dtype"_a = mlx::core::float32, "stream"_a = nb::none(),
        nb::sig("def fp4_dequantize(w: mlx.core.array, scales: mlx.core.array, *, group_size: int, "
                "dtype: mlx.core.Dtype = mlx.core.float32, stream: mlx.core.Stream | mlx.core.Device | None = None) "
                "-> mlx.core.array"),
        R"(Dequantize packed FP4 weights to ``[K, N]`` (the orientation of ``x @ W``) as a lazy op.

Each value is ``e2m1 * scale`` computed in float32 and rounded once to ``dtype``
(float32: exact).  Runs on the CPU and on MLX's CUDA backend, where ``fp4_gemm`` uses it
for large batches (dequantize once, then MLX's cuBLAS matmul).  Python's
:func:`mlx_marlin.dequantize` gives the transposed ``[N, K]``.

Args:
    w (array): Packed weights ``[K/8, N]`` uint32.
    scales (array): ``[K/group_size, N]`` float16 or bfloat16.
    group_size (int): 32, 64 or 128.
    dtype (Dtype): float32, float16 or bfloat16.

Returns:
    array: ``[K, N]`` of ``dtype``.)");

  m.def("dense_linear", &marlin::dense_linear, "x"_a, "w"_a, "bias"_a = nb::none(), nb::kw_only(),
        "stream"_a = nb::none(),
        nb::sig("def dense_linear(x: mlx.core.array, w: mlx.core.array, bias: mlx.core.array | None = None, *, "
                "stream: mlx.core.Stream | mlx.core.Device | None = None) -> mlx.core.array"),
        R"(Unquantized linear layer ``x @ w.T + bias`` (what ``nn.Linear`` computes), fast on the CPU.

For the layers a model keeps in float16/bfloat16/float32 (output head, tied embeddings,
MoE routers).  On a CPU stream it runs mlx-marlin's kernel, accumulating in float32 and
rounding once; MLX's own CPU matmul on Linux is a reference BLAS (~60 ms for a
32000 x 2048 bfloat16 head at one token).  On a GPU stream it is MLX's ``addmm`` /
``matmul`` (fast there).

Args:
    x (array): ``[..., K]``; float16, bfloat16 or float32.
    w (array): ``[N, K]`` (``nn.Linear.weight`` orientation); float16, bfloat16 or float32.
    bias (array, optional): ``[N]``.
    stream (Stream or Device, optional): Where to run.

Returns:
    array: ``[..., N]`` in the promoted dtype of ``x``, ``w`` and ``bias``.

Differentiable with respect to ``x``, ``w`` and ``bias``.)");

  m.def("affine_linear", &marlin::affine_linear, "x"_a, "w"_a, "scales"_a, "biases"_a, "bias"_a = nb::none(),
        nb::kw_only(), "group_size"_a, "bits"_a, "stream"_a = nb::none(),
        nb::sig("def affine_linear(x: mlx.core.array, w: mlx.core.array, scales: mlx.core.array, "
                "biases: mlx.core.array, bias: mlx.core.array | None = None, *, group_size: int, bits: int, "
                "stream: mlx.core.Stream | mlx.core.Device | None = None) -> mlx.core.array"),
        R"(Linear layer over MLX affine-quantized weights (what ``nn.QuantizedLinear`` computes in
``mode="affine"``), fast on the CPU.

``x @ mx.dequantize(w, scales, biases, group_size, bits).T + bias``, for the layers a
conversion leaves MLX-quantized (e.g. the 8-bit attention and output head of an
"MXFP4-Q8" gpt-oss).  On a CPU stream it runs mlx-marlin's kernel (weights dequantized
in registers, float32 accumulation, one rounding); MLX's own CPU ``quantized_matmul``
takes ~85 ms for one token through a 2880 x 4096 8-bit layer.  On a GPU stream it is
MLX's ``quantized_matmul`` (fast there).

Args:
    x (array): ``[..., K]``; float16, bfloat16 or float32.
    w (array): ``[N, K * bits / 32]`` uint32, as ``mx.quantize(W, group_size, bits)`` returns.
    scales (array): ``[N, K / group_size]``; float16, bfloat16 or float32.
    biases (array): ``[N, K / group_size]``, the dtype of ``scales``.
    bias (array, optional): ``[N]``, the layer's bias.
    group_size (int): 32, 64 or 128.
    bits (int): 4 or 8.
    stream (Stream or Device, optional): Where to run.

Returns:
    array: ``[..., N]`` in the promoted dtype of ``x``, ``scales`` and ``bias``.

Differentiable with respect to ``x`` and ``bias`` (not the quantized weights, as in MLX).)");

  init_moe(m);
  init_plans(m);
  init_attention(m);

  m.def("_gpu_ops", &marlin::gpu_ops, "Names of the ops with GPU kernels in this build.");
  m.def("_cpu_isa", [] { return std::string(marlin::cpu::select_kernels().isa); },
        "The instruction set of the CPU kernels chosen for this machine.");
  m.def("_backend", [] {
#if defined(MLX_MARLIN_METAL_EMULATOR)
    return std::string("metal-emulator");
#else
    return std::string("cpu");
#endif
  }, "Where the CPU-stream evaluation of the ops runs: 'cpu' (the CPU kernels) or 'metal-emulator' "
     "(the Metal kernels on the Metal-on-CPU emulator for the ops wired to them, see docs/metal.md).");
  m.def("_gpu_kernel_names", [] {
    std::vector<std::string> names;
    marlin::for_each_gemm_kernel_name([&](const std::string& n) { names.push_back(n); });
    marlin::for_each_moe_kernel_name([&](const std::string& n) { names.push_back(n); });
    for (auto& n : marlin::all_moe_kernel_names()) names.push_back(n);
    for (auto& n : marlin::all_attention_kernel_names()) names.push_back(n);
    return names;
  }, "Every kernel host name the GPU encoders can dispatch (gemm_kernel_name and friends).");
  m.def("_gpu_gemm_plan", [](int64_t M, int64_t N) {
    auto p = marlin::plan_gpu_gemm(M, N);
    return nb::make_tuple(std::string(marlin::variant_name(p.variant)), p.tile.tile_m, p.tile.tile_n, p.tile.tile_k,
                          p.grid_x, p.grid_y, p.threads_per_group);
  }, "M"_a, "N"_a, "plan_gpu_gemm(M, N): (variant, tile_m, tile_n, tile_k, grid_x, grid_y, threads).");
  m.def("_gpu_moe_plan", [](int64_t pairs, int E, int64_t N) {
    auto p = marlin::plan_gpu_moe(pairs, E, N);
    return nb::make_tuple(std::string(marlin::variant_name(p.variant)), p.tile.tile_m, p.tile.tile_n, p.grid_x,
                          p.max_tiles, p.threads_per_group);
  }, "pairs"_a, "E"_a, "N"_a, "plan_gpu_moe: (variant, tile_m, tile_n, grid_x, max_tiles, threads).");
#if defined(MLX_MARLIN_METAL_EMULATOR)
  m.def("_emulator_module", [] { return marlin::emulator::kernel_module_path(); });
  m.def("_emulator_kernels", [] { return marlin::emulator::kernel_module_names(); });
  m.def("_emulator_checked", [] { return marlin::emulator::kernel_module_checked(); });
#endif
  m.attr("E2M1_TABLE") = std::vector<float>(marlin::kE2M1Table, marlin::kE2M1Table + marlin::kNumCodes);
  m.attr("GROUP_SIZES") = std::vector<int>(marlin::kGroupSizes, marlin::kGroupSizes + 3);
  m.attr("AFFINE_BITS") = std::vector<int>(std::begin(marlin::kAffineBits), std::end(marlin::kAffineBits));
  m.attr("AFFINE_GROUP_SIZES") =
      std::vector<int>(std::begin(marlin::kAffineGroupSizes), std::end(marlin::kAffineGroupSizes));
}
