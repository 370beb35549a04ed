"""VILA-U-tiny on the built-in captioned sets (mmu.models.vila_u.tiny): short runs learn (losses fall, the tower
and the answers clear chance on held-out digits), seeded runs repeat bit for bit, save / load / resume, the
tasks' outputs, the CLI round trip (mmu vila-u train / generate / answer) and bad input."""
import json
import os

import numpy as np
import pytest

import mmu
from mmu.__main__ import main
from mmu.data.captioned import DIGIT_WORDS
from mmu.models.vila_u import VILAU, UnifiedVisionTower, digit_prompts, zero_shot_accuracy
from mmu.models.vila_u import tiny

SMALL = dict(tower_dim=32, codebook_size=64, rvq_depth=2, dim=32, num_layers=1, num_heads=2)


def test_short_run_beats_chance_on_held_out_digits():
    # measured at this budget (seed 0, 94 s on 2 cores shared with other jobs): tower zero-shot 0.44 on the 359 held-out
    # digits, "what digit is this?" 0.48 on 120 of them (chance 0.1); the loss falls 3.3 -> 0.8 (text)
    run = tiny.train_vila_u_tiny("digits", tower_steps=300, align_steps=250, steps=200, lr=3e-3,
                                 **{**SMALL, "dim": 64})
    assert set(run.tower_history) == {"align", "tower"} and run.model.tower.stage == "tower"
    assert all(not p.requires_grad for p in run.model.tower.parameters())
    for key in ("loss_text", "loss_image"):
        h = np.asarray(run.history[key])
        assert h[-5:].mean() < 0.7 * h[:5].mean(), key
    test = mmu.data.captioned_digits(16, "test")
    assert zero_shot_accuracy(run.model.tower, test.images, test.labels, digit_prompts()) > 0.3  # chance 0.1
    said = tiny.answer_images(run, test.images[:100])
    assert np.mean([s == DIGIT_WORDS[y] for s, y in zip(said, test.labels[:100])]) > 0.3


def test_same_seed_bit_identical_and_tasks(tmp_path):
    small = dict(tower_steps=2, steps=3, batch_size=8, tower_batch_size=16, **SMALL)
    a = tiny.train_vila_u_tiny("digits", out=str(tmp_path / "a"), **small)
    b = tiny.train_vila_u_tiny("digits", **small)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    assert a.model.config.cfg_scale == tiny.TINY_CFG_SCALE
    # text -> codes -> pixels, seeded; answers are words of the corpus
    images = tiny.generate_images(a, ["a handwritten seven", "zero"], num_samples=2, seed=4)
    assert images.shape == (4, 1, 16, 16) and images.dtype == np.float32 and np.abs(images).max() <= 1.0
    np.testing.assert_array_equal(images, tiny.generate_images(b, ["a handwritten seven", "zero"], 2, seed=4))
    digits = mmu.data.captioned_digits(16, "test").images[:3]
    said = tiny.answer_images(a, digits, [tiny.DIGIT_QUESTION, None, "is this an odd number?"])
    vocab = set(" ".join(mmu.data.caption_corpus("digits")).replace("?", " ").split())
    assert len(said) == 3 and all(w in vocab for s in said for w in s.split())
    # the folder: the tower, the model, the tokenizer; loading gives the same model
    for f in ("config.json", "model.safetensors", "tokenizer.json", tiny.RUN_FILE, "history.csv",
              os.path.join("tower", "config.json")):
        assert os.path.isfile(os.path.join(tmp_path, "a", f)), f
    loaded = tiny.load_vila_u_tiny(str(tmp_path / "a"))
    assert isinstance(loaded.model, VILAU) and loaded.sets == ("digits",) and loaded.channels == 1
    np.testing.assert_array_equal(tiny.generate_images(loaded, "a handwritten seven", seed=1),
                                  tiny.generate_images(a, "a handwritten seven", seed=1))
    assert tiny.answer_images(loaded, digits) == tiny.answer_images(a, digits)
    # resume continues the run in the folder from its step-3 checkpoint to step 5 (the tower read back)
    tower_before = {k: np.asarray(v).copy() for k, v in loaded.model.tower.state_dict().items()}
    more = tiny.train_vila_u_tiny("digits", out=str(tmp_path / "a"), resume=True, **{**small, "steps": 5})
    assert more.tower_history is None and more.history["step"][-1] == 5
    with open(os.path.join(tmp_path, "a", tiny.RUN_FILE)) as f:
        assert json.load(f)["steps"] == 5
    for k, v in tiny.load_vila_u_tiny(str(tmp_path / "a")).model.tower.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), tower_before[k], err_msg=k)


