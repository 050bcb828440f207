"""Peak RSS of layerforge's attention forward + backward as L grows (each size in a fresh subprocess).

Usage: python bench/attention_peak_rss.py [--torch]. Prints, per L, the RSS after the inputs are
allocated and the peak RSS after forward + backward (ru_maxrss), in MiB. Memory should grow with L
(inputs, outputs, gradients, lse), not with L^2.
"""
import subprocess
import sys

CHILD = r"""
import resource, sys, numpy as np
lib, L, H, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((1, H, L, D), dtype=np.float32) for _ in range(4))
if lib == "layerforge":
    from layerforge import ops
    def run():
        out, saved = ops.scaled_dot_product_attention(q, k, v, is_causal=False, return_saved=True)
        ops.scaled_dot_product_attention_backward(g, saved)
else:
    import torch
    qt, kt, vt = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    def run():
        torch.nn.functional.scaled_dot_product_attention(qt, kt, vt).backward(torch.from_numpy(g))
import layerforge  # same imports for both
base = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
run()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{lib:<10} L={L:<6} H={H} D={D}: RSS after inputs {base:8.1f} MiB, peak after fwd+bwd {peak:8.1f} MiB, "
      f"peak - inputs {peak - base:8.1f} MiB (an L x S float32 matrix per head would be {H * L * L * 4 / 2**20:.0f} MiB)")
"""


def main():
    libs = ["layerforge"] + (["torch"] if "--torch" in sys.argv else [])
    for lib in libs:
        for L in (1024, 2048, 4096, 8192):
            r = subprocess.run([sys.executable, "-c", CHILD, lib, str(L), "2", "64"], capture_output=True, text=True)
            print(r.stdout.strip() or r.stderr.strip()[-500:])


if __name__ == "__main__":
    main()
