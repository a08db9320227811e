"""Shared helpers for the benchmark scripts: timing, hardware description, floors."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, MLX {mx.__version__}, device {mx.default_device()}"


def time_fn(fn, *, min_reps: int = 3, budget_s: float = 2.0, max_reps: int = 50) -> float:
    """Median seconds of fn() after one warm-up; fewer repetitions for slow functions."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    reps = max(1, min(max_reps, int(budget_s / max(first, 1e-6))))
    if first > budget_s:
        return first
    reps = max(reps, min_reps)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def read_bandwidth_gbs(nbytes: int = 512 << 20, threads: int | None = None) -> float:
    """Memory read bandwidth: every core sums its share of a buffer far larger than cache."""
    threads = threads or os.cpu_count() or 1
    a = np.ones(nbytes // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, parts))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9


def batched_op_time(fn, inputs, calls: int, reps: int, warmup: int = 3) -> tuple[float, float]:
    """GPU op timing: (median, max - min) in ms per call of `reps` repetitions of `calls`
    calls evaluated together then synchronized, rotating over `inputs` (argument tuples,
    e.g. several weight sets so the L2 cache does not hold them between calls)."""
    n = len(inputs)
    for _ in range(warmup):
        mx.eval([fn(*inputs[i % n]) for i in range(calls)])
        mx.synchronize()
    ts = []
    for _ in range(reps):
        mx.synchronize()
        t0 = time.perf_counter()
        mx.eval([fn(*inputs[i % n]) for i in range(calls)])
        mx.synchronize()
        ts.append((time.perf_counter() - t0) / calls)
    return float(np.median(ts)) * 1e3, (max(ts) - min(ts)) * 1e3
