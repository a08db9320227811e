"""The Metal FP4 GEMM kernels (metal/gemm_fp4.metal), run directly on the Metal-on-CPU
emulator (metal/emulator) in a checked build (bounds, threadgroup races, uninitialized
threadgroup reads): every kernel host name the encoders can dispatch, on fresh random
inputs, against a float64 numpy reference.

Shapes sit 1..7 off the tile sizes, outputs are NaN-poisoned (every element must be
written), all activations and bias on/off are covered.  Runs in any build (it needs
clang++-19, not a GPU); the op-level path through the extension is covered by
tests/test_fp4_gemm.py under scripts/emulator_tests.sh.
"""

import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import mlx_marlin._ext as ext
from reference import activation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "metal" / "emulator"))
import mtlemu  # noqa: E402

SOURCE = ROOT / "metal" / "gemm_fp4.metal"
SOURCES = sorted((ROOT / "metal").glob("*.metal"))  # what the builds compile into one module
INCLUDES = [str(ROOT / "cpp"), str(ROOT / "metal" / "include")]
BUILD_DIR = os.environ.get("MLX_MARLIN_MTLEMU_BUILD", os.path.join(tempfile.gettempdir(), "mlx-marlin-mtlemu"))

pytestmark = pytest.mark.skipif(
    not (shutil.which("clang++-19") or os.environ.get("MTLEMU_CXX")), reason="the Metal emulator needs clang++-19"
)

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)
ACTS = {"none": 0, "relu": 1, "gelu": 2, "gelu_approx": 3, "silu": 4}
# max|err| / max|ref| by MMA input type (the decoded weights are rounded to it too).
TOL = {"f32": 2e-5, "f16": 2e-3, "bf16": 1.6e-2}


@pytest.fixture(scope="module")
def emu():
    return mtlemu.compile(SOURCES, include_dirs=INCLUDES, checked=True, build_dir=BUILD_DIR)


# ------------------------------------------------------------------ dtypes
# Buffers in kernel dtypes and the exact values they hold (bf16 as uint16 bit patterns).
from metal_helpers import from_device, to_device  # noqa: E402
from metal_helpers import nan_buffer as poisoned  # noqa: E402


def params(m, n, k, g, act="none", has_bias=False):
    return struct.pack("6i", m, n, k, g, ACTS[act], int(has_bias))


