"""Codebook health: usage, perplexity, dead codes, loss breakdown (QuantizerStats)."""

__all__ = []
