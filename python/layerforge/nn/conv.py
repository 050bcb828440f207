"""Convolution and pooling layers with torch.nn's names, constructor arguments, parameter names/layouts
(Conv2d weight (out_channels, in_channels/groups, kH, kW), bias (out_channels,)), default initialisation
and reprs, on nn.functional's conv2d / pooling ops (NCHW, or unbatched CHW as torch)."""
from __future__ import annotations

from . import functional as F
from ..ops._common import as_int, pair
from ..tensor import _check_device, _t
from .layers import _add_weight_and_bias, _reset_weight_and_bias
from .module import Module

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _run(layer: Module, fn, x, *args):
    """fn(x, *args), its ValueErrors (bad geometry, input too small) prefixed with the layer's repr, which
    shows the layer's arguments."""
    try:
        return fn(x, *args)
    except ValueError as e:
        raise ValueError(f"{layer!r}: {e}") from None


def _pair_at_least(v, name: str, low: int) -> tuple:
    """An int or pair of ints as a pair, each >= low; errors name Conv2d and the argument."""
    p = pair(v, name, "Conv2d")
    if min(p) < low:
        raise ValueError(f"Conv2d: {name} must be {'positive' if low else 'non-negative'}, got {p}")
    return p


class Conv2d(Module):
    """2-d convolution over (N, C, H, W) or (C, H, W) input, as torch.nn.Conv2d. Default init as torch:
    kaiming_uniform_(a=sqrt(5)) for the weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias with
    fan_in = in_channels / groups * kH * kW. Only padding_mode='zeros' is supported."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        _check_device(device)
        in_channels, out_channels = as_int(in_channels, "in_channels", "Conv2d"), as_int(out_channels,
                                                                                          "out_channels", "Conv2d")
        groups = as_int(groups, "groups", "Conv2d")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Conv2d: in_channels and out_channels must be positive, got {in_channels} and "
                             f"{out_channels}")
        if groups < 1:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.kernel_size = _pair_at_least(kernel_size, "kernel_size", 1)
        self.stride = _pair_at_least(stride, "stride", 1)
        self.dilation = _pair_at_least(dilation, "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv2d: invalid padding string {padding!r}, should be one of 'valid', 'same'")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding = padding
        else:
            self.padding = _pair_at_least(padding, "padding", 0)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {_PADDING_MODES}, but got "
                             f"padding_mode={padding_mode!r}")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode={padding_mode!r} is not supported by layerforge "
                             "(only 'zeros')")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        _add_weight_and_bias(self, (out_channels, in_channels // groups) + self.kernel_size, bias, dtype)

    def reset_parameters(self):
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]  # >= 1
        _reset_weight_and_bias(self.weight, self.bias, fan_in)

    def forward(self, x):
        x = _t(x)
        F._check_image(x, self, self.in_channels)
        return _run(self, F.conv2d, x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Pool2d(Module):
    """Shared forward: check the input is (N, C, H, W) or (C, H, W), then the functional op, errors
    naming the layer. Subclasses set ``_fn`` and ``_args()``."""

    def forward(self, x):
        x = _t(x)
        F._check_image(x, self)
        return _run(self, type(self)._fn, x, *self._args())


class MaxPool2d(_Pool2d):
    """torch.nn.MaxPool2d (stride defaults to kernel_size); with return_indices returns (out, indices)."""

    _fn = staticmethod(F.max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def _args(self):
        return self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    """torch.nn.AvgPool2d (stride defaults to kernel_size)."""

    _fn = staticmethod(F.avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(_Pool2d):
    """torch.nn.AdaptiveAvgPool2d: output_size an int or a pair (None keeps that input size)."""

    _fn = staticmethod(F.adaptive_avg_pool2d)

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def _args(self):
        return (self.output_size,)

    def extra_repr(self):
        return f"output_size={self.output_size}"
