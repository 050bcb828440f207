"""layerforge.ops.scaled_dot_product_attention (forward and backward) against softmax(q k^T * scale +
mask) v written plainly in float64, finite differences, and torch's SDPA where installed."""
import numpy as np
import pytest

import layerforge
from layerforge import ops
from conftest import rel_err

sdpa = ops.scaled_dot_product_attention
sdpa_bwd = ops.scaled_dot_product_attention_backward


def ref_sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    """float64: out, and a closure computing (dq, dk, dv) from dout (fully masked rows give 0)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    L, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    s = np.einsum("...ld,...sd->...ls", q, k) * scale
    allowed = np.ones(s.shape, bool)
    if is_causal:
        allowed &= np.tril(np.ones((L, S), bool))
    if mask is not None:
        if mask.dtype == np.bool_:
            allowed &= np.broadcast_to(mask, s.shape)
        else:
            s = s + mask.astype(np.float64)
    s = np.where(allowed, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = e.sum(-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    out = p @ v

    def backward(dout):
        dout = np.asarray(dout, np.float64)
        dv = np.swapaxes(p, -1, -2) @ dout
        dp = dout @ np.swapaxes(v, -1, -2)
        ds = p * (dp - np.sum(dp * p, -1, keepdims=True))
        return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, dv

    return out, backward


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


CASES = [  # lead, L, S, D, Dv
    ((), 1, 1, 1, 1),
    ((2, 3), 7, 9, 5, 4),
    ((1, 2), 65, 130, 13, 17),
    ((3,), 130, 70, 8, 8),
    ((2, 1, 2), 20, 33, 16, 24),
    ((1,), 80, 509, 24, 20),  # several key tiles of the float forward (252) with a partial last; 80 = 48 + 32
    ((2,), 49, 253, 64, 64),  # one key past a tile, one query past a tile
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lead,L,S,D,Dv", CASES)
def test_forward_backward_match_reference(cpu_path, rng, dtype, causal, lead, L, S, D, Dv):
    q, k, v = rand(rng, lead + (L, D), dtype), rand(rng, lead + (S, D), dtype), rand(rng, lead + (S, Dv), dtype)
    out, saved = sdpa(q, k, v, is_causal=causal, return_saved=True)
    ref, rb = ref_sdpa(q, k, v, is_causal=causal)
    assert out.shape == lead + (L, Dv) and out.dtype == dtype and saved.lse.shape == lead + (L,)
    tol = 3e-6 if dtype == np.float32 else 1e-12
    assert rel_err(out, ref) < tol
    g = rand(rng, out.shape, dtype)
    got = sdpa_bwd(g, saved)
    for a, b in zip(got, rb(g)):
        assert a.dtype == dtype
        assert rel_err(a, b) < tol * 10


def test_scale_and_causal_both_sides(cpu_path, rng):
    for L, S in ((5, 12), (12, 5)):  # causal with L != S: top-left aligned
        q, k, v = rand(rng, (2, L, 6)), rand(rng, (2, S, 6)), rand(rng, (2, S, 3))
        out, saved = sdpa(q, k, v, is_causal=True, scale=0.3, return_saved=True)
        ref, rb = ref_sdpa(q, k, v, is_causal=True, scale=0.3)
        assert rel_err(out, ref) < 1e-12
        g = rand(rng, out.shape)
        for a, b in zip(sdpa_bwd(g, saved), rb(g)):
            assert rel_err(a, b) < 1e-11


MASK_SHAPES = [(), (40,), (1, 40), (33, 1), (33, 40), (3, 33, 40), (2, 1, 33, 40), (2, 3, 1, 40), (1, 3, 33, 1)]


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_every_broadcast_shape(cpu_path, rng, kind):
    lead, L, S, D, Dv = (2, 3), 33, 40, 12, 10
    q, k, v = rand(rng, lead + (L, D)), rand(rng, lead + (S, D)), rand(rng, lead + (S, Dv))
    g = rand(rng, lead + (L, Dv))
    for ms in MASK_SHAPES:
        if kind == "bool":
            mask = rng.random(ms) > 0.3
        else:
            mask = rng.standard_normal(ms) * 2.0
            mask = np.where(rng.random(ms) > 0.8, -np.inf, mask)
        out, saved = sdpa(q, k, v, attn_mask=mask, return_saved=True)
        ref, rb = ref_sdpa(q, k, v, mask=mask)
        assert np.all(np.isfinite(out))
        assert rel_err(out, ref) < 1e-12, ms
        for a, b in zip(sdpa_bwd(g, saved), rb(g)):
            assert np.all(np.isfinite(a))
            assert rel_err(a, b) < 1e-11, ms


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masks_across_key_tiles(cpu_path, rng, dtype):
    # the forward's key tiles are 252 (float, AVX2) or 256 keys: masks and causal across several of them
    B, L, S, D = 2, 61, 700, 16
    q, k, v = rand(rng, (B, L, D), dtype), rand(rng, (B, S, D), dtype), rand(rng, (B, S, 12), dtype)
    g = rand(rng, (B, L, 12), dtype)
    pad = np.ones((B, 1, S), bool)
    pad[0, :, 260:] = False  # a key padding mask ending inside the second tile
    pad[1, :, :5] = False
    fmask = (rng.standard_normal((L, S)) * 3.0).astype(dtype)
    fmask[:, 400:420] = -np.inf
    tol = 3e-6 if dtype == np.float32 else 1e-12
    for mask, causal in ((pad, False), (fmask, False), (None, True)):
        out, saved = sdpa(q, k, v, attn_mask=mask, is_causal=causal, return_saved=True)
        ref, rb = ref_sdpa(q, k, v, mask=mask, is_causal=causal)
        assert rel_err(out, ref) < tol
        for a, b in zip(sdpa_bwd(g, saved), rb(g)):
            assert rel_err(a, b) < tol * 10


@pytest.mark.parametrize("S", [256, 257, 12007])
def test_key_tiling_of_long_sequences(cpu_path, rng, S):
    # the forward splits S into ceil(S / 256) even key tiles rounded up to the register tile (S = 12007: the
    # rounding leaves one tile fewer than the first estimate)
    q, k, v = rand(rng, (2, 37, 8), np.float32), rand(rng, (2, S, 8), np.float32), rand(rng, (2, S, 3), np.float32)
    out, saved = sdpa(q, k, v, return_saved=True)
    ref, rb = ref_sdpa(q, k, v)
    assert rel_err(out, ref) < 3e-6
    g = rand(rng, out.shape, np.float32)
    for a, b in zip(sdpa_bwd(g, saved), rb(g)):
        assert rel_err(a, b) < 3e-5


def test_float32_scores_over_a_wide_range(cpu_path, rng):
    # scores spread over +-100: probabilities from 1 down to below float's normal range, where the base-2
    # exponential's polynomial and its cut-off at 2^-125 both matter
    B, L, S, D = 3, 40, 300, 16
    q, k, v = rand(rng, (B, L, D)), rand(rng, (B, S, D)), rand(rng, (B, S, 8))
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    for scale in (0.05, 1.0, 6.0):
        out, saved = sdpa(q32, k32, v32, scale=scale, return_saved=True)
        ref, rb = ref_sdpa(q32, k32, v32, scale=scale)
        assert rel_err(out, ref) < 3e-6, scale
        s = np.einsum("bld,bsd->bls", q32.astype(np.float64), k32.astype(np.float64)) * scale
        m = s.max(-1)
        lse_ref = m + np.log(np.exp(s - m[..., None]).sum(-1))
        assert np.max(np.abs(saved.lse - lse_ref) / np.maximum(1.0, np.abs(lse_ref))) < 2e-6, scale
        g = rand(rng, out.shape).astype(np.float32)
        for a, b in zip(sdpa_bwd(g, saved), rb(g)):
            assert rel_err(a, b) < 3e-5, scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_rows_give_zeros(cpu_path, rng, dtype):
    L, S = 6, 150
    q, k, v = rand(rng, (2, L, 8), dtype), rand(rng, (2, S, 8), dtype), rand(rng, (2, S, 5), dtype)
    mask = rng.random((2, L, S)) > 0.5
    mask[0, 2] = False
    mask[1, 5] = False
    fmask = np.where(mask, 0.0, -np.inf).astype(dtype)
    for m in (mask, fmask):
        out, saved = sdpa(q, k, v, attn_mask=m, return_saved=True)
        assert np.all(np.isfinite(out))
        assert np.all(out[0, 2] == 0) and np.all(out[1, 5] == 0)
        assert saved.lse[0, 2] == -np.inf
        ref, rb = ref_sdpa(q, k, v, mask=m)
        assert rel_err(out, ref) < (3e-6 if dtype == np.float32 else 1e-12)
        gq, gk, gv = sdpa_bwd(np.ones_like(out), saved)
        assert np.all(np.isfinite(gq)) and np.all(np.isfinite(gk)) and np.all(np.isfinite(gv))
        assert np.all(gq[0, 2] == 0)


def test_non_contiguous_inputs(cpu_path, rng):
    B, L, H, D, S, Dv = 2, 19, 3, 10, 23, 6
    qb = rand(rng, (B, L, H, D))
    q = qb.transpose(0, 2, 1, 3)  # (B, H, L, D) view: leading dims not mergeable
    k = rand(rng, (B, S, H, D)).transpose(0, 2, 1, 3)
    v = rand(rng, (B, H, S, 2 * Dv))[..., ::2]  # strided last dim (copied)
    g = rand(rng, (B, L, H, Dv)).transpose(0, 2, 1, 3)
    mask = (rng.random((B, 1, S, L)) > 0.2).transpose(0, 1, 3, 2)
    out, saved = sdpa(q, k, v, attn_mask=mask, return_saved=True)
    ref, rb = ref_sdpa(q, k, v, mask=mask)
    assert rel_err(out, ref) < 1e-12
    got = sdpa_bwd(g, saved)
    for a, b in zip(got, rb(g)):
        assert rel_err(a, b) < 1e-11
    assert got[0].shape == q.shape


def test_finite_differences_with_dropout(cpu_path, rng):
    lead, L, S, D, Dv = (2,), 5, 7, 3, 4
    q, k, v = rand(rng, lead + (L, D)), rand(rng, lead + (S, D)), rand(rng, lead + (S, Dv))
    mask = rng.standard_normal((L, S))
    g = rand(rng, lead + (L, Dv))
    for p in (0.0, 0.3):
        out, saved = sdpa(q, k, v, attn_mask=mask, dropout_p=p, seed=1234, return_saved=True)
        got = sdpa_bwd(g, saved)
        eps = 1e-6
        for a, ga in zip((q, k, v), got):
            num = np.zeros_like(a)
            for j in np.ndindex(a.shape):
                o = a[j]
                a[j] = o + eps
                lp = np.sum(sdpa(q, k, v, attn_mask=mask, dropout_p=p, seed=1234) * g)
                a[j] = o - eps
                lm = np.sum(sdpa(q, k, v, attn_mask=mask, dropout_p=p, seed=1234) * g)
                a[j] = o
                num[j] = (lp - lm) / (2 * eps)
            assert rel_err(ga, num) < 1e-7


def test_dropout_reproducible(rng):
    q, k, v = rand(rng, (2, 2, 40, 8), np.float32), rand(rng, (2, 2, 50, 8), np.float32), rand(rng, (2, 2, 50, 8), np.float32)
    before = layerforge.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            layerforge.set_num_threads(n)
            outs.append(sdpa(q, k, v, dropout_p=0.4, seed=7))
        assert np.array_equal(outs[0], outs[1])
    finally:
        layerforge.set_num_threads(before)
    assert not np.array_equal(outs[0], sdpa(q, k, v, dropout_p=0.4, seed=8))
    assert not np.allclose(outs[0], sdpa(q, k, v))
    # the expectation of dropout is the undropped output
    acc = np.mean([sdpa(q, k, v, dropout_p=0.4, seed=s) for s in range(200)], axis=0)
    assert rel_err(acc, sdpa(q, k, v)) < 0.1


def test_threads_agree(threads, rng):
    # one batch index (chunked backward with private dQ buffers) and many (one thread per batch index)
    for lead in ((1,), (3, 2)):
        q, k, v = rand(rng, lead + (150, 16)), rand(rng, lead + (200, 16)), rand(rng, lead + (200, 8))
        out, saved = sdpa(q, k, v, is_causal=True, return_saved=True)
        ref, rb = ref_sdpa(q, k, v, is_causal=True)
        assert rel_err(out, ref) < 1e-12
        g = rand(rng, out.shape)
        for a, b in zip(sdpa_bwd(g, saved), rb(g)):
            assert rel_err(a, b) < 1e-11


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["plain", "causal", "bool_mask", "float_mask"])
def test_against_torch(cpu_path, rng, dtype, mode):
    torch = pytest.importorskip("torch")
    B, H, L, S, D = 2, 3, 70, 90, 24
    q, k, v = rand(rng, (B, H, L, D), dtype), rand(rng, (B, H, S, D), dtype), rand(rng, (B, H, S, D), dtype)
    mask = None
    if mode == "bool_mask":
        mask = rng.random((B, 1, 1, S)) > 0.3  # padding mask
    elif mode == "float_mask":
        mask = rand(rng, (L, S), dtype)
    causal = mode == "causal"
    out, saved = sdpa(q, k, v, attn_mask=mask, is_causal=causal, return_saved=True)
    qt, kt, vt = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    ot = torch.nn.functional.scaled_dot_product_attention(
        qt, kt, vt, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=causal)
    g = rand(rng, out.shape, dtype)
    ot.backward(torch.from_numpy(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_err(out, ot.detach().numpy()) < tol
    for a, t in zip(sdpa_bwd(g, saved), (qt, kt, vt)):
        assert rel_err(a, t.grad.numpy()) < tol * 10


def test_bad_inputs(rng):
    q, k, v = rand(rng, (2, 5, 8)), rand(rng, (2, 6, 8)), rand(rng, (2, 6, 4))
    with pytest.raises(ValueError, match=r"same last dim D.*\(8 != 7\)"):
        sdpa(q, k[..., :7], v)
    with pytest.raises(ValueError, match=r"number of keys S.*\(6 != 5\)"):
        sdpa(q, k, v[:, :5])
    with pytest.raises(ValueError, match=r"does not broadcast to \(2, 5, 6\)"):
        sdpa(q, k, v, attn_mask=np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="is_causal"):
        sdpa(q, k, v, attn_mask=np.ones((5, 6), bool), is_causal=True)
    with pytest.raises(ValueError, match=r"leading \(batch\) dims .* do not broadcast"):
        sdpa(q, np.concatenate([k, k[:1]]), np.concatenate([v, v[:1]]))
    q4, k4 = rand(rng, (2, 6, 5, 8)), rand(rng, (2, 4, 6, 8))
    with pytest.raises(ValueError, match=r"enable_gqa.*divide q's \(2, 6, 5, 8\)"):
        sdpa(q4, k4, k4, enable_gqa=True)
    with pytest.raises(ValueError, match=r"enable_gqa.*must be equal"):
        sdpa(q4, k4[:, :3], k4[:, :2], enable_gqa=True)
    with pytest.raises(ValueError, match="enable_gqa=True needs a heads dim"):
        sdpa(q4[0, 0], k4[0, 0], k4[0, 0], enable_gqa=True)
    with pytest.raises(ValueError, match="dropout_p"):
        sdpa(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="at least 2 dims"):
        sdpa(q[0, 0], k, v)
    with pytest.raises(TypeError, match="dtype"):
        sdpa(q.astype(np.float32), k, v)
    with pytest.raises(TypeError, match="int64"):
        sdpa(q.astype(np.int64), k, v)
    with pytest.raises(TypeError, match="float16"):
        sdpa(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16))
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=np.ones((5, 6), np.int32))
    out, saved = sdpa(q, k, v, return_saved=True)
    with pytest.raises(ValueError, match="grad_out"):
        sdpa_bwd(out[:, :2], saved)
    with pytest.raises(TypeError, match="saved"):
        sdpa_bwd(out, None)


def _expand_ref(q, k, v, groups=1, **kw):
    """The float64 reference on explicitly broadcast (and head-repeated) inputs; its gradients summed back
    to the inputs' shapes by hand."""
    if groups > 1:
        k, v = np.repeat(k, groups, axis=-3), np.repeat(v, groups, axis=-3)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qb, kb, vb = (np.broadcast_to(a, lead + a.shape[-2:]) for a in (q, k, v))
    out, back = ref_sdpa(qb, kb, vb, **kw)

    def backward(g, shapes):
        grads = []
        for gi, shape, grp in zip(back(g), shapes, (1, groups, groups)):
            rep = shape[:-3] + (shape[-3] * grp,) + shape[-2:] if grp > 1 else shape
            while gi.ndim > len(rep):
                gi = gi.sum(0)
            for ax, (a, b) in enumerate(zip(gi.shape, rep)):
                if a != b:
                    gi = gi.sum(ax, keepdims=True)
            if grp > 1:
                gi = sum(gi[..., j::grp, :, :] for j in range(grp))  # heads h*grp + j belong to kv head h
            grads.append(gi)
        return grads

    return out, backward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qs,ks,vs,groups,causal", [
    ((2, 3, 5, 8), (1, 3, 7, 8), (1, 3, 7, 8), 1, False),   # k, v shared over the batch
    ((2, 3, 5, 8), (2, 1, 7, 8), (2, 1, 7, 6), 1, True),    # ... over the heads
    ((1, 3, 17, 8), (2, 3, 7, 8), (2, 3, 7, 8), 1, False),  # q shared
    ((2, 3, 5, 8), (3, 7, 8), (3, 7, 8), 1, False),         # fewer leading dims
    ((2, 3, 5, 8), (7, 8), (7, 8), 1, True),
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8), 2, False),   # grouped-query attention
    ((2, 6, 9, 16), (1, 2, 7, 16), (1, 2, 7, 5), 3, True),  # GQA and broadcasting
    ((4, 5, 8), (1, 7, 8), (1, 7, 8), 4, False),            # multi-query (one kv head)
])
def test_broadcast_leading_dims_and_gqa(cpu_path, rng, dtype, qs, ks, vs, groups, causal):
    q, k, v = rand(rng, qs, dtype), rand(rng, ks, dtype), rand(rng, vs, dtype)
    out, saved = sdpa(q, k, v, is_causal=causal, return_saved=True, enable_gqa=groups > 1)
    ref, back = _expand_ref(q, k, v, groups, is_causal=causal)
    assert out.shape == ref.shape
    tol = 3e-6 if dtype == np.float32 else 1e-12
    assert rel_err(out, ref) < tol
    g = rand(rng, out.shape, dtype)
    for a, b, shape in zip(sdpa_bwd(g, saved), back(g, (qs, ks, vs)), (qs, ks, vs)):
        assert a.shape == shape and a.dtype == dtype
        assert rel_err(a, b) < tol * 10


