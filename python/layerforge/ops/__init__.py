"""Arrays in, arrays out: the kernels as plain functions on numpy arrays (one module per family)."""
from .matmul import matmul

__all__ = ["matmul"]
