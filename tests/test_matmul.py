"""layerforge.ops.matmul against numpy computed in float64."""
import threading

import numpy as np
import pytest

import layerforge
from layerforge import _C, ops
from conftest import rel_err

# Blocking of the AVX2 path: MR=6, NR=16, MC=144, KC=256, NC=3072; generic: MR=4, NR=8, MC=128,
# KC=256, NC=2048. Sizes just past each boundary, 1 and primes.
EDGE_SIZES = [1, 2, 5, 6, 7, 13, 16, 17, 31, 97, 145, 257]


def ref_matmul(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def check(a, b, tol=None, **kw):
    got = ops.matmul(a, b, **kw)
    ref = ref_matmul(a, b)
    assert got.shape == ref.shape
    assert got.dtype == a.dtype
    tol = tol or (1e-5 if a.dtype == np.float32 else 1e-12)
    # Error relative to |a| @ |b| (the scale of the rounding error), so a result that cancels to near
    # zero by chance (m = n = 1) does not make a correct product look wrong.
    scale = np.linalg.norm(np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))))
    err = np.linalg.norm(np.asarray(got, np.float64) - ref) / (scale if scale > 0 else 1.0)
    assert err < tol, (a.shape, b.shape, err)
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_shapes(cpu_path, threads, rng, dtype):
    for m in EDGE_SIZES:
        for n in (1, 17, 33):
            k = int(rng.choice(EDGE_SIZES))
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            check(a, b)
    for n in EDGE_SIZES:
        a = rng.standard_normal((7, 19)).astype(dtype)
        b = rng.standard_normal((19, n)).astype(dtype)
        check(a, b)


@pytest.mark.parametrize("m,k,n", [(145, 300, 49), (7, 513, 3073), (150, 257, 2049), (33, 1000, 130)])
def test_blocking_boundaries(cpu_path, threads, rng, m, k, n):
    # Past MC, KC (twice), NC of both paths.
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    check(a, b)


def test_large_square_float32(rng):
    a = rng.standard_normal((600, 700)).astype(np.float32)
    b = rng.standard_normal((700, 650)).astype(np.float32)
    check(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_views(cpu_path, rng, dtype):
    base_a = rng.standard_normal((60, 50)).astype(dtype)
    base_b = rng.standard_normal((50, 70)).astype(dtype)
    views = [
        (base_a.T[:, :40], base_b[:40, :]),         # transposed a (columns contiguous)
        (base_a[:, :37], base_b.T[:, :37].T[:37]),   # sliced
        (base_a[::2, ::3], base_b[::3, ::2][:17]),  # every other row/column
        (base_a[::-1, ::-1], base_b[::-1, :]),      # negative strides
        (base_a[:50].T, base_b[:60 - 10].T.T),       # H != W transposed
        (base_b.T, base_a.T[:, :60]),               # both transposed
    ]
    for a, b in views:
        b = b[: a.shape[1]]
        check(a, b)


def test_transposed_is_not_copied_into_result(rng):
    # The transposed view of a (K, M) buffer multiplies like its copy.
    buf = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((300, 90)).astype(np.float32)
    assert rel_err(ops.matmul(buf.T, b), ops.matmul(np.ascontiguousarray(buf.T), b)) < 1e-6


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 5, 7), (3, 7, 4)),
        ((2, 1, 5, 7), (3, 7, 4)),
        ((5, 7), (4, 7, 6)),
        ((4, 5, 7), (7, 6)),
        ((2, 3, 1, 5, 7), (1, 3, 4, 7, 2)),
        ((1, 5, 7), (6, 7, 3)),
        ((40, 8, 9), (40, 9, 8)),  # many small products: one per thread
        ((3, 130, 260), (260, 70)),
    ],
)
def test_batched_broadcasting(threads, rng, sa, sb):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    check(a, b)


def test_batched_strided(rng):
    a = rng.standard_normal((4, 9, 6)).astype(np.float32).transpose(0, 2, 1)  # (4, 6, 9)
    b = rng.standard_normal((9, 4, 5)).astype(np.float32).transpose(1, 0, 2)  # (4, 9, 5)
    check(a, b)
    check(a[::-1], b[::2].repeat(2, axis=0))


