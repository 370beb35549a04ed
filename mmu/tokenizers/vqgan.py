"""VQGAN (Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis"): taming's
Encoder / Decoder, quant_conv / post_quant_conv, any mmu quantizer, and the VQLPIPSWithDiscriminator loss
(L1 + LPIPS + codebook loss + adaptive-weight PatchGAN generator loss; hinge discriminator loss)."""
import numpy as np

from .. import functional as F
from ..autograd import is_grad_enabled
from ..losses import adopt_weight, hinge_d_loss, vanilla_d_loss
from ..losses.lpips import PerceptualLPIPS
from ..nn import Conv2d
from ..tensor import Tensor, cat
from .base import Tokenizer, TokenizerOutput, _as_images, make_quantizer
from .blocks import Decoder, Encoder
from .config import VQGANConfig

__all__ = ["VQGAN"]


def _pos_int(v, name, lo=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"VQGAN: {name} must be an int >= {lo}, got {v!r}")
    return v


def _int_list(v, name, allow_empty):
    if not isinstance(v, (list, tuple)) or (not v and not allow_empty) or \
            any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in v):
        raise ValueError(f"VQGAN: {name} must be a list of positive ints, got {v!r}")
    return list(v)


class VQGAN(PerceptualLPIPS, Tokenizer):
    """VQGAN with taming-transformers' layout and loss (see VQGANConfig).

    Modules (encoder, decoder, quant_conv, post_quant_conv under taming's VQModel keys; quantize and
    discriminator under mmu's own, see from_taming_state_dict for loading a taming checkpoint): encoder (Encoder: conv_in, down.{i}.block.{j} /
    .attn.{j} / .downsample, mid.block_1 / attn_1 / block_2, norm_out, conv_out), quant_conv
    (z_channels -> embed_dim, 1x1), quantize, post_quant_conv (embed_dim -> z_channels, 1x1), decoder
    (Decoder: conv_in, mid, up.{i}..., norm_out, conv_out), discriminator (taming's NLayerDiscriminator,
    when use_discriminator). LPIPS (when perceptual_weight > 0) is frozen and kept outside the module tree
    (not in state_dict, not in parameters()).

    forward(images, step) -> TokenizerOutput: loss = pixel_weight * L1 + perceptual_weight * LPIPS +
    codebook_weight * quantizer loss + adopt_weight(disc_factor, step, disc_start) * d_weight * g_loss,
    g_loss = -mean D(recon), d_weight = adaptive_weight(nll, g_loss, decoder.conv_out.weight) * disc_weight
    (computed in training mode with gradients enabled only, as taming sets it to 0 in eval).
    discriminator_loss(images, recon, step): adopt_weight(disc_factor, step, disc_start) * hinge (or
    vanilla) loss of D(images) vs D(sg(recon))."""

    config_class = VQGANConfig

    def _build_model(self):
        c = self.config
        for name in ("in_channels", "ch", "z_channels", "embed_dim", "resolution", "codebook_size", "norm_groups"):
            _pos_int(getattr(c, name), name)
        _pos_int(c.num_res_blocks, "num_res_blocks", 0)
        if c.out_channels is not None:
            _pos_int(c.out_channels, "out_channels")
        ch_mult = _int_list(c.ch_mult, "ch_mult", False)
        attn = _int_list(c.attn_resolutions, "attn_resolutions", True)
        if c.num_res_blocks == 0 and any(m != 1 for m in ch_mult):
            # taming's Encoder changes the width only inside its ResnetBlocks
            raise ValueError(f"VQGAN: num_res_blocks=0 needs ch_mult of all 1s (no block to change the width), "
                             f"got {ch_mult}")
        f = 2 ** (len(ch_mult) - 1)
        if c.resolution % f:
            raise ValueError(f"VQGAN: resolution {c.resolution} must be a multiple of the downsample factor {f} "
                             f"(2^(len(ch_mult) - 1))")
        if not 0.0 <= float(c.dropout) < 1.0:
            raise ValueError(f"VQGAN: dropout must be in [0, 1), got {c.dropout}")
        if not isinstance(c.quantizer_kwargs, dict):
            raise TypeError(f"VQGAN: quantizer_kwargs must be a dict, got {type(c.quantizer_kwargs).__name__}")
        for name in ("codebook_weight", "pixel_weight", "perceptual_weight", "disc_weight", "disc_factor"):
            if not float(getattr(c, name)) >= 0:
                raise ValueError(f"VQGAN: {name} must be >= 0, got {getattr(c, name)}")
        _pos_int(c.disc_start, "disc_start", 0)
        if c.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"VQGAN: disc_loss must be 'hinge' or 'vanilla', got {c.disc_loss!r}")
        if c.perceptual_weight > 0:
            if c.in_channels not in (1, 3):
                raise ValueError(f"VQGAN: LPIPS needs 1- or 3-channel images, got in_channels={c.in_channels}; "
                                 "set perceptual_weight=0")
            if c.lpips_weights is None and not c.lpips_random:
                raise ValueError("VQGAN: perceptual_weight > 0 needs LPIPS weights: set lpips_weights to a file made "
                                 "by mmu.losses.lpips.convert_torch_weights (pretrained VGG16 + LPIPS lin layers), "
                                 "or perceptual_weight=0, or lpips_random=True (a randomly initialised LPIPS, for "
                                 "tests and benchmarks only)")
        out_ch = c.in_channels if c.out_channels is None else c.out_channels
        g = c.norm_groups
        self.encoder = Encoder(c.ch, ch_mult, c.num_res_blocks, attn, c.in_channels, c.resolution, c.z_channels,
                               c.dropout, g)
        self.decoder = Decoder(c.ch, ch_mult, c.num_res_blocks, attn, out_ch, c.resolution, c.z_channels,
                               c.dropout, g)
        self.quantize = make_quantizer(c.quantizer, c.embed_dim, c.codebook_size, c.beta, c.quantizer_kwargs)
        self.quant_conv = Conv2d(c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = Conv2d(c.embed_dim, c.z_channels, 1)
        if c.use_discriminator:
            self.discriminator = self._make_discriminator()

    def _make_discriminator(self):
        c = self.config
        _pos_int(c.disc_ndf, "disc_ndf")
        _pos_int(c.disc_layers, "disc_layers")
        side = c.resolution // 2 ** c.disc_layers - 2
        if side < 1:
            raise ValueError(f"VQGAN: a PatchGAN with disc_layers={c.disc_layers} maps {c.resolution}px images to "
                             f"{side}x{side} logits; use fewer disc_layers or larger images")
        try:
            from ..losses import NLayerDiscriminator
        except ImportError:
            raise ImportError("VQGAN: use_discriminator=True needs mmu.losses.NLayerDiscriminator, which this build "
                              "does not have; set use_discriminator=False") from None
        return NLayerDiscriminator(input_nc=c.in_channels, ndf=c.disc_ndf, n_layers=c.disc_layers, norm=c.disc_norm)

    @classmethod
    def from_taming_state_dict(cls, state_dict, resolution=256, lpips_weights=None, legacy=True, strict=True,
                               **config):
        """A VQGAN holding a taming-transformers VQModel checkpoint's weights (mmu.tokenizers.convert has the
        key table). state_dict: torch.load(ckpt, map_location="cpu")["state_dict"] (tensors or arrays);
        resolution: the training image size (256 in taming's configs; only attn_resolutions depends on it);
        lpips_weights: a path where the checkpoint's LPIPS weights (loss.perceptual_loss.*) are written
        (safetensors, or .npz) so the model trains with taming's perceptual loss — without it
        perceptual_weight is 0 (a UserWarning says so when the checkpoint had LPIPS weights); legacy:
        taming's VectorQuantizer2 loss weighting (commitment 1, codebook beta; default) or mmu's; strict:
        ValueError on keys with no mmu counterpart; **config: VQGANConfig fields to set (e.g. disc_start,
        which taming keeps in its yaml). The config's other fields are read off the weights' shapes."""
        from .convert import vqgan_from_taming_state_dict
        return vqgan_from_taming_state_dict(cls, state_dict, resolution=resolution, lpips_weights=lpips_weights,
                                            legacy=legacy, strict=strict, **config)

    @property
    def downsample_factor(self):
        return 2 ** (len(self.config.ch_mult) - 1)

    def get_last_layer(self):
        """decoder.conv_out.weight (taming's get_last_layer, the adaptive weight's reference layer)."""
        return self.decoder.conv_out.weight

    def _encode_latent(self, x):
        return self.quant_conv(self.encoder(x))

    def _decode_latent(self, zq):
        return self.decoder(self.post_quant_conv(zq))

    # ------------------------------------------------------------------ losses
    def _rgb(self, x):
        return cat([x, x, x], 1) if x.shape[1] == 1 else x

    def forward(self, images, step=0):
        step = self._step(step)
        c = self.config
        x = self._check_images(images, "VQGAN.forward")
        zq, codes, qloss, stats = self._quantize(self._encode_latent(x))
        recon = self._decode_latent(zq)
        rec = F.l1_loss(recon, x)
        losses = {"rec": float(rec.item())}
        nll = rec * c.pixel_weight if c.pixel_weight != 1.0 else rec
        if c.perceptual_weight > 0:
            p = self.lpips()(self._rgb(x), self._rgb(recon)).mean()
            losses["perceptual"] = float(p.item())
            nll = nll + p * c.perceptual_weight
        loss = nll + qloss * c.codebook_weight
        losses["quant"] = float(qloss.item())
        if stats is not None:
            losses.update({k: float(v) for k, v in stats.losses.items() if k not in losses})
        factor = adopt_weight(c.disc_factor, step, threshold=c.disc_start)
        if self.discriminator is not None and self.training and is_grad_enabled() and factor > 0:
            from ..losses import adaptive_weight
            g_loss = -self.discriminator(recon).mean()
            d_weight = adaptive_weight(nll, g_loss, last_layer=self.get_last_layer()) * c.disc_weight
            loss = loss + g_loss * d_weight * factor
            losses["g_adv"] = float(g_loss.item())
            losses["d_weight"] = float(d_weight.item())
        return TokenizerOutput(recon=recon, loss=loss, losses=losses, codes=np.asarray(codes), stats=stats)

    def discriminator_loss(self, images, recon, step=0):
        """(d_loss, {"d_loss", "logits_real", "logits_fake"}): adopt_weight(disc_factor, step, disc_start) *
        hinge_d_loss(D(images), D(sg(recon))) (vanilla_d_loss with disc_loss="vanilla")."""
        if self.discriminator is None:
            return super().discriminator_loss(images, recon, step)
        step = self._step(step)
        c = self.config
        x = _as_images(images, "VQGAN.discriminator_loss").detach()
        r = _as_images(recon, "VQGAN.discriminator_loss").detach()
        if tuple(x.shape) != tuple(r.shape):
            raise ValueError(f"VQGAN.discriminator_loss: images {tuple(x.shape)} and recon {tuple(r.shape)} differ")
        factor = adopt_weight(c.disc_factor, step, threshold=c.disc_start)
        lr, lf = self.discriminator(x), self.discriminator(r)
        d = (hinge_d_loss if c.disc_loss == "hinge" else vanilla_d_loss)(lr, lf) * factor
        info = {"d_loss": float(d.item()), "logits_real": float(lr.detach().mean().item()),
                "logits_fake": float(lf.detach().mean().item())}
        return d, info
