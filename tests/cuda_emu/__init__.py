"""Run the CUDA kernels of conv/pool on the CPU: an emulator of the CUDA execution model (cuda_runtime.h,
emu_runtime.cpp), a build of layerforge._cuda against it (build.py), and a stand-in for cupy backed by numpy
(fake_cupy.py). `install(path)` makes layerforge use them, so the GPU test files run unchanged:

    python tests/cuda_emu/build.py /tmp/emu            # prints the module path
    LAYERFORGE_CUDA_EMULATOR=<that path> python -m pytest tests/test_cuda_conv.py tests/test_cuda_pool.py

(tests/conftest.py calls install() when LAYERFORGE_CUDA_EMULATOR is set). It tests index arithmetic, bounds,
barrier placement and the whole Python -> binding -> launcher path; not timing, warps or real memory.
"""
from __future__ import annotations

import importlib.util
import sys


def install(module_path: str) -> None:
    """Load the emulated CUDA module from module_path as layerforge's CUDA module, and the numpy-backed
    cupy stand-in as `cupy`."""
    from . import fake_cupy
    from layerforge import cuda

    spec = importlib.util.spec_from_file_location("_cuda_emu", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cuda._module = module
    cuda._tried = True
    cuda._import_error = None
    sys.modules["cupy"] = fake_cupy
