"""Normalisation functions: layer_norm, group_norm (and group_norm_silu, fused with SiLU), rms_norm,
normalize (csrc/ops/norm.c; batch_norm is _fn_batch_norm.py).

Part of mmu.functional (re-exported there). Arguments are checked here the way torch checks
them (TypeError for a wrong type, ValueError for a wrong value); the C ops check the shapes.
"""
import builtins
import math

import numpy as np

from . import _C
from ._args import check_int as _int, check_real as _real, is_int, is_int as _is_int, is_real
from .tensor import _as_tensor

__all__ = ["layer_norm", "group_norm", "group_norm_silu", "rms_norm", "normalize"]

_F32_EPS = float(np.finfo(np.float32).eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing `normalized_shape` dims, then scale by weight and shift by bias."""
    if is_int(normalized_shape):
        normalized_shape = (int(normalized_shape),)
    if not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(f"layer_norm: normalized_shape must be an int or a tuple of ints, "
                        f"got {type(normalized_shape).__name__}")
    if not is_real(eps):
        raise TypeError(f"layer_norm: eps must be a number, got {type(eps).__name__}")
    return _C.layer_norm(input, tuple(normalized_shape), weight, bias, float(eps))


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation of input (N, C, *): the C channels are split into num_groups groups,
    each (sample, group) normalised to zero mean and unit variance (biased), then scaled by
    weight (C) and shifted by bias (C). One pass for the statistics, one fused
    normalise + affine pass; the backward is one fused pass too."""
    return _C.group_norm(*_group_norm_args(input, num_groups, eps, "group_norm"), weight, bias, eps)


def _group_norm_args(input, num_groups, eps, op):
    """(x, num_groups) checked for group_norm / group_norm_silu (eps is checked too)."""
    num_groups = _int(num_groups, op, "num_groups")
    _real(eps, op, "eps")
    x = _as_tensor(input, op)
    if x.ndim < 2:
        raise ValueError(f"{op}: expected at least 2 dims (N, C, *) for input, got shape {tuple(x.shape)}")
    if num_groups <= 0 or x.shape[1] % num_groups or num_groups > builtins.max(x.shape[1], 1):
        raise ValueError(f"{op}: expected the number of channels in input ({x.shape[1]}) to be "
                         f"divisible by num_groups ({num_groups}), input shape {tuple(x.shape)}")
    return x, num_groups


def group_norm_silu(input, num_groups, weight=None, bias=None, eps=1e-5):
    """silu(group_norm(input, num_groups, weight, bias, eps)) as one op (mmu-only; torch runs it as
    F.silu(F.group_norm(...))): the SiLU y = z·sigmoid(z) is applied in GroupNorm's normalise + affine
    pass, and the backward recomputes z from the saved statistics and runs the GroupNorm backward on
    g·silu'(z) in the same passes. input (N, C, *), weight and bias (C) or None -> input's shape.
    It is the `swish(norm(x))` of taming-transformers' ResnetBlock and Encoder/Decoder
    (Esser et al. 2021, taming/modules/diffusionmodules/model.py)."""
    eps = _real(eps, "group_norm_silu", "eps")
    return _C.group_norm_silu(*_group_norm_args(input, num_groups, eps, "group_norm_silu"), weight, bias, eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x², over the trailing normalized_shape dims) + eps) · weight.
    eps=None uses float32's machine epsilon, as torch does."""
    if _is_int(normalized_shape):
        normalized_shape = (int(normalized_shape),)
    if not isinstance(normalized_shape, (tuple, list)) or not all(_is_int(s) for s in normalized_shape):
        raise TypeError(f"rms_norm: normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}")
    eps = _F32_EPS if eps is None else _real(eps, "rms_norm", "eps")
    return _C.rms_norm(input, tuple(int(s) for s in normalized_shape), weight, eps)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) along dim (p > 0; p = 1 and 2 take fast paths)."""
    p = _real(p, "normalize", "p")
    dim = _int(dim, "normalize", "dim")
    eps = _real(eps, "normalize", "eps")
    if not 0 < p < math.inf:
        raise ValueError(f"normalize: p must be a finite number > 0, got {p}")
    return _C.normalize(input, p, dim, eps)
