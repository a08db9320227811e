"""dense_linear (the unquantized layers: output heads, tied embeddings, routers) against
MLX's own dense matmul (`x @ w.T`, what nn.Linear runs) and numpy, side by side in one
run, plus the floors.  (A whole decode step with the head on each:
benchmarks/bench_decode_cpu.py.)

    python benchmarks/bench_dense_linear.py [--device cpu|gpu] [--shapes 1x32000x2048 ...]
        [--dtype bfloat16] [--slow-budget 2] [--affine 4|8]

With --affine, affine_linear (layers left in MLX's affine quantization) against
mx.quantized_matmul instead.

M x N x K: x [M, K] @ w[N, K].T.  Defaults: heads of Llama-2-7B-sized vocabularies at
two widths (32000 x 2048, 32000 x 4096), Llama-3.2-1B's tied head (128256 x 2048),
Qwen2.5-0.5B's (151936 x 896), a router (64 x 2048), and 8 and 128 rows (speculative
decoding, a prefill chunk / perplexity evaluation).  Floors: weight bytes over the
measured read bandwidth, and 2*M*N*K over numpy's float32 matmul rate.
"""

from __future__ import annotations

import argparse
import os
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mlx_marlin as mm  # noqa: E402
from common import hardware, read_bandwidth_gbs, time_fn  # noqa: E402

DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}


def op_table(args, bandwidth):
    dtype = DTYPES[args.dtype]
    print("| M x N x K | dense_linear (ms) | MLX x @ w.T (ms) | speed-up | numpy fp32 (ms) | weight floor (ms) | "
          "vs floor | GFLOP/s | max |diff| / max |ref| |")
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        M, N, K = (int(v) for v in shape.split("x"))
        w = mx.array(rng.standard_normal((N, K), dtype=np.float32) * K**-0.5).astype(dtype)
        x = mx.array(rng.standard_normal((M, K), dtype=np.float32)).astype(dtype)
        mx.eval(w, x)
        ours = time_fn(lambda: mx.eval(mm.dense_linear(x, w)))
        theirs = time_fn(lambda: mx.eval(x @ w.T), budget_s=args.slow_budget, min_reps=1)
        w32, x32 = np.array(w.astype(mx.float32)), np.array(x.astype(mx.float32))
        npy = time_fn(lambda: x32 @ w32.T)
        ref = x32.astype(np.float64) @ w32.T.astype(np.float64)
        diff = float(np.abs(np.array(mm.dense_linear(x, w).astype(mx.float32)) - ref).max() / np.abs(ref).max())
        floor = w.nbytes / (bandwidth * 1e9) if bandwidth == bandwidth else float("nan")
        print(f"| {shape} | {ours * 1e3:.2f} | {theirs * 1e3:.1f} | {theirs / ours:.1f}x | {npy * 1e3:.2f} | "
              f"{floor * 1e3:.2f} | {ours / floor:.2f}x | {2 * M * N * K / ours / 1e9:.0f} | {diff:.2g} |")


def affine_table(args, bandwidth):
    """affine_linear against mx.quantized_matmul (what nn.QuantizedLinear runs) on MLX
    affine weights of `--affine` bits, group size 64."""
    dtype, bits, group_size = DTYPES[args.dtype], args.affine, 64
    print(f"| M x N x K ({bits}-bit, group {group_size}) | affine_linear (ms) | MLX quantized_matmul (ms) | speed-up | "
          "weight floor (ms) | vs floor | max |diff| / max |ref| (ours, MLX) |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        M, N, K = (int(v) for v in shape.split("x"))
        w, scales, biases = mx.quantize(mx.array(rng.standard_normal((N, K), dtype=np.float32) * K**-0.5).astype(dtype),
                                        group_size=group_size, bits=bits)
        x = mx.array(rng.standard_normal((M, K), dtype=np.float32)).astype(dtype)
        mx.eval(w, scales, biases, x)
        ours = time_fn(lambda: mx.eval(mm.affine_linear(x, w, scales, biases, group_size=group_size, bits=bits)))
        theirs = time_fn(lambda: mx.eval(mx.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits)),
                         budget_s=args.slow_budget, min_reps=1)
        wd = np.array(mx.dequantize(w, scales, biases, group_size=group_size, bits=bits, dtype=mx.float32))
        ref = np.array(x.astype(mx.float32)).astype(np.float64) @ wd.T.astype(np.float64)

        def diff(y):
            return float(np.abs(np.array(y.astype(mx.float32)) - ref).max() / np.abs(ref).max())

        nbytes = w.nbytes + scales.nbytes + biases.nbytes
        floor = nbytes / (bandwidth * 1e9) if bandwidth == bandwidth else float("nan")
        d_ours = diff(mm.affine_linear(x, w, scales, biases, group_size=group_size, bits=bits))
        d_mlx = diff(mx.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits))
        print(f"| {shape} | {ours * 1e3:.2f} | {theirs * 1e3:.1f} | {theirs / ours:.0f}x | {floor * 1e3:.2f} | "
              f"{ours / floor:.2f}x | {d_ours:.2g}, {d_mlx:.2g} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--shapes", nargs="+", default=["1x32000x2048", "1x32000x4096", "1x128256x2048",
                                                    "1x151936x896", "1x64x2048", "8x32000x2048", "128x32000x2048"])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--slow-budget", type=float, default=2.0, help="seconds per MLX matmul measurement")
    ap.add_argument("--affine", type=int, choices=[4, 8], default=None,
                    help="time affine_linear against mx.quantized_matmul on MLX affine weights of these bits "
                         "instead (e.g. --shapes 1x4096x2880 1x512x2880 1x2880x4096 1x32000x2880: gpt-oss-20b's "
                         "attention projections, a head)")
    args = ap.parse_args()
    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    bandwidth = read_bandwidth_gbs() if args.device == "cpu" else float("nan")
    print(f"# hardware: {hardware()}, mlx_marlin CPU kernels: {mm._ext._cpu_isa()}")
    print(f"# command: python benchmarks/bench_dense_linear.py --device {args.device} --dtype {args.dtype} "
          f"--shapes {' '.join(args.shapes)}" + (f" --affine {args.affine}" if args.affine else ""))
    print(f"# read bandwidth: {bandwidth:.1f} GB/s; load average at start: {os.getloadavg()[0]:.1f}")
    (affine_table if args.affine else op_table)(args, bandwidth)


if __name__ == "__main__":
    main()
