"""mlx_marlin.attention vs MLX's mx.fast.scaled_dot_product_attention on the CUDA backend.

Same process, same inputs, side by side: causal prefill (B=1, L = 1024 / 4096) and
decode (Lq = 1, Lk = 4096 / 16384), bf16, H = 32 query / 8 kv heads, D = 128 by default.
Each timing is the median over `--reps` repetitions of (R calls evaluated together,
then ``mx.synchronize()``) / R; decode rotates over several K/V sets so the 50 MB L2
does not keep them between calls.  Prefill is also given in TFLOP/s (4 * D flops per
visible (query, key) pair), decode in TB/s of K/V read.

    python benchmarks/bench_attention_cuda.py --json out.json [--configs default,4]

--configs: MLX_MARLIN_CUDA_ATTN values to time ours with ("default" = the plan's pick).
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


def bench(fn, inputs, calls, reps, warmup=3):
    return batched_op_time(fn, inputs, calls, reps, warmup)


def visible_pairs(Lq, Lk, causal):
    if not causal:
        return Lq * Lk
    lim = np.minimum(np.arange(Lq) + Lk - Lq + 1, Lk)
    return int(np.maximum(lim, 0).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--Hq", type=int, default=32)
    ap.add_argument("--Hkv", type=int, default=8)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--prefill", type=str, default="1024,4096")
    ap.add_argument("--decode", type=str, default="4096,16384")
    ap.add_argument("--dtype", type=str, default="bfloat16")
    ap.add_argument("--configs", type=str, default="default")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--decode-calls", type=int, default=40,
                    help="decode ops evaluated together (400: the steady state of a long chain, "
                         "benchmarks/bench_gemm_cuda.py explains)")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--ncu", action="store_true", help="run each op twice per case, no timing (under ncu)")
    args = ap.parse_args()
    mx.set_default_device(mx.gpu)
    dt = getattr(mx, args.dtype)
    Hq, Hkv, D = args.Hq, args.Hkv, args.D
    scale = D**-0.5
    rng = np.random.default_rng(0)

    def rand(shape):
        return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dt)

    cases = [("prefill", L, L, "causal") for L in map(int, filter(None, args.prefill.split(",")))]
    cases += [("decode", 1, L, None) for L in map(int, filter(None, args.decode.split(",")))]
    rows = []
    for kind, Lq, Lk, mask in cases:
        kv_bytes = 2 * Hkv * Lk * D * np.dtype(np.float16).itemsize
        sets = max(1, min(4, (200 << 20) // max(kv_bytes, 1))) if kind == "decode" else 1
        inputs = []
        for _ in range(sets):
            q, k, v = rand((1, Hq, Lq, D)), rand((1, Hkv, Lk, D)), rand((1, Hkv, Lk, D))
            mx.eval(q, k, v)
            inputs.append((q, k, v))
        calls = args.decode_calls if kind == "decode" else (10 if Lq >= 4096 else 20)
        if args.ncu:
            for cfg in args.configs.split(","):
                if cfg == "default":
                    os.environ.pop("MLX_MARLIN_CUDA_ATTN", None)
                else:
                    os.environ["MLX_MARLIN_CUDA_ATTN"] = cfg
                for _ in range(2):
                    mx.eval(mm.attention(*inputs[0], scale=scale, mask=mask))
                    mx.synchronize()
            os.environ.pop("MLX_MARLIN_CUDA_ATTN", None)
            for _ in range(2):
                mx.eval(mx.fast.scaled_dot_product_attention(*inputs[0], scale=scale, mask=mask))
                mx.synchronize()
            print(f"ncu case done: {kind} Lq={Lq} Lk={Lk}", flush=True)
            continue
        # Correctness on the benchmark's own inputs (against MLX, which is the reference here).
        q, k, v = inputs[0]
        ours = mm.attention(q, k, v, scale=scale, mask=mask)
        theirs = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        err = float(mx.max(mx.abs(ours.astype(mx.float32) - theirs.astype(mx.float32))).item())
        res = {"kind": kind, "B": 1, "Hq": Hq, "Hkv": Hkv, "D": D, "Lq": Lq, "Lk": Lk, "mask": mask,
               "dtype": args.dtype, "max_abs_diff_vs_sdpa": err}
        res["sdpa_ms"] = bench(lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask),
                               inputs, calls, args.reps)
        for cfg in args.configs.split(","):
            if cfg == "default":
                os.environ.pop("MLX_MARLIN_CUDA_ATTN", None)
            else:
                os.environ["MLX_MARLIN_CUDA_ATTN"] = cfg
            res[f"ours_ms[{cfg}]"] = bench(lambda q, k, v: mm.attention(q, k, v, scale=scale, mask=mask), inputs, calls,
                                           args.reps)
        os.environ.pop("MLX_MARLIN_CUDA_ATTN", None)
        flops = 4.0 * Hq * D * visible_pairs(Lq, Lk, mask == "causal")
        res["flops"] = flops
        res["kv_bytes"] = kv_bytes
        rows.append(res)

    if args.ncu:
        return
    # Per-op floor of the MLX CUDA path: a one-element add, timed the same way.
    one = mx.ones((1,), dt)
    mx.eval(one)
    noop = bench(lambda x: x + 1, [(one,)], 40, args.reps)
    print(f"device: {mx.default_device()}  MLX {mx.__version__}  dtype {args.dtype}  Hq/Hkv {Hq}/{Hkv}  D {D}")
    cfgs = args.configs.split(",")
    hdr = f"{'case':<22}{'sdpa ms':>10}" + "".join(f"{'ours[' + c + '] ms':>18}" for c in cfgs) + f"{'speedup':>9}{'ours':>14}{'sdpa':>14}{'maxdiff':>9}"
    print(hdr)
    for r in rows:
        ours = [r[f"ours_ms[{c}]"][0] for c in cfgs]
        best = ours[0]  # speedup and rates of the first --configs entry (the plan's pick by default)
        if r["kind"] == "prefill":
            rate = lambda ms: f"{r['flops'] / (ms * 1e-3) / 1e12:.0f} TFLOP/s"
        else:
            rate = lambda ms: f"{r['kv_bytes'] / (ms * 1e-3) / 1e12:.2f} TB/s"
        name = f"{r['kind']} Lq={r['Lq']} Lk={r['Lk']}"
        print(f"{name:<22}{r['sdpa_ms'][0]:>10.4f}" + "".join(f"{o:>18.4f}" for o in ours) +
              f"{r['sdpa_ms'][0] / best:>8.2f}x{rate(best):>14}{rate(r['sdpa_ms'][0]):>14}{r['max_abs_diff_vs_sdpa']:>9.1e}")
        r["speedup_vs_sdpa"] = r["sdpa_ms"][0] / best
    print(f"per-op floor (x + 1 on one element, same timing): {noop[0] * 1e3:.1f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(mx.default_device()), "mlx": mx.__version__, "noop_ms": noop, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
