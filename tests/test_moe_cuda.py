"""moe_route / moe_gemm / moe_mlp on MLX's CUDA backend, against float64 references.

Skips cleanly unless MLX has a CUDA GPU and this build has the CUDA MoE kernels.  Run with
``MLX_MARLIN_CUDA_POISON=1`` so every output buffer is filled with NaN before the kernels
run: an element they fail to write then fails the comparison.  The shapes are chosen for
the kernels' edges: T = 1, tile tails (rows and columns off the 16/64-row and 32/128-column
tiles), N not a multiple of 8 or 4 (scalar weight / scale / store paths), misaligned x,
empty experts, every pair on one expert, top_k = 1 and = E, E = 256 and E > 256, both GEMM
tile variants (decode: <= 16 rows per expert on average, else prefill), every index dtype.
"""

import os
import zlib

import numpy as np
import pytest

import mlx.core as mx

from reference import moe_gemm as ref_gemm
from reference import moe_mlp as ref_mlp
from reference import moe_route as ref_route
from reference import to_np
from test_moe import make_experts as experts
from test_moe import rand

cuda_ok = hasattr(mx, "cuda") and mx.cuda.is_available()
if cuda_ok:
    import mlx_marlin as mm

    cuda_ok = "moe_gemm" in mm._ext._gpu_ops()
pytestmark = pytest.mark.skipif(not cuda_ok, reason="needs MLX with the CUDA backend, a GPU and the CUDA MoE kernels")

