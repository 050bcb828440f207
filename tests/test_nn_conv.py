"""nn.functional conv2d / pooling and the nn.Conv2d / MaxPool2d / AvgPool2d / AdaptiveAvgPool2d modules:
float64 finite differences, a float64 reference, unbatched input, torch on the same inputs and weights
(functional, modules, a small CNN loaded from a torch state_dict), default init, reprs, errors, training."""
import math

import numpy as np
import pytest

import layerforge as lf
import layerforge.nn.functional as F
from layerforge import nn, ops
from layerforge.autograd import gradcheck
from conftest import rel_err
from test_conv import ref_conv

# (N, C, H, W, K, R, S, stride, padding, dilation, groups, bias): odd sizes, H != W, every argument used.
CONV_CASES = [
    (2, 3, 7, 5, 4, 3, 2, 1, 0, 1, 1, True),
    (1, 4, 6, 9, 6, 3, 3, 2, (1, 2), 1, 2, True),
    (2, 2, 8, 7, 4, 3, 3, (1, 2), 1, (2, 1), 2, False),  # depthwise with a channel multiplier of 2
    (1, 3, 5, 6, 5, 2, 3, 1, "same", (1, 2), 1, True),  # even kernel: asymmetric 'same' padding
    (3, 3, 4, 5, 2, 1, 1, 1, "valid", 1, 1, True),  # 1x1
]


def A(t):
    return t.detach().numpy()


def T(rng, *shape, grad=True):
    return lf.tensor(rng.standard_normal(shape), dtype=lf.float64, requires_grad=grad)


def conv_inputs(rng, case, grad=True):
    N, C, H, W, K, R, S, stride, padding, dilation, groups, bias = case
    x, w = T(rng, N, C, H, W, grad=grad), T(rng, K, C // groups, R, S, grad=grad)
    b = T(rng, K, grad=grad) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


# ---- finite differences and the float64 reference ------------------------------------------------------------
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_and_gradcheck(rng, case):
    x, w, b, kw = conv_inputs(rng, case)
    ref = ref_conv(A(x), A(w), None if b is None else A(b), kw["stride"], kw["padding"],
                   kw["dilation"], kw["groups"])
    assert rel_err(F.conv2d(x, w, b, **kw).detach().numpy(), ref) < 1e-13
    inputs = [x, w] + ([b] if b is not None else [])
    assert gradcheck(lambda *a: F.conv2d(*a, **kw), inputs)


POOLS = [
    lambda x: F.max_pool2d(x, 3, 2, 1),
    lambda x: F.max_pool2d(x, (2, 3), (1, 2), (1, 0), (2, 1), ceil_mode=True),
    lambda x: F.max_pool2d(x, 2, return_indices=True)[0],
    lambda x: F.avg_pool2d(x, 3, 2, 1),
    lambda x: F.avg_pool2d(x, (3, 2), (2, 1), (1, 1), ceil_mode=True, count_include_pad=False),
    lambda x: F.avg_pool2d(x, 2, divisor_override=3),
    lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
    lambda x: F.adaptive_avg_pool2d(x, (None, 4)),
]


@pytest.mark.parametrize("pool", POOLS)
def test_pool_gradcheck(rng, pool):
    assert gradcheck(pool, [T(rng, 2, 3, 7, 5)])


@pytest.mark.parametrize("pool", POOLS)
def test_pool_unbatched(rng, pool):
    x = rng.standard_normal((3, 7, 5))
    xb, xu = lf.tensor(x[None], requires_grad=True), lf.tensor(x, requires_grad=True)
    out_b, out_u = pool(xb), pool(xu)
    assert out_u.shape == out_b.shape[1:]
    np.testing.assert_array_equal(out_u.detach().numpy(), out_b.detach().numpy()[0])
    g = rng.standard_normal(out_u.shape)  # float64 like x (torch refuses a grad of another dtype)
    out_b.backward(lf.tensor(g[None]))
    out_u.backward(lf.tensor(g))
    np.testing.assert_array_equal(xu.grad.numpy(), xb.grad.numpy()[0])


def test_conv2d_unbatched(rng):
    x, w, b, kw = conv_inputs(rng, CONV_CASES[1])
    xu = T(rng, *x.shape[1:])
    out = F.conv2d(xu, w, b, **kw)
    assert out.shape == F.conv2d(xu.unsqueeze(0), w, b, **kw).shape[1:]
    assert gradcheck(lambda *a: F.conv2d(*a, **kw), [xu, w, b])
    m = nn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), groups=2).double()
    assert m(xu).shape == out.shape


