"""mmu.train: one Trainer for tokenizers, language models and unified models (model.training_step(batch, step) ->
(loss, logs)): AdamW, warmup + cosine, clipping, EMA, GAN alternation, checkpoints and exact resume."""
from .config import TrainConfig
from .batches import ArrayLoader, IterableLoader
from .history import History
from .tensorboard import TensorBoardWriter
from .trainer import Trainer, TrainingDiverged, batch_psnr

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "History", "TensorBoardWriter", "batch_psnr",
           "ArrayLoader", "IterableLoader"]
