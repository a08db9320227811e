"""Threadgroup memory, barriers, deadlock detection, race and bounds checks."""
import numpy as np
import pytest

from conftest import mtlemu


@pytest.fixture(scope="module")
def sync(build):
    return build("sync")


def test_threadgroup_reduction_256(sync):
    x = np.random.default_rng(1).random(4 * 256).astype(np.float32)
    out = np.zeros(4, np.float32)
    sync.launch("tg_reduce", grid=4, tg=256, buffers=[x, out])
    np.testing.assert_allclose(out, x.reshape(4, 256).sum(1, dtype=np.float64), rtol=1e-5)


def test_threadgroup_memory_is_per_threadgroup(sync):
    out = np.zeros(3 * 64, np.uint32)
    sync.launch("tg_private", grid=3, tg=64, buffers=[out])
    ref = np.array([tg * 1000 + 63 - l for tg in range(3) for l in range(64)], np.uint32)
    np.testing.assert_array_equal(out, ref)


def test_threadgroup_argument(sync):
    out = np.zeros(96, np.float32)
    sync.launch("tg_argument", grid=1, tg=96, buffers=[out], threadgroup_mem=[96 * 4])
    np.testing.assert_array_equal(out, (95 - np.arange(96)) * 2.0)
    with pytest.raises(mtlemu.EmulatorError, match=r"out-of-bounds threadgroup write.*threadgroup\(0\)"):
        sync.launch("tg_argument", grid=1, tg=96, buffers=[out], threadgroup_mem=[64 * 4])


def test_missing_barrier_is_reported_as_race(sync):
    x = np.ones(256, np.float32)
    out = np.zeros(1, np.float32)
    with pytest.raises(mtlemu.EmulatorError) as e:
        sync.launch("tg_reduce_missing_barrier", grid=1, tg=256, buffers=[x, out])
    msg = str(e.value)
    assert "race" in msg and "'buf'" in msg and "tg_reduce_missing_barrier" in msg, msg
    assert "thread 128" in msg and "thread 0" in msg, msg


def test_read_after_write_race_names_lanes(sync):
    x = np.arange(128, dtype=np.float32)
    out = np.zeros(128, np.float32)
    sync.launch("rotate", grid=1, tg=128, buffers=[x, out, np.array([1], np.uint32)])
    np.testing.assert_array_equal(out, np.roll(x, 1))
    with pytest.raises(mtlemu.EmulatorError, match=r"read-after-write.*kernel 'rotate'.*thread 1 reads 'tile' at byte offset 0 .*written by thread 0"):
        sync.launch("rotate", grid=1, tg=128, buffers=[x, out, np.array([0], np.uint32)])


def test_write_write_race(sync):
    out = np.zeros(64, np.float32)
    with pytest.raises(mtlemu.EmulatorError, match=r"write-write.*thread 1 writes 'flag'.*written by thread 0"):
        sync.launch("write_write", grid=1, tg=64, buffers=[out])


def test_simdgroup_barrier_orders_within_simdgroup(sync):
    out = np.zeros(32, np.float32)
    sync.launch("simd_exchange", grid=1, tg=32, buffers=[out])
    np.testing.assert_array_equal(out, 31 - np.arange(32))


def test_race_check_can_be_disabled(sync):
    x = np.arange(128, dtype=np.float32)
    out = np.zeros(128, np.float32)
    sync.launch("rotate", grid=1, tg=128, buffers=[x, out, np.array([0], np.uint32)], check_races=False)


def test_deadlock_is_reported(sync):
    out = np.zeros(64, np.float32)
    with pytest.raises(mtlemu.EmulatorError, match=r"deadlock.*threads \[16-63\] wait at threadgroup_barrier.*threads \[0-15\] already returned"):
        sync.launch("early_return_barrier", grid=2, tg=64, buffers=[out])


