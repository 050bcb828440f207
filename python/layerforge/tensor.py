"""layerforge.Tensor: an array with autograd: a numpy array on the CPU, a cupy array on a GPU.

The array lives in ``Tensor._data``; ``Tensor.data`` is, as in torch, a Tensor sharing it without
history. Ops are Function nodes (``autograd.py``) whose forward and backward call ``layerforge.ops``
kernels (GEMM, elementwise, softmax ...) or the array library for cheap glue (reshapes, reductions,
indexing). That glue is device-generic: ``xp = array_module(a)`` is numpy or cupy (cupy implements
numpy's API), resolved by one type check, so the CPU path never imports cupy.
dtypes: float32 (the default, as torch's), float64, int64 (targets, indices) and bool (comparisons).

Devices as torch: ``Tensor.device`` ('cpu' or 'cuda:N'), ``to(device)``, ``cpu()``, ``cuda()``, factories
with ``device=``; ops whose Tensor operands live on different devices raise RuntimeError naming both;
``numpy()`` of a GPU tensor raises TypeError (copy it with ``cpu()`` first).
"""
from __future__ import annotations

import builtins
import collections
import numbers

import numpy as np

from . import ops
from .autograd import Function, is_grad_enabled, no_grad, run_backward, unbroadcast
from .ops._common import array_module, cupy_module, is_cuda_array

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
bool_ = np.dtype(np.bool_)
float = float32  # noqa: A001  (torch.float)
double = float64
long = int64

_builtin_float = __builtins__["float"] if isinstance(__builtins__, dict) else __builtins__.float

_DTYPE_NAMES = {"float32": float32, "float": float32, "float64": float64, "double": float64,
                "int64": int64, "long": int64, "int32": int32, "bool": bool_}

_rng = np.random.default_rng()


