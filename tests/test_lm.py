import json

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
import numpy as np
import pytest

import mlx_marlin as mm
import mlx_marlin.convert
from reference import activation, to_np

mlx_lm = pytest.importorskip("mlx_lm")
from lm_fixtures import llama_config, make_model_dir  # noqa: E402


def test_marlin_linear_matches_dequantized_dense(rng):
    lin = nn.Linear(128, 72, bias=True)
    layer = mm.MarlinLinear.from_linear(lin, group_size=32)
    dense = nn.Linear(128, 72, bias=True)
    dense.weight = mm.dequantize(layer.weight, layer.scales, 32)
    dense.bias = lin.bias
    x = mx.array(rng.standard_normal((3, 5, 128)).astype(np.float32))
    np.testing.assert_allclose(to_np(layer(x)), to_np(dense(x)), rtol=1e-5, atol=1e-5)
    # Packed weights stay frozen; the bias can train.
    layer.unfreeze()
    assert set(k for k, _ in tree_flatten(layer.trainable_parameters())) == {"bias"}


def test_marlin_linear_from_quantized_mxfp4(rng):
    lin = nn.Linear(64, 40, bias=False)
    ql = nn.QuantizedLinear.from_linear(lin, group_size=32, bits=4, mode="mxfp4")
    layer = mm.MarlinLinear.from_quantized(ql, strict=True)
    x = mx.array(rng.standard_normal((4, 64)).astype(np.float32))
    np.testing.assert_allclose(to_np(layer(x)), to_np(ql(x)), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="mxfp4"):
        mm.MarlinLinear.from_quantized(nn.QuantizedLinear.from_linear(lin, group_size=32, bits=4))


def _dequantized_copy(model):
    """The same architecture with every FP4 layer replaced by its exact dense equivalent."""
    layers = []
    for path, m in model.named_modules():
        if isinstance(m, mm.MarlinLinear):
            d = nn.Linear(m.input_dims, m.output_dims, bias="bias" in m)
            d.weight = mm.dequantize(m.weight, m.scales, m.group_size)
            if "bias" in m:
                d.bias = m.bias
            layers.append((path, d))
    from mlx.utils import tree_unflatten

    model.update_modules(tree_unflatten(layers))
    return model


def test_quantize_model_convert_load_generate_round_trip(tmp_path):
    src = make_model_dir(tmp_path / "src", llama_config())
    model, tokenizer = mlx_lm.load(str(src))
    tokens = mx.array([[5, 17, 33, 2, 90, 41]])
    ref_logits = model(tokens)

    out, qmodel, qconfig = mm.convert.convert(src, tmp_path / "fp4", group_size=32, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["method"] == "mlx_marlin_fp4" and cfg["quantization"]["group_size"] == 32
    assert len(cfg["quantization"]["layers"]) == 14  # 7 linears x 2 layers; lm_head kept
    assert (out / "tokenizer.json").exists()

    loaded, tok = mm.load(out)
    assert isinstance(loaded.model.layers[0].self_attn.q_proj, mm.MarlinLinear)
    assert type(loaded.lm_head) is mm.DenseLinear  # kept unquantized, on the dense kernel
    # Bit-exact save/load round trip of every parameter.
    from mlx.utils import tree_flatten

    saved = dict(tree_flatten(qmodel.parameters()))
    for k, v in tree_flatten(loaded.parameters()):
        assert v.dtype == saved[k].dtype and mx.array_equal(v, saved[k]).item(), k

    q_logits = loaded(tokens)
    # FP4 model == its dequantized-dense twin (same function, up to fp32 rounding) ...
    deq_logits = _dequantized_copy(mm.load(out)[0])(tokens)
    np.testing.assert_allclose(to_np(q_logits), to_np(deq_logits), rtol=1e-4, atol=1e-4)
    # ... and as close to the original as MLX's own FP4 (mxfp4, group 32) of the same layers.
    def rel(logits):
        return np.linalg.norm(to_np(logits) - to_np(ref_logits)) / np.linalg.norm(to_np(ref_logits))

    mx_model, _ = mlx_lm.load(str(src))
    nn.quantize(mx_model, group_size=32, bits=4, mode="mxfp4", class_predicate=lambda p, m: isinstance(m, nn.Linear) and p != "lm_head")
    assert rel(q_logits) < 1.25 * rel(mx_model(tokens))

    text = mlx_lm.generate(loaded, tok, prompt="The list", max_tokens=8, verbose=False)
    assert isinstance(text, str) and len(tok.encode(text)) > 0


def test_load_refuses_other_quantization(tmp_path):
    src = make_model_dir(tmp_path / "src", llama_config())
    cfg = json.loads((src / "config.json").read_text())
    with pytest.raises(ValueError, match="no 'quantization' entry"):
        mm.load(src)
    cfg["quantization"] = {"group_size": 64, "bits": 4, "mode": "affine"}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="quantization method 'affine'"):
        mm.load(src)
    with pytest.raises(FileNotFoundError):
        mm.load(tmp_path / "missing")


