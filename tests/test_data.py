"""mmu.data: the built-in datasets (digits, natural crops), the resize, ImageFolder with real image
files, load_dataset and the DataLoader's epochs, shuffles, flips and exact resume."""
import json
import os

import numpy as np
import pytest

import mmu
from mmu.data import (NATURAL_TEST_SOURCES, NATURAL_TRAIN_SOURCES, DataLoader, ImageDataset, ImageFolder,
                      digits, load_dataset, natural_crops, resize)


# ---------------------------------------------------------------------------------------------
# resize


def test_resize_matches_pillow_bilinear():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 30)).astype(np.float32)
    for oh, ow in [(10, 15), (40, 60), (7, 11), (33, 17), (20, 30)]:
        ref = np.asarray(Image.fromarray(a, "F").resize((ow, oh), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(resize(a, (oh, ow)), ref, atol=1e-5)


def test_resize_batched_constant_and_errors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 12)).astype(np.float32)
    y = resize(x, 16)
    assert y.shape == (2, 3, 16, 16) and y.dtype == np.float32
    for i in range(2):
        for c in range(3):
            np.testing.assert_allclose(y[i, c], resize(x[i, c], 16), atol=1e-6)
    np.testing.assert_allclose(resize(np.full((5, 7), 0.3), (13, 2)), 0.3, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 dims"):
        resize(np.zeros(5), 3)
    with pytest.raises(ValueError, match="positive"):
        resize(np.zeros((4, 4)), 0)


# ---------------------------------------------------------------------------------------------
# digits


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_shapes_range_split(size):
    tr, te = digits(size, "train"), digits(size, "test")
    assert tr.images.shape == (1438, 1, size, size) and te.images.shape == (359, 1, size, size)
    assert tr.images.dtype == np.float32 and len(tr) == 1438 and tr[0].shape == (1, size, size)
    assert tr.images.min() >= -1.0 and tr.images.max() <= 1.0
    assert tr.images.min() == -1.0 and tr.images.max() > 0.9
    assert not set(tr.index.tolist()) & set(te.index.tolist())
    assert len(set(tr.index.tolist()) | set(te.index.tolist())) == 1797
    assert tr.labels.shape == (1438,) and tr.labels.dtype == np.int64 and set(tr.labels.tolist()) == set(range(10))
    assert tr.name == f"digits{size}-train"


def test_digits_values_seed_and_cache():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    tr = digits(8, "train")
    np.testing.assert_array_equal(tr.images[:, 0], d.images[tr.index] / 8.0 - 1.0)
    np.testing.assert_array_equal(tr.labels, d.target[tr.index])
    # 16 px is the bilinear enlargement of the 8 px images
    np.testing.assert_allclose(digits(16, "train").images, np.clip(resize(tr.images, 16), -1, 1), atol=1e-6)
    a, b = digits(16, "test", seed=0), digits(16, "test", seed=1)
    assert not np.array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.images, digits(16, "test", seed=0).images)
    assert len(digits(16, "test", test_fraction=0.5)) == 898
    assert not a.images.flags.writeable     # cached arrays are shared: read-only


def test_digits_bad_args():
    with pytest.raises(ValueError, match="size must be 8, 16 or 32"):
        digits(12)
    with pytest.raises(ValueError, match="split"):
        digits(16, "val")
    with pytest.raises(ValueError, match="test_fraction"):
        digits(16, test_fraction=1.5)
    with pytest.raises(TypeError, match="size must be an int"):
        digits(16.0)


# ---------------------------------------------------------------------------------------------
# natural crops


def test_natural_sources_load_offline_and_disjoint():
    from mmu.data.datasets import _load_source

    assert not set(NATURAL_TRAIN_SOURCES) & set(NATURAL_TEST_SOURCES)
    for name in NATURAL_TRAIN_SOURCES + NATURAL_TEST_SOURCES:
        img = _load_source(name)
        assert img.ndim == 3 and img.shape[0] == 3 and min(img.shape[1:]) >= 300, name
        assert img.min() >= -1.0 and img.max() <= 1.0


