"""layerforge.nn.functional: torch.nn.functional's names, signatures and defaults on Tensors.

Each op is a Function (``layerforge.autograd``) whose forward and backward call ``layerforge.ops``
kernels: GEMM for linear, the elementwise kernels for activations, softmax, the fused
softmax-cross-entropy and layer norm. Ops of other kernel families (conv2d, pooling,
scaled_dot_product_attention, LSTM) are added here the same way: a Function calling ``ops.<family>`` and
its backward.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _C, ops
from ..autograd import Function, unbroadcast
from ..tensor import Tensor, _t, default_generator, int64
from ..tensor import flatten as _flatten
from ..tensor import relu as _relu, sigmoid as _sigmoid, tanh as _tanh

__all__ = ["linear", "relu", "leaky_relu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
           "layer_norm", "embedding", "cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "flatten", "pad", "one_hot"]
__all__ += ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]
__all__ += ["scaled_dot_product_attention"]  # sequence models and attention (section at the end)


def _shape(s):
    return "(" + ", ".join(str(v) for v in s) + ("," if len(s) == 1 else "") + ")"


# ---- linear ------------------------------------------------------------------------------------------
class _Linear(Function):
    """y = x W^T + b on the GEMM: bias broadcast into y, then one GEMM with beta = 1."""

    def forward(self, x, w, b):
        if x.dtype != w.dtype:
            raise TypeError(f"linear: input has dtype {x.dtype} and weight {w.dtype}; they must match")
        self.x, self.w, self.has_b = x, w, b is not None
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        out = np.empty((x2.shape[0], w.shape[0]), dtype=x.dtype)
        if b is not None:
            out[...] = b
            _C.gemm(x2, w, out, 1.0, 1.0, False, True)
        else:
            _C.gemm(x2, w, out, 1.0, 0.0, False, True)
        self.x2 = x2
        return out.reshape(lead + (w.shape[0],)) if x.ndim != 2 else out

    def backward(self, g):
        n = self.needs_input_grad
        x2, w = self.x2, self.w
        g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
        gx = gw = gb = None
        if n[0]:
            gx = np.empty(x2.shape, dtype=g.dtype)
            _C.gemm(g2, w, gx, 1.0, 0.0, False, False)
            gx = gx.reshape(self.x.shape)
        if n[1]:
            gw = np.empty(w.shape, dtype=g.dtype)
            _C.gemm(g2, x2, gw, 1.0, 0.0, True, False)
        if self.has_b and n[2]:
            gb = g2.sum(axis=0)
        return gx, gw, gb


def linear(input, weight, bias=None) -> Tensor:
    """y = input @ weight.T + bias; input (*, in_features), weight (out_features, in_features)."""
    input, weight = _t(input), _t(weight)
    if input.ndim == 0 or weight.ndim != 2 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {_shape(input.shape)} cannot be multiplied with weight of "
                         f"shape {_shape(weight.shape)} (in_features {weight.shape[1] if weight.ndim == 2 else '?'})")
    if input.ndim == 1:
        return linear(input.unsqueeze(0), weight, bias).squeeze(0)
    if bias is not None:
        bias = _t(bias)
    return _Linear.apply(input, weight, bias)


# ---- conv and pooling ----------------------------------------------------------------------------------
# Tensors (N, C, H, W) on the ops.conv / ops.pool kernels (NCHW). As torch, unbatched (C, H, W) input is
# accepted: it runs as a batch of one (reshape views, no copies) and the batch dim is removed again.
def _check_image(x: Tensor, op, channels=None) -> None:
    """ValueError naming ``op`` unless x is (N, C, H, W) or (C, H, W), with ``channels`` channels if given.
    ``op`` is a name, or a module whose repr names it (built only for the error: modules call this on
    every forward)."""
    if x.ndim not in (3, 4):
        raise ValueError(f"{_op_name(op)}: expected a 3-d (C, H, W) unbatched or 4-d (N, C, H, W) batched "
                         f"input, got shape {_shape(x.shape)}")
    if channels is not None and x.shape[-3] != channels:
        raise ValueError(f"{_op_name(op)}: expected input with {channels} channels, got shape {_shape(x.shape)}")


def _op_name(op) -> str:
    return op if isinstance(op, str) else repr(op)


def _as_batch(input, op: str):
    """(x as a 4-d Tensor, whether input was unbatched)."""
    x = _t(input)
    _check_image(x, op)
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _unbatch(t: Tensor, unbatched: bool) -> Tensor:
    return t.squeeze(0) if unbatched else t


class _Conv2d(Function):
    """out = conv2d(x, weight) + bias on ops.conv2d; the backward computes only the gradients asked for.
    x (N, C, H, W), weight (K, C/groups, R, S), bias (K,) or None, out (N, K, P, Q);
    geometry = (stride, padding, dilation, groups) as ops.conv2d takes them."""

    def forward(self, x, weight, bias, geometry):
        out = ops.conv2d(x, weight, bias, *geometry)
        if any(self.needs_input_grad):
            self.x, self.weight, self.geometry = x, weight, geometry
        return out

    def backward(self, g):
        need_x, need_w, need_b = self.needs_input_grad[:3]  # need_b is False when there is no bias
        gx, gw, gb = ops.conv2d_backward(g, self.x, self.weight, *self.geometry, bias=need_b, need_grad_x=need_x,
                                         need_grad_weight=need_w)
        return gx, gw, gb, None


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """torch.nn.functional.conv2d: input (N, C, H, W) or (C, H, W), weight (K, C/groups, R, S), bias (K,);
    stride/dilation int or pair, padding int, pair, 'valid' or 'same'."""
    x, unbatched = _as_batch(input, "conv2d")
    out = _Conv2d.apply(x, _t(weight), None if bias is None else _t(bias), (stride, padding, dilation, groups))
    return _unbatch(out, unbatched)


class _MaxPool2d(Function):
    """ops.max_pool2d; the backward scatters the gradient to the argmax indices the forward saved (never
    recomputed). Function.apply returns one array, so indices the caller asked for come back through the
    ``indices_out`` list. geometry = (kernel_size, stride, padding, dilation, ceil_mode)."""

    def forward(self, x, geometry, indices_out):
        need_grad = any(self.needs_input_grad)
        if not need_grad and indices_out is None:
            return ops.max_pool2d(x, *geometry)
        out, indices = ops.max_pool2d(x, *geometry, return_indices=True)  # indices (N, C, P, Q) int64
        if need_grad:
            self.x_shape, self.geometry, self.indices = x.shape, geometry, indices
        if indices_out is not None:
            indices_out.append(indices)
        return out

    def backward(self, g):
        return ops.max_pool2d_backward(g, self.x_shape, *self.geometry, indices=self.indices), None, None


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d; with ``return_indices`` returns (out, indices), indices int64 flat
    positions h * W + w within each plane."""
    x, unbatched = _as_batch(input, "max_pool2d")
    indices_out = [] if return_indices else None
    out = _unbatch(_MaxPool2d.apply(x, (kernel_size, stride, padding, dilation, ceil_mode), indices_out), unbatched)
    if not return_indices:
        return out
    return out, _unbatch(Tensor._wrap(indices_out[0]), unbatched)


