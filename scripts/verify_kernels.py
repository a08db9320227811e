#!/usr/bin/env python3
"""Correctness check of the Metal kernels on a real Apple GPU (for Mac users: these
kernels were only ever run on the Metal-on-CPU emulator in CI).

    python scripts/verify_kernels.py                    # every sweep on mx.gpu vs float64
    python scripts/verify_kernels.py --only moe attention
    python scripts/verify_kernels.py --pytest           # + op test suites on mx.gpu

Sweeps (each result compared with a float64 numpy reference, NaN/inf never accepted):

* gemm: every kernel the encoder can pick: decode (M <= 16), default and large_m
  (M >= 256) tiles, x in float16/bfloat16/float32, scales in float16/bfloat16, every
  activation with and without bias, shapes off the tiles, and the vjp (transposed kernel).
* moe: moe_route (dtypes, E up to 256, k up to E, normalize on/off; indices equal to
  the CPU backend's), moe_gemm (shared and per-slot x, weighted and unweighted, every
  dtype pair, activations, decode and default tiles, every index dtype, skewed routing),
  invalid expert ids (the GPU cannot raise: exactly the dependent rows must be NaN, the
  others right), and moe_mlp (separate and [gate | up] weights, every activation,
  dtypes, normalize on/off, E = 256; E > 256 runs on the CPU stream by design).
* attention: head dims 64/80/96/128/256 x dtypes, no mask / causal / bool / additive
  masks, grouped-query heads, prefill and split-K decode (long keys), fully masked rows.

Tolerances are the op tests' (tests/test_moe.py, tests/test_attention.py), whose
reference helpers this script imports.  --pytest also runs tests/test_fp4_gemm.py and
tests/test_attention.py with MLX_MARLIN_TEST_DEVICE=gpu (test_moe.py pins its streams to
mx.cpu, so the moe sweep above is the GPU check of the MoE kernels).  Exit status 0 when
everything is within tolerance.
"""
import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # in-tree build (scripts/dev_build.sh); an installed package works too
sys.path.insert(1, str(ROOT / "tests"))  # the op tests' float64 references
import mlx_marlin as mm  # noqa: E402

TOL = {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}
ACTS = [None, "relu", "gelu", "gelu_approx", "silu"]
DTYPES = (mx.float32, mx.float16, mx.bfloat16)
DEV = mx.gpu  # --device cpu runs the same sweeps on mx.cpu (the CPU backend, or the emulator build)


def act_ref(y, name):
    if name == "relu":
        return np.maximum(y, 0)
    if name == "gelu":
        return 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    if name == "gelu_approx":
        return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
    if name == "silu":
        return y / (1 + np.exp(-y))
    return y


def f64(a):
    return np.array(a.astype(mx.float32)).astype(np.float64)


def dname(dt):
    return str(dt).split(".")[-1]


class Checks:
    def __init__(self):
        self.n = 0
        self.failures = []

    def close(self, what, out, ref, tol, scale=None):
        """max|out - ref| <= tol * max(1, max|ref|) (or tol * scale), every output finite."""
        got = f64(out) if isinstance(out, mx.array) else np.asarray(out, np.float64)
        self.n += 1
        if got.shape != ref.shape:
            self.failures.append((*what, f"shape {got.shape} != {ref.shape}"))
            return
        s = scale if scale is not None else max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
        err = float(np.abs(got - ref).max()) if ref.size else 0.0
        if not (np.isfinite(got).all() and err <= tol * s):
            self.failures.append((*what, f"err {err:.3g} > {tol * s:.3g}" if np.isfinite(got).all() else "non-finite"))

    def true(self, what, ok):
        self.n += 1
        if not ok:
            self.failures.append(what)


