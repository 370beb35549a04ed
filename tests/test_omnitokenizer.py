"""mmu.models.omnitokenizer (issue 15 item 2): forward against a literal torch re-implementation of the published
code in its checkpoint layout (benchmarks/torch_twins.py TwinOmniTokenizer, converted by convert.py), gradients
against torch, shapes, causality, the codebook's init / restart formulas, bad input, loss going down."""
import os
import sys

import numpy as np
import pytest

import mmu
from mmu.models.omnitokenizer import (OmniTokenizer, OmniTokenizerConfig, convert_omnitokenizer_state_dict,
                                      load_omnitokenizer)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

TINY = dict(in_channels=1, resolution=8, num_frames=5, patch_size=2, temporal_patch_size=2, dim=16, dim_head=4,
            heads=2, enc_block="tw", dec_block="tt", temporal_depth=2, window_size=2, codebook_size=16, codebook_dim=4)


def _clips(b=2, t=5, c=1, s=8, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (b, c, t, s, s)).astype(np.float32)


def _twin(cfg, seed=0, std=0.3):
    torch = pytest.importorskip("torch")
    from torch_twins import TwinOmniTokenizer
    torch.manual_seed(seed)
    twin = TwinOmniTokenizer(OmniTokenizerConfig(**cfg).to_dict())
    with torch.no_grad():
        for p in twin.parameters():
            p.normal_(0.0, std)
        for name, b in twin.named_buffers():
            if name.endswith("norm.beta") or name.endswith("norm_out.beta") or name.endswith("context_norm.beta"):
                continue
            if name == "codebook.N":
                b.uniform_(0.5, 2.0)
            elif name in ("codebook.embeddings", "codebook.z_avg"):
                b.normal_()
    return twin