@pytest.mark.parametrize(
    "sa,sb", [((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (2, 5, 3)), ((2, 4, 5), (5,))]
)
def test_one_d(rng, sa, sb):
    a = rng.standard_normal(sa).astype(np.float64)
    b = rng.standard_normal(sb).astype(np.float64)
    got = check(a, b)
    assert np.shape(got) == np.matmul(a, b).shape


def test_out(rng):
    a = rng.standard_normal((13, 17)).astype(np.float32)
    b = rng.standard_normal((17, 19)).astype(np.float32)
    out = np.full((13, 19), np.nan, np.float32)  # NaN in out must not leak (beta = 0)
    r = ops.matmul(a, b, out=out)
    assert r is out
    assert rel_err(out, ref_matmul(a, b)) < 1e-5
    # a strided out
    big = np.zeros((26, 40), np.float32)
    ops.matmul(a, b, out=big[::2, 1:39:2])
    assert rel_err(big[::2, 1:39:2], ref_matmul(a, b)) < 1e-5
    assert not big[1::2].any()  # nothing written outside the view
    outT = np.empty((19, 13), np.float32).T
    ops.matmul(a, b, out=outT)
    assert rel_err(outT, ref_matmul(a, b)) < 1e-5
    # 1-d result into out
    v = rng.standard_normal(17).astype(np.float32)
    o1 = np.empty(13, np.float32)
    ops.matmul(a, v, out=o1)
    assert rel_err(o1, ref_matmul(a, v)) < 1e-5


@pytest.mark.parametrize("sa,sb", [((0, 5), (5, 3)), ((4, 0), (0, 3)), ((4, 5), (5, 0)), ((0, 4, 5), (5, 2)), ((3, 0), (0,))])
def test_empty(sa, sb):
    a = np.ones(sa, np.float32)
    b = np.ones(sb, np.float32)
    got = ops.matmul(a, b)
    ref = np.matmul(a, b)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)  # K == 0 gives zeros


def test_gemm_alpha_beta_transpose(cpu_path, rng):
    for (m, n, k) in [(7, 9, 11), (150, 40, 300), (1, 1, 1)]:
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((k, m) if ta else (m, k))
                b = rng.standard_normal((n, k) if tb else (k, n))
                c = rng.standard_normal((m, n))
                ref = 1.5 * ((a.T if ta else a) @ (b.T if tb else b)) - 0.5 * c
                _C.gemm(a, b, c, alpha=1.5, beta=-0.5, trans_a=ta, trans_b=tb)
                assert rel_err(c, ref) < 1e-12
    # float32 partial row panels (M % 6 in 1..5 with whole 16-column panels: the AVX2 rows kernel), alpha, beta
    for (m, n, k) in [(32, 48, 70), (5, 16, 9), (13, 32, 300), (1, 16, 1), (4, 64, 17)]:
        for ta in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            c = rng.standard_normal((m, n)).astype(np.float32)
            ref = 1.5 * ((a.T if ta else a).astype(np.float64) @ b.astype(np.float64)) - 0.5 * c.astype(np.float64)
            _C.gemm(a, b, c, alpha=1.5, beta=-0.5, trans_a=ta, trans_b=False)
            assert rel_err(c, ref) < 1e-5
    # float32 with beta and K == 0: C = beta * C
    c = rng.standard_normal((3, 4)).astype(np.float32)
    c0 = c.copy()
    _C.gemm(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32), c, alpha=1.0, beta=2.0)
    np.testing.assert_allclose(c, 2 * c0)


def test_lists_are_read_as_arrays():
    assert np.allclose(ops.matmul([[1.0, 2.0]], [[3.0], [4.0]]), [[11.0]])


# ---- bad input -------------------------------------------------------------------------------------

def test_inner_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        ops.matmul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="inner"):
        ops.matmul(np.ones(3, np.float32), np.ones(4, np.float32))


def test_batch_mismatch():
    with pytest.raises(ValueError, match="broadcast"):
        ops.matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 5), np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.complex64, np.bool_, object])
def test_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        ops.matmul(np.ones((2, 2), dtype), np.ones((2, 2), dtype))


def test_mixed_dtypes():
    with pytest.raises(TypeError, match="float32.*float64"):
        ops.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float64))


@pytest.mark.parametrize("obj", [None, "abc", {"a": 1}, object()])
def test_non_arrays(obj):
    with pytest.raises(TypeError):
        ops.matmul(obj, np.ones((2, 2), np.float32))


def test_zero_d():
    with pytest.raises(ValueError, match="0-d"):
        ops.matmul(np.float32(2.0), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="0-d"):
        ops.matmul(np.ones((2, 2)), np.array(3.0))


def test_bad_out():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shape"):
        ops.matmul(a, b, out=np.empty((2, 5), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        ops.matmul(a, b, out=np.empty((2, 4), np.float64))
    with pytest.raises(TypeError):
        ops.matmul(a, b, out=[[0.0] * 4] * 2)
    ro = np.empty((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.matmul(a, b, out=ro)
    sq = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        ops.matmul(sq, sq, out=sq)


def test_misaligned_input_is_copied():
    buf = np.zeros(4 * 12 + 1, np.uint8)
    a = np.ndarray((3, 4), np.float32, buffer=buf, offset=1)
    a[...] = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((4, 2), np.float32)
    assert not a.flags.aligned
    np.testing.assert_allclose(ops.matmul(a, b), a.astype(np.float64) @ b)


def test_two_python_threads(rng):
    # The GIL is released around the kernel: two Python threads run kernels at once, correctly.
    a = rng.standard_normal((200, 300)).astype(np.float32)
    b = rng.standard_normal((300, 100)).astype(np.float32)
    ref = ref_matmul(a, b)
    errors = []

    def work():
        for _ in range(10):
            if rel_err(ops.matmul(a, b), ref) > 1e-5:
                errors.append("wrong")

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_deterministic(rng):
    a = rng.standard_normal((300, 500)).astype(np.float32)
    b = rng.standard_normal((500, 200)).astype(np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b), ops.matmul(a, b))
