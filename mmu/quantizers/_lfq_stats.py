"""Minimal stand-in for mmu.quantizers.stats (QuantizerStats / codebook_stats), used by FSQ and LFQ
only when the shared stats module is not present (it is written on another branch)."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class QuantizerStats:
    codebook_size: int
    batch_usage: float
    ema_usage: "float | None"
    perplexity: float
    dead_codes: int
    losses: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def codebook_stats(indices, codebook_size, losses=None, ema_counts=None, dead_threshold=0.0):
    idx = indices.numpy() if hasattr(indices, "numpy") else np.asarray(indices)
    idx = idx.reshape(-1).astype(np.int64)
    hist = np.bincount(idx, minlength=codebook_size).astype(np.float64)
    n, used = hist.sum(), int((hist > 0).sum())
    p = hist[hist > 0] / n if n else np.zeros(0)
    perp = float(np.exp(-(p * np.log(p)).sum())) if n else 0.0
    return QuantizerStats(codebook_size, used / codebook_size, None, perp, codebook_size - used,
                          {k: float(np.asarray(v.numpy() if hasattr(v, "numpy") else v)) for k, v in (losses or {}).items()}, {})
