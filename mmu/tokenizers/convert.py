"""taming-transformers checkpoints -> mmu's VQGAN (github.com/CompVis/taming-transformers:
taming/models/vqgan.py VQModel, taming/modules/vqvae/quantize.py VectorQuantizer2,
taming/modules/losses/vqperceptual.py VQLPIPSWithDiscriminator, taming/modules/discriminator/model.py
NLayerDiscriminator, taming/modules/losses/lpips.py LPIPS).

A user loads the Lightning checkpoint with torch themselves (`torch.load(path, map_location="cpu")
["state_dict"]`) and passes that dict of tensors/arrays; mmu never imports torch. What maps:

| taming key | mmu VQGAN key | |
|---|---|---|
| encoder.* , decoder.* | the same | identical layout and names (Encoder / Decoder of diffusionmodules/model.py) |
| quant_conv.*, post_quant_conv.* | the same | |
| quantize.embedding.weight (K, d) | quantize.embed (1, K, d) | also quantize.embed_avg (unused by "vq") |
| loss.discriminator.main.{i}.* | discriminator.main.{i}.* | same indices; BatchNorm or ActNorm (uint8 -> int64) |
| loss.perceptual_loss.net.slice{k}.{n}.*, | an LPIPS weight file | mmu keeps LPIPS outside the model |
|   .lin{k}.model.1.weight | (config.lpips_weights) | |
| loss.perceptual_loss.scaling_layer.shift / .scale | — | constants mmu's LPIPS has built in; checked equal |

Keys with no mmu counterpart are errors (strict=True), each with its reason: `quantize.used`
(VectorQuantizer2's remap of code indices), `quantize.proj.*` / `quantize.embed.weight` (GumbelQuantize,
taming's GumbelVQ), `quantize.embedding.cluster_size` / `.embed_avg` (EMAVectorQuantizer), `colorize`
(segmentation models' display buffer), other `loss.*` tensors, and any key that is not a tensor of the
VQGAN the shapes describe. strict=False reports them in the result's `unmapped` instead. A state dict
that cannot make a VQGAN is always an error: a KL autoencoder's encoder (double_z=True: conv_out with
2 x z_channels), a missing tensor, a shape that does not fit.

The config is read off the shapes: in_channels, ch, ch_mult, num_res_blocks, z_channels, embed_dim,
codebook_size, out_channels, the levels that have attention, disc_ndf / disc_layers / disc_norm; only
`resolution` (which turns attention levels into attn_resolutions) cannot be seen in the weights (every
taming VQGAN config uses 256). norm_groups is taming's 32. The loss fields keep VQGANConfig's defaults
(taming's ImageNet VQGAN, except disc_start, which lives in taming's yaml), except that
VectorQuantizer2's default legacy=True loss — mean((sg(zq) - z)²) + beta mean((zq - sg(z))²), the
commitment term at weight 1 and the codebook term at beta, the reverse of the VQ-VAE paper's — is
kept with quantizer_kwargs {"commitment_weight": 1.0, "codebook_weight": 0.25} (legacy=False gives
mmu's default, beta on the commitment term).
"""
import collections
import os
import re

import numpy as np

from .._args import foreign_array

__all__ = ["convert_taming_state_dict", "TamingConversion", "TAMING_BETA"]

TAMING_BETA = 0.25          # VQModel builds VectorQuantizer2(n_embed, embed_dim, beta=0.25)
_TAMING_NORM_GROUPS = 32    # taming's Normalize: GroupNorm(32, C, eps=1e-6)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)

TamingConversion = collections.namedtuple("TamingConversion", ["state_dict", "config", "lpips_state_dict",
                                                               "unmapped"])
TamingConversion.__doc__ = """The result of convert_taming_state_dict.

state_dict: {mmu VQGAN key: float32 ndarray} (the discriminator's num_batches_tracked / initialized as
int64); config: the VQGANConfig fields read off the shapes (a dict); lpips_state_dict: taming's LPIPS
weights as {lpips-package key: ndarray} (net.slice{k}.{n}.weight/bias, lin{k}.model.1.weight; write them
with mmu.losses.lpips.convert_torch_weights(d, d, path)), or None when the checkpoint has none;
unmapped: {taming key: why it has no mmu counterpart} (empty unless strict=False)."""


