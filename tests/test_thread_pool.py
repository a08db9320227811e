"""The CPU kernels' thread pool (cpp/cpu/thread_pool.cpp) under ThreadSanitizer:
tests/thread_pool_check.cpp runs thousands of jobs of 1 to 2^20+ tasks back to back and
from two calling threads at once, nested calls and a throwing task, and checks that
every task of every job runs exactly once.  Skipped without a C++ compiler with TSan."""
import os
import shutil
import subprocess

import pytest

from metal_helpers import BUILD_DIR, ROOT


@pytest.fixture(scope="module")
def checker():
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    exe = BUILD_DIR / f"thread_pool_check_{os.getpid()}"
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-g", "-fsanitize=thread", f"-I{ROOT / 'cpp'}",
                            str(ROOT / "tests" / "thread_pool_check.cpp"), str(ROOT / "cpp" / "cpu" / "thread_pool.cpp"),
                            "-pthread", "-o", str(exe)], capture_output=True, text=True)
    if build.returncode != 0:
        if "sanitize" in build.stderr or "tsan" in build.stderr:
            pytest.skip("this compiler cannot build with -fsanitize=thread")
        raise AssertionError(build.stderr[-2000:])
    yield exe
    exe.unlink(missing_ok=True)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_every_task_runs_once_under_tsan(checker, threads):
    env = dict(os.environ, MLX_MARLIN_NUM_THREADS=str(threads), TSAN_OPTIONS="halt_on_error=1")
    env.pop("LD_PRELOAD", None)  # scripts/sanitize_tests.sh preloads ASan, which a TSan binary cannot run under
    r = subprocess.run([str(checker)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout + r.stderr)[-3000:]
