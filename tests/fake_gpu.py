"""A stand-in GPU for CPU-only machines: it lets the tests drive layerforge's GPU code paths (Tensor device
plumbing, the cupy-side dispatch of ops.elementwise / ops.optim, the optimizers' multi-tensor path, the
argument handling, layouts and saved state of ops.scaled_dot_product_attention and ops.lstm) without a
device.

- FakeGpuArray: a numpy array that exposes __cuda_array_interface__, so layerforge takes it for a GPU
  array (type is not numpy.ndarray, array_module() returns the fake cupy).
- FakeCupy: the slice of cupy's API layerforge uses, backed by numpy; every array it returns is a
  FakeGpuArray, host arrays are copied in (as cupy.asarray does) and out (asnumpy).
- FakeKernels: stands in for layerforge._cuda. Each call is first checked against the REAL binding's
  signature (argument names and count, read from its pybind11 docstring), then run on the CPU kernels
  of layerforge._C, so the Python side's calls are exercised end to end. What it cannot check: the CUDA
  kernels themselves (tests/test_cuda_*.py do, on a GPU).

Use: ``with fake_gpu(monkeypatch) as kernels: ...``, or take the ``fake_kernels`` fixture
(``from fake_gpu import fake_kernels, gpu  # noqa: F401``); gpu(a) puts a host array on the fake GPU.
"""
from __future__ import annotations

import contextlib
import re
import types

import numpy as np
import pytest

from layerforge import _C


class FakeGpuArray(np.ndarray):
    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False), "version": 3,
                "strides": None if self.flags.c_contiguous else self.strides}

    @property
    def device(self):
        return types.SimpleNamespace(id=0)

    def get(self):
        return np.array(self, copy=True, subok=False)


def _to_fake(r):
    if isinstance(r, np.ndarray) and not isinstance(r, FakeGpuArray):
        return r.view(FakeGpuArray)
    if isinstance(r, (tuple, list)):
        return type(r)(_to_fake(x) for x in r)
    return r


def gpu(a):
    """a (a host array, or None) as a FakeGpuArray sharing its memory and strides."""
    return None if a is None else np.asarray(a).view(FakeGpuArray)


def _host(a):
    return np.asarray(a) if isinstance(a, FakeGpuArray) else a


