"""float64 references shared by the op tests."""

import math

import mlx.core as mx
import numpy as np

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)

# Relative tolerance on max|err| / max|ref| by activation dtype (inputs are rounded to
# the dtype before the reference sees them, so this only covers accumulation and the
# final rounding of the output).
TOL = {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}


def on_cuda(stream) -> bool:
    """Whether `stream` (the tests' `stream` fixture, or a device) runs on MLX's CUDA backend."""
    return stream == mx.gpu and hasattr(mx, "cuda") and mx.cuda.is_available()


def to_np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


def unpack_reference(packed: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """Independent (loop-based) decode of the packed layout -> [N, K] float64."""
    kw, n = packed.shape
    k = kw * 8
    out = np.empty((n, k), dtype=np.float64)
    for kk in range(k):
        codes = (packed[kk // 8, :].astype(np.uint64) >> (4 * (kk % 8))) & 0xF
        out[:, kk] = E2M1[codes] * scales[kk // group_size, :].astype(np.float64)
    return out


def activation(y: np.ndarray, name):
    if name is None or name == "none":
        return y
    if name == "relu":
        return np.maximum(y, 0)
    # 1 + erf(z) as erfc(-z) and 0.5 (1 + tanh(u)) as 1 / (1 + exp(-2u)): the same
    # values without the cancellation that loses them (even in float64) for y << 0.
    if name == "gelu":
        erfc = np.vectorize(math.erfc, otypes=[np.float64])
        return 0.5 * y * erfc(-y / math.sqrt(2))
    if name == "gelu_approx":
        with np.errstate(over="ignore"):  # exp -> inf for y << 0 gives y / inf = -0, as it should
            return y / (1 + np.exp(-2 * math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
    if name == "silu":
        with np.errstate(over="ignore"):  # likewise
            return y / (1 + np.exp(-y))
    raise ValueError(name)


def rel_err(out: mx.array, ref: np.ndarray) -> float:
    o = to_np(out)
    assert o.shape == ref.shape, (o.shape, ref.shape)
    assert np.all(np.isfinite(o)), "non-finite values in output"
    return float(np.abs(o - ref).max() / max(np.abs(ref).max(), 1e-30))


def attention(q, k, v, scale, mask=None, causal=False, sinks=None) -> np.ndarray:
    """float64 softmax attention (GQA: query head h uses kv head h // (Hq / Hkv));
    causal aligned to the end; bool masks (True = attend) or additive masks; sinks: one
    logit per query head joining each row's softmax with a zero value; rows with no
    visible key give zeros."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    G = q.shape[1] // k.shape[1]
    k = np.repeat(k, G, axis=1)
    v = np.repeat(v, G, axis=1)
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)  # einsum: steadier than batched BLAS on 2 shared cores
    Lq, Lk = q.shape[2], k.shape[2]
    if causal:
        i = np.arange(Lq)[:, None]
        j = np.arange(Lk)[None]
        s = np.where(j <= i + Lk - Lq, s, -np.inf)
    if mask is not None:
        mask = np.asarray(mask)
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask.astype(np.float64)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    denominator = l
    if sinks is not None:
        denominator = l + np.exp(np.asarray(sinks, np.float64)[None, :, None, None] - m)
    return np.where(l > 0, np.einsum("bhij,bhjd->bhid", p, v) / np.where(l > 0, denominator, 1.0), 0.0)


# ----------------------------------------------------------------- MoE
def moe_route(logits: np.ndarray, k: int, normalize: bool):
    """Softmax (float64) + stable ranking by descending logit, ties -> lower id, NaN
    logits after every other (then by id); a row of -inf / NaN only gives softmax over 0."""
    key = np.where(np.isnan(logits), -np.inf, logits)
    order = np.stack([np.lexsort((np.arange(logits.shape[1]), np.isnan(row), -key_row))[:k]
                      for row, key_row in zip(logits, key)]) if logits.size else np.zeros((0, k), np.int64)
    m = np.nanmax(key, axis=-1, keepdims=True) if logits.size else np.zeros((0, 1))
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(logits - m)
    total = p.sum(-1, keepdims=True)
    w = np.take_along_axis(p, order, -1)
    return order, w / (w.sum(-1, keepdims=True) if normalize else total)


def moe_gemm(x: np.ndarray, dense: np.ndarray, idx: np.ndarray, weights=None, act=None):
    """y[t, j] = act(x_row(t, j) @ dense[idx[t, j]].T), one expert at a time (no
    [T, k, N, K] gather); x is [T, K] (shared by the slots) or [T, k, K]."""
    T, k = idx.shape
    y = np.zeros((T, k, dense.shape[1]))
    for e in np.unique(idx):
        t, j = np.nonzero(idx == e)
        rows = x[t] if x.ndim == 2 else x[t, j]
        y[t, j] = rows @ dense[e].T
    y = activation(y, act)
    return y if weights is None else np.einsum("tj,tjn->tn", weights, y)


def moe_mlp(x, logits, gate, up, down, k, act="silu", normalize=True):
    idx, w = moe_route(logits, k, normalize)
    h = activation(moe_gemm(x, gate, idx), act) * moe_gemm(x, up, idx)
    return moe_gemm(h, down, idx, w)


# ----------------------------------------------------------------- extreme scales
def extreme_scale_exponents(rng, groups: int) -> np.ndarray:
    """Per-group scale exponents along K for extreme_scale_weights (2^116 and 2^-100 always
    among them)."""
    exps = rng.choice([-100, -60, 0, 60, 116], size=groups)
    exps[: min(groups, 2)] = [116, -100][: min(groups, 2)]
    return exps


def extreme_scale_weights(rng, lead: tuple, n: int, k: int, group_size: int, exps=None):
    """FP4 weights [*lead, N, K] whose bfloat16 group scales span 2^-101 .. 2^116, with
    some all-zero groups carrying a 2^120 scale, and per-k activation magnitudes that
    balance the scales (x @ w.T stays far inside float32 / bfloat16 range, every
    product and partial sum normal).  A kernel that multiplies a scale by a power of two
    (say 2^14) before using it overflows here, and turns the zero groups into NaN.
    `exps`: the per-group exponents (extreme_scale_exponents), for weights that share
    one activation (gate and up).
    Returns (packed, scales, dense float64 [*lead, N, K], x magnitude per k [K])."""
    import mlx_marlin as mm

    groups = k // group_size
    exps = extreme_scale_exponents(rng, groups) if exps is None else np.asarray(exps)
    w = rng.standard_normal((*lead, n, k)) * np.repeat(np.exp2(exps.astype(np.float64)), group_size)
    zero = rng.random((*lead, n, groups)) < 0.15
    w *= ~np.repeat(zero, group_size, axis=-1)
    packed, scales = mm.quantize(mx.array(w.astype(np.float32)), group_size, mx.bfloat16)
    s = np.array(scales.astype(mx.float32))  # [*lead, K / g, N]
    s[np.swapaxes(zero, -1, -2)] = 2.0**120
    scales = mx.array(s).astype(mx.bfloat16)
    dense = np.array(mm.dequantize(packed, scales, group_size).astype(mx.float32)).astype(np.float64)
    x_mag = np.repeat(np.exp2(-np.minimum(exps, 100).astype(np.float64)), group_size)
    return packed, scales, dense, x_mag
