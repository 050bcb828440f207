"""Reverse-mode autograd: a tape of Function nodes, each calling a forward and a backward kernel.

A Tensor produced by an op while grad mode is on and some input requires grad holds its node
(``tensor._ctx``). ``backward`` walks the nodes reachable from the root in reverse topological order,
calls each node's ``backward`` once with the summed gradient of its output, and accumulates the leaves'
gradients into ``.grad`` (``+=`` across calls, as PyTorch). Each node drops what it saved after its
backward unless ``retain_graph=True``; a second backward through it raises RuntimeError, as torch.
Nothing here knows the array library: nodes hold arrays (numpy or cupy) and call ``ops``; the few array
calls made here go through ``array_module``. Tensor operands of one op must share a device (RuntimeError
naming both otherwise, as torch).
"""
from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from .ops._common import array_module

_state = threading.local()
_ndarray = np.ndarray


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


def _set(mode: bool) -> bool:
    prev = is_grad_enabled()
    _state.enabled = bool(mode)
    return prev


class _GradMode(contextlib.ContextDecorator):
    mode = True

    def __enter__(self):
        self._prev = _set(self.mode)
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False


class no_grad(_GradMode):
    """Context manager / decorator: ops record no graph inside (as torch.no_grad)."""
    mode = False


class enable_grad(_GradMode):
    mode = True


class set_grad_enabled(_GradMode):
    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self._prev = _set(self.mode)  # torch applies it at construction too

    def __enter__(self):
        return self


class Function:
    """A node of the graph. Subclasses implement ``forward(self, *args)`` on arrays (Tensors among the
    arguments arrive as their arrays, other arguments as they are) returning one array, and
    ``backward(self, grad)`` returning one gradient (or None) per positional argument of forward.
    ``self.needs_input_grad`` says which inputs need one. State for the backward goes on ``self``;
    ``release`` (called after backward unless retain_graph) drops it.

    Multi-output nodes: a ``forward`` that returns a tuple of arrays makes ``apply`` return a tuple of
    Tensors (output i knows its index, ``Tensor._out_index``), and ``backward(self, *grads)`` then receives
    one gradient per output — None for an output that no gradient reached (e.g. an LSTM's c_T when only
    y is used) — and runs once, after all of them are summed."""

    __slots__ = ("inputs", "needs_input_grad", "freed", "n_outputs", "__dict__")

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor

        fn = cls()
        arrays = [a._data if isinstance(a, Tensor) else a for a in args]
        for a in args:  # the CPU path costs one type check per Tensor operand
            if isinstance(a, Tensor) and a._data.__class__ is not _ndarray:
                _check_same_device(cls, args)
                break
        need = is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
        if need:
            fn.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        else:
            fn.needs_input_grad = (False,) * len(args)
        out = fn.forward(*arrays, **kwargs)
        multi = isinstance(out, tuple)
        if not need:
            return tuple(Tensor._wrap(o) for o in out) if multi else Tensor._wrap(out)
        fn.inputs = tuple(a if isinstance(a, Tensor) and a.requires_grad else None for a in args)
        fn.freed = False
        # n_outputs is a slot, not in __dict__, so it survives release() (the second-backward check needs it)
        fn.n_outputs = len(out) if multi else 1
        if multi:
            return tuple(Tensor._wrap(o, fn, i) for i, o in enumerate(out))
        return Tensor._wrap(out, fn)

    def forward(self, *args):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - interface
        raise NotImplementedError

    def release(self):
        self.__dict__.clear()
        self.freed = True

    @property
    def name(self) -> str:
        return type(self).__name__


def _check_same_device(cls, args):
    """RuntimeError naming two devices when the Tensor operands of an op live on different devices."""
    from .tensor import Tensor, _device_mismatch, _device_of

    devices = []
    for a in args:
        if isinstance(a, Tensor):
            d = _device_of(a._data)
            if d not in devices:
                devices.append(d)
    if len(devices) > 1:
        raise _device_mismatch(cls.__name__.lstrip("_"), devices[0], devices[1])


def _topo(root_fn):
    order, seen = [], set()
    stack = [(root_fn, False)]
    while stack:
        fn, done = stack.pop()
        if done:
            order.append(fn)
            continue
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        stack.append((fn, True))
        for t in fn.inputs:
            if t is not None and t._ctx is not None and id(t._ctx) not in seen:
                stack.append((t._ctx, False))
    return order  # inputs before outputs


