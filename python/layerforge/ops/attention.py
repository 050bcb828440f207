"""Scaled-dot-product attention (torch.nn.functional.scaled_dot_product_attention's semantics), forward
and backward, on the CPU FlashAttention-style kernels.

q (..., L, D), k (..., S, D), v (..., S, Dv) with the same leading dims (batch, heads, ...). The mask is
boolean (True = attend) or additive float, broadcastable to (..., L, S); ``is_causal`` masks keys j > i
(top-left aligned, as torch). A fully masked row gives zeros (not NaN). With ``return_saved=True`` the
forward also returns an :class:`SDPASaved` (the output and the per-row log-sum-exp, not the L x S matrix)
for :func:`scaled_dot_product_attention_backward`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _C
from ._common import as_float_array

_OP = "scaled_dot_product_attention"


class SDPASaved(NamedTuple):
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn_mask: np.ndarray | None  # normalised: bool or q's dtype, broadcast to (..., L, S) (a view)
    dropout_p: float
    is_causal: bool
    scale: float | None
    seed: int
    out: np.ndarray  # (..., L, Dv)
    lse: np.ndarray  # (..., L): log-sum-exp of each row's scores (-inf for a fully masked row)


def _shape(s) -> str:
    return "(" + ", ".join(str(v) for v in s) + ("," if len(s) == 1 else "") + ")"


def _to4(a: np.ndarray) -> np.ndarray:
    """(..., R, C) -> (B1, B2, R, C) as a view where numpy can (e.g. q as a transposed view of (B, L, H, D)
    stays a view); a copy when the leading dims cannot be merged or the last dim is strided — the one
    place attention copies."""
    n = a.ndim - 2
    if n == 0:
        a = a[None, None]
    elif n == 1:
        a = a[None]
    elif n > 2:
        a = a.reshape((-1,) + a.shape[-3:])
    if a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def _normalise(q, k, v, attn_mask, dropout_p, is_causal, scale, op):
    q = as_float_array(q, "q", op)
    k = as_float_array(k, "k", op)
    v = as_float_array(v, "v", op)
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim < 2:
            raise ValueError(f"{op}: {name} must have at least 2 dims (..., rows, features), got {_shape(a.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"{op}: q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"{op}: q {_shape(q.shape)} and k {_shape(k.shape)} must have the same last dim D "
                         f"({q.shape[-1]} != {k.shape[-1]})")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"{op}: k {_shape(k.shape)} and v {_shape(v.shape)} must have the same number of keys S "
                         f"({k.shape[-2]} != {v.shape[-2]})")
    lead = q.shape[:-2]
    if k.shape[:-2] != lead or v.shape[:-2] != lead:
        raise ValueError(f"{op}: the leading (batch) dims of q {_shape(q.shape)}, k {_shape(k.shape)} and v "
                         f"{_shape(v.shape)} must be equal")
    if len(lead) > 6:
        raise ValueError(f"{op}: at most 6 leading dims are supported")
    L, S = q.shape[-2], k.shape[-2]
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not (0.0 <= dropout_p < 1.0):
        raise ValueError(f"{op}: dropout_p must be a number in [0, 1), got {dropout_p!r}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)) or not math.isfinite(scale):
            raise ValueError(f"{op}: scale must be a finite number or None, got {scale!r}")
        scale = float(scale)
    mask = None
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{op}: attn_mask and is_causal cannot both be given (as in torch)")
        if isinstance(attn_mask, np.ndarray):
            mask = attn_mask
        else:
            try:
                mask = np.asarray(attn_mask)
            except Exception as e:
                raise TypeError(f"{op}: attn_mask cannot be read as an array: {e}") from None
        if mask.dtype == np.bool_:
            pass
        elif mask.dtype.kind == "f":
            if mask.dtype != q.dtype:
                mask = mask.astype(q.dtype)
        else:
            raise TypeError(f"{op}: attn_mask must be boolean (True = attend) or float (added to the scores), "
                            f"got dtype {mask.dtype}")
        try:
            mask = np.broadcast_to(mask, lead + (L, S))
        except ValueError:
            raise ValueError(f"{op}: attn_mask of shape {_shape(mask.shape)} does not broadcast to "
                             f"{_shape(lead + (L, S))} (q's leading dims, L, S)") from None
    return q, k, v, mask, float(dropout_p), bool(is_causal), scale


def _mask4(mask):
    if mask is None:
        return None
    m = _to4(mask)
    if m.shape[-1] > 1 and m.strides[-1] % m.itemsize:
        m = np.ascontiguousarray(m)
    return m


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 seed=None, return_saved: bool = False):
    """softmax(q k^T * scale + mask) v, with dropout on the attention weights when dropout_p > 0.

    scale defaults to 1/sqrt(D). ``seed`` makes dropout reproducible (a counter-based hash of seed,
    batch, row and column: the same seed gives the same mask at any thread count); without one a seed is
    drawn from numpy's global generator. Returns out (..., L, Dv), or (out, saved) with
    ``return_saved=True``.
    """
    q, k, v, mask, dropout_p, is_causal, scale = _normalise(q, k, v, attn_mask, dropout_p, is_causal, scale, _OP)
    if seed is None:
        seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64)) if dropout_p > 0 else 0
    seed = int(seed) & (2**64 - 1)
    lead, L, Dv = q.shape[:-2], q.shape[-2], v.shape[-1]
    out = np.empty(lead + (L, Dv), q.dtype)
    lse = np.empty(lead + (L,), q.dtype)
    o4 = _to4(out)  # contiguous: always a view
    _C.sdpa_forward(_to4(q), _to4(k), _to4(v), _mask4(mask), dropout_p, is_causal, scale, seed, o4,
                    lse.reshape(o4.shape[:3]))
    if return_saved:
        return out, SDPASaved(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse)
    return out


def scaled_dot_product_attention_backward(grad_out, saved: SDPASaved):
    """Gradients (grad_q, grad_k, grad_v) of :func:`scaled_dot_product_attention` from grad_out
    (..., L, Dv) and the forward's ``saved`` (probabilities recomputed tile by tile from the saved lse)."""
    op = "scaled_dot_product_attention_backward"
    if not isinstance(saved, SDPASaved):
        raise TypeError(f"{op}: saved must be the SDPASaved returned by scaled_dot_product_attention(..., "
                        "return_saved=True)")
    q, k, v, out = saved.q, saved.k, saved.v, saved.out
    g = as_float_array(grad_out, "grad_out", op)
    if g.shape != out.shape:
        raise ValueError(f"{op}: grad_out has shape {_shape(g.shape)}, expected {_shape(out.shape)}")
    if g.dtype != out.dtype:
        raise TypeError(f"{op}: grad_out has dtype {g.dtype} but the forward ran in {out.dtype}")
    gq = np.empty(q.shape, q.dtype)
    gk = np.empty(k.shape, k.dtype)
    gv = np.empty(v.shape, v.dtype)
    o4 = _to4(out)
    _C.sdpa_backward(_to4(q), _to4(k), _to4(v), _mask4(saved.attn_mask), saved.dropout_p, saved.is_causal,
                     saved.scale, saved.seed, o4, saved.lse.reshape(o4.shape[:3]), _to4(g), _to4(gq), _to4(gk),
                     _to4(gv))
    return gq, gk, gv
