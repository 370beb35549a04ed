"""`mmu compare --dataset moving-digits` (issue 15 item 5): per-frame PSNR / SSIM and the temporal error
against NumPy references, image tokenizers run per frame and video tokenizers per clip, the fast mode end
to end (Python and CLI), the token-count view of every report, and the argument errors."""
import csv
import json
import math
import os

import numpy as np
import pytest

import mmu
from mmu import compare as C
from mmu import data, metrics
from mmu import __main__ as cli
from mmu.tokenizers import VQVAE

from test_model_layer import ClipTokenizer, SeqTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _clips(n=3, t=4, s=12, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, t, s, s)).astype(np.float32)


# ---------------------------------------------------------------------- the metrics against NumPy references
def test_temporal_error_of_perfect_static_and_flickering_reconstructions():
    x = _clips()
    np.testing.assert_array_equal(C.temporal_error(x, x), np.zeros((3, 3)))
    # an error that stays put (a constant offset) adds no flicker
    np.testing.assert_allclose(C.temporal_error(x + 0.3, x), 0.0, atol=1e-6)
    # an offset alternating +c, -c between frames: every frame difference is off by 2c
    c = 0.125
    sign = np.array([1, -1, 1, -1], np.float32)[None, None, :, None, None]
    np.testing.assert_allclose(C.temporal_error(x + c * sign, x), 2 * c, rtol=1e-6)
    # flicker in one frame only: pairs (1, 2) and (2, 3) see it, pair (0, 1) does not
    r = x.copy()
    r[:, :, 2] += c
    np.testing.assert_allclose(C.temporal_error(r, x), np.array([[0, c, c]] * 3), rtol=1e-6, atol=1e-7)


def test_temporal_error_matches_a_loop_reference():
    x, r = _clips(seed=1), _clips(seed=2)
    ref = np.empty((3, 3))
    for i in range(3):
        for t in range(1, 4):
            d = (r[i, :, t].astype(np.float64) - r[i, :, t - 1]) - (x[i, :, t].astype(np.float64) - x[i, :, t - 1])
            ref[i, t - 1] = np.sqrt(np.mean(d ** 2))
    np.testing.assert_allclose(C.temporal_error(r, x), ref, rtol=1e-12)


def test_per_frame_psnr_and_ssim_score_each_frame_as_an_image():
    x, r = _clips(seed=3), _clips(seed=4) * 0.5
    p, s = C.per_frame_psnr(r, x), C.per_frame_ssim(r, x)
    assert p.shape == s.shape == (3, 4)
    for i in range(3):
        for t in range(4):
            mse = np.mean((r[i, :, t].astype(np.float64) - x[i, :, t]) ** 2)
            assert p[i, t] == pytest.approx(10 * np.log10(4.0 / mse), rel=1e-12)
            assert s[i, t] == pytest.approx(metrics.ssim(r[i:i + 1, :, t], x[i:i + 1, :, t]), rel=1e-12)
    assert np.isinf(C.per_frame_psnr(x, x)).all()


def test_clip_frames_round_trip_in_moving_digits_order():
    ds = data.moving_digits(3, frames=4, size=12, digit_size=8)
    f = C.clip_frames(ds.clips)
    np.testing.assert_array_equal(f, ds.frames())
    np.testing.assert_array_equal(C.frames_to_clips(f, 4), ds.clips)


@pytest.mark.parametrize("fn", [C.temporal_error, C.per_frame_psnr, C.per_frame_ssim])
def test_clip_metrics_check_their_arguments(fn):
    x = _clips()
    with pytest.raises(ValueError, match=r"must be \(N, C, T, H, W\), got shape \(3, 1, 12, 12\)"):
        fn(x[:, :, 0], x[:, :, 0])
    with pytest.raises(ValueError, match="same shape"):
        fn(x[:, :, :3], x)
    bad = x.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fn(bad, x)
    if fn is C.temporal_error:
        with pytest.raises(ValueError, match="at least 2 frames"):
            fn(x[:, :, :1], x[:, :, :1])


