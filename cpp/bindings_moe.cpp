// Python bindings of the fused Mixture-of-Experts ops (init_moe is called from
// bindings.cpp's module definition).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include "ops/moe.h"

namespace nb = nanobind;
using namespace nb::literals;

void init_moe(nb::module_& m) {
  m.def("moe_route", &marlin::moe_route, "logits"_a, "top_k"_a, nb::kw_only(), "normalize"_a = true,
        "stream"_a = nb::none(),
        nb::sig("def moe_route(logits: mlx.core.array, top_k: int, *, normalize: bool = True, "
                "stream: mlx.core.Stream | mlx.core.Device | None = None) "
                "-> tuple[mlx.core.array, mlx.core.array]"),
        R"(Top-k expert routing: softmax over experts, then the k largest.

The softmax is computed in float32 (max-subtracted).  Experts are ranked by
descending logit (the softmax order); equal logits are ranked by lower expert id,
NaN logits last.  The returned indices are in descending weight order.

Args:
    logits (array): Router logits ``[..., E]``; float16, bfloat16 or float32.
    top_k (int): Experts per token, ``1 <= top_k <= E``.
    normalize (bool): Divide the k selected probabilities by their sum (default), so
        each token's weights sum to 1; otherwise return the raw softmax probabilities.
    stream (Stream or Device, optional): Where to run.

Returns:
    tuple(array, array): ``indices [..., k]`` uint32 and ``weights [..., k]`` in the
    dtype of ``logits``.)");

  m.def("moe_gemm", &marlin::moe_gemm, "x"_a, "w"_a, "scales"_a, "indices"_a, nb::kw_only(), "group_size"_a,
        "weights"_a = nb::none(), "activation"_a = nb::none(), "stream"_a = nb::none(),
        nb::sig("def moe_gemm(x: mlx.core.array, w: mlx.core.array, scales: mlx.core.array, "
                "indices: mlx.core.array, *, group_size: int, weights: mlx.core.array | None = None, "
                "activation: str | None = None, stream: mlx.core.Stream | mlx.core.Device | None = None) "
                "-> mlx.core.array"),
        R"(Grouped FP4 expert GEMM: each (token, slot) row times its expert's weight.

``y[t, j] = act(x_row(t, j) @ dequantize(w[indices[t, j]], scales[...]).T)`` with
float32 accumulation.  Rows are grouped by expert (counting sort) so each chosen
expert's weights are streamed once per call.

Args:
    x (array): ``[..., K]`` (each token's row is shared by its k experts, e.g. gate/up
        projections) or ``[..., k, K]`` (one row per (token, slot), e.g. the down
        projection); float16, bfloat16 or float32.  Its leading dims are those of
        ``indices`` (``[T, K]`` / ``[T, k, K]`` for ``indices [T, k]``); the rank tells the
        two forms apart.
    w (array): Packed expert weights ``[E, K/8, N]`` uint32 (:func:`mlx_marlin.quantize`
        of ``[E, N, K]``).
    scales (array): ``[E, K/group_size, N]`` float16 or bfloat16.
    indices (array): Expert ids ``[..., k]``, any integer dtype; the leading dims hold
        the tokens (none: one token) and are kept in the result, with no reshape, so a
        shapeless ``mx.compile`` follows changing shapes.  They are data, known
        only when the result is evaluated, where MLX cannot reliably raise: an id
        outside ``[0, E)`` is never clamped or used to address memory; the rows that
        depend on it are NaN instead (the pair's row of ``[..., k, N]``, or the token's
        row of ``[..., N]`` with ``weights``), on every backend; every other row is
        computed normally.
    group_size (int): 32, 64 or 128.
    weights (array, optional): ``[..., k]`` combine weights (``indices``' shape).  When given the result is
        the weighted sum over slots ``sum_j weights[t, j] * y[t, j]`` (fused, accumulated
        in float32; the Metal kernels store the per-slot ``y`` in ``x``'s dtype first).
    activation (str, optional): None, ``"relu"``, ``"gelu"``, ``"gelu_approx"`` or
        ``"silu"``, applied to each expert output before the combine.
    stream (Stream or Device, optional): Where to run.

Returns:
    array: ``[..., k, N]``, or ``[..., N]`` when ``weights`` is given, in the dtype of ``x``.)");

  m.def("moe_mlp", &marlin::moe_mlp, "x"_a, "router_logits"_a, "w_gate"_a, "s_gate"_a, "w_up"_a.none(),
        "s_up"_a.none(), "w_down"_a, "s_down"_a, nb::kw_only(), "top_k"_a, "group_size"_a,
        "activation"_a = "silu", "normalize"_a = true, "stream"_a = nb::none(),
        nb::sig("def moe_mlp(x: mlx.core.array, router_logits: mlx.core.array, w_gate: mlx.core.array, "
                "s_gate: mlx.core.array, w_up: mlx.core.array | None, s_up: mlx.core.array | None, "
                "w_down: mlx.core.array, s_down: mlx.core.array, *, top_k: int, group_size: int, "
                "activation: str | None = 'silu', normalize: bool = True, "
                "stream: mlx.core.Stream | mlx.core.Device | None = None) -> mlx.core.array"),
        R"(Whole gated (SwiGLU-style) expert MLP in one op.

``y[t] = sum_j w[t, j] * down_e(act(gate_e(x[t])) * up_e(x[t]))`` over the top-k
experts ``e = idx[t, j]`` of ``(idx, w) = moe_route(router_logits, top_k,
normalize=normalize)``.  Routing, grouping, the gate/up GEMMs, ``act(gate) * up``,
the down GEMM and the weighted combine run in one primitive.  Accumulation is float32.
On the CPU every intermediate (routing weights, gate/up outputs, hidden activations,
expert outputs) stays float32 and only the final result is rounded to ``x``'s dtype;
the Metal kernels fuse ``act(gate) * up`` into the gate/up GEMM and store the hidden
activations and the per-slot expert outputs in ``x``'s dtype between launches (bfloat16
activations stay bfloat16 end to end; routing weights stay float32).

Args:
    x (array): ``[..., K]``; float16, bfloat16 or float32.
    router_logits (array): ``[..., E]`` with ``x``'s leading dims; any float dtype.
    w_gate, s_gate (array): Gate projection ``[E, K/8, I]`` and ``[E, K/group_size, I]``.
        When ``w_up`` and ``s_up`` are None, ``w_gate`` is ``[E, K/8, 2*I]`` (and
        ``s_gate`` ``[E, K/group_size, 2*I]``) holding the gate and up projections
        concatenated along N: output columns ``[0, I)`` are gate, ``[I, 2*I)`` are up
        (``quantize(concatenate([w_gate, w_up], axis=1))`` of ``[E, I, K]`` weights).
    w_up, s_up (array or None): Up projection ``[E, K/8, I]``, ``[E, K/group_size, I]``.
    w_down, s_down (array): Down projection ``[E, I/8, N_out]``, ``[E, I/group_size, N_out]``.
    top_k (int): Experts per token, ``1 <= top_k <= E``.
    group_size (int): 32, 64 or 128, shared by all three projections.
    activation (str, optional): Gate activation: ``"silu"`` (default, SwiGLU),
        ``"gelu"``, ``"gelu_approx"`` (GeGLU), ``"relu"`` or None (bilinear).
    normalize (bool): Renormalize the top-k routing weights to sum 1.
    stream (Stream or Device, optional): Where to run.

Returns:
    array: ``[..., N_out]`` in the dtype of ``x``.)");
}
