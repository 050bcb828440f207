"""layerforge.nn modules: registration, state_dict with torch's keys, loading torch weights, default
initialisation, errors, and an end-to-end training run."""
import math

import numpy as np
import pytest

import layerforge as lf
from layerforge import nn
import layerforge.nn.functional as F
from conftest import rel_err


class Net(nn.Module):
    def __init__(self, lib_nn):
        super().__init__()
        self.emb = lib_nn.Embedding(10, 8, padding_idx=0)
        self.body = lib_nn.Sequential(lib_nn.Linear(8, 16), lib_nn.LayerNorm(16), lib_nn.GELU(), lib_nn.Dropout(0.1),
                                      lib_nn.Linear(16, 16), lib_nn.Tanh())
        self.heads = lib_nn.ModuleList([lib_nn.Linear(16, 3), lib_nn.Linear(16, 3, bias=False)])

    def forward(self, idx):
        h = self.body(self.emb(idx)).mean(1)
        return self.heads[0](h) + self.heads[1](h)


def make_torch_net(torch):
    tnn = torch.nn

    class TNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(10, 8, padding_idx=0)
            self.body = tnn.Sequential(tnn.Linear(8, 16), tnn.LayerNorm(16), tnn.GELU(), tnn.Dropout(0.1),
                                       tnn.Linear(16, 16), tnn.Tanh())
            self.heads = tnn.ModuleList([tnn.Linear(16, 3), tnn.Linear(16, 3, bias=False)])

        def forward(self, idx):
            h = self.body(self.emb(idx)).mean(1)
            return self.heads[0](h) + self.heads[1](h)

    return TNet()


def test_module_registration_and_state_dict_roundtrip():
    m = Net(nn)
    names = [n for n, _ in m.named_parameters()]
    assert names == ["emb.weight", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
                     "body.4.weight", "body.4.bias", "heads.0.weight", "heads.0.bias", "heads.1.weight"]
    assert len(list(m.children())) == 3 and len(list(m.modules())) == 12
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in m.parameters())
    sd = m.state_dict()
    assert list(sd) == names and sd["body.0.weight"].shape == (16, 8)
    m2 = Net(nn)
    m2.load_state_dict({k: v.numpy() for k, v in sd.items()})
    idx = lf.tensor([[1, 2, 0], [4, 5, 6]])
    m.eval(), m2.eval()
    np.testing.assert_array_equal(m(idx).detach().numpy(), m2(idx).detach().numpy())
    assert not m.training and not m.body[3].training
    m.train()
    assert m.body[3].training
    with pytest.raises(RuntimeError, match="Missing key"):
        m2.load_state_dict({k: v for k, v in sd.items() if k != "emb.weight"})
    with pytest.raises(RuntimeError, match="size mismatch"):
        m2.load_state_dict({**sd, "emb.weight": np.zeros((3, 3), np.float32)})
    res = m2.load_state_dict({k: v for k, v in sd.items() if k != "emb.weight"}, strict=False)
    assert res.missing_keys == ["emb.weight"]


def test_torch_state_dict_loads_and_matches(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = make_torch_net(torch).eval()
    m = Net(nn).eval()
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    idx = rng.integers(0, 10, (4, 5))
    out = m(lf.tensor(idx))
    tout = tm(torch.tensor(idx))
    assert rel_err(out.detach().numpy(), tout.detach().numpy()) < 1e-5
    out.sum().backward()
    tout.sum().backward()
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        assert rel_err(p.grad.numpy(), tparams[name].grad.numpy()) < 1e-4, name


def test_default_init_like_torch():
    lf.manual_seed(0)
    lin = nn.Linear(400, 300)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    bound = 1 / math.sqrt(400)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    e = nn.Embedding(1000, 50, padding_idx=3).weight.detach().numpy()
    assert abs(e.std() - 1) < 0.02 and (e[3] == 0).all()
    ln = nn.LayerNorm(7)
    assert (ln.weight.detach().numpy() == 1).all() and (ln.bias.detach().numpy() == 0).all()
    t = lf.zeros(64, 32)
    nn.init.xavier_uniform_(t)
    assert np.abs(t.numpy()).max() <= math.sqrt(6 / 96)
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(t.numpy().std() - math.sqrt(2 / 32)) < 0.03
    nn.init.zeros_(t)
    assert not t.numpy().any()
    nn.init.ones_(t)
    nn.init.constant_(t, 2.5)
    assert (t.numpy() == 2.5).all()


def test_errors_name_layer_and_shapes():
    lin = nn.Linear(10, 5)
    with pytest.raises(ValueError, match=r"Linear\(in_features=10, out_features=5.*\(3, 7\)"):
        lin(lf.randn(3, 7))
    with pytest.raises(ValueError, match=r"LayerNorm.*\(2, 5\)"):
        nn.LayerNorm(4)(lf.randn(2, 5))
    with pytest.raises(RuntimeError, match="cuda|CUDA"):
        lin.to("cuda")
    assert lin.to("cpu") is lin
    lin.double()
    assert lin.weight.dtype == np.float64


def test_zero_grad_and_losses_modules(rng):
    m = nn.Linear(4, 3)
    x = lf.randn(5, 4)
    nn.CrossEntropyLoss()(m(x), lf.tensor([0, 1, 2, 1, 0])).backward()
    assert m.weight.grad is not None
    m.zero_grad(set_to_none=False)
    assert not m.weight.grad.numpy().any()
    m.zero_grad()
    assert m.weight.grad is None
    y = lf.rand(5, 3)
    for loss in (nn.MSELoss(), nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss(label_smoothing=0.1)):
        assert np.isfinite(loss(m(x), y if not isinstance(loss, nn.CrossEntropyLoss) else lf.tensor([0, 1, 2, 1, 0])).item())
    assert np.isfinite(nn.BCELoss()(nn.Sigmoid()(m(x)), y).item())
    sm = nn.Softmax(dim=1)(m(x)).detach().numpy()
    np.testing.assert_allclose(sm.sum(1), 1, rtol=1e-6)
    assert nn.Flatten()(lf.zeros(2, 3, 4)).shape == (2, 12)
    assert nn.LeakyReLU(0.2)(lf.tensor([-1.0])).item() == pytest.approx(-0.2)


def test_mlp_loss_falls_on_separable_data():
    rng = np.random.default_rng(0)
    n, d = 512, 20
    centers = rng.standard_normal((4, d)) * 2
    y = rng.integers(0, 4, n)
    x = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    lf.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = lf.optim.Adam(model.parameters(), lr=1e-2)
    X, Y = lf.tensor(x), lf.tensor(y)
    losses = []
    for epoch in range(5):
        for i in range(0, n, 32):
            opt.zero_grad()
            loss = F.cross_entropy(model(X[i:i + 32]), Y[i:i + 32])
            loss.backward()
            opt.step()
        with lf.no_grad():
            losses.append(F.cross_entropy(model(X), Y).item())
    assert losses[-1] < 0.3 * losses[0] or losses[-1] < 0.05
    with lf.no_grad():
        acc = (model(X).argmax(1) == Y).float().mean().item()
    assert acc > 0.95