class _AvgPool2d(Function):
    """ops.avg_pool2d and its backward (which needs only x's shape). geometry = (kernel_size, stride,
    padding, ceil_mode, count_include_pad, divisor_override)."""

    def forward(self, x, geometry):
        self.x_shape, self.geometry = x.shape, geometry
        return ops.avg_pool2d(x, *geometry)

    def backward(self, g):
        return ops.avg_pool2d_backward(g, self.x_shape, *self.geometry), None


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> Tensor:
    """torch.nn.functional.avg_pool2d."""
    x, unbatched = _as_batch(input, "avg_pool2d")
    geometry = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return _unbatch(_AvgPool2d.apply(x, geometry), unbatched)


class _AdaptiveAvgPool2d(Function):
    def forward(self, x, output_size):
        self.x_shape = x.shape
        return ops.adaptive_avg_pool2d(x, output_size)

    def backward(self, g):
        return ops.adaptive_avg_pool2d_backward(g, self.x_shape), None


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """torch.nn.functional.adaptive_avg_pool2d (output_size: int or pair; None keeps that input size)."""
    x, unbatched = _as_batch(input, "adaptive_avg_pool2d")
    return _unbatch(_AdaptiveAvgPool2d.apply(x, output_size), unbatched)


# ---- activations --------------------------------------------------------------------------------------
def relu(input, inplace=False) -> Tensor:
    return _relu(input)


