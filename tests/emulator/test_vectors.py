"""Vector constructor/conversion/swizzle semantics and half/bfloat rounding."""
import numpy as np
import pytest


def bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (reference)."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    r[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def bf16_value(bits):
    return (np.asarray(bits, np.uint32) << 16).view(np.float32)


def test_vector_semantics(build):
    m = build("vectors")
    out = np.full(64, np.nan, np.float32)
    hin = np.array([0.1, 65504, -2.5, 1e-5], np.float16)
    m.launch("vector_semantics", grid=1, tg=32, buffers=[out, hin])
    expect = {
        0: float(hin[0]), 1: 65504.0, 2: -2.5, 3: float(hin[3]),
        4: 1234.0, 5: 58.0, 6: 6.0, 7: 1023.0, 8: 2.0, 9: 41.0, 10: 32.0, 11: 9834.0,
        12: 4.5, 13: 1.0, 14: -73.0, 15: -1.0, 16: 6.5, 17: 35.0, 18: float(0x3F80),
        19: 2.0, 20: 101.0, 21: 5.0, 22: 41.0, 23: -3.0, 24: 4.0,
        25: float(np.float32(np.exp(np.float32(1))) + 2.0), 26: float(np.float16(1) / np.float16(3)),
        27: 6.0, 28: 4.0, 29: -6.0,
    }
    for k, v in expect.items():
        assert out[k] == pytest.approx(v, rel=1e-6), f"result {k}: got {out[k]}, expected {v}"


def test_half_and_bfloat_rounding(build):
    m = build("vectors")
    specials = [1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 65519.0, 65520.0, 1e-8, 6e-8,
                -0.0, np.inf, -np.inf, np.nan, 3.14159265, -1e30, 2**-149, 1.00390625]
    rng = np.random.default_rng(0)
    x = np.concatenate([np.array(specials, np.float32), rng.standard_normal(240).astype(np.float32) * 100])
    y = np.concatenate([np.ones(len(specials), np.float32), rng.standard_normal(240).astype(np.float32)])
    n = len(x)
    h = np.zeros(n, np.float16)
    bf = np.zeros(n, np.uint16)
    hsum = np.zeros(n, np.float16)
    bfsum = np.zeros(n, np.uint16)
    m.launch("rounding", grid=n // 64, tg=64, buffers=[x, h, bf, hsum, bfsum, y])
    with np.errstate(all="ignore"):
        xh, yh = x.astype(np.float16), y.astype(np.float16)
    np.testing.assert_array_equal(h.view(np.uint16), xh.view(np.uint16))
    np.testing.assert_array_equal(bf, bf16_bits(x))
    # half ops: numpy float16 arithmetic rounds after every operation
    with np.errstate(all="ignore"):
        ref_h = (xh * yh) + xh
    np.testing.assert_array_equal(hsum.view(np.uint16), ref_h.view(np.uint16))
    xb, yb = bf16_value(bf16_bits(x)), bf16_value(bf16_bits(y))
    with np.errstate(all="ignore"):
        prod = bf16_value(bf16_bits(xb * yb))
        ref_b = bf16_bits(prod + xb)
    np.testing.assert_array_equal(bfsum, ref_b)


@pytest.mark.parametrize("kernel,first", [("template_casts_uint4", 1 + 10 * 4), ("template_casts_half4", 1.5 + 10 * float(np.float16(4.9)))])
def test_template_and_half_bfloat_casts(build, kernel, first):
    m = build("vectors")
    out = np.zeros(4, np.float32)
    m.launch(kernel, grid=1, tg=1, buffers=[out])
    assert out[0] == pytest.approx(first, rel=1e-6)
    assert list(out[1:]) == [2.75, 5.5, 3.0]
