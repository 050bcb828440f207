"""Sequence models and attention in layerforge.nn: multi-output autograd nodes, F.scaled_dot_product_attention,
LSTM / LSTMCell, MultiheadAttention, TransformerEncoderLayer / TransformerEncoder.

References: float64 central differences (autograd.gradcheck) and torch modules whose state_dict is loaded
into ours (outputs, input gradients and parameter gradients compared)."""
import math

import numpy as np
import pytest

import layerforge as lf
import layerforge.nn.functional as F
from layerforge import nn
from layerforge.autograd import Function, gradcheck
from conftest import rel_err


def _state(tm):
    return {k: v.detach().numpy() for k, v in tm.state_dict().items()}


def _flat(*tensors):
    """One 1-d Tensor of all outputs (so gradcheck contracts every one of them with its cotangent)."""
    return lf.cat([t.reshape(-1) for t in tensors])


def _torch_pair(torch, arrays):
    """The same float arrays as leaf Tensors requiring grad in torch and in layerforge."""
    return ([torch.tensor(a, requires_grad=True) for a in arrays], [lf.tensor(a, requires_grad=True) for a in arrays])


def _check_grads(t_leaves, l_leaves, tm, m, tol):
    for i, (t, l) in enumerate(zip(t_leaves, l_leaves)):
        assert rel_err(l.grad.numpy(), t.grad.numpy()) < tol, f"input {i}"
    tparams = dict(tm.named_parameters())
    names = [n for n, _ in m.named_parameters()]
    assert names == list(tparams), (names, list(tparams))
    for name, p in m.named_parameters():
        assert rel_err(p.grad.numpy(), tparams[name].grad.numpy()) < tol, name


