"""Devices in the Tensor / Module / optimizer API: layerforge.device, the errors without a GPU, and the
GPU code paths driven on the CPU through a stand-in GPU (tests/fake_gpu.py: numpy arrays posing as cupy
arrays, the CUDA bindings' calls checked against their real signatures and run on the CPU kernels).
The same round trips and a training step on a real GPU are at the end (marked cuda)."""
import numpy as np
import pytest

import layerforge as lf
from layerforge import cuda, nn, ops, optim
from fake_gpu import FakeGpuArray, fake_gpu


@pytest.fixture
def gpu(monkeypatch):
    if cuda._load() is None:
        pytest.skip("the CUDA module is not built (the stand-in GPU checks calls against its bindings)")
    with fake_gpu(monkeypatch) as kernels:
        yield kernels


def on_gpu(t):
    return isinstance(t._data, FakeGpuArray)


# ---- layerforge.device ------------------------------------------------------------------------------------
def test_device_parsing():
    assert lf.device("cpu") == "cpu" and lf.device("cpu").type == "cpu" and lf.device("cpu").index is None
    d = lf.device("cuda:1")
    assert d == "cuda:1" and d.type == "cuda" and d.index == 1 and repr(d) == "device(type='cuda', index=1)"
    assert lf.device("cuda", 2) == "cuda:2" and lf.device("cuda").index is None
    assert lf.device(d) is d
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda device type at start of device string: tpu"):
        lf.device("tpu")
    with pytest.raises(RuntimeError, match="Invalid device string: 'cuda:x'"):
        lf.device("cuda:x")
    with pytest.raises(TypeError, match="expected a string"):
        lf.device(3.5)


def test_cpu_tensor_device_methods(rng):
    t = lf.tensor(rng.standard_normal((3, 2)))
    assert t.device == "cpu" and not t.is_cuda
    assert t.cpu() is t and t.to("cpu") is t and t.to(device="cpu") is t
    assert t.to("cpu", lf.float32).dtype == np.float32
    assert t.to(lf.zeros(1, dtype=lf.float32)).dtype == np.float32  # to(other): its device and dtype
    with pytest.raises(TypeError, match="unexpected keyword"):
        t.to(devise="cpu")


# ---- no GPU: every 'cuda' request says why -----------------------------------------------------------------
needs_no_gpu = pytest.mark.skipif(cuda.is_available(), reason="checks the errors given without a GPU")


@needs_no_gpu
@pytest.mark.parametrize("request_gpu", [
    lambda: lf.zeros(2, device="cuda"),
    lambda: lf.randn(2, 3, device="cuda:0"),
    lambda: lf.tensor([1.0, 2.0], device="cuda"),
    lambda: lf.arange(4, device="cuda"),
    lambda: lf.ones(2).to("cuda"),
    lambda: lf.ones(2).cuda(),
    lambda: lf.ones(2).to(device="cuda", dtype=lf.float64),
    lambda: nn.Linear(3, 2).to("cuda"),
    lambda: nn.Linear(3, 2).cuda(),
    lambda: cuda.synchronize(),
    lambda: cuda.current_device(),
], ids=["zeros", "randn", "tensor", "arange", "to", "cuda()", "to-kw", "Module.to", "Module.cuda", "synchronize",
        "current_device"])
def test_cuda_requests_without_gpu_raise_with_reason(request_gpu):
    reason = cuda.unavailable_reason()
    assert reason
    with pytest.raises(RuntimeError, match="no GPU is usable here") as e:
        request_gpu()
    assert reason in str(e.value)


@needs_no_gpu
def test_gpu_benchmarks_yield_no_cases_without_gpu():
    from layerforge.bench import FAMILIES, cuda_optim

    assert FAMILIES["cuda_optim"] == "layerforge.bench.cuda_optim"
    assert list(cuda_optim.cases()) == []


@needs_no_gpu
def test_cpu_still_works_without_gpu(rng):
    assert not cuda.is_available() and cuda.device_count() == 0
    x = lf.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    (x.relu() * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2.0 * (x.detach().numpy() > 0))


