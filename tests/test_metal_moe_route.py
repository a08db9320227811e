"""Metal MoE routing / grouping kernels (metal/moe_route.metal) on the checked
Metal-on-CPU emulator, launched through its Python API, against the semantics of
cpp/common/moe_plan.h (route_token: softmax + top-k, ties to the lower id, NaN last;
build_expert_groups: stable counting sort).  Outputs start poisoned."""
import ctypes
import math

import numpy as np
import pytest

from metal_helpers import compile_metal, from_device, nan_buffer, run_probe, to_device

PROBE = r"""
#include <cstdio>
#include "common/moe_params.h"
#include "common/moe_plan.h"
using namespace marlin;
int main() {
  std::printf("{\"names\": [");
  auto names = all_moe_kernel_names();
  for (size_t i = 0; i < names.size(); ++i) std::printf("%s\"%s\"", i ? ", " : "", names[i].c_str());
  std::printf("], \"sizes\": [%zu, %zu], \"consts\": [%d, %d, %d]}\n", sizeof(MoeRouteParams), sizeof(MoeGroupParams),
              kMoeMaxExperts, kMoeRouteTokensPerGroup, kMoeGroupThreads);
}
"""
MAX_E, TOKENS_PER_GROUP, GROUP_THREADS = 256, 4, 256
TOL = {"f32": 2e-6, "f16": 1e-3, "bf16": 8e-3}


class MoeRouteParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("T", "E", "k", "normalize", "token_stride", "expert_stride")]


class MoeGroupParams(ctypes.Structure):
    _fields_ = [("num_pairs", ctypes.c_int32), ("E", ctypes.c_int32)]


@pytest.fixture(scope="module")
def emu():
    m = compile_metal("moe_route.metal", checked=True)
    assert m.checked
    return m


def test_host_contract(emu):
    probe = run_probe(PROBE)
    assert sorted(probe["names"]) == sorted(emu.kernels())
    assert probe["sizes"] == [ctypes.sizeof(MoeRouteParams), ctypes.sizeof(MoeGroupParams)]
    assert probe["consts"] == [MAX_E, TOKENS_PER_GROUP, GROUP_THREADS]


# ---------------------------------------------------------------- routing
def ref_route(logits, k, normalize):
    """route_token of moe_plan.h in float64 (ranking on the logits: NaN as -inf after
    real -inf, ties to the lower id)."""
    T, E = logits.shape
    idx = np.zeros((T, k), np.uint32)
    w = np.zeros((T, k))
    for t in range(T):
        row = logits[t].astype(np.float64)
        order = sorted(range(E), key=lambda e: (-(-np.inf if np.isnan(row[e]) else row[e]), bool(np.isnan(row[e])), e))
        idx[t] = order[:k]
        fin = row[~np.isnan(row)]
        m = fin.max() if fin.size else -np.inf
        m = m if np.isfinite(m) else 0.0
        p = np.exp(row - m)
        sel = p[order[:k]]
        w[t] = sel / (sel.sum() if normalize else p.sum())
    return idx, w


def run_route(emu, logits_f32, k, normalize, dtype, layout="te"):
    T, E = logits_f32.shape
    if layout == "et":  # logits stored [E, T]: a transposed view
        buf, vals = to_device(logits_f32.T, dtype)
        vals = vals.T
        ts, es = 1, T
    else:
        buf, vals = to_device(logits_f32, dtype)
        ts, es = E, 1
    p = MoeRouteParams(T, E, k, int(normalize), ts, es)
    idx = np.full((T, k), 0xFFFFFFFF, np.uint32)
    w = nan_buffer((T, k), dtype)
    emu.launch(f"marlin_moe_route_{dtype}", grid=(math.ceil(T / TOKENS_PER_GROUP), 1, 1),
               tg=(32 * TOKENS_PER_GROUP, 1, 1), buffers=[buf, idx, w, bytes(p)])
    return idx, from_device(w, dtype), vals


@pytest.mark.parametrize("T,E,k,normalize,dtype", [
    (1, 8, 2, True, "f32"), (37, 64, 8, True, "f32"), (37, 64, 8, False, "f16"), (300, 16, 1, True, "bf16"),
    (5, 256, 256, True, "f32"), (5, 256, 7, False, "f32"), (9, 3, 3, False, "bf16"), (6, 100, 5, True, "f16"),
    (7, 33, 4, True, "f32"), (3, 129, 128, False, "f32"),
])
def test_route_matches_reference(emu, T, E, k, normalize, dtype):
    rng = np.random.default_rng(T * 1000 + E + k)
    logits = (rng.standard_normal((T, E)) * 3).astype(np.float32)
    idx, w, vals = run_route(emu, logits, k, normalize, dtype)
    ref_idx, ref_w = ref_route(vals, k, normalize)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(w, ref_w, rtol=TOL[dtype], atol=TOL[dtype])


