"""1d-tokenizer's TiTok state_dict (bytedance/1d-tokenizer modeling/titok.py TiTok with quantize_mode "vq",
is_legacy=False, finetune_decoder=False: the pixel-decoding layout) -> mmu.models.titok.TiTok. The user
reads the weights file they have (torch.load(path, map_location="cpu"), or safetensors) and passes the
dict; nothing is downloaded and torch is never imported.

| 1d-tokenizer key (W = width, N = patches, K = latent tokens) | mmu TiTok key |
|---|---|
| encoder.patch_embed.{weight,bias} | encoder.patch_embed.* |
| encoder.class_embedding (1, W), latent_tokens (K, W) | encoder.extra_tokens (1, 1 + K, W) = [class; latents] |
| encoder.positional_embedding (1 + N, W), encoder.latent_token_positional_embedding (K, W) | encoder.pos_embedding (1, 1 + K + N, W) = [pos[0]; latent pos; pos[1:]] |
| encoder.ln_pre / ln_post | encoder.pre_norm / post_norm |
| {encoder,decoder}.transformer.{i}.ln_1 / ln_2 | ….layers.{i}.norm1 / norm2 |
| ….transformer.{i}.attn.in_proj_weight / in_proj_bias ([q; k; v] rows) | ….layers.{i}.attn.qkv_proj.weight / bias |
| ….transformer.{i}.attn.out_proj.* | ….layers.{i}.attn.out_proj.* |
| ….transformer.{i}.mlp.c_fc / c_proj | ….layers.{i}.mlp.fc1 / fc2 |
| encoder.conv_out (token_size, W, 1, 1) | encoder.proj.weight (token_size, W) |
| decoder.decoder_embed.* | decoder.embed.* |
| decoder.class_embedding (1, W), decoder.mask_token (1, 1, W) | decoder.class_token, decoder.mask_token (1, 1, W) |
| decoder.positional_embedding (1 + N, W), decoder.latent_token_positional_embedding (K, W) | decoder.pos_embedding, decoder.latent_pos_embedding (1, ·, W) |
| decoder.ln_pre / ln_post | decoder.pre_norm / norm |
| decoder.ffn.0 (p² · 3, W, 1, 1) | decoder.to_pixels.weight (p² · 3, W) |
| decoder.conv_out.* | decoder.conv_out.* |
| quantize.embedding.weight | quantize.embedding.weight |

The encoder's tokens and positions are summed per token in TiTok's forward, so the sums are what the
model keeps (class + pos[0], latent token k + its position); mmu's ViTEncoder orders the tokens
[class; latents; patches] where TiTok has [class; patches; latents], which attention does not see.
The legacy layout (is_legacy=True: the decoder predicts MaskGIT-VQGAN proxy codes, decoder.ffn.2.*,
and the encoder reshapes its latents without the permute) and stage-2 checkpoints (pixel_decoder.*,
pixel_quantize.*) are refused, naming the key. Heads and use_l2_norm are not in the weights: heads
default to width / 64 (every published model's head width), use_l2_norm to True (TiTok-S/B/L's configs).
"""
import re

import numpy as np

from .._hf import checkpoint_arrays
from .config import TiTokConfig

__all__ = ["convert_titok_state_dict", "titok_config_from_state_dict", "load_titok"]

_FN = "convert_titok_state_dict"
_LAYER = re.compile(r"^(encoder|decoder)\.transformer\.(\d+)\.(.+)$")
_LAYER_KEYS = {"ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias", "ln_2.weight": "norm2.weight",
               "ln_2.bias": "norm2.bias", "attn.in_proj_weight": "attn.qkv_proj.weight",
               "attn.in_proj_bias": "attn.qkv_proj.bias", "attn.out_proj.weight": "attn.out_proj.weight",
               "attn.out_proj.bias": "attn.out_proj.bias", "mlp.c_fc.weight": "mlp.fc1.weight",
               "mlp.c_fc.bias": "mlp.fc1.bias", "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias"}
