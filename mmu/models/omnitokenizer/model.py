"""OmniTokenizer (Wang et al. 2024, "OmniTokenizer: A Joint Image-Video Tokenizer for Visual Generation"),
following FoundationVision/OmniTokenizer's code: OmniTokenizer/omnitokenizer.py (OmniTokenizer_Encoder,
OmniTokenizer_Decoder, VQGAN.forward's loss), modules/attention.py (Transformer, Attention, WindowAttention,
PEG, FeedForward), modules/codebook.py (Codebook). See OmniTokenizerConfig for the fields.

Layout inside the model: tokens (B, t, L, D) frame-major, L = h * w patches of a frame in row-major order.
The spatial blocks attend within each frame ((B * t) sequences of L tokens; 'w' blocks within each
window_size x window_size window, F.window_attention), the temporal blocks across the frames of each
location (F.temporal_attention on the frame-major tokens: no permute to (B * L, t, D) for attention).
"""
import warnings

import numpy as np

import mmu as _mmu
from ... import functional as F
from ...losses.lpips import PerceptualLPIPS
from ...nn import Conv3d, LayerNorm, Linear, Module, ModuleList, Parameter, init
from ...tensor import Tensor
from ...tokenizers.base import Tokenizer, TokenizerOutput, _as_images
from ...quantizers import VectorQuantize
from .config import OmniTokenizerConfig

__all__ = ["OmniTokenizer", "OmniTokenizerEncoder", "OmniTokenizerDecoder", "OmniTransformer",
           "relative_position_index"]


