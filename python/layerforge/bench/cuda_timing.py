"""Timing GPU work honestly: CUDA events around blocks of calls, not the host clock (a kernel launch
returns before the kernel has run). Used as `Case.timer` by the GPU benchmark families, which also take
their GPU probes from here."""
from __future__ import annotations

from typing import Callable

from .harness import time_rounds


def cupy_if_ready():
    """cupy when layerforge can use a GPU and cupy is installed, else None (the GPU families then yield no
    cases)."""
    from .. import cuda

    if not cuda.is_available():
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def gpu_ready() -> bool:
    return cupy_if_ready() is not None


def torch_cuda():
    """torch when it is installed and sees a GPU (the peer of the GPU cases), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _block_seconds(cp, fn: Callable[[], object], n: int) -> float:
    """Seconds per call of n back-to-back calls of fn, between two events on cupy's current stream."""
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3 / n


def time_pair_cuda(ours: Callable, peer: Callable | None, rounds: int = 7, block_seconds: float = 0.05,
                   warmup: int = 3):
    """Median seconds per call of ours and peer, the median of per-round ratios peer/ours and their range
    (the same tuple as harness.time_pair). After `warmup` calls of each (kernel loading, cuBLAS/cupy
    plan caches, clocks ramping up), each round times a block of n calls of ours, then n calls of the
    peer, n chosen so that a block lasts about block_seconds. Both run on the same stream (cupy's
    current one; torch's default stream is the same legacy stream), so the events bracket exactly the
    queued work."""
    import cupy as cp

    for _ in range(warmup):
        ours()
        if peer is not None:
            peer()
    cp.cuda.Device().synchronize()
    t = _block_seconds(cp, ours, 1)
    n = max(1, min(10000, int(block_seconds / max(t, 1e-7))))
    return time_rounds(lambda fn: _block_seconds(cp, fn, n), ours, peer, rounds)


def torch_cuda_peer():
    """torch with CUDA, cuDNN in benchmark mode and TF32 off (float32 stays float32), or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch
