"""SigLIP and CLIP towers in published layouts -> mmu modules. The user reads the safetensors / .pt
file they have and passes the dict; nothing is downloaded.

- Hugging Face vision towers (transformers' SiglipVisionModel / CLIPVisionModel, or the vision half
  of SiglipModel / CLIPModel) -> mmu.models.vit.VisionTower: convert_vit_state_dict, load_vit (the
  table below);
- open_clip's (and OpenAI CLIP's) ViT vision tower, and open_clip's timm SigLIP trunks
  (visual.trunk.*), -> VisionTower: convert_open_clip_vit_state_dict, load_open_clip_vit; its text tower -> mmu.models.vila_u.TextEncoder:
  convert_open_clip_text_state_dict (mmu.models.vila_u.load_open_clip_text builds the module);
- Hugging Face text towers (SiglipTextModel / CLIPTextModel and the text half of the two-tower
  models) -> TextEncoder: convert_text_state_dict (mmu.models.vila_u.load_text_encoder).

| Hugging Face key (under vision_model., i = layer)          | mmu VisionTower key                        |
|-------------------------------------------------------------|--------------------------------------------|
| embeddings.patch_embedding.weight (d, C, p, p) [.bias]      | encoder.patch_embed.* (CLIP: bias zeros)   |
| embeddings.position_embedding.weight (T, d)                 | encoder.pos_embedding (1, T, d)            |
| embeddings.class_embedding (d,)                  (CLIP)     | encoder.extra_tokens (1, 1, d)             |
| pre_layrnorm.{weight,bias}                       (CLIP)     | encoder.pre_norm.*                         |
| encoder.layers.i.layer_norm1 / layer_norm2                  | encoder.layers.i.norm1 / norm2             |
| encoder.layers.i.self_attn.{q,k,v}_proj.*                   | encoder.layers.i.attn.qkv_proj.* ([q;k;v]) |
| encoder.layers.i.self_attn.out_proj.*                       | encoder.layers.i.attn.out_proj.*           |
| encoder.layers.i.mlp.fc1 / fc2                              | encoder.layers.i.mlp.fc1 / fc2             |
| post_layernorm.*                    (SigLIP: every token)   | encoder.norm.*                             |
| post_layernorm.*                    (CLIP: the class token) | post_norm.*                                |
| head.probe, head.attention.{in_proj_*, out_proj.*},         | head.* (the same names)                    |
|   head.layernorm.*, head.mlp.fc1/fc2.*        (SigLIP)      |                                            |
| visual_projection.weight, beside vision_model. (CLIP, with  | proj.weight                                |
|   projection=True)                                          |                                            |

Keys not part of the vision tower in a two-tower checkpoint (text_model.*, logit_scale, logit_bias,
text_projection.weight, visual_projection.weight) and the position_ids buffer older CLIP files
store are skipped; a tower cut after layer k (num_layers) skips the later layers, post_layernorm
and the head. open_clip's / OpenAI's own layout (visual.transformer.resblocks.*) is not this one
and is refused with that reason (it has its own converter below).
"""
import numpy as np

from .._hf import KeyMap, cat_rows, checkpoint_arrays, read_config
from .config import (open_clip_text_config, open_clip_timm_siglip_config, open_clip_vit_config, text_config_from_hf,
                     vit_config_from_hf)
from .model import VisionTower

__all__ = ["convert_vit_state_dict", "load_vit", "convert_open_clip_vit_state_dict", "load_open_clip_vit",
           "convert_open_clip_text_state_dict", "convert_text_state_dict"]

_OTHER_TOWER = ("text_model.", "logit_scale", "logit_bias", "text_projection.", "visual_projection.")


