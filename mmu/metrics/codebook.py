"""Codebook metrics: usage, perplexity and bits per image of discrete codes, and throughput.

codes: integer arrays of any shape (e.g. (B, h, w) from Tokenizer.encode) as NumPy arrays or mmu
Tensors; every value must lie in [0, codebook_size).
"""
import math
import time

import numpy as np

__all__ = ["codebook_usage", "perplexity", "bits_per_image", "throughput"]


def _int_arg(fn, name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{fn}: {name} must be >= {lo}, got {v}")
    return int(v)


def _counts(fn, codes, codebook_size):
    # -> (K,) int64 histogram of the codes, validated.
    k = _int_arg(fn, "codebook_size", codebook_size)
    if hasattr(codes, "detach") and hasattr(codes, "numpy"):
        codes = codes.detach().numpy()
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer):
        if c.dtype == object or not np.issubdtype(c.dtype, np.number):
            raise TypeError(f"{fn}: codes must be an integer array, got dtype {c.dtype}")
        if not np.all(np.isfinite(c)) or not np.all(c == np.round(c)):
            raise TypeError(f"{fn}: codes must be integers, got non-integral values of dtype {c.dtype}")
    if c.size == 0:
        raise ValueError(f"{fn}: codes is empty, shape {c.shape}")
    c = c.astype(np.int64).ravel()
    lo, hi = int(c.min()), int(c.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"{fn}: codes must lie in [0, {k}) for codebook_size={k}, got values in [{lo}, {hi}]")
    return np.bincount(c, minlength=k)


def _usage_perplexity(counts):
    """(usage, perplexity) of a code histogram counts (K,): the fraction of the K codes used and
    exp(entropy) of the empirical distribution (0.0 for an empty histogram). The one formula of mmu
    (codebook_usage, perplexity, the quantizers' QuantizerStats, the Trainer's logs)."""
    n = np.asarray(counts)
    total = n.sum()
    if total <= 0:
        return 0.0, 0.0
    p = n[n > 0] / total
    return float(np.count_nonzero(n)) / n.size, float(np.exp(-(p * np.log(p)).sum()))


def codebook_usage(codes, codebook_size):
    """Fraction of the codebook's entries that occur at least once in `codes` (0..1]."""
    return _usage_perplexity(_counts("mmu.metrics.codebook_usage", codes, codebook_size))[0]


def perplexity(codes, codebook_size):
    """exp(H) of the empirical code distribution, H = -sum p log p (natural log): the effective
    number of codes used, from 1 (one code) to codebook_size (uniform use). VQ-VAE / taming report
    it per batch; here it is over all of `codes`."""
    return _usage_perplexity(_counts("mmu.metrics.perplexity", codes, codebook_size))[1]


def bits_per_image(tokens_per_image, codebook_size):
    """tokens_per_image * log2(codebook_size): the size of an image's code in bits (e.g. 16x16
    tokens from 1024 codes -> 2560 bits). For residual quantizers count every level's tokens."""
    fn = "mmu.metrics.bits_per_image"
    t = _int_arg(fn, "tokens_per_image", tokens_per_image)
    k = _int_arg(fn, "codebook_size", codebook_size)
    return t * math.log2(k)


def throughput(fn, batch, repeat=3):
    """Images per second of `fn(batch)`: one untimed warm-up call (oneDNN primitives, allocator
    caches), then `repeat` calls timed with time.perf_counter; returns len(batch) * repeat / seconds.

    fn: a callable taking the batch (e.g. tokenizer.encode, or lambda c: tokenizer.decode(c));
    batch: an array / Tensor with the images (or codes) on dim 0.
    """
    name = "mmu.metrics.throughput"
    if not callable(fn):
        raise TypeError(f"{name}: fn must be callable, got {type(fn).__name__}")
    repeat = _int_arg(name, "repeat", repeat)
    shape = getattr(batch, "shape", None)
    if shape is not None:
        n = int(shape[0]) if len(shape) else 0
    else:
        try:
            n = len(batch)
        except TypeError:
            raise TypeError(f"{name}: batch must be an array or Tensor with the images on dim 0, "
                            f"got {type(batch).__name__}") from None
    if n < 1:
        raise ValueError(f"{name}: batch holds no images (shape {shape})")
    fn(batch)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(batch)
    dt = time.perf_counter() - t0
    return n * repeat / max(dt, 1e-12)
