"""mmu.functional: the fused LPIPS layer distance.

Part of mmu.functional (re-exported there). Python-level arguments are checked here (TypeError
for a wrong type, ValueError for a wrong value); the C op (csrc/loss/lpips.c)
checks the shapes.
"""
from . import _C
from ._args import is_real as _is_real

__all__ = ["lpips_distance"]


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