def manual_seed(seed: int):
    """Seed layerforge's generator (randn, rand, dropout, init, DataLoader shuffling)."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def default_generator() -> np.random.Generator:
    return _rng


def _as_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str):
        try:
            return _DTYPE_NAMES[dtype]
        except KeyError:
            raise TypeError(f"unsupported dtype {dtype!r}") from None
    return np.dtype(dtype)


class device(str):
    """A device as torch.device: ``device('cpu')``, ``device('cuda')`` (the current GPU),
    ``device('cuda:1')`` or ``device('cuda', 1)``. A str subclass ('cpu', 'cuda', 'cuda:1'), so
    ``t.device == 'cpu'`` works; ``.type`` and ``.index`` (None when not given) as torch."""

    def __new__(cls, spec, index=None):
        if isinstance(spec, device) and index is None:
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"device(): expected a string such as 'cpu' or 'cuda:0', got {type(spec).__name__}")
        typ, colon, idx = spec.strip().partition(":")
        if typ not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {spec}")
        if colon:
            if not idx.isdigit() or index is not None:
                raise RuntimeError(f"Invalid device string: '{spec}'")
            index = int(idx)
        if index is not None:
            index = int(index)
            if index < 0 or (typ == "cpu" and index != 0):
                raise RuntimeError(f"Invalid device: {typ} index {index}")
        obj = super().__new__(cls, typ if index is None or typ == "cpu" else f"{typ}:{index}")
        obj._type, obj._index = typ, (None if typ == "cpu" else index)
        return obj

    @property
    def type(self) -> str:
        return self._type

    @property
    def index(self):
        return self._index

    def __repr__(self):
        return f"device(type='{self._type}'" + (f", index={self._index})" if self._index is not None else ")")


_CPU = device("cpu")


def _device_of(a) -> device:
    """The device an array lives on: cpu for numpy, cuda:N for GPU arrays."""
    if type(a) is np.ndarray or not is_cuda_array(a):
        return _CPU
    dev = getattr(a, "device", None)
    return device("cuda", getattr(dev, "id", 0))


def _check_device(spec):
    """The device `spec` names, or None. A 'cuda' request raises RuntimeError saying why it cannot be served
    (no CUDA module built, no driver, no GPU, no cupy, no such GPU); anything else but 'cpu' raises too."""
    if spec is None:
        return None
    d = device(spec)
    if d.type == "cuda":
        from . import cuda

        why = cuda.unavailable_reason()
        if why is not None:
            raise RuntimeError(f"cannot use device '{d}': no GPU is usable here: {why}")
        cupy_module()  # RuntimeError naming the missing package
        n = cuda.device_count()
        if d.index is not None and d.index >= n:
            raise RuntimeError(f"cannot use device '{d}': CUDA error: invalid device ordinal ({n} GPU(s) here)")
    return d


def _to_device(a, dev: device):
    """Array `a` on device `dev` (checked by _check_device): the same array when it is already there, else
    a copy (host -> GPU, GPU -> host, or GPU -> GPU)."""
    src = _device_of(a)
    if dev.type == "cpu":
        return a if src.type == "cpu" else cupy_module().asnumpy(a)
    cp = cupy_module()
    index = dev.index if dev.index is not None else cp.cuda.runtime.getDevice()
    if src.type == "cuda" and src.index == index:
        return a
    with cp.cuda.Device(index):
        return cp.asarray(a) if src.type == "cpu" else cp.array(a, copy=True)


def _same_device_array(value, like, op: str):
    """`value` (a Tensor, an array, a scalar or anything array-like) as an operand of an in-place update of
    array `like`: scalars as they are, host data copied to like's GPU; a Tensor or GPU array on another
    device raises RuntimeError naming both devices, as torch."""
    if isinstance(value, Tensor):
        v = value._data
    elif isinstance(value, (bool, int, _builtin_float, np.generic)):
        return value
    elif is_cuda_array(value):
        v = value
    elif type(like) is np.ndarray:
        return value  # numpy reads lists, arrays, ... itself
    else:
        return array_module(like).asarray(value)
    if _device_of(v) != _device_of(like):
        raise _device_mismatch(op, _device_of(like), _device_of(v))
    return v


def _resolved(dev: device) -> device:
    """dev with its index: 'cuda' is the current GPU."""
    if dev.type == "cpu" or dev.index is not None:
        return dev
    return device("cuda", cupy_module().cuda.runtime.getDevice())


def _to_args(args, kwargs):
    """(device or None, dtype or None) of Tensor.to's forms: to(device), to(dtype), to(device, dtype),
    to(tensor), device= / dtype= keywords (non_blocking / copy accepted and ignored)."""
    dev, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            dev, dtype = a.device, a.dtype
        elif isinstance(a, str) and (a.startswith("cpu") or a.startswith("cuda")):
            dev = a
        elif isinstance(a, numbers.Integral) and not isinstance(a, bool):
            dev = f"cuda:{int(a)}"
        else:
            dtype = a
    return _check_device(dev), dtype


def _device_mismatch(op: str, a: device, b: device) -> RuntimeError:
    return RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two devices, "
                        f"{a} and {b}!")


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(int(s) for s in shape[0])
    return tuple(int(s) for s in shape)


class Tensor:
    # _out_index: which output of its node (_ctx) this Tensor is (0 except for multi-output Functions)
    __slots__ = ("_data", "requires_grad", "grad", "_ctx", "_out_index", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # numpy defers to our operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data._data
        a = _as_array(data, _as_dtype(dtype))
        if dtype is None and a.dtype.kind == "f" and a.dtype != float64 and a.dtype != float32:
            a = a.astype(float32)
        self._data = a
        self.grad = None
        self._ctx = None
        self._out_index = 0
        self._retains_grad = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, a, ctx=None, out_index=0):
        t = object.__new__(cls)
        t._data = a if isinstance(a, np.ndarray) else _as_array(a, None)
        t.grad = None
        t._ctx = ctx
        t._out_index = out_index
        t._retains_grad = False
        t.requires_grad = ctx is not None
        return t

    # ---- properties ----------------------------------------------------------------------------
    @property
    def shape(self):
        return self._data.shape

    def size(self, dim=None):
        return self._data.shape if dim is None else self._data.shape[dim]

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def device(self) -> device:
        return _device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self._data.__class__ is not np.ndarray and is_cuda_array(self._data)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def data(self) -> "Tensor":
        return Tensor._wrap(self._data)

    @data.setter
    def data(self, value):
        self._data = value._data if isinstance(value, Tensor) else _as_array(value, None)

    def requires_grad_(self, requires_grad: bool = True):
        if requires_grad and self._data.dtype.kind != "f":
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients, got {self._data.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        if self._ctx is not None:
            self._retains_grad = True

    # ---- conversion ---------------------------------------------------------------------------------
    def _host_only(self, what):
        if type(self._data) is not np.ndarray:
            raise TypeError(f"can't convert {self.device} device type tensor to {what}. Use Tensor.cpu() to copy "
                            "the tensor to host memory first.")

    def numpy(self) -> np.ndarray:
        self._host_only("numpy")
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self._data

    def __array__(self, dtype=None, copy=None):
        self._host_only("numpy")
        a = self._data
        return a.astype(dtype) if dtype is not None and a.dtype != dtype else a

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to a Python scalar")
        return self._data.reshape(()).item()  # on a GPU: a device-to-host copy (synchronises)

    def tolist(self):
        return self._data.tolist()

    def detach(self) -> "Tensor":
        return Tensor._wrap(self._data)

    def detach_(self):
        self._ctx = None
        self.requires_grad = False
        return self

    def clone(self) -> "Tensor":
        return _Clone.apply(self)

    def contiguous(self):
        return self

    def to(self, *args, **kwargs):
        """to(device), to(dtype), to(device, dtype), to(other_tensor), keywords device= / dtype= (torch's
        forms). Returns self when nothing changes; a move is differentiable (the gradient moves back)."""
        dev, dtype = _to_args(args, kwargs)
        t = self
        if dev is not None and _device_of(self._data) != _resolved(dev):
            t = _ToDevice.apply(self, dev)
        if dtype is not None:
            t = t.type(dtype)
        return t

    def cpu(self):
        return self if type(self._data) is np.ndarray else self.to("cpu")

    def cuda(self, device=None):
        if isinstance(device, numbers.Integral):
            return self.to(f"cuda:{int(device)}")
        return self.to(device or "cuda")

    def type(self, dtype):
        dt = _as_dtype(dtype)
        if dt == self._data.dtype:
            return self
        return _Cast.apply(self, dt)

    def float(self):
        return self.type(float32)

    def double(self):
        return self.type(float64)

    def long(self):
        return self.type(int64)

    def int(self):
        return self.type(int32)

    def bool(self):
        return self.type(bool_)

    def __repr__(self):
        host = self._data if type(self._data) is np.ndarray else cupy_module().asnumpy(self._data)
        body = np.array2string(host, separator=", ", prefix="tensor(")
        extra = ""
        if host is not self._data:
            extra += f", device='{self.device}'"
        if self._data.dtype not in (float32, int64, bool_):
            extra += f", dtype={self._data.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn=<{self._ctx.name}Backward>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self):
        return bool(self.item())

    def __int__(self):
        return int(self.item())

    def __float__(self):
        return _builtin_float(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iu" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __hash__(self):
        return id(self)

    # ---- autograd ----------------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        if create_graph:
            raise RuntimeError("create_graph=True (higher-order gradients) is not supported by layerforge")
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (this tensor has shape "
                    f"{tuple(self.shape)}); pass gradient= to backward()"
                )
            g = array_module(self._data).ones(self.shape, dtype=self._data.dtype)
        else:
            g = _same_device_array(gradient, self._data, "backward")
            if not isinstance(gradient, Tensor):
                g = array_module(self._data).asarray(g, dtype=self._data.dtype)
            if g.shape != self.shape:
                raise RuntimeError(f"backward: gradient has shape {g.shape}, expected {self.shape}")
        run_backward(self, g, bool(retain_graph))

    # ---- in-place data updates (no graph) -------------------------------------------------------------
    def _check_inplace(self):
        if self.requires_grad and self._ctx is None and is_grad_enabled():
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")

    def zero_(self):
        self._check_inplace()
        self._data[...] = 0
        return self

    def fill_(self, value):
        self._check_inplace()
        self._data[...] = value
        return self

    def copy_(self, src):
        """Copy src's values into self; as torch, src may live on another device (the copy moves them)."""
        self._check_inplace()
        v = src._data if isinstance(src, Tensor) else src
        dst = _device_of(self._data)
        if dst.type == "cuda" or is_cuda_array(v):
            v = _to_device(v if is_cuda_array(v) else np.asarray(v), dst)
        self._data[...] = v
        return self

    def add_(self, other, alpha=1):
        self._check_inplace()
        o = _same_device_array(other, self._data, "add_")
        self._data += o * alpha if alpha != 1 else o
        return self

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def mul_(self, other):
        self._check_inplace()
        self._data *= _same_device_array(other, self._data, "mul_")
        return self

    def div_(self, other):
        self._check_inplace()
        self._data /= _same_device_array(other, self._data, "div_")
        return self

    # Random fills draw from layerforge's (host) generator on every device, so a seeded GPU model starts
    # from the same values as the CPU one; the values are then copied to the tensor's device.
    def uniform_(self, a=0.0, b=1.0):
        self._check_inplace()
        self._data[...] = _same_device_array(_rng.uniform(a, b, self.shape), self._data, "uniform_")
        return self

    def normal_(self, mean=0.0, std=1.0):
        self._check_inplace()
        self._data[...] = _same_device_array(_rng.normal(mean, std, self.shape), self._data, "normal_")
        return self

    # ---- arithmetic --------------------------------------------------------------------------------
    def __add__(self, o):
        return _Add.apply(self, _operand(o, self))

    def __radd__(self, o):
        return _Add.apply(_operand(o, self), self)

    def __sub__(self, o):
        return _Sub.apply(self, _operand(o, self))

    def __rsub__(self, o):
        return _Sub.apply(_operand(o, self), self)

    def __mul__(self, o):
        return _Mul.apply(self, _operand(o, self))

    def __rmul__(self, o):
        return _Mul.apply(_operand(o, self), self)

    def __truediv__(self, o):
        return _Div.apply(self, _operand(o, self, true_div=True))

    def __rtruediv__(self, o):
        return _Div.apply(_operand(o, self, true_div=True), self)

    def __neg__(self):
        return _Neg.apply(self)

    def __pos__(self):
        return self

    def __pow__(self, e):
        if isinstance(e, Tensor):
            return _PowT.apply(self, e)
        return _Pow.apply(self, e)

    def __rpow__(self, b):
        return _PowT.apply(_operand(b, self), self)

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(_operand(o, self), self)

    def __iadd__(self, o):
        if self.requires_grad:
            return self + o
        self._data += _same_device_array(o, self._data, "add_")
        return self

    def __isub__(self, o):
        if self.requires_grad:
            return self - o
        self._data -= _same_device_array(o, self._data, "sub_")
        return self

    def __imul__(self, o):
        if self.requires_grad:
            return self * o
        self._data *= _same_device_array(o, self._data, "mul_")
        return self

    def __itruediv__(self, o):
        if self.requires_grad:
            return self / o
        self._data /= _same_device_array(o, self._data, "div_")
        return self

    # comparisons: bool tensors, no graph; f names the numpy/cupy function
    def _cmp(self, o, f):
        a = self._data
        return Tensor._wrap(getattr(array_module(a), f)(a, _same_device_array(o, a, f)))

    def __eq__(self, o):
        return self._cmp(o, "equal")

    def __ne__(self, o):
        return self._cmp(o, "not_equal")

    def __lt__(self, o):
        return self._cmp(o, "less")

    def __le__(self, o):
        return self._cmp(o, "less_equal")

    def __gt__(self, o):
        return self._cmp(o, "greater")

    def __ge__(self, o):
        return self._cmp(o, "greater_equal")

    def __invert__(self):
        return Tensor._wrap(~self._data)

    def __and__(self, o):
        return self._cmp(o, "logical_and" if self._data.dtype == bool_ else "bitwise_and")

    def __or__(self, o):
        return self._cmp(o, "logical_or" if self._data.dtype == bool_ else "bitwise_or")

    # ---- elementwise math ---------------------------------------------------------------------------
    def exp(self):
        return _Exp.apply(self)

    def log(self):
        return _Log.apply(self)

    def sqrt(self):
        return _Pow.apply(self, 0.5)

    def abs(self):
        return _Abs.apply(self)

    def relu(self):
        return relu(self)

    def sigmoid(self):
        return sigmoid(self)

    def tanh(self):
        return tanh(self)

    def softmax(self, dim):
        return softmax(self, dim)

    def log_softmax(self, dim):
        from .nn.functional import log_softmax

        return log_softmax(self, dim)

    def clamp(self, min=None, max=None):  # noqa: A002
        return _Clamp.apply(self, min, max)

    clip = clamp

    # ---- reductions -----------------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, dtype=None):
        t = self.type(dtype) if dtype is not None else self
        if t._data.dtype == bool_:
            t = t.type(int64)
        return _Sum.apply(t, _axes(dim, self.ndim), keepdim)

    def mean(self, dim=None, keepdim=False):
        if self._data.dtype.kind != "f":
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be floating point, got {self.dtype}")
        return _Mean.apply(self, _axes(dim, self.ndim), keepdim)

    def var(self, dim=None, unbiased=True, keepdim=False, correction=None):
        c = (1 if unbiased else 0) if correction is None else correction
        ax = _axes(dim, self.ndim)
        n = self._data.size if ax is None else int(np.prod([self.shape[a] for a in ax]))
        d = self - self.mean(dim=dim, keepdim=True)
        return (d * d).sum(dim=dim, keepdim=keepdim) / builtins.max(n - c, 0)

    def std(self, dim=None, unbiased=True, keepdim=False):
        return self.var(dim, unbiased, keepdim) ** 0.5

    def max(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return maximum(self, dim)
        return _minmax(self, dim, keepdim, True)

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return minimum(self, dim)
        return _minmax(self, dim, keepdim, False)

    def argmax(self, dim=None, keepdim=False):
        return argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _argminmax(self, dim, keepdim, "argmin")

    # ---- shape ----------------------------------------------------------------------------------------
    def reshape(self, *shape):
        return _Reshape.apply(self, _shape_arg(shape))

    def view(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (tuple, list, numbers.Integral)):
            return self.type(shape[0])
        return _Reshape.apply(self, _shape_arg(shape))

    def view_as(self, other):
        return self.reshape(other.shape)

    def expand(self, *shape):
        shp = _shape_arg(shape)
        shp = tuple(s if n == -1 else n for n, s in zip(shp, (1,) * (len(shp) - self.ndim) + self.shape))
        return _Expand.apply(self, shp)

    def expand_as(self, other):
        return self.expand(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        nd = self.ndim
        p = list(range(nd))
        d0, d1 = dim0 % builtins.max(nd, 1), dim1 % builtins.max(nd, 1)
        p[d0], p[d1] = p[d1], p[d0]
        return _Permute.apply(self, tuple(p))

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self if self.ndim < 2 else self.transpose(0, 1)

    @property
    def T(self):
        return _Permute.apply(self, tuple(range(self.ndim - 1, -1, -1)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if sorted(d % self.ndim for d in dims) != list(range(self.ndim)):
            raise RuntimeError(f"permute: dims {dims} are not a permutation of {self.ndim} dims")
        return _Permute.apply(self, tuple(d % self.ndim for d in dims))

    def unsqueeze(self, dim):
        d = dim % (self.ndim + 1)
        return _Reshape.apply(self, self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        if dim is None:
            shp = tuple(s for s in self.shape if s != 1)
        else:
            d = dim % builtins.max(self.ndim, 1)
            shp = self.shape if self.ndim == 0 or self.shape[d] != 1 else self.shape[:d] + self.shape[d + 1:]
        return _Reshape.apply(self, shp)

    def __getitem__(self, idx):
        return _Index.apply(self, _index_arg(idx, self._data))

    def __setitem__(self, idx, value):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("in-place assignment into a Tensor that requires grad is not supported by layerforge")
        self._data[_index_arg(idx, self._data)] = _same_device_array(value, self._data, "index_put_")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


Tensor.__module__ = "layerforge"


def _index_arg(idx, data):
    """An index for data: Tensors as their arrays, lists as arrays. As torch, a GPU tensor takes host
    indices (copied to its device); a CPU tensor indexed by GPU indices raises RuntimeError."""
    gpu = type(data) is not np.ndarray
    if isinstance(idx, tuple):
        return tuple(_index_item(i, data, gpu) for i in idx)
    return _index_item(idx, data, gpu)


def _index_item(i, data, gpu):
    if isinstance(i, Tensor):
        i = i._data
    elif isinstance(i, list):
        i = np.asarray(i)
    if gpu:
        if isinstance(i, np.ndarray):
            return array_module(data).asarray(i)
    elif is_cuda_array(i):
        raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
    return i


def _scalar_array(xp, value, dtype):
    """A 0-d array holding a Python scalar, on numpy or the GPU (cupy.full: no host-to-device copy)."""
    return np.asarray(value, dtype=dtype) if xp is np else xp.full((), value, dtype=dtype)


def _operand(o, like: Tensor, true_div=False):
    """A Python scalar / array as a Tensor on like's device, of a dtype that follows torch's promotion for
    scalars."""
    if isinstance(o, Tensor):
        return o
    dt = like._data.dtype
    xp = array_module(like._data)
    if isinstance(o, (bool, numbers.Integral)) and not true_div:
        return Tensor._wrap(_scalar_array(xp, o, dt if dt != bool_ else int64))
    if isinstance(o, numbers.Number):
        return Tensor._wrap(_scalar_array(xp, o, dt if dt.kind == "f" else float32))
    a = o if is_cuda_array(o) else np.asarray(o)
    if a.dtype.kind == "f" and a.dtype != dt and dt.kind == "f":
        a = a.astype(np.result_type(a.dtype, dt))
    if xp is not np and not is_cuda_array(a):
        a = xp.asarray(a)
    return Tensor._wrap(a)


def _axes(dim, ndim):
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return tuple(sorted(d % builtins.max(ndim, 1) for d in dim))
    if ndim == 0:
        if dim not in (0, -1):
            raise IndexError(f"Dimension out of range (expected to be in range of [-1, 0], but got {dim})")
        return None
    if not -ndim <= dim < ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {dim})")
    return (dim % ndim,)


def _promote(a, b):
    da, db = a.dtype, b.dtype
    if da == db:
        return a, b
    if da.kind == "f" and db.kind != "f":  # torch: an int/bool operand takes the float one's dtype
        dt = da
    elif db.kind == "f" and da.kind != "f":
        dt = db
    else:
        dt = np.result_type(da, db)
    return a.astype(dt, copy=False), b.astype(dt, copy=False)


# ---- Functions -------------------------------------------------------------------------------------------
class _ToDevice(Function):
    """A copy to another device; the gradient is copied back (as torch's to())."""

    def forward(self, a, dev):
        self.src = _device_of(a)
        return _to_device(a, dev)

    def backward(self, g):
        return _to_device(g, self.src), None


class _Cast(Function):
    def forward(self, a, dt):
        self.src = a.dtype
        return a.astype(dt)

    def backward(self, g):
        return g.astype(self.src) if self.src.kind == "f" else None, None


class _Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


class _Add(Function):
    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        a, b = _promote(a, b)
        return a + b

    def backward(self, g):
        n = self.needs_input_grad
        return (unbroadcast(g, self.sa) if n[0] else None, unbroadcast(g, self.sb) if n[1] else None)


class _Sub(Function):
    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        a, b = _promote(a, b)
        return a - b

    def backward(self, g):
        n = self.needs_input_grad
        return (unbroadcast(g, self.sa) if n[0] else None, unbroadcast(-g, self.sb) if n[1] else None)


class _Mul(Function):
    def forward(self, a, b):
        a, b = _promote(a, b)
        n = self.needs_input_grad
        self.a = a if n[1] else None
        self.b = b if n[0] else None
        self.sa, self.sb = a.shape, b.shape
        return a * b

    def backward(self, g):
        n = self.needs_input_grad
        return (unbroadcast(g * self.b, self.sa) if n[0] else None,
                unbroadcast(g * self.a, self.sb) if n[1] else None)


class _Div(Function):
    def forward(self, a, b):
        if a.dtype.kind != "f" and b.dtype.kind != "f":
            a = a.astype(float32)
        a, b = _promote(a, b)
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        n = self.needs_input_grad
        ga = unbroadcast(g / self.b, self.a.shape) if n[0] else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), self.b.shape) if n[1] else None
        return ga, gb


class _Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class _Pow(Function):
    def forward(self, a, e):
        self.a, self.e = a, e
        if e == 2:
            return a * a
        if e == 0.5:
            return array_module(a).sqrt(a)
        return a ** a.dtype.type(e) if a.dtype.kind == "f" else a ** e

    def backward(self, g):
        a, e = self.a, self.e
        if e == 2:
            return g * (2 * a), None
        return g * (e * a ** a.dtype.type(e - 1)), None


class _PowT(Function):
    def forward(self, a, b):
        a, b = _promote(a, b)
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, g):
        n = self.needs_input_grad
        a, b = self.a, self.b
        ga = unbroadcast(g * b * a ** (b - 1), a.shape) if n[0] else None
        gb = None
        if n[1]:
            xp = array_module(a)
            with np.errstate(divide="ignore", invalid="ignore"):  # numpy's warnings; cupy has none
                la = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0)
            gb = unbroadcast(g * self.y * la, b.shape)
        return ga, gb


