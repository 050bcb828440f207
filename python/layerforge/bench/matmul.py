"""matmul cases: layerforge.ops.matmul against numpy's @ (OpenBLAS), float32."""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case


def _case(name: str, m: int, k: int, n: int, transposed: bool = False) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        if transposed:  # a is a transposed view: columns contiguous; read by the packing without a copy
            a = rng.standard_normal((k, m), dtype=np.float32).T
        else:
            a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        out_np = np.empty((m, n), np.float32)
        return (lambda: ops.matmul(a, b, out=out)), (lambda: np.matmul(a, b, out=out_np)), "numpy (OpenBLAS)"

    return Case("matmul", name, 2.0 * m * n * k, setup)


def cases(quick: bool = False):
    sizes = [256, 512] if quick else [256, 512, 1024, 2048]
    for s in sizes:
        yield _case(f"{s}x{s} @ {s}x{s}", s, s, s)
    for m, k, n in [(32, 784, 128), (256, 784, 128), (32, 1600, 64), (128, 4096, 1024)]:
        yield _case(f"{m}x{k} @ {k}x{n}", m, k, n)
    yield _case("1024x1024.T @ 1024x1024", 1024, 1024, 1024, transposed=True)
