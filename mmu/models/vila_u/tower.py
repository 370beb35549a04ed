"""UnifiedVisionTower: VILA-U's unified foundation vision tower (Wu et al., ICLR 2025; mit-han-lab/vila-u,
rqvaesigliptransformer/rqvaesiglip): a SigLIP vision encoder cut after layer `quantize_after` (VILA-U:
the second-to-last layer), a residual quantizer with ONE shared codebook (RQBottleneck), post_quant_conv
and a taming conv decoder to pixels, and a text encoder for the image-text contrastive loss.

What follows the released code (modeling_rqvaesiglip.py, quantizations.py):
- encode: patch + position embedding, SigLIP layers 0 .. quantize_after-1, the (B, h, w, C) grid
  quantized by residual quantization (depth D, shared codebook, nearest code by squared distance, the
  residual loop), codes (B, h, w, D) with the depth last;
- the straight-through estimator on the SUM of the depths, z_q = z + sg(sum_d e(k_d) - z) (VILA-U's
  quants_trunc = x + (quants_trunc - x).detach()): the gradient reaching z is the decoder's / head's
  gradient once, not once per depth as vector-quantize-pytorch's ResidualVQ gives it;
- commitment = mean over depths d of mse(z, sg(sum_{i<=d} e(k_i))) (compute_commitment_loss), weighted
  by commitment_weight (VILA-U's latent_loss_weight 0.25); EMA codebook (decay 0.99) with restart of the
  codes whose EMA count falls below 1 (restart_unused_codes), as mmu's EMA VectorQuantize does it;
- decode: z_q (B, C, h, w) -> [with decoder_latent_shape (h', w'): torch.nn.functional.interpolate to
  (h', w'), mode 'bilinear', align_corners False, in float32 -- the 384-px release resizes its 27 x 27 grid
  (729 tokens) to the size its decoder's 2^k upsampling turns into 384 px] -> post_quant_conv (1x1, C ->
  z_channels) -> Decoder (taming's: conv_in, mid, up levels, norm_out, swish, conv_out);
- code_embeddings (get_code_emb_with_depth / embed_code_with_depth): the codebook vector of every depth's
  code, (..., D, C), without gradient into the codebook; their sum over D is what the decoder sees.

What the released code does not contain (it ships no tower training code) and follows the paper
(sec. 3.1, "Unified Foundation Vision Tower", and 4.1): the quantized features feed BOTH the decoder and
the contrastive head -- here the SigLIP layers after quantize_after, the final LayerNorm and SigLIP's
attention-pooling head run on z_q to give the image embedding; loss = contra_weight * contrastive
(SigLIP's sigmoid loss or CLIP's softmax) + recon_weight * (L1 or L2 + lpips_weight * LPIPS +
gan_weight * adaptive weight * PatchGAN generator loss) + the commitment term, weights 1 and 1 by
default; and the training stages (mmu.models.vila_u.recipe): "align" (contrastive only on the continuous
features, text encoder trained), "tower" (text encoder frozen, contrastive + reconstruction on the
quantized features), "joint" (both losses from scratch, nothing frozen: the recipe the paper reports
does not converge).
"""
from dataclasses import dataclass, field

import numpy as np

from ... import functional as F
from ...autograd import is_grad_enabled, no_grad
from ...losses import clip_loss, hinge_d_loss, siglip_loss, vanilla_d_loss
from ...text.tokenizer import SavesTextTokenizer
from ...losses.lpips import PerceptualLPIPS
from ...nn import Conv2d, Linear, Module, Parameter
from ...nn.module import _class_path
from ...quantizers import ResidualVQ
from ...tensor import Tensor, cat as _cat, tensor as _tensor
from ...tokenizers.base import _as_images
from ...tokenizers.blocks import Decoder
from ...tokenizers.config import _Config
from ..._args import is_int
from ..vit import VisionTower
from .text_encoder import TEXT_LAYOUTS, TextEncoder, _ids_array

__all__ = ["UnifiedVisionTowerConfig", "UnifiedVisionTower", "STAGES", "CONTRASTIVE_LOSSES"]

STAGES = ("align", "tower", "joint")
CONTRASTIVE_LOSSES = ("sigmoid", "softmax")
_ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu")


