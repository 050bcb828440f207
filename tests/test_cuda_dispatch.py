"""The CPU-side logic of GPU dispatch: which device an op picks, and the errors when it cannot use one.
These run everywhere; the kernels themselves are tested in tests/test_cuda_*.py (marked cuda)."""
import numpy as np
import pytest

from layerforge import cuda
from layerforge.ops import _common


class FakeGpuArray:
    """Stands in for a cupy array: only __cuda_array_interface__ matters to dispatch."""

    def __init__(self, shape=(2, 3)):
        self.__cuda_array_interface__ = {
            "shape": shape, "typestr": "<f4", "data": (0, False), "version": 3, "strides": None,
        }


def test_numpy_operands_run_on_cpu():
    assert _common.device_of("op", a=np.ones(2), b=np.ones(2), bias=None) == "cpu"


def test_gpu_operands_run_on_gpu():
    assert _common.device_of("op", a=FakeGpuArray(), b=FakeGpuArray(), bias=None) == "cuda"


def test_mixed_devices_raise_naming_both():
    with pytest.raises(TypeError, match=r"op: a is a GPU array but b is not \(a ndarray\)"):
        _common.device_of("op", a=FakeGpuArray(), b=np.ones(2))
    with pytest.raises(TypeError, match=r"x, w are GPU arrays but bias is not"):
        _common.device_of("op", x=FakeGpuArray(), w=FakeGpuArray(), bias=np.ones(2))


@pytest.mark.skipif(cuda.is_available(), reason="checks the message given without a GPU")
def test_no_gpu_gives_reason():
    with pytest.raises(RuntimeError, match="op: cannot run on the GPU: .+"):
        _common.cuda_kernels("op")
