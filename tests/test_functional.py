"""layerforge.nn.functional and the elementwise kernels: float64 finite differences (gradcheck) for every
op, torch on the same inputs where installed, both CPU paths for the kernels, bad inputs."""
import numpy as np
import pytest

import layerforge as lf
import layerforge.nn.functional as F
from layerforge import _C, ops
from layerforge.autograd import gradcheck
from conftest import rel_err


def T(rng, *shape, grad=True, dtype=lf.float64):
    return lf.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=grad)


# ---- kernels (ops level), per CPU path ----------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_activation_kernels_match_reference(rng, cpu_path, dtype, tol):
    from math import erf

    x = (rng.standard_normal(1000) * 4).astype(dtype)
    x[:3] = [0.0, 1e-5, -1e-5]
    xd = x.astype(np.float64)
    ref = {
        "relu": np.maximum(xd, 0), "sigmoid": 1 / (1 + np.exp(-xd)), "tanh": np.tanh(xd),
        "gelu": 0.5 * xd * (1 + np.vectorize(erf)(xd / np.sqrt(2))),
        "gelu_tanh": 0.5 * xd * (1 + np.tanh(np.sqrt(2 / np.pi) * (xd + 0.044715 * xd ** 3))),
        "leaky_relu": np.where(xd > 0, xd, 0.1 * xd),
    }
    for name, r in ref.items():
        y = ops.elementwise.activation(name, x, 0.1)
        assert y.dtype == dtype
        err = np.max(np.abs(y - r) / (np.abs(r) + 1e-3))
        assert err < tol * 10, (name, err)


def test_softmax_kernels(rng, cpu_path):
    x = rng.standard_normal((7, 33)).astype(np.float32) * 5
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    ref = e / e.sum(1, keepdims=True)
    assert rel_err(ops.softmax(x), ref) < 1e-6
    assert rel_err(ops.log_softmax(x), np.log(ref)) < 1e-6
    assert rel_err(ops.softmax(x.T, dim=0), ref.T) < 1e-6  # non-contiguous, other dim
    big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    assert np.isfinite(ops.log_softmax(big)).all() and ops.softmax(big)[0, 0] == 1.0


def test_kernels_threads_deterministic(rng, threads):
    x = rng.standard_normal((300, 257)).astype(np.float32)
    g = rng.standard_normal((300, 257)).astype(np.float32)
    y, mean, rstd = ops.layer_norm(x, 257, np.ones(257, np.float32), np.zeros(257, np.float32))
    gx, gw, gb = ops.layer_norm_backward(g, x, mean, rstd, np.ones(257, np.float32))
    lf.set_num_threads(1)
    gx1, gw1, gb1 = ops.layer_norm_backward(g, x, mean, rstd, np.ones(257, np.float32))
    np.testing.assert_array_equal(gw, gw1)
    np.testing.assert_array_equal(gb, gb1)
    np.testing.assert_array_equal(gx, gx1)


def test_kernel_bad_inputs():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(TypeError):
        ops.relu(np.zeros(3, np.int32))
    with pytest.raises(TypeError):
        _C.softmax_forward(x, np.zeros((4, 3), np.float64), False)  # dtype mismatch, no silent cast
    with pytest.raises(ValueError, match="contiguous"):
        _C.softmax_forward(x, np.zeros((3, 4), np.float32).T, False)
    ro = np.zeros((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.activation_forward(0, x, ro, 0.0)
    with pytest.raises(TypeError, match="int64"):
        _C.cross_entropy_forward(x, np.zeros(4, np.int32), None, -100, np.zeros(4, np.float32), None, None, 1.0, 0.0)
    with pytest.raises(ValueError, match="out of bounds"):
        _C.cross_entropy_forward(x, np.array([0, 1, 7, 0]), None, -100, np.zeros(4, np.float32), None, None, 1, 0)


# ---- gradcheck of every functional op ---------------------------------------------------------------------
def test_linear_gradcheck(rng):
    x, w, b = T(rng, 2, 3, 4), T(rng, 5, 4), T(rng, 5)
    assert gradcheck(F.linear, [x, w, b])
    assert gradcheck(lambda x, w: F.linear(x, w), [T(rng, 4), w])


@pytest.mark.parametrize("fn", [F.relu, F.sigmoid, F.tanh, F.gelu, lambda x: F.gelu(x, approximate="tanh"),
                                lambda x: F.leaky_relu(x, 0.2), lambda x: F.softmax(x, dim=1),
                                lambda x: F.log_softmax(x, dim=0), lambda x: F.log_softmax(x, dim=-1)])
def test_activation_gradcheck(rng, fn):
    assert gradcheck(fn, [T(rng, 3, 4, 5)])


def test_layer_norm_gradcheck(rng):
    x, w, b = T(rng, 3, 2, 5), T(rng, 2, 5), T(rng, 2, 5)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (2, 5), w, b), [x, w, b])
    assert gradcheck(lambda x: F.layer_norm(x, 5), [x])