# ---- multi-output Functions -----------------------------------------------------------------------------------
class _SumDiff(Function):
    """Two outputs: (a + b, a * b); backward gets one gradient per output (None where none arrived)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a + b, a * b

    def backward(self, g_sum, g_prod):
        self.seen = (g_sum is not None, g_prod is not None)
        ga = gb = 0
        if g_sum is not None:
            ga, gb = ga + g_sum, gb + g_sum
        if g_prod is not None:
            ga, gb = ga + g_prod * self.b, gb + g_prod * self.a
        return ga, gb


def test_multi_output_function(rng):
    a_np, b_np = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    a, b = lf.tensor(a_np, requires_grad=True), lf.tensor(b_np, requires_grad=True)
    s, p = _SumDiff.apply(a, b)
    assert s._ctx is p._ctx and (s._out_index, p._out_index) == (0, 1)
    # both outputs, one of them used twice: gradients summed per output, one backward call
    (s * 2 + p + p * 3).sum().backward(retain_graph=True)
    np.testing.assert_allclose(a.grad.numpy(), 2 + 4 * b_np)
    np.testing.assert_allclose(b.grad.numpy(), 2 + 4 * a_np)
    assert s._ctx.seen == (True, True)
    # only the second output: the first gets None
    a.grad = b.grad = None
    p.sum().backward(retain_graph=True)
    assert s._ctx.seen == (False, True)
    np.testing.assert_allclose(a.grad.numpy(), b_np)
    # backward straight from an output of the multi-output node
    a.grad = b.grad = None
    g = rng.standard_normal((3, 4))
    s.backward(lf.tensor(g))
    np.testing.assert_allclose(a.grad.numpy(), g)
    with pytest.raises(RuntimeError, match="second time"):
        p.sum().backward()
    # without grad mode: a tuple of plain Tensors
    with lf.no_grad():
        s2, p2 = _SumDiff.apply(a, b)
    assert s2._ctx is None and p2._ctx is None
    np.testing.assert_allclose(p2.numpy(), a_np * b_np)
    assert gradcheck(lambda x, y: _flat(*_SumDiff.apply(x, y)), [lf.tensor(a_np, requires_grad=True),
                                                                  lf.tensor(b_np, requires_grad=True)])


def test_grad_dtype_follows_tensor_dtype(rng):
    # float32 * float64 computes in float64; the float32 input's gradient comes back in float32 (as torch)
    a = lf.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    w = lf.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    g = rng.standard_normal((2, 4))
    (F.linear(a, w) * lf.tensor(g)).sum().backward()
    assert a.grad.dtype == np.float32 and w.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad.numpy(), g @ w.detach().numpy(), rtol=1e-5)


# ---- F.scaled_dot_product_attention ---------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
def test_sdpa_gradcheck(rng, mask):
    q = lf.tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True)
    k = lf.tensor(rng.standard_normal((2, 3, 7, 4)), requires_grad=True)
    v = lf.tensor(rng.standard_normal((2, 3, 7, 3)), requires_grad=True)
    kw = {}
    if mask == "bool":
        m = rng.random((5, 7)) < 0.6
        m[:, 0] = True  # no fully masked row
        kw["attn_mask"] = m
    elif mask == "float":
        kw["attn_mask"] = lf.tensor(rng.standard_normal((2, 1, 5, 7)))
    elif mask == "causal":
        kw["is_causal"] = True
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=0.7, **kw), [q, k, v])


def test_sdpa_matches_torch_on_strided_views(rng):
    torch = pytest.importorskip("torch")
    # (B, L, heads, D) transposed to (B, heads, L, D): strided views, as attention layers produce them
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 3, 4), (2, 6, 3, 4), (2, 6, 3, 4))]
    mask = rng.random((5, 6)) < 0.7
    mask[:, 2] = True
    (tq, tk, tv), (lq, lk, lv) = _torch_pair(torch, arrays)
    tout = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (tq, tk, tv)),
                                                            attn_mask=torch.tensor(mask))
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (lq, lk, lv)), attn_mask=mask)
    assert out.shape == (2, 3, 5, 4)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-5
    g = rng.standard_normal(out.shape).astype(np.float32)
    tout.backward(torch.tensor(g))
    out.backward(lf.tensor(g))
    for t, l in zip((tq, tk, tv), (lq, lk, lv)):
        assert rel_err(l.grad.numpy(), t.grad.numpy()) < 1e-5


def test_sdpa_dropout_repeats_under_manual_seed(rng):
    q, k, v = (lf.tensor(rng.standard_normal((1, 2, 6, 4)), requires_grad=True) for _ in range(3))
    lf.manual_seed(5)
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    b = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    lf.manual_seed(5)
    a2 = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    np.testing.assert_array_equal(a.detach().numpy(), a2.detach().numpy())
    assert not np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_sdpa_gqa_and_broadcast_through_autograd(rng):
    """Grouped-query attention with k/v shared over the batch: gradients arrive in each input's shape."""
    q = lf.tensor(rng.standard_normal((2, 4, 5, 8)), requires_grad=True)
    k, v = (lf.tensor(rng.standard_normal((1, 2, 7, 8)), requires_grad=True) for _ in range(2))
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert out.shape == (2, 4, 5, 8)
    out.sum().backward()
    assert q.grad.shape == (2, 4, 5, 8) and k.grad.shape == (1, 2, 7, 8) and v.grad.shape == (1, 2, 7, 8)
    # every query row's weights sum to 1, so d(sum out)/dv counts the queries reading each value row
    np.testing.assert_allclose(v.grad.numpy().sum(), 2 * 4 * 5 * 8, rtol=1e-12)
    with pytest.raises(ValueError, match="enable_gqa"):
        F.scaled_dot_product_attention(q, lf.tensor(rng.standard_normal((1, 3, 7, 8))), v, enable_gqa=True)


