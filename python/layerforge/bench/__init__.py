"""The benchmark harness: `python -m layerforge bench [families...] [--json FILE] [--results FILE]`.

Each family module (bench/<family>.py) yields Cases; a Case builds `ours` and `peer` callables on the same
inputs. Both are timed interleaved in blocks (ours, peer, ours, peer, ...) in one process after warm-up,
and the reported ratio is the median of the per-pair ratios (see shared BENCHMARKING.md): machines here
are noisy, so only ratios measured side by side mean anything.
"""
from .harness import Case, FAMILIES, machine_info, run

__all__ = ["Case", "FAMILIES", "machine_info", "run"]
