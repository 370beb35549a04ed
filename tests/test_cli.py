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


# ---------------------------------------------------------------------- mmu --version
def test_cli_version(capsys):
    import tomllib
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert capsys.readouterr().out == f"mmu {mmu.__version__}\n" and mmu.__version__ == declared


# ---------------------------------------------------------------------- mmu train: one run per --out
def _train_args(root, name="cfg.json", **train):
    """A tiny `mmu train` on 12 images at 16 px: the argv without --out."""
    if not (root / "imgs").is_dir():
        _write_images(root / "imgs")
    entry = C.REGISTRY["vqvae-fsq"](3, 16, True)
    t = {"steps": 4, "batch_size": 4, "log_every": 1, "lr": 1e-3, "progress": False}
    t.update(train)
    with open(root / name, "w") as f:
        json.dump({"tokenizer": entry.tokenizer, "config": entry.config, "train": t,
                   "data": {"size": 16, "channels": 3}}, f)
    return ["train", "--config", str(root / name), "--data", str(root / "imgs")]


def _history_steps(out):
    with open(out / "history.csv") as f:
        return [int(float(r["step"])) for r in csv.DictReader(f)]


def _tree(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


def test_cli_train_refuses_an_existing_run_unless_resume_or_overwrite(tmp_path, capsys):
    args = _train_args(tmp_path, ckpt_every=2)
    out = tmp_path / "run"
    assert cli.main(args + ["--out", str(out), "--tensorboard", "--sample-every", "2"]) == 0
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt_00000002.safetensors", "ckpt_00000004.safetensors"]
    assert sorted(os.listdir(out / "samples")) == ["step_00000002.png", "step_00000004.png"]
    assert [f for f in os.listdir(out / "tensorboard") if f.startswith("events.out.tfevents.")]
    before = _tree(out)
    capsys.readouterr()
    # the same command again: refused, nothing touched (it used to start at step 0 among the old checkpoints)
    _user_error(args + ["--out", str(out)], capsys, "already holds a run (config.json, model.safetensors, "
                "history.csv, loss_curves.png, checkpoints/, samples/, tensorboard/); pass --resume")
    assert _tree(out) == before
    # --resume with another config: refused, naming the fields
    other = _train_args(tmp_path, "other.json", ckpt_every=2, lr=2e-3, grad_clip=0.5)
    _user_error(other + ["--out", str(out), "--resume"], capsys,
                "train.grad_clip: 1.0 in the checkpoint, 0.5 now; train.lr: 0.001 in the checkpoint, 0.002 now")
    assert _tree(out) == before
    # --resume with more steps continues the run from its last checkpoint
    assert cli.main(args + ["--out", str(out), "--resume", "--steps", "6"]) == 0
    assert "resumed at step 4" in capsys.readouterr().out
    assert _history_steps(out) == [1, 2, 3, 4, 5, 6]
    assert "ckpt_00000006.safetensors" in os.listdir(out / "checkpoints")
    assert cli.main(args + ["--out", str(out), "--resume", "--steps", "6"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    # --overwrite: only the files mmu train writes go; a user's file stays
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "keep.safetensors").write_bytes(b"mine")
    assert cli.main(args + ["--out", str(out), "--overwrite"]) == 0
    assert _history_steps(out) == [1, 2, 3, 4]
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt_00000002.safetensors", "ckpt_00000004.safetensors",
                                                       "keep.safetensors"]
    assert os.listdir(out / "samples") == [] and os.listdir(out / "tensorboard") == []
    assert (out / "notes.txt").read_text() == "mine"
    # nothing to resume; both flags at once; cfg.json inside --out where config.json would be overwritten
    _user_error(args + ["--out", str(tmp_path / "empty"), "--resume"], capsys, "no checkpoint")
    with pytest.raises(SystemExit) as e:
        cli.main(args + ["--out", str(out), "--resume", "--overwrite"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "config.json").write_text((tmp_path / "cfg.json").read_text())
    _user_error(["train", "--config", str(tmp_path / "inside" / "config.json"), "--data", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "inside")], capsys, "keep cfg.json outside --out")


def test_cli_train_ctrl_c_saves_the_run_and_resume_matches_an_uninterrupted_one(tmp_path, capsys, monkeypatch):
    import signal

    from mmu import train
    args = _train_args(tmp_path, steps=5)      # no periodic checkpoints: the interrupt writes one
    assert cli.main(args + ["--out", str(tmp_path / "whole")]) == 0
    real_step = train.Trainer.train_step

    def ctrl_c_in_step_3(self):
        if self.step == 2:
            signal.raise_signal(signal.SIGINT)   # a Ctrl-C while the third step runs
        return real_step(self)
    monkeypatch.setattr(train.Trainer, "train_step", ctrl_c_in_step_3)
    out = tmp_path / "cut"
    capsys.readouterr()
    assert cli.main(args + ["--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 3 of 5" in err and "--resume" in err and err.count("\n") == 1
    for f in ("config.json", "model.safetensors", "history.csv", "loss_curves.png", "mmu_data.json"):
        assert (out / f).is_file(), f
    assert _history_steps(out) == [1, 2, 3]
    assert os.listdir(out / "checkpoints") == ["ckpt_00000003.safetensors"]
    monkeypatch.undo()
    assert cli.main(args + ["--out", str(out), "--resume"]) == 0
    assert _history_steps(out) == [1, 2, 3, 4, 5]
    a = mmu.io.load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = mmu.io.load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_cli_train_divergence_stops_with_the_history(tmp_path, capsys, monkeypatch):
    from mmu import tokenizers
    real_forward = tokenizers.VQVAE.forward

    def explodes_at_3(self, images, step=0):
        out = real_forward(self, images, step)
        if step >= 3:
            out.loss = out.loss * 1e30
        return out
    monkeypatch.setattr(tokenizers.VQVAE, "forward", explodes_at_3)
    out = tmp_path / "run"
    _user_error(_train_args(tmp_path, steps=6, ckpt_every=2) + ["--out", str(out)], capsys,
                "the run diverged at step 3: the loss is")
    assert _history_steps(out) == [1, 2, 3]
    assert not (out / "model.safetensors").exists()
    assert os.listdir(out / "checkpoints") == ["ckpt_00000002.safetensors"]


# ---------------------------------------------------------------------- mmu compare: interrupts, sizes, report
def test_cli_compare_interrupted_writes_the_finished_entries(tmp_path, capsys, monkeypatch):
    from mmu import train
    real_fit, calls = train.Trainer.fit, []

    def fit(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(self, *a, **k)
    monkeypatch.setattr(train.Trainer, "fit", fit)
    out = tmp_path / "rep"
    assert cli.main(["compare", "--fast", "--quiet", "--tokenizers", "vqvae-fsq,vqvae-lfq,vqvae-vq",
                     "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert ("**Interrupted** (Ctrl-C) during vqvae-lfq: this report covers the 1 tokenizer(s) that finished "
            "(vqvae-fsq); not finished: vqvae-lfq, vqvae-vq.") in md
    with open(out / "report.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["vqvae-fsq"]
    for f in REPORT_FILES:
        assert (out / f).is_file(), f
    assert os.listdir(out / "models") == ["vqvae-fsq"]


def test_compare_codebook_size_and_width_for_every_entry(tmp_path, capsys):
    names = ["vqvae-fsq", "vqvae-lfq", "vqvae-vq", "dvae", "vqgan"]
    rows = C.compare(names, fast=True, out_dir=str(tmp_path / "rep"), progress=False, codebook_size=1024,
                     width=16, steps=1)
    assert [r["codebook_size"] for r in rows] == [1000, 1024, 1024, 1024, 1024]   # FSQ [8, 5, 5, 5]
    assert [r["tokens_per_image"] for r in rows] == [16] * 5
    for name in names:
        cfg = json.loads((tmp_path / "rep" / "models" / name / "config.json").read_text())["args"]["**fields_"]
        if name == "vqgan":
            assert cfg["ch"] == 16 and max(cfg["ch_mult"]) == 1 and cfg["codebook_size"] == 1024
        else:
            assert (cfg["hidden_channels"], cfg["res_channels"]) == (16, 8)
    fsq = C.with_codebook_size(C.REGISTRY["vqvae-fsq"](1, 16, False), 4096)
    assert fsq.config["quantizer_kwargs"]["levels"] == [7, 5, 5, 5, 5] and "4096" in fsq.description
    gan = C.with_width(C.REGISTRY["vqgan"](1, 16, False), 48)   # ch_mult [1, 2, 2]: ch 24; 12 groups (<= 16, divides 24)
    assert (gan.config["ch"], gan.config["norm_groups"]) == (24, 12)
    with pytest.raises(ValueError, match="'vqvae-fsq' \\(FSQ\\) has recommended levels only for 256, 1024"):
        C.with_codebook_size(C.REGISTRY["vqvae-fsq"](1, 16, False), 512)
    with pytest.raises(ValueError, match="multiple of 2"):
        C.with_width(C.REGISTRY["vqgan"](1, 16, False), 33)
    # the CLI: a size some entry cannot match fails before anything is trained or written
    _user_error(["compare", "--fast", "--tokenizers", "vqvae-vq,vqvae-lfq", "--codebook-size", "300",
                 "--out", str(tmp_path / "no")], capsys, "'vqvae-lfq' (LFQ) needs a power-of-2 codebook size")
    assert not (tmp_path / "no").exists()


def test_report_usage_ceilings_units_and_plots(fast_report, tmp_path):
    rows, out = fast_report
    md = (out / "report.md").read_text()
    assert "gen. params" in md and "params (G)" not in md
    # fast mode: batches of 8 x 16 tokens = 128 < 256 codes
    assert ("- VQ-VAE + VQ (256 codes): a training batch holds 8 x 16 = 128 tokens, so the batch usage in "
            "loss_curves.png is at most 50% (dashed line).") in md
    assert "- VQ-VAE + FSQ (240 codes): a training batch holds 8 x 16 = 128 tokens" in md
    ceilings, lines = C.usage_ceilings([{"label": "A", "codebook_size": 1024, "tokens_per_image": 16}], 32, 50)
    assert ceilings == {"A": 0.5} and lines == [
        "- A (1024 codes): a training batch holds 32 x 16 = 512 tokens, so the batch usage in loss_curves.png is "
        "at most 50% (dashed line); the 50 held-out images hold 800 tokens, so the usage column is at most 78%."]
    assert C.usage_ceilings([{"label": "A", "codebook_size": 256, "tokens_per_image": 16}], 32, 50) == ({"A": 1.0}, [])
    # loss curves: each tokenizer's loss scaled to [0, 1] (VQGAN's scale no longer flattens the others)
    extras = [{"entry": C.Entry("a", "A", "VQVAE", {}), "records": [{"step": s, "loss": v, "usage": 0.2}
                                                                   for s, v in ((1, 1e4), (2, 5e3), (3, 100.0))]},
              {"entry": C.Entry("b", "B", "VQVAE", {}), "records": [{"step": s, "loss": v}
                                                                   for s, v in ((1, 1.0), (2, 0.5), (3, -0.2))]}]
    fig = C._loss_curves(extras, str(tmp_path / "l.png"), {"A": 0.5})
    psnr_ax, usage_ax, loss_ax = fig.axes
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [1.0, 4900 / 9900, 0.0])
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [1.0, 0.7 / 1.2, 0.0])
    assert [tuple(l.get_ydata()) for l in usage_ax.lines[1:]] == [(0.5, 0.5)]     # A's ceiling, dashed
    # usage panels: one shared y axis
    rows2 = [dict(label="A", codebook_size=8, usage=1.0, perplexity=8.0), dict(label="B", codebook_size=8,
                                                                               usage=0.25, perplexity=2.0)]
    ex2 = [{"codes": np.arange(64) % 8}, {"codes": np.arange(64) % 2}]
    fig = C._usage_plot(rows2, ex2, str(tmp_path / "u.png"))
    a, b = fig.axes[:2]
    assert a.get_shared_y_axes().joined(a, b) and a.get_ylim() == b.get_ylim() and a.get_ylim()[1] >= 0.5
