"""layerforge: hand-written C++/CUDA kernels for neural-network layers, with a thin Python API.

Arrays in, arrays out: ``layerforge.ops`` takes numpy arrays and runs the CPU kernels (the CUDA module, when
built and a GPU is present, is reported by ``layerforge.cuda``).
"""
from importlib.metadata import PackageNotFoundError, version as _version

from . import _C
from . import cuda, ops
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import (Tensor, abs, arange, argmax, as_tensor, bool_, cat, clamp, double, empty, exp, flatten,
                     float32, float64, from_numpy, full, int32, int64, is_tensor, log, long, manual_seed, matmul,
                     max, maximum, mean, min, minimum, numel, ones, ones_like, permute, rand, rand_like, randint,
                     randn, randn_like, randperm, relu, reshape, sigmoid, softmax, sqrt, squeeze, stack, sum, tanh,
                     tensor, transpose, unsqueeze, where, zeros, zeros_like)
from .tensor import float as float  # noqa: PLC0414  (torch.float)
from .tensor import device  # noqa: E402  (torch.device)
from . import autograd, data, nn, optim  # noqa: E402

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


__all__ = ["ops", "cuda", "nn", "optim", "data", "autograd", "get_num_threads", "set_num_threads", "cpu_path",
           "__version__", "Tensor", "tensor", "from_numpy", "as_tensor", "zeros", "ones", "empty", "full", "randn",
           "rand", "randint", "randperm", "arange", "zeros_like", "ones_like", "randn_like", "rand_like",
           "manual_seed", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "relu", "sigmoid",
           "tanh", "softmax", "matmul", "cat", "stack", "argmax", "exp", "log", "sqrt", "abs", "clamp", "sum",
           "mean", "max", "min", "maximum", "minimum", "flatten", "reshape", "transpose", "permute", "unsqueeze",
           "squeeze", "where", "is_tensor", "numel", "float32", "float64", "int32", "int64", "bool_", "float",
           "double", "long", "device"]
