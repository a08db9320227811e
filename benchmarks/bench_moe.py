"""Benchmark the fused MoE ops against MLX's gather_qmm, side by side in one process.

    python benchmarks/bench_moe.py [--device cpu|gpu] [--tokens 1 64 512] [--experts 64]
                                   [--top-k 8] [--hidden 2048] [--inter 1408] [--dtype float32]

    # Apple GPU (a Metal build of MLX): the Metal kernels of moe_gemm / moe_mlp against
    # mx.gather_qmm on the GPU, in bfloat16 activations
    python benchmarks/bench_moe.py --device gpu --dtype bfloat16 --tokens 1 16 128 512

moe_gemm: one expert projection x [T, K] -> [T, k, N] (K=hidden, N=inter), against
``mx.gather_qmm`` with mxfp4 (group 32) and affine 4-bit (group 64) weights, with
unsorted indices (x [T, 1, 1, K], indices [T, k]) and with sorted indices (the
(token, slot) rows argsorted by expert inside the timed function, as mlx-lm's
SwitchGLU does, then ``sorted_indices=True``).

moe_mlp: routing + gate/up/down + SiLU gating + weighted combine -> [T, hidden],
against the same pipeline spelled with mx.argpartition/softmax and three
gather_qmm calls (SwitchGLU style).

Weights are random packed words (every 4-bit code is a valid E2M1 / affine value), so
no time is spent quantizing.  Everything runs on --device (default cpu): mx.cpu, or
mx.gpu for every op of both sides (the mlx_marlin ops run their Metal kernels there:
moe_gemm always, moe_mlp for E <= 256; mlx_marlin._ext._gpu_ops() lists the ops with
GPU kernels in the build, and the script refuses --device gpu when they are missing).
Time per call is the median of repetitions after one warm-up, each ending in mx.eval
(which waits for the GPU); slow configurations get fewer repetitions.  The last
column is the weight-read floor: the bytes of the experts the call touches (each
distinct chosen expert's packed words + scales, read once) over --bandwidth.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mlx_marlin as mm  # noqa: E402


def hardware(device: str) -> str:
    if device == "gpu":
        info = mx.metal.device_info() if mx.metal.is_available() else {}
        name = info.get("device_name", "?")
        mem = info.get("memory_size", 0) / 2**30
        return f"{name} GPU ({mem:.0f} GiB unified memory), {platform.machine()}, mlx_marlin backend: Metal"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    return f"{model}, {os.cpu_count()} logical CPUs visible, kernels: {mm._ext._cpu_isa()}"


def timeit(fn, budget_s: float = 3.0, max_reps: int = 20) -> tuple[float, int]:
    mx.eval(fn())  # warm-up
    t0 = time.perf_counter()
    mx.eval(fn())
    first = time.perf_counter() - t0
    reps = int(max(1, min(max_reps, budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def rand_words(rng, shape) -> mx.array:
    return mx.array(rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32))


class Weights:
    """One expert projection [E, N, K] in the three layouts."""

    def __init__(self, rng, E: int, N: int, K: int):
        s = 1.0 / np.sqrt(K) / 3.0
        # mlx_marlin: [E, K/8, N] words, [E, K/32, N] bf16 scales (group 32 = mxfp4's group).
        self.marlin = (rand_words(rng, (E, K // 8, N)),
                       mx.array(rng.uniform(0.5 * s, s, (E, K // 32, N)).astype(np.float32)).astype(mx.bfloat16))
        # mxfp4: [E, N, K/8] words, [E, N, K/32] uint8 E8M0 scales (2^-8 .. 2^-6).
        self.mxfp4 = (rand_words(rng, (E, N, K // 8)), mx.array(rng.integers(119, 122, (E, N, K // 32)).astype(np.uint8)))
        # affine 4-bit, group 64: [E, N, K/8] words, scales and biases [E, N, K/64].
        sc = mx.array(rng.uniform(0.5 * s, s, (E, N, K // 64)).astype(np.float32)).astype(mx.bfloat16)
        self.affine = (rand_words(rng, (E, N, K // 8)), sc, (-8.0 * sc).astype(mx.bfloat16))
        mx.eval(self.marlin, self.mxfp4, self.affine)


def gqmm(x, w: Weights, mode: str, idx, sorted_indices: bool):
    if mode == "mxfp4":
        wq, sc = w.mxfp4
        return mx.gather_qmm(x, wq, sc, None, rhs_indices=idx, transpose=True, group_size=32, bits=4, mode="mxfp4",
                             sorted_indices=sorted_indices)
    wq, sc, b = w.affine
    return mx.gather_qmm(x, wq, sc, b, rhs_indices=idx, transpose=True, group_size=64, bits=4, mode="affine",
                         sorted_indices=sorted_indices)


def gather_gemm(x, w: Weights, mode: str, idx, sort: bool):
    T, k = idx.shape
    if not sort:
        return gqmm(x[:, None, None, :], w, mode, idx, False)  # [T, k, 1, N]
    flat = idx.flatten()
    order = mx.argsort(flat)
    xs = x[order // k][:, None, :]  # [T*k, 1, K]
    y = gqmm(xs, w, mode, flat[order], True)
    inv = mx.argsort(order)
    return y[inv].reshape(T, k, -1)


def gather_mlp(x, logits, gate: Weights, up: Weights, down: Weights, k: int, mode: str, sort: bool):
    """SwitchGLU-style reference pipeline built from MLX ops."""
    T = x.shape[0]
    idx = mx.stop_gradient(mx.argpartition(-logits, kth=k - 1, axis=-1)[:, :k])
    p = mx.softmax(logits.astype(mx.float32), axis=-1)
    w = mx.take_along_axis(p, idx, axis=-1)
    w = w / w.sum(-1, keepdims=True)
    if sort:
        flat = idx.flatten()
        order = mx.argsort(flat)
        fi = flat[order]
        xs = x[order // k][:, None, :]
        h = mx.sigmoid(g := gqmm(xs, gate, mode, fi, True)) * g * gqmm(xs, up, mode, fi, True)
        y = gqmm(h, down, mode, fi, True)
        y = y[mx.argsort(order)].reshape(T, k, -1)
    else:
        xe = x[:, None, None, :]
        g = gqmm(xe, gate, mode, idx, False)
        h = mx.sigmoid(g) * g * gqmm(xe, up, mode, idx, False)  # [T, k, 1, I]
        y = gqmm(h, down, mode, idx, False).squeeze(-2)
    return (y * w[..., None].astype(y.dtype)).sum(axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 64, 512])
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=1408)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per cell (at least one call)")
    ap.add_argument("--skip-mlp", action="store_true")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                    help="where every op runs (gpu: the Metal kernels, on a Mac with a Metal build of MLX)")
    ap.add_argument("--bandwidth", type=float, default=None,
                    help="memory bandwidth in GB/s for the weight-read floor column (omitted when not given)")
    args = ap.parse_args()
    if args.device == "gpu":
        missing = {"moe_gemm", "moe_mlp"} - set(mm._ext._gpu_ops())
        if not mx.metal.is_available() or missing:
            sys.exit(f"--device gpu needs a Metal GPU and mlx_marlin's GPU kernels (missing: {sorted(missing) or '-'}; "
                     f"Metal available: {mx.metal.is_available()})")
    stream = mx.gpu if args.device == "gpu" else mx.cpu
    mx.set_default_device(stream)
    dtype = getattr(mx, args.dtype)
    E, k, H, I = args.experts, args.top_k, args.hidden, args.inter
    rng = np.random.default_rng(0)
    gate = Weights(rng, E, I, H)
    up = Weights(rng, E, I, H) if not args.skip_mlp else None
    down = Weights(rng, E, H, I) if not args.skip_mlp else None

    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# hardware: {hardware(args.device)}; mlx {mx.__version__}; stream {stream}; threads: "
          f"MLX_MARLIN_NUM_THREADS={os.environ.get('MLX_MARLIN_NUM_THREADS', 'all')}")
    print(f"# E={E} k={k} K={H} N={I} x dtype={args.dtype}; ms per call (median, reps in parentheses)")
    cols = ["mlx_marlin", "mxfp4 unsorted", "mxfp4 sorted", "affine4 unsorted", "affine4 sorted"]
    floor_col = [] if args.bandwidth is None else [f"weight-read floor at {args.bandwidth:g} GB/s (ms)"]
    for op in ["moe_gemm"] + ([] if args.skip_mlp else ["moe_mlp"]):
        print(f"\n{op} | T | " + " | ".join(cols + ["speedup vs best gather_qmm"] + floor_col))
        print("---|---|" + "---|" * (len(cols) + len(floor_col)) + "---")
        for T in args.tokens:
            x = mx.array(rng.standard_normal((T, H)).astype(np.float32)).astype(dtype)
            logits = mx.array(rng.standard_normal((T, E)).astype(np.float32))
            idx = mx.array(np.stack([rng.choice(E, k, replace=False) for _ in range(T)]).astype(np.uint32))
            mx.eval(x, logits, idx)
            if op == "moe_gemm":
                fns = [lambda: mm.moe_gemm(x, *gate.marlin, idx, group_size=32, stream=stream)]
                for mode in ("mxfp4", "affine"):
                    for sort in (False, True):
                        fns.append(lambda mode=mode, sort=sort: gather_gemm(x, gate, mode, idx, sort))
            else:
                fns = [lambda: mm.moe_mlp(x, logits, *gate.marlin, *up.marlin, *down.marlin, top_k=k, group_size=32,
                                          stream=stream)]
                for mode in ("mxfp4", "affine"):
                    for sort in (False, True):
                        fns.append(lambda mode=mode, sort=sort: gather_mlp(x, logits, gate, up, down, k, mode, sort))
            res = [timeit(f, args.budget) for f in fns]
            cells = [f"{t * 1e3:.2f} ({n})" for t, n in res]
            best = min(t for t, _ in res[1:])
            floor = []
            if args.bandwidth is not None:
                # Experts the call touches: moe_gemm reads gate's, moe_mlp gate + up + down of the
                # experts routing picks (the top-k of the logits; each read once).
                touched = len(np.unique(np.array(idx))) if op == "moe_gemm" else \
                    len(np.unique(np.argsort(-np.array(logits), axis=-1)[:, :k]))
                per_expert = sum(a.nbytes for a in gate.marlin) / E
                if op == "moe_mlp":
                    per_expert += (sum(a.nbytes for a in up.marlin) + sum(a.nbytes for a in down.marlin)) / E
                floor = [f"{touched * per_expert / (args.bandwidth * 1e9) * 1e3:.3f}"]
            print(f"{op} | {T} | " + " | ".join(cells + [f"{best / res[0][0]:.2f}x"] + floor), flush=True)


if __name__ == "__main__":
    main()
