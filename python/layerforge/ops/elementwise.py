"""Activations, softmax / log_softmax, fused softmax-cross-entropy and layer norm (forward and backward)
on the C++ kernels. numpy arrays in, numpy arrays out; float32 (fast) and float64.

The kernels read C-contiguous arrays: this module is the one visible place where other layouts are
copied (``np.ascontiguousarray``). Reductions run along the last dim; ``dim`` moves the axis there first.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import as_float_array

_ACT = {"relu": 0, "sigmoid": 1, "tanh": 2, "gelu": 3, "gelu_tanh": 4, "leaky_relu": 5}


def _c(x, name, op):
    x = as_float_array(x, name, op)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _act_code(name: str) -> int:
    try:
        return _ACT[name]
    except KeyError:
        raise ValueError(f"activation: unknown activation {name!r}; one of {sorted(_ACT)}") from None


def activation(name: str, x, alpha: float = 0.01):
    """y = f(x) for f in relu, sigmoid, tanh, gelu (erf), gelu_tanh, leaky_relu (negative slope alpha)."""
    code = _act_code(name)
    x = _c(x, "x", name)
    y = np.empty_like(x)
    _C.activation_forward(code, x, y, float(alpha))
    return y


def activation_backward(name: str, grad_y, saved, alpha: float = 0.01):
    """grad_x = grad_y * f'. ``saved`` is the forward input x (relu, leaky_relu, gelu, gelu_tanh) or the
    forward output y (sigmoid, tanh)."""
    code = _act_code(name)
    saved = _c(saved, "saved", name + "_backward")
    grad_y = _c(grad_y, "grad_y", name + "_backward")
    if grad_y.dtype != saved.dtype:
        grad_y = grad_y.astype(saved.dtype)
    if grad_y.shape != saved.shape:
        raise ValueError(f"{name}_backward: grad_y has shape {grad_y.shape}, expected {saved.shape}")
    gx = np.empty_like(saved)
    _C.activation_backward(code, grad_y, saved, gx, float(alpha))
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


def _softmax(x, dim, log, op):
    x = as_float_array(x, "x", op)
    if x.ndim == 0:
        return np.zeros_like(x) if log else np.ones_like(x)
    d = _norm_dim(dim, x.ndim, op)
    xm = np.ascontiguousarray(np.moveaxis(x, d, -1) if d != x.ndim - 1 else x)
    y = np.empty_like(xm)
    _C.softmax_forward(xm, y, log)
    return y if d == x.ndim - 1 else np.moveaxis(y, -1, d)


def _softmax_bwd(grad_y, y, dim, log, op):
    y = as_float_array(y, "y", op)
    grad_y = as_float_array(grad_y, "grad_y", op).astype(y.dtype, copy=False)
    if y.ndim == 0:
        return np.zeros_like(y)
    d = _norm_dim(dim, y.ndim, op)
    mv = (lambda a: np.ascontiguousarray(np.moveaxis(a, d, -1))) if d != y.ndim - 1 else np.ascontiguousarray
    ym, gm = mv(y), mv(grad_y)
    gx = np.empty_like(ym)
    _C.softmax_backward(gm, ym, gx, log)
    return gx if d == y.ndim - 1 else np.moveaxis(gx, -1, d)


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


def cross_entropy(logits, targets, weight=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", need_grad: bool = True):
    """Fused softmax + cross-entropy with class-index targets, one pass over the logits.

    logits (N, C) float, targets (N,) integer. Returns ``(loss, grad)``: ``loss`` is a 0-d array for
    reduction 'mean'/'sum' and (N,) for 'none' (PyTorch's values, label smoothing and ignore_index
    included); ``grad`` (N, C) is d loss / d logits for 'mean'/'sum', and for 'none' the gradient of
    each row's own loss (scale row i by the upstream grad_i), or None when ``need_grad`` is false.
    A target outside [0, C) that is not ignore_index raises IndexError, as torch.
    """
    op = "cross_entropy"
    x = _c(logits, "logits", op)
    if x.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-d (N, C), got shape {x.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
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
    eps = float(label_smoothing)
    # Reduction scales, as torch: the nll part divides by sum of w[t] over non-ignored rows (their
    # count without weights); the smoothing part by the same with weights, by N without.
    if reduction == "mean":
        denom_nll = float(w[t[valid]].sum()) if w is not None else float(valid.sum())
        denom_s = denom_nll if w is not None else float(N)
    else:
        denom_nll = denom_s = 1.0
    sa = (1.0 - eps) / denom_nll if denom_nll else float("nan")
    sb = eps / C / denom_s if (denom_s and C) else float("nan")
    nll = np.empty(N, x.dtype)
    smooth = np.empty(N, x.dtype) if eps > 0 else None
    grad = np.empty_like(x) if need_grad else None
    _C.cross_entropy_forward(x, t, w, int(ignore_index), nll, smooth, grad,
                             sa if reduction == "mean" else (1.0 - eps), sb if reduction == "mean" else eps / max(C, 1))
    if reduction == "none":
        loss = (1.0 - eps) * nll + (eps / C) * smooth if eps > 0 else nll
        return loss.astype(x.dtype, copy=False), grad
    if reduction == "sum":
        loss = (1.0 - eps) * nll.sum(dtype=np.float64) + (eps / C * smooth.sum(dtype=np.float64) if eps > 0 else 0.0)
    else:
        loss = sa * nll.sum(dtype=np.float64) + (sb * smooth.sum(dtype=np.float64) if eps > 0 else 0.0)
    return np.asarray(loss, dtype=x.dtype), grad


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Layer norm over the trailing ``normalized_shape`` dims. Returns ``(y, mean, rstd)`` with mean and
    rstd of shape (rows,) (saved for the backward)."""
    op = "layer_norm"
    x = _c(x, "x", op)
    ns = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.ndim < len(ns) or tuple(x.shape[x.ndim - len(ns):]) != ns:
        raise ValueError(f"{op}: normalized_shape {ns} does not match the trailing dims of input of shape {x.shape}")
    D = int(np.prod(ns)) if ns else 1
    x2 = x.reshape(-1, D)
    w = None if weight is None else _c(weight, "weight", op).astype(x.dtype, copy=False).reshape(-1)
    b = None if bias is None else _c(bias, "bias", op).astype(x.dtype, copy=False).reshape(-1)
    y = np.empty_like(x2)
    R = x2.shape[0]
    mean = np.empty(R, x.dtype)
    rstd = np.empty(R, x.dtype)
    _C.layer_norm_forward(x2, w, b, float(eps), y, mean, rstd)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(grad_y, x, mean, rstd, weight=None, need_weight_grads: bool = True):
    """Returns ``(grad_x, grad_weight, grad_bias)``; the parameter grads are flat (D,): grad_weight is
    None without weight, both are None when need_weight_grads is false."""
    op = "layer_norm_backward"
    x = _c(x, "x", op)
    R = mean.shape[0]
    D = x.size // R if R else 0
    x2 = x.reshape(R, D)
    g2 = _c(grad_y, "grad_y", op).astype(x.dtype, copy=False).reshape(R, D)
    w = None if weight is None else _c(weight, "weight", op).reshape(-1)
    gx = np.empty_like(x2)
    gw = np.empty(D, x.dtype) if need_weight_grads and weight is not None else None
    gb = np.empty(D, x.dtype) if need_weight_grads else None
    _C.layer_norm_backward(g2, x2, mean, rstd, w, gx, gw, gb)
    return gx.reshape(x.shape), gw, gb
