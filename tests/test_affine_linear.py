"""affine_linear: x @ dequantize(w, scales, biases).T + bias for weights in MLX's affine
quantization (the layers a conversion leaves MLX-quantized), against float64 on fresh
random inputs with an independent decode of MLX's packing.  Shapes sit 1..7 off the CPU
kernel's register blocks (1..4 rows x 2..8 W rows); outputs are NaN-poisoned (conftest),
so every element must be written."""

import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlx_marlin as mm
from reference import TOL, rel_err, to_np

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
# On a GPU stream affine_linear is MLX's quantized_matmul; its float32 products may run
# at TF32 precision there.
if os.environ.get("MLX_MARLIN_TEST_DEVICE", "cpu") == "gpu":
    TOL = {**TOL, mx.float32: 4e-3}


def randn(rng, shape, dtype=mx.float32):
    return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype)


def unpack_codes(w: mx.array, bits: int) -> np.ndarray:
    """MLX's affine codes [N, K] from its uint32 words [N, K * bits / 32]: code i of a row
    at bits [i * bits, (i + 1) * bits) of the row's little-endian words."""
    words = np.array(w).astype(np.uint64)
    per_word = 32 // bits
    shifts = np.arange(per_word, dtype=np.uint64) * bits
    codes = (words[:, :, None] >> shifts) & np.uint64((1 << bits) - 1)
    return codes.reshape(words.shape[0], -1).astype(np.float64)


def dequantize_reference(w, scales, biases, group_size, bits):
    codes = unpack_codes(w, bits)
    s = np.repeat(to_np(scales), group_size, axis=1)
    b = np.repeat(to_np(biases), group_size, axis=1)
    return codes * s + b


def reference(x, w, scales, biases, group_size, bits, bias=None):
    y = to_np(x) @ dequantize_reference(w, scales, biases, group_size, bits).T
    return y if bias is None else y + to_np(bias)


def check(y, stream, x, w, scales, biases, group_size, bits, bias=None):
    """y against float64 at its dtype's tolerance.  On a GPU stream affine_linear is MLX's
    quantized_matmul, whose float16 / bfloat16 products are less accurate than that (2.6%
    of the output for one 64-term row, measured on an H100): there half-precision results
    are held to MLX's own product instead (the route, the bias and the dtypes are ours)."""
    if stream == mx.gpu and y.dtype != mx.float32:
        with mx.stream(stream):
            expect = mx.quantized_matmul(x.reshape(-1, x.shape[-1]), w, scales, biases, group_size=group_size, bits=bits)
            if bias is not None:
                expect = expect + bias
        assert rel_err(y.reshape(-1, y.shape[-1]), to_np(expect.astype(y.dtype))) < TOL[y.dtype]
        return
    ref = reference(x.reshape(-1, x.shape[-1]), w, scales, biases, group_size, bits, bias)
    assert rel_err(y.reshape(-1, y.shape[-1]), ref) < TOL[y.dtype]


def quantized(rng, n, k, group_size, bits, dtype):
    return mx.quantize(randn(rng, (n, k), dtype), group_size=group_size, bits=bits)


def test_codes_decode_as_mlx_does(rng):
    """The test's own decode of the packing agrees with mx.dequantize (float32)."""
    for bits in (4, 8):
        w, s, b = quantized(rng, 9, 256, 64, bits, mx.float32)
        ours = dequantize_reference(w, s, b, 64, bits)
        np.testing.assert_allclose(ours, to_np(mx.dequantize(w, s, b, group_size=64, bits=bits)), rtol=1e-6, atol=1e-6)


# (M, N, K / group_size): rows around the 1..4-row blocks, W rows around 2..8-row blocks.
SHAPES = [(1, 1, 1), (1, 9, 2), (1, 17, 3), (2, 7, 1), (3, 13, 2), (4, 10, 5), (5, 33, 1), (7, 3, 4), (11, 41, 2),
          (70, 67, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("m,n,groups", SHAPES)
def test_matches_float64_reference(rng, stream, m, n, groups, group_size, bits, dtype):
    k = groups * group_size
    w, s, b = quantized(rng, n, k, group_size, bits, dtype)
    x = randn(rng, (m, k), dtype)
    y = mm.affine_linear(x, w, s, b, group_size=group_size, bits=bits, stream=stream)
    assert y.dtype == dtype and y.shape == (m, n)
    check(y, stream, x, w, s, b, group_size, bits)


@pytest.mark.parametrize("x_dtype,s_dtype", [(mx.float32, mx.bfloat16), (mx.bfloat16, mx.float16),
                                             (mx.float16, mx.float32), (mx.bfloat16, mx.float32)], ids=str)
def test_mixed_dtypes_promote(rng, stream, x_dtype, s_dtype):
    w, s, b = quantized(rng, 21, 128, 32, 8, s_dtype)
    x = randn(rng, (3, 128), x_dtype)
    y = mm.affine_linear(x, w, s, b, group_size=32, bits=8, stream=stream)
    out = (mx.zeros(1, x_dtype) + mx.zeros(1, s_dtype)).dtype  # MLX's promotion
    assert y.dtype == out
    check(y, stream, x, w, s, b, 32, 8)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 2, 5])
