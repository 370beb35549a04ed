"""mmu.models.vila_u: VILA-U (Wu et al., ICLR 2025), a unified foundation vision tower whose residual-VQ
codes serve both understanding and generation, and one autoregressive model over text, image and video
codes, after mit-han-lab/vila-u's public code.

- `VILAUConfig` (config.py): the LLM's vocabulary (text ids, then [SOI], [EOI], [SOV], [EOV]) and sizes, the
  depth transformer's sizes, the projector type, condition dropout, the sampling defaults (cfg 3.0, top-k
  900, top-p 0.96), the tower's config nested as a dict.
- `VILAU` (model.py): the LLaMA-style mmu.nn.TransformerLM under `.lm`, `.mm_projector`, `.depth`
  (`DepthTransformer`, depth.py: VILA-U's RQTransformer head) and the frozen tower under `.tower`;
  training_step for mmu.train.Trainer; generate_images / generate_video / answer (generation.py) on the
  LLM's KV cache.
"""
from .. import register
from .config import MM_PROJECTORS, VISUAL_TOKENS, VILAUConfig, tower_geometry
from .depth import DepthTransformer
from .generation import answer, generate_images, generate_video
from .model import VILAU, MMProjector

register("vila_u", VILAU)

__all__ = ["VILAU", "VILAUConfig", "DepthTransformer", "MMProjector", "VISUAL_TOKENS", "MM_PROJECTORS",
           "tower_geometry", "generate_images", "generate_video", "answer"]
