"""mmu.tokenizers: VQVAE, DVAE, VQGAN — encode/decode shapes and dtypes for every quantizer, codes round
trip, short trainings whose loss falls, save_pretrained/from_pretrained, bad inputs, taming state_dict names."""
import math
import warnings

import numpy as np
import pytest

import mmu
from mmu import losses as L
from mmu.tokenizers import (DVAE, VQGAN, VQVAE, DVAEConfig, Tokenizer, TokenizerOutput, VQGANConfig, VQVAEConfig,
                            fsq_levels_for, make_quantizer)

QUANTIZERS = ["vq", "ema_vq", "fsq", "lfq", "rvq"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _digits(n=16):
    """A fixed batch of 16x16 one-channel digit images in [-1, 1] (scikit-learn's 8x8 digits, each pixel
    repeated 2x2), or smooth random blobs when scikit-learn is missing."""
    try:
        from sklearn.datasets import load_digits
        d = load_digits().images[:n].astype(np.float32) / 16.0
        x = np.repeat(np.repeat(d, 2, 1), 2, 2)[:, None]
    except ImportError:
        rng = np.random.RandomState(0)
        yy, xx = np.mgrid[:16, :16]
        c = rng.uniform(4, 12, (n, 2))
        x = np.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / 8.0)[:, None]
    return np.ascontiguousarray(x * 2.0 - 1.0, dtype=np.float32)


X = _digits()


def _kw(q):
    return {"codebook_size": 16 if q == "lfq" else 32, "quantizer": q}


def vqvae(q="vq", **kw):
    cfg = dict(in_channels=1, hidden_channels=16, res_channels=8, num_res_blocks=1, downsample=4, embed_dim=8,
               resolution=16, **_kw(q))
    cfg.update(kw)
    return VQVAE(**cfg)


def dvae(recon="logit_laplace", **kw):
    cfg = dict(in_channels=1, hidden_channels=16, res_channels=8, num_res_blocks=1, downsample=4, embed_dim=8,
               codebook_size=32, recon=recon, resolution=16, temp_anneal_steps=30)
    cfg.update(kw)
    return DVAE(**cfg)


def vqgan(q="vq", **kw):
    cfg = dict(in_channels=1, ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], z_channels=8,
               embed_dim=8, resolution=16, perceptual_weight=0.0, use_discriminator=False, **_kw(q))
    cfg.update(kw)
    return VQGAN(**cfg)


ALL = [("vqvae", q) for q in QUANTIZERS] + [("dvae", r) for r in ("logit_laplace", "l1", "l2")] + \
      [("vqgan", q) for q in QUANTIZERS]


