"""Tests of the fused MoE ops (moe_route, moe_gemm, moe_mlp) against float64 numpy
references built from mlx_marlin.dequantize."""

from __future__ import annotations

import math
import os

import mlx.core as mx
import numpy as np
import pytest

import mlx_marlin as mm
from reference import extreme_scale_exponents, extreme_scale_weights
from reference import moe_gemm as ref_moe_gemm
from reference import moe_mlp as ref_moe_mlp
from reference import moe_route as ref_route

# CUDA MLX with a GPU (the GPU stream then runs our CUDA kernels; see conftest.py).
# The property test cannot take the function-scoped `stream` fixture (hypothesis).
_STREAM = mx.gpu if os.environ.get("MLX_MARLIN_TEST_DEVICE", "cpu") == "gpu" else mx.cpu

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# Relative tolerance (against the largest reference magnitude) per output dtype: the
# kernels accumulate in fp32, the result is rounded once to the output dtype.
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def to_np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32) if a.dtype in (mx.float16, mx.bfloat16) else a).astype(np.float64)


def rand(rng, shape, dtype="float32", scale=1.0) -> mx.array:
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(DTYPES[dtype])


def make_experts(rng, E, N, K, group_size, scale_dtype=mx.float16):
    """Random expert weights [E, N, K] -> (packed [E, K/8, N], scales, dense float64 [E, N, K])."""
    w = mx.array((rng.standard_normal((E, N, K)) / math.sqrt(K)).astype(np.float32))
    packed, scales = mm.quantize(w, group_size, scale_dtype)
    dense = to_np(mm.dequantize(packed, scales, group_size))
    return packed, scales, dense


def assert_close(out: mx.array, ref: np.ndarray, dtype: str, factor: float = 1.0):
    got = to_np(out)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.all(np.isfinite(got)), "non-finite values in the output"
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert err <= TOL[dtype] * factor * scale, f"max abs err {err} > {TOL[dtype] * factor * scale}"


# ----------------------------------------------------------------- moe_route
@pytest.mark.parametrize(
    "seed,T,E,k,normalize,dtype",
    [
        (0, 1, 8, 2, True, "float32"),
        (1, 37, 64, 8, True, "float32"),
        (2, 37, 64, 8, False, "float16"),
        (3, 300, 16, 1, True, "bfloat16"),
        (4, 5, 256, 256, True, "float32"),
        (5, 5, 256, 7, False, "float32"),
        (6, 9, 3, 3, False, "bfloat16"),
    ],
)
def test_route_matches_numpy(seed, T, E, k, normalize, dtype, stream):
    rng = np.random.default_rng(seed)
    logits = rand(rng, (T, E), dtype, scale=3.0)
    idx, w = mm.moe_route(logits, k, normalize=normalize, stream=stream)
    assert idx.dtype == mx.uint32 and idx.shape == (T, k)
    assert w.dtype == logits.dtype and w.shape == (T, k)
    ref_idx, ref_w = ref_route(to_np(logits), k, normalize)
    np.testing.assert_array_equal(np.array(idx), ref_idx)
    assert_close(w, ref_w, dtype, factor=2)
    if normalize:
        np.testing.assert_allclose(to_np(w).sum(-1), 1.0, rtol=4 * TOL[dtype])


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_route_ties_lower_id_first(seed, stream):
    rng = np.random.default_rng(seed)
    T, E = 50, 12
    # Few distinct values: many ties within each row.
    logits = rng.integers(-2, 3, size=(T, E)).astype(np.float32)
    logits[0] = 1.0  # a row of all-equal logits
    for k in (1, 3, E):
        idx, w = mm.moe_route(mx.array(logits), k, stream=stream)
        ref_idx, ref_w = ref_route(logits.astype(np.float64), k, True)
        np.testing.assert_array_equal(np.array(idx), ref_idx)
        np.testing.assert_allclose(np.array(w), ref_w, rtol=1e-5, atol=1e-6)
    idx, _ = mm.moe_route(mx.array(logits), 4, stream=stream)
    np.testing.assert_array_equal(np.array(idx)[0], [0, 1, 2, 3])


def test_route_leading_dims(stream):
    rng = np.random.default_rng(20)
    logits = rand(rng, (2, 3, 10))
    idx, w = mm.moe_route(logits, 4, stream=stream)
    assert idx.shape == (2, 3, 4) and w.shape == (2, 3, 4)
    flat_idx, flat_w = mm.moe_route(logits.reshape(6, 10), 4, stream=stream)
    np.testing.assert_array_equal(np.array(idx).reshape(6, 4), np.array(flat_idx))
    np.testing.assert_array_equal(np.array(w).reshape(6, 4), np.array(flat_w))


