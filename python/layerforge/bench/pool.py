"""Pooling cases: layerforge max/avg pooling against PyTorch CPU, float32, NCHW and NHWC (torch
channels_last). Memory-bound: the rate is GB/s of input read + output written (+ int64 indices and the
gradient arrays for forward+backward)."""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case, torch_peer


def _case(kind, N, C, H, W, layout, backward):
    P, Q = H // 2, W // 2
    nin, nout = N * C * H * W, N * C * P * Q
    if backward:  # fwd: x, out (+ idx); bwd: grad_out (+ idx), grad_x
        nbytes = 4 * (2 * nin + 2 * nout) + (16 * nout if kind == "max" else 0)
    else:
        nbytes = 4 * (nin + nout)

    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        go = rng.standard_normal((N, C, P, Q), dtype=np.float32)
        nhwc = layout == "NHWC"
        xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x
        gol = np.ascontiguousarray(go.transpose(0, 2, 3, 1)) if nhwc else go

        def ours():
            if kind == "max":
                if not backward:
                    return ops.max_pool2d(xl, 2, layout=layout)
                out, idx = ops.max_pool2d(xl, 2, return_indices=True, layout=layout)
                ops.max_pool2d_backward(gol, xl, 2, indices=idx, layout=layout)
                return out
            out = ops.avg_pool2d(xl, 2, layout=layout)
            if backward:
                ops.avg_pool2d_backward(gol, xl.shape, 2, layout=layout)
            return out

        torch = torch_peer()
        if torch is None:
            return ours, None, "torch (not installed)"
        F = torch.nn.functional
        mf = torch.channels_last if nhwc else torch.contiguous_format
        xt = torch.from_numpy(x).contiguous(memory_format=mf)
        got = torch.from_numpy(go).contiguous(memory_format=mf)
        if backward:
            xt.requires_grad_(True)
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d

        def peer():
            if not backward:
                with torch.no_grad():
                    return fn(xt, 2)
            xt.grad = None
            out = fn(xt, 2)
            out.backward(got)
            return out

        return ours, peer, "torch " + torch.__version__ + (" channels_last" if nhwc else "")

    name = f"{kind} 2x2 {N}x{C}x{H}x{W} {layout} {'fwd+bwd' if backward else 'fwd'}"
    return Case("pool", name, nbytes, setup, unit="GB/s")


def cases(quick: bool = False):
    shapes = [(32, 32, 26, 26)] if quick else [(32, 32, 26, 26), (32, 64, 11, 11)]
    for kind in ("max", "avg"):
        for shape in shapes:
            for layout in ("NCHW", "NHWC"):
                for backward in (False, True):
                    yield _case(kind, *shape, layout, backward)