# ------------------------------------------------------------------ fp4_gemm
def check_gemm(rng, c):
    for m in (1, 5, 16, 17, 67, 255, 256, 300):
        for n, k, g in ((129, 384, 128), (70, 96, 32)):
            w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
            for sdt in (mx.float16, mx.bfloat16):
                p, s = mm.quantize(w, g, sdt)
                wd = f64(mm.dequantize(p, s, g))
                for i, dt in enumerate(DTYPES):
                    act = ACTS[(m + i) % len(ACTS)]
                    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dt)
                    b = mx.array(rng.standard_normal(n).astype(np.float32)) if (m + i) % 2 else None
                    y = mm.fp4_gemm(x, p, s, b, group_size=g, activation=act, stream=DEV)
                    ref = act_ref(f64(x) @ wd.T + (f64(b) if b is not None else 0), act)
                    c.close(("fp4_gemm", m, n, k, g, dname(dt), dname(sdt), act, b is not None), y, ref, TOL[dt],
                            scale=np.abs(ref).max())
                    # vjp (transposed kernel)
                    gx = mx.grad(lambda x: mm.fp4_gemm(x, p, s, group_size=g, stream=DEV).astype(mx.float32).sum())(x)
                    gref = np.ones((m, n)) @ wd
                    c.close(("fp4_gemm vjp", m, n, k, g, dname(dt), dname(sdt)), gx, gref, max(TOL[dt], 1e-4),
                            scale=np.abs(gref).max())