# ---- the GPU code paths on the stand-in GPU ----------------------------------------------------------------------
def test_round_trip_and_numpy_error(gpu, rng):
    a = rng.standard_normal((3, 5)).astype(np.float32)
    t = lf.tensor(a)
    g = t.to("cuda")
    assert on_gpu(g) and g.device == "cuda:0" and g.is_cuda and g.device.type == "cuda"
    assert g.cuda() is g and g.to("cuda:0") is g and t.cuda().device == "cuda:0"
    with pytest.raises(TypeError, match=r"can't convert cuda:0 device type tensor to numpy\. Use Tensor\.cpu\(\)"):
        g.numpy()
    with pytest.raises(TypeError, match="Use Tensor.cpu"):
        np.asarray(g)
    back = g.cpu()
    assert type(back._data) is np.ndarray and back.device == "cpu"
    np.testing.assert_array_equal(back.numpy(), a)
    assert "device='cuda:0'" in repr(g)
    assert g.to("cpu", lf.float64).dtype == np.float64
    assert g.sum().item() == pytest.approx(float(a.sum()), rel=1e-5)  # item(): a host copy
    np.testing.assert_array_equal(np.array(g.tolist(), np.float32), a)


def test_factories_with_device(gpu, rng):
    for t in (lf.zeros(2, 3, device="cuda"), lf.ones(4, device="cuda", dtype=lf.float64),
              lf.full((2,), 7.0, device="cuda"), lf.empty(3, device="cuda"), lf.arange(5, device="cuda"),
              lf.randn(2, 2, device="cuda"), lf.rand(3, device="cuda"), lf.randint(0, 5, (4,), device="cuda"),
              lf.randperm(6, device="cuda"), lf.tensor([1.0, 2.0], device="cuda"),
              lf.as_tensor(np.ones(3), device="cuda")):
        assert on_gpu(t) and t.device == "cuda:0"
    g = lf.ones(2, 3, device="cuda")
    for t in (lf.zeros_like(g), lf.ones_like(g), lf.randn_like(g), lf.rand_like(g)):
        assert on_gpu(t) and t.shape == (2, 3)
    assert lf.zeros_like(g, device="cpu").device == "cpu"
    # random draws come from layerforge's host generator: a seeded GPU init equals the CPU one
    lf.manual_seed(3)
    c = lf.randn(4, 3)
    lf.manual_seed(3)
    np.testing.assert_array_equal(lf.randn(4, 3, device="cuda").cpu().numpy(), c.numpy())
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        lf.zeros(1, device="cuda:3")


def test_mixed_devices_raise_naming_both(gpu, rng):
    c = lf.tensor(rng.standard_normal(3))
    g = lf.tensor(rng.standard_normal(3)).cuda()
    msg = "Expected all tensors to be on the same device, but found at least two devices"
    with pytest.raises(RuntimeError, match=msg + ", cuda:0 and cpu!"):
        g + c
    with pytest.raises(RuntimeError, match=msg + ", cpu and cuda:0!"):
        c * g
    with pytest.raises(RuntimeError, match=msg):
        lf.matmul(c.reshape(1, 3), g.reshape(3, 1))
    with pytest.raises(RuntimeError, match=msg):
        lf.cat([g, c])
    with pytest.raises(RuntimeError, match=msg):
        g.add_(c)
    with pytest.raises(RuntimeError, match=msg):
        lf.where(c > 0, g, g)
    with pytest.raises(RuntimeError, match="indices should be either on cpu or on the same device"):
        c[lf.tensor([0, 1]).cuda()]
    # ops layer: numpy and GPU arrays in one call
    with pytest.raises(TypeError, match="grad_y is a GPU array but saved is not"):
        ops.elementwise.activation_backward("relu", g._data, c._data)


