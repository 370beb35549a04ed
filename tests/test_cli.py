"""`mmu compare` (mmu.compare and the console command), `mmu train`, `mmu encode` / `mmu decode`: the
report folder holds every file with sane numbers, the commands run end to end on a tiny budget, and a
user's mistake ends with a one-line message and a nonzero exit status (no traceback)."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import mmu
from mmu import __main__ as cli
from mmu import compare as C

if not hasattr(mmu.tokenizers, "VQVAE") or not hasattr(mmu.train, "Trainer"):
    pytest.skip("mmu.tokenizers / mmu.train are not in this build", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT_FILES = ["report.md", "report.csv", "reconstructions.png", "loss_curves.png", "usage.png"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def fast_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    prev = mmu.get_num_threads()
    mmu.set_num_threads(2)
    try:
        rows = C.compare(fast=True, out_dir=str(out), progress=False)  # threads=1 inside
        assert mmu.get_num_threads() == 2  # and restored after
    finally:
        mmu.set_num_threads(prev)
    return rows, out


def _png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.size


def test_compare_fast_writes_every_file_with_sane_numbers(fast_report):
    rows, out = fast_report
    assert [r["name"] for r in rows] == C.DEFAULT_NAMES
    for f in REPORT_FILES:
        assert os.path.getsize(out / f) > 0, f
    for f in REPORT_FILES[2:]:
        w, h = _png_size(out / f)
        assert w > 100 and h > 100
    for r in rows:
        K, T = r["codebook_size"], r["tokens_per_image"]
        assert 2 <= K <= 4096 and T == 16  # 16 px digits, two stride-2 downsamples -> 4 x 4
        assert r["bits_per_image"] == pytest.approx(T * math.log2(K))
        assert math.isfinite(r["psnr"]) and 0.0 < r["psnr"] < 60.0
        assert -1.0 <= r["ssim"] <= 1.0
        assert 0.0 < r["usage"] <= 1.0 and 1.0 <= r["perplexity"] <= K + 1e-6
        assert r["train_time_s"] > 0 and r["encode_img_s"] > 0 and r["decode_img_s"] > 0
        assert r["params"] > 0 and r["steps"] == C.FAST_STEPS
    # the CSV holds the same numbers
    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["name"] for t in table] == C.DEFAULT_NAMES
    for t, r in zip(table, rows):
        assert float(t["psnr"]) == pytest.approx(r["psnr"])
        assert int(t["codebook_size"]) == r["codebook_size"]
    md = (out / "report.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per tokenizer
    for r in rows:
        assert r["label"] in md
    assert "## Machine" in md and "mmu_threads: 1" in md and '"steps": %d' % C.FAST_STEPS in md


def test_compare_saved_models_reload_and_reproduce(fast_report):
    from mmu import data, metrics, tokenizers

    rows, out = fast_report
    x = np.ascontiguousarray(data.digits(size=16, split="test", seed=0).images[:C.FAST_EVAL_IMAGES])
    for r in rows:
        model = tokenizers.Tokenizer.from_pretrained(str(out / "models" / r["name"]))
        model.eval()
        codes = model.encode(x)
        assert codes.dtype == np.int64 and codes.shape[0] == len(x)
        assert metrics.psnr(model.decode(codes), x) == pytest.approx(r["psnr"], abs=1e-3)
        with open(out / "models" / r["name"] / "mmu_data.json") as f:
            assert json.load(f) == {"dataset": "digits", "size": 16, "channels": 1}


def test_compare_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer"):
        C.compare(["nope"], fast=True, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="steps"):
        C.compare(["vqvae-fsq"], steps=0, fast=True, out_dir=str(tmp_path))
    with pytest.raises(TypeError, match="batch_size"):
        C.compare(["vqvae-fsq"], batch_size=2.5, fast=True, out_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset"):
        C.compare(["vqvae-fsq"], dataset=str(tmp_path / "missing"), fast=True, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="repeat"):
        C.compare(["vqvae-fsq", "vqvae-fsq"], fast=True, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="threads"):
        C.compare(["vqvae-fsq"], fast=True, out_dir=str(tmp_path), threads=0)
    assert mmu.get_num_threads() == 1  # restored after the failed call
    assert not os.listdir(tmp_path)  # nothing written before the checks pass


def test_markdown_table_formats():
    rows = [{"label": "A", "quantizer": "vq", "codebook_size": 256, "tokens_per_image": 16, "bits_per_image": 128.0,
             "psnr": 20.123, "ssim": 0.51234, "usage": 0.5, "perplexity": 100.04, "params": 1234,
             "train_time_s": 1.26, "encode_img_s": 1234.5, "decode_img_s": 99.4}]
    md = C.markdown_table(rows).splitlines()
    assert len(md) == 3 and "LPIPS" not in md[0]
    assert md[2] == "| A | vq | 256 | 16 | 128 | 20.12 | 0.512 | 50% | 100.0 | 1,234 | 1.3 | 1,234 | 99 |"


def test_cli_compare_end_to_end(tmp_path):
    out = tmp_path / "rep"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "mmu", "compare", "--fast", "--tokenizers", "vqvae-fsq,vqvae-lfq",
                        "--out", str(out), "--threads", "1", "--quiet"],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    for f in REPORT_FILES:
        assert (out / f).is_file(), f
    with open(out / "report.csv") as f:
        assert [t["name"] for t in csv.DictReader(f)] == ["vqvae-fsq", "vqvae-lfq"]
    # a user error through the real console entry: one line on stderr, exit status 1
    r = subprocess.run([sys.executable, "-m", "mmu", "compare", "--dataset", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr and "--dataset" in r.stderr


def test_cli_list(capsys):
    assert cli.main(["compare", "--list"]) == 0
    text = capsys.readouterr().out
    for name in C.REGISTRY:
        assert name in text


def _write_images(folder, n=12, size=20, mode="RGB"):
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        a = np.zeros((size + 4, size, 3), np.uint8)  # not square: the loader center-crops
        a[..., 0] = np.linspace(0, 255, size, dtype=np.uint8)[None, :]
        a[2 + i % 8: 10 + i % 8, 4:12] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(a).convert(mode).save(os.path.join(folder, f"img{i:02d}.png"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`mmu train` on a folder of 12 images with a tiny config: the model folder."""
    root = tmp_path_factory.mktemp("train")
    _write_images(root / "imgs")
    cfg = C.REGISTRY["vqvae-fsq"](3, 16, True)
    with open(root / "cfg.json", "w") as f:
        json.dump({"tokenizer": cfg.tokenizer, "config": cfg.config, "train": {"steps": 50, "batch_size": 4,
                   "log_every": 1, "progress": False}, "data": {"size": 16, "channels": 3}}, f)
    prev = mmu.get_num_threads()
    mmu.set_num_threads(1)
    try:
        assert cli.main(["train", "--config", str(root / "cfg.json"), "--data", str(root / "imgs"),
                         "--steps", "3", "--out", str(root / "model")]) == 0
    finally:
        mmu.set_num_threads(prev)
    return root


