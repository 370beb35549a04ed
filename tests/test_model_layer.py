"""The models layer (issue 12): tokenizers of every latent layout (2-D grid, 1-D sequence, 3-D grid),
the Trainer's training_step protocol for models that are not tokenizers, one PSNR / usage /
perplexity on mmu.metrics, and the nested JSON config codec (mmu.get_config / mmu.from_config)."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest

import mmu
import mmu.nn as nn
import mmu.nn.functional as F
from mmu import compare as C
from mmu import metrics
from mmu.tokenizers import VQGAN, VQVAE, Tokenizer, TokenizerOutput, VQVAEConfig, make_quantizer
from mmu.tokenizers.config import _Config
from mmu.train import Trainer, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------- tokenizers of the other layouts
def _mse_forward(tok, images, step):
    """The test tokenizers' loss: mse(recon, images) + the quantizer's loss."""
    tok._step(step)
    x = tok._check_images(images, f"{type(tok).__name__}.forward")
    zq, codes, qloss, stats = tok._quantize(tok._encode_latent(x))
    recon = tok._decode_latent(zq)
    rec = F.mse_loss(recon, x)
    return TokenizerOutput(recon=recon, loss=rec + qloss, losses={"rec": rec.item(), "quant": qloss.item()},
                           codes=codes, stats=stats)


@dataclasses.dataclass
class SeqConfig(_Config):
    """A 1-D tokenizer: conv (stride 2) -> flatten -> linear to K tokens of embed_dim channels."""
    in_channels: int = 1
    resolution: int = 8
    hidden: int = 6
    embed_dim: int = 4
    num_latent_tokens: int = 5
    codebook_size: int = 16
    quantizer: str = "vq"
    quantizer_kwargs: dict = dataclasses.field(default_factory=dict)
    beta: float = 0.25


class SeqTokenizer(Tokenizer):
    """images (B, C, 8, 8) -> conv -> (B, hidden * 16) -> linear -> (B, D, K) -> quantize -> linear -> deconv."""
    config_class = SeqConfig
    latent_layout = "1d"

    def _build_model(self):
        c = self.config
        s = c.resolution // 2
        self.encoder = nn.Conv2d(c.in_channels, c.hidden, 3, stride=2, padding=1)
        self.to_tokens = nn.Linear(c.hidden * s * s, c.embed_dim * c.num_latent_tokens)
        self.quantize = make_quantizer(c.quantizer, c.embed_dim, c.codebook_size, c.beta, c.quantizer_kwargs)
        self.from_tokens = nn.Linear(c.embed_dim * c.num_latent_tokens, c.hidden * s * s)
        self.decoder = nn.ConvTranspose2d(c.hidden, c.in_channels, 4, stride=2, padding=1)

    @property
    def num_latent_tokens(self):
        return self.config.num_latent_tokens

    def _encode_latent(self, x):
        c = self.config
        h = F.relu(self.encoder(x))
        return self.to_tokens(h.reshape(x.shape[0], -1)).reshape(x.shape[0], c.embed_dim, c.num_latent_tokens)

    def _decode_latent(self, zq):
        c = self.config
        s = c.resolution // 2
        h = F.relu(self.from_tokens(zq.reshape(zq.shape[0], -1)))
        return self.decoder(h.reshape(zq.shape[0], c.hidden, s, s))

    def forward(self, images, step=0):
        return _mse_forward(self, images, step)


@dataclasses.dataclass
class ClipConfig(_Config):
    """A 3-D tokenizer: Conv3d (2, 3, 3) stride 2 on clips of 2 frames -> quantize -> ConvTranspose3d."""
    in_channels: int = 1
    resolution: int = 8
    num_frames: int = 2
    embed_dim: int = 4
    codebook_size: int = 16
    quantizer: str = "vq"
    quantizer_kwargs: dict = dataclasses.field(default_factory=dict)
    beta: float = 0.25


class ClipTokenizer(Tokenizer):
    config_class = ClipConfig
    latent_layout = "3d"

    def _build_model(self):
        c = self.config
        self.encoder = nn.Conv3d(c.in_channels, c.embed_dim, (2, 3, 3), stride=2, padding=(0, 1, 1))
        self.quantize = make_quantizer(c.quantizer, c.embed_dim, c.codebook_size, c.beta, c.quantizer_kwargs)
        self.decoder = nn.ConvTranspose3d(c.embed_dim, c.in_channels, (2, 4, 4), stride=2, padding=(0, 1, 1))

    @property
    def downsample_factor(self):
        return 2

    @property
    def temporal_downsample_factor(self):
        return 2

    def _encode_latent(self, x):
        return self.encoder(x)

    def _decode_latent(self, zq):
        return self.decoder(zq)

    def forward(self, images, step=0):
        return _mse_forward(self, images, step)


def _images(n=12, s=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1)
    out = np.empty((n, 1, s, s), np.float32)
    for i in range(n):
        cx, cy, w = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.4)
        out[i, 0] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / w ** 2) * 2 - 1
    return out


def _clips(n=12, seed=0):
    a = _images(n, seed=seed)
    return np.ascontiguousarray(np.stack([a, np.roll(a, 1, axis=-1)], axis=2))  # (n, 1, 2, 8, 8)


LAYOUTS = [
    ("2d", lambda q, kw: VQVAE(in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=0, downsample=2,
                               embed_dim=4, codebook_size=16, quantizer=q, quantizer_kwargs=kw, resolution=8),
     _images, (4, 4)),
    ("1d", lambda q, kw: SeqTokenizer(quantizer=q, quantizer_kwargs=kw), _images, (5,)),
    ("3d", lambda q, kw: ClipTokenizer(quantizer=q, quantizer_kwargs=kw), _clips, (1, 4, 4)),
]
QUANTIZERS = [("vq", {}), ("fsq", {"levels": [4, 4]}), ("rvq", {"num_quantizers": 2, "kmeans_init": False})]


@pytest.mark.parametrize("quantizer,kw", QUANTIZERS, ids=[q for q, _ in QUANTIZERS])
@pytest.mark.parametrize("layout,make,data,shape", LAYOUTS, ids=[l[0] for l in LAYOUTS])
def test_every_layout_encodes_and_decodes(layout, make, data, shape, quantizer, kw):
    mmu.manual_seed(0)
    tok = make(quantizer, kw)
    x = data(6)
    levels = (2,) if quantizer == "rvq" else ()
    assert tok.latent_layout == layout and tok.latent_shape == shape
    assert {"2d": "downsample=2", "1d": "tokens=5", "3d": "temporal_downsample=2"}[layout] in repr(tok)
    assert tok.tokens_per_image == int(np.prod(shape)) * (levels[0] if levels else 1)
    codes = tok.encode(x)
    assert codes.dtype == np.int64 and codes.shape == (6,) + shape + levels
    assert codes.min() >= 0 and codes.max() < tok.codebook_size
    # batching does not change the codes; decode(encode(x)) is reconstruct(x)
    np.testing.assert_array_equal(tok.encode(x, batch_size=4), codes)
    dec = tok.decode(codes)
    assert dec.dtype == np.float32 and dec.shape == x.shape
    np.testing.assert_allclose(dec, tok.reconstruct(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tok.decode(codes, batch_size=4), dec, rtol=1e-6, atol=1e-6)
    # the codes of one position decode through the same code vectors: decode of a batch of one image
    np.testing.assert_allclose(tok.decode(codes[2:3]), dec[2:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout,make,data,shape", LAYOUTS, ids=[l[0] for l in LAYOUTS])
def test_every_layout_checks_its_inputs(layout, make, data, shape):
    tok = make("vq", {})
    name = type(tok).__name__
    good = tok.encode(data(2))
    with pytest.raises(ValueError, match=rf"{name}\.decode: codes must be \(B, " + {"2d": "h, w", "1d": "K",
                                                                                   "3d": "t, h, w"}[layout]):
        tok.decode(good[..., None])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        tok.decode(np.full_like(good, 16))
    if layout == "3d":
        with pytest.raises(ValueError, match=r"ClipTokenizer\.encode: clips must be \(B, C, T, H, W\)"):
            tok.encode(_images(2))
        with pytest.raises(ValueError, match="multiple of the temporal downsample factor 2, got 3"):
            tok.encode(np.zeros((1, 1, 3, 8, 8), np.float32))
    else:
        with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\)"):
            tok.encode(_clips(2))
    if layout == "1d":
        with pytest.raises(ValueError, match=r"codes must be \(B, K\) with K = 5"):
            tok.decode(good[:, :4])
        with pytest.raises(ValueError, match="takes 8x8 images"):
            tok.encode(np.zeros((1, 1, 16, 16), np.float32))


@pytest.mark.parametrize("layout,make,data,shape", LAYOUTS[1:], ids=[l[0] for l in LAYOUTS[1:]])
def test_every_layout_trains_saves_and_loads(layout, make, data, shape, tmp_path):
    mmu.manual_seed(0)
    tok = make("ema_vq", {})
    x = data(16)
    trainer = Trainer(tok, x, TrainConfig(steps=30, batch_size=8, lr=1e-2, log_every=1, progress=False,
                                          eval_every=30, sample_every=30, sample_dir=str(tmp_path / "s")),
                      eval_data=x)
    hist = trainer.fit()
    loss = hist["loss"]
    assert np.mean(loss[-5:]) < 0.6 * np.mean(loss[:3]), loss
    recs = [r for r in hist.records if "psnr" in r]
    assert recs and all(0.0 <= r["usage"] <= 1.0 and r["perplexity"] >= 1.0 for r in recs)
    ev = [r for r in hist.records if "eval_psnr" in r][-1]
    rec = tok.reconstruct(x)
    assert ev["eval_psnr"] == pytest.approx(metrics.psnr(rec, x), rel=1e-6)
    assert os.path.isfile(tmp_path / "s" / "step_00000030.png")
    tok.save_pretrained(str(tmp_path / "m"))
    back = Tokenizer.from_pretrained(str(tmp_path / "m"))
    assert type(back) is type(tok) and back.config == tok.config
    np.testing.assert_array_equal(back.encode(x), tok.encode(x))
    np.testing.assert_array_equal(back.decode(tok.encode(x)), tok.decode(tok.encode(x)))


def test_compare_runs_tokenizers_of_every_layout(tmp_path, monkeypatch):
    def seq_entry(channels, size, fast):
        return C.Entry("seq", "1-D tokens", SeqTokenizer, dict(in_channels=channels, resolution=size))

    def clip_entry(channels, size, fast):
        return C.Entry("clip", "3-D clips", ClipTokenizer, dict(in_channels=channels, resolution=size))
    monkeypatch.setitem(C.REGISTRY, "seq", seq_entry)
    monkeypatch.setitem(C.REGISTRY, "clip", clip_entry)
    rows = C.compare(["seq", "clip", "vqvae-vq"], size=8, fast=True, out_dir=str(tmp_path), progress=False)
    by = {r["name"]: r for r in rows}
    assert by["seq"]["tokens_per_image"] == 5 and by["seq"]["tokenizer"] == "SeqTokenizer"
    assert by["clip"]["tokens_per_image"] == 1 * 4 * 4  # per still clip of 2 frames (t = 1)
    assert by["vqvae-vq"]["tokens_per_image"] == 4
    for r in rows:
        assert math.isfinite(r["psnr"]) and -1.0 <= r["ssim"] <= 1.0 and 0.0 < r["usage"] <= 1.0
        assert r["bits_per_image"] == pytest.approx(r["tokens_per_image"] * math.log2(r["codebook_size"]))
    for f in ("report.md", "report.csv", "reconstructions.png", "usage.png"):
        assert os.path.getsize(tmp_path / f) > 0


def test_compare_evaluate_scores_clips_per_clip():
    mmu.manual_seed(0)
    tok = ClipTokenizer()
    clips = _clips(4)
    m, codes, recon = C.evaluate(tok, clips, throughput_repeat=1)
    assert codes.shape == (4, 1, 4, 4) and recon.shape == clips.shape
    per_clip = [10 * np.log10(4.0 / np.mean((recon[i].astype(np.float64) - clips[i]) ** 2)) for i in range(4)]
    assert m["psnr"] == pytest.approx(np.mean(per_clip), rel=1e-9)
    frames = lambda a: a.transpose(0, 2, 1, 3, 4).reshape(-1, 1, 8, 8)  # noqa: E731
    assert m["ssim"] == pytest.approx(metrics.ssim(frames(recon), frames(clips)), rel=1e-9)
    assert m["tokens_per_image"] == 16
    # still clips of images (what compare and the CLI give a 3-D tokenizer)
    assert C.as_clips(tok, _images(3)).shape == (3, 1, 2, 8, 8)


@pytest.mark.parametrize("cls,data,code_shape", [(SeqTokenizer, _images, (5,)), (ClipTokenizer, None, (1, 4, 4))])
def test_cli_encode_decode_every_layout(cls, data, code_shape, tmp_path, capsys):
    from PIL import Image

    from mmu import __main__ as cli
    mmu.manual_seed(0)
    tok = cls()
    tok.save_pretrained(str(tmp_path / "model"))
    os.makedirs(tmp_path / "imgs")
    for i, im in enumerate(_images(3)):
        Image.fromarray(((im[0] + 1) * 127.5).astype(np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    assert cli.main(["encode", "--model", str(tmp_path / "model"), str(tmp_path / "imgs"),
                     "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (3,) + code_shape and codes.dtype == np.int64
    assert cli.main(["decode", "--model", str(tmp_path / "model"), str(tmp_path / "codes.npy"),
                     "--out", str(tmp_path / "dec")]) == 0
    files = sorted(os.listdir(tmp_path / "dec"))
    if cls is ClipTokenizer:
        assert files == [f"{i:06d}_{t:03d}.png" for i in range(3) for t in range(2)]
    else:
        assert files == [f"{i:06d}.png" for i in range(3)]
    with Image.open(tmp_path / "dec" / files[0]) as im:
        assert im.size == (8, 8)
    dec = tok.decode(codes)
    first = np.asarray(Image.open(tmp_path / "dec" / files[0]), np.float32)
    want = np.clip((dec[0, 0, 0] if dec.ndim == 5 else dec[0, 0]) * 127.5 + 127.5 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(first, want)


# ---------------------------------------------------------------------- the Trainer protocol
class TinyLM(nn.Module):
    """A bigram language model (embedding -> linear over the vocabulary): next-token loss on (B, L) ids."""

    def __init__(self, vocab_size=12, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, vocab_size)
        self.vocab_size = vocab_size

    def forward(self, ids):
        return self.head(self.embed(ids))

    def training_step(self, batch, step):
        ids = mmu.tensor(np.asarray(batch, np.int64))
        B, L = ids.shape
        logits = self(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(B * (L - 1), self.vocab_size), ids[:, 1:].reshape(-1))
        return loss, {"ppl": math.exp(min(loss.item(), 50.0)), "ce": loss.detach()}


class Regressor(nn.Module):
    """An MLP regressing y from x; batches are dicts {"x", "y"}; evaluate_step gives the mse."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, step):
        loss = F.mse_loss(self.net(mmu.tensor(batch["x"])), mmu.tensor(batch["y"]))
        return loss, {}

    def evaluate_step(self, batch):
        pred = self.net(mmu.tensor(batch["x"])).numpy()
        return {"mse": float(np.mean((pred - batch["y"]) ** 2))}