_RENAMED = {"encoder.patch_embed.weight": "encoder.patch_embed.weight", "encoder.patch_embed.bias": "encoder.patch_embed.bias",
            "encoder.ln_pre.weight": "encoder.pre_norm.weight", "encoder.ln_pre.bias": "encoder.pre_norm.bias",
            "encoder.ln_post.weight": "encoder.post_norm.weight", "encoder.ln_post.bias": "encoder.post_norm.bias",
            "encoder.conv_out.bias": "encoder.proj.bias",
            "decoder.decoder_embed.weight": "decoder.embed.weight", "decoder.decoder_embed.bias": "decoder.embed.bias",
            "decoder.ln_pre.weight": "decoder.pre_norm.weight", "decoder.ln_pre.bias": "decoder.pre_norm.bias",
            "decoder.ln_post.weight": "decoder.norm.weight", "decoder.ln_post.bias": "decoder.norm.bias",
            "decoder.ffn.0.bias": "decoder.to_pixels.bias", "decoder.conv_out.weight": "decoder.conv_out.weight",
            "decoder.conv_out.bias": "decoder.conv_out.bias", "quantize.embedding.weight": "quantize.embedding.weight"}
# keys combined or reshaped below
_SPECIAL = ("latent_tokens", "encoder.class_embedding", "encoder.positional_embedding",
            "encoder.latent_token_positional_embedding", "encoder.conv_out.weight", "decoder.class_embedding",
            "decoder.mask_token", "decoder.positional_embedding", "decoder.latent_token_positional_embedding",
            "decoder.ffn.0.weight")


def _arrays(state_dict, fn):
    sd = checkpoint_arrays(state_dict, fn)
    for key in sd:
        if key.startswith(("pixel_decoder.", "pixel_quantize.")) or key.startswith("decoder.ffn.2."):
            raise ValueError(f"{fn}: {key!r} belongs to TiTok's legacy / stage-2 layout (the decoder predicts "
                             "MaskGIT-VQGAN proxy codes); only the pixel decoder (is_legacy=False) converts")
    missing = [k for k in _SPECIAL if k not in sd]
    if missing:
        raise ValueError(f"{fn}: the state_dict lacks {missing} (not a 1d-tokenizer TiTok in vq mode?)")
    return sd


def _depth(sd, side):
    idx = {int(m.group(2)) for m in map(_LAYER.match, sd) if m and m.group(1) == side}
    if not idx or idx != set(range(max(idx) + 1)):
        raise ValueError(f"{_FN}: {side}.transformer layers must be numbered 0..n-1, got {sorted(idx)}")
    return max(idx) + 1


