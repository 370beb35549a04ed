"""The PatchGAN discriminator of taming-transformers (Esser et al. 2021, "Taming Transformers for
High-Resolution Image Synthesis", taming/modules/discriminator/model.py — itself pix2pix's
NLayerDiscriminator, Isola et al. 2017) and its `weights_init`.

Layout (conv4x4 stride 2 with 64 channels and LeakyReLU 0.2, then ndf·min(2^n, 8) channels with a norm
and LeakyReLU, a stride-1 conv4x4, and a conv to 1 channel), all convs 4x4 with padding 1:
    conv(input_nc -> ndf, stride 2) + LeakyReLU(0.2)
    for n in 1 .. n_layers-1: conv(ndf·min(2^(n-1), 8) -> ndf·min(2^n, 8), stride 2) + norm + LeakyReLU(0.2)
    conv(ndf·min(2^(n_layers-1), 8) -> ndf·min(2^n_layers, 8), stride 1) + norm + LeakyReLU(0.2)
    conv(-> 1, stride 1): a (B, 1, h, w) map of logits, one per overlapping patch
in one Sequential `main`, so the state_dict keys are taming's (`main.0.weight`, `main.0.bias`,
`main.2.weight`, `main.3.running_mean`, ...). At 256x256 with the defaults the map is 30x30 (each
logit sees a 70x70 patch); at 64x64 it is 6x6.
"""
import math

from ..nn import ActNorm, BatchNorm2d, Conv2d, GroupNorm, Identity, LeakyReLU, Module, Sequential, init
from ..nn.norm import _BatchNorm
from ..tensor import _as_tensor
from .._limits import MAX_WIDTH, check_at_most, check_elements

__all__ = ["NLayerDiscriminator", "weights_init"]

# stride-2 layers: 16 already needs inputs of 3 * 2**16 = 196,608 px a side (taming uses 3)
MAX_LAYERS = 16

_NORMS = ("batch", "actnorm", "group", "none")


def weights_init(m):
    """taming's weights_init, for Module.apply: conv weights N(0, 0.02); batch-norm (and group-norm)
    weights N(1, 0.02) and biases 0 (pix2pix / DCGAN init). Conv biases keep their default init and
    ActNorm keeps its own (it initialises itself from the first batch), as in taming. Draws from mmu's
    seeded RNG (mmu.manual_seed)."""
    if isinstance(m, Conv2d):
        init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (_BatchNorm, GroupNorm)) and m.weight is not None:
        init.normal_(m.weight, 1.0, 0.02)
        if m.bias is not None:
            init.constant_(m.bias, 0.0)


def _norm_layer(norm, channels):
    if norm == "batch":
        return BatchNorm2d(channels)
    if norm == "actnorm":
        return ActNorm(channels)
    if norm == "group":
        # 32 groups as taming's Normalize (GroupNorm(32, C, eps=1e-6)); fewer when C is not a multiple of 32
        return GroupNorm(math.gcd(32, channels), channels, eps=1e-6, affine=True)
    return Identity()


class NLayerDiscriminator(Module):
    """PatchGAN discriminator: forward(x (B, input_nc, H, W)) -> logits (B, 1, h, w).

    input_nc=3, ndf=64, n_layers=3 are taming's defaults (taming/modules/discriminator/model.py;
    VQGAN's config uses disc_in_channels 3, disc_num_layers 3, disc_ndf 64).
    norm: "batch" (taming's default, BatchNorm2d), "actnorm" (taming's use_actnorm=True), "group"
    (GroupNorm with min(32, ...) groups: gcd(32, channels), eps 1e-6 as taming's Normalize), or "none"
    (an Identity in the norm's slot, so the layer indices — and state_dict keys — stay taming's).
    Conv biases follow taming's rule `use_bias = norm_layer != BatchNorm2d`: the convs before a
    norm have no bias with "batch" (and "group", whose shift makes it redundant too) and have one
    with "actnorm" and "none"; the first and last convs always have a bias.
    weights_init is applied at construction (mmu's seeded RNG).
    Limits (ValueError before any layer is built): n_layers <= 16, input_nc and ndf <= 2**20, every
    conv weight <= 2**28 float32 elements (1 GiB: ndf <= 724 at n_layers = 3, 512 from 4 on)."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="batch"):
        super().__init__()
        for name, v, lo in (("input_nc", input_nc, 1), ("ndf", ndf, 1), ("n_layers", n_layers, 1)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"NLayerDiscriminator: {name} must be an int, got {type(v).__name__}")
            if v < lo:
                raise ValueError(f"NLayerDiscriminator: {name} must be >= {lo}, got {v}")
        if not isinstance(norm, str) or norm not in _NORMS:
            raise ValueError(f"NLayerDiscriminator: norm must be one of {_NORMS}, got {norm!r}")
        # sizes before any layer is built (mmu._limits): every stride-2 layer halves the input, so n_layers
        # beyond MAX_LAYERS needs inputs of millions of pixels per side; the widest conv is
        # (ndf * min(2^n_layers, 8), ndf * min(2^(n_layers-1), 8), 4, 4)
        op = "NLayerDiscriminator"
        check_at_most(op, "n_layers", n_layers, MAX_LAYERS, f" (inputs must be >= 3 * 2**n_layers px a side)")
        check_at_most(op, "input_nc", input_nc, MAX_WIDTH)
        check_at_most(op, "ndf", ndf, MAX_WIDTH)
        widths = [input_nc] + [ndf * min(2 ** n, 8) for n in range(n_layers + 1)]
        for cin, cout in zip(widths, widths[1:]):
            check_elements(op, f"a conv weight ({cout}, {cin}, 4, 4)", cout * cin * 16)
        self.input_nc, self.ndf, self.n_layers, self.norm = input_nc, ndf, n_layers, norm
        use_bias = norm not in ("batch", "group")
        kw, padw = 4, 1
        seq = [Conv2d(input_nc, ndf, kw, stride=2, padding=padw), LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=use_bias),
                    _norm_layer(norm, ndf * mult), LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=use_bias),
                _norm_layer(norm, ndf * mult), LeakyReLU(0.2, True)]
        seq += [Conv2d(ndf * mult, 1, kw, stride=1, padding=padw)]
        self.main = Sequential(*seq)
        self.apply(weights_init)

    def forward(self, input):
        """input (B, input_nc, H, W) -> (B, 1, h, w) logits, one per overlapping patch (30x30 at 256x256
        with the defaults).
        """
        x = _as_tensor(input, "NLayerDiscriminator")
        if x.ndim != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"NLayerDiscriminator: expected input of shape (B, {self.input_nc}, H, W), got "
                             f"{tuple(x.shape)}")
        # n_layers stride-2 convs halve the size (k 4, pad 1), the two stride-1 convs take 1 each
        h, w = x.shape[2], x.shape[3]
        for _ in range(self.n_layers):
            h, w = h // 2, w // 2
        if h < 3 or w < 3:
            raise ValueError(f"NLayerDiscriminator: input {tuple(x.shape)} is too small for n_layers="
                             f"{self.n_layers} (needs H and W >= {3 * 2 ** self.n_layers})")
        return self.main(x)

    def extra_repr(self):
        return f"input_nc={self.input_nc}, ndf={self.ndf}, n_layers={self.n_layers}, norm={self.norm!r}"