def _token_data(n=64, length=9, vocab=12, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.integers(0, vocab, size=(n, 1))
    return ((start + np.arange(length)[None]) % vocab).astype(np.int64)  # each token is the previous + 1


def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_trainer_trains_a_language_model_on_token_ids_and_resumes_bit_identically(tmp_path):
    data = _token_data()
    cfg = dict(steps=40, batch_size=8, lr=3e-2, log_every=1, progress=False, ema_decay=0.9, grad_clip=1.0,
               grad_accum=2, eval_every=20)
    mmu.manual_seed(0)
    full = TinyLM()
    t = Trainer(full, data, TrainConfig(**cfg), eval_data=data[:16])
    hist = t.fit()
    losses = hist["loss"]
    assert losses[-1] < 0.3 * losses[0], losses
    rec = hist.records[0]
    assert "psnr" not in rec and "usage" not in rec and set(rec) >= {"loss", "ppl", "ce", "lr", "grad_norm"}
    # logs are averaged over the grad_accum micro-batches: ce (a 0-d Tensor) is the loss, ppl a mean of exps
    assert rec["ce"] == pytest.approx(rec["loss"], rel=1e-6) and rec["ppl"] >= math.exp(rec["ce"]) * (1 - 1e-6)
    ev = [r for r in hist.records if "eval_loss" in r]
    assert [r["step"] for r in ev] == [20, 40] and ev[-1]["eval_loss"] < ev[0]["eval_loss"]

    mmu.manual_seed(0)
    first = TinyLM()
    t1 = Trainer(first, data, TrainConfig(**dict(cfg, ckpt_every=15, ckpt_dir=str(tmp_path))), eval_data=data[:16])
    t1.fit(15)
    mmu.manual_seed(123)  # a fresh process: other weights, another RNG state
    second = TinyLM()
    t2 = Trainer.resume(str(tmp_path), second, data, TrainConfig(**dict(cfg, ckpt_every=15, ckpt_dir=str(tmp_path))),
                        eval_data=data[:16])
    assert t2.step == 15
    t2.fit()
    for k, v in _params(full).items():
        np.testing.assert_array_equal(_params(second)[k], v, err_msg=k)
    np.testing.assert_array_equal(t2.history["loss"], hist["loss"])


def test_trainer_takes_a_dict_of_arrays_and_an_evaluate_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    mmu.manual_seed(0)
    model = Regressor()
    t = Trainer(model, {"x": x, "y": y}, TrainConfig(steps=60, batch_size=16, lr=2e-2, log_every=10,
                                                      eval_every=60, progress=False),
                eval_data={"x": x, "y": y})
    before = t.evaluate()["eval_mse"]
    hist = t.fit()
    after = [r for r in hist.records if "eval_mse" in r][-1]["eval_mse"]
    assert after < 0.2 * before
    # the mean of evaluate_step over the batches of 16
    pred = model.net(mmu.tensor(x)).numpy()
    assert after == pytest.approx(np.mean([np.mean((pred[i:i + 16] - y[i:i + 16]) ** 2) for i in (0, 16, 32)]),
                                  rel=1e-5)
    with pytest.raises(ValueError, match="same length"):
        Trainer(Regressor(), {"x": x, "y": y[:5]}, TrainConfig(steps=1, batch_size=4, progress=False))


def test_trainer_takes_an_iterable_of_batches_and_a_list_resumes(tmp_path):
    data = _token_data(32)
    batches = [data[i:i + 8] for i in range(0, 32, 8)]
    cfg = dict(steps=10, batch_size=8, lr=3e-2, log_every=1, progress=False)
    mmu.manual_seed(0)
    a = TinyLM()
    Trainer(a, batches, TrainConfig(**cfg)).fit()
    mmu.manual_seed(0)
    b = TinyLM()
    t = Trainer(b, batches, TrainConfig(**dict(cfg, ckpt_every=7, ckpt_dir=str(tmp_path))))
    t.fit(7)
    mmu.manual_seed(0)
    c = TinyLM()
    Trainer.resume(str(tmp_path), c, batches, TrainConfig(**dict(cfg, ckpt_every=7, ckpt_dir=str(tmp_path)))).fit()
    for k, v in _params(a).items():
        np.testing.assert_array_equal(_params(c)[k], v, err_msg=k)
    # a generator trains but cannot be resumed
    mmu.manual_seed(0)
    d = TinyLM()
    Trainer(d, (batches[i % 4] for i in range(10)), TrainConfig(**cfg)).fit()
    for k, v in _params(a).items():
        np.testing.assert_array_equal(_params(d)[k], v, err_msg=k)
    with pytest.raises(ValueError, match="one-shot iterator"):
        Trainer.resume(str(tmp_path), TinyLM(), iter(batches), TrainConfig(**dict(cfg, ckpt_every=7,
                                                                                  ckpt_dir=str(tmp_path))))


def test_training_step_protocol_errors():
    class NoTuple(TinyLM):
        def training_step(self, batch, step):
            return super().training_step(batch, step)[0]

    class BadLog(TinyLM):
        def training_step(self, batch, step):
            return super().training_step(batch, step)[0], {"x": "nope"}
    for cls, match in ((NoTuple, r"must return \(loss, logs dict\)"), (BadLog, "logged term 'x'")):
        mmu.manual_seed(0)
        with pytest.raises(TypeError, match=match):
            Trainer(cls(), _token_data(16), TrainConfig(steps=1, batch_size=8, progress=False)).fit()


class _Legacy(nn.Module):
    """A tokenizer behind the older protocol (forward + discriminator_loss, no training_step)."""

    def __init__(self, tok):
        super().__init__()
        self.m = tok
        self.discriminator = tok.discriminator
        self.disc_start = tok.config.disc_start if hasattr(tok.config, "disc_start") else None
        self.codebook_size = tok.codebook_size

    def generator_parameters(self):
        return self.m.generator_parameters()

    def forward(self, images, step=0):
        return self.m(images, step)

    def discriminator_loss(self, images, recon, step):
        return self.m.discriminator_loss(images, recon, step)


@pytest.mark.parametrize("kind", ["vqvae", "vqgan"])
def test_tokenizer_training_step_gives_the_numbers_of_the_forward_protocol(kind):
    """Tokenizers train through training_step / discriminator_step with the numbers of the older
    forward / discriminator_loss protocol: the same weights bit for bit and the same history."""
    def make():
        mmu.manual_seed(0)
        if kind == "vqvae":
            return VQVAE(in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=1, downsample=2,
                         embed_dim=4, codebook_size=16, quantizer="ema_vq", resolution=8)
        return VQGAN(in_channels=1, ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], z_channels=4,
                     embed_dim=4, resolution=8, norm_groups=4, codebook_size=16, perceptual_weight=0.0,
                     disc_start=2, disc_ndf=4, disc_layers=1)
    x = _images(16)
    cfg = TrainConfig(steps=5, batch_size=4, lr=1e-2, log_every=1, grad_accum=2, progress=False)
    new, old = make(), make()
    h_new = Trainer(new, x, cfg).fit()
    h_old = Trainer(_Legacy(old), x, cfg).fit()
    for k, v in _params(old).items():
        np.testing.assert_array_equal(_params(new)[k], v, err_msg=k)
    assert [{k: v for k, v in r.items() if k != "time"} for r in h_new.records] == \
        [{k: v for k, v in r.items() if k != "time"} for r in h_old.records]
    if kind == "vqgan":
        assert "d_loss" in h_new.records[-1] and "d_loss" not in h_new.records[0]


