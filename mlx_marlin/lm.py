"""mlx-lm integration: quantize a model in place, save it, load it back with its tokenizer.

A converted model directory holds mlx-lm's usual files (``config.json``, ``model*.safetensors``,
tokenizer files); ``config.json`` carries a ``"quantization"`` entry naming this format::

    {"method": "mlx_marlin_fp4", "mode": "mlx_marlin_fp4", "bits": 4, "format_version": 1,
     "group_size": 64, "scale_dtype": "float16", "layers": ["model.layers.0.self_attn.q_proj", ...]}

``layers`` lists the module paths that hold FP4 weights, so loading rebuilds exactly the
saved structure.  Layers that MLX had quantized and that stay so (modes other than
mxfp4/nvfp4, or left out by the predicate, e.g. an mxfp4 output head) are listed with their
MLX settings under ``"mlx_quantized"`` (``{path: {"group_size", "bits", "mode"}}``; such
files carry ``"format_version": 2``).  mlx-lm's own ``load`` cannot read such a directory
(it does not know the mode); use :func:`load`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .nn import (AffineEmbedding, AffineLinear, DenseEmbedding, DenseLinear, MarlinLinear, MarlinSwitchGLU,
                 MarlinSwitchLinear, _quantized_fp4_mode, affine_kernel_applies)
from .quant import DEFAULT_GROUP_SIZE, GROUP_SIZES

FORMAT_NAME = "mlx_marlin_fp4"
FORMAT_VERSION = 2  # the newest this code reads and writes; 1 = no "mlx_quantized" entry
_SCALE_DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16}

Predicate = Callable[[str, nn.Module], bool]


def _switch_classes():
    """mlx-lm's SwitchGLU and its two expert-layer classes (plain and quantized)."""
    try:
        from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchGLU, SwitchLinear
    except ImportError:  # mlx-lm not installed: only dense layers to convert
        return None, ()
    return SwitchGLU, (SwitchLinear, QuantizedSwitchLinear)


def default_predicate(path: str, module: nn.Module) -> bool:
    """Quantize every Linear / expert layer except the output head and MoE routers
    (small, and their rounding changes which experts run)."""
    last = path.rsplit(".", 1)[-1]
    return last not in ("lm_head", "gate", "router")


def _input_dims(module) -> Optional[int]:
    w = getattr(module, "weight", None)
    return None if w is None else w.shape[-1]


def _expert_layer_convertible(layer, group_size: int) -> bool:
    """An unquantized or mxfp4 / nvfp4 expert layer whose K splits into groups (MLX's
    affine and 8-bit modes hold other values than E2M1 codes: those layers stay)."""
    if "scales" in layer and _quantized_fp4_mode(layer) is None:
        return False
    return layer.input_dims % group_size == 0


def _convert(path: str, module: nn.Module, group_size: int, scale_dtype, scale_search: bool):
    """The FP4 replacement for `module`, or None if it is not a convertible layer."""
    SwitchGLU, expert_layers = _switch_classes()
    if SwitchGLU is not None and isinstance(module, SwitchGLU):
        projections = (module.gate_proj, module.up_proj, module.down_proj)
        if all(_expert_layer_convertible(p, group_size) for p in projections):
            return MarlinSwitchGLU.from_switch_glu(module, group_size, scale_dtype, scale_search)
        return None
    if expert_layers and isinstance(module, expert_layers):
        if _expert_layer_convertible(module, group_size):
            return MarlinSwitchLinear.from_module(module, group_size, scale_dtype, scale_search)
        return None
    if isinstance(module, nn.QuantizedLinear) and _quantized_fp4_mode(module) is not None:
        return MarlinLinear.from_quantized(module, group_size)
    if type(module) is nn.Linear and _input_dims(module) % group_size == 0:
        return MarlinLinear.from_linear(module, group_size, scale_dtype, scale_search)
    return None