def titok_config_from_state_dict(state_dict, encoder_heads=None, decoder_heads=None, use_l2_norm=True, **fields):
    """The TiTokConfig of a 1d-tokenizer TiTok state_dict, read off its shapes: widths (class_embedding),
    depths (transformer.{i}), patch sizes (patch_embed; decoder.ffn.0 has p^2 * 3 rows), resolution
    (sqrt(N) * patch), num_latent_tokens (latent_tokens), token_size and codebook_size
    (quantize.embedding), in_channels (patch_embed). encoder_heads / decoder_heads: None -> width // 64;
    use_l2_norm is not in the weights (TiTok's VQ configs set it; titok_bl*_vq8k do not); **fields: any
    other TiTokConfig field (losses)."""
    fn = "titok_config_from_state_dict"
    sd = _arrays(state_dict, fn)
    pe = sd["encoder.patch_embed.weight"]
    if pe.ndim != 4 or pe.shape[2] != pe.shape[3]:
        raise ValueError(f"{fn}: encoder.patch_embed.weight must be (W, C, p, p), got {pe.shape}")
    ew, cin, p = pe.shape[0], pe.shape[1], pe.shape[2]
    n = sd["encoder.positional_embedding"].shape[0] - 1
    g = int(round(np.sqrt(n)))
    if g * g != n:
        raise ValueError(f"{fn}: encoder.positional_embedding has {n} + 1 rows; {n} is not a square patch grid")
    dw = sd["decoder.class_embedding"].shape[-1]
    rows = sd["decoder.ffn.0.weight"].shape[0]
    dp = int(round(np.sqrt(rows / cin)))
    if dp * dp * cin != rows:
        raise ValueError(f"{fn}: decoder.ffn.0.weight has {rows} rows, not patch^2 * {cin}")
    book = sd["quantize.embedding.weight"]
    cfg = dict(in_channels=int(cin), resolution=int(g * p), patch_size=int(p),
               decoder_patch_size=None if dp == p else int(dp), encoder_width=int(ew),
               encoder_depth=_depth(sd, "encoder"), encoder_heads=int(encoder_heads or max(1, ew // 64)),
               decoder_width=int(dw), decoder_depth=_depth(sd, "decoder"),
               decoder_heads=int(decoder_heads or max(1, dw // 64)),
               mlp_ratio=sd["encoder.transformer.0.mlp.c_fc.weight"].shape[0] / ew,
               num_latent_tokens=int(sd["latent_tokens"].shape[0]), token_size=int(book.shape[1]),
               codebook_size=int(book.shape[0]), use_l2_norm=bool(use_l2_norm))
    cfg.update(fields)
    return TiTokConfig(**cfg).validate()


def convert_titok_state_dict(state_dict, config):
    """1d-tokenizer TiTok state_dict (arrays or torch tensors) -> {mmu TiTok key: float32 array} (see the
    module's table). config: the TiTokConfig (or its fields) the weights are for; every shape is checked
    against the model it builds. Keys of neither layout raise ValueError naming them."""
    sd = _arrays(state_dict, _FN)
    out, used = {}, set(_SPECIAL)
    for key, arr in sd.items():
        m = _LAYER.match(key)
        if m and m.group(3) in _LAYER_KEYS:
            out[f"{m.group(1)}.layers.{m.group(2)}.{_LAYER_KEYS[m.group(3)]}"] = arr
            used.add(key)
        elif key in _RENAMED:
            out[_RENAMED[key]] = arr
            used.add(key)
    extra = sorted(set(sd) - used)
    if extra:
        raise ValueError(f"{_FN}: keys with no mmu counterpart: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    cls = sd["encoder.class_embedding"].reshape(1, -1)
    pos = sd["encoder.positional_embedding"]
    out["encoder.extra_tokens"] = np.concatenate([cls, sd["latent_tokens"]])[None]
    out["encoder.pos_embedding"] = np.concatenate([pos[:1], sd["encoder.latent_token_positional_embedding"],
                                                   pos[1:]])[None]
    out["encoder.proj.weight"] = sd["encoder.conv_out.weight"].reshape(sd["encoder.conv_out.weight"].shape[:2])
    w = sd["decoder.class_embedding"].shape[-1]
    out["decoder.class_token"] = sd["decoder.class_embedding"].reshape(1, 1, w)
    out["decoder.mask_token"] = sd["decoder.mask_token"].reshape(1, 1, w)
    out["decoder.pos_embedding"] = sd["decoder.positional_embedding"][None]
    out["decoder.latent_pos_embedding"] = sd["decoder.latent_token_positional_embedding"][None]
    out["decoder.to_pixels.weight"] = sd["decoder.ffn.0.weight"].reshape(sd["decoder.ffn.0.weight"].shape[:2])
    out = {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}
    cfg = config if isinstance(config, TiTokConfig) else TiTokConfig(**dict(config))
    want = _shapes(cfg)
    for k, shape in want.items():
        if k not in out:
            raise ValueError(f"{_FN}: the state_dict has no weights for {k!r} (shape {shape}) of the config")
        if tuple(out[k].shape) != tuple(shape):
            raise ValueError(f"{_FN}: {k} converts to shape {tuple(out[k].shape)}, the config wants {tuple(shape)}")
    return out


def _shapes(cfg):
    """{mmu key: shape} of the generator of a TiTokConfig (computed from the fields, no model built)."""
    c = cfg.validate()
    out = {}
    n = (c.resolution // c.patch_size) ** 2
    dp = c.decoder_patch_size or c.patch_size
    dn = (c.resolution // dp) ** 2
    k, ts = c.num_latent_tokens, c.token_size

    def layers(prefix, w, depth):
        h = int(w * c.mlp_ratio)
        for i in range(depth):
            p = f"{prefix}.layers.{i}"
            for nm in ("norm1", "norm2"):
                out[f"{p}.{nm}.weight"] = out[f"{p}.{nm}.bias"] = (w,)
            out[f"{p}.attn.qkv_proj.weight"], out[f"{p}.attn.qkv_proj.bias"] = (3 * w, w), (3 * w,)
            out[f"{p}.attn.out_proj.weight"], out[f"{p}.attn.out_proj.bias"] = (w, w), (w,)
            out[f"{p}.mlp.fc1.weight"], out[f"{p}.mlp.fc1.bias"] = (h, w), (h,)
            out[f"{p}.mlp.fc2.weight"], out[f"{p}.mlp.fc2.bias"] = (w, h), (w,)
    ew, dw = c.encoder_width, c.decoder_width
    out["encoder.patch_embed.weight"], out["encoder.patch_embed.bias"] = (ew, c.in_channels, c.patch_size,
                                                                          c.patch_size), (ew,)
    out["encoder.extra_tokens"], out["encoder.pos_embedding"] = (1, 1 + k, ew), (1, 1 + k + n, ew)
    out["encoder.pre_norm.weight"] = out["encoder.pre_norm.bias"] = (ew,)
    layers("encoder", ew, c.encoder_depth)
    out["encoder.post_norm.weight"] = out["encoder.post_norm.bias"] = (ew,)
    out["encoder.proj.weight"], out["encoder.proj.bias"] = (ts, ew), (ts,)
    out["quantize.embedding.weight"] = (c.codebook_size, ts)
    out["decoder.embed.weight"], out["decoder.embed.bias"] = (dw, ts), (dw,)
    out["decoder.class_token"] = out["decoder.mask_token"] = (1, 1, dw)
    out["decoder.pos_embedding"], out["decoder.latent_pos_embedding"] = (1, 1 + dn, dw), (1, k, dw)
    out["decoder.pre_norm.weight"] = out["decoder.pre_norm.bias"] = (dw,)
    layers("decoder", dw, c.decoder_depth)
    out["decoder.norm.weight"] = out["decoder.norm.bias"] = (dw,)
    out["decoder.to_pixels.weight"], out["decoder.to_pixels.bias"] = (dp * dp * c.in_channels, dw), \
        (dp * dp * c.in_channels,)
    out["decoder.conv_out.weight"], out["decoder.conv_out.bias"] = (c.in_channels, c.in_channels, 3, 3), \
        (c.in_channels,)
    return out


def load_titok(state_dict, config=None, encoder_heads=None, decoder_heads=None, use_l2_norm=True, **fields):
    """A 1d-tokenizer TiTok state_dict -> an mmu TiTok (eval mode) with its weights: encode gives TiTok's
    min_encoding_indices (B, K), decode its decoded images. config: a TiTokConfig or fields (None: read off
    the shapes, titok_config_from_state_dict with encoder_heads / decoder_heads / use_l2_norm); **fields:
    TiTokConfig fields to set besides (the loss fields, for fine-tuning)."""
    from .model import TiTok
    if config is None:
        config = titok_config_from_state_dict(state_dict, encoder_heads, decoder_heads, use_l2_norm)
    cfg = (config if isinstance(config, TiTokConfig) else TiTokConfig(**dict(config))).to_dict()
    cfg.update(fields)
    model = TiTok(cfg)
    state = {k: v.numpy() for k, v in model.state_dict().items()}  # the discriminator's, if any, stay
    state.update(convert_titok_state_dict(state_dict, model.config))
    model.load_state_dict(state)
    model.eval()
    return model