# ----------------------------------------------------------------- moe_gemm
GEMM_CASES = [
    # seed, T, E, k, N, K, group, dtype, act, form, weighted
    (100, 1, 8, 2, 40, 64, 32, "float32", None, "shared", False),
    (101, 1, 8, 2, 72, 128, 64, "float16", "silu", "shared", True),
    (102, 17, 16, 4, 100, 256, 128, "bfloat16", "gelu", "shared", True),
    (103, 300, 8, 2, 72, 128, 32, "float32", "relu", "shared", False),
    (104, 300, 8, 2, 40, 128, 64, "float16", "gelu_approx", "per_slot", True),
    (105, 23, 4, 4, 130, 64, 64, "float32", None, "per_slot", False),
    (106, 9, 6, 3, 100, 384, 128, "bfloat16", "silu", "per_slot", False),
    (107, 64, 32, 8, 72, 64, 32, "float32", None, "shared", True),
]


@pytest.mark.parametrize("seed,T,E,k,N,K,g,dtype,act,form,weighted", GEMM_CASES)
def test_moe_gemm_matches_numpy(seed, T, E, k, N, K, g, dtype, act, form, weighted, stream):
    rng = np.random.default_rng(seed)
    packed, scales, dense = make_experts(rng, E, N, K, g, mx.bfloat16 if dtype == "bfloat16" else mx.float16)
    x = rand(rng, (T, K) if form == "shared" else (T, k, K), dtype)
    idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)]).astype(np.int32)
    weights = rand(rng, (T, k), "float32") if weighted else None
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=weights, activation=act, stream=stream)
    assert out.dtype == x.dtype
    assert out.shape == ((T, N) if weighted else (T, k, N))
    ref = ref_moe_gemm(to_np(x), dense, idx, to_np(weights) if weighted else None, act)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("T", [1, 40])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_moe_gemm_extreme_bfloat16_scales(T, dtype, stream):
    """Expert scales across bfloat16's exponent range and 2^120 scales on all-zero
    groups (reference.extreme_scale_weights): finite, accurate outputs."""
    rng = np.random.default_rng(300 + T)
    E, k, N, K, g = 6, 2, 72, 256, 64
    packed, scales, dense, x_mag = extreme_scale_weights(rng, (E,), N, K, g)
    x = mx.array((rng.standard_normal((T, K)) * x_mag).astype(np.float32)).astype(DTYPES[dtype])
    idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)]).astype(np.int32)
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, stream=stream)
    assert_close(out, ref_moe_gemm(to_np(x), dense, idx), dtype)


@pytest.mark.parametrize("seed,pattern", [(200, "one_expert"), (201, "few_experts"), (202, "repeated_slots")])
def test_moe_gemm_skewed_routing(seed, pattern, stream):
    rng = np.random.default_rng(seed)
    T, E, k, N, K, g = 70, 16, 3, 72, 128, 64
    packed, scales, dense = make_experts(rng, E, N, K, g)
    if pattern == "one_expert":
        idx = np.full((T, k), 5, dtype=np.int32)
    elif pattern == "few_experts":  # most experts get no token
        idx = rng.choice([3, 11], size=(T, k)).astype(np.int32)
    else:  # the same expert twice for one token
        idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
        idx[:, 1] = idx[:, 0]
    x = rand(rng, (T, K))
    w = rand(rng, (T, k))
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, stream=stream)
    assert_close(out, ref_moe_gemm(to_np(x), dense, idx), "float32")
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=stream)
    assert_close(out, ref_moe_gemm(to_np(x), dense, idx, to_np(w)), "float32")


@pytest.mark.parametrize("seed,T,k", [(210, 1, 8), (211, 40, 2), (212, 300, 1)])
def test_moe_gemm_many_experts(seed, T, k, stream):
    """E = 256 with a small N and K: many tiny expert GEMMs (parallel over experts)."""
    rng = np.random.default_rng(seed)
    E, N, K, g = 256, 40, 64, 32
    packed, scales, dense = make_experts(rng, E, N, K, g)
    idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)]).astype(np.uint32)
    x = rand(rng, (T, K))
    w = rand(rng, (T, k))
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=stream)
    assert_close(out, ref_moe_gemm(to_np(x), dense, idx.astype(np.int64), to_np(w)), "float32")


