"""LSTM forward and backward through time (PyTorch's layout: gates i, f, g, o; weights (4H, I)/(4H, H)).

``lstm`` runs a whole sequence; ``lstm_cell`` is one step (the sequence with T = 1). With
``return_saved=True`` they also return an :class:`LSTMSaved` — the inputs and the per-step state the
backward needs (every h_t, the activated gates and c_t of every step) — which ``lstm_backward`` /
``lstm_cell_backward`` consume. Each layer (and each direction of a bidirectional layer) keeps its own
``LSTMSaved``, so stacks compose in Python: run layer 2 on layer 1's ``y``, and in the backward feed layer
2's ``grad_x`` to layer 1 as its ``grad_y``.

GPU arrays (cupy, or anything with ``__cuda_array_interface__``) run on the CUDA kernels
(csrc/cuda/lstm.cu) on cupy's current stream, float32 or float64, with the same API; the saved state then
holds cupy arrays and the backward runs on the GPU too.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _C
from . import _common
from ._common import as_float_array, device_of

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


def _contig(a, xp=np):
    # The one place where the LSTM copies: activations the kernels walk row by row.
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def _rows(a, xp=np):
    # 2-d arrays the kernels read with any row stride but a unit column stride
    return a if (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize) else xp.ascontiguousarray(a)


def _array_api(device: str, op: str):
    """(convert, xp, call) for the device: how arrays are checked/converted, the array module that
    allocates outputs, and the kernel call (name, *args) -> the CPU module's function or the CUDA module's
    (which takes cupy's current stream last). cupy and the CUDA module are looked up through _common at
    call time, so the CPU-only tests can stand in for them (tests/test_cuda_lstm.py)."""
    if device == "cuda":
        xp = _common.cupy_module()
        kernels = _common.cuda_kernels(op)

        def call(name, *args):
            return getattr(kernels, name)(*args, _common.current_stream_handle())

        return _common.as_cuda_float_array, xp, call
    return as_float_array, np, lambda name, *args: getattr(_C, name)(*args)


def _check_inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, op, seq=True, convert=as_float_array):
    x = convert(x, "x", op)
    dt = x.dtype
    if seq and x.ndim != 3:
        raise ValueError(f"{op}: x must be 3-d (T, B, I), got shape {_shape(x.shape)}")
    if not seq and x.ndim != 2:
        raise ValueError(f"{op}: x must be 2-d (B, I), got shape {_shape(x.shape)}")
    w_ih = convert(w_ih, "w_ih", op)
    w_hh = convert(w_hh, "w_hh", op)
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
        a = convert(a, name, op)
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
    ``return_saved=True`` returns ``(y, h_T, c_T, saved)`` for :func:`lstm_backward`. GPU arrays run on
    the GPU (all arrays on one device).
    """
    if w_ih is None or w_hh is None:
        raise TypeError(f"{_OP}: w_ih and w_hh are required")
    device = device_of(_OP, x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    convert, xp, call = _array_api(device, _OP)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _check_inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, _OP, convert=convert)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    x = _contig(x, xp)
    h0 = None if h0 is None else _rows(h0, xp)
    c0 = None if c0 is None else _rows(c0, xp)
    dt = x.dtype
    y = xp.empty((T, B, H), dt)
    h_T = xp.empty((B, H), dt)
    c_T = xp.empty((B, H), dt)
    gates = xp.empty((T, B, 4 * H), dt)
    cells = xp.empty((T, B, H), dt)
    if B > 0:  # an empty batch has nothing to compute (torch returns empty outputs too)
        call("lstm_forward", x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells)
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
    device = device_of(op, saved=x, grad_y=grad_y, grad_h_T=grad_h_T, grad_c_T=grad_c_T)
    convert, xp, call = _array_api(device, op)
    T, B, I = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    grads = []
    for name, g, shape in (("grad_y", grad_y, (T, B, H)), ("grad_h_T", grad_h_T, (B, H)),
                           ("grad_c_T", grad_c_T, (B, H))):
        if g is None:
            grads.append(None)
            continue
        g = convert(g, name, op)
        if g.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {_shape(shape)}, got {_shape(g.shape)}")
        if g.dtype != dt:
            raise TypeError(f"{op}: {name} has dtype {g.dtype} but the forward ran in {dt}")
        grads.append(g)
    gy, ghT, gcT = grads
    if gy is not None:
        gy = _contig(gy, xp)
    gx = xp.empty((T, B, I), dt)
    gh0 = xp.empty((B, H), dt)
    gc0 = xp.empty((B, H), dt)
    gwi = xp.empty((4 * H, I), dt)
    gwh = xp.empty((4 * H, H), dt)
    gbi = xp.empty((4 * H,), dt) if saved.has_b_ih else None
    gbh = xp.empty((4 * H,), dt) if saved.has_b_hh else None
    if B > 0:
        call("lstm_backward", x, saved.h0, saved.c0, w_ih, w_hh, saved.y, saved.gates, saved.cells, gy, ghT, gcT,
             gx, gh0, gc0, gwi, gwh, gbi, gbh, False)
    else:  # an empty batch: the weights' gradients are zero
        for a in (gwi, gwh, gbi, gbh):
            if a is not None:
                a[...] = 0
    return LSTMGrads(gx, gh0, gc0, gwi, gwh, gbi, gbh)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, return_saved: bool = False):
    """One LSTM step: x (B, I), h and c (B, H) -> (h_next, c_next) (torch.nn.LSTMCell's math).

    With ``return_saved=True`` returns ``(h_next, c_next, saved)`` for :func:`lstm_cell_backward`.
    """
    op = "lstm_cell"
    device = device_of(op, x=x, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    convert = _array_api(device, op)[0]
    x, h, c, w_ih, w_hh, b_ih, b_hh = _check_inputs(x, h, c, w_ih, w_hh, b_ih, b_hh, op, seq=False, convert=convert)
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
