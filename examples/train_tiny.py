#!/usr/bin/env python3
"""Train the two tiny models embedded in ``mlx_marlin/models/``.

* ``tiny-llama``: dense Llama (mlx-lm ``llama``), GQA, RoPE, RMSNorm, SwiGLU.
* ``tiny-moe``:   Mixtral (mlx-lm ``mixtral``), 8 experts, top-2 routing.

Both use one byte-level BPE tokenizer (vocab 2048) trained here, and are trained
on text every CPython ships (``pydoc_data`` topics + stdlib docstrings, see
``mlx_marlin/_tiny_data.py``; ~4% of the documents are held out for validation).

Training runs in PyTorch on the CPU (MLX's dense matmul is very slow on Linux
CPUs); the weights are then written in mlx-lm's format (``config.json``,
``model.safetensors`` in float16, tokenizer files, ``README.md``) and, when
mlx-lm is installed, loaded back with ``mlx_lm.load`` (strict) to check that
the MLX forward pass matches the PyTorch one and to print a sample.

Requirements (training only; nothing here is needed to *use* the models)::

    pip install torch tokenizers numpy safetensors   # training
    pip install mlx-lm                               # verification (optional)

Reproduce the committed models (one CPU thread each; the two models were
trained as two parallel processes on a busy, shared 2-core machine:
tiny-llama 451 s, tiny-moe 490 s of training, plus ~10 s of data/tokenizer
preparation and verification each). One torch thread per process: under CPU
contention a 2-thread torch process was 3-5x *slower* than a 1-thread one::

    python examples/train_tiny.py --model llama &
    python examples/train_tiny.py --model moe; wait
    # or, sequentially: python examples/train_tiny.py

Options: ``--model llama|moe|all``, ``--steps N`` (per model),
``--out DIR`` (default ``mlx_marlin/models``), ``--no-verify``.
Everything is seeded; re-running on the same machine / library versions gives
the same tokenizer and (up to floating-point summation order) the same models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Import the data helper without importing the (possibly not yet built) package.
sys.path.insert(0, os.path.join(ROOT, "mlx_marlin"))
import _tiny_data  # noqa: E402

VOCAB_SIZE = 2048
SEQ_LEN = 256
SEED = 1234

CONFIGS = {
    "llama": dict(
        name="tiny-llama",
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        hidden_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=512,
        vocab_size=VOCAB_SIZE,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_traditional=False,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    ),
    "moe": dict(
        name="tiny-moe",
        model_type="mixtral",
        architectures=["MixtralForCausalLM"],
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=256,
        num_local_experts=8,
        num_experts_per_tok=2,
        vocab_size=VOCAB_SIZE,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_traditional=False,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        router_aux_loss_coef=0.01,
    ),
}

# Per-model training hyper-parameters.
TRAIN = {
    "llama": dict(steps=600, batch=8, lr=3e-3, warmup=30, wd=0.1),
    "moe": dict(steps=800, batch=8, lr=3e-3, warmup=30, wd=0.1),
}


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

def train_tokenizer(train_docs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[_tiny_data.EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_docs, trainer=trainer, length=len(train_docs))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    assert tok.token_to_id(_tiny_data.EOS) == 0
    return tok


def write_tokenizer_config(out_dir):
    eos = _tiny_data.EOS
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": eos,
        "unk_token": None,
        "pad_token": eos,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "added_tokens_decoder": {
            "0": {"content": eos, "lstrip": False, "normalized": False,
                  "rstrip": False, "single_word": False, "special": True}
        },
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({"eos_token": eos, "pad_token": eos}, f, indent=2)
        f.write("\n")


def encode(tok, text):
    import numpy as np

    return np.asarray(tok.encode(text).ids, dtype=np.int64)


# --------------------------------------------------------------------------
# PyTorch model (mirrors mlx-lm's llama / mixtral exactly)
# --------------------------------------------------------------------------

def build_model(cfg):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    H = cfg["hidden_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    E = cfg.get("num_local_experts", 0)

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(H))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight

    def rope(x, cos, sin):
        # non-traditional ("rotate half") RoPE, as mlx.nn.RoPE(traditional=False)
        d = x.shape[-1] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(H, nh * hd, bias=False)
            self.k_proj = nn.Linear(H, nkv * hd, bias=False)
            self.v_proj = nn.Linear(H, nkv * hd, bias=False)
            self.o_proj = nn.Linear(nh * hd, H, bias=False)

        def forward(self, x, cos, sin):
            B, L, _ = x.shape
            q = self.q_proj(x).view(B, L, nh, hd).transpose(1, 2)
            k = self.k_proj(x).view(B, L, nkv, hd).transpose(1, 2)
            v = self.v_proj(x).view(B, L, nkv, hd).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k = k.repeat_interleave(nh // nkv, dim=1)  # head h uses kv head h // (nh/nkv)
            v = v.repeat_interleave(nh // nkv, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=hd**-0.5)
            return self.o_proj(o.transpose(1, 2).reshape(B, L, nh * hd))

    class MLP(nn.Module):
        def __init__(self, inter):
            super().__init__()
            self.gate_proj = nn.Linear(H, inter, bias=False)
            self.up_proj = nn.Linear(H, inter, bias=False)
            self.down_proj = nn.Linear(inter, H, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class MoE(nn.Module):
        """Mixtral routing: top-k of the router logits, softmax over the k."""

        def __init__(self, inter):
            super().__init__()
            self.k = cfg["num_experts_per_tok"]
            self.gate = nn.Linear(H, E, bias=False)
            self.gate_proj = nn.Parameter(torch.randn(E, inter, H) * 0.02)
            self.up_proj = nn.Parameter(torch.randn(E, inter, H) * 0.02)
            self.down_proj = nn.Parameter(torch.randn(E, H, inter) * 0.02)
            self.aux = None

        def forward(self, x):
            shp = x.shape
            x = x.reshape(-1, H)
            logits = self.gate(x)
            vals, idx = torch.topk(logits, self.k, dim=-1)
            w = torch.softmax(vals, dim=-1)
            out = torch.zeros_like(x)
            for e in range(E):
                tok, slot = torch.nonzero(idx == e, as_tuple=True)
                if tok.numel() == 0:
                    continue
                xe = x[tok]
                ye = (F.silu(xe @ self.gate_proj[e].T) * (xe @ self.up_proj[e].T)) @ self.down_proj[e].T
                out.index_add_(0, tok, ye * w[tok, slot, None])
            if self.training:
                # Switch-Transformer load-balancing loss.
                probs = torch.softmax(logits, dim=-1).mean(0)
                frac = torch.zeros(E, device=x.device).index_add_(
                    0, idx.reshape(-1), torch.ones(idx.numel(), device=x.device)
                ) / idx.numel()
                self.aux = E * (frac * probs).sum()
            return out.reshape(shp)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attention()
            self.input_layernorm = RMSNorm()
            self.post_attention_layernorm = RMSNorm()
            if E:
                self.block_sparse_moe = MoE(cfg["intermediate_size"])
            else:
                self.mlp = MLP(cfg["intermediate_size"])

        def forward(self, x, cos, sin):
            h = x + self.self_attn(self.input_layernorm(x), cos, sin)
            ff = self.block_sparse_moe if E else self.mlp
            return h + ff(self.post_attention_layernorm(h))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg["vocab_size"], H)
            self.layers = nn.ModuleList([Block() for _ in range(cfg["num_hidden_layers"])])
            self.norm = RMSNorm()
            self.lm_head = nn.Linear(H, cfg["vocab_size"], bias=False)
            inv = cfg["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            self.register_buffer("inv_freq", inv.float(), persistent=False)
            # init: N(0, 0.02), residual projections scaled by depth
            for n, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02
                    if n.endswith(("o_proj.weight", "down_proj.weight", "down_proj")):
                        std = 0.02 / math.sqrt(2 * cfg["num_hidden_layers"])
                    torch.nn.init.normal_(p, 0.0, std)

        def forward(self, ids):
            L = ids.shape[1]
            pos = torch.arange(L, dtype=torch.float32)
            ang = pos[:, None] * self.inv_freq[None, :]
            cos, sin = ang.cos(), ang.sin()
            x = self.embed_tokens(ids)
            for layer in self.layers:
                x = layer(x, cos, sin)
            return self.lm_head(self.norm(x))

        def aux_loss(self):
            if not E:
                return 0.0
            return sum(l.block_sparse_moe.aux for l in self.layers)

    return Model()


def mlx_state_dict(model, cfg):
    """PyTorch parameters -> mlx-lm parameter names (numpy float32)."""
    out = {}
    for n, p in model.state_dict().items():
        a = p.detach().float().cpu().numpy()
        if n.startswith("lm_head"):
            out[n] = a
            continue
        n = "model." + n
        n = n.replace("block_sparse_moe.gate_proj", "block_sparse_moe.switch_mlp.gate_proj.weight")
        n = n.replace("block_sparse_moe.up_proj", "block_sparse_moe.switch_mlp.up_proj.weight")
        n = n.replace("block_sparse_moe.down_proj", "block_sparse_moe.switch_mlp.down_proj.weight")
        out[n] = a
    return out


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def eval_loss(model, ids, seq_len=SEQ_LEN, batch=16):
    """Mean next-token loss over non-overlapping windows of ``seq_len + 1`` tokens."""
    import torch
    import torch.nn.functional as F

    n = (len(ids) - 1) // seq_len
    x = torch.as_tensor(ids[: n * seq_len + 1])
    windows = [x[i * seq_len: (i + 1) * seq_len + 1] for i in range(n)]
    tot, cnt = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            w = torch.stack(windows[i: i + batch])
            logits = model(w[:, :-1])
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                   reduction="sum").item()
            cnt += w[:, 1:].numel()
    model.train()
    return tot / cnt


def unigram_loss(train_ids, val_ids, V=VOCAB_SIZE):
    import numpy as np

    c = np.bincount(train_ids, minlength=V).astype(np.float64) + 1.0
    p = c / c.sum()
    return float(-np.log(p[val_ids]).mean())


def train_one(key, tok, train_ids, val_ids, out_root, steps=None, verify=True):
    import numpy as np
    import torch
    import torch.nn.functional as F

    cfg = dict(CONFIGS[key])
    hp = dict(TRAIN[key])
    if steps is not None:
        hp["steps"] = steps
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{cfg['name']}] {n_params:,} parameters; hp={hp}", flush=True)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["lr"], betas=(0.9, 0.95), eps=1e-8,
    )
    S, B, T = hp["steps"], hp["batch"], SEQ_LEN
    tids = torch.as_tensor(train_ids)
    t0 = time.time()
    log = []
    for step in range(1, S + 1):
        lr = hp["lr"] * min(1.0, step / hp["warmup"])
        if step > hp["warmup"]:
            frac = (step - hp["warmup"]) / max(1, S - hp["warmup"])
            lr = hp["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(train_ids) - T - 1, size=B)
        batch = torch.stack([tids[s: s + T + 1] for s in starts])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        total = loss + cfg.get("router_aux_loss_coef", 0.0) * model.aux_loss()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == 1 or step == S:
            msg = f"[{cfg['name']}] step {step}/{S} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f}s"
            if step % 100 == 0 or step == S:
                vl = eval_loss(model, val_ids)
                msg += f" val {vl:.4f}"
                log.append((step, loss.item(), vl))
            print(msg, flush=True)
    train_time = time.time() - t0
    model.eval()

    # Final metrics on float16-rounded weights (what is saved).
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    val = eval_loss(model, val_ids)
    # train loss on a fixed deterministic sample of windows, same size as val
    n_win = max(1, (len(val_ids) - 1) // T)
    stride = (len(train_ids) - 1) // n_win
    tr_sample = np.concatenate([train_ids[i * stride: i * stride + T + 1] for i in range(n_win)])
    tr = np.mean([eval_loss(model, tr_sample[i * (T + 1): (i + 1) * (T + 1)]) for i in range(n_win)])
    print(f"[{cfg['name']}] done in {train_time:.0f}s: train {tr:.4f} val {val:.4f}", flush=True)

    out_dir = os.path.join(out_root, cfg["name"])
    save(model, cfg, hp, tok, out_dir, n_params, dict(
        train_loss=float(tr), val_loss=float(val), train_time_s=round(train_time),
        unigram_val_loss=unigram_loss(train_ids, val_ids), log=log,
        train_tokens=int(len(train_ids)), val_tokens=int(len(val_ids)),
    ))
    if verify:
        verify_mlx(model, cfg, out_dir, val_ids)
    return model


def save(model, cfg, hp, tok, out_dir, n_params, metrics):
    import numpy as np
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    weights = {k: v.astype(np.float16) for k, v in mlx_state_dict(model, cfg).items()}
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "mlx"})
    config = {k: v for k, v in cfg.items() if k != "name"}
    config.update(eos_token_id=0, bos_token_id=None, torch_dtype="float16")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    write_tokenizer_config(out_dir)
    write_readme(cfg, hp, out_dir, n_params, metrics)


def torch_version():
    import torch

    return torch.__version__.split("+")[0]


def write_readme(cfg, hp, out_dir, n_params, m):
    moe = "num_local_experts" in cfg
    arch = (
        f"mlx-lm `{cfg['model_type']}`: {cfg['num_hidden_layers']} layers, hidden "
        f"{cfg['hidden_size']}, {cfg['num_attention_heads']} attention heads / "
        f"{cfg['num_key_value_heads']} KV heads (GQA), head_dim {cfg['head_dim']}, "
    )
    if moe:
        arch += (f"sparse MoE FFN with {cfg['num_local_experts']} SwiGLU experts "
                 f"(intermediate {cfg['intermediate_size']}), top-{cfg['num_experts_per_tok']} "
                 "routing (top-k of router logits, softmax over the selected k), ")
    else:
        arch += f"SwiGLU MLP (intermediate {cfg['intermediate_size']}), "
    arch += (f"RoPE (theta {cfg['rope_theta']:g}, non-traditional), RMSNorm (eps "
             f"{cfg['rms_norm_eps']:g}), untied `lm_head`, vocab {cfg['vocab_size']}.")
    names = ("`model.layers.N.block_sparse_moe.gate.weight` (router, [8, 256]) and "
             "`model.layers.N.block_sparse_moe.switch_mlp.{gate,up,down}_proj.weight` "
             "(experts stacked: [E, out, in]) -- mlx-lm's native layout, not the HF "
             "per-expert `experts.E.w1/w2/w3` names" if moe else
             "standard HF/mlx-lm Llama names (`model.layers.N.self_attn.q_proj.weight`, ...)")
    cast = ("import mlx.core as mx\n"
            "model.set_dtype(mx.float32)  # MLX's CPU gather_mm (MoE experts) is float32-only\n"
            if moe else "")
    log = "\n".join(f"| {s} | {t:.3f} | {v:.3f} |" for s, t, v in m["log"])
    text = f"""# {cfg['name']}

