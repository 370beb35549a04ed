"""mmu.metrics: image and codebook metrics: PSNR, SSIM, LPIPS, codebook usage, perplexity, bits per image, throughput.

NumPy arrays or mmu Tensors in, floats (reduction="mean") or float64 arrays (reduction="none") out.
Images are NCHW in [-1, 1] (data_range=2.0 by default).
"""
from .codebook import bits_per_image, codebook_usage, perplexity, throughput
from .image import lpips_distance, psnr, ssim

__all__ = ["psnr", "ssim", "lpips_distance", "codebook_usage", "perplexity", "bits_per_image", "throughput"]
