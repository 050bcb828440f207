"""LSTM cases: layerforge.ops.lstm (forward; forward + backward through time) against torch.nn.LSTM
(PyTorch CPU: MKL/oneDNN), float32, with the same thread count."""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case, torch_peer


def _case(name: str, T: int, B: int, I: int, H: int, backward: bool) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, B, I), dtype=np.float32)
        h0 = rng.standard_normal((B, H), dtype=np.float32) * 0.1
        c0 = rng.standard_normal((B, H), dtype=np.float32) * 0.1
        s = 1.0 / np.sqrt(H)
        w_ih = (rng.uniform(-s, s, (4 * H, I))).astype(np.float32)
        w_hh = (rng.uniform(-s, s, (4 * H, H))).astype(np.float32)
        b_ih = (rng.uniform(-s, s, 4 * H)).astype(np.float32)
        b_hh = (rng.uniform(-s, s, 4 * H)).astype(np.float32)
        gy = rng.standard_normal((T, B, H), dtype=np.float32)

        if backward:
            def ours():
                y, h, c, saved = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, return_saved=True)
                return ops.lstm_backward(gy, saved)
        else:
            def ours():
                return ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh)

        torch = torch_peer()
        if torch is None:
            return ours, None, "torch (not installed)"
        m = torch.nn.LSTM(I, H)
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.from_numpy(w_ih))
            m.weight_hh_l0.copy_(torch.from_numpy(w_hh))
            m.bias_ih_l0.copy_(torch.from_numpy(b_ih))
            m.bias_hh_l0.copy_(torch.from_numpy(b_hh))
        xt = torch.from_numpy(x)
        st = (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
        gyt = torch.from_numpy(gy)
        if backward:
            xg = xt.clone().requires_grad_()

            def peer():
                for p in m.parameters():
                    p.grad = None
                xg.grad = None
                y, _ = m(xg, st)
                y.backward(gyt)
        else:
            def peer():
                with torch.no_grad():
                    return m(xt, st)
        return ours, peer, f"torch {torch.__version__} nn.LSTM"

    flops = 2.0 * T * B * 4 * H * (I + H) * (3.0 if backward else 1.0)
    return Case("lstm", name, flops, setup)


def cases(quick: bool = False):
    shapes = [("I28 H128 T28 B32", 28, 32, 28, 128), ("I64 H256 T100 B32", 100, 32, 64, 256)]
    if quick:
        shapes = shapes[:1]
    for label, T, B, I, H in shapes:
        yield _case(f"{label} fwd", T, B, I, H, False)
        yield _case(f"{label} fwd+bwd", T, B, I, H, True)
