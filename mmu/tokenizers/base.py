"""Tokenizer: the base of VQVAE, DVAE and VQGAN (encode / decode / forward / save_pretrained), the
TokenizerOutput record, and the quantizer factory every tokenizer shares.

Images are float32 NCHW in [-1, 1] (clips NCTHW for a 3-D layout); codes are np.int64 with the
tokenizer's latent layout: (B, h, w) for "2d", (B, K) for "1d", (B, t, h, w) for "3d", plus a last
axis of levels for "rvq".
"""
import copy
import math
import numbers
import warnings
from dataclasses import dataclass, field, fields

import numpy as np

import mmu as _mmu
from ..autograd import no_grad
from ..nn import Module
from ..nn.module import _class_path, _encode, _NotSerialisable
from ..quantizers import FSQ, LFQ, ResidualVQ, VectorQuantize, codebook_stats
from ..tensor import Tensor
from .config import QUANTIZERS

__all__ = ["Tokenizer", "TokenizerOutput", "make_quantizer", "fsq_levels_for"]


@dataclass
class TokenizerOutput:
    """What Tokenizer.forward returns.

    recon: Tensor (B, C, H, W) ((B, C, T, H, W) for a 3-D layout), the reconstruction (differentiable);
    loss: 0-d Tensor, the generator's total loss; losses: the breakdown as floats ("rec", "quant",
    "perceptual", "g_adv", "kl", ...: only the terms that apply); codes: np.int64 in the latent layout
    ((B, h, w), (B, K) or (B, t, h, w), plus levels for rvq); stats: the quantizer's
    QuantizerStats (usage, perplexity, dead codes) or None."""
    recon: Tensor
    loss: Tensor
    losses: dict = field(default_factory=dict)
    codes: np.ndarray = None
    stats: object = None


# FSQ levels recommended by Mentzer et al. 2023 (table 1) for about 2^8 ... 2^16 codes
_FSQ_LEVELS = {8: [8, 6, 5], 10: [8, 5, 5, 5], 12: [7, 5, 5, 5, 5], 14: [8, 8, 8, 6, 5], 16: [8, 8, 8, 5, 5, 5]}


def fsq_levels_for(codebook_size):
    """The FSQ paper's recommended levels for the target codebook size nearest (in log2) to codebook_size
    (2^8: [8,6,5], 2^10: [8,5,5,5], 2^12: [7,5,5,5,5], 2^14: [8,8,8,6,5], 2^16: [8,8,8,5,5,5])."""
    bits = math.log2(max(int(codebook_size), 2))
    key = min(_FSQ_LEVELS, key=lambda b: (abs(b - bits), b))
    return list(_FSQ_LEVELS[key])


def make_quantizer(kind, dim, codebook_size, beta=0.25, kwargs=None):
    """The quantizer named `kind` for dim-channel latents (B, dim, h, w), with the tokenizers' defaults
    (each overridable through kwargs):

    "vq": VectorQuantize with a learnable codebook (codebook loss + beta * commitment, VQ-VAE eq. 3);
    "ema_vq": VectorQuantize with EMA codebook (decay 0.99, as the VQ-VAE paper's appendix / zalando's
    pytorch-vq-vae), k-means init and dead-code restart (threshold_ema_dead_code 1) so usage stays high;
    "rvq": ResidualVQ, 4 EMA levels with the same options (RQ-VAE: EMA 0.99, restart);
    "fsq": FSQ with levels fsq_levels_for(codebook_size) (kwargs "levels" to choose), projections dim <-> len(levels);
    "lfq": LFQ with codebook_size (a power of 2) codes, commitment beta, entropy weight 1.0 and inverse
    temperature 10 — not vector-quantize-pytorch's 0.1 and 100: with those, whole bits stay constant on
    small data (mmu compare's vqvae-lfq, 8 bits, 1500 steps, seeds 0 and 1: 8 of 256 codes used and
    21.9 / 21.7 dB; with 1.0 and 10: 256 and 22.5 / 22.6 dB; see help(LFQ))."""
    if kind not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {list(QUANTIZERS)}, got {kind!r}")
    kw = dict(kwargs or {})
    # a codebook_size among the quantizer's keywords wins over the tokenizer's field
    codebook_size = kw.pop("codebook_size", codebook_size)
    if kind in ("vq", "ema_vq", "rvq"):
        if kind == "vq":
            d = dict(learnable_codebook=True, ema_update=False, commitment_weight=beta, codebook_weight=1.0)
        else:
            d = dict(decay=0.99, kmeans_init=True, threshold_ema_dead_code=1.0, commitment_weight=beta)
        if kind == "rvq":
            d["num_quantizers"] = 4
        d.update(kw)
        if kind == "rvq":
            return ResidualVQ(dim, codebook_size=codebook_size, accept_image_fmap=True, **d)
        return VectorQuantize(dim, codebook_size, accept_image_fmap=True, **d)
    if kind == "fsq":
        levels = kw.pop("levels", None) or fsq_levels_for(codebook_size)
        return FSQ(levels, dim=dim, **kw)
    d = dict(commitment_loss_weight=beta, codebook_size=codebook_size, entropy_loss_weight=1.0,
             inv_temperature=10.0)
    d.update(kw)
    return LFQ(dim=dim, **d)