def test_device_generic_ops_and_gradients(gpu, rng):
    """Every Tensor op whose glue is array-library code runs on the GPU's library and returns GPU grads
    equal to the CPU's."""
    a = rng.standard_normal((3, 4))
    b = rng.uniform(0.5, 2.0, (3, 4))

    def f(x, y):
        z = (x * y + 1.5 - x / y) ** 2 + x.exp() * 0.1 + y.log() + x.abs() + x.clamp(-0.5, 0.5) + y.sqrt()
        z = z + lf.maximum(x, y) + lf.where(x > 0, x, y * 2) + x[1:, ::2].sum() + x[[0, 2, 2]].sum(0).mean()
        z = z + lf.cat([x, y], 1)[:, :4] + lf.stack([x, y]).mean(0) + x.max(1, keepdim=True).values
        z = z + x.max() + x.transpose(0, 1).T + x.reshape(4, 3).reshape(3, 4) + y ** x
        z = z + x.unsqueeze(0).expand(2, 3, 4).sum(0) + x.var(1, keepdim=True) + (x.argmax(1) == 1).float()[:, None]
        return z.sum() + x.min()

    res = {}
    for dev in ("cpu", "cuda"):
        x = lf.tensor(a, requires_grad=True)
        y = lf.tensor(b, requires_grad=True)
        xd, yd = (x.to(dev), y.to(dev))
        out = f(xd, yd)
        assert on_gpu(out) == (dev == "cuda")
        out.backward()
        res[dev] = (out.item(), x.grad.numpy(), y.grad.numpy())
    assert res["cuda"][0] == pytest.approx(res["cpu"][0], rel=1e-12)
    np.testing.assert_allclose(res["cuda"][1], res["cpu"][1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res["cuda"][2], res["cpu"][2], rtol=1e-12, atol=1e-12)


def test_grads_stay_on_gpu_and_inplace_updates(gpu, rng):
    p = lf.tensor(rng.standard_normal((2, 3)), dtype=lf.float32).cuda().requires_grad_()
    (p * p).sum().backward()
    assert on_gpu(p.grad)
    np.testing.assert_allclose(p.grad.cpu().numpy(), 2 * p.detach().cpu().numpy(), rtol=1e-6)
    with lf.no_grad():
        q = p.detach()
        q.add_(1.0).mul_(2.0).sub_(lf.ones(2, 3, device="cuda"))
        q[0, 1] = 5.0
        q[lf.tensor([1])] = lf.zeros(1, 3, device="cuda")
        q.copy_(np.arange(6.0).reshape(2, 3))  # copy_ moves values across devices, as torch
        assert on_gpu(q)
        np.testing.assert_array_equal(q.cpu().numpy(), np.arange(6.0).reshape(2, 3))
        q.uniform_(-1, 1)
        q.normal_()
        assert on_gpu(q)


def test_elementwise_ops_dispatch_to_gpu(gpu, rng):
    """ops.elementwise on GPU arrays: the CUDA bindings are called (with the stream), cupy arrays come back,
    and the values equal the CPU's (the stand-in runs the CPU kernels: this checks the plumbing)."""
    cp = ops._common.cupy_module()
    x = rng.standard_normal((5, 33))
    xg = cp.asarray(x)
    for name in ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "leaky_relu"):
        y = ops.elementwise.activation(name, xg)
        assert isinstance(y, FakeGpuArray)
        np.testing.assert_array_equal(np.asarray(y), ops.elementwise.activation(name, x))
        np.testing.assert_array_equal(np.asarray(ops.elementwise.activation_backward(name, xg, xg)),
                                      ops.elementwise.activation_backward(name, x, x))
    for dim in (1, 0):
        np.testing.assert_array_equal(np.asarray(ops.softmax(xg, dim)), ops.softmax(x, dim))
        y = ops.log_softmax(x, dim)
        np.testing.assert_array_equal(np.asarray(ops.elementwise.log_softmax_backward(cp.asarray(x), cp.asarray(y), dim)),
                                      ops.elementwise.log_softmax_backward(x, y, dim))
    t = rng.integers(0, 33, 5)
    t[2] = -100
    w = rng.uniform(0.5, 2, 33)
    for red in ("mean", "sum", "none"):
        lg, gg = ops.cross_entropy(xg, cp.asarray(t), cp.asarray(w), label_smoothing=0.1, reduction=red)
        lc, gc = ops.cross_entropy(x, t, w, label_smoothing=0.1, reduction=red)
        assert isinstance(gg, FakeGpuArray) and isinstance(lg, FakeGpuArray)
        np.testing.assert_allclose(np.asarray(lg), lc, rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(gg), gc)
    t[0] = 40
    with pytest.raises(IndexError, match="Target 40 is out of bounds"):
        ops.cross_entropy(xg, cp.asarray(t))
    y, m, r = ops.layer_norm(xg, 33, cp.asarray(w), cp.asarray(w))
    gx, gw, gb = ops.layer_norm_backward(cp.asarray(x), xg, m, r, cp.asarray(w))
    yc, mc, rc = ops.layer_norm(x, 33, w, w)
    ref = ops.layer_norm_backward(x, x, mc, rc, w)
    for got, want in zip((y, m, r, gx, gw, gb), (yc, mc, rc) + ref):
        assert isinstance(got, FakeGpuArray)
        np.testing.assert_array_equal(np.asarray(got), want)
    assert all(isinstance(args[-1], int) for _, args in gpu.calls)


