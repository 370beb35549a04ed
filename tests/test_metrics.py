"""mmu.metrics: PSNR against its formula, SSIM against scikit-image, codebook usage / perplexity /
bits on known codes, throughput, LPIPS distance through a stand-in module, and bad inputs."""
import math

import numpy as np
import pytest

import mmu
from mmu.metrics import bits_per_image, codebook_usage, lpips_distance, perplexity, psnr, ssim, throughput


def _pair(shape, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    y = np.clip(x + noise * rng.standard_normal(shape), -1, 1).astype(np.float32)
    return x, y


def test_psnr_formula():
    x, y = _pair((3, 2, 5, 6))
    ref = [10 * math.log10(4.0 / np.mean((x[i].astype(np.float64) - y[i]) ** 2)) for i in range(3)]
    np.testing.assert_allclose(psnr(x, y, reduction="none"), ref, rtol=1e-12)
    assert psnr(x, y) == pytest.approx(np.mean(ref), rel=1e-12)
    assert psnr(x, y, reduction="sum") == pytest.approx(np.sum(ref), rel=1e-12)
    # data_range 1 for [0, 1] images: 20 log10(1) - 10 log10(mse)
    a, b = (x[0] + 1) / 2, (y[0] + 1) / 2
    assert psnr(a, b, data_range=1.0) == pytest.approx(-10 * math.log10(np.mean((a.astype(np.float64) - b) ** 2)))
    assert psnr(x, x) == math.inf
    # single images (C, H, W) / (H, W), mmu Tensors
    assert psnr(x[1], y[1]) == pytest.approx(ref[1])
    assert psnr(x[1, 0], y[1, 0]) == pytest.approx(10 * math.log10(4.0 / np.mean((x[1, 0].astype(np.float64) - y[1, 0]) ** 2)))
    assert psnr(mmu.tensor(x), mmu.tensor(y)) == pytest.approx(np.mean(ref), rel=1e-12)


def test_psnr_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _pair((2, 3, 16, 16), seed=1)
    for i in range(2):
        assert psnr(x[i], y[i]) == pytest.approx(skm.peak_signal_noise_ratio(x[i], y[i], data_range=2.0), rel=1e-6)


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    x, y = _pair((3, 3, 16, 21), seed=2)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    ref = [skm.structural_similarity(x64[i], y64[i], data_range=2.0, channel_axis=0, **kw) for i in range(3)]
    np.testing.assert_allclose(ssim(x, y, reduction="none"), ref, atol=1e-12)
    assert ssim(x, y) == pytest.approx(np.mean(ref), abs=1e-12)
    # grayscale (H, W), another data range, a smooth image pair (high SSIM)
    a, b = (x64[0, 0] + 1) / 2, (y64[0, 0] + 1) / 2
    assert ssim(a, b, data_range=1.0) == pytest.approx(skm.structural_similarity(a, b, data_range=1.0, **kw), abs=1e-12)
    g = np.linspace(-1, 1, 24 * 24).reshape(1, 1, 24, 24)
    h = g * 0.9 + 0.05
    assert ssim(g, h) == pytest.approx(skm.structural_similarity(g[0, 0], h[0, 0], data_range=2.0, **kw), abs=1e-12)
    # images smaller than the 11-px window (8x8 digits): skimage's largest odd win_size that fits
    for h, w in ((8, 8), (5, 9), (10, 12), (4, 4)):
        a, b = _pair((2, h, w), noise=0.3, seed=h * w)
        a, b = a.astype(np.float64), b.astype(np.float64)
        ws = min(h, w) - (1 - min(h, w) % 2)
        assert ssim(a, b) == pytest.approx(
            skm.structural_similarity(a, b, data_range=2.0, channel_axis=0, win_size=ws, **kw), abs=1e-12)
    # float32 inputs: skimage computes in float32 then, so compare loosely
    assert ssim(x[0], y[0]) == pytest.approx(skm.structural_similarity(x[0], y[0], data_range=2.0, channel_axis=0, **kw), abs=1e-6)


def test_ssim_properties():
    x, y = _pair((2, 1, 12, 12), seed=3)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-12)
    assert ssim(x, y) < ssim(x, np.clip(x + 0.01, -1, 1))
    z, _ = _pair((2, 1, 12, 12), seed=4)
    assert abs(ssim(x, z)) < 0.2                                # independent noise
    assert ssim(mmu.tensor(x), mmu.tensor(y)) == pytest.approx(ssim(x, y), abs=1e-12)


def test_image_metric_errors():
    x, y = _pair((2, 3, 16, 16))
    for f in (psnr, ssim):
        with pytest.raises(ValueError, match="same shape"):
            f(x, y[:1])
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            f(x[None, None], y[None, None])  # 5-D is a batch of clips (B, C, T, H, W); 6-D is nothing
        with pytest.raises(ValueError, match="finite"):
            bad = y.copy()
            bad[0, 0, 0, 0] = np.nan
            f(x, bad)
        with pytest.raises(ValueError, match="data_range"):
            f(x, y, data_range=0)
        with pytest.raises(TypeError, match="data_range"):
            f(x, y, data_range="2")
        with pytest.raises(ValueError, match="reduction"):
            f(x, y, reduction="avg")
        with pytest.raises(TypeError, match="numbers"):
            f(np.array(["a"]), np.array(["b"]))
    with pytest.raises(ValueError, match="at least 3x3"):
        ssim(x[..., :2, :8], y[..., :2, :8])


