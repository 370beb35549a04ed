"""mmu.train: the tokenizer trainer: AdamW, warmup + cosine, clipping, EMA, GAN alternation, checkpoints and exact resume."""
from .config import TrainConfig
from .history import History
from .tensorboard import TensorBoardWriter
from .trainer import Trainer, TrainingDiverged, batch_psnr

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "History", "TensorBoardWriter", "batch_psnr"]
