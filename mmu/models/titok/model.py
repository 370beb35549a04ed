"""TiTok: an image as a 1-D sequence of K tokens (Yu et al. 2024, "An Image is Worth 32 Tokens for
Reconstruction and Generation"), following bytedance/1d-tokenizer (modeling/titok.py, modules/blocks.py
TiTokEncoder / TiTokDecoder, quantizer/quantizer.py VectorQuantizer, modules/losses.py).

TiTok's public training is two-stage: stage 1 trains the decoder to predict the 1024 proxy codes of a
pretrained MaskGIT-VQGAN per patch (cross-entropy), stage 2 fine-tunes that VQGAN's pixel decoder. No such
VQGAN exists here, so mmu follows the repository's pixel-decoding variant instead (TiTokDecoder with
is_legacy=False, "directly predicting RGB pixels", used by its single-stage titok_*_vq8k / TA-TiTok
configs with ReconstructionLoss_Single_Stage): one stage, reconstruction + perceptual (+ PatchGAN with
LeCam) losses on the decoded pixels.

Module names are mmu's (the encoder is an mmu.nn.ViTEncoder, the layers mmu.nn.TransformerLayer);
convert.py maps 1d-tokenizer's state_dict onto them."""
import numpy as np

import mmu as _mmu
from ... import functional as F
from ...autograd import is_grad_enabled, no_grad
from ...losses import adopt_weight, hinge_d_loss, lecam_reg
from ...losses.lpips import PerceptualLPIPS
from ...nn import Conv2d, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter, TransformerLayer, ViTEncoder
from ...nn import init
from ...quantizers import codebook_stats
from ...tensor import cat, tensor as _tensor
from ...tokenizers.base import Tokenizer, TokenizerOutput, _as_images
from .config import TiTokConfig

__all__ = ["TiTok", "TiTokEncoder", "TiTokDecoder", "TiTokQuantizer"]


def _layers_at_rows(layers, x, lo, hi):
    """The transformer layers on x (B, T, width), of whose output only the tokens lo .. hi are read ->
    (B, hi - lo, width). The last layer computes only those rows: every token still gives its key and value,
    but the other tokens' queries (F.attention_of_heads' query_rows), output projection, MLP and residual,
    which nothing reads, are skipped. The encoder keeps only its K latent tokens and the decoder only its N
    patch tokens, about half of the sequence each, so its last layer costs a little over half. The kept rows
    get the same numbers as the whole layer sliced afterwards (1d-tokenizer's order)."""
    for layer in layers[:-1]:
        x = layer(x)
    if not len(layers):
        return x[:, lo:hi]
    layer = layers[-1]
    a = layer.attn
    if not (layer.residual == "sequential" and layer.cross_attn is None and a.qkv_proj is not None and
            a.q_norm is None and not a.rotary_dim and layer.dropout.p == 0.0):
        return layer(x)[:, lo:hi]  # (TiTok's layers are never built so; kept for safety)
    b, h = x.shape[0], a.num_heads
    z = F.qkv_heads(a.qkv_proj(layer.norm1(x)), h, a.num_kv_heads)                   # (B, H + 2 Hkv, T, hd)
    o = F.attention_of_heads(z, h, a.num_kv_heads, query_rows=(lo, hi))               # (B, H, hi - lo, hd)
    x = x[:, lo:hi] + a.out_proj(o.permute(0, 2, 1, 3).reshape(b, hi - lo, h * a.head_dim))
    return x + layer.mlp(layer.norm2(x))