def _why_unmapped(key):
    """The reason a taming key has no mmu counterpart (None: not a key taming's VQModel family has)."""
    if key == "quantize.used":
        return ("VectorQuantizer2(remap=...) re-indexes the codes through this table; mmu's VQ has no remap "
                "(convert the codebook of a model trained without remap)")
    if key.startswith("quantize.proj.") or key == "quantize.embed.weight":
        return "GumbelQuantize (taming's GumbelVQ): mmu's VQGAN has no Gumbel quantizer (mmu.tokenizers.DVAE has one)"
    if key in ("quantize.embedding.cluster_size", "quantize.embedding.embed_avg"):
        return "EMAVectorQuantizer's EMA state: the converter maps taming's VectorQuantizer2 only"
    if key == "colorize":
        return "the display buffer of taming's segmentation-conditioned models (colorize_nlabels), not a weight"
    if key.startswith("loss."):
        return "a loss module tensor mmu's VQGAN does not have"
    return None


def _count(prefix, keys):
    """How many consecutive integer children `prefix{i}.` has (0, 1, 2, ...)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in keys):
        n += 1
    return n


def _infer_config(sd, resolution, legacy):
    fn = "convert_taming_state_dict"
    need = ["encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight", "decoder.conv_out.weight",
            "quant_conv.weight", "post_quant_conv.weight", "quantize.embedding.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"{fn}: not a taming VQModel state dict: missing {missing} (pass the checkpoint's "
                         "'state_dict' entry: torch.load(path, map_location='cpu')['state_dict'])")
    keys = list(sd)
    ch, in_channels = sd["encoder.conv_in.weight"].shape[:2]
    n_levels = _count("encoder.down.", keys)
    num_res_blocks = _count("encoder.down.0.block.", keys)
    if n_levels < 1:
        raise ValueError(f"{fn}: no encoder.down.* levels in the state dict")
    if num_res_blocks == 0:
        raise ValueError(f"{fn}: encoder.down.0 has no ResnetBlocks; num_res_blocks = 0 cannot be read from the "
                         "weights (ch_mult lives in the blocks' widths)")
    ch_mult, attn_levels = [], []
    for i in range(n_levels):
        out_c = sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]
        if out_c % ch:
            raise ValueError(f"{fn}: encoder.down.{i} has {out_c} channels, not a multiple of ch={ch}")
        ch_mult.append(int(out_c // ch))
        enc_attn = any(k.startswith(f"encoder.down.{i}.attn.") for k in keys)
        dec_attn = any(k.startswith(f"decoder.up.{i}.attn.") for k in keys)
        if enc_attn != dec_attn:
            raise ValueError(f"{fn}: attention at level {i} in the {'encoder' if enc_attn else 'decoder'} only; "
                             "taming's Encoder and Decoder share attn_resolutions")
        if enc_attn:
            attn_levels.append(i)
    if resolution % 2 ** (n_levels - 1):
        raise ValueError(f"{fn}: resolution {resolution} is not a multiple of the downsample factor "
                         f"{2 ** (n_levels - 1)} of this {n_levels}-level model")
    z_channels = int(sd["decoder.conv_in.weight"].shape[1])
    enc_out = int(sd["encoder.conv_out.weight"].shape[0])
    if enc_out != z_channels:
        raise ValueError(f"{fn}: encoder.conv_out has {enc_out} output channels for z_channels={z_channels}: "
                         + ("double_z=True (a KL autoencoder's mean and log-variance), which VQGAN does not have"
                            if enc_out == 2 * z_channels else "the encoder and decoder do not belong together"))
    embed_dim = int(sd["quant_conv.weight"].shape[0])
    K, d = sd["quantize.embedding.weight"].shape
    if d != embed_dim:
        raise ValueError(f"{fn}: quantize.embedding.weight is ({K}, {d}) but quant_conv gives {embed_dim} channels")
    out_channels = int(sd["decoder.conv_out.weight"].shape[0])
    cfg = dict(in_channels=int(in_channels), out_channels=None if out_channels == in_channels else out_channels,
               ch=int(ch), ch_mult=ch_mult, num_res_blocks=int(num_res_blocks),
               attn_resolutions=[resolution // 2 ** i for i in attn_levels], z_channels=z_channels,
               embed_dim=embed_dim, resolution=int(resolution), norm_groups=_TAMING_NORM_GROUPS,
               codebook_size=int(K), quantizer="vq", beta=TAMING_BETA,
               quantizer_kwargs={"commitment_weight": 1.0, "codebook_weight": TAMING_BETA} if legacy else {})
    disc = sorted({int(k.split(".")[3]) for k in keys if k.startswith("loss.discriminator.main.")})
    cfg["use_discriminator"] = bool(disc)
    if disc:
        convs = [i for i in disc if sd.get(f"loss.discriminator.main.{i}.weight") is not None
                 and sd[f"loss.discriminator.main.{i}.weight"].ndim == 4]
        first = sd[f"loss.discriminator.main.{convs[0]}.weight"]
        if first.shape[1] != in_channels:
            raise ValueError(f"{fn}: the discriminator takes {first.shape[1]} channels (disc_in_channels), the "
                             f"images {in_channels}; mmu's VQGAN builds it on the image channels")
        if any(k.endswith(".running_mean") for k in keys if k.startswith("loss.discriminator.")):
            norm = "batch"
        elif any(k.endswith(".loc") for k in keys if k.startswith("loss.discriminator.")):
            norm = "actnorm"
        else:
            raise ValueError(f"{fn}: the discriminator has neither BatchNorm nor ActNorm layers")
        cfg.update(disc_ndf=int(first.shape[0]), disc_layers=len(convs) - 2, disc_norm=norm)
    return cfg


def _check_lpips_constants(sd, prefix):
    for name, want in (("shift", _LPIPS_SHIFT), ("scale", _LPIPS_SCALE)):
        k = f"{prefix}scaling_layer.{name}"
        if k in sd:
            got = np.asarray(sd[k], np.float64).reshape(-1)
            if got.shape != (3,) or np.abs(got - np.asarray(want)).max() > 1e-6:
                raise ValueError(f"convert_taming_state_dict: {k} is {got.tolist()}, not the LPIPS constant "
                                 f"{list(want)} mmu's LPIPS uses")


def convert_taming_state_dict(state_dict, resolution=256, legacy=True, strict=True):
    """Maps a taming-transformers VQModel state dict onto mmu's VQGAN (see the module docstring for
    every key). state_dict: the checkpoint's "state_dict" (torch tensors, NumPy arrays or anything with
    .numpy(); a leading "module." is stripped); resolution: the training image size (taming's configs:
    256), needed only to turn the attention levels into attn_resolutions; legacy: taming's
    VectorQuantizer2 loss weighting (True, its default) or mmu's (False); strict: raise ValueError
    naming every key mmu has no counterpart for, with the reason (False: list them in .unmapped).
    -> TamingConversion(state_dict, config, lpips_state_dict, unmapped)."""
    fn = "convert_taming_state_dict"
    if not hasattr(state_dict, "items"):
        raise TypeError(f"{fn}: state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"{fn}: resolution must be a positive int, got {resolution!r}")
    sd = {}
    for k, v in state_dict.items():
        k = str(k)
        k = k[len("module."):] if k.startswith("module.") else k     # saved from DataParallel
        sd[k] = foreign_array(v, "convert_taming_state_dict", k, kinds="fiub")

    out, lpips, unmapped = {}, {}, {}
    for k, a in sd.items():
        head = k.split(".")[0]
        if head in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
            out[k] = np.ascontiguousarray(a, np.float32)
        elif k == "quantize.embedding.weight":
            embed = np.ascontiguousarray(a, np.float32)[None]            # (K, d) -> (1, K, d)
            out["quantize.embed"] = embed
            out["quantize.embed_avg"] = embed.copy()
        elif k.startswith("loss.discriminator.main."):
            int_buffer = k.endswith((".num_batches_tracked", ".initialized"))   # ActNorm's is uint8 in taming
            out["discriminator." + k[len("loss.discriminator."):]] = \
                np.array(a, np.int64 if int_buffer else np.float32, order="C")  # keeps 0-d
        elif k.startswith("loss.perceptual_loss."):
            rest = k[len("loss.perceptual_loss."):]
            if rest in ("scaling_layer.shift", "scaling_layer.scale"):
                continue                                                   # constants, checked below
            if re.fullmatch(r"net\.slice[1-5]\.\d+\.(weight|bias)|lin[0-4]\.model\.[01]\.weight", rest):
                lpips[rest] = a
            else:
                unmapped[k] = "not a key of taming's LPIPS (net.slice{k}.{n}.*, lin{k}.model.1.weight)"
        else:
            unmapped[k] = _why_unmapped(k) or "not a key of taming's VQModel (encoder, decoder, quantize, " \
                                              "quant_conv, post_quant_conv, loss)"
    if "quantize.embedding.weight" not in sd and unmapped:
        raise ValueError(f"{fn}: no VectorQuantizer2 codebook (quantize.embedding.weight) to map: "
                         + "; ".join(f"{k}: {why}" for k, why in unmapped.items()))
    cfg = _infer_config(sd, int(resolution), legacy)
    _check_lpips_constants(sd, "loss.perceptual_loss.")
    # every mapped tensor must be one of the VQGAN this config builds, with its shape
    from .vqgan import VQGAN
    ref = VQGAN(**dict(cfg, perceptual_weight=0.0)).state_dict()
    taming_name = {"quantize.embed": "quantize.embedding.weight", "quantize.embed_avg": "quantize.embedding.weight"}
    for k in list(out):
        src = taming_name.get(k, "loss." + k if k.startswith("discriminator.") else k)
        if k not in ref:
            unmapped[src] = "no such tensor in taming's Encoder/Decoder/NLayerDiscriminator of this shape of model"
            del out[k]
        elif tuple(ref[k].shape) != out[k].shape:
            raise ValueError(f"{fn}: {src} has shape {out[k].shape}; the model read off the other weights "
                             f"({cfg}) needs {tuple(ref[k].shape)}")
    absent = [k for k in ref if k not in out and not k.startswith("quantize.")]
    if absent:
        raise ValueError(f"{fn}: the state dict lacks {len(absent)} tensor(s) of the model its shapes describe: "
                         f"{absent[:8]}{' ...' if len(absent) > 8 else ''}")
    if strict and unmapped:
        raise ValueError(f"{fn}: {len(unmapped)} key(s) have no counterpart in mmu's VQGAN:\n"
                         + "\n".join(f"  {k}: {why}" for k, why in unmapped.items())
                         + "\n(strict=False converts the rest and lists these in .unmapped)")
    return TamingConversion(out, cfg, lpips or None, unmapped)


def vqgan_from_taming_state_dict(cls, state_dict, resolution=256, lpips_weights=None, legacy=True, strict=True,
                                 **config):
    """Body of VQGAN.from_taming_state_dict (see there)."""
    import warnings

    conv = convert_taming_state_dict(state_dict, resolution=resolution, legacy=legacy, strict=strict)
    fields = dict(conv.config)
    if conv.lpips_state_dict is not None and lpips_weights is not None:
        from ..losses.lpips import convert_torch_weights
        convert_torch_weights(conv.lpips_state_dict, conv.lpips_state_dict, os.fspath(lpips_weights), net="vgg")
        fields.update(perceptual_weight=1.0, lpips_weights=os.fspath(lpips_weights))
    elif lpips_weights is not None:
        raise ValueError("VQGAN.from_taming_state_dict: lpips_weights was given but the checkpoint has no "
                         "loss.perceptual_loss.* weights to write there")
    elif "perceptual_weight" not in config and "lpips_weights" not in config:
        if conv.lpips_state_dict is not None:
            warnings.warn("VQGAN.from_taming_state_dict: the checkpoint's LPIPS weights (loss.perceptual_loss.*) "
                          "are not kept and perceptual_weight is 0; pass lpips_weights='lpips_vgg.safetensors' to "
                          "write them to that file and train with taming's perceptual loss", UserWarning, stacklevel=3)
        fields["perceptual_weight"] = 0.0
    fields.update(config)
    model = cls(**fields)
    own = model.state_dict()
    sd = dict(conv.state_dict)
    # the quantizer's bookkeeping buffers (usage counts, init flag) have no taming counterpart: the new
    # model's own values, as after construction without k-means
    for k in own:
        if k.startswith("quantize.") and k not in sd:
            sd[k] = own[k].numpy()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    if missing or extra:
        raise ValueError("VQGAN.from_taming_state_dict: the converted weights do not fit the model built from "
                         f"{fields}: missing {missing[:8]}, unexpected {extra[:8]}")
    model.load_state_dict(sd)
    return model