VARIANTS = {
    "script": {},                                                  # full, window / full, full; causal temporal
    "rope": dict(spatial_pos="rope", enc_block="wt", dec_block="tw"),
    "bidirectional": dict(causal_in_temporal_transformer=False, causal_in_peg=False, l2_code=False, temporal_depth=1),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_encode_decode_match_the_published_code_after_conversion(variant):
    torch = pytest.importorskip("torch")
    cfg = dict(TINY, **VARIANTS[variant])
    twin = _twin(cfg).eval()
    state = {k: v.clone() for k, v in twin.state_dict().items()}
    assert any(".spatial_rel_pos_bias." in k for k in state) or cfg.get("spatial_pos") == "rope"
    model = load_omnitokenizer(state, OmniTokenizerConfig(**cfg))
    x = _clips(t=5)
    with torch.no_grad():
        z_ref = twin._z(torch.from_numpy(x)).numpy()
        codes_ref = twin.encode(torch.from_numpy(x)).numpy()
        recon_ref = twin.decode(torch.from_numpy(codes_ref)).numpy()
    z = model._eval_call(lambda: model._encode_latent(mmu.tensor(x)).numpy())
    assert z.shape == (2, 4, 3, 4, 4)
    np.testing.assert_allclose(z, z_ref, atol=2e-5)
    codes = model.encode(x)
    assert codes.dtype == np.int64 and codes.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(codes, codes_ref)
    recon = model.decode(codes_ref)
    assert recon.shape == x.shape
    np.testing.assert_allclose(recon, recon_ref, atol=2e-5 * max(1.0, np.abs(recon_ref).max()))
    # an image is a one-frame clip
    with torch.no_grad():
        img_ref = twin.encode(torch.from_numpy(x[:, :, :1])).numpy()
    np.testing.assert_array_equal(model.encode(x[:, :, :1]), img_ref)


@pytest.mark.parametrize("variant", ["script", "rope"])
def test_training_forward_loss_and_gradients_match_torch(variant):
    torch = pytest.importorskip("torch")
    from mmu.models.omnitokenizer import omnitokenizer_state_dict_names
    cfg = dict(TINY, **VARIANTS[variant])
    twin = _twin(cfg, std=0.2).train()
    model = OmniTokenizer(**cfg)
    model.load_state_dict(convert_omnitokenizer_state_dict({k: v.clone() for k, v in twin.state_dict().items()},
                                                           model.config))
    x = _clips(seed=1)
    out = model(x)
    loss_ref, terms, recon_ref = twin.losses(torch.from_numpy(x))
    loss_ref.backward()
    np.testing.assert_allclose(out.recon.detach().numpy(), recon_ref.detach().numpy(), atol=3e-5)
    assert abs(out.losses["rec"] - terms["rec"].item()) < 1e-5 * abs(terms["rec"].item())
    assert abs(out.losses["quant"] - terms["quant"].item()) < 1e-4 * abs(terms["quant"].item())
    out.loss.backward()
    names = omnitokenizer_state_dict_names(model.config)
    params = dict(model.named_parameters())
    checked = 0
    for k, p in twin.named_parameters():
        if k not in names:
            assert p.grad is None or not p.grad.abs().max().item()  # the unused position-bias MLP
            continue
        g = params[names[k]].grad.numpy()
        ref = p.grad.numpy()
        assert np.abs(g - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-3), k
        checked += 1
    assert checked == len(params)
    # the EMA codebook took the same step
    np.testing.assert_allclose(model.quantize.embed.numpy()[0], twin.codebook.embeddings.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.quantize.cluster_size.numpy()[0], twin.codebook.N.numpy(), atol=1e-6)


def _fd_check(model, x, name, idx, eps=1e-2):
    p = dict(model.named_parameters())[name]
    model.zero_grad()
    model.eval()
    # eval: no EMA update, so the loss is a function of the weights only; the commitment term is left out
    # (codes are piecewise constant)
    loss = mmu.functional.l1_loss(model._decode_latent(model._quantize(model._encode_latent(mmu.tensor(x)))[0]),
                                  mmu.tensor(x))
    loss.backward()
    g = p.grad.numpy().reshape(-1)[idx]
    vals = []
    for s in (1, -1):
        with mmu.no_grad():
            w = p.numpy().copy()
            w.reshape(-1)[idx] += s * eps
            p.copy_(mmu.tensor(w))
            vals.append(mmu.functional.l1_loss(
                model._decode_latent(model._quantize(model._encode_latent(mmu.tensor(x)))[0]), mmu.tensor(x)).item())
            w.reshape(-1)[idx] -= s * eps
            p.copy_(mmu.tensor(w))
    return g, (vals[0] - vals[1]) / (2 * eps)


@pytest.mark.parametrize("name", ["decoder.spatial.layers.0.attn.to_kv.weight",
                                  "decoder.temporal.layers.1.peg.dsconv.weight",
                                  "decoder.to_pixels.weight", "post_quant.weight"])
def test_decoder_gradients_match_finite_differences(name):
    mmu.manual_seed(3)
    model = OmniTokenizer(**dict(TINY, codebook_size=8))
    x = _clips(b=1, seed=2)
    g, fd = _fd_check(model, x, name, 5)
    assert abs(g - fd) <= 2e-3 * max(abs(fd), 1e-2), (g, fd)


def _z(model, x):
    return model._eval_call(lambda: model._encode_latent(mmu.tensor(x)).numpy())


def test_per_location_peg_makes_the_encoder_causal_and_the_published_layout_is_not():
    mmu.manual_seed(0)
    causal = OmniTokenizer(**dict(TINY, temporal_peg_layout="per_location"))
    published = OmniTokenizer(**TINY)
    published.load_state_dict(causal.state_dict())
    x = _clips(b=1, t=5, seed=4)
    later = x.copy()
    later[:, :, 3:] = _clips(b=1, t=5, seed=5)[:, :, 3:]  # the last tube (latent frame 2) changes
    za, zb = _z(causal, x), _z(causal, later)
    np.testing.assert_allclose(za[:, :, :2], zb[:, :, :2], atol=1e-6)   # latent frames 0, 1: only frames <= 2
    assert np.abs(za[:, :, 2] - zb[:, :, 2]).max() > 1e-3
    np.testing.assert_array_equal(causal.encode(x)[:, :2], causal.encode(later)[:, :2])
    # the code's reshape of (b h w, t, d) tokens to (b, t, h, w, d) before the temporal PEG mixes locations and
    # frames: latent frame 0 sees the last tube
    pa, pb = _z(published, x), _z(published, later)
    assert np.abs(pa[:, :, 0] - pb[:, :, 0]).max() > 1e-4


def test_shapes_images_as_one_frame_clips_and_latent_shape():
    mmu.manual_seed(0)
    model = OmniTokenizer(**TINY)
    assert model.latent_layout == "3d" and model.latent_shape == (3, 4, 4) and model.tokens_per_image == 48
    out = model(_clips(b=3, t=1)[:, :, 0])            # images (B, C, H, W)
    assert out.recon.shape == (3, 1, 8, 8) and out.codes.shape == (3, 1, 4, 4)
    out = model(_clips(b=2, t=3))
    assert out.recon.shape == (2, 1, 3, 8, 8) and out.codes.shape == (2, 2, 4, 4)
    codes = model.encode(_clips(b=2, t=7))
    assert codes.shape == (2, 4, 4, 4)
    assert model.decode(codes).shape == (2, 1, 7, 8, 8)
    assert mmu.models.get("omnitokenizer") is OmniTokenizer


def test_codebook_starts_on_the_first_batch_and_restart_follows_the_codebook():
    mmu.manual_seed(0)
    model = OmniTokenizer(**dict(TINY, codebook_size=8, decay=0.0))
    x = _clips(b=2, t=1)
    z = _z(model, x).transpose(0, 2, 3, 4, 1).reshape(-1, 4)       # 32 rows >= 8 codes: picked without noise
    assert model.codebook_initted.numpy()[0] == 0
    model.train()
    idx = model(x).codes.reshape(-1)
    assert model.codebook_initted.numpy()[0] == 1
    # with decay 0 the EMA step leaves each used code at the mean of the rows it took
    emb = model.quantize.embed.numpy()[0]
    for k in np.unique(idx):
        np.testing.assert_allclose(emb[k], z[idx == k].mean(0), atol=1e-5)
    # restart: codes whose count is below restart_thres become rows of the batch (Codebook.forward)
    mmu.manual_seed(1)
    model = OmniTokenizer(**dict(TINY, codebook_size=64, no_random_restart=False, restart_thres=1.0))
    z = _z(model, x).transpose(0, 2, 3, 4, 1).reshape(-1, 4)
    model.train()
    model(x)
    emb = model.quantize.embed.numpy()[0]
    counts = model.quantize.cluster_size.numpy()[0]
    dead = counts < 1.0
    assert dead.any()
    # 32 rows tiled to 64 with N(0, (0.01 / 2)^2) noise: every restarted code is within noise of a batch row
    d = np.abs(emb[dead][:, None, :] - z[None]).max(-1).min(-1)
    assert d.max() < 0.05


def test_bad_input_raises_clear_errors():
    model = OmniTokenizer(**TINY)
    with pytest.raises(ValueError, match="1 \\+ a multiple of temporal_patch_size 2"):
        model.encode(_clips(t=4))
    with pytest.raises(ValueError, match="clips must be"):
        model.encode(_clips(t=1)[:, :, 0])
    with pytest.raises(ValueError, match="expected 1 channels"):
        model.encode(_clips(c=3))
    with pytest.raises(ValueError, match="multiple of window_size"):
        model.encode(_clips(s=6))
    with pytest.raises(ValueError, match="square"):
        model.encode(_clips()[..., :4])
    bad = _clips()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.encode(bad)
    with pytest.raises(ValueError, match="codes must lie in"):
        model.decode(np.full((1, 2, 4, 4), 16))
    with pytest.raises(ValueError, match="codes must be"):
        model.decode(np.zeros((1, 4, 4), np.int64))
    with pytest.raises(ValueError, match="enc_block"):
        OmniTokenizer(**dict(TINY, enc_block="tx"))
    with pytest.raises(ValueError, match="window_size"):
        OmniTokenizer(**dict(TINY, window_size=3))
    with pytest.raises(ValueError, match="num_frames"):
        OmniTokenizer(**dict(TINY, num_frames=4))
    with pytest.raises(ValueError, match="dim must be a multiple of heads"):
        OmniTokenizer(**dict(TINY, dim=15))
    with pytest.raises(KeyError, match="do not define"):
        convert_omnitokenizer_state_dict({"encoder.bogus.weight": np.zeros(3)}, OmniTokenizerConfig(**TINY))


def test_converter_refuses_a_wrong_shape_and_a_foreign_relative_index():
    torch = pytest.importorskip("torch")
    twin = _twin(TINY)
    sd = {k: v.clone() for k, v in twin.state_dict().items()}
    cfg = OmniTokenizerConfig(**TINY)
    bad = dict(sd)
    bad["pre_vq_conv.1.weight"] = torch.zeros(5, 16)
    with pytest.raises(ValueError, match="pre_vq_conv.1.weight has shape"):
        convert_omnitokenizer_state_dict(bad, cfg)
    bad = dict(sd)
    k = "encoder.enc_spatial_transformer.layers.1.1.relative_position_index"
    bad[k] = bad[k].flip(0)
    with pytest.raises(ValueError, match="relative_position_index"):
        convert_omnitokenizer_state_dict(bad, cfg)
    missing = dict(sd)
    del missing["codebook.N"]
    with pytest.raises(KeyError, match="lacks"):
        convert_omnitokenizer_state_dict(missing, cfg)
    assert convert_omnitokenizer_state_dict({"state_dict": sd}, cfg)["codebook_initted"][0] == 1


def test_joint_image_and_video_training_lowers_the_loss():
    mmu.manual_seed(0)
    model = OmniTokenizer(**dict(TINY, codebook_size=32))
    clips = np.ascontiguousarray(mmu.data.moving_digits(8, frames=5, size=16, digit_size=8, seed=0).clips, np.float32)
    images = np.ascontiguousarray(clips[:, :, 0])
    opt = mmu.optim.AdamW(model.generator_parameters(), lr=3e-3, betas=(0.5, 0.9))
    first = last = None
    for step in range(40):
        batch = images if step % 2 else clips            # the published --force_alternation
        opt.zero_grad()
        loss, logs = model.training_step(batch, step)
        loss.backward()
        opt.step()
        if step < 2:
            first = (first or 0.0) + logs["rec"]
        if step >= 38:
            last = (last or 0.0) + logs["rec"]
    assert last < 0.7 * first, (first, last)


def test_compare_entry_trains_and_reports_on_digits(tmp_path):
    import mmu.compare
    rows = mmu.compare.compare(["omnitokenizer"], fast=True, steps=2, out_dir=str(tmp_path), progress=False)
    row = rows[0] if isinstance(rows, list) else rows
    text = (tmp_path / "report.md").read_text()
    assert "OmniTokenizer" in text and "| 16 |" in text   # 16 px digits, patch 4: 4 x 4 tokens per one-frame clip
    assert row is not None


def test_l2norm_matches_torch_normalize_with_gradients_at_zero_rows():
    """The model's q / k / code l2 norm (F.normalize over the last dim) against torch, a zero row included."""
    torch = pytest.importorskip("torch")
    a = np.random.RandomState(0).standard_normal((3, 5, 8)).astype(np.float32)
    a[1, 2] = 0.0
    g = np.random.RandomState(1).standard_normal(a.shape).astype(np.float32)
    x = mmu.tensor(a, requires_grad=True)
    y = mmu.functional.normalize(x, dim=-1)
    (y * mmu.tensor(g)).sum().backward()
    xt = torch.tensor(a, requires_grad=True)
    yt = torch.nn.functional.normalize(xt, dim=-1)
    (yt * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_save_and_load_pretrained_round_trip(tmp_path):
    mmu.manual_seed(0)
    model = OmniTokenizer(**TINY)
    model.train()
    model(_clips())                                    # initialises the codebook from the batch
    model.save_pretrained(str(tmp_path / "omni"))
    same = mmu.tokenizers.Tokenizer.from_pretrained(str(tmp_path / "omni"))
    assert isinstance(same, OmniTokenizer) and same.config == model.config
    assert same.codebook_initted.numpy()[0] == 1
    x = _clips(seed=3)
    np.testing.assert_array_equal(same.encode(x), model.encode(x))


@pytest.mark.parametrize("allframes", [False, True])
def test_perceptual_term_on_one_random_frame_per_clip_or_all_frames(allframes):
    mmu.manual_seed(0)
    model = OmniTokenizer(**dict(TINY, perceptual_weight=4.0, lpips_random=True, apply_allframes=allframes))
    x = _clips(b=2, t=5, s=16)
    out = model(x)
    lp = model.lpips()
    recon = out.recon.detach().numpy()
    frames = lambda a: np.repeat(np.moveaxis(a, 2, 1).reshape(-1, 1, 16, 16), 3, axis=1)  # noqa: E731
    fx, fr = frames(x), frames(recon)
    if allframes:
        want = float(lp(mmu.tensor(fx), mmu.tensor(fr)).mean().item())
        assert abs(want - out.losses["perceptual"]) < 1e-5 * max(1.0, want)
    else:
        # VQGAN.forward's frames: one random frame of each clip; the term is the mean over the two
        per = [float(lp(mmu.tensor(fx[i:i + 1]), mmu.tensor(fr[i:i + 1])).mean().item()) for i in range(10)]
        pairs = [(per[i] + per[5 + j]) / 2 for i in range(5) for j in range(5)]
        assert min(abs(p - out.losses["perceptual"]) for p in pairs) < 1e-5 * max(1.0, out.losses["perceptual"])
        assert abs(np.mean(per) - out.losses["perceptual"]) > 1e-7   # not every frame
    total = 4.0 * out.losses["rec"] + out.losses["quant"] + 4.0 * out.losses["perceptual"]
    assert abs(out.loss.item() - total) < 1e-5 * total
