"""TiTokConfig: the fields of TiTok (Yu et al. 2024, "An Image is Worth 32 Tokens for Reconstruction and
Generation"; bytedance/1d-tokenizer: modeling/titok.py, modules/blocks.py TiTokEncoder / TiTokDecoder,
quantizer/quantizer.py VectorQuantizer, configs/), and the scaled-down S / B / L presets (titok_config)."""
from dataclasses import dataclass

from ...tokenizers.config import _Config

__all__ = ["TiTokConfig", "titok_config", "PUBLISHED_SIZES", "PRESETS"]

# 1d-tokenizer's TiTokEncoder / TiTokDecoder model sizes: (width, layers, heads); head width 64 in all three
PUBLISHED_SIZES = {"S": (512, 8, 8), "B": (768, 12, 12), "L": (1024, 24, 16)}
# this machine's: width / 8 and layers / 4 (heads of width 32), so the three keep their order and ratios
# (L is twice S's width and three times its depth) at CPU cost
PRESETS = {"S": (64, 2, 2), "B": (96, 3, 3), "L": (128, 6, 4)}


@dataclass
class TiTokConfig(_Config):
    """TiTok with a pixel decoder, trained in one stage.

    Encoder: a ViT over the (resolution / patch_size)^2 patches of the image (patch_embed: a Conv2d of
    stride patch_size) plus a class token and num_latent_tokens learned latent tokens, each with its
    learned position; ln_pre, encoder_depth pre-norm layers (torch's nn.MultiheadAttention + GELU MLP of
    mlp_ratio * width, LayerNorm eps 1e-5), ln_post on the latent tokens only, a 1x1 projection to
    token_size channels: (B, token_size, K) (1d-tokenizer's is_legacy=False layout).
    Quantizer: 1d-tokenizer's VectorQuantizer with use_l2_norm: codebook_size codes of token_size,
    the latents and the codes l2-normalised, nearest code by squared distance, loss =
    commitment_cost * mse(sg(q), z) + mse(q, sg(z)) on the normalised z, straight-through z + sg(q - z).
    Decoder: decoder_embed (Linear token_size -> width) of the quantized tokens plus their positions,
    after a class token and one mask token per decoder patch (each with its position); ln_pre, the
    decoder layers, ln_post on the patch tokens, a 1x1 layer to patch_size^2 * in_channels values per
    patch rearranged into the image, and a 3x3 conv_out: 1d-tokenizer's is_legacy=False ("directly
    predicting RGB pixels") TiTokDecoder.

    Loss (1d-tokenizer's ReconstructionLoss_Single_Stage): reconstruction_weight * mse (or l1) +
    perceptual_weight * LPIPS + quantizer_weight * the quantizer's loss + (from disc_start on, with
    use_discriminator) disc_weight * disc_factor * (-mean D(recon)); no adaptive weight. Discriminator:
    disc_factor * hinge loss + lecam_weight * LeCam on the mean logits against their EMAs (decay
    lecam_decay). The PatchGAN is mmu's taming NLayerDiscriminator (1d-tokenizer's has its own blocks).

    Defaults are TiTok-S-32's shape at 256 px (patch 16, 4096 codes of 12, published width 512 / 8 layers)
    except the width and depth, which are the S preset of this machine (titok_config)."""
    in_channels: int = 3
    resolution: int = 256
    patch_size: int = 16
    decoder_patch_size: int = None     # None: patch_size (1d-tokenizer's vit_dec_patch_size)
    encoder_width: int = 64
    encoder_depth: int = 2
    encoder_heads: int = 2
    decoder_width: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 2
    mlp_ratio: float = 4.0
    num_latent_tokens: int = 32
    token_size: int = 12
    codebook_size: int = 4096
    quantizer: str = "vq"
    commitment_cost: float = 0.25
    use_l2_norm: bool = True
    reconstruction_loss: str = "l2"
    reconstruction_weight: float = 1.0
    quantizer_weight: float = 1.0
    perceptual_weight: float = 0.0
    lpips_weights: str = None
    lpips_random: bool = False
    use_discriminator: bool = False
    disc_start: int = 0
    disc_weight: float = 0.1
    disc_factor: float = 1.0
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_norm: str = "batch"
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999

    def validate(self):
        """Checks every field (TypeError / ValueError naming the field); returns self."""
        self._check_ints([("in_channels", 1), ("resolution", 1), ("patch_size", 1), ("encoder_width", 1),
                          ("encoder_depth", 1), ("encoder_heads", 1), ("decoder_width", 1), ("decoder_depth", 1),
                          ("decoder_heads", 1), ("num_latent_tokens", 1), ("token_size", 1), ("codebook_size", 2),
                          ("disc_start", 0), ("disc_ndf", 1), ("disc_layers", 1)])
        if self.decoder_patch_size is not None:
            self._check_ints([("decoder_patch_size", 1)])
        for name in ("patch_size", "decoder_patch_size"):
            p = getattr(self, name) or self.patch_size
            if self.resolution % p:
                self._field_error(name, f"a divisor of resolution {self.resolution}")
        for side in ("encoder", "decoder"):
            if getattr(self, f"{side}_width") % getattr(self, f"{side}_heads"):
                self._field_error(f"{side}_width", f"a multiple of {side}_heads {getattr(self, f'{side}_heads')}")
        self._check_reals([("mlp_ratio", 0.0, None, False), ("commitment_cost", 0.0, None, True),
                           ("reconstruction_weight", 0.0, None, True), ("quantizer_weight", 0.0, None, True),
                           ("perceptual_weight", 0.0, None, True), ("disc_weight", 0.0, None, True),
                           ("disc_factor", 0.0, None, True), ("lecam_weight", 0.0, None, True),
                           ("lecam_decay", 0.0, 1.0, True)])
        if self.lecam_decay >= 1.0:
            self._field_error("lecam_decay", "in [0, 1)")
        if self.quantizer != "vq":
            self._field_error("quantizer", "'vq' (1d-tokenizer's VectorQuantizer; its VAE mode is not built)")
        if self.reconstruction_loss not in ("l1", "l2"):
            self._field_error("reconstruction_loss", "'l1' or 'l2'")
        if self.disc_norm not in ("batch", "actnorm", "group", "none"):
            self._field_error("disc_norm", "'batch', 'actnorm', 'group' or 'none' (mmu.losses.NLayerDiscriminator)")
        for name in ("use_l2_norm", "use_discriminator", "lpips_random"):
            if not isinstance(getattr(self, name), bool):
                self._field_error(name, "a bool", TypeError)
        return self


def titok_config(size="S", num_latent_tokens=32, **fields):
    """A TiTokConfig of preset `size` ("S", "B" or "L") with num_latent_tokens tokens (TiTok's K: 32, 64,
    128 in the paper) and any other fields. The published models are (width, layers, heads) S (512, 8, 8),
    B (768, 12, 12), L (1024, 24, 16) (PUBLISHED_SIZES); the presets divide the width by 8 and the depth by
    4 (heads of width 32): S (64, 2, 2), B (96, 3, 3), L (128, 6, 4) (PRESETS), encoder and decoder alike."""
    if not isinstance(size, str) or size.upper() not in PRESETS:
        raise ValueError(f"titok_config: size must be one of {list(PRESETS)}, got {size!r}")
    w, d, h = PRESETS[size.upper()]
    base = dict(encoder_width=w, encoder_depth=d, encoder_heads=h, decoder_width=w, decoder_depth=d,
                decoder_heads=h, num_latent_tokens=num_latent_tokens)
    base.update(fields)
    return TiTokConfig(**base).validate()