def convert_vit_state_dict(state_dict, config, layout=None, num_layers=None, prefix="", projection=False):
    """A SigLIP / CLIP vision state dict (keys above, with or without the vision_model. prefix;
    NumPy arrays, torch tensors of any float dtype, bfloat16 included, or mmu Tensors) and its
    config.json (dict or path) -> {mmu VisionTower key: float32 ndarray} for
    VisionTower(**vit_config_from_hf(config, layout, num_layers, projection)) (projection: read CLIP's
    visual_projection.weight into the tower's proj; otherwise it is skipped). ValueError naming every missing
    key, every key whose shape does not fit the config (with both shapes) and every unexpected key.
    prefix: read only the keys that start with it, without it (a tower stored inside another model);
    the other keys are left alone."""
    fn = "convert_vit_state_dict"
    cfg = vit_config_from_hf(read_config(config, fn), layout, num_layers, projection)
    src = checkpoint_arrays(state_dict, fn, prefix)
    if any(k.startswith("visual.") or ".resblocks." in k for k in src):
        raise ValueError(f"{fn}: these are open_clip / OpenAI CLIP keys (visual.transformer.resblocks.*), not "
                         "Hugging Face's CLIPVisionModel / SiglipVisionModel layout (vision_model.*)")
    vm = "vision_model." if any(k.startswith("vision_model.") for k in src) else ""
    clip = cfg["layout"] == "clip"
    d, C, p, F, depth = cfg["dim"], cfg["in_channels"], cfg["patch_size"], cfg["hidden_dim"], cfg["depth"]
    n_tok = (cfg["image_size"] // p) ** 2 + (1 if clip else 0)
    km = KeyMap(src, fn, f"the {cfg['layout']} vision config (hidden_size {d}, intermediate_size {F}, "
                         f"patch_size {p}, image_size {cfg['image_size']}, {C} channels)")

    def get(key, shape):
        return km.get(vm + key, shape)

    out = {}
    emb = "embeddings."
    out["encoder.patch_embed.weight"] = get(emb + "patch_embedding.weight", (d, C, p, p))
    out["encoder.patch_embed.bias"] = np.zeros(d, np.float32) if clip else get(emb + "patch_embedding.bias", (d,))
    pos = get(emb + "position_embedding.weight", (n_tok, d))
    out["encoder.pos_embedding"] = None if pos is None else pos.reshape(1, n_tok, d)
    if clip:
        cls = get(emb + "class_embedding", (d,))
        out["encoder.extra_tokens"] = None if cls is None else cls.reshape(1, 1, d)
        for w in ("weight", "bias"):
            out["encoder.pre_norm." + w] = get("pre_layrnorm." + w, (d,))
    for i in km.layers(depth, vm + "encoder.layers."):
        hf, mm = f"encoder.layers.{i}.", f"encoder.layers.{i}."
        for w in ("weight", "bias"):
            vec = w == "bias"
            out[mm + "norm1." + w] = get(hf + "layer_norm1." + w, (d,))
            out[mm + "norm2." + w] = get(hf + "layer_norm2." + w, (d,))
            out[mm + "attn.qkv_proj." + w] = cat_rows([get(f"{hf}self_attn.{n}_proj.{w}", (d,) if vec else (d, d))
                                                       for n in "qkv"])
            out[mm + "attn.out_proj." + w] = get(hf + "self_attn.out_proj." + w, (d,) if vec else (d, d))
            out[mm + "mlp.fc1." + w] = get(hf + "mlp.fc1." + w, (F,) if vec else (F, d))
            out[mm + "mlp.fc2." + w] = get(hf + "mlp.fc2." + w, (d,) if vec else (d, F))
    for w in ("weight", "bias"):
        if cfg["final_norm"]:
            out["encoder.norm." + w] = get("post_layernorm." + w, (d,))
        if cfg["pooling"] == "cls":
            out["post_norm." + w] = get("post_layernorm." + w, (d,))
    if cfg["pooling"] == "attention":
        h = "head."
        out[h + "probe"] = get(h + "probe", (1, 1, d))
        out[h + "attention.in_proj_weight"] = get(h + "attention.in_proj_weight", (3 * d, d))
        out[h + "attention.in_proj_bias"] = get(h + "attention.in_proj_bias", (3 * d,))
        for w in ("weight", "bias"):
            vec = w == "bias"
            out[h + "attention.out_proj." + w] = get(h + "attention.out_proj." + w, (d,) if vec else (d, d))
            out[h + "layernorm." + w] = get(h + "layernorm." + w, (d,))
            out[h + "mlp.fc1." + w] = get(h + "mlp.fc1." + w, (F,) if vec else (F, d))
            out[h + "mlp.fc2." + w] = get(h + "mlp.fc2." + w, (d,) if vec else (d, F))
    if cfg["projection_dim"] is not None:                      # CLIPModel's: beside vision_model
        out["proj.weight"] = km.get("visual_projection.weight", (cfg["projection_dim"], d))
    cut = num_layers is not None

    def ignore(key):
        if vm and not key.startswith(vm):
            return key.startswith(_OTHER_TOWER)
        rest = key[len(vm):]
        if rest == "embeddings.position_ids":
            return True                         # a buffer of arange(T) older CLIP checkpoints store
        if cut:                                 # the parts after layer k
            if rest.startswith(("post_layernorm.", "head.")):
                return True
            parts = rest.split(".")
            if rest.startswith("encoder.layers.") and parts[2].isdigit() and int(parts[2]) >= depth:
                return True
        return False

    km.finish(ignore)
    return out


def load_vit(state_dict, config, layout=None, num_layers=None, prefix="", projection=False):
    """A SigLIP / CLIP vision tower checkpoint (state dict + config.json, see convert_vit_state_dict)
    -> an mmu VisionTower with its weights: tower(images) gives transformers' (last_hidden_state,
    pooler_output) in float32 (with projection: CLIP's image_embeds, visual_projection of the pooler
    output), or with num_layers=k its hidden_states[k] and None."""
    config = read_config(config, "load_vit")
    weights = convert_vit_state_dict(state_dict, config, layout, num_layers, prefix, projection)  # checked first
    model = VisionTower(**vit_config_from_hf(config, layout, num_layers, projection))
    model.load_state_dict(weights)
    return model


# --------------------------------------------------------------------------------------------------
# open_clip's layout (OpenAI CLIP's too): one block type for both towers
#
# | open_clip key (i = layer)                                 | mmu key (VisionTower encoder. / TextEncoder) |
# |-----------------------------------------------------------|-----------------------------------------------|
# | transformer.resblocks.i.ln_1 / ln_2                       | layers.i.norm1 / norm2                        |
# | transformer.resblocks.i.attn.in_proj_weight / _bias       | layers.i.attn.qkv_proj.weight / bias ([q;k;v])|
# | transformer.resblocks.i.attn.out_proj.*                   | layers.i.attn.out_proj.*                      |
# | transformer.resblocks.i.mlp.c_fc / c_proj                 | layers.i.mlp.fc1 / fc2                        |
# | visual.conv1.weight (no bias)                             | encoder.patch_embed.weight (bias zeros)       |
# | visual.class_embedding (d,)                               | encoder.extra_tokens (1, 1, d)                |
# | visual.positional_embedding (1 + N, d)                    | encoder.pos_embedding (1, 1 + N, d)           |
# | visual.ln_pre / visual.ln_post                            | encoder.pre_norm / post_norm                  |
# | visual.proj (d, E), used as x @ proj                      | proj.weight (E, d) = proj transposed          |
# | token_embedding.weight (V, d)                             | token_embedding.weight                        |
# | positional_embedding (L, d)                               | pos_embedding (1, L, d)                       |
# | ln_final                                                  | final_norm                                    |
# | text_projection (d, E) parameter (CLIP)                   | head.weight (E, d) = transposed               |
# | text_projection.weight / .bias, a Linear (proj_bias)      | head.weight / head.bias                       |
# The text keys sit at the top of a CLIP model and under text. in a CustomTextCLIP (open_clip's SigLIP).

_OPEN_CLIP_TEXT = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection",
                   "attn_mask", "text.")
