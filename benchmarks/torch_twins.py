"""PyTorch twins of mmu models: the same layers, weights and optimiser, so a benchmark times
the same work in both frameworks."""
import collections
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TorchMLPAutoencoder(torch.nn.Module):
    """Twin of mmu.demo.MLPAutoencoder: the same Sequential layout (so the same state_dict keys),
    its weights copied from `state` (name -> NumPy array, e.g. the mmu model's state_dict)."""

    def __init__(self, state, sizes):
        super().__init__()
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.GELU() if i < len(sizes) - 2 else torch.nn.Tanh()]
        self.net = torch.nn.Sequential(*layers)
        self.load_state_dict({k: torch.tensor(v) for k, v in state.items()})

    def forward(self, x):
        return self.net(x)


def train_step(model, optimizer, batch):
    """The same step as mmu.demo.train_step."""
    loss = F.mse_loss(model(batch), batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# =============================================================================================== tokenizers
# Twins of mmu.tokenizers (VQVAE, DVAE, VQGAN): the same modules under the same attribute names, so
# `twin.load_state_dict(state)` with state = {name: array} from the mmu model's state_dict copies every
# parameter and buffer (strict: a missing or extra key is an error); the same quantizer math (straight-
# through VQ with commitment/codebook losses, the Laplace-smoothed EMA codebook update, FSQ, LFQ's
# entropy terms, the Gumbel-softmax with noise passed in) and the same losses. tokenizer_twin(model)
# builds the twin of an mmu tokenizer from its config; tokenizer_train_step mirrors mmu.train.Trainer's step.

_FSQ_LEVELS = {8: [8, 6, 5], 10: [8, 5, 5, 5], 12: [7, 5, 5, 5, 5], 14: [8, 8, 8, 6, 5], 16: [8, 8, 8, 5, 5, 5]}


def fsq_levels_for(codebook_size):
    """mmu.tokenizers.fsq_levels_for: the FSQ paper's levels nearest (in log2) to codebook_size."""
    bits = math.log2(max(int(codebook_size), 2))
    return list(_FSQ_LEVELS[min(_FSQ_LEVELS, key=lambda b: (abs(b - bits), b))])


# ------------------------------------------------------------------------------------------- quantizers
# VectorQuantize options the twin accepts only at these values (the rest of the options it mirrors)
_VQ_NEUTRAL = {"heads": lambda v: v == 1, "separate_codebook_per_head": lambda v: not v, "codebook_dim": lambda v: v is None,
               "use_cosine_sim": lambda v: not v, "rotation_trick": lambda v: not v,
               "stochastic_sample_codes": lambda v: not v, "freeze_codebook": lambda v: not v,
               "sample_codebook_temp": lambda v: True, "channel_last": lambda v: True,
               "accept_image_fmap": lambda v: v in (True, None)}


class TwinVectorQuantize(nn.Module):
    """mmu.quantizers.VectorQuantize for image maps (accept_image_fmap, one head, one codebook, no
    projection, Euclidean): buffers embed (1, K, d) (a Parameter with learnable_codebook), cluster_size,
    embed_avg, initted. Training: loss = commitment_weight * mse(sg(q), x) (+ codebook_weight *
    mse(q, sg(x)) with a learnable codebook), output x + sg(q - x); the EMA update (ema_update, not
    learnable) is vector-quantize-pytorch's with Laplace smoothing, before the losses (as mmu).
    EMA state starts at cluster_size = 1, embed_avg = embed (vector-quantize-pytorch's). kmeans_init is
    mirrored given the starting centres: set `kmeans_rows` (the rows of the first training batch mmu's
    seeded sampler draws) before the first step; then Lloyd's k-means and vector-quantize-pytorch's
    init_embed_ (embed_avg = centre * count, cluster_size = count, embed from them). Dead-code restarts
    are not mirrored (they draw random vectors): turn them off."""

    def __init__(self, dim, codebook_size, learnable_codebook=False, ema_update=True, decay=0.8, eps=1e-5,
                 commitment_weight=1.0, codebook_weight=1.0, kmeans_init=False, kmeans_iters=10,
                 threshold_ema_dead_code=0.0, **unused):
        super().__init__()
        if threshold_ema_dead_code:
            raise ValueError("TwinVectorQuantize: dead-code restarts are not mirrored")
        bad = sorted(k for k, v in unused.items() if k not in _VQ_NEUTRAL or not _VQ_NEUTRAL[k](v))
        if bad:
            raise ValueError(f"TwinVectorQuantize: options not mirrored: {sorted(bad)}")
        self.dim, self.codebook_size = dim, codebook_size
        self.learnable_codebook, self.ema_update = learnable_codebook, ema_update
        self.decay, self.eps = decay, eps
        self.commitment_weight, self.codebook_weight = commitment_weight, codebook_weight
        self.kmeans_init, self.kmeans_iters, self.kmeans_rows = kmeans_init, kmeans_iters, None
        embed = torch.zeros(1, codebook_size, dim)
        if learnable_codebook:
            self.embed = nn.Parameter(embed)
        else:
            self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(1, codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("initted", torch.full((1,), 0.0 if kmeans_init else 1.0))

    def _nearest(self, x, e):
        # ||x||^2 is the same for every code: argmin of ||e||^2 - 2 x.e
        return ((e * e).sum(1)[None] - 2.0 * (x @ e.t())).argmin(1)

    def _smoothed(self):
        # vector-quantize-pytorch's update_ema: embed = embed_avg / Laplace-smoothed cluster sizes
        K, cs = self.codebook_size, self.cluster_size[0]
        n = cs.sum()
        self.embed[0].copy_(self.embed_avg[0] / ((cs + self.eps) / (n + K * self.eps) * n)[:, None])

    @torch.no_grad()
    def _init_kmeans(self, x):
        """vector-quantize-pytorch's kmeans (Lloyd, empty clusters keep their centre, the last bins) from the
        rows self.kmeans_rows, then init_embed_."""
        if self.kmeans_rows is None:
            raise ValueError("TwinVectorQuantize: kmeans_init needs kmeans_rows (mmu's sampled rows) before step 0")
        K = self.codebook_size
        means = x[torch.as_tensor(self.kmeans_rows, dtype=torch.long)].clone()
        for _ in range(self.kmeans_iters):
            b = self._nearest(x, means)
            bins = torch.bincount(b, minlength=K).to(x.dtype)
            new = torch.zeros_like(means).index_add_(0, b, x) / bins.clamp_min(1)[:, None]
            means = torch.where(bins[:, None] == 0, means, new)
        self.embed_avg[0].copy_(means * bins[:, None])
        self.cluster_size[0].copy_(bins)
        self._smoothed()
        self.initted.fill_(1.0)

    def forward(self, z):
        B, D, H, W = z.shape
        x = z.reshape(B, D, H * W).transpose(1, 2).reshape(B * H * W, D)
        if self.training and self.kmeans_init and not bool(self.initted.item()):
            self._init_kmeans(x.detach())
        emb = self.embed[0]
        e = emb.detach()
        ind = self._nearest(x.detach(), e)
        q = F.embedding(ind, emb if self.learnable_codebook else e)
        if self.training and self.ema_update and not self.learnable_codebook:
            with torch.no_grad():
                K, d = self.codebook_size, self.decay
                cnt = torch.bincount(ind, minlength=K).to(x.dtype)
                self.cluster_size[0].mul_(d).add_(cnt, alpha=1 - d)
                s = torch.zeros_like(e).index_add_(0, ind, x.detach())
                self.embed_avg[0].mul_(d).add_(s, alpha=1 - d)
                self._smoothed()
        loss = z.new_zeros(())
        if self.training:
            if self.commitment_weight > 0:
                loss = F.mse_loss(q.detach(), x) * self.commitment_weight
            if self.learnable_codebook and self.codebook_weight > 0:
                loss = loss + F.mse_loss(q, x.detach()) * self.codebook_weight
            q = x + (q - x).detach()
        out = q.reshape(B, H * W, D).transpose(1, 2).reshape(B, D, H, W)
        return out, ind.reshape(B, H, W), loss


def _tokens(z):  # (B, D, H, W) -> (B, HW, D)
    B, D, H, W = z.shape
    return z.permute(0, 2, 3, 1).reshape(B, H * W, D)


def _image(t, H, W):  # (B, HW, D) -> (B, D, H, W)
    return t.reshape(t.shape[0], H, W, t.shape[-1]).permute(0, 3, 1, 2)


class TwinFSQ(nn.Module):
    """mmu.quantizers.FSQ (vector-quantize-pytorch's): bound tanh(z + shift) * half_l - offset,
    straight-through round, divide by L // 2; Linear project_in / project_out when dim != len(levels)."""

    def __init__(self, levels, dim):
        super().__init__()
        self.levels = list(levels)
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("_half_l", (lv - 1) * 1.001 / 2, persistent=False)
        self.register_buffer("_offset", torch.where(torch.tensor(levels) % 2 == 0, 0.5, 0.0), persistent=False)
        self.register_buffer("_shift", torch.atanh(self._offset / self._half_l), persistent=False)
        self.register_buffer("_half_width", torch.tensor([l // 2 for l in levels], dtype=torch.float32),
                             persistent=False)
        basis = np.cumprod([1] + list(levels[:-1])).astype(np.int64)
        self.register_buffer("_basis", torch.from_numpy(basis), persistent=False)
        self.has_projections = dim != len(levels)
        if self.has_projections:
            self.project_in = nn.Linear(dim, len(levels))
            self.project_out = nn.Linear(len(levels), dim)

    def forward(self, z):
        B, D, H, W = z.shape
        x = _tokens(z)
        if self.has_projections:
            x = self.project_in(x)
        b = torch.tanh(x + self._shift) * self._half_l - self._offset
        r = b + (torch.round(b) - b).detach()
        codes = r / self._half_width
        idx = ((codes.detach() * self._half_width + self._half_width).round().long() * self._basis).sum(-1)
        out = self.project_out(codes) if self.has_projections else codes
        return _image(out, H, W), idx.reshape(B, H, W), z.new_zeros(())


class TwinLFQ(nn.Module):
    """mmu.quantizers.LFQ (one codebook): sign quantization to +-scale (straight-through), loss =
    entropy_loss_weight * (mean per-sample entropy - diversity_gamma * entropy of the batch-mean code
    distribution) + commitment_loss_weight * mse(x, sg(q)), p(c|x) = softmax_c(2 inv_temperature scale x.c)
    over all 2^d codes (materialised here: fine for the small codebooks of the tests and benchmarks)."""

    def __init__(self, dim, codebook_size, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                 diversity_gamma=1.0, inv_temperature=100.0, codebook_scale=1.0):
        super().__init__()
        self.bits = int(codebook_size).bit_length() - 1
        self.entropy_loss_weight, self.commitment_loss_weight = entropy_loss_weight, commitment_loss_weight
        self.diversity_gamma, self.inv_temperature, self.scale = diversity_gamma, inv_temperature, codebook_scale
        mask = 2 ** torch.arange(self.bits - 1, -1, -1)
        self.register_buffer("_mask", mask, persistent=False)
        codes = ((torch.arange(codebook_size)[:, None] & mask) != 0).float() * 2 - 1  # (2^d, d)
        self.register_buffer("_codes", codes, persistent=False)
        self.has_projections = dim != self.bits
        if self.has_projections:
            self.project_in = nn.Linear(dim, self.bits)
            self.project_out = nn.Linear(self.bits, dim)

    def forward(self, z):
        B, D, H, W = z.shape
        x = _tokens(z)
        if self.has_projections:
            x = self.project_in(x)
        xc = x.reshape(-1, self.bits)
        pos = xc.detach() > 0
        qc = torch.where(pos, self.scale, -self.scale)
        idx = (pos.long() * self._mask).sum(-1)
        quantized = (xc - xc.detach()) + qc
        loss = z.new_zeros(())
        if self.training:
            if self.entropy_loss_weight != 0.0:
                a = 4.0 * self.inv_temperature * self.scale * xc  # per-bit logits: p(bit) = sigmoid(a)
                per_sample = -(torch.sigmoid(a) * F.logsigmoid(a) + torch.sigmoid(-a) * F.logsigmoid(-a)).sum(-1).mean()
                probs = torch.softmax(2.0 * self.inv_temperature * self.scale * xc @ self._codes.t(), -1)
                avg = probs.mean(0)
                cb = -(avg * torch.log(avg.clamp_min(1e-38))).sum()
                loss = loss + (per_sample - self.diversity_gamma * cb) * self.entropy_loss_weight
            if self.commitment_loss_weight != 0.0:
                loss = loss + F.mse_loss(xc, qc) * self.commitment_loss_weight
        out = quantized.reshape(B, H * W, self.bits)
        if self.has_projections:
            out = self.project_out(out)
        return _image(out, H, W), idx.reshape(B, H, W), loss


def gumbel_noise(shape, generator=None):
    """Standard Gumbel noise -log(-log(u)) (u clamped away from 0 as mmu's)."""
    u = torch.rand(shape, generator=generator).clamp_min(float(np.finfo(np.float32).tiny))
    return -torch.log(-torch.log(u))


class TwinGumbelQuantize(nn.Module):
    """mmu.quantizers.GumbelQuantize (straight_through=True): logits = proj (1x1 conv) as a matmul over
    positions (M, K), y = softmax(logits + noise) (/ tau), code = argmax y, quantized = embed[code] +
    (y @ sg(embed) - sg(y @ sg(embed))); loss = kl_weight * mean KL(softmax(logits) || uniform). Eval: the
    argmax of the logits. forward(x, temperature, noise): noise (M, K) in the (positions, codes) layout
    (None: drawn from torch's RNG)."""

    def __init__(self, dim, codebook_size, embedding_dim, kl_weight=5e-4):
        super().__init__()
        self.dim, self.codebook_size, self.kl_weight = dim, codebook_size, kl_weight
        self.proj = nn.Conv2d(dim, codebook_size, 1)
        self.embed = nn.Embedding(codebook_size, embedding_dim)

    def forward(self, x, temperature=1.0, noise=None):
        B, C, H, W = x.shape
        K = self.codebook_size
        rows = x.permute(0, 2, 3, 1).reshape(B * H * W, C)
        logits = F.linear(rows, self.proj.weight.reshape(K, C), self.proj.bias)
        if self.training:
            if noise is None:
                noise = gumbel_noise(logits.shape)
            y = logits + noise
            y = torch.softmax(y / temperature if temperature != 1.0 else y, 1)
            ind = y.detach().argmax(1)
            soft = y @ self.embed.weight.detach()
            q = F.embedding(ind, self.embed.weight) + (soft - soft.detach())
        else:
            ind = logits.detach().argmax(1)
            q = F.embedding(ind, self.embed.weight)
        p = torch.softmax(logits, 1)
        kl = (p * torch.log(p * float(K) + 1e-10)).sum(1).mean()
        q = q.reshape(B, H, W, -1).permute(0, 3, 1, 2)
        return q, ind.reshape(B, H, W), kl * self.kl_weight


def make_twin_quantizer(kind, dim, codebook_size, beta=0.25, kwargs=None):
    """The twin of mmu.tokenizers.make_quantizer(kind, ...) with the same defaults ("rvq" is not mirrored)."""
    kw = dict(kwargs or {})
    codebook_size = kw.pop("codebook_size", codebook_size)
    if kind in ("vq", "ema_vq"):
        if kind == "vq":
            d = dict(learnable_codebook=True, ema_update=False, commitment_weight=beta, codebook_weight=1.0)
        else:
            d = dict(decay=0.99, kmeans_init=True, threshold_ema_dead_code=1.0, commitment_weight=beta)
        d.update(kw)
        return TwinVectorQuantize(dim, codebook_size, **d)
    if kind == "fsq":
        levels = kw.pop("levels", None) or fsq_levels_for(codebook_size)
        return TwinFSQ(levels, dim)
    if kind == "lfq":
        # mmu.tokenizers' LFQ defaults (entropy weight 1.0, inverse temperature 10), not the quantizer's own
        d = dict(commitment_loss_weight=beta, entropy_loss_weight=1.0, inv_temperature=10.0)
        d.update(kw)
        return TwinLFQ(dim, codebook_size, **d)
    raise ValueError(f"make_twin_quantizer: quantizer {kind!r} has no twin")


# ------------------------------------------------------------------------------------------- VQ-VAE blocks
class TwinResBlock(nn.Module):
    def __init__(self, channels, res_channels):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, res_channels, 3, 1, 1), nn.ReLU(),
                                   nn.Conv2d(res_channels, channels, 1))

    def forward(self, x):
        return x + self.block(x)


class TwinConvEncoder(nn.Module):
    """mmu.tokenizers.blocks.ConvEncoder (strided 4x4 convs, 3x3, ResBlocks, ReLU, optional 1x1)."""

    def __init__(self, in_channels, hidden_channels, res_channels, num_res_blocks, downsample, out_channels=None):
        super().__init__()
        n = int(math.log2(downsample))
        layers, c = [], in_channels
        for i in range(n):
            c_out = hidden_channels if i == n - 1 else max(hidden_channels // 2, 1)
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), nn.ReLU()]
            c = c_out
        layers.append(nn.Conv2d(c, hidden_channels, 3, 1, 1))
        layers += [TwinResBlock(hidden_channels, res_channels) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        if out_channels is not None:
            layers.append(nn.Conv2d(hidden_channels, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class TwinConvDecoder(nn.Module):
    """mmu.tokenizers.blocks.ConvDecoder (3x3, ResBlocks, ReLU, transposed 4x4 stride-2 convs)."""

    def __init__(self, in_channels, hidden_channels, res_channels, num_res_blocks, downsample, out_channels):
        super().__init__()
        n = int(math.log2(downsample))
        layers = [nn.Conv2d(in_channels, hidden_channels, 3, 1, 1)]
        layers += [TwinResBlock(hidden_channels, res_channels) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        c = hidden_channels
        for i in range(n):
            last = i == n - 1
            c_out = out_channels if last else max(hidden_channels // 2, 1)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1))
            if not last:
                layers.append(nn.ReLU())
            c = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


# ------------------------------------------------------------------------------------------- taming blocks
def _groups(channels, max_groups):
    g = max(1, min(int(max_groups), int(channels)))
    while channels % g:
        g -= 1
    return g


def _normalize(c, g):
    return nn.GroupNorm(_groups(c, g), c, eps=1e-6, affine=True)


class TwinResnetBlock(nn.Module):
    def __init__(self, cin, cout, dropout, g):
        super().__init__()
        self.norm1 = _normalize(cin, g)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = _normalize(cout, g)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class TwinAttnBlock(nn.Module):
    def __init__(self, c, g):
        super().__init__()
        self.norm = _normalize(c, g)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)

        def tokens(t):
            return t.reshape(B, C, H * W).transpose(1, 2)
        a = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        return x + self.proj_out(a.transpose(1, 2).reshape(B, C, H, W))


class TwinDownsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class TwinUpsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _TwinLevel(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _TwinMid(nn.Module):
    def __init__(self, c, dropout, g):
        super().__init__()
        self.block_1 = TwinResnetBlock(c, c, dropout, g)
        self.attn_1 = TwinAttnBlock(c, g)
        self.block_2 = TwinResnetBlock(c, c, dropout, g)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


class TwinEncoder(nn.Module):
    """taming's Encoder (mmu.tokenizers.blocks.Encoder)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 dropout=0.0, g=32):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        curr_res, in_ch_mult = resolution, (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            level = _TwinLevel()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                level.block.append(TwinResnetBlock(block_in, block_out, dropout, g))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(TwinAttnBlock(block_in, g))
            if i_level != self.num_resolutions - 1:
                level.downsample = TwinDownsample(block_in)
                curr_res //= 2
            self.down.append(level)
        self.mid = _TwinMid(block_in, dropout, g)
        self.norm_out = _normalize(block_in, g)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level, level in enumerate(self.down):
            for i_block in range(self.num_res_blocks):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class TwinDecoder(nn.Module):
    """taming's Decoder (mmu.tokenizers.blocks.Decoder)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, out_ch, resolution, z_channels,
                 dropout=0.0, g=32):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _TwinMid(block_in, dropout, g)
        levels = []
        for i_level in reversed(range(self.num_resolutions)):
            level = _TwinLevel()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                level.block.append(TwinResnetBlock(block_in, block_out, dropout, g))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(TwinAttnBlock(block_in, g))
            if i_level != 0:
                level.upsample = TwinUpsample(block_in)
                curr_res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _normalize(block_in, g)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for i_level in reversed(range(self.num_resolutions)):
            level = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def lpips_twin(state, net):
    """The lpips package's forward (v0.1, lin=True, eval) built from torch.nn layers in torchvision's
    layout (no torchvision needed) with `state`'s weights (mmu.losses.LPIPS's state_dict as NumPy
    arrays; net "vgg" or "alex"). Returns (forward(x, y) -> (B, 1, 1, 1), features, lins); every
    weight is frozen."""
    from mmu.losses.lpips import _NETS
    layers, taps, chans, _ = _NETS[net]
    mods = []
    for l in layers:
        if l[0] == "conv":
            mods.append(nn.Conv2d(l[1], l[2], l[3], stride=l[4], padding=l[5]))
        elif l[0] == "relu":
            mods.append(nn.ReLU(inplace=True))  # torchvision uses in-place ReLUs
        else:
            mods.append(nn.MaxPool2d(l[1], l[2]))
    features = nn.Sequential(*mods[: taps[-1] + 1])
    lins = nn.ModuleList([nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False)) for c in chans])
    features.load_state_dict({k[len("net.features."):]: torch.tensor(v) for k, v in state.items()
                              if k.startswith("net.")})
    lins.load_state_dict({f"{k[3]}.1.weight": torch.tensor(v) for k, v in state.items() if k.startswith("lin")})
    features.eval(), lins.eval()
    features.requires_grad_(False), lins.requires_grad_(False)
    shift = torch.tensor([-.030, -.088, -.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).reshape(1, 3, 1, 1)

    def feats(x):
        outs, h = [], (x - shift) / scale
        for i, m in enumerate(features):
            h = m(h)
            if i in taps:
                outs.append(h)
        return outs

    def nt(x, eps=1e-10):
        return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)

    def forward(x, y):
        val = 0
        for k, (a, b) in enumerate(zip(feats(x), feats(y))):
            val = val + lins[k]((nt(a) - nt(b)) ** 2).mean([2, 3], keepdim=True)
        return val

    return forward, features, lins


class TwinNLayerDiscriminator(nn.Module):
    """taming's PatchGAN (mmu.losses.NLayerDiscriminator): convs 4x4 pad 1, LeakyReLU(0.2), norm "batch"
    (convs before a norm without bias), "group" (gcd(32, C) groups, eps 1e-6, no bias) or "none"
    (Identity, biased convs); state_dict keys main.{i}.*. norm_layer(c) overrides the norm module (e.g.
    a torch ActNorm for norm "actnorm", biased convs as in taming)."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="batch", norm_layer=None):
        super().__init__()

        def default_norm(c):
            if norm == "batch":
                return nn.BatchNorm2d(c)
            if norm == "group":
                return nn.GroupNorm(math.gcd(32, c), c, eps=1e-6)
            if norm == "none":
                return nn.Identity()
            raise ValueError(f"TwinNLayerDiscriminator: norm {norm!r} is not mirrored")
        norm_layer = norm_layer or default_norm
        use_bias = norm not in ("batch", "group")
        seq = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias), norm_layer(ndf * mult),
                    nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias), norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*seq)

    def forward(self, x):
        return self.main(x)


# ------------------------------------------------------------------------------------------- tokenizers
class _TwinTokenizer(nn.Module):
    def __init__(self):
        super().__init__()
        # an instance attribute (a class attribute would shadow the registered submodule)
        self.discriminator = None

    def generator_parameters(self):
        skip = set() if self.discriminator is None else {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def load_mmu_state(self, state):
        """Copies an mmu state_dict ({name: mmu Tensor or NumPy array}) into the twin (strict)."""
        sd = {k: torch.from_numpy(np.array(v.numpy() if hasattr(v, "numpy") else v)) for k, v in state.items()}
        # torch keeps num_batches_tracked as int64; mmu may store it as float
        for k, v in self.state_dict().items():
            if k in sd and sd[k].dtype != v.dtype:
                sd[k] = sd[k].to(v.dtype)
        self.load_state_dict(sd, strict=True)
        return self

    @torch.no_grad()
    def encode(self, images):
        was = self.training
        self.eval()
        try:
            return self.quantize(self._encode_latent(images))[1]
        finally:
            self.train(was)

    @torch.no_grad()
    def decode(self, codes):
        """codes (B, h, w) int64 -> images (eval, no_grad); VQ quantizers only."""
        if not isinstance(self.quantize, TwinVectorQuantize):
            raise TypeError("decode: only VQ twins map codes back to latents")
        was = self.training
        self.eval()
        try:
            # .contiguous() as taming's get_codebook_entry: NCHW like the training path (left as a permuted
            # view, torch would run the whole decoder channels_last)
            zq = F.embedding(codes, self.quantize.embed[0]).permute(0, 3, 1, 2).contiguous()
            return self._decode_latent(zq)
        finally:
            self.train(was)


class TwinVQVAE(_TwinTokenizer):
    """Twin of mmu.tokenizers.VQVAE: forward(images, step) -> (recon, loss, losses) with
    loss = mse(recon, images) + the quantizer's loss."""

    def __init__(self, cfg):
        super().__init__()
        c = cfg
        self.encoder = TwinConvEncoder(c.in_channels, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                       c.downsample, out_channels=c.embed_dim)
        self.quantize = make_twin_quantizer(c.quantizer, c.embed_dim, c.codebook_size, c.beta, c.quantizer_kwargs)
        self.decoder = TwinConvDecoder(c.embed_dim, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                       c.downsample, c.in_channels)

    def _encode_latent(self, x):
        return self.encoder(x)

    def _decode_latent(self, zq):
        return self.decoder(zq)

    def forward(self, x, step=0, noise=None):
        zq, codes, qloss = self.quantize(self.encoder(x))
        recon = self.decoder(zq)
        rec = F.mse_loss(recon, x)
        return recon, rec + qloss, {"rec": rec.item(), "quant": qloss.item()}


def gumbel_temperature(step, total_steps, start, end):
    t = min(step, total_steps) / total_steps
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def logit_laplace_loss(x, mu, log_b, eps=0.1):
    """mean of log(2 b) + |logit(x') - mu| / b + log(x' (1 - x')), x' = (1 - 2 eps) x + eps."""
    xs = (1.0 - 2.0 * eps) * x + eps
    return (math.log(2.0) + log_b + (torch.logit(xs) - mu).abs() * torch.exp(-log_b)
            + torch.log(xs * (1.0 - xs))).mean()


class TwinDVAE(_TwinTokenizer):
    """Twin of mmu.tokenizers.DVAE: forward(images, step, noise) with the Gumbel noise (M, K) passed in
    (e.g. drawn from mmu's RNG) so both frameworks take the same sample."""

    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = cfg
        qkw = dict(c.quantizer_kwargs)
        if not qkw.get("straight_through", True) or set(qkw) - {"kl_weight", "straight_through", "temperature"}:
            raise ValueError(f"TwinDVAE: quantizer_kwargs {qkw} not mirrored (straight_through=True, kl_weight only)")
        self.encoder = TwinConvEncoder(c.in_channels, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                       c.downsample, out_channels=None)
        self.quantize = TwinGumbelQuantize(c.hidden_channels, c.codebook_size, c.embed_dim,
                                           kl_weight=float(qkw.get("kl_weight", c.kl_weight)))
        out = 2 * c.in_channels if c.recon == "logit_laplace" else c.in_channels
        self.decoder = TwinConvDecoder(c.embed_dim, c.hidden_channels, c.res_channels, c.num_res_blocks,
                                       c.downsample, out)

    def _encode_latent(self, x):
        return self.encoder(x)

    def _unmap(self, out):
        c = self.cfg
        if c.recon != "logit_laplace":
            return out
        e = c.logit_laplace_eps
        return ((torch.sigmoid(out[:, :c.in_channels]) - e) * (1.0 / (1.0 - 2.0 * e))).clamp(0.0, 1.0) * 2.0 - 1.0

    def _decode_latent(self, zq):
        return self._unmap(self.decoder(zq))

    def forward(self, x, step=0, noise=None):
        c = self.cfg
        tau = gumbel_temperature(step, c.temp_anneal_steps, c.temp_start, c.temp_end)
        zq, codes, qloss = self.quantize(self.encoder(x), temperature=tau, noise=noise)
        out = self.decoder(zq)
        if c.recon == "logit_laplace":
            C = c.in_channels
            x01 = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
            rec = logit_laplace_loss(x01, out[:, :C], out[:, C:], c.logit_laplace_eps)
            recon = self._unmap(out)
        elif c.recon == "l1":
            recon, rec = out, F.l1_loss(out, x)
        else:
            recon, rec = out, F.mse_loss(out, x)
        return recon, rec + qloss, {"rec": rec.item(), "quant": qloss.item()}


class TwinVQGAN(_TwinTokenizer):
    """Twin of mmu.tokenizers.VQGAN (perceptual_weight must be 0: LPIPS is not mirrored): L1 * pixel_weight
    + codebook_weight * quantizer loss + disc_factor (after disc_start) * d_weight * (-mean D(recon)),
    d_weight = clamp(|grad_last nll| / (|grad_last g| + 1e-4), 0, 1e4) * disc_weight by torch.autograd.grad;
    discriminator_loss: hinge (or vanilla) of D(images) vs D(sg(recon))."""

    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = cfg
        if c.perceptual_weight > 0:
            raise ValueError("TwinVQGAN: LPIPS is not mirrored; use perceptual_weight=0")
        out_ch = c.in_channels if c.out_channels is None else c.out_channels
        g = c.norm_groups
        self.encoder = TwinEncoder(c.ch, c.ch_mult, c.num_res_blocks, c.attn_resolutions, c.in_channels,
                                   c.resolution, c.z_channels, c.dropout, g)
        self.decoder = TwinDecoder(c.ch, c.ch_mult, c.num_res_blocks, c.attn_resolutions, out_ch, c.resolution,
                                   c.z_channels, c.dropout, g)
        self.quantize = make_twin_quantizer(c.quantizer, c.embed_dim, c.codebook_size, c.beta, c.quantizer_kwargs)
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)
        if c.use_discriminator:
            self.discriminator = TwinNLayerDiscriminator(c.in_channels, c.disc_ndf, c.disc_layers, c.disc_norm)

    def _encode_latent(self, x):
        return self.quant_conv(self.encoder(x))

    def _decode_latent(self, zq):
        return self.decoder(self.post_quant_conv(zq))

    def _factor(self, step):
        return self.cfg.disc_factor if step >= self.cfg.disc_start else 0.0

    def forward(self, x, step=0, noise=None):
        c = self.cfg
        zq, codes, qloss = self.quantize(self._encode_latent(x))
        recon = self._decode_latent(zq)
        rec = F.l1_loss(recon, x)
        nll = rec * c.pixel_weight if c.pixel_weight != 1.0 else rec
        loss = nll + qloss * c.codebook_weight
        losses = {"rec": rec.item(), "quant": qloss.item()}
        factor = self._factor(step)
        if self.discriminator is not None and self.training and torch.is_grad_enabled() and factor > 0:
            g_loss = -self.discriminator(recon).mean()
            last = self.decoder.conv_out.weight
            g_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
            g_adv = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
            d_weight = torch.clamp(g_nll.double().norm() / (g_adv.double().norm() + 1e-4), 0.0, 1e4).float()
            d_weight = d_weight.detach() * c.disc_weight
            loss = loss + g_loss * d_weight * factor
            losses.update(g_adv=g_loss.item(), d_weight=d_weight.item())
        return recon, loss, losses

    def discriminator_loss(self, x, recon, step=0):
        lr, lf = self.discriminator(x.detach()), self.discriminator(recon.detach())
        if self.cfg.disc_loss == "hinge":
            d = 0.5 * (F.relu(1.0 - lr).mean() + F.relu(1.0 + lf).mean())
        else:
            d = 0.5 * (F.softplus(-lr).mean() + F.softplus(lf).mean())
        return d * self._factor(step)


_QUANTIZER_HYPER = {
    "TwinVectorQuantize": ("decay", "eps", "commitment_weight", "codebook_weight", "learnable_codebook", "ema_update",
                           "kmeans_init", "kmeans_iters"),
    "TwinLFQ": ("entropy_loss_weight", "commitment_loss_weight", "diversity_gamma", "inv_temperature",
                "codebook_scale"),
    "TwinGumbelQuantize": ("kl_weight",),
}


def tokenizer_twin(model):
    """The torch twin of an mmu tokenizer (VQVAE / DVAE / VQGAN), built from model.config, with the mmu
    model's parameters and buffers copied in."""
    kind = type(model).__name__
    cls = {"VQVAE": TwinVQVAE, "DVAE": TwinDVAE, "VQGAN": TwinVQGAN}.get(kind)
    if cls is None:
        raise TypeError(f"tokenizer_twin: no twin for {kind}")
    twin = cls(model.config)
    # the quantizer's scalar hyperparameters are read from the mmu quantizer itself, so a change of a
    # tokenizer default in mmu cannot silently make the twin compute a different loss
    for name in _QUANTIZER_HYPER.get(type(twin.quantize).__name__, ()):
        mine = "scale" if name == "codebook_scale" else name
        setattr(twin.quantize, mine, getattr(model.quantize, name))
    twin.load_mmu_state(model.state_dict())
    twin.train(model.training)
    return twin


def make_optimizers(twin, lr=2e-4, betas=(0.5, 0.9), weight_decay=0.0, disc_lr=None):
    """AdamW for the generator's parameters (and one for the discriminator's), as mmu.train.Trainer."""
    opt = torch.optim.AdamW(twin.generator_parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    dopt = None
    if twin.discriminator is not None:
        dopt = torch.optim.AdamW(twin.discriminator.parameters(), lr=lr if disc_lr is None else disc_lr,
                                 betas=betas, weight_decay=weight_decay)
    return opt, dopt


def tokenizer_train_step(twin, opt, batch, step, disc_opt=None, grad_clip=1.0, noise=None):
    """mmu.train.Trainer.train_step (grad_accum 1, constant lr): the generator's forward with the
    discriminator frozen, backward, global-norm clipping, AdamW step; then, with a discriminator and
    step >= disc_start, the discriminator's loss on (batch, sg(recon)), backward, clipping, AdamW step.
    Returns (loss, d_loss or None) as floats."""
    twin.zero_grad(set_to_none=True)
    disc = twin.discriminator
    dparams = [] if disc is None else [p for p in disc.parameters() if p.requires_grad]
    for p in dparams:
        p.requires_grad_(False)
    try:
        recon, loss, _ = twin(batch, step, noise=noise)
        loss.backward()
    finally:
        for p in dparams:
            p.requires_grad_(True)
    gen = twin.generator_parameters()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(gen, grad_clip)
    opt.step()
    d_value = None
    if disc is not None and disc_opt is not None and step >= twin.cfg.disc_start:
        twin.zero_grad(set_to_none=True)
        d = twin.discriminator_loss(batch, recon.detach(), step)
        d.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(dparams, grad_clip)
        disc_opt.step()
        d_value = d.item()
    return loss.item(), d_value


# ------------------------------------------------------------------------------------------- FID Inception
# pytorch-fid's FID Inception (fid_inception_v3() + the InceptionV3 wrapper, pool3 block) written with
# torch.nn only (no torchvision): torchvision's Inception3 attribute names, so the state_dict keys are the
# keys of pytorch-fid's weight file and of mmu.metrics.inception.InceptionV3; FIDInceptionA/C/E_1 pool
# with avg_pool2d(count_include_pad=False), FIDInceptionE_2 (Mixed_7c) with max_pool2d(3, 1, 1).
class TwinBasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class TwinFIDInceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        B = TwinBasicConv2d
        self.branch1x1 = B(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = B(cin, 48, 1), B(48, 64, 5, padding=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = B(cin, 64, 1), B(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = B(96, 96, 3, padding=1)
        self.branch_pool = B(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_tf_avg_pool(x))], 1)


class TwinInceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        B = TwinBasicConv2d
        self.branch3x3 = B(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = B(cin, 64, 1), B(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = B(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class TwinFIDInceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        B = TwinBasicConv2d
        self.branch1x1 = B(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2 = B(cin, c7, 1), B(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = B(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1, self.branch7x7dbl_2 = B(cin, c7, 1), B(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3, self.branch7x7dbl_4 = B(c7, c7, (1, 7), padding=(0, 3)), B(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = B(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = B(cin, 192, 1)

    def forward(self, x):
        d = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), d,
                          self.branch_pool(_tf_avg_pool(x))], 1)


class TwinInceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        B = TwinBasicConv2d
        self.branch3x3_1, self.branch3x3_2 = B(cin, 192, 1), B(192, 320, 3, stride=2)
        self.branch7x7x3_1, self.branch7x7x3_2 = B(cin, 192, 1), B(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3, self.branch7x7x3_4 = B(192, 192, (7, 1), padding=(3, 0)), B(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class TwinFIDInceptionE(nn.Module):
    """FIDInceptionE_1 (max_pool=False) / FIDInceptionE_2 (max_pool=True)."""

    def __init__(self, cin, max_pool):
        super().__init__()
        B = TwinBasicConv2d
        self.max_pool = max_pool
        self.branch1x1 = B(cin, 320, 1)
        self.branch3x3_1 = B(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = B(384, 384, (1, 3), padding=(0, 1)), B(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = B(cin, 448, 1), B(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = B(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = B(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = B(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(p)], 1)


class TwinFIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3(output_blocks=[3]) on fid_inception_v3(): forward(x in [0, 1]) ->
    (N, 2048, 1, 1) pool3 features; resize to 299 bilinear (align_corners=False) then 2x - 1.
    load_mmu_state(state) copies mmu.metrics.inception.InceptionV3's state_dict (strict)."""

    def __init__(self, resize_input=True, normalize_input=True):
        super().__init__()
        B = TwinBasicConv2d
        self.resize_input, self.normalize_input = resize_input, normalize_input
        self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = B(3, 32, 3, stride=2), B(32, 32, 3)
        self.Conv2d_2b_3x3 = B(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = B(64, 80, 1), B(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c = TwinFIDInceptionA(192, 32), TwinFIDInceptionA(256, 64)
        self.Mixed_5d, self.Mixed_6a = TwinFIDInceptionA(288, 64), TwinInceptionB(288)
        self.Mixed_6b, self.Mixed_6c = TwinFIDInceptionC(768, 128), TwinFIDInceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = TwinFIDInceptionC(768, 160), TwinFIDInceptionC(768, 192)
        self.Mixed_7a, self.Mixed_7b = TwinInceptionD(768), TwinFIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = TwinFIDInceptionE(2048, max_pool=True)
        self.eval()

    def load_mmu_state(self, state):
        sd = {k: torch.from_numpy(np.array(v.numpy() if hasattr(v, "numpy") else v)) for k, v in state.items()}
        for k, v in self.state_dict().items():
            if k in sd and sd[k].dtype != v.dtype:
                sd[k] = sd[k].to(v.dtype)
        self.load_state_dict(sd, strict=True)
        return self

    def forward(self, x):
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for m in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = m(x)
        return F.adaptive_avg_pool2d(x, output_size=(1, 1))


# ------------------------------------------------------------------------------------------- taming VQModel
# A twin of taming-transformers' VQModel *in taming's own layout* (taming/models/vqgan.py), so its
# state_dict keys are a real taming checkpoint's: encoder / decoder (TwinEncoder / TwinDecoder, taming's
# names), quantize.embedding (VectorQuantizer2's nn.Embedding (K, d)), quant_conv / post_quant_conv, and
# loss = VQLPIPSWithDiscriminator's modules: loss.perceptual_loss (taming's LPIPS: scaling_layer buffers,
# net.slice1..5 over torchvision's VGG16 feature indices, lin{k}.model = Dropout + 1x1 conv) and
# loss.discriminator (NLayerDiscriminator, main.{i}). encode / decode_code follow VectorQuantizer2.
class _TwinTamingScaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])


class _TwinTamingVGG16(nn.Module):
    _SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))

    def __init__(self):
        super().__init__()
        from mmu.losses.lpips import _NETS
        layers = _NETS["vgg"][0]
        for s, (lo, hi) in enumerate(self._SLICES, 1):
            sl = nn.Sequential()
            for i in range(lo, hi):
                l = layers[i]
                sl.add_module(str(i), nn.Conv2d(l[1], l[2], l[3], l[4], l[5]) if l[0] == "conv" else
                              nn.ReLU() if l[0] == "relu" else nn.MaxPool2d(l[1], l[2]))
            setattr(self, f"slice{s}", sl)


class _TwinTamingNetLin(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))


class TwinTamingLPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        self.scaling_layer = _TwinTamingScaling()
        self.net = _TwinTamingVGG16()
        for k, c in enumerate((64, 128, 256, 512, 512)):
            setattr(self, f"lin{k}", _TwinTamingNetLin(c))


class TwinTamingVectorQuantizer2(nn.Module):
    def __init__(self, n_e, e_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)

    def codes(self, z):
        zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        w = self.embedding.weight
        d = (zf ** 2).sum(1, keepdim=True) + (w ** 2).sum(1) - 2 * zf @ w.t()
        return d.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])


class TwinTamingVQModel(nn.Module):
    """taming's VQModel(ddconfig, lossconfig, n_embed, embed_dim) with VQLPIPSWithDiscriminator's modules;
    every weight drawn at random (seeded) so a conversion test compares non-trivial numbers."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 n_embed, embed_dim, out_ch=None, disc_ndf=8, disc_layers=2, use_actnorm=False, seed=0):
        super().__init__()
        self.encoder = TwinEncoder(ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels)
        self.decoder = TwinDecoder(ch, ch_mult, num_res_blocks, attn_resolutions, out_ch or in_channels, resolution,
                                   z_channels)
        self.quantize = TwinTamingVectorQuantizer2(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.loss = nn.Module()
        self.loss.perceptual_loss = TwinTamingLPIPS()
        self.loss.discriminator = TwinNLayerDiscriminator(
            in_channels, disc_ndf, disc_layers, norm="none" if use_actnorm else "batch",
            norm_layer=TwinActNorm if use_actnorm else None)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in self.state_dict().items():
                if t.dtype.is_floating_point and "scaling_layer" not in name:
                    fan = t[0].numel() if t.ndim > 1 else 1
                    t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan) * (0.5 if t.ndim > 1 else 0.1)
                            + (1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm_out.weight",
                                                     "running_var", "scale")) else 0.0))
                    if name.endswith("running_var"):
                        t.abs_()
        self.eval()

    @torch.no_grad()
    def encode_codes(self, x):
        return self.quantize.codes(self.quant_conv(self.encoder(x)))

    @torch.no_grad()
    def decode_code(self, codes):
        zq = self.quantize.embedding(codes).permute(0, 3, 1, 2).contiguous()   # get_codebook_entry
        return self.decoder(self.post_quant_conv(zq))


class TwinActNorm(nn.Module):
    """taming's ActNorm parameters and buffer (loc, scale (1, C, 1, 1); initialized uint8), applied as
    scale * (x + loc) (eval, initialized)."""

    def __init__(self, c):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, c, 1, 1))
        self.register_buffer("initialized", torch.tensor(1, dtype=torch.uint8))

    def forward(self, x):
        return self.scale * (x + self.loc)


# =============================================================================================== language model
# Twin of mmu.nn.TransformerLM in its GPT-2 layout (sequential pre-norm layers, LayerNorm, one fused qkv
# projection, an MLP of fc1/fc2) with learned or rotary positions and a tied or separate head. The modules
# carry mmu's names (embed_tokens, pos_embedding, layers.{i}.norm1 / attn.qkv_proj / attn.out_proj / norm2 /
# mlp.fc1 / mlp.fc2, norm, lm_head), so `twin.load_state_dict({k: torch.tensor(v) ...})` with the mmu model's
# state_dict copies every parameter (strict). Decoding the way a careful torch user writes it: one
# preallocated key/value buffer per layer written in place by slicing (no torch.cat per token), attention on
# views of the filled prefix through F.scaled_dot_product_attention, logits at the last position only, all
# under torch.inference_mode().

class TwinKVCache:
    """keys/values[i] (B, H, max_len, head_dim) allocated once; `length` positions are filled."""

    def __init__(self, num_layers, batch_size, num_heads, max_len, head_dim):
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape) for _ in range(num_layers)]
        self.values = [torch.zeros(shape) for _ in range(num_layers)]
        self.length = 0
        self.max_len = max_len


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TwinAttention(nn.Module):
    def __init__(self, dim, num_heads, bias=True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x, layer_idx, cache=None, rope=None):
        b, l, d = x.shape
        # (B, L, 3H, hd) -> (B, 3H, L, hd): rows [q heads; k heads; v heads], as mmu's fused qkv_proj
        q, k, v = self.qkv_proj(x).view(b, l, 3 * self.num_heads, self.head_dim).transpose(1, 2).split(
            self.num_heads, dim=1)
        if rope is not None:
            cos, sin = rope
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        start = 0
        if cache is not None:
            start, end = cache.length, cache.length + l
            kb, vb = cache.keys[layer_idx], cache.values[layer_idx]
            kb[:, :, start:end] = k  # in place: the buffer is never reallocated
            vb[:, :, start:end] = v
            k, v = kb[:, :, :end], vb[:, :, :end]  # views of the filled prefix
        if l == 1:
            out = F.scaled_dot_product_attention(q, k, v)  # one query sees every cached key
        elif start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a chunk after a cached prefix: bottom-right causal (torch's is_causal is top-left)
            s = start + l
            mask = torch.arange(s)[None, :] <= (start + torch.arange(l))[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, l, d))


class TwinMLP(nn.Module):
    def __init__(self, dim, hidden_dim, activation, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.approximate = {"gelu": "none", "gelu_tanh": "tanh"}[activation]

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class TwinTransformerLayer(nn.Module):
    def __init__(self, dim, num_heads, hidden_dim, activation, norm_eps, bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = TwinAttention(dim, num_heads, bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = TwinMLP(dim, hidden_dim, activation, bias)

    def forward(self, x, layer_idx, cache=None, rope=None):
        x = x + self.attn(self.norm1(x), layer_idx, cache, rope)
        return x + self.mlp(self.norm2(x))


class TwinTransformerLM(nn.Module):
    """mmu.nn.TransformerLM(vocab_size, dim, num_layers, num_heads, activation, pos, max_seq_len,
    tie_embeddings, norm_eps, rope_base) with residual='sequential', norm='layernorm', bias=True,
    full-width RoPE (rotary_fraction 1) when pos='rope', and no head bias.

    forward(ids (B, L), cache=None, logits_at='all' | 'last') -> logits (B, L, V) or (B, V); with a
    cache the chunk sits at positions cache.length .. cache.length+L-1 and the cache advances by L."""

    def __init__(self, vocab_size, dim, num_layers, num_heads, hidden_dim=None, activation="gelu_tanh",
                 pos="learned", max_seq_len=1024, tie_embeddings=True, norm_eps=1e-5, rope_base=10000.0):
        super().__init__()
        self.num_heads, self.head_dim, self.pos = num_heads, dim // num_heads, pos
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        if pos == "learned":
            self.pos_embedding = nn.Embedding(max_seq_len, dim)
        else:  # cos/sin tables for every position, computed once (float64 angles, as mmu's rotary_cos_sin)
            inv = rope_base ** (-torch.arange(self.head_dim // 2, dtype=torch.float64) * 2.0 / self.head_dim)
            ang = torch.arange(max_seq_len, dtype=torch.float64)[:, None] * inv[None, :]
            ang = torch.cat((ang, ang), dim=-1)
            self.register_buffer("rope_cos", ang.cos().float(), persistent=False)
            self.register_buffer("rope_sin", ang.sin().float(), persistent=False)
        self.layers = nn.ModuleList(TwinTransformerLayer(dim, num_heads, hidden_dim or 4 * dim, activation, norm_eps)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.lm_head = None if tie_embeddings else nn.Linear(dim, vocab_size, bias=False)

    def new_cache(self, batch_size, max_len):
        return TwinKVCache(len(self.layers), batch_size, self.num_heads, max_len, self.head_dim)

    def forward(self, ids, cache=None, logits_at="all"):
        l = ids.shape[1]
        start = 0 if cache is None else cache.length
        x = self.embed_tokens(ids)
        rope = None
        if self.pos == "learned":
            x = x + self.pos_embedding.weight[start:start + l]
        else:
            rope = (self.rope_cos[start:start + l], self.rope_sin[start:start + l])
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, rope)
        if cache is not None:
            cache.length += l
        if logits_at == "last":
            x = x[:, -1]
        x = self.norm(x)
        return self.lm_head(x) if self.lm_head is not None else F.linear(x, self.embed_tokens.weight)


@torch.inference_mode()
def lm_greedy_cached(model, prompt, max_new_tokens):
    """Greedy decoding on the twin's KV cache: prefill the prompt (B, P) once, then one token per step.
    -> (B, P + max_new_tokens) ids."""
    b, p = prompt.shape
    cache = model.new_cache(b, p + max_new_tokens)
    tok = model(prompt, cache=cache, logits_at="last").argmax(-1)
    out = [tok]
    for _ in range(max_new_tokens - 1):
        tok = model(tok[:, None], cache=cache, logits_at="last").argmax(-1)
        out.append(tok)
    return torch.cat([prompt, torch.stack(out, 1)], 1)


@torch.inference_mode()
def lm_greedy_recompute(model, prompt, max_new_tokens):
    """Greedy decoding without a cache, as Show-o's public generation loop does: every step runs the
    whole sequence through the model, computes the logits at every position and keeps the last row."""
    ids = prompt
    for _ in range(max_new_tokens):
        tok = model(ids)[:, -1].argmax(-1)
        ids = torch.cat([ids, tok[:, None]], 1)
    return ids


# =============================================================================================== Show-o
# Twin of mmu.models.show_o.ShowO's transformer and training step: the same modules under the same names
# (lm.embed_tokens, lm.layers.{i}.norm1 / attn.qkv_proj / attn.out_proj / attn.q_norm / attn.k_norm /
# mlp.fc1 / mlp.fc2, lm.norm, lm.lm_head), so `twin.load_mmu_state(model.state_dict())` copies every
# transformer weight (the frozen image tokenizer is not part of the step: the batches carry its codes).
# Phi-1.5 with QK LayerNorm: parallel residual, fused qkv rows [q; k; v], LayerNorm per head on q and k
# before a partial rotate-half RoPE (the first rotary_fraction of each head), tanh GELU, an untied head
# with a bias. The masks and the masked image tokens come in as NumPy arrays built by mmu's prompt
# builders (showo_step_inputs), so both frameworks see identical sequences.

class _TwinShowOAttention(nn.Module):
    def __init__(self, dim, num_heads, eps):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=eps)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=eps)

    def forward(self, x, cos, sin, mask):
        b, l, d = x.shape
        q, k, v = self.qkv_proj(x).view(b, l, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = _partial_rope(self.q_norm(q), cos, sin), _partial_rope(self.k_norm(k), cos, sin)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, l, d))


def _partial_rope(x, cos, sin):
    """Rotate-half RoPE on the first R = cos.shape[-1] dims of each head (x (B, H, L, D)); the rest pass."""
    r = cos.shape[-1]
    xr, rest = x[..., :r], x[..., r:]
    rotated = torch.cat([-xr[..., r // 2:], xr[..., :r // 2]], -1)
    return torch.cat([xr * cos + rotated * sin, rest], -1)


class _TwinShowOMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class _TwinShowOLayer(nn.Module):
    def __init__(self, dim, num_heads, hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _TwinShowOAttention(dim, num_heads, eps)
        self.mlp = _TwinShowOMLP(dim, hidden)

    def forward(self, x, cos, sin, mask):
        h = self.norm1(x)  # Phi's parallel residual: one norm feeds attention and MLP
        return x + self.attn(h, cos, sin, mask) + self.mlp(h)


class _TwinShowOLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        hidden = c["hidden_dim"] if c.get("hidden_dim") else 4 * c["dim"]
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList(_TwinShowOLayer(c["dim"], c["num_heads"], hidden, c["norm_eps"])
                                    for _ in range(c["num_layers"]))
        self.norm = nn.LayerNorm(c["dim"], eps=c["norm_eps"])
        self.lm_head = nn.Linear(c["dim"], c["vocab_size"])


class TwinShowO(nn.Module):
    """Twin of mmu.models.show_o.ShowO's transformer. c: the ShowOConfig as a dict (config.to_dict()).
    forward(ids (B, L) int64, mask (B, 1, L, L) bool or None (causal), logits_at (B, n) positions or None
    (all)) -> logits. Positions 0..L-1 for every row (pads included, as ShowO and Show-o's PhiModel).
    losses(inputs) -> ({task: loss}, {task: logits}) for showo_step_inputs' arrays, the same terms as
    ShowO.training_step: T2I the mean cross-entropy over the masked image tokens (unshifted), LM and MMU
    next-token cross-entropy over the non-ignored targets; loss(inputs) weighs them with t2i_coeff,
    lm_coeff, mmu_coeff."""

    def __init__(self, c):
        super().__init__()
        if c.get("dropout") or c.get("attn_dropout"):
            raise ValueError("TwinShowO: dropout is not mirrored (mmu and torch draw different masks)")
        self.c = dict(c)
        self.lm = _TwinShowOLM(c)
        head_dim = c["dim"] // c["num_heads"]
        self.rotary_dim = int(c["rotary_fraction"] * head_dim)

    def load_mmu_state(self, state):
        """Copies the "lm.*" entries of an mmu ShowO state_dict (name -> array or mmu Tensor); strict."""
        lm = {k: torch.tensor(np.array(v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else v))
              for k, v in state.items() if k.startswith("lm.")}
        self.load_state_dict(lm, strict=True)
        return self

    def _rope(self, length):
        r = self.rotary_dim
        inv = self.c["rope_base"] ** (-np.arange(0, r, 2, dtype=np.float64) / r)
        ang = np.arange(length, dtype=np.float64)[:, None] * inv[None]
        ang = np.concatenate([ang, ang], -1)  # rotate-half: columns j and j + R/2 share an angle
        return torch.tensor(np.cos(ang), dtype=torch.float32), torch.tensor(np.sin(ang), dtype=torch.float32)

    def forward(self, ids, mask=None, logits_at=None):
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        cos, sin = self._rope(ids.shape[1])
        x = self.lm.embed_tokens(ids)
        for layer in self.lm.layers:
            x = layer(x, cos, sin, mask)
        x = self.lm.norm(x)
        if logits_at is not None:
            at = torch.tensor(np.asarray(logits_at), dtype=torch.long)
            x = torch.gather(x, 1, at[:, :, None].expand(-1, -1, x.shape[-1]))
        return self.lm.lm_head(x)

    def losses(self, inputs):
        """inputs: showo_step_inputs' dict -> ({task: 0-d loss}, {task: logits})."""
        terms, logits = {}, {}
        if "t2i" in inputs:
            p = inputs["t2i"]
            out = self(p["ids"], p["mask"], p["logits_at"])
            target = torch.as_tensor(p["targets"])
            terms["t2i"] = F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1), ignore_index=-100)
            logits["t2i"] = out
        for task in ("lm", "mmu"):
            if task in inputs:
                p = inputs[task]
                out = self(p["ids"], p["mask"], p["logits_at"])
                target = torch.as_tensor(p["targets"])[:, 1:]
                terms[task] = F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]), target.reshape(-1),
                                              ignore_index=-100)
                logits[task] = out
        return terms, logits

    def loss(self, terms):
        """The weighted sum of the terms (t2i_coeff, lm_coeff, mmu_coeff), in ShowO.training_step's order."""
        total = None
        for task in ("t2i", "lm", "mmu"):
            if task in terms:
                t = terms[task] * self.c[f"{task}_coeff"]
                total = t if total is None else total + t
        return total


def showo_step_inputs(model, batch, t2i_inputs=None):
    """The NumPy arrays of one ShowO training step, built by mmu's own prompt builders so the twin sees
    mmu's sequences: {task: {"ids", "mask" (bool (B, 1, L, L) or None: causal), "logits_at" (B, n) or None,
    "targets" (labels at logits_at, -100 ignored)}}. batch: {"t2i": {"text_ids", "codes"}, "lm": {...},
    "mmu": {"codes", "question_ids", "answer_ids"}} (nested, as ShowO.training_step takes); t2i_inputs: the
    (ids, labels, ratio, dropped) that mmu's ShowO.t2i_training_inputs drew for this batch (its masking
    and condition dropout are random; record them from the mmu side)."""
    from mmu.models.show_o.prompting import (IGNORE_INDEX, image_token_ids, lm_prompt, mmu_attention_mask,
                                             mmu_prompt, omni_attention_mask, text_rows)
    c = model.config
    out = {}
    if "t2i" in batch:
        ids, labels = t2i_inputs[0], t2i_inputs[1]
        b, start = len(ids), c.max_text_len + 2
        at = np.ascontiguousarray(np.broadcast_to(np.arange(start, start + c.num_vq_tokens), (b, c.num_vq_tokens)))
        out["t2i"] = {"ids": ids, "mask": omni_attention_mask(c, ids), "logits_at": at,
                      "targets": np.ascontiguousarray(labels[:, start:start + c.num_vq_tokens])}
    if "lm" in batch:
        ids, labels = lm_prompt(c, text_rows(batch["lm"]["text_ids"], "showo_step_inputs", "text_ids"))
        out["lm"] = {"ids": ids, "mask": None, "logits_at": None, "targets": labels}
    if "mmu" in batch:
        p = batch["mmu"]
        codes = np.asarray(p["codes"]).reshape(len(p["codes"]), -1)
        b = len(codes)
        ids, labels = mmu_prompt(c, image_token_ids(c, codes), text_rows(p["question_ids"], "", "q", batch=b),
                                 text_rows(p["answer_ids"], "", "a", batch=b))
        start = 2 + c.num_vq_tokens
        at = np.ascontiguousarray(np.broadcast_to(np.arange(start, ids.shape[1]), (b, ids.shape[1] - start)))
        out["mmu"] = {"ids": ids, "mask": mmu_attention_mask(c, ids), "logits_at": at,
                      "targets": np.ascontiguousarray(labels[:, start:])}
    assert IGNORE_INDEX == -100
    return out


def showo_optimizer(twin, steps, lr=2e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup_steps=0, min_lr_ratio=0.1):
    """torch AdamW + the schedule of mmu.train.Trainer (TrainConfig's defaults): one group over every
    parameter (no decay exemptions), eps 1e-8, decoupled decay; lr = base * t / warmup_steps during the
    warmup, then cosine to min_lr_ratio * base at `steps` (mmu.optim.lr_scheduler.WarmupCosine)."""
    opt = torch.optim.AdamW(twin.parameters(), lr=lr, betas=tuple(betas), eps=1e-8, weight_decay=weight_decay)

    def factor(t):
        if t < warmup_steps:
            return t / warmup_steps
        span = steps - warmup_steps
        progress = 1.0 if span == 0 else min(1.0, (t - warmup_steps) / span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def showo_train_step(twin, opt, sched, inputs, grad_clip=1.0):
    """mmu.train.Trainer's step for ShowO: loss, backward, global-norm clipping, AdamW, the schedule.
    Returns (total loss, {task: loss float}, {task: logits})."""
    opt.zero_grad(set_to_none=True)
    terms, logits = twin.losses(inputs)
    loss = twin.loss(terms)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(twin.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss.item(), {k: v.item() for k, v in terms.items()}, {k: v.detach() for k, v in logits.items()}


# =============================================================================================== VILA-U
# Twins of mmu.models.vila_u (issue 14): the unified vision tower (UnifiedVisionTower: ViT -> shared-codebook
# residual VQ -> decoder, a text encoder, contrastive + reconstruction losses) and the AR model (VILAU: a
# LLaMA-style TransformerLM over text and visual positions, the mm_projector, the depth transformer). Every
# module carries mmu's names, so `twin.load_mmu_state(model.state_dict())` copies every parameter and buffer
# (strict). The transformer layers are one class: mmu.nn.TransformerLayer's sequential pre-norm layout
# (norm1, attn.qkv_proj [q; k; v] rows with num_kv_heads key/value heads, attn.out_proj, norm2, mlp.fc1 /
# mlp.fc_gate (SwiGLU) / mlp.fc2) with LayerNorm or RMSNorm, any of mmu's MLP activations, optional RoPE.

def _to_torch_state(state, prefix=""):
    """{name: mmu Tensor or array} -> {name without prefix: torch tensor} for the keys under prefix."""
    out = {}
    for k, v in state.items():
        if k.startswith(prefix):
            a = v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else v
            out[k[len(prefix):]] = torch.from_numpy(np.array(a))
    return out


_TWIN_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def _twin_norm(kind, dim, eps):
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"_twin_norm: norm {kind!r} is not mirrored")


class TwinRopeCache:
    """mmu.nn.KVCache in torch: keys/values[i] (B, H_kv, max_len, head_dim) allocated once and written in
    place; `length` positions are filled (the careful torch user's static cache: no torch.cat per token)."""

    def __init__(self, num_layers, batch_size, num_kv_heads, max_len, head_dim):
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape) for _ in range(num_layers)]
        self.values = [torch.zeros(shape) for _ in range(num_layers)]
        self.length, self.max_len = 0, max_len

    def expand_rows(self, index):
        """A new cache whose row r holds row index[r]'s cached prefix."""
        out = TwinRopeCache.__new__(TwinRopeCache)
        out.keys = [k[index].clone() for k in self.keys]
        out.values = [v[index].clone() for v in self.values]
        out.length, out.max_len = self.length, self.max_len
        return out


def twin_rope_tables(positions, rotary_dim, base):
    """mmu.functional.rotary_cos_sin for 1-D positions: float64 angles rounded once -> (cos, sin) (L, R)."""
    inv = float(base) ** (-np.arange(rotary_dim // 2, dtype=np.float64) * 2.0 / rotary_dim)
    ang = np.asarray(positions, np.float64)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], -1)
    return torch.from_numpy(np.cos(ang).astype(np.float32)), torch.from_numpy(np.sin(ang).astype(np.float32))


class TwinLayerAttention(nn.Module):
    """mmu.nn.Attention (self-attention): fused qkv_proj rows [q (H hd); k (H_kv hd); v (H_kv hd)], GQA
    without copies (F.scaled_dot_product_attention(enable_gqa=True)), RoPE on the first rotary_dim dims of
    each head (rotate-half), a static cache written in place."""

    def __init__(self, dim, num_heads, num_kv_heads=None, head_dim=None, bias=True, rotary_fraction=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or dim // num_heads
        self.rotary_dim = int(self.head_dim * rotary_fraction)
        h, hkv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(dim, h + 2 * hkv, bias=bias)
        self.out_proj = nn.Linear(h, dim, bias=bias)

    def forward(self, x, layer_idx=0, cache=None, rope=None, is_causal=False, attn_mask=None):
        b, l, _ = x.shape
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x).view(b, l, H + 2 * Hkv, hd).transpose(1, 2)
        q, k, v = qkv.split([H, Hkv, Hkv], dim=1)
        if rope is not None:
            cos, sin = rope
            q, k = _partial_rope(q, cos, sin), _partial_rope(k, cos, sin)
        start = 0
        if cache is not None:
            start, end = cache.length, cache.length + l
            kb, vb = cache.keys[layer_idx], cache.values[layer_idx]
            kb[:, :, start:end] = k
            vb[:, :, start:end] = v
            k, v = kb[:, :, :end], vb[:, :, :end]
        gqa = Hkv != H
        if attn_mask is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)
        elif not is_causal or l == 1:
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        elif start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # a chunk after a cached prefix: bottom-right causal
            mask = torch.arange(start + l)[None, :] <= (start + torch.arange(l))[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.out_proj(out.transpose(1, 2).reshape(b, l, H * hd))


class TwinLayerMLP(nn.Module):
    """mmu.nn.MLP: fc2(act(fc1(x))) or, SwiGLU, fc2(silu(fc_gate(x)) * fc1(x))."""

    def __init__(self, dim, hidden_dim, activation="gelu", bias=True):
        super().__init__()
        self.activation = activation
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        if activation == "swiglu":
            self.fc_gate = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x):
        if self.activation == "swiglu":
            return self.fc2(F.silu(self.fc_gate(x)) * self.fc1(x))
        return self.fc2(_TWIN_ACTIVATIONS[self.activation](self.fc1(x)))


class TwinLayer(nn.Module):
    """mmu.nn.TransformerLayer, residual='sequential': x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, num_kv_heads=None, head_dim=None, hidden_dim=None, activation="gelu",
                 bias=True, norm="layernorm", norm_eps=1e-5, rotary_fraction=0.0):
        super().__init__()
        self.norm1 = _twin_norm(norm, dim, norm_eps)
        self.attn = TwinLayerAttention(dim, num_heads, num_kv_heads, head_dim, bias, rotary_fraction)
        self.norm2 = _twin_norm(norm, dim, norm_eps)
        self.mlp = TwinLayerMLP(dim, hidden_dim or 4 * dim, activation, bias)

    def forward(self, x, layer_idx=0, cache=None, rope=None, is_causal=False, attn_mask=None):
        x = x + self.attn(self.norm1(x), layer_idx, cache, rope, is_causal, attn_mask)
        return x + self.mlp(self.norm2(x))


class TwinLlamaLM(nn.Module):
    """mmu.nn.TransformerLM as VILAU's `lm` builds it (pos='rope', residual 'sequential', any norm /
    activation / bias / GQA): embed_tokens, layers.{i} (TwinLayer), norm, lm_head (or the tied embedding).

    forward(ids=None, inputs_embeds=None, cache=None, logits_at='all' | 'last' | None) -> logits (B, L, V),
    (B, V) at the last position, or (None) the final hidden states after the final norm (B, L, dim).
    Positions start .. start+L-1 (start = cache.length); causal."""

    def __init__(self, vocab_size, dim, num_layers, num_heads, num_kv_heads=None, head_dim=None, hidden_dim=None,
                 activation="swiglu", bias=False, norm="rmsnorm", norm_eps=1e-5, rotary_fraction=1.0,
                 rope_base=10000.0, max_seq_len=2048, tie_embeddings=False, head_bias=False):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(TwinLayer(dim, num_heads, num_kv_heads, head_dim, hidden_dim, activation, bias,
                                              norm, norm_eps, rotary_fraction) for _ in range(num_layers))
        att = self.layers[0].attn
        self.num_kv_heads, self.head_dim, self.rotary_dim = att.num_kv_heads, att.head_dim, att.rotary_dim
        self.norm = _twin_norm(norm, dim, norm_eps)
        self.tie_embeddings = tie_embeddings
        if tie_embeddings:
            if head_bias:
                self.lm_head_bias = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.lm_head = nn.Linear(dim, vocab_size, bias=head_bias)
        self.rope_base = rope_base
        if self.rotary_dim:
            cos, sin = twin_rope_tables(np.arange(max_seq_len), self.rotary_dim, rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def new_cache(self, batch_size, max_len):
        return TwinRopeCache(len(self.layers), batch_size, self.num_kv_heads, max_len, self.head_dim)

    def head(self, h):
        if not self.tie_embeddings:
            return self.lm_head(h)
        return F.linear(h, self.embed_tokens.weight, getattr(self, "lm_head_bias", None))

    def forward(self, ids=None, inputs_embeds=None, cache=None, logits_at="all", attention_mask=None,
                position_ids=None):
        """attention_mask (B, cache.length + L) bool (True = a real token: left-padded rows) and position_ids
        (B, L) as mmu.nn.TransformerLM: positions default to cumsum(attention_mask) - 1 (1 at pads) or
        start .. start+L-1; padded keys are hidden from every query (a query that sees no key gives 0, as
        torch 2.13's and mmu's attention)."""
        x = self.embed_tokens(ids) if inputs_embeds is None else inputs_embeds
        b, l = x.shape[:2]
        start = 0 if cache is None else cache.length
        am = None
        if attention_mask is not None:
            am = torch.as_tensor(np.asarray(attention_mask, bool))
            if bool(am.all()):
                am = None
        if position_ids is not None:
            pos = torch.as_tensor(np.asarray(position_ids), dtype=torch.long)
        elif am is not None:
            pos = torch.where(am, am.long().cumsum(-1) - 1, torch.ones_like(am, dtype=torch.long))[:, start:]
        else:
            pos = None
        rope = None
        if self.rotary_dim:
            if pos is None:
                rope = (self.rope_cos[start:start + l], self.rope_sin[start:start + l])
            else:
                pos = pos.expand(b, l) if pos.ndim == 2 else pos[None].expand(b, l)
                rope = (self.rope_cos[pos][:, None], self.rope_sin[pos][:, None])  # (B, 1, L, R)
        mask = None
        if am is not None:
            causal = torch.arange(start + l)[None, :] <= (start + torch.arange(l))[:, None]
            mask = causal[None, None] & am[:, None, None, :start + l]
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, rope, is_causal=True, attn_mask=mask)
        if cache is not None:
            cache.length += l
        if logits_at is None:
            return self.norm(x)
        if isinstance(logits_at, str) and logits_at == "last":
            x = x[:, -1]
        elif not isinstance(logits_at, str):
            at = torch.as_tensor(np.asarray(logits_at), dtype=torch.long)
            x = torch.gather(x, 1, at[:, :, None].expand(-1, -1, x.shape[-1]))
        return self.head(self.norm(x))


class TwinViTEncoder(nn.Module):
    """mmu.nn.ViTEncoder with learned positions: patch_embed (Conv2d, stride = patch), [extra_tokens],
    pos_embedding (1, E + N, dim), [pre_norm], layers.{i} (TwinLayer, no mask), [norm].
    forward(images, upto=None): the tokens after the first `upto` layers (all by default; the final norm
    only after the last layer); run_layers(x, lo, hi) continues from layer lo."""

    def __init__(self, image_size, patch_size, in_channels=3, dim=768, depth=12, num_heads=12, hidden_dim=None,
                 activation="gelu", bias=True, norm="layernorm", norm_eps=1e-6, num_extra_tokens=0,
                 final_norm=True, pre_norm=False):
        super().__init__()
        ih, iw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        self.patch_embed = nn.Conv2d(in_channels, dim, (ph, pw), stride=(ph, pw), bias=bias)
        self.num_extra_tokens = num_extra_tokens
        if num_extra_tokens:
            self.extra_tokens = nn.Parameter(torch.zeros(1, num_extra_tokens, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_extra_tokens + (ih // ph) * (iw // pw), dim))
        if pre_norm:
            self.pre_norm = _twin_norm(norm, dim, norm_eps)
        self.layers = nn.ModuleList(TwinLayer(dim, num_heads, hidden_dim=hidden_dim, activation=activation, bias=bias,
                                              norm=norm, norm_eps=norm_eps) for _ in range(depth))
        self.norm = _twin_norm(norm, dim, norm_eps) if final_norm else None

    def embed(self, images):
        x = self.patch_embed(images)
        b, d = x.shape[:2]
        x = x.reshape(b, d, -1).transpose(1, 2)
        if self.num_extra_tokens:
            x = torch.cat([self.extra_tokens.expand(b, -1, -1), x], 1)
        x = x + self.pos_embedding
        if hasattr(self, "pre_norm"):
            x = self.pre_norm(x)
        return x

    def run_layers(self, x, lo=0, hi=None):
        hi = len(self.layers) if hi is None else hi
        for layer in self.layers[lo:hi]:
            x = layer(x)
        if hi == len(self.layers) and self.norm is not None:
            x = self.norm(x)
        return x

    def forward(self, images, upto=None):
        return self.run_layers(self.embed(images), 0, upto)


class TwinAttentionPoolingHead(nn.Module):
    """mmu.models.vit.AttentionPoolingHead (SigLIP's): probe (1, 1, dim) attends over the tokens through a
    torch-named MultiheadAttention (in_proj_weight / in_proj_bias / out_proj), then h + mlp(layernorm(h))."""

    def __init__(self, dim, num_heads, hidden_dim, activation="gelu_tanh", norm_eps=1e-6):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, dim))
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = TwinLayerMLP(dim, hidden_dim, activation)

    def forward(self, x):
        b, _, d = x.shape
        h = self.attention(self.probe.expand(b, 1, d), x, x, need_weights=False)[0]
        h = h + self.mlp(self.layernorm(h))
        return h.reshape(b, d)


class TwinResidualVQ(nn.Module):
    """mmu.quantizers.ResidualVQ over rows (B, N, dim), Euclidean, no projection, one VectorQuantize per level
    or one shared by all (shared_codebook, VILA-U's): buffers layers.{j}.embed (1, K, d), cluster_size (1, K),
    embed_avg (1, K, d), initted (1,) (a Parameter embed with learnable_codebook). At level d the residual
    r_d = x - sum_{i<d} sg(q_i) is quantized to its nearest code q_d; in training the level then updates its
    codebook from (r_d, code) (the Laplace-smoothed EMA of vector-quantize-pytorch, in the C kernel's float32
    order), restarts its dead codes, and returns r_d + sg(q_d - r_d) (straight-through) with loss
    commitment_weight * mse(sg(q_d), r_d) (RQ-VAE's cumulative commitment); output = the sum over levels,
    loss = the mean over levels.

    The random parts are mirrored with mmu's draws passed in: kmeans_init (Lloyd's k-means on the first
    training batch's rows, vector-quantize-pytorch's init_embed_, mmu's float64 means) and the dead-code
    restart (codes whose EMA count < threshold_ema_dead_code get a row of the level's input, count =
    threshold, embed_avg = row * threshold) each take rows of the input chosen by mmu's seeded
    _sample_rows; `draws` is a list of those row-index arrays, consumed in call order (record them from the
    mmu side). With `draws` None the twin draws its own indices from torch's RNG (the same work, other rows:
    for benchmarks). quantize_dropout is not mirrored.

    Nearest-code ties: a row whose two nearest codes are within float32 rounding of each other can go either
    way in two frameworks, and one flipped code sends the EMA codebooks (and then the whole run) apart. For
    parity runs `forced_codes` (a list of mmu's (B, N, Q) index arrays, one per forward, consumed in order)
    makes the twin take mmu's code wherever its own search differs; every such row is recorded in
    `disagreements` as (level, the squared distance to the twin's choice, to mmu's, the row's squared norm),
    so a test can check they are ties and not a different search."""

    def __init__(self, dim, num_quantizers, codebook_size, shared_codebook=False, decay=0.8, eps=1e-5,
                 commitment_weight=1.0, codebook_weight=1.0, learnable_codebook=False, ema_update=True,
                 kmeans_init=False, kmeans_iters=10, threshold_ema_dead_code=0.0):
        super().__init__()
        self.dim, self.num_quantizers, self.codebook_size = dim, num_quantizers, codebook_size
        self.shared_codebook = shared_codebook
        self.decay, self.eps = decay, eps
        self.commitment_weight, self.codebook_weight = commitment_weight, codebook_weight
        self.learnable_codebook, self.ema_update = learnable_codebook, ema_update
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.threshold_ema_dead_code = float(threshold_ema_dead_code)
        self.draws = None
        self.forced_codes, self.disagreements = None, []
        self.layers = nn.ModuleList()
        for _ in range(1 if shared_codebook else num_quantizers):
            m = nn.Module()
            embed = torch.zeros(1, codebook_size, dim)
            if learnable_codebook:
                m.embed = nn.Parameter(embed)
            else:
                m.register_buffer("embed", embed)
            m.register_buffer("cluster_size", torch.ones(1, codebook_size))
            m.register_buffer("embed_avg", embed.clone())
            m.register_buffer("initted", torch.full((1,), 0.0 if kmeans_init else 1.0))
            self.layers.append(m)

    def level(self, d):
        return self.layers[0 if self.shared_codebook else d]

    @staticmethod
    def _nearest(x, e):
        # ||x||^2 is the same for every code: argmin of ||e||^2 - 2 x.e (the C kernel's order)
        return ((e * e).sum(1)[None] - 2.0 * (x @ e.t())).argmin(1)

    def _rows(self, m, num):
        """Row indices of mmu's _sample_rows(samples (m rows), num): the next recorded draw, or torch's."""
        if self.draws is not None:
            if not self.draws:
                raise RuntimeError("TwinResidualVQ: no recorded draw left (record mmu's _sample_rows calls)")
            idx = torch.as_tensor(np.asarray(self.draws.pop(0)), dtype=torch.long)
            if idx.numel() != num:
                raise RuntimeError(f"TwinResidualVQ: a recorded draw of {idx.numel()} rows where {num} are due")
            return idx
        if m >= num:
            return torch.randperm(m)[:num]
        return torch.randint(0, m, (num,))

    @torch.no_grad()
    def _kmeans(self, m, x):
        K = self.codebook_size
        xd = x.double()
        means = x[self._rows(x.shape[0], K)].clone()
        bins = torch.zeros(K)
        for _ in range(self.kmeans_iters):
            ind = self._nearest(x, means)
            bins = torch.bincount(ind, minlength=K).float()
            sums = torch.zeros(K, x.shape[1], dtype=torch.float64).index_add_(0, ind, xd)
            new = (sums / bins.double().clamp_min(1)[:, None]).float()
            means = torch.where(bins[:, None] == 0, means, new)
        avg = means * bins[:, None]
        cs = bins.double()
        n = cs.sum()
        m.embed[0].copy_((avg.double() / ((cs + self.eps) / (n + K * self.eps) * n)[:, None]).float())
        m.embed_avg[0].copy_(avg)
        m.cluster_size[0].copy_(bins)
        m.initted.fill_(1.0)

    @torch.no_grad()
    def _ema(self, m, x, ind):
        K = self.codebook_size
        dec = torch.tensor(self.decay, dtype=torch.float32)
        one_m = torch.tensor(1.0 - self.decay, dtype=torch.float32)
        cnt = torch.bincount(ind, minlength=K).float()
        cs = m.cluster_size[0]
        cs.copy_(dec * cs + one_m * cnt)
        sums = torch.zeros_like(m.embed_avg[0]).index_add_(0, ind, x)
        m.embed_avg[0].mul_(dec).add_(one_m * sums)
        total = cs.double().sum()
        n, denom = total.float(), (total + K * self.eps).float()
        m.embed[0].copy_(m.embed_avg[0] * (1.0 / ((cs + self.eps) / denom * n))[:, None])

    @torch.no_grad()
    def _expire(self, m, x):
        if self.threshold_ema_dead_code <= 0:
            return
        dead = m.cluster_size[0] < self.threshold_ema_dead_code
        n = int(dead.sum())
        if not n:
            return
        rows = x[self._rows(x.shape[0], n)]
        m.embed[0][dead] = rows
        m.cluster_size[0][dead] = self.threshold_ema_dead_code
        m.embed_avg[0][dead] = rows * self.threshold_ema_dead_code

    def code_vectors(self, indices):
        """indices (..., q) -> (..., q, dim): each level's code vector (no gradient into the codebook)."""
        return torch.stack([F.embedding(indices[..., d], self.level(d).embed[0].detach())
                            for d in range(indices.shape[-1])], -2)

    def forward(self, x):
        b, n, dim = x.shape
        rows = x.reshape(b * n, dim)
        residual, out, losses, codes = rows, None, [], []
        forced = None
        if self.forced_codes is not None:
            forced = torch.as_tensor(np.asarray(self.forced_codes.pop(0)), dtype=torch.long).reshape(b * n, -1)
        for d in range(self.num_quantizers):
            m = self.level(d)
            if self.training and self.kmeans_init and float(m.initted[0]) == 0.0:
                self._kmeans(m, residual.detach())
            ind = self._nearest(residual.detach(), m.embed[0].detach())
            if forced is not None and not torch.equal(ind, forced[:, d]):
                with torch.no_grad():
                    r, e = residual.detach().double(), m.embed[0].double()
                    for i in torch.nonzero(ind != forced[:, d]).flatten().tolist():
                        dist = ((r[i][None] - e) ** 2).sum(1)
                        self.disagreements.append((d, float(dist[ind[i]]), float(dist[forced[i, d]]),
                                                   float((r[i] ** 2).sum())))
                ind = forced[:, d].clone()
            q = F.embedding(ind, m.embed[0] if self.learnable_codebook else m.embed[0].detach())
            if self.training:
                if self.ema_update and not self.learnable_codebook:
                    self._ema(m, residual.detach(), ind)
                self._expire(m, residual.detach())
            loss = x.new_zeros(())
            if self.training:
                if self.commitment_weight > 0:
                    loss = F.mse_loss(q.detach(), residual) * self.commitment_weight
                if self.learnable_codebook and self.codebook_weight > 0:
                    loss = loss + F.mse_loss(q, residual.detach()) * self.codebook_weight
                q = residual + (q - residual).detach()
            if d + 1 < self.num_quantizers:
                residual = residual - q.detach()
            out = q if out is None else out + q
            losses.append(loss)
            codes.append(ind)
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
        if self.num_quantizers > 1:
            total = total / float(self.num_quantizers)
        return out.reshape(b, n, dim), torch.stack(codes, -1).reshape(b, n, self.num_quantizers), total


class TwinTextEncoder(nn.Module):
    """mmu.models.vila_u.TextEncoder: token_embedding + pos_embedding[:, :L], pre-norm layers (TwinLayer; causal
    for layout 'clip'), final_norm, pooled = the last position ('siglip') or the end-of-text position ('clip':
    the first occurrence of eot_token_id, or the row's highest id), head. forward(ids (B, L) long) ->
    (features (B, L, dim), pooled (B, embed_dim))."""

    def __init__(self, vocab_size, max_len, dim, depth, num_heads, hidden_dim=None, embed_dim=None, layout="siglip",
                 activation=None, norm_eps=None, eot_token_id=None):
        super().__init__()
        self.layout, self.eot_token_id = layout, eot_token_id
        activation = activation or {"siglip": "gelu_tanh", "clip": "quick_gelu"}[layout]
        norm_eps = norm_eps or {"siglip": 1e-6, "clip": 1e-5}[layout]
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.pos_embedding = nn.Parameter(torch.zeros(1, max_len, dim))
        self.layers = nn.ModuleList(TwinLayer(dim, num_heads, hidden_dim=hidden_dim or 4 * dim, activation=activation,
                                              bias=True, norm="layernorm", norm_eps=norm_eps) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, embed_dim or dim, bias=layout == "siglip")

    def forward(self, ids):
        b, l = ids.shape
        if self.layout == "siglip":
            pos = torch.full((b,), l - 1, dtype=torch.long)
        elif self.eot_token_id is None:
            pos = ids.argmax(-1)
        else:
            pos = (ids == self.eot_token_id).long().argmax(-1)
        x = self.token_embedding(ids) + self.pos_embedding[:, :l]
        for layer in self.layers:
            x = layer(x, is_causal=self.layout == "clip")
        x = self.final_norm(x)
        return x, self.head(x[torch.arange(b), pos])


def twin_text_input(c, text_ids):
    """mmu's UnifiedVisionTower.text_input for a twin (NumPy): -1 -> text_pad_id, cut after the longest row's
    last token, and for the 'siglip' layout padded to text_max_len. c: the tower config as a dict."""
    a = np.asarray(text_ids, np.int64)
    real = a >= 0
    length = int((real.shape[1] - np.argmax(real[:, ::-1], 1)).max())
    a = np.where(real, a, c["text_pad_id"])[:, :max(length, 1)]
    if c["text_layout"] == "siglip" and a.shape[1] < c["text_max_len"]:
        a = np.concatenate([a, np.full((a.shape[0], c["text_max_len"] - a.shape[1]), c["text_pad_id"], np.int64)], 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def twin_siglip_loss(img, txt, t, b):
    """mmu.losses.siglip_loss: -sum(log_sigmoid(labels * (exp(t) img @ txt.T + b))) / B, labels +1 on the diagonal."""
    logits = img @ txt.t() * t.exp() + b
    labels = 2.0 * torch.eye(img.shape[0]) - 1.0
    return -F.logsigmoid(labels * logits).sum() / img.shape[0]


def twin_clip_loss(img, txt, logit_scale):
    """mmu.losses.clip_loss: logits = min(exp(logit_scale), 100) img @ txt.T, symmetric cross-entropy / 2."""
    logits = logit_scale.exp().clamp(max=100.0) * (img @ txt.t())
    target = torch.arange(img.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class TwinUnifiedVisionTower(nn.Module):
    """Twin of mmu.models.vila_u.UnifiedVisionTower (c: its config as a dict, config.to_dict()): vision.encoder
    (TwinViTEncoder, SigLIP layout) + vision.head (the attention-pooling head), quantizer (TwinResidualVQ:
    shared codebook, EMA, k-means init and dead-code restarts with mmu's draws passed in), post_quant_conv +
    decoder (taming's, TwinDecoder), [image_proj], text (TwinTextEncoder), logit_scale [/ logit_bias].

    losses(images, text_ids, stage) -> (loss, {"contra", "recon", "commit"} 0-d tensors, recon or None), the
    terms of UnifiedVisionTower.losses: 'align' contrastive on the pooled CONTINUOUS tokens; 'tower' / 'joint'
    z = h + sg(sum_d q_d - h) (VILA-U's straight-through on the depth sum), recon = decoder(post_quant_conv(z)),
    loss = recon_weight * (L1 | L2) + commitment + contra_weight * contrastive(pooled z, text); in 'tower' the
    text encoder runs without a graph (set_stage freezes it). LPIPS and the PatchGAN are not mirrored."""

    def __init__(self, c):
        super().__init__()
        if c.get("lpips_weight") or c.get("gan_weight"):
            raise ValueError("TwinUnifiedVisionTower: LPIPS and the PatchGAN are not mirrored (lpips_weight = "
                             "gan_weight = 0)")
        self.c = dict(c)
        hidden = c["hidden_dim"] or 4 * c["dim"]
        self.vision = nn.Module()
        self.vision.encoder = TwinViTEncoder(c["image_size"], c["patch_size"], c["in_channels"], c["dim"], c["depth"],
                                             c["num_heads"], hidden, c["activation"], True, "layernorm", c["norm_eps"])
        self.vision.head = TwinAttentionPoolingHead(c["dim"], c["num_heads"], hidden, c["activation"], c["norm_eps"])
        self.quantizer = TwinResidualVQ(c["dim"], c["rvq_depth"], c["codebook_size"], c["shared_codebook"],
                                        decay=c["ema_decay"], commitment_weight=c["commitment_weight"],
                                        kmeans_init=c["kmeans_init"], threshold_ema_dead_code=c["dead_code_threshold"])
        self.post_quant_conv = nn.Conv2d(c["codebook_dim"], c["decoder_z_channels"], 1)
        self.decoder = TwinDecoder(c["decoder_ch"], c["decoder_ch_mult"], c["decoder_num_res_blocks"],
                                   c["decoder_attn_resolutions"], c["in_channels"], c["image_size"],
                                   c["decoder_z_channels"], 0.0, c["decoder_norm_groups"])
        if c["embed_dim"] != c["dim"]:
            self.image_proj = nn.Linear(c["dim"], c["embed_dim"])
        self.text = TwinTextEncoder(c["text_vocab_size"], c["text_max_len"], c["text_dim"], c["text_depth"],
                                    c["text_heads"], c["text_hidden_dim"], c["embed_dim"], c["text_layout"],
                                    eot_token_id=c["text_eot_id"])
        if c["contrastive"] == "sigmoid":
            self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        else:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))
        self.stage = "joint"

    def load_mmu_state(self, state):
        """Copies an mmu UnifiedVisionTower state_dict ({name: Tensor or array}) into the twin (strict)."""
        self.load_state_dict(_to_torch_state(state), strict=True)
        return self

    def set_stage(self, stage):
        """UnifiedVisionTower.set_stage: 'tower' freezes the text encoder."""
        self.text.requires_grad_(stage != "tower")
        self.stage = stage
        return self

    def tokens_before_quant(self, images):
        return self.vision.encoder.run_layers(self.vision.encoder.embed(images), 0, self.c["quantize_after"])

    def pooled(self, h):
        enc = self.vision.encoder
        h = enc.run_layers(h, self.c["quantize_after"], len(enc.layers))  # the final norm after the last layer
        p = self.vision.head(h)
        return self.image_proj(p) if hasattr(self, "image_proj") else p

    def decode_tokens(self, z):
        b, n, ch = z.shape
        g = self.c["image_size"] // self.c["patch_size"]
        return self.decoder(self.post_quant_conv(z.transpose(1, 2).reshape(b, ch, g, g)))

    def contrastive(self, img, txt):
        if self.c["contrastive"] == "sigmoid":
            return twin_siglip_loss(img, txt, self.logit_scale, self.logit_bias)
        return twin_clip_loss(img, txt, self.logit_scale)

    def losses(self, images, text_ids=None, stage=None):
        c, stage = self.c, stage or self.stage
        terms = {}
        txt = None
        if stage == "align" or c["contra_weight"] > 0:
            ids = twin_text_input(c, text_ids)
            if stage == "tower":
                with torch.no_grad():
                    txt = F.normalize(self.text(ids)[1], dim=-1)
            else:
                txt = F.normalize(self.text(ids)[1], dim=-1)
        h = self.tokens_before_quant(images)
        if stage == "align":
            terms["contra"] = self.contrastive(F.normalize(self.pooled(h), dim=-1), txt)
            return terms["contra"] * c["contra_weight"], terms, None
        q, codes, commit = self.quantizer(h)
        z = h + (q - h).detach()
        recon = self.decode_tokens(z)
        terms["recon"] = F.l1_loss(recon, images) if c["recon_loss"] == "l1" else F.mse_loss(recon, images)
        terms["commit"] = commit
        loss = terms["recon"] * c["recon_weight"] + commit
        if txt is not None:
            terms["contra"] = self.contrastive(F.normalize(self.pooled(z), dim=-1), txt)
            loss = loss + terms["contra"] * c["contra_weight"]
        self.last_codes = codes
        return loss, terms, recon


def twin_optimizer(twin, steps, lr=2e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup_steps=0, min_lr_ratio=0.1):
    """showo_optimizer over the twin's parameters that require grad (mmu.train.Trainer's generator
    parameters): torch AdamW (eps 1e-8, decoupled decay, no exemptions) + the warmup-cosine schedule."""
    params = [p for p in twin.parameters() if p.requires_grad]
    holder = nn.Module()
    holder.params = nn.ParameterList(params)
    return showo_optimizer(holder, steps, lr, betas, weight_decay, warmup_steps, min_lr_ratio)


def tower_train_step(twin, opt, sched, images, text_ids=None, grad_clip=1.0):
    """mmu.train.Trainer's step for UnifiedVisionTower: loss, backward, global-norm clipping of the trainable
    parameters, AdamW, the schedule. Returns (loss float, {term: float})."""
    opt.zero_grad(set_to_none=True)
    loss, terms, _ = twin.losses(images, text_ids)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in twin.parameters() if p.requires_grad], grad_clip)
    opt.step()
    sched.step()
    return loss.item(), {k: v.item() for k, v in terms.items()}


class TwinDepthTransformer(nn.Module):
    """mmu.models.vila_u.DepthTransformer (VILA-U's RQTransformer head): in_mlp_1 (C -> dim) on the partial sums
    of the code embeddings, in_mlp_2 (body_dim -> dim) on the LLM's hidden state, pos_emb_d (1, D, dim),
    head_transformer.{i} (TwinLayer: LayerNorm eps 1e-5, exact GELU MLP of 4 dim, biases; causal over depth),
    classifier_mlp.layer_norm / .linear (-> K). Dropout is not mirrored (depth_dropout 0).
    forward(hidden (..., body_dim), code_embeddings (..., d, C) or None, last_only) as mmu's; new_cache(rows) and
    step(cache, hidden=None, code_sum=None): generation's one input per depth on a static cache of D slots
    (mmu's DepthTransformer.step; VILA-U recomputes the prefix at every depth)."""

    def __init__(self, code_dim, body_dim, dim, num_layers, num_heads, depth, codebook_size):
        super().__init__()
        self.dim, self.depth, self.codebook_size, self.num_heads = dim, depth, codebook_size, num_heads
        self.in_mlp_1 = nn.Linear(code_dim, dim)
        self.in_mlp_2 = nn.Linear(body_dim, dim)
        self.pos_emb_d = nn.Parameter(torch.zeros(1, depth, dim))
        self.head_transformer = nn.ModuleList(TwinLayer(dim, num_heads, hidden_dim=4 * dim, activation="gelu",
                                                        bias=True, norm="layernorm", norm_eps=1e-5)
                                              for _ in range(num_layers))
        self.classifier_mlp = nn.Sequential(collections.OrderedDict([
            ("layer_norm", nn.LayerNorm(dim, eps=1e-5)), ("linear", nn.Linear(dim, codebook_size))]))

    def forward(self, hidden, code_embeddings=None, last_only=False):
        lead = hidden.shape[:-1]
        rows = int(np.prod(lead))
        d = 0 if code_embeddings is None else code_embeddings.shape[-2]
        length = min(d + 1, self.depth)
        x = self.in_mlp_2(hidden.reshape(rows, -1)).reshape(rows, 1, self.dim)
        if length > 1:
            e = code_embeddings.reshape(rows, d, -1)[:, :length - 1]
            x = torch.cat([x, self.in_mlp_1(torch.cumsum(e, 1))], 1)  # the partial sums above each depth
        x = x + self.pos_emb_d[:, :length]
        for block in self.head_transformer:
            x = block(x, is_causal=True)
        if last_only:
            return self.classifier_mlp(x[:, length - 1]).reshape(*lead, self.codebook_size)
        return self.classifier_mlp(x).reshape(*lead, length, self.codebook_size)

    def new_cache(self, rows):
        return TwinRopeCache(len(self.head_transformer), rows, self.num_heads, self.depth, self.dim // self.num_heads)

    def step(self, cache, hidden=None, code_sum=None):
        """The logits (rows, K) of depth d = cache.length: input in_mlp_2(hidden) at d = 0, in_mlp_1(code_sum)
        (e_0 + ... + e_{d-1}) after, + pos_emb_d[d], against the cached depths; the cache advances by one."""
        d = cache.length
        x = self.in_mlp_2(hidden) if d == 0 else self.in_mlp_1(code_sum)
        x = (x + self.pos_emb_d[0, d])[:, None]
        for i, block in enumerate(self.head_transformer):
            x = block(x, i, cache, is_causal=True)
        cache.length += 1
        return self.classifier_mlp(x[:, 0])


class TwinMMProjector(nn.Module):
    """mmu.models.vila_u.MMProjector: `layers` = Linear ('linear') or Sequential(Linear, GELU (exact), Linear)
    ('mlp2x_gelu'), VILA-U's keys."""

    def __init__(self, kind, in_dim, out_dim):
        super().__init__()
        self.layers = nn.Linear(in_dim, out_dim) if kind == "linear" else \
            nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x):
        return self.layers(x)


def twin_top_k_top_p(logits, top_k, top_p, temperature=1.0):
    """VILA-U's sample_from_logits filter (RQTransformer's): logits / temperature, keep the top_k, softmax,
    nucleus: drop the tokens after the cumulative probability reaches top_p (the first always kept),
    renormalise -> probabilities (rows, V)."""
    logits = logits / temperature if temperature != 1.0 else logits
    if top_k is not None and top_k < logits.shape[-1]:
        v = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < v, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = torch.sort(probs, -1, descending=True)
        remove = sorted_p.cumsum(-1) >= top_p
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        probs = probs.masked_fill(remove.scatter(-1, order, remove), 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


class TwinVILAU(nn.Module):
    """Twin of mmu.models.vila_u.VILAU (c: its config as a dict, config.to_dict(); the tower's config nested):
    lm (TwinLlamaLM: RMSNorm, SwiGLU, RoPE, no biases, GQA), mm_projector (TwinMMProjector), depth
    (TwinDepthTransformer), tower (TwinUnifiedVisionTower, frozen: only its codebook is read, as VILA-U's
    get_code_emb_with_depth), so load_mmu_state(model.state_dict()) copies every weight (strict).

    The sequences come from mmu's builders (VILAU.i2t_sequences / t2v_sequences: NumPy ids, codes with -1 at
    text positions, labels / attention masks; the t2i condition dropout is drawn by mmu, record it there):
      text_loss(ids, codes, labels): the LLM's logits at every position whose next label is a target,
        mean cross-entropy (VILAU._text_loss);
      visual_loss(ids, codes, mask, s): the final-normed hidden states of columns s .. s+P-1 through the depth
        transformer with the code embeddings of the P positions -> (sum of the code cross-entropies, count).
    generate_images(prompts, ...): the LLM on a static KV cache (TwinRopeCache), the depth transformer one input
    per depth on its own static cache of D slots, CFG u + s (c - u), VILA-U's top-k / top-p sampler (or argmax),
    as mmu.models.vila_u.generation.generate_images."""

    def __init__(self, c):
        super().__init__()
        if c.get("depth_dropout"):
            raise ValueError("TwinVILAU: dropout is not mirrored (mmu and torch draw different masks): "
                             "depth_dropout=0")
        self.c = dict(c)
        t = c["tower"]
        self.K, self.D = t["codebook_size"], t["rvq_depth"]
        self.C = t["codebook_dim"] or t["dim"]
        g = t["image_size"] // t["patch_size"]
        self.latent = (g, g)
        self.vocab_size = c["llm_vocab_size"] + 4
        self.lm = TwinLlamaLM(self.vocab_size, c["dim"], c["num_layers"], c["num_heads"], c["num_kv_heads"],
                              hidden_dim=c["hidden_dim"] or 4 * c["dim"], norm_eps=c["norm_eps"],
                              rope_base=c["rope_base"], max_seq_len=c["max_seq_len"],
                              tie_embeddings=c["tie_embeddings"])
        self.mm_projector = TwinMMProjector(c["mm_projector"], self.C, c["dim"])
        self.depth = TwinDepthTransformer(self.C, c["dim"], c["depth_dim"], c["depth_layers"], c["depth_heads"],
                                          self.D, self.K)
        self.tower = TwinUnifiedVisionTower(t)
        self.tower.requires_grad_(False)

    def load_mmu_state(self, state):
        """Copies an mmu VILAU state_dict (tower included) into the twin (strict)."""
        self.load_state_dict(_to_torch_state(state), strict=True)
        return self

    def train(self, mode=True):
        super().train(mode)
        self.tower.eval()  # frozen, as mmu's
        return self

    def code_embeddings(self, codes):
        """codes (..., d) long -> (..., d, C): the shared codebook's vectors (no gradient)."""
        return F.embedding(codes, self.tower.quantizer.level(0).embed[0].detach())

    def visual_embeddings(self, codes):
        """codes (M, D) -> (M, dim) = mm_projector(sum_d e_d(code_d)) (VILA-U's cumsum, the last)."""
        return self.mm_projector(torch.cumsum(self.code_embeddings(codes), -2)[..., -1, :])

    def embed(self, ids, codes):
        """ids (B, L), codes (B, L, D) with -1 at text positions (NumPy) -> (B, L, dim)."""
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        visual = codes[..., 0] >= 0
        x = self.lm.embed_tokens(torch.where(visual, 0, ids))
        if bool(visual.any()):
            x = x.clone()
            x[visual] = self.visual_embeddings(codes[visual])
        return x

    def text_loss(self, ids, codes, labels):
        labels = np.asarray(labels)
        b = len(ids)
        targets = [np.flatnonzero(labels[i, 1:] != -100) for i in range(b)]
        n = max(len(t) for t in targets)
        where = np.zeros((b, n), np.int64)
        want = np.full((b, n), -100, np.int64)
        for i, t in enumerate(targets):
            where[i, :len(t)] = t
            want[i, :len(t)] = labels[i, t + 1]
        logits = self.lm(inputs_embeds=self.embed(ids, codes), logits_at=where)
        return F.cross_entropy(logits.reshape(b * n, -1), torch.from_numpy(want.reshape(-1)), ignore_index=-100)

    def visual_loss(self, ids, codes, mask, s):
        codes = np.asarray(codes)
        b, length = ids.shape
        hidden = self.lm(inputs_embeds=self.embed(ids, codes), attention_mask=mask, logits_at=None)
        vis = codes[:, s + 1:]
        p = int((vis[0, :, 0] >= 0).sum())
        target = torch.from_numpy(np.ascontiguousarray(vis[:, :p]))
        logits = self.depth(hidden[:, s:s + p], self.code_embeddings(target))  # (B, P, D, K)
        total = F.cross_entropy(logits.reshape(-1, self.K), target.reshape(-1), reduction="sum")
        return total, b * p * self.D

    def losses(self, inputs):
        """inputs: {"i2t": (ids, codes, labels), "t2i": (ids, codes, mask, s), "t2v": (...)} (mmu's sequences)
        -> {"text", "visual"} 0-d losses (VILAU.losses' terms: visual = the summed code cross-entropies of the
        t2i and t2v parts over their total count)."""
        terms = {}
        if "i2t" in inputs:
            terms["text"] = self.text_loss(*inputs["i2t"])
        total, count = None, 0
        for task in ("t2i", "t2v"):
            if task in inputs:
                part, n = self.visual_loss(*inputs[task])
                total = part if total is None else total + part
                count += n
        if total is not None:
            terms["visual"] = total * (1.0 / count)
        return terms

    @torch.inference_mode()
    def generate_images(self, prompts, cfg_scale=3.0, top_k=900, top_p=0.96, temperature=1.0, do_sample=True,
                        num_positions=None, start_id=None, trace=None):
        """prompts: B lists of text ids (no [SOT] / [EOT]) -> codes (B, h, w, D) long. num_positions / start_id:
        a video's T h w positions after [SOV] (default: one image after [SOI]). trace: a list receiving each
        position's unguided depth logits (D arrays (rows, K))."""
        c = self.c
        h, w = self.latent
        n = num_positions or h * w
        start_id = c["llm_vocab_size"] if start_id is None else start_id
        b = len(prompts)
        guided = cfg_scale != 1.0
        texts = list(prompts) + [[] for _ in range(b)] if guided else list(prompts)
        seqs = [[c["sot_token_id"]] + list(t) + [c["eot_token_id"], start_id] for t in texts]
        width = max(len(q) for q in seqs)
        rows = len(seqs)
        ids = np.full((rows, width), c["eot_token_id"], np.int64)
        mask = np.zeros((rows, width + n - 1), bool)
        for i, q in enumerate(seqs):
            ids[i, width - len(q):] = q
            mask[i, width - len(q):] = True
        mask[:, width:] = True
        positions = np.maximum(np.cumsum(mask[:, :width], 1) - 1, 0)
        next_pos = torch.from_numpy(positions[:, -1:] + 1)
        mask_t = torch.from_numpy(mask)
        top_k = min(top_k, self.K) if top_k else None
        out = torch.zeros(b, n, self.D, dtype=torch.long)
        cache = self.lm.new_cache(rows, width + n - 1)
        hid = self.lm(torch.from_numpy(ids), cache=cache, logits_at=None, attention_mask=mask_t[:, :width],
                      position_ids=positions)[:, -1]
        depth_cache = self.depth.new_cache(rows)
        for j in range(n):
            codes = torch.zeros(b, 0, dtype=torch.long)
            record = [] if trace is not None else None
            depth_cache.length = 0
            for d in range(self.D):
                if d == 0:
                    logits = self.depth.step(depth_cache, hidden=hid)
                else:  # the partial sum of the codes so far, on both halves
                    given = torch.cat([codes, codes]) if guided else codes
                    logits = self.depth.step(depth_cache, code_sum=self.code_embeddings(given).cumsum(1)[:, d - 1])
                if record is not None:
                    record.append(logits.numpy().copy())
                if guided:
                    logits = logits[b:] + cfg_scale * (logits[:b] - logits[b:])
                if do_sample:
                    nxt = torch.multinomial(twin_top_k_top_p(logits, top_k, top_p, temperature), 1)
                else:
                    nxt = logits.argmax(-1, keepdim=True)
                codes = torch.cat([codes, nxt], 1)
            out[:, j] = codes
            if record is not None:
                trace.append(record)
            if j == n - 1:
                break
            feed = torch.cat([codes, codes]) if guided else codes
            x = self.visual_embeddings(feed)[:, None]
            hid = self.lm(inputs_embeds=x, cache=cache, logits_at=None, attention_mask=mask_t[:, :width + j + 1],
                          position_ids=next_pos)[:, 0]
            next_pos = next_pos + 1
        return out.reshape(b, h, w, self.D) if num_positions is None else out


def vila_u_train_step(twin, opt, sched, inputs, grad_clip=1.0):
    """mmu.train.Trainer's step for VILAU: loss = text + visual, backward, global-norm clipping of the trainable
    parameters, AdamW, the schedule. Returns (loss float, {term: float})."""
    opt.zero_grad(set_to_none=True)
    terms = twin.losses(inputs)
    loss = None
    for t in terms.values():
        loss = t if loss is None else loss + t
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in twin.parameters() if p.requires_grad], grad_clip)
    opt.step()
    sched.step()
    return loss.item(), {k: v.item() for k, v in terms.items()}


# =============================================================================================== OmniTokenizer
# A literal torch re-implementation of FoundationVision/OmniTokenizer's tokenizer (OmniTokenizer/omnitokenizer.py
# OmniTokenizer_Encoder / OmniTokenizer_Decoder / VQGAN.forward's generator loss without GAN terms,
# modules/attention.py, modules/codebook.py) with the module names of the published code, so its state_dict is
# the published checkpoint layout (mmu.models.omnitokenizer.convert_omnitokenizer_state_dict reads it). einops'
# Rearrange modules are parameter-free _OmniFn modules here (same indices in the Sequentials). torch >= 2.1's
# SDPA path of Attention (the continuous position bias is computed there but not added, so it is not run here).


class _OmniFn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class OmniLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class _OmniGEGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def omni_feed_forward(dim, mult=4.0):
    inner = int(mult * (2 / 3) * dim)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner * 2, bias=False), _OmniGEGLU(), nn.Dropout(0.0),
                         nn.Linear(inner, dim, bias=False))


class OmniPEG(nn.Module):
    def __init__(self, dim, causal=False):
        super().__init__()
        self.causal = causal
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x, shape):
        orig = x.shape
        x = x.reshape(*shape, -1)                      # the published reshape (also of (b h w) t d tokens)
        x = x.permute(0, 4, 1, 2, 3)
        x = F.pad(x, (1, 1, 1, 1, *((2, 0) if self.causal else (1, 1))), value=0.0)
        x = self.dsconv(x).permute(0, 2, 3, 4, 1)
        return x.reshape(orig)


def omni_freqs_cis_2d(dim, end, theta=10000.0):
    H = int(end ** 0.5)
    pos = torch.arange(end)
    x_pos, y_pos = pos % H, pos // H
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    x_cis = torch.polar(torch.ones(end, dim // 4), torch.outer(x_pos, freqs).float())
    y_cis = torch.polar(torch.ones(end, dim // 4), torch.outer(y_pos, freqs).float())
    return torch.cat([x_cis.unsqueeze(-1), y_cis.unsqueeze(-1)], dim=-1).reshape(end, -1)


def omni_apply_rotary(xq, xk, freqs_cis):
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    f = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
    return torch.view_as_real(xq_ * f).flatten(3).type_as(xq), torch.view_as_real(xk_ * f).flatten(3).type_as(xk)


class OmniContinuousPositionBias(nn.Module):
    """Parameters only (net.*): in the checkpoint, never added on the SDPA path."""

    def __init__(self, dim, heads, layers=2):
        super().__init__()
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))


class OmniAttention(nn.Module):
    def __init__(self, dim, dim_head=64, heads=8, causal=False, spatial_pos="rel"):
        super().__init__()
        self.heads, self.causal, self.scale, self.spatial_pos = heads, causal, 8, spatial_pos
        inner = dim_head * heads
        if spatial_pos == "rel":
            self.spatial_rel_pos_bias = OmniContinuousPositionBias(dim, heads)
        self.norm = OmniLayerNorm(dim)
        self.context_norm = OmniLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.dim = inner
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, is_spatial=True):
        kv_input = x
        x = self.norm(x)
        B, N, _ = x.shape
        q, k, v = self.to_q(x), *self.to_kv(kv_input).chunk(2, dim=-1)
        q, k, v = (t.reshape(B, N, self.heads, -1) for t in (q, k, v))
        if self.spatial_pos == "rope" and is_spatial:
            q, k = omni_apply_rotary(q, k, omni_freqs_cis_2d(self.dim // self.heads, N))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1) * self.q_scale, F.normalize(k, dim=-1) * self.k_scale
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))


def omni_window_partition(x, w):
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, w, w, C)


def omni_window_reverse(windows, w, H, W):
    B = int(windows.shape[0] / (H * W / w / w))
    x = windows.view(B, H // w, W // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class OmniWindowAttention(nn.Module):
    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, (window_size, window_size), num_heads
        self.norm = OmniLayerNorm(dim)
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid([torch.arange(window_size), torch.arange(window_size)], indexing="ij"))
        flat = torch.flatten(coords, 1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += window_size - 1
        rel[:, :, 1] += window_size - 1
        rel[:, :, 0] *= 2 * window_size - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x):
        B_, N, C = x.shape
        H = W = int(math.sqrt(N))
        w = self.window_size[0]
        x = self.norm(x).view(B_, H, W, -1)
        xw = omni_window_partition(x, w).view(-1, w * w, C)
        BW, NW = xw.shape[:2]
        qkv = self.qkv(xw).reshape(BW, NW, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(NW, NW, -1)
        attn = (attn + bias.permute(2, 0, 1).unsqueeze(0)).softmax(-1)
        xw = self.proj((attn @ v).transpose(1, 2).reshape(BW, NW, C))
        return omni_window_reverse(xw, w, H, W).view(B_, H * W, C)


class OmniTransformerTwin(nn.Module):
    def __init__(self, dim, depth, block, causal=False, dim_head=64, heads=8, ff_mult=4.0, peg_causal=False,
                 window_size=4, spatial_pos="rel"):
        super().__init__()
        self.layers = nn.ModuleList([])
        for b in block:
            if b == "t":
                self.layers.append(nn.ModuleList([OmniPEG(dim, peg_causal), OmniAttention(dim, dim_head, heads, causal,
                                                                                            spatial_pos), None,
                                                  omni_feed_forward(dim, ff_mult)]))
            else:
                self.layers.append(nn.ModuleList([None, OmniWindowAttention(dim, window_size, heads), None,
                                                  omni_feed_forward(dim, ff_mult)]))
        self.norm_out = OmniLayerNorm(dim)

    def forward(self, x, video_shape, is_spatial=True):
        for peg, attn, _, ff in self.layers:
            if peg is not None:
                x = peg(x, video_shape) + x
            x = (attn(x, is_spatial=is_spatial) if isinstance(attn, OmniAttention) else attn(x)) + x
            x = ff(x) + x
        return self.norm_out(x)


def _omni_tf(c, depth, block, causal):
    return OmniTransformerTwin(c["dim"], depth, block, causal=causal, dim_head=c["dim_head"], heads=c["heads"],
                               ff_mult=c["ff_mult"], peg_causal=c["causal_in_peg"], window_size=c["window_size"],
                               spatial_pos=c["spatial_pos"])


def _omni_patches(x, pt, p):  # 'b c (t pt) (h p1) (w p2) -> b t h w (c pt p1 p2)'
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T // pt, pt, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, T // pt, H // p, W // p, C * pt * p * p)


def _omni_pixels(y, C, pt, p):  # 'b t h w (c pt p1 p2) -> b c (t pt) (h p1) (w p2)'
    B, t, h, w, _ = y.shape
    y = y.reshape(B, t, h, w, C, pt, p, p)
    return y.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(B, C, t * pt, h * p, w * p)


class OmniEncoderTwin(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, p, pt, dim = c["in_channels"], c["patch_size"], c["temporal_patch_size"], c["dim"]
        self.p, self.pt = p, pt
        self.to_patch_emb_first_frame = nn.Sequential(_OmniFn(lambda x: _omni_patches(x, 1, p)),
                                                      nn.LayerNorm(C * p * p), nn.Linear(C * p * p, dim),
                                                      nn.LayerNorm(dim))
        self.to_patch_emb = nn.Sequential(_OmniFn(lambda x: _omni_patches(x, pt, p)), nn.LayerNorm(C * pt * p * p),
                                          nn.Linear(C * pt * p * p, dim), nn.LayerNorm(dim))
        self.enc_spatial_transformer = _omni_tf(c, len(c["enc_block"]), c["enc_block"], False)
        self.enc_temporal_transformer = _omni_tf(c, c["temporal_depth"], "t" * c["temporal_depth"],
                                                 c["causal_in_temporal_transformer"])

    def forward(self, video):
        tokens = self.to_patch_emb_first_frame(video[:, :, :1])
        if video.shape[2] > 1:
            tokens = torch.cat((tokens, self.to_patch_emb(video[:, :, 1:])), dim=1)
        b, t, h, w, d = tokens.shape
        x = self.enc_spatial_transformer(tokens.reshape(b * t, h * w, d), (b, t, h, w), True)
        x = x.reshape(b, t, h, w, d).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
        x = self.enc_temporal_transformer(x, (b, t, h, w), False)
        return x.reshape(b, h, w, t, d).permute(0, 4, 3, 1, 2)  # b d t h w


class OmniDecoderTwin(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, p, pt, dim = c["in_channels"], c["patch_size"], c["temporal_patch_size"], c["dim"]
        self.dec_spatial_transformer = _omni_tf(c, len(c["dec_block"]), c["dec_block"], False)
        self.dec_temporal_transformer = _omni_tf(c, c["temporal_depth"], "t" * c["temporal_depth"],
                                                 c["causal_in_temporal_transformer"])
        self.to_pixels_first_frame = nn.Sequential(nn.Linear(dim, C * p * p), _OmniFn(lambda y: _omni_pixels(y, C, 1, p)))
        self.to_pixels = nn.Sequential(nn.Linear(dim, C * pt * p * p), _OmniFn(lambda y: _omni_pixels(y, C, pt, p)))

    def forward(self, z):  # z (b, d, t, h, w)
        tokens = z.permute(0, 2, 3, 4, 1).contiguous()
        b, t, h, w, d = tokens.shape
        x = self.dec_temporal_transformer(tokens.permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d), (b, t, h, w), False)
        x = x.reshape(b, h, w, t, d).permute(0, 3, 1, 2, 4).reshape(b * t, h * w, d)
        x = self.dec_spatial_transformer(x, (b, t, h, w), True).reshape(b, t, h, w, d)
        out = self.to_pixels_first_frame(x[:, :1])
        if t > 1:
            out = torch.cat((out, self.to_pixels(x[:, 1:])), dim=2)
        return out


class OmniCodebookTwin(nn.Module):
    """modules/codebook.py Codebook (initialised: _need_init False; no random restart, the script's)."""

    def __init__(self, n_codes, dim, decay=0.99, eps=1e-7, commitment=0.25):
        super().__init__()
        self.register_buffer("embeddings", torch.randn(n_codes, dim))
        self.register_buffer("N", torch.ones(n_codes))
        self.register_buffer("z_avg", self.embeddings.clone())
        self.register_buffer("codebook_usage", torch.zeros(n_codes))
        self.n_codes, self.decay, self.eps, self.commitment = n_codes, decay, eps, commitment

    def forward(self, z):
        flat = z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1])
        d = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ self.embeddings.t() + (self.embeddings.t() ** 2).sum(0, keepdim=True)
        idx = torch.argmin(d, dim=1)
        onehot = F.one_hot(idx, self.n_codes).type_as(flat)
        idx = idx.view(z.shape[0], *z.shape[2:])
        emb = F.embedding(idx, self.embeddings).permute(0, 4, 1, 2, 3)
        commitment = self.commitment * F.mse_loss(z, emb.detach())
        if self.training:
            with torch.no_grad():
                self.N.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.z_avg.mul_(self.decay).add_((flat.t() @ onehot).t(), alpha=1 - self.decay)
                n = self.N.sum()
                weights = (self.N + self.eps) / (n + self.n_codes * self.eps) * n
                self.embeddings.copy_(self.z_avg / weights.unsqueeze(1))
        return dict(embeddings=(emb - z).detach() + z, encodings=idx, commitment_loss=commitment)


class TwinOmniTokenizer(nn.Module):
    """OmniTokenizer's VQGAN (tokenizer part) in the published layout; c: OmniTokenizerConfig.to_dict()."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.encoder = OmniEncoderTwin(c)
        self.decoder = OmniDecoderTwin(c)
        self.codebook = OmniCodebookTwin(c["codebook_size"], c["codebook_dim"], c["decay"], c["eps"],
                                         c["commitment_weight"])
        cl = lambda x: x.permute(0, 2, 3, 4, 1)  # noqa: E731  b c t h w -> b t h w c
        cf = lambda x: x.permute(0, 4, 1, 2, 3)  # noqa: E731
        self.pre_vq_conv = nn.Sequential(_OmniFn(cl), nn.Linear(c["dim"], c["codebook_dim"]), _OmniFn(cf))
        self.post_vq_conv = nn.Sequential(_OmniFn(cl), nn.Linear(c["codebook_dim"], c["dim"]), _OmniFn(cf))

    def load_mmu_state(self, state):
        """Weights from an mmu OmniTokenizer state_dict (through the converter's name map)."""
        from mmu.models.omnitokenizer import omnitokenizer_state_dict_names
        names = omnitokenizer_state_dict_names(self.c)
        sd = self.state_dict()
        new = {}
        for k in sd:
            if k in names:
                v = np.asarray(state[names[k]].numpy() if hasattr(state[names[k]], "numpy") else state[names[k]])
                new[k] = torch.from_numpy(np.array(v[0] if k.startswith("codebook.") else v, np.float32))
            else:
                new[k] = sd[k]
        self.load_state_dict(new)
        return self

    def _z(self, x):
        z = self.pre_vq_conv(self.encoder(x))
        return F.normalize(z, p=2, dim=1) if self.c["l2_code"] else z

    def encode(self, x):
        return self.codebook(self._z(x))["encodings"]

    def decode(self, codes):
        z = F.embedding(codes, self.codebook.embeddings).permute(0, 4, 1, 2, 3)
        return self.decoder(self.post_vq_conv(z))

    def losses(self, x):
        """VQGAN.forward's generator terms without perceptual / GAN: (loss, {rec, quant}, recon)."""
        vq = self.codebook(self._z(x))
        recon = self.decoder(self.post_vq_conv(vq["embeddings"]))
        rec = F.l1_loss(recon, x)
        return rec * self.c["l1_weight"] + vq["commitment_loss"], {"rec": rec, "quant": vq["commitment_loss"]}, recon


def omnitokenizer_train_step(twin, opt, sched, clips, grad_clip=1.0):
    """mmu.train.Trainer's step for OmniTokenizer: loss, backward, clipping, AdamW, the schedule."""
    opt.zero_grad(set_to_none=True)
    loss, terms, _ = twin.losses(clips)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in twin.parameters() if p.requires_grad], grad_clip)
    opt.step()
    sched.step()
    return loss.item(), {k: v.item() for k, v in terms.items()}


# =============================================================================================== TiTok
# Twin of mmu.models.titok.TiTok (issue 15): the encoder is TwinViTEncoder with [class; K latents] as extra
# tokens, pre_norm, no final norm, then post_norm + proj on the latents; the l2-normalised VQ of 1d-tokenizer;
# the pixel decoder over [class; mask tokens; latents]; 1d-tokenizer's single-stage loss (mse + quantizer loss +
# fixed-weight PatchGAN term, hinge + LeCam on the mean logits for the discriminator). mmu's names throughout, so
# `load_mmu_state(model.state_dict())` copies everything (strict); tokenizer_train_step / make_optimizers drive it.

class TwinTiTokEncoder(TwinViTEncoder):
    """mmu.models.titok.TiTokEncoder: images (B, C, R, R) -> (B, token_size, K)."""

    def __init__(self, c):
        w = c.encoder_width
        super().__init__(c.resolution, c.patch_size, c.in_channels, w, c.encoder_depth, c.encoder_heads,
                         hidden_dim=int(w * c.mlp_ratio), activation="gelu", bias=True, norm="layernorm",
                         norm_eps=1e-5, num_extra_tokens=1 + c.num_latent_tokens, final_norm=False, pre_norm=True)
        self.k = c.num_latent_tokens
        self.post_norm = nn.LayerNorm(w, eps=1e-5)
        self.proj = nn.Linear(w, c.token_size)

    def forward(self, images):
        x = super().forward(images)
        return self.proj(self.post_norm(x[:, 1:1 + self.k])).transpose(1, 2)


class TwinTiTokDecoder(nn.Module):
    """mmu.models.titok.TiTokDecoder: zq (B, token_size, K) -> images (B, C, R, R)."""

    def __init__(self, c):
        super().__init__()
        w, self.c_out = c.decoder_width, c.in_channels
        self.p = c.decoder_patch_size or c.patch_size
        self.g = c.resolution // self.p
        n = self.g * self.g
        self.embed = nn.Linear(c.token_size, w)
        self.class_token = nn.Parameter(torch.zeros(1, 1, w))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1 + n, w))
        self.latent_pos_embedding = nn.Parameter(torch.zeros(1, c.num_latent_tokens, w))
        self.pre_norm = nn.LayerNorm(w, eps=1e-5)
        self.layers = nn.ModuleList(TwinLayer(w, c.decoder_heads, hidden_dim=int(w * c.mlp_ratio), activation="gelu",
                                              norm_eps=1e-5) for _ in range(c.decoder_depth))
        self.norm = nn.LayerNorm(w, eps=1e-5)
        self.to_pixels = nn.Linear(w, self.p * self.p * self.c_out)
        self.conv_out = nn.Conv2d(self.c_out, self.c_out, 3, padding=1)

    def forward(self, zq):
        b, n, w = zq.shape[0], self.g * self.g, self.embed.out_features
        latents = self.embed(zq.transpose(1, 2)) + self.latent_pos_embedding
        prefix = torch.cat([self.class_token, self.mask_token.expand(1, n, w)], 1) + self.pos_embedding
        x = self.pre_norm(torch.cat([prefix.expand(b, -1, -1), latents], 1))
        for layer in self.layers:
            x = layer(x)
        x = self.to_pixels(self.norm(x[:, 1:1 + n]))
        g, p, c = self.g, self.p, self.c_out
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)
        return self.conv_out(x)