def test_quantize_model_predicate_and_bad_args():
    from mlx_lm.models import llama

    model = llama.Model(llama.ModelArgs.from_dict(llama_config()))
    _, q = mm.quantize_model(model, group_size=64, predicate=lambda p, m: p.endswith("q_proj"))
    assert q["layers"] == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(ValueError, match="group_size"):
        mm.quantize_model(model, group_size=48)


def test_marlin_switch_glu_matches_mlx_lm_switch_glu(rng):
    from mlx_lm.models.switch_layers import SwitchGLU

    d, hidden, e, k = 64, 96, 6, 2
    glu = SwitchGLU(d, hidden, e)
    marlin = mm.MarlinSwitchGLU.from_switch_glu(glu, group_size=32)
    # mlx-lm's layer on the exactly dequantized weights computes the same function.
    for name in ("gate_proj", "up_proj", "down_proj"):
        q = getattr(marlin, name)
        getattr(glu, name).weight = mm.dequantize(q.weight, q.scales, 32)
    for lead in ((5,), (2, 3), (70,)):  # 70*2 >= 64 takes mlx-lm's sorted path
        x = mx.array(rng.standard_normal((*lead, d)).astype(np.float32))
        idx = mx.array(rng.integers(0, e, size=(*lead, k)).astype(np.uint32))
        ours, ref = marlin(x, idx), glu(x, idx)
        assert ours.shape == ref.shape == (*lead, k, d)
        np.testing.assert_allclose(to_np(ours), to_np(ref), rtol=1e-4, atol=1e-4)


def _switch_glu_with_dequantized_weights(marlin, **kwargs):
    """mlx-lm's SwitchGLU holding `marlin`'s exactly dequantized weights and its biases."""
    from mlx_lm.models.switch_layers import SwitchGLU

    g = marlin.gate_proj
    glu = SwitchGLU(g.input_dims, g.output_dims, g.num_experts, bias="bias" in g, **kwargs)
    for name in ("gate_proj", "up_proj", "down_proj"):
        q, d = getattr(marlin, name), getattr(glu, name)
        d.weight = mm.dequantize(q.weight, q.scales, q.group_size)
        if "bias" in q:
            d.bias = q.bias
    return glu