def test_out_of_bounds_device_write(sync):
    n = 256
    src = np.arange(n, dtype=np.float32)
    dst = np.zeros(n, np.float32)
    sync.launch("copy_shifted", grid=n // 64, tg=64, buffers=[src, dst, np.array([0], np.uint32)])
    np.testing.assert_array_equal(dst, src)
    guard = np.zeros(n + 16, np.float32)
    dst = guard[:n]  # the element after dst exists in host memory: only the checker can tell
    with pytest.raises(mtlemu.EmulatorError) as e:
        sync.launch("copy_shifted", grid=n // 64, tg=64, buffers=[src, dst, np.array([1], np.uint32)])
    msg = str(e.value)
    assert "out-of-bounds write of 4 bytes in kernel 'copy_shifted': device buffer(1) at byte offset 1024 (buffer size 1024 bytes)" in msg, msg
    assert "thread_position_in_grid (255,0,0)" in msg, msg
    assert guard[n] == 0, "the out-of-bounds store must not reach host memory"


def test_out_of_bounds_threadgroup_array(sync):
    out = np.zeros(64, np.float32)
    sync.launch("tg_overflow", grid=1, tg=64, buffers=[out, np.array([32], np.uint32)])
    with pytest.raises(mtlemu.EmulatorError, match=r"out-of-bounds threadgroup write of 4 bytes in kernel 'tg_overflow' at byte offset 128 of 'small' \(size 128 bytes\)"):
        sync.launch("tg_overflow", grid=1, tg=64, buffers=[out, np.array([64], np.uint32)])


def test_missing_buffer_is_reported(sync):
    with pytest.raises(mtlemu.EmulatorError, match=r"buffer\(2\)"):
        sync.launch("copy_shifted", grid=1, tg=32, buffers=[np.zeros(32, np.float32), np.zeros(32, np.float32)])


def test_atomics(sync):
    keys = np.random.default_rng(3).integers(0, 1000, 512).astype(np.uint32)
    counts = np.zeros(8, np.uint32)
    total = np.zeros(1, np.float32)
    sync.launch("histogram", grid=4, tg=128, buffers=[keys, counts, total])
    np.testing.assert_array_equal(counts, np.bincount(keys % 8, minlength=8))
    assert total[0] == 256.0


def test_constant_tables(sync):
    packed = np.arange(256, dtype=np.uint8)
    out = np.zeros(512, np.float16)
    sync.launch("dequant_fp4", grid=4, tg=64, buffers=[packed, out])
    lut = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float16)
    np.testing.assert_array_equal(out[0::2], lut[packed & 15])
    np.testing.assert_array_equal(out[1::2], lut[packed >> 4])


def test_unknown_kernel_and_bad_sizes(sync):
    with pytest.raises(mtlemu.EmulatorError, match="unknown kernel 'nope'.*tg_reduce"):
        sync.launch("nope", grid=1, tg=1)
    with pytest.raises(mtlemu.EmulatorError, match="bad launch size"):
        sync.launch("tg_reduce", grid=1, tg=2048, buffers=[np.zeros(1, np.float32)] * 2)


def test_divergent_collectives_are_reported(sync):
    with pytest.raises(mtlemu.EmulatorError, match=r"different simd collectives"):
        sync.launch("divergent_collectives", grid=1, tg=32, buffers=[np.zeros(32, np.float32)])


def test_collective_vs_barrier_deadlock(sync):
    with pytest.raises(mtlemu.EmulatorError, match=r"deadlock.*threads \[16-31\] wait at threadgroup_barrier.*threads \[0-15\] wait in a simd collective"):
        sync.launch("collective_vs_barrier", grid=1, tg=32, buffers=[np.zeros(32, np.float32)])


def test_returned_lanes_leave_collectives(sync):
    out = np.zeros(32, np.float32)
    sync.launch("collective_after_return", grid=1, tg=32, buffers=[out])
    np.testing.assert_array_equal(out[:8], np.full(8, sum(range(8))))


def test_threadgroup_memory_limit(sync):
    with pytest.raises(mtlemu.EmulatorError, match=r"36000 bytes of threadgroup memory; Metal allows 32768"):
        sync.launch("too_much_tg_memory", grid=1, tg=32, buffers=[np.zeros(32, np.float32)])


def test_write_to_constant_buffer(sync):
    with pytest.raises(mtlemu.EmulatorError, match=r"write of 4 bytes to constant buffer\(0\) at byte offset 0"):
        sync.launch("write_constant", grid=1, tg=4, buffers=[np.ones(4, np.float32)])


def test_threadgroup_declaration_forms(sync):
    out = np.zeros(32, np.float32)
    sync.launch("tg_declarators", grid=1, tg=32, buffers=[out])
    r = 31 - np.arange(32)
    np.testing.assert_array_equal(out, r + 2 * r + 7 + 1)


def test_spin_wait_within_threadgroup(sync):
    out = np.zeros(2, np.uint32)
    flags = np.zeros(2, np.uint32)
    sync.launch("spin_handoff", grid=2, tg=64, buffers=[out, flags])
    np.testing.assert_array_equal(out, [1, 1])


def test_livelock_is_reported(sync):
    with pytest.raises(mtlemu.EmulatorError, match=r"livelock in kernel 'spin_on_later_threadgroup', threadgroup \(0,0,0\)"):
        sync.launch("spin_on_later_threadgroup", grid=2, tg=32, buffers=[np.zeros(1, np.uint32)])


def test_watchdog_ends_runaway_kernel(sync, tmp_path):
    import os
    import subprocess
    import sys
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(sync.path.rsplit('/', 1)[0])!r})\n"
        f"sys.path.insert(0, {os.path.dirname(mtlemu.__file__)!r})\n"
        "import mtlemu\n"
        f"m = mtlemu.load({sync.path!r})\n"
        "m.launch('endless', grid=1, tg=32, buffers=[np.zeros(1, np.uint32)])\n")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MTLEMU_TIMEOUT_S": "1"})
    assert p.returncode == 124, p.stderr
    assert "kernel 'endless' still running" in p.stderr


def test_uninitialized_threadgroup_reads(sync):
    out = np.zeros(64, np.float32)
    sync.launch("tg_overflow", grid=1, tg=64, buffers=[out, np.array([32], np.uint32)], check_uninitialized=True)
    sync.launch("tg_overflow", grid=1, tg=64, buffers=[out, np.array([16], np.uint32)])  # opt-in only
    with pytest.raises(mtlemu.EmulatorError, match=r"uninitialized threadgroup memory") as e:
        sync.launch("tg_overflow", grid=1, tg=64, buffers=[out, np.array([16], np.uint32)], check_uninitialized=True)
    import re
    offset = int(re.search(r"reads 'small' at byte offset (\d+)", str(e.value)).group(1))
    assert 64 <= offset < 128  # elements 16..31 were never written
