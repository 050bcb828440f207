"""layerforge: hand-written C++/CUDA kernels for neural-network layers, with a thin Python API.

Arrays in, arrays out: ``layerforge.ops`` takes numpy arrays and runs the CPU kernels (the CUDA module, when
built and a GPU is present, is reported by ``layerforge.cuda``).
"""
from importlib.metadata import PackageNotFoundError, version as _version

from . import _C
from . import cuda, ops

try:
    __version__ = _version("layerforge")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"


def get_num_threads() -> int:
    """Threads the CPU kernels use (default: OMP_NUM_THREADS, else all cores)."""
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads the CPU kernels use (n >= 1)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _C.set_num_threads(n)


def cpu_path() -> str:
    """The CPU code path in use: 'avx2' (AVX2+FMA) or 'generic' (portable)."""
    return _C.cpu_path()


__all__ = ["ops", "cuda", "get_num_threads", "set_num_threads", "cpu_path", "__version__"]
