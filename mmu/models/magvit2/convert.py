"""Show-o's MAGVIT-v2 checkpoint (showlab/Show-o models/modeling_magvitv2.py MAGVITv2, released as
showlab/magvitv2) -> mmu.models.magvit2.MAGVIT2. The user reads the weights file they have (safetensors:
mmu.io.load_file or safetensors' load_file; a .bin: torch.load(path, map_location="cpu")) and passes the
dict; nothing is downloaded and torch is never imported.

| Show-o key | mmu MAGVIT2 key |
|---|---|
| encoder.conv_in.*, encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}.* | the same |
| encoder.down.{i}.attn.{j}.{norm,q,k,v,proj_out}.*, encoder.down.{i}.downsample.conv.* | the same |
| encoder.mid.{block_1,attn_1,block_2}.*, encoder.norm_out.*, encoder.conv_out.*, encoder.quant_conv.* | the same |
| decoder.post_quant_conv.*, decoder.conv_in.*, decoder.mid.*, decoder.up.{i}.block.{j}.* | the same |
| decoder.up.{i}.attn.{j}.*, decoder.up.{i}.upsample.conv.*, decoder.norm_out.*, decoder.conv_out.* | the same |
| quantize.embedding (2^z, z), quantize.power_vals (z,) | — (LFQ computes them; checked equal) |

quantize.embedding row c is the ±1 sign pattern of code c, most significant bit first, and power_vals is
2^(z-1) ... 1: the convention mmu.quantizers.LFQ uses, so the codes are Show-o's. A checkpoint whose
tables differ (another bit order) is refused, naming the first differing row.

The config (MAGVIT2Config fields) is read off the shapes when not given: in_channels and ch (conv_in),
the levels and their block counts and widths (encoder.down.{i}.block.{j}, decoder.up.{i}.block.{j}),
z_channels (encoder.conv_out), out_channels (decoder.conv_out), the levels with attention; only
`resolution` (which turns attention levels into attn_resolutions; 256 for the release) and
`norm_groups` (GroupNorm's 32) cannot be seen in the weights.
"""
import re

import numpy as np

from .._hf import KeyMap, checkpoint_arrays
from .config import MAGVIT2Config

__all__ = ["convert_magvit2_state_dict", "magvit2_config_from_state_dict", "load_magvit2",
           "magvit2_state_dict_shapes"]


def _resnet_shapes(out, prefix, cin, cout):
    for n, c in (("norm1", cin), ("norm2", cout)):
        out[f"{prefix}.{n}.weight"] = (c,)
        out[f"{prefix}.{n}.bias"] = (c,)
    out[f"{prefix}.conv1.weight"], out[f"{prefix}.conv1.bias"] = (cout, cin, 3, 3), (cout,)
    out[f"{prefix}.conv2.weight"], out[f"{prefix}.conv2.bias"] = (cout, cout, 3, 3), (cout,)
    if cin != cout:
        out[f"{prefix}.nin_shortcut.weight"], out[f"{prefix}.nin_shortcut.bias"] = (cout, cin, 1, 1), (cout,)


def _attn_shapes(out, prefix, c):
    out[f"{prefix}.norm.weight"], out[f"{prefix}.norm.bias"] = (c,), (c,)
    for n in ("q", "k", "v", "proj_out"):
        out[f"{prefix}.{n}.weight"], out[f"{prefix}.{n}.bias"] = (c, c, 1, 1), (c,)


def _conv_shapes(out, prefix, cout, cin, k):
    out[f"{prefix}.weight"], out[f"{prefix}.bias"] = (cout, cin, k, k), (cout,)


def _mid_shapes(out, prefix, c):
    _resnet_shapes(out, prefix + ".block_1", c, c)
    _attn_shapes(out, prefix + ".attn_1", c)
    _resnet_shapes(out, prefix + ".block_2", c, c)