def test_bias(rng, stream, dtype, m):
    w, s, b = quantized(rng, 45, 192, 64, 4, dtype)
    x, bias = randn(rng, (m, 192), dtype), randn(rng, (45,), dtype)
    y = mm.affine_linear(x, w, s, b, bias, group_size=64, bits=4, stream=stream)
    assert y.dtype == dtype
    check(y, stream, x, w, s, b, 64, 4, bias)


@pytest.mark.parametrize("lead", [(2, 3), (1, 1, 4), (0,), (3, 0)])
def test_leading_dims(rng, stream, lead):
    w, s, b = quantized(rng, 19, 64, 32, 8, mx.bfloat16)
    x = randn(rng, (*lead, 64), mx.bfloat16)
    y = mm.affine_linear(x, w, s, b, group_size=32, bits=8, stream=stream)
    assert y.shape == (*lead, 19)
    if x.size:
        check(y, stream, x, w, s, b, 32, 8)


def test_empty_k_gives_bias(rng, stream):
    w, s, b = mx.zeros((6, 0), mx.uint32), mx.zeros((6, 0)), mx.zeros((6, 0))
    bias = randn(rng, (6,))
    y = mm.affine_linear(mx.zeros((3, 0)), w, s, b, bias, group_size=64, bits=8, stream=stream)
    assert np.array_equal(np.array(y), np.broadcast_to(np.array(bias), (3, 6)))


def test_empty_n(stream):
    w, s, b = mx.zeros((0, 16), mx.uint32), mx.zeros((0, 1)), mx.zeros((0, 1))
    y = mm.affine_linear(mx.ones((2, 64)), w, s, b, mx.zeros((0,)), group_size=64, bits=8, stream=stream)
    assert y.shape == (2, 0) and y.dtype == mx.float32


def test_extreme_scales(rng, stream):
    """Scales and biases from 2^-60 to 2^60 per row in float32: the float32 dequantization and
    accumulation keep every row to its own relative accuracy."""
    n, k = 12, 256
    w, s, b = quantized(rng, n, k, 64, 8, mx.float32)
    row_scale = mx.array(2.0 ** np.linspace(-60, 60, n).astype(np.float32))[:, None]
    s, b = s * row_scale, b * row_scale
    x = randn(rng, (2, k))
    y = to_np(mm.affine_linear(x, w, s, b, group_size=64, bits=8, stream=stream))
    ref = reference(x, w, s, b, 64, 8)
    err = np.abs(y - ref).max(axis=0) / np.abs(ref).max(axis=0)
    assert np.all(np.isfinite(y)) and err.max() < TOL[mx.float32], err


def test_non_contiguous_inputs(rng, stream):
    w, s, b = quantized(rng, 13, 128, 32, 4, mx.float32)
    x = randn(rng, (128, 5)).T  # [5, 128] view
    s2 = mx.stack([s, s], axis=-1).reshape(13, -1)[:, ::2]  # strided view of the same values
    y = mm.affine_linear(x, w, s2, b, group_size=32, bits=4, stream=stream)
    check(y, stream, x, w, s, b, 32, 4)


@pytest.mark.parametrize("bits,group_size", [(4, 64), (8, 32), (8, 128)])
def test_matches_nn_quantized_linear(rng, stream, bits, group_size):
    """Same parameters and the product of the layer it stands in for, closer to float64:
    MLX's bfloat16 quantized_matmul on the CPU rounds its weights and sums to bfloat16
    (~3% of the largest output measured), ours dequantizes and sums in float32."""
    lin = nn.Linear(256, 33)
    lin.set_dtype(mx.bfloat16)
    ql = nn.QuantizedLinear.from_linear(lin, group_size=group_size, bits=bits)
    x = randn(rng, (3, 256), mx.bfloat16)
    with mx.stream(stream):
        expect = ql(x)
    layer = mm.AffineLinear.from_quantized_linear(ql)
    assert layer.weight is ql.weight and layer.bits == bits and layer.group_size == group_size
    with mx.stream(stream):
        y = layer(x)
    assert y.dtype == expect.dtype and y.shape == expect.shape
    check(y, stream, x, ql.weight, ql.scales, ql.biases, group_size, bits, ql.bias)
    ref = reference(x, ql.weight, ql.scales, ql.biases, group_size, bits, ql.bias)
    assert rel_err(y, ref) <= rel_err(expect, ref) + 1e-3


