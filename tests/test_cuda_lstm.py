"""LSTM on the GPU (csrc/cuda/lstm.cu) against the float64 equations and the CPU kernels, both recurrences
(persistent and stepwise); plus, runnable anywhere, the GPU code path of ops.lstm / lstm_backward /
lstm_cell on a numpy stand-in for cupy and the CUDA module (tests/fake_gpu.py)."""
import numpy as np
import pytest

from layerforge import ops
from conftest import rel_err
from fake_gpu import fake_kernels, gpu  # noqa: F401  (fixture)
from test_lstm import make, ref_lstm


# ---------------------------------------------------------------- anywhere: the Python side of the GPU path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias,state", [(True, True), (False, False)])
def test_gpu_path_logic_matches_cpu(fake_kernels, rng, dtype, bias, state):
    T, B, I, H = 4, 3, 5, 6
    args = make(rng, T, B, I, H, dtype, bias, state)
    x = np.asarray(args[0]).transpose(1, 0, 2).copy().transpose(1, 0, 2)  # strided: copied by the GPU path
    args = (x,) + tuple(args[1:])
    y_c, h_c, c_c, s_c = ops.lstm(*args, return_saved=True)
    y, h, c, s = ops.lstm(*(gpu(a) for a in args), return_saved=True)
    assert [k[0] for k in fake_kernels.calls] == ["lstm_forward"]
    for a, b in ((y, y_c), (h, h_c), (c, c_c)):
        assert a.dtype == dtype and rel_err(a, b) < 1e-14
    gy, gh = rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    g = ops.lstm_backward(gpu(gy), s, grad_h_T=gpu(gh))
    g_c = ops.lstm_backward(gy, s_c, grad_h_T=gh)
    assert fake_kernels.calls[-1][0] == "lstm_backward"
    for a, b in zip(g, g_c):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel_err(a, b) < 1e-14
    hn, cn = ops.lstm_cell(gpu(args[0][0]), gpu(h_c), gpu(c_c), *(gpu(a) for a in args[3:]))
    hn_c, cn_c = ops.lstm_cell(args[0][0], h_c, c_c, *args[3:])
    assert rel_err(hn, hn_c) < 1e-14 and rel_err(cn, cn_c) < 1e-14


def test_gpu_path_errors(fake_kernels, rng):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = make(rng, 3, 2, 4, 5)
    with pytest.raises(TypeError, match=r"x, w_ih, w_hh are GPU arrays but h0 is not"):
        ops.lstm(gpu(x), h0, None, gpu(w_ih), gpu(w_hh))
    with pytest.raises(TypeError, match=r"x has dtype int32; supported on the GPU: float32, float64"):
        ops.lstm(gpu(x.astype(np.int32)), None, None, gpu(w_ih), gpu(w_hh))
    with pytest.raises(ValueError, match=r"w_hh must have shape \(4H, H\)"):
        ops.lstm(gpu(x), None, None, gpu(w_ih), gpu(w_hh[:-1]))
    with pytest.raises(TypeError, match=r"w_ih has dtype float32 but x has dtype float64"):
        ops.lstm(gpu(x), None, None, gpu(w_ih.astype(np.float32)), gpu(w_hh))
    _, _, _, s = ops.lstm(gpu(x), gpu(h0), gpu(c0), gpu(w_ih), gpu(w_hh), return_saved=True)
    with pytest.raises(TypeError, match=r"saved is a GPU array but grad_y is not"):
        ops.lstm_backward(np.ones((3, 2, 5)), s)
    with pytest.raises(ValueError, match=r"grad_h_T must have shape \(2, 5\)"):
        ops.lstm_backward(None, s, grad_h_T=gpu(np.ones((2, 4))))
    with pytest.raises(TypeError, match=r"h is a GPU array but x"):
        ops.lstm_cell(x[0], gpu(h0), c0, w_ih, w_hh)


# ---------------------------------------------------------------- on the GPU
@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture(params=["auto", "stepwise"])
def recurrence(request, monkeypatch):
    """Run once with the recurrence the launcher picks (persistent where W_hh fits) and once stepwise."""
    if request.param == "stepwise":
        monkeypatch.setenv("LAYERFORGE_LSTM_CUDA_ALGO", "stepwise")
    else:
        monkeypatch.delenv("LAYERFORGE_LSTM_CUDA_ALGO", raising=False)
    return request.param


