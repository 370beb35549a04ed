"""`mmu compare`: train several tokenizers on the same data for the same budget and compare them.

    import mmu.compare
    rows = mmu.compare.compare()                       # the default set, digits at 16 px, a few minutes
    rows = mmu.compare.compare(["vqvae-fsq", "vqvae-lfq"], dataset="natural", steps=500)

Every entry trains with the same data, the same number of steps, the same batch size and the same
seed, and its encoder downsamples by the same factor, so all tokenizers spend a similar number of tokens
per image (the codebook sizes are kept near 2^8 too, see `REGISTRY`). Each is then evaluated on the
held-out split: PSNR and SSIM of decode(encode(x)) (mmu.metrics), codebook usage and perplexity of the
held-out codes, tokens and bits per image, training wall time, encode and decode images/s.

The report folder (`out_dir`) gets report.md (the table, the configuration and the machine),
report.csv (the same numbers), reconstructions.png (originals on top, one labelled row per tokenizer),
loss_curves.png (training-batch PSNR, codebook usage and loss against the step), usage.png (how often
each code is used on the held-out images, codes sorted by frequency) and every trained model under
models/<name>/ (save_pretrained; `mmu.tokenizers.Tokenizer.from_pretrained(dir)` loads it back).

`codebook_size=K` and `width=W` (`mmu compare --codebook-size K --width W`) set the same codebook size and
encoder/decoder width in every entry (see `with_codebook_size` / `with_width`). Ctrl-C (KeyboardInterrupt)
writes the report of the tokenizers that finished, marked as interrupted, and then re-raises.

Video: `compare(dataset="moving-digits")` (`mmu compare --dataset moving-digits [--frames T]`) trains and
evaluates on clips of mmu.data.moving_digits (train / held-out splits): video tokenizers (latent_layout "3d")
on the clips, image tokenizers (2-D grids and 1-D sequences) on each frame, with the same pixels per step.
Its rows give per-frame PSNR and SSIM (averaged; per frame index in report.json), the temporal error
(`temporal_error`: the flicker a tokenizer adds), tokens per clip and per frame and clips/s; reconstructions.png
shows held-out clips frame by frame and per_frame.png the per-frame numbers. Every report has a token-count
column and a section that groups the rows by token count (1-D against 2-D tokenizers at equal counts), and
report.json (every row, with the per-frame lists, and the configuration).

Add your own entry with `register(name, factory)`: factory(channels, size, fast) returns an `Entry`.
"""
import csv
import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Entry", "REGISTRY", "DEFAULT_NAMES", "register", "available", "compare", "write_report",
           "with_codebook_size", "with_width", "DEFAULT_STEPS", "DEFAULT_BATCH_SIZE", "evaluate_clips", "encode_clips",
           "decode_clips", "per_frame_psnr", "per_frame_ssim", "temporal_error", "clip_frames", "frames_to_clips",
           "token_count_groups", "token_count_section", "entry_layout", "VIDEO_DATASETS"]

# The default budget: the six default entries on digits at 16 px in about 2-3 minutes on one core
# (measured: ~6 ms per VQ-VAE step, ~45 ms per VQGAN step with its discriminator, 1 thread).
DEFAULT_STEPS = 1500
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 1e-3
FAST_STEPS = 3
FAST_BATCH_SIZE = 8
N_SHOW = 8          # images per row of reconstructions.png
EVAL_BATCH = 64     # held-out images per encode/decode call (also the throughput batch)
FAST_EVAL_IMAGES = 16
# the moving-digits mode (dataset="moving-digits"): clips of mmu.data.moving_digits
VIDEO_DATASETS = ("moving-digits",)
DEFAULT_VIDEO_SIZE = 32      # canvas side; the digits are 16 px on canvases above 16 px, else 8 px
DEFAULT_FRAMES = 9           # 1 + 4 k frames: what causal video tokenizers take (a first frame, then tubes)
DEFAULT_VIDEO_BATCH_SIZE = 4  # clips a step (an image tokenizer trains on their frames: batch x frames images)
DEFAULT_VIDEO_STEPS = 1000
FAST_VIDEO_SIZE = 16
FAST_FRAMES = 5
FAST_TRAIN_CLIPS = 16
FAST_EVAL_CLIPS = 4
EVAL_CLIPS = 8               # clips per throughput batch


@dataclass
class Entry:
    """One row of the comparison: a tokenizer (the name of a class of mmu.tokenizers, a name registered in
    mmu.models, or a Tokenizer subclass itself: any latent layout), its config fields and the TrainConfig
    fields it overrides (steps, batch_size and seed are set by compare for every entry). A tokenizer
    with a 3-D layout gets each image as a still clip of config.num_frames frames (and the report counts
    tokens per clip). In the moving-digits mode a 3-D tokenizer's config gets num_frames = the clips' frames
    and then `video_config` (config fields for clips, e.g. a temporal patch size that a still image cannot use)."""
    name: str
    label: str
    tokenizer: str
    config: dict
    train: dict = field(default_factory=dict)
    description: str = ""
    per_step: dict = field(default_factory=dict)  # config fields set to round(fraction * steps)
    video_config: dict = field(default_factory=dict)
    train_per_step: dict = field(default_factory=dict)  # TrainConfig fields set to round(fraction * steps)


# --------------------------------------------------------------------------- registry
# Shared architecture knobs so the entries differ only in what is being compared: every encoder
# downsamples by 4 (a 16 px digit becomes 4x4 = 16 tokens, a 32 px crop 8x8 = 64 tokens) into 32
# latent channels, and every codebook has about 2^8 codes.
CODEBOOK_SIZE = 256


def _conv_fields(channels, size, fast):
    """VQVAEConfig / DVAEConfig fields (the Sonnet VQ-VAE layout, small)."""
    if fast:
        return dict(in_channels=channels, hidden_channels=8, res_channels=4, num_res_blocks=0, downsample=4,
                    embed_dim=8, codebook_size=CODEBOOK_SIZE, resolution=size)
    return dict(in_channels=channels, hidden_channels=64, res_channels=32, num_res_blocks=1, downsample=4,
                embed_dim=32, codebook_size=CODEBOOK_SIZE, resolution=size)


def _vqvae(quantizer, quantizer_kwargs=None):
    def fields(channels, size, fast):
        f = _conv_fields(channels, size, fast)
        f.update(quantizer=quantizer, quantizer_kwargs=dict(quantizer_kwargs or {}))
        return f
    return fields


def _dvae_fields(channels, size, fast):
    f = _conv_fields(channels, size, fast)
    f.update(recon="logit_laplace", kl_weight=5e-4, temp_start=1.0, temp_end=1.0 / 16)
    return f


def _has_discriminator():
    import mmu
    return all(hasattr(mmu.losses, n) for n in ("NLayerDiscriminator", "adaptive_weight")) and hasattr(mmu.nn, "BatchNorm2d")


