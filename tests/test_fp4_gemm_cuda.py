"""fp4_gemm on MLX's CUDA backend, against a float64 reference.

Skips cleanly unless MLX has a CUDA GPU (``mx.cuda.is_available()``).  Run with
``MLX_MARLIN_CUDA_POISON=1`` so every output buffer is filled with NaN before the kernel
runs: an element the kernel fails to write then fails the comparison.
"""

import os

import numpy as np
import pytest

import mlx.core as mx

cuda_ok = hasattr(mx, "cuda") and mx.cuda.is_available()
pytestmark = pytest.mark.skipif(not cuda_ok, reason="needs MLX with the CUDA backend and a GPU")

if cuda_ok:
    import mlx_marlin as mm

# Relative-norm tolerances (output rounding dominates: fp32 accumulation everywhere).
TOL = {mx.float32: 2e-5, mx.float16: 1.5e-3, mx.bfloat16: 8e-3}
ACTS = [None, "relu", "gelu", "gelu_approx", "silu"]
_SEED = int(os.environ.get("MLX_MARLIN_TEST_SEED", "0")) or np.random.SeedSequence().entropy % (2**31)


def _act(y, name):
    from math import erf, pi, sqrt

    if name is None:
        return y
    if name == "relu":
        return np.maximum(y, 0)
    if name == "gelu":
        return 0.5 * y * (1 + np.vectorize(erf)(y / sqrt(2)))
    if name == "gelu_approx":
        return 0.5 * y * (1 + np.tanh(sqrt(2 / pi) * (y + 0.044715 * y**3)))
    if name == "silu":
        return y / (1 + np.exp(-y))
    raise ValueError(name)


def _make(rng, M, N, K, g, dtype, scale_dtype, bias):
    w = mx.array(rng.standard_normal((N, K)).astype(np.float32) * 0.05)
    packed, scales = mm.quantize(w, group_size=g, scale_dtype=scale_dtype)
    x = mx.array(rng.standard_normal((M, K)).astype(np.float32)).astype(dtype)
    b = mx.array(rng.standard_normal((N,)).astype(np.float32)) if bias else None
    W = np.array(mm.dequantize(packed, scales, g)).astype(np.float64)  # [N, K], exact
    return x, packed, scales, b, W


def _rel(out, ref):
    out = np.array(out.astype(mx.float32)).astype(np.float64)
    assert np.all(np.isfinite(out)), "non-finite output (unwritten element?)"
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)


