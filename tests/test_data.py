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
    # more than the 5 training photos of the first version; every one ships in the wheels
    assert len(NATURAL_TRAIN_SOURCES) == 7 and len(NATURAL_TEST_SOURCES) == 3
    assert "skimage:motorcycle_left" in NATURAL_TEST_SOURCES       # one view of the stereo pair, never both
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
    # flat crops (retina's black corners, a uniform sky) are drawn again
    stds = tr.images.reshape(len(tr), -1).std(axis=1)
    assert stds.min() >= 0.02
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
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "bad" / "y.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 2 image files can be read"):
        ImageFolder(tmp_path / "bad", size=8)


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
            _write(str(tmp_path / "ds" / split / f"{i}.png"), np.full((6, 6, 3), 10 * i + n, np.uint8))
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


# ---------------------------------------------------------------------------------------------
# discovery, splits, unreadable files (issue 11: defects 3 and 8)


def _png(path, seed, shape=(10, 14, 3)):
    _write(str(path), np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))


@pytest.fixture
def with_test_dir(tmp_path):
    """The README's layout: images at the root and in a subfolder, held-out images in test/."""
    pytest.importorskip("PIL")
    root = tmp_path / "mine"
    for i in range(5):
        _png(root / f"r{i}.png", i)
    _png(root / "more" / "m0.png", 10)
    for i in range(3):
        _png(root / "test" / f"t{i}.png", 20 + i)
    return root


def test_test_subfolder_is_never_trained_on(with_test_dir):
    root = with_test_dir
    train, test = mmu.data.load_splits(root, 8)
    test_files = sorted(str(p) for p in (root / "test").iterdir())
    assert sorted(test.files) == test_files
    assert len(train) == 6 and not set(train.files) & set(test.files)
    assert all(os.sep + "test" + os.sep not in f for f in train.files)
    assert train.split == f"6 images from {root} (root and subfolders except test/)"
    assert test.split == f"3 images from {root / 'test'}"
    # load_dataset's "train" side is the same (today's main collected it recursively, test/ included)
    tr = load_dataset(root, 8, "train")
    assert tr.files == train.files and len(load_dataset(root, 8, "test")) == 3
    np.testing.assert_array_equal(tr.images, train.images)


def test_split_rules_and_disjointness(tmp_path, with_test_dir):
    # no test/: a seeded split, described as such
    flat = tmp_path / "flat"
    for i in range(10):
        _png(flat / f"{i}.png", i)
    sp = mmu.data.folder_split(flat, 0.3, seed=4)
    assert (len(sp.train), len(sp.test), sp.rule) == (7, 3, "seeded split")
    assert not set(sp.train) & set(sp.test) and sorted(sp.train + sp.test) == mmu.data.list_images(flat)
    assert sp.describe()[0] == f"7 images from {flat}: a seeded random split (seed 4) of its 10 readable images, 30% held out"
    assert mmu.data.folder_split(flat, 0.3, seed=4).test == sp.test != mmu.data.folder_split(flat, 0.3, 5).test
    # only train/: the held-out images come out of train/ (today's main took them from the whole folder)
    only = tmp_path / "only"
    for i in range(4):
        _png(only / "train" / f"{i}.png", i)
    _png(only / "extra.png", 9)
    sp = mmu.data.folder_split(only, 0.25)
    assert sp.rule == "train/ + seeded split" and len(sp.train) == 3 and len(sp.test) == 1
    assert all(os.sep + "train" + os.sep in f for f in sp.train + sp.test)
    # train/ + test/: images elsewhere are not used, and the description says so
    _png(only / "test" / "t.png", 30)
    sp = mmu.data.folder_split(only)
    assert sp.rule == "train/ + test/" and len(sp.train) == 4 and len(sp.test) == 1
    assert "1 images of" in sp.train_from and "not used" in sp.train_from
    # a held-out file reached through a symlink from the root is one file: it leaves the training side
    root = with_test_dir
    os.symlink(root / "test" / "t0.png", root / "alias.png")
    sp = mmu.data.folder_split(root)
    assert len(sp.train) == 6 and str(root / "alias.png") not in sp.train
    assert "1 left out because they are also held-out files" in sp.train_from
    # an identical copy is reported (different files, both kept)
    import shutil

    shutil.copy(root / "test" / "t1.png", root / "copy.png")
    with pytest.warns(UserWarning, match=r"1 training image\(s\) have the same bytes.*copy.png"):
        sp = mmu.data.folder_split(root)
    assert str(root / "copy.png") in sp.train
    # an explicit held-out folder inside the data folder (mmu train --val-data)
    val = tmp_path / "v"
    for i in range(3):
        _png(val / "val" / f"{i}.png", 40 + i)
        _png(val / f"{i}.png", 50 + i)
    sp = mmu.data.folder_split(val, held_out=val / "val")
    assert len(sp.test) == 3 and len(sp.train) == 3 and not set(sp.train) & set(sp.test)
    with pytest.raises(ValueError, match="at least 2"):
        mmu.data.folder_split(flat / "0.png" if False else _one(tmp_path))
    with pytest.raises(ValueError, match="test_fraction"):
        mmu.data.folder_split(flat, 1.0)