def _gelu_glu(up, gate):
    return nn.gelu(gate) * up


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ["swiglu", "swiglu_oai", "gelu_glu"])
def test_marlin_switch_glu_keeps_activation_and_bias(rng, activation, bias):
    from mlx_lm.models.activations import SwigluOAI
    from mlx_lm.models.switch_layers import SwitchGLU, SwiGLU

    act = {"swiglu": SwiGLU(), "swiglu_oai": SwigluOAI(), "gelu_glu": _gelu_glu}[activation]
    d, hidden, e, k = 64, 96, 5, 2
    src = SwitchGLU(d, hidden, e, activation=act, bias=bias)
    if bias:
        for name in ("gate_proj", "up_proj", "down_proj"):
            p = getattr(src, name)
            p.bias = mx.array(rng.standard_normal(p.bias.shape).astype(np.float32))
    marlin = mm.MarlinSwitchGLU.from_switch_glu(src, group_size=32)
    assert marlin.activation is act
    ref = _switch_glu_with_dequantized_weights(marlin, activation=act)
    for lead in ((5,), (70,)):  # 70 * 2 >= 64 takes mlx-lm's sorted path
        # Inputs large enough that SwigluOAI's clamps (gate <= 7, |up| <= 7) bite.
        x = mx.array(rng.standard_normal((*lead, d)).astype(np.float32) * 12)
        idx = mx.array(rng.integers(0, e, size=(*lead, k)).astype(np.uint32))
        ours, want = marlin(x, idx), ref(x, idx)
        assert ours.shape == want.shape == (*lead, k, d)
        scale = np.abs(to_np(want)).max()
        np.testing.assert_allclose(to_np(ours), to_np(want), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("bias", [False, True])
def test_marlin_switch_linear_bias_comes_before_the_activation(rng, bias):
    from mlx_lm.models.switch_layers import SwitchLinear

    src = SwitchLinear(64, 40, 3, bias=bias)
    if bias:
        src.bias = mx.array(rng.standard_normal(src.bias.shape).astype(np.float32) * 3)
    layer = mm.MarlinSwitchLinear.from_switch_linear(src, 32)
    x = mx.array(rng.standard_normal((7, 64)).astype(np.float32))
    idx = mx.array(rng.integers(0, 3, size=(7, 2)).astype(np.uint32))
    w = to_np(mm.dequantize(layer.weight, layer.scales, 32))  # [E, N, K]
    ids = np.array(idx).astype(np.int64)
    pre = np.einsum("tk,tsnk->tsn", to_np(x), w[ids]) + (to_np(src.bias)[ids] if bias else 0)
    for name in ("relu", "silu", "gelu", "gelu_approx"):
        got = to_np(layer.apply_experts(x, idx, activation=name))
        np.testing.assert_allclose(got, activation(pre, name), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_marlin_switch_layers_under_shapeless_compile(rng, bias):
    """MarlinSwitchGLU, and MarlinSwitchLinear on mlx-lm's expanded input [..., 1, 1, K],
    under mx.compile(shapeless=True) with changing leading shapes: moe_gemm takes them as
    they are (no reshape whose target the trace would fix).  Equal to the uncompiled
    layers and close to mlx-lm's SwitchGLU on the dequantized weights."""
    from mlx_lm.models.switch_layers import SwitchGLU

    d, hidden, e, k = 64, 96, 5, 2
    src = SwitchGLU(d, hidden, e, bias=bias)
    if bias:
        for name in ("gate_proj", "up_proj", "down_proj"):
            p = getattr(src, name)
            p.bias = mx.array(rng.standard_normal(p.bias.shape).astype(np.float32))
    marlin = mm.MarlinSwitchGLU.from_switch_glu(src, group_size=32)
    ref = _switch_glu_with_dequantized_weights(marlin)
    mx.eval(marlin.parameters(), ref.parameters())
    c_glu = mx.compile(marlin, shapeless=True)
    up = marlin.up_proj
    c_up = mx.compile(lambda x, idx: up(mx.expand_dims(x, (-2, -3)), idx), shapeless=True)
    for lead in ((3,), (2, 3), (1, 5), (4, 1)):
        x = mx.array(rng.standard_normal((*lead, d)).astype(np.float32))
        idx = mx.array(rng.integers(0, e, size=(*lead, k)).astype(np.uint32))
        ours, eager, want = c_glu(x, idx), marlin(x, idx), ref(x, idx)
        assert ours.shape == want.shape == (*lead, k, d)
        np.testing.assert_array_equal(to_np(ours), to_np(eager))
        np.testing.assert_allclose(to_np(ours), to_np(want), rtol=1e-4, atol=1e-4)
        y = c_up(x, idx)
        assert y.shape == (*lead, k, 1, hidden)
        np.testing.assert_array_equal(to_np(y), to_np(up(mx.expand_dims(x, (-2, -3)), idx)))


@pytest.mark.parametrize("mode", ["mxfp4", "nvfp4"])
def test_marlin_switch_glu_from_mlx_quantized_experts(rng, mode):
    from mlx_lm.models.activations import SwigluOAI
    from mlx_lm.models.switch_layers import SwitchGLU

    d, hidden, e, k = 64, 96, 4, 2
    glu = SwitchGLU(d, hidden, e, activation=SwigluOAI(), bias=True)
    for name in ("gate_proj", "up_proj", "down_proj"):
        p = getattr(glu, name)
        p.weight = mx.array(rng.standard_normal(p.weight.shape).astype(np.float32) * 0.1)
        p.bias = mx.array(rng.standard_normal(p.bias.shape).astype(np.float32))
        setattr(glu, name, p.to_quantized(group_size={"mxfp4": 32, "nvfp4": 16}[mode], bits=4, mode=mode))
    marlin = mm.MarlinSwitchGLU.from_switch_glu(glu, group_size=32)
    assert isinstance(marlin.activation, SwigluOAI)
    for name in ("gate_proj", "up_proj", "down_proj"):
        q, src = getattr(marlin, name), getattr(glu, name)
        assert q.group_size == 32 and q.scales.dtype == mx.bfloat16
        mine = to_np(mm.dequantize(q.weight, q.scales, 32))
        theirs = to_np(mx.dequantize(src.weight, src.scales, group_size=src.group_size, bits=4, mode=mode,
                                     dtype=mx.float32))
        if mode == "mxfp4":  # E8M0 scales at group 32 are bfloat16 scales: the same weights, bit for bit
            np.testing.assert_array_equal(mine, theirs)
        else:  # one scale per 32 where nvfp4 has one per 16: the smaller half re-encoded
            packed, scales = mm.from_mlx(src.weight, src.scales, mode, 32)
            np.testing.assert_array_equal(to_np(q.weight), to_np(packed))
            np.testing.assert_array_equal(to_np(q.scales), to_np(scales))
            assert np.abs(mine - theirs).max() <= 0.5 * np.abs(theirs).max()
    x = mx.array(rng.standard_normal((9, d)).astype(np.float32))
    idx = mx.array(rng.integers(0, e, size=(9, k)).astype(np.uint32))
    ours, ref = marlin(x, idx), _switch_glu_with_dequantized_weights(marlin, activation=SwigluOAI())(x, idx)
    np.testing.assert_allclose(to_np(ours), to_np(ref), rtol=1e-4, atol=1e-5)
    if mode == "mxfp4":
        np.testing.assert_allclose(to_np(ours), to_np(glu(x, idx)), rtol=1e-3, atol=1e-4)


def _mxfp4_source_dir(path, src):
    """`src` (unquantized) as a model that ships in MXFP4, the way gpt-oss does: experts in
    mxfp4; here the attention projections also 8-bit affine, as mlx-community's
    "MXFP4-Q8" conversions have them."""
    from mlx.utils import tree_flatten as flatten
    from mlx_lm.models.switch_layers import SwitchLinear
    from mlx_lm.utils import load_config, save_config, save_model
    import shutil

    model, _ = mlx_lm.load(str(src))
    for i, layer in enumerate(model.layers):  # sinks that differ per head and matter
        layer.self_attn.sinks = mx.array(np.random.default_rng(i).standard_normal(layer.self_attn.sinks.shape) * 2,
                                         dtype=mx.float32)
    quantization = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    attn = {p for p, m in model.named_modules() if p.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))}
    for p in sorted(attn):
        quantization[p] = {"group_size": 64, "bits": 8, "mode": "affine"}
    nn.quantize(model, class_predicate=lambda p, m: quantization[p] if p in attn else isinstance(m, SwitchLinear),
                **{k: quantization[k] for k in ("group_size", "bits", "mode")})
    path.mkdir()
    save_model(path, model)
    config = load_config(src)
    config["quantization"] = quantization
    save_config(config, path / "config.json")
    for f in src.iterdir():
        if f.name.startswith("tokenizer"):
            shutil.copy(f, path / f.name)
    assert any(k.endswith("experts.gate_proj.scales") for k, _ in flatten(model.parameters()))
    return path