def _train(dev, make_opt, steps=3, seed=0):
    """A small MLP on Tensor ops (matmul, relu, tanh, log_softmax, layer norm), a few optimizer steps."""
    rng = np.random.default_rng(seed)
    w1 = nn.Parameter(rng.standard_normal((6, 5)) * 0.5)
    b1 = nn.Parameter(rng.standard_normal(6) * 0.1)
    w2 = nn.Parameter(rng.standard_normal((4, 6)) * 0.5)
    mods = nn.ModuleList()
    for p_name, p in (("w1", w1), ("b1", b1), ("w2", w2)):
        m = nn.Module()
        setattr(m, p_name, p)
        mods.append(m)
    mods.to(dev)
    params = [w1, b1, w2]
    opt = make_opt(params)
    x = lf.tensor(rng.standard_normal((7, 5))).to(dev)
    onehot = lf.tensor(np.eye(4)[rng.integers(0, 4, 7)]).to(dev)
    for _ in range(steps):
        opt.zero_grad()
        h = (x @ w1.T + b1).relu().tanh()
        logp = lf.nn.functional.log_softmax(h @ w2.T, dim=1)
        loss = -(logp * onehot).sum() / 7
        loss.backward()
        opt.step()
    return [p.detach().cpu().numpy() for p in params], opt


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}], lr=0.1, momentum=0.9,
                                nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_gpu_path_matches_cpu(gpu, name, monkeypatch):
    # ops.matmul is another family's GPU port: on the stand-in GPU it runs on the host copies
    from layerforge.tensor import _MatMul

    real_forward, real_backward = _MatMul.forward, _MatMul.backward
    as_gpu = ops._common.cupy_module().asarray

    def like(x, r):
        return as_gpu(r) if isinstance(x, FakeGpuArray) and r is not None else r

    monkeypatch.setattr(_MatMul, "forward", lambda self, a, b: like(a, real_forward(self, np.asarray(a), np.asarray(b))))
    monkeypatch.setattr(_MatMul, "backward", lambda self, g: tuple(like(g, r) for r in real_backward(self, np.asarray(g))))
    cpu, _ = _train("cpu", OPTIMIZERS[name])
    gpu.calls.clear()
    got, opt = _train("cuda", OPTIMIZERS[name])
    launches = [n for n, _ in gpu.calls if n.endswith("_step_multi")]
    assert launches == [f"{name.replace('adamw', 'adam')}_step_multi"] * 3  # one launch per step, all groups
    for a, b in zip(got, cpu):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    st = next(iter(opt.state.values()))
    assert all(isinstance(v, FakeGpuArray) for v in st.values() if hasattr(v, "shape"))
    sd = opt.state_dict()
    opt.load_state_dict(sd)  # state comes back on the parameters' device
    assert all(isinstance(v, FakeGpuArray) for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))