def random_weight(rng, k, n, g, sdt):
    codes = rng.integers(0, 16, (k, n)).astype(np.uint32)
    w = np.zeros((k // 8, n), np.uint32)
    for i in range(8):
        w |= codes[i::8] << np.uint32(4 * i)
    s_buf, s64 = to_device(rng.uniform(0.05, 0.5, (k // g, n)), sdt)
    wd = E2M1[codes] * np.repeat(s64, g, axis=0)  # [K, N]
    return w, s_buf, wd


def rel_err(out, ref):
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


# ------------------------------------------------------------------ kernels
def parse_name(name):
    """fp4_gemm_<variant>_<x>_<s>[_out_f32] -> (variant, x, s, out)."""
    rest = name[len("fp4_gemm_"):]
    out = None
    if rest.endswith("_out_f32"):
        rest, out = rest[: -len("_out_f32")], "f32"
    variant = next(v for v in ("large_m", "decode", "default", "transposed") if rest.startswith(v + "_"))
    x, s = rest[len(variant) + 1:].split("_")
    return variant, x, s, out or x


KERNELS = ext._gpu_kernel_names()  # every GPU kernel: fp4_gemm, moe, attention
GEMM_KERNELS = [n for n in KERNELS if n.startswith("fp4_gemm_")]
FORWARD = [n for n in GEMM_KERNELS if not n.startswith("fp4_gemm_transposed_")]
TRANSPOSED = [n for n in GEMM_KERNELS if n.startswith("fp4_gemm_transposed_")]
# Rows at which plan_gpu_gemm picks each variant (its tiles come from the plan).
PLAN_ROWS = {"decode": 1, "default": 17, "large_m": 256}


def run_forward(emu, name, rng, m, n, k, g, act, with_bias, abs_scale=False):
    """Launches `name` on fresh inputs; max|err| is compared with TOL x max|ref|, or with
    `abs_scale` x max(|x| @ |W| + |bias|), the natural error scale of a dot product whose
    terms cancel (tiny shapes: a single output can be far below its terms)."""
    variant, xdt, sdt, odt = parse_name(name)
    pv, tm, tn, _, _, _, threads = ext._gpu_gemm_plan(PLAN_ROWS[variant], n)
    assert pv == variant
    x, x64 = to_device(rng.standard_normal((m, k)), xdt)
    w, s, wd = random_weight(rng, k, n, g, sdt)
    bias = rng.standard_normal(n).astype(np.float32)
    out = poisoned((m, n), odt)
    emu.launch(name, grid=(-(-n // tn), -(-m // tm), 1), tg=(threads, 1, 1),
               buffers=[x, w, s, bias if with_bias else x, out, params(m, n, k, g, act, with_bias)],
               check_uninitialized=True)
    y = from_device(out, odt)
    assert np.all(np.isfinite(y)), f"{name}: unwritten (NaN) outputs at {np.argwhere(~np.isfinite(y))[:4].tolist()}"
    ref = activation(x64 @ wd + (bias.astype(np.float64) if with_bias else 0), act)
    if abs_scale:
        mag = np.abs(x64) @ np.abs(wd) + (np.abs(bias.astype(np.float64)) if with_bias else 0)
        err = float(np.abs(y - ref).max() / max(mag.max(), 1e-30))
    else:
        err = rel_err(y, ref)
    assert err < TOL[xdt], (name, m, n, k, g, act, with_bias, err)


ACT_NAMES = list(ACTS)


@pytest.mark.parametrize("name", FORWARD)
def test_forward_kernel(emu, name):
    """Each forward kernel at two shapes off its tile by 1..7 (rows and columns), with an
    activation and bias pattern that differs across kernels."""
    variant = parse_name(name)[0]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    _, tm, tn, *_ = ext._gpu_gemm_plan(PLAN_ROWS[variant], 64)
    i = FORWARD.index(name)
    shapes = [
        (tm + 1 + i % 7, tn + 7 - i % 5, 96, 32),            # 2x2 tiles, partial in M and N
        (max(1, tm - 1 - (i + 3) % 7), 2 * tn - 3, 256, 128),  # partial tile in M, 2 in N
    ]
    if variant == "decode":
        shapes[0] = (1 + i % 7, tn + 5, 192, 64)  # decode rows: 1..16
    for j, (m, n, k, g) in enumerate(shapes):
        run_forward(emu, name, rng, m, n, k, g, ACT_NAMES[(i + 2 * j) % 5], with_bias=(i + j) % 2 == 0)


@pytest.mark.parametrize("act", ACT_NAMES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_epilogue_activations_float32(emu, act, with_bias):
    """Exact-input float32 kernel: the epilogue (bias, erf-based gelu, tanh gelu, silu)
    must be within float32 tolerance of float64 math."""
    rng = np.random.default_rng(ACTS[act] * 2 + with_bias)
    run_forward(emu, "fp4_gemm_default_f32_bf16", rng, 19, 37, 64, 32, act, with_bias)


def test_erfc_tails_through_gelu(emu):
    """Pre-activations over [-9, 9] take erfc_approx over its range: the negative tail,
    tiny but not zero, keeps its relative accuracy (no 1 + erf cancellation)."""
    m, n, k, g = 3, 9, 32, 32
    x = np.zeros((m, k), np.float32)
    x[:, 0] = [1.0, -1.0, 0.5]
    w = np.full((k // 8, n), 0x0, np.uint32)
    w[0, :] = 2  # code 2 = 1.0 at k = 0
    s = np.linspace(-9, 9, n).astype(np.float16).reshape(1, n)
    out = poisoned((m, n), "f32")
    emu.launch("fp4_gemm_default_f32_f16", grid=(1, 1, 1), tg=(128, 1, 1),
               buffers=[x, w, s, x, out, params(m, n, k, g, "gelu")])
    pre = x[:, :1].astype(np.float64) * s.astype(np.float64)
    ref = activation(pre, "gelu")
    assert np.abs(out - ref).max() < 5e-6 * max(1, np.abs(ref).max())
    assert (np.abs(out - ref) / np.maximum(np.abs(ref), 1e-37)).max() < 3e-5


@pytest.mark.parametrize("name", TRANSPOSED)
def test_transposed_kernel(emu, name):
    _, xdt, sdt, _ = parse_name(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for m, n, k, g in [(5, 70, 96, 32), (1, 9, 512, 128), (9, 33, 320, 64)]:
        gbuf, g64 = to_device(rng.standard_normal((m, n)), xdt)
        w, s, wd = random_weight(rng, k, n, g, sdt)
        out = poisoned((m, k), xdt)
        emu.launch(name, grid=(-(-(k // 8) // 32), -(-m // 4), 1), tg=(32, 4, 1),
                   buffers=[gbuf, w, s, out, params(m, n, k, g)])
        y = from_device(out, xdt)
        assert np.all(np.isfinite(y))
        assert rel_err(y, g64 @ wd.T) < TOL[xdt], (name, m, n, k)


# ------------------------------------------------------------------ coverage and checks
def test_every_kernel_name_is_compiled(emu):
    """Every host name the kernel-name functions (gemm, moe, attention) can return exists in
    the module built from metal/*.metal, and nothing else is compiled."""
    compiled = set(emu.kernels())
    names = set(KERNELS)
    # gemm 36, moe gemm 12 + gated (glu) gemm 12 + grouping 8 + combine 3, routing 3 + 2 (float32
    # weights), attention 45
    assert len(names) == len(KERNELS) == 36 + 12 + 12 + 8 + 3 + 5 + 45
    assert names - compiled == set(), sorted(names - compiled)
    assert compiled - names == set(), sorted(compiled - names)


@pytest.mark.skipif(ext._backend() != "metal-emulator", reason="emulator build of the extension only")
def test_extension_module_has_every_kernel():
    """The kernels module CMake built beside the extension (what the ops dispatch to)."""
    assert ext._emulator_checked()
    assert set(KERNELS) <= set(ext._emulator_kernels())


def test_plan_variants():
    assert ext._gpu_gemm_plan(1, 100)[0] == "decode"
    assert ext._gpu_gemm_plan(16, 100)[0] == "decode"
    assert ext._gpu_gemm_plan(17, 100)[0] == "default"
    assert ext._gpu_gemm_plan(255, 100)[0] == "default"
    assert ext._gpu_gemm_plan(256, 100)[0] == "large_m"


def test_bounds_errors_surface(emu):
    """The checked build reports an undersized output buffer instead of corrupting memory."""
    m, n, k, g = 4, 20, 32, 32
    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w, s, _ = random_weight(rng, k, n, g, "f16")
    out = np.zeros((m, n - 1), np.float32)
    with pytest.raises(mtlemu.EmulatorError, match="out-of-bounds write"):
        emu.launch("fp4_gemm_decode_f32_f16", grid=(1, 1, 1), tg=(128, 1, 1),
                   buffers=[x, w, s, x, out, params(m, n, k, g)])


def test_planted_race_is_detected():
    """Without the simdgroup barrier between staging and loading B, the race checker fires."""
    bad = mtlemu.compile(SOURCE, include_dirs=INCLUDES, defines=["MARLIN_PLANT_RACE=1"], checked=True,
                         build_dir=BUILD_DIR)
    rng = np.random.default_rng(2)
    m, n, k, g = 8, 32, 64, 32
    x = rng.standard_normal((m, k)).astype(np.float16)
    w, s, _ = random_weight(rng, k, n, g, "f16")
    out = poisoned((m, n), "f16")
    with pytest.raises(mtlemu.EmulatorError, match="race"):
        bad.launch("fp4_gemm_default_f16_f16", grid=(1, 1, 1), tg=(128, 1, 1),
                   buffers=[x, w, s, x, out, params(m, n, k, g)])


RACE_SCRIPT = r"""
import mlx.core as mx, numpy as np, mlx_marlin as mm
w = mx.array(np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
p, s = mm.quantize(w, 32)
try:
    mx.eval(mm.fp4_gemm(mx.ones((20, 64), dtype=mx.float16), p, s, group_size=32, stream=mx.cpu))
except RuntimeError as e:
    print("RAISED", "race" in str(e))
else:
    print("NO ERROR")
try:
    mx.eval(mm.moe_gemm(mx.ones((3, 64), dtype=mx.float16), p[None], s[None], mx.zeros((3, 1), mx.int32),
                        group_size=32, stream=mx.cpu))
except RuntimeError as e:
    print("MOE RAISED", "race" in str(e))
else:
    print("MOE NO ERROR")
"""


@pytest.mark.skipif(ext._backend() != "metal-emulator", reason="emulator build of the extension only")
def test_emulator_errors_reach_python(tmp_path):
    """Op level: a kernel error found by the emulator is a Python exception, not a crash."""
    so = mtlemu.build(SOURCES, str(tmp_path / "planted.so"), include_dirs=INCLUDES,
                      defines=["MARLIN_PLANT_RACE=1"], checked=True, build_dir=BUILD_DIR)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(ext.__file__)))
    env = dict(os.environ, MLX_MARLIN_EMULATOR_MODULE=str(so),
               PYTHONPATH=os.pathsep.join([pkg_parent, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", RACE_SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                       cwd=pkg_parent)
    assert "RAISED True" in r.stdout and "MOE RAISED True" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_kernel_report():
    """scripts/kernel_report.py: threadgroup memory <= 32 KB and tiles multiples of 8 for
    every kernel (it exits non-zero otherwise), one row per compiled host name."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(ext.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg_parent, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "kernel_report.py"), "--json"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads(r.stdout)
    assert {row["kernel"] for row in rows} == set(KERNELS)
    for row in rows:
        assert row["threadgroup_bytes"] <= 32768
        for d in ("tile_m", "tile_n", "tile_k"):
            assert row[d] % 8 == 0


try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:

    @settings(max_examples=50, deadline=None)
    @given(
        m=st.integers(1, 300),
        n=st.integers(1, 150),
        kg=st.integers(1, 3),
        g=st.sampled_from([32, 64, 128]),
        xdt=st.sampled_from(["f16", "bf16", "f32"]),
        sdt=st.sampled_from(["f16", "bf16"]),
        out_f32=st.booleans(),
        act=st.sampled_from(ACT_NAMES),
        with_bias=st.booleans(),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_planned_kernel_property(emu, m, n, kg, g, xdt, sdt, out_f32, act, with_bias, seed):
        """Random shapes through the kernel plan_gpu_gemm picks (as encode_fp4_gemm does)."""
        variant = ext._gpu_gemm_plan(m, n)[0]
        name = f"fp4_gemm_{variant}_{xdt}_{sdt}" + ("_out_f32" if out_f32 and xdt != "f32" else "")
        run_forward(emu, name, np.random.default_rng(seed), m, n, kg * g, g, act, with_bias, abs_scale=True)
