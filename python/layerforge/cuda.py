"""What the CUDA side can do here: whether the module was built, and which GPUs it sees.

Nothing CUDA is touched at import time (pitfall 4): the module is imported lazily, and every question
answers "no" with a reason on a machine without the module, a driver or a GPU.
"""
from __future__ import annotations


# Whether float32 matmuls on the GPU may use TF32 tensor cores (inputs rounded to 10-bit mantissas,
# float32 accumulation): off by default, as torch.backends.cuda.matmul.allow_tf32. Read at every call of
# layerforge.ops.matmul; set it with `layerforge.cuda.allow_tf32 = True`.
allow_tf32: bool = False

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


# ---------------------------------------------------------------- bfloat16 as uint16 bits
# cupy has no bfloat16 dtype: bf16 data travels as uint16 arrays holding the bit patterns (the upper half
# of a float32). These convert either way on numpy or cupy arrays (the result lives where the input does).

def _array_module(x):
    from .ops._common import array_module

    xp = array_module(x)
    return xp, xp.asarray(x)


def to_bfloat16_bits(x):
    """float array -> uint16 array of bfloat16 bit patterns, rounded to nearest even (as torch's
    ``.to(torch.bfloat16)``); NaN stays a (quiet) NaN, overflow gives inf. float64 / float16 inputs are
    converted to float32 first."""
    xp, x = _array_module(x)
    if x.dtype.kind != "f":
        raise TypeError(f"to_bfloat16_bits: expected a float array, got dtype {x.dtype}")
    f = xp.ascontiguousarray(x, dtype=xp.float32)
    u = f.view(xp.uint32)
    # Round to nearest even on the 16 dropped bits: add 0x7FFF plus the lowest kept bit, then truncate.
    rounded = (u + (xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1)))) >> xp.uint32(16)
    quiet_nan = (u >> xp.uint32(16)) | xp.uint32(0x0040)
    return xp.where(xp.isnan(f), quiet_nan, rounded).astype(xp.uint16)


def from_bfloat16_bits(bits):
    """uint16 array of bfloat16 bit patterns -> float32 array (exact)."""
    xp, bits = _array_module(bits)
    if bits.dtype != xp.uint16:
        raise TypeError(f"from_bfloat16_bits: expected a uint16 array of bfloat16 bits, got dtype {bits.dtype}")
    return (xp.ascontiguousarray(bits).astype(xp.uint32) << xp.uint32(16)).view(xp.float32)