def test_tokenizer_discriminator_step_without_a_kept_batch():
    mmu.manual_seed(0)
    tok = VQGAN(in_channels=1, ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], z_channels=4,
                embed_dim=4, resolution=8, norm_groups=4, codebook_size=16, perceptual_weight=0.0, disc_ndf=4,
                disc_layers=1)
    x = mmu.tensor(_images(2))
    d_loss, logs = tok.discriminator_step(x, 0)  # recomputes the reconstruction
    with mmu.no_grad():
        recon = tok._reconstruct(x)
    want, _ = tok.discriminator_loss(x, recon, 0)
    assert d_loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert VQVAE(in_channels=1, resolution=8, hidden_channels=4, res_channels=4, downsample=2,
                 embed_dim=4, codebook_size=8).discriminator_step(x, 0) is None


# ---------------------------------------------------------------------- one PSNR, one usage / perplexity
def test_one_psnr_and_one_usage_perplexity():
    from mmu.quantizers import codebook_stats
    from mmu.train.trainer import _code_stats, batch_psnr
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (2, 5, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(batch_psnr(a, b), metrics.psnr(a, b, reduction="none"))
    mse = ((a.astype(np.float64) - b) ** 2).reshape(5, -1).mean(1)
    np.testing.assert_allclose(batch_psnr(a, b), 10 * np.log10(4.0 / mse), rtol=1e-12)
    codes = rng.integers(0, 6, size=200)
    counts = np.bincount(codes, minlength=8)
    p = counts[counts > 0] / counts.sum()
    ppl = float(np.exp(-(p * np.log(p)).sum()))
    st = codebook_stats(codes, 8)
    assert _code_stats(codes, 8) == (metrics.codebook_usage(codes, 8), metrics.perplexity(codes, 8)) == (0.75, ppl)
    assert st.perplexity == ppl and st.batch_usage == 0.75
    # clips (B, C, T, H, W): one PSNR per clip, SSIM averaged over the frames
    clips_a, clips_b = rng.uniform(-1, 1, (2, 3, 1, 2, 6, 6))
    np.testing.assert_allclose(metrics.psnr(clips_a, clips_b, reduction="none"),
                               [metrics.psnr(clips_a[i].reshape(1, -1, 6), clips_b[i].reshape(1, -1, 6))
                                for i in range(3)], rtol=1e-12)
    frames = [metrics.ssim(clips_a[:, :, t], clips_b[:, :, t], reduction="none") for t in range(2)]
    np.testing.assert_allclose(metrics.ssim(clips_a, clips_b, reduction="none"), np.mean(frames, axis=0),
                               rtol=1e-12)


def test_no_other_copy_of_the_psnr_and_perplexity_formulas():
    """The formulas live in mmu/metrics only (log10 of an MSE; exp of an entropy)."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mmu")
    hits = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            if not f.endswith(".py") or os.sep + "metrics" + os.sep in path:
                continue
            text = open(path).read()
            if "np.log10(" in text and "mse" in text or "np.exp(-(" in text and "np.log(" in text:
                hits.append(os.path.relpath(path, root))
    assert not hits, hits


# ---------------------------------------------------------------------- the nested config codec
@dataclasses.dataclass
class PairConfig(_Config):
    """A model config that holds its tokenizer's config (a dataclass field) and a plain dict."""
    vocab_size: int = 12
    dim: int = 8
    tokenizer: VQVAEConfig = dataclasses.field(default_factory=lambda: VQVAEConfig(
        in_channels=1, hidden_channels=4, res_channels=4, num_res_blocks=0, downsample=2, embed_dim=4,
        codebook_size=8, resolution=8))
    extra: dict = dataclasses.field(default_factory=lambda: {"schedule": "cosine", "steps": [1, 2]})


class PairModel(nn.Module):
    """A token model over a tokenizer's codes, built from a nested config."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tokenizer = VQVAE(config.tokenizer)
        self.lm = TinyLM(config.tokenizer.codebook_size, config.dim)

    def training_step(self, batch, step):
        return self.lm.training_step(batch, step)


def test_config_codec_round_trips_nested_configs(tmp_path):
    cfg = PairConfig(dim=6, tokenizer=VQVAEConfig(in_channels=1, hidden_channels=4, res_channels=4, num_res_blocks=0,
                                                  downsample=2, embed_dim=4, codebook_size=10, resolution=8,
                                                  quantizer="fsq", quantizer_kwargs={"levels": [5, 2]}))
    d = mmu.get_config(cfg)
    assert json.loads(json.dumps(d)) == d
    assert d["class"].endswith("PairConfig") and d["fields"]["tokenizer"]["__config__"]["fields"]["codebook_size"] == 10
    back = mmu.from_config(d)
    assert back == cfg and isinstance(back.tokenizer, VQVAEConfig)
    assert mmu.config.from_config(mmu.config.get_config(back.tokenizer)) == cfg.tokenizer
    # a module whose constructor takes the nested config: save_pretrained / from_pretrained
    mmu.manual_seed(0)
    model = PairModel(cfg)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = nn.Module.from_pretrained(str(tmp_path / "m"))
    assert type(loaded) is PairModel and loaded.config == cfg and loaded.tokenizer.config == cfg.tokenizer
    for k, v in _params(model).items():
        np.testing.assert_array_equal(_params(loaded)[k], v)
    fresh = mmu.from_config(mmu.get_config(model))
    assert type(fresh) is PairModel and fresh.config == cfg
    # a tokenizer built from a config holding a nested dataclass keeps it (not flattened by asdict)
    tok = VQVAE(cfg.tokenizer)
    assert mmu.from_config(mmu.get_config(tok)).config == cfg.tokenizer
    with pytest.raises(TypeError, match="mmu.get_config: expected"):
        mmu.get_config(3)
    with pytest.raises(ValueError, match="'fields'"):
        mmu.from_config({"class": "x"})
    with pytest.raises(ValueError, match="has no field"):
        mmu.from_config(dict(d, fields=dict(d["fields"], nope=1)))


def test_checkpoint_config_check_names_a_nested_field(tmp_path):
    data = np.random.default_rng(0).integers(0, 8, size=(16, 6)).astype(np.int64)
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-2, progress=False, ckpt_every=2, ckpt_dir=str(tmp_path))
    mmu.manual_seed(0)
    Trainer(PairModel(PairConfig()), data, cfg).fit()
    other = PairConfig()
    other.tokenizer.hidden_channels = 6
    with pytest.raises(ValueError, match=r"model\.config\.tokenizer\.hidden_channels: 4 in the checkpoint, 6 now"):
        Trainer.resume(str(tmp_path), PairModel(other), data, cfg)


def test_models_registry():
    assert mmu.models.get("vqvae") is VQVAE and mmu.models.get("vqgan") is VQGAN
    assert {"vqvae", "dvae", "vqgan"} <= set(mmu.models.available())
    with pytest.raises(KeyError, match="no model named 'nope'"):
        mmu.models.get("nope")
    with pytest.raises(ValueError, match="lower case"):
        mmu.models.register("Bad Name", TinyLM)
    mmu.models.register("tiny_lm_test", TinyLM)
    try:
        assert mmu.models.get("tiny_lm_test") is TinyLM and "tiny_lm_test" in mmu.models.available()
        with pytest.raises(ValueError, match="already"):
            mmu.models.register("tiny_lm_test", Regressor)
    finally:
        mmu.models._REGISTRY.pop("tiny_lm_test")


def test_every_model_folder_registers_its_model():
    """available() lists every mmu/models/<name>/ folder, and get() returns a class for each."""
    for name in mmu.models.available():
        cls = mmu.models.get(name)
        assert isinstance(cls, type) and issubclass(cls, mmu.nn.Module), name
    assert issubclass(mmu.models.get("phi"), mmu.nn.TransformerLM)
    assert issubclass(mmu.models.get("llama"), mmu.nn.TransformerLM)
    assert mmu.models.get("vit").__name__ == "VisionTower"
