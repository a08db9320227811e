import os
import sys
import zlib

# Every CPU op output starts as NaN bytes (cpp/cpu/tensor_view.cpp), so an element a
# kernel never writes fails the float64 comparisons instead of passing as a zero.  Set
# before any op runs; the child processes of the ISA tests inherit it.
os.environ.setdefault("MLX_MARLIN_CPU_POISON", "1")

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Which stream the op tests run on: the CPU backend by default; MLX_MARLIN_TEST_DEVICE=gpu
# runs the same suite through eval_gpu (CUDA build on a GPU machine, or the Metal emulator
# build).
TEST_DEVICE = os.environ.get("MLX_MARLIN_TEST_DEVICE", "cpu")
# Everything without an explicit stream (references built from MLX ops included) runs on the
# chosen device too: on a CUDA or Metal MLX the default device would otherwise be the GPU,
# where a float32 matmul may run as TF32 and ops without GPU kernels raise.
mx.set_default_device(mx.gpu if TEST_DEVICE == "gpu" else mx.cpu)


@pytest.fixture
def stream():
    return mx.gpu if TEST_DEVICE == "gpu" else mx.cpu


@pytest.fixture
def rng(request):
    # A reproducible generator per test, seeded from the test id (stable across runs,
    # unlike hash()); MLX_MARLIN_TEST_SEED shifts every seed to draw fresh inputs.
    seed = (zlib.crc32(request.node.nodeid.encode()) + int(os.environ.get("MLX_MARLIN_TEST_SEED", "0"))) % (2**32)
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def pytest_runtest_makereport(item, call):
    if call.excinfo is not None:
        for name, value in item.user_properties:
            if name == "seed":
                print(f"\n[{item.nodeid}] rng seed = {value}")


@pytest.fixture(autouse=True)
def _fresh_attention_route():
    """mlx_marlin.load / quantize_model route mlx-lm's attention (a process-wide patch):
    each test starts with no route chosen, as a fresh process would."""
    yield
    lm = sys.modules.get("mlx_marlin.lm")
    if lm is not None and lm._attention_route is not None:
        lm.use_marlin_attention(False)
        lm._attention_route = None