_OPEN_CLIP_SHARED = ("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size")


def _open_clip_blocks(km, head, depth, d, hidden, out, mm):
    """open_clip's ResidualAttentionBlocks head + 'transformer.resblocks.<i>.' -> mm + 'layers.<i>.'."""
    for i in km.layers(depth, head + "transformer.resblocks."):
        oc, m = f"{head}transformer.resblocks.{i}.", f"{mm}layers.{i}."
        out[m + "attn.qkv_proj.weight"] = km.get(oc + "attn.in_proj_weight", (3 * d, d))
        out[m + "attn.qkv_proj.bias"] = km.get(oc + "attn.in_proj_bias", (3 * d,))
        for w in ("weight", "bias"):
            vec = w == "bias"
            out[m + "norm1." + w] = km.get(oc + "ln_1." + w, (d,))
            out[m + "norm2." + w] = km.get(oc + "ln_2." + w, (d,))
            out[m + "attn.out_proj." + w] = km.get(oc + "attn.out_proj." + w, (d,) if vec else (d, d))
            out[m + "mlp.fc1." + w] = km.get(oc + "mlp.c_fc." + w, (hidden,) if vec else (hidden, d))
            out[m + "mlp.fc2." + w] = km.get(oc + "mlp.c_proj." + w, (d,) if vec else (d, hidden))


