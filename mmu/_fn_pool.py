"""2-D pooling: max_pool2d and avg_pool2d (csrc/ops/pool.c).

Part of mmu.functional (re-exported there). Python-level arguments are checked here (TypeError
for a wrong type, ValueError for a wrong value); the C ops check the shapes.
"""
from . import _C
from ._args import check_int as _int, flag as _flag, pair as _pair

__all__ = ["max_pool2d", "avg_pool2d"]


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
