"""mmu.models.titok (issue 15 item 1): TiTok's shapes and 1-D codes, its quantizer against a NumPy reference of
1d-tokenizer's VectorQuantizer(use_l2_norm), the converter against a torch re-implementation of 1d-tokenizer's
TiTok (is_legacy=False) on random weights in its layout, gradients against the torch twin, the single-stage loss
and the LeCam term against their formulas, bad input, a loss that goes down, the compare entries."""
import os
import sys
from collections import OrderedDict

import numpy as np
import pytest

import mmu
from mmu import models
from mmu.models.titok import (PRESETS, PUBLISHED_SIZES, TiTok, TiTokConfig, convert_titok_state_dict, load_titok,
                              titok_config, titok_config_from_state_dict)

TINY = dict(resolution=16, patch_size=4, in_channels=3, encoder_width=16, encoder_depth=1, encoder_heads=2,
            decoder_width=16, decoder_depth=1, decoder_heads=2, num_latent_tokens=8, token_size=4, codebook_size=32)


def _images(n, c=3, r=16, seed=0):
    return np.tanh(np.random.default_rng(seed).standard_normal((n, c, r, r))).astype(np.float32)


def _tiny(**kw):
    mmu.manual_seed(0)
    return TiTok(**{**TINY, **kw})


# ---------------------------------------------------------------------------------------------- shapes
def test_registered_and_one_d_layout():
    assert models.get("titok") is TiTok
    m = _tiny()
    assert m.latent_layout == "1d" and m.latent_shape == (8,) and m.tokens_per_image == 8
    codes = m.encode(_images(3))
    assert codes.shape == (3, 8) and codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 32
    out = m.decode(codes)
    assert out.shape == (3, 3, 16, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(m.encode(_images(3), batch_size=2), codes)
    np.testing.assert_allclose(m.reconstruct(_images(3)), out, rtol=1e-5, atol=1e-6)


def test_decoder_patch_size_and_one_channel():
    m = _tiny(in_channels=1, decoder_patch_size=2, num_latent_tokens=5)
    x = _images(2, c=1)
    out = m(x)
    assert tuple(out.recon.shape) == (2, 1, 16, 16) and out.codes.shape == (2, 5)
    assert m.decoder.grid == 8 and tuple(m.decoder.pos_embedding.shape) == (1, 65, 16)


def test_presets_scale_the_published_sizes():
    for size, (w, d, h) in PUBLISHED_SIZES.items():
        pw, pd, ph = PRESETS[size]
        assert (pw, pd) == (w // 8, d // 4) and pw // ph == 32
    c = titok_config("L", 128, resolution=32)
    assert (c.encoder_width, c.encoder_depth, c.encoder_heads, c.num_latent_tokens) == (128, 6, 4, 128)
    with pytest.raises(ValueError, match="size"):
        titok_config("XL")


def test_save_and_load_round_trip(tmp_path):
    m = _tiny()
    m.save_pretrained(tmp_path / "t")
    back = TiTok.from_pretrained(tmp_path / "t")
    x = _images(2)
    np.testing.assert_array_equal(back.encode(x), m.encode(x))
    assert back.config == m.config


# ---------------------------------------------------------------------------------------------- quantizer
def test_quantizer_matches_numpy_reference_of_1d_tokenizer():
    m = _tiny()
    q = m.quantize
    q.train()
    z = np.random.default_rng(3).standard_normal((2, 4, 1, 8)).astype(np.float32)
    zt = mmu.tensor(z, requires_grad=True)
    out, idx, loss = q(zt)
    # 1d-tokenizer's VectorQuantizer.forward with use_l2_norm, in float64
    x = z.transpose(0, 2, 3, 1).reshape(-1, 4).astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    e = q.embedding.weight.numpy().astype(np.float64)
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    d = (xn ** 2).sum(1, keepdims=True) + (en ** 2).sum(1) - 2 * xn @ en.T
    want = d.argmin(1)
    np.testing.assert_array_equal(idx.numpy().reshape(-1), want)
    qv = en[want]
    mse = ((qv - xn) ** 2).mean()
    np.testing.assert_allclose(loss.item(), 0.25 * mse + mse, rtol=1e-5)
    np.testing.assert_allclose(out.numpy(), qv.reshape(2, 1, 8, 4).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    # decoding the indices gives the forward's output
    np.testing.assert_allclose(q.get_output_from_indices(idx).numpy(), out.numpy(), rtol=1e-6, atol=1e-7)
    # straight-through: d out / d z is the Jacobian of the l2 normalisation; the codebook gets the codebook loss
    (out * mmu.tensor(np.ones_like(z))).sum().backward()
    n = np.linalg.norm(x, axis=1, keepdims=True)
    g = (1.0 - xn * xn.sum(1, keepdims=True)) / n  # (I - u u^T) 1 / |x| with u = x / |x|
    np.testing.assert_allclose(zt.grad.numpy(), g.reshape(2, 1, 8, 4).transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-6)


def test_quantizer_without_l2_norm_and_init():
    m = _tiny(use_l2_norm=False, codebook_size=64)
    w = m.quantize.embedding.weight.numpy()
    assert np.abs(w).max() <= 1.0 / 64 and np.abs(w).max() > 0.5 / 64  # uniform(-1/K, 1/K)
    z = np.random.default_rng(4).standard_normal((1, 4, 1, 8)).astype(np.float32)
    out, idx, _ = m.quantize(mmu.tensor(z))
    x = z.transpose(0, 2, 3, 1).reshape(-1, 4)
    want = ((x[:, None] - w[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(idx.numpy().reshape(-1), want)
    # x + sg(q - x) rounds
    np.testing.assert_allclose(out.numpy().transpose(0, 2, 3, 1).reshape(-1, 4), w[want], rtol=1e-5, atol=1e-7)


def test_clustering_vq_follows_1d_tokenizer():
    m = _tiny(clustering_vq=True, codebook_size=16)
    q = m.quantize
    q.train()
    prob = np.zeros(16)
    for seed in (5, 6):
        z = np.random.default_rng(seed).standard_normal((2, 4, 1, 8)).astype(np.float32)
        w = q.embedding.weight.numpy().astype(np.float64).copy()
        _, idx, _ = q(mmu.tensor(z))
        # 1d-tokenizer's VectorQuantizer(clustering_vq=True) update, in float64
        raw = z.transpose(0, 2, 3, 1).reshape(-1, 4).astype(np.float64)
        x = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        e = w / np.linalg.norm(w, axis=1, keepdims=True)
        d = (x ** 2).sum(1, keepdims=True) + (e ** 2).sum(1) - 2 * x @ e.T
        np.testing.assert_array_equal(idx.numpy().reshape(-1), d.argmin(1))
        prob = 0.99 * prob + 0.01 * np.bincount(d.argmin(1), minlength=16) / 16
        decay = np.exp(-(prob * 16 * 10) / (1 - 0.99) - 1e-3)[:, None]
        want = w * (1 - decay) + raw[d.argmin(0)] * decay
        np.testing.assert_allclose(q.embed_prob.numpy(), prob, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(q.embedding.weight.numpy(), want, rtol=1e-4, atol=1e-6)
        assert 0 < decay.min() < 0.5 < decay.max()  # used codes stay, unused ones move onto the data
    q.eval()
    before = q.embedding.weight.numpy().copy()
    q(mmu.tensor(z))
    np.testing.assert_array_equal(q.embedding.weight.numpy(), before)  # eval: nothing moves
    assert "quantize.embed_prob" in m.state_dict()


# ---------------------------------------------------------------------------------------------- losses
def test_forward_loss_is_the_single_stage_formula():
    m = _tiny(reconstruction_weight=2.0, quantizer_weight=0.5)
    m.train()
    x = _images(2)
    out = m(x)
    rec = float(((out.recon.numpy() - x) ** 2).mean())
    np.testing.assert_allclose(out.losses["rec"], rec, rtol=1e-5)
    np.testing.assert_allclose(out.loss.item(), 2.0 * rec + 0.5 * out.losses["quant"], rtol=1e-5)
    np.testing.assert_allclose(out.losses["quant"], 0.25 * out.losses["commitment"] + out.losses["codebook"],
                               rtol=1e-5)
    m1 = _tiny(reconstruction_loss="l1")
    o1 = m1(x)
    np.testing.assert_allclose(o1.losses["rec"], np.abs(o1.recon.numpy() - x).mean(), rtol=1e-5)


def test_perceptual_term_is_lpips_of_the_reconstruction():
    m = _tiny(in_channels=1, perceptual_weight=1.1, lpips_random=True)
    m.train()
    x = _images(2, c=1)
    out = m(x)
    rgb = lambda a: np.repeat(np.asarray(a), 3, axis=1)  # noqa: E731  (LPIPS takes 3 channels)
    with mmu.no_grad():
        p = m.lpips()(mmu.tensor(rgb(x)), mmu.tensor(rgb(out.recon.numpy()))).mean().item()
    np.testing.assert_allclose(out.losses["perceptual"], p, rtol=1e-4)
    np.testing.assert_allclose(out.loss.item(), out.losses["rec"] + 1.1 * p + out.losses["quant"], rtol=1e-5)
    assert not any(k.startswith("_lpips") or "lpips" in k for k in m.state_dict())  # frozen, outside the tree


def test_gan_term_and_lecam_follow_1d_tokenizer():
    m = _tiny(use_discriminator=True, disc_layers=1, disc_ndf=8, disc_start=2, disc_weight=0.1, lecam_weight=0.5,
              lecam_decay=0.9)
    m.train()
    x = _images(2)
    assert "g_adv" not in m(x, step=1).losses  # before disc_start
    out = m(x, step=2)
    d_fake = m.discriminator(out.recon).numpy()
    np.testing.assert_allclose(out.losses["g_adv"], -d_fake.mean(), rtol=1e-5)
    base = out.losses["rec"] + out.losses["quant"]
    np.testing.assert_allclose(out.loss.item(), base + 0.1 * out.losses["g_adv"], rtol=1e-5)
    ema = np.zeros(2)
    for step in (2, 3):
        recon = m(x, step=step).recon.detach()
        lr, lf = m.discriminator(mmu.tensor(x)).numpy(), m.discriminator(recon).numpy()
        d, info = m.discriminator_loss(x, recon, step)
        mr, mf = lr.mean(), lf.mean()
        hinge = 0.5 * (np.maximum(0, 1 - lr).mean() + np.maximum(0, 1 + lf).mean())
        # 1d-tokenizer's compute_lecam_loss on the batch means, with the EMAs before this step
        lecam = max(mr - ema[1], 0) ** 2 + max(ema[0] - mf, 0) ** 2
        np.testing.assert_allclose(d.item(), hinge + 0.5 * lecam, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(info["lecam"], 0.5 * lecam, rtol=1e-4, atol=1e-8)
        ema = 0.9 * ema + 0.1 * np.array([mr, mf])
        np.testing.assert_allclose(m.lecam_ema.numpy(), ema, rtol=1e-5, atol=1e-7)
    assert "lecam_ema" in m.state_dict()


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    m = _tiny()
    with pytest.raises(ValueError, match="16x16"):
        m.encode(_images(1, r=8))
    with pytest.raises(ValueError, match="channels"):
        m.encode(_images(1, c=1))
    with pytest.raises(ValueError, match="K = 8"):
        m.decode(np.zeros((1, 9), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        m.decode(np.full((1, 8), 32, np.int64))
    with pytest.raises(TypeError, match="integers"):
        m.decode(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="encoder_width"):
        TiTok(**{**TINY, "encoder_heads": 3})
    with pytest.raises(ValueError, match="patch_size"):
        TiTok(**{**TINY, "patch_size": 5})
    with pytest.raises(ValueError, match="quantizer"):
        TiTok(**{**TINY, "quantizer": "fsq"})
    with pytest.raises(TypeError, match="num_latent_tokens"):
        TiTok(**{**TINY, "num_latent_tokens": 2.5})
    with pytest.raises(ValueError, match="lecam_decay"):
        TiTok(**{**TINY, "lecam_decay": 1.0})
    with pytest.raises(ValueError, match="LPIPS"):
        TiTok(**{**TINY, "perceptual_weight": 1.0})
    with pytest.raises(RuntimeError, match="no discriminator"):
        m.discriminator_loss(_images(1), _images(1))
    with pytest.raises(ValueError, match="TiTokQuantizer"):
        m.quantize(mmu.tensor(np.zeros((1, 5, 1, 8), np.float32)))


def test_loss_goes_down_with_the_trainer():
    from mmu.train import TrainConfig, Trainer
    m = _tiny(in_channels=1, codebook_size=16)
    x = np.repeat(_images(4, c=1, seed=5), 4, axis=0)
    hist = Trainer(m, x, TrainConfig(steps=30, batch_size=8, lr=3e-3, log_every=1, progress=False, seed=0)).fit()
    losses = [r["loss"] for r in hist.records] if hasattr(hist, "records") else list(hist["loss"])
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses


# ---------------------------------------------------------------------------------------------- converter
def _onedtok_modules():
    """A torch re-implementation of 1d-tokenizer's TiTok in vq mode with is_legacy=False (modules/blocks.py
    ResidualAttentionBlock / TiTokEncoder / TiTokDecoder, quantizer.py VectorQuantizer, titok.py TiTok): its
    module names (so its state_dict is the checkpoint layout) and its forward, written from the source."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class ResidualAttentionBlock(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, h)
            self.ln_2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)), ("gelu", nn.GELU()),
                                                  ("c_proj", nn.Linear(4 * d, d))]))

        def forward(self, x):
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class Enc(nn.Module):
        def __init__(self, c):
            super().__init__()
            w, g = c.encoder_width, c.resolution // c.patch_size
            self.grid, self.k, self.w, self.ts = g, c.num_latent_tokens, w, c.token_size
            self.patch_embed = nn.Conv2d(3, w, c.patch_size, stride=c.patch_size)
            self.class_embedding = nn.Parameter(torch.randn(1, w) * w ** -0.5)
            self.positional_embedding = nn.Parameter(torch.randn(g * g + 1, w) * w ** -0.5)
            self.latent_token_positional_embedding = nn.Parameter(torch.randn(self.k, w) * w ** -0.5)
            self.ln_pre = nn.LayerNorm(w)
            self.transformer = nn.ModuleList(ResidualAttentionBlock(w, c.encoder_heads)
                                             for _ in range(c.encoder_depth))
            self.ln_post = nn.LayerNorm(w)
            self.conv_out = nn.Conv2d(w, c.token_size, 1)

        def forward(self, x, latent_tokens):
            b = x.shape[0]
            x = self.patch_embed(x).reshape(b, self.w, -1).permute(0, 2, 1)
            x = torch.cat([self.class_embedding[None].expand(b, -1, -1), x], 1) + self.positional_embedding
            lat = latent_tokens[None].expand(b, -1, -1) + self.latent_token_positional_embedding
            x = self.ln_pre(torch.cat([x, lat], 1)).permute(1, 0, 2)
            for blk in self.transformer:
                x = blk(x)
            x = self.ln_post(x.permute(1, 0, 2)[:, 1 + self.grid ** 2:])
            x = x.reshape(b, self.k, self.w, 1).permute(0, 2, 1, 3)
            return self.conv_out(x).reshape(b, self.ts, 1, self.k)

    class Dec(nn.Module):
        def __init__(self, c):
            super().__init__()
            w, p = c.decoder_width, c.decoder_patch_size or c.patch_size
            g = c.resolution // p
            self.grid, self.p, self.w = g, p, w
            self.decoder_embed = nn.Linear(c.token_size, w)
            self.class_embedding = nn.Parameter(torch.randn(1, w) * w ** -0.5)
            self.positional_embedding = nn.Parameter(torch.randn(g * g + 1, w) * w ** -0.5)
            self.mask_token = nn.Parameter(torch.randn(1, 1, w) * w ** -0.5)
            self.latent_token_positional_embedding = nn.Parameter(torch.randn(c.num_latent_tokens, w) * w ** -0.5)
            self.ln_pre = nn.LayerNorm(w)
            self.transformer = nn.ModuleList(ResidualAttentionBlock(w, c.decoder_heads)
                                             for _ in range(c.decoder_depth))
            self.ln_post = nn.LayerNorm(w)
            self.ffn = nn.Sequential(nn.Conv2d(w, p * p * 3, 1))  # + Rearrange (no weights) below
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, zq):
            n, c, h, wd = zq.shape
            x = self.decoder_embed(zq.reshape(n, c * h, wd).permute(0, 2, 1))
            g = self.grid
            mask = self.mask_token.repeat(n, g * g, 1)
            mask = torch.cat([self.class_embedding[None].expand(n, -1, -1), mask], 1) + self.positional_embedding
            x = x + self.latent_token_positional_embedding[:wd]
            x = self.ln_pre(torch.cat([mask, x], 1)).permute(1, 0, 2)
            for blk in self.transformer:
                x = blk(x)
            x = self.ln_post(x.permute(1, 0, 2)[:, 1:1 + g * g])
            x = x.permute(0, 2, 1).reshape(n, self.w, g, g)
            x = self.ffn(x)  # 'b (p1 p2 c) h w -> b c (h p1) (w p2)'
            p = self.p
            x = x.reshape(n, p, p, 3, g, g).permute(0, 3, 4, 1, 5, 2).reshape(n, 3, g * p, g * p)
            return self.conv_out(x)

    class Quant(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.embedding = nn.Embedding(c.codebook_size, c.token_size)
            self.embedding.weight.data.uniform_(-1.0 / c.codebook_size, 1.0 / c.codebook_size)

        def entry(self, idx):
            return torch.nn.functional.normalize(self.embedding(idx), dim=-1)

        def forward(self, z):
            z = z.permute(0, 2, 3, 1)
            zf = torch.nn.functional.normalize(z.reshape(-1, z.shape[-1]), dim=-1)
            e = torch.nn.functional.normalize(self.embedding.weight, dim=-1)
            d = (zf ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * zf @ e.T
            return d.argmin(1).view(z.shape[0], z.shape[1], z.shape[2])

    class OneDTiTok(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.encoder, self.decoder = Enc(c), Dec(c)
            w = c.encoder_width
            self.latent_tokens = nn.Parameter(torch.randn(c.num_latent_tokens, w) * w ** -0.5)
            self.quantize = Quant(c)

        def encode(self, x):  # -> min_encoding_indices (B, 1, K)
            return self.quantize(self.encoder(x, self.latent_tokens))

        def decode_tokens(self, tokens):  # (B, K)
            b, k = tokens.shape
            zq = self.quantize.entry(tokens.reshape(-1)).reshape(b, 1, k, -1).permute(0, 3, 1, 2).contiguous()
            return self.decoder(zq)

    return torch, OneDTiTok


@pytest.mark.parametrize("decoder_patch_size", [None, 2])
def test_converter_matches_1d_tokenizer_reimplementation(decoder_patch_size):
    torch, OneDTiTok = _onedtok_modules()
    cfg = TiTokConfig(**{**TINY, "encoder_depth": 2, "decoder_patch_size": decoder_patch_size})
    torch.manual_seed(0)
    ref = OneDTiTok(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in ref.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    assert "encoder.transformer.0.attn.in_proj_weight" in sd and "decoder.ffn.0.weight" in sd
    read = titok_config_from_state_dict(sd, encoder_heads=2, decoder_heads=2)
    assert read == cfg.validate()
    model = load_titok(sd, encoder_heads=2, decoder_heads=2)
    x = _images(4, seed=7)
    with torch.no_grad():
        want = ref.encode(torch.from_numpy(x))[:, 0].numpy()
        z_ref = ref.encoder(torch.from_numpy(x), ref.latent_tokens)[:, :, 0].numpy()
    with mmu.no_grad():
        z = model.encoder(mmu.tensor(x)).numpy()
    np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(model.encode(x), want)
    codes = np.random.default_rng(1).integers(0, 32, (3, 8))
    with torch.no_grad():
        img_ref = ref.decode_tokens(torch.from_numpy(codes)).numpy()
    np.testing.assert_allclose(model.decode(codes), img_ref, rtol=1e-4, atol=2e-5)


def test_converter_refuses_other_layouts():
    torch, OneDTiTok = _onedtok_modules()
    cfg = TiTokConfig(**TINY)
    sd = {k: v.detach().numpy() for k, v in OneDTiTok(cfg).state_dict().items()}
    with pytest.raises(ValueError, match="legacy"):
        convert_titok_state_dict({**sd, "decoder.ffn.2.weight": np.zeros((1024, 32, 1, 1), np.float32)}, cfg)
    with pytest.raises(ValueError, match="legacy"):
        convert_titok_state_dict({**sd, "pixel_decoder.conv_in.weight": np.zeros(1, np.float32)}, cfg)
    with pytest.raises(ValueError, match="no mmu counterpart"):
        convert_titok_state_dict({**sd, "encoder.extra": np.zeros(1, np.float32)}, cfg)
    with pytest.raises(ValueError, match="lacks"):
        convert_titok_state_dict({k: v for k, v in sd.items() if k != "latent_tokens"}, cfg)
    with pytest.raises(ValueError, match="shape"):
        convert_titok_state_dict(sd, TiTokConfig(**{**TINY, "num_latent_tokens": 9}))
    # a clustering_vq checkpoint (TA-TiTok's) keeps its usage EMA
    prob = np.random.default_rng(2).random(32).astype(np.float32)
    with pytest.raises(ValueError, match="clustering_vq"):
        convert_titok_state_dict({**sd, "quantize.embed_prob": prob}, cfg)
    m = load_titok({**sd, "quantize.embed_prob": prob}, encoder_heads=2, decoder_heads=2)
    assert m.config.clustering_vq
    np.testing.assert_array_equal(m.quantize.embed_prob.numpy(), prob)


# ---------------------------------------------------------------------------------------------- gradients
def test_gradients_match_the_torch_twin():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from torch_twins import titok_twin
    m = _tiny(in_channels=1, decoder_patch_size=2)
    m.train()
    twin = titok_twin(m)
    x = _images(3, c=1, seed=9)
    out = m(x)
    out.loss.backward()
    _, tloss, _ = twin(torch.from_numpy(x))
    tloss.backward()
    np.testing.assert_allclose(out.loss.item(), tloss.item(), rtol=1e-5)
    tparams = dict(twin.named_parameters())
    for name, p in m.named_parameters():
        g, tg = p.grad.numpy(), tparams[name].grad.numpy()
        scale = max(np.abs(tg).max(), 1e-6)
        assert np.abs(g - tg).max() / scale < 1e-3, name


# ---------------------------------------------------------------------------------------------- compare
def test_compare_entries_count_k_tokens(tmp_path):
    from mmu import compare
    assert {"titok-32", "titok-64"} <= set(compare.REGISTRY)
    e = compare.REGISTRY["titok-64"](1, 16, False)
    assert e.tokenizer == "titok" and e.config["num_latent_tokens"] == 64 and e.config["encoder_width"] == 64
    assert e.config["clustering_vq"] and e.config["patch_size"] == 4
    rows = compare.compare(["titok-32"], fast=True, progress=False, out_dir=str(tmp_path / "r"))
    assert rows[0]["tokens_per_image"] == 32 and rows[0]["codebook_size"] == 256
    assert np.isfinite(rows[0]["psnr"])


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_last_layer_computes_only_the_kept_rows(part):
    """The encoder reads only its K latent outputs and the decoder only its N patch outputs: their last layer
    runs those rows only (_layers_at_rows), with the numbers and gradients of the whole layers sliced."""
    from mmu.models.titok.model import _layers_at_rows
    m = _tiny(encoder_depth=2, decoder_depth=2)
    layers = getattr(m, part).layers
    lo, hi = (1, 9) if part == "encoder" else (1, 17)  # [class; 8 latents; 16 patches] / [class; 16 masks; 8]
    x = np.random.default_rng(1).standard_normal((3, 25, 16)).astype(np.float32)
    g = np.random.default_rng(2).standard_normal((3, hi - lo, 16)).astype(np.float32)
    outs = []
    for rows in (True, False):
        m.zero_grad(set_to_none=True)
        t = mmu.tensor(x, requires_grad=True)
        if rows:
            y = _layers_at_rows(layers, t, lo, hi)
        else:
            y = t
            for layer in layers:
                y = layer(y)
            y = y[:, lo:hi]
        y.backward(mmu.tensor(g))
        outs.append((y.numpy().copy(), t.grad.numpy().copy(),
                     {n: p.grad.numpy().copy() for n, p in layers.named_parameters()}))
    (y1, dx1, dp1), (y2, dx2, dp2) = outs
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-6)
    assert dp1.keys() == dp2.keys()
    for n in dp1:
        np.testing.assert_allclose(dp1[n], dp2[n], rtol=1e-4, atol=1e-6, err_msg=n)
