"""ViT vision towers (SigLIP, CLIP) in Hugging Face's published layout -> mmu: VisionTower (an
mmu.nn.ViTEncoder with SigLIP's attention-pooling head or CLIP's class-token pooling),
vit_config_from_hf (config.json -> constructor arguments), convert_vit_state_dict (published keys
-> mmu keys) and load_vit (both -> the model)."""
from .config import vit_config_from_hf
from .convert import convert_vit_state_dict, load_vit
from .model import AttentionPoolingHead, VisionTower

from .. import register as _register

_register("vit", VisionTower)

__all__ = ["VisionTower", "AttentionPoolingHead", "vit_config_from_hf", "convert_vit_state_dict", "load_vit"]
