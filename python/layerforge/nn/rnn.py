"""LSTM and LSTMCell with torch.nn's constructor arguments, parameter names/layouts (gates i, f, g, o;
``weight_ih_l{k}[_reverse]`` (4H, I), ``weight_hh_l{k}[_reverse]`` (4H, H), ``bias_ih_l{k}``,
``bias_hh_l{k}`` (4H,)), default initialisation (U(-1/sqrt(H), 1/sqrt(H)) for every parameter) and
forward signatures, so a torch state_dict loads as is.

Every layer and direction is one ``functional._LSTMLayer`` node: one ``ops.lstm`` call forward (all T steps
in C++) and one ``ops.lstm_backward`` call backward; layers, directions, dropout between layers and the
(h_n, c_n) stacks are composed here with Tensor ops. The reverse direction runs on the time-reversed
sequence (a negative-stride view, which ``ops.lstm`` copies once) and its output is reversed back.
"""
from __future__ import annotations

import math
import numbers

from . import functional as F
from . import init
from ..tensor import _t, cat, stack
from .layers import _empty, _shape
from .module import Module

__all__ = ["LSTM", "LSTMCell"]


def _check_hidden(layer, name, t, expected):
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{layer!r}: expected {name} of shape {_shape(expected)}, got {_shape(t.shape)}")


def _check_input(layer, x, unbatched: tuple, batched: tuple, size_error: str):
    """x's ndim is unbatched[0] or batched[0] (layouts unbatched[1], batched[1]) and its last dim is
    layer.input_size; size_error: the message for the latter, with {got} and {expected}."""
    if x.ndim not in (unbatched[0], batched[0]):
        raise ValueError(f"{layer!r}: expected input to be {unbatched[0]}-D {unbatched[1]} or {batched[0]}-D "
                         f"{batched[1]}, got shape {_shape(x.shape)}")
    if x.shape[-1] != layer.input_size:
        raise ValueError(f"{layer!r}: {size_error.format(got=x.shape[-1], expected=layer.input_size)} "
                         f"(input of shape {_shape(x.shape)})")


def _state_pair(layer, hx, names: tuple, expected: tuple):
    """hx = (h, c) as tensors of shape `expected` (their names in errors), or (None, None) for hx None."""
    if hx is None:
        return None, None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise ValueError(f"{layer!r}: hx must be a tuple ({names[0]}, {names[1]})")
    h, c = _t(hx[0]), _t(hx[1])
    _check_hidden(layer, names[0], h, expected)
    _check_hidden(layer, names[1], c, expected)
    return h, c


def _reset_uniform(module):
    # torch's RNNBase / RNNCellBase.reset_parameters: every parameter from U(-1/sqrt(H), 1/sqrt(H))
    bound = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0.0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


def _check_sizes(input_size, hidden_size):
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} should be of type int, got: {type(v).__name__}")
    if input_size < 0:
        raise ValueError(f"input_size must be non-negative, got {input_size}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")


class LSTM(Module):
    """torch.nn.LSTM: input (T, B, I) ((B, T, I) with batch_first, or unbatched (T, I)); forward returns
    (output (T, B, D*H), (h_n (num_layers*D, B, H), c_n (num_layers*D, B, H))), D = 2 if bidirectional.
    h_n/c_n are ordered layer-major, forward direction before reverse (torch's order)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) or num_layers <= 0:
            raise ValueError(f"num_layers must be an integer greater than zero, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             f"element being zeroed, got {dropout!r}")
        if proj_size != 0:
            raise ValueError(f"LSTM: proj_size={proj_size} is not supported by layerforge (only proj_size=0)")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size = bool(bidirectional), 0
        num_directions = 2 if bidirectional else 1
        H = self.hidden_size
        self._flat_weights_names = []
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else H * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [("weight_ih", (4 * H, layer_in)), ("weight_hh", (4 * H, H))]
                if bias:
                    shapes += [("bias_ih", (4 * H,)), ("bias_hh", (4 * H,))]
                for name, shape in shapes:
                    setattr(self, name + suffix, _empty(*shape, dtype=dtype))
                    self._flat_weights_names.append(name + suffix)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    @property
    def all_weights(self):
        """Per layer and direction, [w_ih, w_hh, b_ih, b_hh] (as torch)."""
        per = 4 if self.bias else 2
        ws = [getattr(self, n) for n in self._flat_weights_names]
        return [ws[i:i + per] for i in range(0, len(ws), per)]

    def _layer_params(self, layer, direction):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix)
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, "bias_ih" + suffix), getattr(self, "bias_hh" + suffix)

    def forward(self, input, hx=None):
        x = _t(input)
        _check_input(self, x, (2, "(T, I)"), (3, "((B, T, I))" if self.batch_first else "((T, B, I))"),
                     "input.size(-1) must be equal to input_size. Expected {expected}, got {got}")
        batched = x.ndim == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        B = x.shape[1]
        D = 2 if self.bidirectional else 1
        expected = (self.num_layers * D, B, self.hidden_size) if batched else (self.num_layers * D,
                                                                              self.hidden_size)
        h0, c0 = _state_pair(self, hx, ("h_0", "c_0"), expected)
        if hx is not None and not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        h_n, c_n = [], []
        layer_input = x  # (T, B, I) then (T, B, D*H)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                seq = layer_input if direction == 0 else layer_input[::-1]
                y, h_T, c_T = F._LSTMLayer.apply(seq, None if h0 is None else h0[k], None if c0 is None else c0[k],
                                                 *self._layer_params(layer, direction))
                outputs.append(y if direction == 0 else y[::-1])
                h_n.append(h_T)
                c_n.append(c_T)
            layer_input = outputs[0] if D == 1 else cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        output, h_n, c_n = layer_input, stack(h_n), stack(c_n)
        if not batched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class LSTMCell(Module):
    """torch.nn.LSTMCell: one step. input (B, I) or unbatched (I,), hx = (h, c) each (B, H) / (H,) or None
    (zeros) -> (h', c'). Runs as the sequence layer with T = 1 (what ``ops.lstm_cell`` does too)."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        H = self.hidden_size
        self.weight_ih = _empty(4 * H, self.input_size, dtype=dtype)
        self.weight_hh = _empty(4 * H, H, dtype=dtype)
        if bias:
            self.bias_ih = _empty(4 * H, dtype=dtype)
            self.bias_hh = _empty(4 * H, dtype=dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def forward(self, input, hx=None):
        x = _t(input)
        _check_input(self, x, (1, "(I,)"), (2, "(B, I)"),
                     "input has inconsistent input_size: got {got}, expected {expected}")
        batched = x.ndim == 2
        if not batched:
            x = x.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        h, c = _state_pair(self, hx, ("h", "c"), expected)
        if hx is not None and not batched:
            h, c = h.unsqueeze(0), c.unsqueeze(0)
        _, h1, c1 = F._LSTMLayer.apply(x.unsqueeze(0), h, c, self.weight_ih, self.weight_hh, self.bias_ih,
                                       self.bias_hh)
        if not batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
