"""layerforge.ops.lstm / lstm_cell (forward and backward through time) against the textbook equations in
float64, finite differences, and torch.nn.LSTM where installed."""
import numpy as np
import pytest

import layerforge
from layerforge import ops
from conftest import rel_err


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """The LSTM step by step in float64: a = x W_ih^T + b_ih + h W_hh^T + b_hh; gates i, f, g, o."""
    x, w_ih, w_hh = (np.asarray(a, np.float64) for a in (x, w_ih, w_hh))
    T, B, _ = x.shape
    H = w_hh.shape[1]
    h = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
    ys = []
    for t in range(T):
        a = x[t] @ w_ih.T + h @ w_hh.T
        if b_ih is not None:
            a = a + b_ih
        if b_hh is not None:
            a = a + b_hh
        i = sigmoid(a[:, :H])
        f = sigmoid(a[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys) if ys else np.zeros((0, B, H)), h, c


def make(rng, T, B, I, H, dtype=np.float64, bias=True, state=True, scale=0.5):
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w_ih = (rng.standard_normal((4 * H, I)) * scale).astype(dtype)
    w_hh = (rng.standard_normal((4 * H, H)) * scale).astype(dtype)
    b_ih = rng.standard_normal(4 * H).astype(dtype) * 0.3 if bias else None
    b_hh = rng.standard_normal(4 * H).astype(dtype) * 0.3 if bias else None
    h0 = rng.standard_normal((B, H)).astype(dtype) if state else None
    c0 = rng.standard_normal((B, H)).astype(dtype) if state else None
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh


SHAPES = [(1, 1, 3, 5), (4, 3, 7, 13), (6, 32, 28, 33), (3, 2, 1, 16), (2, 5, 9, 64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_forward_matches_reference(cpu_path, rng, dtype, T, B, I, H):
    for bias, state in ((True, True), (False, False), (True, False)):
        args = make(rng, T, B, I, H, dtype, bias, state)
        y, h, c = ops.lstm(*args)
        ry, rh, rc = ref_lstm(*args)
        assert y.dtype == dtype and y.shape == (T, B, H) and h.shape == (B, H) and c.shape == (B, H)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        assert rel_err(y, ry) < tol and rel_err(h, rh) < tol and rel_err(c, rc) < tol


def loss_and_grads(args, gy, ghT, gcT):
    y, h, c = ops.lstm(*args)
    return float(np.sum(y * gy) + np.sum(h * ghT) + np.sum(c * gcT))


@pytest.mark.parametrize("bias,state", [(True, True), (False, False)])
def test_backward_finite_differences(cpu_path, rng, bias, state):
    T, B, I, H = 3, 2, 3, 5
    args = list(make(rng, T, B, I, H, np.float64, bias, state))
    gy = rng.standard_normal((T, B, H))
    ghT = rng.standard_normal((B, H))
    gcT = rng.standard_normal((B, H))
    y, h, c, saved = ops.lstm(*args, return_saved=True)
    g = ops.lstm_backward(gy, saved, ghT, gcT)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    got = dict(zip(names, [g.grad_x, g.grad_h0, g.grad_c0, g.grad_w_ih, g.grad_w_hh, g.grad_b_ih, g.grad_b_hh]))
    eps = 1e-6
    for idx, name in enumerate(names):
        a = args[idx]
        if a is None:
            if name in ("b_ih", "b_hh"):
                assert got[name] is None
            continue
        num = np.zeros_like(a)
        for j in np.ndindex(a.shape):
            old = a[j]
            a[j] = old + eps
            lp = loss_and_grads(args, gy, ghT, gcT)
            a[j] = old - eps
            lm = loss_and_grads(args, gy, ghT, gcT)
            a[j] = old
            num[j] = (lp - lm) / (2 * eps)
        assert rel_err(got[name], num) < 1e-7, name


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 5), (5, 32, 28, 33), (7, 4, 9, 64), (3, 13, 5, 48)])
def test_backward_float32_matches_float64(cpu_path, threads, rng, T, B, I, H):
    args64 = make(rng, T, B, I, H, np.float64)
    args32 = [None if a is None else a.astype(np.float32) for a in args64]
    gy = rng.standard_normal((T, B, H))
    _, _, _, s64 = ops.lstm(*args64, return_saved=True)
    _, _, _, s32 = ops.lstm(*args32, return_saved=True)
    g64 = ops.lstm_backward(gy, s64)
    g32 = ops.lstm_backward(gy.astype(np.float32), s32)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        assert rel_err(a, b) < 1e-4


def test_grad_y_none_and_threads_agree(rng):
    args = make(rng, 4, 8, 6, 40, np.float32)
    before = layerforge.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            layerforge.set_num_threads(n)
            y, h, c, s = ops.lstm(*args, return_saved=True)
            g = ops.lstm_backward(None, s, grad_h_T=np.ones_like(h))
            res.append((y, g))
    finally:
        layerforge.set_num_threads(before)
    assert rel_err(res[0][0], res[1][0]) < 1e-6
    for a, b in zip(res[0][1], res[1][1]):
        assert rel_err(a, b) < 1e-5


