import os

import mlx.core as mx
import numpy as np
import pytest

# Which stream the op tests run on: the CPU backend by default; MLX_MARLIN_TEST_DEVICE=gpu
# runs the same suite through eval_gpu (CUDA build on a GPU machine, or the Metal emulator
# build).
TEST_DEVICE = os.environ.get("MLX_MARLIN_TEST_DEVICE", "cpu")


@pytest.fixture
def stream():
    return mx.gpu if TEST_DEVICE == "gpu" else mx.cpu


@pytest.fixture
def rng(request):
    # A fresh, reproducible generator per test: the seed derives from the test id, and
    # is printed on failure through the id itself.
    seed = abs(hash(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
