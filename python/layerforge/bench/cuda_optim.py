"""GPU cases of the elementwise/optimizer family (none without a GPU and cupy): the fused multi-tensor Adam
over 100M float32 parameters in GB/s, next to the measured device-to-device copy bandwidth (cupy) and
torch.optim.Adam(fused=True); layer norm and softmax-cross-entropy (forward + backward) at transformer
sizes against torch.cuda.

GPU work is asynchronous: every timed call launches REPS iterations and then synchronizes the stream, so
the harness's wall clock measures the GPU; `work` counts the bytes of all REPS iterations.
"""
from __future__ import annotations

import numpy as np

from .cuda_timing import cupy_if_ready, torch_cuda
from .harness import Case

REPS = 10
ADAM_PARAMS = 100_000_000


def _repeat(sync, fn):
    def call():
        for _ in range(REPS):
            fn()
        sync()
    return call


def _split(n: int) -> list[int]:
    """n parameters as a model has them: a few large matrices and some small vectors (odd sizes). 48
    tensors: the host-side cost per tensor (the binding reads each array's __cuda_array_interface__ and
    checks its pointer, a few microseconds) stays below the GPU time of the step, so the launches queue
    ahead and the timing measures the GPU."""
    big = [n // 8 - 12345] * 7
    small = [768 + 7 * i for i in range(40)]
    return big + small + [n - sum(big) - sum(small)]


def _copy_case(cp) -> Case:
    nbytes = 28 * ADAM_PARAMS // 2  # as many bytes read + written as one Adam step moves

    def setup():
        src = cp.ones(nbytes // 4, cp.float32)
        dst = cp.empty_like(src)
        sync = cp.cuda.get_current_stream().synchronize
        return _repeat(sync, lambda: cp.copyto(dst, src)), None, "-"

    return Case("cuda_optim", f"device copy {nbytes / 1e9:.1f} GB (cupy)", 2.0 * nbytes * REPS, setup, unit="GB/s",
                note="the bandwidth reference for the Adam step")


def _adam_case(cp) -> Case:
    sizes = _split(ADAM_PARAMS)

    def setup():
        from .. import ops

        rng = np.random.default_rng(0)
        ps = [cp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in sizes]
        gs = [cp.asarray(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in sizes]
        ms = [cp.zeros_like(p) for p in ps]
        vs = [cp.zeros_like(p) for p in ps]
        step = [0]
        sync = cp.cuda.get_current_stream().synchronize

        def ours():
            step[0] += 1
            ops.optim.adam_step_multi(ps, gs, ms, vs, step=step[0], lr=1e-3)

        peer, name = None, "torch.optim.Adam(fused=True): not available"
        torch = torch_cuda()
        if torch is not None:
            tps = [torch.nn.Parameter(torch.as_tensor(p, device="cuda").clone()) for p in ps]
            for tp, g in zip(tps, gs):
                tp.grad = torch.as_tensor(g, device="cuda")
            opt = torch.optim.Adam(tps, lr=1e-3, fused=True)
            peer, name = _repeat(torch.cuda.synchronize, opt.step), "torch.optim.Adam(fused=True)"
        return _repeat(sync, ours), peer, name

    # per step: read p, g, m, v; write p, m, v (28 bytes per float32 parameter)
    return Case("cuda_optim", f"Adam step, {ADAM_PARAMS / 1e6:g}M params in {len(sizes)} tensors",
                28.0 * ADAM_PARAMS * REPS, setup, unit="GB/s",
                note="compare with the device copy row (target: >= 80%)")


def _layer_norm_case(cp, r: int, d: int) -> Case:
    def setup():
        from .. import ops

        rng = np.random.default_rng(0)
        x = cp.asarray(rng.standard_normal((r, d), dtype=np.float32))
        g = cp.asarray(rng.standard_normal((r, d), dtype=np.float32))
        w, b = cp.ones(d, cp.float32), cp.zeros(d, cp.float32)
        sync = cp.cuda.get_current_stream().synchronize

        def ours():
            y, mean, rstd = ops.layer_norm(x, d, w, b)
            return ops.layer_norm_backward(g, x, mean, rstd, w)

        peer, name = None, "torch.cuda: not available"
        torch = torch_cuda()
        if torch is not None:
            tx = torch.as_tensor(x, device="cuda").requires_grad_()
            tg = torch.as_tensor(g, device="cuda")
            ln = torch.nn.LayerNorm(d).cuda()

            def peer_step():
                tx.grad = None
                ln.zero_grad()
                ln(tx).backward(tg)

            peer, name = _repeat(torch.cuda.synchronize, peer_step), "torch.cuda LayerNorm fwd+bwd"
        return _repeat(sync, ours), peer, name

    # forward reads x, writes y; backward reads g, x (twice: rows, then the parameter partials), writes gx
    return Case("cuda_optim", f"layer norm fwd+bwd {r}x{d}", 6.0 * 4 * r * d * REPS, setup, unit="GB/s")


def _xent_case(cp, n: int, c: int) -> Case:
    def setup():
        from .. import ops

        rng = np.random.default_rng(0)
        x = cp.asarray(rng.standard_normal((n, c), dtype=np.float32))
        t = cp.asarray(rng.integers(0, c, n))
        sync = cp.cuda.get_current_stream().synchronize

        peer, name = None, "torch.cuda: not available"
        torch = torch_cuda()
        if torch is not None:
            tx = torch.as_tensor(x, device="cuda").requires_grad_()
            tt = torch.as_tensor(t, device="cuda")

            def peer_step():
                tx.grad = None
                torch.nn.functional.cross_entropy(tx, tt).backward()

            peer, name = _repeat(torch.cuda.synchronize, peer_step), "torch.cuda F.cross_entropy fwd+bwd"
        return _repeat(sync, lambda: ops.cross_entropy(x, t)), peer, name

    # one pass reads the logits and writes the gradient (the row is re-read from cache)
    return Case("cuda_optim", f"cross-entropy fwd+bwd {n}x{c}", 2.0 * 4 * n * c * REPS, setup, unit="GB/s",
                note="ours includes the target check's 32-byte readback")


def cases(quick: bool = False):
    cp = cupy_if_ready()
    if cp is None:  # no GPU, no CUDA module or no cupy: nothing to measure here
        return
    yield _copy_case(cp)
    yield _adam_case(cp)
    ln_shapes = [(8192, 768)] if quick else [(8192, 768), (16384, 1024), (4096, 4096)]
    for r, d in ln_shapes:
        yield _layer_norm_case(cp, r, d)
    xent_shapes = [(4096, 32000)] if quick else [(4096, 32000), (8192, 50257)]
    for n, c in xent_shapes:
        yield _xent_case(cp, n, c)