class TiTokEncoder(ViTEncoder):
    """1d-tokenizer's TiTokEncoder (is_legacy=False) on mmu.nn.ViTEncoder: patches (Conv2d of stride
    patch_size) after 1 + K extra tokens [class token; the K latent tokens] (extra_tokens (1, 1 + K, width)),
    learned positions pos_embedding (1, 1 + K + N, width), pre_norm (TiTok's ln_pre), `depth` pre-norm
    layers (GELU MLP of mlp_ratio * width, LayerNorm eps 1e-5), then on the K latent outputs only
    post_norm (ln_post) and proj (conv_out, a 1x1 conv = a Linear per token) to token_size.
    images (B, C, R, R) -> latents (B, token_size, K).

    TiTok orders the tokens [class; patches; latents] and keeps the latent tokens and their positions as
    two tensors; attention has no order, so [class; latents; patches] gives the same outputs, and
    convert.py sums each token's embedding and position into extra_tokens / pos_embedding."""

    def __init__(self, resolution, patch_size, in_channels, width, depth, heads, mlp_ratio, num_latent_tokens,
                 token_size):
        super().__init__(resolution, patch_size, in_channels=in_channels, dim=width, depth=depth, num_heads=heads,
                         hidden_dim=int(width * mlp_ratio), activation="gelu", bias=True, norm="layernorm",
                         norm_eps=1e-5, pos="learned", num_extra_tokens=1 + num_latent_tokens, final_norm=False,
                         pre_norm=True)
        self.num_latent_tokens = int(num_latent_tokens)
        # TiTok's init: tokens and positions ~ width^-0.5 * randn
        init.normal_(self.extra_tokens, 0.0, width ** -0.5)
        init.normal_(self.pos_embedding, 0.0, width ** -0.5)
        self.post_norm = LayerNorm(width, eps=1e-5)
        self.proj = Linear(width, token_size)

    def forward(self, images):
        """images (B, C, R, R) -> (B, token_size, K)."""
        images = _as_images(images, "TiTokEncoder")
        if images.ndim != 4 or images.shape[1] != self.in_channels or tuple(images.shape[2:]) != tuple(self.image_size):
            raise ValueError(f"TiTokEncoder: images must be (B, {self.in_channels}, {self.image_size[0]}, "
                             f"{self.image_size[1]}), got {tuple(images.shape)}")
        b, k = images.shape[0], self.num_latent_tokens
        x = self.patch_embed(images)  # (B, width, gh, gw)
        x = x.reshape(b, self.dim, x.shape[2] * x.shape[3]).transpose(1, 2)  # (B, N, width)
        x = cat([self.extra_tokens.expand(b, self.num_extra_tokens, self.dim), x], 1) + self.pos_embedding
        x = _layers_at_rows(self.layers, self.pre_norm(x), 1, 1 + k)  # (B, K, width): the latents' outputs
        return self.proj(self.post_norm(x)).transpose(1, 2)


class TiTokDecoder(Module):
    """1d-tokenizer's TiTokDecoder with is_legacy=False (the pixel decoder): embed (decoder_embed, Linear
    token_size -> width) of the K quantized tokens + latent_pos_embedding (1, K, width), after
    [class_token; one mask_token per patch] + pos_embedding (1, 1 + N, width) (TiTok's order: class, N mask
    tokens, K latents); pre_norm (ln_pre), `depth` layers, norm (ln_post) on the N patch tokens, to_pixels
    (ffn's 1x1 conv, a Linear width -> patch^2 * C) rearranged 'b (p1 p2 c) h w -> b c (h p1) (w p2)', and
    conv_out (3x3, C -> C). zq (B, token_size, K) -> images (B, C, R, R)."""

    def __init__(self, resolution, patch_size, out_channels, width, depth, heads, mlp_ratio, num_latent_tokens,
                 token_size):
        super().__init__()
        self.patch_size, self.out_channels, self.width = int(patch_size), int(out_channels), int(width)
        self.grid = int(resolution) // self.patch_size
        self.num_latent_tokens = int(num_latent_tokens)
        n, w = self.grid * self.grid, self.width
        self.embed = Linear(token_size, w)

        def param(*shape):  # TiTok's init: width^-0.5 * randn
            p = Parameter(_tensor(np.zeros(shape, np.float32)))
            init.normal_(p, 0.0, w ** -0.5)
            return p
        self.class_token = param(1, 1, w)
        self.mask_token = param(1, 1, w)
        self.pos_embedding = param(1, 1 + n, w)
        self.latent_pos_embedding = param(1, self.num_latent_tokens, w)
        self.pre_norm = LayerNorm(w, eps=1e-5)
        self.layers = ModuleList([TransformerLayer(w, heads, hidden_dim=int(w * mlp_ratio), activation="gelu",
                                                   bias=True, norm="layernorm", norm_eps=1e-5)
                                  for _ in range(int(depth))])
        self.norm = LayerNorm(w, eps=1e-5)
        self.to_pixels = Linear(w, self.patch_size * self.patch_size * self.out_channels)
        self.conv_out = Conv2d(self.out_channels, self.out_channels, 3, padding=1)

    @property
    def last_layer(self):
        """conv_out.weight, the output layer."""
        return self.conv_out.weight

    def forward(self, zq):
        """zq (B, token_size, K) -> (B, C, R, R)."""
        b, k = zq.shape[0], zq.shape[2]
        if k != self.num_latent_tokens:
            raise ValueError(f"TiTokDecoder: zq must have K = {self.num_latent_tokens} tokens, got {tuple(zq.shape)}")
        n, w, p, g, c = self.grid * self.grid, self.width, self.patch_size, self.grid, self.out_channels
        latents = self.embed(zq.transpose(1, 2)) + self.latent_pos_embedding             # (B, K, w)
        prefix = cat([self.class_token, self.mask_token.expand(1, n, w)], 1) + self.pos_embedding  # (1, 1 + N, w)
        x = self.pre_norm(cat([prefix.expand(b, 1 + n, w), latents], 1))                 # (B, 1 + N + K, w)
        x = self.to_pixels(self.norm(_layers_at_rows(self.layers, x, 1, 1 + n)))         # (B, N, p p c)
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)
        return self.conv_out(x)


