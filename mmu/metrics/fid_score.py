"""Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium"), computed as pytorch-fid computes it
(github.com/mseitzer/pytorch-fid, src/pytorch_fid/fid_score.py).

    d² = ||mu1 - mu2||² + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2))

mu, S: the mean and the covariance (np.cov, N - 1) in float64 of the 2048-d pool3 features of
mmu.metrics.inception.InceptionV3 (pytorch-fid's FID Inception; its weights are a file the user
converts once, see that module). For a tokenizer, rFID is the FID between the reconstructions and
the originals of a held-out set.

- frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6): pytorch-fid's calculate_frechet_distance:
  scipy.linalg.sqrtm of S1 S2; if that is not finite, eps is added to both diagonals and sqrtm taken
  again (with a RuntimeWarning where pytorch-fid prints); a complex result whose diagonal has an
  imaginary part above 1e-3 raises ValueError ("Imaginary component"), otherwise its real part is used.
- FID: accumulates features batch by batch (update(images, real=...)), so the images need not be
  kept; the mean and covariance are merged exactly in float64 (Chan et al.'s pairwise update), equal
  to np.mean / np.cov over all features. compute() -> float.
- fid(real_images, fake_images, weights=...): both sets through one FID.

Images are mmu's convention, float (N, C, H, W) in [-1, 1] with C = 3 or 1 (grey is repeated to RGB,
as PIL's convert("RGB") does for pytorch-fid); values are clipped to [-1, 1] (what an image file
holds) and mapped to [0, 1], pytorch-fid's input range. Like every FID, the value depends on the
number of images (the covariance of 2048 features needs well over 2048 images to be full rank; with
fewer it is biased upwards): compare FIDs only at equal sample sizes.
"""
import warnings

import numpy as np

from ..autograd import no_grad
from .inception import BLOCK_INDEX_BY_DIM, InceptionV3

__all__ = ["frechet_distance", "FID", "fid"]


