"""mmu.text: text tokenizers for the language and unified models, backed by Hugging Face's `tokenizers`
package (PyPI; imported when a tokenizer is made, so `import mmu` stays light).

A `TextTokenizer` loads a tokenizer.json the user has (Phi-1.5's byte-level BPE, LLaMA's BPE with byte
fallback) or trains a small byte-level BPE or lowercase word-level tokenizer on a corpus. Special
tokens sit at fixed ids (trained tokenizers: "<pad>"=0, "<bos>"=1, "<eos>"=2, "<unk>"=3; new ones are
appended after the vocabulary, as Show-o appends its tokens after Phi's); batches come out as
(B, L) int64 ids with a (B, L) bool attention mask, padded on the right or (for batched generation)
on the left.

    tok = mmu.text.TextTokenizer.train_word_level(mmu.data.caption_corpus())
    ids, mask = tok.encode_batch(["a small red circle", "the digit 7"], add_bos=True, padding_side="left")
    tok.decode_batch(ids)                    # ['a small red circle', 'the digit 7']
"""
from .tokenizer import DEFAULT_SPECIAL_TOKENS, SPECIAL_ROLES, TextTokenizer

__all__ = ["TextTokenizer", "DEFAULT_SPECIAL_TOKENS", "SPECIAL_ROLES"]