# ---- LSTM / LSTMCell ------------------------------------------------------------------------------------------
LSTM_CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True, bias=False),
    dict(num_layers=3, batch_first=True, dropout=0.3),  # dropout inactive: eval mode
]


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kw", LSTM_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_lstm_matches_torch(rng, kw, unbatched):
    torch = pytest.importorskip("torch")
    I, H, T, B = 3, 5, 7, 2
    tm = torch.nn.LSTM(I, H, **kw).eval()
    m = nn.LSTM(I, H, **kw).eval()
    m.load_state_dict(_state(tm))
    D = 2 if kw.get("bidirectional") else 1
    if unbatched:
        x_shape, h_shape = (T, I), (kw["num_layers"] * D, H)
    else:
        x_shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
        h_shape = (kw["num_layers"] * D, B, H)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (x_shape, h_shape, h_shape)]
    t_in, l_in = _torch_pair(torch, arrays)
    tout, (th, tc) = tm(t_in[0], (t_in[1], t_in[2]))
    out, (h, c) = m(l_in[0], (l_in[1], l_in[2]))
    for ours, ref in ((out, tout), (h, th), (c, tc)):
        assert ours.shape == tuple(ref.shape)
        assert rel_err(ours.detach().numpy(), ref.detach().numpy()) < 1e-5
    # cotangents on all three outputs
    gs = [rng.standard_normal(tuple(r.shape)).astype(np.float32) for r in (tout, th, tc)]
    sum((r * torch.tensor(g)).sum() for r, g in zip((tout, th, tc), gs)).backward()
    sum((o * lf.tensor(g)).sum() for o, g in zip((out, h, c), gs)).backward()
    _check_grads(t_in, l_in, tm, m, 1e-4)


def test_lstm_without_hx_and_only_output_used(rng):
    torch = pytest.importorskip("torch")
    tm = torch.nn.LSTM(4, 3, num_layers=2, bidirectional=True).double()
    m = nn.LSTM(4, 3, num_layers=2, bidirectional=True).double()
    m.load_state_dict(_state(tm))
    x = rng.standard_normal((5, 3, 4))
    (tx,), (lx,) = _torch_pair(torch, [x])
    tout, _ = tm(tx)
    out, _ = m(lx)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-12
    tout.sum().backward()
    out.sum().backward()  # h_n, c_n unused: their nodes get None
    _check_grads([tx], [lx], tm, m, 1e-12)


def test_lstm_gradcheck(rng):
    lf.manual_seed(1)
    m = nn.LSTM(3, 2, num_layers=2, bidirectional=True).double()
    x = lf.tensor(rng.standard_normal((4, 2, 3)), requires_grad=True)
    h0 = lf.tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)
    c0 = lf.tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)
    params = list(m.parameters())

    def fn(x, h0, c0, *_params):  # the parameters are perturbed in place through the module
        out, (h, c) = m(x, (h0, c0))
        return _flat(out, h, c)

    assert gradcheck(fn, [x, h0, c0] + params)


def test_lstm_dropout_between_layers_in_training_only(rng):
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = lf.tensor(rng.standard_normal((6, 2, 3)).astype(np.float32))
    with lf.no_grad():
        ref, (h_eval, _) = m.eval()(x)
        m.train()
        lf.manual_seed(3)
        a, (h_train, _) = m(x)
        lf.manual_seed(3)
        a2, _ = m(x)
    np.testing.assert_array_equal(a.numpy(), a2.numpy())
    assert not np.allclose(a.numpy(), ref.numpy())
    # the dropout sits between layers: layer 0's final state does not see it, layer 1's does
    np.testing.assert_allclose(h_train.numpy()[0], h_eval.numpy()[0], rtol=1e-6)
    assert not np.allclose(h_train.numpy()[1], h_eval.numpy()[1])


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no_hx"])
def test_lstm_cell_matches_torch(rng, unbatched, with_hx):
    torch = pytest.importorskip("torch")
    tm = torch.nn.LSTMCell(5, 3).double()
    m = nn.LSTMCell(5, 3).double()
    m.load_state_dict(_state(tm))
    lead = () if unbatched else (4,)
    arrays = [rng.standard_normal(lead + (5,)), rng.standard_normal(lead + (3,)), rng.standard_normal(lead + (3,))]
    if not with_hx:
        arrays = arrays[:1]
    t_in, l_in = _torch_pair(torch, arrays)
    th, tc = tm(t_in[0], tuple(t_in[1:]) if with_hx else None)
    h, c = m(l_in[0], tuple(l_in[1:]) if with_hx else None)
    assert h.shape == tuple(th.shape) and c.shape == tuple(tc.shape)
    assert rel_err(h.detach().numpy(), th.detach().numpy()) < 1e-12
    assert rel_err(c.detach().numpy(), tc.detach().numpy()) < 1e-12
    (th * 2 + tc ** 2).sum().backward()
    (h * 2 + c ** 2).sum().backward()
    _check_grads(t_in, l_in, tm, m, 1e-12)