def test_gpt_oss_mxfp4_model_convert_load_generate(tmp_path):
    """The flagship MXFP4 model family: experts with biases and SwigluOAI, attention sinks,
    sliding windows.  Its mxfp4 experts convert exactly; 8-bit layers stay MLX's."""
    from lm_fixtures import gpt_oss_config
    from mlx_lm.models.activations import SwigluOAI

    src = _mxfp4_source_dir(tmp_path / "mxfp4", make_model_dir(tmp_path / "src", gpt_oss_config()))
    reference, _ = mlx_lm.load(str(src))
    tokens = mx.array([[3, 8, 21, 55, 13, 2, 7, 9, 30]])  # longer than the sliding window
    ref = reference(tokens)

    # Only the experts: the same function as MLX's mxfp4 experts, up to summation order.
    experts_only, _ = mlx_lm.load(str(src))
    _, q = mm.quantize_model(experts_only, predicate=lambda p, m: p.endswith("experts"), group_size=32)
    assert q["layers"] == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    np.testing.assert_allclose(to_np(experts_only(tokens)), to_np(ref), rtol=2e-3, atol=2e-3)

    out, qmodel, qconfig = mm.convert.convert(src, tmp_path / "fp4", progress=False)
    assert qconfig["group_size"] == 32 and qconfig["format_version"] == 2
    assert set(qconfig["layers"]) == {"model.layers.0.mlp.experts", "model.layers.1.mlp.experts"}
    assert qconfig["mlx_quantized"]["model.layers.1.self_attn.o_proj"] == {"group_size": 64, "bits": 8,
                                                                          "mode": "affine"}
    # From here on MLX's attention (convert chose the CPU route to mlx_marlin.attention,
    # which the block below checks on its own).
    mm.lm.use_marlin_attention(False)
    before = qmodel(tokens)
    loaded, tok = mm.load(out)
    experts = loaded.model.layers[1].mlp.experts
    assert isinstance(experts, mm.MarlinSwitchGLU) and isinstance(experts.activation, SwigluOAI)
    # The 8-bit attention stays MLX-quantized, its product through mm.affine_linear.
    assert type(loaded.model.layers[0].self_attn.q_proj) is mm.AffineLinear
    assert type(qmodel.model.layers[1].self_attn.o_proj) is mm.AffineLinear
    np.testing.assert_array_equal(to_np(loaded(tokens)), to_np(before))
    np.testing.assert_allclose(to_np(before), to_np(ref), rtol=2e-3, atol=2e-3)
    text = mlx_lm.generate(loaded, tok, prompt="The list", max_tokens=12, verbose=False)
    assert isinstance(text, str)

    # Its attention (sinks, sliding-window masks, a rotating KV cache) through
    # mlx_marlin.attention: the same logits and the same greedy tokens.
    calls = []
    original_attention = mm._ext.attention

    def counting_attention(*args, **kwargs):
        calls.append(kwargs.get("sinks") is not None)
        return original_attention(*args, **kwargs)

    try:
        mm.lm.use_marlin_attention(True)
        mm._ext.attention = counting_attention
        np.testing.assert_allclose(to_np(loaded(tokens)), to_np(before), rtol=1e-4, atol=1e-4)
        assert calls and all(calls)
        marlin_text = mlx_lm.generate(loaded, tok, prompt="The list", max_tokens=12, verbose=False)
    finally:
        mm._ext.attention = original_attention
        mm.lm.use_marlin_attention(False)
    assert marlin_text == text


