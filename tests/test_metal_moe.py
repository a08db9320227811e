"""The Metal MoE kernels (metal/moe_gemm.metal: grouping, grouped expert GEMM, the gate/up
GEMM with act(gate) * up fused, weighted combine) run directly on the checked
Metal-on-CPU emulator against numpy: every host name moe_*_kernel_name can return.
Buffers are sized in the kernels' storage dtypes (bf16 intermediates are 2-byte
buffers: a kernel storing float32 there fails the bounds checks).  The op path
(mm.moe_gemm / mm.moe_mlp through encode_moe_gemm / encode_moe_mlp) is covered by
tests/test_moe.py under scripts/emulator_tests.sh."""

import struct
import zlib

import numpy as np
import pytest

import mlx_marlin._ext as ext
from test_metal_gemm import (ACTS, KERNELS, TOL, activation, emu, from_device, poisoned,  # noqa: F401
                             pytestmark, random_weight, rel_err, to_device)

MOE_GEMM = [n for n in KERNELS if n.startswith("moe_gemm_") and not n.startswith("moe_gemm_glu_")]
GLU_GEMM = [n for n in KERNELS if n.startswith("moe_gemm_glu_")]
GROUP = [n for n in KERNELS if n.startswith("moe_group_")]
COMBINE = [n for n in KERNELS if n.startswith("moe_combine_")]
INDEX_DTYPES = {"i8": np.int8, "u8": np.uint8, "i16": np.int16, "u16": np.uint16, "i32": np.int32,
                "u32": np.uint32, "i64": np.int64, "u64": np.uint64}


def moe_params(T, k, E, N, K, g, act, shared_x, tile_m, max_tiles, weighted, ld=None, up_col=0):
    """MoeGemmParams (cpp/common/moe_params.h)."""
    return struct.pack("14i", T, k, E, N, K, g, ACTS[act], int(shared_x), T * k, tile_m, max_tiles, int(weighted),
                       N if ld is None else ld, up_col)


def run_group(emu, name, idx, E, tile_m, max_tiles):
    T, k = idx.shape
    P = T * k
    bufs = dict(offsets=np.full(E + 1, -7, np.int32), pairs=np.full(max(P, 1), -7, np.int32),
                position=np.full(max(P, 1), -7, np.int32), tiles=np.full((max(max_tiles, 1), 4), -7, np.int32),
                status=np.full(4, -7, np.int32))
    emu.launch(name, grid=(1, 1, 1), tg=(256, 1, 1),
               buffers=[np.ascontiguousarray(idx) if P else np.zeros(1, idx.dtype), bufs["offsets"], bufs["pairs"], bufs["position"], bufs["tiles"],
                        bufs["status"], moe_params(T, k, E, 8, 32, 32, "none", True, tile_m, max_tiles, False)],
               check_uninitialized=True)
    return bufs


def expected_groups(ids, E):
    flat = ids.reshape(-1).astype(np.int64)
    valid = (flat >= 0) & (flat < E)
    order = np.argsort(np.where(valid, flat, E), kind="stable")[: valid.sum()]
    counts = np.bincount(flat[valid], minlength=E)
    return np.concatenate([[0], np.cumsum(counts)]), order


