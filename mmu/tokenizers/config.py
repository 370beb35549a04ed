"""Config dataclasses of the tokenizers: JSON-serialisable fields only (ints, floats, strings, lists, dicts),
so `save_pretrained` writes them into config.json and `from_pretrained` rebuilds the same model.

Defaults follow the papers / reference code cited on each class's docstring.
"""
from dataclasses import asdict, dataclass, field, fields

__all__ = ["VQVAEConfig", "DVAEConfig", "VQGANConfig", "QUANTIZERS"]

QUANTIZERS = ("vq", "ema_vq", "fsq", "lfq", "rvq")


def _listify(v):
    # tuples -> lists so a config equals its JSON round trip
    if isinstance(v, tuple):
        return [_listify(x) for x in v]
    if isinstance(v, list):
        return [_listify(x) for x in v]
    if isinstance(v, dict):
        return {k: _listify(x) for k, x in v.items()}
    return v


class _Config:
    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _listify(getattr(self, f.name)))

    def to_dict(self):
        """The config as a plain JSON-serialisable dict (dataclasses.asdict)."""
        return asdict(self)

    # ---- field checks shared by the model configs' validate() (errors name the class, field and value)
    def _field_error(self, name, want, exc=ValueError):
        raise exc(f"{type(self).__name__}: {name} must be {want}, got {getattr(self, name)!r}")

    def _check_ints(self, specs):
        """specs: (field, lowest allowed value) pairs; each field must be an int >= its lowest value."""
        import numbers
        for name, low in specs:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                self._field_error(name, f"an int >= {low}", TypeError)
            if v < low:
                self._field_error(name, f"an int >= {low}")
            object.__setattr__(self, name, int(v))

    def _check_reals(self, specs):
        """specs: (field, low, high or None, low allowed) tuples; each field must be a finite number in
        the range, and is stored as a float."""
        import math
        import numbers
        for name, low, high, low_ok in specs:
            v = getattr(self, name)
            want = f"a number {'>=' if low_ok else '>'} {low}" + (f" and <= {high}" if high is not None else "")
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                self._field_error(name, want, TypeError)
            if not math.isfinite(v) or (v < low if low_ok else v <= low) or (high is not None and v > high):
                self._field_error(name, want)
            object.__setattr__(self, name, float(v))

    @classmethod
    def from_dict(cls, d):
        """The config from a dict such as to_dict() wrote; unknown keys raise TypeError naming them."""
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}.from_dict: expected a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown field(s) {unknown}; the fields are {sorted(names)}")
        return cls(**d)


@dataclass
class _ConvAEConfig(_Config):
    """The fields of the VQ-VAE conv encoder/decoder layout, which DVAE reuses (mmu.tokenizers.blocks
    ConvEncoder / ConvDecoder); each subclass adds its quantizer default and its loss fields."""
    in_channels: int = 3
    hidden_channels: int = 128
    res_channels: int = 32
    num_res_blocks: int = 2
    downsample: int = 4
    embed_dim: int = 64
    codebook_size: int = 512
    quantizer: str = "vq"
    quantizer_kwargs: dict = field(default_factory=dict)
    resolution: int = 32


@dataclass
class VQVAEConfig(_ConvAEConfig):
    """VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"; the DeepMind Sonnet
    layout): log2(downsample) strided 4x4 convs (stride 2), a 3x3 conv, num_res_blocks residual blocks
    (ReLU-3x3(res_channels)-ReLU-1x1), a 1x1 conv to embed_dim; the decoder mirrors it with transposed
    4x4 convs. MSE reconstruction + the quantizer's loss (commitment beta = 0.25 as in the paper).

    quantizer: one of "vq" (learnable codebook, codebook + beta-commitment loss), "ema_vq" (EMA decay 0.99,
    k-means init, dead-code restart), "fsq" (levels from codebook_size, e.g. [8, 5, 5, 5] for 1024),
    "lfq" (codebook_size = 2^bits), "rvq" (4 EMA levels); quantizer_kwargs override the defaults."""
    quantizer: str = "vq"
    beta: float = 0.25


@dataclass
class DVAEConfig(_ConvAEConfig):
    """Discrete VAE (DALL-E, Ramesh et al. 2021, appendix A): a conv encoder (the VQ-VAE layout here) whose
    features give logits over codebook_size codes (GumbelQuantize: 1x1 conv), a Gumbel-softmax sample with
    temperature annealed from temp_start to temp_end (cosine, DALL-E: 1 -> 1/16 over 150k steps) by the
    training step, a KL to the uniform prior with kl_weight (taming's GumbelQuantize default 5e-4), and
    the reconstruction loss `recon`: "logit_laplace" (DALL-E: the decoder emits 2C channels, mu and log b,
    eps 0.1), "l1" or "l2". quantizer is always "gumbel" (quantizer_kwargs go to GumbelQuantize)."""
    quantizer: str = "gumbel"
    recon: str = "logit_laplace"
    logit_laplace_eps: float = 0.1
    kl_weight: float = 5e-4
    temp_start: float = 1.0
    temp_end: float = 1.0 / 16
    temp_anneal_steps: int = 150_000


@dataclass
class _VQGANLossConfig(_Config):
    """The quantizer and loss fields of the taming-style tokenizers (VQGANConfig, MAGVIT2Config), with
    VQGAN's defaults: the quantizer (codebook_size, quantizer, quantizer_kwargs, beta), the loss weights
    (pixel L1, LPIPS perceptual, codebook) and the PatchGAN discriminator (see VQGANConfig)."""
    codebook_size: int = 1024
    quantizer: str = "vq"
    quantizer_kwargs: dict = field(default_factory=dict)
    beta: float = 0.25
    codebook_weight: float = 1.0
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    lpips_weights: str = None
    lpips_random: bool = False
    use_discriminator: bool = True
    disc_start: int = 0
    disc_weight: float = 0.8
    disc_factor: float = 1.0
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_norm: str = "batch"
    disc_loss: str = "hinge"


@dataclass
class VQGANConfig(_VQGANLossConfig):
    """VQGAN (Esser et al. 2021, taming-transformers): Encoder/Decoder with GroupNorm(32, eps 1e-6) + swish
    ResnetBlocks, single-head AttnBlocks at attn_resolutions, pad(0,1,0,1) + stride-2 conv downsampling,
    nearest + conv upsampling; quant_conv / post_quant_conv 1x1 between z_channels and embed_dim.
    Loss (VQLPIPSWithDiscriminator): pixel_weight * L1 + perceptual_weight * LPIPS + codebook_weight * the
    quantizer loss (beta on the commitment term) + disc_factor * adopt_weight(step, disc_start) * d_weight *
    g_loss, d_weight = adaptive_weight(nll, g_loss, decoder.conv_out.weight) * disc_weight; PatchGAN
    discriminator (disc_ndf, disc_layers, disc_norm) trained with the hinge (or vanilla) loss.
    Defaults: taming's ImageNet f16 model (ch 128, ch_mult [1,1,2,2,4], 2 res blocks, attn at 16,
    z 256, 1024 codes, beta 0.25, disc_weight 0.8). LPIPS needs converted weights (lpips_weights, see
    mmu.losses.lpips.convert_torch_weights); lpips_random=True allows a randomly initialised LPIPS
    (tests/benchmarks only); perceptual_weight=0 needs neither."""
    in_channels: int = 3
    out_channels: int = None
    ch: int = 128
    ch_mult: list = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list = field(default_factory=lambda: [16])
    dropout: float = 0.0
    z_channels: int = 256
    embed_dim: int = 256
    resolution: int = 256
    norm_groups: int = 32