def _transposed(a):
    return None if a is None else np.ascontiguousarray(a.T)


def convert_open_clip_vit_state_dict(state_dict, config, prefix="", num_heads=None, activation="gelu"):
    """An open_clip / OpenAI CLIP state dict (the visual.* keys of the table above; a whole CLIP
    model's file may be given: its text tower, logit_scale / logit_bias and OpenAI's
    input_resolution / context_length / vocab_size entries are skipped) and its open_clip model
    config (dict or path, see open_clip_vit_config) -> {mmu VisionTower key: float32 ndarray}. One
    ValueError names every missing key, every shape that does not fit (both shapes) and every
    unexpected key.

    A timm SigLIP tower (vision_cfg.timm_model_name, keys visual.trunk.*: open_clip's SigLIP
    configs) maps onto VisionTower's SigLIP layout (see open_clip_timm_siglip_config; num_heads and
    activation are for it):
    trunk.patch_embed.proj -> encoder.patch_embed, trunk.pos_embed -> encoder.pos_embedding,
    trunk.blocks.i.{norm1, attn.qkv ([q;k;v]), attn.proj, norm2, mlp.fc1, mlp.fc2} ->
    encoder.layers.i.{norm1, attn.qkv_proj, attn.out_proj, norm2, mlp.fc1, mlp.fc2}, trunk.norm ->
    encoder.norm, trunk.attn_pool.{latent, q + kv (rows [q; k; v]), proj, norm, mlp.fc1, mlp.fc2} ->
    head.{probe, attention.in_proj_*, attention.out_proj, layernorm, mlp.fc1, mlp.fc2}."""
    fn = "convert_open_clip_vit_state_dict"
    config = read_config(config, fn)
    src = checkpoint_arrays(state_dict, fn, prefix)
    if any(k.startswith("vision_model.") for k in src):
        raise ValueError(f"{fn}: these are Hugging Face keys (vision_model.*); use convert_vit_state_dict")
    vcfg = config.get("vision_cfg") if isinstance(config.get("vision_cfg"), dict) else {}
    if vcfg.get("timm_model_name") or any(k.startswith("visual.trunk.") for k in src):
        if not vcfg.get("timm_model_name"):
            raise ValueError(f"{fn}: visual.trunk.* is a timm vision tower (open_clip's TimmModel) but the config "
                             "names no vision_cfg.timm_model_name")
        return _convert_timm_siglip(src, config, num_heads, activation, fn)
    cfg = open_clip_vit_config(config)
    d, p, F, depth, E = cfg["dim"], cfg["patch_size"], cfg["hidden_dim"], cfg["depth"], cfg["projection_dim"]
    n_tok = (cfg["image_size"] // p) ** 2 + 1
    km = KeyMap(src, fn, f"the open_clip vision config (width {d}, mlp width {F}, patch_size {p}, "
                         f"image_size {cfg['image_size']}, embed_dim {E})")
    v = "visual."
    out = {"encoder.patch_embed.weight": km.get(v + "conv1.weight", (d, 3, p, p)),
           "encoder.patch_embed.bias": np.zeros(d, np.float32)}
    cls = km.get(v + "class_embedding", (d,))
    out["encoder.extra_tokens"] = None if cls is None else cls.reshape(1, 1, d)
    pos = km.get(v + "positional_embedding", (n_tok, d))
    out["encoder.pos_embedding"] = None if pos is None else pos.reshape(1, n_tok, d)
    for w in ("weight", "bias"):
        out["encoder.pre_norm." + w] = km.get(v + "ln_pre." + w, (d,))
        out["post_norm." + w] = km.get(v + "ln_post." + w, (d,))
    _open_clip_blocks(km, v, depth, d, F, out, "encoder.")
    out["proj.weight"] = _transposed(km.get(v + "proj", (d, E)))
    km.finish(lambda k: k.startswith(_OPEN_CLIP_TEXT + _OPEN_CLIP_SHARED))
    return out


def _open_clip_vit_kwargs(src, config, num_heads, activation):
    """VisionTower's arguments for an open_clip checkpoint: its own ViT, or a timm SigLIP trunk."""
    vcfg = config.get("vision_cfg") if isinstance(config.get("vision_cfg"), dict) else {}
    if vcfg.get("timm_model_name"):
        t = "visual.trunk."
        shapes = {k[len(t):]: tuple(a.shape) for k, a in src.items() if k.startswith(t)}
        return open_clip_timm_siglip_config(config, shapes, num_heads, activation)
    return open_clip_vit_config(config)


def _convert_timm_siglip(src, config, num_heads, activation, fn):
    cfg = _open_clip_vit_kwargs(src, config, num_heads, activation)
    d, p, F, C = cfg["dim"], cfg["patch_size"], cfg["hidden_dim"], cfg["in_channels"]
    n_tok = (cfg["image_size"] // p) ** 2
    km = KeyMap(src, fn, f"the timm SigLIP tower (width {d}, mlp width {F}, patch_size {p}, "
                         f"image_size {cfg['image_size']})")
    t = "visual.trunk."
    out = {"encoder.patch_embed.weight": km.get(t + "patch_embed.proj.weight", (d, C, p, p)),
           "encoder.patch_embed.bias": km.get(t + "patch_embed.proj.bias", (d,)),
           "encoder.pos_embedding": km.get(t + "pos_embed", (1, n_tok, d))}
    for i in km.layers(cfg["depth"], t + "blocks."):
        b, m = f"{t}blocks.{i}.", f"encoder.layers.{i}."
        for w in ("weight", "bias"):
            vec = w == "bias"
            out[m + "norm1." + w] = km.get(b + "norm1." + w, (d,))
            out[m + "norm2." + w] = km.get(b + "norm2." + w, (d,))
            out[m + "attn.qkv_proj." + w] = km.get(b + "attn.qkv." + w, (3 * d,) if vec else (3 * d, d))
            out[m + "attn.out_proj." + w] = km.get(b + "attn.proj." + w, (d,) if vec else (d, d))
            out[m + "mlp.fc1." + w] = km.get(b + "mlp.fc1." + w, (F,) if vec else (F, d))
            out[m + "mlp.fc2." + w] = km.get(b + "mlp.fc2." + w, (d,) if vec else (d, F))
    a = t + "attn_pool."
    out["head.probe"] = km.get(a + "latent", (1, 1, d))
    for w in ("weight", "bias"):
        vec = w == "bias"
        out["encoder.norm." + w] = km.get(t + "norm." + w, (d,))
        out["head.attention.in_proj_" + w] = cat_rows([km.get(a + "q." + w, (d,) if vec else (d, d)),
                                                       km.get(a + "kv." + w, (2 * d,) if vec else (2 * d, d))])
        out["head.attention.out_proj." + w] = km.get(a + "proj." + w, (d,) if vec else (d, d))
        out["head.layernorm." + w] = km.get(a + "norm." + w, (d,))
        out["head.mlp.fc1." + w] = km.get(a + "mlp.fc1." + w, (F,) if vec else (F, d))
        out["head.mlp.fc2." + w] = km.get(a + "mlp.fc2." + w, (d,) if vec else (d, F))
    km.finish(lambda k: k.startswith(_OPEN_CLIP_TEXT + _OPEN_CLIP_SHARED))
    return out


def load_open_clip_vit(state_dict, config, prefix="", num_heads=None, activation="gelu"):
    """An open_clip / OpenAI CLIP checkpoint (state dict + open_clip model config, see
    convert_open_clip_vit_state_dict) -> an mmu VisionTower: tower(images) gives (features, pooled)
    with pooled = open_clip's encode_image (ln_post of the class token times visual.proj) and
    features the transformer's output before ln_post (B, 1 + N, width). For a timm SigLIP tower
    (num_heads required): features = the trunk's forward_features (after its final norm), pooled =
    its attention pool (open_clip's encode_image with timm_proj 'none')."""
    fn = "load_open_clip_vit"
    config = read_config(config, fn)
    weights = convert_open_clip_vit_state_dict(state_dict, config, prefix, num_heads, activation)  # checked first
    model = VisionTower(**_open_clip_vit_kwargs(checkpoint_arrays(state_dict, fn, prefix), config, num_heads,
                                                activation))
    model.load_state_dict(weights)
    return model


def convert_open_clip_text_state_dict(state_dict, config, prefix=""):
    """An open_clip / OpenAI CLIP state dict's text tower (the text keys of the table above, at the
    top or under text.; the visual.* keys, logit_scale / logit_bias and OpenAI's extra entries are
    skipped) and its open_clip model config (see open_clip_text_config) -> {TextEncoder key:
    float32 ndarray}. One ValueError names every missing, mis-shaped and unexpected key."""
    fn = "convert_open_clip_text_state_dict"
    config = read_config(config, fn)
    src = checkpoint_arrays(state_dict, fn, prefix)
    cfg = open_clip_text_config(config)
    t = "text." if any(k.startswith("text.") for k in src) else ""
    d, F, L, V, E = cfg["dim"], cfg["hidden_dim"], cfg["max_len"], cfg["vocab_size"], cfg["embed_dim"]
    km = KeyMap(src, fn, f"the open_clip text config (width {d}, mlp width {F}, context_length {L}, vocab_size {V}, "
                         f"embed_dim {E})")
    out = {"token_embedding.weight": km.get(t + "token_embedding.weight", (V, d))}
    pos = km.get(t + "positional_embedding", (L, d))
    out["pos_embedding"] = None if pos is None else pos.reshape(1, L, d)
    _open_clip_blocks(km, t, cfg["depth"], d, F, out, "")
    for w in ("weight", "bias"):
        out["final_norm." + w] = km.get(t + "ln_final." + w, (d,))
    if E is not None and cfg["layout"] == "siglip":             # proj_bias: an nn.Linear
        out["head.weight"] = km.get(t + "text_projection.weight", (E, d))
        out["head.bias"] = km.get(t + "text_projection.bias", (E,))
    elif E is not None:                                         # a (width, embed_dim) parameter: x @ proj
        out["head.weight"] = _transposed(km.get(t + "text_projection", (d, E)))
    km.finish(lambda k: k.startswith(("visual.", t + "attn_mask") + _OPEN_CLIP_SHARED))
    return out


# --------------------------------------------------------------------------------------------------
# Hugging Face text towers -> TextEncoder
#
# | Hugging Face key (under text_model., i = layer)            | mmu TextEncoder key                 |
# |-------------------------------------------------------------|-------------------------------------|
# | embeddings.token_embedding.weight (V, d)                    | token_embedding.weight              |
# | embeddings.position_embedding.weight (L, d)                 | pos_embedding (1, L, d)             |
# | encoder.layers.i.layer_norm1 / layer_norm2                  | layers.i.norm1 / norm2              |
# | encoder.layers.i.self_attn.{q,k,v}_proj.*                   | layers.i.attn.qkv_proj.* ([q;k;v])  |
# | encoder.layers.i.self_attn.out_proj.*                       | layers.i.attn.out_proj.*            |
# | encoder.layers.i.mlp.fc1 / fc2                              | layers.i.mlp.fc1 / fc2              |
# | final_layer_norm.*                                          | final_norm.*                        |
# | head.weight / head.bias                   (SigLIP)          | head.weight / head.bias             |
# | text_projection.weight (E, d), top level  (CLIP, no bias)   | head.weight                         |

_OTHER_TEXT = ("vision_model.", "visual_projection.", "logit_scale", "logit_bias")


def convert_text_state_dict(state_dict, config, layout=None, projection=None, prefix=""):
    """A SigLIP / CLIP text tower in Hugging Face's layout (SiglipTextModel, CLIPTextModel,
    CLIPTextModelWithProjection, or the text half of SiglipModel / CLIPModel: the table above) and
    its config.json (dict or path) -> {TextEncoder key: float32 ndarray} for
    TextEncoder(**text_config_from_hf(config, layout, projection)). projection (CLIP): read
    text_projection.weight into the head; None = when the state dict holds it. The vision tower's
    keys, logit_scale / logit_bias and the position_ids buffer are skipped. One ValueError names every
    missing key, every shape that does not fit (both shapes) and every unexpected key."""
    fn = "convert_text_state_dict"
    config = read_config(config, fn)
    src = checkpoint_arrays(state_dict, fn, prefix)
    if any(k.startswith(("token_embedding.", "text.token_embedding.")) or ".resblocks." in k for k in src):
        raise ValueError(f"{fn}: these are open_clip / OpenAI CLIP keys (token_embedding, transformer.resblocks.*), "
                         "not Hugging Face's (text_model.*); use convert_open_clip_text_state_dict")
    if projection is None:
        projection = "text_projection.weight" in src
    cfg = text_config_from_hf(config, layout, projection)
    tm = "text_model." if any(k.startswith("text_model.") for k in src) else ""
    d, F, L, V, E = cfg["dim"], cfg["hidden_dim"], cfg["max_len"], cfg["vocab_size"], cfg["embed_dim"]
    km = KeyMap(src, fn, f"the {cfg['layout']} text config (hidden_size {d}, intermediate_size {F}, "
                         f"max_position_embeddings {L}, vocab_size {V}, projection {E})")

    def get(key, shape):
        return km.get(tm + key, shape)

    out = {"token_embedding.weight": get("embeddings.token_embedding.weight", (V, d))}
    pos = get("embeddings.position_embedding.weight", (L, d))
    out["pos_embedding"] = None if pos is None else pos.reshape(1, L, d)
    for i in km.layers(cfg["depth"], tm + "encoder.layers."):
        hf, mm = f"encoder.layers.{i}.", f"layers.{i}."
        for w in ("weight", "bias"):
            vec = w == "bias"
            out[mm + "norm1." + w] = get(hf + "layer_norm1." + w, (d,))
            out[mm + "norm2." + w] = get(hf + "layer_norm2." + w, (d,))
            out[mm + "attn.qkv_proj." + w] = cat_rows([get(f"{hf}self_attn.{n}_proj.{w}", (d,) if vec else (d, d))
                                                       for n in "qkv"])
            out[mm + "attn.out_proj." + w] = get(hf + "self_attn.out_proj." + w, (d,) if vec else (d, d))
            out[mm + "mlp.fc1." + w] = get(hf + "mlp.fc1." + w, (F,) if vec else (F, d))
            out[mm + "mlp.fc2." + w] = get(hf + "mlp.fc2." + w, (d,) if vec else (d, F))
    for w in ("weight", "bias"):
        out["final_norm." + w] = get("final_layer_norm." + w, (d,))
    if cfg["layout"] == "siglip":
        out["head.weight"] = get("head.weight", (E, d))
        out["head.bias"] = get("head.bias", (E,))
    elif E is not None:
        out["head.weight"] = km.get("text_projection.weight", (E, d))   # CLIPModel's: beside text_model
    km.finish(lambda k: k.startswith(_OTHER_TEXT) or k == tm + "embeddings.position_ids")
    return out