# ------------------------------------------------------------------ moe
def check_moe(rng, c):
    from test_moe import make_experts, rand, ref_moe_gemm, ref_moe_mlp, ref_route, to_np

    name = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16"}
    # moe_route
    for T, E, k, normalize, dt in [(1, 8, 2, True, mx.float32), (37, 64, 8, True, mx.float16),
                                   (300, 16, 1, False, mx.bfloat16), (5, 256, 256, True, mx.float32),
                                   (9, 200, 7, False, mx.float16), (64, 3, 3, True, mx.bfloat16)]:
        logits = rand(rng, (T, E), name[dt], scale=3.0)
        idx, w = mm.moe_route(logits, k, normalize=normalize, stream=DEV)
        ref_idx, ref_w = ref_route(to_np(logits), k, normalize)
        cpu_idx, _ = mm.moe_route(logits, k, normalize=normalize, stream=mx.cpu)
        what = ("moe_route", T, E, k, normalize, dname(dt))
        c.true(what + ("indices vs float64 ranking",), np.array_equal(np.array(idx), ref_idx))
        c.true(what + ("indices vs CPU",), np.array_equal(np.array(idx), np.array(cpu_idx)))
        c.close(what, w, ref_w, 2 * TOL[dt])

    # moe_gemm: decode tiles (few rows per expert) and default tiles (many), every dtype pair
    cases = [  # T, E, k, N, K, g, form, weighted
        (1, 8, 2, 40, 64, 32, "shared", False), (1, 8, 4, 200, 128, 64, "shared", True),
        (17, 16, 4, 100, 256, 128, "shared", True), (300, 8, 2, 72, 128, 32, "shared", False),
        (300, 8, 2, 40, 128, 64, "per_slot", True), (23, 4, 4, 130, 64, 64, "per_slot", False),
        (64, 32, 8, 72, 64, 32, "shared", True), (200, 3, 3, 66, 96, 32, "shared", True),
    ]
    for ci, (T, E, k, N, K, g, form, weighted) in enumerate(cases):
        for di, dt in enumerate(DTYPES):
            for sdt in (mx.float16, mx.bfloat16):
                act = ACTS[(ci + di) % len(ACTS)]
                packed, scales, dense = make_experts(rng, E, N, K, g, sdt)
                x = rand(rng, (T, K) if form == "shared" else (T, k, K), name[dt])
                idx = np.stack([rng.choice(E, size=k, replace=False) for _ in range(T)]).astype(np.int32)
                if T >= 200:
                    idx[:, 0] = 1  # one expert with many tiles of rows
                wts = rand(rng, (T, k)) if weighted else None
                out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=wts, activation=act,
                                  stream=DEV)
                ref = ref_moe_gemm(to_np(x), dense, idx, to_np(wts) if weighted else None, act)
                c.close(("moe_gemm", T, E, k, N, K, g, form, weighted, dname(dt), dname(sdt), act), out, ref, TOL[dt])
    for idt in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
        packed, scales, dense = make_experts(rng, 6, 40, 64, 64)
        idx = np.stack([rng.choice(6, size=2, replace=False) for _ in range(5)])
        x = rand(rng, (5, 64))
        out = mm.moe_gemm(x, packed, scales, mx.array(idx.astype(idt)), group_size=64, stream=DEV)
        c.close(("moe_gemm index dtype", idt), out, ref_moe_gemm(to_np(x), dense, idx), TOL[mx.float32])
    # Skewed: one expert for everything; the same expert twice per token.
    packed, scales, dense = make_experts(rng, 16, 72, 128, 64)
    x = rand(rng, (70, 128), "bfloat16")
    for idx in (np.full((70, 3), 5, np.int32), np.repeat(rng.integers(0, 16, (70, 1)), 3, 1).astype(np.int32)):
        wts = rand(rng, (70, 3))
        out = mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=64, weights=wts, stream=DEV)
        c.close(("moe_gemm skewed",), out, ref_moe_gemm(to_np(x), dense, idx, to_np(wts)), TOL[mx.bfloat16])

    # Invalid expert ids: the CPU (and emulator) backends raise; the GPU writes NaN exactly
    # where they matter.
    T, E, k, N, K, g = 9, 6, 2, 40, 64, 32
    packed, scales, dense = make_experts(rng, E, N, K, g)
    x = rand(rng, (T, K), "float16")
    idx = rng.integers(0, E, (T, k)).astype(np.int32)
    ok_idx = idx.copy()
    idx[1, 1], idx[5, 0], idx[5, 1] = E, -1, 1000
    bad = np.zeros((T, k), bool)
    bad[1, 1] = bad[5, 0] = bad[5, 1] = True
    ok_idx[bad] = 0
    wts = rand(rng, (T, k))
    for weighted in (False, True):
        what = ("moe_gemm invalid ids", "weighted" if weighted else "unweighted")
        got = f64(mm.moe_gemm(x, packed, scales, mx.array(idx), group_size=g, weights=wts if weighted else None,
                              stream=DEV))
        ref = ref_moe_gemm(to_np(x), dense, ok_idx, to_np(wts) if weighted else None)
        rows = bad.any(1) if weighted else bad  # the token's row, or the pair's row
        c.true(what + ("NaN rows",), np.isnan(got[rows]).all())
        c.close(what + ("other rows",), got[~rows], ref[~rows], TOL[mx.float16])

    # moe_mlp
    mlp_cases = [  # T, E, k, K, I, N_out, g, act, fused, normalize
        (1, 8, 2, 64, 96, 40, 32, "silu", False, True), (1, 8, 2, 128, 64, 100, 64, "silu", True, True),
        (19, 16, 4, 128, 128, 72, 128, "gelu", False, False), (300, 8, 2, 64, 64, 40, 64, "silu", True, True),
        (300, 4, 1, 64, 96, 100, 32, "relu", False, True), (12, 6, 6, 128, 64, 72, 32, "gelu_approx", True, False),
        (40, 256, 8, 64, 64, 40, 32, "silu", False, True), (7, 5, 3, 64, 32, 40, 32, None, True, True),
        (3, 300, 4, 64, 64, 40, 32, "silu", True, True),  # E > 256: the CPU stream
    ]
    for ci, (T, E, k, K, I, N_out, g, act, fused, normalize) in enumerate(mlp_cases):
        for dt in DTYPES:
            sdt = mx.bfloat16 if dt == mx.bfloat16 else mx.float16
            pg, sg, gate = make_experts(rng, E, I, K, g, sdt)
            pu, su, up = make_experts(rng, E, I, K, g, sdt)
            pd, sd, down = make_experts(rng, E, N_out, I, g, sdt)
            x = rand(rng, (T, K), name[dt])
            logits = rand(rng, (T, E), name[dt])
            if fused:
                out = mm.moe_mlp(x, logits, mx.concatenate([pg, pu], 2), mx.concatenate([sg, su], 2), None, None, pd,
                                 sd, top_k=k, group_size=g, activation=act, normalize=normalize, stream=DEV)
            else:
                out = mm.moe_mlp(x, logits, pg, sg, pu, su, pd, sd, top_k=k, group_size=g, activation=act,
                                 normalize=normalize, stream=DEV)
            ref = ref_moe_mlp(to_np(x), to_np(logits), gate, up, down, k, act, normalize)
            c.close(("moe_mlp", T, E, k, K, I, N_out, g, act, "fused" if fused else "separate", normalize, dname(dt)),
                    out, ref, 2 * TOL[dt])


