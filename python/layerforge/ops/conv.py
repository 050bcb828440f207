"""2-d convolution, forward and backward, with torch.nn.functional.conv2d's semantics.

Layouts: ``layout="NCHW"`` (default): x (N, C, H, W), weight (K, C/groups, R, S), out (N, K, P, Q);
``layout="NHWC"`` (channels-last): x (N, H, W, C), weight (K, R, S, C/groups), out (N, P, Q, K).
float32 and float64; any strides (non-contiguous inputs are copied once, in ``_common.contiguous``).
The algorithm is chosen per shape in C++ (``conv2d_algorithm`` names it; see csrc/include/layerforge/conv.h).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import as_float_array, as_int, contiguous, from_nchw, layout_of, nchw_dims, pair, require_4d


def _geometry(x, weight, stride, padding, dilation, groups, layout, op):
    """Validate and normalise; returns (x, weight, params list, output shape, K)."""
    layout = layout_of(layout, op)
    x = as_float_array(x, "x", op)
    weight = as_float_array(weight, "weight", op)
    require_4d(x, "x", op, layout)
    if weight.ndim != 4:
        dims = "(K, R, S, C/groups)" if layout == "NHWC" else "(K, C/groups, R, S)"
        raise ValueError(f"{op}: weight must be 4-d {dims}, got shape {weight.shape}")
    if x.dtype != weight.dtype:
        raise TypeError(f"{op}: x has dtype {x.dtype} and weight has dtype {weight.dtype}; they must match")
    groups = as_int(groups, "groups", op)
    if groups < 1:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    sh, sw = pair(stride, "stride", op)
    dh, dw = pair(dilation, "dilation", op)
    if sh < 1 or sw < 1:
        raise ValueError(f"{op}: stride must be positive, got {(sh, sw)}")
    if dh < 1 or dw < 1:
        raise ValueError(f"{op}: dilation must be positive, got {(dh, dw)}")
    N, C, H, W = nchw_dims(x.shape, layout)
    if layout == "NHWC":
        K, R, S, Cg = weight.shape
    else:
        K, Cg, R, S = weight.shape
    if min(C, H, W, K, Cg, R, S) < 1:
        raise ValueError(f"{op}: empty dimension in x {x.shape} or weight {weight.shape}")
    if C % groups or K % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels ({C}) and the output "
                         f"channels ({K}); x has shape {x.shape}, weight {weight.shape}")
    if Cg * groups != C:
        raise ValueError(f"{op}: channel mismatch: weight of shape {weight.shape} with groups={groups} expects "
                         f"{Cg * groups} input channels, but x of shape {x.shape} ({layout}) has {C}")
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                                 f"(stride={(sh, sw)})")
            th, tw = dh * (R - 1), dw * (S - 1)
            pt, pl = th // 2, tw // 2
            pb, pr = th - pt, tw - pl
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = pair(padding, "padding", op)
        if ph < 0 or pw < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {(ph, pw)}")
        pt = pb = ph
        pl = pr = pw
    eh, ew = dh * (R - 1) + 1, dw * (S - 1) + 1
    Hp, Wp = H + pt + pb, W + pl + pr
    if eh > Hp or ew > Wp:
        raise ValueError(f"{op}: kernel size ({eh}, {ew}) (with dilation) is larger than the padded input "
                         f"({Hp}, {Wp}); x has shape {x.shape}, weight {weight.shape}")
    P, Q = (Hp - eh) // sh + 1, (Wp - ew) // sw + 1
    params = [sh, sw, pt, pb, pl, pr, dh, dw, groups]
    return x, weight, params, from_nchw(N, K, P, Q, layout), K, layout


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """torch.nn.functional.conv2d on numpy arrays (``layout="NHWC"`` for channels-last)."""
    op = "conv2d"
    x, weight, params, out_shape, K, layout = _geometry(x, weight, stride, padding, dilation, groups, layout, op)
    if bias is not None:
        bias = as_float_array(bias, "bias", op)
        if bias.shape != (K,):
            raise ValueError(f"{op}: bias must have shape ({K},) (the output channels of weight "
                             f"{weight.shape}), got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{op}: bias has dtype {bias.dtype}, x has {x.dtype}; they must match")
        bias = contiguous(bias)
    out = np.empty(out_shape, dtype=x.dtype)
    _C.conv2d_forward(contiguous(x), contiguous(weight), bias, out, params, layout)
    return out


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, bias=True, layout="NCHW",
                    need_grad_x=True, need_grad_weight=True):
    """Gradients of ``conv2d(x, weight, bias, ...)`` given ``grad_out`` (the gradient of its output).

    Returns ``(grad_x, grad_weight, grad_bias)``; ``grad_bias`` is None when ``bias`` is False, ``grad_x``
    is None when ``need_grad_x`` is False (e.g. a network's first layer) and ``grad_weight`` is None when
    ``need_grad_weight`` is False (a frozen layer); what is not asked for is not computed. Arguments as conv2d.
    The batch reduction of grad_weight is deterministic for a given thread count.
    """
    op = "conv2d_backward"
    x, weight, params, out_shape, K, layout = _geometry(x, weight, stride, padding, dilation, groups, layout, op)
    grad_out = as_float_array(grad_out, "grad_out", op)
    if grad_out.shape != out_shape:
        raise ValueError(f"{op}: grad_out has shape {grad_out.shape}, but conv2d of x {x.shape} and weight "
                         f"{weight.shape} gives {out_shape}")
    if grad_out.dtype != x.dtype:
        raise TypeError(f"{op}: grad_out has dtype {grad_out.dtype}, x has {x.dtype}; they must match")
    gx = np.empty(x.shape, x.dtype) if need_grad_x else None
    gw = np.empty(weight.shape, x.dtype) if need_grad_weight else None
    gb = np.empty((K,), x.dtype) if bias else None
    _C.conv2d_backward(contiguous(grad_out), contiguous(x), contiguous(weight), gx, gw, gb, params, layout)
    return gx, gw, gb


def conv2d_algorithm(x, weight, stride=1, padding=0, dilation=1, groups=1, layout="NCHW") -> str:
    """The kernel conv2d runs for these shapes: 'direct', 'gemm_1x1' or 'im2col_gemm'."""
    x, weight, params, _, _, layout = _geometry(x, weight, stride, padding, dilation, groups, layout, "conv2d")
    return _C.conv2d_algorithm(contiguous(x), contiguous(weight), params, layout)