def _hf_gpt_oss_dir(path, src):
    """`src` written the way OpenAI's gpt-oss checkpoints ship on Hugging Face: each
    layer's experts as MXFP4 `*_blocks` (uint8 [E, N, K/32, 16]) + `*_scales` (E8M0
    uint8 [E, N, K/32]), gate and up interleaved along N in `gate_up_proj*`, and a
    `quantization_config` naming mxfp4 (mlx-lm's sanitize unpacks this)."""
    from mlx_lm.utils import load_config, save_config
    import shutil

    weights = mx.load(str(src / "model.safetensors"))
    out = {}
    for key, value in weights.items():
        if ".mlp.experts." not in key:
            out[key] = value
            continue
        base, proj, kind = key.rsplit(".", 2)  # ...experts, gate_proj, weight
        if proj == "up_proj":
            continue
        up = weights[key.replace("gate_proj", "up_proj")]
        if proj == "gate_proj":  # interleave: gate rows at even N, up rows at odd N
            if kind == "weight":
                value = mx.stack([value, up], axis=-2).reshape(value.shape[0], -1, value.shape[-1])
            else:
                value = mx.stack([value, up], axis=-1).reshape(value.shape[0], -1)
            proj = "gate_up_proj"
        if kind == "bias":
            out[f"{base}.{proj}_bias"] = value
        else:
            wq, scales = mx.quantize(value, group_size=32, bits=4, mode="mxfp4")
            e, n, _ = wq.shape
            out[f"{base}.{proj}_blocks"] = wq.view(mx.uint8).reshape(e, n, -1, 16)
            out[f"{base}.{proj}_scales"] = scales
    path.mkdir()
    mx.save_safetensors(str(path / "model.safetensors"), out)
    config = load_config(src)
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["router", "lm_head"]}
    save_config(config, path / "config.json")
    for f in src.iterdir():
        if f.name.startswith("tokenizer"):
            shutil.copy(f, path / f.name)
    return path


