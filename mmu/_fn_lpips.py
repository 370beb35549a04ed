"""mmu.functional: max pooling and the fused LPIPS layer distance (issue 5).

Part of mmu.functional (re-exported there). Python-level arguments are checked here (TypeError
for a wrong type, ValueError for a wrong value); the C ops (csrc/ops/pool.c, csrc/loss/lpips.c)
check the shapes.
"""
import builtins

from . import _C
from ._args import flag as _flag, is_int as _is_int, is_real as _is_real, pair as _pair

__all__ = ["max_pool2d", "lpips_distance"]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling of input (N, C, H, W) or (C, H, W), torch.nn.functional.max_pool2d's
    arguments and semantics: stride defaults to kernel_size, padding (implicit -inf) at most half
    of kernel_size (torch's rule, whatever the dilation), output size
    floor((H + 2p - d·(k-1) - 1 + (ceil_mode ? s-1 : 0)) / s) + 1, and with ceil_mode the last
    window must start inside the input or the left padding. A NaN in a window is its maximum; ties
    take the first cell. With return_indices=True also returns torch's int64 indices (h·W + w
    within each plane). The backward sends each output's gradient to its argmax (deterministic)."""
    k = _pair(kernel_size, "max_pool2d", "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        _pair(stride, "max_pool2d", "stride")
    p = _pair(padding, "max_pool2d", "padding")
    d = _pair(dilation, "max_pool2d", "dilation")
    return _C.max_pool2d(input, k, s, p, d, _flag(ceil_mode, "max_pool2d", "ceil_mode"),
                          _flag(return_indices, "max_pool2d", "return_indices"))


def lpips_distance(f0, f1, weight=None, eps=1e-10):
    """One LPIPS layer term (Zhang et al. 2018; the lpips package's normalize_tensor + NetLinLayer +
    spatial_average): for features f0, f1 (B, C, H, W) and lin weights weight (C) or (1, C, 1, 1)
    (None: all ones, the package's lin=False),
    d[b] = mean_hw sum_c weight_c (f0/(|f0|_c + eps) - f1/(|f1|_c + eps))^2 with the norm over
    channels per pixel; returns (B, 1, 1, 1). One fused C kernel forward and backward (gradients
    to f0, f1 and weight); only the per-pixel norms are kept for the backward."""
    if not _is_real(eps):
        raise TypeError(f"lpips_distance: eps must be a float, got {type(eps).__name__}")
    if eps < 0:
        raise ValueError(f"lpips_distance: eps must be >= 0, got {eps}")
    return _C.lpips_distance(f0, f1, weight, float(eps))