# max |err| / max(1, max |ref|): fp32 accumulation, one rounding of the output (float32
# activations run the tensor cores on a bf16 hi + lo split: ~2^-17 relative per product).
TOL = {"float32": 3e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
ACTS = [None, "relu", "gelu", "gelu_approx", "silu"]
_SEED = int(os.environ.get("MLX_MARLIN_TEST_SEED", "0"))


def close(out, ref, dtype, factor=1.0, what=""):
    """max |err| <= TOL * factor * max(1, max |ref|), and every element finite (written)."""
    got = to_np(out)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.all(np.isfinite(got)), f"{what}: non-finite output (unwritten element?)"
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert err <= TOL[dtype] * factor * scale, f"{what}: max abs err {err:.3e} > {TOL[dtype] * factor * scale:.3e}"


def close_with_nan_rows(out, ref, nan_rows, dtype, factor=1.0, what=""):
    """Rows fed by an invalid expert id must be NaN (docs/moe.md), the others close."""
    got = to_np(out)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.all(np.isnan(got[nan_rows])), f"{what}: rows of invalid ids must be NaN"
    close(mx.array(got[~nan_rows]), ref[~nan_rows], dtype, factor, what)


# ---------------------------------------------------------------- moe_route
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("T,E,k", [(1, 8, 2), (37, 64, 8), (300, 16, 1), (5, 256, 256), (9, 256, 7),
                                   (3, 3, 3), (6, 300, 11), (2, 1, 1), (70, 128, 128)])
@pytest.mark.parametrize("normalize", [True, False])
def test_route(dtype, T, E, k, normalize):
    rng = np.random.default_rng(_SEED + T * 1000 + E + k)
    logits = rand(rng, (T, E), dtype, 3.0)
    idx, w = mm.moe_route(logits, k, normalize=normalize, stream=mx.gpu)
    assert idx.dtype == mx.uint32 and w.dtype == logits.dtype and idx.shape == (T, k)
    ref_idx, ref_w = ref_route(to_np(logits), k, normalize)
    np.testing.assert_array_equal(np.array(idx), ref_idx)
    close(w, ref_w, dtype, 2, "weights")
    ci, cw = mm.moe_route(logits, k, normalize=normalize, stream=mx.cpu)
    np.testing.assert_array_equal(np.array(idx), np.array(ci))


def test_route_ties_nan_inf():
    rng = np.random.default_rng(_SEED + 1)
    logits = rng.integers(-2, 3, size=(60, 12)).astype(np.float32)
    logits[0] = 1.0
    logits[1, [3, 7]] = np.nan
    logits[2, :] = -np.inf
    logits[3, 5] = np.inf
    logits[4, [0, 4]] = -np.inf
    logits[4, 9] = np.nan
    logits[5, 2] = -0.0
    logits[5, 3] = 0.0
    for k in (1, 3, 12):
        for normalize in (True, False):
            gi, gw = mm.moe_route(mx.array(logits), k, normalize=normalize, stream=mx.gpu)
            ci, cw = mm.moe_route(mx.array(logits), k, normalize=normalize, stream=mx.cpu)
            np.testing.assert_array_equal(np.array(gi), np.array(ci))
            np.testing.assert_allclose(np.array(gw), np.array(cw), rtol=2e-6, atol=1e-7, equal_nan=True)


# ---------------------------------------------------------------- moe_gemm
GEMM = [
    # T, E, k, N, K, g, form, weighted   (P <= 16 E: decode tiles, else prefill tiles)
    (1, 8, 2, 40, 64, 32, "shared", False),
    (1, 64, 8, 264, 512, 64, "shared", True),
    (5, 6, 3, 100, 384, 128, "per_slot", False),     # N % 8 = 4: scalar scales / stores
    (17, 16, 4, 130, 256, 128, "shared", True),      # N % 4 = 2: scalar weight loads
    (33, 8, 2, 72, 128, 32, "per_slot", True),
    (300, 8, 2, 136, 256, 64, "shared", False),      # prefill, row tails
    (300, 8, 2, 40, 128, 64, "per_slot", True),
    (129, 4, 4, 264, 128, 32, "shared", True),       # top_k = E
    (100, 256, 8, 72, 64, 32, "shared", True),       # E = 256
    (80, 300, 3, 40, 64, 64, "shared", False),       # E > 256
    (513, 64, 8, 200, 256, 128, "shared", True),     # prefill, many tiles
]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", GEMM)
def test_moe_gemm(dtype, case):
    T, E, k, N, K, g, form, weighted = case
    rng = np.random.default_rng(_SEED + zlib.crc32(repr(case).encode()) % 10000)
    for i, sdt in enumerate((mx.float16, mx.bfloat16)):
        act = ACTS[(i + T + k) % len(ACTS)]
        packed, scales, dense = experts(rng, E, N, K, g, sdt)
        x = rand(rng, (T, K) if form == "shared" else (T, k, K), dtype)
        idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)]).astype(np.int32)
        w = rand(rng, (T, k)) if weighted else None
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, activation=act, stream=mx.gpu)
        assert out.dtype == x.dtype and out.shape == ((T, N) if weighted else (T, k, N))
        ref = ref_gemm(to_np(x), dense, idx, to_np(w) if weighted else None, act)
        close(out, ref, dtype, 1, f"scales={sdt} act={act}")


@pytest.mark.parametrize("pattern", ["one_expert", "few_experts", "repeated_slots", "one_token_all_experts"])
@pytest.mark.parametrize("T", [1, 7, 70, 600])
def test_moe_gemm_skewed(pattern, T):
    rng = np.random.default_rng(_SEED + T + len(pattern))
    E, k, N, K, g = 16, 3, 72, 128, 64
    if pattern == "one_token_all_experts":
        k = E
    packed, scales, dense = experts(rng, E, N, K, g)
    if pattern == "one_expert":
        idx = np.full((T, k), 5, dtype=np.int32)
    elif pattern == "few_experts":
        idx = rng.choice([3, 11], size=(T, k)).astype(np.int32)
    elif pattern == "repeated_slots":
        idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
        idx[:, 1] = idx[:, 0]
    else:
        idx = np.stack([rng.permutation(E) for _ in range(T)]).astype(np.int32)
    for dtype in ("bfloat16", "float32"):
        x = rand(rng, (T, K), dtype)
        w = rand(rng, (T, k))
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, stream=mx.gpu)
        close(out, ref_gemm(to_np(x), dense, idx), dtype, 1, "unweighted")
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=mx.gpu)
        close(out, ref_gemm(to_np(x), dense, idx, to_np(w)), dtype, 1, "weighted")


