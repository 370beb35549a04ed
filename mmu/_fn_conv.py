"""Convolutions: conv1d/2d/3d and conv_transpose1d/2d/3d (oneDNN convolution / deconvolution).

Part of mmu.functional (re-exported there). Same arguments, defaults and output shapes as
torch.nn.functional; the work (bias fused into the forward, all three gradients from one
backward call, blocked layouts with cached reorders) happens in csrc/ops/conv.c.
"""

import numpy as np

from . import _C
from ._args import is_int

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


def _int(v, op, name):
    if not is_int(v):
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {type(v).__name__}")
    return int(v)


def _ntuple(v, sp, op, name):
    """An int, or a tuple/list of 1 or sp ints -> a tuple of sp ints (torch expands 1 entry)."""
    if isinstance(v, (tuple, list)):
        vals = tuple(_int(e, op, name) for e in v)
        if len(vals) == 1:
            return vals * sp
        if len(vals) != sp:
            raise ValueError(f"{op}: {name} must be an int or a tuple of {sp} ints, got {tuple(v)!r}")
        return vals
    return (_int(v, op, name),) * sp


def _groups(groups, op):
    if not is_int(groups):
        raise TypeError(f"{op}: groups must be an int, got {type(groups).__name__}")
    return int(groups)


def _conv(sp, input, weight, bias, stride, padding, dilation, groups):
    op = f"conv{sp}d"
    stride = _ntuple(stride, sp, op, "stride")
    dilation = _ntuple(dilation, sp, op, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            pad_l = pad_r = (0,) * sp
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                                 f"(stride {stride})")
            wshape = getattr(weight, "shape", None)
            wshape = tuple(np.shape(weight) if wshape is None else wshape)
            if len(wshape) != sp + 2:  # let the C op name the bad weight
                pad_l = pad_r = (0,) * sp
            else:
                # torch's rule: the total padding d*(k-1), the odd cell on the right
                total = [d * (k - 1) for d, k in zip(dilation, wshape[2:])]
                pad_l = tuple(t // 2 for t in total)
                pad_r = tuple(t - t // 2 for t in total)
        else:
            raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a tuple of ints, "
                             f"got {padding!r}")
    else:
        pad_l = pad_r = _ntuple(padding, sp, op, "padding")
    return _C.conv(sp, input, weight, bias, stride, pad_l, pad_r, dilation, _groups(groups, op))


def _conv_transpose(sp, input, weight, bias, stride, padding, output_padding, groups, dilation):
    op = f"conv_transpose{sp}d"
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a tuple of ints (torch has no "
                         f"'{padding}' for transposed convolutions)")
    return _C.conv_transpose(sp, input, weight, bias, _ntuple(stride, sp, op, "stride"),
                             _ntuple(padding, sp, op, "padding"),
                             _ntuple(output_padding, sp, op, "output_padding"), _groups(groups, op),
                             _ntuple(dilation, sp, op, "dilation"))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution: input (N, C, L) or (C, L), weight (OC, C/groups, k), bias (OC) -> (N, OC, L')."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution: input (N, C, H, W) or (C, H, W), weight (OC, C/groups, kh, kw), bias (OC).

    padding: int, tuple, 'valid' (none) or 'same' (output size = input size; stride 1 only; an
    even kernel pads one more cell on the right/bottom, as torch does)."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution: input (N, C, D, H, W) or (C, D, H, W), weight (OC, C/groups, kd, kh, kw)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 1-D convolution: input (N, IC, L), weight (IC, OC/groups, k) -> (N, OC, L') with
    L' = (L-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution (the gradient of conv2d w.r.t. its input): input (N, IC, H, W),
    weight (IC, OC/groups, kh, kw), bias (OC) -> (N, OC, H', W')."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 3-D convolution: input (N, IC, D, H, W), weight (IC, OC/groups, kd, kh, kw)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)