def _stats_array(x, name, ndim, fn):
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        x = x.detach().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{fn}: {name} must be a numeric array, got {type(x).__name__}") from e
    a = np.atleast_1d(a) if ndim == 1 else np.atleast_2d(a)
    if a.ndim != ndim or (ndim == 2 and a.shape[0] != a.shape[1]):
        raise ValueError(f"{fn}: {name} must be a {'vector' if ndim == 1 else 'square matrix'}, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{fn}: {name} must be finite (found NaN or inf)")
    return a


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """The Fréchet distance d² between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's
    calculate_frechet_distance: ||mu1 - mu2||² + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2)),
    the square root by scipy.linalg.sqrtm, retried with eps added to both diagonals when not finite;
    a complex square root whose diagonal has |imaginary part| > 1e-3 raises ValueError. Float64.

    mu1, mu2: (d,) means; sigma1, sigma2: (d, d) covariances (NumPy arrays or mmu Tensors). -> float."""
    fn = "mmu.metrics.frechet_distance"
    from scipy import linalg   # scipy comes with scikit-learn / scikit-image, mmu's dependencies

    mu1, mu2 = _stats_array(mu1, "mu1", 1, fn), _stats_array(mu2, "mu2", 1, fn)
    sigma1, sigma2 = _stats_array(sigma1, "sigma1", 2, fn), _stats_array(sigma2, "sigma2", 2, fn)
    if mu1.shape != mu2.shape:
        raise ValueError(f"{fn}: mu1 and mu2 have different lengths, {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape[0] != mu1.shape[0]:
        raise ValueError(f"{fn}: sigma1 {sigma1.shape} and sigma2 {sigma2.shape} must both be "
                         f"({mu1.shape[0]}, {mu1.shape[0]}) for means of shape {mu1.shape}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps >= 0:
        raise ValueError(f"{fn}: eps must be a number >= 0, got {eps!r}")

    diff = mu1 - mu2
    # the product may be almost singular (fewer samples than features); pytorch-fid asks for the error
    # estimate here (disp=False) instead of scipy's printed/warned message, so mmu stays quiet too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    # numerical error may leave a slight imaginary component
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"{fn}: Imaginary component {m} in sqrtm(sigma1 sigma2): the covariances are not "
                             "positive semi-definite (or far too few samples)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class _Moments:
    """Running mean and scatter matrix (sum of centred outer products) of feature rows, float64;
    batches merged with Chan, Golub & LeVeque's pairwise update, so the result equals one pass of
    np.mean / np.cov over all rows up to rounding."""

    def __init__(self, dims):
        self.n, self.mean, self.scatter = 0, np.zeros(dims), np.zeros((dims, dims))

    def add(self, f):
        f = np.asarray(f, np.float64)
        nb = f.shape[0]
        if nb == 0:
            return
        mb = f.mean(axis=0)
        c = f - mb
        sb = c.T @ c
        n = self.n + nb
        delta = mb - self.mean
        self.scatter += sb + np.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    def stats(self):
        return self.mean.copy(), self.scatter / (self.n - 1)


class FID:
    """Streaming FID between a "real" and a "fake" image set (pytorch-fid's numbers).

    FID(weights=None, model=None, batch_size=50, dims=2048, eps=1e-6)
        weights: the FID Inception weight file (see mmu.metrics.inception; FileNotFoundError with how to
        make it when missing); model: an InceptionV3 to use instead (e.g. InceptionV3(pretrained=False)
        in tests, or one model shared by several FID objects). dims: 2048 (pool3, the standard), or
        pytorch-fid's 768 / 192 / 64. batch_size: images per Inception forward.
    update(images, real): adds a batch, (N, C, H, W) in [-1, 1] (C = 3 or 1); only the features'
        running mean and covariance are kept. update_features(features, real) adds (N, dims) features.
    statistics(real) -> (mu, sigma) float64; compute() -> float; reset(real=None) clears one set or both.
    Each set needs at least 2 images."""

    def __init__(self, weights=None, model=None, batch_size=50, dims=2048, eps=1e-6):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"FID: batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(dims, bool) or dims not in BLOCK_INDEX_BY_DIM:
            raise ValueError(f"FID: dims must be one of {sorted(BLOCK_INDEX_BY_DIM)}, got {dims!r}")
        if model is not None and weights is not None:
            raise TypeError("FID: give weights (a file) or model (an InceptionV3), not both")
        if model is None:
            model = InceptionV3(pretrained=True, weights=weights)
        elif not isinstance(model, InceptionV3):
            raise TypeError(f"FID: model must be an mmu.metrics.inception.InceptionV3, got {type(model).__name__}")
        self.model, self.batch_size, self.dims, self.eps = model, int(batch_size), int(dims), eps
        self.reset()

    def reset(self, real=None):
        """Forgets the real set (real=True), the fake set (real=False) or both (None)."""
        if real is None or real:
            self._real = _Moments(self.dims)
        if real is None or not real:
            self._fake = _Moments(self.dims)

    def _images(self, images):
        op = "FID.update"
        if hasattr(images, "detach") and hasattr(images, "numpy"):
            images = images.detach().numpy()
        a = np.asarray(images)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{op}: images must be a float array (N, C, H, W) in [-1, 1], got dtype {a.dtype}")
        if a.ndim != 4 or a.shape[1] not in (1, 3):
            raise ValueError(f"{op}: images must be (N, 3, H, W) or (N, 1, H, W) in [-1, 1], got shape {a.shape}")
        if a.size and not np.isfinite(a).all():
            raise ValueError(f"{op}: images must be finite (found NaN or inf)")
        return a

    def features(self, images):
        """(N, dims) float64 Inception features of images (N, C, H, W) in [-1, 1], batch by batch."""
        a = self._images(images)
        out = np.empty((a.shape[0], self.dims))
        with no_grad():
            for i in range(0, a.shape[0], self.batch_size):
                b = a[i:i + self.batch_size].astype(np.float32)
                if b.shape[1] == 1:
                    b = np.repeat(b, 3, axis=1)
                b = np.ascontiguousarray((np.clip(b, -1.0, 1.0) + 1.0) * 0.5)   # [-1, 1] -> pytorch-fid's [0, 1]
                out[i:i + len(b)] = self.model.features(b, self.dims).numpy()
        return out

    def update(self, images, real):
        """Adds images (N, C, H, W) in [-1, 1] to the real (real=True) or fake set."""
        if not isinstance(real, (bool, np.bool_)):
            raise TypeError(f"FID.update: real must be True or False, got {real!r}")
        (self._real if real else self._fake).add(self.features(images))

    def update_features(self, features, real):
        """Adds precomputed (N, dims) features (e.g. from FID.features) to the real or fake set."""
        if not isinstance(real, (bool, np.bool_)):
            raise TypeError(f"FID.update_features: real must be True or False, got {real!r}")
        f = np.asarray(features.detach().numpy() if hasattr(features, "detach") else features, np.float64)
        if f.ndim != 2 or f.shape[1] != self.dims:
            raise ValueError(f"FID.update_features: features must be (N, {self.dims}), got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError("FID.update_features: features must be finite (found NaN or inf)")
        (self._real if real else self._fake).add(f)

    def count(self, real):
        """How many images the real (real=True) or fake set holds."""
        return (self._real if real else self._fake).n

    def statistics(self, real):
        """(mu (dims,), sigma (dims, dims)) float64 of the real or fake set (np.mean / np.cov)."""
        m = self._real if real else self._fake
        if m.n < 2:
            raise ValueError(f"FID: the {'real' if real else 'fake'} set has {m.n} image(s); a covariance needs "
                             "at least 2")
        return m.stats()

    def compute(self):
        """The FID between the real and the fake set (float)."""
        mu1, s1 = self.statistics(True)
        mu2, s2 = self.statistics(False)
        return frechet_distance(mu1, s1, mu2, s2, eps=self.eps)


def fid(real_images, fake_images, weights=None, model=None, batch_size=50, dims=2048):
    """FID between two image sets (N, C, H, W) in [-1, 1] (C = 3 or 1; the sets may differ in size and
    resolution), pytorch-fid's computation: InceptionV3 pool3 features (weights: the FID Inception weight
    file, see mmu.metrics.inception; or model= an InceptionV3), float64 mean and covariance, and
    frechet_distance. For a tokenizer's rFID pass the originals and their reconstructions. -> float."""
    f = FID(weights=weights, model=model, batch_size=batch_size, dims=dims)
    f.update(real_images, real=True)
    f.update(fake_images, real=False)
    return f.compute()
