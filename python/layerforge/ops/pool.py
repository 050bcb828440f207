"""2-d pooling, forward and backward, with torch.nn.functional's semantics (output sizes, padding rules,
ceil_mode, tie-breaking of max, avg divisors, adaptive windows).

``layout="NCHW"`` (default): x (N, C, H, W); ``layout="NHWC"``: x (N, H, W, C); outputs in the same layout.
Max-pool indices are int64 flat positions ``h * W + w`` within each (n, c) plane (as PyTorch), in both
layouts. float32 and float64; any strides (copied once in ``_common.contiguous``). numpy arrays run on the
CPU kernels, GPU arrays (cupy) on the CUDA kernels (cupy outputs, cupy's current stream); mixing raises
TypeError. On the GPU, max_pool2d_backward ignores indices that max_pool2d did not produce (as PyTorch's CUDA
kernel) where the CPU raises ValueError for out-of-range ones, except for a window that lies wholly in the
padding (dilation with ceil_mode can make one): max_pool2d gives it -inf and an index past the plane, as
PyTorch does, and its gradient goes nowhere.

Backward functions take ``x`` for its shape (an array, or the shape tuple itself) and return grad_x.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import (device_module, as_device_float_array, as_int, contiguous, device_of, from_nchw, layout_of,
                      nchw_dims, pair, require_4d, run_kernel)


def _out_size(size, k, pad, stride, dil, ceil_mode, op, what, x_shape):
    try:
        return _C.pool2d_output_size(size, k, pad, stride, dil, bool(ceil_mode))
    except ValueError:
        num = size + 2 * pad - dil * (k - 1) - 1
        raise ValueError(f"{op}: x of shape {x_shape} is too small along {what} ({size}) for kernel_size {k}, "
                         f"padding {pad}, stride {stride}, dilation {dil}: output size would be "
                         f"{num // stride + 1}") from None


def _geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode, layout, op):
    kh, kw = pair(kernel_size, "kernel_size", op)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = pair(stride, "stride", op)
    ph, pw = pair(padding, "padding", op)
    dh, dw = pair(dilation, "dilation", op)
    if kh < 1 or kw < 1:
        raise ValueError(f"{op}: kernel_size must be positive, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{op}: stride must be positive, got {(sh, sw)}")
    if dh < 1 or dw < 1:
        raise ValueError(f"{op}: dilation must be positive, got {(dh, dw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {(ph, pw)}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half of kernel_size {(kh, kw)} (as PyTorch)")
    N, C, H, W = nchw_dims(x_shape, layout)
    P = _out_size(H, kh, ph, sh, dh, ceil_mode, op, "H", x_shape)
    Q = _out_size(W, kw, pw, sw, dw, ceil_mode, op, "W", x_shape)
    return (kh, kw, sh, sw, ph, pw, dh, dw), from_nchw(N, C, P, Q, layout)


def _input(x, op, layout, device):
    layout = layout_of(layout, op)
    x = as_device_float_array(x, "x", op, device)
    require_4d(x, "x", op, layout)
    return x, layout


def _shape_or_array(x):
    """x as an operand for device_of: None when it is a shape (backward functions accept either)."""
    return None if isinstance(x, (tuple, list)) else x


def _x_shape(x, op, layout):
    """Shape of x for a backward function: x may be the array or its shape."""
    if isinstance(x, (tuple, list)) and all(isinstance(v, (int, np.integer)) for v in x):
        shape = tuple(int(v) for v in x)
    else:
        shape = np.shape(x)
    if len(shape) != 4:
        raise ValueError(f"{op}: x must be 4-d, got shape {shape}")
    return shape


def _grad_out(grad_out, expected, op, device, dtype=None):
    grad_out = as_device_float_array(grad_out, "grad_out", op, device)
    if grad_out.shape != expected:
        raise ValueError(f"{op}: grad_out has shape {grad_out.shape}, expected {expected} (the pooled output)")
    if dtype is not None and grad_out.dtype != dtype:
        raise TypeError(f"{op}: grad_out has dtype {grad_out.dtype}, expected {dtype}")
    return contiguous(grad_out)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               layout="NCHW"):
    """torch.nn.functional.max_pool2d; with ``return_indices`` returns ``(out, indices)`` (int64)."""
    op = "max_pool2d"
    dev = device_of(op, x=x)
    x, layout = _input(x, op, layout, dev)
    g, out_shape = _geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, layout, op)
    xp = device_module(dev)
    out = xp.empty(out_shape, x.dtype)
    idx = xp.empty(out_shape, np.int64) if return_indices else None
    run_kernel(dev, op, "max_pool2d_forward", contiguous(x), out, idx, [*g, int(bool(ceil_mode)), 1, 0], layout)
    return (out, idx) if return_indices else out


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        indices=None, layout="NCHW"):
    """Gradient of max_pool2d w.r.t. x: ``grad_out`` scattered to the argmax of each window.

    ``indices`` are those max_pool2d(return_indices=True) returned; without them they are recomputed from
    ``x`` (which must then be the input array, not just its shape). Overlapping windows accumulate.
    """
    op = "max_pool2d_backward"
    dev = device_of(op, grad_out=grad_out, x=_shape_or_array(x), indices=indices)
    layout = layout_of(layout, op)
    shape = _x_shape(x, op, layout)
    g, out_shape = _geometry(shape, kernel_size, stride, padding, dilation, ceil_mode, layout, op)
    params = [*g, int(bool(ceil_mode)), 1, 0]
    grad_out = _grad_out(grad_out, out_shape, op, dev)
    xp = device_module(dev)
    if indices is None:
        if isinstance(x, (tuple, list)):
            raise ValueError(f"{op}: pass indices, or x as the input array (not its shape) to recompute them")
        xa, _ = _input(x, op, layout, dev)
        if xa.dtype != grad_out.dtype:
            raise TypeError(f"{op}: x has dtype {xa.dtype}, grad_out {grad_out.dtype}; they must match")
        indices = xp.empty(out_shape, np.int64)
        run_kernel(dev, op, "max_pool2d_forward", contiguous(xa), xp.empty(out_shape, xa.dtype), indices, params,
                   layout)
    else:
        indices = xp.asarray(indices)
        if indices.dtype != np.int64:
            raise TypeError(f"{op}: indices must be int64, got {indices.dtype}")
        if indices.shape != out_shape:
            raise ValueError(f"{op}: indices have shape {indices.shape}, expected {out_shape}")
        indices = contiguous(indices)
    grad_x = xp.empty(shape, grad_out.dtype)
    run_kernel(dev, op, "max_pool2d_backward", grad_out, indices, grad_x, params, layout)
    return grad_x


def _avg_params(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, shape, layout, op):
    g, out_shape = _geometry(shape, kernel_size, stride, padding, 1, ceil_mode, layout, op)
    div = 0
    if divisor_override is not None:
        div = as_int(divisor_override, "divisor_override", op)
        if div <= 0:
            raise ValueError(f"{op}: divisor_override must be a positive int, got {div}")
    return [*g, int(bool(ceil_mode)), int(bool(count_include_pad)), div], out_shape


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, layout="NCHW"):
    """torch.nn.functional.avg_pool2d."""
    op = "avg_pool2d"
    dev = device_of(op, x=x)
    x, layout = _input(x, op, layout, dev)
    params, out_shape = _avg_params(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                                    x.shape, layout, op)
    out = device_module(dev).empty(out_shape, x.dtype)
    run_kernel(dev, op, "avg_pool2d_forward", contiguous(x), out, params, layout)
    return out


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None, layout="NCHW"):
    """Gradient of avg_pool2d w.r.t. x (x: the input array or its shape); arguments as avg_pool2d."""
    op = "avg_pool2d_backward"
    dev = device_of(op, grad_out=grad_out, x=_shape_or_array(x))
    layout = layout_of(layout, op)
    shape = _x_shape(x, op, layout)
    params, out_shape = _avg_params(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                                    shape, layout, op)
    grad_out = _grad_out(grad_out, out_shape, op, dev)
    grad_x = device_module(dev).empty(shape, grad_out.dtype)
    run_kernel(dev, op, "avg_pool2d_backward", grad_out, grad_x, params, layout)
    return grad_x


def _adaptive_out(shape, output_size, layout, op):
    N, C, H, W = nchw_dims(shape, layout)
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
        oh = H if output_size[0] is None else as_int(output_size[0], "output_size", op)
        ow = W if output_size[1] is None else as_int(output_size[1], "output_size", op)
    else:
        oh = ow = as_int(output_size, "output_size", op)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: output_size must be positive, got {(oh, ow)}")
    if H < 1 or W < 1:
        raise ValueError(f"{op}: x of shape {shape} has an empty spatial dimension")
    return from_nchw(N, C, oh, ow, layout)


def adaptive_avg_pool2d(x, output_size, layout="NCHW"):
    """torch.nn.functional.adaptive_avg_pool2d (output_size: int or pair; None keeps that input size)."""
    op = "adaptive_avg_pool2d"
    dev = device_of(op, x=x)
    x, layout = _input(x, op, layout, dev)
    out = device_module(dev).empty(_adaptive_out(x.shape, output_size, layout, op), x.dtype)
    run_kernel(dev, op, "adaptive_avg_pool2d_forward", contiguous(x), out, layout)
    return out


def adaptive_avg_pool2d_backward(grad_out, x, layout="NCHW"):
    """Gradient of adaptive_avg_pool2d w.r.t. x (x: the input array or its shape); the output size is
    grad_out's."""
    op = "adaptive_avg_pool2d_backward"
    dev = device_of(op, grad_out=grad_out, x=_shape_or_array(x))
    layout = layout_of(layout, op)
    shape = _x_shape(x, op, layout)
    grad_out = as_device_float_array(grad_out, "grad_out", op, dev)
    require_4d(grad_out, "grad_out", op, layout)
    n, c, _, _ = nchw_dims(grad_out.shape, layout)
    N, C, _, _ = nchw_dims(shape, layout)
    if (n, c) != (N, C):
        raise ValueError(f"{op}: grad_out of shape {grad_out.shape} does not match x of shape {shape}")
    grad_x = device_module(dev).empty(shape, grad_out.dtype)
    run_kernel(dev, op, "adaptive_avg_pool2d_backward", contiguous(grad_out), grad_x, layout)
    return grad_x
