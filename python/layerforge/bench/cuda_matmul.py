"""GPU matmul cases: layerforge.ops.matmul on cupy arrays against cuBLAS (through cupy, TF32 off) for
float32, and against torch.matmul on CUDA for bfloat16 and TF32. Yields nothing without a GPU (or
without cupy), so `python -m layerforge bench` runs everywhere."""
from __future__ import annotations

from .cuda_timing import gpu_ready, time_pair_cuda, torch_cuda
from .harness import Case


def _case(name: str, m: int, k: int, n: int, kind: str) -> Case:
    """kind: 'float32' (peer cupy/cuBLAS, TF32 off on both sides), 'tf32' (peer torch with allow_tf32),
    'bfloat16' (peer torch.matmul on bfloat16 tensors)."""

    def setup():
        import cupy as cp

        from .. import cuda, ops

        rng = cp.random.default_rng(0)
        if kind == "bfloat16":
            a = cuda.to_bfloat16_bits(rng.standard_normal((m, k), dtype=cp.float32))
            b = cuda.to_bfloat16_bits(rng.standard_normal((k, n), dtype=cp.float32))
            out = cp.empty((m, n), cp.uint16)

            def ours():
                ops.matmul(a, b, out=out, bf16=True)
        else:
            a = rng.standard_normal((m, k), dtype=cp.float32)
            b = rng.standard_normal((k, n), dtype=cp.float32)
            out = cp.empty((m, n), cp.float32)
            tf32 = kind == "tf32"

            def ours():
                before = cuda.allow_tf32
                cuda.allow_tf32 = tf32
                try:
                    ops.matmul(a, b, out=out)
                finally:
                    cuda.allow_tf32 = before

        if kind == "float32":
            # cupy calls cuBLAS sgemm; TF32 stays off unless CUPY_TF32=1 was set before importing cupy.
            out_peer = cp.empty((m, n), cp.float32)
            return ours, (lambda: cp.matmul(a, b, out=out_peer)), "cupy (cuBLAS, TF32 off)"
        torch = torch_cuda()
        if torch is None:
            return ours, None, "-"
        dtype = torch.bfloat16 if kind == "bfloat16" else torch.float32
        ta = torch.randn((m, k), device="cuda").to(dtype)
        tb = torch.randn((k, n), device="cuda").to(dtype)
        tout = torch.empty((m, n), device="cuda", dtype=dtype)

        def peer():
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = kind == "tf32"
            try:
                torch.matmul(ta, tb, out=tout)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before

        return ours, peer, f"torch {torch.__version__} (cuBLAS)"

    return Case("cuda_matmul", name, 2.0 * m * n * k, setup, unit="TFLOP/s", timer=time_pair_cuda,
                note=kind)


def cases(quick: bool = False):
    if not gpu_ready():
        return
    squares = [4096] if quick else [4096, 8192]
    for s in squares:
        yield _case(f"{s}^3 float32", s, s, s, "float32")
    for s in squares:
        yield _case(f"{s}^3 bfloat16", s, s, s, "bfloat16")
    yield _case("4096^3 tf32", 4096, 4096, 4096, "tf32")
    # The training shapes of the CPU suite (an MLP's batch x 784 @ 784 x 128 layer, a wide layer).
    for m, k, n in [(32, 784, 128), (256, 784, 128), (128, 4096, 1024)]:
        yield _case(f"{m}x{k} @ {k}x{n} float32", m, k, n, "float32")
