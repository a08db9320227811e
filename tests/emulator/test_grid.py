"""Builtin thread-position attributes over a 3D dispatch."""
import numpy as np


def test_builtins_3d(build):
    m = build("grid")
    grid, tg = (3, 2, 2), (8, 5, 2)  # 80 threads: a partial third simdgroup
    n = np.prod(grid) * np.prod(tg)
    out = np.zeros((n, 16), np.uint32)
    m.launch("builtins", grid=grid, tg=tg, buffers=[out])
    G = [grid[i] * tg[i] for i in range(3)]
    for z in range(G[2]):
        for y in range(G[1]):
            for x in range(G[0]):
                o = out[(z * G[1] + y) * G[0] + x]
                t = (x % tg[0], y % tg[1], z % tg[2])
                lid = (t[2] * tg[1] + t[1]) * tg[0] + t[0]
                exp = [x, y, z, *t, x // tg[0], y // tg[1], z // tg[2], x, y, lid, lid % 32, lid // 32, 3, 32]
                assert list(o) == exp, (x, y, z)


def test_attribute_lists_and_thread_limits(build):
    import pytest
    from conftest import mtlemu
    m = build("grid")
    assert {"builtins", "limited", "limited_f32"} <= set(m.kernels())
    out = np.zeros(64, np.uint32)
    m.launch("limited", grid=1, tg=64, buffers=[out])
    np.testing.assert_array_equal(out, np.arange(64))
    with pytest.raises(mtlemu.EmulatorError, match=r"max_total_threads_per_threadgroup\(64\).*128 threads"):
        m.launch("limited", grid=1, tg=128, buffers=[np.zeros(128, np.uint32)])
    with pytest.raises(mtlemu.EmulatorError, match=r"max_total_threads_per_threadgroup\(32\)"):
        m.launch("limited_f32", grid=1, tg=64, buffers=[np.zeros(64, np.float32)])
