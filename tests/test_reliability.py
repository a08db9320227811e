"""Reliability: property-based shapes, memory stability over many calls, concurrent streams."""

import gc
import os
import threading

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mlx_marlin as mm
from reference import TOL, activation, rel_err, to_np

# CI runs the default profile; MLX_MARLIN_HYPOTHESIS_PROFILE=thorough runs many more examples.
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("MLX_MARLIN_HYPOTHESIS_PROFILE", "ci"))

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
ACTS = [None, "relu", "gelu", "gelu_approx", "silu"]
# 1, primes and near-multiples of every tile size (16 lanes, 64-column blocks, 6-row blocks, GPU tiles).
DIMS = st.sampled_from([1, 2, 3, 5, 7, 13, 15, 17, 31, 33, 63, 65, 97, 127, 129, 191])


@given(
    m=DIMS,
    n=DIMS,
    k_groups=st.integers(1, 6),
    group_size=st.sampled_from([32, 64, 128]),
    dtype=st.sampled_from(DTYPES),
    act=st.sampled_from(ACTS),
    with_bias=st.booleans(),
    lead=st.sampled_from([(), (2,), (0,), (1, 3)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_fp4_gemm_property(m, n, k_groups, group_size, dtype, act, with_bias, lead, seed):
    rng = np.random.default_rng(seed)
    k = k_groups * group_size
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
    packed, scales = mm.quantize(w, group_size, mx.bfloat16 if seed % 2 else mx.float16)
    wd = to_np(mm.dequantize(packed, scales, group_size))
    x = mx.array(rng.standard_normal((*lead, m, k)).astype(np.float32)).astype(dtype)
    bias = mx.array(rng.standard_normal(n).astype(np.float32)) if with_bias else None
    y = mm.fp4_gemm(x, packed, scales, bias, group_size=group_size, activation=act, stream=mx.cpu)
    assert y.shape == (*lead, m, n) and y.dtype == dtype
    if y.size == 0:
        return
    ref = to_np(x) @ wd.T + (to_np(bias) if with_bias else 0)
    expected = activation(ref, act)
    assert np.all(np.isfinite(to_np(y))), f"seed={seed}"
    # The product's rounding is relative to the pre-activation's scale, and every
    # activation here has |f'| <= 1.13: measure against that scale.  Relative to the
    # output alone, a small output deep in gelu's or silu's negative tail (|f| ~ 1e-18 at
    # -8.8) moves by |x| times the pre-activation's relative rounding, more than TOL.
    scale = max(np.abs(expected).max(), np.abs(ref).max(), 1e-30)
    assert np.abs(to_np(y) - expected).max() / scale < TOL[dtype], f"seed={seed}"


def test_nan_and_inf_propagate_without_hanging(rng):
    packed, scales = mm.quantize(mx.array(rng.standard_normal((16, 64)).astype(np.float32)), 32)
    x = mx.array(rng.standard_normal((3, 64)).astype(np.float32))
    x = x.at[1, 5].add(float("nan")).at[2, 7].add(float("inf"))
    y = np.array(mm.fp4_gemm(x, packed, scales, group_size=32, stream=mx.cpu))
    assert np.all(np.isfinite(y[0]))
    assert np.all(np.isnan(y[1]))
    w_col = to_np(mm.dequantize(packed, scales, 32))[:, 7]
    # inf * w is +-inf where w != 0 and NaN where the weight is exactly zero.
    assert np.all(np.isinf(y[2][w_col != 0]) | np.isnan(y[2][w_col != 0]))


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pytest.skip("no /proc/self/statm")


def _assert_flat_memory(fn, calls=10_000):
    for _ in range(200):  # warm caches, pools and thread-local buffers
        mx.eval(fn())
    gc.collect()
    active0, rss0 = mx.get_active_memory(), _rss_bytes()
    for i in range(calls):
        out = fn()
        mx.eval(out)
        del out
    gc.collect()
    assert mx.get_active_memory() <= active0, (active0, mx.get_active_memory())
    assert _rss_bytes() - rss0 < 16 << 20, (rss0, _rss_bytes())


def test_fp4_gemm_memory_is_flat_over_10000_calls(rng):
    packed, scales = mm.quantize(mx.array(rng.standard_normal((96, 128)).astype(np.float32)), 64)
    x = mx.array(rng.standard_normal((3, 128)).astype(np.float32)).astype(mx.float16)
    b = mx.zeros((96,))
    _assert_flat_memory(lambda: mm.fp4_gemm(x, packed, scales, b, group_size=64, activation="gelu", stream=mx.cpu))
    xb = mx.array(rng.standard_normal((20, 128)).astype(np.float32))
    _assert_flat_memory(lambda: mm.fp4_gemm(xb, packed, scales, group_size=64, stream=mx.cpu), calls=2000)


def test_moe_memory_is_flat_over_10000_calls(rng):
    e, n, k, t, top = 8, 40, 64, 5, 2
    w, s = mm.quantize(mx.array(rng.standard_normal((e, n, k)).astype(np.float32)), 32)
    x = mx.array(rng.standard_normal((t, k)).astype(np.float32))
    logits = mx.array(rng.standard_normal((t, e)).astype(np.float32))

    def step():
        idx, wts = mm.moe_route(logits, top, stream=mx.cpu)
        return mm.moe_gemm(x, w, s, idx, group_size=32, weights=wts, stream=mx.cpu)

    _assert_flat_memory(step)
    hidden = 32
    # moe_mlp with gate and up concatenated: [E, 2 * hidden, K] and down [E, K, hidden].
    wg, sg = mm.quantize(mx.array(rng.standard_normal((e, 2 * hidden, k)).astype(np.float32)), 32)
    wdn, sdn = mm.quantize(mx.array(rng.standard_normal((e, k, hidden)).astype(np.float32)), 32)
    _assert_flat_memory(lambda: mm.moe_mlp(x, logits, wg, sg, None, None, wdn, sdn, top_k=top, group_size=32,
                                           stream=mx.cpu))


def test_concurrent_streams_from_threads(rng):
    """Ops issued from several Python threads, each on its own CPU stream, stay correct."""
    cases = []
    for i in range(4):
        n, k = 48 + 8 * i, 128
        packed, scales = mm.quantize(mx.array(rng.standard_normal((n, k)).astype(np.float32)), 64)
        x = mx.array(rng.standard_normal((1 + 7 * i, k)).astype(np.float32))
        ref = to_np(x) @ to_np(mm.dequantize(packed, scales, 64)).T
        cases.append((x, packed, scales, ref))
    # Every op family in every thread: fp4_gemm, moe_gemm (+ routing) and attention.
    e, top = 8, 2
    we, se = mm.quantize(mx.array(rng.standard_normal((e, 40, 128)).astype(np.float32)), 64)
    wed = to_np(mm.dequantize(we, se, 64))
    xm = mx.array(rng.standard_normal((6, 128)).astype(np.float32))
    logits = mx.array(rng.standard_normal((6, e)).astype(np.float32))
    idx_ref, w_ref = (np.array(a) for a in mm.moe_route(logits, top, stream=mx.cpu))
    moe_ref = sum(w_ref[:, j:j + 1] * np.einsum("tk,tnk->tn", to_np(xm), wed[idx_ref[:, j]]) for j in range(top))
    q = mx.array(rng.standard_normal((1, 4, 5, 64)).astype(np.float32))
    kv = mx.array(rng.standard_normal((1, 2, 9, 64)).astype(np.float32))
    attn_ref = to_np(mx.fast.scaled_dot_product_attention(q, kv, kv, scale=0.125, mask="causal", stream=mx.cpu))
    errors = []

    def worker(i):
        try:
            s = mx.new_stream(mx.cpu)
            x, packed, scales, ref = cases[i]
            for _ in range(50):
                y = mm.fp4_gemm(x, packed, scales, group_size=64, stream=s)
                idx, wts = mm.moe_route(logits, top, stream=s)
                ym = mm.moe_gemm(xm, we, se, idx, group_size=64, weights=wts, stream=s)
                ya = mm.attention(q, kv, kv, scale=0.125, mask="causal", stream=s)
                mx.eval(y, ym, ya)
                assert rel_err(y, ref) < TOL[mx.float32]
                assert rel_err(ym, moe_ref) < 1e-4
                assert rel_err(ya, attn_ref) < 1e-4
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors


@given(
    b=st.sampled_from([1, 2]),
    hkv=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 3, 4]),
    lq=st.sampled_from([1, 2, 5, 8, 9, 17, 63, 65]),
    extra_k=st.sampled_from([0, 1, 7, 64, 130]),
    d=st.sampled_from([64, 80, 96, 128, 256]),
    dtype=st.sampled_from(DTYPES),
    mask=st.sampled_from([None, "causal", "bool", "additive"]),
    with_sinks=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_attention_property(b, hkv, group, lq, extra_k, d, dtype, mask, with_sinks, seed):
    from test_attention import reference

    rng = np.random.default_rng(seed)
    lk = lq + extra_k
    hq = hkv * group
    q, k, v = (mx.array(rng.standard_normal(s).astype(np.float32)).astype(dtype)
               for s in ((b, hq, lq, d), (b, hkv, lk, d), (b, hkv, lk, d)))
    scale = 1.0 / np.sqrt(d)
    m, ref_mask = mask, None
    if mask == "bool":
        bm = rng.random((lq, lk)) < 0.7
        m, ref_mask = mx.array(bm), np.where(bm, 0.0, -np.inf)
    elif mask == "additive":
        am = rng.standard_normal((1, hq, 1, lk)).astype(np.float32)
        m, ref_mask = mx.array(am).astype(dtype), to_np(mx.array(am).astype(dtype))
    sinks = mx.array(rng.standard_normal(hq).astype(np.float32) * 3) if with_sinks else None
    out = mm.attention(q, k, v, scale=scale, mask=m, sinks=sinks, stream=mx.cpu)
    ref = reference(to_np(q), to_np(k), to_np(v), scale, mask=ref_mask, causal=mask == "causal",
                    sinks=None if sinks is None else to_np(sinks))
    got = to_np(out)
    assert got.shape == ref.shape and np.all(np.isfinite(got))
    tol = {mx.float32: 2e-5, mx.float16: 3e-3, mx.bfloat16: 2e-2}[dtype]
    assert np.abs(got - ref).max() <= tol * max(1.0, np.abs(ref).max()), f"seed={seed}"


def test_attention_memory_is_flat_over_10000_calls(rng):
    q = mx.array(rng.standard_normal((1, 4, 3, 64)).astype(np.float32)).astype(mx.float16)
    k = mx.array(rng.standard_normal((1, 2, 40, 64)).astype(np.float32)).astype(mx.float16)
    _assert_flat_memory(lambda: mm.attention(q, k, k, scale=0.125, mask="causal", stream=mx.cpu))


def test_nan_propagates_per_row_in_moe_and_attention(rng):
    """A NaN in one token's activations poisons that token's outputs only, and nothing hangs."""
    e, n, k = 4, 24, 64
    w, s = mm.quantize(mx.array(rng.standard_normal((e, n, k)).astype(np.float32)), 32)
    xn = rng.standard_normal((5, k)).astype(np.float32)
    xn[2, 7] = np.nan
    idx, wts = mm.moe_route(mx.array(rng.standard_normal((5, e)).astype(np.float32)), 2, stream=mx.cpu)
    y = np.array(mm.moe_gemm(mx.array(xn), w, s, idx, group_size=32, weights=wts, stream=mx.cpu))
    assert np.all(np.isnan(y[2])) and np.all(np.isfinite(np.delete(y, 2, axis=0)))

    q = rng.standard_normal((1, 2, 4, 64)).astype(np.float32)
    q[0, 1, 3, 0] = np.nan
    kv = mx.array(rng.standard_normal((1, 2, 6, 64)).astype(np.float32))
    o = np.array(mm.attention(mx.array(q), kv, kv, scale=0.125, stream=mx.cpu))
    assert np.all(np.isnan(o[0, 1, 3]))
    o[0, 1, 3] = 0
    assert np.all(np.isfinite(o))
    # Decode with the keys split over several tasks, then merged.
    q1 = rng.standard_normal((1, 2, 1, 64)).astype(np.float32)
    q1[0, 0, 0, 5] = np.nan
    kv1 = mx.array(rng.standard_normal((1, 2, 2000, 64)).astype(np.float32))
    o1 = np.array(mm.attention(mx.array(q1), kv1, kv1, scale=0.125, stream=mx.cpu))
    assert np.all(np.isnan(o1[0, 0])) and np.all(np.isfinite(o1[0, 1]))
