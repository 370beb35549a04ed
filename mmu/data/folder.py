"""Image folders: one file-discovery rule, a streaming ImageFolder, and the train / held-out split of a
folder (load_splits, load_dataset).

Discovery (`list_images`, used by ImageFolder, `mmu train`, `mmu compare` and `mmu encode` alike):
every file under the folder, recursively, whose extension is one of IMAGE_EXTENSIONS
(case-insensitive: .jpg .jpeg .png .bmp .webp .tif .tiff .gif); files and folders whose name starts
with "." are skipped; symlinked files are included, symlinked folders are not entered (no cycles);
the result is sorted by relative path, component by component (case-sensitive), so the order is the
same on every machine.

Pillow is imported inside the loaders only, so `import mmu` stays fast. Pillow decodes JPEG, PNG,
BMP, WebP, TIFF and GIF (the first frame); EXIF orientation is applied; palette / RGBA / CMYK /
16-bit images are converted to RGB or L. Pillow releases the GIL while it decodes and resizes, so
mmu.data.DataLoader decodes an ImageFolder in background threads.
"""
import functools
import hashlib
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .datasets import ImageDataset, _check_int, _readonly, digits, natural_crops

__all__ = ["ImageFolder", "load_dataset", "load_splits", "folder_split", "list_images", "IMAGE_EXTENSIONS",
           "FolderSplit", "check_images", "iter_image_batches"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
HELD_OUT_DIR = "test"     # a folder's held-out images live in DIR/test (the rule of folder_split)
TRAIN_DIR = "train"


def _is_image_name(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _existing_folder(root, fn):
    """root as an absolute path; FileNotFoundError / NotADirectoryError naming fn unless it is a folder."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"{fn}: folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{fn}: {root!r} is not a folder")
    return root


def list_images(root, exclude=()):
    """The image files under `root`: the one discovery rule of mmu (see the module docstring).

    root: a folder. exclude: names of subfolders of `root` (top level only, e.g. ("test",)) whose
    images are left out. Returns absolute paths, sorted by relative path component by component.
    Raises FileNotFoundError / NotADirectoryError for a missing folder or a file.
    """
    fn = "mmu.data.list_images"
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{fn}: root must be a path, got {type(root).__name__}")
    root = _existing_folder(root, fn)
    excluded = {os.fspath(e) for e in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        top = dirpath == root
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (top and d in excluded)]
        for f in filenames:
            if _is_image_name(f):
                p = os.path.join(dirpath, f)
                found.append((tuple(os.path.relpath(p, root).split(os.sep)), p))
    found.sort()
    return [p for _, p in found]


# ---------------------------------------------------------------------------------------------
# reading one image


def _probe(path):
    # None when Pillow can identify the file and read its header, else the reason (one line)
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        if w < 1 or h < 1:
            return f"empty image {w}x{h}"
        return None
    except Exception as e:  # noqa: BLE001 - any failure means "unreadable"; the reason is reported
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return msg.replace(f" {path!r}", "").replace(f" {path}", "")


def check_images(files, where="mmu.data", workers=2):
    """(readable, skipped): the files whose header Pillow reads, in the given order, and
    [(path, reason), ...] for the others. One UserWarning lists every skipped file (count + names);
    ValueError when none is readable."""
    files = list(files)
    if workers > 1 and len(files) > 64:
        with ThreadPoolExecutor(workers) as ex:       # header reads: I/O bound, threads overlap them
            reasons = list(ex.map(_probe, files, chunksize=64))
    else:
        reasons = [_probe(p) for p in files]
    readable = [p for p, r in zip(files, reasons) if r is None]
    skipped = [(p, r) for p, r in zip(files, reasons) if r is not None]
    if skipped and not readable:
        raise ValueError(f"{where}: none of the {len(files)} image files can be read, e.g. "
                         f"{skipped[0][0]!r}: {skipped[0][1]}")
    if skipped:
        warnings.warn(f"{where}: skipped {len(skipped)} unreadable image file(s) of {len(files)}: "
                      + "; ".join(f"{p} ({r})" for p, r in skipped), UserWarning, stacklevel=3)
    return readable, skipped


def _random_resized_crop(h, w, scale, ratio, rng):
    # torchvision.transforms.RandomResizedCrop.get_params, with a NumPy Generator:
    # -> (top, left, crop_h, crop_w)
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top, left, ch, cw
    in_ratio = w / h          # fallback: the central crop of the clamped aspect ratio
    if in_ratio < min(ratio):
        cw = w
        ch = int(round(cw / min(ratio)))
    elif in_ratio > max(ratio):
        ch = h
        cw = int(round(ch * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _load_image(path, size, channels, crop=None, rng=None):
    """(C, size, size) float32 in [-1, 1] of one file. crop None: the center square, resized with
    Pillow's bicubic filter; crop (scale, ratio) with rng: a random resized crop (torchvision's
    RandomResizedCrop parameters) resized with Pillow's bilinear filter. Raises ValueError naming
    the file when it cannot be decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = "RGB" if channels == 3 else "L"
            if crop is not None:
                w0, h0 = im.size
                swapped = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)     # EXIF rotation by 90 degrees
                tw, th = (h0, w0) if swapped else (w0, h0)                # size after exif_transpose
                top, left, ch, cw = _random_resized_crop(th, tw, crop[0], crop[1], rng)
                if im.format == "JPEG":
                    # reduced-scale decoding while the crop keeps >= 2*size pixels on both sides
                    need_w, need_h = math.ceil(tw * 2 * size / cw), math.ceil(th * 2 * size / ch)
                    im.draft(mode, (need_h, need_w) if swapped else (need_w, need_h))
            elif im.format == "JPEG":
                # let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) while both sides stay
                # >= 2*size: big photos load several times faster, the final resize still antialiases
                im.draft(mode, (2 * size, 2 * size))
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):
                # 16-bit grayscale: scale to 8 bits (convert("L") would clip instead)
                a = np.asarray(im, dtype=np.float32) * (255.0 / 65535.0)
                im = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), mode="L")
            im = im.convert(mode)
            w, h = im.size
            if crop is not None:
                if (w, h) == (tw, th):
                    # torchvision's resized_crop on a PIL image: crop, then resize (edges clamped at the crop)
                    im = im.crop((left, top, left + cw, top + ch)).resize((size, size), Image.Resampling.BILINEAR)
                else:
                    # a reduced-scale JPEG decode: the same box in the reduced image's coordinates
                    fx, fy = w / tw, h / th
                    box = (left * fx, top * fy, (left + cw) * fx, (top + ch) * fy)
                    im = im.resize((size, size), Image.Resampling.BILINEAR, box=box)
            else:
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
                if s != size:
                    im = im.resize((size, size), Image.Resampling.BICUBIC)  # antialiased when shrinking
            a = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            EOFError) as e:
        raise ValueError(f"mmu.data.ImageFolder: cannot read image file {path!r}: {e}") from e
    a = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return a / 127.5 - 1.0


