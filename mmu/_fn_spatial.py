"""pad, interpolate, pixel_shuffle / pixel_unshuffle (csrc/ops/spatial.c).

Part of mmu.functional (re-exported there). Arguments are checked here the way torch checks
them (TypeError for a wrong type, ValueError for a wrong value); the C ops check the shapes.
"""
import builtins
import math

from . import _C
from ._args import check_int as _int, check_real as _real, flag as _flag, is_int as _is_int, is_real as _is_real
from .tensor import _as_tensor

__all__ = ["pad", "interpolate", "pixel_shuffle", "pixel_unshuffle"]

_PAD_MODES = _C.PAD_MODES  # {"constant", "reflect", "replicate", "circular"} -> the C core's codes


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