@pytest.mark.parametrize("idx_dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_moe_gemm_index_dtypes(idx_dtype):
    rng = np.random.default_rng(_SEED + 220)
    T, E, k, N, K, g = 45, 6, 2, 40, 64, 64
    packed, scales, dense = experts(rng, E, N, K, g)
    idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)])
    x = rand(rng, (T, K), "float16")
    out = mm.moe_gemm(x, packed, scales, mx.array(idx.astype(idx_dtype)), group_size=g, stream=mx.gpu)
    close(out, ref_gemm(to_np(x), dense, idx), "float16")


@pytest.mark.parametrize("bad", [-1, 6, 1000])
def test_moe_gemm_invalid_ids_give_nan_rows(bad):
    """Ids outside [0, E) cannot raise on CUDA (no read-back): NaN rows exactly where
    they feed the output (the pair's row, or the token's combined row), as on every backend."""
    rng = np.random.default_rng(_SEED + 240)
    T, E, k, N, K, g = 50, 6, 2, 40, 64, 64
    packed, scales, dense = experts(rng, E, N, K, g)
    idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
    idx[2, 1] = bad
    idx[30, 0] = bad
    valid = (idx >= 0) & (idx < E)
    x = rand(rng, (T, K), "bfloat16")
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, stream=mx.gpu)
    ref = ref_gemm(to_np(x), dense, np.where(valid, idx, 0))
    close_with_nan_rows(out, ref, ~valid, "bfloat16")
    w = rand(rng, (T, k))
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, stream=mx.gpu)
    ref = ref_gemm(to_np(x), dense, np.where(valid, idx, 0), to_np(w))
    close_with_nan_rows(out, ref, ~valid.all(axis=1), "bfloat16")


def test_moe_gemm_misaligned_x_and_empty():
    rng = np.random.default_rng(_SEED + 250)
    T, E, k, N, K, g = 21, 8, 2, 72, 128, 32
    packed, scales, dense = experts(rng, E, N, K, g)
    flat = rand(rng, (T * K + 3,), "float16")
    x = flat[3:].reshape(T, K)  # a view 6 bytes into its buffer: the scalar x loads
    idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
    out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, stream=mx.gpu)
    close(out, ref_gemm(to_np(x), dense, idx), "float16")
    empty = mm.moe_gemm(mx.zeros((0, K)), packed, scales, mx.zeros((0, 2), mx.int32), group_size=g, stream=mx.gpu)
    mx.eval(empty)
    assert empty.shape == (0, 2, N)
    zero_k = mm.moe_gemm(rand(rng, (4, K)), packed, scales, mx.zeros((4, 0), mx.int32), group_size=g,
                         weights=mx.zeros((4, 0)), stream=mx.gpu)
    np.testing.assert_array_equal(np.array(zero_k), np.zeros((4, N), np.float32))


