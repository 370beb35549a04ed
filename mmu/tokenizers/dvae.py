"""DVAE: DALL-E's discrete VAE (Ramesh et al. 2021): Gumbel-softmax codes, logit-Laplace (or L1/L2)
reconstruction, KL to the uniform prior, cosine-annealed temperature."""
import numpy as np

from .. import functional as F
from ..losses import logit_laplace_loss, logit_laplace_unmap
from ..quantizers import GumbelQuantize, gumbel_temperature_schedule
from ..tensor import sigmoid
from .base import Tokenizer, TokenizerOutput
from .blocks import ConvDecoder, ConvEncoder
from .vqvae import _check_common
from .config import DVAEConfig

__all__ = ["DVAE"]

_RECON = ("logit_laplace", "l1", "l2")


class DVAE(Tokenizer):
    """Discrete VAE (DALL-E; see DVAEConfig): ConvEncoder (hidden channels) -> GumbelQuantize (1x1 conv
    logits over codebook_size codes, Gumbel-softmax sample at temperature(step), codes of embed_dim) ->
    ConvDecoder.

    recon="logit_laplace": the decoder emits 2C channels (mu, log b); the loss is the logit-Laplace NLL of
    the pixels mapped to [0, 1] (eps 0.1) and the reconstruction is 2 * unmap(sigmoid(mu)) - 1.
    recon="l1" / "l2": the decoder emits C channels, compared directly with the images.
    loss = rec + kl_weight * KL(softmax(logits) || uniform); losses "rec", "kl" (unweighted) and
    "temperature". In eval mode (and in encode) the code is the argmax of the logits (no noise)."""

    config_class = DVAEConfig

    def _build_model(self):
        c = self.config
        _check_common(c, "DVAE")
        if c.quantizer != "gumbel":
            raise ValueError(f"DVAE: quantizer must be 'gumbel' (the dVAE's Gumbel-softmax), got {c.quantizer!r}")
        if c.recon not in _RECON:
            raise ValueError(f"DVAE: recon must be one of {list(_RECON)}, got {c.recon!r}")
        if not 0.0 < float(c.logit_laplace_eps) < 0.5:
            raise ValueError(f"DVAE: logit_laplace_eps must be in (0, 0.5), got {c.logit_laplace_eps}")
        if float(c.kl_weight) < 0:
            raise ValueError(f"DVAE: kl_weight must be >= 0, got {c.kl_weight}")
        for name in ("temp_start", "temp_end"):
            if not float(getattr(c, name)) > 0:
                raise ValueError(f"DVAE: {name} must be > 0, got {getattr(c, name)}")
        if isinstance(c.temp_anneal_steps, bool) or not isinstance(c.temp_anneal_steps, int) or c.temp_anneal_steps < 1:
            raise ValueError(f"DVAE: temp_anneal_steps must be a positive int, got {c.temp_anneal_steps!r}")
        qkw = dict(c.quantizer_kwargs)
        qkw.setdefault("kl_weight", float(c.kl_weight))
        self.encoder = ConvEncoder(c.in_channels, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                   c.downsample, out_channels=None)
        self.quantize = GumbelQuantize(c.hidden_channels, c.codebook_size, embedding_dim=c.embed_dim, **qkw)
        out = 2 * c.in_channels if c.recon == "logit_laplace" else c.in_channels
        self.decoder = ConvDecoder(c.embed_dim, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                   c.downsample, out)

    @property
    def downsample_factor(self):
        return self.config.downsample

    def temperature(self, step):
        """The Gumbel-softmax temperature at a training step (cosine from temp_start to temp_end)."""
        c = self.config
        return gumbel_temperature_schedule(int(step), c.temp_anneal_steps, c.temp_start, c.temp_end)

    def _encode_latent(self, x):
        return self.encoder(x)

    def _split(self, out):
        C = self.config.in_channels
        return out[:, :C], out[:, C:]

    def _decode_latent(self, zq):
        out = self.decoder(zq)
        if self.config.recon != "logit_laplace":
            return out
        mu, _ = self._split(out)
        return logit_laplace_unmap(sigmoid(mu), self.config.logit_laplace_eps) * 2.0 - 1.0

    def forward(self, images, step=0):
        step = self._step(step)
        x = self._check_images(images, "DVAE.forward")
        tau = self.temperature(step)
        zq, codes, qloss, stats = self._quantize(self._encode_latent(x), temperature=tau)
        out = self.decoder(zq)
        c = self.config
        if c.recon == "logit_laplace":
            mu, log_b = self._split(out)
            # pixels in [0, 1]; clamped because the loss takes logit of the squeezed value
            x01 = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
            rec = logit_laplace_loss(x01, mu, log_b, eps=c.logit_laplace_eps)
            recon = logit_laplace_unmap(sigmoid(mu), c.logit_laplace_eps) * 2.0 - 1.0
        elif c.recon == "l1":
            recon = out
            rec = F.l1_loss(out, x)
        else:
            recon = out
            rec = F.mse_loss(out, x)
        loss = rec + qloss
        losses = {"rec": float(rec.item()), "kl": float(stats.losses.get("kl", 0.0)), "temperature": float(tau)}
        return TokenizerOutput(recon=recon, loss=loss, losses=losses, codes=np.asarray(codes), stats=stats)
