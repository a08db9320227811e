"""Simd collectives against a numpy model of a 32-wide simdgroup, including
partial simdgroups (threadgroup size not a multiple of 32) and lanes that
returned early."""
import numpy as np
import pytest

K = 20


def reference(x, n_threads, active):
    out = np.full((n_threads, K), np.nan, np.float32)
    for base in range(0, n_threads, 32):
        lanes = [l for l in range(32) if base + l < n_threads and l < active]
        v = {l: np.float32(x[base + l]) for l in lanes}
        act = set(lanes)

        def src(l, s, own):
            return v[s] if s in act else own

        for l in lanes:
            o = out[base + l]
            o[0] = src(l, (l * 7 + 3) % 32, v[l])
            o[1] = src(l, l ^ 5, v[l])
            o[2] = src(l, l + 3, v[l])
            o[3] = src(l, l - 3, v[l])
            o[4] = src(l, 4, v[l])
            acc = np.float32(0)
            for s in lanes:
                acc = np.float32(acc + v[s])
            o[5] = acc
            o[6] = max(v.values())
            o[7] = min(v.values())
            inc = np.float32(0)
            exc = np.float32(0)
            for s in lanes:
                if s < l:
                    exc = np.float32(exc + v[s])
                if s <= l:
                    inc = np.float32(inc + v[s])
            o[8], o[9] = inc, exc
            bits = sum(1 << s for s in lanes if v[s] > 0.5)
            o[10], o[11] = bits & 0xFFFF, bits >> 16
            o[12] = all(v[s] > -10 for s in lanes)
            o[13] = all(v[s] > 0.1 for s in lanes)
            o[14] = any(v[s] > 0.9 for s in lanes)
            o[15] = any(v[s] > 10 for s in lanes)
            o[16] = sum(lanes)
            o[17] = sum(1 for s in lanes if s < l)
            o[18] = 4 * src(l, l ^ 1, v[l])
            o[19] = max(np.float16(v[s]) for s in lanes)
    return out


@pytest.mark.parametrize("n_threads,active", [(64, 32), (48, 32), (32, 20), (96, 7), (1, 32)])
def test_collectives(build, n_threads, active):
    m = build("simd")
    rng = np.random.default_rng(n_threads + active)
    x = rng.random(n_threads).astype(np.float32)
    out = np.full((n_threads, K), np.nan, np.float32)
    m.launch("collectives", grid=1, tg=n_threads, buffers=[x, out, np.array([active], np.uint32)])
    ref = reference(x, n_threads, active)
    # shuffles from inactive lanes are undefined in MSL; the reference
    # (own value) matches the emulator's choice, compare everything.
    for j in range(K):
        np.testing.assert_array_equal(out[:, j], ref[:, j], err_msg=f"collective #{j}")


def reference2(x, n_threads, active):
    out = np.full((n_threads, 16), np.nan, np.float32)
    for base in range(0, n_threads, 32):
        lanes = [l for l in range(32) if base + l < n_threads and l < active]
        v = {l: int(x[base + l]) for l in lanes}
        f = {l: np.float32(1 + (v[l] % 4) * 0.25) for l in lanes}
        act = set(lanes)
        src = lambda s, own: v[s] if s in act else own
        for l in lanes:
            o = out[base + l]
            prod = np.float32(1)
            for s in lanes:
                prod = np.float32(prod * f[s])
            o[0] = prod
            a, orr, xr = 0xFFFFFFFF, 0, 0
            for s in lanes:
                a &= v[s] | 0xF0
                orr |= v[s]
                xr ^= v[s]
            o[1], o[2], o[3] = a, orr, xr
            o[4] = v[lanes[0]]
            o[5] = src((l + 5) % 32, v[l])
            o[6] = src((l - 5) % 32, v[l])
            s = l + 3
            o[7] = src(s, v[l]) if s < 32 else ((v[s - 32] + 1000) if s - 32 in act else v[l] + 1000)
            o[8] = float(l == lanes[0])
            inc, exc = np.float32(1), np.float32(1)
            for s in lanes:
                if s < l:
                    exc = np.float32(exc * f[s])
                if s <= l:
                    inc = np.float32(inc * f[s])
            o[9], o[10] = inc, exc
            o[11] = min(v.values()) - 50
            q = [s for s in range(l & ~3, (l & ~3) + 4) if s in act]
            o[12] = sum(v[s] for s in q)
            o[13] = src((l & ~3) | ((l ^ 2) & 3), v[l])
            o[14] = src((l & ~3) | 3, v[l])
            o[15] = sum(1 << s for s in lanes)
    return out


@pytest.mark.parametrize("n_threads,active", [(64, 32), (40, 32), (32, 13)])
def test_more_collectives(build, n_threads, active):
    m = build("simd")
    x = np.random.default_rng(n_threads * 7 + active).integers(0, 200, n_threads).astype(np.uint32)
    out = np.full((n_threads, 16), np.nan, np.float32)
    m.launch("collectives2", grid=1, tg=n_threads, buffers=[x, out, np.array([active], np.uint32)])
    ref = reference2(x, n_threads, active)
    for j in range(16):
        np.testing.assert_array_equal(out[:, j], ref[:, j], err_msg=f"collective #{j}")
