"""layerforge.ops pooling against plain float64 loop references (PyTorch's rules) and torch where installed."""
import math

import numpy as np
import pytest

from layerforge import ops
from conftest import rel_err


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def out_size(n, k, p, s, d, ceil):
    num = n + 2 * p - d * (k - 1) - 1
    o = (math.ceil(num / s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_max(x, k, s, p, d, ceil):
    """PyTorch's CPU max pooling, written plainly: values, flat indices, and the backward scatter."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(k), _pair(s), _pair(p), _pair(d)
    N, C, H, W = x.shape
    P, Q = out_size(H, kh, ph, sh, dh, ceil), out_size(W, kw, pw, sw, dw, ceil)
    out = np.empty((N, C, P, Q))
    idx = np.empty((N, C, P, Q), np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(P):
                for j in range(Q):
                    best, bi = -np.inf, None
                    for r in range(kh):
                        for t in range(kw):
                            h, w = i * sh - ph + r * dh, j * sw - pw + t * dw
                            if 0 <= h < H and 0 <= w < W:
                                if bi is None:
                                    bi = h * W + w
                                v = x[n, c, h, w]
                                if v > best or np.isnan(v):
                                    best, bi = v, h * W + w
                    out[n, c, i, j], idx[n, c, i, j] = best, bi
    return out, idx


def ref_max_backward(go, idx, shape):
    gx = np.zeros(shape)
    N, C, H, W = shape
    flat = gx.reshape(N, C, H * W)
    for n in range(N):
        for c in range(C):
            np.add.at(flat[n, c], idx[n, c].ravel(), go[n, c].ravel())
    return gx


def ref_avg(x, k, s, p, ceil, cip, div, go=None):
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(s), _pair(p)
    N, C, H, W = x.shape
    P, Q = out_size(H, kh, ph, sh, 1, ceil), out_size(W, kw, pw, sw, 1, ceil)
    out = np.zeros((N, C, P, Q))
    gx = np.zeros(x.shape)
    for i in range(P):
        for j in range(Q):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
            pool = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            if h0 >= h1 or w0 >= w1:
                continue
            dv = div if div else (pool if cip else (h1 - h0) * (w1 - w0))
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / dv
            if go is not None:
                gx[:, :, h0:h1, w0:w1] += go[:, :, i:i + 1, j:j + 1] / dv
    return out, gx


def ref_adaptive(x, oh, ow, go=None):
    N, C, H, W = x.shape
    out = np.zeros((N, C, oh, ow))
    gx = np.zeros(x.shape)
    for i in range(oh):
        h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
            cnt = (h1 - h0) * (w1 - w0)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / cnt
            if go is not None:
                gx[:, :, h0:h1, w0:w1] += go[:, :, i:i + 1, j:j + 1] / cnt
    return out, gx


def t_in(a, layout):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if layout == "NHWC" else a


def t_out(a, layout):
    return a.transpose(0, 3, 1, 2) if layout == "NHWC" else a


# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
POOL_CONFIGS = [
    (2, 3, 9, 7, 2, 2, 0, 1, False),             # 2x2 stride 2: the specialised NCHW kernel
    (2, 3, 7, 9, 2, 2, 0, 1, True),              # ... with ceil_mode: the last, partial window -> general loop
    (2, 3, 5, 35, 2, 2, 0, 1, False),            # ... 17 outputs a row: two 8-wide steps and a partial one
    (1, 2, 4, 16, 2, 2, 0, 1, False),            # ... exactly 8 a row
    (2, 3, 9, 7, 3, 2, 1, 1, True),              # ceil_mode: the last window starts in the padding
    (2, 3, 10, 7, 3, 2, 1, 2, True),             # dilation
    (1, 2, 6, 5, (3, 2), (2, 1), (1, 1), 1, True),
    (2, 3, 5, 5, 2, 3, 1, 1, True),              # stride > kernel
    (2, 2, 8, 9, 4, 3, 2, 2, False),
    (1, 17, 6, 7, 3, 1, 1, 1, False),             # 17 channels: vector remainder in NHWC
    (3, 2, 4, 6, (1, 3), (1, 2), (0, 1), (1, 2), True),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool(cpu_path, rng, dtype, layout):
    for cfg in POOL_CONFIGS:
        N, C, H, W, k, s, p, d, ceil = cfg
        x = np.round(rng.standard_normal((N, C, H, W)), 1)  # rounding makes ties: first max must win
        ref, ridx = ref_max(x.astype(dtype), k, s, p, d, ceil)
        go = rng.standard_normal(ref.shape)
        xa = t_in(x.astype(dtype), layout)
        out, idx = ops.max_pool2d(xa, k, s, p, d, ceil, return_indices=True, layout=layout)
        assert out.dtype == dtype and idx.dtype == np.int64
        assert np.array_equal(t_out(out, layout), ref.astype(dtype)), cfg
        assert np.array_equal(t_out(idx, layout), ridx), cfg
        assert np.array_equal(ops.max_pool2d(xa, k, s, p, d, ceil, layout=layout), out)
        gx = ops.max_pool2d_backward(t_in(go.astype(dtype), layout), xa, k, s, p, d, ceil, indices=idx, layout=layout)
        gx2 = ops.max_pool2d_backward(t_in(go.astype(dtype), layout), xa, k, s, p, d, ceil, layout=layout)
        tol = 1e-6 if dtype == np.float32 else 1e-14
        assert rel_err(t_out(gx, layout), ref_max_backward(go, ridx, x.shape)) < tol, cfg
        assert np.array_equal(gx, gx2)


def test_max_pool_nan(cpu_path):
    x = np.array([[[[1.0, np.nan, 3.0, 2.0], [np.nan, 0.0, 1.0, 5.0]]]])
    out, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 5.0
    assert idx.tolist() == [[[[4, 7]]]]  # the last NaN wins, as in PyTorch
    out, idx = ops.max_pool2d(t_in(x, "NHWC"), 2, return_indices=True, layout="NHWC")
    assert idx.ravel().tolist() == [4, 7]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool_windows_entirely_in_padding(cpu_path, rng, layout):
    """H = 1 with padding 1 and dilation 2: every 3-tap window column reads rows -1, 1, 3, none inside.
    Such outputs are -inf with indices past the plane (as torch, whose own backward corrupts memory on
    them); their gradient goes nowhere, and the backward does not call the indices bad."""
    x = rng.standard_normal((2, 3, 1, 10))
    args = dict(kernel_size=3, stride=3, padding=(1, 0), dilation=(2, 1), ceil_mode=True)
    xl = x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x
    y, idx = ops.max_pool2d(xl, return_indices=True, layout=layout, **args)
    assert np.isneginf(y).all()
    gx = ops.max_pool2d_backward(np.ones_like(y), xl, indices=idx, layout=layout, **args)
    assert gx.shape == xl.shape and not gx.any()
    bad = idx.copy()
    bad.flat[0] = -1
    with pytest.raises(ValueError, match="indices out of range"):  # a window that has inputs still checks
        ops.max_pool2d_backward(np.ones((2, 3, 1, 1)) if layout == "NCHW" else np.ones((2, 1, 1, 3)),
                                rng.standard_normal((2, 3, 3, 3)), kernel_size=3, stride=3, padding=1, layout=layout,
                                indices=np.full((2, 3, 1, 1) if layout == "NCHW" else (2, 1, 1, 3), 99))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_nan_in_every_tap(cpu_path, rng, dtype):
    # NaNs scattered over planes whose rows take the vectorised 2x2 kernel's full and partial steps
    for shape in [(2, 3, 6, 37), (1, 2, 7, 16), (3, 1, 4, 5)]:
        x = np.round(rng.standard_normal(shape), 1)
        x[rng.random(shape) < 0.2] = np.nan
        ref, ridx = ref_max(x, 2, 2, 0, 1, False)
        out, idx = ops.max_pool2d(x.astype(dtype), 2, return_indices=True)
        assert np.array_equal(out, ref.astype(dtype), equal_nan=True), shape
        assert np.array_equal(idx, ridx), shape


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool(cpu_path, rng, dtype, layout):
    for cfg in POOL_CONFIGS:
        N, C, H, W, k, s, p, d, ceil = cfg
        for cip, div in ((True, None), (False, None), (True, 3)):
            x = rng.standard_normal((N, C, H, W))
            ref, _ = ref_avg(x, k, s, p, ceil, cip, div)
            go = rng.standard_normal(ref.shape)
            _, gref = ref_avg(x, k, s, p, ceil, cip, div, go)
            xa = t_in(x.astype(dtype), layout)
            out = ops.avg_pool2d(xa, k, s, p, ceil, cip, div, layout=layout)
            gx = ops.avg_pool2d_backward(t_in(go.astype(dtype), layout), xa.shape, k, s, p, ceil, cip, div,
                                         layout=layout)
            tol = 1e-6 if dtype == np.float32 else 1e-14
            assert out.dtype == dtype and gx.dtype == dtype
            assert rel_err(t_out(out, layout), ref) < tol, (cfg, cip, div)
            assert rel_err(t_out(gx, layout), gref) < tol, (cfg, cip, div)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_adaptive_avg_pool(cpu_path, rng, layout):
    for (H, W), osz in (((9, 7), (3, 2)), ((9, 7), (4, None)), ((5, 6), 1), ((5, 6), (7, 8)), ((13, 13), (5, 3))):
        x = rng.standard_normal((2, 3, H, W))
        oh, ow = (osz, osz) if isinstance(osz, int) else (osz[0] or H, osz[1] or W)
        ref, _ = ref_adaptive(x, oh, ow)
        go = rng.standard_normal(ref.shape)
        _, gref = ref_adaptive(x, oh, ow, go)
        for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-14)):
            xa = t_in(x.astype(dtype), layout)
            out = ops.adaptive_avg_pool2d(xa, osz, layout=layout)
            gx = ops.adaptive_avg_pool2d_backward(t_in(go.astype(dtype), layout), xa, layout=layout)
            assert rel_err(t_out(out, layout), ref) < tol
            assert rel_err(t_out(gx, layout), gref) < tol


def test_finite_differences(rng):
    eps = 1e-6
    x = rng.standard_normal((2, 3, 9, 8))  # continuous values: no ties, FD well defined for max
    for layout in ("NCHW", "NHWC"):
        xa = t_in(x, layout)
        fns = [
            (lambda a: ops.max_pool2d(a, 3, 2, 1, 1, True, layout=layout),
             lambda g: ops.max_pool2d_backward(g, xa, 3, 2, 1, 1, True, layout=layout)),
            (lambda a: ops.avg_pool2d(a, 3, 2, 1, True, False, layout=layout),
             lambda g: ops.avg_pool2d_backward(g, xa, 3, 2, 1, True, False, layout=layout)),
            (lambda a: ops.adaptive_avg_pool2d(a, (4, 3), layout=layout),
             lambda g: ops.adaptive_avg_pool2d_backward(g, xa, layout=layout)),
        ]
        for fwd, bwd in fns:
            G = rng.standard_normal(fwd(xa).shape)
            V = rng.standard_normal(xa.shape)
            fd = (np.sum(fwd(xa + eps * V) * G) - np.sum(fwd(xa - eps * V) * G)) / (2 * eps)
            assert abs(fd - np.sum(bwd(G) * V)) < 1e-6 * max(1.0, abs(fd))


def test_non_contiguous(rng):
    base = rng.standard_normal((2, 9, 3, 14))
    x = base[..., ::2].transpose(0, 2, 1, 3)  # (2, 3, 9, 7), strided and transposed
    assert not x.flags.c_contiguous
    ref, ridx = ref_max(x, 3, 2, 1, 1, True)
    out, idx = ops.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert np.array_equal(out, ref) and np.array_equal(idx, ridx)
    go = rng.standard_normal((2, 3, 14, 5))[..., ::3, :].transpose(0, 1, 2, 3)[:, :, :5, :4]
    gx = ops.max_pool2d_backward(go, x, 3, 2, 1, ceil_mode=True, indices=idx[:, :, :, :])
    assert rel_err(gx, ref_max_backward(go, ridx, x.shape)) < 1e-14
    aref, _ = ref_avg(x, 2, 2, 1, False, True, None)
    assert rel_err(ops.avg_pool2d(x, 2, 2, 1), aref) < 1e-14
    nhwc_view = x.transpose(0, 2, 3, 1)  # NHWC as a view
    assert rel_err(t_out(ops.avg_pool2d(nhwc_view, 2, 2, 1, layout="NHWC"), "NHWC"), aref) < 1e-14


def test_threads(threads, rng):
    x = rng.standard_normal((4, 5, 11, 10)).astype(np.float32)
    for layout in ("NCHW", "NHWC"):
        xa = t_in(x, layout)
        out, idx = ops.max_pool2d(xa, 2, return_indices=True, layout=layout)
        ref, ridx = ref_max(x, 2, 2, 0, 1, False)
        assert np.array_equal(t_out(idx, layout), ridx)
        assert rel_err(t_out(ops.avg_pool2d(xa, 3, 2, 1, layout=layout), layout),
                       ref_avg(x.astype(np.float64), 3, 2, 1, False, True, None)[0]) < 1e-6


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for cfg in POOL_CONFIGS:
        N, C, H, W, k, s, p, d, ceil = cfg
        x = np.round(rng.standard_normal((N, C, H, W)), 1).astype(np.float32)
        xt = torch.tensor(x, requires_grad=True)
        ref, ridx = F.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
        go = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
        ref.backward(torch.tensor(go))
        out, idx = ops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        assert np.array_equal(out, ref.detach().numpy()) and np.array_equal(idx, ridx.numpy())
        assert rel_err(ops.max_pool2d_backward(go, x, k, s, p, d, ceil, indices=idx), xt.grad.numpy()) < 1e-6
        if d == 1:
            for cip, div in ((True, None), (False, None), (False, 2)):
                xt = torch.tensor(x, requires_grad=True)
                ref = F.avg_pool2d(xt, k, s, p, ceil, cip, div)
                ref.backward(torch.tensor(go))
                assert rel_err(ops.avg_pool2d(x, k, s, p, ceil, cip, div), ref.detach().numpy()) < 1e-6
                assert rel_err(ops.avg_pool2d_backward(go, x, k, s, p, ceil, cip, div), xt.grad.numpy()) < 1e-6
    x = rng.standard_normal((2, 3, 11, 7)).astype(np.float32)
    assert rel_err(ops.adaptive_avg_pool2d(x, (4, 5)), F.adaptive_avg_pool2d(torch.tensor(x), (4, 5)).numpy()) < 1e-6


def _x(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: ops.max_pool2d(_x(1, 2, 8, 8), 2, padding=2), ValueError, ["padding", "half", "kernel_size"]),
        (lambda: ops.avg_pool2d(_x(1, 2, 8, 8), 3, padding=(1, 2)), ValueError, ["padding", "half"]),
        (lambda: ops.max_pool2d(_x(1, 2, 8, 8), 2, stride=0), ValueError, ["stride"]),
        (lambda: ops.max_pool2d(_x(1, 2, 8, 8), 0), ValueError, ["kernel_size"]),
        (lambda: ops.max_pool2d(_x(1, 2, 8, 8), 2, dilation=0), ValueError, ["dilation"]),
        (lambda: ops.max_pool2d(_x(2, 8, 8), 2), ValueError, ["4-d", "(2, 8, 8)"]),
        (lambda: ops.avg_pool2d(_x(1, 2, 3, 8), 4), ValueError, ["(1, 2, 3, 8)", "too small"]),
        (lambda: ops.max_pool2d(_x(1, 2, 8, 8, dtype=np.int64), 2), TypeError, ["int64"]),
        (lambda: ops.avg_pool2d(_x(1, 2, 8, 8), 2, divisor_override=0), ValueError, ["divisor_override"]),
        (lambda: ops.max_pool2d(_x(1, 2, 8, 8), 2, layout="CHWN"), ValueError, ["layout"]),
        (lambda: ops.max_pool2d_backward(_x(1, 2, 3, 4), _x(1, 2, 8, 8), 2), ValueError,
         ["grad_out", "(1, 2, 3, 4)", "(1, 2, 4, 4)"]),
        (lambda: ops.max_pool2d_backward(_x(1, 2, 4, 4), _x(1, 2, 8, 8), 2, indices=np.full((1, 2, 4, 4), 64)),
         ValueError, ["indices out of range"]),
        (lambda: ops.max_pool2d_backward(_x(1, 2, 4, 4), _x(1, 2, 8, 8), 2, indices=_x(1, 2, 4, 4)), TypeError,
         ["indices", "int64"]),
        (lambda: ops.adaptive_avg_pool2d(_x(1, 2, 8, 8), 0), ValueError, ["output_size"]),
        (lambda: ops.adaptive_avg_pool2d(_x(1, 2, 8, 8), (2, 2, 2)), ValueError, ["output_size"]),
        (lambda: ops.adaptive_avg_pool2d_backward(_x(1, 3, 2, 2), _x(1, 2, 8, 8)), ValueError, ["grad_out"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))