@functools.lru_cache(maxsize=8)
def _load_all(size, channels, signature, workers):
    # signature = ((path, mtime_ns, bytes), ...): a changed file is reloaded. Center crops.
    out = np.empty((len(signature), channels, size, size), np.float32)

    def one(i):
        out[i] = _load_image(signature[i][0], size, channels)

    if workers > 1:
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(one, range(len(signature))))
    else:
        for i in range(len(signature)):
            one(i)
    return _readonly(out)


def iter_image_batches(files, size, channels=3, batch_size=64, workers=2, where="mmu.data.iter_image_batches"):
    """Streams image files as batches: yields (paths, images) with images (B, channels, size, size)
    float32 in [-1, 1] (the center view, as ImageFolder), in the order of `files`, decoded by
    `workers` threads at most two batches ahead (so memory holds about three batches, whatever the
    number of files). Files that cannot be decoded are left out of the batches; after the last
    batch one UserWarning lists them all (count + names), and ValueError is raised instead when
    no file could be decoded."""
    fn = where
    files = [os.fspath(p) for p in files]
    size = _check_int(fn, "size", size, 1)
    batch_size = _check_int(fn, "batch_size", batch_size, 1)
    workers = _check_int(fn, "workers", workers, 1)
    if channels not in (1, 3):
        raise ValueError(f"{fn}: channels must be 1 or 3, got {channels!r}")
    if not files:
        raise ValueError(f"{fn}: no image files given")

    def load(p):
        try:
            return _load_image(p, size, channels), None
        except ValueError as e:
            msg = str(e.__cause__ or e).strip().splitlines()[0]
            return None, msg.replace(f" {p!r}", "").replace(f" {p}", "")

    failed, done = [], 0
    with ThreadPoolExecutor(workers, thread_name_prefix="mmu-data") as ex:
        pending = [ex.submit(load, p) for p in files[:2 * batch_size]]
        nxt = len(pending)
        for start in range(0, len(files), batch_size):
            paths, items = [], []
            for k in range(start, min(start + batch_size, len(files))):
                a, err = pending[k - start].result()
                if err is None:
                    paths.append(files[k])
                    items.append(a)
                else:
                    failed.append((files[k], err))
            pending = pending[batch_size:]
            while nxt < len(files) and len(pending) < 2 * batch_size:
                pending.append(ex.submit(load, files[nxt]))
                nxt += 1
            if items:
                done += len(items)
                yield paths, np.stack(items)
    if not done:
        raise ValueError(f"{fn}: none of the {len(files)} image files can be read, e.g. {failed[0][0]!r}: "
                         f"{failed[0][1]}")
    if failed:
        warnings.warn(f"{fn}: skipped {len(failed)} unreadable image file(s) of {len(files)}: "
                      + "; ".join(f"{p} ({r})" for p, r in failed), UserWarning, stacklevel=2)