# ---------------------------------------------------------------------- tokenizers of every layout on clips
def _vqvae():
    mmu.manual_seed(0)
    return VQVAE(in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=0, downsample=4, embed_dim=4,
                 codebook_size=16, resolution=12)


def test_image_tokenizers_run_per_frame_and_video_tokenizers_per_clip():
    x = _clips(2, 4, 12)
    for tok in (_vqvae(), SeqTokenizer(resolution=12)):
        tok.eval()
        codes = C.encode_clips(tok, x, batch_size=1)
        per_frame = tok.encode(C.clip_frames(x))
        assert codes.shape == (2, 4) + per_frame.shape[1:]
        np.testing.assert_array_equal(codes.reshape(per_frame.shape), per_frame)
        recon = C.decode_clips(tok, codes)
        np.testing.assert_allclose(C.clip_frames(recon), tok.decode(per_frame), rtol=1e-6, atol=1e-6)
    mmu.manual_seed(0)
    clip_tok = ClipTokenizer(resolution=12)
    codes = C.encode_clips(clip_tok, x)
    assert codes.shape == (2, 2, 6, 6)    # t = T / 2, h = w = 12 / 2
    np.testing.assert_array_equal(codes, clip_tok.encode(x))
    np.testing.assert_allclose(C.decode_clips(clip_tok, codes), clip_tok.decode(codes), rtol=1e-6, atol=1e-6)


def test_clip_encoding_errors_name_the_tokenizer_and_shapes():
    x = _clips(2, 4, 12)
    with pytest.raises(ValueError, match=r"SeqTokenizer is an image tokenizer with a 1-D layout .* takes 8x8 "
                                         r"images only, got 12x12 frames"):
        C.encode_clips(SeqTokenizer(), x)
    with pytest.raises(ValueError, match=r"encode_clips: clips must be \(N, C, T, H, W\), got shape \(2, 1, 12, 12\)"):
        C.encode_clips(_vqvae(), x[:, :, 0])
    with pytest.raises(ValueError, match="VQVAE takes 1-channel images, got clips of shape"):
        C.encode_clips(_vqvae(), np.repeat(x, 3, axis=1))
    with pytest.raises(ValueError, match="multiples of its downsample factor 4, got 10x10"):
        C.encode_clips(_vqvae(), x[..., :10, :10])
    with pytest.raises(ValueError, match="multiple of the temporal downsample factor 2, got 3"):
        C.encode_clips(ClipTokenizer(resolution=12), x[:, :, :3])
    with pytest.raises(ValueError, match=r"codes are \(N, T, \.\.\.\)"):
        C.decode_clips(_vqvae(), np.zeros((2, 3), np.int64))


def test_evaluate_clips_numbers():
    tok = _vqvae()
    x = _clips(3, 4, 12)
    m, codes, recon = C.evaluate_clips(tok, x, throughput_repeat=1)
    assert codes.shape == (3, 4, 3, 3) and recon.shape == x.shape
    assert m["tokens_per_clip"] == 36 and m["tokens_per_frame"] == 9
    assert m["bits_per_clip"] == pytest.approx(36 * 4)
    p = C.per_frame_psnr(recon, x)
    assert m["psnr"] == pytest.approx(p.mean(), rel=1e-12)
    np.testing.assert_allclose(m["psnr_per_frame"], p.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m["ssim_per_frame"], C.per_frame_ssim(recon, x).mean(axis=0), rtol=1e-12)
    te = C.temporal_error(recon, x)
    assert m["temporal_error"] == pytest.approx(te.mean(), rel=1e-12) and len(m["temporal_error_per_frame"]) == 3
    assert m["usage"] == pytest.approx(metrics.codebook_usage(codes, 16))
    assert m["encode_clip_s"] > 0 and m["decode_clip_s"] > 0