def _one(tmp_path):
    _png(tmp_path / "one" / "a.png", 0)
    return tmp_path / "one"


def test_list_images_one_rule(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "r"
    names = ["b.PNG", "a.jpeg", "c.TIF", "d.tiff", "e.webp", "f.bmp", "g.JPG", "h.gif",
             os.path.join("z", "y", "deep.png"), os.path.join("k", "x.png")]
    for n in names:
        ext = os.path.splitext(n)[1].lower().lstrip(".")
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}.get(ext, ext.upper())
        _write(str(root / n), np.full((6, 6, 3), 100, np.uint8), fmt=fmt)
    _png(root / ".hidden.png", 0)
    _png(root / ".cache" / "x.png", 0)
    (root / "notes.txt").write_text("x")
    (root / "raw.npy").write_bytes(b"x")
    got = [os.path.relpath(p, root) for p in mmu.data.list_images(root)]
    assert got == ["a.jpeg", "b.PNG", "c.TIF", "d.tiff", "e.webp", "f.bmp", "g.JPG", "h.gif",
                   os.path.join("k", "x.png"), os.path.join("z", "y", "deep.png")]
    assert [os.path.relpath(p, root) for p in mmu.data.list_images(root, exclude=("z",))] == got[:-1]
    ds = ImageFolder(root, 4)
    assert ds.files == mmu.data.list_images(root) and ds.images.shape == (10, 3, 4, 4)
    np.testing.assert_allclose(ds.images[[1, 3, 4, 5, 7]], 100 / 127.5 - 1, atol=1e-6)   # lossless formats
    with pytest.raises(FileNotFoundError):
        mmu.data.list_images(tmp_path / "missing")


def _truncated_png(path):
    _png(path, 7, (40, 40, 3))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])       # the header reads, the pixel data ends early