# ---------------------------------------------------------------------------------------------
# ImageFolder


def _check_pair(fn, name, v, lo, hi_ok):
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) for t in v):
        raise TypeError(f"{fn}: {name} must be a pair of numbers (min, max), got {v!r}")
    a, b = float(v[0]), float(v[1])
    if not (lo < a <= b) or not math.isfinite(b) or (hi_ok is not None and b > hi_ok):
        raise ValueError(f"{fn}: {name} must satisfy {lo} < min <= max"
                         + (f" <= {hi_ok}" if hi_ok is not None else "") + f", got {v!r}")
    return (a, b)


class ImageFolder(ImageDataset):
    """The images of a folder, decoded from disk when they are used (nothing is held in memory).

    root: a folder; its images are found by `list_images` (recursive, IMAGE_EXTENSIONS,
    case-insensitive, hidden files skipped, sorted). files: an explicit list of image paths instead
    (kept in the given order; root may then be None; it names the dataset). exclude: top-level
    subfolders of root to leave out (e.g. ("test",)).
    size, channels: every image becomes (channels, size, size) float32 in [-1, 1], converted to RGB
    (channels=3) or L (channels=1).
    random_crop: False (default) gives the center square resized to size x size (Pillow bicubic,
    antialiased): the evaluation view, and what `ds[i]` and `.images` always return. True makes
    mmu.data.DataLoader draw a random resized crop per image and epoch: torchvision's
    RandomResizedCrop (area fraction uniform in crop_scale, default (0.08, 1.0); aspect ratio
    log-uniform in crop_ratio, default (3/4, 4/3); 10 tries, then the central crop of the clamped
    ratio), resized to size x size with Pillow's bilinear filter (antialiased), drawn from a NumPy
    Generator seeded by the loader (seed, epoch, image) so batches do not depend on the number of
    worker threads. (The crop is cut, then resized, as torchvision does on PIL images; a JPEG large
    enough to be decoded at a reduced scale - libjpeg's 1/2, 1/4, 1/8, keeping >= 2*size pixels
    across the crop - is resized from the same box in the reduced image.) Horizontal flips are
    DataLoader(hflip=True).
    workers: threads for the header check and for `.images` (the DataLoader has its own).
    check_files: read every file's header first (in threads) and skip the unreadable ones with one
    UserWarning listing them all (`.skipped` holds (path, reason) pairs); ValueError if none is
    readable. A file whose header reads but whose data is damaged (a truncated file) is found when
    it is decoded: `load_item` then warns once for that file and uses the next readable image.

    `.files`: the paths used; `len(ds)`; `ds[i]`: the center view of image i; `.images`: every
    image's center view in one (N, C, size, size) array, decoded on first use and cached in-process
    keyed by the files' paths, sizes and modification times (read-only) - meant for held-out sets
    and small folders; training streams through DataLoader. `.split`: how the images were chosen
    (set by load_splits / load_dataset).
    Raises FileNotFoundError for a missing folder or no images, NotADirectoryError for a file.
    """

    def __init__(self, root, size=64, channels=3, *, files=None, exclude=(), random_crop=False,
                 crop_scale=(0.08, 1.0), crop_ratio=(3.0 / 4.0, 4.0 / 3.0), check_files=True, workers=2):
        fn = "mmu.data.ImageFolder"
        self._size = _check_int(fn, "size", size, 1)
        channels = _check_int(fn, "channels", channels, 1)
        if channels not in (1, 3):
            raise ValueError(f"{fn}: channels must be 1 or 3, got {channels}")
        self.workers = _check_int(fn, "workers", workers, 1)
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"{fn}: root must be a path, got {type(root).__name__}")
        if files is None:
            if root is None:
                raise TypeError(f"{fn}: give root (a folder) or files (a list of paths)")
            root = _existing_folder(root, fn)
            files = list_images(root, exclude)
            if not files:
                raise FileNotFoundError(f"{fn}: no images in {root!r} (looked for "
                                        f"{', '.join(IMAGE_EXTENSIONS)}, recursively, case-insensitive)")
        else:
            if isinstance(files, (str, os.PathLike)):
                raise TypeError(f"{fn}: files must be a list of paths, got one path")
            files = [os.path.abspath(os.fspath(p)) for p in files]
            if not files:
                raise FileNotFoundError(f"{fn}: files is empty")
            missing = [p for p in files if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f"{fn}: {len(missing)} file(s) do not exist: {', '.join(missing[:5])}")
            root = os.path.abspath(os.fspath(root)) if root is not None else None
        self.skipped = []
        if check_files:
            files, self.skipped = check_images(files, fn, self.workers)
        self.random_crop = bool(random_crop)
        self.crop_scale = _check_pair(fn, "crop_scale", crop_scale, 0.0, 1.0)
        self.crop_ratio = _check_pair(fn, "crop_ratio", crop_ratio, 0.0, None)
        self.files = files
        self.root = root
        self._channels = channels
        self.name = (os.path.basename(root.rstrip(os.sep)) or root) if root else "images"
        self.split = None
        self._failed = {}
        self._images = None
        self._lock = threading.Lock()

    # the ImageDataset interface, without decoding everything
    def __len__(self):
        return len(self.files)

    @property
    def shape(self):
        """(N, C, size, size)."""
        return (len(self.files), self._channels, self._size, self._size)

    @property
    def channels(self):
        return self._channels

    @property
    def size(self):
        return self._size

    @property
    def images(self):
        """Every image's center view, (N, C, size, size) float32, decoded now (in `workers` threads)
        and cached in-process (read-only). Holds the whole folder in memory: for held-out sets and
        small folders; train through mmu.data.DataLoader, which streams."""
        if self._images is None:
            sig = []
            for p in self.files:
                st = os.stat(p)
                sig.append((p, st.st_mtime_ns, st.st_size))
            self._images = _load_all(self._size, self._channels, tuple(sig), self.workers)
        return self._images

    def load_item(self, i, seed=None):
        """Image i decoded from disk: (C, size, size) float32 in [-1, 1]. seed None or random_crop
        False: the center view; else the random resized crop drawn from
        numpy.random.default_rng(seed). A file that fails to decode is reported once (UserWarning)
        and replaced by the next image (in `.files` order) that decodes."""
        n = len(self.files)
        crop = (self.crop_scale, self.crop_ratio) if self.random_crop and seed is not None else None
        for k in range(n):
            j = (i + k) % n
            path = self.files[j]
            if path in self._failed:
                continue
            rng = np.random.default_rng(seed) if crop is not None else None
            try:
                return _load_image(path, self._size, self._channels, crop, rng)
            except ValueError as e:
                with self._lock:
                    first = path not in self._failed
                    self._failed[path] = str(e)
                if first:
                    warnings.warn(f"{e}; using the next image in its place", UserWarning, stacklevel=2)
        raise ValueError(f"mmu.data.ImageFolder: none of the {n} images of {self.name!r} can be decoded")

    def __getitem__(self, i):
        """ds[i] -> (C, size, size): the center view of image i, decoded now; a slice or an int
        array gives (n, C, size, size)."""
        n = len(self)
        if isinstance(i, slice):
            return np.stack([self.load_item(j) for j in range(*i.indices(n))]) if range(*i.indices(n)) \
                else np.empty((0, *self.shape[1:]), np.float32)
        if isinstance(i, (list, np.ndarray)):
            idx = np.asarray(i)
            if idx.dtype.kind not in "iu":
                raise TypeError(f"ImageFolder '{self.name}': index arrays must hold ints, got {idx.dtype}")
            return np.stack([self[int(j)] for j in idx.reshape(-1)]).reshape(*idx.shape, *self.shape[1:])
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"ImageFolder '{self.name}': index must be an int, a slice or an int array, "
                            f"got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"ImageFolder '{self.name}': index {i} out of range for {n} images")
        return self.load_item(int(i) % n)

    def __repr__(self):
        return (f"ImageFolder(name={self.name!r}, n={len(self)}, channels={self._channels}, "
                f"size={self._size}x{self._size}, random_crop={self.random_crop})")