def test_lstm_init_and_names_like_torch():
    torch = pytest.importorskip("torch")
    tm = torch.nn.LSTM(6, 10, num_layers=2, bidirectional=True)
    lf.manual_seed(0)
    m = nn.LSTM(6, 10, num_layers=2, bidirectional=True)
    assert {k: v.shape for k, v in _state(tm).items()} == {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert list(_state(tm)) == list(m.state_dict())
    bound = 1 / math.sqrt(10)
    w = np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert len(m.all_weights) == 4 and len(m.all_weights[0]) == 4
    assert repr(m) == repr(tm)
    cell = nn.LSTMCell(4, 7, bias=False)
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]
    assert repr(cell) == repr(torch.nn.LSTMCell(4, 7, bias=False))


# ---- MultiheadAttention ---------------------------------------------------------------------------------------
def _mha_case(torch, rng, tm, m, inputs, kw, tol=1e-12, self_attn=False):
    """Load tm's weights into m, run both (the same Tensor passed three times when self_attn), compare
    the output, the weights and every gradient."""
    m.load_state_dict(_state(tm))
    t_in, l_in = _torch_pair(torch, inputs)
    targs, largs = (t_in * 3, l_in * 3) if self_attn else (t_in, l_in)
    tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    tout, tw = tm(*targs, **tkw)
    out, w = m(*largs, **kw)
    assert out.shape == tuple(tout.shape)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < tol
    g = rng.standard_normal(tuple(tout.shape))
    tloss, loss = (tout * torch.tensor(g)).sum(), (out * lf.tensor(g)).sum()
    if tw is None:
        assert w is None
    else:
        assert w.shape == tuple(tw.shape)
        assert rel_err(w.detach().numpy(), tw.detach().numpy()) < tol
        gw = rng.standard_normal(tuple(tw.shape))
        tloss, loss = tloss + (tw * torch.tensor(gw)).sum(), loss + (w * lf.tensor(gw)).sum()
    tloss.backward()
    loss.backward()
    _check_grads(t_in, l_in, tm, m, tol * 100)


@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)],
                         ids=["weights-avg", "weights-per-head", "fused"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("masks", ["none", "bool", "float"])
def test_mha_matches_torch(rng, need_weights, average, batch_first, masks):
    torch = pytest.importorskip("torch")
    E, heads, L, S, B = 12, 3, 5, 7, 2
    tm = torch.nn.MultiheadAttention(E, heads, batch_first=batch_first).double()
    m = nn.MultiheadAttention(E, heads, batch_first=batch_first).double()
    shape = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    inputs = [rng.standard_normal(shape(n)) for n in (L, S, S)]
    kw = dict(need_weights=need_weights, average_attn_weights=average)
    if masks != "none":
        kpm = rng.random((B, S)) < 0.3  # True = padding: ignored
        am = rng.random((L, S)) < 0.3  # True = not allowed
        kpm[:, 0] = am[:, 0] = False  # no fully masked row
        if masks == "float":
            kpm = np.where(kpm, -np.inf, 0.0)
            am = rng.standard_normal((B * heads, L, S))
        kw.update(key_padding_mask=kpm, attn_mask=am)
    _mha_case(torch, rng, tm, m, inputs, kw)


@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "fused"])
@pytest.mark.parametrize("with_kpm", [False, True], ids=["causal", "causal+kpm"])
def test_mha_self_attention_causal(rng, need_weights, with_kpm):
    torch = pytest.importorskip("torch")
    E, heads, L, B = 8, 2, 6, 3
    tm = torch.nn.MultiheadAttention(E, heads).double()
    m = nn.MultiheadAttention(E, heads).double()
    causal = np.triu(np.ones((L, L), bool), 1)  # True = not allowed
    kw = dict(need_weights=need_weights, attn_mask=causal, is_causal=True)
    if with_kpm:
        kpm = np.zeros((B, L), bool)
        kpm[1, 4:] = True
        kw["key_padding_mask"] = kpm
    _mha_case(torch, rng, tm, m, [rng.standard_normal((L, B, E))], kw, self_attn=True)