def test_gpt_oss_hugging_face_checkpoint_converts_exactly(tmp_path):
    """`mlx-marlin-convert` on gpt-oss as it ships: the experts' E2M1 codes and E8M0
    scales are kept bit for bit (group 32, bfloat16 scales)."""
    from lm_fixtures import gpt_oss_config

    src = _hf_gpt_oss_dir(tmp_path / "hf", make_model_dir(tmp_path / "src", gpt_oss_config()))
    reference, _ = mlx_lm.load(str(src))  # mlx-lm: experts as MLX mxfp4 layers
    mlp = reference.model.layers[1].mlp.experts
    assert getattr(mlp.gate_proj, "mode", None) == "mxfp4"
    original = mx.load(str(tmp_path / "src" / "model.safetensors"))  # the fixture is what it claims
    for name in ("gate_proj", "up_proj"):
        key = f"model.layers.1.mlp.experts.{name}"
        wq, scales = mx.quantize(original[f"{key}.weight"], group_size=32, bits=4, mode="mxfp4")
        np.testing.assert_array_equal(np.array(getattr(mlp, name).weight), np.array(wq))
        np.testing.assert_array_equal(to_np(getattr(mlp, name).bias), to_np(original[f"{key}.bias"]))
    out, qmodel, qconfig = mm.convert.convert(src, tmp_path / "fp4", progress=False)
    assert qconfig["group_size"] == 32 and "mlx_quantized" not in qconfig
    loaded, _ = mm.load(out)
    mine = loaded.model.layers[1].mlp.experts
    for name in ("gate_proj", "up_proj", "down_proj"):
        q, theirs = getattr(mine, name), getattr(mlp, name)
        np.testing.assert_array_equal(
            to_np(mm.dequantize(q.weight, q.scales, 32)),
            to_np(mx.dequantize(theirs.weight, theirs.scales, group_size=32, bits=4, mode="mxfp4", dtype=mx.float32)))
        np.testing.assert_array_equal(to_np(q.bias), to_np(theirs.bias))
    tokens = mx.array([[3, 8, 21, 55, 13, 2, 7, 9, 30]])
    ref = reference(tokens)
    rel = np.linalg.norm(to_np(loaded(tokens)) - to_np(ref)) / np.linalg.norm(to_np(ref))
    assert rel < 0.05, rel  # the attention projections are newly FP4; the experts are exact


def test_moe_model_convert_load_generate(tmp_path):
    from lm_fixtures import mixtral_config

    src = make_model_dir(tmp_path / "src", mixtral_config())
    model, _ = mlx_lm.load(str(src))
    tokens = mx.array([[3, 8, 21, 55, 13, 2, 7]])
    ref = model(tokens)
    out, qmodel, qconfig = mm.convert.convert(src, tmp_path / "fp4", group_size=32, progress=False)
    assert any(p.endswith("switch_mlp") for p in qconfig["layers"])
    assert not any(p.endswith(".gate") for p in qconfig["layers"])  # routers stay unquantized
    loaded, tok = mm.load(out)
    assert isinstance(loaded.model.layers[0].block_sparse_moe.switch_mlp, mm.MarlinSwitchGLU)
    q_logits = loaded(tokens)
    mx_model, _ = mlx_lm.load(str(src))
    nn.quantize(mx_model, group_size=32, bits=4, mode="mxfp4",
                class_predicate=lambda p, m: hasattr(m, "to_quantized") and p != "lm_head" and not p.endswith(".gate"))

    def rel(logits):
        return np.linalg.norm(to_np(logits) - to_np(ref)) / np.linalg.norm(to_np(ref))

    assert rel(q_logits) < 1.25 * rel(mx_model(tokens))
    text = mlx_lm.generate(loaded, tok, prompt="The list", max_tokens=6, verbose=False)
    assert isinstance(text, str)


def test_use_marlin_attention_routes_mlx_lm_attention(tmp_path):
    from mlx_lm.models import base, llama

    src = make_model_dir(tmp_path / "src", dict(llama_config(), hidden_size=256, num_attention_heads=4,
                                                num_key_value_heads=2))  # head dim 64
    model, _ = mlx_lm.load(str(src))
    tokens = mx.array([[4, 9, 16, 25, 36, 49, 64, 81]])
    ref = model(tokens)
    calls = []
    original_attention = mm.attention

    def counting_attention(*args, **kwargs):
        calls.append(kwargs.get("mask"))
        return original_attention(*args, **kwargs)

    try:
        mm.lm.use_marlin_attention(True)
        assert llama.scaled_dot_product_attention is mm.lm._marlin_sdpa
        import mlx_marlin._ext as ext

        saved, ext.attention = ext.attention, counting_attention
        try:
            out = model(tokens)
        finally:
            ext.attention = saved
        assert len(calls) == 2 and calls[0] == "causal"
        np.testing.assert_allclose(to_np(out), to_np(ref), rtol=1e-4, atol=1e-4)
    finally:
        mm.lm.use_marlin_attention(False)
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-moe"])
def test_embedded_model_fp4_quality_and_generation(tmp_path, name):
    """The embedded models: convert -> load -> generate, and FP4 costs little held-out loss."""
    import mlx_marlin.eval as ev
    from mlx_marlin.generate import embedded_model_dir

    src = embedded_model_dir(name)
    tokens = mlx_lm.load(str(src))[1].encode(ev.heldout_text())[:512]
    original, _ = mlx_lm.load(str(src))
    original.set_dtype(mx.float32)
    out, _, qconfig = mm.convert.convert(src, tmp_path / name, group_size=64, progress=False)
    model, tok = mm.load(out)
    assert any(isinstance(m, (mm.MarlinLinear, mm.MarlinSwitchGLU)) for _, m in model.named_modules())
    ppl_fp16, ppl_fp4 = ev.perplexity(original, tokens, 256), ev.perplexity(model, tokens, 256)
    assert ppl_fp4 < ppl_fp16 * 1.15, (ppl_fp16, ppl_fp4)
    text = mlx_lm.generate(model, tok, prompt="The list", max_tokens=12, verbose=False)
    assert len(tok.encode(text)) >= 3


