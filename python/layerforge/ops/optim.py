"""Fused optimizer steps (PyTorch's update rules), in place.

``sgd_step`` / ``adam_step`` / ``rmsprop_step``: one C++ pass over one numpy parameter.
``*_step_multi``: many parameters at once; GPU arrays (cupy) are updated by ONE fused multi-tensor kernel
launch per dtype on cupy's current stream, numpy arrays by one single-tensor CPU call each.

``param`` and the state arrays are updated in place: they must be C-contiguous, writeable arrays of the
param's dtype (no silent conversion, which would lose the update). ``grad`` is read only (copied here
when it is not contiguous or of another dtype).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import array_module, cuda_kernels, current_stream_handle, device_of, is_cuda_array


def _grad(grad, param):
    if grad.dtype != param.dtype or not grad.flags.c_contiguous:
        grad = array_module(grad).ascontiguousarray(grad, dtype=param.dtype)
    if grad.shape != param.shape:
        raise ValueError(f"optimizer step: grad has shape {grad.shape}, param has shape {param.shape}")
    return grad


def sgd_step(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False, first_step=False):
    """torch.optim.SGD's update of one parameter. With momentum, ``momentum_buffer`` is required and
    ``first_step`` initialises it to the (decayed) gradient, as torch does on a parameter's first step."""
    if is_cuda_array(param):
        return sgd_step_multi([param], [grad], [momentum_buffer], lr=lr, momentum=momentum, dampening=dampening,
                              weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, first_step=first_step)
    _C.sgd_step(param, _grad(grad, param), momentum_buffer if momentum else None, float(lr), float(momentum),
                float(dampening), float(weight_decay), bool(nesterov), bool(maximize), bool(first_step))


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False):
    """torch.optim.Adam's (``decoupled=True``: AdamW's) update; ``step`` counts from 1."""
    if is_cuda_array(param):
        return adam_step_multi([param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq], step=step, lr=lr,
                               beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                               maximize=maximize, decoupled=decoupled)
    _C.adam_step(param, _grad(grad, param), exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None,
                 int(step), float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
                 bool(amsgrad), bool(maximize), bool(decoupled))


def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=1e-2, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    """torch.optim.RMSprop's update."""
    if is_cuda_array(param):
        return rmsprop_step_multi([param], [grad], [square_avg], [grad_avg], [momentum_buffer], lr=lr, alpha=alpha,
                                  eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                                  maximize=maximize)
    _C.rmsprop_step(param, _grad(grad, param), square_avg, grad_avg if centered else None,
                    momentum_buffer if momentum > 0 else None, float(lr), float(alpha), float(eps),
                    float(weight_decay), float(momentum), bool(centered), bool(maximize))


# ---- many parameters per call ---------------------------------------------------------------------------
_BOOL_HYPER = {"nesterov", "maximize", "first_step", "amsgrad", "centered"}


def _per_param(value, n, op, name):
    """A hyperparameter as one value per parameter (a scalar is repeated)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{op}: {name} has {len(value)} entries for {n} parameters")
        vals = list(value)
    else:
        vals = [value] * n
    conv = bool if name in _BOOL_HYPER else (int if name == "step" else float)
    return [conv(v) for v in vals]


def _device_of_lists(op, arrays):
    """'cuda' when the arrays (dict name -> list, None entries skipped) are GPU arrays, 'cpu' when none
    is; TypeError naming the first GPU and the first CPU entry when they mix."""
    gpu = cpu = None
    for name, lst in arrays.items():
        for i, a in enumerate(lst):
            if a is None:
                continue
            if is_cuda_array(a):
                gpu = gpu or (f"{name}[{i}]", a)
            else:
                cpu = cpu or (f"{name}[{i}]", a)
    if gpu and cpu:
        device_of(op, **{gpu[0]: gpu[1], cpu[0]: cpu[1]})  # raises TypeError naming both
    return "cuda" if gpu else "cpu"


def _multi_step(op, single, gpu_name, arrays, hyper, fixed):
    """arrays: {name: list} in the bindings' order (params, grads, states; None = absent state);
    hyper: {name: scalar or per-parameter list} in the bindings' order, named as ``single``'s keywords;
    fixed: keywords shared by every parameter."""
    n = len(arrays["params"])
    for name, lst in arrays.items():
        if len(lst) != n:
            raise ValueError(f"{op}: {name} has {len(lst)} entries for {n} parameters")
    hyper = {k: _per_param(v, n, op, k) for k, v in hyper.items()}
    if _device_of_lists(op, arrays) == "cpu":
        names = list(arrays)
        for i in range(n):
            single(*(arrays[k][i] for k in names), **{k: v[i] for k, v in hyper.items()}, **fixed)
        return
    kernels = cuda_kernels(op)
    stream = current_stream_handle()
    params = arrays["params"]
    arrays = dict(arrays, grads=[_grad(g, p) for g, p in zip(arrays["grads"], params)])
    by_dtype = {}
    for i, p in enumerate(params):
        by_dtype.setdefault(str(p.dtype), []).append(i)
    fn = getattr(kernels, gpu_name)
    for idx in by_dtype.values():  # one launch per dtype (normally one: all float32)
        fn(*([lst[i] for i in idx] for lst in arrays.values()), *([v[i] for i in idx] for v in hyper.values()),
           *fixed.values(), stream)


def sgd_step_multi(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                   nesterov=False, maximize=False, first_step=False):
    """sgd_step over lists of parameters (hyperparameters: scalars or one per parameter). GPU arrays: one
    fused launch; numpy arrays: one CPU call each."""
    bufs = list(momentum_buffers) if momentum_buffers is not None else [None] * len(params)
    _multi_step("sgd_step", sgd_step, "sgd_step_multi",
                {"params": list(params), "grads": list(grads), "momentum_buffers": bufs},
                {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                 "nesterov": nesterov, "maximize": maximize, "first_step": first_step}, {})


def adam_step_multi(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3, beta1=0.9,
                    beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False):
    """adam_step over lists of parameters (``step``: the step count of each parameter, counting from 1)."""
    vmax = list(max_exp_avg_sqs) if max_exp_avg_sqs is not None else [None] * len(params)
    _multi_step("adamw_step" if decoupled else "adam_step", adam_step, "adam_step_multi",
                {"params": list(params), "grads": list(grads), "exp_avgs": list(exp_avgs),
                 "exp_avg_sqs": list(exp_avg_sqs), "max_exp_avg_sqs": vmax},
                {"step": step, "lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay,
                 "amsgrad": amsgrad, "maximize": maximize}, {"decoupled": bool(decoupled)})


def rmsprop_step_multi(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=1e-2, alpha=0.99,
                       eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    """rmsprop_step over lists of parameters."""
    n = len(params)
    _multi_step("rmsprop_step", rmsprop_step, "rmsprop_step_multi",
                {"params": list(params), "grads": list(grads), "square_avgs": list(square_avgs),
                 "grad_avgs": list(grad_avgs) if grad_avgs is not None else [None] * n,
                 "momentum_buffers": list(momentum_buffers) if momentum_buffers is not None else [None] * n},
                {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum,
                 "centered": centered, "maximize": maximize}, {})