def magvit2_state_dict_shapes(config):
    """{MAGVIT2 state_dict key: shape} for a MAGVIT2Config (or its fields as a dict), without building the
    model (the release's 8192-code model holds ~10^8 floats)."""
    c = _as_config(config, "magvit2_state_dict_shapes")
    out = {}
    ch, z, res = c.ch, c.z_channels, c.resolution
    out_ch = c.in_channels if c.out_channels is None else c.out_channels
    _conv_shapes(out, "encoder.conv_in", ch, c.in_channels, 3)
    mult = [1] + list(c.encoder_ch_mult)
    n_levels, curr, block_in = len(c.encoder_ch_mult), res, ch
    for i in range(n_levels):
        block_in, block_out = ch * mult[i], ch * mult[i + 1]
        for j in range(c.encoder_num_res_blocks[i]):
            _resnet_shapes(out, f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if curr in c.attn_resolutions:
                _attn_shapes(out, f"encoder.down.{i}.attn.{j}", block_in)
        if i != n_levels - 1:
            _conv_shapes(out, f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            curr //= 2
    _mid_shapes(out, "encoder.mid", block_in)
    out["encoder.norm_out.weight"], out["encoder.norm_out.bias"] = (block_in,), (block_in,)
    _conv_shapes(out, "encoder.conv_out", z, block_in, 3)
    _conv_shapes(out, "encoder.quant_conv", z, z, 1)
    dmult = list(c.decoder_ch_mult)
    block_in = ch * dmult[-1]
    curr = res // 2 ** (len(dmult) - 1)
    _conv_shapes(out, "decoder.post_quant_conv", z, z, 1)
    _conv_shapes(out, "decoder.conv_in", block_in, z, 3)
    _mid_shapes(out, "decoder.mid", block_in)
    for i in reversed(range(len(dmult))):
        block_out = ch * dmult[i]
        for j in range(c.decoder_num_res_blocks[i]):
            _resnet_shapes(out, f"decoder.up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if curr in c.attn_resolutions:
                _attn_shapes(out, f"decoder.up.{i}.attn.{j}", block_in)
        if i != 0:
            _conv_shapes(out, f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            curr *= 2
    out["decoder.norm_out.weight"], out["decoder.norm_out.bias"] = (block_in,), (block_in,)
    _conv_shapes(out, "decoder.conv_out", out_ch, block_in, 3)
    return out


def _as_config(config, fn):
    if isinstance(config, MAGVIT2Config):
        return config
    if isinstance(config, dict):
        return MAGVIT2Config.from_dict(config)
    raise TypeError(f"{fn}: config must be a MAGVIT2Config, a dict of its fields or None, got {type(config).__name__}")


def _count(src, pattern):
    """How many consecutive integers n = 0, 1, ... have a key matching pattern.format(n)."""
    n = 0
    while any(re.match(re.escape(pattern.format(n)) + r"\.", k) for k in src):
        n += 1
    return n


def _shape_of(src, key, fn, ndim):
    if key not in src:
        raise ValueError(f"{fn}: the state dict has no {key!r}, which a MAGVIT-v2 checkpoint (Show-o's "
                         f"encoder/decoder layout) has")
    a = src[key]
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {key} must have {ndim} dims, got shape {tuple(a.shape)}")
    return tuple(a.shape)


def magvit2_config_from_state_dict(state_dict, resolution=256, norm_groups=32):
    """A Show-o MAGVIT-v2 state dict -> the MAGVIT2Config fields (a dict) its shapes describe (see the module
    doc); resolution (256 for the release) places the attention levels, norm_groups is GroupNorm's
    (32 in Show-o). ValueError naming the key when a tensor the layout needs is absent or mis-shaped."""
    fn = "magvit2_config_from_state_dict"
    src = checkpoint_arrays(state_dict, fn)
    cin = _shape_of(src, "encoder.conv_in.weight", fn, 4)
    ch, in_channels = cin[0], cin[1]
    if ch == 0:
        raise ValueError(f"{fn}: encoder.conv_in.weight has shape {cin}: no channels")
    enc_levels, dec_levels = _count(src, "encoder.down.{}"), _count(src, "decoder.up.{}")
    if enc_levels == 0 or dec_levels == 0:
        raise ValueError(f"{fn}: found {enc_levels} encoder.down.{{i}} and {dec_levels} decoder.up.{{i}} levels; "
                         "a MAGVIT-v2 checkpoint has both")

    def width(key):
        w = _shape_of(src, key, fn, 4)[0]
        if w % ch:
            raise ValueError(f"{fn}: {key} has {w} output channels, not a multiple of ch = {ch} "
                             f"(encoder.conv_in.weight {cin})")
        return w // ch

    enc_blocks = [_count(src, f"encoder.down.{i}.block.{{}}") for i in range(enc_levels)]
    enc_mult, prev = [], 1
    for i, n in enumerate(enc_blocks):
        prev = width(f"encoder.down.{i}.block.0.conv1.weight") if n else prev
        enc_mult.append(prev)
    dec_blocks = [_count(src, f"decoder.up.{i}.block.{{}}") for i in range(dec_levels)]
    dec_mult = [0] * dec_levels
    prev = width("decoder.conv_in.weight")
    for i in reversed(range(dec_levels)):
        prev = width(f"decoder.up.{i}.block.0.conv1.weight") if dec_blocks[i] else prev
        dec_mult[i] = prev
    attn = sorted({resolution // 2 ** i for i in range(enc_levels) if f"encoder.down.{i}.attn.0.q.weight" in src} |
                  {resolution // 2 ** i for i in range(dec_levels) if f"decoder.up.{i}.attn.0.q.weight" in src},
                  reverse=True)
    z = _shape_of(src, "encoder.conv_out.weight", fn, 4)[0]
    out_ch = _shape_of(src, "decoder.conv_out.weight", fn, 4)[0]
    return dict(in_channels=int(in_channels), out_channels=None if out_ch == in_channels else int(out_ch),
                ch=int(ch), encoder_ch_mult=enc_mult, encoder_num_res_blocks=enc_blocks, decoder_ch_mult=dec_mult,
                decoder_num_res_blocks=dec_blocks, attn_resolutions=attn or [], z_channels=int(z),
                resolution=int(resolution), norm_groups=int(norm_groups), codebook_size=2 ** int(z))


def _check_code_tables(km, z, fn):
    """Show-o's quantize.embedding / power_vals, when stored, must be the MSB-first tables LFQ uses."""
    K = 2 ** z
    power = (2 ** np.arange(z - 1, -1, -1)).astype(np.float64)
    if km.has("quantize.power_vals"):
        km.skip("quantize.power_vals")
        pv = np.asarray(km.source["quantize.power_vals"]).astype(np.float64).reshape(-1)
        if pv.shape != power.shape or not np.array_equal(pv, power):
            raise ValueError(f"{fn}: quantize.power_vals {pv.tolist()} is not 2^{z - 1} ... 1 (Show-o's most "
                             f"significant bit first); mmu's LFQ would give other codes")
    if km.has("quantize.embedding"):
        km.skip("quantize.embedding")
        emb = np.asarray(km.source["quantize.embedding"])
        if emb.shape != (K, z):
            raise ValueError(f"{fn}: quantize.embedding has shape {tuple(emb.shape)}, {z} latent channels need "
                             f"({K}, {z})")
        bits = (np.arange(K)[:, None] >> np.arange(z - 1, -1, -1)) & 1
        want = bits * 2.0 - 1.0
        bad = np.nonzero(np.any(emb.astype(np.float64) != want, axis=1))[0]
        if bad.size:
            r = int(bad[0])
            raise ValueError(f"{fn}: quantize.embedding row {r} is {emb[r].tolist()}, not the signs of code {r}'s "
                             f"bits most significant first {want[r].tolist()} (Show-o's LFQuantizer table); "
                             f"mmu's LFQ would decode other images")


def convert_magvit2_state_dict(state_dict, config=None, resolution=256):
    """Show-o's MAGVIT-v2 state dict (keys in the module doc; NumPy arrays, torch tensors of any float dtype
    or mmu Tensors) -> {MAGVIT2 state_dict key: float32 ndarray}. config: a MAGVIT2Config or dict of its
    fields; None reads it off the shapes (magvit2_config_from_state_dict with `resolution`). ValueError
    naming every missing key, every key whose shape does not fit the config (both shapes) and every
    unexpected key, and when the stored code tables are not LFQ's bit order."""
    fn = "convert_magvit2_state_dict"
    if config is None:
        config = magvit2_config_from_state_dict(state_dict, resolution=resolution)
    cfg = _as_config(config, fn)
    if cfg.codebook_size != 2 ** cfg.z_channels:
        raise ValueError(f"{fn}: config codebook_size {cfg.codebook_size} is not 2**z_channels = "
                         f"{2 ** cfg.z_channels}")
    src = checkpoint_arrays(state_dict, fn)
    shapes = magvit2_state_dict_shapes(cfg)
    km = KeyMap(src, fn, f"the MAGVIT2 config (ch {cfg.ch}, encoder_ch_mult {cfg.encoder_ch_mult}, "
                         f"encoder_num_res_blocks {cfg.encoder_num_res_blocks}, decoder_ch_mult "
                         f"{cfg.decoder_ch_mult}, decoder_num_res_blocks {cfg.decoder_num_res_blocks}, "
                         f"attn_resolutions {cfg.attn_resolutions} at resolution {cfg.resolution}, "
                         f"z_channels {cfg.z_channels})")
    out = {k: km.get(k, s) for k, s in shapes.items()}
    _check_code_tables(km, cfg.z_channels, fn)
    km.finish()
    return out


def load_magvit2(state_dict, config=None, resolution=256, **fields):
    """Show-o's MAGVIT-v2 checkpoint -> an mmu.models.magvit2.MAGVIT2 with its weights: model.get_code(images)
    gives Show-o's MAGVITv2.get_code codes and model.decode_code(codes) its decode_code images (float32).
    config: as convert_magvit2_state_dict (None: read off the shapes; the release's shapes give
    MAGVIT2Config's defaults); **fields: MAGVIT2Config fields to set besides (e.g. the loss fields for
    fine-tuning)."""
    from .model import MAGVIT2
    if config is None:
        config = magvit2_config_from_state_dict(state_dict, resolution=resolution)
    cfg = _as_config(config, "load_magvit2").to_dict()
    cfg.update(fields)
    model = MAGVIT2(cfg)
    model.load_state_dict(convert_magvit2_state_dict(state_dict, model.config))
    model.eval()
    return model