class _Exp(Function):
    def forward(self, a):
        self.y = array_module(a).exp(a)
        return self.y

    def backward(self, g):
        return g * self.y


class _Log(Function):
    def forward(self, a):
        self.a = a
        return array_module(a).log(a)

    def backward(self, g):
        return g / self.a


class _Abs(Function):
    def forward(self, a):
        self.a = a
        return array_module(a).abs(a)

    def backward(self, g):
        return g * array_module(g).sign(self.a)


class _Clamp(Function):
    def forward(self, a, lo, hi):
        self.a, self.lo, self.hi = a, lo, hi
        return array_module(a).clip(a, lo, hi)

    def backward(self, g):
        m = array_module(g).ones(self.a.shape, dtype=bool)
        if self.lo is not None:
            m &= self.a >= self.lo
        if self.hi is not None:
            m &= self.a <= self.hi
        return g * m, None, None


class _Maximum(Function):
    def forward(self, a, b, is_max):
        a, b = _promote(a, b)
        self.m = (a >= b) if is_max else (a <= b)
        self.sa, self.sb = a.shape, b.shape
        xp = array_module(a)
        return xp.maximum(a, b) if is_max else xp.minimum(a, b)

    def backward(self, g):
        n = self.needs_input_grad
        return (unbroadcast(g * self.m, self.sa) if n[0] else None,
                unbroadcast(g * ~self.m, self.sb) if n[1] else None, None)


