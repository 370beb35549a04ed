"""mmu.metrics: image and codebook metrics: PSNR, SSIM, LPIPS, FID (rFID), codebook usage, perplexity, bits per image,
throughput.

NumPy arrays or mmu Tensors in, floats (reduction="mean") or float64 arrays (reduction="none") out.
Images are NCHW in [-1, 1] (data_range=2.0 by default).
"""
from .codebook import bits_per_image, codebook_usage, perplexity, throughput
from .fid_score import FID, fid, frechet_distance
from .image import lpips_distance, psnr, ssim
from .inception import InceptionV3

__all__ = ["psnr", "ssim", "lpips_distance", "fid", "FID", "frechet_distance", "InceptionV3", "codebook_usage",
           "perplexity", "bits_per_image", "throughput"]