@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "fused"])
def test_mha_kdim_vdim_unbatched(rng, need_weights):
    torch = pytest.importorskip("torch")
    E, heads, L, S = 6, 3, 4, 5
    tm = torch.nn.MultiheadAttention(E, heads, kdim=5, vdim=2, bias=False).double()
    m = nn.MultiheadAttention(E, heads, kdim=5, vdim=2, bias=False).double()
    kw = dict(need_weights=need_weights, attn_mask=rng.standard_normal((heads, L, S)),
              key_padding_mask=np.array([0.0, -np.inf, 0.0, 0.0, -np.inf]))
    _mha_case(torch, rng, tm, m, [rng.standard_normal((L, E)), rng.standard_normal((S, 5)),
                                  rng.standard_normal((S, 2))], kw)


def test_mha_float32_and_init(rng):
    torch = pytest.importorskip("torch")
    tm = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    m = nn.MultiheadAttention(16, 4, batch_first=True)
    assert {k: v.shape for k, v in _state(tm).items()} == {k: tuple(v.shape) for k, v in m.state_dict().items()}
    a = math.sqrt(6 / (16 + 48))
    w = m.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.9 * a
    assert not m.in_proj_bias.detach().numpy().any() and not m.out_proj.bias.detach().numpy().any()
    _mha_case(torch, rng, tm, m, [rng.standard_normal((3, 5, 16)).astype(np.float32)],
              dict(need_weights=False), tol=1e-5, self_attn=True)


# ---- TransformerEncoderLayer / TransformerEncoder ------------------------------------------------------------
@pytest.mark.parametrize("norm_first,activation,batch_first", [(False, "relu", False), (True, "gelu", True),
                                                               (False, "gelu", True)])
def test_transformer_encoder_layer_matches_torch(rng, norm_first, activation, batch_first):
    torch = pytest.importorskip("torch")
    d, heads, ff, L, B = 8, 2, 16, 5, 3
    args = dict(dim_feedforward=ff, activation=activation, norm_first=norm_first, batch_first=batch_first)
    tm = torch.nn.TransformerEncoderLayer(d, heads, **args).double().eval()
    m = nn.TransformerEncoderLayer(d, heads, **args).double().eval()
    kpm = np.zeros((B, L), bool)
    kpm[0, 3:] = True
    x = rng.standard_normal((B, L, d) if batch_first else (L, B, d))
    m.load_state_dict(_state(tm))
    (tx,), (lx,) = _torch_pair(torch, [x])
    tout = tm(tx, src_key_padding_mask=torch.tensor(kpm))
    out = m(lx, src_key_padding_mask=kpm)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-12
    g = rng.standard_normal(x.shape)
    (tout * torch.tensor(g)).sum().backward()
    (out * lf.tensor(g)).sum().backward()
    _check_grads([tx], [lx], tm, m, 1e-10)


def test_transformer_encoder_matches_torch_causal(rng):
    torch = pytest.importorskip("torch")
    d, heads, L, B = 8, 4, 6, 2
    tm = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(d, heads, 12), 2, norm=torch.nn.LayerNorm(d),
                                     enable_nested_tensor=False).double().eval()
    m = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, 12), 2, norm=nn.LayerNorm(d)).double().eval()
    assert m.layers[0] is not m.layers[1] and m.layers[0].linear1.weight is not m.layers[1].linear1.weight
    m.load_state_dict(_state(tm))
    causal = np.triu(np.full((L, L), -np.inf), 1)
    x = rng.standard_normal((L, B, d))
    (tx,), (lx,) = _torch_pair(torch, [x])
    tout = tm(tx, mask=torch.tensor(causal))
    out = m(lx, mask=causal)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-12
    g = rng.standard_normal(x.shape)  # not .sum(): the final LayerNorm's output sums to a constant
    (tout * torch.tensor(g)).sum().backward()
    (out * lf.tensor(g)).sum().backward()
    _check_grads([tx], [lx], tm, m, 1e-10)


def test_encoder_layer_dropout_in_training_only(rng):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.5)
    x = lf.tensor(rng.standard_normal((4, 2, 8)).astype(np.float32))
    with lf.no_grad():
        ref = layer.eval()(x).numpy()
        np.testing.assert_array_equal(layer(x).numpy(), ref)
        layer.train()
        lf.manual_seed(9)
        a = layer(x).numpy()
        lf.manual_seed(9)
        np.testing.assert_array_equal(layer(x).numpy(), a)
    assert not np.allclose(a, ref)