def test_natural_crops_shapes_determinism_and_split():
    tr = natural_crops(16, "train", n=300, seed=0)
    te = natural_crops(16, "test", n=100, seed=0)
    assert tr.images.shape == (300, 3, 16, 16) and tr.images.dtype == np.float32
    assert te.images.shape == (100, 3, 16, 16) and te[5].shape == (3, 16, 16)
    for ds in (tr, te):
        assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
        assert ds.images.std() > 0.1                  # real image content, not constant
    # train and evaluation crops come from different photographs
    assert tr.sources == NATURAL_TRAIN_SOURCES and te.sources == NATURAL_TEST_SOURCES
    used_tr = {tr.sources[i] for i in tr.source_index}
    used_te = {te.sources[i] for i in te.source_index}
    assert used_tr == set(NATURAL_TRAIN_SOURCES) and used_te == set(NATURAL_TEST_SOURCES)
    assert not used_tr & used_te
    # deterministic per seed
    np.testing.assert_array_equal(tr.images, natural_crops(16, "train", n=300, seed=0).images)
    other = natural_crops(16, "train", n=300, seed=1)
    assert not np.array_equal(tr.images, other.images)
    assert len(natural_crops(16, "test")) == 256
    from mmu.data.datasets import _natural_default_n

    assert [_natural_default_n(s, "train") for s in (16, 32, 64, 128, 256)] == [4096, 4096, 1024, 256, 64]
    assert [_natural_default_n(s, "test") for s in (16, 32, 64, 128, 256)] == [256, 256, 256, 64, 16]


def test_natural_crops_are_pixels_of_the_sources():
    # a crop taken at pyramid level 0 is an exact window of its source image
    from mmu.data.datasets import _load_source

    te = natural_crops(16, "test", n=60, seed=3)
    found = 0
    for i in range(len(te)):
        src = _load_source(te.sources[te.source_index[i]])
        c = te.images[i]
        hits = np.argwhere(np.all(np.isclose(src[:, :-15, :-15], c[:, 0:1, 0:1]), axis=0))
        for top, left in hits[:50]:
            if np.array_equal(src[:, top:top + 16, left:left + 16], c):
                found += 1
                break
    assert found >= 3            # ~1/4 of the crops use level 0 (scale jitter picks the others)


def test_natural_bad_args():
    with pytest.raises(ValueError, match="split"):
        natural_crops(16, "valid")
    with pytest.raises(ValueError, match="n must be >= 1"):
        natural_crops(16, n=0)
    with pytest.raises(ValueError, match="size must be <= 256"):
        natural_crops(512)


# ---------------------------------------------------------------------------------------------
# ImageFolder and load_dataset