def test_embedding_dropout_pad_gradcheck(rng):
    w = T(rng, 6, 3)
    idx = lf.tensor([[0, 2, 2], [5, 1, 0]])
    assert gradcheck(lambda w: F.embedding(idx, w), [w])
    w.grad = None
    F.embedding(idx, w, padding_idx=2).sum().backward()  # the padding row gets no gradient, as torch
    assert (w.grad.numpy()[2] == 0).all() and w.grad.numpy()[0].tolist() == [2, 2, 2]
    x = T(rng, 2, 3, 4)
    assert gradcheck(lambda x: F.pad(x, (1, 2, 0, 1)), [x])
    assert gradcheck(lambda x: F.flatten(x, 1), [x])

    def drop(x):
        lf.manual_seed(5)
        return F.dropout(x, 0.4)

    assert gradcheck(drop, [x])


@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.2},
                                {"ignore_index": 1}, {"weight": True}, {"weight": True, "label_smoothing": 0.1},
                                {"ignore_index": 2, "label_smoothing": 0.3, "reduction": "none"}])
def test_cross_entropy_gradcheck_and_torch(rng, kw):
    kw = dict(kw)
    C = 4
    x = T(rng, 6, C)
    t = lf.tensor(rng.integers(0, C, 6))
    w = lf.tensor(rng.uniform(0.5, 2, C), dtype=lf.float64) if kw.pop("weight", False) else None
    assert gradcheck(lambda x: F.cross_entropy(x, t, w, **kw), [x])
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x.detach().numpy(), requires_grad=True)
    tw = None if w is None else torch.tensor(w.numpy())
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(t.numpy()), tw, **kw)
    x.grad = None
    loss = F.cross_entropy(x, t, w, **kw)
    np.testing.assert_allclose(loss.detach().numpy(), tl.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(tl.shape)
    tl.backward(torch.tensor(g))
    loss.backward(lf.tensor(g, dtype=lf.float64))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cross_entropy_shapes_and_probabilities(rng):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    x = T(rng, 2, 3, 4, 5)  # (N, C, d1, d2)
    t = lf.tensor(rng.integers(0, 3, (2, 4, 5)))
    assert gradcheck(lambda x: F.cross_entropy(x, t), [x])
    np.testing.assert_allclose(F.cross_entropy(x, t, reduction="none").detach().numpy(),
                               tF.cross_entropy(torch.tensor(x.detach().numpy()), torch.tensor(t.numpy()),
                                                reduction="none").numpy(), rtol=1e-10)
    p = lf.tensor(rng.dirichlet(np.ones(3), (2, 4, 5)).transpose(0, 3, 1, 2).copy(), dtype=lf.float64)
    for ls in (0.0, 0.25):
        assert gradcheck(lambda x: F.cross_entropy(x, p, label_smoothing=ls), [x])
        ref = tF.cross_entropy(torch.tensor(x.detach().numpy()), torch.tensor(p.numpy()), label_smoothing=ls)
        assert F.cross_entropy(x, p, label_smoothing=ls).item() == pytest.approx(ref.item(), rel=1e-10)
    x1 = T(rng, 5)
    ref = tF.cross_entropy(torch.tensor(x1.detach().numpy()), torch.tensor(3))
    assert F.cross_entropy(x1, lf.tensor(3)).item() == pytest.approx(ref.item(), rel=1e-10)


def test_nll_mse_bce_gradcheck_and_torch(rng):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    x = T(rng, 5, 4)
    t = lf.tensor(rng.integers(0, 4, 5))
    w = lf.tensor(rng.uniform(0.5, 2, 4), dtype=lf.float64)
    y = lf.tensor(rng.uniform(0, 1, (5, 4)), dtype=lf.float64)
    p = lf.tensor(rng.uniform(0.05, 0.95, (5, 4)), dtype=lf.float64, requires_grad=True)
    pw = lf.tensor(rng.uniform(0.5, 3, 4), dtype=lf.float64)
    cases = [
        (lambda x: F.nll_loss(x, t, w, ignore_index=2), lambda x: tF.nll_loss(x, torch.tensor(t.numpy()),
                                                                              torch.tensor(w.numpy()), ignore_index=2)),
        (lambda x: F.mse_loss(x, y), lambda x: tF.mse_loss(x, torch.tensor(y.numpy()))),
        (lambda x: F.mse_loss(x, y, reduction="sum"), lambda x: tF.mse_loss(x, torch.tensor(y.numpy()), reduction="sum")),
        (lambda x: F.binary_cross_entropy_with_logits(x, y), lambda x: tF.binary_cross_entropy_with_logits(
            x, torch.tensor(y.numpy()))),
        (lambda x: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none"),
         lambda x: tF.binary_cross_entropy_with_logits(x, torch.tensor(y.numpy()), pos_weight=torch.tensor(pw.numpy()),
                                                       reduction="none")),
    ]
    for ours, theirs in cases:
        assert gradcheck(ours, [x])
        np.testing.assert_allclose(ours(x).detach().numpy(), theirs(torch.tensor(x.detach().numpy())).numpy(),
                                   rtol=1e-10)
    assert gradcheck(lambda p: F.binary_cross_entropy(p, y, weight=w), [p])
    ref = tF.binary_cross_entropy(torch.tensor(p.detach().numpy()), torch.tensor(y.numpy()), torch.tensor(w.numpy()))
    assert F.binary_cross_entropy(p, y, weight=w).item() == pytest.approx(ref.item(), rel=1e-10)


def test_float32_forward_backward_match_torch(rng):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    xa = rng.standard_normal((8, 16)).astype(np.float32)
    wa = rng.standard_normal((10, 16)).astype(np.float32)
    ba = rng.standard_normal(10).astype(np.float32)
    la, lb = rng.standard_normal(10).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    tgt = rng.integers(0, 10, 8)

    def run(lib, F_, tensor):
        x, w, b, g, bb = (tensor(v, requires_grad=True) for v in (xa, wa, ba, la, lb))
        h = F_.linear(x, w, b)
        h = F_.layer_norm(h, (10,), g, bb)
        h = F_.gelu(h) + F_.leaky_relu(h, 0.1) + F_.sigmoid(h) * F_.tanh(h)
        loss = F_.cross_entropy(h, tensor(tgt), label_smoothing=0.1) + F_.log_softmax(h, dim=1).mean()
        loss.backward()
        return [loss.detach().numpy()] + [v.grad.numpy() for v in (x, w, b, g, bb)]

    ours = run(lf, F, lf.tensor)
    theirs = run(torch, tF, torch.tensor)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) < 2e-5