@pytest.mark.parametrize("name", GROUP)
def test_group_kernel(emu, name):
    """Stable grouping by expert (== numpy stable argsort), the tile list, and the first
    invalid id, for every index dtype."""
    dt = INDEX_DTYPES[name.rsplit("_", 1)[1]]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for T, k, E in [(1, 1, 1), (7, 3, 5), (300, 2, 8), (40, 2, 300 if np.iinfo(dt).max > 300 else 100)]:
        ids = rng.integers(0, E, (T, k)) if E > 1 else np.zeros((T, k), np.int64)
        if T == 300:
            ids[:, 1] = 3  # one expert takes more than a tile
        idx = ids.astype(dt)
        tile_m = 32
        max_tiles = -(-T * k // tile_m) + min(E, T * k)
        b = run_group(emu, name, idx, E, tile_m, max_tiles)
        offsets, order = expected_groups(ids, E)
        np.testing.assert_array_equal(b["offsets"], offsets)
        np.testing.assert_array_equal(b["pairs"][: T * k], order)
        np.testing.assert_array_equal(b["position"][order], np.arange(T * k))
        counts = np.diff(offsets)
        assert list(b["status"][1:]) == [0, int((counts > 0).sum()), int(counts.max())]
        tiles = [(e, r, min(offsets[e + 1], r + tile_m), 0) for e in range(E) for r in range(offsets[e], offsets[e + 1], tile_m)]
        assert b["status"][0] == len(tiles) <= max_tiles
        np.testing.assert_array_equal(b["tiles"][: len(tiles)], np.array(tiles).reshape(-1, 4))
    # Invalid ids: excluded from the groups, the first one reported.
    ids = rng.integers(0, 6, (5, 2))
    bad = np.array([6, 100] + ([-1] if np.issubdtype(dt, np.signedinteger) else []))
    ids[3, 1] = bad[0]
    ids[4, 0] = bad[-1]
    idx = ids.astype(dt)
    b = run_group(emu, name, idx, 6, 32, 16)
    assert b["status"][1] == 3 * 2 + 1 + 1
    offsets, order = expected_groups(idx.astype(np.int64) if np.issubdtype(dt, np.signedinteger) else ids, 6)
    assert b["position"][7] == -1 and b["position"][8] == -1
    np.testing.assert_array_equal(b["pairs"][: len(order)], order)
    np.testing.assert_array_equal(b["offsets"], offsets)  # offsets[E] = valid pairs
    check_invalid_group(b, offsets, [7, 8], 32)


def check_invalid_group(b, offsets, bad_pairs, tile_m):
    """Pairs with an invalid expert id follow the valid ones in pair order under tiles of
    expert -1 (the GEMMs write NaN rows for them), counted in status[0]."""
    E = len(offsets) - 1
    valid = int(offsets[E])
    n_bad = len(bad_pairs)
    np.testing.assert_array_equal(b["pairs"][valid: valid + n_bad], bad_pairs)
    counts = np.diff(offsets)
    valid_tiles = int(sum(-(-c // tile_m) for c in counts))
    bad_tiles = [(-1, r, min(valid + n_bad, r + tile_m), 0) for r in range(valid, valid + n_bad, tile_m)]
    assert b["status"][0] == valid_tiles + len(bad_tiles)
    np.testing.assert_array_equal(b["tiles"][valid_tiles: valid_tiles + len(bad_tiles)],
                                  np.array(bad_tiles, np.int32).reshape(-1, 4))


@pytest.mark.parametrize("n,E,pattern", [
    (0, 4, "random"), (1, 1, "random"), (37 * 8, 64, "random"), (5000, 256, "random"), (2000, 256, "one"),
    (777, 3, "random"), (300, 256, "sorted"), (4099, 17, "skewed"), (3000, 600, "random"), (1500, 513, "skewed"),
])
def test_group_prefix_sums(emu, n, E, pattern):
    """The simdgroup-prefix-sum grouping (moe_group_u32, one threadgroup) == a stable
    numpy argsort: 0 / 1 pairs, many pairs per simdgroup chunk, everything on one
    expert, sorted and geometric ids, and E > 256 (several expert windows); offsets,
    pairs, positions, the tile list and (tiles, -, active experts, largest group)."""
    rng = np.random.default_rng(n + E)
    if pattern == "one":
        ids = np.full(n, 3)
    elif pattern == "sorted":
        ids = np.sort(rng.integers(0, E, n))
    elif pattern == "skewed":
        ids = np.minimum(rng.geometric(0.4, n) - 1, E - 1) + (E - 40 if E > 256 else 0)
    else:
        ids = rng.integers(0, E, n)
    tile_m = 32
    max_tiles = -(-n // tile_m) + min(E, n)
    b = run_group(emu, "moe_group_u32", ids.astype(np.uint32).reshape(n, 1), E, tile_m, max_tiles)
    offsets, order = expected_groups(ids, E)
    counts = np.diff(offsets)
    np.testing.assert_array_equal(b["offsets"], offsets)
    np.testing.assert_array_equal(b["pairs"][:n], order)
    np.testing.assert_array_equal(b["position"][order], np.arange(n))
    tiles = [(e, r, min(offsets[e + 1], r + tile_m), 0) for e in range(E) for r in range(offsets[e], offsets[e + 1], tile_m)]
    assert list(b["status"]) == [len(tiles), 0, int((counts > 0).sum()), int(counts.max(initial=0))]
    np.testing.assert_array_equal(b["tiles"][: len(tiles)], np.array(tiles, np.int32).reshape(-1, 4))


def test_group_invalid_ids_u32(emu):
    """uint32 ids >= E (including 0xFFFFFFFF, i.e. -1) across simdgroups and expert windows:
    the first bad pair is reported, bad pairs are left out (position -1), the rest grouped."""
    rng = np.random.default_rng(13)
    E = 300
    ids = rng.integers(0, E, 1000).astype(np.uint32)
    ids[700] = E
    ids[123] = 0xFFFFFFFF
    ids[900] = 100000
    b = run_group(emu, "moe_group_u32", ids.reshape(-1, 1), E, 64, -(-1000 // 64) + E)
    assert b["status"][1] == 123 + 1
    assert (b["position"][[123, 700, 900]] == -1).all()
    offsets, order = expected_groups(ids.astype(np.int64), E)
    np.testing.assert_array_equal(b["offsets"], offsets)
    np.testing.assert_array_equal(b["pairs"][: len(order)], order)
    np.testing.assert_array_equal(b["position"][order], np.arange(len(order)))
    check_invalid_group(b, offsets, [123, 700, 900], 64)
    # More invalid pairs than a tile, spread over every simdgroup: 3 tiles of expert -1.
    ids = rng.integers(0, E, 1000).astype(np.uint32)
    bad = np.sort(rng.choice(1000, 150, replace=False))
    ids[bad] = E + rng.integers(0, 5, 150).astype(np.uint32)
    b = run_group(emu, "moe_group_u32", ids.reshape(-1, 1), E, 64, -(-1000 // 64) + E)
    assert b["status"][1] == bad[0] + 1
    offsets, order = expected_groups(ids.astype(np.int64), E)
    np.testing.assert_array_equal(b["pairs"][: len(order)], order)
    check_invalid_group(b, offsets, bad, 64)


def parse_moe(name):
    """moe_gemm[_glu]_<variant>_<x>_<s> -> (variant, x, s); the output is x's dtype."""
    variant, x, s = name.rsplit("_", 3)[1:]
    return variant, x, s


def random_experts(rng, E, K, N, g, sdt):
    ws, ss, dense = [], [], []
    for _ in range(E):
        w, s, wd = random_weight(rng, K, N, g, sdt)
        ws.append(w), ss.append(s), dense.append(wd)
    return np.stack(ws), np.stack(ss), dense


def plan(P, E, N):
    """plan_gpu_moe: (tile_m, grid_x, max_tiles, threads)."""
    _, tile_m, _, grid_x, max_tiles, threads = ext._gpu_moe_plan(P, E, N)
    return tile_m, grid_x, max_tiles, threads


def variant_grid(variant, P, E, N):
    """plan_gpu_moe's grid with a given variant's tiles (tests force either variant on
    small cases): (tile_m, grid_x, max_tiles, threads)."""
    tile_m, tile_n = (64, 64) if variant == "default" else (32, 128)
    return tile_m, -(-N // tile_n), -(-P // tile_m) + min(E, P), 128


@pytest.mark.parametrize("name", MOE_GEMM)
def test_moe_pipeline(emu, name):
    """group -> grouped GEMM (this kernel) -> combine, weighted (y [P, N] in x's dtype,
    the combine accumulating in fp32) and unweighted (out [T, k, N]), NaN-poisoned
    outputs, skewed routing with duplicate experts per token."""
    variant, xdt, sdt = parse_moe(name)
    i = MOE_GEMM.index(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cases = [(5, 2, 4, 45, 64, 32, True), (37, 3, 3, 70, 128, 64, False)] if variant == "default" else \
        [(1, 4, 8, 133, 96, 32, True), (3, 2, 6, 17, 128, 128, False)]
    for j, (T, k, E, N, K, g, shared) in enumerate(cases):
        act = list(ACTS)[(i + j) % 5]
        for weighted in (True, False):
            ids = rng.integers(0, E, (T, k)).astype(np.int32)
            if T > 30:
                ids[:, 0] = 1  # > one tile of rows for expert 1
            P = T * k
            tile_m, grid_x, max_tiles, threads = variant_grid(variant, P, E, N)
            b = run_group(emu, "moe_group_i32", ids, E, tile_m, max_tiles)
            x, x64 = to_device(rng.standard_normal((T, K) if shared else (T, k, K)), xdt)
            w, s, dense = random_experts(rng, E, K, N, g, sdt)
            p = moe_params(T, k, E, N, K, g, act, shared, tile_m, max_tiles, weighted)
            y = poisoned((P, N), xdt)
            emu.launch(name, grid=(grid_x, max_tiles, 1), tg=(threads, 1, 1),
                       buffers=[x, w, s, b["pairs"], b["tiles"], b["status"], y, p], check_uninitialized=True)
            xr = x64.reshape(T, 1, K) if shared else x64
            ref_pairs = np.stack([np.stack([activation(xr[t, 0 if shared else jj] @ dense[ids[t, jj]], act)
                                            for jj in range(k)]) for t in range(T)])  # [T, k, N]
            if not weighted:
                got = from_device(y, xdt).reshape(T, k, N)
                assert np.all(np.isfinite(got))
                assert rel_err(got, ref_pairs) < TOL[xdt], (name, T, k, E, N, K, act)
                continue
            wts = rng.standard_normal((T, k)).astype(np.float32)
            out = poisoned((T, N), xdt)
            emu.launch(f"moe_combine_{xdt}", grid=(-(-N // 128), T, 1), tg=(128, 1, 1),
                       buffers=[y, wts, b["position"], out, p])
            got = from_device(out, xdt)
            ref = np.einsum("tk,tkn->tn", wts.astype(np.float64), ref_pairs)
            assert np.all(np.isfinite(got))
            # y is rounded to x's dtype before the combine: one more rounding of terms of
            # size <= max|ref_pairs| per slot (vs the float64 reference).
            scale = max(np.abs(ref).max(), (np.abs(wts)[:, :, None] * np.abs(ref_pairs)).sum(1).max())
            assert np.abs(got - ref).max() < TOL[xdt] * scale, (name, T, k, E, N, K, act, "combine")


@pytest.mark.parametrize("name", GLU_GEMM)
def test_glu_gemm_kernel(emu, name):
    """moe_gemm_glu_* (moe_mlp's gate/up GEMM): h = act(x @ gate) * (x @ up) in x's dtype
    for grouped rows, gate and up as [gate | up] in one tensor (ld = 2 I, up column I)
    and as two tensors, every activation across the kernels, I off the tile widths,
    NaN-poisoned h."""
    variant, xdt, sdt = parse_moe(name)
    i = GLU_GEMM.index(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cases = [(37, 3, 5, 100, 64, 32), (9, 2, 4, 8, 128, 64)] if variant == "default" else \
        [(2, 4, 8, 70, 96, 32), (3, 2, 6, 130, 64, 64)]
    for j, (T, k, E, I, K, g) in enumerate(cases):
        ids = rng.integers(0, E, (T, k)).astype(np.int32)
        if T > 30:
            ids[:, 1] = 2  # > one tile of rows for expert 2
        P = T * k
        tile_m, grid_x, max_tiles, threads = variant_grid(variant, P, E, 2 * I)  # h: I columns, 2 I decoded
        b = run_group(emu, "moe_group_i32", ids, E, tile_m, max_tiles)
        _, order = expected_groups(ids, E)
        x, x64 = to_device(rng.standard_normal((T, K)), xdt)
        wg, sg, dg = random_experts(rng, E, K, I, g, sdt)
        wu, su, du = random_experts(rng, E, K, I, g, sdt)
        rows = np.stack([x64[q // k] for q in order])  # grouped rows
        experts = ids.reshape(-1)[order]
        for fused in (True, False):
            act = list(ACTS)[(i + 2 * j + fused) % 5]
            if fused:
                w, s = np.concatenate([wg, wu], 2), np.concatenate([sg, su], 2)
                bufs, ld, up_col = [w, s, b["pairs"], b["tiles"], b["status"]], 2 * I, I
                tail = [w, s]
            else:
                bufs, ld, up_col = [wg, sg, b["pairs"], b["tiles"], b["status"]], I, 0
                tail = [wu, su]
            h = poisoned((P, I), xdt)
            p = moe_params(T, k, E, I, K, g, act, True, tile_m, max_tiles, True, ld=ld, up_col=up_col)
            emu.launch(name, grid=(grid_x, max_tiles, 1), tg=(threads, 1, 1), buffers=[x, *bufs, h, p, *tail],
                       check_uninitialized=True)
            ref = np.stack([activation(rows[r] @ dg[experts[r]], act) * (rows[r] @ du[experts[r]])
                            for r in range(P)])
            got = from_device(h, xdt)
            assert np.all(np.isfinite(got)), (name, fused, np.argwhere(~np.isfinite(got))[:4].tolist())
            assert rel_err(got, ref) < TOL[xdt], (name, T, k, E, I, K, act, fused)


def test_invalid_expert_ids_give_nan_rows(emu):
    """Metal cannot raise: pairs with an expert id outside [0, E) must give NaN rows,
    never dropped rows or numbers.  Unweighted moe_gemm: the pair's row of out [T, k, N];
    weighted: the token's row after moe_combine; moe_gemm_glu: the pair's grouped row of h.
    Every other row is exact."""
    rng = np.random.default_rng(17)
    T, k, E, N, K, g = 11, 3, 5, 70, 64, 32
    ids = rng.integers(0, E, (T, k)).astype(np.int32)
    ids[2, 1], ids[7, 0], ids[7, 2], ids[9, 2] = E, -1, 1000, E + 3
    bad_pairs = [2 * k + 1, 7 * k, 7 * k + 2, 9 * k + 2]
    bad_tokens = sorted({q // k for q in bad_pairs})
    P = T * k
    tile_m, grid_x, max_tiles, threads = plan(P, E, N)
    b = run_group(emu, "moe_group_i32", ids, E, tile_m, max_tiles)
    assert b["status"][1] == bad_pairs[0] + 1
    x, x64 = to_device(rng.standard_normal((T, K)), "f16")
    w, s, dense = random_experts(rng, E, K, N, g, "f16")
    good = np.ones((T, k), bool)
    good.reshape(-1)[bad_pairs] = False
    ref_pairs = np.stack([np.stack([x64[t] @ dense[ids[t, j]] if good[t, j] else np.zeros(N) for j in range(k)])
                          for t in range(T)])
    name = f"moe_gemm_{'decode' if tile_m == 32 else 'default'}_f16_f16"
    # Unweighted.
    out = poisoned((P, N), "f16")
    out[...] = 0  # zeros, not NaN: the NaN rows must be written by the kernel
    emu.launch(name, grid=(grid_x, max_tiles, 1), tg=(threads, 1, 1),
               buffers=[x, w, s, b["pairs"], b["tiles"], b["status"], out,
                        moe_params(T, k, E, N, K, g, "none", True, tile_m, max_tiles, False)])
    got = from_device(out, "f16").reshape(T, k, N)
    assert np.isnan(got[~good]).all()
    assert np.isfinite(got[good]).all() and rel_err(got[good], ref_pairs[good]) < TOL["f16"]
    # Weighted + combine.
    p = moe_params(T, k, E, N, K, g, "none", True, tile_m, max_tiles, True)
    y = poisoned((P, N), "f16")
    emu.launch(name, grid=(grid_x, max_tiles, 1), tg=(threads, 1, 1),
               buffers=[x, w, s, b["pairs"], b["tiles"], b["status"], y, p])
    wts = rng.uniform(0.1, 1, (T, k)).astype(np.float32)
    out = np.zeros((T, N), np.float16)
    emu.launch("moe_combine_f16", grid=(-(-N // 128), T, 1), tg=(128, 1, 1), buffers=[y, wts, b["position"], out, p])
    got = from_device(out, "f16")
    ok = np.setdiff1d(np.arange(T), bad_tokens)
    assert np.isnan(got[bad_tokens]).all()
    ref = np.einsum("tk,tkn->tn", wts.astype(np.float64), ref_pairs)
    assert np.isfinite(got[ok]).all() and rel_err(got[ok], ref[ok]) < 2 * TOL["f16"]
    # The fused gate/up GEMM: NaN grouped rows of h for the bad pairs.
    I = 40
    tile_m, grid_x, max_tiles, threads = plan(P, E, 2 * I)
    b = run_group(emu, "moe_group_i32", ids, E, tile_m, max_tiles)
    wgu, sgu, _ = random_experts(rng, E, K, 2 * I, g, "f16")
    h = np.zeros((P, I), np.float16)
    emu.launch(f"moe_gemm_glu_{'decode' if tile_m == 32 else 'default'}_f16_f16", grid=(grid_x, max_tiles, 1),
               tg=(threads, 1, 1), buffers=[x, wgu, sgu, b["pairs"], b["tiles"], b["status"], h,
                                            moe_params(T, k, E, I, K, g, "silu", True, tile_m, max_tiles, True,
                                                       ld=2 * I, up_col=I), wgu, sgu])
    valid = int(b["offsets"][E])
    assert np.isnan(h[valid:].astype(np.float32)).all() and np.isfinite(h[:valid].astype(np.float32)).all()


@pytest.mark.parametrize("name", COMBINE)
def test_combine_kernel(emu, name):
    """Slot-order fp32 sum of y rows stored in the output dtype; a token with a pair of
    an invalid expert (position -1) gets a NaN row."""
    odt = name.rsplit("_", 1)[1]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    T, k, N = 6, 3, 130
    y, y64 = to_device(rng.standard_normal((T * k, N)), odt)
    wts = rng.standard_normal((T, k)).astype(np.float32)
    position = rng.permutation(T * k).astype(np.int32)
    position[4] = -1  # token 1
    out = poisoned((T, N), odt)
    emu.launch(name, grid=(2, T, 1), tg=(128, 1, 1),
               buffers=[y, wts, position, out, moe_params(T, k, 4, N, 32, 32, "none", True, 32, 8, True)])
    got = from_device(out, odt)
    assert np.isnan(got[1]).all()
    ok = [0, 2, 3, 4, 5]
    ref = np.einsum("tk,tkn->tn", wts.astype(np.float64), y64.astype(np.float64)[position].reshape(T, k, N))
    assert np.isfinite(got[ok]).all() and rel_err(got[ok], ref[ok]) < TOL[odt]


@pytest.mark.parametrize("variant", ["decode", "default"])
def test_gemm_on_grouped_rows(emu, variant):
    """shared_x = 2 (moe_mlp's down projection): x is [P, K] in grouped order, so
    grouped row r multiplies its own expert's weights into y[r] (float32, weighted mode)."""
    rng = np.random.default_rng(11)
    T, k, E, N, K, g = 23, 3, 5, 70, 96, 32
    ids = rng.integers(0, E, (T, k)).astype(np.int32)
    ids[:, 0] = 2  # one expert with more than one decode tile
    P = T * k
    tile_m, tile_n = (32, 128) if variant == "decode" else (64, 64)
    max_tiles = -(-P // tile_m) + min(E, P)
    b = run_group(emu, "moe_group_i32", ids, E, tile_m, max_tiles)
    _, order = expected_groups(ids, E)
    expert_of_row = ids.reshape(-1)[order]
    x, x64 = to_device(rng.standard_normal((P, K)), "f32")
    ws, ss, dense = [], [], []
    for _ in range(E):
        w, s, wd = random_weight(rng, K, N, g, "f16")
        ws.append(w), ss.append(s), dense.append(wd)
    y = poisoned((P, N), "f32")
    emu.launch(f"moe_gemm_{variant}_f32_f16", grid=(-(-N // tile_n), max_tiles, 1), tg=(128, 1, 1),
               buffers=[x, np.stack(ws), np.stack(ss), b["pairs"], b["tiles"], b["status"], y,
                        moe_params(T, k, E, N, K, g, "none", 2, tile_m, max_tiles, True)], check_uninitialized=True)
    ref = np.stack([x64[r] @ dense[expert_of_row[r]] for r in range(P)])
    assert rel_err(from_device(y, "f32"), ref) < TOL["f32"]
