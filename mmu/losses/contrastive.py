"""Image-text contrastive losses: CLIP (softmax InfoNCE) and SigLIP (sigmoid), fused forward+backward kernels."""

__all__ = []
