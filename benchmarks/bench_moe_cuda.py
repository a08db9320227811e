"""The fused MoE ops on MLX's CUDA backend, side by side with MLX's gather_qmm.

    python benchmarks/bench_moe_cuda.py [--tokens 1 64 512] [--json out.json]

moe_gemm: one expert projection x [T, K] -> [T, k, N] (K = hidden, N = inter), against
``mx.gather_qmm`` with mxfp4 weights (group 32) and affine 4-bit (group 64), with
unsorted indices (x [T, 1, 1, K], indices [T, k]) and sorted ones (rows argsorted by
expert inside the timed function, as mlx-lm's SwitchGLU does, then
``sorted_indices=True``).  moe_mlp: routing + gate/up + SiLU gating + down + weighted
combine -> [T, hidden], against the same pipeline spelled with MLX ops and three
gather_qmm calls (benchmarks/bench_moe.py has both compositions).

Weights are random packed words (every 4-bit code is a valid value) with mlx_marlin's
group 32 bf16 scales; x is bfloat16.  Each time is the median over --reps repetitions of
(--calls calls evaluated together, then mx.synchronize()) / calls, the calls rotating
over --sets weight sets (each set of one projection is ~100 MB, more than the 50 MB L2).
Before timing, the GPU results are checked against the CPU backend on a few tokens.
The floor column: the bytes of the expert weights the call must read (active experts
only) at the measured device copy bandwidth (--bw, TB/s, read + write bytes counted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import batched_op_time  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from bench_moe import gather_gemm, gather_mlp  # noqa: E402

import mlx_marlin as mm  # noqa: E402


class Weights:
    """One expert projection [E, N, K] in the layouts of bench_moe.Weights, drawn on the
    GPU (random words: every 4-bit code is a valid value)."""

    def __init__(self, E: int, N: int, K: int):
        s = 1.0 / np.sqrt(K) / 3.0
        def bits(*shape):
            half = lambda: mx.random.randint(0, 1 << 16, shape, dtype=mx.uint32)  # noqa: E731
            return (half() << 16) | half()
        self.marlin = (bits(E, K // 8, N), mx.random.uniform(0.5 * s, s, (E, K // 32, N)).astype(mx.bfloat16))
        self.mxfp4 = (bits(E, N, K // 8), mx.random.randint(119, 122, (E, N, K // 32)).astype(mx.uint8))
        sc = mx.random.uniform(0.5 * s, s, (E, N, K // 64)).astype(mx.bfloat16)
        self.affine = (bits(E, N, K // 8), sc, (-8.0 * sc).astype(mx.bfloat16))
        mx.eval(self.marlin, self.mxfp4, self.affine)


def bench(fn, inputs, calls, reps, warmup=2):
    return batched_op_time(fn, inputs, calls, reps, warmup)[0]


def rel(a, b):
    a = np.array(a.astype(mx.float32), dtype=np.float64)
    b = np.array(b.astype(mx.float32), dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def active_weight_bytes(idx, N, K, g=32):
    used = len(np.unique(np.array(idx)))
    return used * (K * N // 2 + (K // g) * N * 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 64, 512])
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=1408)
    ap.add_argument("--sets", type=int, default=2)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--bw", type=float, default=3.0, help="device copy bandwidth, TB/s, for the floor column")
    ap.add_argument("--skip-mlp", action="store_true")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"], help="cpu: a smoke test of the script")
    args = ap.parse_args()
    dev = mx.gpu if args.device == "gpu" else mx.cpu
    mx.set_default_device(dev)
    E, k, H, I = args.experts, args.top_k, args.hidden, args.inter
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(args.sets):
        gate = Weights(E, I, H)
        up = down = None
        if not args.skip_mlp:
            up, down = Weights(E, I, H), Weights(E, H, I)
        sets.append((gate, up, down))
    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# MLX {mx.__version__}, device {mx.default_device()}; E={E} k={k} hidden={H} inter={I}, x bf16, "
          f"mlx_marlin group 32 bf16 scales; ms per call (median of {args.reps} x {args.calls} calls, "
          f"{args.sets} weight sets)")
    rows = []
    cols = ["mlx_marlin", "mxfp4 unsorted", "mxfp4 sorted", "affine4 unsorted", "affine4 sorted"]
    for op in ["moe_gemm"] + ([] if args.skip_mlp else ["moe_mlp"]):
        print(f"\n{op} | T | " + " | ".join(cols) + " | floor | vs mxfp4 unsorted | vs best gather_qmm")
        print("---|---|" + "---|" * len(cols) + "---|---|---")
        for T in args.tokens:
            x = mx.array(rng.standard_normal((T, H)).astype(np.float32)).astype(mx.bfloat16)
            logits = mx.array(rng.standard_normal((T, E)).astype(np.float32))
            idx = mx.array(np.stack([rng.choice(E, k, replace=False) for _ in range(T)]).astype(np.uint32))
            mx.eval(x, logits, idx)
            res = {"op": op, "T": T, "E": E, "k": k, "hidden": H, "inter": I}
            # Correctness on the first tokens against the CPU backend.
            t8 = min(T, 8)
            g0, u0, d0 = sets[0]
            if op == "moe_gemm":
                a = mm.moe_gemm(x[:t8], *g0.marlin, idx[:t8], group_size=32, stream=dev)
                b = mm.moe_gemm(x[:t8], *g0.marlin, idx[:t8], group_size=32, stream=mx.cpu)
                res["rel_err_vs_cpu"] = rel(a, b)
                fns = [(lambda g, u, d: mm.moe_gemm(x, *g.marlin, idx, group_size=32))]
                for mode in ("mxfp4", "affine"):
                    for sort in (False, True):
                        fns.append(lambda g, u, d, mode=mode, sort=sort: gather_gemm(x, g, mode, idx, sort))
                floor_bytes = active_weight_bytes(idx, I, H)
            else:
                a = mm.moe_mlp(x[:t8], logits[:t8], *g0.marlin, *u0.marlin, *d0.marlin, top_k=k, group_size=32,
                               stream=dev)
                b = mm.moe_mlp(x[:t8], logits[:t8], *g0.marlin, *u0.marlin, *d0.marlin, top_k=k, group_size=32,
                               stream=mx.cpu)
                res["rel_err_vs_cpu"] = rel(a, b)
                fns = [(lambda g, u, d: mm.moe_mlp(x, logits, *g.marlin, *u.marlin, *d.marlin, top_k=k,
                                                   group_size=32))]
                for mode in ("mxfp4", "affine"):
                    for sort in (False, True):
                        fns.append(lambda g, u, d, mode=mode, sort=sort: gather_mlp(x, logits, g, u, d, k, mode, sort))
                routed = mx.argpartition(-logits, kth=k - 1, axis=-1)[:, :k]
                floor_bytes = 3 * active_weight_bytes(routed, I, H)
            times = []
            for f, name in zip(fns, cols):
                try:
                    times.append(bench(f, sets, args.calls, args.reps))
                except Exception as e:  # noqa: BLE001
                    times.append(float("nan"))
                    res[name + " error"] = str(e)[:100]
            for name, t in zip(cols, times):
                res[name] = t
            floor = floor_bytes / (args.bw * 1e12) * 1e3
            res["floor_ms"] = floor
            best = min(t for t in times[1:] if t == t)
            res["speedup_vs_mxfp4_unsorted"] = times[1] / times[0]
            res["speedup_vs_best_gather_qmm"] = best / times[0]
            rows.append(res)
            print(f"{op} | {T} | " + " | ".join(f"{t:.4f}" for t in times) +
                  f" | {floor:.4f} | {times[1] / times[0]:.2f}x | {best / times[0]:.2f}x"
                  f"   (rel err vs CPU {res['rel_err_vs_cpu']:.2e})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
