"""layerforge.optim: fused steps against torch.optim over several steps, hand-computed steps, state_dict,
schedulers, and the in-place contract of the kernels (pitfall 8)."""
import numpy as np
import pytest

import layerforge as lf
from layerforge import nn, ops, optim

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.1, amsgrad=True, eps=1e-6)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.05)),
]


def _run(lib, name, kw, init, grads, dtype):
    if lib == "torch":
        import torch

        ps = [torch.nn.Parameter(torch.tensor(a)) for a in init]
        opt = getattr(torch.optim, name)([{"params": ps[:1]}, {"params": ps[1:], "lr": kw["lr"] * 0.5}], **kw)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = torch.tensor(g)
            opt.step()
        return [p.detach().numpy() for p in ps]
    ps = [nn.Parameter(a.copy()) for a in init]
    opt = getattr(optim, name)([{"params": ps[:1]}, {"params": ps[1:], "lr": kw["lr"] * 0.5}], **kw)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = lf.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in ps]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_torch(rng, name, kw, dtype, tol):
    torch = pytest.importorskip("torch")
    init = [rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    grads = [[rng.standard_normal(a.shape).astype(dtype) for a in init] for _ in range(6)]
    ours = _run(lf, name, kw, init, grads, dtype)
    theirs = _run("torch", name, kw, init, grads, dtype)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert torch is not None


def test_hand_computed_steps():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for g, expect in (([1.0, 1.0], [0.9, -2.1]), ([1.0, 1.0], [0.71, -2.29])):  # buf 1, then 1.9
        p.grad = lf.tensor(np.array(g))
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), expect, rtol=1e-12)
    q = nn.Parameter(np.array([0.5]))
    adam = optim.Adam([q], lr=0.1)
    q.grad = lf.tensor(np.array([3.0]))
    adam.step()  # the first Adam step moves by lr * sign(g) (up to eps)
    assert q.item() == pytest.approx(0.4, abs=1e-8)


def test_state_dict_roundtrip_continues_identically(rng):
    init = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]
    p1 = nn.Parameter(init.copy())
    o1 = optim.Adam([p1], lr=0.01, amsgrad=True)
    for g in grads[:3]:
        p1.grad = lf.tensor(g)
        o1.step()
    sd = o1.state_dict()
    assert sd["param_groups"][0]["params"] == [0] and sd["state"][0]["step"] == 3
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    p2 = nn.Parameter(p1.detach().numpy().copy())
    o2 = optim.Adam([p2], lr=0.5, amsgrad=True)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["lr"] == 0.01
    for g in grads[3:]:
        for p, o in ((p1, o1), (p2, o2)):
            p.grad = lf.tensor(g)
            o.step()
    np.testing.assert_array_equal(p1.detach().numpy(), p2.detach().numpy())


def test_zero_grad_and_defaults():
    p = nn.Parameter(np.zeros(3, np.float32))
    opt = optim.SGD([p], lr=0.1)
    p.grad = lf.ones(3)
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.numpy().any()
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # params without grad are skipped
    assert optim.AdamW([p]).defaults["weight_decay"] == 1e-2
    assert optim.Adam([p]).defaults["betas"] == (0.9, 0.999)
    assert optim.RMSprop([p]).defaults["lr"] == 1e-2
    with pytest.raises(ValueError):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.Adam([], lr=0.1)


@pytest.mark.parametrize("sched,kw", [("StepLR", dict(step_size=2, gamma=0.5)),
                                      ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01)),
                                      ("LambdaLR", dict(lr_lambda=lambda e: 0.9 ** e))])
def test_schedulers_match_torch(sched, kw):
    torch = pytest.importorskip("torch")
    p = nn.Parameter(np.zeros(2, np.float32))
    o = optim.SGD([p], lr=0.1)
    s = getattr(optim.lr_scheduler, sched)(o, **kw)
    tp = torch.nn.Parameter(torch.zeros(2))
    to = torch.optim.SGD([tp], lr=0.1)
    ts = getattr(torch.optim.lr_scheduler, sched)(to, **kw)
    for _ in range(8):
        assert s.get_last_lr()[0] == pytest.approx(ts.get_last_lr()[0], rel=1e-9, abs=1e-12)
        o.step()
        to.step()
        s.step()
        ts.step()


def test_kernels_in_place_contract():
    p = np.zeros((4, 3), np.float32)
    g = np.ones((4, 3), np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    ops.optim.adam_step(p, g, m, v, step=1, lr=0.1)
    assert p[0, 0] == pytest.approx(-0.1, rel=1e-5) and m[0, 0] == pytest.approx(0.1)
    with pytest.raises(TypeError):  # float64 state for a float32 param: never silently converted
        ops.optim.adam_step(p, g, m.astype(np.float64), v, step=2, lr=0.1)
    with pytest.raises(ValueError, match="contiguous"):
        ops.optim.adam_step(p, g, np.zeros((3, 4), np.float32).T, v, step=2, lr=0.1)
    ro = np.zeros_like(p)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.optim.sgd_step(ro, g, lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer"):
        ops.optim.sgd_step(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="shape"):
        ops.optim.rmsprop_step(p, g, np.zeros(12, np.float32), lr=0.1)
    ops.optim.sgd_step(p, g.T.copy().T, lr=0.5)  # a non-contiguous grad is copied, not rejected
    assert p[0, 0] == pytest.approx(-0.6, rel=1e-5)
