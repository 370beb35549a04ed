"""VQVAE: the VQ-VAE of van den Oord et al. 2017 with any quantizer of mmu.quantizers."""
import numpy as np

from .. import functional as F
from .base import Tokenizer, TokenizerOutput, make_quantizer
from .blocks import ConvDecoder, ConvEncoder, num_downsamples
from .config import VQVAEConfig

__all__ = ["VQVAE"]


def _check_common(cfg, owner):
    for name in ("in_channels", "hidden_channels", "res_channels", "embed_dim", "codebook_size", "resolution"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {v!r}")
    if isinstance(cfg.num_res_blocks, bool) or not isinstance(cfg.num_res_blocks, int) or cfg.num_res_blocks < 0:
        raise ValueError(f"{owner}: num_res_blocks must be an int >= 0, got {cfg.num_res_blocks!r}")
    num_downsamples(cfg.downsample, owner)
    if cfg.resolution % cfg.downsample:
        raise ValueError(f"{owner}: resolution {cfg.resolution} must be a multiple of downsample {cfg.downsample}")
    if not isinstance(cfg.quantizer_kwargs, dict):
        raise TypeError(f"{owner}: quantizer_kwargs must be a dict, got {type(cfg.quantizer_kwargs).__name__}")


class VQVAE(Tokenizer):
    """VQ-VAE (van den Oord et al. 2017): ConvEncoder -> quantizer -> ConvDecoder (see VQVAEConfig).

    VQVAE(config) / VQVAE(**fields). forward(images (B, C, H, W) in [-1, 1], step=0) -> TokenizerOutput with
    loss = mse(recon, images) + quantizer loss (losses "rec", "quant", plus the quantizer's own terms);
    encode -> np.int64 (B, H/f, W/f) ((B, h, w, levels) for rvq); decode -> np.float32 images.
    Modules: encoder (ConvEncoder ending in the 1x1 pre-quantization conv to embed_dim), quantize,
    decoder (ConvDecoder)."""

    config_class = VQVAEConfig

    def _build_model(self):
        c = self.config
        _check_common(c, "VQVAE")
        self.encoder = ConvEncoder(c.in_channels, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                   c.downsample, out_channels=c.embed_dim)
        self.quantize = make_quantizer(c.quantizer, c.embed_dim, c.codebook_size, c.beta, c.quantizer_kwargs)
        self.decoder = ConvDecoder(c.embed_dim, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                   c.downsample, c.in_channels)

    @property
    def downsample_factor(self):
        return self.config.downsample

    def _encode_latent(self, x):
        return self.encoder(x)

    def _decode_latent(self, zq):
        return self.decoder(zq)

    def forward(self, images, step=0):
        self._step(step)
        x = self._check_images(images, "VQVAE.forward")
        zq, codes, qloss, stats = self._quantize(self._encode_latent(x))
        recon = self._decode_latent(zq)
        rec = F.mse_loss(recon, x)
        loss = rec + qloss
        losses = {"rec": float(rec.item()), "quant": float(qloss.item())}
        if stats is not None:
            losses.update({k: float(v) for k, v in stats.losses.items() if k not in losses})
        return TokenizerOutput(recon=recon, loss=loss, losses=losses, codes=np.asarray(codes), stats=stats)
