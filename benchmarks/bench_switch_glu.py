"""mlx-lm MoE expert layers as models ship them in MXFP4: mlx-lm's SwitchGLU on MLX's
mxfp4 experts (gather_qmm) against the same layer converted to MarlinSwitchGLU, side by
side in one process.

    python benchmarks/bench_switch_glu.py [--device cpu|gpu] [--tokens 1 8 64]
        [--experts 32] [--top-k 4] [--hidden 2880] [--inter 2880] [--activation swiglu_oai]

The defaults are one gpt-oss-20b MoE layer (32 experts, top-4, 2880 -> 2880 -> 2880,
expert biases, the clamped SwigluOAI activation) in bfloat16 activations; the experts
are MLX mxfp4 layers (random normal weights quantized by MLX), converted exactly by
MarlinSwitchGLU.from_switch_glu (group 32, bfloat16 scales).  Each token picks top-k
distinct experts at random.  Time per call is the median after one warm-up; the floor
column is the bytes of the distinct experts the call touches (packed words + scales +
biases of the three projections, read once) over the measured read bandwidth.
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


def build_layer(E: int, hidden: int, inter: int, activation: str, seed: int = 0):
    from mlx_lm.models.activations import SwigluOAI
    from mlx_lm.models.switch_layers import SwitchGLU, SwiGLU

    act = {"swiglu_oai": SwigluOAI(), "swiglu": SwiGLU()}[activation]
    mx.random.seed(seed)
    glu = SwitchGLU(hidden, inter, E, activation=act, bias=True)
    for name in ("gate_proj", "up_proj", "down_proj"):
        p = getattr(glu, name)
        p.weight = (mx.random.normal(p.weight.shape) * p.weight.shape[-1] ** -0.5).astype(mx.bfloat16)
        p.bias = (mx.random.normal(p.bias.shape) * 0.1).astype(mx.bfloat16)
        q = p.to_quantized(group_size=32, bits=4, mode="mxfp4")
        mx.eval(q.parameters())
        setattr(glu, name, q)
    marlin = mm.MarlinSwitchGLU.from_switch_glu(glu, group_size=32)
    mx.eval(marlin.parameters())
    return glu, marlin


def touched_bytes(marlin, idx: np.ndarray) -> int:
    experts = len(np.unique(idx))
    total = 0
    for name in ("gate_proj", "up_proj", "down_proj"):
        p = getattr(marlin, name)
        per_expert = (p.weight.nbytes + p.scales.nbytes + p.bias.nbytes) // p.num_experts
        total += experts * per_expert
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=2880)
    ap.add_argument("--inter", type=int, default=2880)
    ap.add_argument("--activation", choices=["swiglu_oai", "swiglu"], default="swiglu_oai")
    args = ap.parse_args()
    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    glu, marlin = build_layer(args.experts, args.hidden, args.inter, args.activation)
    bandwidth = read_bandwidth_gbs() if args.device == "cpu" else float("nan")
    print(f"# hardware: {hardware()}, mlx_marlin CPU kernels: {mm._ext._cpu_isa()}")
    print(f"# command: python benchmarks/bench_switch_glu.py --device {args.device} --tokens "
          f"{' '.join(map(str, args.tokens))} --experts {args.experts} --top-k {args.top_k} --hidden {args.hidden} "
          f"--inter {args.inter} --activation {args.activation}")
    print(f"# read bandwidth: {bandwidth:.1f} GB/s; load average at start: {os.getloadavg()[0]:.1f}")
    print("| T | MarlinSwitchGLU (ms) | mlx-lm SwitchGLU, mxfp4 gather_qmm (ms) | speed-up | weight floor (ms) | "
          "vs floor | max |diff| / max |ref| |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    for T in args.tokens:
        idx_np = np.stack([rng.choice(args.experts, args.top_k, replace=False) for _ in range(T)]).astype(np.uint32)
        idx = mx.array(idx_np)
        x = (mx.random.normal((T, args.hidden))).astype(mx.bfloat16)
        mx.eval(x, idx)
        ours = time_fn(lambda: mx.eval(marlin(x, idx)))
        theirs = time_fn(lambda: mx.eval(glu(x, idx)), budget_s=4.0)
        a, b = marlin(x, idx).astype(mx.float32), glu(x, idx).astype(mx.float32)
        diff = (mx.max(mx.abs(a - b)) / mx.max(mx.abs(b))).item()
        floor = touched_bytes(marlin, idx_np) / (bandwidth * 1e9) if bandwidth == bandwidth else float("nan")
        print(f"| {T} | {ours * 1e3:.2f} | {theirs * 1e3:.1f} | {theirs / ours:.0f}x | {floor * 1e3:.2f} | "
              f"{ours / floor:.1f}x | {diff:.2g} |")


if __name__ == "__main__":
    main()
