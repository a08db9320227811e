"""Convert a local Hugging Face / mlx-lm model directory to the mlx-marlin FP4 format.

    python -m mlx_marlin.convert --model <local dir> --out <dir> [--group-size 64]
        [--scale-dtype float16|bfloat16] [--scale-search]

Reads safetensors through mlx-lm (so every architecture mlx-lm knows works), quantizes
linear and expert layers in place (progress bar over layers), writes safetensors plus
``config.json`` with a ``"quantization"`` entry naming this format, and copies the
tokenizer files.  Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlx.core as mx

from .lm import copy_tokenizer_files, parameter_bytes, quantize_model, save
from .quant import DEFAULT_GROUP_SIZE, GROUP_SIZES


def convert(model_dir, out_dir, *, group_size=DEFAULT_GROUP_SIZE, scale_dtype=mx.float16, scale_search=False,
            progress=True):
    """Library form of the command; returns the output path."""
    from mlx_lm.utils import load_model

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a local model directory (no config.json).")
    model, config = load_model(model_dir, lazy=True)
    if config.get("quantization"):
        raise ValueError(f"{model_dir} is already quantized ({config['quantization']}); convert the original "
                         "weights (or mxfp4/nvfp4 models through mlx_marlin.quantize_model in Python).")
    _, qconfig = quantize_model(model, group_size=group_size, scale_dtype=scale_dtype, scale_search=scale_search,
                                progress=progress)
    out = save(out_dir, model, config, qconfig)
    copy_tokenizer_files(model_dir, out)
    return out, model, qconfig


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlx_marlin.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local model directory (config.json + safetensors)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, choices=GROUP_SIZES)
    p.add_argument("--scale-dtype", choices=["float16", "bfloat16"], default="float16")
    p.add_argument("--scale-search", action="store_true", help="search per-group scales (slower, lower error)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out, model, qconfig = convert(args.model, args.out, group_size=args.group_size,
                                  scale_dtype=getattr(mx, args.scale_dtype), scale_search=args.scale_search)
    sizes = parameter_bytes(model)
    print(f"converted {len(qconfig['layers'])} layers to FP4 (group {args.group_size}) in "
          f"{time.perf_counter() - t0:.1f} s: FP4 layers {sizes['fp4'] / 1e6:.1f} MB, "
          f"other parameters {sizes['other'] / 1e6:.1f} MB -> {out}")


if __name__ == "__main__":
    main()
