import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

import mlx_marlin as mm
from reference import TOL, activation, extreme_scale_weights, on_cuda, rel_err, to_np

DTYPES = [mx.float32, mx.float16, mx.bfloat16]

# "metal-emulator": fp4_gemm's evaluation runs the Metal kernels on the Metal-on-CPU
# emulator (scripts/emulator_tests.sh); huge shapes are scaled down there.
BACKEND = mm._ext._backend()
EMULATOR = BACKEND == "metal-emulator"
ACTIVATIONS = [None, "relu", "gelu", "gelu_approx", "silu"]


def make_weight(rng, n, k, group_size, scale_dtype=mx.float16):
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
    packed, scales = mm.quantize(w, group_size, scale_dtype)
    return packed, scales, to_np(mm.dequantize(packed, scales, group_size))


def reference(x, wd, bias=None, act=None):
    y = to_np(x) @ wd.T
    if bias is not None:
        y = y + to_np(bias)
    return activation(y, act)


# Shapes off every CPU tile size (64 columns, Kc=128, 6-row blocks, 16 lanes) by 1..7,
# and the GPU tiles (32/64/128) likewise.
SHAPES = [(1, 1, 32), (1, 65, 256), (3, 7, 64), (16, 63, 128), (67, 129, 384), (5, 200, 96), (9, 71, 160)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_float64_reference(rng, stream, dtype, m, n, k):
    group_size = 32 if k % 64 else (64 if k % 128 else 128)
    packed, scales, wd = make_weight(rng, n, k, group_size)
    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dtype)
    y = mm.fp4_gemm(x, packed, scales, group_size=group_size, stream=stream)
    assert y.dtype == dtype and y.shape == (m, n)
    assert rel_err(y, reference(x, wd)) < TOL[dtype]


@pytest.mark.parametrize("m", [1, 3, 16, 67])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("scale_dtype", [mx.float16, mx.bfloat16], ids=str)
def test_rows_group_sizes_scale_dtypes(rng, stream, m, group_size, scale_dtype):
    n, k = 100, 512
    packed, scales, wd = make_weight(rng, n, k, group_size, scale_dtype)
    x = mx.array(rng.standard_normal((m, k)).astype(np.float32))
    y = mm.fp4_gemm(x, packed, scales, group_size=group_size, stream=stream)
    assert rel_err(y, reference(x, wd)) < TOL[mx.float32]


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("m", [2, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_and_activation(rng, stream, act, with_bias, m, dtype):
    n, k, g = 70, 128, 64
    packed, scales, wd = make_weight(rng, n, k, g)
    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dtype)
    bias = mx.array(rng.standard_normal(n).astype(np.float32)).astype(dtype) if with_bias else None
    y = mm.fp4_gemm(x, packed, scales, bias, group_size=g, activation=act, stream=stream)
    assert rel_err(y, reference(x, wd, bias, act)) < TOL[dtype]


@pytest.mark.parametrize("act", ["gelu", "gelu_approx", "silu"])
@pytest.mark.parametrize("m", [1, 3, 33])
def test_activation_tails_relatively_accurate(stream, act, m):
    """GELU / SiLU of large negative inputs are tiny, not zero: every backend must keep
    their relative accuracy (1 + erf(z) and 1 + tanh(u) in float lose it from v = -3).
    Pre-activations are exact (one nonzero weight per column times x = 1), spanning
    [-9, 9].  float32 only: half kernels may round the pre-activation to the input
    dtype (the bfloat16 Metal kernels' dequantized weights), and the tail's slope
    (d log GELU / dv ~ |v|) turns that rounding into tens of percent there."""
    dtype = mx.float32
    n, k, g = 75, 64, 32
    w = np.zeros((n, k), np.float32)
    w[:, 0] = np.linspace(-9, 9, n)
    packed, scales = mm.quantize(mx.array(w), g, mx.bfloat16)
    wd = to_np(mm.dequantize(packed, scales, g))
    x = np.zeros((m, k), np.float32)
    x[:, 0] = [1.0, 0.5, -1.0][:m] + [1.0] * max(0, m - 3)
    xm = mx.array(x).astype(dtype)
    y = to_np(mm.fp4_gemm(xm, packed, scales, group_size=g, activation=act, stream=stream)).astype(np.float64)
    ref = activation(to_np(xm) @ wd.T, act)
    tol = 3e-5
    err = np.abs(y - ref) / np.maximum(np.abs(ref), 1e-37)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() < tol, (act, worst, y[worst], ref[worst])


@pytest.mark.parametrize("m", [1, 5, 33, 130])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16], ids=str)
def test_extreme_bfloat16_scales(rng, stream, m, dtype):
    """Group scales across bfloat16's exponent range, and 2^120 scales on all-zero
    groups (float16 activations cannot balance such scales, so not float16).  m covers
    every CUDA route: GEMV, the MMA kernel and the dense route."""
    n, k, g = 72, 384, 64
    packed, scales, wd, x_mag = extreme_scale_weights(rng, (), n, k, g)
    x = mx.array((rng.standard_normal((m, k)) * x_mag).astype(np.float32)).astype(dtype)
    y = mm.fp4_gemm(x, packed, scales, group_size=g, stream=stream)
    assert rel_err(y, reference(x, wd)) < TOL[dtype]


