"""mmu.models.magvit2: Show-o's MAGVIT-v2 image tokenizer (showlab/Show-o, models/modeling_magvitv2.py).

- `MAGVIT2Config` (config.py): the released layout (256 px -> 16 x 16 codes, 13-bit LFQ = 8192 codes,
  per-level residual-block counts) as defaults.
- `MAGVIT2` (model.py): an mmu Tokenizer (2-D latent layout) with Show-o's module names, mmu's LFQ in
  Show-o's bit <-> code convention, Show-o's get_code / decode_code beside encode / decode.
- `convert_magvit2_state_dict`, `load_magvit2`, `magvit2_config_from_state_dict` (convert.py): the
  published checkpoint -> the model (config read off the shapes).
"""
from .. import register
from .config import MAGVIT2Config
from .convert import convert_magvit2_state_dict, load_magvit2, magvit2_config_from_state_dict, \
    magvit2_state_dict_shapes
from .model import MAGVIT2, MAGVIT2Decoder, MAGVIT2Encoder

register("magvit2", MAGVIT2)

__all__ = ["MAGVIT2", "MAGVIT2Config", "MAGVIT2Encoder", "MAGVIT2Decoder", "convert_magvit2_state_dict",
           "load_magvit2", "magvit2_config_from_state_dict", "magvit2_state_dict_shapes"]
