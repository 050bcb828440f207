"""layerforge.ops.conv2d / conv2d_backward against a plain float64 reference (and torch where installed)."""
import threading

import numpy as np
import pytest

import layerforge
from layerforge import ops
from conftest import rel_err


# ---------------------------------------------------------------- the reference: slices of the padded input
def _pads(padding, R, S, dil):
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dil[0] * (R - 1), dil[1] * (S - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ph, ph, pw, pw


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv(x, w, b, stride, padding, dil, groups, go=None):
    """NCHW float64 conv2d; with go also returns (grad_x, grad_w, grad_b) of sum(out * go)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    stride, dil = _pair(stride), _pair(dil)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    pt, pb, pl, pr = _pads(padding, R, S, dil)
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    P = (H + pt + pb - dil[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + pl + pr - dil[1] * (S - 1) - 1) // stride[1] + 1
    Kg = K // groups
    out = np.zeros((N, K, P, Q))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for r in range(R):
        for s in range(S):
            hs = slice(r * dil[0], r * dil[0] + stride[0] * (P - 1) + 1, stride[0])
            ws = slice(s * dil[1], s * dil[1] + stride[1] * (Q - 1) + 1, stride[1])
            for g in range(groups):
                cs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
                patch = xp[:, cs, hs, ws]
                out[:, ks] += np.einsum("ncpq,kc->nkpq", patch, w[ks, :, r, s])
                if go is not None:
                    gxp[:, cs, hs, ws] += np.einsum("nkpq,kc->ncpq", go[:, ks], w[ks, :, r, s])
                    gw[ks, :, r, s] += np.einsum("nkpq,ncpq->kc", go[:, ks], patch)
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    if go is None:
        return out
    return out, gxp[:, :, pt:pt + H, pl:pl + W], gw, go.sum(axis=(0, 2, 3))


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return a.transpose(0, 3, 1, 2)


# (N, C, H, W, K, R, S, stride, padding, dilation, groups): odd sizes, H != W, every algorithm
CONFIGS = [
    (2, 3, 9, 7, 4, 3, 3, 1, 1, 1, 1),           # im2col, pad 1
    (3, 4, 11, 8, 6, 3, 2, 2, (1, 0), (2, 1), 2),  # groups, stride, dilation, asymmetric kernel
    (2, 6, 7, 9, 6, 3, 3, 1, 1, 1, 6),           # depthwise
    (2, 6, 7, 9, 12, 3, 3, 2, 1, 1, 6),          # depthwise with multiplier 2, stride 2
    (2, 1, 10, 8, 5, 3, 3, 1, 0, 1, 1),          # one input channel (direct)
    (1, 1, 6, 7, 3, 5, 3, (2, 1), 2, (1, 2), 1),  # direct, strided, dilated, kernel > stride
    (2, 8, 5, 6, 4, 1, 1, 1, 0, 1, 1),           # 1x1
    (5, 4, 6, 6, 4, 1, 1, 1, 0, 1, 2),           # 1x1 grouped, odd batch
    (2, 5, 7, 6, 3, 1, 1, 2, 1, 1, 1),           # 1x1 with stride and padding: im2col
    (3, 4, 8, 7, 5, 4, 2, 1, "same", 1, 1),      # same with an even kernel: asymmetric padding
    (2, 4, 8, 9, 3, 3, 3, 1, "same", 2, 1),      # same + dilation
    (2, 3, 6, 5, 2, 3, 3, 3, "valid", 1, 1),     # valid, stride 3
    (2, 4, 3, 4, 4, 5, 5, 1, 2, 1, 2),           # kernel larger than the input (padding makes room)
    (2, 4, 9, 8, 4, 3, 3, 1, 2, 2, 4),           # depthwise, dilated
    (1, 3, 4, 5, 3, 3, 3, 1, 3, 1, 3),           # depthwise, padding larger than the kernel reach
    (2, 2, 7, 6, 2, 5, 4, 1, (2, 1), 1, 2),      # depthwise 5x4
]


def _run(cfg, dtype, layout, rng, bias=True):
    N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, R, S))
    b = rng.standard_normal(K) if bias else None
    out_ref = ref_conv(x, w, b, stride, padding, dil, groups)
    go = rng.standard_normal(out_ref.shape)
    _, gx_ref, gw_ref, gb_ref = ref_conv(x, w, b, stride, padding, dil, groups, go)
    xa, wa, ba, goa = x.astype(dtype), w.astype(dtype), None if b is None else b.astype(dtype), go.astype(dtype)
    if layout == "NHWC":
        xa, wa, goa = to_nhwc(xa), to_nhwc(wa), to_nhwc(goa)
    out = ops.conv2d(xa, wa, ba, stride, padding, dil, groups, layout=layout)
    gx, gw, gb = ops.conv2d_backward(goa, xa, wa, stride, padding, dil, groups, bias=bias, layout=layout)
    assert out.dtype == dtype and gx.dtype == dtype and gw.dtype == dtype
    if layout == "NHWC":
        out, gx, gw = to_nchw(out), to_nchw(gx), to_nchw(gw)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert out.shape == out_ref.shape
    assert rel_err(out, out_ref) < tol, cfg
    assert rel_err(gx, gx_ref) < tol, cfg
    assert rel_err(gw, gw_ref) < tol, cfg
    if bias:
        assert rel_err(gb, gb_ref) < tol, cfg
    else:
        assert gb is None


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_configs(cpu_path, rng, dtype, layout):
    for i, cfg in enumerate(CONFIGS):
        _run(cfg, dtype, layout, rng, bias=i % 3 != 1)


# 1x1 NCHW runs the batch as one GEMM whose column panels cross image boundaries: planes smaller than a panel
# (1x1, 3x5), panels ending exactly at the last column (16), two depth blocks (C = 300), K past the row
# tiles, groups; the last two are over the ~2 MFLOP that takes a second thread
ONE_BY_ONE_CONFIGS = [
    (3, 300, 3, 5, 13, 1, 1, 1, 0, 1, 1),
    (2, 16, 1, 1, 7, 1, 1, 1, 0, 1, 1),
    (1, 5, 4, 4, 3, 1, 1, 1, 0, 1, 1),
    (4, 8, 7, 7, 20, 1, 1, 1, 0, 1, 2),
    (2, 64, 14, 14, 70, 1, 1, 1, 0, 1, 1),
    (8, 64, 7, 7, 64, 1, 1, 1, 0, 1, 1),  # large enough for two threads, seams inside panels
    (2, 16, 3, 5, 300, 1, 1, 1, 0, 1, 1),  # grad_x's depth (K = 300) in two blocks
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_1x1_batch_as_one_gemm(cpu_path, threads, rng, dtype):
    for i, cfg in enumerate(ONE_BY_ONE_CONFIGS):
        assert ops.conv2d_algorithm(np.zeros(cfg[:4], dtype), np.zeros((cfg[4], cfg[1] // cfg[10], 1, 1), dtype),
                                    groups=cfg[10]) == "gemm_1x1"
        _run(cfg, dtype, "NCHW", rng, bias=i % 2 == 0)


def test_random_configs(rng):
    for _ in range(12):
        groups = int(rng.choice([1, 1, 2, 3]))
        Cg, Kg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        H = dil[0] * (R - 1) + 1 + int(rng.integers(0, 6))
        W = dil[1] * (S - 1) + 1 + int(rng.integers(0, 6))
        cfg = (int(rng.integers(1, 4)), Cg * groups, H, W, Kg * groups, R, S, stride, pad, dil, groups)
        _run(cfg, np.float64, str(rng.choice(["NCHW", "NHWC"])), rng, bias=bool(rng.integers(0, 2)))


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[6]], ids=["im2col", "depthwise", "1x1"])
def test_threads_and_determinism(threads, rng, cfg):
    # batch 4 (splits over threads) and 3 (threads inside the GEMM) both checked; results repeat exactly
    for n in (4, 3):
        cfg2 = (n,) + cfg[1:]
        _run(cfg2, np.float32, "NCHW", rng)
        N, C, H, W, K, R, S, stride, padding, dil, groups = cfg2
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C // groups, R, S)).astype(np.float32)
        go = ops.conv2d(x, w, None, stride, padding, dil, groups)
        a = ops.conv2d_backward(go, x, w, stride, padding, dil, groups)
        b = ops.conv2d_backward(go, x, w, stride, padding, dil, groups)
        for u, v in zip(a, b):
            assert np.array_equal(u, v)


def test_finite_differences(rng):
    for cfg in (CONFIGS[1], CONFIGS[3], CONFIGS[5], CONFIGS[9]):
        N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
        for layout in ("NCHW", "NHWC"):
            x = rng.standard_normal((N, C, H, W))
            w = rng.standard_normal((K, C // groups, R, S))
            b = rng.standard_normal(K)
            if layout == "NHWC":
                x, w = to_nhwc(x), to_nhwc(w)
            out = ops.conv2d(x, w, b, stride, padding, dil, groups, layout=layout)
            G = rng.standard_normal(out.shape)
            gx, gw, gb = ops.conv2d_backward(G, x, w, stride, padding, dil, groups, layout=layout)

            def loss(x_, w_, b_):
                return float(np.sum(ops.conv2d(x_, w_, b_, stride, padding, dil, groups, layout=layout) * G))

            eps = 1e-6
            for arr, grad, which in ((x, gx, 0), (w, gw, 1), (b, gb, 2)):
                V = rng.standard_normal(arr.shape)
                args_p, args_m = [x, w, b], [x, w, b]
                args_p[which] = arr + eps * V
                args_m[which] = arr - eps * V
                fd = (loss(*args_p) - loss(*args_m)) / (2 * eps)
                assert abs(fd - np.sum(grad * V)) < 1e-6 * max(1.0, abs(fd)), (cfg, layout, which)


def test_non_contiguous(rng):
    N, C, H, W, K = 2, 4, 9, 7, 6
    base = rng.standard_normal((N, W * 2, C, H))        # x as a transposed, strided view, H != W
    x = base[:, ::2].transpose(0, 2, 3, 1)
    assert not x.flags.c_contiguous and x.shape == (N, C, H, W)
    wbase = rng.standard_normal((3, 3, C // 2, K))
    w = wbase.transpose(3, 2, 0, 1)
    b = rng.standard_normal(2 * K)[::2]
    out = ops.conv2d(x, w, b, 1, 1, 1, 2)
    assert rel_err(out, ref_conv(x, w, b, 1, 1, 1, 2)) < 1e-12
    go = rng.standard_normal((N, H, W, 2 * K))[..., ::2].transpose(0, 3, 1, 2)
    gx, gw, gb = ops.conv2d_backward(go, x, w, 1, 1, 1, 2)
    _, gx_r, gw_r, gb_r = ref_conv(x, w, b, 1, 1, 1, 2, go)
    assert rel_err(gx, gx_r) < 1e-12 and rel_err(gw, gw_r) < 1e-12 and rel_err(gb, gb_r) < 1e-12
    # NHWC from a transposed NCHW array (a view, not contiguous)
    out2 = ops.conv2d(np.asarray(x).transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1), b, 1, 1, 1, 2, layout="NHWC")
    assert rel_err(to_nchw(out2), out) < 1e-12


def test_algorithms():
    x = np.zeros((2, 8, 6, 5), np.float32)
    assert ops.conv2d_algorithm(x, np.zeros((4, 8, 1, 1), np.float32)) == "gemm_1x1"
    assert ops.conv2d_algorithm(x, np.zeros((4, 8, 1, 1), np.float32), stride=2) == "im2col_gemm"
    assert ops.conv2d_algorithm(x, np.zeros((4, 8, 3, 3), np.float32)) == "im2col_gemm"
    assert ops.conv2d_algorithm(x, np.zeros((8, 1, 3, 3), np.float32), groups=8) == "direct"
    assert ops.conv2d_algorithm(x[:, :1], np.zeros((32, 1, 3, 3), np.float32)) == "im2col_gemm"
    wide = np.zeros((1, 16, 18, 20), np.float32)  # 3x3 stride 1, >= 16 channels: Winograd
    w16 = np.zeros((16, 16, 3, 3), np.float32)
    assert ops.conv2d_algorithm(wide, w16, padding=1) == "winograd_f4x4_3x3"  # 18 x 20 outputs
    assert ops.conv2d_algorithm(wide[:, :, :13, :13], w16) == "winograd_f4x4_3x3"  # 11 x 11 (the tutorial's)
    assert ops.conv2d_algorithm(wide[:, :, :8, :18], w16) == "winograd_f2x2_3x3"  # 6 rows: too few for 4x4
    assert ops.conv2d_algorithm(wide.transpose(0, 2, 3, 1), w16.transpose(0, 2, 3, 1), padding=1,
                                layout="NHWC") == "winograd_f4x4_3x3"
    assert "winograd" not in ops.conv2d_algorithm(wide[:, :, :12, :12], w16)  # 10 x 10: 4x4 tiles waste 44%
    assert ops.conv2d_algorithm(wide.astype(np.float64), np.zeros((16, 16, 3, 3))) == "im2col_gemm"
    assert ops.conv2d_algorithm(wide, w16, stride=2) == "im2col_gemm"
    assert ops.conv2d_algorithm(wide[:, :8], np.zeros((16, 8, 3, 3), np.float32)) != "winograd_f4x4_3x3"


# (N, C, H, W, K, padding, groups) for Winograd F(2x2, 3x3) and F(4x4, 3x3): output sizes around both tile
# sizes (a last tile 1..3 outputs inside the plane), padding 0..3 (grad_x runs with padding 2 - p, negative
# past 2), asymmetric "same", groups, 1x1 input, and enough tiles for several blocks of a thread
WINOGRAD_CONFIGS = [
    (2, 16, 18, 17, 16, 1, 1),
    (3, 17, 19, 21, 19, 0, 1),
    (1, 32, 16, 23, 32, (0, 2), 2),
    (2, 16, 17, 18, 20, 3, 1),
    (1, 16, 1, 1, 16, 1, 1),
    (2, 18, 20, 16, 16, "same", 1),
    (5, 16, 13, 13, 17, 0, 1),
    (3, 20, 11, 14, 16, 2, 1),
    (9, 16, 29, 31, 16, 1, 1),
    (2, 32, 12, 15, 32, 1, 2),
]


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd(monkeypatch, cpu_path, rng, dtype, tile):
    # every config forced onto each tile size (float32 takes F(4x4) by itself at most of these shapes), both
    # dtypes against the float64 reference (the sums differ from im2col's only by rounding)
    algo = {2: "winograd", 4: "winograd4"}[tile]
    monkeypatch.setenv("LAYERFORGE_CONV_ALGO", algo)
    for N, C, H, W, K, pad, groups in WINOGRAD_CONFIGS:
        for layout in ("NCHW", "NHWC"):  # NHWC: the NCHW passes on transposed copies
            _run((N, C, H, W, K, 3, 3, 1, pad, 1, groups), dtype, layout, rng)
    # grad_x with grad_weight (one pass over the forward's tiles), alone, and grad_weight alone agree
    x = rng.standard_normal((3, 16, 14, 13)).astype(dtype)
    w = rng.standard_normal((18, 16, 3, 3)).astype(dtype)
    go = rng.standard_normal((3, 18, 14, 13)).astype(dtype)
    gx, gw, _ = ops.conv2d_backward(go, x, w, padding=1)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert rel_err(ops.conv2d_backward(go, x, w, padding=1, need_grad_weight=False)[0], gx) < tol
    assert rel_err(ops.conv2d_backward(go, x, w, padding=1, need_grad_x=False)[1], gw) < tol
    x = np.zeros((1, 16, 16, 16), dtype)
    assert ops.conv2d_algorithm(x, np.zeros((16, 16, 3, 3), dtype), padding=1) == f"winograd_f{tile}x{tile}_3x3"
    assert ops.conv2d_algorithm(x, np.zeros((16, 3, 3, 16), dtype), padding=1, layout="NHWC") == (
        f"winograd_f{tile}x{tile}_3x3")


def test_winograd_f4x4_float32_accuracy(rng):
    # F(4x4)'s transforms grow values (B^T's rows sum to |5|): float32 outputs within ~2e-6 of max|y| at
    # 64 channels against the float64 reference (F(2x2) and im2col ~2e-7), here as chosen by itself
    x = rng.standard_normal((4, 64, 20, 20)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    assert ops.conv2d_algorithm(x, w, padding=1) == "winograd_f4x4_3x3"
    out = ops.conv2d(x, w, padding=1)
    go = rng.standard_normal(out.shape).astype(np.float32)
    gx, gw, _ = ops.conv2d_backward(go, x, w, padding=1, bias=False)
    out_r, gx_r, gw_r, _ = ref_conv(x, w, None, 1, 1, 1, 1, go.astype(np.float64))
    for got, ref in ((out, out_r), (gx, gx_r), (gw, gw_r)):
        assert np.abs(got - ref).max() < 5e-6 * np.abs(ref).max()


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_inf_and_nan_as_direct_sums(monkeypatch, rng, tile):
    # the transforms take differences of inputs (inf - inf = NaN where a direct sum keeps +-inf): a pass
    # that writes a NaN is redone by im2col, so non-finite values land where im2col (and torch) put them
    x = rng.standard_normal((2, 16, 18, 18)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    x[0, 3, 5, 7], x[1, 2, 4, 4], x[1, 5, 0, 17] = np.inf, -np.inf, np.nan
    go = rng.standard_normal((2, 16, 18, 18)).astype(np.float32)
    go[0, 1, 2, 3] = np.inf
    monkeypatch.setenv("LAYERFORGE_CONV_ALGO", "im2col")
    expected = (ops.conv2d(x, w, padding=1),) + ops.conv2d_backward(go, x, w, padding=1, bias=False)[:2]
    monkeypatch.setenv("LAYERFORGE_CONV_ALGO", {2: "winograd", 4: "winograd4"}[tile])
    got = (ops.conv2d(x, w, padding=1),) + ops.conv2d_backward(go, x, w, padding=1, bias=False)[:2]
    for a, e in zip(got, expected):
        assert np.array_equal(np.isnan(a), np.isnan(e)) and np.array_equal(np.isposinf(a), np.isposinf(e))
        assert not np.isfinite(e).all()
        finite = np.isfinite(e)
        assert np.allclose(a[finite], e[finite], rtol=1e-4, atol=1e-4)


def test_winograd_strided_views_and_threads(threads, rng):
    base = rng.standard_normal((2, 40, 19, 18)).astype(np.float32)
    x = base[:, ::2]  # (2, 20, 19, 18), channel stride 2 planes
    w = rng.standard_normal((3, 3, 20, 24)).astype(np.float32).transpose(3, 2, 0, 1)
    b = rng.standard_normal(24).astype(np.float32)
    assert ops.conv2d_algorithm(x, w, padding=1) == "winograd_f4x4_3x3"
    out = ops.conv2d(x, w, b, padding=1)
    go = rng.standard_normal(out.shape).astype(np.float32)
    gx, gw, gb = ops.conv2d_backward(go, x, w, padding=1)
    out_r, gx_r, gw_r, gb_r = ref_conv(x, w, b, 1, 1, 1, 1, go.astype(np.float64))
    for got, ref in ((out, out_r), (gx, gx_r), (gw, gw_r), (gb, gb_r)):
        assert rel_err(got, ref) < 2e-5
    again = ops.conv2d_backward(go, x, w, padding=1)
    assert all(np.array_equal(u, v) for u, v in zip((gx, gw, gb), again))


# (N, C, H, W, K, R, S, padding) for the register-blocked direct kernel (6 output columns x 16 channels):
# widths 1, 5, 6, 7, 13 around the 6-column blocks; K = 3, 16, 19, 33 around the 16-channel blocks; 5x3
# and 1x1 kernels; padding 0..3 (grad_x runs with padding R - 1 - p, negative past R - 1) and "same"
BLOCKED_CONFIGS = [
    (2, 8, 13, 13, 16, 3, 3, 0),
    (3, 9, 7, 5, 19, 3, 3, 1),
    (2, 8, 6, 6, 33, 5, 3, (2, 1)),
    (1, 8, 4, 1, 3, 3, 3, 3),
    (2, 12, 9, 13, 16, 1, 1, 1),
    (2, 10, 8, 7, 17, 3, 3, "same"),
]


# NHWC takes the blocked kernel for its forward also with few input channels (the first layer)
BLOCKED_NHWC_CONFIGS = BLOCKED_CONFIGS + [
    (2, 1, 28, 28, 32, 3, 3, 0),
    (3, 3, 9, 14, 16, 3, 3, 1),
    (2, 2, 5, 7, 17, 5, 3, (2, 1)),
    (2, 1, 1, 1, 8, 3, 3, 1),
]


@pytest.mark.parametrize("forced", [False, True])
def test_blocked_direct(monkeypatch, cpu_path, rng, threads, forced):
    # forced: every config through the blocked kernel (forward, and grad_x for NCHW); else as chosen
    if forced:
        monkeypatch.setenv("LAYERFORGE_CONV_ALGO", "blocked")
    for N, C, H, W, K, R, S, pad in BLOCKED_CONFIGS:
        _run((N, C, H, W, K, R, S, 1, pad, 1, 1), np.float32, "NCHW", rng, bias=K % 2 == 1)
    for N, C, H, W, K, R, S, pad in BLOCKED_NHWC_CONFIGS:
        _run((N, C, H, W, K, R, S, 1, pad, 1, 1), np.float32, "NHWC", rng, bias=K % 2 == 0)
    x1, w1 = np.zeros((32, 28, 28, 1), np.float32), np.zeros((32, 3, 3, 1), np.float32)
    assert ops.conv2d_algorithm(x1, w1, layout="NHWC") == "direct_blocked"
    if not forced:  # NCHW with one input channel stays on im2col (0.47 vs 0.53 ms measured)
        assert ops.conv2d_algorithm(x1.transpose(0, 3, 1, 2), w1.transpose(0, 3, 1, 2)) == "im2col_gemm"
    x = np.zeros((2, 8, 7, 5), np.float32)
    assert ops.conv2d_algorithm(x, np.zeros((3, 8, 3, 3), np.float32), padding=1) == (
        "direct_blocked" if forced else "im2col_gemm")  # 3 of 16 channels used: not chosen by itself
    # a small plane takes it by itself (the tutorial's second layer takes Winograd F(4x4)); float64, strides
    # and groups never do
    x = np.zeros((32, 32, 8, 8), np.float32)
    w = np.zeros((64, 32, 3, 3), np.float32)
    if not forced:
        assert ops.conv2d_algorithm(x, w) == "direct_blocked"
        assert ops.conv2d_algorithm(np.zeros((32, 32, 13, 13), np.float32), w) == "winograd_f4x4_3x3"
        assert ops.conv2d_algorithm(x.astype(np.float64), w.astype(np.float64)) == "im2col_gemm"
    assert ops.conv2d_algorithm(x, w, stride=2) == "im2col_gemm"
    assert ops.conv2d_algorithm(x, np.zeros((64, 16, 3, 3), np.float32), groups=2) == "im2col_gemm"


def test_blocked_direct_strided_views_and_repeats(rng):
    base = rng.standard_normal((32, 64, 8, 16)).astype(np.float32)
    x = base[:, ::2, :, ::2]  # (32, 32, 8, 8), strided in channels and columns
    w = rng.standard_normal((3, 3, 32, 64)).astype(np.float32).transpose(3, 2, 0, 1)
    b = rng.standard_normal(64).astype(np.float32)
    assert ops.conv2d_algorithm(x, w) == "direct_blocked"
    out = ops.conv2d(x, w, b)
    go = rng.standard_normal(out.shape).astype(np.float32)
    gx, gw, gb = ops.conv2d_backward(go, x, w)
    out_r, gx_r, gw_r, gb_r = ref_conv(x, w, b, 1, 0, 1, 1, go.astype(np.float64))
    for got, ref in ((out, out_r), (gx, gx_r), (gw, gw_r), (gb, gb_r)):
        assert rel_err(got, ref) < 2e-5
    assert np.array_equal(out, ops.conv2d(x, w, b))
    # NHWC with one input channel: x a strided view, w a transposed view
    base = rng.standard_normal((4, 30, 58, 2)).astype(np.float32)
    xh = base[:, 1:29, ::2, 1:]  # (4, 28, 29, 1)
    wh = rng.standard_normal((3, 3, 1, 32)).astype(np.float32).transpose(3, 0, 1, 2)  # (32, 3, 3, 1)
    assert ops.conv2d_algorithm(xh, wh, layout="NHWC") == "direct_blocked"
    out = ops.conv2d(xh, wh, b[:32], layout="NHWC")
    ref = ref_conv(xh.transpose(0, 3, 1, 2), wh.transpose(0, 3, 1, 2), b[:32], 1, 0, 1, 1)
    assert rel_err(out.transpose(0, 3, 1, 2), ref) < 2e-5


@pytest.mark.parametrize("algo", ["direct", "im2col", "winograd", "winograd4", "blocked"])
def test_forced_algorithm(monkeypatch, cpu_path, rng, algo):
    # every config through the forced path (direct applies where C/groups == 1, winograd to NCHW 3x3
    # stride 1 undilated, blocked to float32 only), both layouts
    monkeypatch.setenv("LAYERFORGE_CONV_ALGO", algo)
    x = np.zeros((1, 1, 5, 5))
    expected = {"direct": "direct", "im2col": "im2col_gemm", "winograd": "winograd_f2x2_3x3",
                "winograd4": "winograd_f4x4_3x3",
                "blocked": "im2col_gemm"}[algo]  # (blocked is float32 only: this is float64)
    assert ops.conv2d_algorithm(x, np.zeros((2, 1, 3, 3))) == expected
    for i, cfg in enumerate(CONFIGS):
        for layout in ("NCHW", "NHWC"):
            _run(cfg, np.float64, layout, rng, bias=i % 2 == 0)


def test_tutorial_shapes_float32(rng):
    # The tutorial CNN's two conv layers at a small batch, against the float64 reference.
    for (C, H, K) in ((1, 28, 32), (32, 13, 64)):
        x = rng.standard_normal((3, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        go = rng.standard_normal((3, K, H - 2, H - 2)).astype(np.float32)
        out_r, gx_r, gw_r, gb_r = ref_conv(x, w, b, 1, 0, 1, 1, go.astype(np.float64))
        out = ops.conv2d(x, w, b)
        gx, gw, gb = ops.conv2d_backward(go, x, w)
        for got, ref in ((out, out_r), (gx, gx_r), (gw, gw_r), (gb, gb_r)):
            assert rel_err(got, ref) < 1e-5


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for cfg in CONFIGS:
        N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C // groups, R, S)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        ref = F.conv2d(xt, wt, bt, _pair(stride), padding if isinstance(padding, str) else _pair(padding),
                       _pair(dil), groups)
        go = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
        ref.backward(torch.tensor(go))
        out = ops.conv2d(x, w, b, stride, padding, dil, groups)
        gx, gw, gb = ops.conv2d_backward(go, x, w, stride, padding, dil, groups)
        assert rel_err(out, ref.detach().numpy()) < 1e-5
        assert rel_err(gx, xt.grad.numpy()) < 1e-5
        assert rel_err(gw, wt.grad.numpy()) < 1e-5
        assert rel_err(gb, bt.grad.numpy()) < 1e-5


def test_two_python_threads(rng):
    x = rng.standard_normal((4, 8, 12, 11)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = ops.conv2d(x, w, padding=1)
    results = [None, None]

    def work(i):
        for _ in range(5):
            results[i] = ops.conv2d(x, w, padding=1)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in results:
        assert np.array_equal(r, expected)


# ---------------------------------------------------------------- bad input: clear errors, never a crash
def _x(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 2, 3, 3)), ValueError, ["channel mismatch", "(4, 2, 3, 3)", "(2, 3, 8, 8)"]),
        (lambda: ops.conv2d(_x(2, 6, 8, 8), _x(4, 2, 3, 3), groups=4), ValueError, ["groups=4", "6"]),
        (lambda: ops.conv2d(_x(2, 6, 8, 8), _x(5, 2, 3, 3), groups=3), ValueError, ["groups=3", "(5, 2, 3, 3)"]),
        (lambda: ops.conv2d(_x(2, 3, 4, 4), _x(4, 3, 7, 3)), ValueError, ["larger than the padded input", "(2, 3, 4, 4)"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), stride=0), ValueError, ["stride"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), stride=(1, -1)), ValueError, ["stride"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), dilation=0), ValueError, ["dilation"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), padding=-1), ValueError, ["padding"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), padding="full"), ValueError, ["padding", "full"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), stride=2, padding="same"), ValueError, ["same"]),
        (lambda: ops.conv2d(_x(3, 8, 8), _x(4, 3, 3, 3)), ValueError, ["x must be 4-d", "(3, 8, 8)"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3)), ValueError, ["weight must be 4-d", "(4, 3, 3)"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), groups=0), ValueError, ["groups"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), bias=_x(5)), ValueError, ["bias", "(5,)"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8, dtype=np.int32), _x(4, 3, 3, 3)), TypeError, ["int32"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8, dtype=np.float16), _x(4, 3, 3, 3)), TypeError, ["float16"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3, dtype=np.float64)), TypeError, ["float64", "float32"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), stride=1.5), TypeError, ["stride"]),
        (lambda: ops.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3, 3), layout="NWHC"), ValueError, ["layout"]),
        (lambda: ops.conv2d(_x(2, 8, 8, 3), _x(4, 3, 3, 2), layout="NHWC"), ValueError, ["channel mismatch"]),
        (lambda: ops.conv2d_backward(_x(2, 4, 5, 6), _x(2, 3, 8, 8), _x(4, 3, 3, 3)), ValueError,
         ["grad_out", "(2, 4, 5, 6)", "(2, 4, 6, 6)"]),
        (lambda: ops.conv2d_backward(_x(2, 4, 6, 6, dtype=np.float64), _x(2, 3, 8, 8), _x(4, 3, 3, 3)), TypeError,
         ["grad_out"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))