def sigmoid(input) -> Tensor:
    return _sigmoid(input)


def tanh(input) -> Tensor:
    return _tanh(input)


def leaky_relu(input, negative_slope=0.01, inplace=False) -> Tensor:
    from ..tensor import _Act

    return _Act.apply(_t(input), "leaky_relu", float(negative_slope))


def gelu(input, approximate="none") -> Tensor:
    from ..tensor import _Act

    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _Act.apply(_t(input), "gelu" if approximate == "none" else "gelu_tanh")


def _softmax_dim(ndim):
    return 0 if ndim in (0, 1, 3) else 1  # torch's legacy choice when dim is None


def softmax(input, dim=None, dtype=None) -> Tensor:
    from ..tensor import _Softmax

    x = _t(input)
    if dtype is not None:
        x = x.type(dtype)
    return _Softmax.apply(x, _softmax_dim(x.ndim) if dim is None else dim, False)


def log_softmax(input, dim=None, dtype=None) -> Tensor:
    from ..tensor import _Softmax

    x = _t(input)
    if dtype is not None:
        x = x.type(dtype)
    return _Softmax.apply(x, _softmax_dim(x.ndim) if dim is None else dim, True)


# ---- dropout --------------------------------------------------------------------------------------------
class _Mask(Function):
    def forward(self, x, mask):
        self.mask = mask
        return x * mask

    def backward(self, g):
        return g * self.mask, None


def dropout(input, p=0.5, training=True, inplace=False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (layerforge's generator,
    seeded by ``layerforge.manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    x = _t(input)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = default_generator().random(x.shape) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return _Mask.apply(x, mask)


# ---- layer norm -------------------------------------------------------------------------------------------
class _LayerNorm(Function):
    def forward(self, x, normalized_shape, w, b, eps):
        y, self.mean, self.rstd = ops.layer_norm(x, normalized_shape, w, b, eps)
        self.x, self.w, self.ns = x, w, normalized_shape
        return y

    def backward(self, g):
        n = self.needs_input_grad
        gx, gw, gb = ops.layer_norm_backward(g, self.x, self.mean, self.rstd, self.w,
                                             need_weight_grads=n[2] or n[3])
        return (gx if n[0] else None, None, gw.reshape(self.ns) if n[2] else None,
                gb.reshape(self.ns) if n[3] else None, None)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    x = _t(input)
    ns = (int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(ns):]) != ns or x.ndim < len(ns):
        raise ValueError(f"layer_norm: normalized_shape {ns} does not match the trailing dims of the input of "
                         f"shape {_shape(x.shape)}")
    return _LayerNorm.apply(x, ns, None if weight is None else _t(weight), None if bias is None else _t(bias),
                            float(eps))


# ---- embedding --------------------------------------------------------------------------------------------
class _Embedding(Function):
    def forward(self, idx, w, padding_idx):
        self.idx, self.shape, self.pad = idx, w.shape, padding_idx
        return w[idx]

    def backward(self, g):
        gw = np.zeros(self.shape, dtype=g.dtype)
        np.add.at(gw, self.idx.reshape(-1), g.reshape(-1, self.shape[1]))
        if self.pad is not None:
            gw[self.pad] = 0
        return None, gw, None


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False) -> Tensor:
    idx = input._data if isinstance(input, Tensor) else np.asarray(input)
    weight = _t(weight)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be an integer tensor, got dtype {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"embedding: index out of range in self (indices must be in [0, {n}))")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise ValueError("embedding: max_norm, scale_grad_by_freq and sparse are not supported by layerforge")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n
    return _Embedding.apply(Tensor._wrap(idx), weight, padding_idx)


# ---- losses -------------------------------------------------------------------------------------------------
def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction")


class _CrossEntropy(Function):
    def forward(self, x, t, w, ignore_index, label_smoothing, reduction):
        self.red = reduction
        loss, self.grad = ops.cross_entropy(x, t, w, ignore_index, label_smoothing, reduction,
                                            need_grad=self.needs_input_grad[0])
        return loss

    def backward(self, g):
        gr = self.grad
        if self.red == "none":
            gr = gr * g[:, None]
        elif g.reshape(()) != 1:
            gr = gr * g
        return gr, None, None, None, None, None


