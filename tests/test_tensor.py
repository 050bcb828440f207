"""layerforge.Tensor and autograd: ops against finite differences (float64) and torch, graph rules."""
import numpy as np
import pytest

import layerforge as lf
from layerforge.autograd import gradcheck
from conftest import rel_err


def T(rng, *shape, grad=True):
    return lf.tensor(rng.standard_normal(shape), dtype=lf.float64, requires_grad=grad)


def P(rng, *shape):  # positive values (log, pow, div)
    return lf.tensor(rng.uniform(0.5, 2.0, shape), dtype=lf.float64, requires_grad=True)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow_t"])
def test_broadcast_binary_gradcheck(rng, op):
    f = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b, "pow_t": lambda a, b: a ** b}[op]
    a, b = P(rng, 3, 1, 4), P(rng, 5, 1)
    assert gradcheck(f, [a, b])


def test_scalar_ops_gradcheck(rng):
    a = P(rng, 3, 4)
    assert gradcheck(lambda x: 2.0 - x * 3 + 1 / x - x ** 3 + x ** 0.5 + 2 ** x - (-x) / 4, [a])
    assert gradcheck(lambda x: x.exp().log() + x.abs() + x.clamp(0.7, 1.5), [a])


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_reductions_gradcheck(rng, dim, keepdim):
    a = T(rng, 3, 4, 5)
    assert gradcheck(lambda x: x.sum(dim, keepdim), [a])
    assert gradcheck(lambda x: x.mean(dim, keepdim), [a])
    if dim is None:
        assert gradcheck(lambda x: x.max(), [a])
    elif isinstance(dim, int):
        assert gradcheck(lambda x: x.max(dim, keepdim).values, [a])
        assert gradcheck(lambda x: x.min(dim, keepdim)[0], [a])


def test_shape_ops_gradcheck(rng):
    a = T(rng, 2, 3, 4)
    assert gradcheck(lambda x: x.reshape(6, 4) * 2, [a])
    assert gradcheck(lambda x: x.view(-1), [a])
    assert gradcheck(lambda x: x.flatten(1), [a])
    assert gradcheck(lambda x: x.transpose(0, 2) * lf.arange(2, dtype=lf.float64), [a])
    assert gradcheck(lambda x: x.permute(2, 0, 1).T, [a])
    assert gradcheck(lambda x: x.unsqueeze(1).squeeze(1).expand(3, 2, 3, 4), [a])


def test_indexing_gradcheck(rng):
    a = T(rng, 5, 4)
    assert gradcheck(lambda x: x[1:4, ::2], [a])
    assert gradcheck(lambda x: x[..., 1], [a])
    assert gradcheck(lambda x: x[lf.tensor([0, 2, 2, 4])], [a])  # repeated rows: scatter-add
    assert gradcheck(lambda x: x[[1, 1, 3], [0, 0, 2]], [a])
    assert gradcheck(lambda x: x[np.array([True, False, True, True, False])], [a])


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_gradcheck(rng, sa, sb):
    a, b = T(rng, *sa), T(rng, *sb)
    assert gradcheck(lambda x, y: x @ y, [a, b])


def test_functions_gradcheck(rng):
    a, b = T(rng, 3, 4), T(rng, 2, 4)
    assert gradcheck(lambda x, y: lf.cat([x, y], 0), [a, b])
    assert gradcheck(lambda x: lf.stack([x, x * 2], dim=1), [a])
    assert gradcheck(lambda x: lf.relu(x) + lf.sigmoid(x) + lf.tanh(x), [a])
    assert gradcheck(lambda x: lf.softmax(x, dim=0), [a])
    assert gradcheck(lambda x: lf.where(x > 0, x, x * 3), [a])
    assert gradcheck(lambda x, y: lf.maximum(x, y[:1]), [a, b])


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    xa = rng.standard_normal((4, 5)).astype(np.float32)
    wa = rng.standard_normal((5, 3)).astype(np.float32)
    ba = rng.standard_normal((3,)).astype(np.float32)
    x, w, b = (lf.tensor(v, requires_grad=True) for v in (xa, wa, ba))
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (xa, wa, ba))
    out = (lf.tanh(x @ w + b) * 2 - x[:, :3] / 3).softmax(1).max(1).values.sum()
    tout = (torch.tanh(tx @ tw + tb) * 2 - tx[:, :3] / 3).softmax(1).max(1).values.sum()
    out.backward()
    tout.backward()
    assert abs(out.item() - tout.item()) < 1e-5
    for a, t in ((x, tx), (w, tw), (b, tb)):
        assert rel_err(a.grad.numpy(), t.grad.numpy()) < 1e-5


