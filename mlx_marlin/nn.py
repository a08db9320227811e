"""MLX ``nn`` layers backed by the mlx-marlin FP4 ops.

``MarlinLinear`` replaces ``nn.Linear`` / ``nn.QuantizedLinear``; ``MarlinSwitchLinear``
and ``MarlinSwitchGLU`` replace mlx-lm's ``SwitchLinear`` / ``SwitchGLU`` (same call
signature ``(x, indices)``).  Packed weights and scales are frozen parameters, so LoRA-style
adapters train on top of them like on ``nn.QuantizedLinear``.

``DenseLinear`` / ``DenseEmbedding`` are ``nn.Linear`` / ``nn.Embedding`` with the same
parameters whose products (``x @ W.T``, and ``as_linear`` for tied output heads) run
through :func:`mlx_marlin.dense_linear`: mlx-marlin's kernel on the CPU, MLX's matmul on
a GPU.  They carry the layers a model keeps unquantized (output head, routers).
``AffineLinear`` / ``AffineEmbedding`` do the same for layers left in MLX's affine 4 / 8-bit
quantization, through :func:`mlx_marlin.affine_linear`.
"""

from __future__ import annotations

from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn

from . import _ext
from .quant import CODES_PER_WORD, DEFAULT_GROUP_SIZE, _check_group_size, from_mlx, quantize


_GPU_OPS = frozenset(_ext._gpu_ops())


def op_stream(op: str = "fp4_gemm"):
    """Stream for `op`: the default device where this build has GPU kernels for the op,
    else the CPU (so layers still run on a Metal or CUDA MLX, through unified or host
    memory, for ops whose GPU kernels are not in this build)."""
    if mx.default_device() == mx.cpu or op in _GPU_OPS:
        return None
    return mx.cpu