def test_strided_inputs(cpu_path, rng):
    T, B, I, H = 5, 4, 6, 7
    xb = rng.standard_normal((B, T, I))
    x = xb.transpose(1, 0, 2)  # (T, B, I), not contiguous
    w_ih = rng.standard_normal((I, 4 * H)).T * 0.5  # transposed view
    w_hh = (rng.standard_normal((4 * H, 2 * H)) * 0.5)[:, ::2]  # column stride 2
    hb = rng.standard_normal((B, 2 * H))
    h0 = hb[:, ::2]
    c0 = rng.standard_normal((2 * B, H))[::2]
    b_ih = rng.standard_normal(8 * H)[::2]
    y, h, c, s = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, None, return_saved=True)
    ry, rh, rc = ref_lstm(x, h0, c0, w_ih, w_hh, b_ih, None)
    assert rel_err(y, ry) < 1e-12 and rel_err(c, rc) < 1e-12
    gyb = rng.standard_normal((B, T, H))
    g = ops.lstm_backward(gyb.transpose(1, 0, 2), s)
    cont = [np.ascontiguousarray(a) for a in (x, h0, c0, w_ih, w_hh, b_ih)]
    _, _, _, s2 = ops.lstm(*cont[:5], cont[5], None, return_saved=True)
    g2 = ops.lstm_backward(np.ascontiguousarray(gyb.transpose(1, 0, 2)), s2)
    for a, b in zip(g, g2):
        if a is None:
            assert b is None
        else:
            assert rel_err(a, b) < 1e-12


