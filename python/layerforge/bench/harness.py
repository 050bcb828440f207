"""Timing, the family registry, and the report (terminal table, JSON, RESULTS.md)."""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

# family name -> module (under layerforge.bench) whose `cases(quick)` yields Case objects
FAMILIES: dict[str, str] = {
    "matmul": "layerforge.bench.matmul",
    "conv": "layerforge.bench.conv",
    "pool": "layerforge.bench.pool",
    "lstm": "layerforge.bench.lstm",
    "attention": "layerforge.bench.attention",
    "nn": "layerforge.bench.nn",
    "cuda_matmul": "layerforge.bench.cuda_matmul",  # yields no cases without a GPU
    "cuda_optim": "layerforge.bench.cuda_optim",  # GPU: fused Adam, layer norm, cross-entropy (no cases without one)
    "cuda_attention": "layerforge.bench.cuda_attention",  # yields no cases without a GPU
    "cuda_lstm": "layerforge.bench.cuda_lstm",  # yields no cases without a GPU
    "cuda_conv": "layerforge.bench.cuda_conv",
}

# rate = work / seconds / scale; "% peak" (of the measured CPU FMA peak) only for CPU GFLOP/s cases.
_RATE_SCALE = {"GFLOP/s": 1e9, "GB/s": 1e9, "TFLOP/s": 1e12}  # other units (e.g. steps/s): as counted


@dataclass
class Case:
    family: str
    name: str
    work: float  # FLOPs (unit "GFLOP/s"), bytes moved ("GB/s") or items (any other unit, e.g. "steps/s") per call
    setup: Callable[[], tuple[Callable[[], object], Callable[[], object] | None, str]]
    unit: str = "GFLOP/s"
    note: str = ""
    extra: dict = field(default_factory=dict)
    # How to time (ours, peer, rounds) -> time_pair's tuple; None: time_pair (wall clock, CPU work).
    # GPU cases pass one that times with CUDA events (bench/cuda_timing.py).
    timer: Callable | None = None