@pytest.mark.parametrize("idx_dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_moe_gemm_index_dtypes(idx_dtype, stream):
    rng = np.random.default_rng(220)
    T, E, k, N, K, g = 5, 6, 2, 40, 64, 64
    packed, scales, dense = make_experts(rng, E, N, K, g)
    idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)])
    x = rand(rng, (T, K))
    out = mm.moe_gemm(x, packed, scales, mx.array(idx.astype(idx_dtype)), group_size=g, stream=stream)
    assert_close(out, ref_moe_gemm(to_np(x), dense, idx), "float32")


def test_moe_gemm_top_k_equals_E_and_deterministic(stream):
    rng = np.random.default_rng(230)
    T, E, N, K, g = 33, 5, 100, 128, 32
    packed, scales, dense = make_experts(rng, E, N, K, g)
    idx = np.stack([rng.permutation(E) for _ in range(T)]).astype(np.int32)
    x = rand(rng, (T, K))
    w = rand(rng, (T, E))
    a = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=stream)
    b = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=stream)
    assert_close(a, ref_moe_gemm(to_np(x), dense, idx, to_np(w)), "float32")
    np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize("bad", [-1, 6, 1000])
@pytest.mark.parametrize("weighted", [False, True])
def test_moe_gemm_out_of_range_indices_give_nan_rows(bad, weighted, stream):
    """An id outside [0, E) makes exactly the rows that depend on it NaN (never clamped,
    never an address); every other row equals the reference.  Repeated in one process
    with valid calls around it (a raise from inside evaluation was not reliable)."""
    rng = np.random.default_rng(240)
    packed, scales, dense = make_experts(rng, 6, 40, 64, 64)
    for _ in range(3):
        x = rand(rng, (4, 64))
        mx.eval(mm.moe_gemm(x, packed, scales, mx.zeros((4, 2), mx.int32), group_size=64, stream=stream))
        idx = rng.integers(0, 6, (4, 2)).astype(np.int32)
        idx[2, 1] = bad
        w = rand(rng, (4, 2)) if weighted else None
        out = to_np(mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=64, weights=w, stream=stream))
        good = idx.copy()
        good[2, 1] = 0
        ref = ref_moe_gemm(to_np(x), dense, good, to_np(w) if weighted else None)
        bad_rows = np.zeros(out.shape[:-1], dtype=bool)
        bad_rows[(2, 1) if not weighted else 2] = True
        assert np.all(np.isnan(out[bad_rows])), "rows fed by the invalid id must be NaN"
        assert np.all(np.isfinite(out[~bad_rows]))
        np.testing.assert_allclose(out[~bad_rows], ref[~bad_rows], rtol=2e-4, atol=2e-4)


def test_moe_gemm_empty_tokens(stream):
    rng = np.random.default_rng(250)
    packed, scales, _ = make_experts(rng, 4, 40, 64, 64)
    out = mm.moe_gemm(mx.zeros((0, 64)), packed, scales, mx.zeros((0, 2), mx.int32), group_size=64, stream=stream)
    assert out.shape == (0, 2, 40)
    mx.eval(out)


# ----------------------------------------------------------------- moe_mlp
MLP_CASES = [
    # seed, T, E, k, K, I, N_out, group, dtype, act, form, normalize
    (300, 1, 8, 2, 64, 96, 40, 32, "float32", "silu", "separate", True),
    (301, 1, 8, 2, 128, 64, 100, 64, "float16", "silu", "fused", True),
    (302, 19, 16, 4, 128, 128, 72, 128, "bfloat16", "gelu", "separate", False),
    (303, 300, 8, 2, 64, 64, 40, 64, "float32", "silu", "fused", True),
    (304, 300, 4, 1, 64, 96, 100, 32, "float16", "relu", "separate", True),
    (305, 12, 6, 6, 128, 64, 72, 32, "float32", "gelu_approx", "fused", False),
    (306, 40, 256, 8, 64, 64, 40, 32, "float32", "silu", "separate", True),
    (307, 7, 5, 3, 64, 32, 40, 32, "float32", None, "separate", True),
]


