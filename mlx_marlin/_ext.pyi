"""Type stubs for the mlx-marlin C++ extension."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import mlx.core

E2M1_TABLE: Sequence[float]
GROUP_SIZES: Sequence[int]
AFFINE_BITS: Sequence[int]
AFFINE_GROUP_SIZES: Sequence[int]

def _cpu_isa() -> str: ...
def _gpu_ops() -> list[str]: ...
def _backend() -> str: ...
def _gpu_kernel_names() -> list[str]: ...
def _gpu_gemm_plan(M: int, N: int) -> tuple[str, int, int, int, int, int, int]: ...
def _gpu_moe_plan(pairs: int, E: int, N: int) -> tuple[str, int, int, int, int, int]: ...

# --- fp4_gemm
def fp4_dequantize(
    w: mlx.core.array,
    scales: mlx.core.array,
    *,
    group_size: int,
    dtype: mlx.core.Dtype = mlx.core.float32,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """Dequantize packed FP4 weights ``[K/8, N]`` to ``[K, N]`` of ``dtype`` (lazy; CPU and CUDA)."""
    ...

def fp4_gemm(
    x: mlx.core.array,
    w: mlx.core.array,
    scales: mlx.core.array,
    bias: Optional[mlx.core.array] = None,
    *,
    group_size: int,
    activation: Optional[str] = None,
    stream: Union[None, mlx.core.Stream, mlx.core.Device] = None,
) -> mlx.core.array:
    """FP4 product ``act(x [..., K] @ dequantize(w, scales) + bias)`` -> ``[..., N]`` (lazy;
    fp32 accumulation, result in ``x``'s dtype; CPU, Metal and CUDA)."""
    ...

def dense_linear(
    x: mlx.core.array,
    w: mlx.core.array,
    bias: mlx.core.array | None = None,
    *,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """Unquantized ``x [..., K] @ w[N, K].T + bias`` -> ``[..., N]`` (``nn.Linear``'s product):
    mlx-marlin's kernel on CPU streams (fp32 accumulation), MLX's matmul on GPU streams."""
    ...

def affine_linear(
    x: mlx.core.array,
    w: mlx.core.array,
    scales: mlx.core.array,
    biases: mlx.core.array,
    bias: mlx.core.array | None = None,
    *,
    group_size: int,
    bits: int,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """``x [..., K] @ mx.dequantize(w, scales, biases, group_size, bits).T + bias`` -> ``[..., N]``
    (``nn.QuantizedLinear`` in affine mode, bits 4 / 8): mlx-marlin's kernel on CPU streams
    (fp32 accumulation), MLX's quantized_matmul on GPU streams."""
    ...

# --- moe
# Fused Mixture-of-Experts ops (cpp/ops/moe.h, cpp/bindings_moe.cpp).

def moe_route(
    logits: mlx.core.array,
    top_k: int,
    *,
    normalize: bool = True,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> tuple[mlx.core.array, mlx.core.array]:
    """Top-k routing: ``(indices [..., k] uint32, weights [..., k] logits.dtype)``."""
    ...

def moe_gemm(
    x: mlx.core.array,
    w: mlx.core.array,
    scales: mlx.core.array,
    indices: mlx.core.array,
    *,
    group_size: int,
    weights: mlx.core.array | None = None,
    activation: str | None = None,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """Grouped FP4 expert GEMM: ``x [..., K]`` or ``[..., k, K]`` with ``indices [..., k]``
    -> ``[..., k, N]``, or ``[..., N]`` combined with ``weights [..., k]``.

    An expert id outside ``[0, E)`` (data, known only at evaluation) makes the rows that
    depend on it NaN, on every backend; it is never clamped or used as an address."""
    ...

def moe_mlp(
    x: mlx.core.array,
    router_logits: mlx.core.array,
    w_gate: mlx.core.array,
    s_gate: mlx.core.array,
    w_up: mlx.core.array | None,
    s_up: mlx.core.array | None,
    w_down: mlx.core.array,
    s_down: mlx.core.array,
    *,
    top_k: int,
    group_size: int,
    activation: str | None = "silu",
    normalize: bool = True,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """Whole gated expert MLP (route, gate/up, act(gate)*up, down, combine): ``[..., N_out]``.

    fp32 accumulation; intermediates float32 on the CPU, ``x``'s dtype on Metal."""
    ...

# --- end moe

# --- attention
def attention(
    q: mlx.core.array,
    k: mlx.core.array,
    v: mlx.core.array,
    *,
    scale: float,
    mask: str | mlx.core.array | None = None,
    sinks: mlx.core.array | None = None,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """Flash attention ``softmax(scale * q @ k.T + mask) @ v`` (drop-in for
    ``mx.fast.scaled_dot_product_attention``, inference only).

    q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] (Hq % Hkv == 0), D in {64, 80, 96, 128, 256},
    float16/bfloat16/float32 (all the same); mask None, "causal" (end-aligned), bool
    (True = attend) or additive, broadcastable to [B, Hq, Lq, Lk]; sinks None or [Hq]
    float logits joining each row's softmax with a zero value (MLX sdpa's ``sinks``).
    Rows with no visible key give zeros.  Returns [B, Hq, Lq, D] in q's dtype.
    """
    ...