def test_leading_batch_dims_and_1d(rng, stream):
    n, k, g = 40, 64, 32
    packed, scales, wd = make_weight(rng, n, k, g)
    x = mx.array(rng.standard_normal((2, 3, 5, k)).astype(np.float32))
    y = mm.fp4_gemm(x, packed, scales, group_size=g, stream=stream)
    assert y.shape == (2, 3, 5, n)
    assert rel_err(y, to_np(x) @ wd.T) < TOL[mx.float32]
    x1 = x[0, 0, 0]
    y1 = mm.fp4_gemm(x1, packed, scales, group_size=g, stream=stream)
    assert y1.shape == (n,)
    assert rel_err(y1, to_np(x1) @ wd.T) < TOL[mx.float32]
    empty = mm.fp4_gemm(mx.zeros((0, k)), packed, scales, group_size=g, stream=stream)
    assert empty.shape == (0, n)


def test_non_contiguous_and_broadcast_inputs(rng, stream):
    n, k, g = 48, 128, 64
    packed, scales, wd = make_weight(rng, n, k, g)
    base = mx.array(rng.standard_normal((k, 9)).astype(np.float32))
    xt = base.T  # transposed view
    xs = mx.array(rng.standard_normal((12, 2 * k)).astype(np.float32))[::3, ::2]  # strided slice
    xb = mx.broadcast_to(mx.array(rng.standard_normal((1, k)).astype(np.float32)), (5, k))
    for x in (xt, xs, xb):
        y = mm.fp4_gemm(x, packed, scales, group_size=g, stream=stream)
        assert rel_err(y, to_np(x) @ wd.T) < TOL[mx.float32]
    # Weights given as views too (the op copies what the kernels cannot read directly).
    pw = mx.concatenate([packed, packed], axis=1)[:, :n]
    y = mm.fp4_gemm(xt, pw, scales, group_size=g, stream=stream)
    assert rel_err(y, to_np(xt) @ wd.T) < TOL[mx.float32]


def test_lazy_graph_and_compile(rng, stream):
    n, k, g = 64, 128, 32
    packed, scales, wd = make_weight(rng, n, k, g)
    bias = mx.array(rng.standard_normal(n).astype(np.float32))
    x = mx.array(rng.standard_normal((4, k)).astype(np.float32))

    def layer(x):
        return mm.fp4_gemm(x * 2.0, packed, scales, bias, group_size=g, activation="silu", stream=stream) + 1.0

    ref = activation(2 * to_np(x) @ wd.T + to_np(bias), "silu") + 1.0
    assert rel_err(layer(x), ref) < TOL[mx.float32]
    compiled = mx.compile(layer)
    assert rel_err(compiled(x), ref) < TOL[mx.float32]
    assert rel_err(compiled(x), ref) < TOL[mx.float32]  # cached trace