def _resolve_config(cls, config, fields_, owner):
    if config is not None and fields_:
        raise TypeError(f"{owner}: give a config or keyword fields, not both")
    if config is None:
        return cls.from_dict(fields_)
    if isinstance(config, cls):
        # a private copy (later edits of the caller's object do nothing); field by field, not asdict, so a
        # nested config dataclass stays one
        return cls.from_dict({f.name: copy.deepcopy(getattr(config, f.name)) for f in fields(config)})
    if isinstance(config, dict):
        return cls.from_dict(config)
    raise TypeError(f"{owner}: config must be a {cls.__name__} or a dict, got {type(config).__name__}")


def _as_images(images, op):
    if isinstance(images, Tensor):
        if images.dtype != _mmu.float32:
            raise TypeError(f"{op}: images must be float32, got {images.dtype}")
        return images
    arr = np.asarray(images)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{op}: images must be a float array (B, C, H, W), got dtype {arr.dtype}")
    return _mmu.tensor(np.ascontiguousarray(arr, dtype=np.float32))


_LAYOUTS = {"2d": "(h, w)", "1d": "(K,)", "3d": "(t, h, w)"}


class Tokenizer(Module):
    """Base of the image (and video) tokenizers: built from its config dataclass (`Cls(config)`,
    `Cls(**fields)` or `Cls(dict)`), available as `.config`.

    Latent layout (the class attribute `latent_layout`): "2d", a grid of codes (h, w) per image (the
    conv tokenizers; h, w follow the image size); "1d", a sequence of K codes per image (TiTok-like: the
    images must be config.resolution, the subclass defines `num_latent_tokens`); "3d", a grid (t, h, w)
    per clip (B, C, T, H, W) (the subclass defines `temporal_downsample_factor`, default 1, and
    config.num_frames). rvq adds a last axis of levels to the codes.

    Subclasses build `encoder`, `quantize`, `decoder` and implement `_encode_latent(x) -> z` ((B, D, h, w),
    (B, D, K) or (B, D, t, h, w)), `_decode_latent(zq) -> images` and forward(images, step) ->
    TokenizerOutput; the base provides encode / decode / reconstruct, the quantizer plumbing for every
    layout (`_quantize`), input validation, the Trainer protocol (training_step, discriminator_step),
    tokens_per_image, codebook_size, bits_per_token, generator_parameters and save_pretrained /
    from_pretrained (which round-trip the config)."""

    config_class = None
    latent_layout = "2d"

    def __init__(self, config=None, **fields_):
        super().__init__()
        name = type(self).__name__
        cfg = _resolve_config(self.config_class, config, fields_, name)
        object.__setattr__(self, "config", cfg)
        enc = _encode(cfg, f"the {name} config")  # mmu.config's codec: nested configs keep their class
        if not isinstance(enc, _NotSerialisable):
            enc = enc["__config__"]["fields"]
        # recorded as keyword fields: from_pretrained calls Cls(**fields), which rebuilds the same config
        self.__dict__["_config"] = enc if isinstance(enc, _NotSerialisable) else \
            {"class": _class_path(type(self)), "args": {"config": None, "**fields_": enc}}
        self.discriminator = None
        self._build_model()

    def _build_model(self):
        """Subclasses create their layers here from self.config (validated)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ what subclasses describe
    @property
    def downsample_factor(self):
        """Image pixels per code along each side (H / h); each tokenizer defines it."""
        raise NotImplementedError

    @property
    def in_channels(self):
        """Channels of the images (config.in_channels)."""
        return self.config.in_channels

    @property
    def temporal_downsample_factor(self):
        """Frames per code along time (T / t) of a 3-D layout (1 unless the tokenizer says otherwise)."""
        return 1

    @property
    def latent_shape(self):
        """The code layout of one config.resolution image (clip of config.num_frames frames for "3d"):
        (h, w) for "2d", (K,) for "1d", (t, h, w) for "3d" (without the rvq levels)."""
        layout = self.latent_layout
        if layout == "1d":
            return (int(self.num_latent_tokens),)
        r = self.config.resolution // self.downsample_factor
        if layout == "3d":
            return (int(self.config.num_frames) // self.temporal_downsample_factor, r, r)
        return (r, r)

    @property
    def num_levels(self):
        """Codes per latent position: the residual levels for rvq, else 1."""
        return self.quantize.num_quantizers if self.config.quantizer == "rvq" else 1

    @property
    def tokens_per_image(self):
        """Codes per config.resolution image (per clip for a 3-D layout): the product of latent_shape
        (h * w, K or t * h * w), times the number of levels for rvq."""
        return int(np.prod(self.latent_shape)) * int(self.num_levels)

    @property
    def codebook_size(self):
        """The number of codes of the quantizer (per level)."""
        return int(self.quantize.codebook_size)

    @property
    def bits_per_token(self):
        """log2(codebook_size): the information one code carries."""
        return float(math.log2(self.codebook_size))

    def get_last_layer(self):
        """The weight of the decoder's output layer (taming's get_last_layer: where the adaptive GAN weight
        compares the gradients of the reconstruction and adversarial losses)."""
        return self.decoder.last_layer

    def generator_parameters(self):
        """Every trainable parameter except the discriminator's (LPIPS is frozen and not a child)."""
        skip = set()
        if self.discriminator is not None:
            skip = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def discriminator_loss(self, images, recon, step=0):
        """The discriminator's loss on real images and (detached) reconstructions, (d_loss, logs);
        tokenizers without a discriminator raise RuntimeError (VQGAN overrides it).
        """
        raise RuntimeError(f"{type(self).__name__} has no discriminator (check `model.discriminator is None`)")

    # ------------------------------------------------------------------ validation
    def _check_images(self, images, op):
        x = _as_images(images, op)
        layout = self.latent_layout
        if layout not in _LAYOUTS:
            raise ValueError(f"{op}: latent_layout must be one of {list(_LAYOUTS)}, got {layout!r}")
        if layout == "3d":
            if x.ndim != 5:
                raise ValueError(f"{op}: clips must be (B, C, T, H, W), got shape {tuple(x.shape)}")
            T, ft = x.shape[2], self.temporal_downsample_factor
            if T == 0 or T % ft:
                raise ValueError(f"{op}: the number of frames must be a positive multiple of the temporal "
                                 f"downsample factor {ft}, got {T} (shape {tuple(x.shape)})")
        elif x.ndim != 4:
            raise ValueError(f"{op}: images must be (B, C, H, W), got shape {tuple(x.shape)}")
        # a 1-D tokenizer takes one image size (its K tokens come from a fixed-size flattening or patch grid)
        f = 1 if layout == "1d" else self.downsample_factor
        B, C, H, W = (x.shape[0], x.shape[1]) + tuple(x.shape[-2:])
        if layout == "1d" and (H, W) != (self.config.resolution,) * 2:
            raise ValueError(f"{op}: a 1-D tokenizer takes {self.config.resolution}x{self.config.resolution} images "
                             f"(config.resolution), got shape {tuple(x.shape)}")
        if C != self.in_channels:
            raise ValueError(f"{op}: expected {self.in_channels} channels, got images of shape {tuple(x.shape)}")
        if B == 0:
            raise ValueError(f"{op}: empty batch (shape {tuple(x.shape)})")
        if H % f or W % f or H == 0 or W == 0:
            raise ValueError(f"{op}: height and width must be positive multiples of the downsample factor {f}, "
                             f"got {H}x{W}")
        v = x.detach().numpy()
        if not np.isfinite(v).all():
            raise ValueError(f"{op}: images contain NaN or inf")
        lo, hi = float(v.min()), float(v.max())
        if lo < -1.05 or hi > 1.05:
            warnings.warn(f"{op}: images should lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}] "
                          "(scale uint8 images by x / 127.5 - 1)", stacklevel=3)
        return x

    def _check_codes(self, codes, op):
        if isinstance(codes, Tensor):
            codes = codes.numpy()
        a = np.asarray(codes)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{op}: codes must be integers (np.int64), got dtype {a.dtype}")
        rvq = self.config.quantizer == "rvq"
        layout = self.latent_layout
        dims = {"2d": "h, w", "1d": "K", "3d": "t, h, w"}[layout]
        want = 1 + len(dims.split(",")) + int(rvq)
        bad = a.ndim != want or (rvq and a.shape[-1] != self.num_levels) or a.shape[0] == 0 or \
            (layout == "1d" and a.shape[1] != self.latent_shape[0])
        if bad:
            shape = f"(B, {dims}, levels)" if rvq else f"(B, {dims})"
            raise ValueError(f"{op}: codes must be {shape}" + (f" with levels = {self.num_levels}" if rvq else "")
                             + (f" with K = {self.latent_shape[0]}" if layout == "1d" else "")
                             + f", got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= self.codebook_size):
            raise ValueError(f"{op}: codes must lie in [0, {self.codebook_size}), got range [{a.min()}, {a.max()}]")
        return _mmu.tensor(np.ascontiguousarray(a, dtype=np.int64))

    # ------------------------------------------------------------------ quantizer plumbing
    def _quantize(self, z, **kw):
        """z (B, D, h, w) / (B, D, K) / (B, D, t, h, w) -> (zq of z's shape, codes np.int64 in the latent
        layout, loss 0-d Tensor, QuantizerStats). The quantizers work on image feature maps and per
        position, so a 1-D latent is quantized as a (1, K) map and a 3-D one as (t, h * w) (views)."""
        shape = tuple(z.shape)
        if len(shape) == 3:
            z = z.reshape(shape[0], shape[1], 1, shape[2])
        elif len(shape) == 5:
            z = z.reshape(shape[0], shape[1], shape[2], shape[3] * shape[4])
        zq, idx, loss = self.quantize(z, **kw)
        codes = idx.numpy().astype(np.int64, copy=True)
        if len(shape) != 4:
            zq = zq.reshape(*shape)
            codes = codes.reshape(shape[:1] + shape[2:] + codes.shape[3:])
        st = self.quantize.stats
        if isinstance(st, list):  # ResidualVQ: one per level -> one over all levels' codebooks
            K, Q = self.codebook_size, codes.shape[-1]
            flat = codes.reshape(-1, Q)
            offs = np.where(flat >= 0, flat + K * np.arange(Q), -1)
            counts = None
            q = self.quantize
            if all(getattr(q.level(d), "ema_update", False) and not q.level(d).learnable_codebook
                   for d in range(Q)) and not q.shared_codebook:
                counts = np.concatenate([q.level(d).cluster_size.numpy().reshape(-1) for d in range(Q)])
            thr = q.level(0).threshold_ema_dead_code
            losses = {}
            for s in st:
                for k, v in (s.losses if s is not None else {}).items():
                    losses[k] = losses.get(k, 0.0) + v
            stats = codebook_stats(offs[offs >= 0], K * Q, losses=losses, ema_counts=counts, dead_threshold=thr)
            stats.extra["levels"] = Q
            stats.extra["level_usage"] = [s.batch_usage if s is not None else 0.0 for s in st]
            st = stats
        return zq, codes, loss, st

    def _codes_to_latent(self, codes):
        """codes Tensor int64 in the latent layout -> the quantized latent ((B, D, h, w), (B, D, K) or
        (B, D, t, h, w)) that forward (eval) would give."""
        kind = self.config.quantizer
        q = self.quantize
        spatial = tuple(codes.shape[1:codes.ndim - int(kind == "rvq")])
        levels = tuple(codes.shape[codes.ndim - int(kind == "rvq"):])
        B = codes.shape[0]
        if len(spatial) == 1:
            codes = codes.reshape(B, 1, spatial[0], *levels)
        elif len(spatial) == 3:
            codes = codes.reshape(B, spatial[0], spatial[1] * spatial[2], *levels)
        z = q.get_output_from_indices(codes) if kind in ("vq", "ema_vq", "rvq") else q.indices_to_codes(codes)
        if len(spatial) != 2:
            z = z.reshape(B, z.shape[1], *spatial)
        return z

    # ------------------------------------------------------------------ public API
    def _eval_call(self, fn):
        was = self.training
        self.train(False)
        try:
            with no_grad():
                return fn()
        finally:
            self.train(was)

    def _chunks(self, n, batch_size, op):
        if batch_size is None:
            return [(0, n)]
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"{op}: batch_size must be a positive int or None, got {batch_size!r}")
        return [(i, min(i + int(batch_size), n)) for i in range(0, n, int(batch_size))]

    def encode(self, images, batch_size=None):
        """images (B, C, H, W) float32 in [-1, 1] (clips (B, C, T, H, W) for "3d") -> codes np.int64 in the
        latent layout: (B, H/f, W/f) for "2d", (B, K) for "1d", (B, T/ft, H/f, W/f) for "3d" (plus levels for rvq).
        Runs in eval mode under no_grad (the codebook is not updated); batch_size: images per pass
        (None: all at once)."""
        op = f"{type(self).__name__}.encode"
        x = self._check_images(images, op)

        def run():
            return np.concatenate([self._quantize(self._encode_latent(x[a:b]))[1]
                                   for a, b in self._chunks(x.shape[0], batch_size, op)])
        return self._eval_call(run)

    def decode(self, codes, batch_size=None):
        """codes (as encode returns) -> images np.float32 (B, C, H, W) ((B, C, T, H, W) for "3d"). Eval mode,
        no_grad."""
        op = f"{type(self).__name__}.decode"
        c = self._check_codes(codes, op)

        def run():
            return np.concatenate([self._decode_latent(self._codes_to_latent(c[a:b])).numpy().astype(np.float32)
                                   for a, b in self._chunks(c.shape[0], batch_size, op)])
        return self._eval_call(run)

    def reconstruct(self, images, batch_size=None):
        """decode(encode(images)) in one pass (np.float32), batch_size images at a time."""
        op = f"{type(self).__name__}.reconstruct"
        x = self._check_images(images, op)

        def run():
            return np.concatenate([self._reconstruct(x[a:b]).numpy().astype(np.float32)
                                   for a, b in self._chunks(x.shape[0], batch_size, op)])
        return self._eval_call(run)

    def _reconstruct(self, x):
        zq = self._quantize(self._encode_latent(x))[0]
        return self._decode_latent(zq)

    def forward(self, images, step=0):
        """images (B, C, H, W) float32 in [-1, 1] -> TokenizerOutput (recon (B, C, H, W), loss 0-d,
        losses dict of floats, codes int64, stats) for training; step is the optimisation step (loss
        schedules such as the discriminator start use it). Each tokenizer documents its loss.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ the Trainer's protocol
    def training_step(self, batch, step):
        """The Trainer's generator step: forward(images, step) on the batch (images, or an (images, ...)
        tuple) -> (loss 0-d Tensor, the loss terms as floats). Keeps `last_output` (the TokenizerOutput with
        recon and loss detached: the Trainer's psnr / usage logs) and, with a discriminator, the
        reconstruction for discriminator_step (taming's alternation: the discriminator sees the
        reconstructions of the generator's forward)."""
        if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], numbers.Number):
            batch = batch[0]
        out = self(batch, step)
        d = self.__dict__
        if d.get("_pending_step") != step:
            d["_pending"], d["_pending_step"] = [], step
        if self.discriminator is not None:
            d["_pending"].append((batch, out.recon.detach()))
        d["last_output"] = TokenizerOutput(recon=out.recon.detach(), loss=out.loss.detach(), losses=dict(out.losses),
                                           codes=out.codes, stats=out.stats)
        return out.loss, dict(out.losses)

    def discriminator_step(self, batch, step):
        """The Trainer's discriminator step on a batch training_step saw at this step: discriminator_loss(images,
        that step's reconstruction, step) -> (d_loss, logs); None without a discriminator. A batch
        training_step did not see is reconstructed now (eval-free, under no_grad)."""
        if self.discriminator is None:
            return None
        if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], numbers.Number):
            batch = batch[0]
        d = self.__dict__
        pending = d.get("_pending", []) if d.get("_pending_step") == step else []
        for i, (x, recon) in enumerate(pending):
            if x is batch:
                del pending[i]
                break
        else:
            x = self._check_images(batch, f"{type(self).__name__}.discriminator_step")
            with no_grad():
                recon = self._reconstruct(x)
        return self.discriminator_loss(x, recon, step)

    def _step(self, step):
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"{type(self).__name__}.forward: step must be an int >= 0, got {step!r}")
        return int(step)

    def extra_repr(self):
        layout = f"tokens={self.latent_shape[0]}" if self.latent_layout == "1d" else \
            f"downsample={self.downsample_factor}"
        if self.latent_layout == "3d":
            layout += f", temporal_downsample={self.temporal_downsample_factor}"
        return f"quantizer={self.config.quantizer!r}, codebook_size={self.codebook_size}, {layout}"
