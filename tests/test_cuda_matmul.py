"""layerforge.ops.matmul on the GPU (cupy arrays) against float64 references, and the CPU-side logic of
the GPU path (dispatch, errors, bfloat16 bit conversion, the shared batch walk) that runs everywhere.

GPU tests are marked cuda (skipped without a device). Errors are measured relative to |a| @ |b|, the
scale of the rounding error, so a product that cancels to ~0 by chance does not look wrong.
"""
import threading

import numpy as np
import pytest

import layerforge
from layerforge import cuda, ops

# Tile sizes of the kernels: FMA 128x128x8 and 64x64x8, tensor cores 128x128 with k-stages of 32 (16-bit)
# or 16 (TF32), float64 64x64x16. Sizes around them, 1 and primes.
EDGE = [1, 7, 127, 128, 129, 257]


def scaled_err(got, a, b):
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ref = np.matmul(a64, b64)
    scale = np.linalg.norm(np.matmul(np.abs(a64), np.abs(b64)))
    return np.linalg.norm(np.asarray(got, np.float64) - ref) / (scale if scale > 0 else 1.0)


TOL = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-3, "bfloat16": 1e-2, "tf32": 5e-3}


# ---------------------------------------------------------------------------------------------- CPU-only
class FakeGpuArray:
    """Stands in for a cupy array: only __cuda_array_interface__ matters to dispatch."""

    def __init__(self, shape=(2, 3), typestr="<f4", ptr=0):
        self.__cuda_array_interface__ = {
            "shape": shape, "typestr": typestr, "data": (ptr, False), "version": 3, "strides": None,
        }


@pytest.mark.skipif(cuda.is_available(), reason="checks the message given without a GPU")
def test_gpu_operands_without_gpu_raise_with_reason():
    with pytest.raises(RuntimeError, match=r"matmul: cannot run on the GPU: .+"):
        ops.matmul(FakeGpuArray((2, 3)), FakeGpuArray((3, 4)))
    with pytest.raises(RuntimeError, match=r"matmul: cannot run on the GPU: .+"):
        ops.matmul(FakeGpuArray((2, 3)), FakeGpuArray((3, 4)), bf16=True)


def test_mixed_devices_raise_naming_both():
    with pytest.raises(TypeError, match=r"matmul: a is a GPU array but b is not \(a ndarray\)"):
        ops.matmul(FakeGpuArray((2, 3)), np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"matmul: a, b are GPU arrays but out is not"):
        ops.matmul(FakeGpuArray((2, 3)), FakeGpuArray((3, 4)), out=np.empty((2, 4), np.float32))


def test_bf16_flag_needs_gpu_arrays():
    with pytest.raises(TypeError, match="bf16=True .* runs on the GPU only"):
        ops.matmul(np.ones((2, 3), np.uint16), np.ones((3, 4), np.uint16), bf16=True)


def test_allow_tf32_is_off_by_default():
    assert cuda.allow_tf32 is False


def test_bfloat16_bits_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-30, 30, 20000)).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-42, 3.3961e38, -3.4e38, 1.0 + 2**-8,
                         1.0 + 3 * 2**-8, 1.0 + 2**-8 + 2**-20], np.float32)  # ties, overflow, subnormals
    x = np.concatenate([x, specials])
    bits = cuda.to_bfloat16_bits(x)
    assert bits.dtype == np.uint16 and bits.shape == x.shape
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, ref)
    back = cuda.from_bfloat16_bits(bits)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, torch.from_numpy(ref.view(np.int16)).view(torch.bfloat16).float().numpy())


def test_bfloat16_bits_nan_and_strided_input(rng):
    x = rng.standard_normal((6, 10)).astype(np.float32)
    x[2, 3] = np.nan
    bits = cuda.to_bfloat16_bits(x[:, ::-3])  # non-contiguous view
    back = cuda.from_bfloat16_bits(bits)
    assert np.isnan(back[2, 2]) and np.isnan(back).sum() == 1
    ok = ~np.isnan(x[:, ::-3])
    assert np.all(np.abs(back[ok] - x[:, ::-3][ok]) <= np.abs(x[:, ::-3][ok]) * 2.0**-8)
    with pytest.raises(TypeError, match="expected a float array"):
        cuda.to_bfloat16_bits(np.ones(3, np.int32))
    with pytest.raises(TypeError, match="expected a uint16 array"):
        cuda.from_bfloat16_bits(np.ones(3, np.float32))