def _classes_last(x: Tensor):
    """(N, C, d1, ...) -> (N * d1 * ..., C) and the (N, d1, ...) shape."""
    if x.ndim <= 2:
        return x, None
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    xp = x.permute(perm)
    return xp.reshape(-1, x.shape[1]), xp.shape[:-1]


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0) -> Tensor:
    """Cross-entropy of logits (N, C) or (N, C, d1, ...) or (C,) against class indices (N, ...) or
    class probabilities (the input's shape). Class indices run the fused C++ kernel (log-softmax, loss
    and gradient in one pass)."""
    x = _t(input)
    tgt = target if isinstance(target, Tensor) else Tensor(np.asarray(target))
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: {reduction!r} is not a valid value for reduction")
    if x.ndim == 0:
        raise ValueError("cross_entropy: input must have at least 1 dim (C,)")
    if tgt.dtype.kind == "f":  # class probabilities
        if tgt.shape != x.shape:
            raise ValueError(f"cross_entropy: probability targets must have the input's shape "
                             f"{_shape(x.shape)}, got {_shape(tgt.shape)}")
        C = x.shape[0] if x.ndim == 1 else x.shape[1]
        cdim = 0 if x.ndim == 1 else 1
        lp = log_softmax(x, dim=cdim)
        t = tgt.detach() if not tgt.requires_grad else tgt
        if label_smoothing > 0:
            t = t * (1.0 - label_smoothing) + label_smoothing / C
        wshape = [1] * x.ndim
        wshape[cdim] = C
        if weight is not None:
            lp = lp * _t(weight).reshape(wshape)
        loss = -(lp * t).sum(dim=cdim)
        return _reduce(loss, reduction, "cross_entropy")
    if tgt.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must be class indices (int64) or probabilities (float), got "
                        f"{tgt.dtype}")
    if x.ndim == 1:
        if tgt.ndim != 0:
            raise ValueError(f"cross_entropy: input of shape {_shape(x.shape)} needs a 0-d target, got "
                             f"{_shape(tgt.shape)}")
        out = cross_entropy(x.unsqueeze(0), tgt.reshape(1), weight, None, ignore_index, None, reduction,
                            label_smoothing)
        return out.squeeze(0) if reduction == "none" else out
    x2, spatial = _classes_last(x)
    expect = (x.shape[0],) + tuple(x.shape[2:])
    if tuple(tgt.shape) != expect:
        raise ValueError(f"cross_entropy: input of shape {_shape(x.shape)} needs target of shape "
                         f"{_shape(expect)}, got {_shape(tgt.shape)}")
    w = None if weight is None else _t(weight)._data
    loss = _CrossEntropy.apply(x2, tgt._data.reshape(-1), w, int(ignore_index), float(label_smoothing), reduction)
    if reduction == "none" and spatial is not None:
        loss = loss.reshape(spatial)
    return loss


class _NLL(Function):
    def forward(self, x, t, w, ignore_index, reduction):
        N, C = x.shape
        valid = t != ignore_index
        tt = np.where(valid, t, 0)
        if tt.size and (tt.min() < 0 or tt.max() >= C):
            bad = t[valid & ((t < 0) | (t >= C))][0]
            raise IndexError(f"nll_loss: Target {bad} is out of bounds (input has {C} classes)")
        wt = (w[tt] if w is not None else np.ones(N, x.dtype)) * valid
        loss = -x[np.arange(N), tt] * wt
        self.shape, self.tt, self.wt, self.red = x.shape, tt, wt, reduction
        if reduction == "none":
            return loss.astype(x.dtype)
        if reduction == "sum":
            return np.asarray(loss.sum(), x.dtype)
        self.den = wt.sum()
        return np.asarray(loss.sum() / self.den, x.dtype)

    def backward(self, g):
        N = self.shape[0]
        gx = np.zeros(self.shape, g.dtype)
        coef = -self.wt * (g if self.red == "none" else g.reshape(()))
        if self.red == "mean":
            coef = coef / self.den
        gx[np.arange(N), self.tt] = coef
        return gx, None, None, None, None


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean") -> Tensor:
    x = _t(input)
    tgt = target if isinstance(target, Tensor) else Tensor(np.asarray(target))
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"nll_loss: {reduction!r} is not a valid value for reduction")
    if x.ndim == 1:
        out = nll_loss(x.unsqueeze(0), tgt.reshape(1), weight, None, ignore_index, None, reduction)
        return out.squeeze(0) if reduction == "none" else out
    x2, spatial = _classes_last(x)
    expect = (x.shape[0],) + tuple(x.shape[2:])
    if tuple(tgt.shape) != expect:
        raise ValueError(f"nll_loss: input of shape {_shape(x.shape)} needs target of shape {_shape(expect)}, got "
                         f"{_shape(tgt.shape)}")
    w = None if weight is None else _t(weight)._data
    loss = _NLL.apply(x2, tgt._data.reshape(-1).astype(np.int64), w, int(ignore_index), reduction)
    if reduction == "none" and spatial is not None:
        loss = loss.reshape(spatial)
    return loss


