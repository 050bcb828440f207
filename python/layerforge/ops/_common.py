"""Argument normalisation shared by the ops modules: one visible place where arrays are checked and,
when a kernel cannot read them as they are, copied. Kept cheap: these run on every call."""
from __future__ import annotations

import numpy as np

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