@pytest.mark.parametrize("make", [
    # (a, b) of numpy arrays whose batch dims collapse in different ways (matmul_batch.h, shared by the
    # CPU and CUDA matmul): contiguous, broadcast in one operand, reversed, interleaved broadcasts.
    lambda r: (r.standard_normal((2, 3, 4, 5, 6)), r.standard_normal((6, 7))),
    lambda r: (r.standard_normal((2, 3, 4, 5, 6)), r.standard_normal((3, 1, 6, 7))),
    lambda r: (r.standard_normal((2, 3, 4, 5, 6))[:, ::-1], r.standard_normal((4, 6, 7))),
    lambda r: (r.standard_normal((2, 1, 4, 5, 6)), r.standard_normal((1, 3, 1, 6, 7))),
    lambda r: (r.standard_normal((3, 1, 5, 6))[:, [0, 0]], r.standard_normal((2, 6, 7))),  # copy, fine
    lambda r: (np.broadcast_to(r.standard_normal((1, 5, 6)), (4, 5, 6)), r.standard_normal((4, 6, 7))),
])
def test_shared_batch_walk_on_cpu(rng, make):
    a, b = make(rng)
    got = ops.matmul(a, b)
    assert got.shape == np.matmul(a, b).shape
    assert scaled_err(got, a, b) < 1e-12


def test_gpu_bench_family_is_empty_without_gpu():
    from layerforge.bench import cuda_matmul, harness

    assert harness.FAMILIES["cuda_matmul"] == "layerforge.bench.cuda_matmul"
    if not cuda.is_available():
        assert list(cuda_matmul.cases(False)) == []


# ---------------------------------------------------------------------------------------------- GPU
@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


def to_gpu(cp, x, dtype):
    """Host float array -> (device array of `dtype` or bf16 bits, host float64 copy of exactly the
    values the device holds, so the reference sees the same rounded inputs)."""
    if dtype == "bfloat16":
        bits = cuda.to_bfloat16_bits(np.asarray(x, np.float32))
        return cp.asarray(bits), cuda.from_bfloat16_bits(bits).astype(np.float64)
    host = np.asarray(x).astype(dtype)
    return cp.asarray(host), host.astype(np.float64)


def from_gpu(cp, y, dtype):
    y = cp.asnumpy(y)
    return cuda.from_bfloat16_bits(y) if dtype == "bfloat16" else y


def run(cp, a, b, dtype, **kw):
    """ops.matmul on device arrays; returns the host result as float64."""
    got = ops.matmul(a, b, bf16=(dtype == "bfloat16"), **kw)
    assert isinstance(got, cp.ndarray)
    return from_gpu(cp, got, dtype).astype(np.float64)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_edge_shapes(cp, rng, dtype):
    for m in EDGE:
        for n in EDGE:
            for k in EDGE:
                a, ha = to_gpu(cp, rng.standard_normal((m, k)), dtype)
                b, hb = to_gpu(cp, rng.standard_normal((k, n)), dtype)
                got = run(cp, a, b, dtype)
                assert got.shape == (m, n)
                assert scaled_err(got, ha, hb) < TOL[dtype], (m, n, k)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("m,k,n,batch", [
    (1500, 300, 1600, 1),   # float32: 128x128 tiles (enough to fill the SMs)
    (7, 3000, 9, 1),        # float32: split-K (one 64x64 tile, deep K)
    (130, 2000, 70, 3),     # split-K with a batch
    (300, 1030, 520, 2),    # tensor cores: several k-stages, ragged edges
])
def test_kernel_paths(cp, rng, dtype, m, k, n, batch):
    a, ha = to_gpu(cp, rng.standard_normal((batch, m, k)), dtype)
    b, hb = to_gpu(cp, rng.standard_normal((batch, k, n)), dtype)
    assert scaled_err(run(cp, a, b, dtype), ha, hb) < TOL[dtype]