# ------------------------------------------------------------------ attention
def check_attention(rng, c):
    from test_attention import make, reference

    name = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16"}
    for D in (64, 80, 96, 128, 256):
        for dt in DTYPES:
            for B, Hq, Hkv, Lq, Lk in ((1, 4, 2, 37, 70), (2, 8, 1, 1, 700), (1, 4, 4, 2, 1100)):
                (q, k, v), (qn, kn, vn) = make(rng, B, Hq, Hkv, Lq, Lk, D, name[dt])
                s = D**-0.5
                for mask in (None, "causal", "bool", "additive"):
                    if mask == "bool":
                        m = rng.random((Lq, Lk)) < 0.7
                        if Lq > 1:
                            m[1] = False  # a fully masked row: zeros
                        arg, ref = mx.array(m), reference(qn, kn, vn, s, mask=m)
                    elif mask == "additive":
                        m = (rng.standard_normal((B, 1, 1, Lk)) * 2).astype(np.float32)
                        arg = mx.array(m).astype(dt)
                        ref = reference(qn, kn, vn, s, mask=np.array(arg.astype(mx.float32)))
                    else:
                        arg, ref = mask, reference(qn, kn, vn, s, causal=mask == "causal")
                    out = mm.attention(q, k, v, scale=s, mask=arg, stream=DEV)
                    c.close(("attention", D, dname(dt), B, Hq, Hkv, Lq, Lk, mask), out, ref, TOL[dt])


SECTIONS = {"gemm": check_gemm, "moe": check_moe, "attention": check_attention}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--pytest", action="store_true", help="also run the op test suites on mx.gpu")
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu",
                    help="cpu: the same sweeps on mx.cpu (a dry run of this script: the CPU backend, or in an "
                    "emulator build (scripts/emulator_tests.sh) the Metal kernels on the emulator)")
    args = ap.parse_args()
    global DEV
    DEV = mx.gpu if args.device == "gpu" else mx.cpu
    if DEV == mx.gpu and not mx.metal.is_available():
        print("no Metal GPU: run this on a Mac (CI covers the kernels with the emulator)")
        return 2
    missing = {"gemm": {"fp4_gemm"}, "moe": {"moe_gemm", "moe_route", "moe_mlp"}, "attention": {"attention"}}
    gpu_ops = set(mm._ext._gpu_ops())
    rc = 0
    for section in args.only:
        lacking = missing[section] - gpu_ops
        if DEV == mx.gpu and lacking:
            print(f"{section}: this build has no GPU kernels for {sorted(lacking)} (mlx_marlin._ext._gpu_ops())")
            rc = 1
            continue
        c = Checks()
        SECTIONS[section](np.random.default_rng(0), c)
        for f in c.failures:
            print("FAIL", *f)
        print(f"{section}: {c.n - len(c.failures)}/{c.n} checks passed on {DEV} (backend {mm._ext._backend()})",
              flush=True)
        rc |= 1 if c.failures else 0
    if args.pytest and DEV == mx.gpu:
        env = dict(os.environ, MLX_MARLIN_TEST_DEVICE="gpu")
        tests = [str(ROOT / "tests" / t) for t in ("test_fp4_gemm.py", "test_attention.py")]
        rc |= subprocess.call([sys.executable, "-m", "pytest", "-q", *tests], env=env)
    return rc


if __name__ == "__main__":
    sys.exit(main())
