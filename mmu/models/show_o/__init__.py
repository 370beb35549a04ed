"""mmu.models.show_o: Show-o (Xie et al., ICLR 2025), one transformer that answers questions about
images (causal text) and generates them (MaskGIT image tokens), after showlab/Show-o's public code.

- `ShowOConfig` (config.py): the unified vocabulary (text ids, Show-o's 10 new tokens in its order,
  the image codes, [MASK] last; vocab_size, llm_vocab_size, codebook_size, num_vq_tokens,
  num_new_special_tokens as Show-o names them), the Phi-style transformer's sizes, the training
  weights (t2i_coeff 1.0, lm_coeff 0.1, mmu_coeff 1.0), condition dropout, the nested image tokenizer.
- prompting.py: Show-o's sequences (t2i_prompt, mmu_prompt, lm_prompt, inpainting_prompt,
  extrapolation_prompt, mixed_prompt) and masks (omni_attention_mask, mmu_attention_mask).
- tiny.py: train_show_o_tiny, Show-o-tiny on the built-in captioned sets with a preset per set (the judges
  that measure it live in benchmarks/eval_show_o_tiny.py, outside the library).
- `ShowO` (model.py): a Phi-style mmu.nn.TransformerLM with QK LayerNorm under `.lm`, a frozen image
  tokenizer under `.image_tokenizer`, training_step for mmu.train.Trainer (mask-token prediction on
  image tokens with the cosine schedule, next-token prediction on LM and MMU text), tokenize_images
  and captioned_token_data (images tokenised once).
"""
from .. import register
from .config import SPECIAL_TOKENS, ShowOConfig, default_image_tokenizer
from .model import ShowO, cosine_mask_ratio
from .prompting import (IGNORE_INDEX, extrapolation_prompt, image_token_ids, inpainting_prompt, lm_prompt,
                        mixed_prompt, mmu_attention_mask, mmu_prompt, omni_attention_mask, t2i_prompt)

register("show_o", ShowO)

__all__ = ["ShowO", "ShowOConfig", "SPECIAL_TOKENS", "IGNORE_INDEX", "default_image_tokenizer", "cosine_mask_ratio",
           "t2i_prompt", "mmu_prompt", "lm_prompt", "inpainting_prompt", "extrapolation_prompt", "mixed_prompt",
           "image_token_ids", "omni_attention_mask", "mmu_attention_mask"]

# the published checkpoint (convert.py): Show-o's showo.* keys -> ShowO, with its MAGVIT-v2 (mmu.models.magvit2)
from .convert import SHOW_O_RELEASE, convert_show_o_state_dict, load_show_o, show_o_release_config  # noqa: E402

__all__ += ["SHOW_O_RELEASE", "convert_show_o_state_dict", "load_show_o", "show_o_release_config"]

# Show-o-tiny on the built-in captioned sets (tiny.py): mmu showo train / generate / answer
from .tiny import ShowOTinyRun, show_o_tiny_preset, train_show_o_tiny  # noqa: E402

__all__ += ["ShowOTinyRun", "show_o_tiny_preset", "train_show_o_tiny"]