# ---------------------------------------------------------------------------------------------
# train / held-out splits


class FolderSplit:
    """How a folder's images are split: `.train` and `.test` (lists of paths, disjoint by resolved
    path), `.train_from` / `.test_from` (where each side comes from), `.rule` ("test/",
    "train/ + test/", "train/ + seeded split", "seeded split"), `describe(n_train, n_test)` and
    `.summary` (one line each side: "train: 120 images from DIR (...); held out: 30 images from
    DIR/test")."""

    def __init__(self, train, test, train_from, test_from, rule):
        self.train, self.test = train, test
        self.train_from, self.test_from, self.rule = train_from, test_from, rule

    def describe(self, n_train=None, n_test=None):
        """(train line, held-out line) with the given image counts (default: the split's)."""
        n_train = len(self.train) if n_train is None else n_train
        n_test = len(self.test) if n_test is None else n_test
        return f"{n_train} images {self.train_from}", f"{n_test} images {self.test_from}"

    @property
    def summary(self):
        """One line: "train: <count> images <from>; held out: <count> images <from>"."""
        tr, te = self.describe()
        return f"train: {tr}; held out: {te}"

    def __repr__(self):
        return f"FolderSplit({self.summary})"


def _seeded_split(files, test_fraction, seed, fn, where):
    n = len(files)
    if n < 2:
        raise ValueError(f"{fn}: {where} has {n} image; a train/held-out split needs at least 2 "
                         f"(or give a test/ subfolder)")
    n_test = min(max(1, int(round(n * test_fraction))), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(perm[:n_test].tolist())
    train = sorted(perm[n_test:].tolist())
    return [files[i] for i in train], [files[i] for i in test]


def _same_content(train, test):
    # (train path, test path) pairs with identical bytes: hashed only where the sizes collide
    by_size = {}
    for p in test:
        by_size.setdefault(os.path.getsize(p), []).append(p)
    hashes, pairs = {}, []

    def digest(p):
        if p not in hashes:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            hashes[p] = h.digest()
        return hashes[p]

    for p in train:
        for q in by_size.get(os.path.getsize(p), ()):
            if digest(p) == digest(q):
                pairs.append((p, q))
                break
    return pairs


def folder_split(root, test_fraction=0.1, seed=0, held_out=None, check_files=True, workers=2):
    """The train / held-out split of an image folder (files found by list_images), disjoint always.

    - held_out given (a folder, e.g. `mmu train --val-data`): held out = its images; train = DIR's
      images except those under DIR/test/ (never trained on) and except the held-out files
      themselves (held_out may lie inside DIR).
    - DIR/train/ and DIR/test/ exist: train = the images under train/, held out = those under test/
      (images elsewhere in DIR are not used; the description says how many).
    - only DIR/test/: train = DIR's images in the root and every subfolder except test/; held out =
      the images under test/.
    - only DIR/train/: a seeded split of train/'s images (test_fraction held out, at least one
      image each side).
    - neither: a seeded split of all of DIR's images (recursively).
    Seeded split: numpy.random.default_rng(seed).permutation; both sides keep the sorted order.
    check_files: first read every file's header and leave out the unreadable ones (one UserWarning
    listing them all, `.skipped`), so they take no place in a seeded split.
    Files reached through different paths (symlinks) count as one: a training file whose resolved
    path is also held out is dropped from train. Training and held-out files with identical bytes
    (copies) are reported with a UserWarning (they are different files, kept).
    Returns a FolderSplit.
    """
    fn = "mmu.data.folder_split"
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{fn}: root must be a folder path, got {type(root).__name__}")
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise (NotADirectoryError if os.path.exists(root) else FileNotFoundError)(
            f"{fn}: {root!r} is not an existing folder")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"{fn}: test_fraction must be in (0, 1), got {test_fraction!r}")
    seed = _check_int(fn, "seed", seed, 0)
    tr_dir, te_dir = os.path.join(root, TRAIN_DIR), os.path.join(root, HELD_OUT_DIR)
    has_tr, has_te = os.path.isdir(tr_dir), os.path.isdir(te_dir)
    pct = f"{100 * float(test_fraction):g}%"
    if held_out is not None:
        if not isinstance(held_out, (str, os.PathLike)) or not os.path.isdir(held_out):
            raise FileNotFoundError(f"{fn}: held_out must be an existing folder, got {held_out!r}")
        has_tr, has_te = False, True
        te_dir = os.path.abspath(os.fspath(held_out))

    skipped = []

    def need(files, where):
        if not files:
            raise FileNotFoundError(f"{fn}: no images in {where} (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                                    "recursively, case-insensitive)")
        return files

    def readable(*lists):
        # one header check (and one warning) for every file of the lists; each list filtered
        if not check_files:
            return lists
        ok, bad = check_images([p for lst in lists for p in lst], fn, workers)
        skipped.extend(bad)
        ok = set(ok)
        out = tuple([p for p in lst if p in ok] for lst in lists)
        for lst, kept in zip(lists, out):
            if lst and not kept:
                raise ValueError(f"{fn}: none of the {len(lst)} images under "
                                 f"{os.path.commonpath(lst) if len(lst) > 1 else lst[0]} can be read")
        return out

    if has_te:
        test = need(list_images(te_dir), te_dir)
        test_from = f"from {te_dir}"
        if has_tr:
            train = need(list_images(tr_dir), tr_dir)
            train, test = readable(train, test)
            unused = len(list_images(root, exclude=(TRAIN_DIR, HELD_OUT_DIR)))
            train_from = f"from {tr_dir}" + (
                f" ({unused} images of {root} outside train/ and test/ not used)" if unused else "")
            rule = "train/ + test/"
        else:
            train = need(list_images(root, exclude=(HELD_OUT_DIR,)), f"{root} outside test/")
            train, test = readable(train, test)
            train_from = f"from {root} (root and subfolders except test/)"
            rule = "test/" if held_out is None else "held_out folder"
    else:
        base = tr_dir if has_tr else root
        files, = readable(need(list_images(base), base))
        train, test = _seeded_split(files, float(test_fraction), seed, fn, base)
        train_from = (f"from {base}: a seeded random split (seed {seed}) of its {len(files)} readable images, "
                      f"{pct} held out")
        test_from = f"from {base}: the held-out side of that seeded split (no {HELD_OUT_DIR}/ subfolder)"
        rule = "train/ + seeded split" if has_tr else "seeded split"
    held = {os.path.realpath(p) for p in test}
    overlap = [p for p in train if os.path.realpath(p) in held]
    if overlap:
        train = [p for p in train if os.path.realpath(p) not in held]
        if not train:
            raise ValueError(f"{fn}: every training image of {root!r} is also a held-out image (same file)")
        train_from += f"; {len(overlap)} left out because they are also held-out files (same file by its resolved path)"
    copies = _same_content(train, test)
    if copies:
        warnings.warn(f"{fn}: {len(copies)} training image(s) have the same bytes as a held-out image: "
                      + "; ".join(f"{a} = {b}" for a, b in copies), UserWarning, stacklevel=2)
    sp = FolderSplit(train, test, train_from, test_from, rule)
    sp.skipped = skipped
    return sp