@dataclass
class UnifiedVisionTowerConfig(_Config):
    """Hyperparameters of UnifiedVisionTower (JSON fields; defaults: a tiny tower for 16-px images).

    Vision (SigLIP's layout, mmu.models.vit.VisionTower): image_size, patch_size, in_channels, dim,
    depth (ViT layers), num_heads, hidden_dim (None: 4 dim), activation ('gelu_tanh', SigLIP's),
    norm_eps (1e-6). quantize_after: the layers run before quantizing (None: depth - 1, VILA-U's
    second-to-last layer output); the remaining ones, the final norm and the attention-pooling head
    give the image embedding from the quantized tokens.
    Quantizer (VILA-U's RQBottleneck): codebook_size (VILA-U 16384), rvq_depth (D: VILA-U 4 at 256 px,
    16 at 384 px), codebook_dim (C: None or dim; VILA-U quantizes the features as they are, without a
    projection), shared_codebook (True, VILA-U's), ema_decay (0.99), commitment_weight (0.25, VILA-U's
    latent_loss_weight), dead_code_threshold (1.0: codes whose EMA count drops below it are restarted,
    VILA-U's restart_unused_codes), kmeans_init (mmu: the codebook starts as k-means centres of the
    first batch; VILA-U's starts random).
    The latent grid is floor(image_size / patch_size) each way (SigLIP's stride-patch convolution:
    so400m-patch14-384 gives 27 x 27 of a 384-px image).
    Decoder (taming's, VILA-U's ddconfig): decoder_latent_shape (None: the latent grid; [h', w']: the grid
    is resized bilinearly to h' x w' before post_quant_conv, VILA-U's decoder_latent_shape, set in the
    384-px release), decoder_ch, decoder_ch_mult (the decoder upsamples the (resized) grid by
    2^(len - 1), which must give image_size), decoder_num_res_blocks, decoder_attn_resolutions,
    decoder_z_channels (post_quant_conv's output), decoder_norm_groups.
    Losses: contrastive 'sigmoid' (SigLIP: logit_scale init log 10, logit_bias -10) or 'softmax' (CLIP:
    logit_scale log(1/0.07)); contra_weight 1.0; recon_weight 1.0; recon_loss 'l1' | 'l2'; lpips_weight
    (0: off; needs lpips_weights, a file from mmu.losses.lpips.convert_torch_weights, or lpips_random=True
    for tests); gan_weight (0: off; a PatchGAN of disc_layers layers, disc_ndf filters, disc_loss 'hinge' |
    'vanilla', from step disc_start).
    Shared embedding: embed_dim (None: dim; else a Linear image_proj after the pooling head).
    Text (TextEncoder): text_vocab_size, text_max_len, text_dim, text_depth, text_heads, text_hidden_dim
    (None: 4 text_dim), text_layout 'siglip' | 'clip', text_pad_id (the id -1 pads become, and SigLIP's
    padding to text_max_len), text_eot_id (clip: the pooled end-of-text id; None: the row's highest id).
    """

    image_size: int = 16
    patch_size: int = 4
    in_channels: int = 3
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    hidden_dim: "int | None" = None
    activation: str = "gelu_tanh"
    norm_eps: float = 1e-6
    quantize_after: "int | None" = None
    codebook_size: int = 256
    rvq_depth: int = 4
    codebook_dim: "int | None" = None
    shared_codebook: bool = True
    ema_decay: float = 0.99
    commitment_weight: float = 0.25
    dead_code_threshold: float = 1.0
    kmeans_init: bool = True
    decoder_latent_shape: "list | None" = None
    decoder_ch: int = 32
    decoder_ch_mult: list = field(default_factory=lambda: [1, 1, 2])
    decoder_num_res_blocks: int = 1
    decoder_attn_resolutions: list = field(default_factory=list)
    decoder_z_channels: int = 32
    decoder_norm_groups: int = 32
    contrastive: str = "sigmoid"
    contra_weight: float = 1.0
    recon_weight: float = 1.0
    recon_loss: str = "l1"
    lpips_weight: float = 0.0
    lpips_weights: "str | None" = None
    lpips_random: bool = False
    gan_weight: float = 0.0
    disc_start: int = 0
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_loss: str = "hinge"
    embed_dim: "int | None" = None
    text_vocab_size: int = 64
    text_max_len: int = 16
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 4
    text_hidden_dim: "int | None" = None
    text_layout: str = "siglip"
    text_pad_id: int = 0
    text_eot_id: "int | None" = None

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def _check_choice(self, name, choices):
        v = getattr(self, name)
        if not isinstance(v, str) or v not in choices:
            self._field_error(name, f"one of {tuple(choices)}")

    def _check_optional_int(self, name, low):
        v = getattr(self, name)
        if v is None:
            return
        if not is_int(v):
            self._field_error(name, f"None or an int >= {low}", TypeError)
        if v < low:
            self._field_error(name, f"None or an int >= {low}")
        object.__setattr__(self, name, int(v))

    def _check_bool(self, name):
        v = getattr(self, name)
        if not isinstance(v, (bool, np.bool_)):
            self._field_error(name, "a bool", TypeError)
        object.__setattr__(self, name, bool(v))

    def validate(self):
        """Checks every field (TypeError / ValueError naming the field and its value); fills
        quantize_after (depth - 1), codebook_dim (dim) and embed_dim (dim) when None. Returns self."""
        name = type(self).__name__
        self._check_ints((("image_size", 1), ("patch_size", 1), ("in_channels", 1), ("dim", 1), ("depth", 1),
                          ("num_heads", 1), ("codebook_size", 2), ("rvq_depth", 1), ("decoder_ch", 1),
                          ("decoder_num_res_blocks", 0), ("decoder_z_channels", 1), ("decoder_norm_groups", 1),
                          ("disc_start", 0), ("disc_ndf", 1), ("disc_layers", 1), ("text_vocab_size", 2),
                          ("text_max_len", 1), ("text_dim", 1), ("text_depth", 1), ("text_heads", 1),
                          ("text_pad_id", 0)))
        for opt in ("hidden_dim", "codebook_dim", "embed_dim", "text_hidden_dim"):
            self._check_optional_int(opt, 1)
        self._check_optional_int("quantize_after", 1)
        self._check_optional_int("text_eot_id", 0)
        for b in ("shared_codebook", "kmeans_init", "lpips_random"):
            self._check_bool(b)
        self._check_reals((("norm_eps", 0.0, None, False), ("ema_decay", 0.0, 1.0, True),
                           ("commitment_weight", 0.0, None, True), ("dead_code_threshold", 0.0, None, True),
                           ("contra_weight", 0.0, None, True), ("recon_weight", 0.0, None, True),
                           ("lpips_weight", 0.0, None, True), ("gan_weight", 0.0, None, True)))
        self._check_choice("activation", _ACTIVATIONS)
        self._check_choice("contrastive", CONTRASTIVE_LOSSES)
        self._check_choice("recon_loss", ("l1", "l2"))
        self._check_choice("disc_loss", ("hinge", "vanilla"))
        self._check_choice("text_layout", TEXT_LAYOUTS)
        if self.image_size < self.patch_size:
            raise ValueError(f"{name}: image_size {self.image_size} is smaller than one patch ({self.patch_size})")
        if self.dim % self.num_heads:
            raise ValueError(f"{name}: dim ({self.dim}) must be a multiple of num_heads ({self.num_heads})")
        if self.text_dim % self.text_heads:
            raise ValueError(f"{name}: text_dim ({self.text_dim}) must be a multiple of text_heads ({self.text_heads})")
        if self.quantize_after is None:
            self.quantize_after = max(self.depth - 1, 1)
        if self.quantize_after > self.depth:
            raise ValueError(f"{name}: quantize_after ({self.quantize_after}) must be <= depth ({self.depth}): the "
                             "layers run before quantizing")
        if self.codebook_dim is None:
            self.codebook_dim = self.dim
        if self.codebook_dim != self.dim:
            raise ValueError(f"{name}: codebook_dim ({self.codebook_dim}) must equal dim ({self.dim}): VILA-U "
                             "quantizes the encoder's features without a projection, so the sum of the code "
                             "embeddings is the decoder's input")
        if self.embed_dim is None:
            self.embed_dim = self.dim
        mult = self.decoder_ch_mult
        if not isinstance(mult, list) or not mult or any(not is_int(m) or m < 1 for m in mult):
            self._field_error("decoder_ch_mult", "a non-empty list of ints >= 1")
        attn = self.decoder_attn_resolutions
        if not isinstance(attn, list) or any(not is_int(r) or r < 1 for r in attn):
            self._field_error("decoder_attn_resolutions", "a list of ints >= 1")
        dls = self.decoder_latent_shape
        if dls is not None:
            if not isinstance(dls, (list, tuple)) or len(dls) != 2 or any(not is_int(v) or v < 1 for v in dls):
                self._field_error("decoder_latent_shape", "None or a list of 2 ints >= 1 (h, w)")
            dls = [int(v) for v in dls]
            object.__setattr__(self, "decoder_latent_shape", dls)
        up = 2 ** (len(mult) - 1)
        dh, dw = self.decoder_grid
        if (dh * up, dw * up) != (self.image_size, self.image_size):
            raise ValueError(f"{name}: the decoder upsamples its {dh} x {dw} input (the latent grid image_size // "
                             f"patch_size, or decoder_latent_shape) by 2^(len(decoder_ch_mult) - 1) = {up} to "
                             f"{dh * up} x {dw * up}, not the image_size {self.image_size}")
        if self.text_pad_id >= self.text_vocab_size:
            self._field_error("text_pad_id", f"an id < text_vocab_size ({self.text_vocab_size})")
        if self.text_eot_id is not None:
            if self.text_layout != "clip":
                self._field_error("text_eot_id", "None with text_layout 'siglip' (SigLIP pools the last position)")
            if self.text_eot_id >= self.text_vocab_size:
                self._field_error("text_eot_id", f"None or an id < text_vocab_size ({self.text_vocab_size})")
        if self.lpips_weight > 0:
            if self.in_channels not in (1, 3):
                raise ValueError(f"{name}: LPIPS needs 1- or 3-channel images, got in_channels={self.in_channels}; "
                                 "set lpips_weight=0")
            if self.lpips_weights is None and not self.lpips_random:
                raise ValueError(f"{name}: lpips_weight > 0 needs lpips_weights (a file made by "
                                 "mmu.losses.lpips.convert_torch_weights) or lpips_random=True (tests only)")
        if self.lpips_weights is not None and not isinstance(self.lpips_weights, str):
            self._field_error("lpips_weights", "None or a path (str)", TypeError)
        if self.gan_weight > 0 and self.image_size // 2 ** self.disc_layers - 2 < 1:
            raise ValueError(f"{name}: a PatchGAN with disc_layers={self.disc_layers} has no output on "
                             f"{self.image_size}-px images; use fewer disc_layers")
        return self

    @property
    def grid(self):
        """The latent grid (h, w) = floor(image_size / patch_size) each."""
        g = self.image_size // self.patch_size
        return g, g

    @property
    def decoder_grid(self):
        """(h, w) of the decoder's input: decoder_latent_shape, or the latent grid when it is None."""
        return tuple(self.decoder_latent_shape) if self.decoder_latent_shape is not None else self.grid