def test_cli_train_writes_a_loadable_model(trained):
    from mmu import tokenizers

    model_dir = trained / "model"
    for f in ("config.json", "model.safetensors", "mmu_data.json", "history.csv", "loss_curves.png"):
        assert (model_dir / f).is_file(), f
    with open(model_dir / "history.csv") as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f)]
    assert steps and steps[-1] == 3  # --steps overrides the config's 50
    model = tokenizers.Tokenizer.from_pretrained(str(model_dir))
    assert type(model).__name__ == "VQVAE"


def test_cli_encode_decode_round_trip(trained, capsys):
    from mmu import tokenizers
    from PIL import Image

    codes_path = trained / "out" / "codes.npy"
    assert cli.main(["encode", "--model", str(trained / "model"), str(trained / "imgs"),
                     "--out", str(codes_path)]) == 0
    codes = np.load(codes_path)
    assert codes.dtype == np.int64 and codes.shape == (12, 4, 4)
    assert len((trained / "out" / "codes.files.txt").read_text().splitlines()) == 12
    assert cli.main(["decode", "--model", str(trained / "model"), str(codes_path), "--out",
                     str(trained / "dec")]) == 0
    pngs = sorted(os.listdir(trained / "dec"))
    assert len(pngs) == 12
    with Image.open(trained / "dec" / pngs[0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
        got = np.asarray(im, np.float32)
    # the PNG is the model's decode of the codes, up to 8-bit rounding
    model = tokenizers.Tokenizer.from_pretrained(str(trained / "model"))
    model.eval()
    want = np.clip((model.decode(codes[:1])[0].transpose(1, 2, 0) + 1.0) * 127.5, 0, 255)
    assert np.abs(got - want).max() <= 1.0
    # encoding the same images again gives the same codes (one image file given directly)
    assert cli.main(["encode", "--model", str(trained / "model"), str(trained / "imgs" / "img00.png"),
                     "--out", str(trained / "one.npy")]) == 0
    np.testing.assert_array_equal(np.load(trained / "one.npy"), codes[:1])
    capsys.readouterr()


def _user_error(argv, capsys, needle):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err


def test_cli_user_errors(trained, tmp_path, capsys):
    model = str(trained / "model")
    _user_error(["compare", "--tokenizers", "vqvae-vq,nope"], capsys, "nope")
    _user_error(["compare", "--dataset", str(tmp_path / "missing")], capsys, "--dataset")
    _user_error(["compare", "--lpips-weights", str(tmp_path / "w.safetensors")], capsys, "--lpips-weights")
    _user_error(["train", "--config", str(tmp_path / "none.json"), "--data", str(tmp_path)], capsys, "--config")
    _user_error(["train", "--config", str(trained / "cfg.json"), "--data", str(tmp_path / "missing")], capsys,
                "--data")
    _user_error(["train"], capsys, "--config")
    bad = tmp_path / "bad.json"
    for text, needle in [('{"tokenizer": "VQVAE", "config": {"no_such_field": 1}, "train": {"steps": 1}}', "no_such_field"),
                         ('{"tokenizer": "Nope"}', "Nope"),
                         ('{"tokenizer": "VQVAE", "extra": 1}', "extra"),
                         ('{"tokenizer": "VQVAE", "train": {"stepz": 3}}', "stepz"),
                         ("{not json", "JSON")]:
        bad.write_text(text)
        _user_error(["train", "--config", str(bad), "--data", str(trained / "imgs"), "--out", str(tmp_path / "m")], capsys,
                    needle)
    _user_error(["encode", "--model", str(tmp_path / "missing"), str(trained / "imgs"), "--out",
                 str(tmp_path / "c.npy")], capsys, "--model")
    _user_error(["encode", "--model", model, str(tmp_path / "missing.png"), "--out", str(tmp_path / "c.npy")],
                capsys, "missing.png")
    np.save(tmp_path / "big.npy", np.full((1, 4, 4), 10 ** 6, np.int64))
    _user_error(["decode", "--model", model, str(tmp_path / "big.npy"), "--out", str(tmp_path / "d")], capsys,
                "codes must lie in")
    np.save(tmp_path / "float.npy", np.zeros((1, 4, 4), np.float32))
    _user_error(["decode", "--model", model, str(tmp_path / "float.npy"), "--out", str(tmp_path / "d")], capsys,
                "integers")
    # bad command-line syntax: argparse's usage + message, exit status 2
    for argv in (["compare", "--steps", "0"], ["compare", "--bogus"], ["encode", "--model", model],
                 ["nosuchcommand"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_cli_example_config_is_valid(capsys, tmp_path):
    assert cli.main(["train", "--example-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert set(cfg) == {"tokenizer", "config", "train", "data"}
    from mmu import tokenizers, train
    model = getattr(tokenizers, cfg["tokenizer"])(**cfg["config"])
    assert model.codebook_size == 240
    train.TrainConfig(**dict(cfg["train"], ckpt_dir=str(tmp_path)))  # `mmu train` sets ckpt_dir to OUT/checkpoints


def test_cli_info_and_help(capsys):
    assert cli.main(["info"]) == 0
    assert "mmu " in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    assert '"tokenizer": "VQVAE"' in capsys.readouterr().out


def test_compare_with_lpips_weights(tmp_path):
    """--lpips-weights turns on VQGAN's perceptual loss and adds an LPIPS column (a randomly
    initialised LPIPS saved as the weights file: the numbers mean nothing, the plumbing is tested)."""
    if not hasattr(mmu.losses, "LPIPS") or not C._has_discriminator():
        pytest.skip("mmu.losses.LPIPS / the VQGAN discriminator are not in this build")
    weights = tmp_path / "lpips.safetensors"
    mmu.io.save_file(mmu.losses.LPIPS(pretrained=False).state_dict(), str(weights))
    rows = C.compare(["vqgan"], fast=True, out_dir=str(tmp_path / "rep"), progress=False, lpips_weights=str(weights))
    assert rows[0]["lpips"] >= 0.0 and math.isfinite(rows[0]["lpips"])
    assert "LPIPS" in (tmp_path / "rep" / "report.md").read_text().splitlines()[4]
    cfg = json.loads((tmp_path / "rep" / "models" / "vqgan" / "config.json").read_text())
    assert '"perceptual_weight": 1.0' in json.dumps(cfg)


# ---------------------------------------------------------------------------------------------
# issue 11: held-out splits of a user folder (defect 3), one discovery rule for train and encode and
# unreadable files (defect 8), held-out evaluation in `mmu train`


def _user_folder(root):
    """The README's layout: images at the root and in a subfolder, held-out images in test/."""
    _write_images(root, n=8, size=20)
    _write_images(root / "more", n=2, size=20)
    from PIL import Image
    rng = np.random.default_rng(5)
    os.makedirs(root / "test", exist_ok=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "test" / f"held{i}.png")
    return root


def test_compare_on_a_folder_never_trains_on_test(tmp_path):
    root = _user_folder(tmp_path / "mine")
    out = tmp_path / "rep"
    C.compare(["vqvae-fsq"], dataset=str(root), size=16, fast=True, out_dir=str(out), progress=False)
    md = (out / "report.md").read_text()
    # 10 training images (root + more/), the 3 of test/ held out, and the report says how
    assert "on 10 training images" in md and "metrics on 3 held-out images" in md
    assert f"train: 10 images from {root} (root and subfolders except test/)" in md
    assert f"held out: 3 images from {root / 'test'}" in md


def _tiny_cfg(path, **train):
    cfg = C.REGISTRY["vqvae-fsq"](3, 16, True)
    with open(path, "w") as f:
        json.dump({"tokenizer": cfg.tokenizer, "config": cfg.config,
                   "train": {"steps": 4, "batch_size": 4, "log_every": 1, "progress": False, **train},
                   "data": {"size": 16, "channels": 3, "random_crop": True, "hflip": True}}, f)
    return path


def test_cli_train_evaluates_on_the_held_out_split(tmp_path, capsys):
    from mmu import data, metrics, tokenizers

    root = _user_folder(tmp_path / "mine")
    cfg = _tiny_cfg(tmp_path / "cfg.json", eval_every=2)
    assert cli.main(["train", "--config", str(cfg), "--data", str(root), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"train: 10 images from {root} (root and subfolders except test/)" in out
    assert f"held out: 3 images from {root / 'test'}" in out and "training images" not in out
    ev = json.loads((tmp_path / "m" / "eval.json").read_text())
    assert ev["step"] == 4 and ev["heldout_images"] == 3 and ev["held_out"].startswith("3 images from")
    # the numbers are the saved model's on the test/ images (center views), recomputed here
    model = tokenizers.Tokenizer.from_pretrained(str(tmp_path / "m"))
    model.eval()
    x = data.ImageFolder(root / "test", 16).images
    recon = np.asarray(model.decode(model.encode(x)))
    assert ev["eval_psnr"] == pytest.approx(float(metrics.psnr(recon, x, reduction="none").mean()), abs=1e-4)
    assert ev["eval_ssim"] == pytest.approx(metrics.ssim(recon, x), abs=1e-5)
    with open(tmp_path / "m" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows if r.get("eval_psnr")] == [2, 4]   # every eval_every steps
    assert "eval_ssim" in rows[0]
    # --val-data: an explicit held-out folder; without test/ a seeded fraction
    val = tmp_path / "val"
    _write_images(val, n=2, size=20)
    assert cli.main(["train", "--config", str(cfg), "--data", str(root), "--val-data", str(val),
                     "--out", str(tmp_path / "m2")]) == 0
    ev = json.loads((tmp_path / "m2" / "eval.json").read_text())
    assert ev["heldout_images"] == 2 and ev["train"].startswith("10 images")
    flat = tmp_path / "flat"
    _write_images(flat, n=10, size=20)
    assert cli.main(["train", "--config", str(cfg), "--data", str(flat), "--val-fraction", "0.3",
                     "--out", str(tmp_path / "m3")]) == 0
    ev = json.loads((tmp_path / "m3" / "eval.json").read_text())
    assert ev["heldout_images"] == 3 and "seeded random split (seed 0)" in ev["train"]
    capsys.readouterr()
    _user_error(["train", "--config", str(cfg), "--data", str(flat), "--val-fraction", "1.5"], capsys,
                "--val-fraction")
    _user_error(["train", "--config", str(cfg), "--data", str(flat), "--val-data", str(tmp_path / "no")], capsys,
                "--val-data")


def test_cli_train_and_encode_see_the_same_files_and_skip_unreadable_ones(trained, tmp_path, capsys):
    from PIL import Image

    from mmu import data

    root = tmp_path / "mixed"
    _write_images(root, n=3, size=20)
    os.makedirs(root / "deeper")
    a = np.full((20, 20, 3), 90, np.uint8)
    Image.fromarray(a).save(root / "deeper" / "x.TIF")
    Image.fromarray(a).save(root / "y.tiff")
    Image.fromarray(a).save(root / ".hidden.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    (root / "deeper" / "empty.jpg").write_bytes(b"")
    files = data.list_images(root)
    assert len(files) == 7                                   # the rule: recursive, .tif/.tiff, no hidden
    codes_path = tmp_path / "codes.npy"
    assert cli.main(["encode", "--model", str(trained / "model"), str(root), "--out", str(codes_path)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1 and "skipped 2 unreadable image file(s) of 7" in lines[0]
    assert "broken.png" in lines[0] and "empty.jpg" in lines[0]
    encoded = (tmp_path / "codes.files.txt").read_text().split()
    assert encoded == [f for f in files if not f.endswith(("broken.png", "empty.jpg"))]
    assert np.load(codes_path).shape == (5, 4, 4)
    # training on the same folder uses the same 5 readable images (+ nothing from .hidden.png)
    cfg = _tiny_cfg(tmp_path / "cfg.json", steps=1, batch_size=2)
    assert cli.main(["train", "--config", str(cfg), "--data", str(root), "--val-fraction", "0.2",
                     "--out", str(tmp_path / "m")]) == 0
    out, err = capsys.readouterr()
    assert "skipped 2 unreadable image file(s) of 7" in err
    ev = json.loads((tmp_path / "m" / "eval.json").read_text())
    n_train = int(ev["train"].split()[0])
    assert n_train + ev["heldout_images"] == 5
    # nothing readable at all: a clear error
    bad = tmp_path / "bad"
    os.makedirs(bad)
    (bad / "a.png").write_bytes(b"")
    _user_error(["encode", "--model", str(trained / "model"), str(bad), "--out", str(tmp_path / "c.npy")], capsys,
                "none of the 1 image files can be read")
