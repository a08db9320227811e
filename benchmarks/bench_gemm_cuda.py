"""fp4_gemm vs MLX's own GPU matmuls on the CUDA backend.

For each M: fp4_gemm (bf16 and f16 activations), bf16 dense ``x @ w.T``, and
``mx.quantized_matmul`` in mxfp4 / nvfp4 / affine (4-bit, group 64).  Each timing is
the median over `--reps` repetitions of (R calls evaluated together, then
``mx.synchronize()``) / R, rotating over several weight sets so the 50 MB L2 does not
hold the weights between calls.  MLX's CUDA backend sends the GPU a graph of 20 ops at a
time, so with R = 40 the GPU idles while the host records the first graph: the time per
op is about (20 x host time + 40 x kernel time) / 40.  ``--calls 400`` measures the
steady state of a long chain of ops (a model's forward pass), where recording overlaps
the kernels and each op costs about max(host time, kernel time).

    python benchmarks/bench_gemm_cuda.py --json out.json
"""

import argparse
import json
import os
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import batched_op_time  # noqa: E402

import mlx_marlin as mm  # noqa: E402


CALLS = 40


def bench(fn, inputs, reps=15, warmup=3):
    return batched_op_time(fn, inputs, CALLS, reps, warmup)


def main():
    global CALLS
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=4096)
    ap.add_argument("--N", type=int, default=14336)
    ap.add_argument("--M", type=str, default="1,16,2048")
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--sets", type=int, default=4)
    ap.add_argument("--calls", type=int, default=CALLS, help="ops evaluated together per timing")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    CALLS = args.calls
    K, N, g = args.K, args.N, args.group
    mx.set_default_device(mx.gpu)
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(args.sets):
        wf = mx.array(rng.standard_normal((N, K)).astype(np.float32) * 0.02)
        p, s = mm.quantize(wf, group_size=g, scale_dtype=mx.bfloat16)
        wb = wf.astype(mx.bfloat16)
        q = {}
        for mode, kw in (("mxfp4", dict(group_size=32, bits=4)), ("nvfp4", dict(group_size=16, bits=4)),
                         ("affine", dict(group_size=64, bits=4))):
            try:
                q[mode] = mx.quantize(wb, mode=mode, **kw)
            except Exception as e:  # noqa: BLE001
                q[mode] = e
        mx.eval(p, s, wb, *[v for v in q.values() if isinstance(v, (tuple, list))])
        sets.append((p, s, wb, q))
        del wf
    rows = []
    for M in [int(m) for m in args.M.split(",")]:
        xb = mx.array(rng.standard_normal((M, K)).astype(np.float32)).astype(mx.bfloat16)
        xh = xb.astype(mx.float16)
        mx.eval(xb, xh)
        res = {"M": M, "N": N, "K": K, "calls": CALLS}
        res["fp4_gemm_bf16"] = bench(lambda p, s: mm.fp4_gemm(xb, p, s, group_size=g), [(p, s) for p, s, _, _ in sets])
        if M > 16:  # both large-M routes, forced (gemm_plan.h: cuda_gemm_via_dense)
            for route in ("kernel", "dense"):
                os.environ["MLX_MARLIN_CUDA_PREFILL"] = route
                res[f"fp4_gemm_bf16_{route}"] = bench(lambda p, s: mm.fp4_gemm(xb, p, s, group_size=g),
                                                      [(p, s) for p, s, _, _ in sets])
            del os.environ["MLX_MARLIN_CUDA_PREFILL"]
            res["fp4_dequantize_bf16"] = bench(
                lambda p, s: mm._ext.fp4_dequantize(p, s, group_size=g, dtype=mx.bfloat16),
                [(p, s) for p, s, _, _ in sets])
        if M == 1:  # both decode kernels forced: the one-token kernel, fp4_gemv (its plan's variant 2)
            for name, v in (("token", "token"), ("gemv", "2")):
                os.environ["MLX_MARLIN_CUDA_DECODE"] = v
                res[f"fp4_gemm_bf16_{name}"] = bench(lambda p, s: mm.fp4_gemm(xb, p, s, group_size=g),
                                                     [(p, s) for p, s, _, _ in sets])
            del os.environ["MLX_MARLIN_CUDA_DECODE"]
            res["add_one"] = bench(lambda: xb + 1, [()])  # the per-op floor of this timing
        res["fp4_gemm_f16"] = bench(lambda p, s: mm.fp4_gemm(xh, p, s, group_size=g),
                                    [(p, s.astype(mx.float16)) for p, s, _, _ in sets])
        res["dense_bf16"] = bench(lambda wb: xb @ wb.T, [(wb,) for _, _, wb, _ in sets])
        for mode, kw in (("mxfp4", dict(group_size=32, bits=4)), ("nvfp4", dict(group_size=16, bits=4)),
                         ("affine", dict(group_size=64, bits=4))):
            qs = [q[mode] for _, _, _, q in sets]
            if isinstance(qs[0], Exception):
                res[f"qmm_{mode}"] = str(qs[0])[:80]
                continue

            def f(*t, mode=mode, kw=kw):
                if mode == "affine":
                    return mx.quantized_matmul(xb, t[0], t[1], t[2], transpose=True, mode=mode, **kw)
                return mx.quantized_matmul(xb, t[0], t[1], transpose=True, mode=mode, **kw)

            try:
                res[f"qmm_{mode}"] = bench(f, [tuple(t) for t in qs])
            except Exception as e:  # noqa: BLE001
                res[f"qmm_{mode}"] = str(e)[:80]
        w_bytes = K * N // 2 + (K // g) * N * 2
        res["fp4_bytes"] = w_bytes + M * K * 2 + M * N * 2
        res["flops"] = 2 * M * N * K
        rows.append(res)
        t = res["fp4_gemm_bf16"][0]
        print(f"M={M}: fp4_gemm bf16 {t:.4f} ms ({res['fp4_bytes'] / t / 1e6:.0f} GB/s, "
              f"{res['flops'] / t / 1e9:.1f} TFLOP/s) | " +
              " | ".join(f"{k} {v[0]:.4f}" if isinstance(v, tuple) else f"{k} {v}" for k, v in res.items()
                         if k not in ("M", "N", "K", "calls", "fp4_gemm_bf16", "fp4_bytes", "flops")), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
