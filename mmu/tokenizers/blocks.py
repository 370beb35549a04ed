"""Building blocks of the tokenizers, plain Sequential / ModuleList structures of standard layers so a
PyTorch twin can mirror them name for name.

- VQ-VAE (van den Oord et al. 2017; DeepMind Sonnet's vqvae example): ConvEncoder / ConvDecoder with
  strided 4x4 convs and ResidualStack blocks (ReLU-3x3-ReLU-1x1).
- taming-transformers (Esser et al. 2021, taming/modules/diffusionmodules/model.py): ResnetBlock,
  AttnBlock, Downsample, Upsample, Encoder, Decoder, with taming's attribute names, so state_dict keys read
  encoder.down.0.block.0.norm1.weight ... as in taming's checkpoints.
"""
import math

from .. import functional as F
from ..nn import Conv2d, ConvTranspose2d, Dropout, GroupNorm, Module, ModuleList, ReLU, Sequential

__all__ = ["ResBlock", "ConvEncoder", "ConvDecoder", "Normalize", "ResnetBlock", "AttnBlock", "Downsample",
           "Upsample", "Encoder", "Decoder", "num_downsamples"]


def num_downsamples(factor, owner):
    """log2(factor) for a power of two factor >= 2, else a ValueError naming owner."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or factor & (factor - 1):
        raise ValueError(f"{owner}: downsample must be a power of 2 >= 2, got {factor!r}")
    return int(math.log2(factor))


# ---------------------------------------------------------------------------------------- VQ-VAE
class ResBlock(Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))) (VQ-VAE's residual block: 3x3 to res_channels, 1x1 back)."""

    def __init__(self, channels, res_channels):
        super().__init__()
        self.block = Sequential(ReLU(), Conv2d(channels, res_channels, 3, 1, 1), ReLU(),
                                Conv2d(res_channels, channels, 1))

    def forward(self, x):
        return x + self.block(x)


