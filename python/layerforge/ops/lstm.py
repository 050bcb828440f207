"""LSTM forward and backward through time (PyTorch's layout: gates i, f, g, o; weights (4H, I)/(4H, H)).

``lstm`` runs a whole sequence; ``lstm_cell`` is one step (the sequence with T = 1). With
``return_saved=True`` they also return an :class:`LSTMSaved` — the inputs and the per-step state the
backward needs (every h_t, the activated gates and c_t of every step) — which ``lstm_backward`` /
``lstm_cell_backward`` consume. Each layer (and each direction of a bidirectional layer) keeps its own
``LSTMSaved``, so stacks compose in Python: run layer 2 on layer 1's ``y``, and in the backward feed layer
2's ``grad_x`` to layer 1 as its ``grad_y``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _C
from ._common import as_float_array

_OP = "lstm"


class LSTMSaved(NamedTuple):
    x: np.ndarray  # (T, B, I), C-contiguous
    h0: np.ndarray | None  # (B, H) or None (zeros)
    c0: np.ndarray | None
    w_ih: np.ndarray  # (4H, I)
    w_hh: np.ndarray  # (4H, H)
    has_b_ih: bool
    has_b_hh: bool
    y: np.ndarray  # (T, B, H): every h_t
    gates: np.ndarray  # (T, B, 4H): activated gates i, f, g, o of every step
    cells: np.ndarray  # (T, B, H): every c_t


class LSTMGrads(NamedTuple):
    grad_x: np.ndarray
    grad_h0: np.ndarray
    grad_c0: np.ndarray
    grad_w_ih: np.ndarray
    grad_w_hh: np.ndarray
    grad_b_ih: np.ndarray | None  # None where the forward had no such bias
    grad_b_hh: np.ndarray | None


def _shape(s) -> str:
    return "(" + ", ".join(str(v) for v in s) + ("," if len(s) == 1 else "") + ")"


def _contig(a: np.ndarray) -> np.ndarray:
    # The one place where the LSTM copies: activations the kernels walk row by row.
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _rows(a: np.ndarray) -> np.ndarray:
    # 2-d arrays the kernels read with any row stride but a unit column stride
    return a if (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize) else np.ascontiguousarray(a)


def _check_inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, op, seq=True):
    x = as_float_array(x, "x", op)
    dt = x.dtype
    if seq and x.ndim != 3:
        raise ValueError(f"{op}: x must be 3-d (T, B, I), got shape {_shape(x.shape)}")
    if not seq and x.ndim != 2:
        raise ValueError(f"{op}: x must be 2-d (B, I), got shape {_shape(x.shape)}")
    w_ih = as_float_array(w_ih, "w_ih", op)
    w_hh = as_float_array(w_hh, "w_hh", op)
    if w_hh.ndim != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{op}: w_hh must have shape (4H, H) (gates i, f, g, o), got {_shape(w_hh.shape)}")
    H = w_hh.shape[1]
    B, I = x.shape[-2], x.shape[-1]
    if w_ih.shape != (4 * H, I):
        raise ValueError(
            f"{op}: w_ih must have shape (4H, I) = {_shape((4 * H, I))} for w_hh {_shape(w_hh.shape)} and x "
            f"{_shape(x.shape)}, got {_shape(w_ih.shape)}"
        )
    out = []
    for name, a, shape in (("h0" if seq else "h", h0, (B, H)), ("c0" if seq else "c", c0, (B, H)),
                           ("b_ih", b_ih, (4 * H,)), ("b_hh", b_hh, (4 * H,))):
        if a is None:
            out.append(None)
            continue
        a = as_float_array(a, name, op)
        if a.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {_shape(shape)}, got {_shape(a.shape)}")
        out.append(a)
    for name, a in (("w_ih", w_ih), ("w_hh", w_hh), *zip(("h0", "c0", "b_ih", "b_hh"), out)):
        if a is not None and a.dtype != dt:
            raise TypeError(f"{op}: {name} has dtype {a.dtype} but x has dtype {dt}; they must match")
    h0, c0, b_ih, b_hh = out
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh


def lstm(x, h0=None, c0=None, w_ih=None, w_hh=None, b_ih=None, b_hh=None, return_saved: bool = False):
    """One LSTM layer over a sequence: x (T, B, I) -> (y (T, B, H), h_T (B, H), c_T (B, H)).

    h0/c0 default to zeros; b_ih/b_hh are optional. float32 or float64, any strides. With
    ``return_saved=True`` returns ``(y, h_T, c_T, saved)`` for :func:`lstm_backward`.
    """
    if w_ih is None or w_hh is None:
        raise TypeError(f"{_OP}: w_ih and w_hh are required")
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _check_inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, _OP)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    x = _contig(x)
    h0 = None if h0 is None else _rows(h0)
    c0 = None if c0 is None else _rows(c0)
    dt = x.dtype
    y = np.empty((T, B, H), dt)
    h_T = np.empty((B, H), dt)
    c_T = np.empty((B, H), dt)
    gates = np.empty((T, B, 4 * H), dt)
    cells = np.empty((T, B, H), dt)
    _C.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells)
    if return_saved:
        return y, h_T, c_T, LSTMSaved(x, h0, c0, w_ih, w_hh, b_ih is not None, b_hh is not None, y, gates, cells)
    return y, h_T, c_T


def lstm_backward(grad_y, saved: LSTMSaved, grad_h_T=None, grad_c_T=None) -> LSTMGrads:
    """Backward through time of :func:`lstm`.

    grad_y (T, B, H) (or None: zeros), grad_h_T / grad_c_T (B, H) optional. Returns
    :class:`LSTMGrads` (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh); the bias
    gradients are None where the forward had no bias.
    """
    op = "lstm_backward"
    if not isinstance(saved, LSTMSaved):
        raise TypeError(f"{op}: saved must be the LSTMSaved returned by lstm(..., return_saved=True)")
    x, w_ih, w_hh = saved.x, saved.w_ih, saved.w_hh
    T, B, I = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    grads = []
    for name, g, shape in (("grad_y", grad_y, (T, B, H)), ("grad_h_T", grad_h_T, (B, H)),
                           ("grad_c_T", grad_c_T, (B, H))):
        if g is None:
            grads.append(None)
            continue
        g = as_float_array(g, name, op)
        if g.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {_shape(shape)}, got {_shape(g.shape)}")
        if g.dtype != dt:
            raise TypeError(f"{op}: {name} has dtype {g.dtype} but the forward ran in {dt}")
        grads.append(g)
    gy, ghT, gcT = grads
    if gy is not None:
        gy = _contig(gy)
    gx = np.empty((T, B, I), dt)
    gh0 = np.empty((B, H), dt)
    gc0 = np.empty((B, H), dt)
    gwi = np.empty((4 * H, I), dt)
    gwh = np.empty((4 * H, H), dt)
    gbi = np.empty((4 * H,), dt) if saved.has_b_ih else None
    gbh = np.empty((4 * H,), dt) if saved.has_b_hh else None
    _C.lstm_backward(x, saved.h0, saved.c0, w_ih, w_hh, saved.y, saved.gates, saved.cells, gy, ghT, gcT,
                     gx, gh0, gc0, gwi, gwh, gbi, gbh, False)
    return LSTMGrads(gx, gh0, gc0, gwi, gwh, gbi, gbh)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, return_saved: bool = False):
    """One LSTM step: x (B, I), h and c (B, H) -> (h_next, c_next) (torch.nn.LSTMCell's math).

    With ``return_saved=True`` returns ``(h_next, c_next, saved)`` for :func:`lstm_cell_backward`.
    """
    x, h, c, w_ih, w_hh, b_ih, b_hh = _check_inputs(x, h, c, w_ih, w_hh, b_ih, b_hh, "lstm_cell", seq=False)
    y, h_T, c_T, saved = lstm(x[None], h, c, w_ih, w_hh, b_ih, b_hh, return_saved=True)
    if return_saved:
        return h_T, c_T, saved
    return h_T, c_T


def lstm_cell_backward(grad_h, grad_c, saved: LSTMSaved) -> LSTMGrads:
    """Backward of :func:`lstm_cell` from the gradients of h_next and c_next (either may be None).

    Returns :class:`LSTMGrads` with grad_x (B, I), grad_h0 = grad of h, grad_c0 = grad of c, and the
    weight/bias gradients.
    """
    g = lstm_backward(None, saved, grad_h, grad_c)
    return g._replace(grad_x=g.grad_x[0])
