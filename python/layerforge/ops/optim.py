"""Fused optimizer steps (PyTorch's update rules), one C++ pass per parameter, in place.

``param`` and the state arrays are updated in place: they must be C-contiguous, writeable numpy arrays of
the param's dtype (no silent conversion, which would lose the update). ``grad`` is read only (copied
here when it is not contiguous or of another dtype).
"""
from __future__ import annotations

import numpy as np

from .. import _C


def _grad(grad, param):
    if grad.dtype != param.dtype or not grad.flags.c_contiguous:
        grad = np.ascontiguousarray(grad, dtype=param.dtype)
    if grad.shape != param.shape:
        raise ValueError(f"optimizer step: grad has shape {grad.shape}, param has shape {param.shape}")
    return grad


def sgd_step(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False, first_step=False):
    """torch.optim.SGD's update of one parameter. With momentum, ``momentum_buffer`` is required and
    ``first_step`` initialises it to the (decayed) gradient, as torch does on a parameter's first step."""
    _C.sgd_step(param, _grad(grad, param), momentum_buffer if momentum else None, float(lr), float(momentum),
                float(dampening), float(weight_decay), bool(nesterov), bool(maximize), bool(first_step))


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False):
    """torch.optim.Adam's (``decoupled=True``: AdamW's) update; ``step`` counts from 1."""
    _C.adam_step(param, _grad(grad, param), exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None,
                 int(step), float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
                 bool(amsgrad), bool(maximize), bool(decoupled))


def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=1e-2, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    """torch.optim.RMSprop's update."""
    _C.rmsprop_step(param, _grad(grad, param), square_avg, grad_avg if centered else None,
                    momentum_buffer if momentum > 0 else None, float(lr), float(alpha), float(eps),
                    float(weight_decay), float(momentum), bool(centered), bool(maximize))
