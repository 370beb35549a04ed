"""Reconstruction losses: l1, mse, smooth L1 / Huber, logit-Laplace (DALL-E dVAE)."""

__all__ = []
