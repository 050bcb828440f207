"""GPU LSTM cases: layerforge.ops.lstm (forward; forward + backward through time) on cupy arrays against
torch.nn.LSTM on CUDA (cuDNN), float32 on both sides (cuDNN's TF32 off, as our kernels compute in float32),
on the same CUDA stream. FLOPs counted as the CPU suite does: 2 T B 4H (I + H) per forward, 3x for forward
+ backward. Yields nothing without a GPU (or without cupy)."""
from __future__ import annotations

from .cuda_timing import gpu_ready, time_pair_cuda, torch_cuda
from .harness import Case
from .lstm import lstm_flops, lstm_inputs, lstm_ours, lstm_torch_peer


def _case(label: str, T: int, B: int, I: int, H: int, backward: bool) -> Case:
    def setup():
        import cupy as cp

        from .. import _cuda

        args, gy = lstm_inputs(cp, T, B, I, H)
        ours = lstm_ours(args, gy, backward)
        recurrence = _cuda.lstm_recurrence(B, H, "float32", backward)
        torch = torch_cuda()
        if torch is None:
            return ours, None, f"- (ours {recurrence})"

        def fp32(fn):
            def run():
                before = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
                try:
                    return fn()
                finally:
                    torch.backends.cudnn.allow_tf32 = before
            return run

        peer = lstm_torch_peer(torch, args, gy, backward, lambda a: torch.as_tensor(a, device="cuda"),
                               torch.nn.LSTM(I, H).cuda(), wrap=fp32)
        return ours, peer, f"torch {torch.__version__} nn.LSTM (cuDNN, fp32; ours {recurrence})"

    return Case("cuda_lstm", f"{label} {'fwd+bwd' if backward else 'fwd'}", lstm_flops(T, B, I, H, backward), setup,
                unit="TFLOP/s", timer=time_pair_cuda, note="float32")


def cases(quick: bool = False):
    if not gpu_ready():
        return
    shapes = [("I28 H128 T28 B32", 28, 32, 28, 128), ("I512 H512 T100 B64", 100, 64, 512, 512)]
    for label, T, B, I, H in shapes[:1] if quick else shapes:
        yield _case(label, T, B, I, H, False)
        yield _case(label, T, B, I, H, True)
