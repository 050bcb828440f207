import os
import zlib

import numpy as np
import pytest

import layerforge
from layerforge import _C

# GPU tests on the CPU emulator of the CUDA execution model (tests/cuda_emu): LAYERFORGE_CUDA_EMULATOR names
# a module built by tests/cuda_emu/build.py; it stands in for layerforge._cuda, and numpy for cupy.
if os.environ.get("LAYERFORGE_CUDA_EMULATOR"):
    from cuda_emu import install

    install(os.environ["LAYERFORGE_CUDA_EMULATOR"])


def _available_paths():
    paths = ["generic"]
    feats = _C.cpu_features()
    if "avx2" in feats and "fma" in feats:
        paths.append("avx2")
    return paths


@pytest.fixture(params=_available_paths())
def cpu_path(request):
    """Run the test once per CPU code path this machine can run (the portable one always)."""
    before = _C.cpu_path()
    _C.set_cpu_path(request.param)
    yield request.param
    _C.set_cpu_path(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = layerforge.get_num_threads()
    layerforge.set_num_threads(request.param)
    yield request.param
    layerforge.set_num_threads(before)


@pytest.fixture
def rng(request):
    # Fresh inputs per test, reproducible from the test's name.
    seed = zlib.crc32(request.node.nodeid.encode())  # stable across processes: failures reproduce
    return np.random.default_rng(seed)


def rel_err(x, ref):
    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    denom = np.linalg.norm(ref)
    return np.linalg.norm(x - ref) / (denom if denom > 0 else 1.0)


def pytest_collection_modifyitems(config, items):
    from layerforge import cuda

    if cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA device: {cuda.unavailable_reason()}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
