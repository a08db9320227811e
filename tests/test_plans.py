"""Dispatch plans (cpp/common/*_plan.h) over tiny to huge problems and GPU core counts:
every output tile/row/key covered exactly once, grids within hardware limits."""

import itertools

import numpy as np
import pytest

import mlx_marlin._ext as ext

GPU_CORE_COUNTS = [8, 10, 16, 19, 24, 30, 32, 38, 40, 60, 64, 76, 80]
MAX_GRID_DIM = 65535  # smallest per-dimension limit of the backends (CUDA grid y/z)


@pytest.mark.parametrize("M", [1, 2, 7, 15, 16, 17, 63, 64, 255, 256, 257, 4096, 65536, 1 << 20])
@pytest.mark.parametrize("N", [1, 7, 8, 63, 64, 65, 127, 128, 129, 1408, 14336, 1 << 18])
def test_gpu_gemm_plan_covers_output_exactly(M, N):
    p = ext._plan_gpu_gemm(M, N)
    assert p["variant"] == ("decode" if M <= 16 else "large_m" if M >= 256 else "default")
    for dim, grid, tile in ((N, p["grid_x"], p["tile_n"]), (M, p["grid_y"], p["tile_m"])):
        assert grid * tile >= dim > (grid - 1) * tile  # covered, and no empty tile row/column
    assert p["tile_m"] % 8 == 0 and p["tile_n"] % 8 == 0 and p["tile_k"] % 8 == 0
    assert p["threads_per_group"] == 32 * p["simdgroups"] <= 1024
    assert 1 <= p["grid_x"] < 2**31 and 1 <= p["grid_y"] <= MAX_GRID_DIM


