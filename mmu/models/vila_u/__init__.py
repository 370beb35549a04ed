"""mmu.models.vila_u: VILA-U (Wu et al., ICLR 2025; mit-han-lab/vila-u), a unified model over text, image
and video codes built on a text-aligned residual-VQ vision tower.

- `UnifiedVisionTowerConfig`, `UnifiedVisionTower` (tower.py, registered as "vila_u_tower"): a SigLIP
  vision encoder cut after `quantize_after` layers, residual quantization with one shared codebook,
  post_quant_conv + a taming decoder, a text encoder and the image-text contrastive head;
  encode / decode / code_embeddings for the autoregressive model.
- `TextEncoder` (text_encoder.py): a SigLIP- or CLIP-layout text transformer.
- recipe.py: the training stages ('align' -> 'tower', or 'joint' from scratch) and the tower metrics
  (zero_shot_accuracy, tower_metrics).
- `VILAUConfig` (config.py): the LLM's vocabulary (text ids, then [SOI], [EOI], [SOV], [EOV]) and sizes, the
  depth transformer's sizes, the projector type, condition dropout, the sampling defaults (cfg 3.0, top-k
  900, top-p 0.96), the tower's config nested as a dict.
- `VILAU` (model.py, registered as "vila_u"): the LLaMA-style mmu.nn.TransformerLM under `.lm`,
  `.mm_projector`, `.depth` (`DepthTransformer`, depth.py: VILA-U's RQTransformer head) and the frozen tower
  under `.tower`; training_step for mmu.train.Trainer; generate_images / generate_video / answer
  (generation.py) on the LLM's KV cache.
- tiny.py: VILA-U-tiny on the built-in captioned sets (`train_vila_u_tiny`, `load_vila_u_tiny`, `tiny_tower`;
  `mmu vila-u train | generate | answer`).
- convert.py: published checkpoints -> these modules: `load_vila_u` (VILA-U's release: llm/, vision_tower/,
  mm_projector/), `load_vila_u_tower`, and the SigLIP / CLIP text towers of Hugging Face and open_clip onto
  `TextEncoder` (`load_text_encoder`, `load_open_clip_text`).
"""
from .. import register
from .text_encoder import TEXT_LAYOUTS, TextEncoder
from .tower import CONTRASTIVE_LOSSES, STAGES, UnifiedVisionTower, UnifiedVisionTowerConfig
from .recipe import (RECIPES, digit_prompts, tower_data, tower_metrics, train_recipe, train_tower,
                     zero_shot_accuracy)

register("vila_u_tower", UnifiedVisionTower)

__all__ = ["UnifiedVisionTower", "UnifiedVisionTowerConfig", "TextEncoder", "TEXT_LAYOUTS", "STAGES",
           "CONTRASTIVE_LOSSES", "RECIPES", "digit_prompts", "tower_data", "tower_metrics", "train_recipe",
           "train_tower", "zero_shot_accuracy"]

from .config import MM_PROJECTORS, VISUAL_TOKENS, VILAUConfig, tower_geometry  # noqa: E402
from .depth import DepthTransformer  # noqa: E402
from .generation import answer, generate_images, generate_video  # noqa: E402
from .model import VILAU, MMProjector  # noqa: E402

register("vila_u", VILAU)

from .convert import (convert_vila_u_depth_state_dict, convert_vila_u_projector_state_dict,  # noqa: E402
                      convert_vila_u_tower_state_dict, load_open_clip_text, load_text_encoder, load_vila_u,
                      load_vila_u_tower, vila_u_config, vila_u_tower_config)

__all__ += ["VILAU", "VILAUConfig", "DepthTransformer", "MMProjector", "VISUAL_TOKENS", "MM_PROJECTORS",
            "tower_geometry", "generate_images", "generate_video", "answer"]
__all__ += ["load_text_encoder", "load_open_clip_text", "vila_u_tower_config", "convert_vila_u_tower_state_dict",
            "load_vila_u_tower", "convert_vila_u_depth_state_dict", "convert_vila_u_projector_state_dict",
            "vila_u_config", "load_vila_u"]

# VILA-U-tiny on the built-in captioned sets (tiny.py): mmu vila-u train / generate / answer
from .tiny import VILAUTinyRun, load_vila_u_tiny, tiny_tower, train_vila_u_tiny  # noqa: E402

__all__ += ["VILAUTinyRun", "load_vila_u_tiny", "tiny_tower", "train_vila_u_tiny"]
