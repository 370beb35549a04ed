"""Image-text contrastive losses: CLIP (softmax InfoNCE) and SigLIP (sigmoid), fused forward+backward kernels.

The embeddings are used as given: normalise them first (CLIP and SigLIP both L2-normalise the
image and text embeddings before the loss), e.g. `x / x.norm(dim=-1, keepdim=True)`."""
import math

import numpy as np

from .. import _C
from ..nn import Module, Parameter

__all__ = ["clip_loss", "siglip_loss", "ClipLoss", "SigLipLoss"]


def clip_loss(image_emb, text_emb, logit_scale):
    """Symmetric InfoNCE of CLIP: logits = exp(logit_scale).clamp(max=100) * image_emb @ text_emb.T,
    loss = (cross_entropy(logits, arange(B)) + cross_entropy(logits.T, arange(B))) / 2.

    image_emb, text_emb: (B, D) float32 (already normalised); logit_scale: 0-d tensor, the log of
    the scale. Gradients flow to all three (none to logit_scale while the clamp is active)."""
    return _C.clip_loss(image_emb, text_emb, logit_scale)


def siglip_loss(image_emb, text_emb, t, b):
    """SigLIP sigmoid loss (Zhai et al. 2023): logits = exp(t) * image_emb @ text_emb.T + b, labels +1 on
    the diagonal and -1 elsewhere, loss = -sum(log_sigmoid(labels * logits)) / B.

    image_emb, text_emb: (B, D) float32 (already normalised); t (log temperature), b (bias): 0-d."""
    return _C.siglip_loss(image_emb, text_emb, t, b)


def _scalar_param(value):
    return Parameter(np.array(value, dtype=np.float32))


class ClipLoss(Module):
    """CLIP loss with its learnable logit scale (initialised to log(1 / 0.07), as CLIP)."""

    def __init__(self, init_logit_scale=math.log(1 / 0.07)):
        super().__init__()
        self.logit_scale = _scalar_param(init_logit_scale)

    def forward(self, image_emb, text_emb):
        """image_emb (B, D), text_emb (B, D) -> 0-d loss: clip_loss with this module's logit_scale."""
        return clip_loss(image_emb, text_emb, self.logit_scale)


class SigLipLoss(Module):
    """SigLIP loss with learnable log temperature t and bias b (paper init: t = log 10, b = -10)."""

    def __init__(self, init_t=math.log(10.0), init_b=-10.0):
        super().__init__()
        self.t = _scalar_param(init_t)
        self.b = _scalar_param(init_b)

    def forward(self, image_emb, text_emb):
        """image_emb (B, D), text_emb (B, D) -> 0-d loss: siglip_loss with this module's t and b."""
        return siglip_loss(image_emb, text_emb, self.t, self.b)
