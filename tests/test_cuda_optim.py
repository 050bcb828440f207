"""CUDA multi-tensor optimizer steps (csrc/cuda/optim.cu) against the CPU kernels over several steps:
SGD (momentum, dampening, nesterov, weight decay, maximize), Adam / AdamW (amsgrad), RMSprop (centered,
momentum), on many tensors of odd sizes (chunk edges, vector and scalar paths, misaligned views),
float32 and float64, per-parameter hyperparameters, the optimizer classes, and the error paths. Marked
cuda: skipped without a GPU (conftest)."""
import numpy as np
import pytest

import layerforge as lf
from layerforge import nn, ops, optim
from conftest import rel_err

pytestmark = pytest.mark.cuda

# 32768 is the kernel's chunk: sizes on and around its edges, and around the 4-element pack
SIZES = [1, 3, 4, 5, 31, 33, 1025, 4097, 32767, 32768, 32769, 100003]
TOL = {np.float32: 1e-6, np.float64: 1e-14}

CONFIGS = {
    "sgd": dict(momentum=0.0),
    "sgd_momentum": dict(momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd_nesterov": dict(momentum=0.8, nesterov=True, weight_decay=0.1, maximize=True),
    "adam": dict(),
    "adam_amsgrad": dict(amsgrad=True, weight_decay=0.1, beta1=0.8, beta2=0.99),
    "adamw": dict(decoupled=True, weight_decay=0.05),
    "adamw_amsgrad": dict(decoupled=True, weight_decay=0.05, amsgrad=True, maximize=True, eps=1e-6),
    "rmsprop": dict(),
    "rmsprop_full": dict(centered=True, momentum=0.5, weight_decay=0.05, alpha=0.9),
}


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


def host(a):
    import cupy

    return cupy.asnumpy(a)


def _state_names(kind, kw):
    if kind == "sgd":
        return ["momentum_buffer"] if kw.get("momentum") else []
    if kind == "adam":
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kw.get("amsgrad") else [])
    return ["square_avg"] + (["grad_avg"] if kw.get("centered") else []) + (["momentum_buffer"] if kw.get("momentum") else [])


def _run_steps(kind, kw, params, grads_per_step, xp, multi):
    """Steps on copies of params; returns (params, states) as numpy. multi: the *_step_multi call on
    lists, else one single-tensor CPU call per parameter."""
    ps = [xp.array(p, copy=True) for p in params]
    names = _state_names(kind, kw)
    states = {n: [xp.zeros_like(p) for p in ps] for n in names}
    lrs = [0.01 * (1 + i % 3) for i in range(len(ps))]  # per-parameter lr (as param groups)
    for step, grads in enumerate(grads_per_step, start=1):
        gs = [xp.asarray(g) for g in grads]
        if kind == "sgd":
            bufs = states.get("momentum_buffer")
            args = dict(lr=lrs, first_step=step == 1, **kw)
            if multi:
                ops.optim.sgd_step_multi(ps, gs, bufs, **args)
            else:
                for i in range(len(ps)):
                    ops.optim.sgd_step(ps[i], gs[i], bufs[i] if bufs else None, **dict(args, lr=lrs[i]))
        elif kind == "adam":
            vmax = states.get("max_exp_avg_sq")
            steps = [step + (i % 2) for i in range(len(ps))]  # parameters at different step counts
            if multi:
                ops.optim.adam_step_multi(ps, gs, states["exp_avg"], states["exp_avg_sq"], vmax, step=steps, lr=lrs, **kw)
            else:
                for i in range(len(ps)):
                    ops.optim.adam_step(ps[i], gs[i], states["exp_avg"][i], states["exp_avg_sq"][i],
                                        vmax[i] if vmax else None, step=steps[i], lr=lrs[i], **kw)
        else:
            ga, buf = states.get("grad_avg"), states.get("momentum_buffer")
            if multi:
                ops.optim.rmsprop_step_multi(ps, gs, states["square_avg"], ga, buf, lr=lrs, **kw)
            else:
                for i in range(len(ps)):
                    ops.optim.rmsprop_step(ps[i], gs[i], states["square_avg"][i], ga[i] if ga else None,
                                           buf[i] if buf else None, lr=lrs[i], **kw)
    to_np = host if xp is not np else (lambda a: a)
    return [to_np(p) for p in ps], {n: [to_np(a) for a in v] for n, v in states.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_multi_tensor_matches_cpu(cp, rng, config, dtype):
    kind = config.split("_")[0].replace("adamw", "adam")
    kw = CONFIGS[config]
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    grads = [[rng.standard_normal(n).astype(dtype) for n in SIZES] for _ in range(4)]
    got, got_state = _run_steps(kind, kw, params, grads, cp, multi=True)
    want, want_state = _run_steps(kind, kw, params, grads, np, multi=False)
    for a, b in zip(got, want):
        assert rel_err(a, b) < TOL[dtype]
    for n in want_state:
        for a, b in zip(got_state[n], want_state[n]):
            assert rel_err(a, b) < 4 * TOL[dtype], n


def test_many_tensors_one_launch(cp, rng):
    """1000 tensors of random odd sizes (and 2-d shapes) in one call, float32, vs the CPU."""
    shapes = [(int(rng.integers(1, 300)),) if i % 3 else (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
              for i in range(1000)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    got, _ = _run_steps("adam", dict(amsgrad=True), params, grads, cp, multi=True)
    want, _ = _run_steps("adam", dict(amsgrad=True), params, grads, np, multi=False)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-6


def test_misaligned_views_use_the_scalar_path(cp, rng):
    """Tensors whose data is not 16-byte aligned (views offset by one element) next to aligned ones."""
    base = [cp.asarray(rng.standard_normal(n + 1).astype(np.float32)) for n in (5, 1025, 32769)]
    ps = [b[1:] for b in base] + [cp.asarray(rng.standard_normal(7).astype(np.float32))]
    assert all(p.data.ptr % 16 != 0 for p in ps[:3])
    gs = [cp.asarray(rng.standard_normal(p.shape).astype(np.float32)) for p in ps]
    ms = [cp.zeros_like(p)[...] for p in ps]
    vs = [cp.zeros(p.size + 1, cp.float32)[1:] for p in ps]  # misaligned state too
    ref = [host(p) for p in ps]
    before = [float(b[0]) for b in base]
    ops.optim.adam_step_multi(ps, gs, ms, vs, step=1, lr=0.1)
    for p, r, g in zip(ps, ref, gs):
        rm, rv = np.zeros_like(r), np.zeros_like(r)
        ops.optim.adam_step(r, host(g), rm, rv, step=1, lr=0.1)
        assert rel_err(host(p), r) < 1e-6
    assert [float(b[0]) for b in base] == before  # the element before each view is untouched


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_optimizer_classes_on_gpu_match_cpu(cp, rng, name):
    kw = {"SGD": dict(lr=0.1, momentum=0.9, nesterov=True), "Adam": dict(lr=0.01, amsgrad=True),
          "AdamW": dict(lr=0.01, weight_decay=0.1), "RMSprop": dict(lr=0.01, centered=True, momentum=0.3)}[name]
    init = [rng.standard_normal(s).astype(np.float32) for s in ((7, 5), (5,), (33, 31), (1,))]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in init] for _ in range(5)]
    out = {}
    for dev in ("cpu", "cuda"):
        ps = [nn.Parameter(lf.tensor(a).to(dev)) for a in init]
        opt = getattr(optim, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] * 0.5}], **kw)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = lf.tensor(g).to(dev)
            opt.step()
        out[dev] = [p.detach().cpu().numpy() for p in ps]
    for a, b in zip(out["cuda"], out["cpu"]):
        assert rel_err(a, b) < 2e-6


