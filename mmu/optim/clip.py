"""Gradient clipping by the global norm (torch.nn.utils.clip_grad_norm_)."""
import math

import numpy as np

from .. import _C
from .._C import Tensor
from ..tensor import tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scales the .grad of `parameters` in place so that their global norm is at most max_norm.

    The norm of all the gradients taken together is one fused C reduction (summed in double
    precision in a fixed order: deterministic); the gradients are multiplied by
    clip_coef = max_norm / (total_norm + 1e-6) when that is below 1 (torch's rule, in
    float32). norm_type: any p > 0, or inf. Parameters whose .grad is None are skipped.
    Returns the total norm as a 0-d float32 Tensor. `foreach` is accepted for torch
    compatibility and ignored (the fused path is always used).
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = [p for p in parameters if isinstance(p, Tensor) and p.grad is not None]
    try:
        max_norm = float(max_norm)
        norm_type = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError("clip_grad_norm_: max_norm and norm_type must be numbers") from None
    if not (norm_type > 0):
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type}")
    if not params:
        return tensor(np.float32(0.0))
    total = np.float32(_C.grad_norm(params, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    with np.errstate(all="ignore"):
        coef = np.float32(max_norm) / (total + np.float32(1e-6))
    if not (coef >= np.float32(1.0)):  # below 1, or NaN (torch multiplies by it too)
        _C.grad_scale_(params, float(coef))
    return tensor(total)