def to_gpu(cp, args):
    return [None if a is None else cp.asarray(a) for a in args]


def gpu_run(cp, args, gy, ghT=None, gcT=None):
    """Forward and backward on the GPU; numpy results."""
    y, h, c, s = ops.lstm(*to_gpu(cp, args), return_saved=True)
    g = ops.lstm_backward(cp.asarray(gy), s, None if ghT is None else cp.asarray(ghT),
                          None if gcT is None else cp.asarray(gcT))
    return [cp.asnumpy(a) for a in (y, h, c)], [None if a is None else cp.asnumpy(a) for a in g]


SHAPES = [(1, 1, 3, 5), (4, 3, 7, 13), (6, 32, 28, 33), (3, 2, 1, 16), (5, 5, 9, 64), (28, 32, 28, 128),
          (3, 37, 19, 256), (2, 300, 8, 40)]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_matches_reference_and_cpu(cp, rng, recurrence, dtype, T, B, I, H):
    for bias, state in ((True, True), (False, False), (True, False)):
        args = make(rng, T, B, I, H, dtype, bias, state)
        gy = rng.standard_normal((T, B, H)).astype(dtype)
        ghT = rng.standard_normal((B, H)).astype(dtype)
        gcT = rng.standard_normal((B, H)).astype(dtype)
        (y, h, c), g = gpu_run(cp, args, gy, ghT, gcT)
        ry, rh, rc = ref_lstm(*args)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        assert rel_err(y, ry) < tol and rel_err(h, rh) < tol and rel_err(c, rc) < tol
        # gradients: the CPU kernels in float64 (checked there against finite differences)
        args64 = [None if a is None else a.astype(np.float64) for a in args]
        _, _, _, s64 = ops.lstm(*args64, return_saved=True)
        g64 = ops.lstm_backward(gy.astype(np.float64), s64, ghT.astype(np.float64), gcT.astype(np.float64))
        for name, a, b in zip(ops.LSTMGrads._fields, g, g64):
            assert (a is None) == (b is None), name
            if a is not None:
                assert a.dtype == dtype and rel_err(a, b) < (1e-4 if dtype == np.float32 else 1e-11), name


@pytest.mark.cuda
def test_recurrence_choice(cp, monkeypatch):
    from layerforge import _cuda

    assert _cuda.lstm_recurrence(32, 128, "float32") == "persistent"
    assert _cuda.lstm_recurrence(64, 512, "float32", True) == "persistent"
    assert _cuda.lstm_recurrence(64, 4096, "float32") == "stepwise"  # W_hh (256 MiB) cannot stay on chip
    monkeypatch.setenv("LAYERFORGE_LSTM_CUDA_ALGO", "stepwise")
    assert _cuda.lstm_recurrence(32, 128, "float32") == "stepwise"
    with pytest.raises(TypeError, match="float32"):
        _cuda.lstm_recurrence(32, 128, "float16")


@pytest.mark.cuda
def test_large_hidden_size_runs_stepwise(cp, rng):
    T, B, I, H = 3, 5, 7, 1500
    args = make(rng, T, B, I, H, np.float32, scale=0.05)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    (y, h, c), g = gpu_run(cp, args, gy)
    y_c, h_c, c_c, s = ops.lstm(*args, return_saved=True)
    g_c = ops.lstm_backward(gy, s)
    assert rel_err(y, y_c) < 2e-5 and rel_err(c, c_c) < 2e-5
    for a, b in zip(g, g_c):
        assert rel_err(a, b) < 1e-4


@pytest.mark.cuda
def test_strided_inputs(cp, rng, recurrence):
    T, B, I, H = 5, 4, 6, 7
    x = cp.asarray(rng.standard_normal((B, T, I))).transpose(1, 0, 2)
    w_ih = cp.asarray(rng.standard_normal((I, 4 * H)) * 0.5).T
    w_hh = cp.asarray(rng.standard_normal((4 * H, 2 * H)) * 0.5)[:, ::2]
    h0 = cp.asarray(rng.standard_normal((B, 2 * H)))[:, ::2]
    c0 = cp.asarray(rng.standard_normal((2 * B, H)))[::2]
    b_ih = cp.asarray(rng.standard_normal(8 * H))[::2]
    y, h, c, s = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, None, return_saved=True)
    host = [cp.asnumpy(a) for a in (x, h0, c0, w_ih, w_hh, b_ih)]
    ry, rh, rc = ref_lstm(*host, None)
    assert rel_err(cp.asnumpy(y), ry) < 1e-12 and rel_err(cp.asnumpy(c), rc) < 1e-12
    gy = rng.standard_normal((B, T, H))
    g = ops.lstm_backward(cp.asarray(gy).transpose(1, 0, 2), s)
    _, _, _, s_c = ops.lstm(*host, None, return_saved=True)
    g_c = ops.lstm_backward(gy.transpose(1, 0, 2), s_c)
    for a, b in zip(g, g_c):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel_err(cp.asnumpy(a), b) < 1e-12