def test_python_api_bad_input(tmp_path):
    with pytest.raises(ValueError, match="input_dims"):
        mm.MarlinLinear(100, 16, group_size=64)
    with pytest.raises(ValueError, match="input_dims"):
        mm.MarlinSwitchLinear(48, 16, 4, group_size=32)
    with pytest.raises(ValueError, match="input_dims"):
        mm.MarlinSwitchGLU(64, 40, 4, group_size=32)  # the down projection's K = 40
    for bad in (0, 16, 32.0):
        with pytest.raises(ValueError, match="group_size"):
            mm.MarlinLinear(64, 32, group_size=bad)
    with pytest.raises(ValueError, match="scale_dtype"):
        mm.MarlinSwitchLinear(64, 32, 2, group_size=32, scale_dtype=mx.float32)
    good = {"method": "mlx_marlin_fp4", "group_size": 64, "layers": []}
    for q, match in (("fp4", "must be an object"), ({**good, "format_version": "2"}, "format_version"),
                     ({**good, "format_version": None}, "format_version"), ({**good, "group_size": 0}, "group_size"),
                     ({**good, "group_size": 16}, "group_size"), ({**good, "scale_dtype": "float32"}, "scale_dtype"),
                     ({k: v for k, v in good.items() if k != "layers"}, "layers"),
                     ({**good, "mlx_quantized": {"lm_head": {"bits": 8}}}, "mlx_quantized")):
        with pytest.raises(ValueError, match=match):
            mm.lm.check_quantization_config({"quantization": q})
    assert mm.lm.check_quantization_config({"quantization": good}) == good
    from mlx_lm.models import llama

    model = llama.Model(llama.ModelArgs.from_dict(llama_config()))
    with pytest.raises(ValueError, match="scale_dtype"):
        mm.quantize_model(model, scale_dtype=mx.float32)
    with pytest.raises(FileNotFoundError, match="config.json"):
        mm.convert.convert(tmp_path / "nothing", tmp_path / "out")
    from mlx_lm.models.switch_layers import SwitchGLU, SwitchLinear

    affine = SwitchGLU(64, 64, 2)
    affine.up_proj = affine.up_proj.to_quantized(group_size=64, bits=4)
    with pytest.raises(ValueError, match="up_proj.*affine"):
        mm.MarlinSwitchGLU.from_switch_glu(affine)
    with pytest.raises(ValueError, match="mxfp4"):
        mm.MarlinSwitchLinear.from_quantized(affine.up_proj)
    with pytest.raises(ValueError, match="from_quantized"):
        mm.MarlinSwitchLinear.from_switch_linear(affine.up_proj)
    with pytest.raises(ValueError, match="activation"):
        mm.MarlinSwitchLinear.from_switch_linear(SwitchLinear(64, 32, 2), 32).apply_experts(
            mx.zeros((1, 64)), mx.zeros((1, 1), dtype=mx.uint32), activation="tanh")


