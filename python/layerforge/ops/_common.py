"""Argument normalisation shared by the ops modules: one visible place where arrays are checked and,
when a kernel cannot read them as they are, copied. Kept cheap: these run on every call."""
from __future__ import annotations

import numpy as np

from .. import _C

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
FLOAT_DTYPES = (_F32, _F64)


def as_float_array(x, name: str, op: str) -> np.ndarray:
    """x as a numpy float32/float64 array, without a copy when it already is one.

    Raises TypeError for other dtypes (no silent casts) and for objects numpy cannot read as numbers.
    """
    if type(x) is not np.ndarray:
        if isinstance(x, np.ndarray):
            x = np.asarray(x)  # subclasses (np.matrix, memmap...) as plain arrays
        elif x is None or isinstance(x, (str, bytes, dict, set)):
            raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
        else:
            try:
                x = np.asarray(x)
            except Exception as e:  # ragged lists and the like
                raise TypeError(f"{op}: {name} cannot be read as an array: {e}") from None
    dt = x.dtype
    if dt is not _F32 and dt is not _F64 and dt not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: {name} has dtype {dt}; supported dtypes are float32 and float64 "
            "(cast explicitly, e.g. x.astype(np.float32))"
        )
    if not x.flags.aligned:
        # Byte strides that are not a multiple of the item size, or misaligned data (possible with
        # np.ndarray(buffer=..., offset=...)): the kernels index in elements, so copy.
        x = np.array(x, copy=True)
    return x