def test_errors(cp, rng):
    from layerforge import _cuda

    p = cp.zeros(5, cp.float32)
    g = cp.zeros(5, cp.float32)
    with pytest.raises(ValueError, match="max_exp_avg_sq is required"):
        ops.optim.adam_step_multi([p], [g], [cp.zeros_like(p)], [cp.zeros_like(p)], step=1, amsgrad=True)
    with pytest.raises(ValueError, match="momentum_buffer is required"):
        ops.optim.sgd_step_multi([p], [g], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"exp_avg has shape \(4,\), expected \(5,\)"):
        ops.optim.adam_step_multi([p], [g], [cp.zeros(4, cp.float32)], [cp.zeros_like(p)], step=1)
    with pytest.raises(TypeError, match="exp_avg has dtype float64, expected float32"):
        ops.optim.adam_step_multi([p], [g], [cp.zeros(5)], [cp.zeros_like(p)], step=1)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        ops.optim.sgd_step_multi([cp.zeros((4, 4), cp.float32).T], [cp.zeros((4, 4), cp.float32)], lr=0.1)
    with pytest.raises(ValueError, match="step must be >= 1"):
        ops.optim.adam_step_multi([p], [g], [cp.zeros_like(p)], [cp.zeros_like(p)], step=0)
    with pytest.raises(TypeError, match=r"tensor 1 has dtype float64, tensor 0 has float32"):
        _cuda.sgd_step_multi([p, cp.zeros(3)], [g, cp.zeros(3)], [None, None], [0.1] * 2, [0.0] * 2, [0.0] * 2,
                             [0.0] * 2, [False] * 2, [False] * 2, [False] * 2, 0)
    with pytest.raises(ValueError, match=r"params\[0\] is None"):
        _cuda.sgd_step_multi([None], [g], [None], [0.1], [0.0], [0.0], [0.0], [False], [False], [False], 0)
    with pytest.raises(ValueError, match="different lengths"):
        _cuda.sgd_step_multi([p], [g, g], [None], [0.1], [0.0], [0.0], [0.0], [False], [False], [False], 0)
    with pytest.raises(ValueError, match=r"lr has 2 entries for 1 parameters"):
        _cuda.sgd_step_multi([p], [g], [None], [0.1, 0.2], [0.0], [0.0], [0.0], [False], [False], [False], 0)
    # empty lists and empty tensors: nothing to do
    ops.optim.sgd_step_multi([], [], lr=0.1)
    ops.optim.sgd_step_multi([cp.zeros(0, cp.float32)], [cp.zeros(0, cp.float32)], lr=0.1)


def test_beyond_2_31_elements(cp):
    """64-bit offsets in the chunk arithmetic: one tensor of 2^31 + 5 float32 (SGD without momentum:
    param and grad, 17 GB); a few positions checked."""
    n = (1 << 31) + 5
    try:
        p = cp.ones(n, cp.float32)
        g = cp.full(n, 2.0, cp.float32)
    except cp.cuda.memory.OutOfMemoryError:
        pytest.skip("not enough GPU memory")
    ops.optim.sgd_step_multi([p], [g], lr=0.25)
    idx = cp.asarray(np.array([0, (1 << 31) - 1, 1 << 31, n - 1]))
    np.testing.assert_array_equal(host(p[idx]), np.full(4, 0.5, np.float32))
    del p, g
