"""Scaled-dot-product attention on the GPU (csrc/cuda/attention.cu) against float64 references and the CPU
kernels; plus, runnable anywhere, the GPU code path of ops.scaled_dot_product_attention (argument handling,
layouts, saved state) on a numpy stand-in for cupy and the CUDA module (tests/fake_gpu.py)."""
import numpy as np
import pytest

from layerforge import ops
from layerforge.cuda import from_bfloat16_bits, to_bfloat16_bits
from conftest import rel_err
from fake_gpu import fake_kernels, gpu  # noqa: F401  (fixture)
from test_attention import rand, ref_sdpa

sdpa = ops.scaled_dot_product_attention
sdpa_bwd = ops.scaled_dot_product_attention_backward


# ---------------------------------------------------------------- anywhere: the Python side of the GPU path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["plain", "causal", "bool_mask", "float_mask", "dropout"])
def test_gpu_path_logic_matches_cpu(fake_kernels, rng, dtype, mode):
    lead, L, S, D, Dv = (2, 3), 17, 23, 8, 5
    qb = rand(rng, (2, L, 3, D), dtype)
    q = qb.transpose(0, 2, 1, 3)  # a view whose leading dims do not merge
    k, v = rand(rng, lead + (S, D), dtype), rand(rng, lead + (S, Dv), dtype)
    mask = None
    if mode == "bool_mask":
        mask = rng.random((1, 1, L, S)) > 0.3
    elif mode == "float_mask":
        mask = rng.standard_normal((L, S))  # float64: the GPU path casts it to float32 for float32 inputs
    kw = dict(attn_mask=mask, is_causal=mode == "causal", dropout_p=0.3 if mode == "dropout" else 0.0, seed=5)
    out_cpu, s_cpu = sdpa(q, k, v, return_saved=True, **kw)
    out, saved = sdpa(gpu(q), gpu(k), gpu(v), return_saved=True, **{**kw, "attn_mask": gpu(mask)})
    assert fake_kernels.calls[-1][0] == "sdpa_forward"
    assert saved.lse.dtype == dtype and not saved.bf16
    if mask is not None and mask.dtype != bool:
        assert saved.attn_mask.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert out.shape == out_cpu.shape and rel_err(out, out_cpu) < tol
    g = rand(rng, out.shape, dtype)
    for a, b in zip(sdpa_bwd(gpu(g), saved), sdpa_bwd(g, s_cpu)):
        assert a.shape == b.shape and rel_err(a, b) < tol
    assert fake_kernels.calls[-1][0] == "sdpa_backward"