@pytest.mark.parametrize("seed,T,E,k,K,I,N_out,g,dtype,act,form,normalize", MLP_CASES)
def test_moe_mlp_matches_dense_reference(seed, T, E, k, K, I, N_out, g, dtype, act, form, normalize, stream):
    rng = np.random.default_rng(seed)
    sdt = mx.bfloat16 if dtype == "bfloat16" else mx.float16
    pg, sg, gate = make_experts(rng, E, I, K, g, sdt)
    pu, su, up = make_experts(rng, E, I, K, g, sdt)
    pd, sd, down = make_experts(rng, E, N_out, I, g, sdt)
    x = rand(rng, (T, K), dtype)
    logits = rand(rng, (T, E), dtype)
    if form == "fused":
        # [gate | up] along N: quantize the [E, 2I, K] concatenation (per-column scales, so
        # this is exactly the two separate quantizations side by side).
        pgu = mx.concatenate([pg, pu], axis=2)
        sgu = mx.concatenate([sg, su], axis=2)
        out = mm.moe_mlp(x, logits, pgu, sgu, None, None, pd, sd, top_k=k, group_size=g, activation=act,
                         normalize=normalize, stream=stream)
    else:
        out = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, activation=act,
                         normalize=normalize, stream=stream)
    assert out.dtype == x.dtype and out.shape == (T, N_out)
    ref = ref_moe_mlp(to_np(x), to_np(logits), gate, up, down, k, act, normalize)
    assert_close(out, ref, dtype, factor=2)


@pytest.mark.parametrize("form", ["separate", "fused"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_moe_mlp_extreme_bfloat16_scales(form, dtype, stream):
    """Gate / up scales across bfloat16's range (shared per-k exponents, balanced by x)
    through the fused SwiGLU path: act(gate) * up of the un-scaled sums would be wrong."""
    rng = np.random.default_rng(330)
    T, E, k, K, I, N_out, g = 24, 6, 2, 256, 64, 40, 64
    exps = extreme_scale_exponents(rng, K // g)
    pg, sg, gate, x_mag = extreme_scale_weights(rng, (E,), I, K, g, exps)
    pu, su, up, _ = extreme_scale_weights(rng, (E,), I, K, g, exps)
    pd, sd, down = make_experts(rng, E, N_out, I, g, mx.bfloat16)
    x = mx.array((rng.standard_normal((T, K)) * x_mag).astype(np.float32)).astype(DTYPES[dtype])
    logits = rand(rng, (T, E), dtype)
    if form == "fused":
        out = mm.moe_mlp(x, logits, mx.concatenate([pg, pu], 2), mx.concatenate([sg, su], 2), None, None, pd, sd,
                         top_k=k, group_size=g, stream=stream)
    else:
        out = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, stream=stream)
    ref = ref_moe_mlp(to_np(x), to_np(logits), gate, up, down, k, "silu", True)
    assert_close(out, ref, dtype, factor=2)


def test_moe_mlp_fused_equals_separate_and_composition(stream):
    rng = np.random.default_rng(310)
    T, E, k, K, I, N_out, g = 21, 8, 2, 128, 64, 72, 64
    pg, sg, _ = make_experts(rng, E, I, K, g)
    pu, su, _ = make_experts(rng, E, I, K, g)
    pd, sd, _ = make_experts(rng, E, N_out, I, g)
    x = rand(rng, (T, K))
    logits = rand(rng, (T, E))
    sep = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, stream=stream)
    fused = mm.moe_mlp(x, logits, mx.concatenate([pg, pu], 2), mx.concatenate([sg, su], 2), None, None, pd, sd,
                       top_k=k, group_size=g, stream=stream)
    np.testing.assert_allclose(np.array(sep), np.array(fused), rtol=1e-6, atol=1e-6)
    # The same computation spelled with the building-block ops.
    idx, w = mm.moe_route(logits, k, stream=stream)
    gate = mm.moe_gemm(x, pg, sg, idx, group_size=g, activation="silu", stream=stream)
    upv = mm.moe_gemm(x, pu, su, idx, group_size=g, stream=stream)
    comp = mm.moe_gemm(gate * upv, pd, sd, idx, group_size=g, weights=w, stream=stream)
    np.testing.assert_allclose(np.array(sep), np.array(comp), rtol=1e-5, atol=1e-5)


def test_moe_mlp_leading_dims(stream):
    rng = np.random.default_rng(320)
    E, K, I, N_out, g = 4, 64, 32, 40, 32
    pg, sg, _ = make_experts(rng, E, 2 * I, K, g)
    pd, sd, _ = make_experts(rng, E, N_out, I, g)
    x = rand(rng, (2, 3, K))
    logits = rand(rng, (2, 3, E))
    out = mm.moe_mlp(x, logits, pg, sg, None, None, pd, sd, top_k=2, group_size=g, stream=stream)
    flat = mm.moe_mlp(x.reshape(6, K), logits.reshape(6, E), pg, sg, None, None, pd, sd, top_k=2, group_size=g,
                      stream=stream)
    assert out.shape == (2, 3, N_out)
    np.testing.assert_array_equal(np.array(out).reshape(6, N_out), np.array(flat))


@pytest.mark.parametrize("form", ["shared", "per_slot"])
@pytest.mark.parametrize("weighted", [False, True])
def test_moe_gemm_leading_dims(form, weighted, stream):
    """indices [..., k] with any leading dims (none: one token), x [..., K] or
    [..., k, K]: the same numbers as the flattened [T, k] call, in indices' shape."""
    rng = np.random.default_rng(325)
    E, k, N, K, g = 5, 3, 40, 64, 32
    packed, scales, dense = make_experts(rng, E, N, K, g)
    for lead in ((2, 3), (1, 4, 2), (7,), ()):
        T = math.prod(lead)
        idx = rng.integers(0, E, size=(*lead, k)).astype(np.int32)
        x = rand(rng, (*lead, K) if form == "shared" else (*lead, k, K))
        w = rand(rng, (*lead, k)) if weighted else None
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, activation="silu",
                          stream=stream)
        assert out.shape == ((*lead, N) if weighted else (*lead, k, N))
        flat_x = x.reshape(T, K) if form == "shared" else x.reshape(T, k, K)
        flat_w = w.reshape(T, k) if weighted else None
        flat = mm.moe_gemm(flat_x, packed, scales, mx.array(idx.reshape(T, k)), group_size=g, weights=flat_w,
                           activation="silu", stream=stream)
        np.testing.assert_array_equal(to_np(out).reshape(flat.shape), to_np(flat))
        ref = ref_moe_gemm(to_np(flat_x), dense, idx.reshape(T, k), to_np(flat_w) if weighted else None, "silu")
        assert_close(out, ref.reshape(out.shape), "float32")