class _Sum(Function):
    def forward(self, a, axes, keepdim):
        self.shape, self.axes, self.keep = a.shape, axes, keepdim
        return array_module(a).asarray(a.sum(axis=axes, keepdims=keepdim))

    def backward(self, g):
        xp = array_module(g)
        if not self.keep and self.axes is not None:
            g = xp.expand_dims(g, self.axes)
        return xp.broadcast_to(g, self.shape), None, None


class _Mean(Function):
    def forward(self, a, axes, keepdim):
        self.shape, self.axes, self.keep = a.shape, axes, keepdim
        self.n = a.size if axes is None else int(np.prod([a.shape[i] for i in axes]))
        return array_module(a).asarray(a.mean(axis=axes, keepdims=keepdim), dtype=a.dtype)

    def backward(self, g):
        xp = array_module(g)
        if not self.keep and self.axes is not None:
            g = xp.expand_dims(g, self.axes)
        return xp.broadcast_to(g / g.dtype.type(self.n) if self.n else g, self.shape), None, None


class _MaxAll(Function):
    def forward(self, a, is_max):
        if a.size == 0:
            raise RuntimeError("max(): Expected reduction dim to be specified for input.numel() == 0.")
        xp = array_module(a)
        y = a.max() if is_max else a.min()
        self.mask = a == y if not bool(xp.isnan(y)) else xp.isnan(a)  # one readback on a GPU
        return xp.asarray(y)

    def backward(self, g):
        m = self.mask
        return g * m / array_module(g).asarray(m.sum(), dtype=g.dtype), None  # evenly among ties, as torch


