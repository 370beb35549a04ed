"""GumbelQuantize: Gumbel-softmax quantization with a KL to the uniform prior (DALL-E dVAE)."""

__all__ = []
