"""2-d convolution, forward and backward, with torch.nn.functional.conv2d's semantics.

Layouts: ``layout="NCHW"`` (default): x (N, C, H, W), weight (K, C/groups, R, S), out (N, K, P, Q);
``layout="NHWC"`` (channels-last): x (N, H, W, C), weight (K, R, S, C/groups), out (N, P, Q, K).
float32 and float64; any strides (non-contiguous inputs are copied once, in ``_common.contiguous``).
numpy arrays run on the CPU kernels; GPU arrays (cupy, or anything with ``__cuda_array_interface__``) on
the CUDA kernels, on cupy's current stream, returning cupy arrays (mixing the two raises TypeError).
The algorithm is chosen per shape in C++ (``conv2d_algorithm`` names it; see csrc/include/layerforge/conv.h).
"""
from __future__ import annotations

from ._common import (device_module, as_device_float_array, as_int, contiguous, cuda_kernels, current_stream_handle,
                      device_of, from_nchw, layout_of, nchw_dims, pair, require_4d, run_kernel)


def _geometry(x, weight, stride, padding, dilation, groups, layout, op, device):
    """Validate and normalise (the same for both devices); returns (x, weight, params list, output shape, K,
    layout), x and weight as arrays of `device` ('cpu': numpy, 'cuda': cupy)."""
    layout = layout_of(layout, op)
    x = as_device_float_array(x, "x", op, device)
    weight = as_device_float_array(weight, "weight", op, device)
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
    """torch.nn.functional.conv2d on numpy or GPU arrays (``layout="NHWC"`` for channels-last)."""
    op = "conv2d"
    dev = device_of(op, x=x, weight=weight, bias=bias)
    x, weight, params, out_shape, K, layout = _geometry(x, weight, stride, padding, dilation, groups, layout, op,
                                                        dev)
    if bias is not None:
        bias = as_device_float_array(bias, "bias", op, dev)
        if bias.shape != (K,):
            raise ValueError(f"{op}: bias must have shape ({K},) (the output channels of weight "
                             f"{weight.shape}), got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{op}: bias has dtype {bias.dtype}, x has {x.dtype}; they must match")
        bias = contiguous(bias)
    out = device_module(dev).empty(out_shape, dtype=x.dtype)
    run_kernel(dev, op, "conv2d_forward", contiguous(x), contiguous(weight), bias, out, params, layout)
    return out


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, bias=True, layout="NCHW",
                    need_grad_x=True, need_grad_weight=True):
    """Gradients of ``conv2d(x, weight, bias, ...)`` given ``grad_out`` (the gradient of its output).

    Returns ``(grad_x, grad_weight, grad_bias)``; ``grad_bias`` is None when ``bias`` is False, ``grad_x``
    is None when ``need_grad_x`` is False (e.g. a network's first layer) and ``grad_weight`` is None when
    ``need_grad_weight`` is False (a frozen layer); what is not asked for is not computed. Arguments as conv2d.
    The batch reduction of grad_weight is deterministic for a given thread count (CPU) or device (GPU).
    """
    op = "conv2d_backward"
    dev = device_of(op, grad_out=grad_out, x=x, weight=weight)
    x, weight, params, out_shape, K, layout = _geometry(x, weight, stride, padding, dilation, groups, layout, op,
                                                        dev)
    grad_out = as_device_float_array(grad_out, "grad_out", op, dev)
    if grad_out.shape != out_shape:
        raise ValueError(f"{op}: grad_out has shape {grad_out.shape}, but conv2d of x {x.shape} and weight "
                         f"{weight.shape} gives {out_shape}")
    if grad_out.dtype != x.dtype:
        raise TypeError(f"{op}: grad_out has dtype {grad_out.dtype}, x has {x.dtype}; they must match")
    xp = device_module(dev)
    gx = xp.empty(x.shape, x.dtype) if need_grad_x else None
    gw = xp.empty(weight.shape, x.dtype) if need_grad_weight else None
    gb = xp.empty((K,), x.dtype) if bias else None
    grad_out, x, weight = contiguous(grad_out), contiguous(x), contiguous(weight)
    if dev == "cpu":
        run_kernel(dev, op, "conv2d_backward", grad_out, x, weight, gx, gw, gb, params, layout)
    else:  # the split reductions of grad_weight / grad_bias need a workspace, allocated here by cupy
        kernels = cuda_kernels(op)
        n = kernels.conv2d_backward_workspace_size(x, weight, params, layout, gw is not None, gb is not None)
        workspace = xp.empty((n,), x.dtype) if n else None
        kernels.conv2d_backward(grad_out, x, weight, gx, gw, gb, workspace, params, layout, current_stream_handle())
    return gx, gw, gb


def conv2d_algorithm(x, weight, stride=1, padding=0, dilation=1, groups=1, layout="NCHW") -> str:
    """The kernel conv2d runs for these shapes: on the CPU 'direct', 'gemm_1x1' or 'im2col_gemm'; on the
    GPU 'direct' or 'implicit_gemm'."""
    dev = device_of("conv2d", x=x, weight=weight)
    x, weight, params, _, _, layout = _geometry(x, weight, stride, padding, dilation, groups, layout, "conv2d", dev)
    if dev == "cpu":
        return run_kernel(dev, "conv2d", "conv2d_algorithm", contiguous(x), contiguous(weight), params, layout)
    return cuda_kernels("conv2d").conv2d_algorithm(contiguous(x), contiguous(weight), params, layout)