class _MaxDim(Function):
    def forward(self, a, dim, keepdim, idx):
        self.shape, self.dim, self.keep, self.idx = a.shape, dim, keepdim, idx
        xp = array_module(a)
        return xp.take_along_axis(a, xp.expand_dims(idx, dim), axis=dim).squeeze(dim) if not keepdim else \
            xp.take_along_axis(a, idx, axis=dim)

    def backward(self, g):
        xp = array_module(g)
        idx = self.idx if self.keep else xp.expand_dims(self.idx, self.dim)
        if not self.keep:
            g = xp.expand_dims(g, self.dim)
        out = xp.zeros(self.shape, dtype=g.dtype)
        xp.put_along_axis(out, idx, g, axis=self.dim)
        return out, None, None, None


_minmax_result = collections.namedtuple("minmax", ["values", "indices"])


def _minmax(t, dim, keepdim, is_max):
    if dim is None:
        return _MaxAll.apply(t, is_max)
    d = _axes(dim, t.ndim)
    a = t._data
    xp = array_module(a)
    if d is None:
        return _minmax_result(_MaxAll.apply(t, is_max), Tensor._wrap(_scalar_array(xp, 0, int64)))
    d = d[0]
    if a.dtype.kind == "f" and bool(xp.isnan(a).any()):  # NaN wins, as torch
        idx = xp.argmax(xp.isnan(a), axis=d)
        nanrow = xp.isnan(a).any(axis=d)
        idx2 = xp.argmax(a, axis=d) if is_max else xp.argmin(a, axis=d)
        idx = xp.where(nanrow, idx, idx2)
    else:
        idx = xp.argmax(a, axis=d) if is_max else xp.argmin(a, axis=d)
    idx = idx.astype(int64, copy=False)
    if keepdim:
        idx = xp.expand_dims(idx, d)
    values = _MaxDim.apply(t, d, keepdim, idx)
    return _minmax_result(values, Tensor._wrap(idx))


