"""The Metal MoE kernels (metal/moe_gemm.metal: grouping, grouped expert GEMM, weighted
combine) run directly on the checked Metal-on-CPU emulator against numpy: every host
name moe_*_kernel_name can return.  The op path (mm.moe_gemm through encode_moe_gemm)
is covered by tests/test_moe.py under scripts/emulator_tests.sh."""

import struct
import zlib

import numpy as np
import pytest

import mlx_marlin._ext as ext
from test_metal_gemm import (ACTS, KERNELS, TOL, activation, emu, from_device, poisoned,  # noqa: F401
                             pytestmark, random_weight, rel_err, to_device)

MOE_GEMM = [n for n in KERNELS if n.startswith("moe_gemm_")]
GROUP = [n for n in KERNELS if n.startswith("moe_group_")]
COMBINE = [n for n in KERNELS if n.startswith("moe_combine_")]
INDEX_DTYPES = {"i8": np.int8, "u8": np.uint8, "i16": np.int16, "u16": np.uint16, "i32": np.int32,
                "u32": np.uint32, "i64": np.int64, "u64": np.uint64}


def moe_params(T, k, E, N, K, g, act, shared_x, tile_m, max_tiles, weighted):
    return struct.pack("12i", T, k, E, N, K, g, ACTS[act], int(shared_x), T * k, tile_m, max_tiles, int(weighted))


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


def parse_moe(name):
    rest = name[len("moe_gemm_"):]
    out = None
    if rest.endswith("_out_f32"):
        rest, out = rest[: -len("_out_f32")], "f32"
    variant, x, s = rest.split("_")
    return variant, x, s, out or x


@pytest.mark.parametrize("name", MOE_GEMM)
def test_moe_pipeline(emu, name):
    """group -> grouped GEMM (this kernel) -> combine (weighted, for float32 outputs),
    NaN-poisoned outputs, skewed routing with duplicate experts per token."""
    variant, xdt, sdt, odt = parse_moe(name)
    i = MOE_GEMM.index(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cases = [(5, 2, 4, 45, 64, 32, True), (37, 3, 3, 70, 128, 64, False)] if variant == "default" else \
        [(1, 4, 8, 133, 96, 32, True), (3, 2, 6, 17, 128, 128, False)]
    for j, (T, k, E, N, K, g, shared) in enumerate(cases):
        act = list(ACTS)[(i + j) % 5]
        weighted = odt == "f32" and (xdt != "f32" or j == 0)
        ids = rng.integers(0, E, (T, k)).astype(np.int32)
        if T > 30:
            ids[:, 0] = 1  # > one tile of rows for expert 1
        P = T * k
        tile_m = 64 if variant == "default" else 32
        pv, ptm, tn, grid_x, max_tiles, threads = ext._gpu_moe_plan(P, E, N)
        max_tiles = -(-P // tile_m) + min(E, P)
        threads = 128
        grid_x = -(-N // (64 if variant == "default" else 128))
        b = run_group(emu, "moe_group_i32", ids, E, tile_m, max_tiles)
        x, x64 = to_device(rng.standard_normal((T, K) if shared else (T, k, K)), xdt)
        ws, ss, dense = [], [], []
        for _ in range(E):
            w, s, wd = random_weight(rng, K, N, g, sdt)
            ws.append(w), ss.append(s), dense.append(wd)
        w, s = np.stack(ws), np.stack(ss)
        p = moe_params(T, k, E, N, K, g, act, shared, tile_m, max_tiles, weighted)
        y = poisoned((P, N), odt)
        emu.launch(name, grid=(grid_x, max_tiles, 1), tg=(threads, 1, 1),
                   buffers=[x, w, s, b["pairs"], b["tiles"], b["status"], y, p], check_uninitialized=True)
        xr = x64.reshape(T, 1, K) if shared else x64
        ref_pairs = np.stack([np.stack([activation(xr[t, 0 if shared else jj] @ dense[ids[t, jj]], act)
                                        for jj in range(k)]) for t in range(T)])  # [T, k, N]
        if not weighted:
            got = from_device(y, odt).reshape(T, k, N)
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
        assert rel_err(got, ref) < TOL[xdt], (name, T, k, E, N, K, act, "combine")


@pytest.mark.parametrize("name", COMBINE)
def test_combine_kernel(emu, name):
    """Slot-order fp32 sum, pairs with an invalid expert (position -1) skipped."""
    odt = name.rsplit("_", 1)[1]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    T, k, N = 6, 3, 130
    y = rng.standard_normal((T * k, N)).astype(np.float32)
    wts = rng.standard_normal((T, k)).astype(np.float32)
    position = rng.permutation(T * k).astype(np.int32)
    position[4] = -1
    out = poisoned((T, N), odt)
    emu.launch(name, grid=(2, T, 1), tg=(128, 1, 1),
               buffers=[y, wts, position, out, moe_params(T, k, 4, N, 32, 32, "none", True, 32, 8, True)])
    yy = np.where((position >= 0)[:, None], y[np.maximum(position, 0)], 0).astype(np.float64).reshape(T, k, N)
    ref = np.einsum("tk,tkn->tn", wts.astype(np.float64), yy)
    assert rel_err(from_device(out, odt), ref) < TOL[odt]


def test_glu_kernel(emu):
    """moe_glu (moe_mlp): h = act(gate) * up over float32 grouped rows, for separate
    gate / up buffers and the [gate | up] layout, every activation, NaN-poisoned output."""
    rng = np.random.default_rng(7)
    P, I = 37, 150
    for act in ACTS:
        gu = rng.standard_normal((P, 2 * I)).astype(np.float32)
        ref = activation(gu[:, :I].astype(np.float64), act) * gu[:, I:]
        for fused in (True, False):
            if fused:
                gate, up, strides = gu, gu, (2 * I, 2 * I, I)
            else:
                gate, up, strides = np.ascontiguousarray(gu[:, :I]), np.ascontiguousarray(gu[:, I:]), (I, I, 0)
            h = poisoned((P, I), "f32")
            emu.launch("moe_glu", grid=(-(-I // 128), P, 1), tg=(128, 1, 1),
                       buffers=[gate, up, h, struct.pack("6i", P, I, *strides, ACTS[act])])
            assert rel_err(from_device(h, "f32"), ref) < TOL["f32"], (act, fused)


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
