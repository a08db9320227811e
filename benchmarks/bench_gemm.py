"""fp4_gemm against MLX's quantized and dense matmuls, side by side in one run.

    python benchmarks/bench_gemm.py                 # default device (CPU on Linux)
    python benchmarks/bench_gemm.py --device cpu --shapes 1x14336x4096 512x4096x4096

For each M x N x K: mlx_marlin.fp4_gemm (group 32, float16 activations),
mx.quantized_matmul in mxfp4 / nvfp4 / affine 4-bit, MLX dense matmul on the dequantized
weights, numpy float32 matmul on the dequantized weights, and the floors: weight bytes
over the measured read bandwidth, FLOPs over numpy's measured matmul rate.
"""

from __future__ import annotations

import argparse
import os
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import hardware, read_bandwidth_gbs, time_fn  # noqa: E402

import mlx_marlin as mm  # noqa: E402

DEFAULT_SHAPES = ["1x4096x4096", "1x14336x4096", "16x14336x4096", "128x4096x4096", "512x4096x4096"]


def bench_shape(m, n, k, stream, group_size, slow_budget, with_mlx_baselines):
    rng = np.random.default_rng(0)
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32) * 0.02)
    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(mx.float16)
    packed, scales = mm.quantize(w, group_size)
    mx.eval(packed, scales, x)
    row = {}
    row["fp4_gemm"] = time_fn(lambda: mx.eval(mm.fp4_gemm(x, packed, scales, group_size=group_size, stream=stream)))
    for mode, kw in (("mxfp4", dict(mode="mxfp4")), ("nvfp4", dict(mode="nvfp4")), ("affine4", dict(bits=4, group_size=64))):
        if not with_mlx_baselines:
            row[f"mx.qmm {mode}"] = float("nan")
            continue
        q = mx.quantize(w.astype(mx.float16), **kw)
        biases = q[2] if len(q) > 2 else None
        mx.eval(*q)

        def run(q=q, biases=biases, kw=kw):
            return mx.eval(mx.quantized_matmul(x, q[0], q[1], biases, transpose=True, stream=stream, **kw))

        row[f"mx.qmm {mode}"] = time_fn(run, budget_s=slow_budget)
    wd16 = mm.dequantize(packed, scales, group_size, dtype=mx.float16)
    mx.eval(wd16)
    row["mx dense fp16"] = (
        time_fn(lambda: mx.eval(mx.matmul(x, wd16.T, stream=stream)), budget_s=slow_budget)
        if with_mlx_baselines
        else float("nan")
    )
    xn = np.array(x.astype(mx.float32))
    wn = np.ascontiguousarray(np.array(mm.dequantize(packed, scales, group_size)).T)
    row["numpy fp32 (dequantized)"] = time_fn(lambda: xn @ wn)
    weight_bytes = packed.nbytes + scales.nbytes
    return row, weight_bytes


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "gpu"], default=None)
    p.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="MxNxK")
    p.add_argument("--group-size", type=int, default=32)
    p.add_argument("--slow-budget", type=float, default=3.0, help="seconds per slow baseline")
    p.add_argument(
        "--mlx-baseline-max-m",
        type=int,
        default=None,
        help="skip MLX's own matmuls above this M (default: 16 on the CPU, where one call takes minutes)",
    )
    args = p.parse_args()
    stream = {"cpu": mx.cpu, "gpu": mx.gpu, None: mx.default_device()}[args.device]
    mx.set_default_device(stream)
    print(f"# hardware: {hardware()}; stream {stream}; CPU kernels: {mm._ext._cpu_isa()}")
    bw = read_bandwidth_gbs()
    print(f"# measured read bandwidth: {bw:.1f} GB/s (numpy sums on every core)")
    print(f"# command: python {' '.join(sys.argv)}")
    print()
    header = None
    for shape in args.shapes:
        m, n, k = (int(v) for v in shape.split("x"))
        max_m = args.mlx_baseline_max_m
        if max_m is None:
            max_m = 16 if stream == mx.cpu or (isinstance(stream, mx.Device) and stream.type == mx.cpu) else 1 << 30
        row, weight_bytes = bench_shape(m, n, k, stream, args.group_size, args.slow_budget, m <= max_m)
        flops = 2 * m * n * k
        np_rate = flops / row["numpy fp32 (dequantized)"]
        floor = max(weight_bytes / (bw * 1e9), 0.0)
        if header is None:
            cols = list(row)
            header = "| M x N x K | " + " | ".join(f"{c} (ms)" for c in cols) + " | memory floor (ms) | fp4 vs mxfp4 | fp4 GFLOP/s | fp4 vs numpy |"
            print(header)
            print("|" + "---|" * (len(cols) + 5))
        t = row["fp4_gemm"]
        vs_mxfp4 = "-" if np.isnan(row["mx.qmm mxfp4"]) else f"{row['mx.qmm mxfp4'] / t:.0f}x"
        print(
            f"| {m}x{n}x{k} | "
            + " | ".join("skipped" if np.isnan(row[c]) else f"{row[c] * 1e3:.3f}" for c in cols)
            + f" | {floor * 1e3:.3f} | {vs_mxfp4} | {flops / t / 1e9:.0f} | "
            f"{(flops / t) / np_rate:.2f}x |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