def test_broadcast_and_gqa_against_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for qs, ks, gqa in (((2, 4, 9, 8), (1, 2, 11, 8), True), ((3, 2, 9, 8), (1, 2, 11, 8), False)):
        q, k, v = rand(rng, qs), rand(rng, ks), rand(rng, ks)
        out, saved = sdpa(q, k, v, is_causal=True, return_saved=True, enable_gqa=gqa)
        qt, kt, vt = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        ot = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=gqa)
        g = rand(rng, out.shape)
        ot.backward(torch.from_numpy(g))
        assert rel_err(out, ot.detach().numpy()) < 1e-12
        for a, t in zip(sdpa_bwd(g, saved), (qt, kt, vt)):
            assert a.shape == tuple(t.shape) and rel_err(a, t.grad.numpy()) < 1e-12


@pytest.mark.parametrize("qs,ks,vs", [
    ((2, 3, 0, 8), (2, 3, 7, 8), (2, 3, 7, 8)),  # no queries
    ((2, 3, 5, 8), (2, 3, 0, 8), (2, 3, 0, 8)),  # no keys: zeros, as torch
    ((0, 3, 5, 8), (0, 3, 7, 8), (0, 3, 7, 8)),  # empty batch
    ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 0)),  # Dv = 0
    ((2, 3, 5, 0), (2, 3, 7, 0), (2, 3, 7, 4)),  # D = 0: every score 0, out = mean of v
])
def test_empty_dims(rng, qs, ks, vs):
    q, k, v = rand(rng, qs), rand(rng, ks), rand(rng, vs)
    out, saved = sdpa(q, k, v, return_saved=True)
    g = rand(rng, out.shape)
    grads = sdpa_bwd(g, saved)
    assert out.shape == qs[:-1] + vs[-1:] and [a.shape for a in grads] == [qs, ks, vs]
    if ks[-2] == 0:  # no keys: the output is zeros (torch too), so every gradient is zero
        assert not out.any() and not any(a.any() for a in grads)
        return
    ref, back = ref_sdpa(q, k, v, scale=1.0 if qs[-1] == 0 else None)  # D = 0: out is the mean of v (torch too)
    assert out.size == 0 or rel_err(out, ref) < 1e-12
    for a, b in zip(grads, back(g)):
        assert a.size == 0 or np.abs(a - b).max() < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_key_padding_mask_spans(cpu_path, rng, dtype):
    """Query-independent bool masks (B, 1, 1, S) let the kernels skip the keys outside [first, last True]:
    spans that start and end inside and across key tiles (forward 256, backward 96 keys), a batch whose
    keys are all masked, and a hole inside the span."""
    B, H, L, S, D = 5, 2, 40, 300, 12
    q, k, v = rand(rng, (B, H, L, D), dtype), rand(rng, (B, H, S, D), dtype), rand(rng, (B, H, S, D), dtype)
    mask = np.zeros((B, 1, 1, S), bool)
    mask[0, ..., :] = True
    mask[1, ..., 5:190] = True     # inside the first backward tiles
    mask[2, ..., 100:290] = True   # starts past a backward tile, ends in the last forward tile
    mask[2, ..., 150:160] = False  # a hole
    mask[4, ..., 257:258] = True   # one key in the second forward tile; batch 3 attends nothing
    out, saved = sdpa(q, k, v, attn_mask=mask, return_saved=True)
    ref, back = ref_sdpa(q, k, v, mask)
    tol = 3e-6 if dtype == np.float32 else 1e-12
    assert rel_err(out, ref) < tol and not out[3].any()
    g = rand(rng, out.shape, dtype)
    for a, b in zip(sdpa_bwd(g, saved), back(g)):
        assert rel_err(a, b) < tol * 10