def _check_same(x, y, op):
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"{op}: target size {_shape(y.shape)} is different from the input size "
                         f"{_shape(x.shape)}")


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean") -> Tensor:
    x, y = _t(input), _t(target)
    if x.shape != y.shape:
        try:
            np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise ValueError(f"mse_loss: input {_shape(x.shape)} and target {_shape(y.shape)} do not broadcast") from None
    d = x - y
    return _reduce(d * d, reduction, "mse_loss")


class _BCE(Function):
    def forward(self, p, y, w):
        if p.size and ((p < 0) | (p > 1)).any():
            raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
        y = y.astype(p.dtype, copy=False)
        with np.errstate(divide="ignore"):
            lp = np.maximum(np.log(p), -100)
            l1p = np.maximum(np.log1p(-p), -100)
        loss = -(y * lp + (1 - y) * l1p)
        if w is not None:
            loss = loss * w
        self.p, self.y, self.w = p, y, w
        return loss.astype(p.dtype, copy=False)

    def backward(self, g):
        p, y = self.p, self.y
        gr = g * (p - y) / np.maximum((1 - p) * p, p.dtype.type(1e-12))
        if self.w is not None:
            gr = unbroadcast(gr * self.w, p.shape)
        return gr, None, None


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean") -> Tensor:
    x, y = _t(input), _t(target)
    _check_same(x, y, "binary_cross_entropy")
    w = None if weight is None else np.broadcast_to(_t(weight)._data, x.shape)
    return _reduce(_BCE.apply(x, y.detach(), w), reduction, "binary_cross_entropy")


class _BCELogits(Function):
    def forward(self, x, y, w, pw):
        y = y.astype(x.dtype, copy=False)
        sp = np.logaddexp(0, -x)  # softplus(-x) = log(1 + exp(-x)), stable
        if pw is not None:
            L = 1 + (pw - 1) * y
            loss = (1 - y) * x + L * sp
        else:
            L = None
            loss = (1 - y) * x + sp
        if w is not None:
            loss = loss * w
        self.x, self.y, self.w, self.L = x, y, w, L
        return loss.astype(x.dtype, copy=False)

    def backward(self, g):
        x, y = self.x, self.y
        s_neg = ops.sigmoid(np.ascontiguousarray(-x))  # sigmoid(-x)
        gr = (1 - y) - (self.L if self.L is not None else 1) * s_neg
        if self.w is not None:
            gr = gr * self.w
        return (g * gr).astype(x.dtype, copy=False), None, None, None


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None) -> Tensor:
    x, y = _t(input), _t(target)
    _check_same(x, y, "binary_cross_entropy_with_logits")
    w = None if weight is None else np.broadcast_to(_t(weight)._data, x.shape)
    pw = None if pos_weight is None else _t(pos_weight)._data.astype(x.dtype)
    return _reduce(_BCELogits.apply(x, y.detach(), w, pw), reduction, "binary_cross_entropy_with_logits")


# ---- shapes ---------------------------------------------------------------------------------------------------
def flatten(input, start_dim=0, end_dim=-1) -> Tensor:
    return _flatten(input, start_dim, end_dim)


