"""ResidualVQ: a stack of VectorQuantize levels on the running residual (RQ-VAE)."""

__all__ = []