def test_lstm_cell(cpu_path, rng):
    B, I, H = 3, 4, 9
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(rng, 1, B, I, H)
    hn, cn, saved = ops.lstm_cell(x[0], h, c, w_ih, w_hh, b_ih, b_hh, return_saved=True)
    _, rh, rc = ref_lstm(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert rel_err(hn, rh) < 1e-12 and rel_err(cn, rc) < 1e-12
    gh, gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    g = ops.lstm_cell_backward(gh, gc, saved)
    assert g.grad_x.shape == (B, I)
    _, _, _, s2 = ops.lstm(x, h, c, w_ih, w_hh, b_ih, b_hh, return_saved=True)
    g2 = ops.lstm_backward(None, s2, gh, gc)
    assert rel_err(g.grad_x, g2.grad_x[0]) < 1e-14 and rel_err(g.grad_w_hh, g2.grad_w_hh) < 1e-14
    # numerical check of one input gradient
    eps = 1e-6
    xx = x[0].copy()
    num = np.zeros_like(xx)
    for j in np.ndindex(xx.shape):
        o = xx[j]
        xx[j] = o + eps
        hp, cp = ops.lstm_cell(xx, h, c, w_ih, w_hh, b_ih, b_hh)
        xx[j] = o - eps
        hm, cm = ops.lstm_cell(xx, h, c, w_ih, w_hh, b_ih, b_hh)
        xx[j] = o
        num[j] = (np.sum((hp - hm) * gh) + np.sum((cp - cm) * gc)) / (2 * eps)
    assert rel_err(g.grad_x, num) < 1e-7


def test_bad_inputs(rng):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = make(rng, 3, 2, 4, 5)
    with pytest.raises(ValueError, match=r"w_hh.*\(4H, H\)"):
        ops.lstm(x, h0, c0, w_ih, w_hh[:-1])
    with pytest.raises(ValueError, match="w_ih"):
        ops.lstm(x, h0, c0, w_ih[:-4], w_hh)
    with pytest.raises(ValueError, match="w_ih"):
        ops.lstm(x[..., :3], h0, c0, w_ih, w_hh)
    with pytest.raises(ValueError, match="h0"):
        ops.lstm(x, h0[:1], c0, w_ih, w_hh)
    with pytest.raises(ValueError, match="b_ih"):
        ops.lstm(x, h0, c0, w_ih, w_hh, b_ih[:3])
    with pytest.raises(ValueError, match="3-d"):
        ops.lstm(x[0], h0, c0, w_ih, w_hh)
    with pytest.raises(TypeError, match="dtype"):
        ops.lstm(x.astype(np.int32), h0, c0, w_ih, w_hh)
    with pytest.raises(TypeError, match="dtype"):
        ops.lstm(x.astype(np.float32), h0, c0, w_ih, w_hh)
    with pytest.raises(TypeError, match="float16"):
        ops.lstm(x.astype(np.float16), h0, c0, w_ih, w_hh)
    y, h, c, s = ops.lstm(x, h0, c0, w_ih, w_hh, return_saved=True)
    with pytest.raises(ValueError, match="grad_y"):
        ops.lstm_backward(y[:1], s)
    with pytest.raises(TypeError, match="grad_y"):
        ops.lstm_backward(y.astype(np.float32), s)
    with pytest.raises(TypeError, match="saved"):
        ops.lstm_backward(y, (1, 2))


def _torch_lstm(torch, layers, dtype):
    I, H = layers[0][0].shape[1], layers[0][1].shape[1]
    m = torch.nn.LSTM(I, H, num_layers=len(layers)).to(getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        for li, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
            getattr(m, f"weight_ih_l{li}").copy_(torch.from_numpy(w_ih))
            getattr(m, f"weight_hh_l{li}").copy_(torch.from_numpy(w_hh))
            getattr(m, f"bias_ih_l{li}").copy_(torch.from_numpy(b_ih))
            getattr(m, f"bias_hh_l{li}").copy_(torch.from_numpy(b_hh))
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_layer_stack_against_torch(cpu_path, rng, dtype):
    torch = pytest.importorskip("torch")
    T, B, I, H = 6, 4, 5, 12
    x = rng.standard_normal((T, B, I)).astype(dtype)
    layers = []
    for inp in (I, H):
        layers.append(tuple((rng.standard_normal(s) * 0.4).astype(dtype)
                            for s in ((4 * H, inp), (4 * H, H), (4 * H,), (4 * H,))))
    h0 = rng.standard_normal((2, B, H)).astype(dtype)
    c0 = rng.standard_normal((2, B, H)).astype(dtype)
    # ours: compose two layers in Python
    y1, h1, c1, s1 = ops.lstm(x, h0[0], c0[0], *layers[0], return_saved=True)
    y2, h2, c2, s2 = ops.lstm(y1, h0[1], c0[1], *layers[1], return_saved=True)
    gy = rng.standard_normal((T, B, H)).astype(dtype)
    g2 = ops.lstm_backward(gy, s2)
    g1 = ops.lstm_backward(g2.grad_x, s1)
    # torch
    m = _torch_lstm(torch, layers, dtype)
    xt = torch.from_numpy(x).requires_grad_()
    h0t = torch.from_numpy(h0).requires_grad_()
    c0t = torch.from_numpy(c0).requires_grad_()
    yt, (ht, ct) = m(xt, (h0t, c0t))
    yt.backward(torch.from_numpy(gy))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_err(y2, yt.detach().numpy()) < tol
    assert rel_err(c2, ct.detach().numpy()[1]) < tol
    assert rel_err(g1.grad_x, xt.grad.numpy()) < tol * 10
    assert rel_err(g1.grad_h0, h0t.grad.numpy()[0]) < tol * 10
    assert rel_err(g2.grad_c0, c0t.grad.numpy()[1]) < tol * 10
    assert rel_err(g1.grad_w_ih, m.weight_ih_l0.grad.numpy()) < tol * 10
    assert rel_err(g2.grad_w_hh, m.weight_hh_l1.grad.numpy()) < tol * 10
    assert rel_err(g1.grad_b_hh, m.bias_hh_l0.grad.numpy()) < tol * 10


@pytest.mark.parametrize("T,B", [(0, 3), (3, 0), (0, 0)])
def test_empty_sequence_or_batch(rng, T, B):
    """No steps: h_T = h0 and no weight gradient; no batch rows: empty outputs (torch returns them too)."""
    I, H = 4, 5
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    w_ih, w_hh, b_ih, b_hh = (rng.standard_normal(s) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,)))
    y, h_T, c_T, saved = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, return_saved=True)
    assert y.shape == (T, B, H) and h_T.shape == (B, H) and c_T.shape == (B, H)
    np.testing.assert_array_equal(h_T, h0)
    np.testing.assert_array_equal(c_T, c0)
    g = ops.lstm_backward(rng.standard_normal(y.shape), saved, rng.standard_normal((B, H)),
                          rng.standard_normal((B, H)))
    assert g.grad_x.shape == (T, B, I) and g.grad_h0.shape == (B, H)
    for gw in (g.grad_w_ih, g.grad_w_hh, g.grad_b_ih, g.grad_b_hh):
        assert not gw.any()


@pytest.mark.parametrize("scale", [1e-5, 0.1, 1.0, 4.0])
def test_float32_gate_math_across_ranges(cpu_path, rng, scale):
    """float32 against float64 with pre-activations from ~1e-5 (tanh's small-argument range) to saturation:
    the AVX2 path's rational tanh and exp-based sigmoid stay at float rounding level."""
    T, B, I, H = 5, 7, 9, 13
    x = rng.standard_normal((T, B, I))
    w_ih, w_hh = rng.standard_normal((4 * H, I)) * scale, rng.standard_normal((4 * H, H)) * scale
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H)) * scale
    y64, h64, c64 = ops.lstm(x, h0, c0, w_ih, w_hh)
    y32, h32, c32 = ops.lstm(*(a.astype(np.float32) for a in (x, h0, c0, w_ih, w_hh)))
    for a, b in ((y32, y64), (h32, h64), (c32, c64)):
        assert rel_err(a, b) < 2e-6