def test_codebook_usage_perplexity_bits():
    codes = np.array([[0, 1], [1, 3]])
    assert codebook_usage(codes, 8) == 3 / 8
    p = np.array([1, 2, 1]) / 4
    assert perplexity(codes, 8) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert perplexity(np.arange(16).repeat(3), 16) == pytest.approx(16.0)
    assert perplexity(np.full((4, 4), 5), 16) == pytest.approx(1.0)
    assert codebook_usage(np.arange(16), 16) == 1.0
    assert codebook_usage(mmu.tensor(np.array([2, 2], np.int64)), 4) == 0.25
    assert codebook_usage(np.array([0.0, 3.0]), 4) == 0.5          # integral floats are accepted
    assert bits_per_image(256, 1024) == 2560.0
    assert bits_per_image(16, 2) == 16.0
    assert bits_per_image(64, 1000) == pytest.approx(64 * math.log2(1000))


def test_codebook_errors():
    for f in (codebook_usage, perplexity):
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            f(np.array([0, 4]), 4)
        with pytest.raises(ValueError, match=r"\[-1, 2\]"):
            f(np.array([-1, 2]), 4)
        with pytest.raises(ValueError, match="empty"):
            f(np.zeros((0,), np.int64), 4)
        with pytest.raises(TypeError, match="integers"):
            f(np.array([0.5]), 4)
        with pytest.raises(ValueError, match="codebook_size must be >= 1"):
            f(np.array([0]), 0)
        with pytest.raises(TypeError, match="codebook_size must be an int"):
            f(np.array([0]), 4.0)
    with pytest.raises(ValueError, match="tokens_per_image"):
        bits_per_image(0, 16)
    with pytest.raises(TypeError, match="codebook_size"):
        bits_per_image(4, "16")


def test_throughput():
    calls = []
    batch = np.zeros((5, 3, 4, 4), np.float32)
    ips = throughput(lambda b: calls.append(len(b)), batch, repeat=4)
    assert calls == [5] * 5 and ips > 0                         # one warm-up + 4 timed calls
    assert throughput(lambda b: None, mmu.tensor(batch), repeat=1) > 0
    with pytest.raises(TypeError, match="callable"):
        throughput(3, batch)
    with pytest.raises(ValueError, match="repeat"):
        throughput(lambda b: None, batch, repeat=0)
    with pytest.raises(ValueError, match="no images"):
        throughput(lambda b: None, batch[:0])


class _StandInLPIPS:
    """Contract stand-in for mmu.losses.LPIPS: (x, y) mmu Tensors (B, 3, H, W) -> (B, 1, 1, 1)."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, y):
        assert isinstance(x, mmu.Tensor) and x.shape[1] == 3 and not mmu.is_grad_enabled()
        self.seen.append(x.shape[0])
        d = ((x - y) * (x - y)).mean(dim=(1, 2, 3), keepdim=True)
        return d


def test_lpips_distance_with_stand_in():
    x, y = _pair((5, 3, 8, 8))
    m = _StandInLPIPS()
    ref = ((x.astype(np.float64) - y) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(lpips_distance(x, y, m, reduction="none"), ref, rtol=1e-5)
    assert lpips_distance(x, y, m, batch_size=2) == pytest.approx(ref.mean(), rel=1e-5)
    assert m.seen == [5, 2, 2, 1]
    g, h = x[:, :1], y[:, :1]                                   # grayscale: repeated to 3 channels
    np.testing.assert_allclose(lpips_distance(g, h, m, reduction="none"),
                               ((g.astype(np.float64) - h) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        lpips_distance(x[:, :2], y[:, :2], m)
    with pytest.raises(ValueError, match="same shape"):
        lpips_distance(x, y[:2], m)
    with pytest.raises(TypeError, match="callable"):
        lpips_distance(x, y, None)
    with pytest.raises(ValueError, match="expected"):
        lpips_distance(x, y, lambda a, b: mmu.zeros(2, 1, 1, 1))
    with pytest.raises(ValueError, match="batch_size"):
        lpips_distance(x, y, m, batch_size=0)


def test_lpips_distance_with_mmu_lpips():
    LPIPS = getattr(mmu.losses, "LPIPS", None)
    if LPIPS is None:
        pytest.skip("mmu.losses.LPIPS has not landed yet")
    try:
        model = LPIPS(pretrained=False)
    except NotImplementedError:
        pytest.skip("mmu.losses.LPIPS is a stub")
    x, y = _pair((2, 3, 32, 32))
    d = lpips_distance(x, y, model, reduction="none")
    assert d.shape == (2,) and np.all(np.isfinite(d)) and np.all(d >= 0)
    assert lpips_distance(x, x, model) == pytest.approx(0.0, abs=1e-6)