def test_moe_gemm_shapeless_compile_follows_leading_dims(stream):
    """moe_gemm under mx.compile(shapeless=True) with changing leading shapes (x [..., K],
    [..., k, K]; weighted or not): equal to the uncompiled op and to float64."""
    rng = np.random.default_rng(326)
    E, k, N, K, g = 6, 2, 24, 64, 32
    packed, scales, dense = make_experts(rng, E, N, K, g)
    mx.eval(packed, scales)

    def shared(x, idx):
        return mm.moe_gemm(x, packed, scales, idx, group_size=g, activation="relu", stream=stream)

    def per_slot(x, idx, w):
        return mm.moe_gemm(x, packed, scales, idx, group_size=g, weights=w, stream=stream)

    c_shared, c_per_slot = mx.compile(shared, shapeless=True), mx.compile(per_slot, shapeless=True)
    for lead in ((2, 3), (5, 1), (1, 7), (4, 2)):
        T = math.prod(lead)
        idx = rng.integers(0, E, size=(*lead, k)).astype(np.uint32)
        x, xs, w = rand(rng, (*lead, K)), rand(rng, (*lead, k, K)), rand(rng, (*lead, k))
        y = c_shared(x, mx.array(idx))
        assert y.shape == (*lead, k, N)
        np.testing.assert_array_equal(to_np(y), to_np(shared(x, mx.array(idx))))
        ref = ref_moe_gemm(to_np(x).reshape(T, K), dense, idx.reshape(T, k), None, "relu")
        assert_close(y, ref.reshape(y.shape), "float32")
        z = c_per_slot(xs, mx.array(idx), w)
        assert z.shape == (*lead, N)
        np.testing.assert_array_equal(to_np(z), to_np(per_slot(xs, mx.array(idx), w)))
        ref = ref_moe_gemm(to_np(xs).reshape(T, k, K), dense, idx.reshape(T, k), to_np(w).reshape(T, k))
        assert_close(z, ref.reshape(z.shape), "float32")


# ----------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def gemm_args():
    rng = np.random.default_rng(400)
    packed, scales, _ = make_experts(rng, 4, 40, 64, 32)
    return dict(x=rand(rng, (3, 64)), w=packed, scales=scales, indices=mx.zeros((3, 2), mx.int32))


def _call_gemm(args, **over):
    a = {**args, **over}
    kw = {k: a[k] for k in ("weights", "activation") if k in a}
    return mm.moe_gemm(a["x"], a["w"], a["scales"], a["indices"], group_size=a.get("group_size", 32), **kw,
                       stream=mx.cpu)


