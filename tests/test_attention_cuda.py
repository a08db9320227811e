"""attention on MLX's CUDA backend (cpp/cuda/attention_*), against a float64 reference.

Skips cleanly unless MLX has a CUDA GPU and this build has the CUDA attention kernels.
Run with ``MLX_MARLIN_CUDA_POISON=1`` so the output and the split-K scratch buffers
start as NaN: an element the kernels fail to write then fails the comparison.

Covers the three kernels of the plan (``plan_cuda_attention``): the tensor-core flash
kernel (f16/bf16, prefill and decode configurations, forced through
``MLX_MARLIN_CUDA_ATTN``), the SIMT kernel (f32, strides the tensor-core kernel cannot
copy), and the split-K merge (fused into the tensor-core kernel, a kernel of its own after
the SIMT one).
"""

import os

import numpy as np
import pytest

import mlx.core as mx

from reference import attention as reference

cuda_ok = hasattr(mx, "cuda") and mx.cuda.is_available()
if cuda_ok:
    import mlx_marlin as mm

    cuda_ok = "attention" in mm._ext._gpu_ops()
pytestmark = pytest.mark.skipif(not cuda_ok, reason="needs MLX with the CUDA backend, a GPU and the CUDA attention kernels")

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# atol = rtol; P is rounded to the input dtype before P V (as in every flash kernel).
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
HEAD_DIMS = [64, 80, 96, 128, 256]
# kCudaAttnConfigs: 0/1/4/5 prefill tiles, 2/3 decode tiles (1 and 3 also serve D = 256).
CONFIGS = [0, 1, 2, 3, 4, 5, 6]
_SEED = int(os.environ.get("MLX_MARLIN_TEST_SEED", "0"))


def make(rng, B, Hq, Hkv, Lq, Lk, D, dtype, scale_q=1.0):
    arrs = [
        mx.array(rng.standard_normal(shape).astype(np.float32) * sc).astype(DTYPES[dtype])
        for shape, sc in (((B, Hq, Lq, D), scale_q), ((B, Hkv, Lk, D), 1.0), ((B, Hkv, Lk, D), 1.0))
    ]
    return arrs, [np.array(a.astype(mx.float32)) for a in arrs]


def run(q, k, v, scale, mask=None):
    out = mm.attention(q, k, v, scale=scale, mask=mask, stream=mx.gpu)
    mx.eval(out)
    assert out.dtype == q.dtype and out.shape == q.shape
    return np.array(out.astype(mx.float32))


def check(got, expected, dtype, tol_scale=1.0):
    assert got.shape == expected.shape
    assert np.isfinite(got).all(), "non-finite output (an element left unwritten?)"
    t = TOL[dtype] * tol_scale
    np.testing.assert_allclose(got, expected, atol=t, rtol=t)


@pytest.fixture
def config(request, monkeypatch):
    """Forces MLX_MARLIN_CUDA_ATTN (read at every call) for the test's duration."""
    if request.param is None:
        monkeypatch.delenv("MLX_MARLIN_CUDA_ATTN", raising=False)
    else:
        monkeypatch.setenv("MLX_MARLIN_CUDA_ATTN", str(request.param))
    return request.param


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_head_dims_and_dtypes(dtype, D):
    rng = np.random.default_rng(_SEED + D)
    for (B, Hq, Hkv, Lq, Lk) in [(2, 4, 2, 37, 70), (1, 2, 1, 131, 131), (1, 4, 1, 3, 515)]:
        (q, k, v), (qn, kn, vn) = make(rng, B, Hq, Hkv, Lq, Lk, D, dtype)
        s = D**-0.5
        check(run(q, k, v, s), reference(qn, kn, vn, s), dtype)
        check(run(q, k, v, s, "causal"), reference(qn, kn, vn, s, causal=True), dtype)


@pytest.mark.parametrize("config", CONFIGS, indirect=True)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_every_config(config, dtype, D):
    # Forced configs that do not fit D fall back to the plan's own (also checked).
    rng = np.random.default_rng(_SEED + 7 * D + config)
    for (Lq, Lk, mask) in [(45, 99, "causal"), (2, 700, None), (70, 70, "bool")]:
        (q, k, v), (qn, kn, vn) = make(rng, 1, 8, 2, Lq, Lk, D, dtype)
        m, mn = mask, None
        if mask == "bool":
            mn = rng.random((Lq, Lk)) < 0.6
            m = mx.array(mn)
        check(run(q, k, v, 0.1, m), reference(qn, kn, vn, 0.1, mask=mn, causal=mask == "causal"), dtype)