A tiny {'Mixture-of-Experts (Mixtral-style)' if moe else 'dense Llama-style'} language model
embedded in mlx-marlin for tests and the default demo (no download needed).
It writes text that looks like CPython's documentation; it is not useful for anything else.

* Architecture: {arch}
* Parameters: {n_params:,} ({os.path.getsize(os.path.join(out_dir, 'model.safetensors')) / 1e6:.2f} MB, float16 safetensors).
* Parameter names: {names}.
* Tokenizer: byte-level BPE (HF `tokenizers`), vocab {cfg['vocab_size']}, `<|endoftext|>` (id 0) is eos; no bos.
* Data: CPython {sys.version.split()[0]} `pydoc_data.topics` + docstrings of a fixed list of stdlib
  modules (`mlx_marlin/_tiny_data.py`); documents with `sha256(key) % 20 == 0` held out
  (`mlx_marlin/models/heldout.txt`). {m['train_tokens']:,} training tokens, {m['val_tokens']:,} held-out tokens.
* Training: PyTorch {torch_version()} (CPU, 1 thread), AdamW (lr {hp['lr']:g}, betas 0.9/0.95, wd {hp['wd']}), warmup {hp['warmup']} steps + cosine to 10%,
  {hp['steps']} steps x {hp['batch']} x {SEQ_LEN} tokens{', router load-balancing loss 0.01' if moe else ''}, seed {SEED}; {m['train_time_s']} s.
