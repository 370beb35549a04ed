"""mmu.train: the tokenizer trainer: AdamW, warmup + cosine, clipping, EMA, GAN alternation, checkpoints and exact resume."""
from .config import TrainConfig
from .history import History
from .trainer import Trainer, batch_psnr

__all__ = ["TrainConfig", "Trainer", "History", "batch_psnr"]
