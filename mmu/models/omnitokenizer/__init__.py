"""mmu.models.omnitokenizer: OmniTokenizer, one transformer tokenizer for images and videos
(FoundationVision/OmniTokenizer: OmniTokenizer/omnitokenizer.py, modules/attention.py, modules/codebook.py).

- `OmniTokenizerConfig` (config.py): the fields, defaults from the code and scripts/recons/train.sh.
- `OmniTokenizer` (model.py): an mmu Tokenizer with the 3-D latent layout: clips (B, C, T, H, W) ->
  codes (B, t, h, w), t = 1 + (T - 1) / temporal_patch_size; images train as one-frame clips.
- `convert_omnitokenizer_state_dict`, `load_omnitokenizer` (convert.py): the published checkpoint layout
  (the names OmniTokenizer's modules define) -> the model.
"""
from .. import register
from .config import OmniTokenizerConfig
from .convert import convert_omnitokenizer_state_dict, load_omnitokenizer, omnitokenizer_state_dict_names
from .model import OmniTokenizer, OmniTokenizerDecoder, OmniTokenizerEncoder

register("omnitokenizer", OmniTokenizer)

__all__ = ["OmniTokenizer", "OmniTokenizerConfig", "OmniTokenizerEncoder", "OmniTokenizerDecoder",
           "convert_omnitokenizer_state_dict", "load_omnitokenizer", "omnitokenizer_state_dict_names"]
