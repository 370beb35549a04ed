"""Image-quality metrics: PSNR, SSIM (Wang et al. 2004) and LPIPS distance.

Images are float NCHW in [-1, 1] (data_range 2.0) given as NumPy arrays or mmu Tensors; a single
image may be (C, H, W) or (H, W). Computations run in float64 NumPy.
"""
import numpy as np

__all__ = ["psnr", "ssim", "lpips_distance"]

_REDUCTIONS = ("mean", "sum", "none")


def _as_array(x, fn, name):
    # NumPy array of an mmu Tensor / array / nested list (no copy for a float ndarray).
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        x = x.detach().numpy()
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{fn}: {name} must be a NumPy array or an mmu Tensor, got {type(x).__name__}") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{fn}: {name} must hold numbers, got dtype {a.dtype}")
    return a


def _image_pair(x, y, fn):
    # -> (x, y) float64 (B, C, H, W), validated: same shape, 2..4 dims, finite.
    a, b = _as_array(x, fn, "x"), _as_array(y, fn, "y")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: x and y must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (2, 3, 4, 5):
        raise ValueError(f"{fn}: images must be (B, C, H, W), (C, H, W) or (H, W) (or clips (B, C, T, H, W)), "
                         f"got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{fn}: images are empty, shape {a.shape}")
    a = a.astype(np.float64).reshape((1,) * (4 - a.ndim) + a.shape)
    b = b.astype(np.float64).reshape(a.shape)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{fn}: x and y must be finite (found NaN or inf)")
    return a, b


def _check_range(fn, data_range):
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.floating, np.integer)):
        raise TypeError(f"{fn}: data_range must be a number, got {type(data_range).__name__}")
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{fn}: data_range must be positive and finite, got {data_range}")
    return float(data_range)


def _reduce(fn, v, reduction):
    if reduction == "mean":
        return float(v.mean())
    if reduction == "sum":
        return float(v.sum())
    if reduction == "none":
        return v
    raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def psnr(x, y, data_range=2.0, reduction="mean"):
    """Peak signal-to-noise ratio in dB, per image: 10 log10(data_range^2 / MSE), the MSE taken over
    (C, H, W); inf for identical images.

    x, y: (B, C, H, W) (or one image (C, H, W) / (H, W), or clips (B, C, T, H, W): one PSNR per clip,
    the MSE over (C, T, H, W)), same shape; data_range: max - min of the
    pixel scale (2.0 for [-1, 1]). reduction: "mean" (float, the mean of the per-image PSNRs, as
    taming-transformers / most tokenizer papers report), "sum", or "none" ((B,) float64 array).
    """
    fn = "mmu.metrics.psnr"
    r = _check_range(fn, data_range)
    a, b = _image_pair(x, y, fn)
    return _reduce(fn, _psnr_values(a, b, r), reduction)