# ---------------------------------------------------------------------- the moving-digits mode end to end
def _entries(monkeypatch):
    monkeypatch.setitem(C.REGISTRY, "seq", lambda ch, size, fast: C.Entry(
        "seq", "1-D tokens", SeqTokenizer, dict(in_channels=ch, resolution=size, num_latent_tokens=16)))
    monkeypatch.setitem(C.REGISTRY, "clip", lambda ch, size, fast: C.Entry(
        "clip", "3-D clips", ClipTokenizer, dict(in_channels=ch, resolution=size, num_frames=2),
        video_config=dict(codebook_size=8)))


def test_compare_moving_digits_fast_end_to_end(tmp_path, monkeypatch):
    _entries(monkeypatch)
    out = tmp_path / "rep"
    rows = C.compare(["vqvae-fsq", "seq", "clip"], dataset="moving-digits", frames=4, fast=True, out_dir=str(out),
                     progress=False)
    by = {r["name"]: r for r in rows}
    assert [by[n]["layout"] for n in ("vqvae-fsq", "seq", "clip")] == ["2d", "1d", "3d"]
    # 16 px canvas: a 4x4 grid a frame, 16 latent tokens a frame, (4 / 2) x 8 x 8 for the clip tokenizer
    assert by["vqvae-fsq"]["tokens_per_clip"] == 4 * 16 and by["seq"]["tokens_per_clip"] == 4 * 16
    assert by["clip"]["tokens_per_clip"] == 2 * 8 * 8 and by["clip"]["tokens_per_frame"] == 32
    # an image tokenizer trains on the frames of batch_size clips
    assert by["vqvae-fsq"]["batch_size"] == 4 * by["clip"]["batch_size"]
    test = data.moving_digits(C.FAST_EVAL_CLIPS, frames=4, size=16, split="test", digit_size=8)
    for r in rows:
        assert len(r["psnr_per_frame"]) == len(r["ssim_per_frame"]) == 4 and len(r["temporal_error_per_frame"]) == 3
        assert math.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 and r["temporal_error"] >= 0
        assert r["encode_clip_s"] > 0 and r["decode_clip_s"] > 0 and r["steps"] == C.FAST_STEPS
        # the saved model reproduces the row's PSNR on the held-out clips
        model = mmu.tokenizers.Tokenizer.from_pretrained(str(out / "models" / r["name"]))
        recon = C.decode_clips(model, C.encode_clips(model, test.clips))
        assert C.per_frame_psnr(recon, test.clips).mean() == pytest.approx(r["psnr"], rel=1e-5)
    for f in ("report.md", "report.csv", "report.json", "reconstructions.png", "per_frame.png", "loss_curves.png",
              "usage.png"):
        assert os.path.getsize(out / f) > 0, f
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["frames"] == 4 and rep["config"]["heldout_clips"] == C.FAST_EVAL_CLIPS
    # the video entry got the clips' frame count and its video_config
    assert rep["config"]["entries"]["clip"]["config"]["num_frames"] == 4 and by["clip"]["codebook_size"] == 8
    assert rep["rows"][0]["psnr_per_frame"] == pytest.approx(rows[0]["psnr_per_frame"])
    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert "psnr_per_frame" not in table[0] and float(table[2]["temporal_error"]) == pytest.approx(
        rows[2]["temporal_error"])
    md = (out / "report.md").read_text()
    assert "| tokens/clip | tokens/frame |" in md and "temporal err" in md
    assert "## Equal token counts" in md
    assert "- **64 tokens**: " in md and "- **128 tokens**: 3-D clips (3-D)" in md
    assert "minus best 1-D (1-D tokens)" in md     # 64 tokens: a 1-D and a 2-D row


def test_compare_moving_digits_default_names_add_the_video_entries(monkeypatch):
    _entries(monkeypatch)
    names = C._video_names()
    assert "clip" in names and "seq" not in names and "vqvae-ema" not in names
    assert all(C.entry_layout(n) == "3d" for n in names)