def test_gpu_path_half_types_keep_float32_statistics(fake_kernels, rng):
    q, k, v = (rand(rng, (2, 9, 16), np.float16) for _ in range(3))
    out, saved = sdpa(gpu(q), gpu(k), gpu(v), attn_mask=gpu(rng.standard_normal((9, 9))), return_saved=True)
    assert out.dtype == np.float16 and saved.lse.dtype == np.float32 and saved.attn_mask.dtype == np.float32
    bits = gpu(q.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    out, saved = sdpa(bits, bits, bits, bf16=True, return_saved=True)
    assert out.dtype == np.uint16 and saved.bf16 and fake_kernels.calls[-1][1][-2] is True
    sdpa_bwd(gpu(np.zeros(out.shape, np.uint16)), saved)
    assert fake_kernels.calls[-1][0] == "sdpa_backward" and fake_kernels.calls[-1][1][-2] is True


def test_gpu_path_errors(fake_kernels, rng):
    q, k, v = rand(rng, (2, 5, 8)), rand(rng, (2, 6, 8)), rand(rng, (2, 6, 4))
    with pytest.raises(TypeError, match=r"q, k, v are GPU arrays but attn_mask is not"):
        sdpa(gpu(q), gpu(k), gpu(v), attn_mask=np.ones((5, 6), bool))
    with pytest.raises(TypeError, match=r"q is a GPU array but k, v are not"):
        sdpa(gpu(q), k, v)
    with pytest.raises(TypeError, match=r"bf16=True \(uint16 arrays holding bfloat16 bits\) runs on the GPU only"):
        sdpa(q, k, v, bf16=True)
    with pytest.raises(TypeError, match=r"q has dtype float64; supported on the GPU: uint16"):
        sdpa(gpu(q), gpu(k), gpu(v), bf16=True)
    with pytest.raises(TypeError, match=r"int32; supported on the GPU: float16, float32, float64"):
        sdpa(gpu(q.astype(np.int32)), gpu(k), gpu(v))
    big = rand(rng, (1, 3, 257))
    with pytest.raises(ValueError, match=r"head dims D and Dv are at most 256"):
        sdpa(gpu(big), gpu(big), gpu(big))
    with pytest.raises(ValueError, match=r"number of keys S"):
        sdpa(gpu(q), gpu(k), gpu(v[:, :5]))
    out, saved = sdpa(gpu(q), gpu(k), gpu(v), return_saved=True)
    with pytest.raises(TypeError, match=r"saved is a GPU array but grad_out is not"):
        sdpa_bwd(np.ones(out.shape), saved)
    with pytest.raises(ValueError, match="grad_out has shape"):
        sdpa_bwd(gpu(np.ones((2, 5, 3))), saved)


# ---------------------------------------------------------------- on the GPU
@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


def rounded(a, dtype):
    """What the GPU sees of a float64 array in `dtype` (as float64)."""
    if dtype == "bfloat16":
        return from_bfloat16_bits(to_bfloat16_bits(a)).astype(np.float64)
    return np.asarray(a).astype(dtype).astype(np.float64)


def on_gpu(cp, a, dtype):
    if a is None:
        return None
    if dtype == "bfloat16":
        return cp.asarray(to_bfloat16_bits(a))
    return cp.asarray(np.asarray(a).astype(dtype))


def from_gpu(cp, a, dtype):
    a = cp.asnumpy(a)
    return from_bfloat16_bits(a).astype(np.float64) if dtype == "bfloat16" else a.astype(np.float64)


TOL = {  # rel_err bounds (forward, gradients)
    np.float64: (1e-11, 1e-10),
    np.float32: (2e-5, 1e-4),
    np.float16: (5e-3, 2e-2),
    "bfloat16": (3e-2, 8e-2),
}


def run_gpu(cp, dtype, q, k, v, g, mask=None, **kw):
    """Forward and backward on the GPU in `dtype` from float64 inputs; results as float64 numpy."""
    extra = {"bf16": True} if dtype == "bfloat16" else {}
    m = None if mask is None else cp.asarray(mask)
    out, saved = sdpa(on_gpu(cp, q, dtype), on_gpu(cp, k, dtype), on_gpu(cp, v, dtype), attn_mask=m,
                      return_saved=True, **kw, **extra)
    grads = sdpa_bwd(on_gpu(cp, g, dtype), saved)
    return from_gpu(cp, out, dtype), [from_gpu(cp, a, dtype) for a in grads], saved


def check_against_reference(cp, rng, dtype, lead, L, S, D, Dv, mask=None, is_causal=False, scale=None):
    q, k, v = rand(rng, lead + (L, D)), rand(rng, lead + (S, D)), rand(rng, lead + (S, Dv))
    g = rand(rng, lead + (L, Dv))
    out, grads, saved = run_gpu(cp, dtype, q, k, v, g, mask, is_causal=is_causal, scale=scale)
    rq, rk, rv, rg = (rounded(a, dtype) for a in (q, k, v, g))
    ref, rb = ref_sdpa(rq, rk, rv, mask=mask, is_causal=is_causal, scale=scale)
    tf, tb = TOL[dtype]
    assert np.all(np.isfinite(out)) and rel_err(out, ref) < tf, (dtype, L, S, D, Dv)
    for a, b in zip(grads, rb(rg)):
        assert np.all(np.isfinite(a)) and rel_err(a, b) < tb, (dtype, L, S, D, Dv)
    return saved


SHAPES = [  # lead, L, S, D, Dv: L != S, odd lengths, every head dim of the issue
    ((), 1, 1, 16, 16),
    ((2, 3), 7, 9, 16, 16),
    ((1, 2), 65, 130, 40, 40),
    ((3,), 130, 71, 64, 64),
    ((2, 1, 2), 100, 200, 128, 128),
    ((1,), 67, 45, 256, 256),
    ((2,), 33, 97, 40, 24),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, "bfloat16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lead,L,S,D,Dv", SHAPES)
def test_matches_reference(cp, rng, dtype, causal, lead, L, S, D, Dv):
    check_against_reference(cp, rng, dtype, lead, L, S, D, Dv, is_causal=causal)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_every_broadcast_shape(cp, rng, dtype, kind):
    lead, L, S = (2, 3), 33, 70
    mask_shapes = [(), (S,), (1, S), (L, 1), (L, S), (3, L, S), (2, 1, L, S), (2, 3, 1, S), (1, 3, L, 1)]
    for ms in mask_shapes:
        if kind == "bool":
            mask = rng.random(ms) > 0.3
        else:
            mask = rng.standard_normal(ms) * 2.0
            mask = np.where(rng.random(ms) > 0.8, -np.inf, mask)
        # D = 64: float16 runs on the tensor cores
        check_against_reference(cp, rng, dtype, lead, L, S, 64, 64, mask=mask)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bfloat16"])
def test_fully_masked_rows_give_zeros(cp, rng, dtype):
    L, S, D = 6, 150, 64
    q, k, v = rand(rng, (2, L, D)), rand(rng, (2, S, D)), rand(rng, (2, S, D))
    mask = rng.random((2, L, S)) > 0.5
    mask[0, 2] = False
    mask[1, 5] = False
    out, grads, saved = run_gpu(cp, dtype, q, k, v, np.ones((2, L, D)), mask)
    lse = cp.asnumpy(saved.lse)
    assert np.all(np.isfinite(out)) and np.all(out[0, 2] == 0) and np.all(out[1, 5] == 0)
    assert lse[0, 2] == -np.inf and lse[1, 5] == -np.inf
    assert all(np.all(np.isfinite(a)) for a in grads) and np.all(grads[0][0, 2] == 0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,D", [(np.float16, 64), (np.float16, 128), ("bfloat16", 64), ("bfloat16", 128)])
@pytest.mark.parametrize("mode", ["plain", "causal", "mask", "dropout"])
def test_tensor_cores_agree_with_simt(cp, rng, monkeypatch, dtype, D, mode):
    lead, L, S = (2, 2), 150, 97
    q, k, v, g = rand(rng, lead + (L, D)), rand(rng, lead + (S, D)), rand(rng, lead + (S, D)), rand(rng, lead + (L, D))
    kw = dict(is_causal=mode == "causal", dropout_p=0.2 if mode == "dropout" else 0.0, seed=11)
    mask = rng.random((L, S)) > 0.4 if mode == "mask" else None
    tc = run_gpu(cp, dtype, q, k, v, g, mask, **kw)
    monkeypatch.setenv("LAYERFORGE_SDPA_CUDA_PATH", "simt")
    simt = run_gpu(cp, dtype, q, k, v, g, mask, **kw)
    tf, tb = TOL[dtype]
    assert rel_err(tc[0], simt[0]) < tf
    for a, b in zip(tc[1], simt[1]):
        assert rel_err(a, b) < tb


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_matches_cpu(cp, rng, dtype):
    # the same hash decides on both devices: the GPU result is the CPU's
    lead, L, S, D, Dv = (2, 2), 45, 77, 24, 16
    q, k, v, g = rand(rng, lead + (L, D), dtype), rand(rng, lead + (S, D), dtype), rand(rng, lead + (S, Dv), dtype), \
        rand(rng, lead + (L, Dv), dtype)
    mask = rng.standard_normal((L, S)).astype(dtype)
    out_c, s_c = sdpa(q, k, v, attn_mask=mask, dropout_p=0.35, seed=99, return_saved=True)
    out_g, s_g = sdpa(cp.asarray(q), cp.asarray(k), cp.asarray(v), attn_mask=cp.asarray(mask), dropout_p=0.35, seed=99,
                      return_saved=True)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert rel_err(cp.asnumpy(out_g), out_c) < tol
    for a, b in zip(sdpa_bwd(cp.asarray(g), s_g), sdpa_bwd(g, s_c)):
        assert rel_err(cp.asnumpy(a), b) < tol * 10


@pytest.mark.cuda
def test_dropout_tensor_cores_match_cpu_mask(cp, rng):
    lead, L, S, D = (2,), 70, 90, 64
    q, k, v, g = rand(rng, lead + (L, D)), rand(rng, lead + (S, D)), rand(rng, lead + (S, D)), rand(rng, lead + (L, D))
    out, grads, _ = run_gpu(cp, np.float16, q, k, v, g, dropout_p=0.3, seed=3)
    rq, rk, rv, rg = (rounded(a, np.float16) for a in (q, k, v, g))
    out_c, s_c = sdpa(rq, rk, rv, dropout_p=0.3, seed=3, return_saved=True)
    assert rel_err(out, out_c) < TOL[np.float16][0]
    for a, b in zip(grads, sdpa_bwd(rg, s_c)):
        assert rel_err(a, b) < TOL[np.float16][1]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,D", [(np.float16, 64), (np.float32, 40), ("bfloat16", 128)])
def test_deterministic(cp, rng, dtype, D):
    lead, L, S = (2, 3), 200, 300
    q, k, v, g = rand(rng, lead + (L, D)), rand(rng, lead + (S, D)), rand(rng, lead + (S, D)), rand(rng, lead + (L, D))
    a = run_gpu(cp, dtype, q, k, v, g, is_causal=True, dropout_p=0.1, seed=1)
    b = run_gpu(cp, dtype, q, k, v, g, is_causal=True, dropout_p=0.1, seed=1)
    assert np.array_equal(a[0], b[0])
    for x, y in zip(a[1], b[1]):
        assert np.array_equal(x, y)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_strided_and_unaligned_views(cp, rng, dtype):
    B, L, H, D, S = 2, 37, 3, 64, 51
    qb = cp.asarray(rand(rng, (B, L, H, D), dtype))
    q = qb.transpose(0, 2, 1, 3)  # (B, H, L, D) view: the tensor-core loads take the strides
    kbig = cp.asarray(rand(rng, (B, H, S, D + 1), dtype))
    k = kbig[..., 1:]  # rows 2 bytes off 16-byte alignment: the SIMT path
    v = cp.asarray(rand(rng, (B, H, S, 2 * D), dtype))[..., ::2]  # strided last dim: copied
    g = cp.asarray(rand(rng, (B, H, L, D), dtype))
    out, saved = sdpa(q, k, v, return_saved=True)
    grads = sdpa_bwd(g, saved)
    ref, rb = ref_sdpa(*(cp.asnumpy(a).astype(np.float64) for a in (q, k, v)))
    tf, tb = TOL[dtype]
    assert rel_err(cp.asnumpy(out), ref) < tf
    for a, b in zip(grads, rb(cp.asnumpy(g).astype(np.float64))):
        assert a.shape == b.shape and rel_err(cp.asnumpy(a), b) < tb


@pytest.mark.cuda
def test_runs_on_the_current_stream(cp, rng):
    q, k, v = (cp.asarray(rand(rng, (4, 2, 300, 64), np.float16)) for _ in range(3))
    expect = sdpa(q, k, v, is_causal=True)
    cp.cuda.Device().synchronize()
    with cp.cuda.Stream(non_blocking=True) as s:
        got = sdpa(q, k, v, is_causal=True)
        s.synchronize()
    assert cp.array_equal(got, expect)


@pytest.mark.cuda
@pytest.mark.slow
def test_more_than_2_pow_31_elements(cp, rng):
    # q, k, v, out of 2.2e9 elements each (float16, ~4.3 GB each): 64-bit offsets everywhere
    N, L, D = 530_000, 64, 64

    def rand16():
        x = cp.random.standard_normal((N, L, D), dtype=cp.float32)
        y = x.astype(cp.float16)
        del x
        cp.get_default_memory_pool().free_all_blocks()
        return y

    q, k, v = rand16(), rand16(), rand16()
    out, saved = sdpa(q, k, v, is_causal=True, return_saved=True)
    gq, gk, gv = sdpa_bwd(out, saved)
    for n in (0, N // 2, N - 1):
        qn, kn, vn = (cp.asnumpy(a[n]).astype(np.float64) for a in (q, k, v))
        ref, rb = ref_sdpa(qn, kn, vn, is_causal=True)
        assert rel_err(cp.asnumpy(out[n]), ref) < TOL[np.float16][0]
        for a, b in zip((gq, gk, gv), rb(cp.asnumpy(out[n]).astype(np.float64))):
            assert rel_err(cp.asnumpy(a[n]), b) < TOL[np.float16][1]


@pytest.mark.cuda
def test_called_from_two_threads(cp, rng):
    import threading

    q, k, v = (cp.asarray(rand(rng, (2, 2, 128, 64), np.float16)) for _ in range(3))
    expect = cp.asnumpy(sdpa(q, k, v))
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(cp.asnumpy(sdpa(q, k, v)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(np.array_equal(r, expect) for r in results)