@pytest.mark.parametrize("tied", [False, True])
def test_unquantized_layers_run_on_the_dense_kernel(tmp_path, tied):
    """convert / load leave the output head unquantized and run it (or a tied head's
    Embedding.as_linear) through dense_linear: same parameters, and the same logits as
    the model with MLX's own nn.Linear / nn.Embedding put back."""
    src = make_model_dir(tmp_path / "src", dict(llama_config(), tie_word_embeddings=tied))
    out, qmodel, _ = mm.convert.convert(src, tmp_path / "fp4", group_size=32, progress=False)
    model, _ = mm.load(out)
    assert type(model.model.embed_tokens) is mm.DenseEmbedding
    assert tied == ("lm_head" not in model)
    if not tied:
        assert type(model.lm_head) is mm.DenseLinear
    tokens = mx.array([[5, 17, 33, 2, 90, 41]])
    logits = model(tokens)
    np.testing.assert_array_equal(to_np(logits), to_np(qmodel(tokens)))

    plain = []  # MLX's layers back in place, sharing the arrays
    for path, m in model.named_modules():
        if type(m) is mm.DenseLinear:
            d = nn.Linear(m.weight.shape[1], m.weight.shape[0], bias="bias" in m)
            d.update(m.parameters())
            plain.append((path, d))
        elif type(m) is mm.DenseEmbedding:
            e = nn.Embedding(*m.weight.shape)
            e.update(m.parameters())
            plain.append((path, e))
    from mlx.utils import tree_unflatten

    model.update_modules(tree_unflatten(plain))
    assert type(model.model.embed_tokens) is nn.Embedding
    np.testing.assert_allclose(to_np(model(tokens)), to_np(logits), rtol=1e-4, atol=1e-4)


def test_use_dense_kernels_on_an_unquantized_model(rng):
    """Any model: every exact nn.Linear / nn.Embedding (and affine nn.QuantizedLinear) is
    swapped, subclasses are left, the arrays are shared (not copied) and frozen parameters
    stay frozen."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 24)
            self.a = nn.Linear(24, 30)
            self.b = nn.Linear(30, 24, bias=False)
            self.q = nn.QuantizedLinear(64, 8)

        def __call__(self, t):
            return self.emb.as_linear(self.b(nn.relu(self.a(self.emb(t)))))

    net = Net()
    net.b.freeze()
    t = mx.array([[1, 4, 9]])
    expect = net(t)
    weight = net.a.weight
    assert mm.use_dense_kernels(net) is net
    assert type(net.a) is mm.DenseLinear and type(net.b) is mm.DenseLinear and type(net.emb) is mm.DenseEmbedding
    assert type(net.q) is mm.AffineLinear
    assert net.a.weight is weight
    assert "b" not in net.trainable_parameters() or not net.trainable_parameters()["b"]
    np.testing.assert_allclose(to_np(net(t)), to_np(expect), rtol=1e-5, atol=1e-5)


def test_load_routes_cpu_attention_unless_the_user_chose(tmp_path):
    """mm.load (and quantize_model) send mlx-lm's attention on the CPU through
    mlx_marlin.attention (MLX's is built from reference-BLAS matmuls there) with the same
    logits; a route the user chose before (use_marlin_attention(False)) is kept.  The
    Metal-emulator build leaves the CPU route off (its CPU stream stands in for a GPU)."""
    from mlx_lm.models import base, llama

    src = make_model_dir(tmp_path / "src", dict(llama_config(), hidden_size=256, num_attention_heads=4,
                                                num_key_value_heads=2))  # head dim 64
    out, _, _ = mm.convert.convert(src, tmp_path / "fp4", group_size=32, progress=False)
    tokens = mx.array([[4, 9, 16, 25, 36, 49, 64, 81]])
    calls = []
    original_attention = mm._ext.attention

    def counting_attention(*args, **kwargs):
        calls.append(kwargs.get("mask"))
        return original_attention(*args, **kwargs)

    mm.lm.use_marlin_attention(False)  # the user's choice: MLX's attention
    mm.lm._attention_route = None  # ... forgotten: a fresh process, where load chooses
    model, _ = mm.load(out)
    assert mm.lm._attention_route == "cpu"
    assert llama.scaled_dot_product_attention is mm.lm._marlin_sdpa
    mm._ext.attention = counting_attention
    try:
        routed = model(tokens)
    finally:
        mm._ext.attention = original_attention
    on_cpu_kernels = mm._ext._backend() == "cpu"
    assert len(calls) == (2 if on_cpu_kernels else 0)  # one per layer

    mm.lm.use_marlin_attention(False)
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention
    model, _ = mm.load(out)
    assert mm.lm._attention_route == "off"
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention
    np.testing.assert_allclose(to_np(model(tokens)), to_np(routed), rtol=1e-4, atol=1e-4)
