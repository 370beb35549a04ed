"""mmu.metrics: image and codebook metrics: PSNR, SSIM, LPIPS, codebook usage, perplexity, bits per image, throughput."""

__all__ = []
