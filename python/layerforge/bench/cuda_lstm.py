"""GPU LSTM cases: layerforge.ops.lstm (forward; forward + backward through time) on cupy arrays against
torch.nn.LSTM on CUDA (cuDNN), float32 on both sides (cuDNN's TF32 off, as our kernels compute in float32),
on the same CUDA stream. FLOPs counted as the CPU suite does: 2 T B 4H (I + H) per forward, 3x for forward
+ backward. Yields nothing without a GPU (or without cupy)."""
from __future__ import annotations

from .cuda_matmul import _gpu_ready, _torch_cuda
from .cuda_timing import time_pair_cuda
from .harness import Case


def _case(label: str, T: int, B: int, I: int, H: int, backward: bool) -> Case:
    def setup():
        import cupy as cp

        from .. import _cuda, ops

        rng = cp.random.default_rng(0)
        s = 1.0 / H ** 0.5
        x = rng.standard_normal((T, B, I), dtype=cp.float32)
        h0 = rng.standard_normal((B, H), dtype=cp.float32) * 0.1
        c0 = rng.standard_normal((B, H), dtype=cp.float32) * 0.1
        w_ih, w_hh = (rng.uniform(-s, s, shape).astype(cp.float32) for shape in ((4 * H, I), (4 * H, H)))
        b_ih, b_hh = (rng.uniform(-s, s, 4 * H).astype(cp.float32) for _ in range(2))
        gy = rng.standard_normal((T, B, H), dtype=cp.float32)
        if backward:
            def ours():
                *_, saved = ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, return_saved=True)
                return ops.lstm_backward(gy, saved)
        else:
            def ours():
                return ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        recurrence = _cuda.lstm_recurrence(B, H, "float32", backward)
        torch = _torch_cuda()
        if torch is None:
            return ours, None, f"- (ours {recurrence})"
        m = torch.nn.LSTM(I, H).cuda()
        with torch.no_grad():
            for p, a in ((m.weight_ih_l0, w_ih), (m.weight_hh_l0, w_hh), (m.bias_ih_l0, b_ih), (m.bias_hh_l0, b_hh)):
                p.copy_(torch.as_tensor(a, device="cuda"))
        xt, gyt = torch.as_tensor(x, device="cuda"), torch.as_tensor(gy, device="cuda")
        st = (torch.as_tensor(h0, device="cuda")[None], torch.as_tensor(c0, device="cuda")[None])

        def fp32(fn):
            def run():
                before = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
                try:
                    return fn()
                finally:
                    torch.backends.cudnn.allow_tf32 = before
            return run

        if backward:
            xg = xt.clone().requires_grad_()

            @fp32
            def peer():
                for p in m.parameters():
                    p.grad = None
                xg.grad = None
                y, _ = m(xg, st)
                y.backward(gyt)
        else:
            @fp32
            def peer():
                with torch.no_grad():
                    return m(xt, st)
        return ours, peer, f"torch {torch.__version__} nn.LSTM (cuDNN, fp32; ours {recurrence})"

    flops = 2.0 * T * B * 4 * H * (I + H) * (3.0 if backward else 1.0)
    return Case("cuda_lstm", f"{label} {'fwd+bwd' if backward else 'fwd'}", flops, setup, unit="TFLOP/s",
                timer=time_pair_cuda, note="float32")


def cases(quick: bool = False):
    if not _gpu_ready():
        return
    shapes = [("I28 H128 T28 B32", 28, 32, 28, 128), ("I512 H512 T100 B64", 100, 64, 512, 512)]
    for label, T, B, I, H in shapes[:1] if quick else shapes:
        yield _case(label, T, B, I, H, False)
        yield _case(label, T, B, I, H, True)
