"""Activations, softmax / log_softmax, fused softmax-cross-entropy and layer norm (forward and backward)
on the C++ kernels. numpy arrays run on the CPU kernels (layerforge._C), GPU arrays (cupy, or anything with
__cuda_array_interface__) on the CUDA kernels (layerforge._cuda) on cupy's current stream, returning cupy
arrays; float32 (fast) and float64. Mixing devices in one call raises TypeError naming the operands.

The kernels read C-contiguous arrays: this module is the one visible place where other layouts are
copied (``xp.ascontiguousarray``). Reductions run along the last dim; ``dim`` moves the axis there first.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import (as_cuda_float_array, as_float_array, cuda_kernels, cupy_module, current_stream_handle,
                      device_of)

_ACT = {"relu": 0, "sigmoid": 1, "tanh": 2, "gelu": 3, "gelu_tanh": 4, "leaky_relu": 5}


class _Backend:
    """Where a call runs: its array module (numpy / cupy), its kernels (_C / _cuda) and, for the CUDA
    bindings, the stream handle they take as their last argument."""

    __slots__ = ("xp", "kernels", "stream")

    def __init__(self, xp, kernels, stream):
        self.xp, self.kernels, self.stream = xp, kernels, stream

    @property
    def gpu(self) -> bool:
        return self.stream is not None

    def call(self, name, *args):
        f = getattr(self.kernels, name)
        return f(*args) if self.stream is None else f(*args, self.stream)


_CPU = _Backend(np, _C, None)


def _backend(op, **operands) -> _Backend:
    """The CPU backend for numpy operands, the GPU one for GPU arrays (RuntimeError saying why when the GPU
    cannot be used), TypeError when they mix."""
    if device_of(op, **operands) == "cpu":
        return _CPU
    kernels = cuda_kernels(op)
    return _Backend(cupy_module(), kernels, current_stream_handle())


def _float(x, name, op, be):
    """x as a float32/float64 array of the backend's library (TypeError for other dtypes)."""
    return as_float_array(x, name, op) if be is _CPU else as_cuda_float_array(x, name, op)


def _c(x, name, op, be=_CPU):
    """x as a C-contiguous float32/float64 array of the backend's library (the one visible copy)."""
    x = _float(x, name, op, be)
    return x if x.flags.c_contiguous else be.xp.ascontiguousarray(x)


def _act_code(name: str) -> int:
    try:
        return _ACT[name]
    except KeyError:
        raise ValueError(f"activation: unknown activation {name!r}; one of {sorted(_ACT)}") from None


def activation(name: str, x, alpha: float = 0.01):
    """y = f(x) for f in relu, sigmoid, tanh, gelu (erf), gelu_tanh, leaky_relu (negative slope alpha)."""
    code = _act_code(name)
    be = _backend(name, x=x)
    x = _c(x, "x", name, be)
    y = be.xp.empty_like(x)
    be.call("activation_forward", code, x, y, float(alpha))
    return y


def activation_backward(name: str, grad_y, saved, alpha: float = 0.01):
    """grad_x = grad_y * f'. ``saved`` is the forward input x (relu, leaky_relu, gelu, gelu_tanh) or the
    forward output y (sigmoid, tanh)."""
    code = _act_code(name)
    op = name + "_backward"
    be = _backend(op, grad_y=grad_y, saved=saved)
    saved = _c(saved, "saved", op, be)
    grad_y = _c(grad_y, "grad_y", op, be)
    if grad_y.dtype != saved.dtype:
        grad_y = grad_y.astype(saved.dtype)
    if grad_y.shape != saved.shape:
        raise ValueError(f"{op}: grad_y has shape {grad_y.shape}, expected {saved.shape}")
    gx = be.xp.empty_like(saved)
    be.call("activation_backward", code, grad_y, saved, gx, float(alpha))
    return gx


def relu(x):
    return activation("relu", x)


