"""What the CUDA side can do here: whether the module was built, and which GPUs it sees.

Nothing CUDA is touched at import time (pitfall 4): the module is imported lazily, and every question
answers "no" with a reason on a machine without the module, a driver or a GPU.
"""
from __future__ import annotations

_module = None
_import_error: str | None = None
_tried = False


def _load():
    global _module, _import_error, _tried
    if not _tried:
        _tried = True
        try:
            from . import _cuda as m  # built only when nvcc was found

            _module = m
        except ImportError as e:  # not built, or its runtime cannot load
            _import_error = str(e)
    return _module


def is_built() -> bool:
    """True when the CUDA module was compiled into this install."""
    return _load() is not None


def compiled_architectures() -> list[str]:
    m = _load()
    return m.compiled_architectures().split(",") if m else []


def device_count() -> int:
    """Number of usable GPUs (0 without the module, a driver or a device)."""
    m = _load()
    return m.device_count()[0] if m else 0


def is_available() -> bool:
    return device_count() > 0


def unavailable_reason() -> str | None:
    """Why no GPU is usable, or None when one is."""
    m = _load()
    if m is None:
        return f"the CUDA module was not built into this install ({_import_error})"
    n, why = m.device_count()
    return None if n > 0 else (why or "no CUDA device")


def devices() -> list[dict]:
    m = _load()
    return m.devices() if m and device_count() > 0 else []


def _require(what: str) -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"layerforge.cuda.{what}: no GPU is usable here: {reason}")


def synchronize(device=None) -> None:
    """Wait for all work queued on a GPU (the current one by default), as torch.cuda.synchronize.
    RuntimeError saying why when no GPU is usable."""
    _require("synchronize()")
    from .ops._common import cupy_module

    cp = cupy_module()
    if device is None:
        cp.cuda.runtime.deviceSynchronize()
        return
    index = device if isinstance(device, int) else _device_index(device)
    with cp.cuda.Device(index):
        cp.cuda.runtime.deviceSynchronize()


def current_device() -> int:
    """Index of the current GPU (RuntimeError saying why when no GPU is usable)."""
    _require("current_device()")
    from .ops._common import cupy_module

    return cupy_module().cuda.runtime.getDevice()


def _device_index(device) -> int:
    from .tensor import device as _device

    d = _device(str(device))
    if d.type != "cuda":
        raise ValueError(f"expected a cuda device, got {d!s}")
    return d.index if d.index is not None else current_device()