SHAPES = [
    # B, Hq, Hkv, Lq, Lk
    (1, 1, 1, 1, 1),
    (1, 32, 8, 1, 4096),
    (2, 8, 8, 3, 70),
    (1, 32, 8, 1024, 1024),
    (1, 4, 1, 8, 300000),
    (3, 12, 4, 257, 1000),
    (1, 64, 1, 1, 1 << 20),
    (1, 2, 2, 100, 0),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("units", GPU_CORE_COUNTS + [1, 2, 16])
def test_attention_plan_partitions_rows_and_keys(shape, units):
    B, Hq, Hkv, Lq, Lk = shape
    G = Hq // Hkv
    p = ext._plan_attention(B, Hq, Hkv, Lq, Lk, units)
    assert p["decode"] == (Lq <= 8)
    assert 1 <= p["rows"] == p["heads_per_task"] * p["block_q"] <= p["max_rows"]
    # Head blocks x query blocks tile the G x Lq rows of a kv group with no empty block.
    assert p["head_blocks"] * p["heads_per_task"] >= G > (p["head_blocks"] - 1) * p["heads_per_task"]
    assert p["query_blocks"] * p["block_q"] >= Lq > (p["query_blocks"] - 1) * p["block_q"] or Lq == 0
    # Key splits partition [0, Lk) into non-empty, tile-aligned ranges.
    assert p["keys_per_split"] % p["block_k"] == 0
    assert p["splits"] == 1 or not p["decode"] or (p["splits"] - 1) * p["keys_per_split"] < Lk
    assert p["splits"] * p["keys_per_split"] >= Lk
    assert p["num_tasks"] == B * Hkv * p["head_blocks"] * p["query_blocks"] * p["splits"]
    assert p["num_tasks"] < 2**31


@pytest.mark.parametrize("units", GPU_CORE_COUNTS)
def test_attention_plan_cells_covered_once(units):
    # Brute force on small shapes: count how often the tasks cover each (head, query, key).
    for B, Hq, Hkv, Lq, Lk in [(1, 6, 2, 5, 700), (1, 4, 4, 13, 130), (2, 8, 1, 1, 2000)]:
        G = Hq // Hkv
        p = ext._plan_attention(B, Hq, Hkv, Lq, Lk, units)
        count = np.zeros((G, Lq, Lk), dtype=np.int32)
        for hb, qb, sp in itertools.product(range(p["head_blocks"]), range(p["query_blocks"]), range(p["splits"])):
            h0, q0, k0 = hb * p["heads_per_task"], qb * p["block_q"], sp * p["keys_per_split"]
            count[h0 : h0 + p["heads_per_task"], q0 : q0 + p["block_q"], k0 : k0 + p["keys_per_split"]] += 1
        assert np.all(count == 1)


# ----------------------------------------------------------------- CUDA plans
# Pure C++ like the others: checked here in every build, without a GPU.
CUDA_MAX_SMEM = 227 * 1024  # opt-in dynamic shared memory per block on sm_90 (sm_80: 163 KB)
H100_SMS = 132


def _covers(dim, grid, tile):
    return grid * tile >= dim > (grid - 1) * tile


@pytest.mark.parametrize("M", [1, 2, 8, 9, 16, 17, 95, 96, 257, 2048, 70000])
@pytest.mark.parametrize("N,K", [(8, 32), (13, 128), (72, 4096), (1000, 256), (14336, 4096), (4100, 8192)])
def test_cuda_gemm_plan_covers_output_exactly(M, N, K):
    for half, aligned, transpose, g in itertools.product((True, False), (True, False), (False, True), (32, 64, 128)):
        if K % g:
            continue
        p = ext._plan_cuda_gemm(M, N, K, half, aligned, transpose, g)
        cols = K if transpose else N
        row_blocks = p["grid_y"] // p["splits"]  # gemv_token: grid_y counts the K slices
        assert _covers(cols, p["grid_x"], p["block_n"]) and _covers(M, row_blocks, p["block_m"]), p
        assert p["threads"] % 32 == 0 and 32 <= p["threads"] <= 1024
        assert 1 <= p["grid_y"] <= MAX_GRID_DIM
        if transpose:
            assert p["kernel"] == "simt_transposed"
        elif not (half and aligned) or N % 8 or K % 32:
            assert p["kernel"] == "simt"
        elif p["kernel"] == "gemv":
            assert M <= 16 and p["smem"] <= p["gemv_max_smem"] and p["rows16"] == (M > 8)
            if M == 1 and p["gemv_token_by_default"]:  # only where the one-token kernel does not apply
                assert ext._plan_cuda_gemv_token(N, K, g)["variant"] == -1
        elif p["kernel"] == "gemv_token":
            assert M == 1 and p["smem"] <= p["gemv_max_smem"] and p["grid_y"] == p["splits"] >= 1
        else:
            assert p["kernel"] == ("mma_decode" if M <= 16 else "mma_prefill")


def test_cuda_gemm_forced_decode_variants_cover_output():
    for v in range(8):
        for M, N, K in ((1, 14336, 4096), (16, 72, 256), (9, 1000, 1024)):
            p = ext._plan_cuda_gemm(M, N, K, True, True, False, 64, v)
            assert _covers(N, p["grid_x"], p["block_n"]) and _covers(M, p["grid_y"], p["block_m"])


@pytest.mark.parametrize("M", [2, 8, 9, 16])  # M = 1: gemv_token (below)
@pytest.mark.parametrize("N,K,g", [(14336, 4096, 64), (4096, 4096, 64), (1024, 4096, 128), (28672, 8192, 32),
                                   (8, 128, 64), (136, 256, 128), (4096, 14336, 64)])
@pytest.mark.parametrize("sms", [132, 114, 108])
def test_cuda_gemv_plan_one_wave_and_busy_warps(M, N, K, g, sms):
    """The decode plan takes the widest K split whose blocks all fit on the GPU at once
    and that leaves no warp without a group; M > 8 never gets 1024-thread blocks."""
    p = ext._plan_cuda_gemm(M, N, K, True, True, False, g, -1, sms)
    assert p["kernel"] == "gemv" and p["block_n"] == 32 and p["grid_x"] == -(-N // 32)
    warps = p["threads"] // 32
    assert p["smem"] <= p["gemv_max_smem"]
    if M > 8:
        assert warps <= 16
    one_wave = p["grid_x"] * p["grid_y"] <= sms * p["gemv_blocks_per_sm"]
    if one_wave:
        assert K // g >= warps or warps == 4, p  # 4 warps: the narrowest, also for K < 4 groups
        wider = ext._plan_cuda_gemm(M, N, K, True, True, False, g, 0, sms)
        if wider["threads"] > p["threads"] and not (M > 8 and wider["threads"] > 512):
            # a wider split was available only if it needs a second wave or idles warps
            assert (p["grid_x"] > sms * wider["gemv_blocks_per_sm"]) or K // g < wider["threads"] // 32
    else:
        assert p["threads"] == min(p2["threads"] for p2 in (ext._plan_cuda_gemm(M, N, K, True, True, False, g, v, sms)
                                                     for v in range(4)))


TOKEN_SHAPES = [(14336, 4096, 64), (4096, 4096, 64), (4096, 14336, 64), (1024, 4096, 128), (28672, 8192, 32),
                (8, 32, 32), (136, 256, 128), (6144, 4096, 64), (128256, 4096, 64), (2880, 2880, 32), (4096, 160, 32)]


@pytest.mark.parametrize("N,K,g", TOKEN_SHAPES)
@pytest.mark.parametrize("sms", [132, 114, 108, 16])
def test_cuda_gemv_token_plan_partitions_k_and_balances_sms(N, K, g, sms):
    """M = 1 decode: the plan's K slices and warp ranges cover every group once, in
    order, each within its warp's shared-memory area; and no other (variant, splits)
    fitting in one wave (and leaving every warp of a split a group) gives the busiest SM
    less work (ceil(blocks / SMs) blocks of ceil(groups / splits) groups)."""
    p = ext._plan_cuda_gemv_token(N, K, g, sms)
    assert p["variant"] >= 0 and 1 <= p["splits"] <= p["max_splits"] and p["blocks_per_sm"] >= 1
    groups, strips = K // g, -(-N // 32)
    slices = p["slices"]
    assert len(slices) == p["splits"] * p["wk"]
    assert slices[0][0] == 0 and slices[-1][1] == groups
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:])) and all(lo <= hi for lo, hi in slices)
    assert max(hi - lo for lo, hi in slices) * (g // 32 * 64 + 64 + 4) <= p["warp_bytes"] and p["warp_bytes"] % 16 == 0
    assert p["smem"] == max(p["wk"] * p["warp_bytes"], (p["wk"] - 1) * 4 * 32 * 4) <= 227 * 1024

    def cost(q):
        blocks = strips * q["splits"]
        return -(-blocks // sms) * -(-groups // q["splits"]) if blocks <= sms * q["blocks_per_sm"] else None

    mine = cost(p)
    others = [ext._plan_cuda_gemv_token(N, K, g, sms, v, s)
              for v in range(p["variants"]) for s in range(1, p["max_splits"] + 1)]
    # a split must leave every warp of a block at least one group
    fitting = [c for q in others if q["splits"] == 1 or groups // q["splits"] >= q["wk"]
               for c in [cost(q)] if c is not None]
    if fitting:
        assert mine is not None and mine == min(fitting), (p, min(fitting))
    else:
        assert p["splits"] == 1


def test_cuda_gemv_token_plan_where_it_applies():
    auto = ext._plan_cuda_gemm(1, 14336, 4096, True, True, False, 64)
    assert auto["kernel"] == ("gemv_token" if auto["gemv_token_by_default"] else "gemv")
    for g in (16, 256):  # group sizes the one-token kernel is not compiled for
        assert ext._plan_cuda_gemv_token(4096, 4096, g)["variant"] == -1
        assert ext._plan_cuda_gemm(1, 4096, 4096, True, True, False, g, -3)["kernel"] == "gemv"
    assert ext._plan_cuda_gemm(2, 14336, 4096, True, True, False, 64, -3)["kernel"] == "gemv"
    assert ext._plan_cuda_gemm(1, 14336, 4096, True, True, False, 64, -3)["kernel"] == "gemv_token"
    # forced: -3 the plan's token variant, -4 - v variant v; token_splits forces the split
    p = ext._plan_cuda_gemm(1, 14336, 4096, True, True, False, 64, -5, 132, 3)
    assert p["kernel"] == "gemv_token" and p["gemv_variant"] == 1 and p["splits"] == p["grid_y"] == 3
    assert ext._plan_cuda_gemm(1, 14336, 4096, True, True, False, 64, 2)["kernel"] == "gemv"  # old variants stay reachable
    assert ext._plan_cuda_gemm(1, 14336, 4096, True, True, False, 64, -2)["kernel"] == "mma_decode"


def test_cuda_dense_route_threshold():
    assert [ext._cuda_gemm_via_dense(M, True) for M in (1, 16, 95, 96, 2048)] == [False, False, False, True, True]
    assert not any(ext._cuda_gemm_via_dense(M, False) for M in (1, 96, 4096))  # float32: exact kernel
    assert ext._cuda_gemm_via_dense(1, True, 1) and not ext._cuda_gemm_via_dense(4096, True, 0)


CUDA_ATTN_SHAPES = SHAPES + [(2, 32, 8, 2048, 2048), (1, 32, 8, 4096, 4096), (1, 8, 1, 8, 16384), (3, 12, 4, 2, 100000)]


@pytest.mark.parametrize("shape", CUDA_ATTN_SHAPES)
@pytest.mark.parametrize("D", [64, 80, 96, 128, 256])
def test_cuda_attention_plan_partitions_rows_and_keys(shape, D):
    B, Hq, Hkv, Lq, Lk = shape
    G = Hq // Hkv
    for half, aligned, sms, variant in itertools.product((True, False), (True, False), (8, H100_SMS), (-1, 0, 2, 5, 6)):
        p = ext._plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, sms, variant)
        assert p["mma"] == (half and aligned)
        gx, gy, gz = p["grid"]
        assert 1 <= gy <= MAX_GRID_DIM and 1 <= gz <= MAX_GRID_DIM and gx >= 1
        assert p["threads"] % 32 == 0 and p["threads"] <= 1024 and p["smem"] <= CUDA_MAX_SMEM
        assert 1 <= p["splits"] <= p["max_splits"] and gz == p["splits"]
        # every key in exactly one split, no empty split
        assert p["splits"] * p["keys_per_split"] >= max(Lk, 1) > (p["splits"] - 1) * p["keys_per_split"]
        if p["mma"]:
            assert gx == B * Hkv * p["head_blocks"] and gy == p["query_blocks"]
            assert _covers(G, p["head_blocks"], p["heads_per_block"]) and _covers(Lq, p["query_blocks"], p["block_q"])
            if p["heads_per_block"] > 1:  # decode tile: the group's heads share one 16-row tile
                assert p["heads_per_block"] * p["block_q"] <= 16
            if Lq <= 8 and p["splits"] > 1:  # split-K decode: every split but the last in one wave
                assert gx * gy * (p["splits"] - 1) < sms
        else:
            assert gx * (p["threads"] // 32) >= B * Hq * Lq


@pytest.mark.parametrize("shape", CUDA_ATTN_SHAPES)
@pytest.mark.parametrize("D", [64, 80, 96, 128, 256])
def test_cuda_attention_plan_wgmma_only_where_it_applies(shape, D):
    B, Hq, Hkv, Lq, Lk = shape
    G = Hq // Hkv
    for half, aligned, variant, mask_array in itertools.product((True, False), (True, False), (-1, 0, 5), (False, True)):
        p = ext._plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, H100_SMS, variant, True, mask_array)
        wants = half and aligned and variant < 0 and not mask_array and D in (64, 128) and Lq > 8
        assert p["wgmma"] == wants
        # without a wgmma device the plan is what it always was
        q = ext._plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, H100_SMS, variant, False, mask_array)
        assert not q["wgmma"] and q == ext._plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, H100_SMS, variant)
        if wants:
            # one head x 128 queries per block, every key in the block's one pass
            # a TMA producer warpgroup + two MMA warpgroups of 64 rows
            assert not p["mma"] and p["threads"] == 384 and p["splits"] == 1 and p["keys_per_split"] >= Lk
            assert p["block_q"] == 128 and p["heads_per_block"] == 1
            items = B * Hkv * G * -(-Lq // 128)
            assert p["head_blocks"] * p["query_blocks"] * B * Hkv == items
            # persistent (the default): one block per SM at most, each walking items
            assert p["persistent"] and p["grid"] == (min(items, H100_SMS), 1, 1)
            r = ext._plan_cuda_attention(B, Hq, Hkv, Lq, Lk, D, half, aligned, H100_SMS, variant, True, mask_array,
                                         persistent=False)
            assert not r["persistent"] and r["grid"] == (B * Hkv * G, -(-Lq // 128), 1)
            assert p["head_blocks"] == G and p["smem"] <= CUDA_MAX_SMEM
            assert p["smem"] == 1024 + (128 + 2 * 2 * 128) * D * 2  # Q + 2 stages of K and V, 1 KiB to align


@pytest.mark.parametrize("E", [1, 3, 8, 64, 256, 1000])
@pytest.mark.parametrize("pairs", [1, 2, 31, 32, 33, 512, 4096, 65536])
def test_cuda_moe_tile_list_has_room_for_any_routing(E, pairs):
    rng = np.random.default_rng(E * 7 + pairs)
    for glu, force, N in itertools.product((False, True), (-1, 0, 1, 2, 3), (8, 1408, 2049)):
        p = ext._plan_cuda_moe(pairs, E, N, glu, force)
        t = p["tile_m"]
        assert _covers(N, p["grid_x"], p["block_n"]) and p["threads"] <= 1024 and t % 16 == 0
        # worst case: as many buckets as possible (E experts + the invalid-id bucket) with
        # one pair each, the rest in one bucket; plus random routings
        groups = min(E + 1, pairs)
        worst = (groups - 1) + -(-(pairs - groups + 1) // t)
        assert worst <= p["max_tiles"]
        for _ in range(3):
            counts = np.bincount(rng.integers(0, E + 1, pairs), minlength=E + 1)
            assert int(np.sum(-(-counts // t))) <= p["max_tiles"]


@pytest.mark.parametrize("blocks,items", [(1, 1), (1, 7), (3, 1), (132, 17), (132, 264), (132, 1000), (7, 50)])
def test_wgmma_persistent_zigzag_covers_every_item_once(blocks, items):
    """attention_wgmma_persistent's item order (zigzag_item in attention_wgmma.cuh, copied
    here): block c takes c, 2G - 1 - c, 2G + c, ...; every item exactly once."""
    def zigzag_item(c, G, j):
        band = j >> 1
        return 2 * G * band + 2 * G - 1 - c if j & 1 else 2 * G * band + c

    seen = []
    for c in range(blocks):
        j = 0
        while (item := zigzag_item(c, blocks, j)) < items:
            seen.append(item)
            j += 1
    assert sorted(seen) == list(range(items))