def use_dense_kernels(model: nn.Module) -> nn.Module:
    """Run the model's unquantized ``nn.Linear`` layers and tied output heads
    (``nn.Embedding.as_linear``) through :func:`mlx_marlin.dense_linear`, in place.

    Each exact ``nn.Linear`` becomes a :class:`~mlx_marlin.DenseLinear` and each exact
    ``nn.Embedding`` a :class:`~mlx_marlin.DenseEmbedding` holding the same arrays, so
    parameter names, checkpoints and results stay as they were.  On the CPU this replaces
    MLX's reference-BLAS matmul by mlx-marlin's kernel (the bfloat16 output head that
    :func:`quantize_model` keeps is otherwise most of a CPU decode step); on a GPU the
    product stays MLX's own.  :func:`quantize_model` and :func:`load` call it; it works on
    any model, quantized or not.  Returns ``model``.

    Layers left in MLX's affine quantization with 4 or 8 bits and group size 32, 64 or
    128 (exact ``nn.QuantizedLinear`` / ``nn.QuantizedEmbedding``, e.g. the 8-bit attention
    and output head of an "MXFP4-Q8" gpt-oss) likewise become
    :class:`~mlx_marlin.AffineLinear` / :class:`~mlx_marlin.AffineEmbedding`, through
    :func:`mlx_marlin.affine_linear`: on the CPU mlx-marlin's kernel instead of MLX's
    ``quantized_matmul`` (~85 ms for one token through a 2880 x 4096 8-bit layer).
    """
    replaced = []
    for path, module in model.named_modules():
        if type(module) is nn.Linear:
            replaced.append((path, DenseLinear.from_linear(module)))
        elif type(module) is nn.Embedding:
            replaced.append((path, DenseEmbedding.from_embedding(module)))
        elif type(module) is nn.QuantizedLinear and affine_kernel_applies(module):
            replaced.append((path, AffineLinear.from_quantized_linear(module)))
        elif type(module) is nn.QuantizedEmbedding and affine_kernel_applies(module):
            replaced.append((path, AffineEmbedding.from_quantized_embedding(module)))
    if replaced:
        model.update_modules(_unflatten_modules(replaced))
    return model


def quantize_model(
    model: nn.Module,
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
    scale_dtype: mx.Dtype = mx.float16,
    scale_search: bool = False,
    predicate: Optional[Predicate] = None,
    progress: bool = False,
) -> Tuple[nn.Module, dict]:
    """Replace the model's linear and expert layers by FP4 layers, in place.

    Converts ``nn.Linear`` (input dims a multiple of ``group_size``), ``nn.QuantizedLinear``
    in mxfp4/nvfp4 mode (through :func:`mlx_marlin.from_mlx`), and mlx-lm's ``SwitchGLU``
    (any activation, e.g. gpt-oss's ``SwigluOAI``) / ``SwitchLinear``, whose experts may be
    unquantized or ``QuantizedSwitchLinear`` in mxfp4/nvfp4 mode.  Layers MLX quantized to
    mxfp4/nvfp4 keep their E2M1 codes, re-encoded at ``group_size`` with bfloat16 scales
    (exact for mxfp4 at ``group_size=32``).  Layers in MLX's other quantization modes stay
    as they are.  Embeddings stay as they are; by default so do the output head and MoE
    routers (see :func:`default_predicate`).  The layers left unquantized then run through
    :func:`use_dense_kernels` (same weights, a fast CPU product), and mlx-lm's attention,
    where it runs on the CPU, through :func:`mlx_marlin.attention`
    (:func:`use_marlin_attention` with ``cpu_only``; ``use_marlin_attention(False)`` first
    keeps MLX's).

    Args:
        model: An ``nn.Module`` (e.g. from ``mlx_lm.load``).
        group_size: 32, 64 or 128.
        scale_dtype: ``mx.float16`` or ``mx.bfloat16``.
        scale_search: Search per-group scales for lower error (slower).
        predicate: ``(path, module) -> bool`` choosing which layers to convert.
        progress: Show a progress bar over layers.

    Returns:
        ``(model, quantization_config)``; the config is what :func:`save` writes.
    """
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size!r}.")
    if scale_dtype not in _SCALE_DTYPES.values():
        raise ValueError(f"scale_dtype must be mx.float16 or mx.bfloat16, got {scale_dtype}.")
    predicate = predicate or default_predicate
    SwitchGLU, expert_layers = _switch_classes()
    convertible = (nn.Linear, nn.QuantizedLinear) + expert_layers + ((SwitchGLU,) if SwitchGLU is not None else ())
    candidates = [(path, m) for path, m in model.named_modules() if isinstance(m, convertible) and predicate(path, m)]
    # A SwitchGLU's projections are converted together with it.
    glu_paths = [p for p, m in candidates if SwitchGLU is not None and isinstance(m, SwitchGLU)]
    candidates = sorted(((p, m) for p, m in candidates if not any(p.startswith(g + ".") for g in glu_paths)), key=lambda pm: pm[0])

    iterator = candidates
    if progress:
        try:
            from tqdm import tqdm

            iterator = tqdm(candidates, desc="quantizing", unit="layer")
        except ImportError:
            pass
    replaced = []
    converted_paths = []
    for path, module in iterator:
        new = _convert(path, module, group_size, scale_dtype, scale_search)
        if new is None:
            continue
        mx.eval(new.parameters())
        replaced.append((path, new))
        converted_paths.append(path)
    if replaced:
        model.update_modules(_unflatten_modules(replaced))
    use_dense_kernels(model)
    _route_cpu_attention_by_default()
    mlx_quantized = _mlx_quantized_layers(model)
    config = {
        "method": FORMAT_NAME,
        "mode": FORMAT_NAME,
        "bits": 4,
        "format_version": 2 if mlx_quantized else 1,
        "group_size": group_size,
        "scale_dtype": "bfloat16" if scale_dtype == mx.bfloat16 else "float16",
        "layers": sorted(converted_paths),
    }
    if mlx_quantized:
        config["mlx_quantized"] = mlx_quantized
    return model, config


