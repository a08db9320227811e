"""dense_linear: x @ w.T + bias for unquantized weights (output heads, tied embeddings,
routers), against float64 on fresh random inputs.  Shapes sit 1..7 off the CPU kernel's
register blocks (1..4 rows x 3..8 W rows) and vector width (8 / 16 lanes along K);
outputs are NaN-poisoned (conftest), so every element must be written."""

import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlx_marlin as mm
from reference import TOL, on_cuda, rel_err, to_np

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
# On a GPU stream dense_linear is MLX's matmul, whose float32 product may run as TF32
# (10-bit mantissa): float32 results are held to that there.
if os.environ.get("MLX_MARLIN_TEST_DEVICE", "cpu") == "gpu":
    TOL = {**TOL, mx.float32: 4e-3}


def reference(x, w, bias=None):
    y = to_np(x) @ to_np(w).T
    return y if bias is None else y + to_np(bias)


def randn(rng, shape, dtype=mx.float32):
    return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype)


SHAPES = [(1, 1, 1), (1, 9, 7), (1, 17, 100), (2, 7, 33), (3, 13, 64), (4, 63, 129), (5, 130, 257), (7, 3, 15),
          (11, 41, 9), (70, 67, 200)]


@pytest.mark.parametrize("w_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_float64_reference(rng, stream, m, n, k, x_dtype, w_dtype):
    x, w = randn(rng, (m, k), x_dtype), randn(rng, (n, k), w_dtype)
    y = mm.dense_linear(x, w, stream=stream)
    out_dtype = (mx.zeros(1, x_dtype) + mx.zeros(1, w_dtype)).dtype  # MLX's promotion
    assert y.dtype == out_dtype and y.shape == (m, n)
    assert rel_err(y, reference(x, w)) < TOL[out_dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 2, 3, 6])
def test_bias(rng, stream, dtype, m):
    n, k = 45, 96
    x, w, b = randn(rng, (m, k), dtype), randn(rng, (n, k), dtype), randn(rng, (n,), dtype)
    y = mm.dense_linear(x, w, b, stream=stream)
    assert y.dtype == dtype
    assert rel_err(y, reference(x, w, b)) < TOL[dtype]


def test_bias_dtype_promotes(rng, stream):
    x, w, b = randn(rng, (2, 16), mx.bfloat16), randn(rng, (5, 16), mx.bfloat16), randn(rng, (5,))
    y = mm.dense_linear(x, w, b, stream=stream)
    assert y.dtype == mx.float32  # as nn.Linear's addmm: bf16 x bf16 + f32 bias -> f32
    assert rel_err(y, reference(x, w, b)) < TOL[mx.float32]


@pytest.mark.parametrize("lead", [(), (2, 3), (1, 4, 2), (0,), (3, 0)])
def test_leading_dims(rng, stream, lead):
    n, k = 19, 40
    x, w = randn(rng, (*lead, k)), randn(rng, (n, k))
    y = mm.dense_linear(x, w, stream=stream)
    assert y.shape == (*lead, n)
    if y.size:
        assert rel_err(y, (to_np(x).reshape(-1, k) @ to_np(w).T).reshape(*lead, n)) < TOL[mx.float32]


def test_empty_k_gives_bias(rng, stream):
    w, b = mx.zeros((6, 0)), randn(rng, (6,))
    y = mm.dense_linear(mx.zeros((3, 0)), w, b, stream=stream)
    assert np.array_equal(np.array(y), np.broadcast_to(np.array(b), (3, 6)))


@pytest.mark.parametrize("with_bias", [True, False])
def test_empty_k_under_shapeless_compile(rng, stream, with_bias):
    """K = 0 under mx.compile(shapeless=True): act(bias) broadcast to x's leading shape
    at run time, whatever shape the trace had (MLX's addmm fixed it: NaN, then a
    reshape error, before)."""
    w = mx.zeros((6, 0), mx.bfloat16)
    b = randn(rng, (6,)) if with_bias else None
    f = mx.compile(lambda x: mm.dense_linear(x, w, b, stream=stream), shapeless=True)
    leads = [(1,), (5,), (2, 3), (4, 1)]
    if not on_cuda(stream):  # MLX 0.32.4's CUDA fused kernels divide by zero on empty outputs
        leads.append((0, 2))
    for lead in leads:
        y = f(mx.zeros((*lead, 0), mx.bfloat16))
        assert y.shape == (*lead, 6) and y.dtype == (mx.float32 if with_bias else mx.bfloat16)
        want = np.broadcast_to(np.array(b) if with_bias else np.zeros(6), y.shape)
        assert np.array_equal(to_np(y), want)


def test_non_contiguous_inputs(rng, stream):
    x = randn(rng, (40, 5)).T  # [5, 40] view
    w = randn(rng, (26, 80))[::2, ::2]  # [13, 40] strided view
    y = mm.dense_linear(x, w, stream=stream)
    assert rel_err(y, reference(x, w)) < TOL[mx.float32]


