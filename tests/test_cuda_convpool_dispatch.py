"""The CPU-side logic of conv/pool on the GPU, runnable without one: which device an op picks, the errors
for mixed devices and missing cupy, the GPU copy in contiguous(), the stream handed to the kernels; and the
CUDA kernels themselves on the CPU emulator of tests/cuda_emu (a smoke run by default, the whole GPU test
files with LAYERFORGE_TEST_CUDA_EMULATOR=1)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from layerforge import ops
from layerforge.ops import _common
from layerforge.ops import pool as pool_ops
from test_cuda_dispatch import FakeGpuArray

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _f(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: ops.conv2d(FakeGpuArray((2, 3, 8, 8)), _f(4, 3, 3, 3)), "x is a GPU array but weight is not"),
        (lambda: ops.conv2d(_f(2, 3, 8, 8), FakeGpuArray((4, 3, 3, 3))), "weight is a GPU array but x is not"),
        (lambda: ops.conv2d(FakeGpuArray((2, 3, 8, 8)), FakeGpuArray((4, 3, 3, 3)), _f(4)),
         "x, weight are GPU arrays but bias is not"),
        (lambda: ops.conv2d_backward(_f(2, 4, 6, 6), FakeGpuArray((2, 3, 8, 8)), FakeGpuArray((4, 3, 3, 3))),
         "x, weight are GPU arrays but grad_out is not"),
        (lambda: ops.conv2d_algorithm(FakeGpuArray((2, 3, 8, 8)), _f(4, 3, 3, 3)), "weight is not"),
        (lambda: ops.max_pool2d_backward(FakeGpuArray((1, 2, 4, 4)), _f(1, 2, 8, 8), 2), "x is not"),
        (lambda: ops.max_pool2d_backward(FakeGpuArray((1, 2, 4, 4)), (1, 2, 8, 8), 2,
                                         indices=np.zeros((1, 2, 4, 4), np.int64)), "indices is not"),
        (lambda: ops.avg_pool2d_backward(_f(1, 2, 4, 4), FakeGpuArray((1, 2, 8, 8)), 2), "grad_out is not"),
        (lambda: ops.adaptive_avg_pool2d_backward(FakeGpuArray((1, 2, 4, 4)), _f(1, 2, 8, 8)), "x is not"),
    ],
)
def test_mixed_devices_raise_naming_both(call, words):
    with pytest.raises(TypeError, match=words):
        call()


def test_a_shape_is_not_an_operand():
    # Backward functions take x or its shape: a shape must not count as a CPU operand next to GPU arrays.
    assert pool_ops._shape_or_array((1, 2, 8, 8)) is None
    g = FakeGpuArray((1, 2, 4, 4))
    assert _common.device_of("op", grad_out=g, x=pool_ops._shape_or_array([1, 2, 8, 8])) == "cuda"


def test_gpu_arrays_without_cupy_say_how_to_get_it():
    try:
        import cupy  # noqa: F401
        pytest.skip("cupy is installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="need cupy"):
        ops.conv2d(FakeGpuArray((2, 3, 8, 8)), FakeGpuArray((4, 3, 3, 3)))
    with pytest.raises(RuntimeError, match="need cupy"):
        ops.max_pool2d(FakeGpuArray((1, 2, 8, 8)), 2)


def test_contiguous_copies_gpu_arrays_on_the_gpu(monkeypatch):
    from cuda_emu import fake_cupy

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    a = fake_cupy.asarray(np.arange(48.0).reshape(2, 4, 6))[:, ::2].transpose(0, 2, 1)
    c = _common.contiguous(a)
    assert isinstance(c, fake_cupy.ndarray) and c.flags.c_contiguous and np.array_equal(c, a)
    assert _common.contiguous(c) is c
    n = np.arange(6.0).reshape(2, 3).T
    assert type(_common.contiguous(n)) is np.ndarray and _common.contiguous(n).flags.c_contiguous


def test_kernels_get_the_current_stream(monkeypatch):
    calls = []

    class Kernels:
        def __getattr__(self, name):
            return lambda *args: calls.append((name, args))

    monkeypatch.setattr(_common, "cuda_kernels", lambda op: Kernels())
    monkeypatch.setattr(_common, "current_stream_handle", lambda: 1234)
    _common.run_kernel("cuda", "op", "avg_pool2d_forward", "x", "out", [1], "NCHW")
    assert calls == [("avg_pool2d_forward", ("x", "out", [1], "NCHW", 1234))]
    assert _common.run_kernel("cpu", "op", "pool2d_output_size", 8, 2, 0, 2, 1, False) == 4


# ---------------------------------------------------------------- the kernels on the CPU emulator
def _emulator_module():
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to build the CUDA emulator")
    pytest.importorskip("pybind11", reason="the CUDA emulator is built against pybind11 (the 'test' extra)")
    sys.path.insert(0, os.path.join(HERE, "cuda_emu"))
    try:
        import build as emu_build
    finally:
        sys.path.pop(0)
    return emu_build.build(os.path.join(ROOT, "build", "cuda_emu"))


def _run_gpu_tests(module, *args):
    env = dict(os.environ, LAYERFORGE_CUDA_EMULATOR=module)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_cuda_kernels_on_the_cpu_emulator_smoke():
    # Builds csrc/cuda/{conv,pool}.cu as C++ against the emulator (cached in build/cuda_emu) and runs a few
    # GPU tests through the real bindings and ops: the kernels keep compiling and running without a GPU.
    _run_gpu_tests(_emulator_module(), "tests/test_cuda_conv.py::test_strided_views",
                   "tests/test_cuda_conv.py::test_without_bias_and_grad_x",
                   "tests/test_cuda_pool.py::test_strided_views", "tests/test_cuda_pool.py::test_max_pool_nan")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LAYERFORGE_TEST_CUDA_EMULATOR"),
                    reason="opt-in (several minutes): LAYERFORGE_TEST_CUDA_EMULATOR=1")
def test_all_gpu_tests_on_the_cpu_emulator():
    _run_gpu_tests(_emulator_module(), "tests/test_cuda_conv.py", "tests/test_cuda_pool.py")
