"""Kernel-only times of fp4_gemm under Nsight Compute (no MLX dispatch overhead):
    ncu --clock-control none -k regex:fp4_gemm --metrics gpu__time_duration.sum python3 benchmarks/ncu_gemm_cuda.py
"""
import mlx.core as mx
import numpy as np

import mlx_marlin as mm

K, N, g = 4096, 14336, 64
rng = np.random.default_rng(0)
p, s = mm.quantize(mx.array(rng.standard_normal((N, K)).astype(np.float32) * 0.02), group_size=g,
                   scale_dtype=mx.bfloat16)
for M in (1, 16, 2048):
    x = mx.array(rng.standard_normal((M, K)).astype(np.float32)).astype(mx.bfloat16)
    for _ in range(3):
        mx.eval(mm.fp4_gemm(x, p, s, group_size=g, stream=mx.gpu))
    mx.synchronize()