def _resolve_config(config, fields_):
    if config is not None and fields_:
        raise TypeError("UnifiedVisionTower: give a config or keyword fields, not both")
    if config is None:
        return UnifiedVisionTowerConfig.from_dict(fields_)
    if isinstance(config, UnifiedVisionTowerConfig):
        return UnifiedVisionTowerConfig.from_dict(config.to_dict())  # a private, re-validated copy
    if isinstance(config, dict):
        return UnifiedVisionTowerConfig.from_dict(config)
    raise TypeError(f"UnifiedVisionTower: config must be a UnifiedVisionTowerConfig or a dict, got "
                    f"{type(config).__name__}")


def _check_stage(stage, fn):
    if not isinstance(stage, str) or stage not in STAGES:
        raise ValueError(f"{fn}: stage must be one of {STAGES}, got {stage!r}")
    return stage


class UnifiedVisionTower(PerceptualLPIPS, SavesTextTokenizer, Module):
    """VILA-U's vision tower (module docstring): `UnifiedVisionTower(UnifiedVisionTowerConfig(...))`,
    `UnifiedVisionTower(**fields)` or `UnifiedVisionTower(dict)`; `.config` is the validated config.

    Modules: `vision` (mmu.models.vit.VisionTower, layout 'siglip' with its attention-pooling head:
    keys vision.encoder.patch_embed / pos_embedding / layers.{i} / norm, vision.head.*), `quantizer`
    (mmu.quantizers.ResidualVQ(dim=C, num_quantizers=D, codebook_size, shared_codebook, EMA)),
    `post_quant_conv` (1x1), `decoder` (taming's Decoder), `image_proj` (Linear dim -> embed_dim, only when
    they differ), `text` (TextEncoder), `logit_scale` (0-d) and `logit_bias` (0-d, sigmoid loss only),
    `discriminator` (NLayerDiscriminator, only with gan_weight > 0).

    Codes: encode(images) -> np.int64 (B, h, w, D); decode(codes) -> np.float32 (B, C, H, W);
    code_embeddings(codes (..., D)) -> Tensor (..., D, C) (no gradient into the codebook).
    Embeddings: image_embeddings(images) (from the quantized features) and text_embeddings(ids), both
    L2-normalised (B, embed_dim). Training: `stage` ('align' | 'tower' | 'joint', set with set_stage;
    'joint' at construction), training_step(batch, step) for mmu.train.Trainer, discriminator_step with
    gan_weight > 0, evaluate_step.

    text_tokenizer: an optional mmu.text.TextTokenizer of the text ids, saved beside the weights by
    save_pretrained and read back by from_pretrained.
    """

    config_class = UnifiedVisionTowerConfig
    perceptual_weight_field = "lpips_weight"

    def __init__(self, config=None, text_tokenizer=None, **fields_):
        super().__init__()
        cfg = _resolve_config(config, fields_)
        object.__setattr__(self, "config", cfg)
        # recorded as keyword fields: from_pretrained rebuilds the same config; the tokenizer has its own files
        self.__dict__["_config"] = {"class": _class_path(type(self)),
                                    "args": {"config": None, "text_tokenizer": None, "**fields_": cfg.to_dict()}}
        c = cfg
        self.vision = VisionTower("siglip", c.image_size, c.patch_size, in_channels=c.in_channels, dim=c.dim,
                                  depth=c.depth, num_heads=c.num_heads,
                                  hidden_dim=c.hidden_dim if c.hidden_dim is not None else 4 * c.dim,
                                  activation=c.activation, norm_eps=c.norm_eps, final_norm=True, pooling="attention")
        self.quantizer = ResidualVQ(dim=c.dim, num_quantizers=c.rvq_depth, codebook_size=c.codebook_size,
                                    shared_codebook=c.shared_codebook, decay=c.ema_decay,
                                    commitment_weight=c.commitment_weight, kmeans_init=c.kmeans_init,
                                    threshold_ema_dead_code=c.dead_code_threshold)
        self.post_quant_conv = Conv2d(c.codebook_dim, c.decoder_z_channels, 1)
        self.decoder = Decoder(c.decoder_ch, c.decoder_ch_mult, c.decoder_num_res_blocks, c.decoder_attn_resolutions,
                               c.in_channels, c.image_size, c.decoder_z_channels, 0.0, c.decoder_norm_groups)
        self.image_proj = Linear(c.dim, c.embed_dim) if c.embed_dim != c.dim else None
        self.text = TextEncoder(c.text_vocab_size, c.text_max_len, c.text_dim, c.text_depth, c.text_heads,
                                hidden_dim=c.text_hidden_dim, embed_dim=c.embed_dim, layout=c.text_layout,
                                eot_token_id=c.text_eot_id)
        if c.contrastive == "sigmoid":   # SigLIP's init: t' = log 10, b = -10
            self.logit_scale = Parameter(np.array(np.log(10.0), np.float32))
            self.logit_bias = Parameter(np.array(-10.0, np.float32))
        else:                            # CLIP's: log(1 / 0.07)
            self.logit_scale = Parameter(np.array(np.log(1.0 / 0.07), np.float32))
            self.logit_bias = None
        if c.gan_weight > 0:
            from ...losses import NLayerDiscriminator
            self.discriminator = NLayerDiscriminator(input_nc=c.in_channels, ndf=c.disc_ndf, n_layers=c.disc_layers)
        else:
            self.discriminator = None
        self.__dict__["_stage"] = "joint"
        self.text_tokenizer = text_tokenizer

    # ------------------------------------------------------------------ properties
    @property
    def latent_shape(self):
        """(h, w): the grid of code positions of an image (floor(image_size / patch_size) each)."""
        return self.config.grid

    @property
    def tokens_per_image(self):
        """h * w: the visual positions of one image (each holds rvq_depth codes)."""
        h, w = self.config.grid
        return h * w

    @property
    def codebook_size(self):
        """K: the codes of the (shared) codebook."""
        return self.config.codebook_size

    @property
    def rvq_depth(self):
        """D: the residual depths (codes per position)."""
        return self.config.rvq_depth

    @property
    def codebook_dim(self):
        """C: the width of a code vector (= dim)."""
        return self.config.codebook_dim

    @property
    def text_tokenizer(self):
        """The mmu.text.TextTokenizer of the text ids, or None."""
        return self.__dict__.get("_text_tokenizer")

    @text_tokenizer.setter
    def text_tokenizer(self, tok):
        if tok is not None:
            from ...text import TextTokenizer
            if not isinstance(tok, TextTokenizer):
                raise TypeError(f"UnifiedVisionTower: text_tokenizer must be an mmu.text.TextTokenizer or None, got "
                                f"{type(tok).__name__}")
            self._check_tokenizer(tok, "UnifiedVisionTower")
        self.__dict__["_text_tokenizer"] = tok

    # ------------------------------------------------------------------ stage
    @property
    def stage(self):
        """The training stage: 'align', 'tower' or 'joint' (see set_stage)."""
        return self.__dict__["_stage"]

    @stage.setter
    def stage(self, stage):
        self.set_stage(stage)

    def set_stage(self, stage):
        """Selects the training recipe stage (the paper's, sec. 3.1 / 4.1):
        'align': contrastive loss only, on the CONTINUOUS features (no quantizer, no decoder), image and
            text encoders trained (stage 1);
        'tower': the text encoder frozen (requires_grad False, run without a graph), contrastive +
            reconstruction + commitment on the QUANTIZED features (stage 2);
        'joint': the losses of 'tower' with nothing frozen (both losses from scratch).
        Build the mmu.train.Trainer after setting the stage: it optimises the parameters that require grad
        when it is made. Returns self."""
        stage = _check_stage(stage, "UnifiedVisionTower.set_stage")
        self.text.requires_grad_(stage != "tower")
        self.__dict__["_stage"] = stage
        return self

    def generator_parameters(self):
        """Every trainable parameter except the discriminator's (what mmu.train.Trainer's first optimizer
        gets; in stage 'tower' the text encoder's are not trainable)."""
        skip = {id(p) for p in self.discriminator.parameters()} if self.discriminator is not None else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    # ------------------------------------------------------------------ checks
    def _check_images(self, images, fn):
        x = _as_images(images, fn)
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want or x.shape[0] == 0:
            raise ValueError(f"{fn}: images must be (B, {want[0]}, {want[1]}, {want[2]}) float32 with B >= 1 "
                             f"(the learned positions fix the size), got shape {tuple(x.shape)}")
        if not np.isfinite(x.detach().numpy()).all():
            raise ValueError(f"{fn}: images contain NaN or inf")
        return x

    def _check_codes(self, codes, fn, grid=False):
        a = _ids_array(codes, fn) if not isinstance(codes, Tensor) else None
        if a is None:
            if codes.dtype != np.int64:
                raise TypeError(f"{fn}: codes must be int64, got {codes.dtype}")
            a = codes.numpy()
        c = self.config
        if grid:
            h, w = c.grid
            if a.ndim != 4 or tuple(a.shape[1:]) != (h, w, c.rvq_depth) or a.shape[0] == 0:
                raise ValueError(f"{fn}: codes must be (B, h={h}, w={w}, D={c.rvq_depth}) with B >= 1, got shape "
                                 f"{a.shape}")
        elif a.ndim < 1 or a.shape[-1] != c.rvq_depth or a.size == 0:
            raise ValueError(f"{fn}: codes must be (..., D={c.rvq_depth}) (the depth last) and non-empty, got shape "
                             f"{a.shape}")
        if a.min() < 0 or a.max() >= c.codebook_size:
            raise ValueError(f"{fn}: codes must lie in [0, codebook_size={c.codebook_size}), got values in "
                             f"[{a.min()}, {a.max()}]")
        return np.ascontiguousarray(a, np.int64)

    def _check_tokenizer(self, tok, fn):
        c = self.config
        if tok.vocab_size > c.text_vocab_size:
            raise ValueError(f"{fn}: the text tokenizer's vocab_size {tok.vocab_size} exceeds config.text_vocab_size "
                             f"{c.text_vocab_size}")

    def text_input(self, text_ids, fn="UnifiedVisionTower.text_input"):
        """Text ids as batches carry them ((B, L) ints, -1 = padding) -> the (B, L') int64 ids the TextEncoder
        reads: -1 -> text_pad_id, and for the 'siglip' layout every row padded to text_max_len (SigLIP pads
        to its max length and pools the last position). ValueError for rows without any token, ids outside
        [-1, text_vocab_size) or rows longer than text_max_len."""
        a = _ids_array(text_ids, fn)
        c = self.config
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{fn}: text_ids must be (B, L) with B, L >= 1, got shape {a.shape}")
        if a.min() < -1 or a.max() >= c.text_vocab_size:
            raise ValueError(f"{fn}: text_ids must lie in [0, text_vocab_size={c.text_vocab_size}) or be -1 "
                             f"(padding), got values in [{a.min()}, {a.max()}]")
        real = a >= 0
        empty = np.flatnonzero(~real.any(1))
        if empty.size:
            raise ValueError(f"{fn}: rows {empty.tolist()} of text_ids hold no token (all -1)")
        lengths = real.shape[1] - np.argmax(real[:, ::-1], 1)     # one past the last real token
        if lengths.max() > c.text_max_len:
            raise ValueError(f"{fn}: a text of {int(lengths.max())} tokens exceeds text_max_len {c.text_max_len}")
        a = np.where(real, a, c.text_pad_id)[:, :max(int(lengths.max()), 1)]
        if c.text_layout == "siglip" and a.shape[1] < c.text_max_len:
            a = np.concatenate([a, np.full((a.shape[0], c.text_max_len - a.shape[1]), c.text_pad_id, np.int64)], 1)
        return np.ascontiguousarray(a, np.int64)

    def tokenize(self, texts, tokenizer=None):
        """texts (list of str) -> text ids (B, L) int64 padded with -1, in the layout's form: 'siglip' the text
        then the eos (SigLIP's tokenizer appends </s>), 'clip' bos + text + eos (CLIP's <|startoftext|> ...
        <|endoftext|>); texts too long are cut so the specials fit text_max_len. tokenizer: an
        mmu.text.TextTokenizer (default: self.text_tokenizer)."""
        fn = "UnifiedVisionTower.tokenize"
        tok = self.text_tokenizer if tokenizer is None else tokenizer
        if tok is None:
            raise ValueError(f"{fn}: no tokenizer (pass tokenizer= or set tower.text_tokenizer)")
        from ...text import TextTokenizer
        if not isinstance(tok, TextTokenizer):
            raise TypeError(f"{fn}: tokenizer must be an mmu.text.TextTokenizer, got {type(tok).__name__}")
        self._check_tokenizer(tok, fn)
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts \
                or any(not isinstance(t, str) for t in texts):
            raise TypeError(f"{fn}: texts must be a non-empty list of str, got {type(texts).__name__}")
        c = self.config
        clip = c.text_layout == "clip"
        if tok.eos_id is None or (clip and tok.bos_id is None):
            raise ValueError(f"{fn}: the tokenizer needs an eos token" + (" and a bos token (layout 'clip')" if clip
                                                                          else ""))
        if clip and (c.text_eot_id if c.text_eot_id is not None else tok.vocab_size - 1) != tok.eos_id:
            raise ValueError(f"{fn}: layout 'clip' pools the end-of-text token: set config.text_eot_id to the "
                             f"tokenizer's eos id {tok.eos_id} (now {c.text_eot_id}; None means the highest id)")
        room = c.text_max_len - (2 if clip else 1)
        if room < 1:
            raise ValueError(f"{fn}: text_max_len {c.text_max_len} leaves no room for text besides the specials")
        rows = []
        for t in texts:
            ids = [int(i) for i in tok.encode(t)][:room]
            rows.append(([tok.bos_id] if clip else []) + ids + [tok.eos_id])
        out = np.full((len(rows), max(len(r) for r in rows)), -1, np.int64)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
        return out

    # ------------------------------------------------------------------ the pieces
    def _tokens_before_quant(self, x):
        """images (B, C, H, W) -> (B, N, dim): patches + positions, layers 0 .. quantize_after-1."""
        enc = self.vision.encoder
        b = x.shape[0]
        h = enc.patch_embed(x)                                            # (B, dim, gh, gw)
        h = h.reshape(b, self.config.dim, self.tokens_per_image).transpose(1, 2) + enc.pos_embedding
        for i in range(self.config.quantize_after):
            h = enc.layers[i](h)
        return h

    def _pooled(self, h):
        """tokens after quantization (B, N, dim) -> the image embedding (B, embed_dim), not normalised: the
        remaining SigLIP layers, the final norm, the attention-pooling head (and image_proj)."""
        enc = self.vision.encoder
        for i in range(self.config.quantize_after, self.config.depth):
            h = enc.layers[i](h)
        pooled = self.vision.head(enc.norm(h))
        return self.image_proj(pooled) if self.image_proj is not None else pooled

    def _quantize(self, h):
        """(B, N, C) -> (z_q (B, N, C), codes Tensor (B, N, D), commitment 0-d). z_q is VILA-U's
        straight-through z + sg(sum_d e(k_d) - z) while a graph is recorded, else the code sum itself."""
        q, codes, commit = self.quantizer(h)
        if is_grad_enabled() and h.requires_grad:
            q = h + (q - h).detach()
        return q, codes, commit

    def _decode_tokens(self, z):
        """quantized tokens (B, N, C) -> images (B, in_channels, H, W); with decoder_latent_shape the grid is
        first resized as VILA-U's decode does (F.interpolate, bilinear, align_corners False)."""
        b = z.shape[0]
        c = self.config
        gh, gw = c.grid
        z = z.transpose(1, 2).reshape(b, c.codebook_dim, gh, gw)
        if c.decoder_grid != (gh, gw):
            z = F.interpolate(z, size=c.decoder_grid, mode="bilinear", align_corners=False)
        return self.decoder(self.post_quant_conv(z))

    def _eval_call(self, fn):
        was = self.training
        self.train(False)
        try:
            with no_grad():
                return fn()
        finally:
            self.train(was)

    @staticmethod
    def _chunks(n, batch_size, fn):
        if batch_size is None:
            return [(0, n)]
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"{fn}: batch_size must be a positive int or None, got {batch_size!r}")
        return [(i, min(i + int(batch_size), n)) for i in range(0, n, int(batch_size))]

    # ------------------------------------------------------------------ public API
    def code_embeddings(self, codes):
        """codes (..., D) ints (array or int64 Tensor, every value in [0, codebook_size)) -> Tensor
        (..., D, C): the codebook vector of each depth's code (VILA-U's get_code_emb_with_depth). Their
        sum over D is the quantized feature the decoder and the contrastive head see; the cumulative sums
        are the partial reconstructions the depth transformer reads. The codebook is read detached:
        no gradient reaches it from here."""
        a = self._check_codes(codes, "UnifiedVisionTower.code_embeddings")
        d_total, c = self.config.rvq_depth, self.config.codebook_dim
        lead = a.shape[:-1]
        flat = a.reshape(-1, d_total)
        if self.quantizer.shared_codebook:
            book = self.quantizer.level(0).embed.detach()[0]               # (K, C)
            out = F.embedding(_tensor(np.ascontiguousarray(flat.reshape(-1))), book)
            return out.reshape(*lead, d_total, c)
        per_depth = [F.embedding(_tensor(np.ascontiguousarray(flat[:, d])), self.quantizer.level(d).embed.detach()[0])
                     .reshape(-1, 1, c) for d in range(d_total)]
        return _cat(per_depth, 1).reshape(*lead, d_total, c)

    def encode(self, images, batch_size=None):
        """images (B, C, H, W) float32 in [-1, 1] -> codes np.int64 (B, h, w, D) (the depth last). Eval
        mode under no_grad: the codebook is not updated. batch_size: images per pass (None: all)."""
        fn = "UnifiedVisionTower.encode"
        x = self._check_images(images, fn)
        h, w = self.latent_shape

        def run():
            parts = []
            for a, b in self._chunks(x.shape[0], batch_size, fn):
                _, codes, _ = self._quantize(self._tokens_before_quant(x[a:b]))
                parts.append(codes.numpy().reshape(b - a, h, w, self.config.rvq_depth).astype(np.int64))
            return np.concatenate(parts)
        return self._eval_call(run)

    def decode(self, codes, batch_size=None):
        """codes (B, h, w, D) ints -> images np.float32 (B, C, H, W): post_quant_conv + decoder on the sum of
        the code embeddings over the depths. Eval mode under no_grad."""
        fn = "UnifiedVisionTower.decode"
        a = self._check_codes(codes, fn, grid=True)
        n = self.tokens_per_image

        def run():
            out = []
            for s, e in self._chunks(a.shape[0], batch_size, fn):
                z = self.code_embeddings(a[s:e]).sum(-2).reshape(e - s, n, self.config.codebook_dim)
                out.append(self._decode_tokens(z).numpy().astype(np.float32))
            return np.concatenate(out)
        return self._eval_call(run)

    def reconstruct(self, images, batch_size=None):
        """decode(encode(images)) in one pass -> np.float32 (B, C, H, W). Eval mode under no_grad."""
        fn = "UnifiedVisionTower.reconstruct"
        x = self._check_images(images, fn)

        def run():
            return np.concatenate([self._decode_tokens(self._quantize(self._tokens_before_quant(x[a:b]))[0])
                                   .numpy().astype(np.float32) for a, b in self._chunks(x.shape[0], batch_size, fn)])
        return self._eval_call(run)

    def image_embeddings(self, images, quantized=True):
        """images (B, C, H, W) -> Tensor (B, embed_dim), L2-normalised: the pooled embedding of the QUANTIZED
        features (quantized=False: of the continuous ones, stage 'align''s). Runs in the module's mode (in
        training mode the quantizer's EMA codebook updates) and records a graph when grad is enabled."""
        x = self._check_images(images, "UnifiedVisionTower.image_embeddings")
        h = self._tokens_before_quant(x)
        if quantized:
            h = self._quantize(h)[0]
        return F.normalize(self._pooled(h), dim=-1)

    def text_embeddings(self, ids):
        """text ids (B, L) ints, -1 padded (see text_input) -> Tensor (B, embed_dim), L2-normalised: the
        TextEncoder's pooled output."""
        a = self.text_input(ids, "UnifiedVisionTower.text_embeddings")
        return F.normalize(self.text(a)[1], dim=-1)

    def contrastive_loss(self, image_emb, text_emb):
        """The configured image-text loss of normalised embeddings (B, embed_dim) each: SigLIP's sigmoid loss
        with logit_scale / logit_bias, or CLIP's softmax loss with logit_scale (mmu.losses)."""
        if self.config.contrastive == "sigmoid":
            return siglip_loss(image_emb, text_emb, self.logit_scale, self.logit_bias)
        return clip_loss(image_emb, text_emb, self.logit_scale)

    # ------------------------------------------------------------------ training
    def _batch(self, batch, fn, need_text):
        if not isinstance(batch, dict):
            raise TypeError(f"{fn}: batch must be a dict with 'images' (B, C, H, W) and 'text_ids' (B, L), got "
                            f"{type(batch).__name__}")
        if "images" not in batch:
            raise KeyError(f"{fn}: batch has no 'images' (keys {sorted(batch)})")
        x = self._check_images(batch["images"], fn)
        ids = None
        if need_text:
            if "text_ids" not in batch:
                raise KeyError(f"{fn}: batch has no 'text_ids' (keys {sorted(batch)}); the contrastive loss needs them")
            ids = self.text_input(batch["text_ids"], fn)
            if ids.shape[0] != x.shape[0]:
                raise ValueError(f"{fn}: {x.shape[0]} images but {ids.shape[0]} texts")
        return x, ids

    def losses(self, batch, step=0, stage=None, fn="UnifiedVisionTower.losses"):
        """(loss, logs, recon or None) of a batch under a stage (default self.stage); see training_step."""
        stage = self.stage if stage is None else _check_stage(stage, fn)
        c = self.config
        use_contra = stage == "align" or c.contra_weight > 0
        x, ids = self._batch(batch, fn, use_contra)
        logs = {}
        txt = None
        if use_contra:
            if stage == "tower":
                with no_grad():
                    txt = F.normalize(self.text(ids)[1], dim=-1)
            else:
                txt = F.normalize(self.text(ids)[1], dim=-1)
        h = self._tokens_before_quant(x)
        if stage == "align":
            contra = self.contrastive_loss(F.normalize(self._pooled(h), dim=-1), txt)
            logs["loss_contra"] = contra.item()
            return contra * c.contra_weight, logs, None
        z, codes, commit = self._quantize(h)
        recon = self._decode_tokens(z)
        rec = F.l1_loss(recon, x) if c.recon_loss == "l1" else F.mse_loss(recon, x)
        logs["loss_recon"] = rec.item()
        logs["loss_commit"] = commit.item()
        nll = rec
        if c.lpips_weight > 0:
            rgb = (lambda t: _cat([t, t, t], 1)) if c.in_channels == 1 else (lambda t: t)
            p = self.lpips()(rgb(x), rgb(recon)).mean()
            logs["loss_lpips"] = p.item()
            nll = nll + p * c.lpips_weight
        recon_term = nll
        if self.discriminator is not None and self.training and is_grad_enabled() and step >= c.disc_start:
            from ...losses import adaptive_weight
            g_loss = -self.discriminator(recon).mean()
            d_weight = adaptive_weight(nll, g_loss, last_layer=self.decoder.conv_out.weight)
            recon_term = recon_term + g_loss * d_weight * c.gan_weight
            logs["g_adv"] = g_loss.item()
            logs["d_weight"] = d_weight.item()
        loss = recon_term * c.recon_weight + commit
        if use_contra:
            contra = self.contrastive_loss(F.normalize(self._pooled(z), dim=-1), txt)
            logs["loss_contra"] = contra.item()
            loss = loss + contra * c.contra_weight
        cn = codes.numpy().reshape(-1, c.rvq_depth)
        logs["usage"] = float(np.mean([np.unique(cn[:, d]).size / c.codebook_size for d in range(c.rvq_depth)]))
        return loss, logs, recon

    def training_step(self, batch, step, stage=None):
        """mmu.train.Trainer's step -> (loss, logs). batch: {"images": (B, C, H, W) float32 in [-1, 1],
        "text_ids": (B, L) ints padded with -1} (text_ids may be left out when contra_weight = 0 outside
        stage 'align'). stage: default self.stage (set_stage).
        'align': contra_weight * contrastive(pooled continuous features, text) -> logs loss_contra.
        'tower' / 'joint': contra_weight * contrastive(pooled QUANTIZED features, text) + recon_weight *
        (L1 or L2 + lpips_weight * LPIPS + gan_weight * adaptive weight * generator loss, from disc_start)
        + commitment (commitment_weight inside) -> logs loss_contra, loss_recon, loss_commit, [loss_lpips,
        g_adv, d_weight], usage (the batch's mean fraction of codes used per depth). In 'tower' the text
        encoder runs without a graph (it gets no gradient)."""
        loss, logs, _ = self.losses(batch, step, stage, "UnifiedVisionTower.training_step")
        return loss, logs

    def evaluate_step(self, batch):
        """The logs of training_step and "loss" for a batch, without a graph."""
        with no_grad():
            loss, logs, _ = self.losses(batch, 0, None, "UnifiedVisionTower.evaluate_step")
        logs["loss"] = loss.item()
        return logs

    def discriminator_step(self, batch, step):
        """(d_loss, logs) of the PatchGAN on real images and the tower's reconstructions (computed again
        without a graph, the quantizer in eval mode so the codebook is not updated twice), hinge (or vanilla)
        loss; None before disc_start or without a discriminator."""
        fn = "UnifiedVisionTower.discriminator_step"
        if self.discriminator is None or step < self.config.disc_start or self.stage == "align":
            return None
        x, _ = self._batch(batch, fn, False)
        was = self.quantizer.training
        self.quantizer.train(False)
        try:
            with no_grad():
                recon = self._decode_tokens(self._quantize(self._tokens_before_quant(x))[0])
        finally:
            self.quantizer.train(was)
        lr, lf = self.discriminator(x), self.discriminator(recon)
        d = (hinge_d_loss if self.config.disc_loss == "hinge" else vanilla_d_loss)(lr, lf)
        return d, {"d_loss": d.item(), "logits_real": float(lr.detach().numpy().mean()),
                   "logits_fake": float(lf.detach().numpy().mean())}

    def extra_repr(self):
        c = self.config
        return (f"image_size={c.image_size}, patch_size={c.patch_size}, dim={c.dim}, depth={c.depth}, "
                f"quantize_after={c.quantize_after}, codebook_size={c.codebook_size}, rvq_depth={c.rvq_depth}, "
                f"contrastive={c.contrastive!r}, stage={self.stage!r}")