def _builtin_desc(name, split, ds, seed, test_fraction=None):
    if name == "digits":
        frac = 0.2 if test_fraction is None else test_fraction
        return (f"{len(ds)} of scikit-learn's 1797 digits, a seeded random split "
                f"(seed {seed}, {100 * frac:g}% held out)")
    srcs = ", ".join(ds.sources)
    return f"{len(ds)} crops of the photos {srcs} (train and held-out photos are disjoint)"


def _folder_kwargs(kwargs, fn):
    allowed = {"channels", "random_crop", "crop_scale", "crop_ratio", "workers"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise TypeError(f"{fn}: unknown keyword argument(s) {bad} for a folder (known: {sorted(allowed)})")
    return kwargs


def load_splits(name, size, seed=0, test_fraction=None, held_out=None, **kwargs):
    """(train, held_out) datasets of a built-in dataset or a folder, each with `.split`, a one-line
    description of where its images come from.

    name: "digits", "natural" or a folder path (split by folder_split: DIR/test/ when it exists,
    else a seeded split with test_fraction, default 0.1; held_out: a folder of held-out images
    instead, see folder_split). kwargs go to the builders: n= for
    natural; channels=, random_crop=, crop_scale=, crop_ratio=, workers= for a folder (random_crop
    applies to the training side only). Unreadable files are skipped with one UserWarning for the
    whole folder (both datasets' `.skipped`). Folders give ImageFolder datasets (streamed from disk).
    """
    fn = "mmu.data.load_splits"
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"{fn}: name must be 'digits', 'natural' or a folder path, got {type(name).__name__}")
    if name in ("digits", "natural"):
        build = digits if name == "digits" else natural_crops
        extra = dict(kwargs)
        if test_fraction is not None:
            if name != "digits":
                raise TypeError(f"{fn}: test_fraction applies to digits and folders, not {name!r}")
            extra["test_fraction"] = test_fraction
        out = []
        for split in ("train", "test"):
            ds = build(size, split, seed=seed, **extra)
            ds.split = _builtin_desc(name, split, ds, seed, test_fraction)
            out.append(ds)
        return tuple(out)
    root = os.fspath(name)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{fn}: {root!r} is neither a built-in dataset ('digits', 'natural') nor an existing folder")
    kwargs = _folder_kwargs(kwargs, fn)
    workers = _check_int(fn, "workers", kwargs.get("workers", 2), 1)
    sp = folder_split(root, 0.1 if test_fraction is None else test_fraction, seed, held_out, True, workers)
    eval_kwargs = {k: v for k, v in kwargs.items() if k in ("channels", "workers")}
    train = ImageFolder(root, size, files=sp.train, check_files=False, **kwargs)
    test = ImageFolder(root, size, files=sp.test, check_files=False, **eval_kwargs)
    for ds, line in zip((train, test), sp.describe()):
        ds.split, ds.split_rule = line, sp.rule
        ds.skipped = list(sp.skipped)       # the folder's unreadable files (both sides)
    if sp.skipped:
        train.split += f" ({len(sp.skipped)} unreadable files of the folder skipped)"
    train.name, test.name = f"{train.name}-train", f"{test.name}-test"
    return train, test


