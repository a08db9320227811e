"""MSL idioms of large kernel libraries (address-space overloads, optional
buffers, vector direct initialisation, ...)."""
import numpy as np


def expected(lid, bias):
    pair = sorted([lid % 3, 1.0])
    chosen = pair[0] if lid % 2 == 0 else pair[1]
    return 3.5 + 10 + 4 + (lid & 0xF) * 0.5 + (lid % 4 + 10 * (lid // 4)) + chosen * 100 + bias * 1000 + 32 * 10000


def test_msl_idioms(build):
    m = build("msl_idioms")
    out = np.zeros(32, np.float32)
    m.launch("idioms", grid=1, tg=32, buffers=[out], function_constants={0: False})
    np.testing.assert_allclose(out, [expected(l, 0.0) for l in range(32)], rtol=1e-6)
    bias = np.linspace(0, 1, 32).astype(np.float32)
    m.launch("idioms", grid=1, tg=32, buffers=[out, bias, np.float32(0.5)], function_constants={0: True})
    np.testing.assert_allclose(out, [expected(l, bias[l]) for l in range(32)], rtol=1e-6)
