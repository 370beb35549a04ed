"""mmu.optim: AdamW (fused C update), Adam, SGD, gradient clipping, LR schedules, EMA weights."""
from . import lr_scheduler  # noqa: F401
from .clip import clip_grad_norm_
from .ema import EMA
from .optimizer import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "Adam", "AdamW", "SGD", "clip_grad_norm_", "EMA", "lr_scheduler"]