def test_unreadable_files_are_skipped_and_all_reported(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "c"
    for i in range(4):
        _png(root / f"ok{i}.png", i)
    (root / "garbage.jpg").write_bytes(b"not a jpeg at all")
    (root / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning) as rec:
        ds = ImageFolder(root, 8)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "skipped 2 unreadable image file(s) of 6" in msgs[0]
    assert "garbage.jpg" in msgs[0] and "empty.png" in msgs[0]
    assert len(ds) == 4 and sorted(os.path.basename(p) for p, _ in ds.skipped) == ["empty.png", "garbage.jpg"]
    # a truncated file passes the header check; decoding it warns once and uses the next image
    _truncated_png(root / "ok1.png")
    ds = ImageFolder(root, 8, check_files=False, files=mmu.data.list_images(root)[2:])   # ok0..ok3
    with pytest.warns(UserWarning, match="ok1.png.*next image"):
        x = ds.load_item(1)
    np.testing.assert_array_equal(x, ds.load_item(2))
    # streamed batches (mmu encode): every unreadable file left out, one warning naming all of them
    files = mmu.data.list_images(root)
    with pytest.warns(UserWarning) as rec:
        out = list(mmu.data.iter_image_batches(files, 8, batch_size=2, workers=2))
    paths = [p for ps, _ in out for p in ps]
    assert [os.path.basename(p) for p in paths] == ["ok0.png", "ok2.png", "ok3.png"]
    assert sum(len(x) for _, x in out) == 3
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "skipped 3 unreadable image file(s) of 6" in msgs[0]
    assert all(n in msgs[0] for n in ("empty.png", "garbage.jpg", "ok1.png"))
    with pytest.raises(ValueError, match="none of the 2 image files"):
        list(mmu.data.iter_image_batches([root / "empty.png", root / "garbage.jpg"], 8))


# ---------------------------------------------------------------------------------------------
# streaming: random resized crops, worker threads, bounded memory


@pytest.fixture
def photos(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "photos"
    for i in range(11):
        _png(root / f"{i:02d}.png", i, (24 + i, 30, 3))
    _write(str(root / "big.jpg"), np.random.default_rng(3).integers(0, 255, (300, 200, 3), dtype=np.uint8))
    return root


def test_random_resized_crop_follows_torchvision():
    from mmu.data.folder import _random_resized_crop

    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = int(rng.integers(5, 400)), int(rng.integers(5, 400))
        top, left, ch, cw = _random_resized_crop(h, w, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    # accepted draws: area in scale * area, aspect in ratio (up to rounding to whole pixels)
    fr, ar = [], []
    for _ in range(2000):
        top, left, ch, cw = _random_resized_crop(300, 300, (0.25, 0.5), (0.5, 2.0), rng)
        fr.append(ch * cw / 90000)
        ar.append(cw / ch)
    assert 0.24 < min(fr) and max(fr) < 0.51 and 0.48 < min(ar) and max(ar) < 2.05
    assert np.mean(np.log(ar)) == pytest.approx(0.0, abs=0.05)    # log-uniform aspect ratio
    # a 1-pixel-high strip can never fit a crop of ratio 1 and 8% area: the fallback is the centre
    # crop of the clamped ratio, as in torchvision
    assert _random_resized_crop(1, 100, (0.5, 1.0), (1.0, 1.0), rng) == (0, 49, 1, 1)
    assert _random_resized_crop(100, 10, (1.0, 1.0), (0.5, 2.0), rng) == (40, 0, 20, 10)


def test_random_crop_is_the_drawn_box_resized(photos):
    from PIL import Image

    from mmu.data.folder import _random_resized_crop

    ds = ImageFolder(photos, 8, random_crop=True, crop_scale=(0.2, 0.6))
    path = ds.files[3]
    got = ds.load_item(3, seed=123)
    with Image.open(path) as im:
        w, h = im.size
        top, left, ch, cw = _random_resized_crop(h, w, (0.2, 0.6), (3 / 4, 4 / 3), np.random.default_rng(123))
        ref = np.asarray(im.convert("RGB").crop((left, top, left + cw, top + ch)).resize(
            (8, 8), Image.Resampling.BILINEAR), np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_array_equal(ds.load_item(3), ds[3])            # no seed: the centre view
    assert not np.array_equal(ds.load_item(3, seed=1), ds.load_item(3, seed=2))
    big = ds.load_item(ds.files.index(str(photos / "big.jpg")), seed=5)   # JPEG: reduced-scale decode
    assert big.shape == (3, 8, 8) and np.isfinite(big).all()
    with pytest.raises(ValueError, match="crop_scale"):
        ImageFolder(photos, 8, crop_scale=(0.5, 0.2))
    with pytest.raises(TypeError, match="crop_ratio"):
        ImageFolder(photos, 8, crop_ratio=3)


def test_streamed_batches_do_not_depend_on_workers_and_resume(photos):
    ds = ImageFolder(photos, 8, random_crop=True)
    runs = {}
    for nw in (0, 1, 3):
        ld = DataLoader(ds, 5, seed=7, hflip=True, num_workers=nw, prefetch=1)
        it = ld.batches()
        runs[nw] = [next(it) for _ in range(7)]                     # 2 batches an epoch: crosses epochs
    for nw in (1, 3):
        for a, b in zip(runs[0], runs[nw]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[0][2][:5])          # a new crop / order every epoch
    # resume from a state_dict taken mid-epoch: the same batches
    ld = DataLoader(ds, 5, seed=7, hflip=True, num_workers=2)
    it = ld.batches()
    [next(it) for _ in range(3)]
    ld2 = DataLoader(ds, 5, seed=7, hflip=True, num_workers=2)
    ld2.load_state_dict(json.loads(json.dumps(ld.state_dict())))
    it2 = ld2.batches()
    for ref in runs[0][3:]:
        np.testing.assert_array_equal(next(it2), ref)
    # without random_crop, the streamed batches equal an in-memory loader over .images (order, flips)
    plain = ImageFolder(photos, 8)
    a = list(DataLoader(plain, 4, seed=3, hflip=True, num_workers=2))
    b = list(DataLoader(plain.images, 4, seed=3, hflip=True))
    assert len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


class _CountingFolder:
    """A streamed dataset counting decoded images that the consumer has not received yet."""

    def __init__(self, inner):
        import threading

        self.inner, self.loaded, self.consumed, self.max_ahead = inner, 0, 0, 0
        self.lock = threading.Lock()

    def __len__(self):
        return len(self.inner)

    def load_item(self, i, seed=None):
        x = self.inner.load_item(i, seed)
        with self.lock:
            self.loaded += 1
            self.max_ahead = max(self.max_ahead, self.loaded - self.consumed)
        return x


def test_streaming_memory_is_bounded(photos):
    ds = _CountingFolder(ImageFolder(photos, 8))
    for nw, prefetch, bs in ((3, 1, 2), (2, 2, 3), (0, 1, 4)):
        ds.loaded = ds.consumed = ds.max_ahead = 0
        ld = DataLoader(ds, bs, seed=1, num_workers=nw, prefetch=prefetch, drop_last=False)
        for x in ld:
            with ds.lock:
                ds.consumed += len(x)
        assert ds.loaded == ds.consumed == 12
        bound = bs if nw == 0 else (prefetch + 1) * bs
        assert 0 < ds.max_ahead <= bound, (nw, prefetch, bs, ds.max_ahead)
    # a broken-off epoch leaves no decoding behind that could grow: the next epoch starts clean
    ld = DataLoader(ds, 2, num_workers=2, prefetch=1)
    for x in ld:
        break
    assert ld.position == 1 and len(list(ld)) == 5
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, 2, num_workers=-1)
    with pytest.raises(ValueError, match="prefetch"):
        DataLoader(ds, 2, prefetch=0)


def test_streaming_never_touches_images(photos, monkeypatch):
    ds = ImageFolder(photos, 8)
    monkeypatch.setattr(mmu.data.folder, "_load_all", lambda *a: pytest.fail("decoded the whole folder"))
    ld = DataLoader(ds, 4)
    assert ld.streamed and ds.shape == (12, 3, 8, 8) and ds.channels == 3 and ds.size == 8
    assert next(iter(ld)).shape == (4, 3, 8, 8)