class GammaLayerNorm(Module):
    """attention.LayerNorm: LayerNorm with a learnable gain `gamma` and a bias buffer `beta` fixed at 0."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.gamma = Parameter(_mmu.ones(dim))
        self.register_buffer("beta", _mmu.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, (self.dim,), self.gamma, self.beta)


class FeedForward(Module):
    """attention.FeedForward: LayerNorm -> Linear(dim, 2 * inner, no bias) -> GEGLU (x * gelu(gate), x the
    first half) -> Linear(inner, dim, no bias), inner = int(ff_mult * 2/3 * dim)."""

    def __init__(self, dim, inner):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.proj_in = Linear(dim, 2 * inner, bias=False)
        self.proj_out = Linear(inner, dim, bias=False)

    def forward(self, x):
        # the two halves of proj_in as two products (GEGLU's x, gate): no copies of a chunked activation
        x = self.norm(x)
        w, n = self.proj_in.weight, self.proj_in.weight.shape[0] // 2
        return self.proj_out(F.linear(x, w[:n]) * F.gelu(F.linear(x, w[n:])))


def _depthwise_conv3d(x, weight, bias, grid, causal):
    """x (B, t, L, D) channel-last -> the depthwise 3x3x3 conv of the (B, D, t, h, w) volume with zero padding 1
    in space and (2, 0) in time when causal (else (1, 1)), back as (B, t, L, D). One conv3d (conv.c's direct
    depthwise 3-D kernel), the causal time padding given to it as a left / right pair, so no padded copy of the
    volume is made."""
    B, T, L, D = x.shape
    gh, gw = grid
    v = x.permute(0, 3, 1, 2).reshape(B, D, T, gh, gw)
    pad_l, pad_r = ((2, 1, 1), (0, 1, 1)) if causal else ((1, 1, 1), (1, 1, 1))
    y = _mmu._C.conv(3, v, weight, bias, (1, 1, 1), pad_l, pad_r, (1, 1, 1), D)
    return y.reshape(B, D, T, L).permute(0, 2, 3, 1)


class PEG(Module):
    """attention.PEG: a depthwise Conv3d(dim, dim, 3, groups=dim) over (t, h, w) added by the block as a
    position encoding; causal pads time by (2, 0)."""

    def __init__(self, dim, causal):
        super().__init__()
        self.causal = bool(causal)
        self.dsconv = Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x, grid, scrambled=False):
        """x (B, t, L, D) -> (B, t, L, D). scrambled: the temporal transformer's published reshape, which
        views its (b h w, t, d) tokens, i.e. (B, L, t, D) in memory, as (B, t, h, w, D)."""
        B, T, L, D = x.shape
        if scrambled:
            x = x.permute(0, 2, 1, 3).contiguous().reshape(B, T, L, D)      # (B, L, t, D) memory seen as (B, t, L, D)
        y = _depthwise_conv3d(x, self.dsconv.weight, self.dsconv.bias, grid, self.causal)
        if scrambled:
            return y.reshape(B, L, T, D).permute(0, 2, 1, 3)
        return y


def _rope_2d_tables(n, head_dim):
    """precompute_freqs_cis_2d(head_dim, n) as (cos, sin) (n, head_dim) for interleaved pairs: pair j = 2i
    rotates by x * f_i, pair 2i + 1 by y * f_i, f_i = 10000^(-4i / head_dim), x = n % side, y = n // side,
    side = int(sqrt(n)); both entries of a pair carry the pair's angle."""
    side = int(n ** 0.5)
    pos = np.arange(n)
    freqs = 1.0 / (10000.0 ** (np.arange(0, head_dim, 4)[: head_dim // 4].astype(np.float32) / head_dim))
    ang = np.stack([np.outer(pos % side, freqs), np.outer(pos // side, freqs)], -1).reshape(n, head_dim // 2)
    ang = np.repeat(ang.astype(np.float32), 2, axis=1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _pair_rotation(head_dim):
    """R (head_dim, head_dim) with (x @ R)[2j] = -x[2j + 1], (x @ R)[2j + 1] = x[2j]."""
    r = np.zeros((head_dim, head_dim), np.float32)
    for j in range(head_dim // 2):
        r[2 * j + 1, 2 * j] = -1.0
        r[2 * j, 2 * j + 1] = 1.0
    return r


class FullAttention(Module):
    """attention.Attention as the OmniTokenizer transformer uses it (no context, no null kv, torch >= 2.1's
    SDPA path): q = to_q(norm(x)); k, v = to_kv(x) (of x before the norm, as the code's kv_input); with
    spatial_pos 'rope' q and k get the 2-D rotary of their frame; q and k are l2-normalised per head and
    scaled by q_scale / k_scale; softmax(q k^T * 8) v, causal over frames in the temporal transformer; to_out."""

    def __init__(self, dim, dim_head, heads, causal=False, rope=False):
        super().__init__()
        self.heads, self.dim_head, self.causal, self.rope = heads, dim_head, bool(causal), bool(rope)
        inner = dim_head * heads
        self.norm = GammaLayerNorm(dim)
        self.to_q = Linear(dim, inner, bias=False)
        self.to_kv = Linear(dim, 2 * inner, bias=False)
        self.q_scale = Parameter(_mmu.ones(dim_head))
        self.k_scale = Parameter(_mmu.ones(dim_head))
        self.to_out = Linear(inner, dim, bias=False)
        self.__dict__["_rope_cache"] = {}

    def _rotary(self, t, n):
        cache = self.__dict__["_rope_cache"]
        if n not in cache:
            cos, sin = _rope_2d_tables(n, self.dim_head)
            cache[n] = (_mmu.tensor(cos[:, None]), _mmu.tensor(sin[:, None]),
                        _mmu.tensor(_pair_rotation(self.dim_head)))
        cos, sin, rot = cache[n]
        return t * cos + (t @ rot) * sin          # t (S, n, H, dh); cos / sin (n, 1, dh)

    def forward(self, x, spatial):
        """x (B, t, L, D); spatial: attention within each frame (else across the frames of a location)."""
        B, T, L, D = x.shape
        H, dh = self.heads, self.dim_head
        q = self.to_q(self.norm(x))
        w, n = self.to_kv.weight, self.to_kv.weight.shape[0] // 2
        k, v = F.linear(x, w[:n]), F.linear(x, w[n:])            # to_kv(x).chunk(2, -1) without the copies
        if spatial:
            q, k, v = (u.reshape(B * T, L, H, dh) for u in (q, k, v))
            if self.rope:
                q, k = self._rotary(q, L), self._rotary(k, L)
            q, k, v = (u.transpose(1, 2) for u in (q, k, v))                 # (B t, H, L, dh)
        else:
            q, k, v = (u.reshape(B, T, L, H, dh).permute(0, 3, 1, 2, 4).reshape(B, H, T * L, dh)
                       for u in (q, k, v))                                   # (B, H, t L, dh) frame-major
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        if spatial:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=8.0)
            o = o.transpose(1, 2).reshape(B, T, L, H * dh)
        else:
            o = F.temporal_attention(q, k, v, T, causal=self.causal, scale=8.0)
            o = o.reshape(B, H, T, L, dh).permute(0, 2, 3, 1, 4).reshape(B, T, L, H * dh)
        return self.to_out(o)


def relative_position_index(window):
    """Swin's relative_position_index (window^2, window^2) int64 of a window x window window: the row of
    relative_position_bias_table for each (query, key) pair, (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    c = np.stack([ys.reshape(-1), xs.reshape(-1)])
    rel = (c[:, :, None] - c[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).astype(np.int64)


class WindowAttention(Module):
    """attention.WindowAttention: norm -> qkv (Linear dim -> 3 dim, no bias) -> heads of dim / heads
    channels attending within non-overlapping window x window windows (no shift), scores scaled by
    (dim / heads)^-0.5 plus the relative position bias table (2w-1)^2 x heads gathered by
    relative_position_index -> proj (Linear with bias)."""

    def __init__(self, dim, window, heads):
        super().__init__()
        self.dim, self.window, self.heads = dim, window, heads
        self.norm = GammaLayerNorm(dim)
        self.relative_position_bias_table = Parameter(_mmu.zeros((2 * window - 1) ** 2, heads))
        init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.__dict__["_index"] = _mmu.tensor(relative_position_index(window).reshape(-1))
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim)

    def position_bias(self):
        """The table gathered into (heads, window^2, window^2) (differentiable)."""
        n = self.window * self.window
        return F.embedding(self.__dict__["_index"], self.relative_position_bias_table) \
            .reshape(n, n, self.heads).permute(2, 0, 1)

    def forward(self, x, grid):
        B, T, L, D = x.shape
        H = self.heads
        hd = D // H
        qkv = self.qkv(self.norm(x)).reshape(B * T, L, 3, H, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                     # (B t, H, L, hd)
        o = F.window_attention(q, k, v, grid, (self.window, self.window), bias=self.position_bias(),
                               scale=hd ** -0.5)
        return self.proj(o.transpose(1, 2).reshape(B, T, L, D))


class FullBlock(Module):
    """A 't' block: x += PEG(x); x += attention(x); x += ff(x)."""

    def __init__(self, c, causal):
        super().__init__()
        self.peg = PEG(c.dim, c.causal_in_peg)
        self.attn = FullAttention(c.dim, c.dim_head, c.heads, causal=causal, rope=False)
        self.ff = FeedForward(c.dim, c.ff_inner_dim)

    def forward(self, x, grid, spatial, scrambled_peg):
        x = self.peg(x, grid, scrambled=scrambled_peg) + x
        x = self.attn(x, spatial) + x
        return self.ff(x) + x


class WindowBlock(Module):
    """A 'w' block: x += window_attention(x); x += ff(x) (no PEG)."""

    def __init__(self, c):
        super().__init__()
        self.attn = WindowAttention(c.dim, c.window_size, c.heads)
        self.ff = FeedForward(c.dim, c.ff_inner_dim)

    def forward(self, x, grid, spatial, scrambled_peg):
        x = self.attn(x, grid) + x
        return self.ff(x) + x


class OmniTransformer(Module):
    """attention.Transformer: blocks by pattern ('t' full, 'w' window), then norm_out. spatial: the
    attention runs within frames (the spatial transformers) or across frames (the temporal ones, which
    are all 't', causal when causal_in_temporal_transformer, and rotary-free)."""

    def __init__(self, c, pattern, spatial):
        super().__init__()
        self.pattern, self.spatial = pattern, bool(spatial)
        causal = (not spatial) and c.causal_in_temporal_transformer
        layers = []
        for b in pattern:
            if b == "t":
                blk = FullBlock(c, causal)
                blk.attn.rope = spatial and c.spatial_pos == "rope"
            else:
                blk = WindowBlock(c)
            layers.append(blk)
        self.layers = ModuleList(layers)
        self.norm_out = GammaLayerNorm(c.dim)
        self.__dict__["_scrambled"] = (not spatial) and c.temporal_peg_layout == "published"

    def forward(self, x, grid):
        for blk in self.layers:
            x = blk(x, grid, self.spatial, self.__dict__["_scrambled"])
        return self.norm_out(x)


class PatchEmbed(Module):
    """to_patch_emb(_first_frame): LayerNorm(c pt p p) -> Linear -> LayerNorm(dim) of each patch / tube."""

    def __init__(self, n_in, dim):
        super().__init__()
        self.norm_in = LayerNorm(n_in)
        self.proj = Linear(n_in, dim)
        self.norm_out = LayerNorm(dim)

    def forward(self, x):
        return self.norm_out(self.proj(self.norm_in(x)))


def patchify(x, pt, p):
    """x (B, C, t * pt, H, W) -> (B, t, (H/p) (W/p), C pt p p), einops 'b c (t pt) (h p1) (w p2) -> b t (h w)
    (c pt p1 p2)'."""
    B, C, T, H, W = x.shape
    t, h, w = T // pt, H // p, W // p
    y = x.reshape(B * C * t, pt, h, p, w, p).permute(0, 2, 4, 1, 3, 5)      # (B C t, h, w, pt, p, p)
    y = y.reshape(B, C, t, h * w, pt * p * p).permute(0, 2, 3, 1, 4)         # (B, t, hw, C, pt p p)
    return y.reshape(B, t, h * w, C * pt * p * p)


def unpatchify(y, C, pt, p, grid):
    """The inverse of patchify: (B, t, h w, C pt p p) -> (B, C, t * pt, h p, w p)."""
    B, t, L, _ = y.shape
    h, w = grid
    y = y.reshape(B, t, L, C, pt * p * p).permute(0, 3, 1, 2, 4)             # (B, C, t, hw, pt p p)
    y = y.reshape(B * C * t, h, w, pt, p, p).permute(0, 3, 1, 4, 2, 5)       # (B C t, pt, h, p, w, p)
    return y.reshape(B, C, t * pt, h * p, w * p)


def _init_vit(module):
    """initialize_vit (the script's --initialize_vit): Linear weights trunc_normal(0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, Linear):
            init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                init.zeros_(m.bias)


class OmniTokenizerEncoder(Module):
    """OmniTokenizer_Encoder (patch_embed 'linear'): first frame / tubes -> patch embeddings -> spatial
    transformer (enc_block) -> temporal transformer -> (B, t, L, dim)."""

    def __init__(self, c):
        super().__init__()
        self.patch_size, self.temporal_patch_size = c.patch_size, c.temporal_patch_size
        n = c.in_channels * c.patch_size ** 2
        self.first_frame_embed = PatchEmbed(n, c.dim)
        self.tube_embed = PatchEmbed(n * c.temporal_patch_size, c.dim)
        self.spatial = OmniTransformer(c, c.enc_block, spatial=True)
        self.temporal = OmniTransformer(c, "t" * c.temporal_depth, spatial=False)
        _init_vit(self)

    def forward(self, x):
        """x (B, C, T, H, W), T = 1 + k * temporal_patch_size -> tokens (B, 1 + k, (H/p)(W/p), dim)."""
        p = self.patch_size
        grid = (x.shape[3] // p, x.shape[4] // p)
        tokens = self.first_frame_embed(patchify(x[:, :, :1], 1, p))
        if x.shape[2] > 1:
            rest = self.tube_embed(patchify(x[:, :, 1:], self.temporal_patch_size, p))
            tokens = _mmu.cat([tokens, rest], 1)
        tokens = self.spatial(tokens, grid)
        return self.temporal(tokens, grid)


class OmniTokenizerDecoder(Module):
    """OmniTokenizer_Decoder (patch_embed 'linear'): temporal transformer -> spatial transformer (dec_block)
    -> Linear to the pixels of the first frame / of each tube."""

    def __init__(self, c):
        super().__init__()
        self.in_channels, self.patch_size, self.temporal_patch_size = c.in_channels, c.patch_size, c.temporal_patch_size
        n = c.in_channels * c.patch_size ** 2
        self.temporal = OmniTransformer(c, "t" * c.temporal_depth, spatial=False)
        self.spatial = OmniTransformer(c, c.dec_block, spatial=True)
        self.to_pixels_first_frame = Linear(c.dim, n)
        self.to_pixels = Linear(c.dim, n * c.temporal_patch_size)
        _init_vit(self)

    @property
    def last_layer(self):
        """The first frame's output Linear weight (the layer every image's pixels come from)."""
        return self.to_pixels_first_frame.weight

    def forward(self, tokens, grid):
        """tokens (B, t, L, dim) -> (B, C, 1 + (t - 1) * temporal_patch_size, h p, w p)."""
        tokens = self.spatial(self.temporal(tokens, grid), grid)
        C, p = self.in_channels, self.patch_size
        out = unpatchify(self.to_pixels_first_frame(tokens[:, :1]), C, 1, p, grid)
        if tokens.shape[1] > 1:
            rest = unpatchify(self.to_pixels(tokens[:, 1:]), C, self.temporal_patch_size, p, grid)
            out = _mmu.cat([out, rest], 2)
        return out


def _tile_and_pick(flat, n_codes):
    """Codebook._tile then a random pick of n_codes rows: flat (M, d) numpy; when M < n_codes the rows are
    repeated ceil(n_codes / M) times plus N(0, (0.01 / sqrt(d))^2) noise; then a random permutation's first
    n_codes rows (mmu's seeded RNG)."""
    M, d = flat.shape
    y = flat.astype(np.float32)
    if M < n_codes:
        reps = (n_codes + M - 1) // M
        y = np.tile(y, (reps, 1))
        y = y + _mmu.randn(*y.shape).numpy() * np.float32(0.01 / np.sqrt(d))
    perm = np.argsort(_mmu.rand(y.shape[0]).numpy(), kind="stable")
    return np.ascontiguousarray(y[perm[:n_codes]], np.float32)


class OmniTokenizer(PerceptualLPIPS, Tokenizer):
    """OmniTokenizer: one transformer tokenizer for images and videos (3-D latent layout).

    encode(clips (B, C, T, H, W), T = 1 + k * temporal_patch_size) -> codes (B, 1 + k, H/p, W/p); decode
    back. An image is a one-frame clip: forward (training) also takes images (B, C, H, W) and returns
    reconstructions of the same shape, so image and video batches can alternate (joint training).
    Modules: encoder (OmniTokenizerEncoder), pre_quant (Linear dim -> codebook_dim, the code's
    pre_vq_conv), quantize (mmu VectorQuantize as an EMA codebook with Codebook's decay, eps and
    commitment; codes initialised from the first training batch as Codebook._init_embeddings, the
    buffer codebook_initted records it), post_quant (post_vq_conv), decoder (OmniTokenizerDecoder).
    convert.py loads the published checkpoint layout."""

    config_class = OmniTokenizerConfig
    latent_layout = "3d"

    def _build_model(self):
        c = self.config.validate()
        if "w" in c.enc_block + c.dec_block and c.dim % c.heads:
            raise ValueError(f"OmniTokenizer: window attention splits dim {c.dim} into heads {c.heads}: "
                             "dim must be a multiple of heads")
        self.encoder = OmniTokenizerEncoder(c)
        self.pre_quant = Linear(c.dim, c.codebook_dim)
        self.quantize = VectorQuantize(c.codebook_dim, c.codebook_size, decay=c.decay, eps=c.eps,
                                       commitment_weight=c.commitment_weight, accept_image_fmap=True)
        self.register_buffer("codebook_initted", _mmu.zeros(1))
        self.post_quant = Linear(c.codebook_dim, c.dim)
        self.decoder = OmniTokenizerDecoder(c)

    # ------------------------------------------------------------------ layout
    @property
    def downsample_factor(self):
        """Pixels per code along each side: patch_size."""
        return self.config.patch_size

    @property
    def temporal_downsample_factor(self):
        """Frames per latent frame after the first (the first frame is a latent frame of its own)."""
        return self.config.temporal_patch_size

    @property
    def latent_shape(self):
        """(t, h, w) of a config.num_frames clip at config.resolution: t = 1 + (num_frames - 1) / pt."""
        c = self.config
        r = c.resolution // c.patch_size
        return (1 + (c.num_frames - 1) // c.temporal_patch_size, r, r)

    def latent_frames(self, num_frames):
        """Latent frames of a clip of num_frames frames (1 + (num_frames - 1) / temporal_patch_size)."""
        return 1 + (int(num_frames) - 1) // self.config.temporal_patch_size

    def _check_images(self, images, op, allow_images=False):
        x = _as_images(images, op)
        c = self.config
        if allow_images and x.ndim == 4:
            x = x.reshape(x.shape[0], x.shape[1], 1, x.shape[2], x.shape[3])
        if x.ndim != 5:
            raise ValueError(f"{op}: clips must be (B, C, T, H, W)"
                             + (" or images (B, C, H, W)" if allow_images else "")
                             + f", got shape {tuple(x.shape)}")
        B, C, T, H, W = x.shape
        pt, p = c.temporal_patch_size, c.patch_size
        if T < 1 or (T - 1) % pt:
            raise ValueError(f"{op}: the number of frames must be 1 + a multiple of temporal_patch_size {pt} "
                             f"(the first frame alone, then tubes), got {T} (shape {tuple(x.shape)})")
        if C != c.in_channels:
            raise ValueError(f"{op}: expected {c.in_channels} channels, got shape {tuple(x.shape)}")
        if B == 0:
            raise ValueError(f"{op}: empty batch (shape {tuple(x.shape)})")
        if H == 0 or H % p or W % p or H != W:
            raise ValueError(f"{op}: frames must be square with a side that is a positive multiple of patch_size "
                             f"{p}, got {H}x{W}")
        g = H // p
        if "w" in c.enc_block + c.dec_block and g % c.window_size:
            raise ValueError(f"{op}: the patch grid {g}x{g} must be a multiple of window_size {c.window_size}, "
                             f"got {H}x{W} frames")
        v = x.detach().numpy()
        if not np.isfinite(v).all():
            raise ValueError(f"{op}: clips contain NaN or inf")
        if v.min() < -1.05 or v.max() > 1.05:
            warnings.warn(f"{op}: clips should lie in [-1, 1], got values in [{v.min():.3g}, {v.max():.3g}] "
                          "(scale uint8 frames by x / 127.5 - 1)", stacklevel=3)
        return x

    def _check_codes(self, codes, op):
        t = super()._check_codes(codes, op)
        c = self.config
        if t.shape[2] != t.shape[3]:
            raise ValueError(f"{op}: codes must be (B, t, h, w) with h == w, got shape {tuple(t.shape)}")
        if "w" in c.enc_block + c.dec_block and t.shape[2] % c.window_size:
            raise ValueError(f"{op}: the code grid {t.shape[2]}x{t.shape[3]} must be a multiple of window_size "
                             f"{c.window_size}")
        return t

    # ------------------------------------------------------------------ the pieces
    def _encode_latent(self, x):
        """x (B, C, T, H, W) -> z (B, codebook_dim, t, h, w), l2-normalised over channels when l2_code."""
        B, _, _, H, W = x.shape
        p = self.config.patch_size
        tokens = self.encoder(x)
        z = self.pre_quant(tokens)                                           # (B, t, L, cd)
        if self.config.l2_code:
            z = F.normalize(z, dim=-1)
        t = z.shape[1]
        return z.permute(0, 3, 1, 2).reshape(B, z.shape[3], t, H // p, W // p)

    def _decode_latent(self, zq):
        """zq (B, codebook_dim, t, h, w) -> clips (B, C, 1 + (t - 1) * pt, h p, w p)."""
        B, cd, t, h, w = zq.shape
        tokens = self.post_quant(zq.reshape(B, cd, t, h * w).permute(0, 2, 3, 1))
        return self.decoder(tokens, (h, w))

    def _quantize(self, z, **kw):
        q = self.quantize
        update = q.training and not q.freeze_codebook
        if update and float(self.codebook_initted.numpy()[0]) == 0.0:
            # Codebook._init_embeddings: the codes, their EMA sums and counts (1 each) from this batch
            flat = z.detach().numpy().transpose(0, 2, 3, 4, 1).reshape(-1, z.shape[1])
            pick = _tile_and_pick(flat, q.codebook_size)[None]
            q._set_buffers(embed=pick, embed_avg=pick, cluster_size=np.ones((1, q.codebook_size), np.float32))
            self.codebook_initted.fill_(1.0)
        out = super()._quantize(z, **kw)
        if update and not self.config.no_random_restart:
            # Codebook.forward's restart: codes whose EMA count is below restart_thres take a random row of
            # the (tiled) batch; their EMA sums and counts are left as they are
            flat = z.detach().numpy().transpose(0, 2, 3, 4, 1).reshape(-1, z.shape[1])
            pick = _tile_and_pick(flat, q.codebook_size)
            used = (q.cluster_size.numpy()[0] >= self.config.restart_thres)[:, None]
            q._set_buffers(embed=np.where(used, q.embed.numpy()[0], pick)[None])
        return out

    # ------------------------------------------------------------------ training
    def _frames_for_perceptual(self, x, recon):
        """VQGAN.forward's frames: one random frame per clip (all frames with apply_allframes) ->
        (frames, reconstructed frames) (N, C, H, W)."""
        B, C, T, H, W = x.shape
        xs = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        rs = recon.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        if T == 1 or self.config.apply_allframes:
            return xs, rs
        pick = np.minimum((_mmu.rand(B).numpy() * T).astype(np.int64), T - 1) + np.arange(B) * T
        idx = _mmu.tensor(pick.astype(np.int64))
        return xs.index_select(0, idx), rs.index_select(0, idx)

    def forward(self, images, step=0):
        """images: clips (B, C, T, H, W) or images (B, C, H, W) (one-frame clips) -> TokenizerOutput with
        recon of the input's shape and loss = l1_weight * L1 + perceptual_weight * LPIPS(frames) + the
        commitment loss (VQGAN.forward without its GAN terms); losses "rec", "quant", "perceptual"."""
        op = "OmniTokenizer.forward"
        self._step(step)
        image_input = (images.ndim if isinstance(images, Tensor) else np.ndim(images)) == 4
        x = self._check_images(images, op, allow_images=True)
        c = self.config
        zq, codes, qloss, stats = self._quantize(self._encode_latent(x))
        recon = self._decode_latent(zq)
        rec = F.l1_loss(recon, x)
        loss = rec * c.l1_weight + qloss
        losses = {"rec": float(rec.item()), "quant": float(qloss.item())}
        lp = self.lpips()
        if lp is not None:
            fx, fr = self._frames_for_perceptual(x, recon)
            if fx.shape[1] == 1:
                fx, fr = _mmu.cat([fx] * 3, 1), _mmu.cat([fr] * 3, 1)
            perc = lp(fx, fr).mean()
            losses["perceptual"] = float(perc.item())
            loss = loss + perc * c.perceptual_weight
        if image_input:
            recon = recon.reshape(recon.shape[0], recon.shape[1], recon.shape[3], recon.shape[4])
        return TokenizerOutput(recon=recon, loss=loss, losses=losses, codes=codes, stats=stats)