@pytest.mark.parametrize(
    "over,match",
    [
        (dict(x=mx.zeros((3, 64), mx.int32)), "x must be float16"),
        (dict(x=mx.zeros((64,))), r"x must have shape \[\.\.\., K\] = \(3, 64\) \(one row per token\) or "
                                  r"\[\.\.\., k, K\] = \(3, 2, 64\)"),
        (dict(x=mx.zeros((1, 3, 64))), r"for indices of shape \[\.\.\., k\] = \(3, 2\), got \(1, 3, 64\)"),
        (dict(x=mx.zeros((6, 64))), r"x must have shape \[\.\.\., K\] = \(3, 64\)"),
        (dict(x=mx.array(1.0)), "x must have shape .* got a scalar"),
        (dict(x=mx.zeros((3, 32))), "K = 8 \\* w.shape\\[1\\] = 64"),
        (dict(x=mx.zeros((3, 3, 64))), r"\[\.\.\., k, K\] = \(3, 2, 64\) \(one row per slot\)"),
        (dict(w=mx.zeros((4, 8, 40), mx.int32)), "w must have dtype uint32"),
        (dict(w=mx.zeros((8, 40), mx.uint32)), r"w must have 3 dimensions \[E, K/8, N\]"),
        (dict(scales=mx.zeros((4, 2, 40), mx.float32)), "scales must be float16 or bfloat16"),
        (dict(scales=mx.zeros((4, 2, 41), mx.float16)), r"scales must have shape \[E, K/group_size, N\]"),
        (dict(scales=mx.zeros((3, 2, 40), mx.float16)), r"scales must have shape"),
        (dict(group_size=48), "group_size must be 32, 64 or 128"),
        (dict(group_size=128), "multiple of group_size"),
        (dict(indices=mx.zeros((3, 2), mx.float32)), "indices must have an integer dtype"),
        (dict(indices=mx.zeros((3, 2), mx.bool_)), "indices must have an integer dtype"),
        (dict(indices=mx.zeros((4, 2), mx.int32)), r"x must have shape \[\.\.\., K\] = \(4, 64\)"),
        (dict(indices=mx.zeros((2,), mx.int32)), r"x must have shape \[\.\.\., K\] = \(64,\) .* got \(3, 64\)"),
        (dict(indices=mx.array(1)), r"indices must have shape \[\.\.\., k\], got a scalar"),
        (dict(weights=mx.zeros((3, 3))), r"weights must have shape \[\.\.\., k\] = \(3, 2\)"),
        (dict(weights=mx.zeros((6,))), r"weights must have shape \[\.\.\., k\]"),
        (dict(weights=mx.zeros((3, 2), mx.int32)), "weights must be float16"),
        (dict(activation="swish"), "activation must be"),
    ],
)
def test_moe_gemm_bad_inputs(gemm_args, over, match):
    with pytest.raises(ValueError, match=match):
        _call_gemm(gemm_args, **over)


def test_moe_route_bad_inputs():
    with pytest.raises(ValueError, match="logits must be float16"):
        mm.moe_route(mx.zeros((2, 4), mx.int32), 1)
    with pytest.raises(ValueError, match=r"logits must have shape \[\.\.\., E\]"):
        mm.moe_route(mx.array(1.0), 1)
    with pytest.raises(ValueError, match=r"logits must have shape \[\.\.\., E\] with E >= 1"):
        mm.moe_route(mx.zeros((2, 0)), 1)
    for k in (0, 5, -1):
        with pytest.raises(ValueError, match=r"top_k must be in \[1, E\] = \[1, 4\]"):
            mm.moe_route(mx.zeros((2, 4)), k)


@pytest.fixture(scope="module")
def mlp_args():
    rng = np.random.default_rng(410)
    E, K, I, N_out, g = 4, 64, 32, 40, 32
    pg, sg, _ = make_experts(rng, E, I, K, g)
    pu, su, _ = make_experts(rng, E, I, K, g)
    pd, sd, _ = make_experts(rng, E, N_out, I, g)
    return dict(x=rand(rng, (3, K)), router_logits=rand(rng, (3, E)), w_gate=pg, s_gate=sg, w_up=pu, s_up=su,
                w_down=pd, s_down=sd, top_k=2, group_size=g)