class ConvEncoder(Module):
    """(B, in_channels, H, W) -> (B, out_channels, H/f, W/f): log2(f) strided 4x4 convs (the first ones to
    hidden/2, the last to hidden, ReLU after each), a 3x3 conv, num_res_blocks ResBlocks, ReLU, then a 1x1
    conv to out_channels (the VQ-VAE's pre-quantization conv; omitted when out_channels is None)."""

    def __init__(self, in_channels, hidden_channels, res_channels, num_res_blocks, downsample, out_channels=None):
        super().__init__()
        n = num_downsamples(downsample, "ConvEncoder")
        layers, c = [], in_channels
        for i in range(n):
            c_out = hidden_channels if i == n - 1 else max(hidden_channels // 2, 1)
            layers += [Conv2d(c, c_out, 4, 2, 1), ReLU()]
            c = c_out
        layers.append(Conv2d(c, hidden_channels, 3, 1, 1))
        layers += [ResBlock(hidden_channels, res_channels) for _ in range(num_res_blocks)]
        layers.append(ReLU())
        if out_channels is not None:
            layers.append(Conv2d(hidden_channels, out_channels, 1))
        self.layers = Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class ConvDecoder(Module):
    """(B, in_channels, h, w) -> (B, out_channels, h*f, w*f): a 3x3 conv to hidden, num_res_blocks
    ResBlocks, ReLU, then log2(f) transposed 4x4 stride-2 convs (hidden/2 with ReLU between, the last to
    out_channels). The mirror of ConvEncoder."""

    def __init__(self, in_channels, hidden_channels, res_channels, num_res_blocks, downsample, out_channels):
        super().__init__()
        n = num_downsamples(downsample, "ConvDecoder")
        layers = [Conv2d(in_channels, hidden_channels, 3, 1, 1)]
        layers += [ResBlock(hidden_channels, res_channels) for _ in range(num_res_blocks)]
        layers.append(ReLU())
        c = hidden_channels
        for i in range(n):
            last = i == n - 1
            c_out = out_channels if last else max(hidden_channels // 2, 1)
            layers.append(ConvTranspose2d(c, c_out, 4, 2, 1))
            if not last:
                layers.append(ReLU())
            c = c_out
        self.layers = Sequential(*layers)

    @property
    def last_layer(self):
        return self.layers[len(self.layers) - 1].weight

    def forward(self, x):
        return self.layers(x)


# ---------------------------------------------------------------------------------------- taming
def _groups(channels, max_groups):
    g = max(1, min(int(max_groups), int(channels)))
    while channels % g:
        g -= 1
    return g


def Normalize(in_channels, num_groups=32):
    """taming's Normalize: GroupNorm(32, C, eps=1e-6, affine=True); with fewer than 32 channels (tiny
    models) the largest group count <= num_groups that divides C."""
    return GroupNorm(_groups(in_channels, num_groups), in_channels, eps=1e-6, affine=True)


def _norm_silu(norm, h):
    """swish(norm(h)) with norm a GroupNorm module, as one fused op (F.group_norm_silu: one pass forward,
    one backward, where norm then silu would run two each). The module keeps its parameters, so the
    state_dict is taming's; its forward (and any hook on it) is not called."""
    return F.group_norm_silu(h, norm.num_groups, norm.weight, norm.bias, norm.eps)


class ResnetBlock(Module):
    """x -> nin_shortcut(x) + conv2(dropout(swish(norm2(conv1(swish(norm1(x))))))) (taming's ResnetBlock
    without the time embedding; nin_shortcut is a 1x1 conv when in_channels != out_channels)."""

    def __init__(self, in_channels, out_channels=None, dropout=0.0, num_groups=32):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels, num_groups)
        self.conv1 = Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels, num_groups)
        self.dropout = Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x):
        h = self.conv1(_norm_silu(self.norm1, x))
        h = self.conv2(self.dropout(_norm_silu(self.norm2, h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(Module):
    """x + proj_out(attention(q, k, v)) with q, k, v 1x1 convs of norm(x): single-head self-attention over
    the H*W positions, scale C^-1/2 (taming's AttnBlock), through F.scaled_dot_product_attention."""

    def __init__(self, in_channels, num_groups=32):
        super().__init__()
        self.in_channels = in_channels
        self.norm = Normalize(in_channels, num_groups)
        self.q = Conv2d(in_channels, in_channels, 1)
        self.k = Conv2d(in_channels, in_channels, 1)
        self.v = Conv2d(in_channels, in_channels, 1)
        self.proj_out = Conv2d(in_channels, in_channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)

        def tokens(t):  # (B, C, H, W) -> (B, HW, C)
            return t.reshape(B, C, H * W).transpose(1, 2)
        a = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        a = a.transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(a)


class Downsample(Module):
    """pad (0, 1, 0, 1) (right and bottom only, taming's asymmetric padding) then a 3x3 stride-2 conv."""

    def __init__(self, in_channels):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(Module):
    """nearest x2 then a 3x3 conv (taming's Upsample with_conv=True)."""

    def __init__(self, in_channels):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(Module):
    """One resolution of Encoder/Decoder: `block` and `attn` ModuleLists (+ downsample / upsample)."""

    def __init__(self):
        super().__init__()
        self.block = ModuleList()
        self.attn = ModuleList()


class _Mid(Module):
    def __init__(self, channels, dropout, num_groups):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, num_groups)
        self.attn_1 = AttnBlock(channels, num_groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, num_groups)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


def _level_blocks(num_res_blocks, levels, extra, owner):
    """ResnetBlocks per level: an int n gives every level n + extra (taming), a list gives each level's
    count as it is (Show-o's MAGVIT-v2: [4, 3, 4, 3, 4])."""
    if isinstance(num_res_blocks, (list, tuple)):
        if len(num_res_blocks) != levels:
            raise ValueError(f"{owner}: num_res_blocks has {len(num_res_blocks)} entries for {levels} levels "
                             f"(len(ch_mult))")
        return [int(n) for n in num_res_blocks]
    return [int(num_res_blocks) + extra] * levels


class Encoder(Module):
    """taming's Encoder: conv_in, per level num_res_blocks ResnetBlocks (+ AttnBlock after each when the
    current resolution is in attn_resolutions) and a Downsample except at the last level, mid (block_1,
    attn_1, block_2), norm_out, swish, conv_out to z_channels. (B, in_channels, R, R) ->
    (B, z_channels, R / 2^(len(ch_mult)-1), ...). num_res_blocks may also be a list, one count per level."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 dropout=0.0, num_groups=32):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.level_blocks = _level_blocks(num_res_blocks, self.num_resolutions, 0, "Encoder")
        self.conv_in = Conv2d(in_channels, ch, 3, 1, 1)
        curr_res = resolution
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            level = _Level()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(self.level_blocks[i_level]):
                level.block.append(ResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, num_groups))
            if i_level != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, dropout, num_groups)
        self.norm_out = Normalize(block_in, num_groups)
        self.conv_out = Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level, level in enumerate(self.down):
            for i_block in range(self.level_blocks[i_level]):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(_norm_silu(self.norm_out, h))


class Decoder(Module):
    """taming's Decoder: conv_in from z_channels, mid, then from the lowest resolution up num_res_blocks + 1
    ResnetBlocks per level (+ AttnBlocks at attn_resolutions) and an Upsample except at level 0, norm_out,
    swish, conv_out to out_ch. `up` is indexed by level (up[0] is the full resolution), as taming's.
    num_res_blocks may also be a list: level i then has exactly num_res_blocks[i] blocks (no + 1)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, out_ch, resolution, z_channels,
                 dropout=0.0, num_groups=32):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.level_blocks = _level_blocks(num_res_blocks, self.num_resolutions, 1, "Decoder")
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in, dropout, num_groups)
        levels = []
        for i_level in reversed(range(self.num_resolutions)):
            level = _Level()
            block_out = ch * ch_mult[i_level]
            for _ in range(self.level_blocks[i_level]):
                level.block.append(ResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, num_groups))
            if i_level != 0:
                level.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, level)
        self.up = ModuleList(levels)
        self.norm_out = Normalize(block_in, num_groups)
        self.conv_out = Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for i_level in reversed(range(self.num_resolutions)):
            level = self.up[i_level]
            for i_block in range(self.level_blocks[i_level]):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        return self.conv_out(_norm_silu(self.norm_out, h))