def test_moe_gemm_deterministic_and_matches_cpu():
    rng = np.random.default_rng(_SEED + 260)
    T, E, k, N, K, g = 300, 16, 4, 136, 256, 64
    packed, scales, _ = experts(rng, E, N, K, g)
    x = rand(rng, (T, K))
    idx = mx.array(rng.integers(0, E, size=(T, k)).astype(np.int32))
    w = rand(rng, (T, k))
    a = mm.moe_gemm(x, packed, scales, idx, group_size=g, weights=w, activation="silu", stream=mx.gpu)
    b = mm.moe_gemm(x, packed, scales, idx, group_size=g, weights=w, activation="silu", stream=mx.gpu)
    np.testing.assert_array_equal(np.array(a), np.array(b))
    c = mm.moe_gemm(x, packed, scales, idx, group_size=g, weights=w, activation="silu", stream=mx.cpu)
    np.testing.assert_allclose(np.array(a), np.array(c), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- moe_mlp
MLP = [
    # T, E, k, K, I, N_out, g, act, form, normalize
    (1, 8, 2, 64, 96, 40, 32, "silu", "separate", True),
    (1, 64, 8, 256, 128, 264, 64, "silu", "fused", True),
    (19, 16, 4, 128, 128, 72, 128, "gelu", "separate", False),
    (300, 8, 2, 64, 64, 40, 64, "silu", "fused", True),            # prefill tiles
    (300, 4, 1, 64, 96, 100, 32, "relu", "separate", True),        # top_k = 1, N_out % 8 = 4
    (12, 6, 6, 128, 64, 72, 32, "gelu_approx", "fused", False),    # top_k = E
    (40, 256, 8, 64, 64, 40, 32, "silu", "separate", True),        # E = 256
    (7, 5, 3, 64, 32, 40, 32, None, "separate", True),
    (33, 300, 2, 64, 32, 24, 32, "silu", "fused", True),           # E > 256
    (520, 64, 8, 256, 192, 136, 64, "silu", "fused", True),        # prefill, many tiles
]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", MLP)
def test_moe_mlp(dtype, case):
    T, E, k, K, I, N_out, g, act, form, normalize = case
    rng = np.random.default_rng(_SEED + zlib.crc32(repr(case).encode()) % 10000)
    sdt = mx.bfloat16 if dtype == "bfloat16" else mx.float16
    pg, sg, gate = experts(rng, E, I, K, g, sdt)
    pu, su, up = experts(rng, E, I, K, g, sdt)
    pd, sd, down = experts(rng, E, N_out, I, g, sdt)
    x = rand(rng, (T, K), dtype)
    logits = rand(rng, (T, E), dtype)
    if form == "fused":
        out = mm.moe_mlp(x, logits, mx.concatenate([pg, pu], 2), mx.concatenate([sg, su], 2), None, None, pd, sd,
                         top_k=k, group_size=g, activation=act, normalize=normalize, stream=mx.gpu)
    else:
        out = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, activation=act,
                         normalize=normalize, stream=mx.gpu)
    assert out.dtype == x.dtype and out.shape == (T, N_out)
    close(out, ref_mlp(to_np(x), to_np(logits), gate, up, down, k, act, normalize), dtype, 2)


