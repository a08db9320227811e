"""Metal MoE routing kernels (metal/moe_route.metal) on the checked Metal-on-CPU
emulator, launched through its Python API, against the semantics of
cpp/common/moe_plan.h (route_token: softmax + top-k, ties to the lower id, NaN last).
Outputs start poisoned.  The grouping kernel (moe_group_*, metal/moe_gemm.metal) is
tested in tests/test_metal_moe.py."""
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
  std::printf("], \"sizes\": [%zu], \"consts\": [%d, %d]}\n", sizeof(MoeRouteParams), kMoeMaxExperts,
              kMoeRouteTokensPerGroup);
}
"""
MAX_E, TOKENS_PER_GROUP = 256, 4
TOL = {"f32": 2e-6, "f16": 1e-3, "bf16": 8e-3}


class MoeRouteParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("T", "E", "k", "normalize", "token_stride", "expert_stride")]


@pytest.fixture(scope="module")
def emu():
    m = compile_metal("moe_route.metal", checked=True)
    assert m.checked
    return m


def test_host_contract(emu):
    probe = run_probe(PROBE)
    assert sorted(probe["names"]) == sorted(emu.kernels())
    assert probe["sizes"] == [ctypes.sizeof(MoeRouteParams)]
    assert probe["consts"] == [MAX_E, TOKENS_PER_GROUP]


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


def run_route(emu, logits_f32, k, normalize, dtype, layout="te", wf32=False):
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
    wdt = "f32" if wf32 else dtype
    w = nan_buffer((T, k), wdt)
    name = f"marlin_moe_route_{dtype}" + ("_wf32" if wf32 and dtype != "f32" else "")
    emu.launch(name, grid=(math.ceil(T / TOKENS_PER_GROUP), 1, 1),
               tg=(32 * TOKENS_PER_GROUP, 1, 1), buffers=[buf, idx, w, bytes(p)])
    return idx, from_device(w, wdt), vals


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


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_route_float32_weights(emu, dtype):
    """marlin_moe_route_<dtype>_wf32 (moe_mlp): same ids, weights in float32 at float32
    accuracy."""
    rng = np.random.default_rng(41)
    logits = (rng.standard_normal((19, 40)) * 3).astype(np.float32)
    idx, w, vals = run_route(emu, logits, 5, True, dtype, wf32=True)
    assert w.dtype == np.float32
    ref_idx, ref_w = ref_route(vals, 5, True)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(w, ref_w, rtol=TOL["f32"], atol=1e-7)
