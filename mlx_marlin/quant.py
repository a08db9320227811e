"""Quantization to and from the mlx-marlin FP4 (E2M1) layout.

Layout (docs/format.md): packed weights ``[K/8, N]`` uint32 where element ``(k, n)``
sits in word ``(k // 8, n)`` at bits ``4*(k % 8)``..``4*(k % 8)+3``; scales
``[K/group_size, N]`` float16 or bfloat16; ``w[n, k] = E2M1[code] * scale``.
Expert-batched weights add a leading ``E`` axis.  The format constants come from the
C++ header ``cpp/common/fp4_format.h`` through the extension, so Python and every
kernel decode with the same table.
"""

from __future__ import annotations

import numbers
from typing import Optional, Tuple

import mlx.core as mx

from . import _ext

E2M1_VALUES: Tuple[float, ...] = tuple(_ext.E2M1_TABLE)
"""Decoded value of each 4-bit code (bit 3 is the sign)."""

GROUP_SIZES: Tuple[int, ...] = tuple(_ext.GROUP_SIZES)
CODES_PER_WORD = 8
DEFAULT_GROUP_SIZE = 64

# Midpoints between neighbouring E2M1 magnitudes.  ``>=`` marks the midpoints where the
# upper neighbour has the even code, so exact ties round to the even code.
_THRESHOLDS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))

_SCALE_DTYPES = (mx.float16, mx.bfloat16)
_FLOAT_DTYPES = (mx.float16, mx.bfloat16, mx.float32)


def _check_group_size(group_size: int) -> None:
    # 32.0 == 32: only integers pass (a float would reach reshape), and no bools.
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size!r}.")


def _as_array(name: str, a) -> mx.array:
    if isinstance(a, mx.array):
        return a
    try:
        return mx.array(a)
    except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name} must be an mlx array, got {type(a).__name__}.") from e


def _encode(values: mx.array, scale: mx.array) -> mx.array:
    """Nearest E2M1 code (ties to even) of ``values / scale``; 0 where scale is 0."""
    safe = mx.where(scale > 0, scale, 1.0)
    a = mx.abs(values) / safe
    mag = mx.zeros(a.shape, dtype=mx.uint32)
    for t, inclusive in _THRESHOLDS:
        mag = mag + ((a >= t) if inclusive else (a > t)).astype(mx.uint32)
    mag = mx.where(scale > 0, mag, 0)
    sign = ((values < 0) & (mag > 0)).astype(mx.uint32) * 8
    return mag + sign


def _decode_codes(codes: mx.array) -> mx.array:
    return mx.take(mx.array(E2M1_VALUES, dtype=mx.float32), codes)


