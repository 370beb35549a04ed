"""Norms (group_norm, rms_norm, normalize), dropout, leaky_relu, pad, avg_pool2d, interpolate,
pixel_shuffle / pixel_unshuffle.

Part of mmu.functional (re-exported there). Arguments are checked here the way torch checks
them (TypeError for a wrong type, ValueError for a wrong value); the C ops check the shapes.
"""
import builtins
import math

import numpy as np

from . import _C
from ._args import flag as _flag, is_int as _is_int, is_real as _is_real, pair as _pair
from .tensor import _as_tensor

__all__ = ["group_norm", "group_norm_silu", "rms_norm", "normalize", "dropout", "leaky_relu", "pad", "avg_pool2d",
           "interpolate", "pixel_shuffle", "pixel_unshuffle"]

_F32_EPS = float(np.finfo(np.float32).eps)
_PAD_MODES = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}


def _int(v, op, name):
    if not _is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    return int(v)


def _real(v, op, name):
    if not _is_real(v):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    return float(v)


# ------------------------------------------------------------------ norms
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
    (Esser et al. 2021, REFERENCES.md)."""
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


# ----------------------------------------------------------- elementwise
def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1/(1-p), on mmu's seeded Philox
    stream (mmu.manual_seed): the mask depends on the seed and the stream position only, not on
    the thread count. With training=False or p=0 the input itself is returned, as torch does."""
    if _flag(inplace, "dropout", "inplace"):
        raise ValueError("dropout: inplace=True is not supported (mmu ops do not modify their inputs)")
    p = _real(p, "dropout", "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    x = _as_tensor(input, "dropout")
    if not _flag(training, "dropout", "training") or p == 0.0 or x.numel() == 0:
        return x
    return _C.dropout(x, p)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope·x."""
    if _flag(inplace, "leaky_relu", "inplace"):
        raise ValueError("leaky_relu: inplace=True is not supported (mmu ops do not modify their inputs)")
    return _C.leaky_relu(input, _real(negative_slope, "leaky_relu", "negative_slope"))


# ------------------------------------------------------------------- pad
def pad(input, pad, mode="constant", value=None):
    """Pad (or, with negative amounts, crop) the last len(pad)//2 dims. pad is torch's tuple:
    (last_lo, last_hi, second_last_lo, second_last_hi, ...). mode 'constant' fills with value
    (default 0) and works on any dims; 'reflect', 'replicate' and 'circular' pad the last 1-3 dims
    of a (N, C, *) or (C, *) input, as torch."""
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be one of {sorted(_PAD_MODES)}, got {mode!r}")
    if not isinstance(pad, (tuple, list)) or not all(_is_int(v) for v in pad):
        raise TypeError(f"pad: pad must be a tuple of ints, got {pad!r}")
    x = _as_tensor(input, "pad")
    nd, k = x.ndim, len(pad) // 2
    if len(pad) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(pad)}")
    if len(pad) > 2 * nd:
        raise ValueError(f"pad: padding length should be at most twice the input dimension, but got padding "
                         f"length {len(pad)} and an input of shape {tuple(x.shape)}")
    if mode != "constant":
        if value is not None and value != 0:
            raise ValueError(f"pad: padding mode {mode!r} doesn't take in a value argument")
        if not (1 <= k <= 3 and nd in (k + 1, k + 2)):
            raise ValueError(f"pad: {mode!r} padding of the last {k} dims needs a {k + 1}-D or {k + 2}-D input "
                             f"(only 2-D to 5-D padding with non-constant modes), got shape {tuple(x.shape)}")
        value = 0.0
    value = 0.0 if value is None else _real(value, "pad", "value")
    lo, hi = [0] * nd, [0] * nd
    for i in range(k):
        lo[nd - 1 - i], hi[nd - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    if nd == 0:  # nothing to pad: an empty pad tuple on a 0-d tensor
        return x * 1.0
    return _C.pad(x, tuple(lo), tuple(hi), _PAD_MODES[mode], value)


# --------------------------------------------------------------- pooling
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling of (N, C, H, W) or (C, H, W) input, torch's output size and divisor rules."""
    k = _pair(kernel_size, "avg_pool2d", "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        _pair(stride, "avg_pool2d", "stride")
    pd = _pair(padding, "avg_pool2d", "padding")
    div = 0
    if divisor_override is not None:
        div = _int(divisor_override, "avg_pool2d", "divisor_override")
        if div <= 0:
            raise ValueError(f"avg_pool2d: divisor_override must be positive, got {div}")
    return _C.avg_pool2d(input, k, s, pd, _flag(ceil_mode, "avg_pool2d", "ceil_mode"),
                         _flag(count_include_pad, "avg_pool2d", "count_include_pad"), div)


# --------------------------------------------------------- interpolation
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of input (N, C, *): 'nearest' for 3-D/4-D/5-D input (torch's
    'nearest' index rule, floor(dst·scale)), 'bilinear' for 4-D input (align_corners True/False).
    Exactly one of size and scale_factor. As in torch, a scale_factor is used as given for the
    source positions unless recompute_scale_factor=True."""
    if recompute_scale_factor is not None:
        recompute_scale_factor = _flag(recompute_scale_factor, "interpolate", "recompute_scale_factor")
    if not isinstance(mode, str) or mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate: mode must be 'nearest' or 'bilinear' (the modes mmu implements), got {mode!r}")
    if align_corners is not None:
        align_corners = _flag(align_corners, "interpolate", "align_corners")
    if _flag(antialias, "interpolate", "antialias"):
        raise ValueError("interpolate: antialias=True is not supported")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("interpolate: align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    x = _as_tensor(input, "interpolate")
    dim = x.ndim - 2
    if mode == "nearest" and dim not in (1, 2, 3):
        raise ValueError(f"interpolate: 'nearest' expects a 3-D, 4-D or 5-D input, got shape {tuple(x.shape)}")
    if mode == "bilinear" and dim != 2:
        raise ValueError(f"interpolate: 'bilinear' expects a 4-D input, got shape {tuple(x.shape)}")
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    in_sp = tuple(x.shape[2:])
    scales = None
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        if isinstance(size, (tuple, list)):
            if len(size) != dim:
                raise ValueError(f"interpolate: input and output must have the same number of spatial dimensions, "
                                 f"but got input with spatial dimensions of {list(in_sp)} and output size of "
                                 f"{list(size)}")
            out = tuple(size)
        else:
            out = (size,) * dim
        if not all(_is_int(v) for v in out):
            raise TypeError(f"interpolate: size must be an int or a tuple of ints, got {size!r}")
        out = tuple(int(v) for v in out)
    else:
        if isinstance(scale_factor, (tuple, list)):
            if len(scale_factor) != dim:
                raise ValueError(f"interpolate: input and scale_factor must have the same number of spatial "
                                 f"dimensions, but got input with spatial dimensions of {list(in_sp)} and "
                                 f"scale_factor of shape {list(scale_factor)}")
            sf = tuple(scale_factor)
        else:
            sf = (scale_factor,) * dim
        if not all(_is_real(v) for v in sf):
            raise TypeError(f"interpolate: scale_factor must be a number or a tuple of numbers, got {scale_factor!r}")
        sf = tuple(float(v) for v in sf)
        if not all(v > 0 and math.isfinite(v) for v in sf):
            raise ValueError(f"interpolate: scale_factor must be positive and finite, got {scale_factor!r}")
        out = tuple(int(math.floor(float(i) * f)) for i, f in zip(in_sp, sf))
        scales = None if recompute_scale_factor else sf
    numel = math.prod(x.shape[:2]) * math.prod(out)
    if numel > 2 ** 59:  # (a scale_factor of 1e300 would reach the C core as a 300-digit size)
        what = f"scale_factor {scale_factor!r}" if scale_factor is not None else f"size {size!r}"
        raise ValueError(f"interpolate: {what} gives an output of more than 2**59 elements for input of "
                         f"shape {tuple(x.shape)}")
    if not all(v > 0 for v in out) or not all(v > 0 for v in in_sp):
        raise ValueError(f"interpolate: input and output sizes should be greater than 0, but got input spatial "
                         f"size {list(in_sp)} and output size {list(out)}")
    if mode == "nearest":
        return _C.upsample_nearest(x, out, scales)
    sh, sw = scales if scales is not None else (0.0, 0.0)
    return _C.upsample_bilinear2d(x, out[0], out[1], builtins.bool(align_corners), sh, sw)


# ------------------------------------------------------- pixel shuffle
def _shuffle_checks(x, r, op, name):
    r = _int(r, op, name)
    if r <= 0:
        raise ValueError(f"{op}: {name} must be greater than 0, got {r}")
    if x.ndim < 3:
        raise ValueError(f"{op}: expects input to have at least 3 dimensions, but got input with shape "
                         f"{tuple(x.shape)}")
    return r


def pixel_shuffle(input, upscale_factor):
    """(*, C·r², H, W) -> (*, C, H·r, W·r), channel c·r² + i·r + j going to pixel (h·r + i, w·r + j)."""
    x = _as_tensor(input, "pixel_shuffle")
    r = _shuffle_checks(x, upscale_factor, "pixel_shuffle", "upscale_factor")
    *batch, c, h, w = x.shape
    if c % (r * r):
        raise ValueError(f"pixel_shuffle: expects the channel dimension ({c}) to be divisible by the square of "
                         f"upscale_factor ({r}), input shape {tuple(x.shape)}")
    oc = c // (r * r)
    n = math.prod(batch)  # not -1: a zero-size dim makes -1 ambiguous
    y = x.reshape((n, oc, r, r, h, w)).permute((0, 1, 4, 2, 5, 3))
    return y.reshape((*batch, oc, h * r, w * r))


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H·r, W·r) -> (*, C·r², H, W), the inverse of pixel_shuffle."""
    x = _as_tensor(input, "pixel_unshuffle")
    r = _shuffle_checks(x, downscale_factor, "pixel_unshuffle", "downscale_factor")
    *batch, c, h, w = x.shape
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle: expects the height ({h}) and width ({w}) to be divisible by "
                         f"downscale_factor ({r}), input shape {tuple(x.shape)}")
    n = math.prod(batch)
    y = x.reshape((n, c, h // r, r, w // r, r)).permute((0, 1, 3, 5, 2, 4))
    return y.reshape((*batch, c * r * r, h // r, w // r))