def test_matches_nn_linear(rng, stream):
    """Same parameters, same numbers as the layer it stands in for (up to summation order)."""
    lin = nn.Linear(64, 33)
    lin.set_dtype(mx.bfloat16)
    x = randn(rng, (3, 64), mx.bfloat16)
    with mx.stream(stream):
        expect = lin(x)
    y = mm.dense_linear(x, lin.weight, lin.bias, stream=stream)
    assert y.dtype == expect.dtype and y.shape == expect.shape
    assert rel_err(y, to_np(expect)) < TOL[mx.bfloat16]


def test_gradients(rng, stream):
    x, w, b = randn(rng, (2, 3, 24)), randn(rng, (10, 24)), randn(rng, (10,))
    cot = randn(rng, (2, 3, 10))

    def loss(fn):
        return lambda x, w, b: (fn(x, w, b) * cot).sum()

    ours = mx.grad(loss(lambda x, w, b: mm.dense_linear(x, w, b, stream=stream)), argnums=(0, 1, 2))(x, w, b)
    theirs = mx.grad(loss(lambda x, w, b: x @ w.T + b), argnums=(0, 1, 2))(x, w, b)
    for a, e in zip(ours, theirs):
        assert a.shape == e.shape
        assert rel_err(a, to_np(e)) < 1e-5


def test_shapeless_compile_follows_leading_dims(rng, stream):
    w, b = randn(rng, (21, 32)), randn(rng, (21,))
    f = mx.compile(lambda x: mm.dense_linear(x, w, b, stream=stream), shapeless=True)
    for lead in [(1,), (5,), (2, 3), (4, 1)]:
        x = randn(rng, (*lead, 32))
        y = f(x)
        assert y.shape == (*lead, 21)
        assert rel_err(y, reference(x, w, b)) < TOL[mx.float32]


@pytest.mark.parametrize(
    "case,match",
    [
        ("x_int", r"\[dense_linear\] x must be float16, bfloat16 or float32, got int32"),
        ("w_int", r"\[dense_linear\] w must be float16, bfloat16 or float32, got uint32"),
        ("x_scalar", r"x must have at least 1 dimension \[\.\.\., K\]"),
        ("w_1d", r"w must have 2 dimensions \[N, K\], got shape \(16,\)"),
        ("w_3d", r"w must have 2 dimensions \[N, K\], got shape \(2, 4, 16\)"),
        ("k_mismatch", r"x must have shape \[\.\.\., K\] with K = w.shape\[1\] = 16, got \(3, 15\)"),
        ("bias_shape", r"bias must have shape \[N\] = \(4,\), got \(1, 4\)"),
        ("bias_int", r"bias must be float16, bfloat16 or float32, got int32"),
    ],
)
def test_bad_input_raises_value_error(stream, case, match):
    args = {"x": mx.ones((3, 16)), "w": mx.ones((4, 16)), "bias": None}
    if case == "x_int":
        args["x"] = mx.ones((3, 16), dtype=mx.int32)
    elif case == "w_int":
        args["w"] = mx.ones((4, 16), dtype=mx.uint32)
    elif case == "x_scalar":
        args["x"] = mx.array(1.0)
    elif case == "w_1d":
        args["w"] = mx.ones((16,))
    elif case == "w_3d":
        args["w"] = mx.ones((2, 4, 16))
    elif case == "k_mismatch":
        args["x"] = mx.ones((3, 15))
    elif case == "bias_shape":
        args["bias"] = mx.ones((1, 4))
    elif case == "bias_int":
        args["bias"] = mx.ones((4,), dtype=mx.int32)
    with pytest.raises(ValueError, match=match):
        mm.dense_linear(args["x"], args["w"], args["bias"], stream=stream)


DENSE_ISA_CHECK = r"""
import mlx.core as mx, numpy as np, mlx_marlin as mm, sys
from mlx_marlin import _ext
assert _ext._cpu_isa() == sys.argv[1], _ext._cpu_isa()
rng = np.random.default_rng(5)
tol = {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}
# Every row-block size (1..4 rows and a ragged rest), W rows around 3/6/8 and K around 4/8/16 lanes.
for m, n, k in [(1, 9, 17), (2, 13, 31), (3, 10, 64), (4, 25, 100), (5, 7, 9), (9, 33, 130), (37, 70, 48)]:
    for dt in (mx.float32, mx.float16, mx.bfloat16):
        x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dt)
        w = mx.array(rng.standard_normal((n, k)).astype(np.float32)).astype(dt)
        b = mx.array(rng.standard_normal(n).astype(np.float32)).astype(dt)
        y = np.array(mm.dense_linear(x, w, b, stream=mx.cpu).astype(mx.float32)).astype(np.float64)
        f64 = lambda a: np.array(a.astype(mx.float32)).astype(np.float64)
        ref = f64(x) @ f64(w).T + f64(b)
        err = np.abs(y - ref).max() / np.abs(ref).max()
        assert err < tol[dt], (m, n, k, dt, err)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_cpu_kernel_build(isa):
    """Each instruction-set build of the dense kernel (one process per ISA)."""
    from test_fp4_gemm import check_kernel_build

    check_kernel_build(isa, DENSE_ISA_CHECK)