def torch_peer():
    """torch with the same thread count as layerforge, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from .. import get_num_threads

    torch.set_num_threads(get_num_threads())
    return torch


def _block_time(fn: Callable[[], object], n: int, settle: float = 0.0) -> float:
    if settle:
        # Let the other library's idle thread pool stop spinning: OpenBLAS's threads keep polling for
        # about 0.1 s after its last call (OpenMP pools for a few ms). On 2 cores a polling thread starves
        # the next block's worker for whole 4 ms scheduler ticks (seen: 32x784 @ 784x128 at 8 ms instead
        # of 0.13 ms), so each block starts only after the other pool has gone to sleep.
        time.sleep(settle)
    fn()  # the first call after the other library's block pays for waking its own threads; not timed
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def time_pair(ours: Callable, peer: Callable | None, rounds: int = 7, block_seconds: float = 0.05,
              settle: float = 0.25):
    """Median seconds per call of ours and peer, and the median of per-round ratios peer/ours.

    Each round times a block of n calls of ours, then a block of n calls of the peer (n chosen so a
    block lasts about block_seconds), each block preceded by a pause of `settle` seconds."""
    ours()
    if peer is not None:
        peer()
    t = _block_time(ours, 1)
    n = max(1, int(block_seconds / max(t, 1e-7)))
    return time_rounds(lambda fn: _block_time(fn, n, settle), ours, peer, rounds)


def time_rounds(time_block: Callable[[Callable], float], ours: Callable, peer: Callable | None, rounds: int):
    """The timing loop of time_pair (and of cuda_timing.time_pair_cuda): `rounds` rounds of
    time_block(ours) then time_block(peer) (seconds per call of a block of calls); returns the medians
    of ours' and the peer's times, the median of the per-round ratios peer/ours and their range."""
    t_ours, t_peer, ratios = [], [], []
    for _ in range(rounds):
        a = time_block(ours)
        t_ours.append(a)
        if peer is not None:
            b = time_block(peer)
            t_peer.append(b)
            ratios.append(b / a)
    return (
        statistics.median(t_ours),
        statistics.median(t_peer) if t_peer else None,
        statistics.median(ratios) if ratios else None,
        (min(ratios), max(ratios)) if ratios else None,
    )


def machine_info() -> dict:
    from .. import _C, __version__, cuda

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _C.cpu_model_name(),
        "cores": os.cpu_count(),
        "cpu_features": _C.cpu_features(),
        "cpu_path": _C.cpu_path(),
        "threads": _C.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "layerforge": __version__,
        "gpus": [d["name"] for d in cuda.devices()],
    }
    try:
        import torch  # noqa: F401

        info["torch"] = torch.__version__
    except ImportError:
        pass
    # Peak: the measured throughput of independent FMAs on one core (the clock and FMA width of this
    # very machine, whatever the VM reports), times the threads in use.
    one = _C.measure_fp32_peak_gflops_one_core(0.3)
    info["peak_gflops_one_core"] = round(one, 1)
    info["peak_gflops"] = round(one * min(_C.get_num_threads(), os.cpu_count() or 1), 1)
    return info


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


def run(families: Iterable[str], json_path: str | None = None, results_path: str | None = None,
        quick: bool = False, rounds: int = 7) -> list[dict]:
    families = list(families) or list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown benchmark families {unknown}; known: {sorted(FAMILIES)}")
    info = machine_info()
    print(f"layerforge {info['layerforge']} on {info['cpu']} ({info['cores']} cores, path {info['cpu_path']}, "
          f"{info['threads']} threads); peak {info['peak_gflops']} GFLOP/s "
          f"({info['peak_gflops_one_core']} per core, measured FMA throughput)")
    rows = []
    for fam in families:
        mod = importlib.import_module(FAMILIES[fam])
        print(f"\n## {fam}")
        header = f"{'case':<34} {'ours':>11} {'peer':>11} {'peer/ours':>10} {'ours ' + 'rate':>14} {'% peak':>7}"
        print(header)
        for case in mod.cases(quick):
            ours, peer, peer_name = case.setup()
            timer = case.timer or time_pair
            t_o, t_p, ratio, spread = timer(ours, peer, rounds=rounds if not quick else 3)
            rate = case.work / t_o / _RATE_SCALE.get(case.unit, 1.0)
            pct = 100.0 * rate / info["peak_gflops"] if case.unit == "GFLOP/s" and case.timer is None else None
            row = {
                "family": fam, "case": case.name, "peer": peer_name, "ours_s": t_o, "peer_s": t_p,
                "ratio": ratio, "ratio_min": spread[0] if spread else None,
                "ratio_max": spread[1] if spread else None, "rate": rate, "unit": case.unit,
                "pct_peak": pct, "note": case.note, **case.extra,
            }
            rows.append(row)
            print(f"{case.name:<34} {_fmt_time(t_o):>11} {_fmt_time(t_p):>11} "
                  f"{(f'{ratio:.2f}x' if ratio else '-'):>10} {rate:>8.1f} {case.unit:<7} "
                  f"{(f'{pct:.0f}%' if pct is not None else '-'):>6}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "results": rows}, f, indent=1)
        print(f"\nwrote {json_path}")
    if results_path:
        # Only families that produced rows: a run without a GPU must not blank the GPU sections.
        write_results(results_path, info, rows, [f for f in families if any(r["family"] == f for r in rows)])
        print(f"wrote {results_path}")
    return rows


def _markdown_section(info: dict, rows: list[dict], fam: str) -> str:
    lines = [
        f"## {fam}",
        "",
        f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores, CPU path `{info['cpu_path']}`, "
        f"{info['threads']} threads; peak {info['peak_gflops']} GFLOP/s = measured one-core FMA "
        f"throughput {info['peak_gflops_one_core']} GFLOP/s x threads. numpy {info['numpy']}"
        + (f", torch {info['torch']}" if "torch" in info else "")
        + (f"; GPU {', '.join(info['gpus'])} (GPU cases timed with CUDA events)" if info.get("gpus") else "")
        + ". Command: `python -m layerforge bench "
        f"{fam} --results bench/RESULTS.md`.",
        "",
        "| case | peer | ours | peer time | peer/ours (min-max) | ours rate | % peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["family"] != fam:
            continue
        ratio = f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})" if r["ratio"] else "-"
        pct = f"{r['pct_peak']:.0f}%" if r["pct_peak"] is not None else "-"
        lines.append(f"| {r['case']} | {r['peer']} | {_fmt_time(r['ours_s'])} | {_fmt_time(r['peer_s'])} | "
                     f"{ratio} | {r['rate']:.1f} {r['unit']} | {pct} |")
    return "\n".join(lines) + "\n"


def write_results(path: str, info: dict, rows: list[dict], families: list[str]) -> None:
    """Replace (or append) the sections of `families` in a RESULTS.md, keeping the others."""
    sections: dict[str, str] = {}
    preamble = "# Benchmark results\n\npeer/ours > 1 means layerforge is faster. Medians of interleaved runs.\n\n"
    if os.path.exists(path):
        text = open(path).read()
        parts = text.split("\n## ")
        preamble = parts[0].rstrip("\n") + "\n\n"
        for p in parts[1:]:
            name = p.split("\n", 1)[0].strip()
            sections[name] = "## " + p.rstrip("\n") + "\n"
    for fam in families:
        sections[fam] = _markdown_section(info, rows, fam)
    with open(path, "w") as f:
        f.write(preamble)
        f.write("\n".join(sections[k] for k in sections))