def test_route_ties_lower_id_first(emu):
    """Few distinct values (many ties), an all-equal row, +0 / -0 ties."""
    rng = np.random.default_rng(10)
    logits = rng.integers(-2, 3, size=(50, 12)).astype(np.float32)
    logits[0] = 1.0
    logits[1] = 0.0
    logits[1, ::2] = -0.0
    for k in (1, 3, 12):
        idx, w, vals = run_route(emu, logits, k, True, "f32")
        ref_idx, ref_w = ref_route(vals, k, True)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)
    idx, _, _ = run_route(emu, logits, 4, True, "f32")
    np.testing.assert_array_equal(idx[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(idx[1], [0, 1, 2, 3])


def test_route_nan_and_inf_rank_like_cpu(emu):
    """NaN ranks after -inf; +inf first; matches the CPU backend (mm.moe_route) exactly."""
    mx = pytest.importorskip("mlx.core")
    mm = pytest.importorskip("mlx_marlin")
    logits = np.array([[1.0, np.nan, -np.inf, 2.0, np.nan, -np.inf, 0.5, 3.0],
                       [np.nan, np.nan, -np.inf, -np.inf, 0.0, -1.0, np.inf, 1.0]], np.float32)
    idx, w, _ = run_route(emu, logits, 8, False, "f32")
    cpu_idx, cpu_w = mm.moe_route(mx.array(logits), 8, normalize=False, stream=mx.cpu)
    np.testing.assert_array_equal(idx, np.array(cpu_idx))
    np.testing.assert_array_equal(idx[0], [7, 3, 0, 6, 2, 5, 1, 4])
    np.testing.assert_allclose(w, np.array(cpu_w), rtol=1e-6, equal_nan=True)


def test_route_strided_and_cpu_backend(emu):
    """Logits stored [E, T] (strided), compared with the CPU backend bit for bit on idx."""
    mx = pytest.importorskip("mlx.core")
    mm = pytest.importorskip("mlx_marlin")
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((23, 160)) * 2).astype(np.float32)
    idx, w, _ = run_route(emu, logits, 6, True, "f32", layout="et")
    cpu_idx, cpu_w = mm.moe_route(mx.array(logits), 6, normalize=True, stream=mx.cpu)
    np.testing.assert_array_equal(idx, np.array(cpu_idx))
    np.testing.assert_allclose(w, np.array(cpu_w), rtol=2e-6, atol=1e-7)


# ---------------------------------------------------------------- grouping
def ref_groups(ids, E):
    pairs = np.argsort(ids, kind="stable")
    counts = np.bincount(ids, minlength=E)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    position = np.empty_like(pairs)
    position[pairs] = np.arange(len(ids))
    return offsets, pairs, position, int((counts > 0).sum()), int(counts.max(initial=0))


def run_group(emu, ids, E):
    ids = np.ascontiguousarray(ids, np.uint32)
    n = len(ids)
    offsets = np.full(E + 1, 0xFFFFFFFF, np.uint32)
    pairs = np.full(max(n, 1), 0xFFFFFFFF, np.uint32)
    position = np.full(max(n, 1), 0xFFFFFFFF, np.uint32)
    stats = np.full(3, -7, np.int32)
    emu.launch("marlin_moe_group", grid=(1, 1, 1), tg=(GROUP_THREADS, 1, 1),
               buffers=[ids if n else np.zeros(1, np.uint32), offsets, pairs, position, stats,
                        bytes(MoeGroupParams(n, E))], check_uninitialized=True)
    return offsets, pairs[:n], position[:n], stats


@pytest.mark.parametrize("n,E,pattern", [
    (0, 4, "random"), (1, 1, "random"), (37 * 8, 64, "random"), (5000, 256, "random"), (2000, 256, "one"),
    (777, 3, "random"), (300, 256, "sorted"), (4099, 17, "skewed"),
])
def test_group_matches_counting_sort(emu, n, E, pattern):
    rng = np.random.default_rng(n + E)
    if pattern == "one":
        ids = np.full(n, 3, np.uint32)
    elif pattern == "sorted":
        ids = np.sort(rng.integers(0, E, n)).astype(np.uint32)
    elif pattern == "skewed":
        ids = np.minimum(rng.geometric(0.4, n) - 1, E - 1).astype(np.uint32)
    else:
        ids = rng.integers(0, E, n).astype(np.uint32)
    offsets, pairs, position, stats = run_group(emu, ids, E)
    r_off, r_pairs, r_pos, active, largest = ref_groups(ids.astype(np.int64), E)
    np.testing.assert_array_equal(offsets, r_off)
    np.testing.assert_array_equal(pairs, r_pairs)
    np.testing.assert_array_equal(position, r_pos)
    assert list(stats) == [-1, active, largest]


def test_group_of_route_output(emu):
    """Routing then grouping, as the MoE GEMM consumes them (T = 61, E = 40, k = 6)."""
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((61, 40)).astype(np.float32)
    idx, _, _ = run_route(emu, logits, 6, True, "f32")
    offsets, pairs, position, stats = run_group(emu, idx.reshape(-1), 40)
    r_off, r_pairs, r_pos, active, largest = ref_groups(idx.reshape(-1).astype(np.int64), 40)
    np.testing.assert_array_equal(offsets, r_off)
    np.testing.assert_array_equal(pairs, r_pairs)
    assert stats[0] == -1


def test_group_invalid_ids(emu):
    """Ids outside [0, E) (including -1 as uint32): stats[0] is the first bad pair and
    nothing is indexed with it (the checked build would report it)."""
    rng = np.random.default_rng(13)
    ids = rng.integers(0, 8, 1000).astype(np.uint32)
    ids[700] = 8
    ids[123] = 0xFFFFFFFF
    offsets, _, _, stats = run_group(emu, ids, 8)
    assert stats[0] == 123
    assert (offsets == 0xFFFFFFFF).all()
