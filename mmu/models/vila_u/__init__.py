"""mmu.models.vila_u: VILA-U (Wu et al., ICLR 2025; mit-han-lab/vila-u), a unified model over text, image
and video codes built on a text-aligned residual-VQ vision tower.

- `UnifiedVisionTowerConfig`, `UnifiedVisionTower` (tower.py, registered as "vila_u_tower"): a SigLIP
  vision encoder cut after `quantize_after` layers, residual quantization with one shared codebook,
  post_quant_conv + a taming decoder, a text encoder and the image-text contrastive head;
  encode / decode / code_embeddings for the autoregressive model.
- `TextEncoder` (text_encoder.py): a SigLIP- or CLIP-layout text transformer.
- recipe.py: the training stages ('align' -> 'tower', or 'joint' from scratch) and the tower metrics
  (zero_shot_accuracy, tower_metrics).
"""
from .. import register
from .text_encoder import TEXT_LAYOUTS, TextEncoder
from .tower import CONTRASTIVE_LOSSES, STAGES, UnifiedVisionTower, UnifiedVisionTowerConfig

register("vila_u_tower", UnifiedVisionTower)

__all__ = ["UnifiedVisionTower", "UnifiedVisionTowerConfig", "TextEncoder", "TEXT_LAYOUTS", "STAGES",
           "CONTRASTIVE_LOSSES"]