class _Pad(Function):
    def forward(self, x, widths, value):
        self.crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return np.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.crop], None, None


def pad(input, pad, mode="constant", value=None) -> Tensor:
    """Constant padding as torch.nn.functional.pad: ``pad`` lists (left, right) pairs starting from the
    last dim. Only mode='constant' and non-negative pads."""
    x = _t(input)
    if mode != "constant":
        raise ValueError(f"pad: mode {mode!r} is not supported by layerforge (only 'constant')")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: padding length {len(pad)} must be even and at most 2 * ndim ({2 * x.ndim})")
    if any(p < 0 for p in pad):
        raise ValueError("pad: negative padding is not supported by layerforge")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return _Pad.apply(x, tuple(widths), 0 if value is None else value)


def one_hot(tensor, num_classes=-1) -> Tensor:
    idx = tensor._data if isinstance(tensor, Tensor) else np.asarray(tensor)
    if idx.dtype.kind not in "iu":
        raise TypeError("one_hot is only applicable to index tensor (int64)")
    if num_classes == -1:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise RuntimeError("one_hot: Class values must be smaller than num_classes and non-negative.")
    out = np.zeros(idx.shape + (num_classes,), dtype=int64)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1, axis=-1)
    return Tensor._wrap(out)


# ==== sequence models and attention ==========================================================================
# (The LSTM layers live in nn/rnn.py: torch.nn.functional has no lstm. Their Function, _LSTMLayer, is here
# beside the attention one so every Function over an ops kernel family is in this file.)
class _SDPA(Function):
    """softmax(q k^T * scale + mask) v on the FlashAttention kernels; q (..., L, D), k (..., S, D),
    v (..., S, Dv). The kernel saves the output and the per-row log-sum-exp, never the L x S matrix.
    The mask is not differentiated."""

    def forward(self, q, k, v, attn_mask, dropout_p, is_causal, scale, seed, enable_gqa):
        out, self.saved = ops.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
                                                           seed=seed, return_saved=True, enable_gqa=enable_gqa)
        return out

    def backward(self, g):
        n = self.needs_input_grad
        gq, gk, gv = ops.scaled_dot_product_attention_backward(g, self.saved)
        return (gq if n[0] else None, gk if n[1] else None, gv if n[2] else None) + (None,) * 6


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False) -> Tensor:
    """torch.nn.functional.scaled_dot_product_attention: query (..., L, D), key (..., S, D),
    value (..., S, Dv) -> (..., L, Dv). attn_mask: bool (True = take part in attention) or float (added
    to the scores), broadcastable to (..., L, S); not differentiated. Dropout (when dropout_p > 0, as
    torch's functional: whatever the module's mode) draws its seed from layerforge's generator, so runs
    repeat under ``layerforge.manual_seed``. The leading dims of query, key and value broadcast;
    ``enable_gqa=True``: key and value may have fewer heads (dim -3), a divisor of query's (torch's rule)."""
    q, k, v = _t(query), _t(key), _t(value)
    mask = attn_mask._data if isinstance(attn_mask, Tensor) else attn_mask
    seed = int(default_generator().integers(0, 2**63 - 1)) if dropout_p > 0 else 0
    return _SDPA.apply(q, k, v, mask, dropout_p, is_causal, scale, seed, bool(enable_gqa))


class _LSTMLayer(Function):
    """One LSTM layer (one direction) over a sequence: one ``ops.lstm`` call forward, one
    ``ops.lstm_backward`` call backward. x (T, B, I), h0/c0 (B, H) or None (zeros), w_ih (4H, I),
    w_hh (4H, H), b_ih/b_hh (4H,) or None. Three outputs: y (T, B, H), h_T (B, H), c_T (B, H)."""

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        y, h_T, c_T, self.saved = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, return_saved=True)
        return y, h_T, c_T

    def backward(self, grad_y, grad_h_T, grad_c_T):
        g = ops.lstm_backward(grad_y, self.saved, grad_h_T, grad_c_T)
        grads = (g.grad_x, g.grad_h0, g.grad_c0, g.grad_w_ih, g.grad_w_hh, g.grad_b_ih, g.grad_b_hh)
        return tuple(gi if need else None for gi, need in zip(grads, self.needs_input_grad))