def load_dataset(name, size, split="train", seed=0, **kwargs):
    """A dataset by name or folder path.

    name: "digits" -> digits(size, split, seed=seed); "natural" -> natural_crops(size, split,
    seed=seed); otherwise a folder path, split by folder_split (DIR/test/ is the held-out split
    when it exists and is never part of "train"; otherwise a seeded split with `test_fraction`,
    default 0.1, at least one image each side); split="all" takes every image of the folder.
    The dataset's `.split` says how its images were chosen. Extra keyword arguments go to the
    builder (e.g. n= for natural, channels= / random_crop= for a folder, test_fraction= for digits
    and folders). Use load_splits to get both sides at once.
    """
    fn = "mmu.data.load_dataset"
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"{fn}: name must be 'digits', 'natural' or a folder path, got {type(name).__name__}")
    if name in ("digits", "natural"):
        build = digits if name == "digits" else natural_crops
        ds = build(size, split, seed=seed, **kwargs)
        ds.split = _builtin_desc(name, split, ds, seed, kwargs.get("test_fraction"))
        return ds
    root = os.fspath(name)
    if not os.path.exists(root):
        raise FileNotFoundError(
            f"{fn}: {root!r} is neither a built-in dataset ('digits', 'natural') nor an existing folder")
    if not isinstance(split, str) or split not in ("train", "test", "all"):
        raise ValueError(f"{fn}: split must be 'train', 'test' or 'all', got {split!r}")
    test_fraction = kwargs.pop("test_fraction", None)
    if split == "all":
        ds = ImageFolder(root, size, **_folder_kwargs(kwargs, fn))
        ds.split = f"all {len(ds)} images under {ds.root}"
        return ds
    train, test = load_splits(root, size, seed=seed, test_fraction=test_fraction, **kwargs)
    return train if split == "train" else test
