"""mmu.train: the tokenizer trainer: AdamW, warmup + cosine, clipping, EMA, GAN alternation, checkpoints and exact resume."""

__all__ = []