class TiTokQuantizer(Module):
    """1d-tokenizer's VectorQuantizer (quantizer/quantizer.py): embedding (codebook_size, token_size),
    initialised uniform(-1/K, 1/K). forward(z (B, D, H, W)) -> (quantized (B, D, H, W), indices (B, H, W),
    loss 0-d). With use_l2_norm the latents and the codebook rows are l2-normalised (its get_codebook_entry
    normalises the looked-up rows, so the codes are unit vectors and the codebook loss reaches the raw rows
    through the normalisation); the nearest code minimises the squared distance; loss = commitment_cost *
    mse(sg(q), z) + mse(q, sg(z)) on the (normalised) z; the output is z + sg(q - z) (straight-through).

    mmu's VectorQuantize(use_cosine_sim=True, learnable_codebook=True) differs: it returns the raw
    (unnormalised) rows of a learnable codebook, so TiTok's quantizer is this one. 1d-tokenizer's
    clustering_vq option (its pixel-decoding TA-TiTok configs' codebook re-seeding, see _cluster) is on with
    clustering_vq=True (buffer embed_prob). self.stats holds the usage."""

    def __init__(self, codebook_size, token_size, commitment_cost=0.25, use_l2_norm=True, clustering_vq=False):
        super().__init__()
        self.codebook_size, self.token_size = int(codebook_size), int(token_size)
        self.commitment_cost, self.use_l2_norm = float(commitment_cost), bool(use_l2_norm)
        self.clustering_vq = bool(clustering_vq)
        self.embedding = Embedding(self.codebook_size, self.token_size)
        k = self.codebook_size
        with no_grad():
            self.embedding.weight.copy_(_tensor(((_mmu.rand(k, self.token_size).numpy() * 2.0 - 1.0) / k)
                                                .astype(np.float32)))
        if self.clustering_vq:
            self.register_buffer("embed_prob", _tensor(np.zeros(k, np.float32)))
        self.stats = None

    def _cluster(self, raw, x, idx, book):
        """1d-tokenizer's clustering_vq step (training only; from CVQ-VAE): embed_prob <- 0.99 embed_prob +
        0.01 (the batch's code frequencies); every code k moves to the batch row nearest to it (by the search's
        distance), raw[argmin_m d(m, k)] (the row before normalisation), by decay_k = exp(-embed_prob_k K 10 /
        (1 - 0.99) - 1e-3): a code the batches use (embed_prob well above 1/(1000 K)) stays, an unused one
        jumps onto the data. raw, x (M, D), idx (M,), book (K, D): NumPy float32 / int64."""
        k, dec = self.codebook_size, np.float32(0.99)
        freq = np.bincount(idx, minlength=k).astype(np.float32) / np.float32(idx.size)
        prob = self.embed_prob.numpy() * dec + freq * (np.float32(1.0) - dec)
        d = (x * x).sum(1, keepdims=True) + (book * book).sum(1) - 2.0 * (x @ book.T)  # (M, K), float32
        nearest_row = d.argmin(0)
        decay = np.exp(-(prob * k * 10.0) / (1.0 - dec) - 1e-3).astype(np.float32)[:, None]
        w = self.embedding.weight.numpy()
        new = w * (np.float32(1.0) - decay) + raw[nearest_row] * decay
        with no_grad():
            self.embed_prob.copy_(_tensor(prob.astype(np.float32)))
            self.embedding.weight.copy_(_tensor(new.astype(np.float32)))

    def codebook(self):
        """The codes as forward uses them: (codebook_size, token_size), l2-normalised with use_l2_norm."""
        w = self.embedding.weight
        if self.clustering_vq and self.training:
            # a copy in the graph: _cluster then moves the codes in place, and the backward differentiates at
            # the codes this forward used (1d-tokenizer assigns embedding.weight.data between its forward and
            # backward, so torch's backward of its normalisation mixes the old and the moved codes)
            w = w + 0.0
        return F.normalize(w, dim=-1) if self.use_l2_norm else w

    def forward(self, z):
        """z (B, D, H, W) -> (quantized (B, D, H, W), indices int64 (B, H, W), loss 0-d)."""
        if z.ndim != 4 or z.shape[1] != self.token_size:
            raise ValueError(f"TiTokQuantizer: z must be (B, {self.token_size}, H, W), got {tuple(z.shape)}")
        b, d, h, w = z.shape
        x = raw = z.reshape(b, d, h * w).transpose(1, 2).reshape(b * h * w, d)
        if self.use_l2_norm:
            x = F.normalize(x, dim=-1)
        book = self.codebook()
        idx = F.nearest_code(x.detach(), book.detach(), "l2")
        q = F.embedding(idx, book)
        commitment = F.mse_loss(q.detach(), x)
        codebook = F.mse_loss(q, x.detach())
        loss = commitment * self.commitment_cost + codebook
        if self.clustering_vq and self.training:
            # after the losses, as 1d-tokenizer (the optimiser then steps the moved codes)
            self._cluster(raw.detach().numpy(), x.detach().numpy(), idx.numpy(), book.detach().numpy())
        out = x + (q - x).detach()
        out = out.reshape(b, h * w, d).transpose(1, 2).reshape(b, d, h, w)
        self.stats = codebook_stats(idx.numpy(), self.codebook_size,
                                    losses={"commitment": float(commitment.item()), "codebook": float(codebook.item())})
        return out, idx.reshape(b, h, w), loss

    def get_output_from_indices(self, indices):
        """indices int64 (B, H, W) -> the quantized map (B, token_size, H, W) forward gives for them."""
        b, h, w = indices.shape
        q = F.embedding(indices.reshape(b * h * w), self.codebook())
        return q.reshape(b, h * w, self.token_size).transpose(1, 2).reshape(b, self.token_size, h, w)

    def extra_repr(self):
        return f"codebook_size={self.codebook_size}, token_size={self.token_size}, use_l2_norm={self.use_l2_norm}"


