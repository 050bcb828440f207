"""Attention cases: layerforge.ops.scaled_dot_product_attention (forward; forward + backward) against
torch.nn.functional.scaled_dot_product_attention on the CPU (its flash-attention kernel), float32."""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case, torch_peer


def _case(B: int, H: int, L: int, D: int, mode: str, backward: bool) -> Case:
    causal = mode == "causal"

    def setup():
        rng = np.random.default_rng(0)
        q, k, v, g = (rng.standard_normal((B, H, L, D), dtype=np.float32) for _ in range(4))
        mask = None
        if mode == "padding":  # keys past each sequence's length are padding
            lengths = [L if b % 2 == 0 else (3 * L) // 4 for b in range(B)]
            mask = np.zeros((B, 1, 1, L), bool)
            for b, n in enumerate(lengths):
                mask[b, ..., :n] = True

        if backward:
            def ours():
                out, saved = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                              return_saved=True)
                return ops.scaled_dot_product_attention_backward(g, saved)
        else:
            def ours():
                return ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

        torch = torch_peer()
        if torch is None:
            return ours, None, "torch (not installed)"
        F = torch.nn.functional
        qt, kt, vt, gt = (torch.from_numpy(a) for a in (q, k, v, g))
        mt = None if mask is None else torch.from_numpy(mask)
        if backward:
            qg, kg, vg = (a.clone().requires_grad_() for a in (qt, kt, vt))

            def peer():
                for a in (qg, kg, vg):
                    a.grad = None
                F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mt, is_causal=causal).backward(gt)
        else:
            def peer():
                with torch.no_grad():
                    return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mt, is_causal=causal)
        return ours, peer, f"torch {torch.__version__} SDPA"

    flops = 4.0 * B * H * L * L * D * (0.5 if causal else 1.0) * (3.5 if backward else 1.0)
    name = f"({B}, {H}, {L}, {D}) {mode} {'fwd+bwd' if backward else 'fwd'}"
    return Case("attention", name, flops, setup)


def cases(quick: bool = False):
    shapes = [(8, 8, 256, 64), (1, 8, 2048, 64)]
    if quick:
        shapes = [(8, 8, 256, 64)]
    for B, H, L, D in shapes:
        for mode in ("plain", "causal", "padding"):
            for bwd in (False, True):
                yield _case(B, H, L, D, mode, bwd)
