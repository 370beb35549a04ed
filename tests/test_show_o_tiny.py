"""Show-o-tiny on the built-in captioned sets (mmu.models.show_o.tiny): the loss falls and the
measured accuracies clear chance by a margin at a tiny budget; seeded runs repeat; the CLI round trip
(mmu showo train / generate / answer)."""
import os

import numpy as np
import pytest

import mmu
from mmu.__main__ import main
from mmu.models.show_o import ShowO
from mmu.models.show_o.tiny import evaluate_show_o_tiny, show_o_tiny_images, train_show_o_tiny

TINY = dict(tokenizer_steps=100, codebook_size=64, dim=64, num_layers=2, num_heads=4)


def test_trains_above_chance_on_digits():
    # 200 steps (~10 s on 2 cores): measured 0.52 T2I judge accuracy and 0.43 MMU accuracy (chance 0.1)
    run = train_show_o_tiny("digits", steps=200, evaluate=False, **TINY)
    loss = np.asarray(run.history["loss"])
    assert loss[-5:].mean() < 0.4 * loss[:5].mean()
    for key in ("loss_t2i", "loss_lm", "loss_mmu"):
        h = np.asarray(run.history[key])
        assert h[-5:].mean() < 0.6 * h[:5].mean(), key
    m = evaluate_show_o_tiny(run.model, "digits", samples_per_prompt=4, num_questions=120)
    assert m["digits_judge_heldout"] > 0.9  # the judge itself reads real held-out digits
    assert m["digits_mmu"] > 0.25 and m["digits_t2i"] > 0.25, m
    assert len(m["digits_t2i_per_digit"]) == 10


def test_same_seed_same_run_and_shapes_evaluation():
    small = dict(steps=4, evaluate=False, tokenizer_steps=3, dim=32, num_layers=1, num_heads=2, downsample=2)
    a, b = train_show_o_tiny("shapes", **small), train_show_o_tiny("shapes", **small)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    assert a.model.config.image_tokenizer["args"]["**fields_"]["in_channels"] == 3
    assert a.model.config.num_vq_tokens == 64  # downsample 2: an 8 x 8 grid
    m1 = evaluate_show_o_tiny(a.model, "shapes", num_shapes=24, steps=2, seed=3)
    m2 = evaluate_show_o_tiny(b.model, "shapes", num_shapes=24, steps=2, seed=3)
    assert m1 == m2
    assert {"shapes_colour", "shapes_shape", "shapes_colour_shape", "heldout_combo_colour_shape"} <= set(m1)
    assert all(0.0 <= v <= 1.0 for v in m1.values())


def test_images_channels_and_argument_errors():
    grey = np.linspace(-1, 1, 2 * 16 * 16, dtype=np.float32).reshape(2, 1, 16, 16)
    rgb = show_o_tiny_images(grey, 3)
    assert rgb.shape == (2, 3, 16, 16) and (rgb == grey).all()
    np.testing.assert_allclose(show_o_tiny_images(rgb, 1), grey, atol=1e-6)
    with pytest.raises(ValueError, match="sets"):
        train_show_o_tiny("faces", steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_show_o_tiny("digits", steps=0)
    with pytest.raises(ValueError, match="power of 2"):
        train_show_o_tiny("digits", steps=1, codebook_size=48, tokenizer_steps=0, evaluate=False)
    with pytest.raises(ValueError, match="downsample"):
        train_show_o_tiny("digits", steps=1, downsample=3)
    with pytest.raises(ValueError, match="resume"):
        train_show_o_tiny("digits", steps=1, resume=True)


def test_cli_train_generate_answer_round_trip(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["showo", "train", "--data", "digits,shapes", "--steps", "3", "--tokenizer-steps", "2", "--dim", "32",
            "--layers", "1", "--no-eval", "--quiet", "--out", out]
    assert main(argv) == 0
    for f in ("config.json", "model.safetensors", "history.csv", "show_o_tiny_run.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    model = ShowO.from_pretrained(out)
    assert model.config.num_vq_tokens == 16 and model.text_tokenizer is not None
    # resume continues from the checkpoint of step 3 to step 5
    assert main(argv[:5] + ["5"] + argv[6:] + ["--resume"]) == 0
    assert len(np.loadtxt(os.path.join(out, "history.csv"), delimiter=",", skiprows=1, ndmin=2)) >= 1
    pngs = str(tmp_path / "pngs")
    assert main(["showo", "generate", "--model", out, "--prompt", "a red circle", "--prompt", "the digit 3",
                 "--num-samples", "2", "--steps", "2", "--out", pngs]) == 0
    files = sorted(os.listdir(pngs))
    assert files == ["000_000.png", "000_001.png", "001_000.png", "001_001.png"]
    from PIL import Image
    im = np.asarray(Image.open(os.path.join(pngs, files[0])))
    assert im.shape == (16, 16, 3)
    capsys.readouterr()
    assert main(["showo", "answer", "--model", out, "--image", os.path.join(pngs, files[0])]) == 0
    said = capsys.readouterr().out.strip()
    vocab = set(" ".join(mmu.data.caption_corpus(("digits", "shapes"))).replace("?", " ").split())
    assert all(w in vocab for w in said.split())
    assert main(["showo", "generate", "--model", str(tmp_path / "none"), "--prompt", "x", "--out", pngs]) == 1
    assert "config.json" in capsys.readouterr().err
