"""mmu.models.gpt: a GPT-style decoder-only language model on mmu.nn.TransformerLM.

- `GPTConfig` (config.py): width, depth, heads (grouped-query), MLP, norm, residual style, RoPE or
  learned positions, max_seq_len, dropout, tied embeddings.
- `GPT` (model.py): training_step / evaluate_step for mmu.train.Trainer, generate / generate_text
  through mmu.generate on its KV cache, perplexity, save_pretrained / from_pretrained keeping its
  mmu.text tokenizer beside the weights.
- `convert_gpt2_state_dict` (convert.py): GPT-2's published layout (Hugging Face's GPT2LMHeadModel
  keys) -> a GPTConfig and GPT's state_dict.
- `train_captions` (captions.py): the tiny captions language model: a word-level tokenizer on
  mmu.data.caption_corpus, bos caption eos sequences of captioned_digits (and captioned_shapes),
  a small GPT trained by the Trainer, then captions sampled with a seed.
"""
from .. import register
from .captions import CaptionRun, caption_texts, train_captions
from .config import GPTConfig
from .convert import convert_gpt2_state_dict
from .model import GPT

register("gpt", GPT)

__all__ = ["GPT", "GPTConfig", "convert_gpt2_state_dict", "train_captions", "caption_texts", "CaptionRun"]
