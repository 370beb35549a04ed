"""mmu.models.titok: TiTok, images as 1-D sequences of K tokens (bytedance/1d-tokenizer).

- `TiTokConfig`, `titok_config` (config.py): the fields, and the S / B / L presets scaled down from the
  published widths and depths (PUBLISHED_SIZES -> PRESETS).
- `TiTok` (model.py): an mmu Tokenizer with latent_layout "1d" (encode -> (B, K) codes, decode), its
  TiTokEncoder (an mmu.nn.ViTEncoder with latent tokens), TiTokQuantizer (1d-tokenizer's l2-normalised VQ)
  and TiTokDecoder (the pixel decoder over [class; mask tokens; latents]).
- `convert_titok_state_dict`, `load_titok`, `titok_config_from_state_dict` (convert.py): 1d-tokenizer's
  TiTok state_dict (is_legacy=False, vq mode) -> the model.
"""
from .. import register
from .config import PRESETS, PUBLISHED_SIZES, TiTokConfig, titok_config
from .convert import convert_titok_state_dict, load_titok, titok_config_from_state_dict
from .model import TiTok, TiTokDecoder, TiTokEncoder, TiTokQuantizer

register("titok", TiTok)

__all__ = ["TiTok", "TiTokConfig", "titok_config", "PRESETS", "PUBLISHED_SIZES", "TiTokEncoder", "TiTokDecoder",
           "TiTokQuantizer", "convert_titok_state_dict", "load_titok", "titok_config_from_state_dict"]
