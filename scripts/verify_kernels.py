#!/usr/bin/env python3
"""Correctness check of the Metal FP4 GEMM kernels on a real Apple GPU (for Mac users;
these kernels were only ever run on the Metal-on-CPU emulator in CI).

    python scripts/verify_kernels.py            # variant sweep on mx.gpu vs float64
    python scripts/verify_kernels.py --pytest   # + the op test suite on mx.gpu

The sweep covers every kernel the encoder can pick: decode (M <= 16), default and
large_m (M >= 256) tiles, x in float16/bfloat16/float32, scales in float16/bfloat16,
every activation with and without bias, shapes off the tiles, and the vjp (transposed
kernel).  Exit status 0 when everything is within tolerance.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # in-tree build (scripts/dev_build.sh); an installed package works too
import mlx_marlin as mm  # noqa: E402
TOL = {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}
ACTS = [None, "relu", "gelu", "gelu_approx", "silu"]


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


def main():
    if not mx.metal.is_available():
        print("no Metal GPU: run this on a Mac (CI covers the kernels with the emulator)")
        return 2
    rng = np.random.default_rng(0)
    failures, checks = [], 0
    for m in (1, 5, 16, 17, 67, 255, 256, 300):
        for n, k, g in ((129, 384, 128), (70, 96, 32)):
            w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
            for sdt in (mx.float16, mx.bfloat16):
                p, s = mm.quantize(w, g, sdt)
                wd = f64(mm.dequantize(p, s, g))
                for i, dt in enumerate((mx.float32, mx.float16, mx.bfloat16)):
                    act = ACTS[(m + i) % len(ACTS)]
                    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dt)
                    b = mx.array(rng.standard_normal(n).astype(np.float32)) if (m + i) % 2 else None
                    y = mm.fp4_gemm(x, p, s, b, group_size=g, activation=act, stream=mx.gpu)
                    ref = act_ref(f64(x) @ wd.T + (f64(b) if b is not None else 0), act)
                    out = f64(y)
                    err = np.abs(out - ref).max() / np.abs(ref).max()
                    checks += 1
                    if not (np.all(np.isfinite(out)) and err < TOL[dt]):
                        failures.append((m, n, k, g, str(dt), str(sdt), act, b is not None, float(err)))
                    # vjp (transposed kernel)
                    gx = mx.grad(lambda x: mm.fp4_gemm(x, p, s, group_size=g, stream=mx.gpu).astype(mx.float32).sum())(x)
                    gref = np.ones((m, n)) @ wd
                    gerr = np.abs(f64(gx) - gref).max() / np.abs(gref).max()
                    checks += 1
                    if not gerr < max(TOL[dt], 1e-4):
                        failures.append(("vjp", m, n, k, g, str(dt), str(sdt), float(gerr)))
    for f in failures:
        print("FAIL", f)
    print(f"{checks - len(failures)}/{checks} checks passed on {mx.default_device()}")
    rc = 1 if failures else 0
    if "--pytest" in sys.argv:
        env = dict(os.environ, MLX_MARLIN_TEST_DEVICE="gpu")
        rc |= subprocess.call([sys.executable, "-m", "pytest", "-q", str(ROOT / "tests" / "test_fp4_gemm.py")], env=env)
    return rc


if __name__ == "__main__":
    sys.exit(main())