def _init_fp4_parameters(module: nn.Module, leading: tuple, input_dims: int, output_dims: int, bias: bool,
                         group_size: int, scale_dtype: mx.Dtype) -> None:
    """Empty packed weight / scales / bias of the FP4 layout on `module`, frozen."""
    _check_group_size(group_size)
    if scale_dtype not in (mx.float16, mx.bfloat16):
        raise ValueError(f"scale_dtype must be mx.float16 or mx.bfloat16, got {scale_dtype}.")
    if input_dims % group_size:
        raise ValueError(f"input_dims ({input_dims}) must be a multiple of group_size ({group_size}).")
    module.group_size = group_size
    module.weight = mx.zeros((*leading, input_dims // CODES_PER_WORD, output_dims), dtype=mx.uint32)
    module.scales = mx.zeros((*leading, input_dims // group_size, output_dims), dtype=scale_dtype)
    if bias:
        module.bias = mx.zeros((*leading, output_dims))
    module.freeze()


class MarlinLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored in the mlx-marlin FP4 layout.

    Args:
        input_dims: K (a multiple of ``group_size``).
        output_dims: N.
        bias: Whether the layer has a bias.
        group_size: 32, 64 or 128.
        scale_dtype: ``mx.float16`` or ``mx.bfloat16``.

    The parameters are ``weight`` (``[K/8, N]`` uint32), ``scales`` (``[K/g, N]``) and
    optionally ``bias`` (``[N]``). Use :meth:`from_linear` or :meth:`from_quantized` to
    build one from an existing layer.
    """

    def __init__(
        self,
        input_dims: int,
        output_dims: int,
        bias: bool = True,
        group_size: int = DEFAULT_GROUP_SIZE,
        scale_dtype: mx.Dtype = mx.float16,
    ):
        super().__init__()
        _init_fp4_parameters(self, (), input_dims, output_dims, bias, group_size, scale_dtype)

    def unfreeze(self, *args, **kwargs):
        # The packed weight and scales stay frozen: fp4_gemm has no gradient for them.
        super().unfreeze(*args, **kwargs)
        self.freeze(recurse=False, keys=["weight", "scales"])
        return self

    @property
    def input_dims(self) -> int:
        return self.weight.shape[0] * CODES_PER_WORD

    @property
    def output_dims(self) -> int:
        return self.weight.shape[1]

    def _extra_repr(self) -> str:
        return (
            f"input_dims={self.input_dims}, output_dims={self.output_dims}, bias={'bias' in self}, "
            f"group_size={self.group_size}, format=fp4_e2m1"
        )

    def __call__(self, x: mx.array) -> mx.array:
        return _ext.fp4_gemm(
            x, self["weight"], self["scales"], self.get("bias"), group_size=self.group_size, stream=op_stream()
        )

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int = DEFAULT_GROUP_SIZE,
        scale_dtype: mx.Dtype = mx.float16,
        scale_search: bool = False,
    ) -> "MarlinLinear":
        """Quantize an ``nn.Linear`` (weight ``[N, K]``)."""
        out_dims, in_dims = linear.weight.shape
        layer = cls(in_dims, out_dims, "bias" in linear, group_size, scale_dtype)
        layer.weight, layer.scales = quantize(linear.weight, group_size, scale_dtype, scale_search=scale_search)
        if "bias" in linear:
            layer.bias = linear.bias
        return layer

    @classmethod
    def from_quantized(
        cls, qlinear: nn.QuantizedLinear, group_size: Optional[int] = None, strict: bool = False
    ) -> "MarlinLinear":
        """Convert an ``nn.QuantizedLinear`` in ``mxfp4`` or ``nvfp4`` mode (see
        :func:`mlx_marlin.from_mlx` for when the conversion is exact)."""
        mode = getattr(qlinear, "mode", "affine")
        if mode not in ("mxfp4", "nvfp4"):
            raise ValueError(f"qlinear must use mode 'mxfp4' or 'nvfp4', got {mode!r}.")
        group_size = group_size or 32
        packed, scales = from_mlx(qlinear.weight, qlinear.scales, mode, group_size, strict=strict)
        out_dims = packed.shape[1]
        layer = cls(packed.shape[0] * CODES_PER_WORD, out_dims, "bias" in qlinear, group_size, scales.dtype)
        layer.weight, layer.scales = packed, scales
        if "bias" in qlinear:
            layer.bias = qlinear.bias
        return layer


# The fused epilogue activations of moe_gemm, as MLX ops: the same functions, applied
# after a bias that the op itself does not add.
_EPILOGUE_ACTIVATIONS = {"relu": nn.relu, "silu": nn.silu, "gelu": nn.gelu, "gelu_approx": nn.gelu_approx}


def _same_layer_as(cls, module: nn.Module):
    """A `cls` holding `module`'s arrays (shared), frozen keys and training mode."""
    layer = cls.__new__(cls)
    nn.Module.__init__(layer)
    for key, value in module.items():
        setattr(layer, key, value)
    layer._no_grad = set(module._no_grad)
    layer.train(module.training)
    return layer


class DenseLinear(nn.Linear):
    """``nn.Linear`` (same parameters, same result up to float32 summation order) whose
    product runs through :func:`mlx_marlin.dense_linear`: on the CPU mlx-marlin's kernel
    instead of MLX's reference-BLAS matmul (for a 32000 x 2048 bfloat16 output head at one
    token, ~6 ms instead of ~60 on a 2-core x86 machine); on a GPU, MLX's own ``addmm``.
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _ext.dense_linear(x, self["weight"], self.get("bias"))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "DenseLinear":
        """The same layer (its arrays are shared, not copied)."""
        return _same_layer_as(cls, linear)


class DenseEmbedding(nn.Embedding):
    """``nn.Embedding`` whose ``as_linear`` (the output head of models with tied
    embeddings) runs through :func:`mlx_marlin.dense_linear`; lookups are unchanged."""

    def as_linear(self, x: mx.array) -> mx.array:
        return _ext.dense_linear(x, self["weight"])

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "DenseEmbedding":
        """The same layer (its arrays are shared, not copied)."""
        return _same_layer_as(cls, embedding)


# What affine_linear takes of MLX's affine mode (cpp/ops/affine_linear.h).
_AFFINE_BITS = tuple(_ext.AFFINE_BITS)
_AFFINE_GROUP_SIZES = tuple(_ext.AFFINE_GROUP_SIZES)


def affine_kernel_applies(layer) -> bool:
    """Whether `layer` (an ``nn.QuantizedLinear`` / ``nn.QuantizedEmbedding``) is in MLX's
    affine mode with bits and group size that :func:`mlx_marlin.affine_linear` takes."""
    return (getattr(layer, "mode", "affine") == "affine" and "biases" in layer
            and getattr(layer, "bits", None) in _AFFINE_BITS and getattr(layer, "group_size", None) in _AFFINE_GROUP_SIZES)


def _require_affine(layer, what: str) -> None:
    """ValueError naming `layer`'s mode, bits and group size unless affine_linear takes it."""
    if not affine_kernel_applies(layer):
        raise ValueError(f"{what} in mode 'affine' with bits 4 or 8 and group_size 32, 64 or 128, got "
                         f"mode={getattr(layer, 'mode', None)!r}, bits={getattr(layer, 'bits', None)}, "
                         f"group_size={getattr(layer, 'group_size', None)}.")


def _same_quantized_layer_as(cls, module: nn.Module):
    """`_same_layer_as` plus the quantization settings MLX keeps as plain attributes."""
    layer = _same_layer_as(cls, module)
    for name in ("group_size", "bits", "mode", "num_embeddings", "dims"):
        if name in vars(module):
            setattr(layer, name, getattr(module, name))
    return layer


class AffineLinear(nn.QuantizedLinear):
    """``nn.QuantizedLinear`` in MLX's affine mode (4 or 8 bits; same parameters, same result
    up to float32 rounding) whose product runs through :func:`mlx_marlin.affine_linear`: on
    the CPU mlx-marlin's kernel instead of MLX's ``quantized_matmul`` (one token through a
    2880 x 4096 8-bit layer: ~0.4 ms instead of ~85 on a 2-core x86 machine); on a GPU,
    MLX's own ``quantized_matmul``.
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _ext.affine_linear(x, self["weight"], self["scales"], self["biases"], self.get("bias"),
                                  group_size=self.group_size, bits=self.bits)

    @classmethod
    def from_quantized_linear(cls, layer: nn.QuantizedLinear) -> "AffineLinear":
        """The same layer (its arrays are shared, not copied); it must be in affine mode
        with bits 4 or 8 and group size 32, 64 or 128."""
        _require_affine(layer, "AffineLinear takes an nn.QuantizedLinear")
        return _same_quantized_layer_as(cls, layer)


class AffineEmbedding(nn.QuantizedEmbedding):
    """``nn.QuantizedEmbedding`` in MLX's affine mode whose ``as_linear`` (the output head of
    models with tied embeddings) runs through :func:`mlx_marlin.affine_linear`; lookups are
    unchanged."""

    def as_linear(self, x: mx.array) -> mx.array:
        return _ext.affine_linear(x, self["weight"], self["scales"], self["biases"],
                                  group_size=self.group_size, bits=self.bits)

    @classmethod
    def from_quantized_embedding(cls, embedding: nn.QuantizedEmbedding) -> "AffineEmbedding":
        """The same layer (its arrays are shared, not copied); the same conditions as
        :meth:`AffineLinear.from_quantized_linear`."""
        _require_affine(embedding, "AffineEmbedding takes an nn.QuantizedEmbedding")
        return _same_quantized_layer_as(cls, embedding)


def _quantized_fp4_mode(layer) -> Optional[str]:
    """'mxfp4' / 'nvfp4' for a layer MLX quantized to FP4, None for any other layer."""
    mode = getattr(layer, "mode", None)
    return mode if "scales" in layer and mode in ("mxfp4", "nvfp4") else None


def _squeeze_expert_input(x: mx.array, indices: mx.array) -> mx.array:
    """Accept mlx-lm's expanded SwitchLinear input ``[..., 1|k, 1, K]`` as well as
    ``[..., K]`` (shared by every selected expert) and ``[..., k, K]``."""
    if x.ndim == indices.ndim + 2 and x.shape[-2] == 1:
        x = x.squeeze(-2)
    if x.ndim == indices.ndim + 1 and x.shape[-2] == 1:
        x = x.squeeze(-2)
    return x


class MarlinSwitchLinear(nn.Module):
    """Drop-in for mlx-lm's ``SwitchLinear``: ``E`` experts ``[N, K]`` in FP4, applied
    to each token's selected experts with :func:`mlx_marlin.moe_gemm`.

    ``__call__(x, indices, sorted_indices=False)`` returns ``[..., k, 1, N]`` for mlx-lm's
    expanded input ``[..., 1|k, 1, K]`` (as ``SwitchLinear`` does) and ``[..., k, N]`` for
    ``[..., K]`` or ``[..., k, K]``.  ``sorted_indices`` is accepted for compatibility; the
    op groups tokens by expert itself.
    """

    def __init__(
        self,
        input_dims: int,
        output_dims: int,
        num_experts: int,
        bias: bool = False,
        group_size: int = DEFAULT_GROUP_SIZE,
        scale_dtype: mx.Dtype = mx.float16,
    ):
        super().__init__()
        _init_fp4_parameters(self, (num_experts,), input_dims, output_dims, bias, group_size, scale_dtype)

    @property
    def input_dims(self) -> int:
        return self.weight.shape[1] * CODES_PER_WORD

    @property
    def output_dims(self) -> int:
        return self.weight.shape[2]

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        expanded = x.ndim == indices.ndim + 2
        y = self.apply_experts(_squeeze_expert_input(x, indices), indices)
        return mx.expand_dims(y, -2) if expanded else y

    def apply_experts(self, x: mx.array, indices: mx.array, activation: Optional[str] = None) -> mx.array:
        from . import moe_gemm

        if activation is not None and activation not in _EPILOGUE_ACTIVATIONS:
            raise ValueError(f"activation must be None or one of {sorted(_EPILOGUE_ACTIVATIONS)}, got {activation!r}.")
        has_bias = "bias" in self
        # moe_gemm takes x [..., K] / [..., k, K] and indices [..., k] as they are: no
        # reshape here, whose target a shapeless mx.compile would fix at trace time.
        # The op fuses the activation into its epilogue, but it has no bias: with one, the
        # activation has to come after the bias, outside the op.
        y = moe_gemm(x, self["weight"], self["scales"], indices, group_size=self.group_size,
                     activation=None if has_bias else activation, stream=op_stream("moe_gemm"))
        if has_bias:
            # Ids outside [0, E) give NaN rows in moe_gemm; clamped here, they read no
            # memory outside the bias (MLX's take does no bounds checks) and the NaN stays.
            y = y + self["bias"][mx.clip(indices, 0, self.num_experts - 1)]
            if activation is not None:
                y = _EPILOGUE_ACTIVATIONS[activation](y)
        return y

    @classmethod
    def from_switch_linear(cls, layer, group_size: int = DEFAULT_GROUP_SIZE, scale_dtype: mx.Dtype = mx.float16,
                           scale_search: bool = False) -> "MarlinSwitchLinear":
        """Quantize an mlx-lm ``SwitchLinear`` (weight ``[E, N, K]``)."""
        if layer.weight.ndim != 3 or not mx.issubdtype(layer.weight.dtype, mx.floating):
            raise ValueError(f"layer.weight must be a floating-point [E, N, K] array, got {layer.weight.dtype} "
                             f"{tuple(layer.weight.shape)} (use from_quantized for layers MLX quantized to FP4).")
        e, n, k = layer.weight.shape
        new = cls(k, n, e, "bias" in layer, group_size, scale_dtype)
        new.weight, new.scales = quantize(layer.weight, group_size, scale_dtype, scale_search=scale_search)
        if "bias" in layer:
            new.bias = layer.bias
        return new

    @classmethod
    def from_quantized(cls, layer, group_size: Optional[int] = None, strict: bool = False,
                       scale_dtype: mx.Dtype = mx.bfloat16) -> "MarlinSwitchLinear":
        """Convert mlx-lm's ``QuantizedSwitchLinear`` in ``mxfp4`` or ``nvfp4`` mode (e.g. the
        experts of gpt-oss, which ship in mxfp4) through :func:`mlx_marlin.from_mlx`: exact
        for mxfp4 with ``group_size=32`` and bfloat16 scales (the defaults here)."""
        mode = _quantized_fp4_mode(layer)
        if mode is None:
            raise ValueError(f"layer must be quantized in mode 'mxfp4' or 'nvfp4', got "
                             f"{getattr(layer, 'mode', 'no quantization')!r}.")
        group_size = group_size or 32
        packed, scales = from_mlx(layer["weight"], layer["scales"], mode, group_size, scale_dtype=scale_dtype,
                                  global_scale=layer.get("global_scale"), strict=strict)
        e, k_words, n = packed.shape
        new = cls(k_words * CODES_PER_WORD, n, e, "bias" in layer, group_size, scales.dtype)
        new.weight, new.scales = packed, scales
        if "bias" in layer:
            new.bias = layer.bias
        return new

    @classmethod
    def from_module(cls, layer, group_size: int = DEFAULT_GROUP_SIZE, scale_dtype: mx.Dtype = mx.float16,
                    scale_search: bool = False) -> "MarlinSwitchLinear":
        """:meth:`from_quantized` for an mxfp4 / nvfp4 ``QuantizedSwitchLinear`` (its codes
        re-encoded at ``group_size``, with bfloat16 scales as :meth:`MarlinLinear.from_quantized`
        gives), else :meth:`from_switch_linear` with ``scale_dtype`` scales."""
        if _quantized_fp4_mode(layer) is not None:
            return cls.from_quantized(layer, group_size)
        return cls.from_switch_linear(layer, group_size, scale_dtype, scale_search)


def _is_swiglu(activation) -> bool:
    """None or mlx-lm's own ``SwiGLU``: ``silu(gate) * up``, whose silu the gate GEMM fuses."""
    return activation is None or (type(activation).__name__ == "SwiGLU"
                                  and type(activation).__module__.startswith("mlx_lm."))


def _swiglu(up: mx.array, gate: mx.array) -> mx.array:
    return nn.silu(gate) * up


class MarlinSwitchGLU(nn.Module):
    """Drop-in for mlx-lm's ``SwitchGLU``: ``down(activation(up(x), gate(x)))`` per selected
    expert, returning ``[..., k, D]``.

    ``activation`` is called like ``SwitchGLU``'s, as ``activation(up, gate)``; ``None``
    (or mlx-lm's ``SwiGLU``) is ``silu(gate) * up``, with the silu fused into the gate
    GEMM's epilogue when the projections have no bias.  Any other module (gpt-oss's
    ``SwigluOAI``, Gemma's ``GeGLU``, ...) runs as MLX ops between the expert GEMMs.
    """

    def __init__(
        self,
        input_dims: int,
        hidden_dims: int,
        num_experts: int,
        bias: bool = False,
        group_size: int = DEFAULT_GROUP_SIZE,
        scale_dtype: mx.Dtype = mx.float16,
        activation: Optional[Callable[[mx.array, mx.array], mx.array]] = None,
    ):
        super().__init__()
        self.gate_proj = MarlinSwitchLinear(input_dims, hidden_dims, num_experts, bias, group_size, scale_dtype)
        self.up_proj = MarlinSwitchLinear(input_dims, hidden_dims, num_experts, bias, group_size, scale_dtype)
        self.down_proj = MarlinSwitchLinear(hidden_dims, input_dims, num_experts, bias, group_size, scale_dtype)
        self.activation = activation

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        if _is_swiglu(self.activation):
            # apply_experts fuses the silu into the gate GEMM (after the bias, if any).
            gate = self.gate_proj.apply_experts(x, indices, activation="silu")
            hidden = gate * self.up_proj.apply_experts(x, indices)
        else:
            up = self.up_proj.apply_experts(x, indices)
            hidden = self.activation(up, self.gate_proj.apply_experts(x, indices))
        return self.down_proj.apply_experts(hidden, indices)

    @classmethod
    def from_switch_glu(cls, layer, group_size: int = DEFAULT_GROUP_SIZE, scale_dtype: mx.Dtype = mx.float16,
                        scale_search: bool = False) -> "MarlinSwitchGLU":
        """Convert an mlx-lm ``SwitchGLU``, keeping its activation.  Its projections may be
        ``SwitchLinear`` (quantized here) or ``QuantizedSwitchLinear`` in mxfp4 / nvfp4 mode
        (their codes re-encoded, see :meth:`MarlinSwitchLinear.from_quantized`)."""
        projections = {name: getattr(layer, name) for name in ("gate_proj", "up_proj", "down_proj")}
        for name, proj in projections.items():
            if _quantized_fp4_mode(proj) is None and "scales" in proj:
                raise ValueError(f"layer.{name} is quantized in mode {getattr(proj, 'mode', '?')!r}; only "
                                 "unquantized, mxfp4 and nvfp4 experts convert.")
        converted = {name: MarlinSwitchLinear.from_module(proj, group_size, scale_dtype, scale_search)
                     for name, proj in projections.items()}
        g = converted["gate_proj"]
        new = cls(g.input_dims, g.output_dims, g.num_experts, "bias" in g, group_size, g.scales.dtype,
                  activation=getattr(layer, "activation", None))
        for name, proj in converted.items():
            setattr(new, name, proj)
        return new
