"""conv2d / conv2d_backward on the GPU (cupy arrays): against the float64 reference and the CPU kernels on
the awkward configurations of test_conv.py, both layouts, strided views, bigger shapes that take every
tile configuration and vector path, determinism, errors. Marked cuda (skipped without a device; run on the
CPU emulator with LAYERFORGE_CUDA_EMULATOR, see tests/cuda_emu)."""
import numpy as np
import pytest

import layerforge
from layerforge import ops
from conftest import rel_err
from test_conv import CONFIGS, _pair, ref_conv, to_nchw, to_nhwc

pytestmark = pytest.mark.cuda
cp = pytest.importorskip("cupy")

EMULATED = layerforge.cuda.compiled_architectures() == ["emulated"]


def _both(cfg, dtype, layout, rng, bias=True, need_grad_x=True):
    """Run cfg on the GPU and the CPU from the same inputs; return (gpu results, cpu results, references),
    all as NCHW numpy arrays."""
    N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, R, S))
    b = rng.standard_normal(K) if bias else None
    out_ref = ref_conv(x, w, b, stride, padding, dil, groups)
    go = rng.standard_normal(out_ref.shape)
    _, gx_ref, gw_ref, gb_ref = ref_conv(x, w, b, stride, padding, dil, groups, go)
    xa, wa, goa = x.astype(dtype), w.astype(dtype), go.astype(dtype)
    ba = None if b is None else b.astype(dtype)
    if layout == "NHWC":
        xa, wa, goa = to_nhwc(xa), to_nhwc(wa), to_nhwc(goa)
    res = {}
    for dev, conv in (("gpu", cp.asarray), ("cpu", np.asarray)):
        bb = None if ba is None else conv(ba)
        out = ops.conv2d(conv(xa), conv(wa), bb, stride, padding, dil, groups, layout=layout)
        gx, gw, gb = ops.conv2d_backward(conv(goa), conv(xa), conv(wa), stride, padding, dil, groups, bias=bias,
                                         layout=layout, need_grad_x=need_grad_x)
        if dev == "gpu":
            for a in (out, gw) + ((gx,) if need_grad_x else ()) + ((gb,) if bias else ()):
                assert isinstance(a, cp.ndarray) and a.dtype == dtype
            out, gw = cp.asnumpy(out), cp.asnumpy(gw)
            gx = cp.asnumpy(gx) if need_grad_x else None
            gb = cp.asnumpy(gb) if bias else None
        if layout == "NHWC":
            out, gw = to_nchw(out), to_nchw(gw)
            gx = to_nchw(gx) if need_grad_x else None
        res[dev] = (out, gx, gw, gb)
    return res["gpu"], res["cpu"], (out_ref, gx_ref, gw_ref, gb_ref)