def _mlx_quantized_layers(model: nn.Module) -> Dict[str, dict]:
    """The layers MLX quantized that are still so, with what rebuilds them at load."""
    out = {}
    for path, m in model.named_modules():
        if "scales" in m and not isinstance(m, (MarlinLinear, MarlinSwitchLinear)):
            if m.get("global_scale") is not None:
                raise ValueError(f"layer {path!r} stays in MLX's {m.mode} with a global scale, which "
                                 "mlx_marlin.save cannot describe; include it in the conversion.")
            out[path] = {"group_size": m.group_size, "bits": m.bits, "mode": getattr(m, "mode", "affine")}
    return dict(sorted(out.items()))


def _unflatten_modules(pairs):
    from mlx.utils import tree_unflatten

    return tree_unflatten(list(pairs))


def _build_structure(model: nn.Module, qconfig: dict) -> None:
    """Swap in empty FP4 layers at the saved paths so the weights load strictly."""
    group_size = qconfig["group_size"]
    scale_dtype = _SCALE_DTYPES[qconfig.get("scale_dtype", "float16")]
    SwitchGLU, expert_layers = _switch_classes()
    modules = dict(model.named_modules())
    replaced = []
    for path in qconfig["layers"]:
        if path not in modules:
            raise ValueError(f"the saved quantized layer {path!r} does not exist in this model architecture.")
        m = modules[path]
        if SwitchGLU is not None and isinstance(m, SwitchGLU):
            g = m.gate_proj
            new = MarlinSwitchGLU(g.input_dims, g.output_dims, g.num_experts, "bias" in g, group_size, scale_dtype,
                                  activation=m.activation)
        elif expert_layers and isinstance(m, expert_layers):
            new = MarlinSwitchLinear(m.input_dims, m.output_dims, m.num_experts, "bias" in m, group_size, scale_dtype)
        elif isinstance(m, (nn.Linear, nn.QuantizedLinear)):
            n = m.weight.shape[0]
            k = m.weight.shape[1] * (32 // m.bits if isinstance(m, nn.QuantizedLinear) else 1)
            new = MarlinLinear(k, n, "bias" in m, group_size, scale_dtype)
        else:
            raise ValueError(f"cannot rebuild saved quantized layer {path!r} of type {type(m).__name__}.")
        replaced.append((path, new))
    for path, q in qconfig.get("mlx_quantized", {}).items():
        m = modules.get(path)
        if m is None or not hasattr(m, "to_quantized"):
            raise ValueError(f"the saved MLX-quantized layer {path!r} does not exist in this model architecture "
                             "or cannot be quantized by MLX.")
        replaced.append((path, m.to_quantized(group_size=q["group_size"], bits=q["bits"], mode=q["mode"])))
    model.update_modules(_unflatten_modules(replaced))


def check_quantization_config(config: dict) -> dict:
    """The ``quantization`` entry of a config.json, validated as this format."""
    q = config.get("quantization") or config.get("quantization_config")
    if not q:
        raise ValueError("config.json has no 'quantization' entry: this is not an mlx-marlin FP4 model "
                         "(convert it with `python -m mlx_marlin.convert`).")
    if not isinstance(q, dict):
        raise ValueError(f"config.json's 'quantization' entry must be an object, got {type(q).__name__}.")
    method = q.get("method", q.get("quant_method", q.get("mode", "affine")))
    if method != FORMAT_NAME:
        raise ValueError(f"config.json names quantization method {method!r}; mlx_marlin.load reads only "
                         f"{FORMAT_NAME!r} models (use mlx_lm.load for MLX's own formats).")
    version = q.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"quantization 'format_version' must be an integer, got {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(f"model format version {version} is newer than this mlx-marlin "
                         f"({FORMAT_VERSION}); upgrade mlx-marlin.")
    if q.get("group_size") not in GROUP_SIZES or isinstance(q.get("group_size"), bool):
        raise ValueError(f"quantization 'group_size' must be one of {GROUP_SIZES}, got {q.get('group_size')!r}.")
    if q.get("scale_dtype", "float16") not in _SCALE_DTYPES:
        raise ValueError(f"quantization 'scale_dtype' must be one of {sorted(_SCALE_DTYPES)}, got "
                         f"{q.get('scale_dtype')!r}.")
    layers = q.get("layers")
    if not isinstance(layers, list) or not all(isinstance(p, str) for p in layers):
        raise ValueError("quantization 'layers' must be a list of module paths.")
    mlx_layers = q.get("mlx_quantized", {})
    if not isinstance(mlx_layers, dict) or not all(
            isinstance(v, dict) and {"group_size", "bits", "mode"} <= set(v) for v in mlx_layers.values()):
        raise ValueError("quantization 'mlx_quantized' must map module paths to {group_size, bits, mode}.")
    return q


