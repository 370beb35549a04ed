"""MAGVIT2: Show-o's MAGVIT-v2 image tokenizer (showlab/Show-o, models/modeling_magvitv2.py) as an mmu
Tokenizer with a 2-D latent layout: the taming-style encoder and decoder with per-level residual-block
counts, and mmu.quantizers.LFQ in Show-o's bit <-> code convention.

Module names are Show-o's, so the published checkpoint's encoder.* / decoder.* keys are this
model's state_dict keys as they are (convert.py): encoder.{conv_in, down.{i}.block.{j}, down.{i}.attn.{j},
down.{i}.downsample.conv, mid.block_1, mid.attn_1, mid.block_2, norm_out, conv_out, quant_conv},
decoder.{post_quant_conv, conv_in, mid.*, up.{i}.block.{j}, up.{i}.attn.{j}, up.{i}.upsample.conv,
norm_out, conv_out}. The quantizer has no weights (Show-o's quantize.embedding / power_vals buffers
are the code table, which the converter checks and drops)."""
import numpy as np

from ...nn import Conv2d
from ...tokenizers.blocks import Decoder, Encoder
from ...tokenizers.base import make_quantizer
from ...tokenizers.vqgan import VQGAN
from .config import MAGVIT2Config

__all__ = ["MAGVIT2", "MAGVIT2Encoder", "MAGVIT2Decoder"]


class MAGVIT2Encoder(Encoder):
    """Show-o's VQGANEncoder: taming's Encoder (mmu.tokenizers.blocks) with per-level residual-block
    counts (num_res_blocks a list: level i has num_res_blocks[i] ResnetBlocks to ch * ch_mult[i]), then
    quant_conv (1x1, z -> z) inside the encoder. (B, in_channels, R, R) -> (B, z_channels,
    R / 2^(len(ch_mult) - 1), ...)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 dropout=0.0, num_groups=32):
        super().__init__(ch, ch_mult, list(num_res_blocks), attn_resolutions, in_channels, resolution,
                         z_channels, dropout, num_groups)
        self.quant_conv = Conv2d(z_channels, z_channels, 1)

    def forward(self, x):
        return self.quant_conv(super().forward(x))


class MAGVIT2Decoder(Decoder):
    """Show-o's VQGANDecoder: post_quant_conv (1x1, z -> z) inside the decoder, then taming's Decoder
    (mmu.tokenizers.blocks) with exactly num_res_blocks[i] ResnetBlocks at level i (taming's has one more
    per level than the encoder; Show-o's release lists its own counts, [4, 4, 3, 4, 3]). `up` is indexed
    by level (up[0] is the full resolution)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, out_ch, resolution, z_channels,
                 dropout=0.0, num_groups=32):
        super().__init__(ch, ch_mult, list(num_res_blocks), attn_resolutions, out_ch, resolution, z_channels,
                         dropout, num_groups)
        self.post_quant_conv = Conv2d(z_channels, z_channels, 1)

    @property
    def last_layer(self):
        """conv_out.weight, the output layer (the adaptive GAN weight's reference)."""
        return self.conv_out.weight

    def forward(self, z):
        return super().forward(self.post_quant_conv(z))


def _pos_int(v, name, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"MAGVIT2: {name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _int_list(v, name, lo, allow_empty=False):
    if not isinstance(v, (list, tuple)) or (not v and not allow_empty) or \
            any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < lo for e in v):
        raise ValueError(f"MAGVIT2: {name} must be a list of ints >= {lo}, got {v!r}")
    return [int(e) for e in v]


