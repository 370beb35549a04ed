"""ImageFolder: the user's own images (Pillow), and load_dataset, the one entry point by name or path.

Pillow is imported inside the loader only, so `import mmu` stays fast. Pillow decodes JPEG, PNG,
BMP and WebP (pillow==13 wheels ship libjpeg, libpng, libwebp); EXIF orientation is applied;
palette / RGBA / CMYK / 16-bit images are converted to RGB or L.
"""
import functools
import os

import numpy as np

from .datasets import ImageDataset, _check_int, _readonly, digits, natural_crops

__all__ = ["ImageFolder", "load_dataset", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _list_images(root):
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(dirpath, f))
    return sorted(files, key=lambda p: os.path.relpath(p, root))


def _load_image(path, size, channels):
    # -> (C, size, size) float32 in [-1, 1]: center crop to a square, then resize.
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                # let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) while both sides stay
                # >= 2*size: big photos load several times faster, the final resize still antialiases
                im.draft("RGB" if channels == 3 else "L", (2 * size, 2 * size))
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):
                # 16-bit grayscale: scale to 8 bits (convert("L") would clip instead)
                a = np.asarray(im, dtype=np.float32) * (255.0 / 65535.0)
                im = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), mode="L")
            im = im.convert("RGB" if channels == 3 else "L")
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            if s != size:
                im = im.resize((size, size), Image.Resampling.BICUBIC)  # antialiased when shrinking
            a = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"mmu.data.ImageFolder: cannot read image file {path!r}: {e}") from e
    if channels == 1:
        a = a[None]
    else:
        a = a.transpose(2, 0, 1)
    return a / 127.5 - 1.0


@functools.lru_cache(maxsize=8)
def _load_folder(root, size, channels, signature):
    # signature = ((path, mtime_ns, bytes), ...): a changed file is reloaded.
    out = np.empty((len(signature), channels, size, size), np.float32)
    for i, (path, _, _) in enumerate(signature):
        out[i] = _load_image(path, size, channels)
    return _readonly(out)


class ImageFolder(ImageDataset):
    """Every image under `root` (recursively; .jpg .jpeg .png .bmp .webp, case-insensitive, hidden
    files skipped), sorted by relative path, decoded with Pillow, converted to RGB (channels=3) or
    L (channels=1), center-cropped to a square and resized to size x size (bicubic, antialiased).

    `.images` (N, channels, size, size) float32 in [-1, 1]; `.files` the sorted paths.
    Raises FileNotFoundError for a missing folder or a folder without images, NotADirectoryError
    for a file, ValueError naming the file that cannot be decoded. Decoded folders are cached
    in-process, keyed by the files' paths, sizes and modification times (`.images` is read-only).
    """

    def __init__(self, root, size=64, channels=3):
        fn = "mmu.data.ImageFolder"
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"{fn}: root must be a path, got {type(root).__name__}")
        root = os.path.abspath(os.fspath(root))
        size = _check_int(fn, "size", size, 1)
        channels = _check_int(fn, "channels", channels, 1)
        if channels not in (1, 3):
            raise ValueError(f"{fn}: channels must be 1 or 3, got {channels}")
        if not os.path.exists(root):
            raise FileNotFoundError(f"{fn}: folder {root!r} does not exist")
        if not os.path.isdir(root):
            raise NotADirectoryError(f"{fn}: {root!r} is not a folder")
        files = _list_images(root)
        if not files:
            raise FileNotFoundError(
                f"{fn}: no images in {root!r} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
        sig = []
        for p in files:
            st = os.stat(p)
            sig.append((p, st.st_mtime_ns, st.st_size))
        images = _load_folder(root, size, channels, tuple(sig))
        super().__init__(images, name=os.path.basename(root.rstrip(os.sep)) or root,
                         files=files, root=root)


def load_dataset(name, size, split="train", seed=0, **kwargs):
    """A dataset by name or folder path.

    name: "digits" -> digits(size, split, seed=seed); "natural" -> natural_crops(size, split,
    seed=seed); otherwise a folder path. For a folder, split "train" / "test" uses the subfolder
    `root/<split>` when it exists; otherwise the folder's images are split by a seeded permutation
    (`test_fraction`, default 0.1, at least one image each side); split="all" takes every image.
    Extra keyword arguments go to the builder (e.g. n= for natural, channels= for a folder,
    test_fraction= for digits and folders).
    """
    fn = "mmu.data.load_dataset"
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"{fn}: name must be 'digits', 'natural' or a folder path, got {type(name).__name__}")
    if name == "digits":
        return digits(size, split, seed=seed, **kwargs)
    if name == "natural":
        return natural_crops(size, split, seed=seed, **kwargs)
    root = os.fspath(name)
    if not os.path.exists(root):
        raise FileNotFoundError(
            f"{fn}: {root!r} is neither a built-in dataset ('digits', 'natural') nor an existing folder")
    if split not in ("train", "test", "all"):
        raise ValueError(f"{fn}: split must be 'train', 'test' or 'all', got {split!r}")
    test_fraction = kwargs.pop("test_fraction", 0.1)
    sub = os.path.join(root, split)
    if split != "all" and os.path.isdir(sub):
        return ImageFolder(sub, size, **kwargs)
    full = ImageFolder(root, size, **kwargs)
    if split == "all":
        return full
    n = len(full)
    if n < 2:
        raise ValueError(f"{fn}: folder {root!r} has {n} image; a train/test split needs at least 2 "
                         f"(or use split='all')")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"{fn}: test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = min(max(1, int(round(n * test_fraction))), n - 1)
    perm = np.random.default_rng(_check_int(fn, "seed", seed, 0)).permutation(n)
    idx = np.sort(perm[:n_test] if split == "test" else perm[n_test:])
    return ImageDataset(_readonly(full.images[idx]), name=f"{full.name}-{split}",
                        files=[full.files[i] for i in idx], root=full.root)
