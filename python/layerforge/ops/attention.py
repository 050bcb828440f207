"""Scaled-dot-product attention (torch.nn.functional.scaled_dot_product_attention's semantics), forward
and backward, on the FlashAttention-style kernels (CPU: csrc/cpu/attention.cpp; GPU: csrc/cuda/attention.cu).

q (..., L, D), k (..., S, D), v (..., S, Dv) whose leading dims (batch, heads, ...) broadcast against each
other (as torch: a k and v shared by every batch index may have batch size 1); ``enable_gqa=True`` lets
k and v have fewer heads (dim -3) than q, a divisor of q's (grouped-query attention, torch's rule: query
head h reads key/value head h // (Hq / Hk)); gradients come back in each input's own shape. The mask is
boolean (True = attend) or additive float, broadcastable to (..., L, S); ``is_causal`` masks keys j > i
(top-left aligned, as torch). A fully masked row gives zeros (not NaN). With ``return_saved=True`` the
forward also returns an :class:`SDPASaved` (the output and the per-row log-sum-exp, not the L x S matrix)
for :func:`scaled_dot_product_attention_backward`.

GPU arrays (cupy, or anything with ``__cuda_array_interface__``) run on the CUDA kernels, on cupy's current
stream: float32, float64, float16, and bfloat16 given as uint16 arrays of bf16 bit patterns with
``bf16=True`` (cupy has no bfloat16; as for ``ops.matmul``: e.g. ``cupy.asarray(t.view(torch.uint16))`` of a
torch bf16 tensor, or ``layerforge.cuda.to_bfloat16_bits``; the output is uint16 bits too). On the GPU the saved lse is float32 (float64 for float64 inputs),
a float mask is cast to float32 (float64), and the head dims D, Dv are at most 256. A seed drops the same
attention weights on the CPU and on the GPU.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _C
from . import _common
from ._common import as_float_array, device_of

_OP = "scaled_dot_product_attention"


class SDPASaved(NamedTuple):
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn_mask: np.ndarray | None  # normalised: bool or float (q's dtype; on the GPU float32/64), broadcast view
    dropout_p: float
    is_causal: bool
    scale: float | None
    seed: int
    out: np.ndarray  # (..., L, Dv)
    lse: np.ndarray  # (..., L): log-sum-exp of each row's scores (-inf for a fully masked row)
    bf16: bool = False  # GPU only: the uint16 arrays hold bfloat16 bits
    in_shapes: tuple | None = None  # the shapes q, k, v were given in (before broadcasting / head repeat)
    gqa_groups: int = 1  # query heads per key/value head (enable_gqa)


def _shape(s) -> str:
    return "(" + ", ".join(str(v) for v in s) + ("," if len(s) == 1 else "") + ")"


def _to4(a, xp=np):
    """(..., R, C) -> (B1, B2, R, C) as a view where the array library can (e.g. q as a transposed view of
    (B, L, H, D) stays a view); a copy when the leading dims cannot be merged or the last dim is strided —
    the one place attention copies."""
    n = a.ndim - 2
    if n == 0:
        a = a[None, None]
    elif n == 1:
        a = a[None]
    elif n > 2:
        a = a.reshape((-1,) + a.shape[-3:])
    if a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
        a = xp.ascontiguousarray(a)
    return a


class _Gpu(NamedTuple):
    """How a GPU call reads its arrays."""
    xp: object  # the array module (cupy)
    dtypes: tuple  # accepted array dtypes
    bf16: bool  # uint16 arrays hold bfloat16 bits


def _gpu(bf16: bool) -> _Gpu:
    """float16/32/64 arrays, or (bf16=True) uint16 arrays of bfloat16 bits."""
    return _Gpu(_common.cupy_module(), ("uint16",) if bf16 else ("float16", "float32", "float64"), bool(bf16))


def _normalise(q, k, v, attn_mask, dropout_p, is_causal, scale, op, gpu: _Gpu | None = None, enable_gqa=False):
    """The checked arguments (torch's rules, errors naming the argument), q, k and v broadcast to common
    leading dims (k and v head-repeated first under enable_gqa). gpu: None for numpy arrays (a float mask
    takes q's dtype), else how the GPU call reads its arrays (a float mask becomes float32, or float64 for
    float64 inputs). Returns (q, k, v, mask, dropout_p, is_causal, scale, in_shapes, gqa_groups)."""
    if gpu is None:
        xp = np
        q = as_float_array(q, "q", op)
        k = as_float_array(k, "k", op)
        v = as_float_array(v, "v", op)
        mask_dtype = q.dtype
    else:
        xp = gpu.xp
        q = _common.as_cuda_float_array(q, "q", op, gpu.dtypes)
        k = _common.as_cuda_float_array(k, "k", op, gpu.dtypes)
        v = _common.as_cuda_float_array(v, "v", op, gpu.dtypes)
        mask_dtype = np.dtype(np.float64 if q.dtype == np.float64 else np.float32)
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
    in_shapes = (q.shape, k.shape, v.shape)
    groups = 1
    if enable_gqa:
        if min(q.ndim, k.ndim, v.ndim) < 3:
            raise ValueError(f"{op}: enable_gqa=True needs a heads dim: q, k and v of shape (..., heads, rows, "
                             f"features), got q {_shape(q.shape)}, k {_shape(k.shape)}, v {_shape(v.shape)}")
        hq, hk = q.shape[-3], k.shape[-3]
        if v.shape[-3] != hk or hk == 0 or hq % hk:
            raise ValueError(f"{op}: with enable_gqa=True the heads (dim -3) of k {_shape(k.shape)} and v "
                             f"{_shape(v.shape)} must be equal and divide q's {_shape(q.shape)}")
        groups = hq // hk
        if groups > 1:  # torch's repeat_interleave of the key/value heads
            k = xp.repeat(k, groups, axis=-3)
            v = xp.repeat(v, groups, axis=-3)
    try:
        lead = tuple(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    except ValueError:
        raise ValueError(f"{op}: the leading (batch) dims of q {_shape(q.shape)}, k {_shape(k.shape)} and v "
                         f"{_shape(v.shape)} do not broadcast") from None
    if q.shape[:-2] != lead:
        q = xp.broadcast_to(q, lead + q.shape[-2:])
    if k.shape[:-2] != lead:
        k = xp.broadcast_to(k, lead + k.shape[-2:])
    if v.shape[:-2] != lead:
        v = xp.broadcast_to(v, lead + v.shape[-2:])
    if len(lead) > 6:
        raise ValueError(f"{op}: at most 6 leading dims are supported")
    if gpu is not None and max(q.shape[-1], v.shape[-1]) > 256:
        raise ValueError(f"{op}: on the GPU the head dims D and Dv are at most 256, got q {_shape(q.shape)} and v "
                         f"{_shape(v.shape)}")
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
        if isinstance(attn_mask, xp.ndarray):
            mask = attn_mask
        else:
            try:
                mask = xp.asarray(attn_mask)
            except Exception as e:
                raise TypeError(f"{op}: attn_mask cannot be read as an array: {e}") from None
        if mask.dtype == np.bool_:
            pass
        elif mask.dtype.kind == "f":
            if mask.dtype != mask_dtype:
                mask = mask.astype(mask_dtype)
        else:
            raise TypeError(f"{op}: attn_mask must be boolean (True = attend) or float (added to the scores), "
                            f"got dtype {mask.dtype}")
        try:
            mask = xp.broadcast_to(mask, lead + (L, S))
        except ValueError:
            raise ValueError(f"{op}: attn_mask of shape {_shape(mask.shape)} does not broadcast to "
                             f"{_shape(lead + (L, S))} (q's leading dims, L, S)") from None
    return q, k, v, mask, float(dropout_p), bool(is_causal), scale, in_shapes, groups


def _reduce_grad(g, shape, groups: int = 1):
    """The gradient g (lead..., rows, features) of an input given in ``shape`` and broadcast to lead (and,
    for k and v under enable_gqa, head-repeated ``groups`` times first): summed back to ``shape``."""
    rep = tuple(shape)
    if groups > 1:
        rep = rep[:-3] + (rep[-3] * groups,) + rep[-2:]
    extra = g.ndim - len(rep)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, rep)) if a != b)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if groups > 1:
        g = g.reshape(g.shape[:-3] + (g.shape[-3] // groups, groups) + g.shape[-2:]).sum(axis=-3)
    return g


def _empty_case(lead, L, S, D, Dv) -> bool:
    """No work for the kernels: an empty output, or no keys (the output is then zeros, as torch)."""
    return 0 in lead or L == 0 or Dv == 0 or S == 0


def _mask4(mask, xp=np):
    if mask is None:
        return None
    m = _to4(mask, xp)
    if m.shape[-1] > 1 and m.strides[-1] % m.itemsize:
        m = xp.ascontiguousarray(m)
    return m


def _seed(seed, dropout_p: float) -> int:
    if seed is None:
        seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64)) if dropout_p > 0 else 0
    return int(seed) & (2**64 - 1)


def _check_grad_out(g, out, op) -> None:
    if g.shape != out.shape:
        raise ValueError(f"{op}: grad_out has shape {_shape(g.shape)}, expected {_shape(out.shape)}")
    if g.dtype != out.dtype:
        raise TypeError(f"{op}: grad_out has dtype {g.dtype} but the forward ran in {out.dtype}")


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 seed=None, return_saved: bool = False, *, bf16: bool = False,
                                 enable_gqa: bool = False):
    """softmax(q k^T * scale + mask) v, with dropout on the attention weights when dropout_p > 0.

    scale defaults to 1/sqrt(D). ``seed`` makes dropout reproducible (a counter-based hash of seed,
    batch, row and column: the same seed gives the same mask at any thread count and on either device);
    without one a seed is drawn from numpy's global generator. Returns out (..., L, Dv), or (out, saved)
    with ``return_saved=True``. GPU arrays run on the GPU, where ``bf16=True`` says that uint16 arrays hold
    bfloat16 bits. ``enable_gqa``: k and v may have fewer heads than q (see the module docstring).
    """
    if device_of(_OP, q=q, k=k, v=v, attn_mask=attn_mask) == "cuda":
        return _sdpa_cuda(q, k, v, attn_mask, dropout_p, is_causal, scale, seed, return_saved, bf16, enable_gqa)
    if bf16:
        raise TypeError(f"{_OP}: bf16=True (uint16 arrays holding bfloat16 bits) runs on the GPU only; numpy arrays "
                        "run in their own dtype (float32 or float64)")
    q, k, v, mask, dropout_p, is_causal, scale, in_shapes, groups = _normalise(
        q, k, v, attn_mask, dropout_p, is_causal, scale, _OP, enable_gqa=enable_gqa)
    seed = _seed(seed, dropout_p)
    lead, L, Dv = q.shape[:-2], q.shape[-2], v.shape[-1]
    out = np.empty(lead + (L, Dv), q.dtype)
    lse = np.empty(lead + (L,), q.dtype)
    if _empty_case(lead, L, k.shape[-2], q.shape[-1], Dv):
        out[...] = 0
        lse[...] = -np.inf
    else:
        o4 = _to4(out)  # contiguous: always a view
        _C.sdpa_forward(_to4(q), _to4(k), _to4(v), _mask4(mask), dropout_p, is_causal, scale, seed, o4,
                        lse.reshape(o4.shape[:3]))
    if return_saved:
        return out, SDPASaved(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, False, in_shapes, groups)
    return out


def scaled_dot_product_attention_backward(grad_out, saved: SDPASaved):
    """Gradients (grad_q, grad_k, grad_v) of :func:`scaled_dot_product_attention` from grad_out
    (..., L, Dv) and the forward's ``saved`` (probabilities recomputed tile by tile from the saved lse).
    A forward that ran on the GPU is differentiated on the GPU (grad_out must be a GPU array then)."""
    op = "scaled_dot_product_attention_backward"
    if not isinstance(saved, SDPASaved):
        raise TypeError(f"{op}: saved must be the SDPASaved returned by scaled_dot_product_attention(..., "
                        "return_saved=True)")
    if device_of(op, grad_out=grad_out, saved=saved.q) == "cuda":
        return _sdpa_backward_cuda(grad_out, saved, op)
    q, k, v, out = saved.q, saved.k, saved.v, saved.out
    g = as_float_array(grad_out, "grad_out", op)
    _check_grad_out(g, out, op)
    gq = np.empty(q.shape, q.dtype)
    gk = np.empty(k.shape, k.dtype)
    gv = np.empty(v.shape, v.dtype)
    if _empty_case(q.shape[:-2], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]):
        for a in (gq, gk, gv):  # the output is empty or constant zeros
            a[...] = 0
    else:
        o4 = _to4(out)
        _C.sdpa_backward(_to4(q), _to4(k), _to4(v), _mask4(saved.attn_mask), saved.dropout_p, saved.is_causal,
                         saved.scale, saved.seed, o4, saved.lse.reshape(o4.shape[:3]), _to4(g), _to4(gq),
                         _to4(gk), _to4(gv))
    return _saved_shapes(saved, gq, gk, gv)


def _saved_shapes(saved: SDPASaved, gq, gk, gv):
    """Gradients reduced to the shapes the forward's inputs were given in (broadcasting, enable_gqa)."""
    if saved.in_shapes is None:
        return gq, gk, gv
    qs, ks, vs = saved.in_shapes
    return (_reduce_grad(gq, qs), _reduce_grad(gk, ks, saved.gqa_groups), _reduce_grad(gv, vs, saved.gqa_groups))


# ---------------------------------------------------------------- GPU
# cupy, the CUDA module and the stream handle come from _common's functions looked up at call time (not
# names imported here), so the CPU-only tests can stand in for them (tests/test_cuda_attention.py).

def _sdpa_cuda(q, k, v, attn_mask, dropout_p, is_causal, scale, seed, return_saved, bf16, enable_gqa=False):
    gpu = _gpu(bf16)
    kernels = _common.cuda_kernels(_OP)
    cp = gpu.xp
    q, k, v, mask, dropout_p, is_causal, scale, in_shapes, groups = _normalise(
        q, k, v, attn_mask, dropout_p, is_causal, scale, _OP, gpu, enable_gqa)
    # broadcast inputs as dense arrays: the GPU kernels have not been run on zero strides
    q, k, v = (a if a.shape == s else cp.ascontiguousarray(a) for a, s in zip((q, k, v), in_shapes))
    seed = _seed(seed, dropout_p)
    lead, L, Dv = q.shape[:-2], q.shape[-2], v.shape[-1]
    out = cp.empty(lead + (L, Dv), q.dtype)
    lse = cp.empty(lead + (L,), np.float64 if q.dtype == np.float64 else np.float32)
    if _empty_case(lead, L, k.shape[-2], q.shape[-1], Dv):
        out[...] = 0
        lse[...] = -np.inf
    else:
        o4 = _to4(out, cp)
        kernels.sdpa_forward(_to4(q, cp), _to4(k, cp), _to4(v, cp), _mask4(mask, cp), dropout_p, is_causal, scale,
                             seed, o4, lse.reshape(o4.shape[:3]), gpu.bf16, _common.current_stream_handle())
    if return_saved:
        return out, SDPASaved(q, k, v, mask, dropout_p, is_causal, scale, seed, out, lse, gpu.bf16, in_shapes,
                              groups)
    return out


def _sdpa_backward_cuda(grad_out, saved: SDPASaved, op):
    gpu = _gpu(saved.bf16)
    kernels = _common.cuda_kernels(op)
    cp = gpu.xp
    q, k, v, out = saved.q, saved.k, saved.v, saved.out
    g = _common.as_cuda_float_array(grad_out, "grad_out", op, gpu.dtypes)
    _check_grad_out(g, out, op)
    gq = cp.empty(q.shape, q.dtype)
    gk = cp.empty(k.shape, k.dtype)
    gv = cp.empty(v.shape, v.dtype)
    if _empty_case(q.shape[:-2], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]):
        for a in (gq, gk, gv):
            a[...] = 0
    else:
        o4 = _to4(out, cp)
        kernels.sdpa_backward(_to4(q, cp), _to4(k, cp), _to4(v, cp), _mask4(saved.attn_mask, cp), saved.dropout_p,
                              saved.is_causal, saved.scale, saved.seed, o4, saved.lse.reshape(o4.shape[:3]),
                              _to4(g, cp), _to4(gq, cp), _to4(gk, cp), _to4(gv, cp), gpu.bf16,
                              _common.current_stream_handle())
    return _saved_shapes(saved, gq, gk, gv)
