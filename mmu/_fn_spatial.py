"""Norms (group_norm, rms_norm, normalize), dropout, pad, avg_pool2d, interpolate, pixel_shuffle.

Part of mmu.functional (re-exported there).
"""
from . import _C  # noqa: F401

__all__ = []