def test_max_pool_indices_and_saved_for_backward(rng, monkeypatch):
    x = T(rng, 2, 3, 6, 5)
    out, idx = F.max_pool2d(x, 2, return_indices=True)
    assert idx.dtype == np.int64 and idx.shape == out.shape and not idx.requires_grad
    planes = A(x).reshape(6, -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, idx.numpy().reshape(6, -1), 1), A(out).reshape(6, -1))
    # the forward runs the kernel once and the backward reuses its argmax indices (no second forward)
    calls = []
    fwd, bwd = ops.max_pool2d, ops.max_pool2d_backward
    monkeypatch.setattr(ops, "max_pool2d", lambda *a, **k: calls.append("forward") or fwd(*a, **k))
    monkeypatch.setattr(ops, "max_pool2d_backward",
                        lambda *a, **k: calls.append(("backward", k["indices"] is not None)) or bwd(*a, **k))
    F.max_pool2d(x, 3, 2, 1).sum().backward()
    assert calls == ["forward", ("backward", True)]


def test_grads_only_where_needed(rng, monkeypatch):
    x, w, b, kw = conv_inputs(rng, CONV_CASES[0])
    F.conv2d(x, w, b, **kw).sum().backward()
    full = [x.grad, w.grad, b.grad]
    asked = []
    bwd = ops.conv2d_backward
    monkeypatch.setattr(ops, "conv2d_backward", lambda *a, **k: asked.append(
        (k["need_grad_x"], k["need_grad_weight"], k["bias"])) or bwd(*a, **k))
    frozen_w, x.grad = lf.tensor(A(w)), None
    F.conv2d(x, frozen_w, b, **kw).sum().backward()  # frozen weight: no grad_weight
    assert frozen_w.grad is None and rel_err(x.grad.numpy(), full[0].numpy()) < 1e-14
    w.grad = None
    F.conv2d(lf.tensor(A(x)), w, None, **kw).sum().backward()  # input without grad (a first layer), no bias
    assert rel_err(w.grad.numpy(), full[1].numpy()) < 1e-14
    assert asked == [(True, False, True), (False, True, False)]
    gx, gw, gb = bwd(np.ones((2, 4, 5, 4)), A(x), A(w), bias=False, need_grad_weight=False)
    assert gw is None and gb is None and rel_err(gx, full[0].numpy()) < 1e-14
    with lf.no_grad():
        assert F.conv2d(x, w, b, **kw)._ctx is None


def test_non_contiguous_input(rng):
    base = T(rng, 2, 3, 5, 7)
    x = base.permute(0, 1, 3, 2)  # (2, 3, 7, 5), strided view
    w = T(rng, 4, 3, 3, 2)
    out = F.max_pool2d(F.conv2d(x, w, padding=1), 2)
    ref = F.max_pool2d(F.conv2d(lf.tensor(A(x).copy()), w, padding=1), 2)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-14)
    assert gradcheck(lambda b, w: F.avg_pool2d(F.conv2d(b.permute(0, 1, 3, 2), w, padding=1), 2), [base, w])


# ---- torch on the same inputs -------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    x, w, b, kw = conv_inputs(rng, case)
    tx, tw = torch.tensor(A(x), requires_grad=True), torch.tensor(A(w), requires_grad=True)
    tb = None if b is None else torch.tensor(A(b), requires_grad=True)
    out, tout = F.conv2d(x, w, b, **kw), torch.nn.functional.conv2d(tx, tw, tb, **kw)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-13
    g = rng.standard_normal(out.shape)
    out.backward(lf.tensor(g))
    tout.backward(torch.tensor(g))
    for ours, theirs in [(x, tx), (w, tw)] + ([(b, tb)] if b is not None else []):
        assert rel_err(ours.grad.numpy(), theirs.grad.numpy()) < 1e-13


