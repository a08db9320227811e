"""Convert a local Hugging Face / mlx-lm model directory to the mlx-marlin FP4 format.

    python -m mlx_marlin.convert --model <local dir> --out <dir> [--group-size 64]
        [--scale-dtype float16|bfloat16] [--scale-search]

Reads safetensors through mlx-lm (so every architecture mlx-lm knows works), quantizes
linear and expert layers in place (progress bar over layers), writes safetensors plus
``config.json`` with a ``"quantization"`` entry naming this format, and copies the
tokenizer files.  Nothing is downloaded.

Models that ship in MXFP4 or NVFP4 (e.g. gpt-oss, whose experts are MXFP4; mlx-lm reads
such checkpoints as MLX-quantized layers) convert too: their E2M1 codes are kept and
re-encoded with bfloat16 scales, exactly for MXFP4 at the group size these sources get by
default, 32.  Their layers in other MLX modes (e.g. 8-bit) stay MLX-quantized.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlx.core as mx

from .lm import copy_tokenizer_files, parameter_bytes, quantize_model, save
from .quant import DEFAULT_GROUP_SIZE, GROUP_SIZES


def convert(model_dir, out_dir, *, group_size=None, scale_dtype=mx.float16, scale_search=False,
            progress=True):
    """Library form of the command; returns ``(output path, model, quantization config)``.

    ``group_size=None``: 32 for a source in MXFP4 / NVFP4 (exact for MXFP4), else
    ``DEFAULT_GROUP_SIZE``."""
    from mlx_lm.utils import load_model

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a local model directory (no config.json).")
    model, config = load_model(model_dir, lazy=True)
    source_mode = (config.get("quantization") or {}).get("mode", "affine") if config.get("quantization") else None
    if source_mode not in (None, "mxfp4", "nvfp4"):
        raise ValueError(f"{model_dir} is already quantized in MLX's {source_mode!r} mode; convert the original "
                         "weights (models in mxfp4 / nvfp4 convert, keeping their E2M1 codes).")
    if group_size is None:
        group_size = 32 if source_mode is not None else DEFAULT_GROUP_SIZE
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
    p.add_argument("--group-size", type=int, default=None, choices=GROUP_SIZES,
                   help=f"default {DEFAULT_GROUP_SIZE}; 32 for models already in mxfp4 / nvfp4")
    p.add_argument("--scale-dtype", choices=["float16", "bfloat16"], default="float16")
    p.add_argument("--scale-search", action="store_true", help="search per-group scales (slower, lower error)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out, model, qconfig = convert(args.model, args.out, group_size=args.group_size,
                                  scale_dtype=getattr(mx, args.scale_dtype), scale_search=args.scale_search)
    sizes = parameter_bytes(model)
    print(f"converted {len(qconfig['layers'])} layers to FP4 (group {qconfig['group_size']}) in "
          f"{time.perf_counter() - t0:.1f} s: FP4 layers {sizes['fp4'] / 1e6:.1f} MB, "
          f"other parameters {sizes['other'] / 1e6:.1f} MB -> {out}")


if __name__ == "__main__":
    main()
