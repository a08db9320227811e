"""Kernels written like the project's real ones (steel-style loader structs,
bitonic sort, prefix sums, FP4 LUT dequantisation)."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def real(build):
    return build("realistic")


def test_loader_struct_and_helper(real):
    src = np.arange(16 * 48, dtype=np.float32)
    dst = np.zeros(16 * 32, np.float32)
    total = np.zeros(1, np.float32)
    real.launch("loader_copy", grid=1, tg=64, buffers=[src, dst, total])
    np.testing.assert_array_equal(dst, src.reshape(16, 48)[:, :32].ravel())
    assert total[0] == sum(range(64))


def test_moe_routing(real):
    tokens, n_exp, top_k = 6, 64, 4
    rng = np.random.default_rng(2)
    scores = rng.random((tokens, n_exp)).astype(np.float32)
    ids = np.zeros((tokens, top_k), np.uint32)
    w = np.zeros((tokens, top_k), np.float32)
    counts = np.zeros(n_exp, np.uint32)
    params = np.array([n_exp, top_k], np.uint32)
    real.launch("moe_route", grid=tokens, tg=n_exp, buffers=[scores, ids, w, counts, params])
    ref_ids = np.argsort(-scores, axis=1)[:, :top_k]
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(w, np.take_along_axis(scores, ref_ids, 1))
    np.testing.assert_array_equal(counts, np.bincount(ref_ids.ravel(), minlength=n_exp))
    offsets = np.zeros(n_exp, np.uint32)
    real.launch("exclusive_scan", grid=1, tg=n_exp, buffers=[counts, offsets, np.array([n_exp], np.uint32)])
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(counts)[:-1]]))


@pytest.mark.parametrize("n", [100, 1000])
def test_exclusive_scan_large(real, n):
    counts = np.random.default_rng(n).integers(0, 50, n).astype(np.uint32)
    offsets = np.zeros(n, np.uint32)
    real.launch("exclusive_scan", grid=1, tg=1024, buffers=[counts, offsets, np.array([n], np.uint32)])
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(counts)[:-1]]))


@pytest.mark.parametrize("kernel,dtype", [("fp4_gemv_f32", np.float32), ("fp4_gemv_f16", np.float16)])
def test_fp4_gemv(real, kernel, dtype):
    N, K = 10, 256
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 16, (N, K)).astype(np.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    scales = (rng.random((N, K // 32)) + 0.5).astype(np.float16)
    x = rng.standard_normal(K).astype(dtype)
    y = np.zeros(N, dtype)
    real.launch(kernel, grid=(N + 1) // 2, tg=64, buffers=[packed, scales, x, y, np.array([N, K], np.uint32)])
    lut = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float16)
    wdq = (lut[codes] * np.repeat(scales, 32, axis=1)).astype(np.float16)
    ref = wdq.astype(np.float64) @ x.astype(np.float64)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-3 if dtype == np.float16 else 1e-5, atol=1e-2)


def test_struct_copies(real):
    src = np.arange(128, dtype=np.float32)
    dst = np.zeros(32, np.float32)
    pairs = np.zeros(32, dtype=[("a", "f4"), ("b", "i4")])
    pairs["a"] = np.arange(32)
    pairs["b"] = np.arange(32) * 10
    orig = pairs.copy()
    real.launch("struct_copies", grid=1, tg=32, buffers=[src, dst, pairs])
    np.testing.assert_array_equal(dst, src[3::4])
    np.testing.assert_array_equal(pairs["b"], orig["b"][::-1])
    np.testing.assert_array_equal(pairs["a"], orig["a"][::-1] + src[127 - np.arange(32)])


@pytest.mark.parametrize("kernel,dtype,D", [("attention_f32_d32", np.float32, 32), ("attention_f16_d64", np.float16, 64)])
def test_attention(build, kernel, dtype, D):
    m = build("attention")
    L, S = 40, 64  # 5 row blocks: the last threadgroup has one idle simdgroup
    rng = np.random.default_rng(D)
    Q = rng.standard_normal((L, D)).astype(dtype)
    K = rng.standard_normal((S, D)).astype(dtype)
    V = rng.standard_normal((S, D)).astype(dtype)
    O = np.zeros((L, D), dtype)
    scale = 1 / np.sqrt(D)
    params = np.array([L, S], np.int32).tobytes() + np.float32(scale).tobytes()
    m.launch(kernel, grid=(L // 8 + 1) // 2, tg=64, buffers=[Q, K, V, O, params])
    s = Q.astype(np.float64) @ K.astype(np.float64).T * scale
    pm = np.exp(s - s.max(1, keepdims=True))
    ref = (pm / pm.sum(1, keepdims=True)) @ V.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-2
    np.testing.assert_allclose(O.astype(np.float64), ref, rtol=tol, atol=tol)
