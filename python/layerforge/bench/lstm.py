"""LSTM cases: layerforge.ops.lstm (forward; forward + backward through time) against torch.nn.LSTM
(PyTorch CPU: MKL/oneDNN), float32, with the same thread count."""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case, torch_peer


def lstm_inputs(xp, T: int, B: int, I: int, H: int):
    """(x, h0, c0, w_ih, w_hh, b_ih, b_hh), grad_y in float32 for a case, drawn with xp (numpy or cupy) from
    seed 0: weights U(-1/sqrt(H), 1/sqrt(H)) as torch.nn.LSTM initialises them."""
    rng = xp.random.default_rng(0)
    x = rng.standard_normal((T, B, I), dtype=xp.float32)
    h0 = rng.standard_normal((B, H), dtype=xp.float32) * 0.1
    c0 = rng.standard_normal((B, H), dtype=xp.float32) * 0.1
    s = 1.0 / H ** 0.5
    w_ih, w_hh = (rng.uniform(-s, s, shape).astype(xp.float32) for shape in ((4 * H, I), (4 * H, H)))
    b_ih, b_hh = (rng.uniform(-s, s, 4 * H).astype(xp.float32) for _ in range(2))
    gy = rng.standard_normal((T, B, H), dtype=xp.float32)
    return (x, h0, c0, w_ih, w_hh, b_ih, b_hh), gy


def lstm_ours(args, gy, backward: bool):
    """ops.lstm on args (forward, or forward + backward through time from grad_y gy)."""
    if backward:
        def ours():
            *_, saved = ops.lstm(*args, return_saved=True)
            return ops.lstm_backward(gy, saved)
    else:
        def ours():
            return ops.lstm(*args)
    return ours


def lstm_torch_peer(torch, args, gy, backward: bool, to_tensor, module, wrap=lambda fn: fn):
    """torch.nn.LSTM `module` (single layer, I -> H) loaded with args' weights: the peer of lstm_ours.
    to_tensor turns an input array into a tensor on the module's device; wrap decorates the timed call."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = args
    with torch.no_grad():
        for p, a in ((module.weight_ih_l0, w_ih), (module.weight_hh_l0, w_hh), (module.bias_ih_l0, b_ih),
                     (module.bias_hh_l0, b_hh)):
            p.copy_(to_tensor(a))
    xt, gyt = to_tensor(x), to_tensor(gy)
    st = (to_tensor(h0)[None], to_tensor(c0)[None])
    if backward:
        xg = xt.clone().requires_grad_()

        @wrap
        def peer():
            for p in module.parameters():
                p.grad = None
            xg.grad = None
            y, _ = module(xg, st)
            y.backward(gyt)
    else:
        @wrap
        def peer():
            with torch.no_grad():
                return module(xt, st)
    return peer


def lstm_flops(T: int, B: int, I: int, H: int, backward: bool) -> float:
    """2 T B 4H (I + H) per forward, 3x for forward + backward."""
    return 2.0 * T * B * 4 * H * (I + H) * (3.0 if backward else 1.0)


def _case(name: str, T: int, B: int, I: int, H: int, backward: bool) -> Case:
    def setup():
        args, gy = lstm_inputs(np, T, B, I, H)
        ours = lstm_ours(args, gy, backward)
        torch = torch_peer()
        if torch is None:
            return ours, None, "torch (not installed)"
        peer = lstm_torch_peer(torch, args, gy, backward, torch.from_numpy, torch.nn.LSTM(I, H))
        return ours, peer, f"torch {torch.__version__} nn.LSTM"

    return Case("lstm", name, lstm_flops(T, B, I, H, backward), setup)


def cases(quick: bool = False):
    shapes = [("I28 H128 T28 B32", 28, 32, 28, 128), ("I64 H256 T100 B32", 100, 32, 64, 256)]
    if quick:
        shapes = shapes[:1]
    for label, T, B, I, H in shapes:
        yield _case(f"{label} fwd", T, B, I, H, False)
        yield _case(f"{label} fwd+bwd", T, B, I, H, True)