SHAPES = [  # M, N, K
    (1, 8, 128), (1, 200, 384), (2, 1000, 128), (5, 40, 4096), (16, 264, 256),
    (17, 136, 384), (33, 96, 128), (100, 520, 512), (257, 72, 256), (64, 4096, 1024),
    (3, 13, 128), (9, 37, 256),  # N % 8 != 0: SIMT path
]


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward(dtype, shape):
    rng = np.random.default_rng(_SEED + hash(shape) % 1000)
    M, N, K = shape
    for i, g in enumerate((32, 64, 128)):
        sdt = (mx.float16, mx.bfloat16)[i % 2]
        act = ACTS[(i + M) % len(ACTS)]
        x, w, s, b, W = _make(rng, M, N, K, g, dtype, sdt, bias=(i != 1))
        y = mm.fp4_gemm(x, w, s, b, group_size=g, activation=act, stream=mx.gpu)
        mx.eval(y)
        assert y.dtype == dtype and y.shape == (M, N)
        ref = np.array(x.astype(mx.float32)).astype(np.float64) @ W.T
        if b is not None:
            ref = ref + np.array(b).astype(np.float64)
        ref = _act(ref, act)
        err = _rel(y, ref)
        assert err < TOL[dtype], f"g={g} act={act} scales={sdt}: rel err {err:.3e}"


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_all_activations_decode_and_prefill(act, dtype):
    rng = np.random.default_rng(_SEED + 7)
    for M in (1, 12, 80):
        x, w, s, b, W = _make(rng, M, 264, 512, 64, dtype, mx.bfloat16, bias=True)
        y = mm.fp4_gemm(x, w, s, b, group_size=64, activation=act, stream=mx.gpu)
        ref = _act(np.array(x.astype(mx.float32)).astype(np.float64) @ W.T + np.array(b), act)
        assert _rel(y, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
def test_vjp_transposed(dtype):
    rng = np.random.default_rng(_SEED + 11)
    for M, N, K, g in ((1, 40, 128, 32), (7, 200, 384, 64), (33, 136, 256, 128)):
        x, w, s, b, W = _make(rng, M, N, K, g, dtype, mx.float16, bias=True)
        cot = mx.array(rng.standard_normal((M, N)).astype(np.float32)).astype(dtype)
        f = lambda xx: mm.fp4_gemm(xx, w, s, b, group_size=g, stream=mx.gpu)  # noqa: E731
        _, (gx,) = mx.vjp(f, [x], [cot])
        mx.eval(gx)
        ref = np.array(cot.astype(mx.float32)).astype(np.float64) @ W
        assert gx.shape == (M, K)
        assert _rel(gx, ref) < TOL[dtype] * 2


def test_gpu_matches_cpu():
    rng = np.random.default_rng(_SEED + 13)
    x, w, s, b, _ = _make(rng, 4, 136, 256, 32, mx.float32, mx.float16, bias=True)
    yg = mm.fp4_gemm(x, w, s, b, group_size=32, activation="silu", stream=mx.gpu)
    yc = mm.fp4_gemm(x, w, s, b, group_size=32, activation="silu", stream=mx.cpu)
    np.testing.assert_allclose(np.array(yg), np.array(yc), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["0", "1", "2", "3", "4", "mma"])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_decode_variants(variant, dtype, monkeypatch):
    """Every compiled decode (M <= 16) kernel variant, forced with MLX_MARLIN_CUDA_DECODE,
    on shapes off the strip width, with K splits that leave some warps without groups."""
    monkeypatch.setenv("MLX_MARLIN_CUDA_DECODE", variant)
    rng = np.random.default_rng(_SEED + 17 + int(variant if variant != "mma" else 9))
    for i, (M, N, K, g) in enumerate(((1, 14336, 4096, 64), (4, 200, 384, 32), (8, 72, 256, 128),
                                      (9, 1000, 1024, 64), (16, 136, 4096, 32), (13, 8, 128, 64))):
        act = ACTS[i % len(ACTS)]
        sdt = (mx.float16, mx.bfloat16)[i % 2]
        x, w, s, b, W = _make(rng, M, N, K, g, dtype, sdt, bias=(i % 3 != 1))
        y = mm.fp4_gemm(x, w, s, b, group_size=g, activation=act, stream=mx.gpu)
        ref = np.array(x.astype(mx.float32)).astype(np.float64) @ W.T
        if b is not None:
            ref = ref + np.array(b).astype(np.float64)
        err = _rel(y, _act(ref, act))
        assert err < TOL[dtype], f"M={M} N={N} K={K} g={g}: rel err {err:.3e}"


@pytest.mark.parametrize("variant,splits", [("token", None), ("token0", "1"), ("token0", "3"), ("token1", "2"),
                                            ("token1", "5"), ("token2", "4"), ("token2", "16")])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_token_kernel(variant, splits, dtype, monkeypatch):
    """The one-token decode kernel (fp4_gemv_token, M = 1): every compiled variant, K
    split over 1..16 blocks per strip (uneven slices, splits that leave warps or whole
    blocks without a group), all three group sizes, N off the strip width, leading dims,
    bias + activation, and activations whose magnitudes reach 2^40 and 2^-60 within one
    group (bf16 runs each group of x times its own power of two through the MMA)."""
    monkeypatch.setenv("MLX_MARLIN_CUDA_DECODE", variant)
    if splits:
        monkeypatch.setenv("MLX_MARLIN_CUDA_TOKEN_SPLITS", splits)
    rng = np.random.default_rng(_SEED + 31 + len(variant) + int(splits or 0))
    for i, (N, K, g) in enumerate(((14336, 4096, 64), (200, 384, 32), (72, 256, 128), (1000, 1024, 64),
                                   (136, 4096, 32), (8, 128, 64), (4104, 2048, 128), (2880, 2880, 32))):
        act = ACTS[i % len(ACTS)]
        sdt = (mx.float16, mx.bfloat16)[i % 2]
        x, w, s, b, W = _make(rng, 1, N, K, g, dtype, sdt, bias=(i % 3 != 1))
        if dtype == mx.bfloat16 and i % 4 == 3:  # far from 1 both ways, still finite in the output
            mag = np.where(np.arange(K) % 2 == 0, 2.0**40, 2.0**-60) * rng.standard_normal(K)
            x = mx.array(mag.astype(np.float32)[None, :]).astype(dtype)
        y = mm.fp4_gemm(x.reshape(1, 1, K), w, s, b, group_size=g, activation=act, stream=mx.gpu)
        assert y.shape == (1, 1, N) and y.dtype == dtype
        ref = np.array(x.astype(mx.float32)).astype(np.float64) @ W.T
        if b is not None:
            ref = ref + np.array(b).astype(np.float64)
        err = _rel(y[0], _act(ref, act))
        assert err < TOL[dtype], f"{variant} splits={splits} N={N} K={K} g={g}: rel err {err:.3e}"


@pytest.mark.parametrize("variant,splits", [("token0", "1"), ("token1", "3"), ("token2", "2")])
@pytest.mark.parametrize("g", [32, 64, 128])
def test_token_kernel_bfloat16_extremes(variant, splits, g, monkeypatch):
    """bf16 activations across bfloat16's exponent range (2^-100 .. 2^101 per group,
    against group scales of 2^-101 .. 2^116, 2^120 on all-zero groups), one group of x
    all zero and one all 2^-120: fp4_gemv_token scales each group of x by its own power
    of two (a fixed 2^64 overflowed to inf above 2^64)."""
    from reference import extreme_scale_exponents, extreme_scale_weights

    monkeypatch.setenv("MLX_MARLIN_CUDA_DECODE", variant)
    monkeypatch.setenv("MLX_MARLIN_CUDA_TOKEN_SPLITS", splits)
    rng = np.random.default_rng(_SEED + 41 + g + int(splits))
    n, k = 200, 24 * g
    exps = extreme_scale_exponents(rng, k // g)
    exps[5] = 116  # the 2^-120 group's products land near 2^-4
    w, s, W, x_mag = extreme_scale_weights(rng, (), n, k, g, exps)
    xv = rng.standard_normal(k) * x_mag
    xv[3 * g:4 * g] = 0.0
    xv[5 * g:6 * g] = 2.0**-120 * np.sign(rng.standard_normal(g))
    x = mx.array(xv.astype(np.float32)[None, :]).astype(mx.bfloat16)
    y = mm.fp4_gemm(x, w, s, group_size=g, stream=mx.gpu)
    ref = np.array(x.astype(mx.float32)).astype(np.float64) @ W.T
    assert _rel(y, ref) < TOL[mx.bfloat16], f"{variant} splits={splits} g={g}"
    # The 2^-120 group alone, against scales up to 2^116: a result of its own
    # (a flushed group would give zeros).
    x_tiny = mx.array(np.where(np.arange(k) // g == 5, xv, 0.0).astype(np.float32)[None, :]).astype(mx.bfloat16)
    y_tiny = mm.fp4_gemm(x_tiny, w, s, group_size=g, stream=mx.gpu)
    ref_tiny = np.array(x_tiny.astype(mx.float32)).astype(np.float64) @ W.T
    assert _rel(y_tiny, ref_tiny) < TOL[mx.bfloat16], f"{variant} splits={splits} g={g}: tiny group"


def test_token_kernel_is_deterministic():
    """The split-K sums are added in slice order by whichever block finishes last: the
    same bits on every call."""
    rng = np.random.default_rng(_SEED + 37)
    x, w, s, b, _ = _make(rng, 1, 14336, 4096, 64, mx.bfloat16, mx.bfloat16, bias=False)
    ys = [mm.fp4_gemm(x, w, s, group_size=64, stream=mx.gpu) for _ in range(20)]
    mx.eval(ys)
    for y in ys[1:]:
        assert mx.array_equal(y, ys[0]).item()


@pytest.mark.parametrize("route", ["dense", "kernel"])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_prefill_routes(route, dtype, monkeypatch):
    """Both large-M routes, forced with MLX_MARLIN_CUDA_PREFILL: the dense route
    (fp4_dequantize + MLX's cuBLAS matmul + float32 epilogue) and the MMA kernel, on
    shapes off every tile, with bias/activation, leading batch dims and the vjp."""
    monkeypatch.setenv("MLX_MARLIN_CUDA_PREFILL", route)
    rng = np.random.default_rng(_SEED + 23)
    for i, (M, N, K, g) in enumerate(((17, 136, 384, 32), (300, 1000, 512, 64), (257, 4100, 256, 128),
                                      (520, 72, 4096, 64), (33, 36, 128, 32))):
        act = ACTS[i % len(ACTS)]
        sdt = (mx.float16, mx.bfloat16)[i % 2]
        x, w, s, b, W = _make(rng, M, N, K, g, dtype, sdt, bias=(i % 2 == 0))
        y = mm.fp4_gemm(x.reshape(1, M, K), w, s, b, group_size=g, activation=act, stream=mx.gpu)
        assert y.shape == (1, M, N) and y.dtype == dtype
        ref = np.array(x.astype(mx.float32)).astype(np.float64) @ W.T
        if b is not None:
            ref = ref + np.array(b).astype(np.float64)
        err = _rel(y[0], _act(ref, act))
        assert err < TOL[dtype], f"{route} M={M} N={N} K={K} g={g} act={act}: rel err {err:.3e}"
        cot = mx.array(rng.standard_normal((M, N)).astype(np.float32)).astype(dtype)
        f = lambda xx: mm.fp4_gemm(xx, w, s, group_size=g, stream=mx.gpu)  # noqa: E731
        _, (gx,) = mx.vjp(f, [x], [cot])
        ref_gx = np.array(cot.astype(mx.float32)).astype(np.float64) @ W
        assert _rel(gx, ref_gx) < TOL[dtype] * 2


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_dequantize_gpu_matches_cpu(dtype):
    """fp4_dequantize on the GPU is bit-identical to the CPU op (one rounding of the exact
    product), including N % 4 != 0 (scalar path) and every output element (poisoned)."""
    rng = np.random.default_rng(_SEED + 29)
    for N, K, g, sdt in ((4096, 256, 64, mx.bfloat16), (13, 128, 32, mx.float16), (1001, 384, 128, mx.bfloat16)):
        w = mx.array(rng.standard_normal((N, K)).astype(np.float32))
        p, s = mm.quantize(w, group_size=g, scale_dtype=sdt)
        dg = mm._ext.fp4_dequantize(p, s, group_size=g, dtype=dtype, stream=mx.gpu)
        dc = mm._ext.fp4_dequantize(p, s, group_size=g, dtype=dtype, stream=mx.cpu)
        assert dg.shape == (K, N) and dg.dtype == dtype
        np.testing.assert_array_equal(np.array(dg.astype(mx.float32)), np.array(dc.astype(mx.float32)))
