"""Metal flash-attention kernels (metal/attention.metal) on the Metal-on-CPU
emulator: every instantiation launched directly through the emulator's Python API
(checked build: out-of-bounds accesses and threadgroup-memory races are errors)
against a float64 numpy reference.  Output and scratch buffers start as NaN, so a
pass also proves every element is written.  The host-side numbers (plan, tile
sizes, params layout, kernel names) come from the C++ headers through a probe."""
import ctypes
import math

import numpy as np
import pytest

from metal_helpers import ELEM_BYTES, compile_metal, from_device, nan_buffer, run_probe, to_device
from reference import attention as reference

HEAD_DIMS = [64, 80, 96, 128, 256]
DTYPES = ["f16", "bf16", "f32"]
TOL = {"f32": 2e-5, "f16": 2e-3, "bf16": 1.6e-2}
LOG2E = 1.4426950408889634
MASK_NONE, MASK_CAUSAL, MASK_BOOL, MASK_ADD = 0, 1, 2, 3
MASK_TYPE = {"f32": 0, "f16": 1, "bf16": 2}

PROBE = r"""
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include "common/attention_params.h"
#include "common/attention_plan.h"
using namespace marlin;
int main(int argc, char** argv) {
  std::printf("{\"names\": [");
  auto names = all_attention_kernel_names();
  for (size_t i = 0; i < names.size(); ++i) std::printf("%s\"%s\"", i ? ", " : "", names[i].c_str());
  std::printf("], \"tiles\": [");
  bool first = true;
  for (int d : {64, 80, 96, 128, 256})
    for (int b : {2, 4}) {
      std::printf("%s[%d, %d, %d, %d]", first ? "" : ", ", d, b, attention_block_k(d, b), attention_threadgroup_bytes(d, b));
      first = false;
    }
  std::printf("], \"params\": [%zu, %zu, %zu, %zu, %zu], \"plans\": [", sizeof(AttentionParams),
              offsetof(AttentionParams, keys_per_split), offsetof(AttentionParams, B), offsetof(AttentionParams, scale_log2),
              offsetof(AttentionParams, mask_type));
  const int pu = std::atoi(argv[1]);
  for (int i = 2; i + 4 < argc; i += 5) {
    AttentionPlan p = plan_attention(std::atoll(argv[i]), std::atoll(argv[i + 1]), std::atoll(argv[i + 2]),
                                     std::atoll(argv[i + 3]), std::atoll(argv[i + 4]), pu);
    std::printf("%s[%d, %d, %d, %d, %d, %d, %d, %d, %lld, %lld]", i > 2 ? ", " : "", int(p.decode), p.heads_per_task,
                p.head_blocks, p.block_q, p.query_blocks, p.rows, p.block_k, p.splits, (long long)p.keys_per_split,
                (long long)p.num_tasks);
  }
  std::printf("]}\n");
}
"""

PARALLEL_UNITS = 8  # plans are computed for an 8-core GPU


class AttentionParams(ctypes.Structure):  # cpp/common/attention_params.h
    _fields_ = [("q_stride", ctypes.c_int64 * 4), ("k_stride", ctypes.c_int64 * 4), ("v_stride", ctypes.c_int64 * 4),
                ("mask_stride", ctypes.c_int64 * 4), ("keys_per_split", ctypes.c_int64)] + [
                    (n, ctypes.c_int32) for n in ("B", "Hq", "Hkv", "Lq", "Lk", "heads_per_task", "head_blocks",
                                                  "block_q", "query_blocks", "rows", "splits", "mask_kind", "mask_type")
                ] + [("scale_log2", ctypes.c_float), ("has_sinks", ctypes.c_int32), ("reserved", ctypes.c_int32)]