def _call_mlp(args, **over):
    a = {**args, **over}
    pos = [a[n] for n in ("x", "router_logits", "w_gate", "s_gate", "w_up", "s_up", "w_down", "s_down")]
    kw = {k: a[k] for k in ("top_k", "group_size", "activation", "normalize") if k in a}
    return mm.moe_mlp(*pos, **kw, stream=mx.cpu)


def test_moe_mlp_good_args_work(mlp_args):
    assert _call_mlp(mlp_args).shape == (3, 40)


@pytest.mark.parametrize(
    "over,match",
    [
        (dict(x=mx.zeros((3, 64), mx.int32)), "x must be float16"),
        (dict(x=mx.zeros((3, 32))), r"x must have shape \[\.\.\., K\] with K = 8 \* w_gate.shape\[1\] = 64"),
        (dict(router_logits=mx.zeros((3, 5))), r"router_logits must have shape \[\.\.\., E\] = \(3, 4\)"),
        (dict(router_logits=mx.zeros((2, 4))), r"router_logits must have shape"),
        (dict(router_logits=mx.zeros((3, 4), mx.int32)), "router_logits must be float16"),
        (dict(w_gate=mx.zeros((4, 8, 32), mx.int32)), "w_gate must have dtype uint32"),
        (dict(s_gate=mx.zeros((4, 2, 33), mx.float16)), r"s_gate must have shape"),
        (dict(w_up=mx.zeros((4, 8, 64), mx.uint32), s_up=mx.zeros((4, 2, 64), mx.float16)), "w_up must have the shape of w_gate"),
        (dict(w_up=mx.zeros((5, 8, 32), mx.uint32), s_up=mx.zeros((5, 2, 32), mx.float16)), "w_up must have the shape of w_gate"),
        (dict(s_up=mx.zeros((4, 2, 32), mx.float32)), "s_up must be float16 or bfloat16"),
        (dict(s_up=None), "w_up and s_up must be given together"),
        (dict(w_up=None), "w_up and s_up must be given together"),
        (dict(w_down=mx.zeros((3, 4, 40), mx.uint32), s_down=mx.zeros((3, 1, 40), mx.float16)), r"w_down must have E = w_gate.shape\[0\] = 4"),
        (dict(w_down=mx.zeros((4, 8, 40), mx.uint32), s_down=mx.zeros((4, 2, 40), mx.float16)), r"w_down must have shape \[E, I/8, N_out\] with I = 32"),
        (dict(s_down=mx.zeros((4, 1, 41), mx.float16)), r"s_down must have shape"),
        (dict(top_k=0), r"top_k must be in \[1, E\] = \[1, 4\]"),
        (dict(top_k=5), r"top_k must be in \[1, E\]"),
        (dict(group_size=16), "group_size must be 32, 64 or 128"),
        (dict(group_size=64), "group_size 64|multiple of group_size"),
        (dict(activation="swiglu"), "activation must be"),
    ],
)
def test_moe_mlp_bad_inputs(mlp_args, over, match):
    with pytest.raises(ValueError, match=match):
        _call_mlp(mlp_args, **over)


def test_moe_mlp_concatenated_needs_even_width(mlp_args):
    w = mx.zeros((4, 8, 33), mx.uint32)
    s = mx.zeros((4, 2, 33), mx.float16)
    with pytest.raises(ValueError, match=r"w_gate without w_up must have shape \[E, K/8, 2\*I\]"):
        _call_mlp(mlp_args, w_gate=w, s_gate=s, w_up=None, s_up=None)


def test_primitive_graph_is_lazy_and_compilable(mlp_args):
    f = mx.compile(lambda x: _call_mlp(mlp_args, x=x))
    x = mlp_args["x"]
    np.testing.assert_array_equal(np.array(f(x)), np.array(_call_mlp(mlp_args)))


# ----------------------------------------------------------------- property test
try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:

    @settings(max_examples=25, deadline=None)
    @given(
        seed=st.integers(0, 2**31 - 1),
        T=st.integers(1, 40),
        E=st.integers(1, 20),
        k_frac=st.floats(0, 1),
        n=st.integers(1, 90),
        kg=st.integers(1, 3),
        g=st.sampled_from([32, 64, 128]),
        per_slot=st.booleans(),
        weighted=st.booleans(),
    )
    def test_moe_gemm_property(seed, T, E, k_frac, n, kg, g, per_slot, weighted):
        """Random shapes and routings (duplicates allowed) against the numpy reference."""
        rng = np.random.default_rng(seed)
        k = 1 + int(k_frac * (E - 1))
        K = kg * g
        packed, scales, dense = make_experts(rng, E, n, K, g)
        idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
        x = rand(rng, (T, k, K) if per_slot else (T, K))
        w = rand(rng, (T, k)) if weighted else None
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=_STREAM)
        assert_close(out, ref_moe_gemm(to_np(x), dense, idx, to_np(w) if weighted else None), "float32")


