"""A stand-in for the GPU side of the ops, so that their GPU code path — argument checks, layouts, the
saved state, backward dispatch — runs and is checked on machines without a GPU: numpy arrays that claim to
be GPU arrays (``__cuda_array_interface__``), a numpy-backed stand-in for cupy, and the CPU kernels in place of the
CUDA module's entry points (which check what the real bindings require of their arguments first).

Use: ``from fake_gpu import fake_gpu, gpu  # noqa: F401`` and take the ``fake_gpu`` fixture."""
import numpy as np
import pytest

from layerforge import _C
from layerforge.ops import _common


class GpuLike(np.ndarray):
    """A numpy array that answers to __cuda_array_interface__: the ops take it for a GPU array."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.__array_interface__["data"][0], False),
                "strides": self.strides, "version": 3}


def gpu(a):
    return None if a is None else np.asarray(a).view(GpuLike)


class FakeCupy:
    """What the ops use of cupy, on numpy: every array it makes is a GpuLike (as cupy's stay on the GPU)."""
    ndarray = np.ndarray

    @staticmethod
    def asarray(a):
        return gpu(a)

    @staticmethod
    def empty(shape, dtype):
        return gpu(np.empty(shape, dtype))

    @staticmethod
    def ascontiguousarray(a):
        return gpu(np.ascontiguousarray(a))

    @staticmethod
    def broadcast_to(a, shape):
        return np.broadcast_to(a, shape, subok=True)


def _unit_last_stride(a):
    return a.shape[-1] <= 1 or a.strides[-1] == a.itemsize


class FakeCuda:
    """The _cuda module's attention and LSTM functions, run by the CPU kernels (float32/float64)."""

    def __init__(self):
        self.calls = []

    def sdpa_forward(self, q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, bf16, stream):
        self._check_sdpa(q, k, v, mask, out, lse, bf16, stream)
        self.calls.append(("sdpa_forward", q.dtype, None if mask is None else mask.dtype, lse.dtype, bf16))
        if q.dtype in (np.float32, np.float64):
            _C.sdpa_forward(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse)
        else:  # the half types exist only on the GPU: record the call, write something
            out.fill(0)
            lse.fill(0)

    def sdpa_backward(self, q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, grad_out, gq, gk, gv, bf16,
                      stream):
        self._check_sdpa(q, k, v, mask, out, lse, bf16, stream)
        for a in (grad_out, gq, gk, gv):
            assert a.ndim == 4 and a.dtype == q.dtype and _unit_last_stride(a)
        for a in (gq, gk, gv):
            assert a.flags.c_contiguous
        self.calls.append(("sdpa_backward", q.dtype, None if mask is None else mask.dtype, lse.dtype, bf16))
        if q.dtype in (np.float32, np.float64):
            _C.sdpa_backward(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, grad_out, gq, gk, gv)
        else:
            for a in (gq, gk, gv):
                a.fill(0)

    @staticmethod
    def _check_sdpa(q, k, v, mask, out, lse, bf16, stream):
        assert isinstance(stream, int)
        for a in (q, k, v, out):
            assert a.ndim == 4 and _unit_last_stride(a)
        assert (q.dtype == np.uint16) == bf16
        acc = np.float64 if q.dtype == np.float64 else np.float32
        assert lse.ndim == 3 and lse.dtype == acc  # the GPU keeps statistics in float32 (float64)
        if mask is not None:
            assert mask.ndim == 4 and mask.dtype in (np.bool_, acc)

    def lstm_forward(self, *args):
        *arrays, stream = args
        assert isinstance(stream, int)
        self.calls.append(("lstm_forward",))
        _C.lstm_forward(*arrays)

    def lstm_backward(self, *args):
        *arrays, stream = args
        assert isinstance(stream, int)
        self.calls.append(("lstm_backward",))
        _C.lstm_backward(*arrays)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Route the ops' GPU path to numpy and the CPU kernels; yields the FakeCuda (its .calls)."""
    fake = FakeCuda()
    monkeypatch.setattr(_common, "cupy_module", FakeCupy)
    monkeypatch.setattr(_common, "cuda_kernels", lambda op: fake)
    monkeypatch.setattr(_common, "current_stream_handle", lambda: 0)
    return fake