def check_out(out, shape: tuple, dtype: np.dtype, op: str, inputs: tuple) -> np.ndarray:
    """Validate a user-supplied `out=` array: exact shape and dtype, writeable, aligned, no overlap."""
    if type(out) is not np.ndarray:
        raise TypeError(f"{op}: out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{op}: out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"{op}: out has dtype {out.dtype}, expected {dtype}")
    flags = out.flags
    if not flags.writeable:
        raise ValueError(f"{op}: out is read-only")
    if not flags.aligned:
        raise ValueError(f"{op}: out must be aligned to its item size")
    for x in inputs:
        if np.may_share_memory(out, x):
            raise ValueError(f"{op}: out overlaps an input; pass a separate array")
    return out


def broadcast_batch(sa: tuple, sb: tuple, op: str, what: str) -> tuple:
    """numpy broadcasting of two shapes (plain Python: much cheaper than np.broadcast_shapes)."""
    n = max(len(sa), len(sb))
    sa = (1,) * (n - len(sa)) + tuple(sa)
    sb = (1,) * (n - len(sb)) + tuple(sb)
    out = []
    for x, y in zip(sa, sb):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError(f"{op}: {what} do not broadcast")
    return tuple(out)


def contiguous(x):
    """x as a C-contiguous array: THE one place where conv/pool inputs of other strides are copied
    (the C++ and CUDA kernels index contiguous NCHW/NHWC). numpy arrays stay numpy, GPU (cupy) arrays
    are copied on the GPU. No copy when x already is contiguous."""
    if x.flags.c_contiguous:
        return x
    return cupy_module().ascontiguousarray(x) if is_cuda_array(x) else np.ascontiguousarray(x)


def as_int(v, name: str, op: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    return int(v)


def pair(v, name: str, op: str) -> tuple:
    """An int or a pair of ints as (a, b) (PyTorch's _pair)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        return (as_int(v[0], name, op), as_int(v[1], name, op))
    a = as_int(v, name, op)
    return (a, a)


def layout_of(layout, op: str) -> str:
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"{op}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def nchw_dims(shape: tuple, layout: str) -> tuple:
    """(N, C, H, W) of a 4-d shape in the given layout."""
    if layout == "NHWC":
        return (shape[0], shape[3], shape[1], shape[2])
    return tuple(shape)


def from_nchw(n: int, c: int, h: int, w: int, layout: str) -> tuple:
    return (n, h, w, c) if layout == "NHWC" else (n, c, h, w)


def require_4d(x: np.ndarray, name: str, op: str, layout: str) -> None:
    if x.ndim != 4:
        dims = "(N, H, W, C)" if layout == "NHWC" else "(N, C, H, W)"
        raise ValueError(f"{op}: {name} must be 4-d {dims}, got shape {x.shape}")


# ---------------------------------------------------------------- GPU arrays and dispatch
# An op runs on the GPU when its array operands are GPU arrays (cupy, or anything exposing
# __cuda_array_interface__, converted once to cupy without a copy) and on the CPU when they are numpy
# arrays; mixing the two is a TypeError that names both operands. The CUDA module and cupy are loaded on
# first use only, so none of this costs anything on the CPU path.

def is_cuda_array(x) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def device_of(op: str, **operands) -> str:
    """'cuda' when the (non-None) operands are GPU arrays, 'cpu' when none is; TypeError when mixed."""
    gpu = [name for name, x in operands.items() if x is not None and is_cuda_array(x)]
    if not gpu:
        return "cpu"
    cpu = [name for name, x in operands.items() if x is not None and not is_cuda_array(x)]
    if cpu:
        raise TypeError(
            f"{op}: {', '.join(gpu)} {'is a GPU array' if len(gpu) == 1 else 'are GPU arrays'} but "
            f"{', '.join(cpu)} {'is' if len(cpu) == 1 else 'are'} not (a "
            f"{type(operands[cpu[0]]).__name__}); move all operands to one device "
            "(cupy.asarray(...) or cupy.asnumpy(...))"
        )
    return "cuda"


_cupy = None


def cupy_module():
    """cupy (imported on first use), or a RuntimeError that says how to get it."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError:
            raise RuntimeError(
                "layerforge: GPU arrays need cupy (pip install 'layerforge[cuda]')"
            ) from None
        _cupy = cupy
    return _cupy


def array_module(a):
    """The array library of ``a``: numpy for numpy arrays (and scalars, lists...), cupy for GPU arrays.

    Device-generic code writes ``xp = array_module(a)`` and calls ``xp.zeros``, ``xp.where``... (cupy
    implements numpy's API). The CPU path costs one type check: cupy is only imported once a GPU array
    shows up."""
    if type(a) is np.ndarray or not hasattr(a, "__cuda_array_interface__"):
        return np
    return cupy_module()


def cuda_kernels(op: str):
    """layerforge._cuda, or a RuntimeError that says why the GPU cannot be used (module not built, no
    driver, no device)."""
    from .. import cuda

    reason = cuda.unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"{op}: cannot run on the GPU: {reason}")
    return cuda._load()


def as_cuda_float_array(x, name: str, op: str, dtypes=("float32", "float64")):
    """x as a cupy array (zero-copy for objects with __cuda_array_interface__), checked against dtypes.
    bfloat16 is not a cupy dtype; ops that take it accept uint16 arrays holding bf16 bits explicitly."""
    cp = cupy_module()
    if not isinstance(x, cp.ndarray):
        x = cp.asarray(x)
    if str(x.dtype) not in dtypes:
        raise TypeError(f"{op}: {name} has dtype {x.dtype}; supported on the GPU: {', '.join(dtypes)}")
    return x


def current_stream_handle() -> int:
    """cupy's current stream as an integer (what the CUDA launchers take)."""
    return cupy_module().cuda.get_current_stream().ptr


def device_module(device: str):
    """Where an op on `device` allocates its outputs: numpy for 'cpu', cupy for 'cuda'."""
    return np if device == "cpu" else cupy_module()


def as_device_float_array(x, name: str, op: str, device: str):
    """as_float_array on the CPU, as_cuda_float_array on the GPU (float32/float64 either way)."""
    return as_float_array(x, name, op) if device == "cpu" else as_cuda_float_array(x, name, op)


def run_kernel(device: str, op: str, name: str, *args):
    """Call kernel binding `name` of the device's module: layerforge._C's, or layerforge._cuda's with
    cupy's current stream appended (the CUDA bindings take the same arguments plus the stream)."""
    if device == "cpu":
        return getattr(_C, name)(*args)
    return getattr(cuda_kernels(op), name)(*args, current_stream_handle())