def test_quantized_embedding_as_linear(rng, stream):
    emb = nn.Embedding(40, 64)
    emb.set_dtype(mx.bfloat16)
    qe = nn.QuantizedEmbedding.from_embedding(emb, group_size=32, bits=8)
    layer = mm.AffineEmbedding.from_quantized_embedding(qe)
    x = randn(rng, (2, 64), mx.bfloat16)
    tokens = mx.array([[1, 5, 39]])
    with mx.stream(stream):
        assert np.array_equal(to_np(layer(tokens)), to_np(qe(tokens)))  # lookups unchanged
        y = layer.as_linear(x)
    check(y, stream, x, qe.weight, qe.scales, qe.biases, 32, 8)


def test_use_dense_kernels_converts_affine_layers_only(rng):
    """Exact affine nn.QuantizedLinear / nn.QuantizedEmbedding with 4 / 8 bits become the
    Affine layers; other modes, other widths and subclasses stay MLX's."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.q8 = nn.QuantizedLinear(64, 8, bits=8, group_size=32)
            self.q4 = nn.QuantizedLinear(128, 8, bias=False)
            self.q6 = nn.QuantizedLinear(64, 8, bits=6)
            self.fp4 = nn.QuantizedLinear(64, 8, group_size=32, bits=4, mode="mxfp4")
            self.emb = nn.QuantizedEmbedding(30, 64, group_size=64, bits=4)

    net = Net()
    weight = net.q8.weight
    mm.use_dense_kernels(net)
    assert type(net.q8) is mm.AffineLinear and type(net.q4) is mm.AffineLinear
    assert type(net.emb) is mm.AffineEmbedding
    assert type(net.q6) is nn.QuantizedLinear and type(net.fp4) is nn.QuantizedLinear
    assert net.q8.weight is weight and "bias" in net.q8 and "bias" not in net.q4
    assert net.emb.num_embeddings == 30 and net.emb.dims == 64
    x = randn(rng, (2, 64))
    expect = mx.quantized_matmul(x, net.q8.weight, net.q8.scales, net.q8.biases, group_size=32, bits=8) + net.q8.bias
    assert rel_err(net.q8(x), to_np(expect)) < 1e-5
    with pytest.raises(ValueError, match="mode 'affine' with bits 4 or 8"):
        mm.AffineLinear.from_quantized_linear(net.q6)
    with pytest.raises(ValueError, match="got mode='mxfp4'"):
        mm.AffineLinear.from_quantized_linear(net.fp4)


def test_gradients(rng, stream):
    w, s, b = quantized(rng, 10, 64, 32, 8, mx.float32)
    x, bias = randn(rng, (2, 3, 64)), randn(rng, (10,))
    cot = randn(rng, (2, 3, 10))

    def loss(fn):
        return lambda x, bias: (fn(x, bias) * cot).sum()

    ours = mx.grad(loss(lambda x, bias: mm.affine_linear(x, w, s, b, bias, group_size=32, bits=8, stream=stream)),
                   argnums=(0, 1))(x, bias)
    theirs = mx.grad(loss(lambda x, bias: mx.quantized_matmul(x, w, s, b, group_size=32, bits=8) + bias),
                     argnums=(0, 1))(x, bias)
    for a, e in zip(ours, theirs):
        assert a.shape == e.shape
        assert rel_err(a, to_np(e)) < 1e-5
    with pytest.raises(ValueError, match="no gradient with respect to the quantized weights"):
        mx.grad(lambda s: mm.affine_linear(x, w, s, b, group_size=32, bits=8, stream=stream).sum())(s)


def test_shapeless_compile_follows_leading_dims(rng, stream):
    w, s, b = quantized(rng, 21, 64, 64, 4, mx.float32)
    bias = randn(rng, (21,))
    f = mx.compile(lambda x: mm.affine_linear(x, w, s, b, bias, group_size=64, bits=4, stream=stream), shapeless=True)
    for lead in [(1,), (5,), (2, 3), (4, 1)]:
        x = randn(rng, (*lead, 64))
        y = f(x)
        assert y.shape == (*lead, 21)
        ref = reference(x.reshape(-1, 64), w, s, b, 64, 4, bias).reshape(*lead, 21)
        assert rel_err(y, ref) < TOL[mx.float32]


@pytest.mark.parametrize(
    "case,match",
    [
        ("bits_3", r"\[affine_linear\] bits must be 4 or 8, got 3"),
        ("group_16", r"group_size must be 32, 64 or 128, got 16"),
        ("x_int", r"x must be float16, bfloat16 or float32, got int32"),
        ("x_scalar", r"x must have at least 1 dimension \[\.\.\., K\]"),
        ("w_float", r"w must have dtype uint32, got float32"),
        ("w_3d", r"w must have 2 dimensions \[N, K \* bits / 32\], got shape \(2, 4, 16\)"),
        ("k_mismatch", r"x must have shape \[\.\.\., K\] with K = w.shape\[1\] \* 32 / bits = 128, got \(3, 127\)"),
        ("k_not_groups", r"K = 96 must be a multiple of group_size = 64"),
        ("scales_shape", r"scales must have shape \[N, K / group_size\] = \(4, 2\), got \(4, 3\)"),
        ("biases_shape", r"biases must have shape \[N, K / group_size\] = \(4, 2\), got \(2, 4\)"),
        ("scales_int", r"scales must be float16, bfloat16 or float32, got int32"),
        ("biases_dtype", r"biases must have the dtype of scales \(float32\), got bfloat16"),
        ("bias_shape", r"bias must have shape \[N\] = \(4,\), got \(1, 4\)"),
    ],
)
def test_bad_input_raises_value_error(stream, case, match):
    args = {"x": mx.ones((3, 128)), "w": mx.zeros((4, 32), mx.uint32), "scales": mx.ones((4, 2)),
            "biases": mx.zeros((4, 2)), "bias": None, "group_size": 64, "bits": 8}
    if case == "bits_3":
        args["bits"] = 3
    elif case == "group_16":
        args["group_size"] = 16
    elif case == "x_int":
        args["x"] = mx.ones((3, 128), dtype=mx.int32)
    elif case == "x_scalar":
        args["x"] = mx.array(1.0)
    elif case == "w_float":
        args["w"] = mx.zeros((4, 32))
    elif case == "w_3d":
        args["w"] = mx.zeros((2, 4, 16), mx.uint32)
    elif case == "k_mismatch":
        args["x"] = mx.ones((3, 127))
    elif case == "k_not_groups":
        args["w"], args["x"] = mx.zeros((4, 24), mx.uint32), mx.ones((3, 96))
    elif case == "scales_shape":
        args["scales"] = mx.ones((4, 3))
    elif case == "biases_shape":
        args["biases"] = mx.ones((2, 4))
    elif case == "scales_int":
        args["scales"] = mx.ones((4, 2), dtype=mx.int32)
    elif case == "biases_dtype":
        args["biases"] = mx.zeros((4, 2), mx.bfloat16)
    elif case == "bias_shape":
        args["bias"] = mx.ones((1, 4))
    with pytest.raises(ValueError, match=match):
        mm.affine_linear(args["x"], args["w"], args["scales"], args["biases"], args["bias"],
                         group_size=args["group_size"], bits=args["bits"], stream=stream)


AFFINE_ISA_CHECK = r"""
import mlx.core as mx, numpy as np, mlx_marlin as mm, sys
from mlx_marlin import _ext
assert _ext._cpu_isa() == sys.argv[1], _ext._cpu_isa()
rng = np.random.default_rng(7)
tol = {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}
f64 = lambda a: np.array(a.astype(mx.float32)).astype(np.float64)
# Every row-block size (1..4 rows and a ragged rest), W rows around 2..8, both widths.
for m, n, k, g in [(1, 9, 64, 32), (2, 13, 128, 64), (3, 10, 256, 128), (4, 25, 96, 32), (5, 7, 64, 64),
                   (9, 33, 128, 32)]:
    for bits in (4, 8):
        for dt in (mx.float32, mx.float16, mx.bfloat16):
            w, s, b = mx.quantize(mx.array(rng.standard_normal((n, k)).astype(np.float32)).astype(dt),
                                  group_size=g, bits=bits)
            x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dt)
            bias = mx.array(rng.standard_normal(n).astype(np.float32)).astype(dt)
            y = f64(mm.affine_linear(x, w, s, b, bias, group_size=g, bits=bits, stream=mx.cpu))
            ref = f64(x) @ f64(mx.dequantize(w, s, b, group_size=g, bits=bits, dtype=mx.float32)).T + f64(bias)
            err = np.abs(y - ref).max() / np.abs(ref).max()
            assert err < tol[dt], (m, n, k, g, bits, dt, err)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_cpu_kernel_build(isa):
    """Each instruction-set build of the affine kernel (one process per ISA)."""
    from test_fp4_gemm import check_kernel_build

    check_kernel_build(isa, AFFINE_ISA_CHECK)