@pytest.mark.parametrize("name,args,kwargs", [
    ("max_pool2d", (3, 2, 1), {}),
    ("max_pool2d", ((2, 3), (1, 2), (1, 0), (2, 1)), dict(ceil_mode=True)),
    ("avg_pool2d", ((3, 2), (2, 1), (1, 1)), dict(ceil_mode=True, count_include_pad=False)),
    ("avg_pool2d", (2,), dict(divisor_override=3)),
    ("adaptive_avg_pool2d", ((3, 4),), {}),
])
def test_pool_matches_torch(rng, name, args, kwargs):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((2, 3, 7, 9))
    x, tx = lf.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out, tout = getattr(F, name)(x, *args, **kwargs), getattr(torch.nn.functional, name)(tx, *args, **kwargs)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-14
    g = rng.standard_normal(out.shape)
    out.backward(lf.tensor(g))
    tout.backward(torch.tensor(g))
    assert rel_err(x.grad.numpy(), tx.grad.numpy()) < 1e-14
    if name == "max_pool2d":
        _, idx = F.max_pool2d(x, *args, return_indices=True, **kwargs)
        _, tidx = torch.nn.functional.max_pool2d(tx, *args, return_indices=True, **kwargs)
        np.testing.assert_array_equal(idx.numpy(), tidx.numpy())


def make_cnn(lib_nn):
    """The tutorials' MNIST CNN, built from either library's nn."""
    return lib_nn.Sequential(lib_nn.Conv2d(1, 32, 3), lib_nn.ReLU(), lib_nn.MaxPool2d(2), lib_nn.Conv2d(32, 64, 3),
                             lib_nn.ReLU(), lib_nn.MaxPool2d(2), lib_nn.Flatten(), lib_nn.Linear(1600, 64),
                             lib_nn.ReLU(), lib_nn.Linear(64, 10))


def test_cnn_loads_torch_state_dict_same_outputs_and_grads(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm, m = make_cnn(torch.nn), make_cnn(nn)
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert list(m.state_dict()) == list(tm.state_dict())
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 3)
    out, tout = m(lf.tensor(x)), tm(torch.tensor(x))
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-5
    F.cross_entropy(out, lf.tensor(y)).backward()
    torch.nn.functional.cross_entropy(tout, torch.tensor(y)).backward()
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        assert rel_err(p.grad.numpy(), tparams[name].grad.numpy()) < 1e-4, name


@pytest.mark.parametrize("args,kwargs", [
    ((3, 8, 3), {}),
    ((4, 6, (3, 2)), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=False)),
    ((2, 4, 5), dict(padding="same", dilation=2)),
])
def test_conv2d_module_matches_torch(rng, args, kwargs):
    torch = pytest.importorskip("torch")
    tm = torch.nn.Conv2d(*args, **kwargs).double()
    m = nn.Conv2d(*args, **kwargs, dtype=lf.float64)
    assert repr(m) == repr(tm)
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    a = rng.standard_normal((2, args[0], 9, 7))
    x, tx = lf.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out, tout = m(x), tm(tx)
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-13
    (out * out).sum().backward()
    (tout * tout).sum().backward()
    assert rel_err(x.grad.numpy(), tx.grad.numpy()) < 1e-13
    for name, p in tm.named_parameters():
        assert rel_err(getattr(m, name).grad.numpy(), p.grad.numpy()) < 1e-13, name


def test_pool_modules_match_torch(rng):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    for make in (lambda n: n.MaxPool2d(3, 2, 1, ceil_mode=True), lambda n: n.MaxPool2d((2, 3), dilation=(1, 2)),
                 lambda n: n.AvgPool2d(3, 2, 1, count_include_pad=False), lambda n: n.AvgPool2d((2, 3)),
                 lambda n: n.AdaptiveAvgPool2d((2, None)), lambda n: n.AdaptiveAvgPool2d(1)):
        m, tm = make(nn), make(torch.nn)
        assert repr(m) == repr(tm)
        assert rel_err(m(lf.tensor(a)).numpy(), tm(torch.tensor(a)).numpy()) < 1e-6, repr(m)
    out, idx = nn.MaxPool2d(2, return_indices=True)(lf.tensor(a))
    tout, tidx = torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(a))
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    np.testing.assert_array_equal(out.numpy(), tout.numpy())


