"""Optimizer base and SGD, Adam, AdamW, RMSprop with torch.optim's param_groups, defaults, update rules
and state_dict layout. Param, grad and state are read once and written once, in place: on the CPU one
fused C++ call per parameter (``layerforge.ops.optim.*_step``); parameters on a GPU are all updated by ONE
fused multi-tensor kernel launch per step (``*_step_multi``), whatever their param groups. State arrays
live on their parameter's device."""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np

from .. import ops
from ..autograd import no_grad
from ..ops._common import array_module, is_cuda_array
from ..tensor import Tensor, _as_array, _device_of, _to_device


class _GpuBatch:
    """The GPU parameters of one step, gathered for one multi-tensor call: per-parameter array lists
    (param, grad, states) and per-parameter hyperparameter lists."""

    def __init__(self):
        self.arrays = None
        self.hyper = {}

    def add(self, arrays, **hyper):
        if self.arrays is None:
            self.arrays = [[] for _ in arrays]
        for lst, a in zip(self.arrays, arrays):
            lst.append(a)
        for k, v in hyper.items():
            self.hyper.setdefault(k, []).append(v)

    def run(self, step_multi, **fixed):
        if self.arrays:
            step_multi(*self.arrays, **self.hyper, **fixed)


def _state_array(v, like):
    """A loaded state value as a contiguous copy of like's dtype, on like's device."""
    if isinstance(v, Tensor):
        v = v.detach()._data
    elif hasattr(v, "numpy") and not isinstance(v, np.ndarray) and not is_cuda_array(v):
        v = v.detach().numpy() if hasattr(v, "detach") else v.numpy()  # a CPU torch tensor
    a = _to_device(_as_array(v, None), _device_of(like))
    return array_module(a).array(a, dtype=like.dtype, copy=True, order="C")


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got a Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        group = dict(group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {k}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if id(p) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._data[...] = 0

    def state_dict(self):
        """{'state': {index: {name: array or number}}, 'param_groups': [{..., 'params': [indices]}]}, params
        numbered in group order, as torch."""
        index, groups = {}, []
        for g in self.param_groups:
            gd = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            gd["params"] = ids
            groups.append(gd)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if id(p) in self.state and self.state[id(p)]:
                    state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) or is_cuda_array(v) else v)
                                           for k, v in self.state[id(p)].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = [p for g in self.param_groups for p in g["params"]]
        for g, sg in zip(self.param_groups, groups):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
        by_index = {}
        for g, sg in zip(self.param_groups, groups):
            for p, i in zip(g["params"], sg["params"]):
                by_index[i] = p
            for k, v in sg.items():
                if k != "params":
                    g[k] = copy.deepcopy(v)
        self.state = defaultdict(dict)
        for i, st in state_dict["state"].items():
            p = by_index[int(i)]
            new = {}
            for k, v in st.items():
                if k == "step":
                    new[k] = int(v.item()) if hasattr(v, "item") else int(v)
                elif hasattr(v, "shape") and len(v.shape) > 0:
                    new[k] = _state_array(v, p._data)
                else:
                    new[k] = v
            self.state[id(p)] = new
        _ = params

    def _params_with_grad(self, group):
        for p in group["params"]:
            if p.grad is not None:
                a = p._data
                if type(a) is np.ndarray:
                    if not a.flags.c_contiguous or not a.flags.writeable:
                        p._data = np.ascontiguousarray(a).copy()
                elif not a.flags.c_contiguous:
                    p._data = array_module(a).ascontiguousarray(a)
                if type(p.grad._data) is not type(p._data) and _device_of(p.grad._data) != _device_of(p._data):
                    raise RuntimeError(f"{type(self).__name__}.step: a parameter on {_device_of(p._data)} has its "
                                       f"grad on {_device_of(p.grad._data)}; they must share a device")
                yield p

    def __repr__(self):
        s = type(self).__name__ + " ("
        for i, g in enumerate(self.param_groups):
            s += f"\nParameter Group {i}"
            for k in sorted(g):
                if k != "params":
                    s += f"\n    {k}: {g[k]}"
        return s + "\n)"


def _closure(closure):
    if closure is None:
        return None
    from ..autograd import enable_grad

    with enable_grad():
        return closure()


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def step(self, closure=None):
        loss = _closure(closure)
        with no_grad():
            gpu = _GpuBatch()
            for g in self.param_groups:
                mom = g["momentum"]
                for p in self._params_with_grad(g):
                    st = self.state[id(p)]
                    buf, first = None, False
                    if mom != 0:
                        buf = st.get("momentum_buffer")
                        if buf is None:
                            buf = array_module(p._data).empty_like(p._data)
                            st["momentum_buffer"] = buf
                            first = True
                    hyper = dict(lr=g["lr"], momentum=mom, dampening=g["dampening"], weight_decay=g["weight_decay"],
                                 nesterov=g["nesterov"], maximize=g["maximize"], first_step=first)
                    if type(p._data) is np.ndarray:
                        ops.optim.sgd_step(p._data, p.grad._data, buf, **hyper)
                    else:
                        gpu.add((p._data, p.grad._data, buf), **hyper)
            gpu.run(ops.optim.sgd_step_multi)
        return loss


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def step(self, closure=None):
        loss = _closure(closure)
        with no_grad():
            gpu = _GpuBatch()
            for g in self.param_groups:
                b1, b2 = g["betas"]
                for p in self._params_with_grad(g):
                    st = self.state[id(p)]
                    if not st:
                        xp = array_module(p._data)
                        st["step"] = 0
                        st["exp_avg"] = xp.zeros_like(p._data)
                        st["exp_avg_sq"] = xp.zeros_like(p._data)
                        if g["amsgrad"]:
                            st["max_exp_avg_sq"] = xp.zeros_like(p._data)
                    st["step"] += 1
                    arrays = (p._data, p.grad._data, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"))
                    hyper = dict(step=st["step"], lr=g["lr"], beta1=b1, beta2=b2, eps=g["eps"],
                                 weight_decay=g["weight_decay"], amsgrad=g["amsgrad"], maximize=g["maximize"])
                    if type(p._data) is np.ndarray:
                        ops.optim.adam_step(*arrays, **hyper, decoupled=self._decoupled)
                    else:
                        gpu.add(arrays, **hyper)
            gpu.run(ops.optim.adam_step_multi, decoupled=self._decoupled)
        return loss


class AdamW(Adam):
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if alpha < 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def step(self, closure=None):
        loss = _closure(closure)
        with no_grad():
            gpu = _GpuBatch()
            for g in self.param_groups:
                for p in self._params_with_grad(g):
                    st = self.state[id(p)]
                    if not st:
                        xp = array_module(p._data)
                        st["step"] = 0
                        st["square_avg"] = xp.zeros_like(p._data)
                        if g["momentum"] > 0:
                            st["momentum_buffer"] = xp.zeros_like(p._data)
                        if g["centered"]:
                            st["grad_avg"] = xp.zeros_like(p._data)
                    st["step"] += 1
                    arrays = (p._data, p.grad._data, st["square_avg"], st.get("grad_avg"), st.get("momentum_buffer"))
                    hyper = dict(lr=g["lr"], alpha=g["alpha"], eps=g["eps"], weight_decay=g["weight_decay"],
                                 momentum=g["momentum"], centered=g["centered"], maximize=g["maximize"])
                    if type(p._data) is np.ndarray:
                        ops.optim.rmsprop_step(*arrays, **hyper)
                    else:
                        gpu.add(arrays, **hyper)
            gpu.run(ops.optim.rmsprop_step_multi)
        return loss