def _accumulate_leaf(t, g):
    from .tensor import Tensor

    xp = array_module(g)
    if g.shape != t.shape:
        g = xp.broadcast_to(g, t.shape) if g.size == 1 or g.ndim <= t.ndim else g.reshape(t.shape)
    if t.grad is None:
        t.grad = Tensor._wrap(xp.array(g, dtype=t._data.dtype, order="C", copy=True))
    else:
        t.grad._data += g


def _add_output_grad(grads, t, g):
    """Sum g into the pending gradient of the node that produced t: one array per node, or, for a
    multi-output node, a list with one entry (None until a gradient arrives) per output."""
    fn = t._ctx
    k = id(fn)
    if fn.n_outputs == 1:
        prev = grads.get(k)
        grads[k] = g if prev is None else prev + g
        return
    per_output = grads.get(k)
    if per_output is None:
        per_output = grads[k] = [None] * fn.n_outputs
    i = t._out_index
    per_output[i] = g if per_output[i] is None else per_output[i] + g


def run_backward(root, grad, retain_graph: bool = False):
    fn0 = root._ctx
    if fn0 is None:
        if root.requires_grad:
            _accumulate_leaf(root, grad)
        return
    order = _topo(fn0)
    grads = {}
    _add_output_grad(grads, root, grad)
    with no_grad():
        for fn in reversed(order):
            g = grads.pop(id(fn), None)
            if g is None:
                continue
            if fn.freed:
                raise RuntimeError(
                    "Trying to backward through the graph a second time (or directly access saved tensors after "
                    "they have already been freed). Saved intermediate values of the graph are freed when you "
                    "call .backward(). Specify retain_graph=True if you need to backward through the graph a "
                    f"second time (node {fn.name})."
                )
            in_grads = fn.backward(*g) if fn.n_outputs > 1 else fn.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for t, ig in zip(fn.inputs, in_grads):
                if t is None or ig is None:
                    continue
                if ig.dtype != t._data.dtype:  # e.g. float32 * float64: each input's gradient in its own dtype (torch)
                    ig = ig.astype(t._data.dtype)
                if t._ctx is None:
                    _accumulate_leaf(t, ig)
                else:
                    _add_output_grad(grads, t, ig)
                    if t._retains_grad:
                        _accumulate_leaf(t, ig)
            if not retain_graph:
                fn.release()


def unbroadcast(g, shape):
    """Sum g over the dims broadcasting added or stretched, so it has ``shape``."""
    if g.shape == tuple(shape):
        return g
    nd = g.ndim - len(shape)
    if nd > 0:
        g = g.sum(axis=tuple(range(nd)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Compare the analytic gradients of ``fn(*inputs)`` with central finite differences in float64.

    ``inputs``: Tensors (those with requires_grad are checked; they should be float64) and other values
    passed through. The output may have any shape: it is contracted with a fixed random cotangent, so
    every output element is checked. Raises AssertionError naming the input and the worst element.
    """
    from .tensor import Tensor

    rng = np.random.default_rng(seed)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; use float64")
    out = fn(*inputs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    cot = rng.standard_normal(out.shape)
    for i in checked:
        inputs[i].grad = None
    out.backward(Tensor._wrap(cot.astype(out.dtype)))
    analytic = [np.zeros(inputs[i].shape) if inputs[i].grad is None else np.array(inputs[i].grad._data, np.float64)
                for i in checked]

    def f():
        with no_grad():
            o = fn(*inputs)
            if isinstance(o, (tuple, list)):
                o = o[0]
            return float(np.sum(np.asarray(o._data, np.float64) * cot))

    for i, ana in zip(checked, analytic):
        a = inputs[i]._data
        num = np.zeros(a.shape)
        flat = a.reshape(-1)  # a view: inputs are perturbed in place
        if not np.shares_memory(flat, a):
            raise ValueError("gradcheck: inputs must be contiguous")
        nf = num.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            fp = f()
            flat[k] = old - eps
            fm = f()
            flat[k] = old
            nf[k] = (fp - fm) / (2 * eps)
        err = np.abs(ana - num)
        tol = atol + rtol * np.abs(num)
        if not np.all(err <= tol):
            k = int(np.argmax(err - tol))
            raise AssertionError(
                f"gradcheck: input {i} (shape {a.shape}): analytic {ana.reshape(-1)[k]!r} vs numeric "
                f"{num.reshape(-1)[k]!r} at flat index {k} (max abs err {err.max():.3g})"
            )
    return True