def test_compare_moving_digits_argument_errors(tmp_path, monkeypatch):
    _entries(monkeypatch)
    out = tmp_path / "rep"
    with pytest.raises(FileNotFoundError, match="'digits', 'natural', 'moving-digits' or an existing folder"):
        C.compare(["vqvae-fsq"], dataset="moving-mnist", fast=True, out_dir=str(out))
    with pytest.raises(ValueError, match="frames applies to dataset 'moving-digits' only"):
        C.compare(["vqvae-fsq"], dataset="digits", frames=4, fast=True, out_dir=str(out))
    with pytest.raises(ValueError, match="frames must be >= 2"):
        C.compare(["vqvae-fsq"], dataset="moving-digits", frames=1, fast=True, out_dir=str(out))
    # the clip tokenizer halves time: 5 frames cannot work, and it fails before anything is trained or written
    with pytest.raises(ValueError, match=r"entry 'clip' \(3d layout\) cannot take the moving-digits clips of shape "
                                         r"\(1, 5, 16, 16\): .*temporal downsample factor 2, got 5"):
        C.compare(["vqvae-fsq", "clip"], dataset="moving-digits", frames=5, fast=True, out_dir=str(out))
    # a 1-D image tokenizer of another size cannot take the frames
    monkeypatch.setitem(C.REGISTRY, "seq8", lambda ch, size, fast: C.Entry(
        "seq8", "1-D at 8 px", SeqTokenizer, dict(in_channels=ch, resolution=8)))
    with pytest.raises(ValueError, match=r"entry 'seq8' .* takes 8x8 images only, got 16x16 frames"):
        C.compare(["seq8"], dataset="moving-digits", fast=True, out_dir=str(out))
    with pytest.raises(ValueError, match="apply to the image datasets"):
        C.compare(["vqvae-fsq"], dataset="moving-digits", fast=True, out_dir=str(out),
                  lpips_weights=str(tmp_path / "w"))
    assert not out.exists()


def test_cli_compare_moving_digits(tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["compare", "--fast", "--quiet", "--dataset", "moving-digits", "--frames", "3",
                     "--tokenizers", "vqvae-ema", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["frames"] == 3 and rep["rows"][0]["tokens_per_clip"] == 3 * 16
    assert cli.main(["compare", "--dataset", "digits", "--frames", "3", "--out", str(tmp_path / "x")]) == 1
    assert "--frames applies to --dataset moving-digits" in capsys.readouterr().err
    assert cli.main(["compare", "--dataset", "moving-mnist"]) == 1
    assert "moving-digits" in capsys.readouterr().err


# ---------------------------------------------------------------------- the token-count view (every report)
def test_token_count_section_groups_rows_and_compares_1d_with_2d():
    rows = [{"label": "A", "layout": "2d", "tokens_per_image": 16, "psnr": 25.0, "ssim": 0.8},
            {"label": "T64", "layout": "1d", "tokens_per_image": 64, "psnr": 24.0, "ssim": 0.7},
            {"label": "G8", "layout": "2d", "tokens_per_image": 64, "psnr": 27.5, "ssim": 0.9},
            {"label": "T32", "layout": "1d", "tokens_per_image": 32, "psnr": 22.0, "ssim": 0.6}]
    groups = C.token_count_groups(rows)
    assert [(k, [r["label"] for r in g]) for k, g in groups] == [(16, ["A"]), (32, ["T32"]), (64, ["G8", "T64"])]
    lines = C.token_count_section(rows)
    line64 = [l for l in lines if l.startswith("- **64 tokens**")][0]
    assert line64 == ("- **64 tokens**: G8 (2-D) 27.50 dB / 0.900; T64 (1-D) 24.00 dB / 0.700. "
                      "Best 2-D (G8) minus best 1-D (T64): +3.50 dB")
    assert "- **16 tokens**: A (2-D) 25.00 dB / 0.800" in lines


def test_vqvae_ema_f2_is_an_8x8_grid_at_16_px():
    entry = C.REGISTRY["vqvae-ema-f2"](1, 16, True)
    tok = VQVAE(**entry.config)
    assert tok.latent_shape == (8, 8) and tok.tokens_per_image == 64
    assert "vqvae-ema-f2" not in C.DEFAULT_NAMES
