"""GPU attention cases: layerforge.ops.scaled_dot_product_attention on cupy arrays (bfloat16 as uint16 bits,
bf16=True) against torch.nn.functional.scaled_dot_product_attention restricted to its FlashAttention
backend, on the same CUDA stream, forward and forward + backward, causal or not, (B, H, L, D) = (16, 16,
1024..8192, 64 and 128). Rates in TFLOP/s with FlashAttention's counting: 4 B H L S D for the forward
(halved when causal), the backward 2.5x the forward (forward + backward 3.5x). Yields nothing without a GPU
(or without cupy), so `python -m layerforge bench` runs everywhere."""
from __future__ import annotations

from .cuda_timing import gpu_ready, time_pair_cuda, torch_cuda
from .harness import Case


def _case(B: int, H: int, L: int, D: int, causal: bool, backward: bool) -> Case:
    def setup():
        import cupy as cp

        from .. import cuda, ops

        torch = torch_cuda()
        if torch is not None:  # one set of bf16 values for both sides
            tq, tk, tv, tg = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            q, k, v, g = (cp.asarray(t.view(torch.int16)).view(cp.uint16) for t in (tq, tk, tv, tg))
        else:
            rng = cp.random.default_rng(0)
            q, k, v, g = (cuda.to_bfloat16_bits(rng.standard_normal((B, H, L, D), dtype=cp.float32))
                          for _ in range(4))
        sdpa, sdpa_bwd = ops.scaled_dot_product_attention, ops.scaled_dot_product_attention_backward
        if backward:
            def ours():
                _, saved = sdpa(q, k, v, is_causal=causal, bf16=True, return_saved=True)
                return sdpa_bwd(g, saved)
        else:
            def ours():
                return sdpa(q, k, v, is_causal=causal, bf16=True)
        if torch is None:
            return ours, None, "-"
        from torch.nn.attention import SDPBackend, sdpa_kernel

        F = torch.nn.functional
        if backward:
            qg, kg, vg = (t.clone().requires_grad_() for t in (tq, tk, tv))

            def peer():
                for t in (qg, kg, vg):
                    t.grad = None
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal).backward(tg)
        else:
            def peer():
                with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        return ours, peer, f"torch {torch.__version__} SDPA (flash)"

    forward_flops = 4.0 * B * H * L * L * D * (0.5 if causal else 1.0)
    name = f"({B}, {H}, {L}, {D}) {'causal' if causal else 'full'} {'fwd+bwd' if backward else 'fwd'}"
    return Case("cuda_attention", name, forward_flops * (3.5 if backward else 1.0), setup, unit="TFLOP/s",
                timer=time_pair_cuda, note="bfloat16", extra={"forward_flops": forward_flops})


def cases(quick: bool = False):
    if not gpu_ready():
        return
    lengths = [1024, 4096] if quick else [1024, 2048, 4096, 8192]
    for D in (64, 128):
        for L in lengths:
            for causal in (False, True):
                for backward in (False, True):
                    yield _case(16, 16, L, D, causal, backward)