def test_shapeless_compile_follows_leading_dims(stream):
    """moe_route and moe_mlp under mx.compile(shapeless=True), called with changing
    leading shapes: their primitives take [..., E] / [..., K] and derive their output
    shapes from the inputs (no reshape around them whose target the trace would fix).
    Each call equals the uncompiled op and matches the float64 reference."""
    rng = np.random.default_rng(330)
    E, k, K, I, N_out, g = 6, 2, 64, 32, 40, 32
    pg, sg, gate = make_experts(rng, E, I, K, g)
    pu, su, up = make_experts(rng, E, I, K, g)
    pd, sd, down = make_experts(rng, E, N_out, I, g)
    mx.eval(pg, sg, pu, su, pd, sd)  # constants of the trace must be evaluated arrays

    def route(logits):
        return mm.moe_route(logits, k, stream=stream)

    def mlp(x, logits):
        return mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, stream=stream)

    c_route, c_mlp = mx.compile(route, shapeless=True), mx.compile(mlp, shapeless=True)
    for lead in ((2, 3), (5, 1), (1, 7), (4,), (9,)):
        x, logits = rand(rng, (*lead, K)), rand(rng, (*lead, E), scale=3.0)
        idx, w = c_route(logits)
        want_idx, want_w = route(logits)
        assert idx.shape == w.shape == (*lead, k)
        np.testing.assert_array_equal(np.array(idx), np.array(want_idx))
        np.testing.assert_array_equal(to_np(w), to_np(want_w))
        ref_idx, ref_w = ref_route(to_np(logits).reshape(-1, E), k, True)
        np.testing.assert_array_equal(np.array(idx).reshape(-1, k), ref_idx)
        assert_close(w, ref_w.reshape(*lead, k), "float32", factor=2)
        y = c_mlp(x, logits)
        assert y.shape == (*lead, N_out)
        np.testing.assert_array_equal(to_np(y), to_np(mlp(x, logits)))
        ref = ref_moe_mlp(to_np(x).reshape(-1, K), to_np(logits).reshape(-1, E), gate, up, down, k)
        assert_close(y, ref.reshape(*lead, N_out), "float32", factor=2)
    # K = 0 (zeros from MLX ops) follows x's leading shape as well.
    wg0, sg0 = mx.zeros((E, 0, I), mx.uint32), mx.zeros((E, 0, I), mx.float16)
    c_empty = mx.compile(lambda x, l: mm.moe_mlp(x, l, wg0, sg0, wg0, sg0, pd, sd, top_k=k, group_size=g,
                                                 stream=stream), shapeless=True)
    for lead in ((2, 3), (5, 1)):
        out = c_empty(mx.zeros((*lead, 0)), mx.ones((*lead, E)))
        assert out.shape == (*lead, N_out)
        np.testing.assert_array_equal(to_np(out), 0.0)


def test_moe_mlp_empty_k_gives_zeros(stream):
    """K = 0: every gate / up product is 0, so is act(0) * 0 and the output."""
    E, I, N = 2, 32, 8
    wg, sg = mx.zeros((E, 0, I), mx.uint32), mx.zeros((E, 0, I), mx.float16)
    wd, sd = mx.zeros((E, I // 8, N), mx.uint32), mx.zeros((E, I // 32, N), mx.float16)
    out = mm.moe_mlp(mx.zeros((3, 0)), mx.ones((3, E)), wg, sg, wg, sg, wd, sd, top_k=1, group_size=32,
                     stream=stream)
    assert out.shape == (3, N)
    np.testing.assert_array_equal(to_np(out), 0.0)


def test_switch_linear_bias_with_out_of_range_ids_reads_nothing_outside():
    """moe_gemm gives NaN rows for ids outside [0, E); the layer's bias gather must not
    read outside the bias for them (MLX's take has no bounds checks)."""
    layer = mm.MarlinSwitchLinear(64, 16, num_experts=4, bias=True, group_size=32)
    for bad in (2**31 - 1, -5, 4):
        y = to_np(layer(mx.ones((1, 64)), mx.array([[0, bad]], mx.int32)))
        assert np.isfinite(y[0, 0]).all() and np.isnan(y[0, 1]).all()