def _vqgan_fields(channels, size, fast):
    """VQGANConfig fields: taming's layout at a small width; L1 + PatchGAN (hinge, adaptive weight),
    no perceptual loss unless compare() is given LPIPS weights."""
    if fast:
        f = dict(ch=8, ch_mult=[1, 1, 1], num_res_blocks=1, attn_resolutions=[], z_channels=8, embed_dim=8,
                 norm_groups=8, disc_ndf=8)
    else:
        # ch 16 (16-32-32 channels): taming's blocks cost ~5x a VQ-VAE step at this width already
        f = dict(ch=16, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[max(1, size // 4)], z_channels=32,
                 embed_dim=32, norm_groups=16, disc_ndf=32)
    f.update(in_channels=channels, resolution=size, codebook_size=CODEBOOK_SIZE, quantizer="vq",
             perceptual_weight=0.0, use_discriminator=_has_discriminator(), disc_layers=2 if size >= 16 else 1,
             disc_weight=0.8, disc_loss="hinge")
    return f


def _downsampled(fields_fn, factor):
    """fields_fn with the encoder's downsample factor set to `factor`."""
    def fields(channels, size, fast):
        f = fields_fn(channels, size, fast)
        f["downsample"] = factor
        return f
    return fields


def _make(name, label, tokenizer, fields_fn, train=None, per_step=None, description="", video_config=None,
          train_per_step=None):
    def factory(channels, size, fast):
        return Entry(name, label, tokenizer, fields_fn(channels, size, fast), dict(train or {}),
                     description, dict(per_step or {}), dict(video_config or {}), dict(train_per_step or {}))
    factory.__doc__ = description
    return factory


REGISTRY = {
    "vqvae-vq": _make("vqvae-vq", "VQ-VAE + VQ", "VQVAE", _vqvae("vq"),
                      description="VQ-VAE with a learned codebook (codebook + 0.25 commitment loss, "
                                  "straight-through; van den Oord et al. 2017), 256 codes"),
    "vqvae-ema": _make("vqvae-ema", "VQ-VAE + EMA-VQ", "VQVAE",
                       _vqvae("ema_vq", dict(decay=0.9, kmeans_init=True, threshold_ema_dead_code=1.0)),
                       description="VQ-VAE with an EMA codebook, k-means init and dead-code restart "
                                   "(vector-quantize-pytorch), 256 codes"),
    "vqvae-fsq": _make("vqvae-fsq", "VQ-VAE + FSQ", "VQVAE", _vqvae("fsq"),
                       description="VQ-VAE with finite scalar quantization, levels [8, 6, 5] = 240 codes "
                                   "(Mentzer et al. 2023)"),
    "vqvae-lfq": _make("vqvae-lfq", "VQ-VAE + LFQ", "VQVAE", _vqvae("lfq"),
                       description="VQ-VAE with lookup-free quantization, 8 bits = 256 codes, entropy loss "
                                   "(Yu et al. 2023, MAGVIT-v2)"),
    "dvae": _make("dvae", "dVAE", "DVAE", _dvae_fields, per_step={"temp_anneal_steps": 1.0},
                  description="discrete VAE: Gumbel-softmax over 256 codes, logit-Laplace loss, KL to uniform, "
                              "temperature 1 -> 1/16 over the budget (Ramesh et al. 2021)"),
    "vqgan": _make("vqgan", "VQGAN", "VQGAN", _vqgan_fields, per_step={"disc_start": 0.3},
                   description="VQGAN (taming-transformers layout, small): L1 + PatchGAN hinge loss with the "
                               "adaptive weight from 30% of the budget on; LPIPS only with --lpips-weights; 256 codes"),
    "vqvae-rvq": _make("vqvae-rvq", "VQ-VAE + RVQ", "VQVAE",
                       _vqvae("rvq", dict(num_quantizers=2, decay=0.9, kmeans_init=True, threshold_ema_dead_code=1.0)),
                       description="VQ-VAE with residual VQ, 2 levels of 256 codes (SoundStream; not in the "
                                   "default set: it spends 2 tokens per position)"),
    # the 2-D grid beside the 1-D tokenizers at 64 tokens: 8x8 codes at 16 px (not in the default set)
    "vqvae-ema-f2": _make("vqvae-ema-f2", "VQ-VAE + EMA-VQ f2", "VQVAE",
                          _downsampled(_vqvae("ema_vq", dict(decay=0.9, kmeans_init=True,
                                                             threshold_ema_dead_code=1.0)), 2),
                          description="vqvae-ema downsampling by 2 instead of 4: (size/2)^2 tokens, an 8x8 grid "
                                      "of 64 at 16 px (the 2-D row beside a 1-D tokenizer of 64 tokens)"),
}
DEFAULT_NAMES = ["vqvae-vq", "vqvae-ema", "vqvae-fsq", "vqvae-lfq", "dvae", "vqgan"]


def _omnitokenizer_fields(channels, size, fast):
    """OmniTokenizerConfig fields: images as one-frame clips (num_frames 1), patch 4 (the shared downsample by 4),
    full-full-window-window encoder and full decoder blocks as the published script, an l2-normalised EMA
    codebook of 8 channels with 256 codes (CODEBOOK_SIZE)."""
    f = dict(in_channels=channels, resolution=size, num_frames=1, patch_size=4, temporal_patch_size=1,
             enc_block="ttww", dec_block="tttt", window_size=2, codebook_size=CODEBOOK_SIZE, codebook_dim=8)
    if fast:
        f.update(dim=16, dim_head=8, heads=2, enc_block="tw", dec_block="tt", temporal_depth=1)
    else:
        f.update(dim=64, dim_head=16, heads=4, temporal_depth=1)
    return f


REGISTRY["omnitokenizer"] = _make(
    "omnitokenizer", "OmniTokenizer", "omnitokenizer", _omnitokenizer_fields,
    description="OmniTokenizer (Wang et al. 2024): patch transformer with full + window spatial blocks and causal "
                "temporal blocks, l2-normalised EMA VQ of 8 dims, 256 codes; images as one-frame clips; "
                "moving-digits clips: the first frame alone, then tubes of 4 frames (the published "
                "temporal_patch_size)",
    # on clips (the moving-digits mode) the published tubes of 4 frames: 1 + 4 k frames -> 1 + k latent frames
    video_config=dict(temporal_patch_size=4))


# TiTok (mmu.models.titok): K learned 1-D tokens per image instead of a grid; the S preset (published width 512 /
# 8 layers scaled to 64 / 2), patches of size / 4 (4 x 4 patches at 16 px, like the grid entries' 16 codes),
# tokens of 12 channels (TiTok's token_size), the l2-normalised VQ over 256 codes with 1d-tokenizer's clustering_vq
# (its single-stage pixel recipe re-seeds unused codes: measured on digits, 500 steps, titok-64 16.3 dB and 82% of
# the codes used with it, 13.8 dB and 22% without, where every latent token kept one code), mse + quantizer loss.
# Its own training recipe, after 1d-tokenizer's TiTok configs (configs/training/TiTok/stage1 and stage2: AdamW
# betas (0.9, 0.99) in stage 1 / (0.9, 0.999) in stage 2, weight decay 1e-4, max_grad_norm 1.0, cosine to end_lr
# = lr / 10 after a linear warm-up of 1-1.5% of 0.5-1M steps, lr 1e-4 at batch 32 x GPUs, commitment_cost 0.25
# in stage 1) with the lr and the warm-up fitted to this budget (the published 1e-4 is for ~10^6 steps). At 1500
# steps x 32 digits of 16 px, titok-32 measured 22.06 dB with the conv entries' recipe (lr 1e-3, betas (0.5, 0.9),
# no weight decay, 5% warm-up), 22.79 with betas (0.9, 0.99) and weight decay 1e-4, then with a 10% warm-up 24.97
# at lr 2e-3, 28.12 at 3e-3, 28.65 at 4e-3, 29.61 at 5e-3; but titok-64 fell from 28.66 dB at 2e-3 (26.96 with
# the conv recipe) to 23.91 at 5e-3, and on moving digits (32 px) 5e-3 collapsed its codebook (18% of the codes,
# 14.46 dB against 17.29 with the conv recipe): 2e-3 is the lr that helped every entry measured.
TITOK_RECIPE = dict(lr=2e-3, betas=(0.9, 0.99), weight_decay=1e-4, grad_clip=1.0)
TITOK_WARMUP = 0.1


def _titok_fields(num_tokens):
    def fields(channels, size, fast):
        from .models.titok import PRESETS
        w, d, h = (16, 1, 2) if fast else PRESETS["S"]
        return dict(in_channels=channels, resolution=size, patch_size=max(1, size // 4), encoder_width=w,
                    encoder_depth=d, encoder_heads=h, decoder_width=w, decoder_depth=d, decoder_heads=h,
                    num_latent_tokens=num_tokens, token_size=8 if fast else 12, codebook_size=CODEBOOK_SIZE,
                    clustering_vq=True)
    return fields


for _k in (32, 64):
    REGISTRY[f"titok-{_k}"] = _make(f"titok-{_k}", f"TiTok-S-{_k}", "titok", _titok_fields(_k),
                                    description=f"TiTok (Yu et al. 2024): a ViT encoder reads the patches into {_k} "
                                                "learned 1-D tokens, l2-normalised VQ over 256 codes (unused codes "
                                                "re-seeded: clustering_vq), a ViT decoder "
                                                "from mask tokens back to pixels (S preset scaled down); "
                                                "AdamW lr 2e-3, betas (0.9, 0.99), weight decay 1e-4, 10% warm-up "
                                                "then cosine",
                                    train=TITOK_RECIPE, train_per_step={"warmup_steps": TITOK_WARMUP})
del _k


# --------------------------------------------------------------------------- overrides for every entry
_CONV_TOKENIZERS = ("VQVAE", "DVAE", "VQGAN")


def with_codebook_size(entry, codebook_size):
    """A copy of entry with codebook_size codes: VQ / EMA-VQ / RVQ (each level) / dVAE / VQGAN take it
    as is; LFQ needs a power of 2 (log2 K bits); FSQ takes the paper's recommended levels, which exist
    for 2^8, 2^10, 2^12, 2^14 and 2^16 codes (fsq_levels_for; [8, 6, 5] = 240 codes for 256). Raises
    ValueError naming the entry when the size cannot be matched."""
    from .tokenizers.base import _FSQ_LEVELS, fsq_levels_for

    k = _check_int(codebook_size, "codebook_size", 2)
    if entry.tokenizer not in _CONV_TOKENIZERS or "codebook_size" not in entry.config:
        raise ValueError(f"compare: cannot set the codebook size of entry {entry.name!r} ({entry.tokenizer}): "
                         "its config has no codebook_size")
    cfg = dict(entry.config)
    kw = dict(cfg.get("quantizer_kwargs") or {})
    kw.pop("codebook_size", None)
    quantizer = cfg.get("quantizer")
    power = k & (k - 1) == 0
    note = f"codebook size set to {k}"
    if quantizer == "lfq" and not power:
        raise ValueError(f"compare: entry {entry.name!r} (LFQ) needs a power-of-2 codebook size (log2 K bits), "
                         f"got {k}")
    if quantizer == "fsq":
        bits = k.bit_length() - 1
        if not power or bits not in _FSQ_LEVELS:
            raise ValueError(f"compare: entry {entry.name!r} (FSQ) has recommended levels only for "
                             f"{', '.join(str(2 ** b) for b in sorted(_FSQ_LEVELS))} codes, got {k}")
        kw["levels"] = fsq_levels_for(k)
        note += f": FSQ levels {kw['levels']} = {int(np.prod(kw['levels']))} codes"
    cfg["codebook_size"] = k
    if "quantizer_kwargs" in cfg or kw:
        cfg["quantizer_kwargs"] = kw
    return dataclasses.replace(entry, config=cfg, description=f"{entry.description} ({note})")


def with_width(entry, width):
    """A copy of entry whose widest encoder/decoder conv has `width` channels: VQ-VAE and dVAE get
    hidden_channels=width, res_channels=width/2; VQGAN gets ch=width/max(ch_mult) (width must be a
    multiple of max(ch_mult)) and the largest of its GroupNorm group counts that divides ch. The
    discriminator keeps its width. Raises ValueError naming the entry when it cannot be applied."""
    w = _check_int(width, "width", 2)
    cfg = dict(entry.config)
    if entry.tokenizer in ("VQVAE", "DVAE"):
        cfg.update(hidden_channels=w, res_channels=max(1, w // 2))
    elif entry.tokenizer == "VQGAN":
        mult = max(cfg.get("ch_mult") or [1])
        if w % mult:
            raise ValueError(f"compare: entry {entry.name!r} (VQGAN, ch_mult {cfg.get('ch_mult')}) needs a width "
                             f"that is a multiple of {mult}, got {w}")
        ch = w // mult
        groups = cfg.get("norm_groups", 32)
        cfg.update(ch=ch, norm_groups=max(g for g in range(1, min(groups, ch) + 1) if ch % g == 0))
    else:
        raise ValueError(f"compare: cannot set the width of entry {entry.name!r} ({entry.tokenizer})")
    return dataclasses.replace(entry, config=cfg, description=f"{entry.description} (width {w})")


def register(name, factory, default=False):
    """Adds (or replaces) an entry: factory(channels, size, fast) -> Entry."""
    if not isinstance(name, str) or not name or "," in name or "/" in name:
        raise ValueError(f"register: name must be a non-empty string without ',' or '/', got {name!r}")
    if not callable(factory):
        raise TypeError(f"register: factory must be callable, got {type(factory).__name__}")
    REGISTRY[name] = factory
    if default and name not in DEFAULT_NAMES:
        DEFAULT_NAMES.append(name)


def available():
    """[(name, description, in the default set)] for every registered entry."""
    out = []
    for name, factory in REGISTRY.items():
        out.append((name, (factory.__doc__ or "").strip(), name in DEFAULT_NAMES))
    return out


# --------------------------------------------------------------------------- helpers
def _check_int(value, name, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"compare: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"compare: {name} must be >= {low}, got {value}")
    return int(value)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """A dict describing where the comparison ran (for the report)."""
    import mmu
    return {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "mmu_threads": mmu.get_num_threads(),
            "python": platform.python_version(), "numpy": np.__version__, "mmu": mmu.__version__,
            "platform": platform.platform()}


def _batched(fn, x, bs=EVAL_BATCH):
    return np.concatenate([np.asarray(fn(x[i:i + bs])) for i in range(0, len(x), bs)])


def _num(v):
    """Python float of anything scalar (None when missing or not a number)."""
    if v is None:
        return None
    try:
        v = float(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return None
    return v


def _to_jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _load_lpips(path):
    import mmu
    return mmu.losses.LPIPS(pretrained=True, weights=path)


def _generator_params(model):
    """Trainable parameters without the discriminator's (what encode/decode use)."""
    params = model.generator_parameters() if hasattr(model, "generator_parameters") else model.parameters()
    return int(sum(int(np.prod(p.shape)) for p in params))


def _as_rgb(x):
    return np.ascontiguousarray(np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x)


# --------------------------------------------------------------------------- the run
def _tokenizer_class(tokenizer):
    """An Entry's tokenizer -> its class (None when nothing has that name)."""
    from mmu import models, tokenizers
    if isinstance(tokenizer, type):
        return tokenizer
    cls = getattr(tokenizers, tokenizer, None)
    if cls is None:
        try:
            cls = models.get(tokenizer)
        except (KeyError, TypeError):
            return None
    return cls


def as_clips(model, images):
    """images (N, C, H, W) -> still clips (N, C, T, H, W) of the model's config.num_frames frames for a
    tokenizer with a 3-D latent layout; anything else unchanged."""
    if getattr(model, "latent_layout", "2d") != "3d" or np.ndim(images) != 4:
        return images
    return np.ascontiguousarray(np.repeat(np.asarray(images)[:, :, None], int(model.config.num_frames), axis=2))


def _tokenizer_name(tokenizer):
    return tokenizer.__name__ if isinstance(tokenizer, type) else tokenizer


def train_entry(entry, train_data, steps, batch_size, seed, progress=True, lpips_weights=None):
    """Builds entry's tokenizer, trains it with mmu.train.Trainer; returns (model, history, seconds)."""
    import mmu
    from mmu import tokenizers, train

    cls = _tokenizer_class(entry.tokenizer)
    if cls is None:
        raise ValueError(f"compare: entry {entry.name!r} names tokenizer class {entry.tokenizer!r}, "
                         "which mmu.tokenizers does not have")
    fields = dict(entry.config)
    for key, fraction in entry.per_step.items():
        fields.setdefault(key, max(1, int(round(float(fraction) * steps))))
    if lpips_weights is not None and entry.tokenizer == "VQGAN":
        fields.update(perceptual_weight=1.0, lpips_weights=os.fspath(lpips_weights))
    mmu.manual_seed(seed)  # every entry starts from the same RNG state: order does not matter
    model = cls(**fields)
    # a short budget wants a larger lr than taming's 2e-4 (measured on digits: +5 dB PSNR at 300 steps)
    tcfg = dict(lr=DEFAULT_LR, warmup_steps=steps // 20, log_every=max(1, steps // 50), progress=progress)
    tcfg.update(entry.train)
    for key, fraction in entry.train_per_step.items():
        tcfg[key] = max(1, int(round(float(fraction) * steps)))
    tcfg.update(steps=steps, batch_size=batch_size, seed=seed)
    if getattr(model, "latent_layout", "2d") == "3d":
        images = train_data.images if hasattr(train_data, "images") else train_data
        train_data = as_clips(model, np.asarray(images, np.float32))
    trainer = train.Trainer(model, train_data, train.TrainConfig(**tcfg))
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    model.eval()
    return model, history, seconds


def evaluate(model, images, throughput_repeat=5, lpips_model=None, fid=None):
    """Held-out numbers of a trained tokenizer on images (N, C, H, W) in [-1, 1]:
    returns (metrics dict, codes, reconstructions). Throughput: the best of `throughput_repeat`
    mmu.metrics.throughput runs on the first EVAL_BATCH images (or their codes). fid: an
    mmu.metrics.FID holding the held-out images as its real set: adds "rfid", the FID of the
    reconstructions against them (its fake set is replaced)."""
    from mmu import metrics

    model.eval()
    images = as_clips(model, images)  # still clips for a 3-D tokenizer
    codes = _batched(model.encode, images)
    recon = _batched(model.decode, codes).astype(np.float32)
    K = int(model.codebook_size)
    # of these images (clips for a 3-D layout; tokens_per_image is at config.resolution): h * w, K or t * h * w,
    # times the rvq levels
    tokens = int(np.prod(codes.shape[1:]))
    m = {
        "codebook_size": K,
        "tokens_per_image": tokens,
        "bits_per_image": float(metrics.bits_per_image(tokens, K)),
        "psnr": float(metrics.psnr(recon, images)),
        "ssim": float(metrics.ssim(recon, images)),
        "usage": float(metrics.codebook_usage(codes, K)),
        "perplexity": float(metrics.perplexity(codes, K)),
    }
    if lpips_model is not None:
        frames = (lambda a: a) if recon.ndim == 4 else \
            (lambda a: np.ascontiguousarray(np.moveaxis(a, 2, 1).reshape(-1, a.shape[1], *a.shape[3:])))
        m["lpips"] = float(metrics.lpips_distance(_as_rgb(frames(recon)), _as_rgb(frames(images)), lpips_model))
    if fid is not None and recon.ndim == 5:
        fid = None  # FID is over images; a 3-D tokenizer's still clips are not scored
    if fid is not None:
        fid.reset(real=False)
        fid.update(recon, real=False)
        m["rfid"] = float(fid.compute())
    batch = np.ascontiguousarray(images[:EVAL_BATCH])
    bcodes = np.ascontiguousarray(codes[:EVAL_BATCH])
    # best of a few short runs: on a shared machine the best run is the one least disturbed by others
    m["encode_img_s"] = max(float(metrics.throughput(model.encode, batch, repeat=2))
                            for _ in range(throughput_repeat))
    m["decode_img_s"] = max(float(metrics.throughput(model.decode, bcodes, repeat=2))
                            for _ in range(throughput_repeat))
    return m, codes, recon


# --------------------------------------------------------------------------- clips (the moving-digits mode)
def _clip_array(clips, fn, name="clips"):
    """clips as a float (N, C, T, H, W) NumPy array, or a ValueError naming fn and the shape."""
    a = np.asarray(clips.detach().numpy() if hasattr(clips, "detach") else clips)
    if a.ndim != 5:
        raise ValueError(f"{fn}: {name} must be (N, C, T, H, W), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{fn}: {name} are empty, shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{fn}: {name} must hold numbers, got dtype {a.dtype}")
    return a


def clip_frames(clips):
    """clips (N, C, T, H, W) -> every frame as an image (N T, C, H, W), clip-major (clip i's frames are rows
    i T .. i T + T - 1; mmu.data.MovingDigits.frames' order)."""
    a = _clip_array(clips, "mmu.compare.clip_frames")
    n, c, t, h, w = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3, 4).reshape(n * t, c, h, w))


def frames_to_clips(frames, num_frames):
    """The inverse of clip_frames: images (N T, C, H, W) -> clips (N, C, T, H, W)."""
    a = np.asarray(frames)
    t = _check_int(num_frames, "num_frames")
    if a.ndim != 4 or a.shape[0] % t:
        raise ValueError(f"mmu.compare.frames_to_clips: frames must be (N * {t}, C, H, W), got shape {a.shape}")
    nt, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(nt // t, t, c, h, w).transpose(0, 2, 1, 3, 4))


def _layout(model):
    return getattr(model, "latent_layout", "2d")


def _check_clip_fits(model, clips, fn):
    """Clear errors for clips a tokenizer cannot take: a video ("3d") tokenizer gets the clips themselves
    (its frame count rule is its own, see its _check_images), an image ("2d" / "1d") tokenizer their frames,
    which must have its channels (and, for "1d", its config.resolution)."""
    n, c, t, h, w = clips.shape
    name = type(model).__name__
    layout = _layout(model)
    if c != model.in_channels:
        raise ValueError(f"{fn}: {name} takes {model.in_channels}-channel images, got clips of shape {clips.shape}")
    if layout == "1d" and (h, w) != (model.config.resolution,) * 2:
        raise ValueError(f"{fn}: {name} is an image tokenizer with a 1-D layout that runs on each frame and takes "
                         f"{model.config.resolution}x{model.config.resolution} images only, got {h}x{w} frames "
                         f"(clips of shape {clips.shape})")
    if layout == "2d":
        f = model.downsample_factor
        if h % f or w % f:
            raise ValueError(f"{fn}: {name} runs on each frame and needs frames whose sides are multiples of its "
                             f"downsample factor {f}, got {h}x{w} (clips of shape {clips.shape})")


def encode_clips(model, clips, batch_size=EVAL_BATCH):
    """Codes of clips (N, C, T, H, W) in [-1, 1]: a video tokenizer (latent_layout "3d") encodes each clip,
    (N, t, h, w); an image tokenizer ("2d" / "1d") encodes each frame, (N, T, h, w) / (N, T, K) (one code
    map per frame; rvq levels last). batch_size: clips per encode call. Raises ValueError (naming the
    tokenizer and the shapes) for clips the tokenizer cannot take."""
    fn = "mmu.compare.encode_clips"
    a = np.ascontiguousarray(_clip_array(clips, fn), np.float32)
    bs = _check_int(batch_size, "batch_size")
    _check_clip_fits(model, a, fn)
    if _layout(model) == "3d":
        return _batched(model.encode, a, bs)
    t = a.shape[2]
    codes = _batched(model.encode, clip_frames(a), bs * t)
    return codes.reshape((a.shape[0], t) + codes.shape[1:])


def decode_clips(model, codes, batch_size=EVAL_BATCH):
    """Clips (N, C, T, H, W) float32 of encode_clips' codes: a video tokenizer decodes each clip's codes, an
    image tokenizer each frame's ((N, T, ...) codes, one map per frame). batch_size: clips per call."""
    fn = "mmu.compare.decode_clips"
    c = np.asarray(codes)
    bs = _check_int(batch_size, "batch_size")
    if _layout(model) == "3d":
        return _batched(model.decode, c, bs).astype(np.float32)
    if c.ndim < 3:
        raise ValueError(f"{fn}: an image tokenizer's clip codes are (N, T, ...) (one code map per frame), got "
                         f"shape {c.shape}")
    n, t = c.shape[:2]
    frames = _batched(model.decode, np.ascontiguousarray(c.reshape((n * t,) + c.shape[2:])), bs * t)
    return frames_to_clips(frames.astype(np.float32), t)


def _clip_pair(recon, clips, fn):
    a = _clip_array(recon, fn, "recon")
    b = _clip_array(clips, fn)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: recon and clips must have the same shape, got {a.shape} and {b.shape}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{fn}: recon and clips must be finite (found NaN or inf)")
    return a, b


def per_frame_psnr(recon, clips, data_range=2.0):
    """PSNR of every frame of every clip: recon, clips (N, C, T, H, W) -> (N, T) float64, frame t of clip i
    scored as an image (mmu.metrics.psnr of (C, H, W)). Averaged over frames and clips this is the moving-digits
    report's PSNR (each frame counts once, as a video tokenizer paper's per-frame PSNR)."""
    from .metrics import psnr
    a, b = _clip_pair(recon, clips, "mmu.compare.per_frame_psnr")
    n, t = a.shape[0], a.shape[2]
    return psnr(clip_frames(a), clip_frames(b), data_range, reduction="none").reshape(n, t)


def per_frame_ssim(recon, clips, data_range=2.0):
    """SSIM (mmu.metrics.ssim: Wang et al. 2004, 11x11 Gaussian window) of every frame: (N, T) float64."""
    from .metrics import ssim
    a, b = _clip_pair(recon, clips, "mmu.compare.per_frame_ssim")
    n, t = a.shape[0], a.shape[2]
    return ssim(clip_frames(a), clip_frames(b), data_range, reduction="none").reshape(n, t)


def temporal_error(recon, clips):
    """Temporal consistency: how much frame-to-frame change the reconstruction adds or loses (flicker).
    recon, clips (N, C, T, H, W), T >= 2 -> (N, T - 1) float64, for each clip and pair of consecutive frames
    (t - 1, t) the root mean square over (C, H, W) of

        (r_t - r_{t-1}) - (x_t - x_{t-1})   =   e_t - e_{t-1},   e = r - x

    the error of the reconstruction's frame difference against the original's; equivalently the change of
    the reconstruction error from one frame to the next. 0 for a perfect reconstruction and for any error
    that stays put (a constant offset, a fixed blur of a still scene); an offset alternating +c, -c
    between frames (flicker) gives 2c; errors independent from frame to frame with RMS s give about
    s sqrt(2). It is the pixel-level form of TecoGAN's tOF (Chu et al. 2020: the L1 distance between the
    optical flows of consecutive generated and original frames) with the pixel difference in place of the
    flow, so no flow network is needed; in pixel units of [-1, 1], lower is better."""
    fn = "mmu.compare.temporal_error"
    a, b = _clip_pair(recon, clips, fn)
    if a.shape[2] < 2:
        raise ValueError(f"{fn}: clips need at least 2 frames, got shape {b.shape}")
    e = a - b
    d = e[:, :, 1:] - e[:, :, :-1]                      # (N, C, T-1, H, W)
    return np.sqrt((d * d).mean(axis=(1, 3, 4)))


def evaluate_clips(model, clips, throughput_repeat=5):
    """Held-out numbers of a trained tokenizer on clips (N, C, T, H, W) in [-1, 1] (a video tokenizer on the
    clips, an image tokenizer on each frame): returns (metrics dict, codes, reconstructions).
    psnr / ssim: the mean over clips and frames of per_frame_psnr / per_frame_ssim; psnr_per_frame /
    ssim_per_frame: their mean over clips at each frame index (T values); temporal_error: the mean of
    temporal_error over clips and frame pairs, temporal_error_per_frame its mean at each pair (T - 1
    values); tokens_per_clip, tokens_per_frame (= tokens_per_clip / T), bits_per_clip; usage, perplexity of
    the held-out codes; encode_clip_s / decode_clip_s: clips a second, the best of throughput_repeat runs of
    mmu.metrics.throughput on the first EVAL_CLIPS clips."""
    from mmu import metrics

    fn = "mmu.compare.evaluate_clips"
    clips = np.ascontiguousarray(_clip_array(clips, fn), np.float32)
    model.eval()
    codes = encode_clips(model, clips)
    recon = decode_clips(model, codes)
    K = int(model.codebook_size)
    n, t = clips.shape[0], clips.shape[2]
    tokens = int(np.prod(codes.shape[1:]))   # per clip: t * h * w, or T * (h * w | K), times the rvq levels
    fp, fs = per_frame_psnr(recon, clips), per_frame_ssim(recon, clips)
    te = temporal_error(recon, clips)
    m = {
        "codebook_size": K,
        "tokens_per_clip": tokens,
        "tokens_per_frame": tokens / t,
        "bits_per_clip": float(metrics.bits_per_image(tokens, K)),
        "psnr": float(fp.mean()),
        "ssim": float(fs.mean()),
        "temporal_error": float(te.mean()),
        "usage": float(metrics.codebook_usage(codes, K)),
        "perplexity": float(metrics.perplexity(codes, K)),
        "psnr_per_frame": [float(v) for v in fp.mean(axis=0)],
        "ssim_per_frame": [float(v) for v in fs.mean(axis=0)],
        "temporal_error_per_frame": [float(v) for v in te.mean(axis=0)],
    }
    batch = np.ascontiguousarray(clips[:EVAL_CLIPS])
    bcodes = np.ascontiguousarray(codes[:EVAL_CLIPS])
    m["encode_clip_s"] = max(float(metrics.throughput(lambda c: encode_clips(model, c), batch, repeat=2))
                             for _ in range(throughput_repeat))
    m["decode_clip_s"] = max(float(metrics.throughput(lambda c: decode_clips(model, c), bcodes, repeat=2))
                             for _ in range(throughput_repeat))
    return m, codes, recon


def compare(names=None, dataset="digits", size=None, steps=None, batch_size=None, seed=0, out_dir="mmu-report",
            fast=False, progress=True, lpips_weights=None, threads=1, codebook_size=None, width=None,
            fid_weights=None, frames=None):
    """Trains each chosen entry of REGISTRY for `steps` steps on `dataset`'s training split, evaluates
    it on the held-out split and writes the report folder `out_dir` (see the module docstring).

    names: entry names (default DEFAULT_NAMES; for moving-digits also every registered video entry);
    dataset: "digits" (scikit-learn, 1 channel), "natural" (crops of scikit-image/scikit-learn sample photos,
    3 channels), an image folder, or "moving-digits" (clips of mmu.data.moving_digits: the video mode below);
    size: image side (default 16 for digits, 32 otherwise); steps / batch_size: the budget of every entry (default
    DEFAULT_STEPS / DEFAULT_BATCH_SIZE; fast=True: FAST_STEPS / FAST_BATCH_SIZE, tiny models and 16
    held-out images: the test mode, seconds); lpips_weights: an LPIPS weights file (see
    mmu.losses.LPIPS) turns on VQGAN's perceptual loss and adds an LPIPS column; threads: mmu threads
    while comparing (default 1: these models are small, one op's work is a few microseconds per thread,
    and on a machine busy with other work 2 threads measured 3-10x slower per step than 1; None keeps
    mmu.get_num_threads()); codebook_size / width: applied to every entry (with_codebook_size,
    with_width; None keeps each entry's own). fid_weights: the FID Inception weights file (see
    mmu.metrics.inception) adds an rFID column, the FID of each tokenizer's held-out reconstructions against
    the originals (pytorch-fid's computation at 299 px: ~0.2-1 s per image on one core, and a 2048 x 2048
    matrix square root per tokenizer; with fewer than 2048 held-out images the covariances are
    rank-deficient, so compare rFIDs only at equal sample sizes). Returns one dict per entry (the rows of report.csv).
    A KeyboardInterrupt writes the report of the entries that finished (marked as interrupted) and
    propagates.

    dataset="moving-digits": mmu.data.moving_digits clips of `frames` frames (default DEFAULT_FRAMES = 9,
    fast FAST_FRAMES) on a size x size canvas (default 32, fast 16; digits of 16 px, 8 px on a canvas of 16 or
    less), 1024 training / 256 held-out clips (fast: 16 / 4) with held-out handwriting; seed draws the motions
    and the digit split. A video tokenizer (latent_layout "3d"; its config's num_frames set to `frames`)
    trains and runs on the clips, batch_size clips a step (default DEFAULT_VIDEO_BATCH_SIZE, steps default
    DEFAULT_VIDEO_STEPS); an image tokenizer ("2d" or "1d") on their frames, batch_size x frames images a
    step, so every entry sees the same pixels. Every entry is checked on one held-out clip before any
    training (a frame count or size it cannot take fails at once). The rows hold per-frame PSNR / SSIM, the
    temporal error (temporal_error), tokens per clip and per frame, and clips/s (evaluate_clips); LPIPS and
    rFID are image-mode columns only.
    """
    import mmu

    if threads is not None:
        threads = _check_int(threads, "threads")
        prev = mmu.get_num_threads()
        mmu.set_num_threads(threads)
        try:
            return compare(names, dataset, size, steps, batch_size, seed, out_dir, fast, progress, lpips_weights,
                           threads=None, codebook_size=codebook_size, width=width, fid_weights=fid_weights,
                           frames=frames)
        finally:
            mmu.set_num_threads(prev)
    from mmu import data

    if not isinstance(dataset, (str, os.PathLike)):
        raise TypeError(f"compare: dataset must be 'digits', 'natural', 'moving-digits' or a folder path, got "
                        f"{type(dataset).__name__}")
    dataset = os.fspath(dataset)
    video = dataset in VIDEO_DATASETS
    if not video and dataset not in ("digits", "natural") and not os.path.isdir(dataset):
        raise FileNotFoundError(f"compare: dataset must be 'digits', 'natural', 'moving-digits' or an existing "
                                f"folder, got {dataset!r}")
    if frames is not None and not video:
        raise ValueError(f"compare: frames applies to dataset 'moving-digits' only, got dataset {dataset!r}")
    if video and (lpips_weights is not None or fid_weights is not None):
        raise ValueError("compare: lpips_weights and fid_weights apply to the image datasets, not 'moving-digits'")
    if video:
        size = (FAST_VIDEO_SIZE if fast else DEFAULT_VIDEO_SIZE) if size is None else _check_int(size, "size", 9)
        frames = (FAST_FRAMES if fast else DEFAULT_FRAMES) if frames is None else _check_int(frames, "frames", 2)
    else:
        size = (16 if dataset == "digits" else 32) if size is None else _check_int(size, "size", 4)
    steps = (FAST_STEPS if fast else DEFAULT_VIDEO_STEPS if video else DEFAULT_STEPS) if steps is None \
        else _check_int(steps, "steps")
    batch_size = (FAST_BATCH_SIZE if fast and not video else FAST_BATCH_SIZE // 2 if fast
                  else DEFAULT_VIDEO_BATCH_SIZE if video else DEFAULT_BATCH_SIZE) if batch_size is None else \
        _check_int(batch_size, "batch_size")
    seed = _check_int(seed, "seed", 0)
    names = (list(DEFAULT_NAMES) + (_video_names() if video else [])) if names is None else \
        ([names] if isinstance(names, str) else list(names))
    if not names:
        raise ValueError("compare: names is empty")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"compare: unknown tokenizer(s) {', '.join(map(repr, unknown))}; available: "
                         f"{', '.join(REGISTRY)}")
    if len(set(names)) != len(names):
        raise ValueError(f"compare: names repeat an entry: {names}")
    if codebook_size is not None:
        codebook_size = _check_int(codebook_size, "codebook_size", 2)
    if width is not None:
        width = _check_int(width, "width", 2)
    if lpips_weights is not None and not os.path.isfile(lpips_weights):
        raise FileNotFoundError(f"compare: lpips_weights file {lpips_weights!r} does not exist")
    if fid_weights is not None and not os.path.isfile(fid_weights):
        raise FileNotFoundError(f"compare: fid_weights file {fid_weights!r} does not exist (make it with "
                                "mmu.metrics.inception.convert_torch_weights from pytorch-fid's weights)")
    # under mpirun every rank trains each entry data parallel (Trainer's automatic distributed mode, batch_size
    # per rank); rank 0 alone prints and writes the models and the report
    from . import distributed as _dist
    _dist.init()
    main_rank = _dist.get_rank() == 0
    progress = progress and main_rank
    say = print if progress else (lambda *a, **k: None)

    if video:
        train_data, test_data = _moving_splits(size, frames, seed, fast)
        test_images = np.ascontiguousarray(test_data.clips, np.float32)   # held-out clips (N, 1, T, H, W)
        n_train, n_test, unit = len(train_data), len(test_images), "clips"
    else:
        train_data, test_data = data.load_splits(dataset, size, seed=seed)  # disjoint; .split says how each was formed
        test_images = np.ascontiguousarray(test_data.images[:FAST_EVAL_IMAGES] if fast else test_data.images,
                                           np.float32)
        n_train, n_test, unit = len(train_data), len(test_images), "images"
    if n_train < batch_size:
        raise ValueError(f"compare: the training split of {dataset!r} has {n_train} {unit}, fewer than "
                         f"batch_size={batch_size}")
    channels = int(train_data.shape[1])
    entries = []  # built (and overridden) before any training: an unmatched size fails at once
    for name in names:
        entry = REGISTRY[name](channels, size, fast)
        if not isinstance(entry, Entry):
            raise TypeError(f"compare: the factory of {name!r} must return an Entry, got {type(entry).__name__}")
        if codebook_size is not None:
            entry = with_codebook_size(entry, codebook_size)
        if width is not None:
            entry = with_width(entry, width)
        if video:
            entry = _with_frames(entry, frames)
            _check_entry_takes_clips(entry, test_images[:1], seed)
        entries.append(entry)
    lpips_model = _load_lpips(lpips_weights) if lpips_weights is not None else None
    fid = None
    if fid_weights is not None:   # the held-out images' Inception statistics, once for every entry
        fid = mmu.metrics.FID(weights=fid_weights, batch_size=16)   # ~20 MB of activations an image at 299 px
        fid.update(test_images, real=True)
    if main_rank:
        os.makedirs(out_dir, exist_ok=True)
    what = f"{size} px clips of {frames} frames" if video else f"{size} px"
    say(f"mmu compare: {len(names)} tokenizer(s) on {dataset} at {what} ({n_train} train / {n_test} held-out "
        f"{unit}), {steps} steps x batch {batch_size}{' clips' if video else ''} each -> {out_dir}")
    say(f"  train: {train_data.split}\n  held out: {test_data.split}")

    rows, extras = [], []
    total, cpu0 = time.perf_counter(), time.process_time()
    interrupted = None
    try:
        for i, (name, entry) in enumerate(zip(names, entries)):
            say(f"[{i + 1}/{len(names)}] {entry.label}: training {steps} steps ...", flush=True)
            if video:
                layout = _entry_layout(entry)
                # a video tokenizer trains on clips; an image tokenizer on the same clips' frames
                entry_data, entry_batch = (train_data.clips, batch_size) if layout == "3d" else \
                    (train_data.frames(), batch_size * frames)
                model, history, seconds = train_entry(entry, entry_data, steps, entry_batch, seed, progress)
                m, codes, recon = evaluate_clips(model, test_images, 1 if fast else 5)
            else:
                model, history, seconds = train_entry(entry, train_data, steps, batch_size, seed, progress,
                                                      lpips_weights)
                m, codes, recon = evaluate(model, test_images, 1 if fast else 5, lpips_model, fid)
            row = {"name": name, "label": entry.label, "tokenizer": _tokenizer_name(entry.tokenizer),
                   "layout": _layout(model),
                   "quantizer": str(getattr(getattr(model, "config", None), "quantizer",
                                            entry.config.get("quantizer", ""))),
                   "params": _generator_params(model), "steps": steps,
                   "batch_size": entry_batch if video else batch_size}
            row.update(m)
            row["train_time_s"] = float(seconds)
            records = list(getattr(history, "records", []) or [])
            if main_rank:
                model.save_pretrained(os.path.join(out_dir, "models", name))
                with open(os.path.join(out_dir, "models", name, "mmu_data.json"), "w") as f:
                    json.dump({"dataset": dataset, "size": size, "channels": channels}
                              | ({"frames": frames} if video else {}), f)
            rows.append(row)  # an entry counts once its model is saved
            extras.append({"entry": entry, "codes": codes, "recon": recon[:N_SHOW], "records": records})
            say(f"    {seconds:.1f} s: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                + (f"temporal error {row['temporal_error']:.4f}, " if video else "")
                + f"usage {100 * row['usage']:.0f}%, perplexity {row['perplexity']:.1f}", flush=True)
    except KeyboardInterrupt:
        if not rows:
            raise  # nothing finished: no report to write
        interrupted = {"finished": [r["name"] for r in rows], "not_finished": names[len(rows):]}
        say(f"mmu compare: interrupted during {names[len(rows)]}; writing the report of the {len(rows)} "
            "finished tokenizer(s)", flush=True)

    config = {"dataset": dataset, "size": size, "channels": channels, "steps": steps, "batch_size": batch_size,
              "seed": seed, "fast": bool(fast), "train_images": n_train, "heldout_images": n_test,
              "train_split": train_data.split, "heldout_split": test_data.split,
              "lpips_weights": os.fspath(lpips_weights) if lpips_weights is not None else None,
              "codebook_size": codebook_size, "width": width,
              "fid_weights": os.fspath(fid_weights) if fid_weights is not None else None,
              "entries": {x["entry"].name: {"tokenizer": _tokenizer_name(x["entry"].tokenizer),
                                             "config": x["entry"].config,
                                             "train": x["entry"].train, "per_step": x["entry"].per_step,
                                             "train_per_step": x["entry"].train_per_step,
                                             "description": x["entry"].description}
                          for x in extras}}
    if video:
        config.update(frames=frames, train_clips=n_train, heldout_clips=n_test,
                      digit_size=int(train_data.digit_size))
    config["wall_time_s"] = round(time.perf_counter() - total, 1)
    config["cpu_time_s"] = round(time.process_time() - cpu0, 1)  # all threads; > wall when they overlap
    if interrupted is not None:
        config["interrupted"] = interrupted
    if main_rank:
        write_report(out_dir, rows, extras, test_images[:N_SHOW], config, time.perf_counter() - total)
    _dist.barrier()   # the other ranks return once the report is written
    say(f"report: {os.path.join(out_dir, 'report.md')} ({time.perf_counter() - total:.0f} s wall, "
        f"{config['cpu_time_s']:.0f} s CPU)")
    if interrupted is not None:
        raise KeyboardInterrupt
    return rows


def _moving_splits(size, frames, seed, fast):
    """(train, held-out) MovingDigits of the moving-digits mode, each with a `.split` line."""
    from mmu import data

    digit_size = 16 if size > 16 else 8
    out = []
    for split, n in (("train", FAST_TRAIN_CLIPS if fast else None), ("test", FAST_EVAL_CLIPS if fast else None)):
        ds = data.moving_digits(n, frames=frames, size=size, split=split, seed=seed, digit_size=digit_size,
                                split_seed=seed)
        ds.split = (f"{len(ds)} clips of {frames} frames, {size}x{size}, one {digit_size} px digit moving or "
                    f"bouncing (mmu.data.moving_digits, split {split!r}, seed {seed}: the held-out clips show "
                    f"the held-out 20% of scikit-learn's digits)")
        out.append(ds)
    return tuple(out)


def _entry_layout(entry):
    cls = _tokenizer_class(entry.tokenizer)
    return getattr(cls, "latent_layout", "2d")


def entry_layout(name):
    """The latent layout ("1d", "2d" or "3d") of the tokenizer of the registered entry `name`."""
    if name not in REGISTRY:
        raise ValueError(f"compare.entry_layout: unknown entry {name!r}; available: {', '.join(REGISTRY)}")
    return _entry_layout(REGISTRY[name](1, FAST_VIDEO_SIZE, True))


def _video_names():
    """The registered entries whose tokenizer has a 3-D (video) latent layout, in registry order."""
    out = []
    for name, factory in REGISTRY.items():
        if name in DEFAULT_NAMES:
            continue
        try:
            entry = factory(1, FAST_VIDEO_SIZE, True)
        except Exception:  # noqa: BLE001 - an entry that cannot be built at this size is not a default
            continue
        if isinstance(entry, Entry) and _entry_layout(entry) == "3d":
            out.append(name)
    return out


def _with_frames(entry, frames):
    """A video entry with config num_frames = frames (when its config has that field), then its video_config;
    image entries unchanged."""
    if _entry_layout(entry) != "3d":
        return entry
    cls = _tokenizer_class(entry.tokenizer)
    fields_ = {f.name for f in dataclasses.fields(cls.config_class)} if getattr(cls, "config_class", None) else ()
    cfg = dict(entry.config, num_frames=frames) if "num_frames" in fields_ else dict(entry.config)
    cfg.update(entry.video_config)
    return dataclasses.replace(entry, config=cfg)


def _check_entry_takes_clips(entry, clip, seed):
    """Builds entry's tokenizer and encodes one held-out clip: an entry that cannot take the mode's clips
    (frame count, size, channels) fails before any training, with its name in the message."""
    import mmu

    cls = _tokenizer_class(entry.tokenizer)
    if cls is None:
        raise ValueError(f"compare: entry {entry.name!r} names tokenizer class {entry.tokenizer!r}, "
                         "which mmu.tokenizers does not have")
    fields_ = dict(entry.config)
    for key in entry.per_step:
        fields_.setdefault(key, 1)
    mmu.manual_seed(seed)
    model = cls(**fields_)
    try:
        with mmu.no_grad():
            encode_clips(model, clip, 1)
    except ValueError as e:
        raise ValueError(f"compare: entry {entry.name!r} ({_layout(model)} layout) cannot take the moving-digits "
                         f"clips of shape {clip.shape[1:]}: {e}") from e


# --------------------------------------------------------------------------- the report
COLUMNS = [  # (key, header, format)
    ("label", "tokenizer", "{}"),
    ("layout", "layout", "{}"),
    ("quantizer", "quantizer", "{}"),
    ("codebook_size", "codebook", "{:d}"),
    ("tokens_per_image", "tokens/img", "{:d}"),
    ("bits_per_image", "bits/img", "{:.0f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("lpips", "LPIPS", "{:.3f}"),
    ("rfid", "rFID", "{:.2f}"),
    ("usage", "usage", "{:.0%}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("params", "gen. params", "{:,d}"),
    ("train_time_s", "train s", "{:.1f}"),
    ("encode_img_s", "encode img/s", "{:,.0f}"),
    ("decode_img_s", "decode img/s", "{:,.0f}"),
]


VIDEO_COLUMNS = [  # the moving-digits mode (rows with tokens_per_clip)
    ("label", "tokenizer", "{}"),
    ("layout", "layout", "{}"),
    ("quantizer", "quantizer", "{}"),
    ("codebook_size", "codebook", "{:d}"),
    ("tokens_per_clip", "tokens/clip", "{:d}"),
    ("tokens_per_frame", "tokens/frame", "{:.4g}"),
    ("bits_per_clip", "bits/clip", "{:.0f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("temporal_error", "temporal err", "{:.4f}"),
    ("usage", "usage", "{:.0%}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("params", "gen. params", "{:,d}"),
    ("train_time_s", "train s", "{:.1f}"),
    ("encode_clip_s", "encode clips/s", "{:,.1f}"),
    ("decode_clip_s", "decode clips/s", "{:,.1f}"),
]
_LEFT = ("label", "quantizer", "layout")


def _is_video(rows):
    return any("tokens_per_clip" in r for r in rows)


def markdown_table(rows):
    """The comparison as a Markdown table (the LPIPS column only when measured; the moving-digits mode's rows,
    with tokens_per_clip, get VIDEO_COLUMNS)."""
    cols = [c for c in (VIDEO_COLUMNS if _is_video(rows) else COLUMNS) if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "|".join("---" if k in _LEFT else "---:" for k, _, _ in cols) + "|"]
    for r in rows:
        cells = []
        for k, _, fmt in cols:
            v = r.get(k)
            cells.append("" if v is None else (fmt.format(v) if not (isinstance(v, float) and math.isnan(v))
                                               else "nan"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_LAYOUT_NAMES = {"1d": "1-D", "2d": "2-D", "3d": "3-D"}


def token_count_groups(rows):
    """The rows grouped by token count (tokens_per_image; tokens_per_clip for clips), ascending:
    [(tokens, [rows])], each group's rows best PSNR first."""
    key = "tokens_per_clip" if _is_video(rows) else "tokens_per_image"
    groups = {}
    for r in rows:
        if r.get(key) is not None:
            groups.setdefault(int(r[key]), []).append(r)
    return [(k, sorted(groups[k], key=lambda r: -float(r.get("psnr", float("-inf"))))) for k in sorted(groups)]


def token_count_section(rows):
    """The report's view of 1-D against 2-D (and 3-D) tokenizers at equal token counts: Markdown lines, one
    bullet per token count listing its rows (layout, PSNR, SSIM, temporal error for clips), and where a count
    has both a 1-D and a 2-D row, the PSNR difference of the best of each."""
    video = _is_video(rows)
    unit = "clip" if video else "image"
    lines = [f"## Equal token counts: 1-D against 2-D{' and 3-D' if video else ''}", "",
             f"Every row grouped by its tokens per {unit} (held-out PSNR / SSIM"
             + (" / temporal error" if video else "") + "; best PSNR first):", ""]
    for tokens, group in token_count_groups(rows):
        cells = []
        for r in group:
            cell = (f"{r['label']} ({_LAYOUT_NAMES.get(r.get('layout'), r.get('layout', '?'))}) "
                    f"{r['psnr']:.2f} dB / {r['ssim']:.3f}")
            if video:
                cell += f" / {r['temporal_error']:.4f}"
            cells.append(cell)
        line = f"- **{tokens} tokens**: " + "; ".join(cells)
        best = {}
        for r in group:
            best.setdefault(r.get("layout"), r)   # the group is sorted best first
        if "1d" in best and "2d" in best:
            d = best["2d"]["psnr"] - best["1d"]["psnr"]
            line += (f". Best 2-D ({best['2d']['label']}) minus best 1-D ({best['1d']['label']}): "
                     f"{d:+.2f} dB")
        lines.append(line)
    if not any(len({r.get("layout") for r in g}) > 1 for _, g in token_count_groups(rows)):
        lines += ["", "(No token count here has tokenizers of two layouts: pick entries with equal counts, e.g. a "
                      "1-D tokenizer of 64 tokens beside `vqvae-ema-f2`, an 8x8 grid at 16 px.)"]
    return lines


def _image_grid(fig_rows, labels, path):
    """fig_rows: list of (n, C, H, W) arrays in [-1, 1]; one labelled row each."""
    from matplotlib.figure import Figure

    n = max(len(r) for r in fig_rows)
    width = 1.1 * n + 1.6
    fig = Figure(figsize=(width, 1.15 * len(fig_rows) + 0.2))
    axes = fig.subplots(len(fig_rows), n, squeeze=False)
    for i, (imgs, label) in enumerate(zip(fig_rows, labels)):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(imgs):
                im = np.clip((np.asarray(imgs[j], np.float32) + 1.0) / 2.0, 0.0, 1.0)
                if im.ndim == 4:  # a clip (C, T, H, W): its first frame
                    im = im[:, 0]
                if im.shape[0] == 1:
                    ax.imshow(im[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(im[:3].transpose(1, 2, 0), interpolation="nearest")
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    # room for the labels: 1.6 inches (0.16 of the 8-image figure; more of a narrower one)
    fig.subplots_adjust(left=min(0.4, 1.6 / width), right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=100)


CLIPS_SHOWN = 2   # held-out clips in the moving-digits reconstructions.png


def _clip_grid(originals, extras, path):
    """reconstructions.png of the moving-digits mode: for each of the first CLIPS_SHOWN held-out clips, the
    original's frames in a row, then each tokenizer's reconstruction of them (frames left to right)."""
    fig_rows, labels = [], []
    for k in range(min(CLIPS_SHOWN, len(originals))):
        frames = lambda clip: np.moveaxis(np.asarray(clip), 1, 0)  # noqa: E731 - (C, T, H, W) -> (T, C, H, W)
        fig_rows.append(frames(originals[k]))
        labels.append(f"clip {k + 1}: original")
        for x in extras:
            fig_rows.append(frames(x["recon"][k]))
            labels.append(x["entry"].label)
    _image_grid(fig_rows, labels, path)


def _per_frame_plot(rows, path):
    """per_frame.png: held-out PSNR at each frame index and the temporal error at each frame pair, per tokenizer."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    a, b = fig.subplots(1, 2)
    for r in rows:
        a.plot(np.arange(len(r["psnr_per_frame"])), r["psnr_per_frame"], marker="o", label=r["label"])
        b.plot(np.arange(1, len(r["temporal_error_per_frame"]) + 1), r["temporal_error_per_frame"], marker="o",
               label=r["label"])
    a.set_title("held-out PSNR at each frame (dB)", fontsize=10)
    a.set_xlabel("frame t")
    b.set_title("temporal error of frames (t-1, t): RMS of (r_t - r_t-1) - (x_t - x_t-1)", fontsize=10)
    b.set_xlabel("frame t")
    for ax in (a, b):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def _scaled_to_unit(values):
    """(v - min) / (max - min): one tokenizer's loss on [0, 1], whatever its terms and their scale
    (VQGAN's adversarial terms put its loss orders of magnitude above a VQ-VAE's; some losses go negative)."""
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return v
    lo, hi = finite.min(), finite.max()
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def _loss_curves(extras, path, batch_ceilings=None):
    """Training curves from the History records: batch PSNR (comparable across tokenizers, whose loss
    terms differ in kind), batch codebook usage (with a dashed line at the ceiling a batch imposes,
    batch_ceilings[label] < 1), and each tokenizer's own total loss scaled to [0, 1] per tokenizer."""
    from matplotlib.figure import Figure

    panels = [("psnr", "reconstruction PSNR of the training batch (dB)", "linear"),
              ("usage", "codebook usage of the training batch", "linear"),
              ("loss", "generator loss, each scaled to [0, 1]: (loss - min) / (max - min)", "linear")]
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, len(panels))
    for ax, (key, title, scale) in zip(axes, panels):
        for x in extras:
            recs = [r for r in x["records"] if "step" in r and _num(r.get(key)) is not None]
            if recs:
                values = [_num(r.get(key)) for r in recs]
                if key == "loss":
                    values = _scaled_to_unit(values)
                line, = ax.plot([r["step"] for r in recs], values, label=x["entry"].label)
                ceiling = (batch_ceilings or {}).get(x["entry"].label)
                if key == "usage" and ceiling is not None and ceiling < 1:
                    ax.axhline(ceiling, color=line.get_color(), linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale(scale)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def _usage_plot(rows, extras, path):
    from matplotlib.figure import Figure

    n = len(extras)
    cols = min(3, n)
    nrows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.0 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)  # one y scale: the panels compare
    for k, (row, x) in enumerate(zip(rows, extras)):
        ax = axes[k // cols][k % cols]
        K = int(row["codebook_size"])
        counts = np.bincount(np.asarray(x["codes"]).reshape(-1).astype(np.int64), minlength=K)
        freq = np.sort(counts)[::-1] / max(1, counts.sum())
        # one filled step polygon, not K bar patches (K = 2^14 bars take matplotlib seconds per panel)
        ax.fill_between(np.arange(K), freq, step="mid", color="C0", linewidth=0)
        ax.set_title(f"{row['label']}: {row['usage']:.0%} used, ppl {row['perplexity']:.0f}/{K}", fontsize=9)
        ax.set_xlabel("code (sorted by frequency)", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel("fraction of held-out tokens", fontsize=8)
        ax.set_xlim(-0.5, K - 0.5)
    for k in range(n, nrows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def usage_ceilings(rows, batch_size, heldout_images):
    """Usage counts the distinct codes in a sample, so n tokens can use at most n of K codes.
    Returns ({label: batch ceiling}, [report lines]) for the rows where a training batch
    (batch_size x tokens/img) or the held-out set (heldout_images x tokens/img) holds fewer tokens
    than the codebook has codes."""
    batch, lines = {}, []
    for r in rows:
        k = r.get("codebook_size")
        t, unit = (r.get("tokens_per_clip"), "clips") if "tokens_per_clip" in r else (r.get("tokens_per_image"),
                                                                                    "images")
        if not k or not t:
            continue
        batch[r["label"]] = min(1.0, batch_size * t / k)
        parts = []
        if batch_size * t < k:
            parts.append(f"a training batch holds {batch_size} x {t} = {batch_size * t} tokens, so the batch "
                         f"usage in loss_curves.png is at most {batch_size * t / k:.0%} (dashed line)")
        if heldout_images * t < k:
            parts.append(f"the {heldout_images} held-out {unit} hold {heldout_images * t} tokens, so the usage "
                         f"column is at most {heldout_images * t / k:.0%}")
        if parts:
            lines.append(f"- {r['label']} ({k} codes): " + "; ".join(parts) + ".")
    return batch, lines


def write_report(out_dir, rows, extras, originals, config, seconds=None):
    """Writes report.md, report.csv, reconstructions.png, loss_curves.png and usage.png into out_dir.
    extras[i] = {"entry": Entry, "codes": held-out codes, "recon": reconstructions of `originals`,
    "records": the training History records}."""
    os.makedirs(out_dir, exist_ok=True)
    video = config.get("dataset") in VIDEO_DATASETS
    keys = []
    for r in rows:   # the per-frame lists go to report.json only
        keys += [k for k in r if k not in keys and not isinstance(r[k], (list, tuple))]
    with open(os.path.join(out_dir, "report.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(_to_jsonable({"rows": rows, "config": config}), f, indent=1)
    machine = machine_info()
    batch_ceilings, ceiling_lines = usage_ceilings(rows, config["batch_size"], config["heldout_images"])
    stop = config.get("interrupted")
    md = [f"# mmu compare: {config['dataset']} at {config['size']} px"
          + (f", clips of {config['frames']} frames" if video else ""), ""]
    if stop:
        md += [f"**Interrupted** (Ctrl-C) during {stop['not_finished'][0]}: this report covers the "
               f"{len(stop['finished'])} tokenizer(s) that finished ({', '.join(stop['finished'])}); not finished: "
               f"{', '.join(stop['not_finished'])}.", ""]
    fast_note = " **fast mode** (tiny models, a few steps: the numbers mean nothing)." if config.get("fast") else ""
    if video:
        md += [f"{config['steps']} training steps per tokenizer on {config['train_clips']} training clips of "
               f"{config['frames']} frames (seed {config['seed']}): a video tokenizer takes batches of "
               f"{config['batch_size']} clips, an image tokenizer batches of their {config['batch_size']} x "
               f"{config['frames']} frames (the same pixels a step); metrics on {config['heldout_clips']} held-out "
               f"clips." + fast_note, "", markdown_table(rows), "",
               f"Data: train: {config['train_split']}; held out: {config['heldout_split']}.", "",
               "Video (3-D) tokenizers encode each clip; image (2-D and 1-D) tokenizers encode each frame on its own. "
               "PSNR / SSIM: per frame (data range 2; SSIM with the 11x11 Gaussian window of Wang et al. 2004), "
               "averaged over frames and clips; report.json has them per frame index (psnr_per_frame, "
               "ssim_per_frame). temporal err: the flicker a tokenizer adds, for each pair of consecutive frames "
               "the RMS over pixels of (r_t - r_{t-1}) - (x_t - x_{t-1}) (reconstruction r, original x; the "
               "change of the reconstruction error between frames: 0 for an error that stays put, 2c for an "
               "offset alternating +-c; TecoGAN's tOF with pixel differences for optical flow), averaged over "
               "frame pairs and clips (per pair in report.json: temporal_error_per_frame); lower is better. "
               "tokens/clip: the codes of one clip (an image tokenizer: frames x tokens per frame); bits/clip = "
               "tokens/clip x log2(codebook). usage / perplexity: of the held-out codes. gen. params: trainable "
               "parameters of the encoder, quantizer and decoder. train s: wall time of Trainer.fit. encode / "
               f"decode clips/s: the best of 5 timed runs on {EVAL_CLIPS} clips.", ""]
    else:
        md += [f"{config['steps']} training steps x batch {config['batch_size']} per tokenizer on "
           f"{config['train_images']} training images (seed {config['seed']}); metrics on "
           f"{config['heldout_images']} held-out images." + fast_note,
           "", markdown_table(rows), ""] + ([
           f"Data: train: {config['train_split']}; held out: {config['heldout_split']}"
           + (f" (the first {config['heldout_images']} of them)" if config.get("fast") else "") + ".", ""]
           if config.get("train_split") else []) + [
           "PSNR/SSIM: decode(encode(x)) against x on the held-out images (data range 2, SSIM with the 11x11 "
           "Gaussian window of Wang et al. 2004). usage: fraction of the codebook used on the held-out "
           "images; perplexity: exp(entropy) of the held-out code histogram (the codebook size is the "
           "maximum). bits/img = tokens/img x log2(codebook). gen. params: trainable parameters of the encoder, "
           "quantizer and decoder (what encode/decode use; a discriminator is not counted). train s: wall time "
           "of Trainer.fit. encode/decode img/s: the best of 5 timed runs on batches of " + str(EVAL_BATCH)
           + " images. The loss curves are scaled per tokenizer (their terms differ in kind and scale).", ""]
    if ceiling_lines:
        md += ["Usage ceilings: usage counts the distinct codes in a sample, and n tokens can use at most n of "
               "the K codes:", ""] + ceiling_lines + [""]
    md += token_count_section(rows) + [""]
    md += ["![reconstructions](reconstructions.png)", ""] + (["![per frame](per_frame.png)", ""] if video else []) \
        + ["![loss curves](loss_curves.png)", "", "![code usage](usage.png)", "", "## Tokenizers", ""]
    for name, e in config["entries"].items():
        md.append(f"- **{name}** ({e['tokenizer']}): {e['description']}")
    md += ["", "## Configuration", "", "```json", json.dumps(_to_jsonable(config), indent=2), "```", "",
           "## Machine", ""]
    md += [f"- {k}: {v}" for k, v in machine.items()]
    if seconds is not None:
        md.append(f"- total wall time: {seconds:.1f} s"
                  + (f" (process CPU time {config['cpu_time_s']:.1f} s)" if "cpu_time_s" in config else ""))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    if video:
        _clip_grid(np.asarray(originals), extras, os.path.join(out_dir, "reconstructions.png"))
        _per_frame_plot(rows, os.path.join(out_dir, "per_frame.png"))
    else:
        labels = ["original"] + [x["entry"].label for x in extras]
        _image_grid([np.asarray(originals)] + [x["recon"] for x in extras], labels,
                    os.path.join(out_dir, "reconstructions.png"))
    _loss_curves(extras, os.path.join(out_dir, "loss_curves.png"), batch_ceilings)
    _usage_plot(rows, extras, os.path.join(out_dir, "usage.png"))
