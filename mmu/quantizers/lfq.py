"""LFQ: lookup-free quantization with the MAGVIT-v2 entropy loss, without materialising the 2^d codebook."""

__all__ = []
