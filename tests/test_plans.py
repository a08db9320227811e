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