@pytest.mark.parametrize("G", [1, 4, 8])
@pytest.mark.parametrize("Lq", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("Lk", [100, 1500, 4099])
def test_decode_split_k(G, Lq, Lk):
    rng = np.random.default_rng(_SEED + G * 100 + Lq * 10 + Lk)
    (q, k, v), (qn, kn, vn) = make(rng, 2, 2 * G, 2, Lq, Lk, 128, "bfloat16")
    check(run(q, k, v, 0.09), reference(qn, kn, vn, 0.09), "bfloat16")
    check(run(q, k, v, 0.09, "causal"), reference(qn, kn, vn, 0.09, causal=True), "bfloat16")


@pytest.mark.parametrize("merge", ["fused", "kernel"])
def test_split_k_decodes_in_one_graph(merge, monkeypatch):
    """Independent split-K decodes evaluated together (one command buffer, whose nodes
    may run at once), twice over: each launch must find its merge counters at zero and
    leave them so, and no two may share them.  `kernel` forces the separate merge kernel
    after the tensor-core kernel (MLX_MARLIN_CUDA_ATTN_MERGE, the A/B mode)."""
    if merge == "kernel":
        monkeypatch.setenv("MLX_MARLIN_CUDA_ATTN_MERGE", "kernel")
    else:
        monkeypatch.delenv("MLX_MARLIN_CUDA_ATTN_MERGE", raising=False)
    rng = np.random.default_rng(_SEED + 11)
    shapes = [(1, 32, 8, 1, 4096), (2, 8, 2, 3, 1500), (1, 4, 4, 8, 700), (1, 32, 8, 1, 4099), (3, 6, 3, 2, 2000)]
    for _ in range(2):
        cases = [make(rng, B, Hq, Hkv, Lq, Lk, 128, "bfloat16") for (B, Hq, Hkv, Lq, Lk) in shapes]
        outs = [mm.attention(q, k, v, scale=0.09, stream=mx.gpu) for (q, k, v), _ in cases]
        causal = [mm.attention(q, k, v, scale=0.09, mask="causal", stream=mx.gpu) for (q, k, v), _ in cases]
        mx.eval(*outs, *causal)
        for out, out_c, (_, (qn, kn, vn)) in zip(outs, causal, cases):
            check(np.array(out.astype(mx.float32)), reference(qn, kn, vn, 0.09), "bfloat16")
            check(np.array(out_c.astype(mx.float32)), reference(qn, kn, vn, 0.09, causal=True), "bfloat16")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("L", [1, 7, 64, 65, 127, 300])
def test_prefill_ragged_gqa(dtype, L):
    rng = np.random.default_rng(_SEED + L)
    (q, k, v), (qn, kn, vn) = make(rng, 2, 8, 2, L, L, 128, dtype)
    check(run(q, k, v, 0.088, "causal"), reference(qn, kn, vn, 0.088, causal=True), dtype)
    check(run(q, k, v, 0.088), reference(qn, kn, vn, 0.088), dtype)


@pytest.mark.parametrize("Lq,Lk", [(1, 50), (7, 100), (33, 257), (100, 333), (333, 100), (10, 4)])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_causal_aligned_to_end(Lq, Lk, dtype):
    rng = np.random.default_rng(_SEED + Lq * Lk)
    (q, k, v), (qn, kn, vn) = make(rng, 1, 8, 2, Lq, Lk, 96, dtype)
    got = run(q, k, v, 0.1, "causal")
    check(got, reference(qn, kn, vn, 0.1, causal=True), dtype)
    if Lq > Lk:  # queries before the first key see nothing: exact zeros
        np.testing.assert_array_equal(got[:, :, : Lq - Lk], 0.0)


MASK_SHAPES = [(33, 70), (2, 1, 33, 70), (1, 8, 1, 70), (8, 33, 70), (1, 1, 1, 70), (70,), (2, 8, 33, 70), (33, 1)]


@pytest.mark.parametrize("shape", MASK_SHAPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_array_masks_broadcast(shape, kind, dtype):
    rng = np.random.default_rng(_SEED + len(shape) * 7 + shape[-1])
    (q, k, v), (qn, kn, vn) = make(rng, 2, 8, 2, 33, 70, 64, dtype)
    if kind == "bool":
        m = rng.random(shape) < 0.7
        ma = mx.array(m)
    else:
        ma = mx.array((rng.standard_normal(shape) * 2).astype(np.float32)).astype(DTYPES[dtype])
        m = np.array(ma.astype(mx.float32))
    check(run(q, k, v, 0.125, ma), reference(qn, kn, vn, 0.125, mask=m), dtype)


@pytest.mark.parametrize("Lq,Lk", [(1, 2000), (4, 700), (40, 90), (130, 200)])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_fully_masked_rows_are_zero(Lq, Lk, dtype):
    rng = np.random.default_rng(_SEED + Lq + Lk)
    (q, k, v), (qn, kn, vn) = make(rng, 1, 4, 2, Lq, Lk, 64, dtype)
    m = rng.random((Lq, Lk)) < 0.5
    m[0] = False
    if Lq > 2:
        m[2, : Lk // 2] = False  # masked only in the first splits
    got = run(q, k, v, 0.125, mx.array(m))
    np.testing.assert_array_equal(got[:, :, 0], 0.0)
    check(got, reference(qn, kn, vn, 0.125, mask=m), dtype)
    add = mx.array(np.where(m, 0.0, -np.inf).astype(np.float32)).astype(DTYPES[dtype])
    got = run(q, k, v, 0.125, add)
    np.testing.assert_array_equal(got[:, :, 0], 0.0)
    check(got, reference(qn, kn, vn, 0.125, mask=m), dtype)


def test_strided_inputs_mma_and_simt():
    rng = np.random.default_rng(_SEED + 3)
    (q, k, v), (qn, kn, vn) = make(rng, 2, 4, 2, 40, 90, 64, "float16")
    # [B, L, H, D] storage viewed as [B, H, L, D]: rows still 16-byte aligned (MMA kernel).
    qt = mx.array(np.ascontiguousarray(qn.transpose(0, 2, 1, 3))).astype(mx.float16).transpose(0, 2, 1, 3)
    kt = mx.array(np.ascontiguousarray(kn.transpose(0, 2, 1, 3))).astype(mx.float16).transpose(0, 2, 1, 3)
    m = rng.random((1, 1, 1, 90)) < 0.8
    mb = mx.broadcast_to(mx.array(m), (2, 4, 40, 90))
    check(run(qt, kt, v, 0.125, mb), reference(qn, kn, vn, 0.125, mask=m), "float16")
    # Feature stride != 1 and a base offset of one element: the SIMT kernel.
    kf = mx.array(np.ascontiguousarray(kn.transpose(0, 1, 3, 2))).astype(mx.float16).transpose(0, 1, 3, 2)
    wide = mx.array(np.concatenate([np.zeros_like(vn[..., :1]), vn], axis=-1)).astype(mx.float16)
    vo = wide[..., 1:]
    for causal in (None, "causal"):
        check(run(q, kf, vo, 0.125, causal), reference(qn, kn, vn, 0.125, causal=causal == "causal"), "float16")
    # Decode through the SIMT kernel with split-K.
    (q, k, v), (qn, kn, vn) = make(rng, 1, 8, 2, 2, 3000, 128, "bfloat16")
    kf = mx.array(np.ascontiguousarray(kn.transpose(0, 1, 3, 2))).astype(mx.bfloat16).transpose(0, 1, 3, 2)
    check(run(q, kf, v, 0.09, "causal"), reference(qn, kn, vn, 0.09, causal=True), "bfloat16")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("Lq", [1, 50])
def test_huge_logits_do_not_overflow(dtype, Lq):
    rng = np.random.default_rng(_SEED + 4)
    (q, k, v), (qn, kn, vn) = make(rng, 1, 2, 1, Lq, 300, 64, dtype, scale_q=100.0)
    got = run(q, k, v, 5.0, "causal")
    assert np.abs(5.0 * qn @ kn.transpose(0, 1, 3, 2)).max() > 1e4
    assert np.isfinite(got).all()
    # fp32 rounding of a 1e4 logit is ~1e-3 (near-ties move the weights slightly).
    np.testing.assert_allclose(got, reference(qn, kn, vn, 5.0, causal=True), atol=1e-2 + TOL[dtype], rtol=1e-2)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("Lq,Lk", [(20, 90), (1, 3000)])
def test_nan_propagates_to_its_rows(dtype, Lq, Lk):
    rng = np.random.default_rng(_SEED + 5)
    (q, k, v), (qn, kn, vn) = make(rng, 1, 4, 2, Lq, Lk, 64, dtype)
    qn = qn.copy()
    qn[0, 1, Lq - 1, 5] = np.nan  # one query row
    got = run(mx.array(qn).astype(DTYPES[dtype]), k, v, 0.125)
    assert np.isnan(got[0, 1, Lq - 1]).all()
    keep = np.ones(got.shape[:3], bool)
    keep[0, 1, Lq - 1] = False
    ref = reference(np.where(np.isnan(qn), 0, qn), kn, vn, 0.125)
    np.testing.assert_allclose(got[keep], ref[keep], atol=TOL[dtype], rtol=TOL[dtype])
    # NaN in an additive mask entry: exactly that row.
    add = np.zeros((Lq, Lk), np.float32)
    add[0, Lk // 3] = np.nan
    got = run(q, k, v, 0.125, mx.array(add).astype(DTYPES[dtype]))
    assert np.isnan(got[:, :, 0]).all() and np.isfinite(got[:, :, 1:]).all()


def test_empty_and_no_keys():
    out = mm.attention(mx.zeros((1, 2, 0, 64)), mx.zeros((1, 1, 5, 64)), mx.zeros((1, 1, 5, 64)), scale=1.0, stream=mx.gpu)
    assert np.array(out).shape == (1, 2, 0, 64)
    for dt in (mx.float32, mx.bfloat16):
        q = mx.ones((1, 2, 3, 64), dt)
        kv = mx.zeros((1, 1, 0, 64), dt)
        np.testing.assert_array_equal(run(q, kv, kv, 1.0), 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("config,persistent", [(None, "1"), (None, "0"), (5, "1")], indirect=["config"])
def test_wgmma_prefill(dtype, D, config, persistent, monkeypatch):
    """Prefill without a mask array at D = 64 / 128: Hopper's wgmma kernel where the
    device has it (the plan's default), in its persistent form (one block per SM walking
    the items; the last shape has 144 items for 132 SMs) and its
    one-block-per-item form, next to the forced mma.sync config 5.  Shapes off the
    128-query / 128-key tiles, GQA, Lq != Lk, causal with Lq > Lk, a negative scale (no
    scale folding), strided [B, L, H, D] storage."""
    monkeypatch.setenv("MLX_MARLIN_CUDA_ATTN_PERSISTENT", persistent)
    rng = np.random.default_rng(_SEED + D + (config or 0))
    for (B, Hq, Hkv, Lq, Lk, scale) in [(2, 4, 2, 9, 9, 0.1), (1, 8, 2, 127, 130, 0.1), (1, 2, 1, 129, 1000, 0.09),
                                        (1, 4, 4, 300, 250, 0.1), (1, 2, 2, 513, 513, -0.08), (1, 3, 1, 1000, 129, 0.1),
                                        (1, 2, 1, 20, 0, 0.1), (1, 16, 4, 1100, 1100, 0.1)]:
        (q, k, v), (qn, kn, vn) = make(rng, B, Hq, Hkv, Lq, Lk, D, dtype)
        for causal in (False, True):
            expected = reference(qn, kn, vn, scale, causal=causal) if Lk else np.zeros(qn.shape)  # no keys: zeros
            check(run(q, k, v, scale, "causal" if causal else None), expected, dtype)
    (q, k, v), (qn, kn, vn) = make(rng, 2, 4, 2, 200, 333, D, dtype)
    as_blhd = lambda a: mx.array(np.ascontiguousarray(a.transpose(0, 2, 1, 3))).astype(DTYPES[dtype]).transpose(0, 2, 1, 3)
    for causal in (False, True):
        check(run(as_blhd(qn), as_blhd(kn), as_blhd(vn), 0.1, "causal" if causal else None),
              reference(qn, kn, vn, 0.1, causal=causal), dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mask", [None, "causal", "additive"])
@pytest.mark.parametrize("Lq,Lk", [(1, 4096), (256, 256)])
def test_matches_mlx_sdpa_on_gpu(dtype, mask, Lq, Lk):
    rng = np.random.default_rng(_SEED + 9)
    (q, k, v), _ = make(rng, 1, 32, 8, Lq, Lk, 128, dtype)
    m = mask
    if mask == "additive":
        m = mx.array(rng.standard_normal((1, 1, Lq, Lk)).astype(np.float32)).astype(DTYPES[dtype])
    ours = run(q, k, v, 128**-0.5, m)
    theirs = mx.fast.scaled_dot_product_attention(q, k, v, scale=128**-0.5, mask=m, stream=mx.gpu)
    theirs = np.array(theirs.astype(mx.float32))
    np.testing.assert_allclose(ours, theirs, atol=2 * TOL[dtype], rtol=2 * TOL[dtype])
