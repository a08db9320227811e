"""Checks of the tiny models embedded in ``mlx_marlin/models/`` (needs mlx-lm).

The models are trained by ``examples/train_tiny.py``. The loss bounds below are
the held-out losses measured on the committed float16 weights plus a margin, so
these tests fail if the weights, config, tokenizer or parameter names break.
"""

import importlib.util
import json
import math
import os

import pytest

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")
from mlx.utils import tree_flatten, tree_map  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "mlx_marlin", "models")

# name -> (model_type, parameter count, bound on the mean next-token loss of
# the first SLICE_TOKENS held-out tokens). Measured on the committed float16
# weights (float32 compute, mlx-lm 0.32.2): tiny-llama 3.929, tiny-moe 3.561;
# the bounds add a 0.15 nat margin (the unigram baseline is ~6.3, broken
# weights give > 7).
EXPECTED = {
    "tiny-llama": ("llama", 2_819_840, 4.08),
    "tiny-moe": ("mixtral", 4_592_896, 3.71),
}
SLICE_TOKENS = 1024  # first 4 windows of 256 tokens of the held-out text
WINDOW = 256


def _tiny_data():
    # Load the helper by path: it is pure Python and needs no package import.
    path = os.path.join(ROOT, "mlx_marlin", "_tiny_data.py")
    spec = importlib.util.spec_from_file_location("_mlx_marlin_tiny_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_CACHE = {}


def _load(name):
    if name not in _CACHE:
        model, tokenizer = mlx_lm.load(os.path.join(MODELS, name))  # strict weights
        # MLX's CPU gather_mm (used by the MoE) only supports float32.
        model.update(tree_map(lambda p: p.astype(mx.float32), model.parameters()))
        _CACHE[name] = (model, tokenizer)
    return _CACHE[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_and_parameters(name):
    model_type, n_params, _ = EXPECTED[name]
    path = os.path.join(MODELS, name)
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["model_type"] == model_type
    assert cfg["vocab_size"] == 2048
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == cfg["head_dim"] == 64
    if model_type == "mixtral":
        assert cfg["num_local_experts"] == 8 and cfg["num_experts_per_tok"] == 2
    for fname in ("tokenizer.json", "tokenizer_config.json", "model.safetensors", "README.md"):
        assert os.path.exists(os.path.join(path, fname)), fname

    model, _ = _load(name)
    params = dict(tree_flatten(model.parameters()))
    assert sum(p.size for p in params.values()) == n_params
    # The file holds exactly the model's parameters (no sanitize renaming needed).
    saved = mx.load(os.path.join(path, "model.safetensors"))
    assert set(saved) == set(params)
    # FP4-friendly shapes: every matmul weight has K % 128 == 0 and N % 8 == 0.
    for k, w in params.items():
        if k.endswith(".weight") and w.ndim >= 2 and "embed_tokens" not in k:
            assert w.shape[-1] % 128 == 0 and w.shape[-2] % 8 == 0, (k, w.shape)


def _heldout_loss(model, ids):
    losses = []
    for i in range(0, len(ids) - 1, WINDOW):
        w = ids[i: i + WINDOW + 1]
        if len(w) < WINDOW + 1:
            break
        x = mx.array(w)[None]
        logits = model(x[:, :-1]).astype(mx.float32)
        lse = mx.logsumexp(logits, axis=-1)
        tgt = mx.take_along_axis(logits, x[:, 1:, None], axis=-1)[..., 0]
        losses.append(mx.mean(lse - tgt).item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_heldout_loss(name):
    bound = EXPECTED[name][2]
    model, tokenizer = _load(name)
    text = _tiny_data().heldout_text()
    ids = tokenizer.encode(text[:6000])[: SLICE_TOKENS + 1]
    assert len(ids) == SLICE_TOKENS + 1
    loss = _heldout_loss(model, ids)
    assert math.isfinite(loss)
    assert loss < bound, f"{name}: held-out loss {loss:.3f} >= {bound}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generate(name):
    model, tokenizer = _load(name)
    text = mlx_lm.generate(model, tokenizer, prompt="The", max_tokens=12)
    assert isinstance(text, str) and len(text) > 0