def _pack(codes: mx.array) -> mx.array:
    """codes [..., N, K] -> packed words [..., K/8, N]."""
    *lead, n, k = codes.shape
    t = mx.swapaxes(codes, -1, -2).reshape(*lead, k // CODES_PER_WORD, CODES_PER_WORD, n)
    shifts = (mx.arange(CODES_PER_WORD, dtype=mx.uint32) * 4).reshape(CODES_PER_WORD, 1)
    return mx.sum(t << shifts, axis=-2).astype(mx.uint32)


def _unpack(packed: mx.array) -> mx.array:
    """packed words [..., K/8, N] -> codes [..., K, N]."""
    *lead, kw, n = packed.shape
    shifts = (mx.arange(CODES_PER_WORD, dtype=mx.uint32) * 4).reshape(CODES_PER_WORD, 1)
    codes = (mx.expand_dims(packed, -2) >> shifts) & 0xF
    return codes.reshape(*lead, kw * CODES_PER_WORD, n)


def _group_view(w: mx.array, group_size: int) -> mx.array:
    *lead, n, k = w.shape
    return w.reshape(*lead, n, k // group_size, group_size)


def _check_weight(name: str, w: mx.array, group_size: int) -> None:
    if w.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16 or float32, got {w.dtype}.")
    if w.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape [N, K] or [E, N, K] (nn.Linear orientation), got {tuple(w.shape)}.")
    k = w.shape[-1]
    if k == 0 or w.shape[-2] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(w.shape)}.")
    if k % group_size:
        raise ValueError(f"{name}.shape[-1] (K = {k}) must be a multiple of group_size = {group_size}.")


def quantize(
    w: mx.array,
    group_size: int = DEFAULT_GROUP_SIZE,
    scale_dtype: mx.Dtype = mx.float16,
    *,
    scale_search: bool = False,
) -> Tuple[mx.array, mx.array]:
    """Quantize weights to the mlx-marlin FP4 (E2M1) layout.

    Args:
        w: ``[N, K]`` (``nn.Linear`` orientation) or ``[E, N, K]`` for experts;
            float16, bfloat16 or float32, finite.
        group_size: Elements along K sharing one scale: 32, 64 or 128.
        scale_dtype: ``mx.float16`` or ``mx.bfloat16``.
        scale_search: Try a range of scales below the absmax scale per group and keep
            the one with the lowest squared reconstruction error (slower, better).

    Returns:
        ``(packed, scales)``: ``[K/8, N]`` uint32 and ``[K/group_size, N]`` (with a
        leading ``E`` axis for 3-D input).  The scale is ``absmax / 6`` rounded to
        ``scale_dtype``; each value rounds to the nearest E2M1 value, ties to even.
    """
    w = _as_array("w", w)
    _check_group_size(group_size)
    if scale_dtype not in _SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be mx.float16 or mx.bfloat16, got {scale_dtype}.")
    _check_weight("w", w, group_size)
    if not mx.all(mx.isfinite(w)).item():
        raise ValueError("w contains NaN or Inf values; FP4 quantization needs finite weights.")

    g = _group_view(w.astype(mx.float32), group_size)
    absmax = mx.max(mx.abs(g), axis=-1, keepdims=True)
    scale = (absmax / 6.0).astype(scale_dtype)
    if not mx.all(mx.isfinite(scale)).item():
        raise ValueError(
            "w has values too large for float16 scales (absmax / 6 > 65504); use scale_dtype=mx.bfloat16."
        )
    if scale_search:
        scale = _search_scales(g, absmax, scale_dtype)
    codes = _encode(g, scale.astype(mx.float32))
    *lead, n, k = w.shape
    packed = _pack(codes.reshape(*lead, n, k))
    # Row-major, not a transposed view: the ops take weights as they are only when they
    # are row-major, and would otherwise copy (transpose) every expert's scales per call.
    scales = mx.contiguous(mx.swapaxes(scale.squeeze(-1), -1, -2))
    return packed, scales


def _search_scales(g: mx.array, absmax: mx.array, scale_dtype: mx.Dtype, steps: int = 16) -> mx.array:
    best_scale = (absmax / 6.0).astype(scale_dtype)
    best_err = _group_error(g, best_scale)
    for i in range(1, steps):
        # Shrinking the scale clips the largest value but refines every other one.
        factor = 1.0 - 0.3 * i / (steps - 1)
        cand = (absmax * (factor / 6.0)).astype(scale_dtype)
        err = _group_error(g, cand)
        better = err < best_err
        best_scale = mx.where(better, cand, best_scale)
        best_err = mx.where(better, err, best_err)
        mx.eval(best_scale, best_err)
    return best_scale


def _group_error(g: mx.array, scale: mx.array) -> mx.array:
    s = scale.astype(mx.float32)
    recon = _decode_codes(_encode(g, s)) * s
    return mx.sum(mx.square(recon - g), axis=-1, keepdims=True)


def dequantize(
    packed: mx.array,
    scales: mx.array,
    group_size: int = DEFAULT_GROUP_SIZE,
    dtype: mx.Dtype = mx.float32,
) -> mx.array:
    """Inverse of :func:`quantize`: ``[K/8, N]`` + ``[K/g, N]`` -> ``[N, K]``.

    Expert-batched inputs (``[E, K/8, N]``, ``[E, K/g, N]``) give ``[E, N, K]``.  With
    the default ``dtype=mx.float32`` the result is exact (each value is a product of an
    E2M1 value and a half-precision scale).
    """
    packed = _as_array("packed", packed)
    scales = _as_array("scales", scales)
    _check_group_size(group_size)
    if packed.dtype != mx.uint32:
        raise ValueError(f"packed must be uint32, got {packed.dtype}.")
    if packed.ndim not in (2, 3):
        raise ValueError(f"packed must have shape [K/8, N] or [E, K/8, N], got {tuple(packed.shape)}.")
    if scales.dtype not in _SCALE_DTYPES:
        raise ValueError(f"scales must be float16 or bfloat16, got {scales.dtype}.")
    if dtype not in (mx.float32, mx.float16, mx.bfloat16):
        raise ValueError(f"dtype must be mx.float32, mx.float16 or mx.bfloat16, got {dtype}.")
    k = packed.shape[-2] * CODES_PER_WORD
    if k % group_size:
        raise ValueError(f"K = 8 * packed.shape[-2] = {k} must be a multiple of group_size = {group_size}.")
    expected = (*packed.shape[:-2], k // group_size, packed.shape[-1])
    if tuple(scales.shape) != expected:
        raise ValueError(
            f"scales must have shape {expected} for packed of shape {tuple(packed.shape)} and "
            f"group_size {group_size}, got {tuple(scales.shape)}."
        )
    values = _decode_codes(_unpack(packed))  # [..., K, N]
    *lead, _, n = values.shape
    s = mx.repeat(scales.astype(mx.float32), group_size, axis=-2)
    return mx.swapaxes(values * s, -1, -2).astype(dtype)


_MLX_FP4_MODES = {"mxfp4": 32, "nvfp4": 16}


def from_mlx(
    wq: mx.array,
    scales: mx.array,
    mode: str = "mxfp4",
    group_size: int = 32,
    *,
    scale_dtype: mx.Dtype = mx.bfloat16,
    global_scale: Optional[mx.array] = None,
    strict: bool = False,
) -> Tuple[mx.array, mx.array]:
    """Convert ``mx.quantize(w, mode="mxfp4" | "nvfp4")`` output to this layout.

    MLX stores the same E2M1 codes, packed along K per row (``[N, K/8]``) with one
    8-bit scale per 32 (mxfp4, power-of-two E8M0) or 16 (nvfp4, FP8 E4M3) values.
    Each target group takes the largest MLX scale inside it and the values are
    re-encoded against it.

    Exact (bit-for-bit the same dequantized values) when:

    * ``mode="mxfp4"``, ``group_size=32``, ``scale_dtype=mx.bfloat16``: always
      (every E8M0 power of two is a bfloat16);
    * otherwise, for every group whose MLX sub-groups share one scale.  Sub-groups with
      a smaller scale lose the values that are not E2M1 multiples of the larger scale
      (rounded to nearest, ties to even).  float16 scales also cannot hold E8M0 scales
      outside ``[2**-24, 2**15]``.

    Args:
        wq: ``[N, K/8]`` (or ``[E, N, K/8]``) uint32 from ``mx.quantize``.
        scales: ``[N, K/32]`` (mxfp4) or ``[N, K/16]`` (nvfp4) uint8.
        mode: ``"mxfp4"`` or ``"nvfp4"``.
        group_size: Target group size (32, 64 or 128).
        scale_dtype: Target scale dtype.
        global_scale: nvfp4's optional per-tensor float32 scale.
        strict: Raise ``ValueError`` unless the conversion is exact.

    Returns:
        ``(packed, scales)`` as :func:`quantize` returns them.
    """
    wq = _as_array("wq", wq)
    scales = _as_array("scales", scales)
    if mode not in _MLX_FP4_MODES:
        raise ValueError(f"mode must be 'mxfp4' or 'nvfp4', got {mode!r}.")
    _check_group_size(group_size)
    if scale_dtype not in _SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be mx.float16 or mx.bfloat16, got {scale_dtype}.")
    if wq.dtype != mx.uint32 or wq.ndim not in (2, 3):
        raise ValueError(f"wq must be uint32 with shape [N, K/8] or [E, N, K/8], got {wq.dtype} {tuple(wq.shape)}.")
    mlx_group = _MLX_FP4_MODES[mode]
    k = wq.shape[-1] * CODES_PER_WORD
    expected = (*wq.shape[:-1], k // mlx_group)
    if scales.dtype != mx.uint8 or tuple(scales.shape) != expected:
        raise ValueError(
            f"scales must be uint8 with shape {expected} for {mode} and wq of shape {tuple(wq.shape)}, "
            f"got {scales.dtype} {tuple(scales.shape)}."
        )
    if k % group_size:
        raise ValueError(f"K = {k} must be a multiple of group_size = {group_size}.")
    if global_scale is not None and mode != "nvfp4":
        raise ValueError("global_scale is only used by mode='nvfp4'.")

    kwargs = {"global_scale": global_scale} if global_scale is not None else {}
    values = mx.dequantize(wq, scales, mode=mode, group_size=mlx_group, dtype=mx.float32, **kwargs)
    if mode == "mxfp4":
        sub = mx.power(2.0, scales.astype(mx.float32) - 127.0)
    else:
        sub = mx.from_fp8(scales, dtype=mx.float32)
        if global_scale is not None:
            sub = sub * global_scale.astype(mx.float32)
    *lead, n, _ = values.shape
    sub = sub.reshape(*lead, n, k // group_size, group_size // mlx_group)
    target = mx.max(sub, axis=-1, keepdims=True).astype(scale_dtype)
    if not mx.all(mx.isfinite(target)).item():
        raise ValueError(f"the {mode} scales do not fit in {scale_dtype}; use scale_dtype=mx.bfloat16.")
    g = _group_view(values, group_size)
    codes = _encode(g, target.astype(mx.float32)).reshape(*lead, n, k)
    packed = _pack(codes)
    out_scales = mx.contiguous(mx.swapaxes(target.squeeze(-1), -1, -2))  # row-major, as quantize's
    if strict:
        recon = dequantize(packed, out_scales, group_size)
        inexact = mx.sum(recon != values).item()
        if inexact:
            raise ValueError(
                f"from_mlx(strict=True): {inexact} of {values.size} values are not representable with "
                f"group_size={group_size} and {scale_dtype} scales; use group_size={mlx_group if mlx_group >= 32 else 32}"
                f"{' and scale_dtype=mx.bfloat16' if mode == 'mxfp4' else ''} or strict=False."
            )
    return packed, out_scales
