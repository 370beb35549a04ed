"""Built-in datasets: scikit-learn's 8x8 digits and natural-image crops of the sample images shipped
inside scikit-image and scikit-learn (nothing is downloaded).

Every dataset is an `ImageDataset`: float32 NCHW images in [-1, 1] held as one NumPy array
(`.images`, shape (N, C, H, W)), `len()`, `ds[i] -> (C, H, W)`, `.name`. Built datasets are cached
in-process (the tests, the trainer and the CLI ask for the same ones again), so their `.images`
array is read-only: copy it (`ds.images.copy()`) before modifying it in place.

scikit-learn and scikit-image are imported inside the builders only, so `import mmu` stays fast.
"""
import functools

import numpy as np

from ._resize import resize

__all__ = ["ImageDataset", "digits", "natural_crops", "NATURAL_TRAIN_SOURCES", "NATURAL_TEST_SOURCES"]


class ImageDataset:
    """A set of float32 images (N, C, H, W) in [-1, 1] held in memory.

    images: array-like (N, C, H, W) (converted to float32); name: a short label used in reports.
    Extra keyword arguments become attributes (e.g. `labels` for digits, `source_index` and
    `sources` for natural crops, `files` for an image folder).
    """

    def __init__(self, images, name="images", **attrs):
        x = np.asarray(images)
        if x.ndim != 4:
            raise ValueError(f"ImageDataset: images must be (N, C, H, W), got shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"ImageDataset: images is empty, shape {x.shape}")
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        self.images = x
        self.name = str(name)
        for k, v in attrs.items():
            setattr(self, k, v)

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        """ds[i] -> (C, H, W) float32 (a view of `.images`); a slice or an integer array gives
        (n, C, H, W)."""
        if isinstance(i, slice):
            return self.images[i]
        if isinstance(i, (list, np.ndarray)):
            idx = np.asarray(i)
            if idx.dtype.kind not in "iu":
                raise TypeError(f"ImageDataset '{self.name}': index arrays must hold ints, got {idx.dtype}")
            return self.images[idx]
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"ImageDataset '{self.name}': index must be an int, a slice or an int array, "
                            f"got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"ImageDataset '{self.name}': index {i} out of range for {n} images")
        return self.images[i]

    @property
    def shape(self):
        """(N, C, H, W)."""
        return self.images.shape

    @property
    def channels(self):
        """Image channels (C of the (N, C, H, W) images)."""
        return self.images.shape[1]

    @property
    def size(self):
        """Image side (H; every built-in dataset is square)."""
        return self.images.shape[2]

    def __repr__(self):
        n, c, h, w = self.images.shape
        return f"ImageDataset(name={self.name!r}, n={n}, channels={c}, size={h}x{w})"


def _readonly(a):
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_split(fn, split):
    if not isinstance(split, str) or split not in ("train", "test"):
        raise ValueError(f"{fn}: split must be 'train' or 'test', got {split!r}")


def _check_int(fn, name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{fn}: {name} must be >= {lo}, got {v}")
    return int(v)


# ---------------------------------------------------------------------------------------------
# digits


def _sklearn_file(*parts):
    # Path of a data file inside the installed scikit-learn, found without importing sklearn
    # (its import takes ~1-2 s); None when sklearn is not installed there.
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=None)
def _digits_all():
    # The same parse as sklearn.datasets.load_digits (a gzipped CSV: 64 pixels + the label).
    path = _sklearn_file("datasets", "data", "digits.csv.gz")
    if path is not None:
        import gzip

        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits  # heavy import kept out of `import mmu`

        d = load_digits()
        images, target = d.images, d.target
    x = images.astype(np.float32)[:, None] / 8.0 - 1.0   # pixel values 0..16 -> [-1, 1]
    return x, target.astype(np.int64)


@functools.lru_cache(maxsize=32)
def _digits(size, split, test_fraction, seed):
    x, y = _digits_all()
    n = x.shape[0]
    n_test = int(round(n * test_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    idx = np.sort(perm[:n_test] if split == "test" else perm[n_test:])  # keep the file order
    imgs = x[idx]
    if size != 8:
        imgs = np.clip(resize(imgs, size), -1.0, 1.0)
    return _readonly(imgs), _readonly(y[idx]), _readonly(idx.astype(np.int64))


def digits(size=16, split="train", test_fraction=0.2, seed=0):
    """scikit-learn's handwritten digits (1797 images of 8x8, 1 channel) as an ImageDataset.

    Pixel values 0..16 are scaled to [-1, 1]; size 8 keeps the originals, 16 or 32 enlarges them
    with a bilinear filter (half-pixel centres, edge clamping; mmu.data._resize). The train/test
    split is a seeded permutation: `test_fraction` of the images (rounded) go to "test", the rest to
    "train", disjoint for the same seed. `.labels` (N,) int64 holds the digit classes and `.index`
    the rows of sklearn.datasets.load_digits().
    Returns (N, 1, size, size) float32 images; built once per argument set (cached, read-only).
    """
    fn = "mmu.data.digits"
    size = _check_int(fn, "size", size, 1)
    if size not in (8, 16, 32):
        raise ValueError(f"{fn}: size must be 8, 16 or 32, got {size}")
    _check_split(fn, split)
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"{fn}: test_fraction must be in (0, 1), got {test_fraction!r}")
    seed = _check_int(fn, "seed", seed, 0)
    imgs, labels, idx = _digits(size, split, float(test_fraction), seed)
    return ImageDataset(imgs, name=f"digits{size}-{split}", labels=labels, index=idx)


# ---------------------------------------------------------------------------------------------
# natural crops

# The fixed split of source images: crops for training and crops for evaluation never share a
# source photograph (nor a scene: both views of skimage's stereo motorcycle pair would be the same
# scene, so only the left one is used, for evaluation). All of these ship inside the wheels
# (scikit-image 0.26 / scikit-learn 1.9) and load offline. skimage.data images that load offline
# (files in skimage/data/): astronaut, brick, camera, cat/chelsea, cell, clock, coffee, coins,
# colorwheel, grass, gravel, horse, hubble_deep_field, immunohistochemistry, logo, microaneurysms,
# moon, page, retina, rocket, stereo_motorcycle, text; the others (eagle, lily, skin, brain, kidney,
# cells3d, ...) need pooch and a download: never used. Left out on purpose: cat (the same photo as
# chelsea), colorwheel and logo (synthetic), and the grayscale images (camera, coins, moon, the
# textures: the set is RGB, and gray crops would make the colour statistics unlike the held-out
# photos). retina's black corners are skipped by the flat-crop rule of _natural.
NATURAL_TRAIN_SOURCES = (
    "skimage:astronaut",             # 512x512, portrait + flag + space-shuttle model
    "skimage:coffee",                # 400x600, cup on a table
    "skimage:rocket",                # 427x640, launch pad, sky, trees
    "skimage:immunohistochemistry",  # 512x512, stained tissue (texture)
    "skimage:retina",                # 1411x1411, fundus photograph (vessels on orange)
    "skimage:hubble_deep_field",     # 872x1000, galaxies on dark sky
    "sklearn:china",                 # 427x640, temple, foliage, sky
)
NATURAL_TEST_SOURCES = (
    "skimage:chelsea",               # 300x451, a cat
    "skimage:motorcycle_left",       # 500x741, a motorcycle in a workshop (stereo_motorcycle, left view)
    "sklearn:flower",                # 427x640, a flower close-up
)
# a crop whose pixels have a standard deviation below this (in [-1, 1] units, ~2.5 grey levels of
# 255) is flat - a black corner, an overexposed sky - and is drawn again (at most _FLAT_TRIES times)
_FLAT_STD = 0.02
_FLAT_TRIES = 10


def _natural_default_n(size, split):
    # 4096 train / 256 test crops up to 32 px; above that the train set is capped at ~50 MB
    # (64 px: 1024 crops, 128 px: 256) and the test set at a quarter of it
    train = min(4096, max(64, 4096 * 32 * 32 // (size * size)))
    return train if split == "train" else min(256, train // 4)


@functools.lru_cache(maxsize=None)
def _load_source(name):
    # -> (3, H, W) float32 in [-1, 1]
    lib, key = name.split(":")
    if lib == "skimage":
        try:
            import skimage.data  # heavy import kept out of `import mmu`
        except ImportError as e:  # an optional dependency: the digits need only scikit-learn
            raise ImportError("mmu.data.natural_crops: the natural-image set reads photos that scikit-image "
                              "ships; install it with: pip install 'mmu[natural]' (or scikit-image)") from e

        img = skimage.data.stereo_motorcycle()[0] if key == "motorcycle_left" else getattr(skimage.data, key)()
    else:
        # sklearn.datasets.load_sample_image decodes the shipped JPEG with Pillow; do the same
        # without importing sklearn (slow import)
        path = _sklearn_file("datasets", "images", key + ".jpg")
        if path is not None:
            from PIL import Image

            with Image.open(path) as im:
                img = np.asarray(im)
        else:
            from sklearn.datasets import load_sample_image

            img = load_sample_image(key + ".jpg")
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise RuntimeError(f"mmu.data.natural_crops: source {name} is not an RGB uint8 image: "
                           f"{img.shape} {img.dtype}")
    return _readonly(img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)


@functools.lru_cache(maxsize=None)
def _pyramid(name, size):
    # Half-octave pyramid (scale 1, 2^-1/2, 1/2, ...) down to a short side of 2*size: a crop of
    # size x size from level k covers size * 2^(k/2) source pixels, which is the scale jitter.
    img = _load_source(name)
    h, w = img.shape[1:]
    levels = []
    k = 0
    while True:
        f = 2.0 ** (-k / 2.0)
        lh, lw = int(round(h * f)), int(round(w * f))
        if min(lh, lw) < 2 * size and k > 0:
            break
        # level k is made from level k-2 (an exact halving; level 1 from level 0), so the
        # pyramid costs about two full-resolution resizes instead of one per level
        base = levels[k - 2] if k >= 2 else img
        levels.append(img if k == 0 else _readonly(np.clip(resize(base, (lh, lw)), -1.0, 1.0)))
        k += 1
    if min(h, w) < size:
        raise ValueError(f"mmu.data.natural_crops: size {size} is larger than source {name} ({h}x{w})")
    return tuple(levels)


@functools.lru_cache(maxsize=6)
def _natural(size, split, n, seed):
    sources = NATURAL_TRAIN_SOURCES if split == "train" else NATURAL_TEST_SOURCES
    pyramids = [_pyramid(s, size) for s in sources]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    src = rng.integers(0, len(sources), size=n)
    u = rng.random((n, 3))   # level, top, left as uniform fractions of their ranges
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        levels = pyramids[src[i]]
        for t in range(_FLAT_TRIES):
            # a flat crop is redrawn from a generator of its own, so the other crops do not move
            ui = u[i] if t == 0 else np.random.default_rng([seed, 2, i, t]).random(3)
            lvl = levels[int(ui[0] * len(levels))]
            h, w = lvl.shape[1:]
            top = int(ui[1] * (h - size + 1))
            left = int(ui[2] * (w - size + 1))
            out[i] = lvl[:, top:top + size, left:left + size]
            if out[i].std() >= _FLAT_STD:
                break
    return _readonly(out), _readonly(src.astype(np.int64))


def natural_crops(size=32, split="train", n=None, seed=0):
    """Random square crops of natural photographs shipped with scikit-image and scikit-learn.

    Training crops come from the 7 photos of NATURAL_TRAIN_SOURCES (skimage astronaut, coffee,
    rocket, immunohistochemistry, retina, hubble_deep_field; sklearn china), evaluation crops
    (split="test") from the 3 of NATURAL_TEST_SOURCES (skimage chelsea, the left view of
    stereo_motorcycle; sklearn flower): different photographs and scenes, so test numbers measure
    generalisation. Nothing is downloaded (skimage.data files that need pooch are never used).
    Each crop picks a source image uniformly, a level of its half-octave pyramid uniformly (scale
    jitter: a crop covers between `size` and about half the short side of the source, in source
    pixels; levels made with an antialiased bilinear resize) and a uniform position; a flat crop
    (pixel standard deviation < 0.02, e.g. retina's black corners) is drawn again, up to 10 times.
    n: number of crops (default 4096 for "train" and 256 for "test" up to size 32; for larger sizes
    the training set is capped at ~50 MB: 1024 crops of 64 px, 256 of 128 px, and the test set at
    a quarter of that, at most 256); seed: crops are a pure function
    of (size, split, n, seed). Returns an ImageDataset of (n, 3, size, size) float32 in [-1, 1]
    with `.source_index` (n,) into `.sources` (the source names). Cached in-process (read-only).
    """
    fn = "mmu.data.natural_crops"
    size = _check_int(fn, "size", size, 2)
    if size > 256:
        raise ValueError(f"{fn}: size must be <= 256 (the source photos are ~300-640 px), got {size}")
    _check_split(fn, split)
    n = _natural_default_n(size, split) if n is None else _check_int(fn, "n", n, 1)
    seed = _check_int(fn, "seed", seed, 0)
    imgs, src = _natural(size, split, n, seed)
    sources = NATURAL_TRAIN_SOURCES if split == "train" else NATURAL_TEST_SOURCES
    return ImageDataset(imgs, name=f"natural{size}-{split}", source_index=src, sources=sources)
