"""Codebook health: usage, perplexity, dead codes, loss breakdown (QuantizerStats)."""
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..metrics.codebook import _usage_perplexity

__all__ = ["QuantizerStats", "codebook_stats"]


@dataclass
class QuantizerStats:
    """What a quantizer's last forward said about its codebook.

    batch_usage: fraction of codes used at least once in this batch.
    ema_usage: fraction of codes whose EMA cluster size is above the dead-code threshold
        (None when the quantizer keeps no EMA counts).
    perplexity: exp of the entropy of the batch code histogram (1 = one code, K = uniform).
    dead_codes: codes with EMA count below the threshold, or unused in this batch without EMA.
    losses: the loss terms by name, as floats.
    """
    codebook_size: int
    batch_usage: float
    ema_usage: "float | None"
    perplexity: float
    dead_codes: int
    losses: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def _to_numpy(a):
    if a is None:
        return None
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    return np.asarray(a)


def codebook_stats(indices, codebook_size, losses=None, ema_counts=None, dead_threshold=0.0):
    """QuantizerStats of one batch of code indices (any int array / Tensor, any shape).

    ema_counts: optional (codebook_size,) EMA cluster sizes; when given, ema_usage is the fraction of
    codes with count > dead_threshold and dead_codes counts codes with count < dead_threshold
    (count <= 0 when dead_threshold is 0). Without it, dead_codes is the number of codes unused in the batch.
    """
    if not isinstance(codebook_size, (int, np.integer)) or isinstance(codebook_size, bool) or codebook_size < 1:
        raise ValueError(f"codebook_stats: codebook_size must be a positive int, got {codebook_size!r}")
    codebook_size = int(codebook_size)
    if indices is None or isinstance(indices, (str, bytes, dict)):
        raise TypeError(f"codebook_stats: indices must be an integer array or Tensor, got {type(indices).__name__}")
    if losses is not None and not isinstance(losses, dict):
        raise TypeError(f"codebook_stats: losses must be a dict of name -> number, got {type(losses).__name__}")
    if isinstance(dead_threshold, bool) or not isinstance(dead_threshold, numbers.Real) or \
            not (math.isfinite(dead_threshold) and dead_threshold >= 0):
        raise ValueError(f"codebook_stats: dead_threshold must be a finite number >= 0, got {dead_threshold!r}")
    idx = _to_numpy(indices).reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"codebook_stats: indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= codebook_size):
        raise ValueError(f"codebook_stats: indices must lie in [0, {codebook_size}), got range "
                         f"[{idx.min()}, {idx.max()}]")
    hist = np.bincount(idx, minlength=codebook_size).astype(np.float64)
    used = int((hist > 0).sum())
    perplexity = _usage_perplexity(hist)[1]
    ema_usage = None
    if ema_counts is not None:
        c = _to_numpy(ema_counts).reshape(-1)
        if c.dtype == bool or not (np.issubdtype(c.dtype, np.integer) or np.issubdtype(c.dtype, np.floating)):
            raise TypeError(f"codebook_stats: ema_counts must be numbers, got dtype {c.dtype}")
        c = c.astype(np.float64)
        if c.size != codebook_size:
            raise ValueError(f"codebook_stats: ema_counts has {c.size} entries, expected {codebook_size}")
        ema_usage = float((c > dead_threshold).mean())
        dead = int((c < dead_threshold).sum()) if dead_threshold > 0 else int((c <= 0).sum())
    else:
        dead = codebook_size - used
    return QuantizerStats(codebook_size=codebook_size, batch_usage=used / codebook_size, ema_usage=ema_usage,
                          perplexity=perplexity, dead_codes=dead,
                          losses={k: float(_to_numpy(v)) for k, v in (losses or {}).items()}, extra={})