# ---- modules: init, repr, errors, training ------------------------------------------------------------------------
def test_conv2d_default_init():
    lf.manual_seed(0)
    for m, fan_in in [(nn.Conv2d(16, 32, 3), 16 * 9), (nn.Conv2d(8, 16, (3, 5), groups=4), 2 * 15)]:
        w, b = A(m.weight), A(m.bias)
        assert w.dtype == np.float32 and b.shape == (m.out_channels,)
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) gives the same bound as the bias
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
        assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
        assert np.abs(b).max() <= bound and b.std() > 0.3 * bound
    m = nn.Conv2d(3, 6, (2, 3), groups=3, bias=False)
    assert m.weight.shape == (6, 1, 2, 3) and m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]
    assert nn.Conv2d(2, 2, 1, dtype=lf.float64).weight.dtype == np.float64


def test_conv2d_repr():
    assert repr(nn.Conv2d(1, 32, 3)) == "Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))"
    assert (repr(nn.Conv2d(4, 8, (3, 5), 2, (1, 2), 2, 2, False))
            == "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 2), padding=(1, 2), dilation=(2, 2), groups=2, bias=False)")
    assert repr(nn.AdaptiveAvgPool2d((1, None))) == "AdaptiveAvgPool2d(output_size=(1, None))"


def test_errors_are_clear():
    conv = nn.Conv2d(1, 32, 3)
    with pytest.raises(ValueError, match=r"^Conv2d\(1, 32, kernel_size=\(3, 3\), stride=\(1, 1\)\): expected input "
                                         r"with 1 channels, got shape \(8, 3, 28, 28\)$"):
        conv(lf.randn(8, 3, 28, 28))
    with pytest.raises(ValueError, match=r"Conv2d\(1, 32.*3-d \(C, H, W\).*4-d.*got shape \(28, 28\)"):
        conv(lf.randn(28, 28))
    with pytest.raises(ValueError, match=r"Conv2d\(1, 32.*kernel size \(3, 3\).*larger than the padded input \(2, 5\)"):
        conv(lf.randn(1, 1, 2, 5))
    with pytest.raises(TypeError, match="dtype"):
        conv(lf.randn(1, 1, 5, 5, dtype=lf.float64))
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=5.*too small along H \(3\)"):
        nn.MaxPool2d(5)(lf.randn(1, 2, 3, 9))
    with pytest.raises(ValueError, match=r"AvgPool2d\(kernel_size=2.*got shape \(2, 3, 4, 5, 6\)"):
        nn.AvgPool2d(2)(lf.randn(2, 3, 4, 5, 6))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d\(output_size=0\).*output_size must be positive"):
        nn.AdaptiveAvgPool2d(0)(lf.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"^conv2d: expected a 3-d .* got shape \(3, 4\)"):
        F.conv2d(lf.randn(3, 4), lf.randn(1, 1, 1, 1))
    with pytest.raises(ValueError, match="channel mismatch"):
        F.conv2d(lf.randn(1, 4, 5, 5), lf.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match=r"^max_pool2d: .*got shape \(5,\)"):
        F.max_pool2d(lf.randn(5), 2)
    with pytest.raises(ValueError, match="padding_mode='reflect' is not supported by layerforge"):
        nn.Conv2d(1, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(1, 2, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        nn.Conv2d(1, 2, 3, padding="full")
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        nn.Conv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(3, 3, 3, groups=0)
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be positive, got \(0, 3\)"):
        nn.Conv2d(3, 3, (0, 3))
    with pytest.raises(ValueError, match=r"Conv2d: padding must be non-negative"):
        nn.Conv2d(3, 3, 3, padding=-1)
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        nn.Conv2d(3, 3, 2.5)


def test_cnn_trains_with_adam():
    rng = np.random.default_rng(0)
    lf.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 10))
    opt = lf.optim.Adam(model.parameters(), lr=1e-2)
    x = lf.tensor(rng.standard_normal((16, 1, 14, 14)).astype(np.float32))
    y = lf.tensor(rng.integers(0, 10, 16))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