class TwinTiTokQuantizer(nn.Module):
    """1d-tokenizer's VectorQuantizer (use_l2_norm): forward(z (B, D, H, W)) -> (zq, indices (B, H, W), loss)."""

    def __init__(self, codebook_size, token_size, commitment_cost=0.25, use_l2_norm=True):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, token_size)
        self.commitment_cost, self.use_l2_norm = commitment_cost, use_l2_norm

    def codebook(self):
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.use_l2_norm else w

    def forward(self, z):
        b, d, h, w = z.shape
        x = z.reshape(b, d, h * w).transpose(1, 2).reshape(-1, d)
        if self.use_l2_norm:
            x = F.normalize(x, dim=-1)
        book = self.codebook()
        with torch.no_grad():
            dist = (x * x).sum(1, keepdim=True) + (book * book).sum(1) - 2.0 * x @ book.t()
            idx = dist.argmin(1)
        q = F.embedding(idx, book)
        loss = self.commitment_cost * F.mse_loss(q.detach(), x) + F.mse_loss(q, x.detach())
        out = x + (q - x).detach()
        return out.reshape(b, h * w, d).transpose(1, 2).reshape(b, d, h, w), idx.reshape(b, h, w), loss


class TwinTiTok(_TwinTokenizer):
    """Twin of mmu.models.titok.TiTok (perceptual_weight must be 0: LPIPS is not mirrored). forward(x, step) ->
    (recon, loss, losses); discriminator_loss(x, recon, step) with the LeCam EMAs in the buffer lecam_ema."""

    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = cfg
        if c.perceptual_weight > 0:
            raise ValueError("TwinTiTok: LPIPS is not mirrored; use perceptual_weight=0")
        self.encoder = TwinTiTokEncoder(c)
        self.quantize = TwinTiTokQuantizer(c.codebook_size, c.token_size, c.commitment_cost, c.use_l2_norm)
        self.decoder = TwinTiTokDecoder(c)
        if c.use_discriminator:
            self.discriminator = TwinNLayerDiscriminator(c.in_channels, c.disc_ndf, c.disc_layers, c.disc_norm)
            if c.lecam_weight > 0:
                self.register_buffer("lecam_ema", torch.zeros(2))

    def _encode_latent(self, x):
        return self.encoder(x).unsqueeze(2)  # (B, D, 1, K): the quantizer's map

    def _decode_latent(self, zq):
        return self.decoder(zq.flatten(2))

    @torch.no_grad()
    def decode(self, codes):
        """codes (B, K) int64 -> images (eval, no_grad)."""
        was = self.training
        self.eval()
        try:
            return self.decoder(F.embedding(codes, self.quantize.codebook()).transpose(1, 2).contiguous())
        finally:
            self.train(was)

    def _factor(self, step):
        return self.cfg.disc_factor if step >= self.cfg.disc_start else 0.0

    def forward(self, x, step=0, noise=None):
        c = self.cfg
        zq, codes, qloss = self.quantize(self._encode_latent(x))
        recon = self._decode_latent(zq)
        rec = F.mse_loss(recon, x) if c.reconstruction_loss == "l2" else F.l1_loss(recon, x)
        loss = rec * c.reconstruction_weight + qloss * c.quantizer_weight
        losses = {"rec": rec.item(), "quant": qloss.item()}
        factor = self._factor(step)
        if self.discriminator is not None and self.training and torch.is_grad_enabled() and factor > 0 \
                and c.disc_weight > 0:
            g_loss = -self.discriminator(recon).mean()
            loss = loss + g_loss * (c.disc_weight * factor)
            losses["g_adv"] = g_loss.item()
        return recon, loss, losses

    def discriminator_loss(self, x, recon, step=0):
        c = self.cfg
        lr, lf = self.discriminator(x.detach()), self.discriminator(recon.detach())
        d = 0.5 * (F.relu(1.0 - lr).mean() + F.relu(1.0 + lf).mean()) * self._factor(step)
        if c.lecam_weight > 0:
            mr, mf = lr.mean(), lf.mean()
            ema = self.lecam_ema
            d = d + c.lecam_weight * (F.relu(mr - ema[1]).pow(2) + F.relu(ema[0] - mf).pow(2))
            if self.training:
                with torch.no_grad():
                    self.lecam_ema.copy_(ema * c.lecam_decay + torch.stack([mr, mf]).detach() * (1 - c.lecam_decay))
        return d


def titok_twin(model):
    """TwinTiTok of an mmu TiTok with its parameters and buffers copied in, in the same train/eval mode."""
    twin = TwinTiTok(model.config)
    twin.load_mmu_state(model.state_dict())
    twin.train(model.training)
    return twin
