"""ViT vision towers (SigLIP, CLIP) in Hugging Face's and open_clip's published layouts -> mmu:
VisionTower (an mmu.nn.ViTEncoder with SigLIP's attention-pooling head or CLIP's class-token pooling
and optional projection), vit_config_from_hf / open_clip_vit_config (configs -> constructor
arguments), convert_vit_state_dict / convert_open_clip_vit_state_dict (published keys -> mmu keys)
and load_vit / load_open_clip_vit (both -> the model). The text towers of the same checkpoints map
onto mmu.models.vila_u.TextEncoder's keys here too (text_config_from_hf, convert_text_state_dict,
open_clip_text_config, convert_open_clip_text_state_dict)."""
from .config import (open_clip_text_config, open_clip_timm_siglip_config, open_clip_vit_config, text_config_from_hf,
                     vit_config_from_hf)
from .convert import (convert_open_clip_text_state_dict, convert_open_clip_vit_state_dict, convert_text_state_dict,
                      convert_vit_state_dict, load_open_clip_vit, load_vit)
from .model import AttentionPoolingHead, VisionTower

from .. import register as _register

_register("vit", VisionTower)

__all__ = ["VisionTower", "AttentionPoolingHead", "vit_config_from_hf", "convert_vit_state_dict", "load_vit",
           "open_clip_vit_config", "open_clip_timm_siglip_config", "convert_open_clip_vit_state_dict",
           "load_open_clip_vit", "open_clip_text_config", "convert_open_clip_text_state_dict", "text_config_from_hf",
           "convert_text_state_dict"]
