"""One CPU decode step of an mlx-lm model, end to end, as a user runs it: the model as
mlx-lm builds it (bfloat16, MLX's CPU ops); after `mlx_marlin.quantize_model` (FP4 body,
the output head kept bfloat16 on `dense_linear`, mlx-lm's attention on
`mlx_marlin.attention`: its CPU defaults); the same with MLX's attention; and also with
the head on MLX's `nn.Linear` (what `quantize_model` gave before `dense_linear`).

    python benchmarks/bench_decode_cpu.py [--contexts 128 2048] [--layers 8] [--hidden 2048]
        [--intermediate 5632] [--heads 32] [--kv-heads 4] [--vocab 32000] [--steps 10]
        [--attention-bits 8]

Random weights with Llama shapes (no download).  ms per token: median of --steps decode
steps after the prompt is in the KV cache; the floor is the bytes of all weights read
once per token (FP4 layers' packed words + scales, the bf16 head and norms) over the
measured read bandwidth.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mlx_marlin as mm  # noqa: E402
from common import hardware, read_bandwidth_gbs  # noqa: E402


def build(args):
    from mlx_lm.models import llama

    cfg = llama.ModelArgs(model_type="llama", hidden_size=args.hidden, num_hidden_layers=args.layers,
                          intermediate_size=args.intermediate, num_attention_heads=args.heads,
                          num_key_value_heads=args.kv_heads, rms_norm_eps=1e-5, vocab_size=args.vocab,
                          head_dim=args.hidden // args.heads, tie_word_embeddings=False)
    mx.random.seed(0)
    model = llama.Model(cfg)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    return model, cfg


def decode_ms(model, vocab, context, steps):
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    prompt = mx.array(np.random.default_rng(0).integers(0, vocab, (1, context)))
    mx.eval(model(prompt, cache=cache)[:, -1])
    tok = mx.array([[1]])
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        tok = mx.argmax(model(tok, cache=cache)[:, -1:], axis=-1)
        mx.eval(tok)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])) * 1e3


def weight_bytes(model):
    from mlx.utils import tree_flatten

    return sum(v.nbytes for k, v in tree_flatten(model.parameters()) if "embed_tokens" not in k)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--attention-bits", type=int, choices=[4, 8], default=None,
                    help="first quantize the attention projections with MLX (affine, group 64), as "
                         "'MXFP4-Q8' conversions ship them: quantize_model leaves them MLX-quantized, "
                         "on affine_linear; adds a row with them on MLX's quantized_matmul")
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)
    from mlx.utils import tree_unflatten
    from mlx_marlin.lm import use_marlin_attention

    bandwidth = read_bandwidth_gbs()
    print(f"# hardware: {hardware()}, mlx_marlin CPU kernels: {mm._ext._cpu_isa()}")
    print(f"# command: python benchmarks/bench_decode_cpu.py --contexts {' '.join(map(str, args.contexts))} "
          f"--layers {args.layers} --hidden {args.hidden} --intermediate {args.intermediate} --heads {args.heads} "
          f"--kv-heads {args.kv_heads} --vocab {args.vocab} --steps {args.steps} --group-size {args.group_size}"
          + (f" --attention-bits {args.attention_bits}" if args.attention_bits else ""))
    print(f"# read bandwidth: {bandwidth:.1f} GB/s; load average at start: {os.getloadavg()[0]:.1f}")
    model, cfg = build(args)
    rows = {}
    dense_bytes = weight_bytes(model)
    rows["mlx-lm model as built (bf16, MLX CPU ops)"] = ([decode_ms(model, cfg.vocab_size, c, max(2, args.steps // 4))
                                                         for c in args.contexts], dense_bytes)
    if args.attention_bits:
        nn.quantize(model, group_size=64, bits=args.attention_bits,
                    class_predicate=lambda p, m: p.endswith(("q_proj", "k_proj", "v_proj", "o_proj")))
    mm.quantize_model(model, group_size=args.group_size)
    mx.eval(model.parameters())
    fp4_bytes = weight_bytes(model)
    rows["quantize_model (FP4 body; bf16 head on dense_linear; attention on mlx_marlin, the CPU default)"] = (
        [decode_ms(model, cfg.vocab_size, c, args.steps) for c in args.contexts], fp4_bytes)
    if args.attention_bits:
        from mlx_marlin.nn import _same_quantized_layer_as

        mlx_layers = [(p, _same_quantized_layer_as(nn.QuantizedLinear, m)) for p, m in model.named_modules()
                      if isinstance(m, mm.AffineLinear)]
        affine_layers = [(p, m) for p, m in model.named_modules() if isinstance(m, mm.AffineLinear)]
        model.update_modules(tree_unflatten(mlx_layers))
        rows[f"  the same with the {args.attention_bits}-bit attention projections on MLX's quantized_matmul"] = (
            [decode_ms(model, cfg.vocab_size, c, max(2, args.steps // 4)) for c in args.contexts], fp4_bytes)
        model.update_modules(tree_unflatten(affine_layers))
    use_marlin_attention(False)
    rows["  the same with MLX's attention (use_marlin_attention(False))"] = (
        [decode_ms(model, cfg.vocab_size, c, args.steps) for c in args.contexts], fp4_bytes)
    head = model.lm_head
    plain = nn.Linear(head.weight.shape[1], head.weight.shape[0], bias=False)
    plain.update(head.parameters())
    model.update_modules(tree_unflatten([("lm_head", plain)]))
    rows["  and the head on MLX's nn.Linear (quantize_model before this change)"] = (
        [decode_ms(model, cfg.vocab_size, c, max(2, args.steps // 4)) for c in args.contexts], fp4_bytes)

    print()
    print("| model | " + " | ".join(f"context {c} (ms/token)" for c in args.contexts) + " | weights read | floor (ms) |")
    print("|---|" + "---|" * len(args.contexts) + "---|---|")
    for name, (times, nbytes) in rows.items():
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in times) +
              f" | {nbytes / 1e6:.0f} MB | {nbytes / (bandwidth * 1e9) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
