"""Build layerforge's CUDA module for the CPU emulator: csrc/cuda/{conv,pool}.cu compiled as C++ against
tests/cuda_emu/cuda_runtime.h, with the real bindings (csrc/python/cuda_module.cpp, cuda_conv.cpp).

    python tests/cuda_emu/build.py OUTDIR [--asan]      -> prints the path of the built module

The build is cached in OUTDIR by a hash of its sources and flags. With --asan the module is built with
AddressSanitizer (run Python with LD_PRELOAD=$(g++ -print-file-name=libasan.so) and
ASAN_OPTIONS=detect_leaks=0:log_path=/tmp/asan, since pytest captures the report otherwise).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "cuda_emu")
KERNELS = ["csrc/cuda/conv.cu", "csrc/cuda/pool.cu"]
HOST = ["csrc/python/cuda_module.cpp", "csrc/python/cuda_conv.cpp", "tests/cuda_emu/emu_runtime.cpp"]
HEADERS_DIRS = ["csrc/include/layerforge", "csrc/include/layerforge/detail", "csrc/cuda", "csrc/python",
                "tests/cuda_emu"]


def _sources_hash(flags: list[str]) -> str:
    h = hashlib.sha256(" ".join(flags).encode())
    files = [os.path.join(ROOT, f) for f in KERNELS + HOST]
    for d in HEADERS_DIRS:
        full = os.path.join(ROOT, d)
        files += [os.path.join(full, f) for f in sorted(os.listdir(full)) if f.endswith((".h", ".cuh"))]
    for f in files:
        with open(f, "rb") as fh:
            h.update(f.encode() + fh.read())
    return h.hexdigest()[:16]


def build(outdir: str, asan: bool = False) -> str:
    import pybind11

    os.makedirs(outdir, exist_ok=True)
    flags = ["-std=c++20", "-O2", "-g", "-fPIC", "-shared", "-pthread", "-Wall", "-Wno-unknown-pragmas",
             "-Wno-unused-function"]
    if asan:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer", "-Wno-maybe-uninitialized"]  # (pybind11's)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    tag = _sources_hash(flags)
    target = os.path.join(outdir, f"_cuda_emu_{tag}{suffix}")
    if os.path.exists(target):
        return target
    includes = ["-I" + os.path.join(ROOT, "tests", "cuda_emu"), "-I" + os.path.join(ROOT, "csrc", "include"),
                "-I" + os.path.join(ROOT, "csrc", "cuda"), "-I" + os.path.join(ROOT, "csrc", "python"),
                "-I" + pybind11.get_include(), "-I" + sysconfig.get_paths()["include"]]
    cmd = (["g++"] + flags + includes + ["-DLAYERFORGE_CUDA_MODULE_NAME=_cuda_emu"] + ["-x", "c++"] +
           [os.path.join(ROOT, f) for f in KERNELS] + ["-x", "none"] + [os.path.join(ROOT, f) for f in HOST] +
           ["-o", target + ".tmp"])
    subprocess.run(cmd, check=True)
    os.replace(target + ".tmp", target)
    return target


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    print(build(args[0] if args else os.path.join(ROOT, "build", "cuda_emu"), asan="--asan" in sys.argv))
