import mlx.core as mx
import numpy as np
import pytest

import mlx_marlin as mm
from reference import E2M1, to_np, unpack_reference


def test_e2m1_table_is_ocp_e2m1():
    assert np.array_equal(np.array(mm.E2M1_VALUES), E2M1)
    # Every code decodes through dequantize as the spec says (scale 1).
    k, n = 16, 3
    codes = np.tile(np.arange(16, dtype=np.uint32), (n, 1))  # [N, K]
    packed = np.zeros((k // 8, n), dtype=np.uint32)
    for kk in range(k):
        packed[kk // 8] |= codes[:, kk] << (4 * (kk % 8))
    scales = mx.ones((1, n), dtype=mx.float16)
    # group_size must divide K=16: use a K=32 tensor with the codes twice.
    packed32 = mx.array(np.concatenate([packed, packed], axis=0))
    deq = to_np(mm.dequantize(packed32, mx.ones((1, n), dtype=mx.float16), group_size=32))
    assert np.array_equal(deq[:, :16], np.tile(E2M1, (n, 1)))
    del scales


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("scale_dtype", [mx.float16, mx.bfloat16])
def test_packing_layout_matches_spec(rng, group_size, scale_dtype):
    n, k = 37, 2 * group_size
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
    packed, scales = mm.quantize(w, group_size, scale_dtype)
    assert packed.shape == (k // 8, n) and packed.dtype == mx.uint32
    assert scales.shape == (k // group_size, n) and scales.dtype == scale_dtype
    ref = unpack_reference(np.array(packed), to_np(scales), group_size)
    assert np.array_equal(to_np(mm.dequantize(packed, scales, group_size)), ref)


def test_round_trip_exact_for_representable_values(rng):
    n, k, g = 20, 128, 32
    codes = rng.integers(0, 16, size=(n, k))
    codes[:, ::g] = 7  # every group holds its absmax 6 -> scale exactly the group's power of two / 1
    group_scale = 2.0 ** rng.integers(-6, 6, size=(n, k // g))
    w = E2M1[codes] * np.repeat(group_scale, g, axis=1)
    packed, scales = mm.quantize(mx.array(w.astype(np.float32)), g)
    # absmax/6 = the power of two, exact in float16
    assert np.array_equal(to_np(mm.dequantize(packed, scales, g)), w)


def test_ties_round_to_even():
    g = 32
    vals = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, -2.5, -5.0, 0.24, 0.26, 5.01]
    expect = [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -1.0, -2.0, -4.0, 0.0, 0.5, 6.0]
    row = np.zeros(g, dtype=np.float32)
    row[: len(vals)] = vals
    packed, scales = mm.quantize(mx.array(row[None, :]), g)
    assert to_np(scales)[0, 0] == 1.0
    assert np.array_equal(to_np(mm.dequantize(packed, scales, g))[0, : len(vals)], expect)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_error_bound_and_scale_search(rng, group_size):
    n, k = 64, 256
    w = rng.standard_normal((n, k)).astype(np.float32)
    packed, scales = mm.quantize(mx.array(w), group_size)
    deq = to_np(mm.dequantize(packed, scales, group_size))
    # Nearest rounding: error at most half the widest gap (2, between 4 and 6) times the scale,
    # plus the scale's own rounding.
    s = np.repeat(to_np(scales).T, group_size, axis=1)
    assert np.all(np.abs(deq - w) <= 1.0 * s * (1 + 1e-3) + 1e-6)
    err = np.sum((deq - w) ** 2)
    p2, s2 = mm.quantize(mx.array(w), group_size, scale_search=True)
    err2 = np.sum((to_np(mm.dequantize(p2, s2, group_size)) - w) ** 2)
    assert err2 <= err
    assert err2 < 0.97 * err  # the search finds better scales on Gaussian data


def test_expert_batched(rng):
    e, n, k, g = 3, 24, 64, 32
    w = rng.standard_normal((e, n, k)).astype(np.float32)
    packed, scales = mm.quantize(mx.array(w), g)
    assert packed.shape == (e, k // 8, n) and scales.shape == (e, k // g, n)
    deq = to_np(mm.dequantize(packed, scales, g))
    for i in range(e):
        p_i, s_i = mm.quantize(mx.array(w[i]), g)
        assert np.array_equal(deq[i], to_np(mm.dequantize(p_i, s_i, g)))


@pytest.mark.parametrize("shape", [(40, 128), (3, 40, 128)])
def test_outputs_are_row_major(rng, shape):
    """The ops copy arrays that are not row-major on every call (a transposing copy of
    every expert's scales for moe_gemm): quantize and from_mlx must not return views."""
    w = mx.array(rng.standard_normal(shape).astype(np.float32))
    wq, s = mx.quantize(w, group_size=32, bits=4, mode="mxfp4")
    for out in (mm.quantize(w, 32), mm.quantize(w, 64, scale_search=True), mm.from_mlx(wq, s, "mxfp4", 64)):
        mx.eval(out)
        assert all(memoryview(a).c_contiguous for a in out)


def test_zero_group_and_dtypes(rng):
    w = np.zeros((4, 64), dtype=np.float32)
    w[1] = rng.standard_normal(64)
    for dt in (mx.float16, mx.bfloat16, mx.float32):
        packed, scales = mm.quantize(mx.array(w).astype(dt), 32)
        deq = to_np(mm.dequantize(packed, scales, 32))
        assert np.all(deq[0] == 0) and np.all(np.isfinite(deq))


def test_from_mlx_mxfp4_exact(rng):
    w = mx.array(rng.standard_normal((48, 256)).astype(np.float32))
    wq, s = mx.quantize(w, mode="mxfp4")
    ref = to_np(mx.dequantize(wq, s, mode="mxfp4", dtype=mx.float32))
    packed, scales = mm.from_mlx(wq, s, "mxfp4", group_size=32, strict=True)
    assert scales.dtype == mx.bfloat16
    assert np.array_equal(to_np(mm.dequantize(packed, scales, 32)), ref)
    # Same codes, same words: MLX packs the same E2M1 codes along K.
    codes_mlx = (np.array(wq)[:, :, None] >> (4 * np.arange(8))) & 0xF
    codes_ours = (np.array(packed)[:, None, :] >> (4 * np.arange(8))[None, :, None]) & 0xF
    # Up to the sign of zero (code 8 = -0.0, which MLX's GPU quantize emits for tiny
    # negatives): the decoded values are identical either way.
    codes_mlx, codes_ours = np.where(codes_mlx == 8, 0, codes_mlx), np.where(codes_ours == 8, 0, codes_ours)
    assert np.array_equal(codes_mlx.reshape(48, 256), codes_ours.reshape(256, 48).T)


def test_from_mlx_inexact_cases(rng):
    w = mx.array(rng.standard_normal((32, 256)).astype(np.float32))
    wq, s = mx.quantize(w, mode="mxfp4")
    ref = to_np(mx.dequantize(wq, s, mode="mxfp4", dtype=mx.float32))
    # Larger target groups merge sub-groups with different power-of-two scales.
    with pytest.raises(ValueError, match="not representable"):
        mm.from_mlx(wq, s, "mxfp4", group_size=128, strict=True)
    packed, scales = mm.from_mlx(wq, s, "mxfp4", group_size=128)
    deq = to_np(mm.dequantize(packed, scales, 128))
    s_big = np.repeat(to_np(scales).T, 128, axis=1)
    assert np.all(np.abs(deq - ref) <= s_big * 1.0 + 1e-12)  # within one rounding step
    # nvfp4: groups of 16 with E4M3 scales.
    wq, s = mx.quantize(w, mode="nvfp4")
    ref = to_np(mx.dequantize(wq, s, mode="nvfp4", dtype=mx.float32))
    packed, scales = mm.from_mlx(wq, s, "nvfp4", group_size=32)
    deq = to_np(mm.dequantize(packed, scales, 32))
    assert np.abs(deq - ref).max() <= np.abs(ref).max() * 0.2
    # ... and exact when both halves of every 32-group share their scale.
    half = np.clip(rng.standard_normal((32, 128, 16)), -4.5, 4.5).astype(np.float32)
    half[:, :, 0] = 5.0  # same absmax in every 16-group -> same E4M3 scale
    wq, s = mx.quantize(mx.array(half.reshape(32, 2048)), mode="nvfp4")
    ref = to_np(mx.dequantize(wq, s, mode="nvfp4", dtype=mx.float32))
    packed, scales = mm.from_mlx(wq, s, "nvfp4", group_size=32, scale_dtype=mx.float16, strict=True)
    assert np.array_equal(to_np(mm.dequantize(packed, scales, 32)), ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(w=np.full((4, 64), np.nan, np.float32)), "NaN or Inf"),
        (dict(w=np.full((4, 64), np.inf, np.float32)), "NaN or Inf"),
        (dict(w=np.ones((4, 48), np.float32)), "multiple of group_size"),
        (dict(w=np.ones((4, 64), np.int32)), "float16, bfloat16 or float32"),
        (dict(w=np.ones((64,), np.float32)), r"\[N, K\]"),
        (dict(w=np.ones((2, 2, 4, 64), np.float32)), r"\[N, K\]"),
        (dict(w=np.ones((4, 64), np.float32), group_size=16), "group_size"),
        (dict(w=np.ones((4, 64), np.float32), group_size=32.0), "group_size"),
        (dict(w=np.ones((4, 64), np.float32), group_size=True), "group_size"),
        (dict(w=np.ones((4, 64), np.float32), scale_dtype=mx.float32), "scale_dtype"),
        (dict(w=np.full((4, 64), 1e6, np.float32)), "bfloat16"),
    ],
)
def test_quantize_bad_input(kwargs, match):
    kwargs = dict(kwargs)
    w = mx.array(kwargs.pop("w"))
    with pytest.raises(ValueError, match=match):
        mm.quantize(w, **kwargs)


def test_dequantize_and_from_mlx_bad_input(rng):
    packed, scales = mm.quantize(mx.array(rng.standard_normal((8, 64)).astype(np.float32)), 32)
    with pytest.raises(ValueError, match="packed must be uint32"):
        mm.dequantize(packed.astype(mx.int32), scales, 32)
    with pytest.raises(ValueError, match="scales must have shape"):
        mm.dequantize(packed, scales[:1], 32)
    with pytest.raises(ValueError, match="scales must be float16 or bfloat16"):
        mm.dequantize(packed, scales.astype(mx.float32), 32)
    with pytest.raises(ValueError, match="group_size"):
        mm.dequantize(packed, scales, 48)
    for dtype in (mx.int32, mx.bool_, mx.complex64):
        with pytest.raises(ValueError, match="dtype must be mx.float32, mx.float16 or mx.bfloat16"):
            mm.dequantize(packed, scales, 32, dtype=dtype)
    wq, s = mx.quantize(mx.ones((8, 64)), mode="mxfp4")
    with pytest.raises(ValueError, match="mode"):
        mm.from_mlx(wq, s, "affine")
    with pytest.raises(ValueError, match="scales must be uint8"):
        mm.from_mlx(wq, s[:, :1], "mxfp4")
    with pytest.raises(ValueError, match="global_scale"):
        mm.from_mlx(wq, s, "mxfp4", global_scale=mx.array(1.0))