def _psnr_values(a, b, data_range):
    """Per-item PSNR (float64 (N,)) of a against b, arrays (N, ...) (images or clips), unchecked: the
    one PSNR formula of mmu (psnr, the Trainer's logs and evaluation, mmu compare)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = ((a - b) ** 2).reshape(a.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        # in logs: r * r under/overflows for a data_range below ~1e-154 or above ~1e154 (-inf / inf dB)
        return 20.0 * np.log10(float(data_range)) - 10.0 * np.log10(mse)


_WIN = 11          # Gaussian window of Wang et al. 2004: 11 taps, sigma 1.5
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def _gauss():
    # skimage / scipy's kernel: exp(-t^2 / 2 sigma^2) on t = -5..5 (radius int(3.5 * 1.5 + 0.5)), normalised
    t = np.arange(_WIN, dtype=np.float64) - _WIN // 2
    g = np.exp(-0.5 * (t / _SIGMA) ** 2)
    return g / g.sum()


def _band(n):
    # (n-10, n) matrix whose row i holds the kernel at columns i..i+10: m @ band.T is the "valid"
    # 1-D filtering of m's last axis, done as one BLAS GEMM instead of 11 NumPy passes.
    g = _gauss()
    b = np.zeros((n - _WIN + 1, n))
    for i in range(n - _WIN + 1):
        b[i, i:i + _WIN] = g
    return b


def _filter_valid(m):
    # m (..., H, W) -> (..., H-10, W-10): separable Gaussian, "valid" positions only (the border
    # positions skimage crops away after filtering, so no padding rule is involved).
    lead, (h, w) = m.shape[:-2], m.shape[-2:]
    bh, bw = _band(h), _band(w)
    oh, ow = bh.shape[0], bw.shape[0]
    k = int(np.prod(lead, dtype=np.int64))
    t = m.reshape(k * h, w) @ bw.T                                   # W pass (k*h, ow)
    t = t.reshape(k, h, ow).transpose(1, 0, 2).reshape(h, k * ow)
    out = (bh @ t).reshape(oh, k, ow).transpose(1, 0, 2)            # H pass
    return out.reshape(*lead, oh, ow)


def ssim(x, y, data_range=2.0, reduction="mean"):
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004), per image.

    Gaussian-weighted local statistics (window 11, sigma 1.5, population covariances), K1 = 0.01,
    K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 with L = data_range; the SSIM map is averaged over the
    positions whose window lies inside the image and over the channels (each channel separately,
    then averaged). Equals skimage.metrics.structural_similarity(x, y, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=L, channel_axis=0) per image.

    Images smaller than 11 px (e.g. 8x8 digits) follow skimage's rule for a smaller `win_size`:
    the largest odd size w that fits; the same Gaussian filter with symmetric padding, then (w-1)//2
    border pixels dropped (= structural_similarity(..., win_size=w)).

    x, y: (B, C, H, W) (or (C, H, W) / (H, W), or clips (B, C, T, H, W): the map averaged over the
    frames too), H and W >= 3; reduction: "mean" (float), "sum", "none" ((B,) float64 array).
    """
    fn = "mmu.metrics.ssim"
    r = _check_range(fn, data_range)
    a, b = _image_pair(x, y, fn)
    side = min(a.shape[-2:])
    if side < 3:
        raise ValueError(f"{fn}: images must be at least 3x3, got {a.shape[-2]}x{a.shape[-1]}")
    c1, c2 = (_K1 * r) ** 2, (_K2 * r) ** 2
    maps = np.stack([a, b, a * a, b * b, a * b])
    if side >= _WIN:
        f = _filter_valid(maps)     # one pass over the five maps
    else:
        # smaller than the window: skimage's rule with win_size = the largest odd size that fits
        # (filter with symmetric padding, then drop (win_size-1)//2 border pixels)
        r_ = _WIN // 2
        crop = (side - (1 - side % 2) - 1) // 2
        pad = [(0, 0)] * (maps.ndim - 2) + [(r_, r_), (r_, r_)]
        f = _filter_valid(np.pad(maps, pad, mode="symmetric"))
        if crop:
            f = f[..., crop:-crop, crop:-crop]
    mx, my, exx, eyy, exy = f
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    v = s.reshape(s.shape[0], -1).mean(axis=1)
    return _reduce(fn, v, reduction)


def lpips_distance(x, y, lpips_model, batch_size=None, reduction="mean"):
    """LPIPS perceptual distance (Zhang et al. 2018) computed by an mmu.losses.LPIPS module.

    x, y: (B, C, H, W) images in [-1, 1], C = 3, or C = 1 (repeated to 3 channels, the usual way
    of scoring grayscale images with an RGB network); lpips_model: a callable
    `lpips_model(x, y) -> (B, 1, 1, 1)` such as mmu.losses.LPIPS(weights=...) (its weights come
    from the lpips package's VGG; see mmu.losses.lpips.convert_torch_weights). Runs under
    mmu.no_grad, `batch_size` images at a time (default: all). reduction: "mean" (float), "sum",
    or "none" ((B,) float64 array).
    """
    import mmu

    fn = "mmu.metrics.lpips_distance"
    if not callable(lpips_model):
        raise TypeError(f"{fn}: lpips_model must be callable (an mmu.losses.LPIPS), got {type(lpips_model).__name__}")
    a, b = _as_array(x, fn, "x"), _as_array(y, fn, "y")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: x and y must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] == 0:
        raise ValueError(f"{fn}: images must be (B, 3, H, W) or (B, 1, H, W), got shape {a.shape}")
    if a.shape[1] == 1:
        a, b = np.repeat(a, 3, axis=1), np.repeat(b, 3, axis=1)
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    n = a.shape[0]
    if batch_size is None:
        batch_size = n
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int or None, got {batch_size!r}")
    parts = []
    with mmu.no_grad():
        for i in range(0, n, batch_size):
            out = lpips_model(mmu.tensor(a[i:i + batch_size]), mmu.tensor(b[i:i + batch_size]))
            d = np.asarray(out.detach().numpy() if hasattr(out, "detach") else out, dtype=np.float64)
            m = min(batch_size, n - i)
            if d.size != m:
                raise ValueError(f"{fn}: lpips_model returned shape {d.shape} for {m} images; "
                                 f"expected ({m}, 1, 1, 1)")
            parts.append(d.reshape(m))
    return _reduce(fn, np.concatenate(parts), reduction)