def build(kind, variant, **kw):
    return {"vqvae": vqvae, "dvae": dvae, "vqgan": vqgan}[kind](variant, **kw)


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("kind,variant", ALL)
def test_encode_decode_shapes_and_round_trip(kind, variant):
    m = build(kind, variant)
    x = X[:4]
    f = m.downsample_factor
    codes = m.encode(x)
    assert codes.dtype == np.int64
    if variant == "rvq":
        assert codes.shape == (4, 16 // f, 16 // f, 4)
    else:
        assert codes.shape == (4, 16 // f, 16 // f)
    assert codes.min() >= 0 and codes.max() < m.codebook_size
    img = m.decode(codes)
    assert img.dtype == np.float32 and img.shape == (4, 1, 16, 16)
    assert np.isfinite(img).all()
    # decode(encode(x)) is forward's reconstruction in eval mode
    m.eval()
    out = m(x)
    assert isinstance(out, TokenizerOutput)
    np.testing.assert_array_equal(out.codes, codes)
    np.testing.assert_allclose(out.recon.numpy(), img, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.reconstruct(x), img, rtol=0, atol=1e-5)
    # in chunks: the same codes and images
    np.testing.assert_array_equal(m.encode(x, batch_size=3), codes)
    np.testing.assert_allclose(m.decode(codes, batch_size=3), img, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.reconstruct(x, batch_size=1), img, rtol=0, atol=1e-5)
    # a non-square size divisible by the factor works too
    assert m.decode(m.encode(np.zeros((1, 1, 16, 8), np.float32))).shape == (1, 1, 16, 8)


@pytest.mark.parametrize("kind,variant", ALL)
def test_forward_output(kind, variant):
    m = build(kind, variant)
    out = m(X[:4], step=0)
    assert out.loss.shape == () and np.isfinite(out.loss.item())
    assert tuple(out.recon.shape) == (4, 1, 16, 16)
    assert "rec" in out.losses and all(isinstance(v, float) for v in out.losses.values())
    assert ("kl" in out.losses) == (kind == "dvae")
    if kind != "dvae":
        assert "quant" in out.losses
    assert out.stats is not None and 0 < out.stats.batch_usage <= 1
    out.loss.backward()
    grads = [p.grad for p in m.generator_parameters()]
    assert sum(g is not None for g in grads) > 0.8 * len(grads)


def test_token_counts():
    m = vqvae("vq", codebook_size=64)
    assert m.tokens_per_image == 16 and m.codebook_size == 64 and m.bits_per_token == 6.0
    r = vqvae("rvq")
    assert r.tokens_per_image == 16 * 4 and r.codebook_size == 32
    g = vqgan("fsq", codebook_size=1024)
    assert g.downsample_factor == 2 and g.tokens_per_image == 64
    assert g.codebook_size == 1000 and math.isclose(g.bits_per_token, math.log2(1000))
    lq = vqgan("lfq", codebook_size=1024)
    assert lq.codebook_size == 1024 and lq.bits_per_token == 10.0
    d = dvae()
    assert d.tokens_per_image == 16 and d.codebook_size == 32


def test_quantizer_defaults():
    q = make_quantizer("ema_vq", 8, 64)
    assert q.decay == 0.99 and q.kmeans_init and q.threshold_ema_dead_code > 0 and q.commitment_weight == 0.25
    v = make_quantizer("vq", 8, 64, beta=0.3)
    assert v.learnable_codebook and not v.ema_update and v.commitment_weight == 0.3 and v.codebook_weight == 1.0
    assert make_quantizer("fsq", 8, 1024).levels == [8, 5, 5, 5]
    assert make_quantizer("fsq", 8, 1024, kwargs={"levels": [4, 4]}).codebook_size == 16
    assert make_quantizer("lfq", 8, 2 ** 12).codebook_size == 4096
    r = make_quantizer("rvq", 8, 64, kwargs={"num_quantizers": 2})
    assert r.num_quantizers == 2 and r.level(0).decay == 0.99
    assert make_quantizer("ema_vq", 8, 64, kwargs={"decay": 0.5}).decay == 0.5
    assert make_quantizer("ema_vq", 8, 64, kwargs={"codebook_size": 16}).codebook_size == 16
    assert make_quantizer("lfq", 8, 64, kwargs={"codebook_size": 16}).codebook_size == 16
    assert vqvae("vq", quantizer_kwargs={"codebook_size": 8}).codebook_size == 8
    assert fsq_levels_for(2 ** 14) == [8, 8, 8, 6, 5] and fsq_levels_for(256) == [8, 6, 5]
    with pytest.raises(ValueError, match="quantizer must be one of"):
        make_quantizer("pq", 8, 64)


def test_encode_is_side_effect_free():
    m = vqvae("ema_vq")
    m(X[:4])  # k-means init + one EMA update
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    c1 = m.encode(X[:4])
    c2 = m.encode(X[:4])
    np.testing.assert_array_equal(c1, c2)
    assert m.training
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_dvae_temperature_and_kl():
    m = dvae(temp_anneal_steps=100)
    assert m.temperature(0) == pytest.approx(1.0)
    assert m.temperature(50) == pytest.approx(1.0 / 16 + (1 - 1.0 / 16) * 0.5)
    assert m.temperature(1000) == pytest.approx(1.0 / 16)
    out = m(X[:4], step=100)
    assert out.losses["temperature"] == pytest.approx(1.0 / 16)
    assert out.losses["kl"] >= 0
    # the decoder emits mu and log b for logit-Laplace, C channels otherwise
    assert m.decoder.layers[len(m.decoder.layers) - 1].out_channels == 2
    assert dvae("l1").decoder.layers[len(dvae("l1").decoder.layers) - 1].out_channels == 1
    # loss = rec + kl_weight * kl
    np.testing.assert_allclose(out.loss.item(), out.losses["rec"] + 5e-4 * out.losses["kl"], rtol=1e-5, atol=1e-6)
    # the logit-Laplace reconstruction lies in [-1, 1]
    r = m.decode(m.encode(X[:4]))
    assert r.min() >= -1.0 and r.max() <= 1.0


# ------------------------------------------------------------------------------------------ training
def _train(m, steps=30, lr=3e-3):
    mmu.manual_seed(0)
    opt = mmu.optim.AdamW(m.generator_parameters(), lr=lr, weight_decay=0.0)
    dopt = mmu.optim.AdamW(list(m.discriminator.parameters()), lr=lr, betas=(0.5, 0.9)) \
        if m.discriminator is not None else None
    hist = []
    for s in range(steps):
        out = m(X, step=s)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if dopt is not None:
            dl, info = m.discriminator_loss(X, out.recon, step=s)
            dopt.zero_grad()
            dl.backward()
            dopt.step()
        hist.append(out.losses["rec"])
    return hist


@pytest.mark.parametrize("kind,variant", [("vqvae", q) for q in QUANTIZERS] + [("dvae", "logit_laplace"),
                                          ("dvae", "l2"), ("vqgan", "vq"), ("vqgan", "fsq")])
def test_tiny_training_loss_falls(kind, variant):
    m = build(kind, variant)
    hist = _train(m)
    first, last = np.mean(hist[:3]), np.mean(hist[-5:])
    assert np.isfinite(hist).all()
    if kind == "dvae" and variant == "logit_laplace":  # an NLL: can be negative, compare the drop
        assert last < first - 0.1, hist
    else:
        assert last < 0.8 * first, hist


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("kind,variant", [("vqvae", "ema_vq"), ("vqvae", "fsq"), ("vqvae", "rvq"),
                                          ("dvae", "logit_laplace"), ("vqgan", "vq"), ("vqgan", "lfq")])
def test_save_pretrained_round_trip(kind, variant, tmp_path):
    m = build(kind, variant)
    _train(m, steps=2)
    m.save_pretrained(str(tmp_path))
    for loader in (Tokenizer, type(m)):
        m2 = loader.from_pretrained(str(tmp_path))
        assert type(m2) is type(m) and m2.config == m.config
        assert type(m2.config) is type(m.config)
        c = m.encode(X[:4])
        np.testing.assert_array_equal(m2.encode(X[:4]), c)
        np.testing.assert_array_equal(m2.decode(c), m.decode(c))
        m.eval(), m2.eval()
        np.testing.assert_array_equal(m2(X[:4]).recon.numpy(), m(X[:4]).recon.numpy())
        m.train()


def test_config_forms():
    cfg = VQVAEConfig(in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=1, embed_dim=4,
                      codebook_size=16, resolution=16, quantizer_kwargs={"rotation_trick": True})
    a = VQVAE(cfg)
    b = VQVAE(**cfg.to_dict())
    c = VQVAE(cfg.to_dict())
    assert a.config == b.config == c.config == cfg and a.config is not cfg
    assert a.quantize.rotation_trick
    with pytest.raises(TypeError, match="not both"):
        VQVAE(cfg, embed_dim=8)
    with pytest.raises(TypeError, match="unknown field"):
        VQVAE(embedding_dim=8)
    with pytest.raises(TypeError, match="config must be"):
        VQVAE(3)
    assert VQGANConfig(ch_mult=(1, 2)).ch_mult == [1, 2]  # tuples become lists (a config equals its JSON)
    assert DVAEConfig().recon == "logit_laplace"


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs():
    m = vqvae("vq")
    with pytest.raises(ValueError, match="1 channels"):
        m.encode(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="multiples of the downsample factor 4"):
        m.encode(np.zeros((2, 1, 18, 16), np.float32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m.encode(np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        m(np.full((1, 1, 16, 16), np.nan, np.float32))
    with pytest.raises(TypeError, match="float array"):
        m.encode(np.array([["a"]]))
    with pytest.warns(UserWarning, match=r"\[-1, 1\]"):
        m.encode(np.full((1, 1, 16, 16), 255.0, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.encode(X[:1])
    with pytest.raises(ValueError, match=r"codes must be \(B, h, w\)"):
        m.decode(np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 32\)"):
        m.decode(np.full((1, 4, 4), 32, np.int64))
    with pytest.raises(TypeError, match="integers"):
        m.decode(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="levels = 4"):
        vqvae("rvq").decode(np.zeros((1, 4, 4, 2), np.int64))
    with pytest.raises(ValueError, match="batch_size"):
        m.encode(X[:2], batch_size=0)
    with pytest.raises(ValueError, match="step"):
        m(X[:1], step=-1)
    with pytest.raises(ValueError, match="quantizer must be one of"):
        vqvae("pq")
    with pytest.raises(ValueError, match="power of 2"):
        vqvae(downsample=3)
    with pytest.raises(ValueError, match="resolution 16 must be a multiple"):
        vqvae(downsample=32)
    with pytest.raises(ValueError, match="recon must be"):
        dvae("bce")
    with pytest.raises(ValueError, match="'gumbel'"):
        dvae(quantizer="vq")
    with pytest.raises(ValueError, match="lpips_weights"):
        vqgan(perceptual_weight=1.0)
    with pytest.raises(ValueError, match="multiple of the downsample factor"):
        vqgan(resolution=17)
    with pytest.raises(ValueError, match="ch_mult"):
        vqgan(ch_mult=[])
    with pytest.raises(ValueError, match="disc_loss"):
        vqgan(disc_loss="wgan")
    with pytest.raises(RuntimeError, match="no discriminator"):
        m.discriminator_loss(X[:1], X[:1], 0)


# ------------------------------------------------------------------------------------------ VQGAN layout
def _taming_keys(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, in_channels, z_channels):
    """The encoder/decoder state_dict keys of taming-transformers' Encoder/Decoder (model.py), written out
    from taming's constructor loops (temb_ch = 0, resamp_with_conv = True, double_z = False)."""
    def res(p, cin, cout):
        k = [f"{p}.{n}.{w}" for n in ("norm1", "conv1", "norm2", "conv2") for w in ("weight", "bias")]
        return k + ([f"{p}.nin_shortcut.{w}" for w in ("weight", "bias")] if cin != cout else [])

    def attn(p):
        return [f"{p}.{n}.{w}" for n in ("norm", "q", "k", "v", "proj_out") for w in ("weight", "bias")]

    def mid(p, c):
        return res(f"{p}.block_1", c, c) + attn(f"{p}.attn_1") + res(f"{p}.block_2", c, c)

    keys = ["encoder.conv_in.weight", "encoder.conv_in.bias"]
    n, curr = len(ch_mult), resolution
    in_mult = (1,) + tuple(ch_mult)
    for i in range(n):
        bin_, bout = ch * in_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            keys += res(f"encoder.down.{i}.block.{j}", bin_, bout)
            bin_ = bout
        for j in range(num_res_blocks):
            if curr in attn_resolutions:
                keys += attn(f"encoder.down.{i}.attn.{j}")
        if i != n - 1:
            keys += [f"encoder.down.{i}.downsample.conv.weight", f"encoder.down.{i}.downsample.conv.bias"]
            curr //= 2
    keys += mid("encoder.mid", bin_) + ["encoder.norm_out.weight", "encoder.norm_out.bias",
                                        "encoder.conv_out.weight", "encoder.conv_out.bias"]
    bin_ = ch * ch_mult[-1]
    curr = resolution // 2 ** (n - 1)
    keys += ["decoder.conv_in.weight", "decoder.conv_in.bias"] + mid("decoder.mid", bin_)
    for i in reversed(range(n)):
        bout = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            keys += res(f"decoder.up.{i}.block.{j}", bin_, bout)
            bin_ = bout
            if curr in attn_resolutions:
                keys += attn(f"decoder.up.{i}.attn.{j}")
        if i != 0:
            keys += [f"decoder.up.{i}.upsample.conv.weight", f"decoder.up.{i}.upsample.conv.bias"]
            curr *= 2
    keys += ["decoder.norm_out.weight", "decoder.norm_out.bias", "decoder.conv_out.weight", "decoder.conv_out.bias"]
    keys += ["quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight", "post_quant_conv.bias"]
    return keys


def test_vqgan_state_dict_follows_taming():
    cfg = dict(ch=8, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8], resolution=16, in_channels=3,
               z_channels=4)
    m = VQGAN(embed_dim=4, codebook_size=16, perceptual_weight=0.0, use_discriminator=False, **cfg)
    sd = m.state_dict()
    expect = _taming_keys(**cfg)
    got = [k for k in sd if not k.startswith("quantize.")]
    assert sorted(got) == sorted(expect)
    assert "encoder.down.0.block.0.norm1.weight" in sd and "decoder.up.2.upsample.conv.weight" in sd
    assert "encoder.down.1.attn.1.proj_out.weight" in sd and "decoder.up.1.attn.2.q.weight" in sd
    # shapes of a few: GroupNorm over 8 channels, the asymmetric-pad stride-2 conv, quant convs
    assert tuple(sd["encoder.down.0.downsample.conv.weight"].shape) == (8, 8, 3, 3)
    assert m.encoder.down[0].downsample.conv.stride == (2, 2) and m.encoder.down[0].downsample.conv.padding == (0, 0)
    assert m.encoder.down[0].block[0].norm1.eps == 1e-6 and m.encoder.down[0].block[0].norm1.num_groups == 8
    assert tuple(sd["quant_conv.weight"].shape) == (4, 4, 1, 1)
    assert tuple(sd["decoder.conv_out.weight"].shape) == (3, 8, 3, 3)
    assert m.encode(np.zeros((1, 3, 16, 16), np.float32)).shape == (1, 4, 4)
    # 32 groups when the channels allow it (taming's Normalize)
    big = VQGAN(ch=64, ch_mult=[1], num_res_blocks=1, attn_resolutions=[], resolution=8, z_channels=4, embed_dim=4,
                codebook_size=16, perceptual_weight=0.0, use_discriminator=False)
    assert big.encoder.down[0].block[0].norm1.num_groups == 32


def test_vqgan_attention_block_matches_reference():
    from mmu.tokenizers.blocks import AttnBlock
    blk = AttnBlock(8, num_groups=4)
    x = mmu.randn(2, 8, 3, 5)
    out = blk(x).numpy().astype(np.float64)
    # float64 reference of taming's AttnBlock.forward
    xv = x.numpy().astype(np.float64)
    g = xv.reshape(2, 4, -1)
    hn = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-6)).reshape(xv.shape)
    sd = {k: v.numpy().astype(np.float64) for k, v in blk.state_dict().items()}
    hn = hn * sd["norm.weight"][None, :, None, None] + sd["norm.bias"][None, :, None, None]

    def conv1(name, t):
        return np.einsum("oc,bchw->bohw", sd[f"{name}.weight"][:, :, 0, 0], t) + sd[f"{name}.bias"][None, :, None, None]
    q, k, v = (conv1(n, hn).reshape(2, 8, 15) for n in ("q", "k", "v"))
    w = np.einsum("bci,bcj->bij", q, k) / math.sqrt(8)
    w = np.exp(w - w.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    h = np.einsum("bcj,bij->bci", v, w).reshape(2, 8, 3, 5)
    ref = xv + conv1("proj_out", h)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_vqgan_loss_without_gan_parts():
    m = vqgan("vq", codebook_weight=2.0)
    out = m(X[:4])
    np.testing.assert_allclose(out.loss.item(), out.losses["rec"] + 2.0 * out.losses["quant"], rtol=1e-5)
    assert "g_adv" not in out.losses and "perceptual" not in out.losses
    assert m.discriminator is None and m.lpips() is None
    assert m.get_last_layer() is m.decoder.conv_out.weight
    v = vqvae()
    assert v.get_last_layer() is v.decoder.layers[len(v.decoder.layers) - 1].weight
    # taming allows num_res_blocks = 0 (one block per decoder level)
    with pytest.raises(ValueError, match="num_res_blocks=0 needs ch_mult of all 1s"):
        vqgan("vq", num_res_blocks=0, ch_mult=[1, 2])
    z = vqgan("vq", num_res_blocks=0, ch_mult=[1, 1, 1])
    assert z.decode(z.encode(X[:2])).shape == (2, 1, 16, 16)
    assert len(z.decoder.up[0].block) == 1 and len(z.encoder.down[0].block) == 0


# ------------------------------------------------------------------------------------------ GAN path
_MISSING_GAN = [n for n in ("NLayerDiscriminator", "adaptive_weight") if not hasattr(L, n)]
_HAVE_GAN = not _MISSING_GAN
_HAVE_LPIPS = hasattr(L, "LPIPS")


@pytest.mark.skipif(not _HAVE_GAN, reason=f"mmu.losses.{' / '.join(_MISSING_GAN)} not in this build yet "
                                          "(branches wt-bn: NLayerDiscriminator, wt-agrad: adaptive_weight)")
def test_vqgan_discriminator_path(tmp_path):
    m = vqgan("vq", use_discriminator=True, disc_layers=1, disc_ndf=8, disc_start=2)
    assert m.discriminator is not None
    gen = {id(p) for p in m.generator_parameters()}
    assert not gen & {id(p) for p in m.discriminator.parameters()}
    assert len(gen) + len(list(m.discriminator.parameters())) == len(list(m.parameters()))
    assert any(k.startswith("discriminator.main.0.") for k in m.state_dict())
    out = m(X[:4], step=0)  # before disc_start: no adversarial term
    assert "g_adv" not in out.losses
    d, info = m.discriminator_loss(X[:4], out.recon, step=0)
    assert d.item() == 0.0 and set(info) == {"d_loss", "logits_real", "logits_fake"}
    out = m(X[:4], step=2)
    assert "g_adv" in out.losses and out.losses["d_weight"] >= 0
    expect = out.losses["rec"] + out.losses["quant"] + out.losses["d_weight"] * out.losses["g_adv"]
    np.testing.assert_allclose(out.loss.item(), expect, rtol=1e-4, atol=1e-6)
    out.loss.backward()
    assert m.decoder.conv_out.weight.grad is not None
    d, info = m.discriminator_loss(X[:4], out.recon, step=2)
    assert d.item() > 0
    m.discriminator.zero_grad()
    d.backward()
    assert all(p.grad is not None for p in m.discriminator.parameters() if p.requires_grad)
    assert m.decoder.conv_out.weight.grad is not None
    # the checkpoint holds the discriminator (with its batch-norm statistics) too
    m.save_pretrained(str(tmp_path))
    m3 = Tokenizer.from_pretrained(str(tmp_path))
    sd, sd3 = m.state_dict(), m3.state_dict()
    assert any(k.startswith("discriminator.") for k in sd3) and sd.keys() == sd3.keys()
    for k in sd:
        np.testing.assert_array_equal(sd3[k].numpy(), sd[k].numpy(), err_msg=k)
    # the whole GAN setup trains
    m2 = vqgan("vq", use_discriminator=True, disc_layers=1, disc_ndf=8, disc_start=10, disc_weight=0.1)
    hist = _train(m2, steps=30)
    assert np.mean(hist[-5:]) < 0.8 * np.mean(hist[:3])


@pytest.mark.skipif(not _HAVE_LPIPS, reason="mmu.losses.LPIPS not in this build yet (branch wt-lpips)")
def test_vqgan_perceptual_path(tmp_path):
    m = vqgan("fsq", perceptual_weight=1.0, lpips_random=True)
    out = m(X[:2])
    assert out.losses["perceptual"] >= 0
    np.testing.assert_allclose(out.loss.item(), out.losses["rec"] + out.losses["perceptual"], rtol=1e-4, atol=1e-6)
    out.loss.backward()
    lp = m.lpips()
    assert not any(k.startswith("_lpips") or "lpips" in k for k in m.state_dict())
    assert all(not p.requires_grad for p in lp.parameters())
    m.save_pretrained(str(tmp_path))
    m2 = VQGAN.from_pretrained(str(tmp_path))
    assert m2.config.lpips_random and m2.config.perceptual_weight == 1.0


class _StandInDiscriminator(mmu.nn.Module):
    """A two-conv PatchGAN with NLayerDiscriminator's signature: exercises VQGAN's GAN plumbing whether or not
    the real one is in this build."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="batch"):
        super().__init__()
        self.main = mmu.nn.Sequential(mmu.nn.Conv2d(input_nc, ndf, 4, 2, 1), mmu.nn.LeakyReLU(0.2),
                                      mmu.nn.Conv2d(ndf, 1, 4, 1, 1))

    def forward(self, x):
        return self.main(x)


def test_vqgan_gan_plumbing_with_stand_ins(monkeypatch):
    """Loss composition, disc_start warm-up, discriminator_loss and parameter split, with stand-ins for
    NLayerDiscriminator and adaptive_weight (a fixed 0.5), so only the tokenizer's own logic is tested."""
    monkeypatch.setattr(L, "NLayerDiscriminator", _StandInDiscriminator, raising=False)
    calls = []

    def fake_adaptive_weight(nll_loss, g_loss, last_layer, max_weight=1e4, eps=1e-4):
        calls.append(last_layer)
        return mmu.tensor(np.float32(0.5))
    monkeypatch.setattr(L, "adaptive_weight", fake_adaptive_weight, raising=False)
    m = vqgan("vq", use_discriminator=True, disc_layers=1, disc_ndf=4, disc_start=3, disc_weight=0.8,
              disc_factor=2.0)
    assert isinstance(m.discriminator, _StandInDiscriminator)
    gen = m.generator_parameters()
    assert len(gen) + len(list(m.discriminator.parameters())) == len(list(m.parameters()))
    assert not {id(p) for p in gen} & {id(p) for p in m.discriminator.parameters()}
    out = m(X[:4], step=2)  # before disc_start
    assert "g_adv" not in out.losses and not calls
    d, info = m.discriminator_loss(X[:4], out.recon, step=2)
    assert d.item() == 0.0
    out = m(X[:4], step=3)
    assert calls and calls[-1] is m.decoder.conv_out.weight
    g = -m.discriminator(out.recon).mean().item()
    assert out.losses["g_adv"] == pytest.approx(g, rel=1e-5, abs=1e-6)
    expect = out.losses["rec"] + out.losses["quant"] + 0.5 * 0.8 * 2.0 * g
    np.testing.assert_allclose(out.loss.item(), expect, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    d, info = m.discriminator_loss(X[:4], out.recon, step=3)
    lr, lf = m.discriminator(mmu.tensor(X[:4])), m.discriminator(out.recon.detach())
    ref = 2.0 * 0.5 * (np.maximum(1 - lr.numpy(), 0).mean() + np.maximum(1 + lf.numpy(), 0).mean())
    np.testing.assert_allclose(d.item(), ref, rtol=1e-5, atol=1e-6)
    m.zero_grad()
    d.backward()
    assert all(p.grad is not None for p in m.discriminator.parameters())
    assert all(p.grad is None for p in m.generator_parameters())  # recon was detached
    # eval mode / no_grad: no adversarial term (taming sets d_weight = 0 outside training)
    m.eval()
    assert "g_adv" not in m(X[:4], step=10).losses
    m.train()
    with mmu.no_grad():
        assert "g_adv" not in m(X[:4], step=10).losses
    # the alternating generator / discriminator loop trains
    mmu.manual_seed(0)
    m2 = vqgan("vq", use_discriminator=True, disc_layers=1, disc_ndf=4, disc_start=10, disc_weight=0.1)
    hist = _train(m2, steps=30)
    assert np.mean(hist[-5:]) < 0.8 * np.mean(hist[:3])
    with pytest.raises(ValueError, match="disc_layers"):
        vqgan("vq", use_discriminator=True, disc_layers=3)


# ------------------------------------------------------------------------------------------ torch parity
def _torch_mirror(module, torch):
    """A torch function computing what an mmu encoder/decoder of this package computes, written from the
    taming / VQ-VAE formulas with the mmu module's weights (a check of the layout, padding, norms)."""
    TF = torch.nn.functional
    from mmu.tokenizers import blocks as B

    def w(p):
        return torch.tensor(p.detach().numpy(), dtype=torch.float64)

    def run(m, x):
        if isinstance(m, mmu.nn.Conv2d):
            return TF.conv2d(x, w(m.weight), w(m.bias), m.stride, m.padding)
        if isinstance(m, mmu.nn.ConvTranspose2d):
            return TF.conv_transpose2d(x, w(m.weight), w(m.bias), m.stride, m.padding)
        if isinstance(m, mmu.nn.GroupNorm):
            return TF.group_norm(x, m.num_groups, w(m.weight), w(m.bias), m.eps)
        if isinstance(m, mmu.nn.ReLU):
            return TF.relu(x)
        if isinstance(m, mmu.nn.Sequential):
            for c in m:
                x = run(c, x)
            return x
        if isinstance(m, B.ResBlock):
            return x + run(m.block, x)
        if isinstance(m, (B.ConvEncoder, B.ConvDecoder)):
            return run(m.layers, x)
        if isinstance(m, B.ResnetBlock):
            h = run(m.conv1, TF.silu(run(m.norm1, x)))
            h = run(m.conv2, TF.silu(run(m.norm2, h)))
            return (run(m.nin_shortcut, x) if m.nin_shortcut is not None else x) + h
        if isinstance(m, B.AttnBlock):
            b, c, hh, ww = x.shape
            h = run(m.norm, x)
            q, k, v = (run(n, h).reshape(b, c, hh * ww) for n in (m.q, m.k, m.v))
            a = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * c ** -0.5, dim=2)
            return x + run(m.proj_out, torch.bmm(v, a.permute(0, 2, 1)).reshape(b, c, hh, ww))
        if isinstance(m, B.Downsample):
            return run(m.conv, TF.pad(x, (0, 1, 0, 1)))
        if isinstance(m, B.Upsample):
            return run(m.conv, TF.interpolate(x, scale_factor=2.0, mode="nearest"))
        if isinstance(m, B._Mid):
            return run(m.block_2, run(m.attn_1, run(m.block_1, x)))
        if isinstance(m, B.Encoder):
            h = run(m.conv_in, x)
            for i, lv in enumerate(m.down):
                for j in range(m.num_res_blocks):
                    h = run(lv.block[j], h)
                    if len(lv.attn):
                        h = run(lv.attn[j], h)
                if i != m.num_resolutions - 1:
                    h = run(lv.downsample, h)
            return run(m.conv_out, TF.silu(run(m.norm_out, run(m.mid, h))))
        if isinstance(m, B.Decoder):
            h = run(m.mid, run(m.conv_in, x))
            for i in reversed(range(m.num_resolutions)):
                lv = m.up[i]
                for j in range(m.num_res_blocks + 1):
                    h = run(lv.block[j], h)
                    if len(lv.attn):
                        h = run(lv.attn[j], h)
                if i != 0:
                    h = run(lv.upsample, h)
            return run(m.conv_out, TF.silu(run(m.norm_out, h)))
        raise TypeError(type(m).__name__)
    return lambda x: run(module, torch.tensor(x, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("kind", ["vqvae", "vqgan"])
def test_encoder_decoder_match_torch_formulas(kind):
    torch = pytest.importorskip("torch")
    m = vqvae("vq") if kind == "vqvae" else vqgan("vq", ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8, 4])
    x = X[:2]
    z = m.encoder(mmu.tensor(x))
    np.testing.assert_allclose(z.numpy(), _torch_mirror(m.encoder, torch)(x), rtol=1e-4, atol=1e-4)
    zq = mmu.randn(*z.shape) if kind == "vqvae" else mmu.randn(2, m.config.z_channels, *z.shape[2:])
    np.testing.assert_allclose(m.decoder(zq).numpy(), _torch_mirror(m.decoder, torch)(zq.numpy()),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ taming checkpoints
def _taming_vqmodel_keys(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, in_channels, z_channels,
                         disc_layers, actnorm=False):
    """Every state_dict key of taming's VQModel with VQLPIPSWithDiscriminator, written out from taming's source
    (vqgan.py, quantize.py VectorQuantizer2 without remap, lpips.py, discriminator/model.py)."""
    keys = _taming_keys(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, in_channels, z_channels)
    keys += ["quantize.embedding.weight"]
    p = "loss.perceptual_loss."
    keys += [p + "scaling_layer.shift", p + "scaling_layer.scale"]
    for s, idx in enumerate(((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)), 1):
        keys += [f"{p}net.slice{s}.{i}.{w}" for i in idx for w in ("weight", "bias")]
    keys += [f"{p}lin{k}.model.1.weight" for k in range(5)]
    d = "loss.discriminator.main."
    keys += [d + "0.weight", d + "0.bias"]
    norm = ["loc", "scale", "initialized"] if actnorm else ["weight", "bias", "running_mean", "running_var",
                                                            "num_batches_tracked"]
    for n in range(disc_layers):          # conv at 3n + 2, norm at 3n + 3 (LeakyReLUs have no weights)
        keys += [f"{d}{3 * n + 2}.weight"] + ([f"{d}{3 * n + 2}.bias"] if actnorm else [])
        keys += [f"{d}{3 * n + 3}.{w}" for w in norm]
    last = 3 * disc_layers + 2
    keys += [f"{d}{last}.weight", f"{d}{last}.bias"]
    return keys


_TAMING = dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], in_channels=3, resolution=16,
               z_channels=8)


def _taming_twin(**kw):
    torch = pytest.importorskip("torch")
    import os
    import sys
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import torch_twins as tt
    torch.set_num_threads(1)
    args = dict(_TAMING, n_embed=16, embed_dim=4, disc_ndf=8, disc_layers=2)
    args.update(kw)
    return torch, tt.TwinTamingVQModel(**args)


def test_convert_taming_state_dict_maps_every_key_and_decodes_the_same(tmp_path):
    from mmu.tokenizers import convert_taming_state_dict
    torch, twin = _taming_twin()
    sd = twin.state_dict()
    # the twin's keys are exactly taming's (written out from taming's constructors)
    assert sorted(sd) == sorted(_taming_vqmodel_keys(**_TAMING, disc_layers=2))
    conv = convert_taming_state_dict(sd, resolution=16)
    assert conv.unmapped == {}
    c = conv.config
    assert (c["ch"], c["ch_mult"], c["num_res_blocks"], c["attn_resolutions"], c["z_channels"], c["embed_dim"],
            c["codebook_size"], c["in_channels"], c["out_channels"]) == (32, [1, 2], 1, [8], 8, 4, 16, 3, None)
    assert (c["disc_ndf"], c["disc_layers"], c["disc_norm"], c["use_discriminator"]) == (8, 2, "batch", True)
    assert c["quantizer_kwargs"] == {"commitment_weight": 1.0, "codebook_weight": 0.25}   # taming's legacy loss
    np.testing.assert_array_equal(conv.state_dict["quantize.embed"][0], sd["quantize.embedding.weight"].numpy())
    np.testing.assert_array_equal(conv.state_dict["discriminator.main.3.running_var"],
                                  sd["loss.discriminator.main.3.running_var"].numpy())
    assert sorted(conv.lpips_state_dict) == sorted(k[len("loss.perceptual_loss."):] for k in sd
                                                   if k.startswith("loss.perceptual_loss.net")
                                                   or k.startswith("loss.perceptual_loss.lin"))

    lp = str(tmp_path / "lpips_vgg.safetensors")
    model = VQGAN.from_taming_state_dict(sd, resolution=16, lpips_weights=lp)
    assert model.config.lpips_weights == lp and model.config.perceptual_weight == 1.0
    # every mmu tensor came from the checkpoint (the quantizer's usage buffers aside)
    msd = model.state_dict()
    for k, v in sd.items():
        if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")):
            np.testing.assert_array_equal(msd[k].numpy(), v.numpy(), err_msg=k)
        elif k.startswith("loss.discriminator."):
            np.testing.assert_array_equal(msd["discriminator." + k[19:]].numpy(), v.numpy(), err_msg=k)
    # the LPIPS file holds taming's VGG and lin weights under mmu's LPIPS names
    lpips = model.lpips()
    np.testing.assert_array_equal(lpips.net.features[28].weight.numpy(),
                                  sd["loss.perceptual_loss.net.slice5.28.weight"].numpy())
    np.testing.assert_array_equal(lpips.lin2.weight.numpy(), sd["loss.perceptual_loss.lin2.model.1.weight"].numpy())

    # the same codes and the same decoded images as taming's forward
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    model.eval()
    codes = model.encode(x)
    np.testing.assert_array_equal(codes, twin.encode_codes(torch.from_numpy(x)).numpy())
    rng = np.random.default_rng(1)
    some = rng.integers(0, 16, (2, 8, 8))
    want = twin.decode_code(torch.from_numpy(some)).numpy()
    got = model.decode(some)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the discriminator too
    with torch.no_grad():
        d_want = twin.loss.discriminator(torch.from_numpy(x)).numpy()
    model.discriminator.eval()
    with mmu.no_grad():
        d_got = model.discriminator(x).numpy()
    np.testing.assert_allclose(d_got, d_want, rtol=1e-4, atol=1e-5 * np.abs(d_want).max())


def test_convert_taming_actnorm_legacy_and_lpips_choices():
    from mmu.tokenizers import convert_taming_state_dict
    torch, twin = _taming_twin(use_actnorm=True, disc_layers=1)
    sd = {k: v.numpy() for k, v in twin.state_dict().items()}     # NumPy arrays work as well as tensors
    assert sorted(sd) == sorted(_taming_vqmodel_keys(**_TAMING, disc_layers=1, actnorm=True))
    assert sd["loss.discriminator.main.3.initialized"].dtype == np.uint8
    conv = convert_taming_state_dict(sd, resolution=16, legacy=False)
    assert conv.config["disc_norm"] == "actnorm" and conv.config["disc_layers"] == 1
    assert conv.config["quantizer_kwargs"] == {}
    assert conv.state_dict["discriminator.main.3.initialized"].dtype == np.int64
    # without lpips_weights: no perceptual term, and a warning that says so
    with pytest.warns(UserWarning, match="perceptual_weight is 0"):
        m = VQGAN.from_taming_state_dict(sd, resolution=16, disc_start=1000)
    assert m.config.perceptual_weight == 0.0 and m.config.disc_start == 1000
    assert m.discriminator.norm == "actnorm" and int(m.discriminator.main[3].initialized.numpy()) == 1
    q = m.quantize
    assert (q.commitment_weight, q.codebook_weight) == (1.0, 0.25)
    # a checkpoint without the loss modules (e.g. an inference export): no discriminator, no warning
    bare = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m2 = VQGAN.from_taming_state_dict(bare, resolution=16)
    assert m2.discriminator is None
    # the resolution decides attn_resolutions (taming's configs: 256 -> attention at 128 px here)
    assert convert_taming_state_dict(bare).config["attn_resolutions"] == [128]


def test_convert_taming_unmapped_keys_are_reported():
    from mmu.tokenizers import convert_taming_state_dict
    torch, twin = _taming_twin()
    sd = {k: v.numpy() for k, v in twin.state_dict().items() if not k.startswith("loss.perceptual")}
    extra = dict(sd)
    extra["quantize.used"] = np.arange(16)
    extra["colorize"] = np.zeros((3, 5, 1, 1), np.float32)
    extra["loss.logvar"] = np.zeros((), np.float32)
    extra["encoder.bogus.weight"] = np.zeros(2, np.float32)   # looks like a module, is not one
    with pytest.raises(ValueError) as e:
        convert_taming_state_dict(extra, resolution=16)
    msg = str(e.value)
    assert "4 key(s)" in msg and "quantize.used: VectorQuantizer2(remap" in msg and "colorize" in msg
    assert "loss.logvar" in msg and "strict=False" in msg and "encoder.bogus.weight: no such tensor" in msg
    conv = convert_taming_state_dict(extra, resolution=16, strict=False)
    assert sorted(conv.unmapped) == ["colorize", "encoder.bogus.weight", "loss.logvar", "quantize.used"]
    assert "encoder.bogus.weight" not in conv.state_dict
    m = VQGAN.from_taming_state_dict(extra, resolution=16, strict=False)   # the rest loads
    np.testing.assert_array_equal(m.quantize.embed.numpy()[0], sd["quantize.embedding.weight"])
    with pytest.raises(ValueError, match=r"lacks 1 tensor.*decoder.conv_out.bias"):
        convert_taming_state_dict({k: v for k, v in sd.items() if k != "decoder.conv_out.bias"}, resolution=16)
    wrong = dict(sd)
    wrong["decoder.mid.attn_1.q.weight"] = np.zeros((64, 64, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"decoder.mid.attn_1.q.weight has shape \(64, 64, 3, 3\)"):
        convert_taming_state_dict(wrong, resolution=16)
    # a GumbelVQ checkpoint: the quantizer cannot map, and the message says why
    gumbel = {k: v for k, v in sd.items() if k != "quantize.embedding.weight"}
    gumbel["quantize.proj.weight"] = np.zeros((16, 8, 1, 1), np.float32)
    gumbel["quantize.embed.weight"] = np.zeros((16, 4), np.float32)
    with pytest.raises(ValueError, match="GumbelQuantize"):
        convert_taming_state_dict(gumbel, resolution=16, strict=False)
    # double_z (a KL autoencoder), missing pieces, bad arguments
    kl = dict(sd)
    kl["encoder.conv_out.weight"] = np.zeros((16, 64, 3, 3), np.float32)
    with pytest.raises(ValueError, match="double_z"):
        convert_taming_state_dict(kl, resolution=16)
    with pytest.raises(ValueError, match=r"missing \['quant_conv.weight'\]"):
        convert_taming_state_dict({k: v for k, v in sd.items() if k != "quant_conv.weight"}, resolution=16)
    with pytest.raises(ValueError, match="resolution"):
        convert_taming_state_dict(sd, resolution=0)
    with pytest.raises(ValueError, match="multiple of the downsample"):
        convert_taming_state_dict(sd, resolution=17)
    with pytest.raises(TypeError, match="dict"):
        convert_taming_state_dict([1, 2])
    with pytest.raises(ValueError, match="no loss.perceptual_loss"):
        VQGAN.from_taming_state_dict(sd, resolution=16, lpips_weights="x.safetensors")
    # taming's LPIPS constants are checked against the ones mmu's LPIPS has built in
    full = {k: v.numpy() for k, v in twin.state_dict().items()}
    full["loss.perceptual_loss.scaling_layer.shift"] = full["loss.perceptual_loss.scaling_layer.shift"] + 0.01
    with pytest.raises(ValueError, match="scaling_layer.shift.*not the LPIPS constant"):
        convert_taming_state_dict(full, resolution=16)
