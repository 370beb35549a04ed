"""MAGVIT2Config: the fields of Show-o's MAGVIT-v2 image tokenizer (showlab/Show-o,
models/modeling_magvitv2.py: VQGANEncoder, VQGANDecoder, LFQuantizer; released as showlab/magvitv2)."""
from dataclasses import dataclass, field

from ...tokenizers.config import _VQGANLossConfig

__all__ = ["MAGVIT2Config"]


@dataclass
class MAGVIT2Config(_VQGANLossConfig):
    """MAGVIT-v2 as Show-o releases it: a taming-style encoder/decoder whose levels have their own
    residual-block counts, and a lookup-free quantizer of z_channels bits.

    Encoder: conv_in (in_channels -> ch), per level i num_res_blocks ResnetBlocks to ch * ch_mult[i]
    (encoder_num_res_blocks[i] of them, + an AttnBlock after each where the resolution is in
    attn_resolutions) and a Downsample (pad (0, 1, 0, 1), 3x3 stride 2) except at the last level, mid
    (ResnetBlock, AttnBlock, ResnetBlock), GroupNorm + swish, conv_out to z_channels, quant_conv (1x1,
    z -> z). Decoder: post_quant_conv (1x1), conv_in, mid, then from the lowest resolution up, per level
    i decoder_num_res_blocks[i] ResnetBlocks to ch * decoder_ch_mult[i] (taming's Decoder has
    num_res_blocks + 1 per level; Show-o's has exactly the listed count) and an Upsample (nearest x2 +
    3x3) except at level 0, GroupNorm + swish, conv_out. GroupNorm(norm_groups, eps 1e-6) everywhere.
    Quantizer: LFQ with codebook_size = 2**z_channels codes; code = sum_c 2^(z_channels - 1 - c) *
    [z_c > 0] (channel 0 is the most significant bit), and a code decodes to the signs (+1 / -1) of
    its bits: Show-o's LFQuantizer.get_indices / get_codebook_entry, which mmu.quantizers.LFQ's
    default convention is.

    Defaults are the released model (MAGVITv2() of Show-o, 256 px -> 16 x 16 codes of 13 bits = 8192):
    ch 128, encoder_ch_mult [1, 2, 2, 4, 4], encoder_num_res_blocks [4, 3, 4, 3, 4], decoder_ch_mult
    [1, 1, 2, 2, 4], decoder_num_res_blocks [4, 4, 3, 4, 3], attn_resolutions [5] (no level of a 256 px
    model reaches 5, so only the mid blocks attend), z_channels 13.

    Training (not in Show-o's release, whose MAGVITv2.forward is empty): MAGVIT2 trains with mmu's
    VQGAN loss (pixel_weight * L1 + perceptual_weight * LPIPS + codebook_weight * the LFQ loss + the
    optional PatchGAN term, see mmu.tokenizers.VQGANConfig for the fields), with mmu's LFQ loss
    (commitment beta, exact codebook entropy; quantizer_kwargs override LFQ's arguments). Show-o's
    LFQuantizer computes a per-bit entropy and weights its commitment terms differently; codes and
    decoded images do not depend on the loss. perceptual_weight 0 and no discriminator by default
    (a converted checkpoint has neither)."""
    in_channels: int = 3
    out_channels: int = None
    ch: int = 128
    encoder_ch_mult: list = field(default_factory=lambda: [1, 2, 2, 4, 4])
    encoder_num_res_blocks: list = field(default_factory=lambda: [4, 3, 4, 3, 4])
    decoder_ch_mult: list = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_num_res_blocks: list = field(default_factory=lambda: [4, 4, 3, 4, 3])
    attn_resolutions: list = field(default_factory=lambda: [5])
    dropout: float = 0.0
    z_channels: int = 13
    resolution: int = 256
    norm_groups: int = 32
    # the loss fields are VQGAN's (_VQGANLossConfig), with the release's quantizer and no perceptual/GAN terms
    codebook_size: int = 8192
    quantizer: str = "lfq"
    perceptual_weight: float = 0.0
    use_discriminator: bool = False
