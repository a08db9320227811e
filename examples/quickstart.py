"""Quantize one linear layer to FP4, run fp4_gemm, and compare error and speed with
MLX's own mxfp4 quantized matmul.

    python examples/quickstart.py [--n 4096] [--k 4096] [--m 1]
"""

import argparse
import time

import mlx.core as mx
import numpy as np

import mlx_marlin as mm


def timed(fn, reps=10):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--group-size", type=int, default=32)
    args = p.parse_args()
    m, n, k, g = args.m, args.n, args.k, args.group_size

    rng = np.random.default_rng(0)
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32) * 0.02)  # an nn.Linear weight [N, K]
    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(mx.float16)

    packed, scales = mm.quantize(w, group_size=g)  # [K/8, N] uint32, [K/g, N] float16
    y = mm.fp4_gemm(x, packed, scales, group_size=g, stream=mx.cpu)

    exact = np.array(x.astype(mx.float32)).astype(np.float64) @ np.array(w).astype(np.float64).T
    wq, s = mx.quantize(w, mode="mxfp4")
    y_mx = mx.quantized_matmul(x, wq, s, transpose=True, mode="mxfp4", stream=mx.cpu)

    def rel(a):
        return np.linalg.norm(np.array(a.astype(mx.float32)) - exact) / np.linalg.norm(exact)

    print(f"layer {n}x{k}, {m} row(s), float16 activations, CPU kernels: {mm._ext._cpu_isa()}")
    print(f"relative error vs full precision: mlx_marlin fp4 (group {g}) {rel(y):.4f}   mx mxfp4 {rel(y_mx):.4f}")
    t_ours = timed(lambda: mx.eval(mm.fp4_gemm(x, packed, scales, group_size=g, stream=mx.cpu)))
    t_mx = timed(lambda: mx.eval(mx.quantized_matmul(x, wq, s, transpose=True, mode="mxfp4", stream=mx.cpu)), reps=2)
    print(f"time: mlx_marlin.fp4_gemm {t_ours * 1e3:.3f} ms   mx.quantized_matmul(mxfp4) {t_mx * 1e3:.3f} ms"
          f"   -> {t_mx / t_ours:.0f}x faster")


if __name__ == "__main__":
    main()
