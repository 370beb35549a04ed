"""FSQ: finite scalar quantization (Mentzer et al. 2023)."""

__all__ = []