# ---- errors ---------------------------------------------------------------------------------------------------
def test_errors_name_layer_and_shapes():
    lstm = nn.LSTM(3, 5, num_layers=2)
    with pytest.raises(ValueError, match=r"LSTM\(3, 5, num_layers=2\).*Expected 3, got 4.*\(7, 2, 4\)"):
        lstm(lf.randn(7, 2, 4))
    with pytest.raises(ValueError, match=r"LSTM.*h_0 of shape \(2, 2, 5\), got \(1, 2, 5\)"):
        lstm(lf.randn(7, 2, 3), (lf.zeros(1, 2, 5), lf.zeros(1, 2, 5)))
    with pytest.raises(ValueError, match=r"LSTM.*c_0 of shape \(2, 5\), got \(2, 1, 5\)"):
        lstm(lf.randn(7, 3), (lf.zeros(2, 5), lf.zeros(2, 1, 5)))
    with pytest.raises(ValueError, match=r"LSTM.*2-D.*3-D.*\(7,\)"):
        lstm(lf.randn(7))
    with pytest.raises(ValueError, match="proj_size"):
        nn.LSTM(3, 5, proj_size=2)
    with pytest.raises(ValueError, match="dropout"):
        nn.LSTM(3, 5, dropout=1.5)
    cell = nn.LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"LSTMCell\(3, 4\).*got 2, expected 3.*\(5, 2\)"):
        cell(lf.randn(5, 2))
    with pytest.raises(ValueError, match=r"LSTMCell.*h of shape \(5, 4\), got \(4, 4\)"):
        cell(lf.randn(5, 3), (lf.zeros(4, 4), lf.zeros(5, 4)))
    with pytest.raises(ValueError, match=r"embed_dim must be divisible by num_heads \(embed_dim=10, num_heads=3\)"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="add_bias_kv"):
        nn.MultiheadAttention(8, 2, add_bias_kv=True)
    mha = nn.MultiheadAttention(8, 2)
    x = lf.randn(5, 2, 8)
    with pytest.raises(ValueError, match=r"MultiheadAttention\(.*query with last dim 8.*\(5, 2, 6\)"):
        mha(lf.randn(5, 2, 6), x, x)
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(2, 5\).*got \(5, 2\)"):
        mha(x, x, x, key_padding_mask=np.zeros((5, 2), bool))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(5, 5\) or \(4, 5, 5\).*got \(2, 5, 5\)"):
        mha(x, x, x, attn_mask=np.zeros((2, 5, 5), bool))
    with pytest.raises(ValueError, match="is_causal=True needs attn_mask"):
        mha(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="all be 3-D.*or all 2-D"):
        mha(x, lf.randn(5, 8), x)
    with pytest.raises(TypeError, match="attn_mask"):
        mha(x, x, x, attn_mask=np.zeros((5, 5), np.int64))
    with pytest.raises(ValueError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerEncoderLayer(8, 2, activation="tanh")


def test_mha_weights_dropout_in_training_only(rng):
    mha = nn.MultiheadAttention(8, 2, dropout=0.5)
    x = lf.tensor(rng.standard_normal((5, 3, 8)).astype(np.float32))
    with lf.no_grad():
        _, w_eval = mha.eval()(x, x, x, average_attn_weights=False)
        mha.train()
        lf.manual_seed(4)
        out, w = mha(x, x, x, average_attn_weights=False)
        lf.manual_seed(4)
        out2, _ = mha(x, x, x, average_attn_weights=False)
    np.testing.assert_allclose(w_eval.numpy().sum(-1), 1, rtol=1e-5)
    kept = w.numpy() != 0
    assert kept.any() and not kept.all()  # dropped weights are zero, the rest scaled by 1 / (1 - p)
    np.testing.assert_allclose(w.numpy()[kept], 2 * w_eval.numpy()[kept], rtol=1e-5)
    np.testing.assert_array_equal(out.numpy(), out2.numpy())