def _check(cfg, dtype, layout, rng, bias=True, need_grad_x=True, tol=None):
    gpu, cpu, ref = _both(cfg, dtype, layout, rng, bias, need_grad_x)
    tol = tol or (2e-5 if dtype == np.float32 else 1e-12)
    for name, g, c, r in zip(("out", "grad_x", "grad_weight", "grad_bias"), gpu, cpu, ref):
        if name == "grad_x" and not need_grad_x or name == "grad_bias" and not bias:
            assert g is None
            continue
        assert g.shape == r.shape, (cfg, name)
        assert np.all(np.isfinite(g)), (cfg, name, layout)
        assert rel_err(g, r) < tol, (cfg, name, layout, rel_err(g, r))
        assert rel_err(g, c) < tol, (cfg, name, layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_configs(rng, dtype, layout):
    for i, cfg in enumerate(CONFIGS):
        _check(cfg, dtype, layout, rng, bias=i % 3 != 1)


def test_random_configs(rng):
    for _ in range(10):
        groups = int(rng.choice([1, 1, 2, 3]))
        Cg, Kg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        H = dil[0] * (R - 1) + 1 + int(rng.integers(0, 6))
        W = dil[1] * (S - 1) + 1 + int(rng.integers(0, 6))
        cfg = (int(rng.integers(1, 4)), Cg * groups, H, W, Kg * groups, R, S, stride, pad, dil, groups)
        _check(cfg, np.float64, str(rng.choice(["NCHW", "NHWC"])), rng, bias=bool(rng.integers(0, 2)))


# Shapes past one tile in every direction: both float tile configurations (<= 64 and > 64 GEMM columns),
# channel counts that allow the NHWC vector loads (multiples of 4 and 8) and ones that do not, output
# planes whose size is (14*14, 8*8) and is not (9*7) a multiple of the vector width, 1x1, strided, grouped.
BIG = [
    (2, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1),      # 256x64 tiles; CRS = 576; splits of grad_w
    (2, 32, 9, 7, 136, 3, 3, 2, 1, 1, 1),       # 128x128 tiles, 2 column tiles (136 = 128 + 8)
    (3, 64, 8, 8, 96, 1, 1, 1, 0, 1, 1),        # 1x1
    (2, 24, 10, 9, 40, 3, 3, 1, 1, 1, 2),       # grouped, Cg = 12 (vector loads of 4, not of 8)
    (1, 3, 33, 31, 72, 7, 7, 2, 3, 1, 1),       # ResNet stem-like: C = 3 (per-element gathers), 7x7 stride 2
    (2, 20, 11, 13, 70, 3, 2, (2, 1), (1, 0), (1, 2), 1),  # odd everything
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bigger_shapes_float32(rng, layout):
    for cfg in BIG:
        _check(cfg, np.float32, layout, rng, tol=1e-5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bigger_shapes_float64(rng, layout):
    for cfg in BIG[:3]:
        _check(cfg, np.float64, layout, rng)


def test_without_bias_and_grad_x(rng):
    for layout in ("NCHW", "NHWC"):
        _check(CONFIGS[0], np.float32, layout, rng, bias=False, need_grad_x=False)
        _check(BIG[0], np.float32, layout, rng, bias=False, need_grad_x=False, tol=1e-5)


def test_depthwise_uses_direct_kernel():
    x = cp.zeros((2, 8, 6, 5), cp.float32)
    assert ops.conv2d_algorithm(x, cp.zeros((8, 1, 3, 3), cp.float32), groups=8) == "direct"
    assert ops.conv2d_algorithm(x, cp.zeros((16, 1, 3, 3), cp.float32), groups=8) == "direct"
    assert ops.conv2d_algorithm(x, cp.zeros((4, 8, 3, 3), cp.float32)) == "implicit_gemm"
    assert ops.conv2d_algorithm(x[:, :1], cp.zeros((32, 1, 3, 3), cp.float32)) == "implicit_gemm"


def test_strided_views(rng):
    # The same awkward views as test_conv.test_non_contiguous, as cupy arrays: copied once on the GPU.
    N, C, H, W, K = 2, 4, 9, 7, 6
    base = cp.asarray(rng.standard_normal((N, W * 2, C, H)))
    x = base[:, ::2].transpose(0, 2, 3, 1)
    assert not x.flags.c_contiguous and x.shape == (N, C, H, W)
    w = cp.asarray(rng.standard_normal((3, 3, C // 2, K))).transpose(3, 2, 0, 1)
    b = cp.asarray(rng.standard_normal(2 * K))[::2]
    out = ops.conv2d(x, w, b, 1, 1, 1, 2)
    xn, wn, bn = cp.asnumpy(x), cp.asnumpy(w), cp.asnumpy(b)
    assert rel_err(cp.asnumpy(out), ref_conv(xn, wn, bn, 1, 1, 1, 2)) < 1e-12
    go = cp.asarray(rng.standard_normal((N, H, W, 2 * K)))[..., ::2].transpose(0, 3, 1, 2)
    gx, gw, gb = ops.conv2d_backward(go, x, w, 1, 1, 1, 2)
    _, gx_r, gw_r, gb_r = ref_conv(xn, wn, bn, 1, 1, 1, 2, cp.asnumpy(go))
    for got, ref in ((gx, gx_r), (gw, gw_r), (gb, gb_r)):
        assert rel_err(cp.asnumpy(got), ref) < 1e-12
    out2 = ops.conv2d(x.transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1), b, 1, 1, 1, 2, layout="NHWC")
    assert rel_err(to_nchw(cp.asnumpy(out2)), cp.asnumpy(out)) < 1e-12


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_deterministic(rng, layout):
    # grad_weight and grad_bias are split reductions: two runs must agree bit for bit.
    for cfg in (BIG[0], BIG[3], CONFIGS[2]):
        N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
        x = cp.asarray(rng.standard_normal((N, C, H, W)).astype(np.float32))
        w = cp.asarray(rng.standard_normal((K, C // groups, R, S)).astype(np.float32))
        if layout == "NHWC":
            x, w = cp.ascontiguousarray(x.transpose(0, 2, 3, 1)), cp.ascontiguousarray(w.transpose(0, 2, 3, 1))
        go = ops.conv2d(x, w, None, stride, padding, dil, groups, layout=layout)
        a = ops.conv2d_backward(go, x, w, stride, padding, dil, groups, layout=layout)
        b = ops.conv2d_backward(go, x, w, stride, padding, dil, groups, layout=layout)
        for u, v in zip(a, b):
            assert cp.asnumpy(u).tobytes() == cp.asnumpy(v).tobytes()
        assert cp.asnumpy(ops.conv2d(x, w, None, stride, padding, dil, groups, layout=layout)).tobytes() == \
            cp.asnumpy(go).tobytes()


# Long N*P*Q reductions with few output channels: grad_weight (implicit GEMM and depthwise) and grad_bias
# are split over blocks into partial buffers (a workspace) and summed in a fixed order.
# (config, grad_weight split, grad_bias split): the bias reduction splits only past 2 x 4096 pixels.
SPLIT = [
    ((4, 8, 24, 24, 8, 3, 3, 1, 1, 1, 1), True, False),
    ((8, 4, 32, 32, 2, 3, 3, 1, 1, 1, 1), True, True),
    ((8, 4, 32, 32, 4, 3, 3, 1, 1, 1, 4), True, True),   # depthwise
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_split_reductions(rng, layout, monkeypatch):
    monkeypatch.setenv("LAYERFORGE_EMU_SMS", "64")  # the emulator's multiprocessor count (no effect on a GPU)
    k = layerforge.cuda._load()
    for cfg, w_split, b_split in SPLIT:
        N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
        x, w = _g(*((N, H, W, C) if layout == "NHWC" else (N, C, H, W))), _g(*((K, R, S, C // groups)
                                                                               if layout == "NHWC" else
                                                                               (K, C // groups, R, S)))
        params = [stride, stride, padding, padding, padding, padding, dil, dil, groups]
        assert (k.conv2d_backward_workspace_size(x, w, params, layout, True, False) > 0) == w_split, cfg
        assert (k.conv2d_backward_workspace_size(x, w, params, layout, False, True) > 0) == b_split, cfg
        _check(cfg, np.float32, layout, rng, tol=1e-5)
        _check(cfg, np.float64, layout, rng)
        xr = cp.asarray(rng.standard_normal(x.shape).astype(np.float32))
        wr = cp.asarray(rng.standard_normal(w.shape).astype(np.float32))
        go = ops.conv2d(xr, wr, None, stride, padding, dil, groups, layout=layout)
        a = ops.conv2d_backward(go, xr, wr, stride, padding, dil, groups, layout=layout)
        b = ops.conv2d_backward(go, xr, wr, stride, padding, dil, groups, layout=layout)
        for u, v in zip(a, b):
            assert cp.asnumpy(u).tobytes() == cp.asnumpy(v).tobytes()


def test_empty_batch():
    x = cp.zeros((0, 3, 6, 5), cp.float32)
    w = cp.ones((4, 3, 3, 3), cp.float32)
    out = ops.conv2d(x, w, cp.ones(4, cp.float32), padding=1)
    assert out.shape == (0, 4, 6, 5)
    gx, gw, gb = ops.conv2d_backward(cp.zeros((0, 4, 6, 5), cp.float32), x, w, padding=1)
    assert gx.shape == (0, 3, 6, 5)
    assert not cp.asnumpy(gw).any() and not cp.asnumpy(gb).any()


def test_against_torch_cuda(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or EMULATED:
        pytest.skip("needs torch with CUDA")
    torch.backends.cudnn.allow_tf32 = False
    F = torch.nn.functional
    for cfg in CONFIGS + BIG:
        N, C, H, W, K, R, S, stride, padding, dil, groups = cfg
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C // groups, R, S)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        xt = torch.tensor(x, device="cuda", requires_grad=True)
        wt = torch.tensor(w, device="cuda", requires_grad=True)
        bt = torch.tensor(b, device="cuda", requires_grad=True)
        ref = F.conv2d(xt, wt, bt, _pair(stride), padding if isinstance(padding, str) else _pair(padding),
                       _pair(dil), groups)
        go = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
        ref.backward(torch.tensor(go, device="cuda"))
        out = ops.conv2d(cp.asarray(x), cp.asarray(w), cp.asarray(b), stride, padding, dil, groups)
        gx, gw, gb = ops.conv2d_backward(cp.asarray(go), cp.asarray(x), cp.asarray(w), stride, padding, dil, groups)
        for got, want in ((out, ref), (gx, xt.grad), (gw, wt.grad), (gb, bt.grad)):
            assert rel_err(cp.asnumpy(got), want.detach().cpu().numpy()) < 1e-5, cfg


@pytest.mark.slow
def test_more_than_2_31_elements(rng):
    # x and out of 2049 x 16 x 256 x 256 float32 (> 2^31 elements each, 8.6 GB): 64-bit offsets.
    if EMULATED:
        pytest.skip("too large for the emulator")
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of free device memory")
    N, C, H, K = 2049, 16, 256, 16
    x = cp.random.standard_normal((N, C, H, H), dtype=cp.float32)
    w = cp.asarray(rng.standard_normal((K, C, 3, 3)).astype(np.float32))
    out = ops.conv2d(x, w, None, 1, 1)
    assert x.size > 2**31 and out.size > 2**31
    for n in (0, N - 1):
        ref = ops.conv2d(cp.asnumpy(x[n:n + 1]), cp.asnumpy(w), None, 1, 1)
        assert rel_err(cp.asnumpy(out[n:n + 1]), ref) < 1e-5
    del out
    gx, gw, gb = ops.conv2d_backward(x, x, cp.asarray(rng.standard_normal((C, C, 3, 3)).astype(np.float32)), 1, 1)
    assert bool(cp.isfinite(gw).all()) and bool(cp.isfinite(gx[-1]).all())


# ---------------------------------------------------------------- errors
def _g(*shape, dtype=np.float32):
    return cp.zeros(shape, dtype)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: ops.conv2d(_g(2, 3, 8, 8), np.zeros((4, 3, 3, 3), np.float32)), TypeError,
         ["x is a GPU array but weight is not", "ndarray"]),
        (lambda: ops.conv2d(_g(2, 3, 8, 8), _g(4, 3, 3, 3), np.zeros(4, np.float32)), TypeError,
         ["bias is not"]),
        (lambda: ops.conv2d_backward(np.zeros((2, 4, 6, 6), np.float32), _g(2, 3, 8, 8), _g(4, 3, 3, 3)), TypeError,
         ["grad_out"]),
        (lambda: ops.conv2d(_g(2, 3, 8, 8, dtype=np.float16), _g(4, 3, 3, 3, dtype=np.float16)), TypeError,
         ["float16"]),
        (lambda: ops.conv2d(_g(2, 3, 8, 8, dtype=np.int32), _g(4, 3, 3, 3)), TypeError, ["int32"]),
        (lambda: ops.conv2d(_g(2, 3, 8, 8), _g(4, 3, 3, 3, dtype=np.float64)), TypeError, ["float64", "float32"]),
        (lambda: ops.conv2d(_g(2, 3, 8, 8), _g(4, 2, 3, 3)), ValueError, ["channel mismatch"]),
        (lambda: ops.conv2d(_g(2, 3, 4, 4), _g(4, 3, 7, 3)), ValueError, ["larger than the padded input"]),
        (lambda: ops.conv2d(_g(2, 3, 8, 8), _g(4, 3, 3, 3), stride=0), ValueError, ["stride"]),
        (lambda: ops.conv2d_backward(_g(2, 4, 5, 6), _g(2, 3, 8, 8), _g(4, 3, 3, 3)), ValueError, ["grad_out"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_binding_checks():
    # The C++ launchers check what the Python layer normally guarantees (C++ users call them directly).
    k = layerforge.cuda._load()
    x, w = _g(2, 3, 8, 8), _g(4, 3, 3, 3)
    params = [1, 1, 1, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="must be C-contiguous"):
        k.conv2d_forward(x[:, :, ::2], w, None, _g(2, 4, 4, 8), params, "NCHW", 0)
    with pytest.raises(ValueError, match="out has shape"):
        k.conv2d_forward(x, w, None, _g(2, 4, 8, 7), params, "NCHW", 0)
    with pytest.raises(TypeError, match="unsupported GPU array dtype"):
        k.conv2d_forward(x, w, None, _g(2, 4, 8, 8, dtype=np.int32), params, "NCHW", 0)
    with pytest.raises(ValueError, match="layout"):
        k.conv2d_forward(x, w, None, _g(2, 4, 8, 8), params, "NWHC", 0)
    n = k.conv2d_backward_workspace_size(x, w, params, "NCHW", True, True)
    if n:
        with pytest.raises(ValueError, match="workspace of at least"):
            k.conv2d_backward(_g(2, 4, 8, 8), x, w, None, _g(4, 3, 3, 3), _g(4), None, params, "NCHW", 0)


def test_host_memory_is_rejected():
    if EMULATED:
        pytest.skip("the emulator's device memory is host memory")
    host = np.zeros((2, 3, 8, 8), np.float32)

    class HostArray:  # claims to be a GPU array but points at host memory
        __cuda_array_interface__ = {"shape": host.shape, "typestr": "<f4", "data": (host.ctypes.data, False),
                                    "version": 3, "strides": None}

    k = layerforge.cuda._load()
    with pytest.raises(ValueError, match="x: .*(host memory|not a CUDA pointer)"):
        k.conv2d_forward(HostArray(), _g(4, 3, 3, 3), None, _g(2, 4, 6, 6), [1, 1, 0, 0, 0, 0, 1, 1, 1], "NCHW", 0)