def sigmoid(x):
    return activation("sigmoid", x)


def tanh(x):
    return activation("tanh", x)


def gelu(x, approximate: str = "none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return activation("gelu" if approximate == "none" else "gelu_tanh", x)


def leaky_relu(x, negative_slope: float = 0.01):
    return activation("leaky_relu", x, negative_slope)


def _norm_dim(dim, ndim, op):
    if ndim == 0:
        if dim not in (0, -1):
            raise IndexError(f"{op}: dim {dim} out of range for a 0-d array")
        return 0
    if not -ndim <= dim < ndim:
        raise IndexError(f"{op}: dim {dim} out of range for an array of {ndim} dims")
    return dim % ndim


def _moved_last(x, d, be):
    """x with axis d moved last, C-contiguous (copied only when it is not already)."""
    xp = be.xp
    return xp.ascontiguousarray(xp.moveaxis(x, d, -1) if d != x.ndim - 1 else x)


def _softmax(x, dim, log, op):
    be = _backend(op, x=x)
    xp = be.xp
    x = _float(x, "x", op, be)
    if x.ndim == 0:
        return xp.zeros_like(x) if log else xp.ones_like(x)
    d = _norm_dim(dim, x.ndim, op)
    xm = _moved_last(x, d, be)
    y = xp.empty_like(xm)
    be.call("softmax_forward", xm, y, log)
    return y if d == x.ndim - 1 else xp.moveaxis(y, -1, d)


def _softmax_bwd(grad_y, y, dim, log, op):
    be = _backend(op, grad_y=grad_y, y=y)
    xp = be.xp
    y = _float(y, "y", op, be)
    grad_y = _float(grad_y, "grad_y", op, be).astype(y.dtype, copy=False)
    if y.ndim == 0:
        return xp.zeros_like(y)
    d = _norm_dim(dim, y.ndim, op)
    ym, gm = _moved_last(y, d, be), _moved_last(grad_y, d, be)
    gx = xp.empty_like(ym)
    be.call("softmax_backward", gm, ym, gx, log)
    return gx if d == y.ndim - 1 else xp.moveaxis(gx, -1, d)


def softmax(x, dim: int = -1):
    return _softmax(x, dim, False, "softmax")


def log_softmax(x, dim: int = -1):
    return _softmax(x, dim, True, "log_softmax")


def softmax_backward(grad_y, y, dim: int = -1):
    """grad_x of softmax from grad_y and the forward output y."""
    return _softmax_bwd(grad_y, y, dim, False, "softmax_backward")


def log_softmax_backward(grad_y, y, dim: int = -1):
    """grad_x of log_softmax from grad_y and the forward output y."""
    return _softmax_bwd(grad_y, y, dim, True, "log_softmax_backward")


def _xent_args(op, reduction, label_smoothing):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    return float(label_smoothing)


def _xent_scales(reduction, eps, N, C, denom_nll, weighted):
    """(sa, sb, a, b): the loss scales of the nll and smoothing terms, and the kernel's gradient scales.
    As torch: for 'mean' the nll part divides by the sum of w[t] over non-ignored rows (their count
    without weights), the smoothing part by the same with weights, by N without."""
    if reduction == "mean":
        denom_s = denom_nll if weighted else float(N)
    else:
        denom_nll = denom_s = 1.0
    sa = (1.0 - eps) / denom_nll if denom_nll else float("nan")
    sb = eps / C / denom_s if (denom_s and C) else float("nan")
    if reduction == "mean":
        return sa, sb, sa, sb
    return sa, sb, 1.0 - eps, eps / max(C, 1)


def _xent_loss(xp, nll, smooth, eps, C, reduction, sa, sb, dtype):
    """The reduced loss from the per-row nll and smoothing terms (0-d for 'mean'/'sum', (N,) for 'none')."""
    if reduction == "none":
        loss = (1.0 - eps) * nll + (eps / C) * smooth if eps > 0 else nll
        return loss.astype(dtype, copy=False)
    if reduction == "sum":
        loss = (1.0 - eps) * nll.sum(dtype=np.float64) + (eps / C * smooth.sum(dtype=np.float64) if eps > 0 else 0.0)
    else:
        loss = sa * nll.sum(dtype=np.float64) + (sb * smooth.sum(dtype=np.float64) if eps > 0 else 0.0)
    return xp.asarray(loss, dtype=dtype)


def cross_entropy(logits, targets, weight=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", need_grad: bool = True):
    """Fused softmax + cross-entropy with class-index targets, one pass over the logits.

    logits (N, C) float, targets (N,) integer. Returns ``(loss, grad)``: ``loss`` is a 0-d array for
    reduction 'mean'/'sum' and (N,) for 'none' (PyTorch's values, label smoothing and ignore_index
    included); ``grad`` (N, C) is d loss / d logits for 'mean'/'sum', and for 'none' the gradient of
    each row's own loss (scale row i by the upstream grad_i), or None when ``need_grad`` is false.
    A target outside [0, C) that is not ignore_index raises IndexError, as torch. On the GPU the targets
    are checked by a small kernel whose 32-byte result is read back (one synchronisation per call).
    """
    op = "cross_entropy"
    be = _backend(op, logits=logits, targets=targets, weight=weight)
    eps = _xent_args(op, reduction, label_smoothing)
    if be.gpu:
        return _cross_entropy_cuda(be, op, logits, targets, weight, ignore_index, eps, reduction, need_grad)
    x = _c(logits, "logits", op)
    if x.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-d (N, C), got shape {x.shape}")
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integer class indices, got dtype {t.dtype}")
    t = np.ascontiguousarray(t, dtype=np.int64).reshape(-1)
    N, C = x.shape
    if t.shape[0] != N:
        raise ValueError(f"{op}: expected {N} targets for logits of shape {x.shape}, got {t.shape[0]}")
    valid = t != ignore_index
    if N and C:
        tv = t[valid]
        if tv.size and (tv.min() < 0 or tv.max() >= C):
            bad = tv[(tv < 0) | (tv >= C)][0]
            raise IndexError(f"{op}: Target {bad} is out of bounds (logits have {C} classes)")
    w = None
    if weight is not None:
        w = _c(weight, "weight", op).astype(x.dtype, copy=False)
        if w.shape != (C,):
            raise ValueError(f"{op}: weight must have shape ({C},), got {w.shape}")
    denom_nll = (float(w[t[valid]].sum()) if w is not None else float(valid.sum())) if reduction == "mean" else 1.0
    sa, sb, a, b = _xent_scales(reduction, eps, N, C, denom_nll, w is not None)
    nll = np.empty(N, x.dtype)
    smooth = np.empty(N, x.dtype) if eps > 0 else None
    grad = np.empty_like(x) if need_grad else None
    _C.cross_entropy_forward(x, t, w, int(ignore_index), nll, smooth, grad, a, b)
    return _xent_loss(np, nll, smooth, eps, C, reduction, sa, sb, x.dtype), grad


def _cross_entropy_cuda(be, op, logits, targets, weight, ignore_index, eps, reduction, need_grad):
    """cross_entropy on the GPU: a one-block kernel counts the valid targets, sums their weights and finds
    the first bad one; those 32 bytes come back to the host (the exception and the 'mean' scales need
    them), then one fused kernel writes nll, the smoothing term and the gradient."""
    xp = be.xp
    x = _c(logits, "logits", op, be)
    if x.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-d (N, C), got shape {x.shape}")
    t = targets if isinstance(targets, xp.ndarray) else xp.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integer class indices, got dtype {t.dtype}")
    t = xp.ascontiguousarray(t.reshape(-1), dtype=np.int64)
    N, C = x.shape
    if t.shape[0] != N:
        raise ValueError(f"{op}: expected {N} targets for logits of shape {x.shape}, got {t.shape[0]}")
    w = None
    if weight is not None:
        w = _c(weight, "weight", op, be).astype(x.dtype, copy=False)
        if w.shape != (C,):
            raise ValueError(f"{op}: weight must have shape ({C},), got {w.shape}")
    stats = xp.empty(4, np.float64)
    be.call("cross_entropy_target_stats", t, w, int(ignore_index), C, stats)
    bad, count, wsum, wtotal = (float(v) for v in stats.get())
    if bad >= 0:
        raise IndexError(f"{op}: Target {int(t[int(bad)])} is out of bounds (logits have {C} classes)")
    denom_nll = (wsum if w is not None else count) if reduction == "mean" else 1.0
    sa, sb, a, b = _xent_scales(reduction, eps, N, C, denom_nll, w is not None)
    nll = xp.empty(N, x.dtype)
    smooth = xp.empty(N, x.dtype) if eps > 0 else None
    grad = xp.empty_like(x) if need_grad else None
    be.call("cross_entropy_forward", x, t, w, int(ignore_index), nll, smooth, grad, a, b, wtotal)
    return _xent_loss(xp, nll, smooth, eps, C, reduction, sa, sb, x.dtype), grad


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Layer norm over the trailing ``normalized_shape`` dims. Returns ``(y, mean, rstd)`` with mean and
    rstd of shape (rows,) (saved for the backward)."""
    op = "layer_norm"
    be = _backend(op, x=x, weight=weight, bias=bias)
    xp = be.xp
    x = _c(x, "x", op, be)
    ns = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.ndim < len(ns) or tuple(x.shape[x.ndim - len(ns):]) != ns:
        raise ValueError(f"{op}: normalized_shape {ns} does not match the trailing dims of input of shape {x.shape}")
    D = int(np.prod(ns)) if ns else 1
    x2 = x.reshape(-1, D)
    w = None if weight is None else _c(weight, "weight", op, be).astype(x.dtype, copy=False).reshape(-1)
    b = None if bias is None else _c(bias, "bias", op, be).astype(x.dtype, copy=False).reshape(-1)
    y = xp.empty_like(x2)
    R = x2.shape[0]
    mean = xp.empty(R, x.dtype)
    rstd = xp.empty(R, x.dtype)
    be.call("layer_norm_forward", x2, w, b, float(eps), y, mean, rstd)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(grad_y, x, mean, rstd, weight=None, need_weight_grads: bool = True):
    """Returns ``(grad_x, grad_weight, grad_bias)``; the parameter grads are flat (D,): grad_weight is
    None without weight, both are None when need_weight_grads is false. On the GPU the parameter grads
    are reduced over rows without atomics (per-chunk partials in a workspace, then a fixed-order sum)."""
    op = "layer_norm_backward"
    be = _backend(op, grad_y=grad_y, x=x, mean=mean, rstd=rstd, weight=weight)
    xp = be.xp
    x = _c(x, "x", op, be)
    R = mean.shape[0]
    D = x.size // R if R else 0
    x2 = x.reshape(R, D)
    g2 = _c(grad_y, "grad_y", op, be).astype(x.dtype, copy=False).reshape(R, D)
    w = None if weight is None else _c(weight, "weight", op, be).reshape(-1)
    gx = xp.empty_like(x2)
    gw = xp.empty(D, x.dtype) if need_weight_grads and weight is not None else None
    gb = xp.empty(D, x.dtype) if need_weight_grads else None
    if be.gpu:
        ws = xp.empty(be.kernels.layer_norm_backward_workspace(R, D), x.dtype) if need_weight_grads else None
        be.call("layer_norm_backward", g2, x2, mean, rstd, w, gx, gw, gb, ws)
    else:
        _C.layer_norm_backward(g2, x2, mean, rstd, w, gx, gw, gb)
    return gx.reshape(x.shape), gw, gb
