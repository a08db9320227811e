"""simdgroup_matrix layout, multiply-accumulate, tiled GEMMs, softmax and
template kernels instantiated with host_name (also through macros)."""
import time

import numpy as np
import pytest

from conftest import build_module, mtlemu


def lane_coords(lane):
    qid = lane // 4
    row = (qid & 4) + (lane // 2) % 4
    col = (qid & 2) * 2 + (lane % 2) * 2
    return row, col


def test_thread_elements_layout(build):
    m = build("matrix")
    src = np.arange(128, dtype=np.float32)
    owned = np.zeros(64, np.float32)
    owned_t = np.zeros(64, np.float32)
    stored = np.full(64, -1, np.float32)
    m.launch("frag_layout", grid=1, tg=32, buffers=[src, owned, owned_t, stored])
    block = src.reshape(8, 16)[:, 8:]  # rows of 16, origin x=8
    for lane in range(32):
        r, c = lane_coords(lane)
        assert owned[2 * lane] == src[r * 8 + c] and owned[2 * lane + 1] == src[r * 8 + c + 1], lane
        assert owned_t[2 * lane] == block.T[r, c] and owned_t[2 * lane + 1] == block.T[r, c + 1], lane
        assert stored[r * 8 + c] == 2 * lane and stored[r * 8 + c + 1] == 2 * lane + 1, lane
    assert sorted(stored) == list(range(64))  # the layout covers the matrix exactly once


def test_multiply_accumulate(build):
    m = build("matrix")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((8, 8)).astype(np.float16)
    b = rng.standard_normal((8, 8)).astype(np.float16)
    c = rng.standard_normal((8, 8)).astype(np.float32)
    d = np.zeros((8, 8), np.float32)
    e = np.zeros((8, 8), np.float32)
    m.launch("mma_small", grid=1, tg=32, buffers=[a, b, c, d, e])
    np.testing.assert_allclose(d, a.astype(np.float64) @ b.astype(np.float64) + c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e, 3 * c, rtol=1e-6)


def run_gemm(m, kernel, M, N, K, dtype, tile=64):
    rng = np.random.default_rng(M + N + K)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    C = np.zeros((M, N), dtype)
    m.launch(kernel, grid=(N // tile, M // tile), tg=128, buffers=[A, B, C, np.array([M, N, K], np.int32)])
    return A, B, C


@pytest.mark.parametrize("kernel,dtype,tile", [("gemm_f32_64x64", np.float32, 64), ("gemm_f32_32x32", np.float32, 32),
                                               ("gemm_f16_64x64", np.float16, 64)])
def test_gemm_64(build, kernel, dtype, tile):
    m = build("gemm")
    A, B, C = run_gemm(m, kernel, 64, 64, 64, dtype, tile)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    if dtype == np.float32:
        np.testing.assert_allclose(C, ref, rtol=1e-4, atol=1e-4)
    else:
        # float accumulation, one rounding to half at the end
        np.testing.assert_allclose(C.astype(np.float64), ref.astype(np.float16).astype(np.float64), rtol=2e-3, atol=2e-2)


def test_gemm_bfloat(build):
    m = build("gemm")
    rng = np.random.default_rng(9)
    A = rng.standard_normal((64, 64)).astype(np.float32)
    B = rng.standard_normal((64, 64)).astype(np.float32)
    to_bits = lambda x: ((x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)) >> 16).astype(np.uint16)
    from_bits = lambda b: (b.astype(np.uint32) << 16).view(np.float32)
    Ab, Bb = to_bits(A), to_bits(B)
    C = np.zeros((64, 64), np.uint16)
    m.launch("gemm_bf16_64x64", grid=1, tg=128, buffers=[Ab, Bb, C, np.array([64, 64, 64], np.int32)])
    ref = from_bits(Ab).astype(np.float64) @ from_bits(Bb).astype(np.float64)
    np.testing.assert_allclose(from_bits(C), ref, rtol=1e-2, atol=5e-2)


def test_gemm_missing_barrier_is_a_race():
    m = build_module("gemm", defines=("PLANT_MISSING_BARRIER",))
    with pytest.raises(mtlemu.EmulatorError, match=r"race.*kernel 'gemm_f32_64x64'.*'As'"):
        run_gemm(m, "gemm_f32_64x64", 64, 64, 64, np.float32)


def test_gemm_timing_128x128x256(build):
    """Not an assertion on speed: prints what a context-switch-heavy kernel costs."""
    for checked in (False, True):
        m = build_module("gemm", checked=checked)
        run_gemm(m, "gemm_f32_64x64", 128, 128, 256, np.float32)  # warm-up (stacks, arena)
        dt = float("inf")
        for _ in range(5):  # best of 5: the machine is shared
            t = time.perf_counter()
            A, B, C = run_gemm(m, "gemm_f32_64x64", 128, 128, 256, np.float32)
            dt = min(dt, time.perf_counter() - t)
        np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-3)
        print(f"\n128x128x256 simdgroup_matrix GEMM ({'checked' if checked else 'fast'} build): {dt * 1e3:.1f} ms "
              "(best of 5, includes numpy input generation)")


@pytest.mark.parametrize("kernel,dtype", [("softmax_float32", np.float32), ("softmax_float16", np.float16)])
@pytest.mark.parametrize("row_len,tg", [(1000, 256), (77, 64), (4096, 1024)])
def test_softmax(build, kernel, dtype, row_len, tg):
    m = build("softmax")
    rows = 3
    x = (np.random.default_rng(row_len).standard_normal((rows, row_len)) * 4).astype(dtype)
    out = np.zeros_like(x)
    m.launch(kernel, grid=rows, tg=tg, buffers=[x, out, np.array([row_len], np.int32)])
    xf = x.astype(np.float64)
    ref = np.exp(xf - xf.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    tol = 1e-5 if dtype == np.float32 else 2e-3
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=tol, atol=tol * 1e-2)


def test_template_registration(build):
    names = build("gemm").kernels()
    assert names == ["gemm_f32_64x64", "gemm_f16_64x64", "gemm_f32_32x32", "gemm_bf16_64x64"]
    assert build("softmax").kernels() == ["softmax_float32", "softmax_float16"]
