"""MultiheadAttention, TransformerEncoderLayer and TransformerEncoder with torch.nn's constructor arguments,
parameter/submodule names, default initialisation and mask conventions, so torch state_dicts load as is.

Mask conventions (torch's, which differ from scaled_dot_product_attention's boolean one):
``key_padding_mask`` (B, S): True = the key is padding, IGNORE it; ``attn_mask`` (L, S) or (B*heads, L, S):
bool True = NOT allowed to attend, float = added to the scores. Internally both are merged into one mask
broadcastable to (B, heads, L, S): boolean "True = attend" when both are boolean (what the fused kernel
reads without an additive pass), else additive float (-inf where masked).
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from . import functional as F
from . import init
from ..tensor import Tensor, _t
from .layers import Dropout, LayerNorm, Linear, _empty, _shape
from .module import Module, ModuleList

__all__ = ["MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder"]


def _name(layer):
    """The layer as errors name it: its one-line repr without the submodule tree."""
    return f"{type(layer).__name__}({layer.extra_repr()})"


def _mask_array(mask, name, layer):
    if mask is None:
        return None
    a = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if a.dtype != np.bool_ and a.dtype.kind != "f":
        raise TypeError(f"{_name(layer)}: only bool and floating types of {name} are supported, got {a.dtype}")
    return a


def _additive(mask, dtype):
    """A torch-convention mask (bool True = masked, or float added) as an additive float mask."""
    if mask.dtype == np.bool_:
        return np.where(mask, dtype.type(-np.inf), dtype.type(0))
    return mask.astype(dtype, copy=False)


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention. query (L, B, E), key (S, B, kdim), value (S, B, vdim) ((B, L, E) ...
    with batch_first; unbatched (L, E) ...). Returns (attn_output (L, B, E), attn_weights (B, L, S) averaged
    over heads, (B, heads, L, S) with average_attn_weights=False, or None with need_weights=False).

    need_weights=False runs the fused FlashAttention kernel (``F.scaled_dot_product_attention``, never an
    L x S matrix); need_weights=True computes the weights explicitly (scores, softmax, dropout, weights @ v)
    as torch does. add_bias_kv and add_zero_attn are not supported (only False)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        for name, v in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"MultiheadAttention: {name} must be an integer greater than 0, got {v!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim must be divisible by num_heads (embed_dim={embed_dim}, "
                             f"num_heads={num_heads})")
        if add_bias_kv or add_zero_attn:
            raise ValueError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported by layerforge "
                             "(only False)")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.add_zero_attn = False
        self.bias_k = self.bias_v = None
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _empty(3 * E, E, dtype=dtype)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = _empty(E, E, dtype=dtype)
            self.k_proj_weight = _empty(E, self.kdim, dtype=dtype)
            self.v_proj_weight = _empty(E, self.vdim, dtype=dtype)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = _empty(3 * E, dtype=dtype)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dtype)
        self._reset_parameters()

    def _reset_parameters(self):
        # torch: xavier_uniform_ on the input projections, zero biases; out_proj.weight keeps Linear's init
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    # ---- checks -----------------------------------------------------------------------------------------
    def _check_shapes(self, q, k, v, kpm, am):
        """Raise ValueError naming the layer and the shapes; return whether the input is batched."""
        nd = q.ndim
        if nd not in (2, 3) or k.ndim != nd or v.ndim != nd:
            raise ValueError(f"{_name(self)}: query, key and value must all be 3-D (batched) or all 2-D (unbatched), "
                             f"got {_shape(q.shape)}, {_shape(k.shape)}, {_shape(v.shape)}")
        for name, t, want in (("query", q, self.embed_dim), ("key", k, self.kdim), ("value", v, self.vdim)):
            if t.shape[-1] != want:
                raise ValueError(f"{_name(self)}: expected {name} with last dim {want}, got {name} of shape "
                                 f"{_shape(t.shape)}")
        if k.shape[:-1] != v.shape[:-1]:
            raise ValueError(f"{_name(self)}: key {_shape(k.shape)} and value {_shape(v.shape)} must have the same "
                             "sequence and batch dims")
        batched = nd == 3
        b_axis = (0 if self.batch_first else 1) if batched else None
        s_axis = (1 if self.batch_first else 0) if batched else 0
        if batched and q.shape[b_axis] != k.shape[b_axis]:
            raise ValueError(f"{_name(self)}: query {_shape(q.shape)} and key {_shape(k.shape)} have different batch "
                             "sizes")
        B = q.shape[b_axis] if batched else 1
        L, S = q.shape[1 if (batched and self.batch_first) else 0], k.shape[s_axis]
        if kpm is not None:
            want = (B, S) if batched else (S,)
            if kpm.shape != want:
                raise ValueError(f"{_name(self)}: expected key_padding_mask of shape {_shape(want)} for query "
                                 f"{_shape(q.shape)} and key {_shape(k.shape)}, got {_shape(kpm.shape)}")
        if am is not None:
            want3 = (B * self.num_heads, L, S)
            if am.shape not in ((L, S), want3):
                raise ValueError(f"{_name(self)}: expected attn_mask of shape {_shape((L, S))} or {_shape(want3)} for "
                                 f"query {_shape(q.shape)} and key {_shape(k.shape)}, got {_shape(am.shape)}")
        return batched

    # ---- forward --------------------------------------------------------------------------------------
    def _in_projection(self, query, key, value, same_qkv):
        """q (L, B, E), k (S, B, E), v (S, B, E). Self-attention (query is key is value) is one GEMM on the
        packed (3E, E) weight, then split, as torch."""
        E, b = self.embed_dim, self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if not self._qkv_same_embed_dim:
            return (F.linear(query, self.q_proj_weight, bq), F.linear(key, self.k_proj_weight, bk),
                    F.linear(value, self.v_proj_weight, bv))
        w = self.in_proj_weight
        if same_qkv:
            qkv = F.linear(query, w, b)
            return qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]
        return F.linear(query, w[:E], bq), F.linear(key, w[E:2 * E], bk), F.linear(value, w[2 * E:], bv)

    def _merged_mask(self, am, kpm, B, dtype, additive):
        """attn_mask (L, S) / (B*heads, L, S) and key_padding_mask (B, S) (torch conventions) -> one mask
        broadcastable to (B, heads, L, S): additive float when asked or when either is float, else bool
        True = attend (sdpa's convention)."""
        if am is not None:
            am = am[None, None] if am.ndim == 2 else am.reshape((B, self.num_heads) + am.shape[1:])
        if kpm is not None:
            kpm = kpm[:, None, None, :]
        masks = [m for m in (am, kpm) if m is not None]
        if not masks:
            return None
        if not additive and all(m.dtype == np.bool_ for m in masks):
            return ~masks[0] if len(masks) == 1 else ~(masks[0] | masks[1])
        out = _additive(masks[0], dtype)
        return out if len(masks) == 1 else out + _additive(masks[1], dtype)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        same_qkv = key is query and value is query
        query, key, value = _t(query), _t(key), _t(value)
        kpm = _mask_array(key_padding_mask, "key_padding_mask", self)
        am = _mask_array(attn_mask, "attn_mask", self)
        batched = self._check_shapes(query, key, value, kpm, am)
        if is_causal and am is None:
            raise ValueError(f"{_name(self)}: is_causal=True needs attn_mask (is_causal is a hint that attn_mask "
                             "is the causal mask, as in torch)")
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            kpm = None if kpm is None else kpm[None]
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        L, B, E = query.shape
        S, H, hd = key.shape[0], self.num_heads, self.head_dim
        q, k, v = self._in_projection(query, key, value, same_qkv)
        # (L, B, E) -> (B, heads, L, head_dim): a view the attention kernel reads with its strides
        q, k, v = (t.reshape(t.shape[0], B, H, hd).permute(1, 2, 0, 3) for t in (q, k, v))
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            mask = self._merged_mask(am, kpm, B, q.dtype, additive=True)
            scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)  # (B, heads, L, S)
            if mask is not None:
                scores = scores + Tensor._wrap(mask)
            weights = F.softmax(scores, dim=-1)
            if dropout_p > 0:
                weights = F.dropout(weights, dropout_p)  # torch returns the weights after dropout too
            out = weights @ v
        else:
            causal = bool(is_causal) and kpm is None  # torch: the hint is used only when nothing is merged in
            mask = None if causal else self._merged_mask(am, kpm, B, q.dtype, additive=False)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
        out = out.permute(2, 0, 1, 3).reshape(L, B, E)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return out.squeeze(1), None if weights is None else weights.squeeze(0)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(Module):
    """torch.nn.TransformerEncoderLayer: self-attention then feed-forward (linear1 -> activation -> dropout
    -> linear2), each with dropout and a residual connection, LayerNorm after (post-norm) or before
    (norm_first). Submodule names as torch's, so its state_dict loads as is."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ValueError(f"TransformerEncoderLayer: activation should be relu/gelu, not {activation}")
            activation = _ACTIVATIONS[activation]
        elif not callable(activation):
            raise ValueError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a callable, got "
                             f"{activation!r}")
        self.activation = activation  # a Module (e.g. nn.GELU()) is registered as a submodule, as in torch

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = _t(src)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))


def _is_causal_mask(mask, size):
    """torch's _detect_is_causal_mask: is ``mask`` the float (size, size) mask with -inf above the diagonal?"""
    a = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if a.shape != (size, size) or a.dtype.kind != "f":
        return False
    causal = np.triu(np.full((size, size), -np.inf), 1)
    return bool(np.array_equal(a, causal))


class TransformerEncoder(Module):
    """torch.nn.TransformerEncoder: num_layers deep copies of encoder_layer (``layers.0`` ...), then the
    optional ``norm``."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(int(num_layers))])
        self.num_layers = int(num_layers)
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = _t(src)
        if is_causal is None:
            first = self.layers[0] if len(self.layers) else None
            seq_axis = 1 if (first is not None and first.self_attn.batch_first and x.ndim == 3) else 0
            is_causal = mask is not None and _is_causal_mask(mask, x.shape[seq_axis])
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x