def plan_attention(B, Hq, Hkv, Lq, Lk, pu=PARALLEL_UNITS):
    """Python copy of marlin::plan_attention (checked against the C++ in test_host_contract)."""
    G = Hq // max(1, Hkv)
    decode = Lq <= 8
    g_cap = min(G, 64)
    block_q = max(1, min(Lq, 64 // g_cap))
    hpt = max(1, min(G, 64 // block_q))
    head_blocks = -(-G // hpt)
    query_blocks = -(-max(Lq, 1) // block_q)
    row_tasks = B * Hkv * head_blocks * query_blocks
    key_blocks = max(1, -(-Lk // 64))
    splits = 1
    if decode and Lk > 256:
        want = (4 * pu + row_tasks - 1) // row_tasks
        splits = max(1, min(want, max(1, Lk // 256), key_blocks))
    bps = -(-key_blocks // splits)
    splits = -(-key_blocks // bps)
    return dict(decode=int(decode), heads_per_task=hpt, head_blocks=head_blocks, block_q=block_q,
                query_blocks=query_blocks, rows=hpt * block_q, block_k=64, splits=splits, keys_per_split=bps * 64,
                num_tasks=row_tasks * splits)


@pytest.fixture(scope="module")
def emu():
    module = compile_metal("attention.metal", checked=True)
    assert module.checked
    return module


def strides4(shape):
    """Element strides of a C-contiguous array, right-aligned to 4 dims, 0 where broadcast."""
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc if n != 1 else 0)
        acc *= n
    st = st[::-1]
    return [0] * (4 - len(st)) + st


def run_attention(emu, dtype, qf, kf, vf, scale, mask_kind=MASK_NONE, mask=None, mask_dtype=None, kv_layout="bhld",
                  pu=PARALLEL_UNITS, sinks=None):
    """Launches the kernels the way cpp/gpu/attention.cpp encodes them.  Returns
    (output as float32, exactly-rounded q, k, v as float32, plan)."""
    B, Hq, Lq, D = qf.shape
    Hkv, Lk = kf.shape[1], kf.shape[2]
    qb, qn = to_device(qf, dtype)
    if kv_layout == "blhd":  # k / v stored [B, Lk, Hkv, D]: non-contiguous logical views
        kb, kn = to_device(kf.transpose(0, 2, 1, 3), dtype)
        vb, vn = to_device(vf.transpose(0, 2, 1, 3), dtype)
        kn, vn = kn.transpose(0, 2, 1, 3), vn.transpose(0, 2, 1, 3)
        kv_st = [Lk * Hkv * D, D, Hkv * D, 1]
    else:
        kb, kn = to_device(kf, dtype)
        vb, vn = to_device(vf, dtype)
        kv_st = strides4(kf.shape)
    plan = plan_attention(B, Hq, Hkv, Lq, Lk, pu)
    p = AttentionParams()
    p.q_stride[:] = [Hq * Lq * D, Lq * D, D, 1]
    p.k_stride[:] = kv_st
    p.v_stride[:] = kv_st
    p.keys_per_split = plan["keys_per_split"]
    p.B, p.Hq, p.Hkv, p.Lq, p.Lk = B, Hq, Hkv, Lq, Lk
    for f in ("heads_per_task", "head_blocks", "block_q", "query_blocks", "rows", "splits"):
        setattr(p, f, plan[f])
    p.mask_kind = mask_kind
    p.scale_log2 = scale * LOG2E
    mbuf, mref = np.zeros(1, np.uint8), None
    if mask_kind == MASK_BOOL:
        mbuf, mref = np.ascontiguousarray(mask, np.uint8), np.asarray(mask, bool)
        p.mask_stride[:] = strides4(mask.shape)
    elif mask_kind == MASK_ADD:
        mbuf, mref = to_device(mask, mask_dtype)
        p.mask_type = MASK_TYPE[mask_dtype]
        p.mask_stride[:] = strides4(mask.shape)
    # Without sinks the kernels never read that buffer: a NaN stands in.
    p.has_sinks = int(sinks is not None)
    sbuf = np.full(1, np.nan, np.float32) if sinks is None else np.ascontiguousarray(sinks, np.float32)
    out = nan_buffer((B, Hq, Lq, D), dtype)
    tg = (32 * -(-plan["rows"] // 8), 1, 1)
    name = lambda kind: f"marlin_attention_{kind}_d{D}_{dtype}"  # noqa: E731
    if plan["splits"] == 1:
        emu.launch(name("prefill"), grid=(plan["num_tasks"], 1, 1), tg=tg, buffers=[qb, kb, vb, mbuf, out, bytes(p), sbuf], check_uninitialized=True)
    else:
        part_o = np.full(plan["num_tasks"] * plan["rows"] * D, np.nan, np.float32)
        part_ml = np.full(plan["num_tasks"] * plan["rows"] * 2, np.nan, np.float32)
        emu.launch(name("decode"), grid=(plan["num_tasks"], 1, 1), tg=tg,
                   buffers=[qb, kb, vb, mbuf, part_o, part_ml, bytes(p)], check_uninitialized=True)
        emu.launch(name("merge"), grid=(plan["num_tasks"] // plan["splits"], plan["rows"], 1), tg=(32, 1, 1),
                   buffers=[part_o, part_ml, out, bytes(p), sbuf])
    return from_device(out, dtype), (qn, kn, vn, mref), plan


def check(got, expected, dtype, tol=None):
    assert np.isfinite(got).all(), "NaN/inf in output (an element was not written?)"
    t = tol or TOL[dtype]
    np.testing.assert_allclose(got, expected, atol=t, rtol=t)


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- host contract
def test_host_contract(emu):
    """Kernel names, tile sizes, params layout and plans agree between the C++ headers,
    the compiled module and this file."""
    shapes = [(1, 4, 1, 13, 37), (2, 3, 3, 70, 70), (1, 8, 1, 3, 515), (1, 4, 1, 1, 777), (2, 32, 8, 5, 4000),
              (1, 4, 2, 200, 9), (3, 64, 1, 1, 300)]
    probe = run_probe(PROBE, [PARALLEL_UNITS] + [x for s in shapes for x in s])
    # every possible return value of attention_kernel_name is instantiated, nothing else
    assert sorted(probe["names"]) == sorted(emu.kernels())
    assert len(probe["names"]) == 3 * len(HEAD_DIMS) * len(DTYPES)
    # tiles: multiples of 8 dividing plan.block_k, K+V tiles within 32 KiB
    for d, b, bk, tg_bytes in probe["tiles"]:
        assert bk % 8 == 0 and 64 % bk == 0
        assert tg_bytes == 2 * bk * d * b <= 32768, (d, b, bk, tg_bytes)
    assert probe["params"] == [ctypes.sizeof(AttentionParams), AttentionParams.keys_per_split.offset,
                               AttentionParams.B.offset, AttentionParams.scale_log2.offset,
                               AttentionParams.mask_type.offset]
    keys = ["decode", "heads_per_task", "head_blocks", "block_q", "query_blocks", "rows", "block_k", "splits",
            "keys_per_split", "num_tasks"]
    for s, got in zip(shapes, probe["plans"]):
        py = plan_attention(*s)
        assert [py[k] for k in keys] == got, s


# ---------------------------------------------------------------- every instantiation
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_prefill_every_instantiation(emu, D, dtype):
    """GQA 4, Lq < Lk, odd lengths off every tile size, causal aligned to the end."""
    rng = np.random.default_rng(D * 7 + len(dtype))
    q, k, v = randn(rng, 1, 4, 13, D), randn(rng, 1, 1, 37, D), randn(rng, 1, 1, 37, D)
    got, (qn, kn, vn, _), plan = run_attention(emu, dtype, q, k, v, D**-0.5, MASK_CAUSAL)
    assert plan["splits"] == 1 and plan["rows"] == 52
    check(got, reference(qn, kn, vn, D**-0.5, causal=True), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_decode_every_instantiation(emu, D, dtype):
    """Decode split-K (2 splits, the second partial) + merge, GQA 4, Lq = 2."""
    rng = np.random.default_rng(D * 11 + len(dtype))
    q, k, v = randn(rng, 1, 4, 2, D), randn(rng, 1, 1, 515, D), randn(rng, 1, 1, 515, D)
    got, (qn, kn, vn, _), plan = run_attention(emu, dtype, q, k, v, D**-0.5)
    assert plan["splits"] == 2 and plan["decode"]
    check(got, reference(qn, kn, vn, D**-0.5), dtype)


# ---------------------------------------------------------------- semantics
def test_gqa1_multiple_query_blocks(emu):
    """GQA ratio 1, B = 2, Lq = 70 (two query blocks of 64 rows: 8 simdgroups), causal."""
    rng = np.random.default_rng(1)
    q, k, v = randn(rng, 2, 3, 70, 64), randn(rng, 2, 3, 70, 64), randn(rng, 2, 3, 70, 64)
    got, (qn, kn, vn, _), plan = run_attention(emu, "f32", q, k, v, 0.125, MASK_CAUSAL)
    assert plan["query_blocks"] == 2 and plan["rows"] == 64
    check(got, reference(qn, kn, vn, 0.125, causal=True), "f32")


def test_causal_more_queries_than_keys(emu):
    """Causal aligned to the end with Lq > Lk: the first Lq - Lk queries see no key -> zeros."""
    rng = np.random.default_rng(2)
    q, k, v = randn(rng, 1, 2, 20, 80), randn(rng, 1, 1, 9, 80), randn(rng, 1, 1, 9, 80)
    got, (qn, kn, vn, _), _ = run_attention(emu, "f16", q, k, v, 80**-0.5, MASK_CAUSAL)
    assert (got[:, :, :11] == 0).all()
    check(got, reference(qn, kn, vn, 80**-0.5, causal=True), "f16")


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_bool_mask_broadcast_and_fully_masked_rows(emu, dtype):
    """Bool mask [B, 1, Lq, Lk] broadcast over heads; two rows fully masked -> zeros."""
    rng = np.random.default_rng(3)
    B, Hq, Hkv, Lq, Lk, D = 2, 4, 1, 13, 37, 96
    q, k, v = randn(rng, B, Hq, Lq, D), randn(rng, B, Hkv, Lk, D), randn(rng, B, Hkv, Lk, D)
    mask = rng.random((B, 1, Lq, Lk)) > 0.3
    mask[0, 0, 2] = False
    mask[1, 0, 12] = False
    got, (qn, kn, vn, m), _ = run_attention(emu, dtype, q, k, v, D**-0.5, MASK_BOOL, mask)
    assert (got[0, :, 2] == 0).all() and (got[1, :, 12] == 0).all()
    check(got, reference(qn, kn, vn, D**-0.5, mask=m), dtype)


@pytest.mark.parametrize("qdt,mdt,shape", [("f32", "f16", (13, 37)), ("bf16", "bf16", (2, 4, 1, 37)),
                                           ("f32", "f32", (1, 37))])
def test_additive_mask_broadcast(emu, qdt, mdt, shape):
    """Additive masks of every dtype through broadcast strides, with -inf entries (and,
    for the 2-D mask, a row that is -inf everywhere -> zeros)."""
    rng = np.random.default_rng(4)
    B, Hq, Hkv, Lq, Lk, D = 2, 4, 2, 13, 37, 64
    q, k, v = randn(rng, B, Hq, Lq, D), randn(rng, B, Hkv, Lk, D), randn(rng, B, Hkv, Lk, D)
    mask = randn(rng, *shape, scale=2.0)
    mask[..., 5] = -np.inf
    if shape == (13, 37):
        mask[3] = -np.inf
    got, (qn, kn, vn, m), _ = run_attention(emu, qdt, q, k, v, D**-0.5, MASK_ADD, mask, mdt)
    check(got, reference(qn, kn, vn, D**-0.5, mask=m), qdt)
    if shape == (13, 37):
        assert (got[:, :, 3] == 0).all()


def test_large_logits(emu):
    """Logits of magnitude ~1e4 (q scaled up, plus a +-1e4 additive mask) stay finite."""
    rng = np.random.default_rng(5)
    q, k, v = randn(rng, 1, 2, 11, 64, scale=1000.0), randn(rng, 1, 2, 45, 64), randn(rng, 1, 2, 45, 64)
    mask = (rng.choice([-1e4, 0.0, 1e4], size=(11, 45))).astype(np.float32)
    for dtype in ("f32", "f16"):
        got, (qn, kn, vn, _), _ = run_attention(emu, dtype, q, k, v, 1.0, MASK_NONE)
        assert np.abs(np.einsum("bhid,bhjd->bhij", qn, kn)).max() > 1e4
        check(got, reference(qn, kn, vn, 1.0), dtype, tol=2e-2)  # fp32 logits of 1e4 carry ~1e-3 error
    got, (qn, kn, vn, m), _ = run_attention(emu, "f32", q / 1000, k, v, 1.0 / 8, MASK_ADD, mask, "f32")
    check(got, reference(qn, kn, vn, 1.0 / 8, mask=m), "f32", tol=3e-3)  # 1e4 + s: ulp(1e4) ~ 1e-3


def test_strided_kv(emu):
    """k / v stored [B, Lk, Hkv, D] (non-contiguous [B, Hkv, Lk, D] views), GQA 2."""
    rng = np.random.default_rng(6)
    q, k, v = randn(rng, 2, 4, 9, 128), randn(rng, 2, 2, 21, 128), randn(rng, 2, 2, 21, 128)
    got, (qn, kn, vn, _), _ = run_attention(emu, "f16", q, k, v, 128**-0.5, MASK_CAUSAL, kv_layout="blhd")
    check(got, reference(qn, kn, vn, 128**-0.5, causal=True), "f16")


def test_decode_three_splits_masks(emu):
    """Decode with 3 splits, GQA 8 (rows = 8 x Lq), a bool mask that fully masks one row
    and masks another only inside the first split."""
    rng = np.random.default_rng(7)
    B, Hq, Hkv, Lq, Lk, D = 1, 8, 1, 3, 777, 64
    q, k, v = randn(rng, B, Hq, Lq, D), randn(rng, B, Hkv, Lk, D), randn(rng, B, Hkv, Lk, D)
    mask = rng.random((B, Hq, Lq, Lk)) > 0.2
    mask[0, 1, 2] = False
    mask[0, 3, 0, 320:] = False
    got, (qn, kn, vn, m), plan = run_attention(emu, "f32", q, k, v, 0.125, MASK_BOOL, mask)
    assert plan["splits"] == 3 and plan["rows"] == 24
    assert (got[0, 1, 2] == 0).all()
    check(got, reference(qn, kn, vn, 0.125, mask=m), "f32")


def test_decode_causal_split(emu):
    """Decode causal (aligned to the end) with 2 splits, f16, two kv heads."""
    rng = np.random.default_rng(8)
    q, k, v = randn(rng, 1, 4, 5, 80), randn(rng, 1, 2, 600, 80), randn(rng, 1, 2, 600, 80)
    got, (qn, kn, vn, _), plan = run_attention(emu, "f16", q, k, v, 80**-0.5, MASK_CAUSAL)
    assert plan["splits"] == 2
    check(got, reference(qn, kn, vn, 80**-0.5, causal=True), "f16")


@pytest.mark.parametrize("dtype,D", [("f32", 64), ("bf16", 128), ("f16", 96)])
def test_prefill_sinks(emu, dtype, D):
    """Attention sinks (one logit per query head, zero value): GQA 2, a bool mask with a
    fully masked row (zeros, sink or not), sinks from far below to far above the scores."""
    rng = np.random.default_rng(9)
    B, Hq, Hkv, Lq, Lk = 2, 4, 2, 11, 37
    q, k, v = randn(rng, B, Hq, Lq, D), randn(rng, B, Hkv, Lk, D), randn(rng, B, Hkv, Lk, D)
    mask = rng.random((B, Hq, Lq, Lk)) > 0.3
    mask[1, 2, 4] = False
    sinks = np.array([-30.0, 0.5, 3.0, 12.0], np.float32)
    got, (qn, kn, vn, m), plan = run_attention(emu, dtype, q, k, v, D**-0.5, MASK_BOOL, mask, sinks=sinks)
    assert plan["splits"] == 1
    assert (got[1, 2, 4] == 0).all()
    want = reference(qn, kn, vn, D**-0.5, mask=m, sinks=sinks)
    check(got, want, dtype)
    assert np.abs(want - reference(qn, kn, vn, D**-0.5, mask=m)).max() > 0.1  # the sinks matter here


def test_decode_split_sinks(emu):
    """Split-K decode (3 splits): the merge adds each row's sink once."""
    rng = np.random.default_rng(10)
    B, Hq, Hkv, Lq, Lk, D = 1, 8, 2, 2, 777, 64
    q, k, v = randn(rng, B, Hq, Lq, D), randn(rng, B, Hkv, Lk, D), randn(rng, B, Hkv, Lk, D)
    mask = rng.random((B, Hq, Lq, Lk)) > 0.2
    mask[0, 5, 1] = False
    sinks = randn(rng, Hq, scale=3.0)
    got, (qn, kn, vn, m), plan = run_attention(emu, "f32", q, k, v, 0.125, MASK_BOOL, mask, sinks=sinks)
    assert plan["splits"] > 1
    assert (got[0, 5, 1] == 0).all()
    check(got, reference(qn, kn, vn, 0.125, mask=m, sinks=sinks), "f32")