def test_one_hot_and_misc():
    oh = F.one_hot(lf.tensor([0, 2, 1]), 4)
    assert oh.dtype == np.int64 and oh.numpy().tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert F.one_hot(lf.tensor([1, 3])).shape == (2, 4)
    x = lf.ones(3, 4)
    assert F.dropout(x, 0.5, training=False) is x
    lf.manual_seed(0)
    d = F.dropout(x, 0.5).numpy()
    assert set(np.unique(d)) <= {0.0, 2.0}
    assert F.pad(lf.ones(2, 2), (1, 1), value=3.0).numpy()[0].tolist() == [3, 1, 1, 3]


def test_bad_inputs():
    x = lf.randn(4, 3)
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, lf.tensor([0, 1, 3, 0]))
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, lf.tensor([0, -1, 2, 0]))
    F.cross_entropy(x, lf.tensor([0, -100, 2, 0]))  # ignore_index is fine
    with pytest.raises(ValueError, match="target"):
        F.cross_entropy(x, lf.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)"):
        F.linear(x, lf.randn(5, 2))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(x, x, reduction="avg")
    with pytest.raises(ValueError):
        F.binary_cross_entropy(x.abs() + 1.5, lf.zeros(4, 3))
    with pytest.raises(IndexError):
        F.embedding(lf.tensor([7]), lf.randn(5, 2))


def test_nan_input_propagates_through_losses():
    x = lf.tensor([[1.0, float("nan"), 0.5], [0.2, 0.1, 0.3]], requires_grad=True)
    loss = F.cross_entropy(x, lf.tensor([0, 2]))
    assert np.isnan(loss.item())
    loss.backward()
    assert np.isnan(x.grad.numpy()[0]).all() and np.isfinite(x.grad.numpy()[1]).all()
    y = F.layer_norm(lf.tensor([[1.0, float("nan")], [1.0, 2.0]]), 2)
    assert np.isnan(y.numpy()[0]).all() and np.isfinite(y.numpy()[1]).all()


def test_kernels_from_two_python_threads(rng):
    import threading

    x = rng.standard_normal((512, 300)).astype(np.float32)
    t = rng.integers(0, 300, 512)
    ref_loss, ref_grad = ops.cross_entropy(x, t)
    ref_ln = ops.layer_norm(x, 300)[0]
    bad = []

    def work():
        for _ in range(20):
            loss, grad = ops.cross_entropy(x, t)
            if loss != ref_loss or not np.array_equal(grad, ref_grad) or not np.array_equal(ops.layer_norm(x, 300)[0], ref_ln):
                bad.append(1)

    ths = [threading.Thread(target=work) for _ in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not bad