class TiTok(PerceptualLPIPS, Tokenizer):
    """TiTok (see TiTokConfig; titok_config for the S / B / L presets): an mmu Tokenizer with latent_layout
    "1d": encode(images (B, C, R, R)) -> codes (B, K) np.int64, decode(codes) -> images (B, C, R, R),
    R = config.resolution.

    Modules: encoder (TiTokEncoder), quantize (TiTokQuantizer), decoder (TiTokDecoder), discriminator
    (mmu.losses.NLayerDiscriminator, with use_discriminator; plus the buffer lecam_ema = [EMA of D's mean
    logit on real images, on reconstructions] when lecam_weight > 0). LPIPS (perceptual_weight > 0) is
    frozen and kept outside the module tree.

    forward(images, step) -> TokenizerOutput: loss = reconstruction_weight * mse (l1) + perceptual_weight
    * LPIPS + quantizer_weight * quantizer loss + disc_weight * adopt_weight(disc_factor, step, disc_start)
    * (-mean D(recon)) (1d-tokenizer's ReconstructionLoss_Single_Stage: no adaptive weight).
    discriminator_loss(images, recon, step): adopt_weight(...) * hinge(D(images), D(sg(recon))) +
    lecam_weight * LeCam (1d-tokenizer's compute_lecam_loss: relu(mean D(real) - ema_fake)^2 +
    relu(ema_real - mean D(fake))^2 on the batch means, the EMAs as before this step; then
    ema <- lecam_decay * ema + (1 - lecam_decay) * mean)."""

    config_class = TiTokConfig
    latent_layout = "1d"

    def _build_model(self):
        c = self.config.validate()
        if c.perceptual_weight > 0:
            if c.in_channels not in (1, 3):
                raise ValueError(f"TiTok: LPIPS needs 1- or 3-channel images, got in_channels={c.in_channels}; "
                                 "set perceptual_weight=0")
            if c.lpips_weights is None and not c.lpips_random:
                raise ValueError("TiTok: perceptual_weight > 0 needs LPIPS weights (lpips_weights, a file made by "
                                 "mmu.losses.lpips.convert_torch_weights), or lpips_random=True (tests only)")
        self.encoder = TiTokEncoder(c.resolution, c.patch_size, c.in_channels, c.encoder_width, c.encoder_depth,
                                    c.encoder_heads, c.mlp_ratio, c.num_latent_tokens, c.token_size)
        self.quantize = TiTokQuantizer(c.codebook_size, c.token_size, c.commitment_cost, c.use_l2_norm,
                                       c.clustering_vq)
        self.decoder = TiTokDecoder(c.resolution, c.decoder_patch_size or c.patch_size, c.in_channels,
                                    c.decoder_width, c.decoder_depth, c.decoder_heads, c.mlp_ratio,
                                    c.num_latent_tokens, c.token_size)
        if c.use_discriminator:
            from ...losses import NLayerDiscriminator
            side = c.resolution // 2 ** c.disc_layers - 2
            if side < 1:
                raise ValueError(f"TiTok: a PatchGAN with disc_layers={c.disc_layers} maps {c.resolution}px images "
                                 f"to {side}x{side} logits; use fewer disc_layers")
            self.discriminator = NLayerDiscriminator(input_nc=c.in_channels, ndf=c.disc_ndf, n_layers=c.disc_layers,
                                                     norm=c.disc_norm)
            if c.lecam_weight > 0:
                self.register_buffer("lecam_ema", _tensor(np.zeros(2, np.float32)))

    @property
    def num_latent_tokens(self):
        """K, the tokens per image."""
        return int(self.config.num_latent_tokens)

    @property
    def downsample_factor(self):
        """The encoder's patch size (a 1-D tokenizer has no code grid; tokens_per_image is K)."""
        return int(self.config.patch_size)

    def get_last_layer(self):
        """decoder.conv_out.weight."""
        return self.decoder.conv_out.weight

    def _encode_latent(self, x):
        return self.encoder(x)

    def _decode_latent(self, zq):
        return self.decoder(zq)

    # ------------------------------------------------------------------ losses
    @staticmethod
    def _rgb(x):
        return cat([x, x, x], 1) if x.shape[1] == 1 else x

    def forward(self, images, step=0):
        step = self._step(step)
        c = self.config
        x = self._check_images(images, "TiTok.forward")
        zq, codes, qloss, stats = self._quantize(self._encode_latent(x))
        recon = self._decode_latent(zq)
        rec = F.mse_loss(recon, x) if c.reconstruction_loss == "l2" else F.l1_loss(recon, x)
        losses = {"rec": float(rec.item())}
        loss = rec * c.reconstruction_weight
        if c.perceptual_weight > 0:
            p = self.lpips()(self._rgb(x), self._rgb(recon)).mean()
            losses["perceptual"] = float(p.item())
            loss = loss + p * c.perceptual_weight
        loss = loss + qloss * c.quantizer_weight
        losses["quant"] = float(qloss.item())
        losses.update({k: float(v) for k, v in stats.losses.items() if k not in losses})
        factor = adopt_weight(c.disc_factor, step, threshold=c.disc_start)
        if self.discriminator is not None and self.training and is_grad_enabled() and factor > 0 \
                and c.disc_weight > 0:
            g_loss = -self.discriminator(recon).mean()
            loss = loss + g_loss * (c.disc_weight * factor)
            losses["g_adv"] = float(g_loss.item())
        return TokenizerOutput(recon=recon, loss=loss, losses=losses, codes=np.asarray(codes), stats=stats)

    def discriminator_loss(self, images, recon, step=0):
        """(d_loss, {"d_loss", "logits_real", "logits_fake"[, "lecam"]}) on images and sg(recon); the LeCam
        EMAs move (training mode only) after the term is computed."""
        if self.discriminator is None:
            return super().discriminator_loss(images, recon, step)
        step = self._step(step)
        c = self.config
        x = _as_images(images, "TiTok.discriminator_loss").detach()
        r = _as_images(recon, "TiTok.discriminator_loss").detach()
        if tuple(x.shape) != tuple(r.shape):
            raise ValueError(f"TiTok.discriminator_loss: images {tuple(x.shape)} and recon {tuple(r.shape)} differ")
        factor = adopt_weight(c.disc_factor, step, threshold=c.disc_start)
        lr, lf = self.discriminator(x), self.discriminator(r)
        d = hinge_d_loss(lr, lf) * factor
        mr, mf = lr.mean(), lf.mean()
        info = {"logits_real": float(mr.item()), "logits_fake": float(mf.item())}
        if c.lecam_weight > 0:
            ema_real, ema_fake = (float(v) for v in self.lecam_ema.numpy())
            lecam = lecam_reg(mr, mf, ema_real, ema_fake) * c.lecam_weight
            d = d + lecam
            info["lecam"] = float(lecam.item())
            if self.training:
                # float32 arithmetic as 1d-tokenizer's buffers
                dec = np.float32(c.lecam_decay)
                new = self.lecam_ema.numpy() * dec + np.array([info["logits_real"], info["logits_fake"]],
                                                               np.float32) * (np.float32(1.0) - dec)
                with no_grad():
                    self.lecam_ema.copy_(_tensor(new.astype(np.float32)))
        info["d_loss"] = float(d.item())
        return d, info