def test_shapes_and_both_sets_use_rgb():
    t = tiny.tiny_tower(("digits", "shapes"), dim=32, codebook_size=16, rvq_depth=2)
    assert isinstance(t, UnifiedVisionTower) and t.config.in_channels == 3 and t.latent_shape == (4, 4)
    run = tiny.train_vila_u_tiny("shapes", tower_steps=2, steps=2, batch_size=4, tower_batch_size=8, **SMALL)
    assert run.channels == 3 and run.sets == ("shapes",)
    assert tiny.generate_images(run, "a red circle").shape == (1, 3, 16, 16)
    grey = np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 1, 16, 16)
    assert len(tiny.answer_images(run, grey, "what shape is this?")) == 2  # grey images are widened to RGB
    rgb = tiny.tiny_images(grey, 3)
    assert rgb.shape == (2, 3, 16, 16) and (rgb == grey).all()
    np.testing.assert_allclose(tiny.tiny_images(rgb, 1), grey, atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="sets"):
        tiny.train_vila_u_tiny("faces", steps=1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        tiny.train_vila_u_tiny("digits", steps=0)
    with pytest.raises(ValueError, match="tower_steps must be >= 2"):
        tiny.train_vila_u_tiny("digits", tower_steps=1)
    with pytest.raises(ValueError, match="resume=True needs"):
        tiny.train_vila_u_tiny("digits", resume=True)
    with pytest.raises(ValueError, match="lr"):
        tiny.train_vila_u_tiny("digits", lr=0.0)
    with pytest.raises(TypeError, match="out must be"):
        tiny.train_vila_u_tiny("digits", out=3)
    with pytest.raises(FileNotFoundError, match="no trained tower"):
        tiny.train_vila_u_tiny("digits", out="/nonexistent/vila", resume=True)
    with pytest.raises(FileNotFoundError, match="holds no"):
        tiny.load_vila_u_tiny("/nonexistent/vila")
    with pytest.raises(TypeError, match="run must be a VILAUTinyRun"):
        tiny.generate_images(object(), "a handwritten one")
    with pytest.raises(TypeError, match="tokenizer must be"):
        tiny.tiny_tower("digits", tokenizer="words")
    with pytest.raises(ValueError, match="channels"):
        tiny.tiny_images(np.zeros((2, 2, 16, 16), np.float32), 3)
    run = tiny.VILAUTinyRun(VILAU(), None, None, None, {}, ("digits",), 1)
    with pytest.raises(TypeError, match="prompts must be"):
        tiny.generate_images(run, [])
    with pytest.raises(ValueError, match="num_samples"):
        tiny.generate_images(run, "x", num_samples=0)
    with pytest.raises(ValueError, match=r"images must be \(N, 1 or 3, 16, 16\)"):
        tiny.answer_images(run, np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="2 questions for 1 images"):
        tiny.answer_images(run, np.zeros((1, 1, 16, 16), np.float32), ["a", "b"])


def test_cli_train_generate_answer_round_trip(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["vila-u", "train", "--data", "digits", "--steps", "3", "--tower-steps", "2", "--dim", "32",
            "--layers", "1", "--quiet", "--out", out]
    assert main(argv) == 0
    for f in ("config.json", "model.safetensors", "history.csv", tiny.RUN_FILE):
        assert os.path.isfile(os.path.join(out, f)), f
    assert main(argv[:5] + ["5"] + argv[6:] + ["--resume"]) == 0  # from the checkpoint of step 3 to 5
    assert tiny.load_vila_u_tiny(out).history is None
    pngs = str(tmp_path / "pngs")
    assert main(["vila-u", "generate", "--model", out, "--prompt", "a handwritten one", "--prompt", "the digit 3",
                 "--num-samples", "2", "--cfg-scale", "1.0", "--out", pngs]) == 0
    files = sorted(os.listdir(pngs))
    assert files == ["000_000.png", "000_001.png", "001_000.png", "001_001.png"]
    from PIL import Image
    assert np.asarray(Image.open(os.path.join(pngs, files[0]))).shape == (16, 16)
    capsys.readouterr()
    assert main(["vila-u", "answer", "--model", out, "--image", os.path.join(pngs, files[0])]) == 0
    said = capsys.readouterr().out.strip()
    vocab = set(" ".join(mmu.data.caption_corpus("digits")).replace("?", " ").split())
    assert all(w in vocab for w in said.split())
    assert main(["vila-u", "generate", "--model", str(tmp_path / "none"), "--prompt", "x", "--out", pngs]) == 1
    assert tiny.RUN_FILE in capsys.readouterr().err
    assert main(["vila-u", "answer", "--model", out, "--image", str(tmp_path / "none.png")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["vila-u", "train", "--data", "cats", "--out", str(tmp_path / "x")]) == 1
    assert "--data" in capsys.readouterr().err
    assert main(["vila-u", "train", "--tower-steps", "1", "--out", str(tmp_path / "y")]) == 1
    assert main(["vila-u"]) == 1