@pytest.mark.parametrize("bias_act", [False, True], ids=["plain", "bias_gelu"])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16], ids=str)
def test_shapeless_compile_follows_leading_dims(rng, stream, bias_act, dtype):
    """mx.compile(shapeless=True) replays one trace for every leading shape of x: FP4Gemm
    takes x [..., K] and derives its output shape from its inputs, with no reshape around
    it whose target the trace would fix.  Each call equals the uncompiled op and matches
    the float64 reference.  (M = 128 rows: on CUDA the uncompiled half-precision op takes
    the dense route there while the replay keeps the traced kernel route, so that call is
    compared within the dtype's tolerance.)"""
    n, k, g = 40, 128, 64
    packed, scales, wd = make_weight(rng, n, k, g)
    bias = mx.array(rng.standard_normal(n).astype(np.float32)) if bias_act else None
    act = "gelu" if bias_act else None
    mx.eval(packed, scales)  # constants of the trace must be evaluated arrays

    def op(x):
        return mm.fp4_gemm(x, packed, scales, bias, group_size=g, activation=act, stream=stream)

    for leads in (((2, 3), (5, 1), (1, 7), (4, 32)), ((4,), (9,), (1,))):
        compiled = mx.compile(op, shapeless=True)
        for lead in leads:
            x = mx.array(rng.standard_normal((*lead, k)).astype(np.float32)).astype(dtype)
            y, want = compiled(x), op(x)
            assert y.shape == (*lead, n) and y.dtype == dtype
            if np.prod(lead) < 96:
                np.testing.assert_array_equal(to_np(y), to_np(want))
            else:
                assert rel_err(y, to_np(want)) < TOL[dtype]
            assert rel_err(y, reference(x, wd, bias, act)) < TOL[dtype]


def test_compile_with_shapes_retraces_per_shape(rng, stream):
    """Plain mx.compile (shape-specialized) over N-D, 2-D and 1-D x, every shape twice
    (the second call from the cached trace)."""
    n, k, g = 24, 64, 32
    packed, scales, wd = make_weight(rng, n, k, g)
    bias = mx.array(rng.standard_normal(n).astype(np.float32))
    mx.eval(packed, scales)

    def op(x):
        return mm.fp4_gemm(x, packed, scales, bias, group_size=g, activation="silu", stream=stream)

    compiled = mx.compile(op)
    for shape in ((2, 3, k), (5, 1, k), (4, k), (k,), (2, 3, k)):
        x = mx.array(rng.standard_normal(shape).astype(np.float32))
        for _ in range(2):
            y = compiled(x)
            assert y.shape == (*shape[:-1], n)
            np.testing.assert_array_equal(to_np(y), to_np(op(x)))
            assert rel_err(y, reference(x, wd, bias, "silu")) < TOL[mx.float32]


def test_empty_k_under_shapeless_compile(stream):
    """K = 0 builds act(bias) from MLX ops; their shape follows x's at run time too."""
    w, s = mx.zeros((0, 16), mx.uint32), mx.zeros((0, 16), mx.float16)
    bias = mx.array(np.linspace(-3, 3, 16).astype(np.float32))
    compiled = mx.compile(lambda x: mm.fp4_gemm(x, w, s, bias, group_size=32, activation="relu", stream=stream),
                          shapeless=True)
    leads = [(2, 3), (5, 1)]
    # MLX 0.32.4's CUDA backend divides by zero (SIGFPE) launching a fused elementwise
    # kernel with an empty output (get_launch_args: a block of min(1024, 0) threads), so
    # the zero-row case runs everywhere but there: mx.compile(lambda a: mx.maximum(a + 1,
    # 0))(mx.zeros((0, 4, 16))) alone crashes on an H200 (benchmarks/RESULTS.md).
    if not on_cuda(stream):
        leads.append((0, 4))
    for lead in leads:
        y = compiled(mx.zeros((*lead, 0)))
        assert y.shape == (*lead, 16)
        np.testing.assert_array_equal(to_np(y), np.broadcast_to(np.maximum(to_np(bias), 0), y.shape))


def act_grad(y, name):
    h = 1e-6
    return (activation(y + h, name) - activation(y - h, name)) / (2 * h)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16], ids=str)