class _Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {a.size}") from None

    def backward(self, g):
        return g.reshape(self.shape), None


class _Expand(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        return unbroadcast(g, self.shape), None


class _Permute(Function):
    def forward(self, a, perm):
        self.inv = tuple(int(i) for i in np.argsort(perm))
        return a.transpose(perm)

    def backward(self, g):
        return g.transpose(self.inv), None


def _is_basic(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral)) for i in items)


class _Index(Function):
    def forward(self, a, idx):
        self.shape, self.dtype, self.idx = a.shape, a.dtype, idx
        try:
            return a[idx]
        except IndexError as e:
            raise IndexError(str(e)) from None

    def backward(self, g):
        xp = array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic(self.idx):
            out[self.idx] = g
        else:
            xp.add.at(out, self.idx, g)  # repeated indices add up (scatter-add; atomics on a GPU)
        return out, None


class _Cat(Function):
    def forward(self, *arrays, dim=0):
        self.sizes = [a.shape[dim] for a in arrays]
        self.dim = dim
        dt = np.result_type(*(a.dtype for a in arrays))
        return array_module(arrays[0]).concatenate([a.astype(dt, copy=False) for a in arrays], axis=dim)

    def backward(self, g):
        splits = [int(v) for v in np.cumsum(self.sizes)[:-1]]
        return tuple(array_module(g).split(g, splits, axis=self.dim))


class _Stack(Function):
    def forward(self, *arrays, dim=0):
        self.dim = dim
        self.n = len(arrays)
        return array_module(arrays[0]).stack(arrays, axis=dim)

    def backward(self, g):
        return tuple(array_module(g).take(g, i, axis=self.dim) for i in range(self.n))


class _MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return ops.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        n = self.needs_input_grad
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if b.ndim == 1:
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        if n[0]:
            ga = unbroadcast(ops.matmul(g2, b2.swapaxes(-1, -2)), a2.shape).reshape(a.shape)
        if n[1]:
            gb = unbroadcast(ops.matmul(a2.swapaxes(-1, -2), g2), b2.shape).reshape(b.shape)
        return ga, gb


class _Act(Function):
    """relu / sigmoid / tanh / gelu / leaky_relu on the elementwise C++ kernels."""

    def forward(self, a, name, alpha=0.01):
        self.name_, self.alpha = name, alpha
        y = ops.elementwise.activation(name, a, alpha)
        self.saved = y if name in ("sigmoid", "tanh") else a
        return y

    def backward(self, g):
        return ops.elementwise.activation_backward(self.name_, g, self.saved, self.alpha), None, None


