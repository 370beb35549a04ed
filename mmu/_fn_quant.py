"""Quantizer functions of mmu.functional: nearest_code (fused nearest-codebook search).

Part of mmu.functional (re-exported there).
"""
from . import _C  # noqa: F401

__all__ = []
