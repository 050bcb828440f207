"""conv2d cases: layerforge.ops.conv2d (+ conv2d_backward) against PyTorch CPU (oneDNN/MKL), float32.

Forward and forward+backward (grad_x, grad_weight, grad_bias). FLOPs: 2*N*K*P*Q*C*R*S/groups forward,
3x that for forward+backward. torch is imported lazily; without it the peer column is empty.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case, torch_peer


def conv_case(name, N, C, H, W, K, R, S, stride=1, padding=0, groups=1, backward=False, layout="NCHW",
              device="cpu"):
    """One conv2d case. device "cpu": numpy arrays against torch CPU (family conv); "cuda": cupy arrays
    against torch.cuda, timed with CUDA events (family cuda_conv, bench/cuda_conv.py)."""
    P = (H + 2 * padding - R) // stride + 1
    Q = (W + 2 * padding - S) // stride + 1
    flops = 2.0 * N * K * P * Q * (C // groups) * R * S * (3 if backward else 1)
    cuda = device == "cuda"
    nhwc = layout == "NHWC"

    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = (rng.standard_normal((K, C // groups, R, S), dtype=np.float32) / np.sqrt(C // groups * R * S)).astype(
            np.float32)
        b = rng.standard_normal(K, dtype=np.float32)
        go = rng.standard_normal((N, K, P, Q), dtype=np.float32)
        xl, wl, gol = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, w, go)) if nhwc else (x, w, go)
        bl = b
        if cuda:
            import cupy as cp

            xl, wl, bl, gol = (cp.asarray(a) for a in (xl, wl, bl, gol))

        def ours():
            out = ops.conv2d(xl, wl, bl, stride, padding, 1, groups, layout=layout)
            if backward:
                ops.conv2d_backward(gol, xl, wl, stride, padding, 1, groups, layout=layout)
            return out

        if cuda:
            from .cuda_timing import torch_cuda_peer

            torch = torch_cuda_peer()
            if torch is None:
                return ours, None, "torch.cuda (not available)"
        else:
            torch = torch_peer()
            if torch is None:
                return ours, None, "torch (not installed)"
        F = torch.nn.functional
        mf = torch.channels_last if nhwc else torch.contiguous_format
        xt, wt, got = (torch.from_numpy(a).to(device).contiguous(memory_format=mf) for a in (x, w, go))
        bt = torch.from_numpy(b).to(device)
        if backward:
            for t in (xt, wt, bt):
                t.requires_grad_(True)

        def peer():
            if not backward:
                with torch.no_grad():
                    return F.conv2d(xt, wt, bt, stride, padding, 1, groups)
            xt.grad = wt.grad = bt.grad = None
            out = F.conv2d(xt, wt, bt, stride, padding, 1, groups)
            out.backward(got)
            return out

        peer_name = f"torch {torch.__version__}" + (f" cuDNN {torch.backends.cudnn.version()}" if cuda else "")
        return ours, peer, peer_name + (" channels_last" if nhwc else "")

    label = f"{name} {layout} {'fwd+bwd' if backward else 'fwd'}"
    if cuda:
        from .cuda_timing import time_pair_cuda

        return Case("cuda_conv", label, flops, setup, extra={"device": "cuda"}, timer=time_pair_cuda)
    return Case("conv", label, flops, setup)


SHAPES = [
    # name, N, C, H, W, K, R, S, stride, padding, groups
    ("tutorial1 32x1x28x28->32 3x3", 32, 1, 28, 28, 32, 3, 3, 1, 0, 1),
    ("tutorial2 32x32x13x13->64 3x3", 32, 32, 13, 13, 64, 3, 3, 1, 0, 1),
    ("resnet 8x64x56x56->64 3x3 p1", 8, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("1x1 8x256x14x14->512", 8, 256, 14, 14, 512, 1, 1, 1, 0, 1),
    ("depthwise 8x128x28x28 3x3 p1", 8, 128, 28, 28, 128, 3, 3, 1, 1, 128),
]


def cases(quick: bool = False):
    shapes = SHAPES[:2] if quick else SHAPES
    for (name, N, C, H, W, K, R, S, st, pad, g) in shapes:
        for backward in (False, True):
            yield conv_case(name, N, C, H, W, K, R, S, st, pad, g, backward)
    if not quick:  # channels-last (what the Keras-style API feeds) on the tutorial layers
        for (name, N, C, H, W, K, R, S, st, pad, g) in SHAPES[:2]:
            for backward in (False, True):
                yield conv_case(name, N, C, H, W, K, R, S, st, pad, g, backward, layout="NHWC")
