"""Timing of GPU cases with CUDA events (a bench family module exposes `time_pair = cuda_time_pair` and the
harness uses it instead of its wall-clock timer).

Ours (cupy's current stream) and the peer (torch.cuda's current stream) both run on the legacy default
stream unless the caller changed it, so events recorded there bracket the work of either. Blocks of calls
alternate ours, peer, ours, ... as the CPU timer does; a block's time is its events' elapsed time divided
by its calls, so host launch overhead counts only when the GPU would otherwise be idle (as for users).
"""
from __future__ import annotations

import statistics


def gpu_ready() -> bool:
    """True when layerforge sees a GPU and cupy is importable (GPU families yield no cases otherwise)."""
    from .. import cuda

    if not cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def _block(fn, n: int) -> float:
    import cupy as cp

    null = cp.cuda.Stream.null
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record(null)
    for _ in range(n):
        fn()
    end.record(null)
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3 / n


def cuda_time_pair(ours, peer=None, rounds: int = 7, block_seconds: float = 0.05, settle: float = 0.0):
    """Median seconds per call of ours and peer (CUDA events), and the median / range of per-round
    peer/ours ratios; same contract as harness.time_pair."""
    import cupy as cp

    for _ in range(3):  # warm-up: allocator pools, cuDNN's benchmark-mode algorithm search
        ours()
        if peer is not None:
            peer()
    cp.cuda.runtime.deviceSynchronize()
    n = max(1, int(block_seconds / max(_block(ours, 1), 1e-6)))
    t_ours, t_peer, ratios = [], [], []
    for _ in range(rounds):
        a = _block(ours, n)
        t_ours.append(a)
        if peer is not None:
            b = _block(peer, n)
            t_peer.append(b)
            ratios.append(b / a)
    return (
        statistics.median(t_ours),
        statistics.median(t_peer) if t_peer else None,
        statistics.median(ratios) if ratios else None,
        (min(ratios), max(ratios)) if ratios else None,
    )


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