def test_vjp_wrt_x_and_bias(rng, stream, act, dtype):
    m, n, k, g = 5, 72, 128, 64
    packed, scales, wd = make_weight(rng, n, k, g)
    x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dtype)
    bias = mx.array(rng.standard_normal(n).astype(np.float32))
    cot = rng.standard_normal((m, n))

    def loss(x, b):
        y = mm.fp4_gemm(x, packed, scales, b, group_size=g, activation=act, stream=stream)
        return mx.sum(y.astype(mx.float32) * mx.array(cot.astype(np.float32)))

    gx, gb = mx.grad(loss, argnums=(0, 1))(x, bias)
    pre = to_np(x) @ wd.T + to_np(bias)
    gpre = cot * act_grad(pre, act)
    assert gx.dtype == dtype and gx.shape == x.shape
    tol = 1e-4 if dtype == mx.float32 else 3e-2
    assert rel_err(gx, gpre @ wd) < tol
    assert rel_err(gb, gpre.sum(0)) < tol


@pytest.mark.parametrize("act", [None, "gelu"])
def test_vjp_through_nd_x_and_shapeless_compile(rng, stream, act):
    """Gradients for x [..., K] (the transposed product keeps x's leading dims) and for the
    bias (summed over every leading dim), 1-D x included; then the same gradient function
    under a shapeless mx.compile, called with changing leading shapes."""
    n, k, g = 48, 128, 32
    packed, scales, wd = make_weight(rng, n, k, g)
    bias = mx.array(rng.standard_normal(n).astype(np.float32))
    mx.eval(packed, scales)

    def loss(x, b, cot):
        y = mm.fp4_gemm(x, packed, scales, b, group_size=g, activation=act, stream=stream)
        return mx.sum(y * cot)

    grad = mx.grad(loss, argnums=(0, 1))
    compiled = mx.compile(grad, shapeless=True)
    for lead in ((2, 3), (5, 1), (1, 7), ()):
        x = mx.array(rng.standard_normal((*lead, k)).astype(np.float32))
        cot = rng.standard_normal((*lead, n))
        cot_mx = mx.array(cot.astype(np.float32))
        gpre = cot * act_grad(to_np(x) @ wd.T + to_np(bias), act)
        gx, gb = grad(x, bias, cot_mx)
        assert gx.shape == x.shape and gb.shape == (n,)
        assert rel_err(gx, gpre @ wd) < 1e-4
        assert rel_err(gb, gpre.reshape(-1, n).sum(0)) < 1e-4
        if lead:  # 1-D x has its own trace (a different ndim); the N-D ones share one
            cgx, cgb = compiled(x, bias, cot_mx)
            # (a compiled graph may fuse act'(pre) * cot: equal up to float32 rounding)
            assert rel_err(cgx, to_np(gx)) < 1e-6
            assert rel_err(cgb, to_np(gb)) < 1e-6


def test_vjp_batched_and_lora_style_training(rng, stream):
    # A LoRA adapter trained on top of a frozen FP4 base: gradients flow through x.  The
    # adapter and the dense reference run on the CPU (a GPU's float32 matmul may be TF32).
    n, k, g, r = 32, 64, 32, 4
    packed, scales, wd = make_weight(rng, n, k, g)
    a = mx.array(rng.standard_normal((k, r)).astype(np.float32) * 0.1)
    x = mx.array(rng.standard_normal((2, 3, k)).astype(np.float32))
    wdense = mx.array(wd.astype(np.float32))

    def loss(a):
        h = x + (x @ a) @ a.T
        return mx.sum(mm.fp4_gemm(h, packed, scales, group_size=g, stream=stream) ** 2)

    def dense_loss(a):
        h = x + (x @ a) @ a.T
        return mx.sum((h @ wdense.T) ** 2)

    with mx.stream(mx.cpu):
        ga = mx.grad(loss)(a)
        ref = mx.grad(dense_loss)(a)
    assert rel_err(ga, to_np(ref)) < 1e-4


def test_grad_wrt_weights_is_refused(rng, stream):
    packed, scales, _ = make_weight(rng, 16, 64, 32)
    x = mx.ones((2, 64))
    with pytest.raises(ValueError, match="frozen"):
        mx.grad(lambda s: mm.fp4_gemm(x, packed, s, group_size=32, stream=stream).sum())(scales)


