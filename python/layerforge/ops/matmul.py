"""Matrix multiplication with numpy's ``@`` semantics on the layerforge GEMM."""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import as_float_array, broadcast_batch, check_out


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def matmul(a, b, out=None):
    """``a @ b`` as numpy computes it, on layerforge's GEMM.

    1-D operands are promoted (a to a row, b to a column) and the added dim removed from the result;
    leading (batch) dims broadcast. float32 and float64 only, and both operands must share the dtype
    (TypeError otherwise: no silent casts). Any strides are read as they are, transposed views included.
    ``out`` must have the result's shape and dtype and must not overlap ``a`` or ``b``.
    """
    a = as_float_array(a, "a", "matmul")
    b = as_float_array(b, "b", "matmul")
    if a.ndim == 0 or b.ndim == 0:
        which = "a" if a.ndim == 0 else "b"
        raise ValueError(f"matmul: {which} is 0-d (a scalar); matmul needs at least 1-d operands, use * for scaling")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a has dtype {a.dtype} and b has dtype {b.dtype}; they must match (no silent casts)")

    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    sa, sb = a2.shape, b2.shape
    K = sa[-1]
    if K != sb[-2]:
        raise ValueError(
            f"matmul: mismatch in the inner dimension: a has shape {_shape_str(a.shape)} and b has shape "
            f"{_shape_str(b.shape)} ({K} != {sb[-2]})"
        )
    batch = ()
    if len(sa) > 2 or len(sb) > 2:
        batch = broadcast_batch(
            sa[:-2], sb[:-2], "matmul",
            f"batch dimensions of a {_shape_str(a.shape)} and b {_shape_str(b.shape)}",
        )
        if len(batch) > 6:
            raise ValueError(f"matmul: at most 6 batch dimensions are supported, got {len(batch)}")
    result_shape = batch  # numpy drops the dim a promoted 1-d operand added
    if a.ndim != 1:
        result_shape += (sa[-2],)
    if b.ndim != 1:
        result_shape += (sb[-1],)

    if out is None:
        out = np.empty(result_shape, dtype=a.dtype)
    else:
        check_out(out, result_shape, a.dtype, "matmul", (a, b))
    out_full = out  # re-insert the dims of promoted 1-d operands (views, never copies)
    if b.ndim == 1:
        out_full = out_full[..., None]
    if a.ndim == 1:
        out_full = out_full[..., None, :]
    _C.matmul(a2, b2, out_full)
    return out
