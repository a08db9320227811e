"""Quantization quality: perplexity on held-out text and per-layer reconstruction error.

    python -m mlx_marlin.eval --model <unquantized model dir> [--text-file F] [--max-tokens 4096]

One table compares the original weights, this FP4 format at each group size (with and
without scale search), and MLX's ``mxfp4``, ``nvfp4`` and affine 4-bit quantization of the
same layers (the output head and MoE routers stay unquantized in every variant).  Without
``--text-file`` the held-out split of the embedded models' training text is used.

MLX's quantized matmuls are evaluated through their exact dense equivalents (weights
dequantized by ``mx.dequantize``): the same function, and far faster on a CPU.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten

from .lm import _switch_classes, default_predicate, quantize_model
from .quant import dequantize, quantize


def heldout_text() -> str:
    from ._tiny_data import heldout_text as _heldout

    return _heldout()


def perplexity(model: nn.Module, tokens: List[int], seq_len: int = 256) -> float:
    nll, count = 0.0, 0
    for start in range(0, len(tokens) - 1, seq_len):
        chunk = tokens[start : start + seq_len + 1]
        if len(chunk) < 2:
            break
        inp = mx.array(chunk[:-1])[None]
        tgt = mx.array(chunk[1:])[None]
        logits = model(inp).astype(mx.float32)
        loss = nn.losses.cross_entropy(logits, tgt, reduction="sum")
        nll += loss.item()
        count += tgt.size
    return math.exp(nll / max(count, 1))


def _mlx_quantize(model: nn.Module, mode: str) -> nn.Module:
    """MLX's own quantization of the same layers, then each quantized layer replaced by its
    exact dense twin."""
    _, (Switch, QSwitch) = _switch_classes()
    kw = {"affine": dict(group_size=64, bits=4, mode="affine"), "mxfp4": dict(group_size=32, bits=4, mode="mxfp4"),
          "nvfp4": dict(group_size=16, bits=4, mode="nvfp4")}[mode]

    def pred(path, m):
        return hasattr(m, "to_quantized") and default_predicate(path, m) and m.weight.shape[-1] % kw["group_size"] == 0

    nn.quantize(model, class_predicate=pred, **kw)
    twins = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, QSwitch)):
            w = mx.dequantize(m.weight, m.scales, m.get("biases"), group_size=m.group_size, bits=m.bits, mode=m.mode,
                              dtype=mx.float32)
            if isinstance(m, nn.QuantizedLinear):
                d = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
            else:
                d = Switch(w.shape[2], w.shape[1], w.shape[0], bias="bias" in m)
            d.weight = w
            if "bias" in m:
                d.bias = m.bias
            twins.append((path, d))
    model.update_modules(tree_unflatten(twins))
    return model


def layer_errors(model: nn.Module, group_sizes) -> Dict[str, Dict[str, float]]:
    """Relative Frobenius error ||W - Q(W)|| / ||W|| per layer and format."""
    _, (Switch, QSwitch) = _switch_classes()
    out: Dict[str, Dict[str, float]] = {}
    for path, m in model.named_modules():
        if not (type(m) is nn.Linear or isinstance(m, Switch)) or not default_predicate(path, m):
            continue
        w = m.weight.astype(mx.float32)
        norm = mx.linalg.norm(w.reshape(-1)).item()
        row = {}
        for g in group_sizes:
            if w.shape[-1] % g == 0:
                p, s = quantize(w, g)
                row[f"fp4 g{g}"] = mx.linalg.norm((dequantize(p, s, g) - w).reshape(-1)).item() / norm
        for mode, g in (("mxfp4", 32), ("nvfp4", 16), ("affine", 64)):
            if w.shape[-1] % g == 0:
                q = mx.quantize(w, group_size=g, bits=4, mode=mode)
                d = mx.dequantize(*q, group_size=g, bits=4, mode=mode, dtype=mx.float32) if mode == "affine" else \
                    mx.dequantize(q[0], q[1], group_size=g, bits=4, mode=mode, dtype=mx.float32)
                row[mode] = mx.linalg.norm((d - w).reshape(-1)).item() / norm
        out[path] = row
    return out


def evaluate(model_dir, text: Optional[str] = None, max_tokens: int = 4096, seq_len: int = 256,
             group_sizes=(32, 64, 128), scale_search: bool = True, log: Callable[[str], None] = print):
    from mlx_lm import load

    model_dir = str(model_dir)
    _, tokenizer = load(model_dir)
    text = text if text is not None else heldout_text()
    tokens = tokenizer.encode(text)[:max_tokens]
    log(f"# {model_dir}: {len(tokens)} held-out tokens, sequence length {seq_len}")

    variants = [("original (unquantized)", lambda m: m)]
    for g in group_sizes:
        variants.append((f"mlx-marlin fp4 g{g}", lambda m, g=g: quantize_model(m, group_size=g)[0]))
        if scale_search:
            variants.append((f"mlx-marlin fp4 g{g} +scale search",
                             lambda m, g=g: quantize_model(m, group_size=g, scale_search=True)[0]))
    for mode, label in (("mxfp4", "MLX mxfp4 (g32)"), ("nvfp4", "MLX nvfp4 (g16)"), ("affine", "MLX affine 4-bit (g64)")):
        variants.append((label, lambda m, mode=mode: _mlx_quantize(m, mode)))

    results = []
    for label, make in variants:
        model, _ = load(model_dir)
        # Compute in float32 everywhere: the same arithmetic for every variant, and MLX's
        # CPU gather_mm (the unquantized MoE experts) takes float32 only.
        model.set_dtype(mx.float32)
        t0 = time.perf_counter()
        model = make(model)
        mx.eval(model.parameters())
        ppl = perplexity(model, tokens, seq_len)
        results.append((label, ppl))
        log(f"  {label:38s} ppl {ppl:9.4f}   ({time.perf_counter() - t0:.1f} s)")
    model, _ = load(model_dir)
    errors = layer_errors(model, group_sizes)
    return results, errors


def format_tables(model_dir, results, errors) -> str:
    base = results[0][1]
    lines = [f"Perplexity, `{Path(model_dir).name}`:", "", "| weights | perplexity | vs original |", "|---|---|---|"]
    for label, ppl in results:
        lines.append(f"| {label} | {ppl:.4f} | {ppl / base - 1:+.2%} |")
    cols = sorted({c for row in errors.values() for c in row}, key=lambda c: (not c.startswith("fp4"), c))
    lines += ["", "Per-layer relative reconstruction error ||W - Q(W)|| / ||W|| (mean over layers of each kind):", "",
              "| layer kind | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    kinds: Dict[str, List[Dict[str, float]]] = {}
    for path, row in errors.items():
        kind = ".".join(p for p in path.split(".") if not p.isdigit())
        kinds.setdefault(kind.removeprefix("model.layers."), []).append(row)
    for kind, rows in sorted(kinds.items()):
        vals = [np.mean([r[c] for r in rows if c in r]) if any(c in r for r in rows) else float("nan") for c in cols]
        lines.append(f"| {kind} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlx_marlin.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="unquantized model directory")
    p.add_argument("--text-file", default=None, help="held-out text (default: the embedded models' held-out split)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--group-sizes", type=int, nargs="*", default=[32, 64, 128])
    p.add_argument("--no-scale-search", action="store_true")
    args = p.parse_args(argv)
    text = Path(args.text_file).read_text() if args.text_file else None
    results, errors = evaluate(args.model, text, args.max_tokens, args.seq_len, args.group_sizes,
                               not args.no_scale_search)
    print()
    print(format_tables(args.model, results, errors))


if __name__ == "__main__":
    main()