class MAGVIT2(VQGAN):
    """Show-o's MAGVIT-v2 tokenizer (see MAGVIT2Config): images (B, C, H, W) in [-1, 1] -> codes (B, H/f, W/f)
    with f = 2^(len(encoder_ch_mult) - 1) (16 for the release: 256 px -> 16 x 16 codes in [0, 8192)), and
    back. encode / decode / reconstruct are the Tokenizer's; get_code / decode_code are Show-o's API
    (flat (B, h * w) codes, row-major over the grid, as Show-o's vocabulary offsets them).
    load_magvit2 (mmu.models.magvit2) builds one from Show-o's checkpoint. Training uses VQGAN's loss
    and Trainer protocol (forward, discriminator_loss) with this encoder, decoder and LFQ."""

    config_class = MAGVIT2Config

    def _build_model(self):
        c = self.config
        for name in ("in_channels", "ch", "z_channels", "resolution", "codebook_size", "norm_groups"):
            _pos_int(getattr(c, name), name)
        if c.out_channels is not None:
            _pos_int(c.out_channels, "out_channels")
        enc_mult = _int_list(c.encoder_ch_mult, "encoder_ch_mult", 1)
        dec_mult = _int_list(c.decoder_ch_mult, "decoder_ch_mult", 1)
        enc_blocks = _int_list(c.encoder_num_res_blocks, "encoder_num_res_blocks", 0)
        dec_blocks = _int_list(c.decoder_num_res_blocks, "decoder_num_res_blocks", 0)
        attn = _int_list(c.attn_resolutions, "attn_resolutions", 1, allow_empty=True)
        if len(enc_blocks) != len(enc_mult):
            raise ValueError(f"MAGVIT2: encoder_num_res_blocks {enc_blocks} needs one count per level of "
                             f"encoder_ch_mult {enc_mult}")
        if len(dec_blocks) != len(dec_mult):
            raise ValueError(f"MAGVIT2: decoder_num_res_blocks {dec_blocks} needs one count per level of "
                             f"decoder_ch_mult {dec_mult}")
        if len(dec_mult) != len(enc_mult):
            raise ValueError(f"MAGVIT2: the decoder must upsample as often as the encoder downsamples: "
                             f"encoder_ch_mult {enc_mult} and decoder_ch_mult {dec_mult} differ in length")
        # the width changes only inside ResnetBlocks: a level without blocks keeps the width it gets
        prev = 1
        for i, (m, n) in enumerate(zip(enc_mult, enc_blocks)):
            if n == 0 and m != prev:
                raise ValueError(f"MAGVIT2: encoder level {i} has no ResnetBlock to change the width from "
                                 f"ch * {prev} to ch * {m} (encoder_ch_mult {enc_mult}, "
                                 f"encoder_num_res_blocks {enc_blocks})")
            prev = m if n else prev
        prev = dec_mult[-1]
        for i in reversed(range(len(dec_mult))):
            if dec_blocks[i] == 0 and dec_mult[i] != prev:
                raise ValueError(f"MAGVIT2: decoder level {i} has no ResnetBlock to change the width from "
                                 f"ch * {prev} to ch * {dec_mult[i]} (decoder_ch_mult {dec_mult}, "
                                 f"decoder_num_res_blocks {dec_blocks})")
            prev = dec_mult[i] if dec_blocks[i] else prev
        f = 2 ** (len(enc_mult) - 1)
        if c.resolution % f:
            raise ValueError(f"MAGVIT2: resolution {c.resolution} must be a multiple of the downsample factor {f} "
                             f"(2^(len(encoder_ch_mult) - 1))")
        if c.quantizer != "lfq":
            raise ValueError(f"MAGVIT2: quantizer must be 'lfq' (MAGVIT-v2's lookup-free quantizer), got "
                             f"{c.quantizer!r}")
        if c.codebook_size != 2 ** c.z_channels:
            raise ValueError(f"MAGVIT2: codebook_size must be 2**z_channels = {2 ** c.z_channels} (one bit per "
                             f"latent channel, as Show-o's LFQuantizer), got {c.codebook_size}")
        if not 0.0 <= float(c.dropout) < 1.0:
            raise ValueError(f"MAGVIT2: dropout must be in [0, 1), got {c.dropout}")
        if not isinstance(c.quantizer_kwargs, dict):
            raise TypeError(f"MAGVIT2: quantizer_kwargs must be a dict, got {type(c.quantizer_kwargs).__name__}")
        for key in ("dim", "codebook_size", "num_codebooks", "has_projections", "codebook_scale"):
            if key in c.quantizer_kwargs:
                raise ValueError(f"MAGVIT2: quantizer_kwargs may not set {key!r} (the codes are the signs of the "
                                 f"z_channels latent channels)")
        for name in ("codebook_weight", "pixel_weight", "perceptual_weight", "disc_weight", "disc_factor"):
            if not float(getattr(c, name)) >= 0:
                raise ValueError(f"MAGVIT2: {name} must be >= 0, got {getattr(c, name)}")
        _pos_int(c.disc_start, "disc_start", 0)
        if c.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"MAGVIT2: disc_loss must be 'hinge' or 'vanilla', got {c.disc_loss!r}")
        if c.perceptual_weight > 0 and c.lpips_weights is None and not c.lpips_random:
            raise ValueError("MAGVIT2: perceptual_weight > 0 needs LPIPS weights (lpips_weights, a file made by "
                             "mmu.losses.lpips.convert_torch_weights), or lpips_random=True (tests only)")
        out_ch = c.in_channels if c.out_channels is None else c.out_channels
        g = c.norm_groups
        self.encoder = MAGVIT2Encoder(c.ch, enc_mult, enc_blocks, attn, c.in_channels, c.resolution, c.z_channels,
                                      c.dropout, g)
        self.decoder = MAGVIT2Decoder(c.ch, dec_mult, dec_blocks, attn, out_ch, c.resolution, c.z_channels,
                                      c.dropout, g)
        self.quantize = make_quantizer("lfq", c.z_channels, c.codebook_size, c.beta, c.quantizer_kwargs)
        if c.use_discriminator:
            self.discriminator = self._make_discriminator()

    @classmethod
    def from_taming_state_dict(cls, *args, **kwargs):
        """Not for MAGVIT2 (a taming VQModel is mmu.tokenizers.VQGAN): Show-o's MAGVIT-v2 checkpoint loads
        with mmu.models.magvit2.load_magvit2."""
        raise TypeError("MAGVIT2.from_taming_state_dict: a taming VQModel checkpoint is a VQGAN "
                        "(mmu.tokenizers.VQGAN.from_taming_state_dict); Show-o's MAGVIT-v2 loads with "
                        "mmu.models.magvit2.load_magvit2")

    @property
    def downsample_factor(self):
        return 2 ** (len(self.config.encoder_ch_mult) - 1)

    def get_last_layer(self):
        """decoder.conv_out.weight (the adaptive GAN weight's reference layer)."""
        return self.decoder.conv_out.weight

    def _encode_latent(self, x):
        return self.encoder(x)

    def _decode_latent(self, zq):
        return self.decoder(zq)

    # ------------------------------------------------------------------ Show-o's API
    def get_code(self, images, batch_size=None):
        """Show-o's MAGVITv2.get_code: images (B, C, H, W) in [-1, 1] -> codes np.int64 (B, h * w), the grid
        flattened row by row (encode(images).reshape(B, -1))."""
        codes = self.encode(images, batch_size=batch_size)
        return codes.reshape(codes.shape[0], -1)

    def decode_code(self, codes, shape=None, batch_size=None):
        """Show-o's MAGVITv2.decode_code: codes (B, N) int -> images np.float32 (B, C, h * f, w * f), with
        (h, w) = shape, or (sqrt N, sqrt N) when shape is None (N must then be a square). The decoder's
        output is not clamped (Show-o's samplers clamp (x + 1) / 2 to [0, 1] afterwards)."""
        a = codes.numpy() if hasattr(codes, "numpy") else np.asarray(codes)
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"MAGVIT2.decode_code: codes must be (B, N) with B >= 1, got shape {a.shape}")
        n = a.shape[1]
        if shape is None:
            side = int(round(np.sqrt(n)))
            if side * side != n:
                raise ValueError(f"MAGVIT2.decode_code: {n} codes per image are not a square grid; pass "
                                 f"shape=(h, w)")
            shape = (side, side)
        if not isinstance(shape, (tuple, list)) or len(shape) != 2 or \
                any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape) or \
                shape[0] * shape[1] != n:
            raise ValueError(f"MAGVIT2.decode_code: shape must be (h, w) with h * w = {n} (codes of shape "
                             f"{a.shape}), got {shape!r}")
        return self.decode(a.reshape(a.shape[0], int(shape[0]), int(shape[1])), batch_size=batch_size)