def test_large_k_accumulates_in_fp32(rng, stream):
    # The emulator runs each GPU thread as a fiber: 8192 still spans 256 k-tiles.
    n, k, g = 16, (8192 if EMULATOR else 32768), 128
    packed, scales, wd = make_weight(rng, n, k, g)
    x = mx.array(rng.standard_normal((2, k)).astype(np.float32)).astype(mx.float16)
    y = mm.fp4_gemm(x, packed, scales, group_size=g, stream=stream)
    assert rel_err(y, reference(x, wd)) < TOL[mx.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dequantize_op(rng, stream, dtype):
    """fp4_dequantize (the dense route's first half on CUDA): [K, N] = the exact product
    rounded once to dtype, on shapes off every tile and both scale dtypes."""
    if EMULATOR or (stream == mx.gpu and "fp4_dequantize" not in mm._ext._gpu_ops()):
        pytest.skip("fp4_dequantize runs on the CPU and on the CUDA build only")
    for n, k, g, sdt in ((1, 32, 32, mx.float16), (37, 192, 64, mx.bfloat16), (130, 256, 128, mx.float16)):
        packed, scales, wd = make_weight(rng, n, k, g, sdt)
        d = mm._ext.fp4_dequantize(packed, scales, group_size=g, dtype=dtype, stream=stream)
        assert d.shape == (k, n) and d.dtype == dtype
        want = to_np(mx.array(wd.T.astype(np.float32)).astype(dtype))
        np.testing.assert_array_equal(to_np(d), want)
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        mm._ext.fp4_dequantize(packed, scales, group_size=g, dtype=mx.int32)
    with pytest.raises(ValueError, match="scales must have shape"):
        mm._ext.fp4_dequantize(packed, scales[:1], group_size=g)


@pytest.mark.parametrize(
    "case, match",
    [
        ("x_int", "x must be float16, bfloat16 or float32"),
        ("x_scalar", "at least 1 dimension"),
        ("x_k", r"x must have shape \[\.\.\., K\] with K = 8 \* w.shape\[0\] = 64"),
        ("w_dtype", "w must have dtype uint32"),
        ("w_rank", r"w must have 2 dimensions \[K/8, N\]"),
        ("s_dtype", "scales must be float16 or bfloat16"),
        ("s_shape", r"scales must have shape \[K/group_size, N\] = \(2, 16\)"),
        ("bias_shape", r"bias must have shape \[N\] = \(16,\)"),
        ("bias_dtype", "bias must be float16, bfloat16 or float32"),
        ("group", "group_size must be 32, 64 or 128"),
        ("k_group", "must be a multiple of group_size"),
        ("act", "activation must be"),
    ],
)
def test_bad_input(rng, stream, case, match):
    packed, scales, _ = make_weight(rng, 16, 64, 32)
    x = mx.ones((3, 64))
    args = dict(x=x, w=packed, scales=scales, bias=None, group_size=32, activation=None)
    if case == "x_int":
        args["x"] = x.astype(mx.int32)
    elif case == "x_scalar":
        args["x"] = mx.array(1.0)
    elif case == "x_k":
        args["x"] = mx.ones((3, 65))
    elif case == "w_dtype":
        args["w"] = packed.astype(mx.int32)
    elif case == "w_rank":
        args["w"] = packed.reshape(1, 8, 16)
    elif case == "s_dtype":
        args["scales"] = scales.astype(mx.float32)
    elif case == "s_shape":
        args["scales"] = scales[:1]
    elif case == "bias_shape":
        args["bias"] = mx.ones((15,))
    elif case == "bias_dtype":
        args["bias"] = mx.ones((16,), dtype=mx.int32)
    elif case == "group":
        args["group_size"] = 16
    elif case == "k_group":
        args["w"] = packed[:5]
        args["scales"] = scales[:1]
        args["x"] = mx.ones((3, 40))
    elif case == "act":
        args["activation"] = "tanh"
    with pytest.raises(ValueError, match=match):
        mm.fp4_gemm(args.pop("x"), args.pop("w"), args.pop("scales"), args.pop("bias"), stream=stream, **args)


ISA_CHECK = r"""
import mlx.core as mx, numpy as np, mlx_marlin as mm, sys
mx.set_default_device(mx.cpu)
from mlx_marlin import _ext
assert _ext._cpu_isa() == sys.argv[1], _ext._cpu_isa()
rng = np.random.default_rng(7)
for m, n, k, g in [(1, 77, 256, 64), (3, 33, 128, 32), (8, 16, 128, 128), (9, 129, 384, 128), (70, 65, 160, 32)]:
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
    p, s = mm.quantize(w, g, mx.bfloat16 if m % 2 else mx.float16)
    wd = np.array(mm.dequantize(p, s, g)).astype(np.float64)
    for dt in (mx.float32, mx.float16, mx.bfloat16):
        x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dt)
        b = mx.array(rng.standard_normal(n).astype(np.float32))
        y = np.array(mm.fp4_gemm(x, p, s, b, group_size=g, activation="relu", stream=mx.cpu).astype(mx.float32))
        ref = np.maximum(np.array(x.astype(mx.float32)).astype(np.float64) @ wd.T + np.array(b), 0)
        err = np.abs(y - ref).max() / np.abs(ref).max()
        assert err < {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}[dt], (m, n, k, dt, err)
        g_ = mx.grad(lambda x: mm.fp4_gemm(x, p, s, group_size=g, stream=mx.cpu).astype(mx.float32).sum())(x.astype(mx.float32))
        ref_g = np.ones((m, n)) @ wd
        assert np.abs(np.array(g_) - ref_g).max() / np.abs(ref_g).max() < 1e-4
print("ok")
"""


def _cpu_has(flag):
    try:
        return flag in open("/proc/cpuinfo").read()
    except OSError:
        return False


def _assert_check_passes_with_isa(isa, script, *args):
    """Runs `script` in a child process whose CPU kernels are the `isa` build (the choice
    is made once per process); it must exit cleanly and print "ok"."""
    env = dict(os.environ, MLX_MARLIN_CPU_ISA=isa)
    # Run from the package's parent so the child imports the same mlx_marlin as this process.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(mm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300, cwd=pkg_parent
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def check_kernel_build(isa, script):
    """`script` (given the ISA name as argv[1]) against the `isa` build of the CPU kernels;
    skips ISAs this machine cannot run."""
    if isa != "generic":
        if mm._ext._cpu_isa() not in ("avx2", "avx512"):
            pytest.skip("x86 kernel builds only")
        if not _cpu_has({"avx2": "avx2", "avx512": "avx512bw"}[isa]):
            pytest.skip(f"CPU lacks {isa}")
    _assert_check_passes_with_isa(isa, script, isa)


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_cpu_kernel_build(isa):
    """Each instruction-set build of the CPU kernels is correct (one process per ISA,
    since the choice is made once per process)."""
    if EMULATOR:
        pytest.skip("CPU kernel builds are not used by fp4_gemm in the Metal emulator build")
    check_kernel_build(isa, ISA_CHECK)


BYTE_TABLE_CHECK = r"""
import mlx.core as mx, numpy as np, mlx_marlin as mm
mx.set_default_device(mx.cpu)
from mlx_marlin import _ext
assert _ext._cpu_isa() == "avx2", _ext._cpu_isa()
rng = np.random.default_rng(11)
tol = {mx.float32: 2e-5, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}
# Rows 1-3 take the byte-table kernel, 4 the Decoder one; N around the 8-column vectors
# and the 512-column strips; every group size and scale dtype; scales over a wide range.
cases = [(1, 5, 64, 32), (1, 512, 128, 64), (1, 1031, 256, 128), (2, 13, 96, 32), (2, 513, 192, 64),
         (3, 8, 128, 128), (3, 2053, 64, 32), (4, 519, 128, 64)]
for i, (m, n, k, g) in enumerate(cases):
    w = rng.standard_normal((n, k)).astype(np.float32) * np.exp2(rng.integers(-6, 7, size=(n, 1)))
    p, s = mm.quantize(mx.array(w), g, mx.bfloat16 if i % 2 else mx.float16)
    wd = np.array(mm.dequantize(p, s, g).astype(mx.float32)).astype(np.float64)
    for dt in (mx.float32, mx.bfloat16):
        x = mx.array(rng.standard_normal((m, k)).astype(np.float32)).astype(dt)
        b = mx.array(rng.standard_normal(n).astype(np.float32))
        y = np.array(mm.fp4_gemm(x, p, s, b, group_size=g, activation="silu").astype(mx.float32))
        pre = np.array(x.astype(mx.float32)).astype(np.float64) @ wd.T + np.array(b)
        ref = pre * 0.5 * (1 + np.tanh(pre / 2))  # silu, without exp overflow
        assert np.isfinite(y).all(), (m, n, k, g)
        err = np.abs(y - ref).max() / np.abs(ref).max()
        assert err < tol[dt], (m, n, k, g, dt, err)
# One-token MoE: each expert's GEMM is a byte-table decode.
E, k, N, K, g = 6, 2, 520, 128, 32
pw, sw = mm.quantize(mx.array(rng.standard_normal((E, N, K)).astype(np.float32)), g, mx.float16)
wd = np.array(mm.dequantize(pw, sw, g)).astype(np.float64)
for T in (1, 3):
    x = rng.standard_normal((T, K)).astype(np.float32)
    idx = rng.integers(0, E, size=(T, k)).astype(np.int32)
    y = np.array(mm.moe_gemm(mx.array(x), pw, sw, mx.array(idx), group_size=g))
    ref = np.einsum("tk,tsnk->tsn", x.astype(np.float64), wd[idx])
    assert np.abs(y - ref).max() <= 2e-5 * np.abs(ref).max(), T
print("ok")
"""


def test_avx2_byte_table_kernel():
    """The AVX2 build's byte-table decode (1-3 rows, strips of 512 columns visited group
    by group) against float64, in a process that forces the AVX2 build (so AVX-512
    machines run it too)."""
    import mlx_marlin._ext as ext

    if EMULATOR:
        pytest.skip("CPU kernel builds are not used by fp4_gemm in the Metal emulator build")
    if ext._cpu_isa() not in ("avx2", "avx512") or not _cpu_has("avx2"):
        pytest.skip("x86 AVX2 kernel build only")
    _assert_check_passes_with_isa("avx2", BYTE_TABLE_CHECK)


@pytest.mark.parametrize("act", [None, "silu", "gelu"])
def test_empty_k_gives_activation_of_bias(stream, act):
    """K = 0: no products, so act(bias) (act(0) without one) in every row; no kernel runs."""
    w, s = mx.zeros((0, 16), mx.uint32), mx.zeros((0, 16), mx.float16)
    bias = mx.array(np.linspace(-3, 3, 16).astype(np.float32))
    for x, b in ((mx.zeros((4, 0)), bias), (mx.zeros((2, 3, 0), mx.bfloat16), None), (mx.zeros((0, 0)), bias)):
        y = mm.fp4_gemm(x, w, s, b, group_size=32, activation=act, stream=stream)
        assert y.shape == (*x.shape[:-1], 16) and y.dtype == x.dtype
        pre = np.broadcast_to(to_np(b) if b is not None else np.zeros(16), y.shape)
        np.testing.assert_allclose(to_np(y), activation(pre, act), rtol=1e-2 if x.dtype == mx.bfloat16 else 1e-6,
                                   atol=1e-6)
    g = mx.grad(lambda x: mm.fp4_gemm(x, w, s, bias, group_size=32, activation=act).sum())(mx.zeros((4, 0)))
    assert g.shape == (4, 0)


def test_sizes_past_int32_are_refused():
    """Checked before anything is allocated (the arrays stay lazy)."""
    packed, scales = mx.zeros((8, 16), mx.uint32), mx.zeros((2, 16), mx.float16)
    x = mx.broadcast_to(mx.zeros((1, 1, 64)), (2**16, 2**16, 64))
    with pytest.raises(ValueError, match=r"x of shape .* has 4294967296 rows .* more than 2\^31 - 1"):
        mm.fp4_gemm(x, packed, scales, group_size=32)
    with pytest.raises(ValueError, match=r"K = 8 \* w.shape\[-2\] = 2147483648 is more than 2\^31 - 1"):
        mm.fp4_gemm(mx.zeros((1, 8)), mx.zeros((2**28, 1), mx.uint32), mx.zeros((2**26, 1), mx.float16), group_size=32)
