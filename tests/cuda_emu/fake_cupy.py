"""The slice of cupy that layerforge and its GPU tests use, backed by numpy (for the CPU emulator only).

`ndarray` is a numpy array that also exposes __cuda_array_interface__ (pointing at its host memory, which
the emulated kernels read and write), so layerforge dispatches it to the CUDA module; views, transposes and
arithmetic keep the type, as cupy arrays do.
"""
from __future__ import annotations

import numpy as np

float32 = np.float32
float64 = np.float64
float16 = np.float16
int64 = np.int64
int32 = np.int32
uint8 = np.uint8


class ndarray(np.ndarray):
    @property
    def __cuda_array_interface__(self):
        ai = self.__array_interface__
        return {"shape": ai["shape"], "typestr": ai["typestr"], "data": ai["data"], "version": 3,
                "strides": ai["strides"]}

    def get(self):
        return np.array(self, copy=True).view(np.ndarray)


def _wrap(a):
    return a.view(ndarray)


def asarray(a, dtype=None):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return _wrap(np.array(a, dtype=dtype, copy=True))


def array(a, dtype=None, copy=True):
    return _wrap(np.array(a, dtype=dtype, copy=True))


def asnumpy(a):
    return np.array(a, copy=True).view(np.ndarray)


def empty(shape, dtype=np.float64):
    # Filled with NaN (floats) / a sentinel (ints), unlike cupy: an element a kernel forgets to write shows.
    out = np.empty(shape, dtype)
    out.fill(np.nan if out.dtype.kind == "f" else -7)
    return _wrap(out)


def zeros(shape, dtype=np.float64):
    return _wrap(np.zeros(shape, dtype))


def ones(shape, dtype=np.float64):
    return _wrap(np.ones(shape, dtype))


def ascontiguousarray(a):
    return _wrap(np.ascontiguousarray(a))


def array_equal(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))


class _Stream:
    ptr = 0

    def synchronize(self):
        pass


class _Runtime:
    @staticmethod
    def deviceSynchronize():
        pass


class cuda:  # noqa: N801  (cupy.cuda)
    runtime = _Runtime()

    @staticmethod
    def get_current_stream():
        return _Stream()

    class Event:
        def record(self, stream=None):
            pass

        def synchronize(self):
            pass