def _write(path, arr, fmt=None):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "imgs"
    red = np.zeros((12, 12, 3), np.uint8)
    red[..., 0] = 255
    _write(str(root / "b_red.png"), red)
    # 8 wide x 24 tall: top / middle / bottom thirds differ; the center crop keeps the middle 8x8
    tall = np.zeros((24, 8, 3), np.uint8)
    tall[8:16] = 100
    tall[16:] = 200
    _write(str(root / "a_tall.PNG"), tall)
    _write(str(root / "sub" / "c_gray.bmp"), np.full((10, 10), 51, np.uint8))
    _write(str(root / "sub" / "d_noise.jpg"), np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    big = np.zeros((200, 300, 3), np.uint8)                  # a JPEG large enough for draft decoding
    big[:, :150] = 40
    big[:, 150:] = 220
    _write(str(root / "sub" / "g_big.jpeg"), big)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 128
    _write(str(root / "e_rgba.png"), rgba)
    _write(str(root / "f_blue.webp"), np.tile(np.array([0, 0, 255], np.uint8), (9, 9, 1)), fmt="WEBP")
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_rgb(folder):
    ds = ImageFolder(folder, size=8)
    names = [os.path.relpath(f, folder) for f in ds.files]
    assert names == ["a_tall.PNG", "b_red.png", "e_rgba.png", "f_blue.webp",
                     os.path.join("sub", "c_gray.bmp"), os.path.join("sub", "d_noise.jpg"),
                     os.path.join("sub", "g_big.jpeg")]
    assert ds.images.shape == (7, 3, 8, 8) and ds.images.dtype == np.float32
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    np.testing.assert_allclose(ds[0], 100 / 127.5 - 1, atol=1e-6)             # middle third only
    np.testing.assert_allclose(ds[1][0], 1.0, atol=1e-6)                       # red, resized 12 -> 8
    np.testing.assert_allclose(ds[1][1:], -1.0, atol=1e-6)
    np.testing.assert_allclose(ds[2][1], 1.0, atol=1e-6)                       # RGBA -> RGB drops alpha
    assert ds[3][2].mean() > 0.9 and ds[3][:2].mean() < -0.9                   # webp (lossy) blue
    np.testing.assert_allclose(ds[4], 51 / 127.5 - 1, atol=1e-6)               # gray -> 3 equal channels
    np.testing.assert_allclose(ds[6][:, :, :3], 40 / 127.5 - 1, atol=0.05)  # center crop of the halves
    np.testing.assert_allclose(ds[6][:, :, 5:], 220 / 127.5 - 1, atol=0.05)
    assert ds.name == "imgs"


def test_image_folder_gray_and_cache(folder):
    ds = ImageFolder(str(folder), size=4, channels=1)
    assert ds.images.shape == (7, 1, 4, 4)
    np.testing.assert_allclose(ds[4], 51 / 127.5 - 1, atol=1e-6)
    assert ImageFolder(folder, size=4, channels=1).images is ds.images         # cached
    red = np.zeros((12, 12, 3), np.uint8)
    _write(str(folder / "b_red.png"), red)                                     # changed file: reloaded
    os.utime(folder / "b_red.png", ns=(1, 1))
    ds2 = ImageFolder(folder, size=4, channels=1)
    assert ds2.images is not ds.images
    np.testing.assert_allclose(ds2[1], -1.0, atol=1e-6)


def test_image_folder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(NotADirectoryError):
        ImageFolder(folder / "b_red.png")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ImageFolder(folder, channels=2)
    with pytest.raises(TypeError, match="root must be a path"):
        ImageFolder(3)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ValueError, match="zz_broken.png"):
        ImageFolder(folder, size=8)