def _views(cp, rng, dtype, m, k, n):
    """(name, a, b, host a, host b) over operand layouts: row-major, transposed (K-major / MN-major in
    both operands, which the tensor-core kernel maps to three kernels plus a swap), sliced with steps
    (element-wise gather), negative strides, zero strides (broadcast), K not a multiple of the
    16-byte chunk (unaligned rows), and a cp.async chunk cut by the edge (row stride 8-aligned, K not)."""
    def pair(shape_a, shape_b):
        ga, ha = to_gpu(cp, rng.standard_normal(shape_a), dtype)
        gb, hb = to_gpu(cp, rng.standard_normal(shape_b), dtype)
        return ga, gb, ha, hb

    out = []
    a, b, ha, hb = pair((m, k), (k, n))
    out.append(("rowmajor", a, b, ha, hb))
    a, b, ha, hb = pair((k, m), (n, k))
    out.append(("a.T b.T", a.T, b.T, ha.T, hb.T))
    a, b, ha, hb = pair((m, k), (n, k))
    out.append(("a b.T", a, b.T, ha, hb.T))
    a, b, ha, hb = pair((k, m), (k, n))
    out.append(("a.T b", a.T, b, ha.T, hb))
    a, b, ha, hb = pair((2 * m, 3 * k), (2 * k, n + 3))
    out.append(("stepped", a[::2, ::3], b[::2, 3:], ha[::2, ::3], hb[::2, 3:]))
    a, b, ha, hb = pair((m, k), (k, n))
    out.append(("negative", a[::-1, ::-1], b[:, ::-1], ha[::-1, ::-1], hb[:, ::-1]))
    a, b, ha, hb = pair((1, k), (k, 1))
    out.append(("zero strides", cp.broadcast_to(a, (m, k)), cp.broadcast_to(b, (k, n)),
                np.broadcast_to(ha, (m, k)), np.broadcast_to(hb, (k, n))))
    kp, np_ = (k // 8 + 2) * 8, (n // 8 + 2) * 8  # row strides multiple of 8, K and N cut inside a chunk
    a, b, ha, hb = pair((m, kp), (k, np_))
    out.append(("chunk cut by edge", a[:, :k], b[:, :n], ha[:, :k], hb[:, :n]))
    a, b, ha, hb = pair((m + 1, k + 1), (k + 1, n + 1))
    out.append(("offset by one element", a[1:, 1:], b[1:, 1:], ha[1:, 1:], hb[1:, 1:]))
    return out


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("m,k,n", [(129, 77, 131), (300, 261, 140), (5, 1000, 3)])
def test_strided_views(cp, rng, dtype, m, k, n):
    for name, a, b, ha, hb in _views(cp, rng, dtype, m, k, n):
        got = run(cp, a, b, dtype)
        assert scaled_err(got, ha, hb) < TOL[dtype], name


@pytest.mark.cuda
@pytest.mark.parametrize("sa,sb", [
    ((3, 5, 7), (3, 7, 4)),
    ((2, 1, 5, 7), (3, 7, 4)),
    ((5, 7), (4, 7, 6)),
    ((4, 5, 7), (7, 6)),
    ((2, 3, 1, 5, 7), (1, 3, 4, 7, 2)),   # broadcasts in different dims: a host loop of launches
    ((2, 1, 3, 130, 70), (4, 1, 70, 129)),
    ((40, 8, 9), (40, 9, 8)),
])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batch_broadcasting(cp, rng, sa, sb, dtype):
    a, ha = to_gpu(cp, rng.standard_normal(sa), dtype)
    b, hb = to_gpu(cp, rng.standard_normal(sb), dtype)
    got = run(cp, a, b, dtype)
    assert got.shape == np.matmul(ha, hb).shape
    assert scaled_err(got, ha, hb) < TOL[dtype]


@pytest.mark.cuda
def test_batch_past_grid_z_limit(cp, rng):
    # 70000 products > 65535 (grid.z): the kernels loop over the rest.
    a, ha = to_gpu(cp, rng.standard_normal((70000, 3, 5)), "float32")
    b, hb = to_gpu(cp, rng.standard_normal((70000, 5, 2)), "float32")
    got = run(cp, a, b, "float32")
    assert scaled_err(got, ha, hb) < 1e-5
    assert np.abs(got[-1] - ha[-1] @ hb[-1]).max() < 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize("sa,sb", [((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (2, 5, 3)),
                                   ((2, 4, 5), (5,)), ((300,), (300, 200))])
def test_one_d(cp, rng, sa, sb):
    a, ha = to_gpu(cp, rng.standard_normal(sa), "float64")
    b, hb = to_gpu(cp, rng.standard_normal(sb), "float64")
    got = ops.matmul(a, b)
    assert isinstance(got, cp.ndarray) and got.shape == np.matmul(ha, hb).shape
    assert scaled_err(cp.asnumpy(got), ha, hb) < 1e-12


@pytest.mark.cuda
def test_out(cp, rng):
    a, ha = to_gpu(cp, rng.standard_normal((13, 17)), "float32")
    b, hb = to_gpu(cp, rng.standard_normal((17, 19)), "float32")
    out = cp.full((13, 19), cp.nan, cp.float32)  # NaN in out must not leak (beta = 0)
    got = ops.matmul(a, b, out=out)
    assert got is out
    assert scaled_err(cp.asnumpy(out), ha, hb) < 1e-5
    # A strided out: only its elements are written.
    big = cp.full((13, 40), 7.0, cp.float32)
    ops.matmul(a, b, out=big[:, ::2][:, :19])
    host = cp.asnumpy(big)
    assert scaled_err(host[:, ::2][:, :19], ha, hb) < 1e-5
    assert np.all(host[:, 1::2] == 7.0) and np.all(host[:, 38:] == 7.0)
    with pytest.raises(ValueError, match=r"out has shape \(13, 18\), expected \(13, 19\)"):
        ops.matmul(a, b, out=cp.empty((13, 18), cp.float32))
    with pytest.raises(TypeError, match="out has dtype float64, expected float32"):
        ops.matmul(a, b, out=cp.empty((13, 19), cp.float64))
    sq = cp.asarray(rng.standard_normal((8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="out overlaps an input"):
        ops.matmul(sq, sq, out=sq)


def colmajor(cp, x):
    """The same values stored column-major per matrix (an MN-major A / K-major B for the kernels)."""
    return cp.ascontiguousarray(x.transpose(0, 2, 1)).transpose(0, 2, 1)


@pytest.mark.cuda
def test_tf32(cp, rng):
    # Big enough (8 x 3 x 4 tiles of 128x128) for the TF32 tensor-core kernel to be chosen.
    a, ha = to_gpu(cp, rng.standard_normal((8, 300, 257)), "float32")
    b, hb = to_gpu(cp, rng.standard_normal((8, 257, 400)), "float32")
    wide, hwide = to_gpu(cp, rng.standard_normal((8, 300, 514)), "float32")
    exact = run(cp, a, b, "float32")
    assert scaled_err(exact, ha, hb) < 1e-5  # allow_tf32 is off by default
    before = cuda.allow_tf32
    try:
        cuda.allow_tf32 = True
        for name, x, y, hx, hy in [
            ("K-major A, MN-major B", a, b, ha, hb),
            ("MN-major A, MN-major B", colmajor(cp, a), b, ha, hb),
            ("K-major A, K-major B", a, colmajor(cp, b), ha, hb),
            ("MN-major A, K-major B (swapped)", colmajor(cp, a), colmajor(cp, b), ha, hb),
            ("gathered A", wide[:, :, ::2], b, hwide[:, :, ::2], hb),
        ]:
            got = run(cp, x, y, "float32")
            err = scaled_err(got, hx, hy)
            assert err < TOL["tf32"], name
            assert err > 1e-6, f"{name}: the result is exact float32; TF32 tensor cores were not used"
    finally:
        cuda.allow_tf32 = before


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tensor_core_layouts(cp, rng, dtype):
    # The four layout pairs of the 16-bit kernel (three kernels, the fourth by swapping the operands).
    a, ha = to_gpu(cp, rng.standard_normal((3, 200, 150)), dtype)
    b, hb = to_gpu(cp, rng.standard_normal((3, 150, 330)), dtype)
    for name, x, y in [("K/MN", a, b), ("MN/MN", colmajor(cp, a), b), ("K/K", a, colmajor(cp, b)),
                       ("MN/K", colmajor(cp, a), colmajor(cp, b))]:
        assert scaled_err(run(cp, x, y, dtype), ha, hb) < TOL[dtype], name


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_cpu(cp, rng, dtype):
    ha = rng.standard_normal((4, 97, 131)).astype(dtype)
    hb = rng.standard_normal((131, 61)).astype(dtype)
    got = cp.asnumpy(ops.matmul(cp.asarray(ha), cp.asarray(hb)))
    cpu = ops.matmul(ha, hb)
    assert scaled_err(got, ha, hb) < TOL[dtype]
    assert np.abs(got - cpu).max() <= 10 * TOL[dtype] * np.abs(cpu).max()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "tf32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("batch,m,n,k", [(3, 130, 70, 300), (2, 7, 9, 3000), (9, 257, 129, 64), (8, 300, 400, 257)])
def test_gemm_strided_batched_alpha_beta(cp, rng, dtype, batch, m, n, k):
    """The C++ launcher other CUDA kernels call: alpha, beta, a broadcast (zero batch stride) B."""
    kern = layerforge._cuda
    storage = "float32" if dtype == "tf32" else dtype
    a, ha = to_gpu(cp, rng.standard_normal((batch, m, k)), storage)
    b1, hb1 = to_gpu(cp, rng.standard_normal((1, k, n)), storage)
    b, hb = cp.broadcast_to(b1, (batch, k, n)), np.broadcast_to(hb1, (batch, k, n))
    c0, hc0 = to_gpu(cp, rng.standard_normal((batch, m, n)), storage)
    stream = cp.cuda.get_current_stream().ptr
    bf16 = dtype == "bfloat16"
    c = c0.copy()
    kern.gemm_strided_batched(a, b, c, 0.5, -2.0, dtype == "tf32", stream, bf16)
    got = from_gpu(cp, c, storage).astype(np.float64)
    ref = 0.5 * np.matmul(ha, hb) - 2.0 * hc0
    scale = 0.5 * np.linalg.norm(np.matmul(np.abs(ha), np.abs(hb))) + 2.0 * np.linalg.norm(hc0)
    assert np.linalg.norm(got - ref) / scale < TOL[dtype]
    # beta == 0 never reads C: NaN there must not leak.
    nan_bits = cuda.to_bfloat16_bits(np.full((batch, m, n), np.nan, np.float32)) if bf16 else None
    c = cp.asarray(nan_bits) if bf16 else cp.full((batch, m, n), cp.nan, storage)
    kern.gemm_strided_batched(a, b, c, 1.0, 0.0, dtype == "tf32", stream, bf16)
    got = from_gpu(cp, c, storage).astype(np.float64)
    assert not np.isnan(got).any()
    assert scaled_err(got, ha, hb) < TOL[dtype]


@pytest.mark.cuda
def test_deterministic(cp, rng):
    # Split-K sums its partial products in a fixed order: identical bits every run.
    a = cp.asarray(rng.standard_normal((7, 5000)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((5000, 11)).astype(np.float32))
    first = cp.asnumpy(ops.matmul(a, b))
    for _ in range(3):
        np.testing.assert_array_equal(cp.asnumpy(ops.matmul(a, b)), first)


@pytest.mark.cuda
def test_streams_and_threads(cp, rng):
    # Two Python threads, each on its own cupy stream (the GIL is released while the kernel is queued).
    a = cp.asarray(rng.standard_normal((300, 200)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((200, 100)).astype(np.float32))
    ref = cp.asnumpy(ops.matmul(a, b))
    results, errors = [None, None], []

    def work(i):
        try:
            with cp.cuda.Stream(non_blocking=True) as s:
                for _ in range(20):
                    r = ops.matmul(a, b)
                s.synchronize()
                results[i] = cp.asnumpy(r)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        np.testing.assert_array_equal(r, ref)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,k", [("float32", 1024), ("float16", 2048)])
def test_more_than_2_31_elements(cp, rng, dtype, k):
    """An operand of more than 2^31 elements: every flat offset must be 64-bit."""
    m, n = (1 << 31) // k + 3, 5
    need = (m * k + k * n + m * n) * np.dtype(dtype).itemsize
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < need * 1.2:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    a = cp.empty((m, k), dtype)
    # Fill in slices (a float32 temporary of the whole operand would double the memory).
    step = 1 << 18
    gen = cp.random.default_rng(1)
    for r0 in range(0, m, step):
        a[r0:r0 + step] = gen.standard_normal((min(step, m - r0), k), dtype=cp.float32).astype(dtype)
    hb = rng.standard_normal((k, n)).astype(dtype)
    b = cp.asarray(hb)
    got = ops.matmul(a, b)
    rows = np.concatenate([np.arange(64), rng.integers(0, m, 256), np.arange(m - 64, m)])
    ha = cp.asnumpy(a[cp.asarray(rows)]).astype(np.float64)
    assert scaled_err(cp.asnumpy(got[cp.asarray(rows)]), ha, hb.astype(np.float64)) < TOL[dtype]
    del a, got


@pytest.mark.cuda
def test_mixed_numpy_and_cupy(cp, rng):
    a = cp.asarray(rng.standard_normal((3, 4)).astype(np.float32))
    with pytest.raises(TypeError, match=r"matmul: a is a GPU array but b is not \(a ndarray\)"):
        ops.matmul(a, np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match=r"matmul: b is a GPU array but a is not"):
        ops.matmul(np.ones((2, 3), np.float32), a)


@pytest.mark.cuda
def test_wrong_dtypes(cp):
    f32 = cp.ones((3, 4), cp.float32)
    with pytest.raises(TypeError, match="a has dtype int32; supported on the GPU"):
        ops.matmul(cp.ones((3, 4), cp.int32), cp.ones((4, 2), cp.int32))
    with pytest.raises(TypeError, match=r"pass bf16=True"):
        ops.matmul(cp.ones((3, 4), cp.uint16), cp.ones((4, 2), cp.uint16))
    with pytest.raises(TypeError, match="bf16=True expects uint16 arrays"):
        ops.matmul(f32, cp.ones((4, 2), cp.float32), bf16=True)
    with pytest.raises(TypeError, match="a has dtype float32 and b has dtype float64"):
        ops.matmul(f32, cp.ones((4, 2), cp.float64))
    with pytest.raises(ValueError, match=r"mismatch in the inner dimension"):
        ops.matmul(f32, cp.ones((5, 2), cp.float32))
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.matmul(cp.ones((2, 3, 4), cp.float32), cp.ones((3, 4, 2), cp.float32))
    with pytest.raises(ValueError, match="0-d"):
        ops.matmul(cp.ones((), cp.float32), f32)


@pytest.mark.cuda
def test_host_pointer_rejected(cp):
    # The binding checks every pointer before a kernel can touch it.
    host = np.ones((3, 4), np.float32)
    fake = FakeGpuArray((3, 4), "<f4", host.ctypes.data)
    dev_b = cp.ones((4, 2), cp.float32)
    out = cp.empty((3, 2), cp.float32)
    stream = cp.cuda.get_current_stream().ptr
    with pytest.raises(ValueError, match=r"a: (host memory|not a CUDA pointer)"):
        layerforge._cuda.matmul(fake, dev_b, out, False, stream)
    with pytest.raises(ValueError, match="out: GPU array is read-only"):
        ro = FakeGpuArray((3, 2), "<f4", out.data.ptr)
        ro.__cuda_array_interface__["data"] = (out.data.ptr, True)
        layerforge._cuda.matmul(cp.ones((3, 4), cp.float32), dev_b, ro, False, stream)
