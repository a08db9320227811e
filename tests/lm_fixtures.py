"""Tiny randomly initialised mlx-lm models with a real tokenizer, for integration tests."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np


def write_tokenizer(path: Path, vocab_size: int = 300) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["The list type is a mutable sequence of items. " * 3, "def function(argument): return value"] * 20
    tok.train_from_iterator(text, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|eos|>", "model_max_length": 512}))


def llama_config(vocab_size=300):
    return dict(model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
                num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5, vocab_size=vocab_size,
                tie_word_embeddings=False, eos_token_id=0, max_position_embeddings=512, rope_theta=10000.0)


def mixtral_config(vocab_size=300):
    return dict(model_type="mixtral", hidden_size=128, num_hidden_layers=2, intermediate_size=128,
                num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5, vocab_size=vocab_size,
                num_local_experts=4, num_experts_per_tok=2, eos_token_id=0, rope_theta=10000.0,
                max_position_embeddings=512)


def gpt_oss_config(vocab_size=300):
    """gpt-oss: SwitchGLU experts with biases and the clamped SwigluOAI activation,
    attention sinks, alternating sliding-window layers."""
    return dict(model_type="gpt_oss", hidden_size=64, num_hidden_layers=2, intermediate_size=96, head_dim=64,
                num_attention_heads=2, num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2,
                sliding_window=4, rms_norm_eps=1e-5, vocab_size=vocab_size, rope_theta=150000.0, eos_token_id=0)


def make_model_dir(path: Path, config: dict, seed: int = 0) -> Path:
    """An unquantized mlx-lm model directory with random weights and a tokenizer."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes, save_config

    path.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    # Scale like a trained model (unit-ish activations) so logits are well conditioned.
    rng = np.random.default_rng(seed)
    weights = {k: mx.array(rng.standard_normal(v.shape).astype(np.float32) * (0.02 if v.ndim > 1 else 0) + (1.0 if v.ndim == 1 else 0.0))
               for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    save_config(dict(config), path / "config.json")
    write_tokenizer(path, config["vocab_size"])
    return path
