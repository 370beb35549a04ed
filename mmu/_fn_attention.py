"""scaled_dot_product_attention and rotary position embeddings.

Part of mmu.functional (re-exported there).
"""
from . import _C  # noqa: F401

__all__ = []
