"""Quantizer functions of mmu.functional: nearest_code (fused nearest-codebook search).

Part of mmu.functional (re-exported there).
"""
from . import _C  # noqa: F401

__all__ = ["nearest_code"]


def nearest_code(x, codebook, metric="l2"):
    """Index of the nearest code for every row: x (N, D), codebook (K, D) -> int64 (N,).

    metric='l2' minimises ||x - e_k||^2, metric='cosine' maximises cos(x, e_k) (both l2-normalised with
    F.normalize's eps 1e-12). One fused blocked search (register-tiled AVX-512 dot products +
    running argmin): the N x K distance matrix is never materialised. Ties go to the lowest index;
    a row containing NaN (or whose scores all overflow) gets index 0; a NaN code is never chosen.
    Deterministic and independent of the thread count. Not differentiable (the result is an index).
    """
    if not isinstance(metric, str) or metric not in ("l2", "cosine"):
        raise ValueError(f"nearest_code: metric must be 'l2' or 'cosine', got {metric!r}")
    return _C._nearest_code(x, codebook, metric == "cosine")
