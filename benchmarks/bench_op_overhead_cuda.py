"""Per-op cost of tiny ops on MLX's CUDA backend: what an op pays beyond its kernel.

Times R independent tiny ops evaluated together (as bench_gemm_cuda.py does) and R
dependent ones (a chain), for MLX's own ops and for ours, so the fixed per-op cost of
fp4_gemm's path (allocation, graph node) can be compared with MLX's.

    python benchmarks/bench_op_overhead_cuda.py
"""

import os
import statistics
import time

import mlx.core as mx
import numpy as np

import mlx_marlin as mm


def timed(fn, calls=40, reps=15):
    for _ in range(3):
        fn(calls)
        mx.synchronize()
    ts = []
    for _ in range(reps):
        mx.synchronize()
        t0 = time.perf_counter()
        fn(calls)
        mx.synchronize()
        ts.append((time.perf_counter() - t0) / calls)
    return statistics.median(ts) * 1e6


def main():
    mx.set_default_device(mx.gpu)
    rng = np.random.default_rng(0)
    a = mx.array(rng.standard_normal((1, 64)).astype(np.float32)).astype(mx.bfloat16)
    w = mx.array(rng.standard_normal((64, 64)).astype(np.float32))
    p, s = mm.quantize(w, group_size=32, scale_dtype=mx.bfloat16)
    wb = w.astype(mx.bfloat16)
    mx.eval(a, p, s, wb)

    def independent(op):
        return lambda n: mx.eval([op(a) for _ in range(n)])

    def chain(op):
        def run(n):
            y = a
            for _ in range(n):
                y = op(y)
            mx.eval(y)
        return run

    ops = {
        "mx add (elementwise)": lambda x: x + 1,
        "mx matmul 1x64x64 bf16": lambda x: x @ wb.T,
        "mm.fp4_gemm 1x64x64 bf16": lambda x: mm.fp4_gemm(x, p, s, group_size=32),
        "mm.fp4_dequantize 64x64": lambda x: mm._ext.fp4_dequantize(p, s, group_size=32, dtype=mx.bfloat16),
    }
    print(f"{'op':44s} {'independent us/op':>18s} {'chained us/op':>14s}")
    for name, op in ops.items():
        # MLX_MARLIN_CUDA_ALLOC: where our ops' outputs come from (cpp/cuda/cuda_host.cpp)
        for alloc in (("pool", "mlx") if name.startswith("mm.") else ("-",)):
            os.environ["MLX_MARLIN_CUDA_ALLOC"] = alloc
            ind = timed(independent(op))
            ch = timed(chain(op)) if "dequantize" not in name else float("nan")
            print(f"{name + ' [' + alloc + ']':44s} {ind:18.2f} {ch:14.2f}", flush=True)
        os.environ.pop("MLX_MARLIN_CUDA_ALLOC", None)


if __name__ == "__main__":
    main()
