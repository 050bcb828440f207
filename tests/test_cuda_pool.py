"""Pooling on the GPU (cupy arrays): against the float64 references of test_pool.py and the CPU kernels.
The GPU kernels make the same additions in the same order as the CPU ones, so results must be bitwise equal
to the CPU's (and max values / indices equal to the reference). Marked cuda (skipped without a device; run on
the CPU emulator with LAYERFORGE_CUDA_EMULATOR, see tests/cuda_emu)."""
import numpy as np
import pytest

import layerforge
from layerforge import ops
from conftest import rel_err
from test_pool import POOL_CONFIGS, ref_adaptive, ref_avg, ref_max, ref_max_backward, t_in, t_out

pytestmark = pytest.mark.cuda
cp = pytest.importorskip("cupy")

EMULATED = layerforge.cuda.compiled_architectures() == ["emulated"]


def _same(gpu, cpu):
    gpu = cp.asnumpy(gpu)
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape
    assert gpu.tobytes() == cpu.tobytes()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool(rng, dtype, layout):
    for cfg in POOL_CONFIGS:
        N, C, H, W, k, s, p, d, ceil = cfg
        x = np.round(rng.standard_normal((N, C, H, W)), 1)  # ties: the first maximum must win
        ref, ridx = ref_max(x.astype(dtype), k, s, p, d, ceil)
        go = t_in(rng.standard_normal(ref.shape).astype(dtype), layout)
        xa = t_in(x.astype(dtype), layout)
        xg, gog = cp.asarray(xa), cp.asarray(go)
        out, idx = ops.max_pool2d(xg, k, s, p, d, ceil, return_indices=True, layout=layout)
        assert isinstance(out, cp.ndarray) and out.dtype == dtype and idx.dtype == np.int64
        assert np.array_equal(t_out(cp.asnumpy(out), layout), ref.astype(dtype)), cfg
        assert np.array_equal(t_out(cp.asnumpy(idx), layout), ridx), cfg
        cpu_out, cpu_idx = ops.max_pool2d(xa, k, s, p, d, ceil, return_indices=True, layout=layout)
        _same(out, cpu_out)
        _same(idx, cpu_idx)
        _same(ops.max_pool2d(xg, k, s, p, d, ceil, layout=layout), cpu_out)
        gx = ops.max_pool2d_backward(gog, xg, k, s, p, d, ceil, indices=idx, layout=layout)
        gx2 = ops.max_pool2d_backward(gog, xg, k, s, p, d, ceil, layout=layout)  # indices recomputed
        cpu_gx = ops.max_pool2d_backward(go, xa, k, s, p, d, ceil, indices=cpu_idx, layout=layout)
        _same(gx, cpu_gx)
        _same(gx2, cpu_gx)
        tol = 1e-6 if dtype == np.float32 else 1e-14
        assert rel_err(t_out(cp.asnumpy(gx), layout), ref_max_backward(t_out(go, layout), ridx, x.shape)) < tol


def test_max_pool_nan():
    x = np.array([[[[1.0, np.nan, 3.0, 2.0], [np.nan, 0.0, 1.0, 5.0]]]])
    out, idx = ops.max_pool2d(cp.asarray(x), 2, return_indices=True)
    out, idx = cp.asnumpy(out), cp.asnumpy(idx)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 5.0
    assert idx.tolist() == [[[[4, 7]]]]  # the last NaN wins, as in PyTorch
    _, idx = ops.max_pool2d(cp.asarray(t_in(x, "NHWC")), 2, return_indices=True, layout="NHWC")
    assert cp.asnumpy(idx).ravel().tolist() == [4, 7]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool(rng, dtype, layout):
    for cfg in POOL_CONFIGS:
        N, C, H, W, k, s, p, d, ceil = cfg
        for cip, div in ((True, None), (False, None), (True, 3)):
            x = rng.standard_normal((N, C, H, W))
            ref, _ = ref_avg(x, k, s, p, ceil, cip, div)
            go = rng.standard_normal(ref.shape)
            _, gref = ref_avg(x, k, s, p, ceil, cip, div, go)
            xa, goa = t_in(x.astype(dtype), layout), t_in(go.astype(dtype), layout)
            out = ops.avg_pool2d(cp.asarray(xa), k, s, p, ceil, cip, div, layout=layout)
            gx = ops.avg_pool2d_backward(cp.asarray(goa), xa.shape, k, s, p, ceil, cip, div, layout=layout)
            assert isinstance(gx, cp.ndarray) and out.dtype == dtype and gx.dtype == dtype
            _same(out, ops.avg_pool2d(xa, k, s, p, ceil, cip, div, layout=layout))
            _same(gx, ops.avg_pool2d_backward(goa, xa.shape, k, s, p, ceil, cip, div, layout=layout))
            tol = 1e-6 if dtype == np.float32 else 1e-14
            assert rel_err(t_out(cp.asnumpy(out), layout), ref) < tol, (cfg, cip, div)
            assert rel_err(t_out(cp.asnumpy(gx), layout), gref) < tol, (cfg, cip, div)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_adaptive_avg_pool(rng, layout):
    for (H, W), osz in (((9, 7), (3, 2)), ((9, 7), (4, None)), ((5, 6), 1), ((5, 6), (7, 8)), ((13, 13), (5, 3))):
        x = rng.standard_normal((2, 3, H, W))
        oh, ow = (osz, osz) if isinstance(osz, int) else (osz[0] or H, osz[1] or W)
        ref, _ = ref_adaptive(x, oh, ow)
        go = rng.standard_normal(ref.shape)
        _, gref = ref_adaptive(x, oh, ow, go)
        for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-14)):
            xa, goa = t_in(x.astype(dtype), layout), t_in(go.astype(dtype), layout)
            out = ops.adaptive_avg_pool2d(cp.asarray(xa), osz, layout=layout)
            gx = ops.adaptive_avg_pool2d_backward(cp.asarray(goa), cp.asarray(xa), layout=layout)
            _same(out, ops.adaptive_avg_pool2d(xa, osz, layout=layout))
            _same(gx, ops.adaptive_avg_pool2d_backward(goa, xa, layout=layout))
            assert rel_err(t_out(cp.asnumpy(out), layout), ref) < tol
            assert rel_err(t_out(cp.asnumpy(gx), layout), gref) < tol