class _Softmax(Function):
    def forward(self, a, dim, log):
        self.dim, self.log = dim, log
        self.y = ops.elementwise._softmax(a, dim, log, "log_softmax" if log else "softmax")
        return self.y

    def backward(self, g):
        return ops.elementwise._softmax_bwd(g, self.y, self.dim, self.log, "softmax_backward"), None, None


# ---- top-level functions ---------------------------------------------------------------------------------
def _t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new Tensor from data (copied). numpy float64 arrays stay float64; Python floats become float32,
    Python ints int64, as torch. device=None keeps a GPU array's or Tensor's device, else the CPU."""
    dev = _check_device(device)
    if isinstance(data, Tensor):
        data = data._data
    if is_cuda_array(data):
        a = cupy_module().array(data, dtype=_as_dtype(dtype), copy=True)
        if dtype is None and a.dtype.kind == "f" and a.dtype not in (float32, float64):
            a = a.astype(float32)
        if dev is not None:
            a = _to_device(a, dev)
        return Tensor(a, requires_grad=requires_grad)
    a = np.array(data, dtype=_as_dtype(dtype), copy=True)
    if dtype is None:
        if a.dtype.kind == "f" and not isinstance(data, np.ndarray) and not isinstance(data, np.generic):
            a = a.astype(float32)
        elif a.dtype.kind == "f" and a.dtype not in (float32, float64):
            a = a.astype(float32)
        elif a.dtype.kind in "iu" and a.dtype != int64 and not isinstance(data, np.ndarray):
            a = a.astype(int64)
    if dev is not None and dev.type == "cuda":
        a = _to_device(a, dev)
    return Tensor(a, requires_grad=requires_grad)


def from_numpy(a: np.ndarray) -> Tensor:
    """A Tensor sharing memory with the numpy array (as torch.from_numpy)."""
    return Tensor._wrap(a)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """data as a Tensor without a copy where possible (numpy arrays, GPU arrays, Tensors), moved to
    `device` when given."""
    dev = _check_device(device)
    if isinstance(data, Tensor):
        t = data.type(dtype) if dtype is not None else data
        return t.to(dev) if dev is not None else t
    a = _as_array(data, _as_dtype(dtype))
    return Tensor._wrap(_to_device(a, dev) if dev is not None else a)


def _as_array(data, dtype):
    """data as an array without a copy where possible: GPU arrays (anything with __cuda_array_interface__)
    as cupy arrays on their device, everything else through numpy."""
    if is_cuda_array(data):
        return cupy_module().asarray(data, dtype=dtype)
    return np.asarray(data, dtype=dtype)


def _factory(make, shape, dtype, requires_grad, device, host_only=False):
    """A new Tensor from make(xp, shape, dtype): built by cupy on the GPU for device='cuda...', or by numpy
    (host_only: random draws from layerforge's generator, the same values on every device) and copied."""
    dev = _check_device(device)
    shp, dt = _shape_arg(shape), _as_dtype(dtype) or float32
    if dev is not None and dev.type == "cuda" and not host_only:
        cp = cupy_module()
        with cp.cuda.Device(_resolved(dev).index):
            a = make(cp, shp, dt)
    else:
        a = make(np, shp, dt)
        if dev is not None and dev.type == "cuda":
            a = _to_device(a, dev)
    t = Tensor._wrap(a)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _factory(lambda xp, s, d: xp.zeros(s, d), shape, dtype, requires_grad, device)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _factory(lambda xp, s, d: xp.ones(s, d), shape, dtype, requires_grad, device)


def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _factory(lambda xp, s, d: xp.zeros(s, d), shape, dtype, requires_grad, device)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _factory(lambda xp, s, d: xp.full(s, fill_value, d), (shape,), dtype, requires_grad, device)


def randn(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    g = generator or _rng
    return _factory(lambda xp, s, d: g.standard_normal(s).astype(d), shape, dtype, requires_grad, device, True)


def rand(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    g = generator or _rng
    return _factory(lambda xp, s, d: g.random(s).astype(d), shape, dtype, requires_grad, device, True)


def randint(low, high=None, size=(), dtype=None, device=None, generator=None) -> Tensor:
    if high is None:
        low, high = 0, low
    g = generator or _rng
    return _factory(lambda xp, s, d: g.integers(low, high, size=s).astype(d), (tuple(size),), dtype or int64,
                    False, device, True)


def randperm(n, dtype=None, device=None, generator=None) -> Tensor:
    g = generator or _rng
    return _factory(lambda xp, s, d: g.permutation(int(n)).astype(d), (), dtype or int64, False, device, True)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    dt = _as_dtype(dtype)
    if dt is None:
        dt = int64 if all(isinstance(v, numbers.Integral) for v in (start, end, step)) else float32
    return _factory(lambda xp, s, d: xp.arange(start, end, step, dtype=d), (), dt, requires_grad, device)


def _like_args(t, dtype, device):
    """(shape, dtype, device) of a *_like factory: t's unless given (t: a Tensor or an array)."""
    a = t._data if isinstance(t, Tensor) else t
    return np.shape(a) if not is_cuda_array(a) else a.shape, dtype or _dtype_of(t), device or _device_of(a)


def _like_factory(factory, name: str):
    """name(t, dtype=None, device=None, requires_grad=False): factory(*shape, ...) with t's shape, and t's dtype
    and device unless given, as torch.<name>."""
    def like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
        shape, dt, dev = _like_args(t, dtype, device)
        return factory(*shape, dtype=dt, device=dev, requires_grad=requires_grad)

    like.__name__ = like.__qualname__ = name
    like.__doc__ = f"A {factory.__name__} tensor shaped like t (t's dtype and device unless given), as torch.{name}."
    return like


zeros_like = _like_factory(zeros, "zeros_like")
ones_like = _like_factory(ones, "ones_like")
randn_like = _like_factory(randn, "randn_like")
rand_like = _like_factory(rand, "rand_like")


def _dtype_of(t):
    if isinstance(t, Tensor):
        return t._data.dtype
    return t.dtype if is_cuda_array(t) else np.asarray(t).dtype


def matmul(a, b) -> Tensor:
    a, b = _t(a), _t(b)
    if a.dtype != b.dtype:
        dt = np.result_type(a.dtype, b.dtype)
        a, b = a.type(dt), b.type(dt)
    return _MatMul.apply(a, b)


def relu(x) -> Tensor:
    return _Act.apply(_t(x), "relu")


def sigmoid(x) -> Tensor:
    return _Act.apply(_t(x), "sigmoid")


def tanh(x) -> Tensor:
    return _Act.apply(_t(x), "tanh")


def softmax(x, dim=-1) -> Tensor:
    return _Softmax.apply(_t(x), dim, False)


def exp(x) -> Tensor:
    return _t(x).exp()


def log(x) -> Tensor:
    return _t(x).log()


def sqrt(x) -> Tensor:
    return _t(x).sqrt()


def abs(x) -> Tensor:  # noqa: A001
    return _t(x).abs()


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002
    return _t(x).clamp(min, max)


def maximum(a, b) -> Tensor:
    return _Maximum.apply(_t(a), _t(b), True)


def minimum(a, b) -> Tensor:
    return _Maximum.apply(_t(a), _t(b), False)


def sum(x, dim=None, keepdim=False) -> Tensor:  # noqa: A001
    return _t(x).sum(dim, keepdim)


def mean(x, dim=None, keepdim=False) -> Tensor:
    return _t(x).mean(dim, keepdim)


def max(x, dim=None, keepdim=False):  # noqa: A001
    return _t(x).max(dim, keepdim)


def min(x, dim=None, keepdim=False):  # noqa: A001
    return _t(x).min(dim, keepdim)


def _argminmax(x, dim, keepdim, name):
    a = _t(x)._data
    xp = array_module(a)
    f = getattr(xp, name)
    if dim is None:
        return Tensor._wrap(xp.asarray(f(a), dtype=int64))
    return Tensor._wrap(f(a, axis=dim, keepdims=keepdim).astype(int64, copy=False))


def argmax(x, dim=None, keepdim=False) -> Tensor:
    return _argminmax(x, dim, keepdim, "argmax")


def flatten(x, start_dim=0, end_dim=-1) -> Tensor:
    x = _t(x)
    nd = x.ndim
    if nd == 0:
        return x.reshape(1)
    s, e = start_dim % nd, end_dim % nd
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shp = x.shape
    n = 1
    for v in shp[s:e + 1]:
        n *= v
    return x.reshape(shp[:s] + (n,) + shp[e + 1:])


def reshape(x, shape) -> Tensor:
    return _t(x).reshape(shape)


def transpose(x, dim0, dim1) -> Tensor:
    return _t(x).transpose(dim0, dim1)


def permute(x, dims) -> Tensor:
    return _t(x).permute(dims)


def unsqueeze(x, dim) -> Tensor:
    return _t(x).unsqueeze(dim)


def squeeze(x, dim=None) -> Tensor:
    return _t(x).squeeze(dim)


def cat(tensors, dim=0) -> Tensor:
    ts = [_t(t) for t in tensors]
    if not ts:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    nd = ts[0].ndim
    if nd == 0:
        raise RuntimeError("zero-dimensional tensor cannot be concatenated")
    d = dim % nd
    for t in ts[1:]:
        if t.ndim != nd or t.shape[:d] + t.shape[d + 1:] != ts[0].shape[:d] + ts[0].shape[d + 1:]:
            raise RuntimeError(f"cat(): sizes of tensors must match except in dimension {dim}: "
                               f"{tuple(ts[0].shape)} vs {tuple(t.shape)}")
    return _Cat.apply(*ts, dim=d)


concatenate = cat


def stack(tensors, dim=0) -> Tensor:
    ts = [_t(t) for t in tensors]
    if not ts:
        raise RuntimeError("stack(): expected a non-empty list of Tensors")
    for t in ts[1:]:
        if t.shape != ts[0].shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {tuple(ts[0].shape)} "
                               f"and {tuple(t.shape)}")
    return _Stack.apply(*ts, dim=dim % (ts[0].ndim + 1))


class _Where(Function):
    def forward(self, c, a, b):
        a, b = _promote(a, b)
        self.c, self.sa, self.sb = c, a.shape, b.shape
        return array_module(a).where(c, a, b)

    def backward(self, g):
        n = self.needs_input_grad
        xp = array_module(g)
        z = xp.zeros((), g.dtype)
        return (None, unbroadcast(xp.where(self.c, g, z), self.sa) if n[1] else None,
                unbroadcast(xp.where(self.c, z, g), self.sb) if n[2] else None)


def where(cond, a, b) -> Tensor:
    a = _t(a) if not isinstance(a, numbers.Number) else _operand(a, _t(b))
    b = _t(b) if not isinstance(b, numbers.Number) else _operand(b, a)
    c = _same_device_array(cond, a._data, "where")  # a cond Tensor on another device raises
    return _Where.apply(array_module(a._data).asarray(c).astype(bool), a, b)


def is_tensor(x) -> bool:
    return isinstance(x, Tensor)


def numel(x) -> int:
    return _t(x).numel()