@pytest.mark.cuda
@pytest.mark.parametrize("H", [128, 512])
def test_deterministic(cp, rng, recurrence, H):
    args = make(rng, 10, 16, 32, H, np.float32, scale=0.1)
    gy = rng.standard_normal((10, 16, H)).astype(np.float32)
    a = gpu_run(cp, args, gy)
    b = gpu_run(cp, args, gy)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert np.array_equal(x, y)


@pytest.mark.cuda
def test_accumulate_through_the_binding(cp, rng, recurrence):
    from layerforge import _cuda

    T, B, I, H = 3, 4, 5, 6
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = to_gpu(cp, make(rng, T, B, I, H))
    y, h, c, s = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, return_saved=True)
    gy = cp.asarray(rng.standard_normal((T, B, H)))
    g = ops.lstm_backward(gy, s)
    acc = [cp.asarray(rng.standard_normal(a.shape)) for a in (g.grad_w_ih, g.grad_w_hh, g.grad_b_ih, g.grad_b_hh)]
    before = [a.copy() for a in acc]
    outs = [cp.empty_like(a) for a in (g.grad_x, g.grad_h0, g.grad_c0)]
    _cuda.lstm_backward(s.x, s.h0, s.c0, s.w_ih, s.w_hh, s.y, s.gates, s.cells, gy, None, None, *outs, *acc, True,
                        cp.cuda.get_current_stream().ptr)
    for a, b0, gref in zip(acc, before, (g.grad_w_ih, g.grad_w_hh, g.grad_b_ih, g.grad_b_hh)):
        assert rel_err(cp.asnumpy(a), cp.asnumpy(b0 + gref)) < 1e-13


@pytest.mark.cuda
def test_lstm_cell(cp, rng):
    B, I, H = 3, 4, 9
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(rng, 1, B, I, H)
    hn, cn, saved = ops.lstm_cell(*to_gpu(cp, (x[0], h, c, w_ih, w_hh, b_ih, b_hh)), return_saved=True)
    _, rh, rc = ref_lstm(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert rel_err(cp.asnumpy(hn), rh) < 1e-12 and rel_err(cp.asnumpy(cn), rc) < 1e-12
    gh, gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    g = ops.lstm_cell_backward(cp.asarray(gh), cp.asarray(gc), saved)
    _, _, _, s_c = ops.lstm(x, h, c, w_ih, w_hh, b_ih, b_hh, return_saved=True)
    g_c = ops.lstm_backward(None, s_c, gh, gc)
    assert rel_err(cp.asnumpy(g.grad_x), g_c.grad_x[0]) < 1e-12
    assert rel_err(cp.asnumpy(g.grad_w_hh), g_c.grad_w_hh) < 1e-12


@pytest.mark.cuda
@pytest.mark.parametrize("T,B,H", [(0, 3, 4), (3, 0, 4), (3, 2, 0)])
def test_empty_sizes(cp, rng, T, B, H):
    args = make(rng, T, B, 5, H)
    gy = rng.standard_normal((T, B, H))
    ghT = rng.standard_normal((B, H))
    (y, h, c), g = gpu_run(cp, args, gy, ghT)
    y_c, h_c, c_c, s = ops.lstm(*args, return_saved=True)
    g_c = ops.lstm_backward(gy, s, ghT)
    for a, b in zip([y, h, c] + list(g), [y_c, h_c, c_c] + list(g_c)):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-12)


@pytest.mark.cuda
def test_runs_on_the_current_stream(cp, rng):
    args = to_gpu(cp, make(rng, 20, 8, 16, 64, np.float32, scale=0.2))
    expect = ops.lstm(*args)[0]
    cp.cuda.Device().synchronize()
    with cp.cuda.Stream(non_blocking=True) as s:
        got = ops.lstm(*args)[0]
        s.synchronize()
    assert cp.array_equal(got, expect)