def test_grad_accumulates_and_graph_is_freed(rng):
    x = lf.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 2 * np.array([1, 2, 3]))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    z = x * 2
    with pytest.raises(RuntimeError, match="scalar outputs"):
        z.backward()
    z.backward(lf.ones(3))
    np.testing.assert_allclose(x.grad.numpy(), [6, 10, 14])
    with pytest.raises(RuntimeError, match="does not require grad"):
        lf.tensor([1.0]).sum().backward()


def test_shared_subgraph_and_leaf_used_twice():
    x = lf.tensor(2.0, requires_grad=True)
    h = x * x
    y = h * h + h  # x^4 + x^2
    y.backward()
    assert x.grad.item() == pytest.approx(4 * 8 + 2 * 2)


def test_no_grad_detach_and_flags():
    x = lf.ones(2, 3, requires_grad=True)
    with lf.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    z = (x * 2).detach()
    assert not z.requires_grad
    assert x.is_leaf and not (x * 2).is_leaf

    @lf.no_grad()
    def f(t):
        return t + 1

    assert not f(x).requires_grad
    with pytest.raises(RuntimeError, match="requires grad"):
        x.numpy()
    assert x.detach().numpy().shape == (2, 3)
    with pytest.raises(RuntimeError):
        lf.tensor([1, 2]).requires_grad_()


def test_dtypes_constructors_and_device():
    assert lf.tensor([1.0, 2.0]).dtype == np.float32
    assert lf.tensor(np.zeros(3)).dtype == np.float64
    assert lf.tensor([1, 2]).dtype == np.int64
    assert lf.zeros(2, 3).shape == (2, 3) and lf.ones((4,)).dtype == np.float32
    assert lf.arange(5).dtype == np.int64 and lf.arange(0.0, 1.0, 0.25).shape == (4,)
    assert lf.zeros_like(lf.ones(2, dtype=lf.float64)).dtype == np.float64
    assert lf.ones_like(lf.zeros(3)).numpy().sum() == 3
    lf.manual_seed(3)
    a = lf.randn(3, 4).numpy().copy()
    r = lf.rand(5).numpy()
    assert r.min() >= 0 and r.max() < 1
    lf.manual_seed(3)
    np.testing.assert_array_equal(a, lf.randn(3, 4).numpy())
    t = lf.tensor([[1.5, 2.0]])
    assert t.device == "cpu" and t.to("cpu") is t and t.to(lf.float64).dtype == np.float64
    with pytest.raises(RuntimeError, match="CUDA|cuda"):
        t.to("cuda")
    assert lf.tensor(3.5).item() == 3.5
    with pytest.raises(RuntimeError, match="cannot be converted"):
        t.item()
    assert lf.argmax(lf.tensor([[1, 5, 2], [7, 0, 1]]), dim=1).tolist() == [1, 0]
    assert ((lf.tensor([1, 2, 3]) == lf.tensor([1, 0, 3])).sum().item()) == 2
    assert (lf.tensor([1, 2]) + 1.5).dtype == np.float32  # int tensor + float scalar -> float
    assert (lf.tensor([1.0], dtype=lf.float64) * 2).dtype == np.float64


def test_nan_propagates():
    x = lf.tensor([1.0, float("nan"), -2.0], requires_grad=True)
    y = (lf.relu(x) + lf.sigmoid(x) + lf.tanh(x)).sum()
    assert np.isnan(y.item())
    y.backward()
    assert np.isnan(x.grad.numpy()[1]) and np.isfinite(x.grad.numpy()[[0, 2]]).all()
    assert np.isnan(lf.softmax(x.detach(), 0).numpy()).all()