class _Device:
    def __init__(self, index=0):
        if index != 0:
            raise RuntimeError(f"fake GPU: no device {index}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeCupy(types.ModuleType):
    ndarray = FakeGpuArray

    def __init__(self):
        super().__init__("cupy")
        self.cuda = types.SimpleNamespace(
            Device=_Device,
            runtime=types.SimpleNamespace(getDevice=lambda: 0, deviceSynchronize=lambda: None),
            get_current_stream=lambda: types.SimpleNamespace(ptr=0),
        )

    # host <-> "device": copies, as cupy
    def asarray(self, a, dtype=None, order=None):
        if isinstance(a, FakeGpuArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        if hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "Tensor":
            raise TypeError("fake cupy: unexpected object for asarray")
        return np.array(a, dtype=dtype, copy=True).view(FakeGpuArray)

    def array(self, a, dtype=None, copy=True, order="K"):
        return np.array(_host(a), dtype=dtype, copy=copy, order=order).view(FakeGpuArray)

    def asnumpy(self, a):
        assert isinstance(a, FakeGpuArray), f"asnumpy of a {type(a).__name__}: a host array leaked into GPU code"
        return np.array(a, copy=True, subok=False)

    def __getattr__(self, name):
        f = getattr(np, name)
        if isinstance(f, (np.ufunc, type)) or not callable(f):
            return f  # ufuncs keep the subclass themselves (and have .at); classes and constants as they are

        def wrapped(*args, **kwargs):
            return _to_fake(f(*args, **kwargs))

        return wrapped


def _unit_last_stride(a):
    return a.shape[-1] <= 1 or a.strides[-1] == a.itemsize


def _check_sdpa(q, k, v, mask, out, lse, bf16):
    """What the attention bindings require of their arguments (csrc/python/cuda_attention.cpp)."""
    for a in (q, k, v, out):
        assert a.ndim == 4 and _unit_last_stride(a)
    assert (q.dtype == np.uint16) == bf16
    acc = np.float64 if q.dtype == np.float64 else np.float32
    assert lse.ndim == 3 and lse.dtype == acc  # the GPU keeps statistics in float32 (float64)
    if mask is not None:
        assert mask.ndim == 4 and mask.dtype in (np.bool_, acc)


def _binding_params(real, name):
    """Parameter names of layerforge._cuda.<name> from its pybind11 signature line."""
    doc = getattr(real, name).__doc__.strip().splitlines()[0]
    inner = re.match(rf"{name}\((.*)\) ->", doc).group(1)
    return re.findall(r"(?:^|, )(\w+):", inner)


class FakeKernels:
    """layerforge._cuda on the CPU kernels (see the module docstring)."""

    def __init__(self, real):
        self.real = real
        self.calls = []  # (name, args) of every launch, for the tests

    def __getattr__(self, name):
        params = _binding_params(self.real, name)
        impl = getattr(self, "_" + name, None)

        def call(*args):
            assert len(args) == len(params), f"{name}: {len(args)} arguments for ({', '.join(params)})"
            assert params[-1] != "stream" or isinstance(args[-1], int), f"{name}: stream must be an int"
            self.calls.append((name, args))
            host = [_host(a) if not isinstance(a, list) else [_host(x) for x in a] for a in args]
            if impl is not None:
                return impl(*host)
            return getattr(_C, name)(*host[:-1])  # same arguments as the CPU binding, without the stream

        return call

    # bindings whose CPU twin differs
    def _layer_norm_backward_workspace(self, rows, cols):
        return self.real.layer_norm_backward_workspace(rows, cols)

    def _layer_norm_backward(self, gy, x, mean, rstd, w, gx, gw, gb, ws, stream):
        need = self.real.layer_norm_backward_workspace(mean.shape[0], gx.shape[1] if gx.ndim == 2 else 0)
        assert (gw is None and gb is None) or (ws is not None and ws.size >= need and ws.dtype == x.dtype)
        _C.layer_norm_backward(gy, x, mean, rstd, w, gx, gw, gb)

    def _cross_entropy_target_stats(self, t, w, ignore, C, stats, stream):
        valid = t != ignore
        bad = np.nonzero(valid & ((t < 0) | (t >= C)))[0]
        ok = valid & (t >= 0) & (t < C)
        wsum = float(w[t[ok]].sum()) if w is not None else float(ok.sum())
        stats[:] = [bad[0] if bad.size else -1, ok.sum(), wsum, float(w.sum()) if w is not None else C]

    def _cross_entropy_forward(self, x, t, w, ignore, nll, smooth, grad, a, b, weight_sum, stream):
        _C.cross_entropy_forward(x, t, w, ignore, nll, smooth, grad, a, b)

    def _sdpa_forward(self, q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, bf16, stream):
        _check_sdpa(q, k, v, mask, out, lse, bf16)
        if q.dtype in (np.float32, np.float64):
            _C.sdpa_forward(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse)
        else:  # the half types exist only on the GPU: the call is recorded, write something
            out.fill(0)
            lse.fill(0)

    def _sdpa_backward(self, q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, grad_out, gq, gk, gv, bf16,
                       stream):
        _check_sdpa(q, k, v, mask, out, lse, bf16)
        for a in (grad_out, gq, gk, gv):
            assert a.ndim == 4 and a.dtype == q.dtype and _unit_last_stride(a)
        for a in (gq, gk, gv):
            assert a.flags.c_contiguous
        if q.dtype in (np.float32, np.float64):
            _C.sdpa_backward(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, grad_out, gq, gk, gv)
        else:
            for a in (gq, gk, gv):
                a.fill(0)

    def _sgd_step_multi(self, params, grads, bufs, lr, mom, damp, wd, nest, maxi, first, stream):
        for i, p in enumerate(params):
            _C.sgd_step(p, grads[i], bufs[i] if mom[i] else None, lr[i], mom[i], damp[i], wd[i], nest[i], maxi[i],
                        first[i])

    def _adam_step_multi(self, params, grads, m, v, vmax, step, lr, b1, b2, eps, wd, ams, maxi, decoupled, stream):
        for i, p in enumerate(params):
            _C.adam_step(p, grads[i], m[i], v[i], vmax[i] if ams[i] else None, step[i], lr[i], b1[i], b2[i], eps[i],
                         wd[i], ams[i], maxi[i], decoupled)

    def _rmsprop_step_multi(self, params, grads, sq, ga, bufs, lr, alpha, eps, wd, mom, centered, maxi, stream):
        for i, p in enumerate(params):
            _C.rmsprop_step(p, grads[i], sq[i], ga[i] if centered[i] else None, bufs[i] if mom[i] > 0 else None,
                            lr[i], alpha[i], eps[i], wd[i], mom[i], centered[i], maxi[i])


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def strict_functions(monkeypatch):
    """Make every autograd Function check that when one of its array inputs is on the fake GPU, its forward
    output and its backward gradients are too: a numpy call that silently produced a host array (numpy
    accepts the fake arrays, real cupy arrays it would reject) fails the test at the op that did it."""
    from layerforge.autograd import Function

    def on_gpu(x):
        return isinstance(x, FakeGpuArray)

    def check(fn_cls, what, inputs, outputs):
        if any(on_gpu(a) for a in inputs):
            for o in outputs:
                assert o is None or on_gpu(o), f"{fn_cls.__name__}.{what} returned a host array for GPU inputs"

    for cls in set(_all_subclasses(Function)):
        fwd, bwd = cls.__dict__.get("forward"), cls.__dict__.get("backward")
        if fwd is not None:
            def forward(self, *args, _f=fwd, _c=cls, **kw):
                out = _f(self, *args, **kw)
                if _c.__name__ != "_ToDevice":
                    check(_c, "forward", args, [out])
                return out
            monkeypatch.setattr(cls, "forward", forward)
        if bwd is not None:
            def backward(self, g, _f=bwd, _c=cls):
                res = _f(self, g)
                if _c.__name__ != "_ToDevice":
                    check(_c, "backward", [g], res if isinstance(res, tuple) else [res])
                return res
            monkeypatch.setattr(cls, "backward", backward)


@contextlib.contextmanager
def fake_gpu(monkeypatch):
    """Install the fake GPU (cupy, the CUDA module, one device) for the duration of a test."""
    from layerforge import cuda
    from layerforge.ops import _common

    real = cuda._load()
    if real is None:
        raise RuntimeError("fake_gpu needs the built CUDA module (its binding signatures)")
    kernels = FakeKernels(real)
    monkeypatch.setattr(_common, "_cupy", FakeCupy())
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: None)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "_load", lambda: kernels)
    strict_functions(monkeypatch)
    yield kernels


@pytest.fixture
def fake_kernels(monkeypatch):
    """The fake GPU installed for one test; yields the FakeKernels (its .calls: (name, args) per launch)."""
    with fake_gpu(monkeypatch) as kernels:
        yield kernels