def test_bigger_shapes(rng):
    # Several blocks per plane and many planes: 2 x 67 channels of 45 x 38 (NHWC: 67 is no multiple of 32).
    x = rng.standard_normal((2, 67, 45, 38)).astype(np.float32)
    for layout in ("NCHW", "NHWC"):
        xa = t_in(x, layout)
        xg = cp.asarray(xa)
        out, idx = ops.max_pool2d(xg, 3, 2, 1, return_indices=True, layout=layout)
        c_out, c_idx = ops.max_pool2d(xa, 3, 2, 1, return_indices=True, layout=layout)
        _same(out, c_out)
        _same(idx, c_idx)
        go = rng.standard_normal(c_out.shape).astype(np.float32)
        _same(ops.max_pool2d_backward(cp.asarray(go), xg, 3, 2, 1, indices=idx, layout=layout),
              ops.max_pool2d_backward(go, xa, 3, 2, 1, indices=c_idx, layout=layout))
        _same(ops.avg_pool2d(xg, 3, 2, 1, layout=layout), ops.avg_pool2d(xa, 3, 2, 1, layout=layout))
        _same(ops.avg_pool2d_backward(cp.asarray(go), xa.shape, 3, 2, 1, layout=layout),
              ops.avg_pool2d_backward(go, xa.shape, 3, 2, 1, layout=layout))
        _same(ops.adaptive_avg_pool2d(xg, (7, 5), layout=layout), ops.adaptive_avg_pool2d(xa, (7, 5), layout=layout))


def test_strided_views(rng):
    base = cp.asarray(rng.standard_normal((2, 9, 3, 14)))
    x = base[..., ::2].transpose(0, 2, 1, 3)  # (2, 3, 9, 7), strided and transposed
    assert not x.flags.c_contiguous
    xn = cp.asnumpy(x)
    ref, ridx = ref_max(xn, 3, 2, 1, 1, True)
    out, idx = ops.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert np.array_equal(cp.asnumpy(out), ref) and np.array_equal(cp.asnumpy(idx), ridx)
    go = cp.asarray(rng.standard_normal((2, 3, 14, 5)))[..., ::3, :][:, :, :5, :4]
    gx = ops.max_pool2d_backward(go, x, 3, 2, 1, ceil_mode=True, indices=idx)
    assert rel_err(cp.asnumpy(gx), ref_max_backward(cp.asnumpy(go), ridx, x.shape)) < 1e-14
    aref, _ = ref_avg(xn, 2, 2, 1, False, True, None)
    assert rel_err(cp.asnumpy(ops.avg_pool2d(x, 2, 2, 1)), aref) < 1e-14
    nhwc_view = x.transpose(0, 2, 3, 1)
    assert rel_err(t_out(cp.asnumpy(ops.avg_pool2d(nhwc_view, 2, 2, 1, layout="NHWC")), "NHWC"), aref) < 1e-14


