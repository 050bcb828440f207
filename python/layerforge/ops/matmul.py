"""Matrix multiplication with numpy's ``@`` semantics on the layerforge GEMM (CPU and CUDA)."""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import as_float_array, broadcast_batch, check_out, device_of

# GPU dtypes: float32 (exact, or TF32 when layerforge.cuda.allow_tf32), float64, float16; bfloat16 as
# uint16 bit patterns with bf16=True (cupy has no bfloat16 dtype).
_GPU_DTYPES = ("float32", "float64", "float16")


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _plan(a, b):
    """numpy's matmul shape rules for numpy or cupy operands: (a2, b2, result_shape) where a2 / b2 are a /
    b with 1-d operands promoted (views), and result_shape drops the promoted dims again."""
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
    return a2, b2, result_shape


def _full_out(out, a, b):
    """out with the dims of promoted 1-d operands re-inserted (views, never copies)."""
    if b.ndim == 1:
        out = out[..., None]
    if a.ndim == 1:
        out = out[..., None, :]
    return out


def matmul(a, b, out=None, *, bf16: bool = False):
    """``a @ b`` as numpy computes it, on layerforge's GEMM.

    1-D operands are promoted (a to a row, b to a column) and the added dim removed from the result;
    leading (batch) dims broadcast. Both operands must share the dtype (TypeError otherwise: no silent
    casts). Any strides are read as they are, transposed and negative-stride views included. ``out`` must
    have the result's shape and dtype and must not overlap ``a`` or ``b``.

    Devices: numpy arrays run on the CPU (float32, float64). GPU arrays — cupy arrays, or anything with
    ``__cuda_array_interface__`` (converted to cupy without a copy) — run on the CUDA kernels on cupy's
    current stream and return a cupy array (``out``, when given, must be a GPU array too); mixing numpy
    and GPU operands raises TypeError. GPU dtypes:

    * float32 — exact float32 products by default. With ``layerforge.cuda.allow_tf32 = True`` (as
      ``torch.backends.cuda.matmul.allow_tf32``) large products use TF32 tensor cores: inputs rounded to
      10-bit mantissas, float32 accumulation.
    * float16 — tensor cores, float32 accumulation, float16 result.
    * bfloat16 — cupy has no bfloat16 dtype, so bf16 data travels as **uint16 arrays holding the bf16 bit
      patterns**, and ``bf16=True`` says so: ``matmul(a_bits, b_bits, bf16=True)`` multiplies them on the
      tensor cores (float32 accumulation) and returns uint16 bf16 bits. Convert with
      ``layerforge.cuda.to_bfloat16_bits(x)`` (float32 -> bits, round to nearest even) and
      ``layerforge.cuda.from_bfloat16_bits(bits)`` (bits -> float32); from torch,
      ``cupy.asarray(t.view(torch.uint16))``. ``bf16=True`` needs GPU arrays of dtype uint16.
    * float64 — correct, on a simple kernel (not fast).
    """
    if device_of("matmul", a=a, b=b, out=out) == "cuda":
        return _matmul_cuda(a, b, out, bf16)
    if bf16:
        raise TypeError("matmul: bf16=True (uint16 arrays holding bfloat16 bits) runs on the GPU only; "
                        "pass cupy arrays, or multiply float32 arrays on the CPU")
    a = as_float_array(a, "a", "matmul")
    b = as_float_array(b, "b", "matmul")
    a2, b2, result_shape = _plan(a, b)
    if out is None:
        out = np.empty(result_shape, dtype=a.dtype)
    else:
        check_out(out, result_shape, a.dtype, "matmul", (a, b))
    _C.matmul(a2, b2, _full_out(out, a, b))
    return out


def _gpu_operand(cp, x, name: str, bf16: bool):
    """x as a cupy array of a GPU matmul dtype (TypeError naming x otherwise)."""
    if not isinstance(x, cp.ndarray):
        x = cp.asarray(x)  # __cuda_array_interface__: a view of the same memory
    dt = str(x.dtype)
    if bf16:
        if dt != "uint16":
            raise TypeError(f"matmul: bf16=True expects uint16 arrays holding bfloat16 bits, but {name} has "
                            f"dtype {dt} (convert with layerforge.cuda.to_bfloat16_bits)")
    elif dt not in _GPU_DTYPES:
        hint = " (bfloat16 bits in uint16 arrays: pass bf16=True)" if dt == "uint16" else ""
        raise TypeError(f"matmul: {name} has dtype {dt}; supported on the GPU: float32, float64, float16, "
                        f"and bfloat16 as uint16 bits with bf16=True{hint}")
    return x


def _matmul_cuda(a, b, out, bf16: bool):
    from .. import cuda
    from ._common import cuda_kernels, cupy_module, current_stream_handle

    kernels = cuda_kernels("matmul")  # RuntimeError saying why when no GPU can be used
    cp = cupy_module()
    user_out = out
    a = _gpu_operand(cp, a, "a", bf16)
    b = _gpu_operand(cp, b, "b", bf16)
    a2, b2, result_shape = _plan(a, b)
    if out is None:
        out = cp.empty(result_shape, dtype=a.dtype)
        user_out = out
    else:
        out = _gpu_operand(cp, out, "out", bf16)
        if out.shape != result_shape:
            raise ValueError(f"matmul: out has shape {out.shape}, expected {result_shape}")
        if out.dtype != a.dtype:
            raise TypeError(f"matmul: out has dtype {out.dtype}, expected {a.dtype}")
        overlaps = getattr(cp, "may_share_memory", None) or getattr(cp, "shares_memory")
        if overlaps(out, a) or overlaps(out, b):
            raise ValueError("matmul: out overlaps an input; pass a separate array")
    kernels.matmul(a2, b2, _full_out(out, a, b), bool(cuda.allow_tf32), current_stream_handle(), bf16)
    return user_out