def save(path: Union[str, Path], model: nn.Module, config: dict, quantization: dict,
         tokenizer_dir: Optional[Union[str, Path]] = None) -> Path:
    """Write ``model`` (already quantized) to ``path`` in mlx-lm's layout."""
    from mlx_lm.utils import save_config, save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(path, model)
    config = dict(config)
    config.pop("quantization_config", None)
    config["quantization"] = quantization
    save_config(config, path / "config.json")
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, path)
    return path


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja")


def copy_tokenizer_files(src: Union[str, Path], dst: Union[str, Path]) -> None:
    for name in _TOKENIZER_FILES:
        f = Path(src) / name
        if f.exists():
            shutil.copy2(f, Path(dst) / name)


def load(path: Union[str, Path], *, lazy: bool = False, return_config: bool = False):
    """Load an mlx-marlin FP4 model directory -> ``(model, tokenizer)`` usable with
    ``mlx_lm.generate`` / ``mlx_lm.stream_generate``.

    The layers kept unquantized run on :func:`use_dense_kernels`, and mlx-lm's attention
    on the CPU through :func:`mlx_marlin.attention` (see :func:`use_marlin_attention`).
    Raises ``ValueError`` for directories quantized with another method, and
    ``FileNotFoundError`` for missing files.  Nothing is downloaded: ``path`` is a local
    directory.
    """
    from mlx_lm.utils import _get_classes, load_config, load_model, load_tokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json (mlx_marlin.load reads local model directories).")
    config = load_config(path)
    qconfig = check_quantization_config(config)

    def get_classes(config: dict):
        model_class, args_class = _get_classes(config)

        def build(args):
            model = model_class(args)
            _build_structure(model, qconfig)
            _route_cpu_attention_by_default()
            return use_dense_kernels(model)

        return build, args_class

    model, config = load_model(path, lazy, model_config={"quantization": None, "quantization_config": None},
                               get_model_classes=get_classes)
    config["quantization"] = qconfig
    config.pop("quantization_config", None)
    tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id", None))
    if return_config:
        return model, tokenizer, config
    return model, tokenizer


