"""Generate text with an mlx-marlin FP4 model.

    python -m mlx_marlin.generate --model <dir> --prompt "..." --max-tokens N

Streams tokens and prints prompt and generation tokens-per-second and peak memory, like
``mlx_lm.generate``.  Without ``--model`` it uses the embedded tiny model, quantized to FP4
on the fly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlx.core as mx

EMBEDDED = Path(__file__).parent / "models"


def embedded_model_dir(name: str = "tiny-llama") -> Path:
    path = EMBEDDED / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"embedded model {name!r} is not installed at {path}.")
    return path


def load_any(model: str | None, group_size: int):
    """Load an FP4 directory, or convert an unquantized one (e.g. the embedded model) first."""
    from .lm import load, read_config

    path = Path(model) if model else embedded_model_dir()
    config = read_config(path)
    if config.get("quantization"):
        return load(path)
    from .convert import convert

    out = Path(tempfile.mkdtemp(prefix="mlx_marlin_")) / path.name
    convert(path, out, group_size=group_size, progress=False)
    return load(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlx_marlin.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the embedded tiny model)")
    p.add_argument("--prompt", default="The list type")
    p.add_argument("--max-tokens", type=int, default=100)
    p.add_argument("--temp", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-size", type=int, default=64, help="when converting an unquantized model")
    args = p.parse_args(argv)

    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(args.seed)
    model, tokenizer = load_any(args.model, args.group_size)
    print("=" * 10)
    print(args.prompt, end="", flush=True)
    last = None
    for response in stream_generate(model, tokenizer, args.prompt, max_tokens=args.max_tokens,
                                    sampler=make_sampler(temp=args.temp)):
        print(response.text, end="", flush=True)
        last = response
    print()
    print("=" * 10)
    if last is not None:
        print(f"Prompt: {last.prompt_tokens} tokens, {last.prompt_tps:.3f} tokens-per-sec")
        print(f"Generation: {last.generation_tokens} tokens, {last.generation_tps:.3f} tokens-per-sec")
        print(f"Peak memory: {last.peak_memory:.3f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
