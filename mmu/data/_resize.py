"""Antialiased bilinear resizing in NumPy (no SciPy / Pillow needed).

The resize is separable (one pass per axis, out = Wh @ img @ Ww.T with a (out, in) weight matrix per
axis, applied as a gather of its few nonzero taps). Each row of a weight matrix is a triangle (tent) filter centred on the output pixel's centre in input
coordinates (half-pixel convention, like Pillow's BILINEAR and torch's align_corners=False); when
shrinking, the tent is widened by the scale factor so every input pixel contributes (area-style
antialiasing, Pillow's "reducing" behaviour). Rows are renormalised at the borders, which equals
edge clamping when enlarging.
"""
import functools

import numpy as np


@functools.lru_cache(maxsize=256)
def _weights(n_in, n_out):
    # (n_out, n_in) float64: row i holds the tent weights of output pixel i.
    scale = n_in / n_out
    support = max(scale, 1.0)                      # widen the tent when shrinking (antialias)
    centers = (np.arange(n_out) + 0.5) * scale     # output centres in input coordinates
    pos = np.arange(n_in) + 0.5
    w = 1.0 - np.abs(pos[None, :] - centers[:, None]) / support
    np.maximum(w, 0.0, out=w)
    w /= w.sum(axis=1, keepdims=True)
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=256)
def _taps(n_in, n_out):
    # The nonzero part of _weights as (n_out, T) input indices and weights (T = widest row; short
    # rows padded with weight 0): a tent touches ~2*scale+2 inputs, so a gather of T taps is far
    # cheaper than a dense (n_out, n_in) GEMM for photo-sized images.
    w = _weights(n_in, n_out)
    nz = w > 0
    t = int(nz.sum(axis=1).max())
    first = nz.argmax(axis=1)
    idx = np.minimum(first[:, None] + np.arange(t)[None, :], n_in - 1)
    wt = np.take_along_axis(w, idx, axis=1) * (first[:, None] + np.arange(t)[None, :] < n_in)
    idx.setflags(write=False)
    wt = wt.astype(np.float32)
    wt.setflags(write=False)
    return idx, wt


def resize(images, size):
    """Resize images (..., H, W) to (..., oh, ow) with an antialiased bilinear (tent) filter: the
    same filter as Pillow's Image.resize(..., BILINEAR) (widened when shrinking), on float data.

    images: NumPy array with at least 2 dims, the last two being H and W; size: int (square) or
    (oh, ow). Computes in float32 and returns a new float32 array (a copy when the size is
    unchanged).
    """
    x = np.asarray(images)
    if x.ndim < 2:
        raise ValueError(f"resize: images needs at least 2 dims (..., H, W), got shape {x.shape}")
    oh, ow = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    oh, ow = int(oh), int(ow)
    if oh < 1 or ow < 1:
        raise ValueError(f"resize: size must be positive, got {(oh, ow)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    h, w = x.shape[-2:]
    if (h, w) == (oh, ow):
        return x.copy()
    if w != ow:      # W pass: out[..., j] = sum_t x[..., idx[j, t]] * wt[j, t]
        idx, wt = _taps(w, ow)
        y = x[..., idx[:, 0]] * wt[:, 0]
        for t in range(1, idx.shape[1]):
            y += x[..., idx[:, t]] * wt[:, t]
        x = y
    if h != oh:      # H pass, the same along axis -2
        idx, wt = _taps(h, oh)
        y = x[..., idx[:, 0], :] * wt[:, 0, None]
        for t in range(1, idx.shape[1]):
            y += x[..., idx[:, t], :] * wt[:, t, None]
        x = y
    return x
