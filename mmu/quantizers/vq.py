"""VectorQuantize: nearest-code VQ with EMA or learnable codebooks, k-means init, dead-code restart, rotation trick."""

__all__ = []
