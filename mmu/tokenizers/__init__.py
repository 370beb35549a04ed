"""mmu.tokenizers: trainable image tokenizers (VQ-VAE, dVAE, VQGAN) with encode/decode and a loss breakdown."""

__all__ = []
