"""Kernel-only times of the CUDA MoE pipeline under Nsight Compute (no MLX dispatch):
    ncu --clock-control none -k regex:moe_ --metrics gpu__time_duration.sum,dram__bytes_read.sum \
        python3 benchmarks/ncu_moe_cuda.py
One call per (op, T) after a warm-up outside the profiled range is not possible with
ncu's kernel filter, so every launch is profiled; the script prints the launch order:
moe_gemm = group, gemm; weighted moe_gemm = group, gemm, combine; moe_mlp = route,
group, gemm (gate/up, GLU epilogue), gemm (down), combine.
"""
import sys

import mlx.core as mx
import numpy as np

import mlx_marlin as mm

E, k, H, I, g = 64, 8, 2048, 1408, 32
rng = np.random.default_rng(0)


def bits(*shape):
    half = lambda: mx.random.randint(0, 1 << 16, shape, dtype=mx.uint32)  # noqa: E731
    return (half() << 16) | half()


def weights(N, K):
    s = 1.0 / np.sqrt(K) / 3
    return (bits(E, K // 8, N),
            mx.random.uniform(0.5 * s, s, (E, K // g, N)).astype(mx.bfloat16))


wg, wu, wd = weights(I, H), weights(I, H), weights(H, I)
tokens = [int(t) for t in sys.argv[1:]] or [1, 64, 512]
for T in tokens:
    x = mx.array(rng.standard_normal((T, H)).astype(np.float32)).astype(mx.bfloat16)
    logits = mx.array(rng.standard_normal((T, E)).astype(np.float32))
    idx = mx.array(np.stack([rng.choice(E, k, replace=False) for _ in range(T)]).astype(np.uint32))
    w = mx.array(rng.random((T, k)).astype(np.float32))
    mx.eval(x, logits, idx, w, wg, wu, wd)
    print(f"T={T}: moe_gemm", flush=True)
    mx.eval(mm.moe_gemm(x, *wg, idx, group_size=g, stream=mx.gpu))
    mx.synchronize()
    print(f"T={T}: moe_gemm weighted", flush=True)
    mx.eval(mm.moe_gemm(x, *wg, idx, group_size=g, weights=w, stream=mx.gpu))
    mx.synchronize()
    print(f"T={T}: moe_mlp", flush=True)
    mx.eval(mm.moe_mlp(x, logits, *wg, *wu, *wd, top_k=k, group_size=g, stream=mx.gpu))
    mx.synchronize()