def test_load_dataset(tmp_path, folder):
    assert load_dataset("digits", 16, "test").images.shape == (359, 1, 16, 16)
    assert load_dataset("natural", 16, "test", n=10).images.shape == (10, 3, 16, 16)
    # a folder without train/test subfolders: seeded split, disjoint, at least one test image
    tr, te = load_dataset(folder, 8, "train"), load_dataset(str(folder), 8, "test")
    assert len(tr) == 6 and len(te) == 1 and not set(tr.files) & set(te.files)
    assert len(load_dataset(folder, 8, "all")) == 7
    te2 = load_dataset(folder, 8, "test", seed=0)
    assert te2.files == te.files
    # a folder with train/ and test/ subfolders uses them
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            _write(str(tmp_path / "ds" / split / f"{i}.png"), np.full((6, 6, 3), 10 * i, np.uint8))
    assert len(load_dataset(tmp_path / "ds", 4, "train")) == 3
    assert load_dataset(tmp_path / "ds", 4, "test", channels=1).images.shape == (2, 1, 4, 4)
    with pytest.raises(FileNotFoundError, match="neither a built-in dataset"):
        load_dataset("cifar", 32, "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset(folder, 8, "valid")


# ---------------------------------------------------------------------------------------------
# DataLoader


def _ids(n):
    # images whose pixels hold their own index (and a left-right ramp to see flips)
    x = np.zeros((n, 1, 2, 3), np.float32)
    x += np.arange(n, dtype=np.float32)[:, None, None, None]
    x[..., 2] += 0.5
    return ImageDataset(x, name="ids")


def _batch_ids(b):
    return b[:, 0, 0, :].min(axis=1).astype(int).tolist()


def test_loader_epoch_shuffle_and_drop_last():
    ds = _ids(10)
    ld = DataLoader(ds, 3, seed=0)
    assert len(ld) == 3
    e0 = list(ld)
    assert len(e0) == 3 and all(b.shape == (3, 1, 2, 3) and b.dtype == np.float32 for b in e0)
    ids0 = sum(map(_batch_ids, e0), [])
    assert len(set(ids0)) == 9
    e1 = sum(map(_batch_ids, list(ld)), [])
    assert e1 != ids0                                       # reshuffled every epoch
    assert sum(map(_batch_ids, DataLoader(ds, 3, seed=0)), []) == ids0     # same seed, same order
    assert sum(map(_batch_ids, DataLoader(ds, 3, seed=1)), []) != ids0
    ld = DataLoader(ds, 4, shuffle=False, drop_last=False)
    batches = list(ld)
    assert len(ld) == 3 and [len(b) for b in batches] == [4, 4, 2]
    assert sum(map(_batch_ids, batches), []) == list(range(10))
    # a plain array and a list of (C, H, W) items work too
    assert sum(map(_batch_ids, DataLoader(ds.images, 5, shuffle=False)), []) == list(range(10))
    assert sum(map(_batch_ids, DataLoader(mmu.tensor(ds.images), 5, shuffle=False)), []) == list(range(10))
    items = [ds.images[i] for i in range(10)]
    assert sum(map(_batch_ids, DataLoader(items, 5, shuffle=False)), []) == list(range(10))


def test_loader_hflip():
    ds = _ids(64)
    out = np.concatenate(list(DataLoader(ds, 8, shuffle=False, hflip=True, seed=2)))
    flipped = out[..., 0] > out[..., 2]
    n = int(flipped[:, 0, 0].sum())
    assert 16 < n < 48                                      # about half
    for i in range(64):
        ref = ds.images[i, ..., ::-1] if flipped[i, 0, 0] else ds.images[i]
        np.testing.assert_array_equal(out[i], ref)
    assert np.all(ds.images[..., 2] > ds.images[..., 0])     # the dataset itself is untouched


def test_loader_batches_endless_and_exact_resume():
    ds = _ids(10)
    ref_loader = DataLoader(ds, 3, seed=5, hflip=True)
    it = ref_loader.batches()
    ref = [next(it) for _ in range(11)]                     # crosses three epoch boundaries
    for k in (0, 2, 3, 4, 7):
        ld = DataLoader(ds, 3, seed=5, hflip=True)
        it = ld.batches()
        got = [next(it) for _ in range(k)]
        state = json.loads(json.dumps(ld.state_dict()))     # plain ints, JSON round trip
        ld2 = DataLoader(ds, 3, seed=5, hflip=True)
        ld2.load_state_dict(state)
        it2 = ld2.batches()
        got += [next(it2) for _ in range(11 - k)]
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)
    # a broken-off `for` loop: the next loop finishes the same epoch
    ld = DataLoader(ds, 3, seed=5, hflip=True)
    for i, b in enumerate(ld):
        if i == 1:
            break
    rest = list(ld)
    assert len(rest) == 1
    np.testing.assert_array_equal(rest[0], ref[2])
    np.testing.assert_array_equal(next(iter(ld)), ref[3])


def test_loader_bad_args():
    ds = _ids(10)
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(ds, 11)
    assert len(DataLoader(ds, 11, drop_last=False)) == 1
    with pytest.raises(TypeError, match="batch_size must be an int"):
        DataLoader(ds, 2.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader(ds, 0)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(ds, 2, seed=-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        DataLoader(np.zeros((4, 2, 2)), 2)
    ld = DataLoader(ds, 2)
    with pytest.raises(ValueError, match="dataset of 12 images"):
        ld.load_state_dict({"epoch": 0, "position": 0, "n": 12})
    with pytest.raises(ValueError, match="batch_size 3"):
        ld.load_state_dict({"epoch": 0, "position": 0, "batch_size": 3})
    with pytest.raises(KeyError, match="position"):
        ld.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="bad position"):
        ld.load_state_dict({"epoch": 0, "position": 9})


def test_dataset_basics_and_lazy_imports():
    ds = ImageDataset(np.zeros((3, 1, 4, 4), np.float64), name="z")
    assert ds.images.dtype == np.float32 and ds.shape == (3, 1, 4, 4) and ds.channels == 1 and ds.size == 4
    assert "n=3" in repr(ds) and ds[-1].shape == (1, 4, 4)
    with pytest.raises(IndexError):
        ds[3]
    assert ds[1:].shape == (2, 1, 4, 4) and ds[[0, 2]].shape == (2, 1, 4, 4)
    with pytest.raises(TypeError):
        ds[0.5]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageDataset(np.zeros((3, 4, 4)))
    import subprocess
    import sys

    code = ("import sys, mmu, mmu.data, mmu.metrics; "
            "print([m for m in ('PIL', 'skimage', 'sklearn', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(mmu.__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