def test_multi_tensor_ops_on_gpu_arrays(gpu, rng):
    cp = ops._common.cupy_module()
    shapes = [(1,), (31,), (33, 3), (1025,), (4097,), (0,)]
    ps = [rng.standard_normal(s) for s in shapes]
    gs = [rng.standard_normal(s) for s in shapes]
    ms = [np.zeros(s) for s in shapes]
    vs = [np.zeros(s) for s in shapes]
    pg, gg, mg, vg = ([cp.asarray(a) for a in lst] for lst in (ps, gs, ms, vs))
    ops.optim.adam_step_multi(pg, gg, mg, vg, step=1, lr=[0.1 * (i + 1) for i in range(len(ps))])
    for i in range(len(ps)):
        ops.optim.adam_step(ps[i], gs[i], ms[i], vs[i], step=1, lr=0.1 * (i + 1))
        np.testing.assert_array_equal(np.asarray(pg[i]), ps[i])
    assert [n for n, _ in gpu.calls] == ["adam_step_multi"]
    # float32 and float64 parameters: one launch per dtype
    gpu.calls.clear()
    p32 = [cp.asarray(rng.standard_normal(3).astype(np.float32)), cp.asarray(rng.standard_normal(2))]
    ops.optim.sgd_step_multi(p32, [cp.zeros_like(p) for p in p32], lr=0.1)
    assert [n for n, _ in gpu.calls] == ["sgd_step_multi", "sgd_step_multi"]
    with pytest.raises(TypeError, match=r"params\[0\] is a GPU array but grads\[0\] is not"):
        ops.optim.sgd_step_multi(pg[:1], gs[:1], lr=0.1)
    with pytest.raises(ValueError, match="lr has 2 entries for 1 parameters"):
        ops.optim.sgd_step_multi(pg[:1], gg[:1], lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="grads has 2 entries for 1 parameters"):
        ops.optim.sgd_step_multi(pg[:1], gg[:2], lr=0.1)


def test_module_to_moves_parameters_buffers_and_grads(gpu, rng):
    lin = nn.Linear(3, 2)
    lin.register_buffer("running", lf.zeros(2))
    lin.weight.grad = lf.ones(2, 3)
    w = lin.weight
    assert lin.to("cuda") is lin and lin.weight is w  # the same Parameter objects
    assert on_gpu(lin.weight) and on_gpu(lin.bias) and on_gpu(lin.running) and on_gpu(lin.weight.grad)
    assert lin.weight.device == "cuda:0" and lin.weight.requires_grad
    sd = lin.state_dict()
    assert on_gpu(sd["weight"])
    lin.load_state_dict({k: np.full(v.shape, 0.5) for k, v in sd.items()})  # host values into a GPU model
    assert on_gpu(lin.weight) and float(lin.weight.sum().item()) == 3.0
    lin.to(lf.float64)
    assert lin.weight.dtype == np.float64 and on_gpu(lin.weight)
    lin.cpu()
    assert type(lin.weight._data) is np.ndarray and lin.running.device == "cpu"


def test_synchronize_and_queries(gpu):
    assert cuda.is_available() and cuda.current_device() == 0
    cuda.synchronize()
    cuda.synchronize("cuda:0")
    with pytest.raises(ValueError, match="expected a cuda device"):
        cuda.synchronize("cpu")


# ---- on a real GPU ---------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_real_gpu_round_trip(rng):
    import cupy

    a = rng.standard_normal((4, 7)).astype(np.float32)
    g = lf.tensor(a, device="cuda")
    assert isinstance(g._data, cupy.ndarray) and g.device == "cuda:0" and g.is_cuda
    np.testing.assert_array_equal(g.cpu().numpy(), a)
    with pytest.raises(TypeError, match="Use Tensor.cpu"):
        g.numpy()
    with pytest.raises(RuntimeError, match="same device"):
        g + lf.tensor(a)
    x = lf.tensor(a, requires_grad=True)
    (x.cuda() * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full_like(a, 3))
    m = nn.Linear(7, 3).cuda()
    assert isinstance(m.weight._data, cupy.ndarray)
    cuda.synchronize()


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_real_gpu_mlp_training_step_matches_cpu(name):
    # float64 so the comparison is tight; float32 kernels are covered in tests/test_cuda_*.py
    cpu, _ = _train("cpu", OPTIMIZERS[name])
    got, _ = _train("cuda", OPTIMIZERS[name])
    for a, b in zip(got, cpu):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