def test_deterministic(rng):
    x = cp.asarray(rng.standard_normal((3, 5, 16, 15)).astype(np.float32))
    go = cp.asarray(rng.standard_normal((3, 5, 8, 8)).astype(np.float32))
    for _ in range(2):
        runs = [cp.asnumpy(ops.avg_pool2d_backward(go, x.shape, 3, 2, 1)).tobytes() for _ in range(2)]
        assert runs[0] == runs[1]
        runs = [cp.asnumpy(ops.max_pool2d_backward(go, x, 3, 2, 1)).tobytes() for _ in range(2)]
        assert runs[0] == runs[1]


def test_indices_not_from_forward_are_ignored():
    # The GPU backward gathers: an index naming no element of its window contributes nothing (PyTorch's
    # CUDA behaviour); the CPU raises ValueError for out-of-range ones.
    go = cp.ones((1, 1, 2, 2), cp.float32)
    idx = cp.asarray(np.array([[[[0, 64], [-1, 15]]]], np.int64))
    gx = cp.asnumpy(ops.max_pool2d_backward(go, (1, 1, 4, 4), 2, indices=idx))
    expected = np.zeros((1, 1, 4, 4), np.float32)
    expected[0, 0, 0, 0] = expected[0, 0, 3, 3] = 1
    assert np.array_equal(gx, expected)


@pytest.mark.slow
def test_more_than_2_31_elements():
    if EMULATED:
        pytest.skip("too large for the emulator")
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 20 * 2**30:
        pytest.skip("needs 20 GiB of free device memory")
    x = cp.random.standard_normal((2049, 16, 256, 256), dtype=cp.float32)  # > 2^31 elements
    out, idx = ops.max_pool2d(x, 2, return_indices=True)
    for n in (0, x.shape[0] - 1):
        c_out, c_idx = ops.max_pool2d(cp.asnumpy(x[n:n + 1]), 2, return_indices=True)
        _same(out[n:n + 1], c_out)
        _same(idx[n:n + 1], c_idx)
    gx = ops.max_pool2d_backward(out, x.shape, 2, indices=idx)
    assert float(cp.asnumpy(gx[-1]).sum()) == pytest.approx(float(cp.asnumpy(out[-1]).sum()), rel=1e-4)


def _g(*shape, dtype=np.float32):
    return cp.zeros(shape, dtype)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: ops.max_pool2d_backward(_g(1, 2, 4, 4), np.zeros((1, 2, 8, 8), np.float32), 2), TypeError,
         ["grad_out is a GPU array but x is not"]),
        (lambda: ops.max_pool2d_backward(_g(1, 2, 4, 4), (1, 2, 8, 8), 2, indices=np.zeros((1, 2, 4, 4), np.int64)),
         TypeError, ["indices is not"]),
        (lambda: ops.max_pool2d(_g(1, 2, 8, 8, dtype=np.int64), 2), TypeError, ["int64"]),
        (lambda: ops.avg_pool2d(_g(1, 2, 8, 8, dtype=np.float16), 2), TypeError, ["float16"]),
        (lambda: ops.max_pool2d_backward(_g(1, 2, 4, 4), (1, 2, 8, 8), 2, indices=_g(1, 2, 4, 4)), TypeError,
         ["indices", "int64"]),
        (lambda: ops.max_pool2d_backward(_g(1, 2, 4, 4), _g(1, 2, 8, 8, dtype=np.float64), 2), TypeError,
         ["x has dtype float64"]),
        (lambda: ops.max_pool2d(_g(1, 2, 8, 8), 2, padding=2), ValueError, ["padding", "half"]),
        (lambda: ops.avg_pool2d(_g(1, 2, 3, 8), 4), ValueError, ["too small"]),
        (lambda: ops.adaptive_avg_pool2d(_g(1, 2, 8, 8), 0), ValueError, ["output_size"]),
        (lambda: ops.adaptive_avg_pool2d_backward(_g(1, 3, 2, 2), _g(1, 2, 8, 8)), ValueError, ["grad_out"]),
        (lambda: ops.max_pool2d(_g(2, 8, 8), 2), ValueError, ["4-d"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_binding_checks():
    k = layerforge.cuda._load()
    params = [2, 2, 2, 2, 0, 0, 1, 1, 0, 1, 0]
    with pytest.raises(TypeError, match="indices must be int64"):
        k.max_pool2d_forward(_g(1, 2, 8, 8), _g(1, 2, 4, 4), _g(1, 2, 4, 4), params, "NCHW", 0)
    with pytest.raises(ValueError, match="out has shape"):
        k.max_pool2d_forward(_g(1, 2, 8, 8), _g(1, 2, 4, 5), None, params, "NCHW", 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        k.avg_pool2d_forward(_g(1, 2, 8, 16)[..., ::2], _g(1, 2, 4, 4), params, "NCHW", 0)