def parameter_bytes(model: nn.Module) -> Dict[str, int]:
    """Bytes held by the model's FP4 layers and by everything else."""
    fp4, other = 0, 0
    marlin_paths = {p for p, m in model.named_modules()
                    if isinstance(m, (MarlinLinear, MarlinSwitchLinear))}
    for name, v in tree_flatten(model.parameters()):
        owner = name.rsplit(".", 1)[0]
        if owner in marlin_paths:
            fp4 += v.nbytes
        else:
            other += v.nbytes
    return {"fp4": fp4, "other": other}


def read_config(path: Union[str, Path]) -> dict:
    with open(Path(path) / "config.json") as f:
        return json.load(f)


# ------------------------------------------------------------------ attention routing
_original_sdpa = None
# How mlx-lm's attention is routed: "all" (every call mlx_marlin.attention can take),
# "cpu" (only calls that run on the CPU kernels), "off"; None until chosen, and then
# quantize_model / load choose "cpu" (_route_cpu_attention_by_default).
_attention_route = None


def _marlin_sdpa(queries, keys, values, cache, scale, mask, sinks=None):
    """mlx-lm's attention entry point, through mlx_marlin.attention where it applies
    (unquantized KV cache, a supported head dim and dtype; attention sinks included)."""
    from . import _ext
    from .nn import op_stream

    usable = (
        not hasattr(cache, "bits")
        and queries.shape[-1] in (64, 80, 96, 128, 256)
        and queries.dtype == keys.dtype == values.dtype
        and (mask is None or isinstance(mask, str) or isinstance(mask, mx.array))
    )
    if usable and _attention_route == "cpu":
        usable = mx.default_device() == mx.cpu and _ext._backend() == "cpu"
    if not usable:
        return _original_sdpa(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
    return _ext.attention(queries, keys, values, scale=scale, mask=mask, sinks=sinks, stream=op_stream("attention"))


def use_marlin_attention(enable: bool = True, *, cpu_only: bool = False) -> None:
    """Route mlx-lm's ``scaled_dot_product_attention`` through :func:`mlx_marlin.attention`
    (falling back to MLX's for quantized KV caches); ``False`` restores
    mlx-lm's own.  Patches ``mlx_lm.models.base`` and every loaded ``mlx_lm.models`` module
    that imported the function by name.

    With ``cpu_only``, only calls that run on the CPU take mlx_marlin.attention: there
    MLX's attention is built from its reference-BLAS matmuls (a decode step of a 1B-shaped
    model at 2048 tokens of context took 102–122 ms with it and 30–49 ms with
    mlx_marlin.attention on a 2-core x86 machine).  :func:`quantize_model` and :func:`load` turn that on unless this
    function was called before; ``use_marlin_attention(False)`` turns it off.
    """
    global _original_sdpa, _attention_route
    import sys

    import mlx_lm.models.base as base

    if _original_sdpa is None:
        _original_sdpa = base.scaled_dot_product_attention
    _attention_route = ("cpu" if cpu_only else "all") if enable else "off"
    target = _marlin_sdpa if enable else _original_sdpa
    current = {_marlin_sdpa, _original_sdpa}
    for name, module in list(sys.modules.items()):
        if name.startswith("mlx_lm.models") and getattr(module, "scaled_dot_product_attention", None) in current:
            module.scaled_dot_product_attention = target


def _route_cpu_attention_by_default() -> None:
    """The CPU-only attention route, unless the user chose a route already."""
    if _attention_route is None:
        try:
            use_marlin_attention(True, cpu_only=True)
        except ImportError:  # no mlx-lm: nothing to route
            pass