def test_moe_mlp_fused_equals_separate_and_cpu():
    rng = np.random.default_rng(_SEED + 310)
    T, E, k, K, I, N_out, g = 77, 8, 2, 128, 64, 72, 64
    pg, sg, _ = experts(rng, E, I, K, g)
    pu, su, _ = experts(rng, E, I, K, g)
    pd, sd, _ = experts(rng, E, N_out, I, g)
    x = rand(rng, (T, K))
    logits = rand(rng, (T, E))
    sep = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, stream=mx.gpu)
    fused = mm.moe_mlp(x, logits, mx.concatenate([pg, pu], 2), mx.concatenate([sg, su], 2), None, None, pd, sd,
                       top_k=k, group_size=g, stream=mx.gpu)
    np.testing.assert_array_equal(np.array(sep), np.array(fused))
    cpu = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, stream=mx.cpu)
    np.testing.assert_allclose(np.array(sep), np.array(cpu), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["decode", "prefill", "decode_u3", "decode_u4"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_forced_tile_variants(variant, dtype, monkeypatch):
    """Both GEMM tile variants on shapes the plan would give the other one
    (MLX_MARLIN_CUDA_MOE forces it; read at every call)."""
    monkeypatch.setenv("MLX_MARLIN_CUDA_MOE", variant)
    for case in (GEMM[0], GEMM[3], GEMM[5], GEMM[10]):
        T, E, k, N, K, g, form, weighted = case
        rng = np.random.default_rng(_SEED + zlib.crc32(repr(case).encode()) % 10000 + 7)
        packed, scales, dense = experts(rng, E, N, K, g)
        x = rand(rng, (T, K) if form == "shared" else (T, k, K), dtype)
        idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
        w = rand(rng, (T, k)) if weighted else None
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=w, activation="gelu", stream=mx.gpu)
        close(out, ref_gemm(to_np(x), dense, idx, to_np(w) if weighted else None, "gelu"), dtype, 1, repr(case))
    for case in (MLP[0], MLP[3], MLP[9]):
        T, E, k, K, I, N_out, g, act, form, normalize = case
        rng = np.random.default_rng(_SEED + zlib.crc32(repr(case).encode()) % 10000 + 7)
        pg, sg, gate = experts(rng, E, 2 * I, K, g)
        pd, sd, down = experts(rng, E, N_out, I, g)
        x = rand(rng, (T, K), dtype)
        logits = rand(rng, (T, E), dtype)
        out = mm.moe_mlp(x, logits, pg, sg, None, None, pd, sd, top_k=k, group_size=g, activation=act,
                         normalize=normalize, stream=mx.gpu)
        ref = ref_mlp(to_np(x), to_np(logits), gate[:, :I], gate[:, I:], down, k, act, normalize)
        close(out, ref, dtype, 2, repr(case))


@pytest.mark.parametrize("idx_dtype", ["int32", "uint32"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_direct_mode_matches_grouping(idx_dtype, dtype, monkeypatch):
    """Calls of <= 32 pairs with int32 / uint32 ids skip the grouping (one pair per GEMM
    block): the same kernels on the same rows, so bit-identical to the grouped path
    (MLX_MARLIN_CUDA_MOE_DIRECT=0), invalid ids included."""
    rng = np.random.default_rng(_SEED + 270)
    E, N, K, g = 12, 72, 128, 32
    packed, scales, dense = experts(rng, E, N, K, g)
    for T, k, bad in ((1, 8, False), (4, 8, True), (10, 3, True), (16, 2, False)):
        idx = rng.integers(0, E, size=(T, k)).astype(np.int64)
        if bad:
            idx[T // 2, k - 1] = -1 if idx_dtype == "int32" else 2**32 - 1
            idx[0, 0] = E
        x = rand(rng, (T, K), dtype)
        w = rand(rng, (T, k))
        ids = mx.array(idx.astype(idx_dtype))
        outs = {}
        for direct in ("1", "0"):
            monkeypatch.setenv("MLX_MARLIN_CUDA_MOE_DIRECT", direct)
            outs[direct] = (mm.moe_gemm(x, packed, scales, ids, group_size=g, activation="silu", stream=mx.gpu),
                            mm.moe_gemm(x, packed, scales, ids, group_size=g, weights=w, stream=mx.gpu))
            mx.eval(outs[direct])
        valid = (idx >= 0) & (idx < E)
        safe = np.where(valid, idx, 0)
        ref = ref_gemm(to_np(x), dense, safe, None, "silu")
        close_with_nan_rows(outs["1"][0], ref, ~valid, dtype, 1, f"T={T} unweighted")
        close_with_nan_rows(outs["1"][1], ref_gemm(to_np(x), dense, safe, to_np(w)), ~valid.all(axis=1), dtype, 1,
                            f"T={T}")
        for a, b in zip(outs["1"], outs["0"]):
            np.testing.assert_array_equal(np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32)))
    # moe_mlp at decode sizes runs direct too (its routing writes uint32 ids).
    pg, sg, gate = experts(rng, E, 64, K, g)
    pu, su, up = experts(rng, E, 64, K, g)
    pd, sd, down = experts(rng, E, N, 64, g)
    x = rand(rng, (3, K), dtype)
    logits = rand(rng, (3, E), dtype)
    outs = {}
    for direct in ("1", "0"):
        monkeypatch.setenv("MLX_MARLIN_CUDA_MOE_DIRECT", direct)
        outs[direct] = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=4, group_size=g, stream=mx.gpu)
        mx.eval(outs[direct])
    close(outs["1"], ref_mlp(to_np(x), to_np(logits), gate, up, down, 4, "silu", True), dtype, 2)
    np.testing.assert_array_equal(np.array(outs["1"].astype(mx.float32)), np.array(outs["0"].astype(mx.float32)))
