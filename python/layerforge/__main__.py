"""Command line: `python -m layerforge train | info | bench`."""
from __future__ import annotations

import argparse
import os
import sys


def _info() -> int:
    import layerforge
    from layerforge import _C, cuda

    print(f"layerforge {layerforge.__version__}")
    print(f"  build          {_C.build_info}")
    print(f"  cpu            {_C.cpu_model_name()} ({os.cpu_count()} logical cores)")
    print(f"  cpu features   {' '.join(_C.cpu_features()) or 'baseline only'}")
    forced = os.environ.get("LAYERFORGE_CPU_PATH")
    print(f"  cpu path       {_C.cpu_path()}" + (f" (LAYERFORGE_CPU_PATH={forced})" if forced else ""))
    print(f"  threads        {_C.get_num_threads()} (OpenMP {'on' if _C.openmp_enabled() else 'off'})")
    if cuda.is_built():
        print(f"  cuda module    built for {', '.join(cuda.compiled_architectures())}")
        reason = cuda.unavailable_reason()
        if reason:
            print(f"  gpus           none: {reason}; everything runs on the CPU")
        else:
            for d in cuda.devices():
                cc = ".".join(map(str, d["compute_capability"]))
                print(f"  gpu {d['index']}          {d['name']} (compute capability {cc}, "
                      f"{d['total_memory'] / 2**30:.1f} GiB)")
    else:
        print(f"  cuda module    not built: {cuda.unavailable_reason()}")
        print("  gpus           none: everything runs on the CPU")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from layerforge import train as _train

    pt = sub.add_parser("train", help="train a tutorial model (default: the CNN) on the bundled MNIST")
    _train.add_arguments(pt)
    sub.add_parser("info", help="version, CPU features and code path, threads, CUDA build and GPUs")
    pb = sub.add_parser("bench", help="time kernels against their peers (numpy, torch, cupy) in one run")
    pb.add_argument("families", nargs="*", help="families to run (default: all)")
    pb.add_argument("--json", metavar="FILE", help="write the raw results as JSON")
    pb.add_argument("--results", metavar="FILE", help="write/update the markdown tables (bench/RESULTS.md)")
    pb.add_argument("--quick", action="store_true", help="fewer, smaller cases and rounds")
    pb.add_argument("--threads", type=int, help="threads for layerforge (and the peers where settable)")
    args = parser.parse_args(argv)

    if args.command == "train":
        return _train.main_from_args(args)
    if args.command == "info":
        return _info()
    if args.command == "bench":
        import layerforge
        from layerforge.bench import run

        if args.threads:
            layerforge.set_num_threads(args.threads)
        run(args.families, json_path=args.json, results_path=args.results, quick=args.quick)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
