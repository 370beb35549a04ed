"""Convolutions: conv1d/2d/3d, conv_transpose2d/3d (oneDNN).

Part of mmu.functional (re-exported there).
"""
from . import _C  # noqa: F401

__all__ = []