* Loss (nats/token, float16 weights, {SEQ_LEN}-token windows): train {m['train_loss']:.3f}, **validation {m['val_loss']:.3f}**
  (unigram baseline on validation: {m['unigram_val_loss']:.3f}).

| step | train loss (batch) | val loss |
|-----:|-----:|-----:|
{log}

Reproduce: `python examples/train_tiny.py --model {'moe' if moe else 'llama'}`
(`pip install torch tokenizers numpy safetensors`; `mlx-lm` to verify).

```python
from mlx_lm import load, generate
model, tokenizer = load("mlx_marlin/models/{cfg['name']}")
{cast}print(generate(model, tokenizer, prompt="The", max_tokens=40))
```
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


def verify_mlx(model, cfg, out_dir, val_ids):
    """Load with mlx_lm (strict), compare logits with PyTorch, print a sample."""
    try:
        import mlx.core as mx
        import mlx_lm
        from mlx.utils import tree_map
    except ImportError:
        print("mlx-lm not installed: skipping verification")
        return
    import numpy as np
    import torch

    m, tokenizer = mlx_lm.load(out_dir)  # load_model(strict=True) inside
    m.update(tree_map(lambda p: p.astype(mx.float32), m.parameters()))
    ids = np.asarray(val_ids[:96])
    ref = model(torch.as_tensor(ids)[None]).detach().numpy()
    got = np.array(m(mx.array(ids)[None]))
    diff = float(np.abs(ref - got).max())
    print(f"[{cfg['name']}] max |logit(torch) - logit(mlx)| = {diff:.2e}", flush=True)
    assert diff < 1e-2, diff
    # (float32: MLX's CPU gather_mm, used by mixtral's SwitchGLU, is float32-only)
    text = mlx_lm.generate(m, tokenizer, prompt="The", max_tokens=40)
    print(f"[{cfg['name']}] sample: The{text!r}", flush=True)
    with open(os.path.join(out_dir, "README.md"), "a") as f:
        f.write(
            f"\nVerified with mlx-lm {mlx_lm.__version__} (mlx {mx.__version__}): `mlx_lm.load` (strict) "
            f"loads every weight; max |logit| difference vs. the PyTorch training forward on "
            f"96 held-out tokens, float32: {diff:.1e}. Greedy sample "
            f"(`generate(model, tokenizer, prompt=\"The\", max_tokens=40)`, float32):\n\n"
            f"```\nThe{text}\n```\n"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["llama", "moe", "all"], default="all")
    ap.add_argument("--steps", type=int, default=None, help="override steps per model")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is faster than 2 on a busy 2-core machine)")
    ap.add_argument("--out", default=os.path.join(ROOT, "mlx_marlin", "models"))
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    np.random.seed(SEED)

    train_docs, held_docs = _tiny_data.split_documents()
    train_text = _tiny_data.train_text()
    held_text = _tiny_data.heldout_text(recompute=True)
    print(f"data: {len(train_docs)} train docs ({len(train_text):,} chars, sha256 "
          f"{hashlib.sha256(train_text.encode()).hexdigest()[:16]}), {len(held_docs)} held-out docs "
          f"({len(held_text):,} chars, sha256 {hashlib.sha256(held_text.encode()).hexdigest()[:16]})")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(held_text)

    t0 = time.time()
    tok = train_tokenizer(train_docs)
    print(f"tokenizer sha256 {hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]}")
    train_ids, val_ids = encode(tok, train_text), encode(tok, held_text)
    print(f"tokenizer: {time.time() - t0:.1f}s; {len(train_ids):,} train tokens "
          f"({len(train_text) / len(train_ids):.2f} chars/token), {len(val_ids):,} val tokens; "
          f"unigram val loss {unigram_loss(train_ids, val_ids):.3f}", flush=True)

    keys = ["llama", "moe"] if args.model == "all" else [args.model]
    for key in keys:
        train_one(key, tok, train_ids, val_ids, args.out, steps=args.steps,
                  verify=not args.no_verify)


if __name__ == "__main__":
    main()
