"""Decode (M <= 16) fp4_gemm variants on the CUDA backend: op time per variant of the
Gemv kernel (MLX_MARLIN_CUDA_DECODE=<index>, or =mma for the older MmaDecode kernel).
Same timing method as bench_gemm_cuda.py (median of reps of 40 calls / 40, rotating
weight sets larger than L2).  With --ncu, only runs each (variant, M) 3 times for
`ncu -k regex:fp4_gem`.

    python benchmarks/bench_decode_cuda.py [--variants mma,0,1,2,3] [--M 1,4,16] [--ncu]
"""
import argparse
import os
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import mlx_marlin as mm  # noqa: E402
from bench_gemm_cuda import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=4096)
    ap.add_argument("--N", type=int, default=14336)
    ap.add_argument("--M", type=str, default="1,4,16")
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--variants", type=str, default="mma,0,1,2,3")
    ap.add_argument("--sets", type=int, default=4)
    ap.add_argument("--ncu", action="store_true")
    args = ap.parse_args()
    K, N, g = args.K, args.N, args.group
    mx.set_default_device(mx.gpu)
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(1 if args.ncu else args.sets):
        p, s = mm.quantize(mx.array(rng.standard_normal((N, K)).astype(np.float32) * 0.02), group_size=g,
                           scale_dtype=mx.bfloat16)
        mx.eval(p, s)
        sets.append((p, s))
    w_bytes = K * N // 2 + (K // g) * N * 2
    for v in args.variants.split(","):
        os.environ["MLX_MARLIN_CUDA_DECODE"] = v
        row = []
        for M in [int(m) for m in args.M.split(",")]:
            x = mx.array(rng.standard_normal((M, K)).astype(np.float32)).astype(mx.bfloat16)
            xh = x.astype(mx.float16)
            mx.eval(x, xh)
            if args.ncu:
                for _ in range(3):
                    mx.eval(mm.fp4_gemm(x, *sets[0], group_size=g))
                mx.synchronize()
                continue
            t, spread = bench(lambda p, s: mm.fp4_gemm(x, p, s, group_size=g), sets)
            th, _ = bench(lambda p, s: mm.fp4_gemm(xh, p, s, group_size=g),
                          [(p, s.astype(mx.float16)) for p, s in sets])
            row.append(f"M={M}: bf16 {t * 1e3:.1f} us (+-{spread * 1e3:.1f}, {w_bytes / t / 1e9:.2f} TB/s) f16 {th * 1e3:.1f} us")
        if row:
            print(f"variant {v}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
