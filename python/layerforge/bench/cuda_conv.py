"""GPU conv2d and pooling: layerforge.ops on cupy arrays against torch.cuda (cuDNN, benchmark mode, TF32
off), float32, timed with CUDA events (cuda_timing.py). Yields no cases without a GPU and cupy.

Cases: the CPU conv family's shapes (bench/conv.py) and ResNet-50's 3x3/1x1 layers at batch 64, forward and
forward+backward (grad_x, grad_weight, grad_bias), NCHW and NHWC (torch channels_last); FLOPs 2*N*K*P*Q*C*R*S
/groups forward, 3x for forward+backward. Pooling (ResNet's stem max pool, 2x2 max/avg) in GB/s of the
arrays read and written once.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from .conv import SHAPES as CPU_SHAPES
from .conv import conv_case
from .cuda_timing import time_pair_cuda
from .cuda_timing import gpu_ready, torch_cuda_peer
from .harness import Case

# name, N, C, H, W, K, R, S, stride, padding, groups
RESNET50 = [
    ("resnet50 64x64x56x56->64 3x3 p1", 64, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("resnet50 64x256x56x56->64 1x1", 64, 256, 56, 56, 64, 1, 1, 1, 0, 1),
    ("resnet50 64x128x28x28->128 3x3 p1", 64, 128, 28, 28, 128, 3, 3, 1, 1, 1),
    ("resnet50 64x256x14x14->256 3x3 p1", 64, 256, 14, 14, 256, 3, 3, 1, 1, 1),
    ("resnet50 64x512x7x7->512 3x3 p1", 64, 512, 7, 7, 512, 3, 3, 1, 1, 1),
]


def _pool_case(kind, N, C, H, W, k, s, p, layout, backward):
    P, Q = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    nin, nout = N * C * H * W, N * C * P * Q
    if backward:  # fwd: x, out (+ int64 idx); bwd: grad_out (+ idx), grad_x
        nbytes = 4 * (2 * nin + 2 * nout) + (16 * nout if kind == "max" else 0)
    else:
        nbytes = 4 * (nin + nout)

    def setup():
        import cupy as cp

        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        go = rng.standard_normal((N, C, P, Q), dtype=np.float32)
        nhwc = layout == "NHWC"
        to_layout = (lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))) if nhwc else (lambda a: a)
        xg, gog = cp.asarray(to_layout(x)), cp.asarray(to_layout(go))

        def ours():
            if kind == "max":
                if not backward:
                    return ops.max_pool2d(xg, k, s, p, layout=layout)
                out, idx = ops.max_pool2d(xg, k, s, p, return_indices=True, layout=layout)
                ops.max_pool2d_backward(gog, xg.shape, k, s, p, indices=idx, layout=layout)
                return out
            out = ops.avg_pool2d(xg, k, s, p, layout=layout)
            if backward:
                ops.avg_pool2d_backward(gog, xg.shape, k, s, p, layout=layout)
            return out

        torch = torch_cuda_peer()
        if torch is None:
            return ours, None, "torch.cuda (not available)"
        F = torch.nn.functional
        mf = torch.channels_last if nhwc else torch.contiguous_format
        xt = torch.tensor(x, device="cuda").contiguous(memory_format=mf)
        got = torch.tensor(go, device="cuda").contiguous(memory_format=mf)
        if backward:
            xt.requires_grad_(True)
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d

        def peer():
            if not backward:
                with torch.no_grad():
                    return fn(xt, k, s, p)
            xt.grad = None
            out = fn(xt, k, s, p)
            out.backward(got)
            return out

        return ours, peer, f"torch {torch.__version__}" + (" channels_last" if nhwc else "")

    name = f"{kind} {k}x{k}/{s} {N}x{C}x{H}x{W} {layout} {'fwd+bwd' if backward else 'fwd'}"
    return Case("cuda_conv", name, nbytes, setup, unit="GB/s", extra={"device": "cuda"}, timer=time_pair_cuda)


def cases(quick: bool = False):
    if not gpu_ready():
        return
    conv_shapes = (CPU_SHAPES[:2] + RESNET50[:1]) if quick else (CPU_SHAPES + RESNET50)
    for shape in conv_shapes:
        for backward in (False, True):
            yield conv_case(*shape, backward, "NCHW", device="cuda")
    for shape in ([] if quick else RESNET50):
        for backward in (False, True):
            yield conv_case(*shape, backward, "NHWC", device="cuda")
    pools = [("max", 64, 64, 112, 112, 3, 2, 1), ("max", 32, 32, 26, 26, 2, 2, 0), ("avg", 32, 32, 26, 26, 2, 2, 0),
             ("avg", 64, 256, 56, 56, 2, 2, 0)]
    for (kind, N, C, H, W, k, s, p) in (pools[:1] if quick else pools):
        for layout in ("NCHW", "NHWC"):
            for backward in (False, True):
                yield _pool_case(kind, N, C, H, W, k, s, p, layout, backward)
