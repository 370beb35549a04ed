"""SigLIP / CLIP tower configs -> constructor arguments: Hugging Face vision configs
(SiglipVisionConfig / CLIPVisionConfig, or the vision_config inside a SiglipConfig / CLIPConfig) and
open_clip's model configs (vision_cfg) -> mmu.models.vit.VisionTower; Hugging Face text configs
(SiglipTextConfig / CLIPTextConfig, or text_config) and open_clip's text_cfg ->
mmu.models.vila_u.TextEncoder."""
from .._hf import config_float, config_int, read_config
from ..phi.config import HF_ACTIVATIONS

__all__ = ["vit_config_from_hf", "open_clip_vit_config", "open_clip_timm_siglip_config", "open_clip_text_config",
           "text_config_from_hf"]

_MODEL_TYPES = {"siglip_vision_model": "siglip", "siglip": "siglip", "clip_vision_model": "clip", "clip": "clip"}
# transformers' defaults per layout: SiglipVisionConfig / CLIPVisionConfig
_DEFAULTS = {"siglip": dict(image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
             "clip": dict(image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)}


def vit_config_from_hf(config, layout=None, num_layers=None, projection=False):
    """A vision tower's config.json (dict or path; a full SigLIP/CLIP config's vision_config is used)
    -> the keyword arguments of VisionTower. layout: 'siglip' or 'clip', read from model_type
    (siglip_vision_model / siglip / clip_vision_model / clip) when None. Fields (transformers'
    defaults): hidden_size 768, intermediate_size 3072, num_hidden_layers 12, num_attention_heads 12,
    num_channels 3, image_size 224, patch_size 16 (SigLIP) / 32 (CLIP), hidden_act gelu_pytorch_tanh /
    quick_gelu, layer_norm_eps 1e-6 / 1e-5, vision_use_head True (SigLIP's attention-pooling head).

    num_layers: None for the whole tower (features = last_hidden_state, pooled = pooler_output); an
    int k in 1..N, or -N-1 < k < 0 counted from the end as transformers' hidden_states[k] (VILA-U
    reads hidden_states[-2]), for a tower cut after that layer, without final norm or pooling.

    projection (CLIP, whole tower): pooled goes through CLIPModel's / CLIPVisionModelWithProjection's
    visual_projection (no bias) to projection_dim (512 by default; a CLIPConfig keeps it at the top,
    a CLIPVisionConfig has its own), i.e. transformers' image_embeds."""
    fn = "vit_config_from_hf"
    c = read_config(config, fn)
    top = c
    mt = c.get("model_type")
    if mt is not None and (not isinstance(mt, str) or mt not in _MODEL_TYPES):
        raise ValueError(f"{fn}: model_type {mt!r} is not a SigLIP or CLIP config ({sorted(_MODEL_TYPES)})")
    if mt in ("siglip", "clip") and "vision_config" in c:
        c = c["vision_config"] or {}
        if not isinstance(c, dict):
            raise TypeError(f"{fn}: vision_config must be a dict, got {type(c).__name__}")
    if layout is None:
        if mt is None:
            raise ValueError(f"{fn}: the config has no model_type; pass layout='siglip' or 'clip'")
        layout = _MODEL_TYPES[mt]
    elif not isinstance(layout, str) or layout not in ("siglip", "clip"):
        raise ValueError(f"{fn}: layout must be 'siglip' or 'clip', got {layout!r}")
    elif mt is not None and _MODEL_TYPES[mt] != layout:
        raise ValueError(f"{fn}: layout {layout!r} contradicts the config's model_type {mt!r}")
    dflt = _DEFAULTS[layout]
    act = c.get("hidden_act", dflt["hidden_act"])
    if not isinstance(act, str) or act not in HF_ACTIVATIONS:
        raise ValueError(f"{fn}: hidden_act {act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    dim = config_int(c, "hidden_size", fn, 768)
    heads = config_int(c, "num_attention_heads", fn, 12)
    if dim % heads:
        raise ValueError(f"{fn}: hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    depth = config_int(c, "num_hidden_layers", fn, 12)
    image_size = config_int(c, "image_size", fn, dflt["image_size"])
    patch_size = config_int(c, "patch_size", fn, dflt["patch_size"])
    if image_size < patch_size:
        raise ValueError(f"{fn}: image_size {image_size} is smaller than one patch ({patch_size})")
    if num_layers is None:
        final_norm = layout == "siglip"
        pooling = ("attention" if c.get("vision_use_head", True) else None) if layout == "siglip" else "cls"
    else:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not -depth - 1 < num_layers <= depth \
                or num_layers == 0:
            raise ValueError(f"{fn}: num_layers must be an int in 1..{depth} or -{depth}..-1 (hidden_states "
                             f"indices of a {depth}-layer tower, 0 = the embeddings excluded), got {num_layers!r}")
        depth = num_layers if num_layers > 0 else depth + 1 + num_layers
        final_norm, pooling = False, None
    if projection and (layout != "clip" or pooling != "cls"):
        raise ValueError(f"{fn}: projection is CLIP's visual_projection of the pooled class token (layout 'clip', "
                         "the whole tower)")
    proj = config_int(top if top is not c else c, "projection_dim", fn, 512) if projection else None
    return dict(layout=layout, image_size=image_size, patch_size=patch_size,
                in_channels=config_int(c, "num_channels", fn, 3), dim=dim, depth=depth, num_heads=heads,
                hidden_dim=config_int(c, "intermediate_size", fn, 3072), activation=HF_ACTIVATIONS[act],
                norm_eps=config_float(c, "layer_norm_eps", fn, dflt["layer_norm_eps"]), final_norm=final_norm,
                pooling=pooling, projection_dim=proj)


# --------------------------------------------------------------------------------------------------
# open_clip's model configs (src/open_clip/model_configs/*.json: embed_dim, quick_gelu, vision_cfg,
# text_cfg; the fields of its CLIPVisionCfg / CLIPTextCfg dataclasses, their defaults when absent)

def _open_clip_parts(config, fn):
    c = read_config(config, fn)
    for part in ("vision_cfg", "text_cfg"):
        if not isinstance(c.get(part, {}), dict):
            raise TypeError(f"{fn}: config[{part!r}] must be a dict, got {type(c[part]).__name__}")
    return c, c.get("vision_cfg") or {}, c.get("text_cfg") or {}


def _open_clip_eps(cfg, fn, part):
    """norm_kwargs may only set LayerNorm's eps (torch's default 1e-5 otherwise)."""
    kw = cfg.get("norm_kwargs") or {}
    if not isinstance(kw, dict) or set(kw) - {"eps"}:
        raise ValueError(f"{fn}: {part}.norm_kwargs {kw!r} sets more than LayerNorm's eps; not supported")
    return config_float(kw, "eps", fn, 1e-5)


def _open_clip_activation(c, cfg, fn, part):
    """QuickGELU when the model config's quick_gelu is true (OpenAI's weights), else nn.GELU (exact)."""
    if cfg.get("act_kwargs") not in (None, {}):
        raise ValueError(f"{fn}: {part}.act_kwargs {cfg['act_kwargs']!r} is not supported (plain GELU / QuickGELU only)")
    return "quick_gelu" if c.get("quick_gelu", False) else "gelu"


_OPEN_CLIP_CUSTOM_BLOCK = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


def _open_clip_refuse(cfg, fn, part, fields):
    """Each (field, allowed default, reason) whose value is set otherwise -> one ValueError naming them all."""
    bad = [f"{part}.{k}={cfg[k]!r} ({why})" for k, ok, why in fields if cfg.get(k) is not None and cfg[k] != ok]
    for k in _OPEN_CLIP_CUSTOM_BLOCK:
        if cfg.get(k):
            bad.append(f"{part}.{k}=True (open_clip's CustomResidualAttentionBlock, other math and keys)")
    if cfg.get("block_type") not in (None, "default"):
        bad.append(f"{part}.block_type={cfg['block_type']!r} (only the default ResidualAttentionBlock)")
    if bad:
        raise ValueError(f"{fn}: this open_clip config uses what mmu does not build: " + "; ".join(bad))


def open_clip_vit_config(config):
    """An open_clip model config (dict or path of a model_configs/*.json: embed_dim, quick_gelu,
    vision_cfg) with a ViT vision tower (open_clip's VisionTransformer, keys visual.conv1 ...
    visual.transformer.resblocks.i ... visual.proj) -> the keyword arguments of VisionTower:
    layout 'clip' (class token, ln_pre, pre-norm blocks), pooling 'cls' (ln_post of the class token,
    open_clip's pool_type 'tok'), projection_dim = embed_dim (visual.proj). vision_cfg fields and
    open_clip's defaults: layers 12, width 768, head_width 64 (num_heads = width / head_width),
    mlp_ratio 4.0, patch_size 16, image_size 224, norm_kwargs {'eps': 1e-5}; activation QuickGELU when
    quick_gelu is true, else exact GELU.

    Refused with the reason: a ResNet tower (layers a list), timm towers (timm_model_name: see
    open_clip_timm_siglip_config), layer scale (ls_init_value), attentional pooling, no_ln_pre, pool_type
    'avg' / 'none', act_kwargs, norm_kwargs beyond eps, the custom attention blocks (qk_norm,
    scaled_cosine_attn, scale_heads, scale_attn_inner, scale_attn, scale_fc). final_ln_after_pool is
    accepted: with the class token pooled, LayerNorm before or after pooling is the same number."""
    fn = "open_clip_vit_config"
    c, v, _ = _open_clip_parts(config, fn)
    if v.get("timm_model_name"):
        raise ValueError(f"{fn}: vision_cfg.timm_model_name {v['timm_model_name']!r} is a timm tower "
                         "(visual.trunk.* keys); see open_clip_timm_siglip_config / load_open_clip_vit(..., num_heads=...)")
    layers = v.get("layers", 12)
    if isinstance(layers, (list, tuple)):
        raise ValueError(f"{fn}: vision_cfg.layers {layers!r} is open_clip's ModifiedResNet (a ResNet tower), "
                         "not a ViT; not supported")
    _open_clip_refuse(v, fn, "vision_cfg", [
        ("ls_init_value", None, "layer scale, ls_1/ls_2.gamma"), ("attentional_pool", False, "CoCa's attention pooler"),
        ("no_ln_pre", False, "VisionTower's CLIP layout always has ln_pre"),
        ("pool_type", "tok", "only the class token is pooled")])
    width = config_int(v, "width", fn, 768)
    head_width = config_int(v, "head_width", fn, 64)
    if width % head_width:
        raise ValueError(f"{fn}: vision_cfg.width {width} is not a multiple of head_width {head_width}")
    image_size, patch_size = v.get("image_size", 224), config_int(v, "patch_size", fn, 16)
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2 and image_size[0] == image_size[1]:
        image_size = image_size[0]
    image_size = config_int({"image_size": image_size}, "image_size", fn)
    if image_size < patch_size:
        raise ValueError(f"{fn}: image_size {image_size} is smaller than one patch ({patch_size})")
    mlp_ratio = config_float(v, "mlp_ratio", fn, 4.0)
    return dict(layout="clip", image_size=image_size, patch_size=patch_size, in_channels=3, dim=width,
                depth=config_int({"layers": layers}, "layers", fn), num_heads=width // head_width,
                hidden_dim=int(width * mlp_ratio), activation=_open_clip_activation(c, v, fn, "vision_cfg"),
                norm_eps=_open_clip_eps(v, fn, "vision_cfg"), final_norm=False, pooling="cls",
                projection_dim=config_int(c, "embed_dim", fn, 512))


def open_clip_timm_siglip_config(config, shapes, num_heads, activation="gelu"):
    """An open_clip model config whose vision tower is a timm SigLIP ViT (vision_cfg.timm_model_name
    'vit_*_siglip_*', timm_pool 'map', timm_proj 'none': open_clip's SigLIP configs; keys
    visual.trunk.*) -> the keyword arguments of VisionTower (layout 'siglip', final norm, attention
    pooling head = timm's AttentionPoolLatent). A timm model name fixes the sizes in timm's code, not
    in the config: width, depth, patch size and MLP width are read from the file's shapes (shapes:
    {key under visual.trunk.: shape}), the image size from vision_cfg.image_size; the head count is
    in neither, so num_heads must be given (timm's SigLIP definitions: 12 base, 16 large / so400m).
    activation: timm's VisionTransformer default, exact GELU, unless the caller knows otherwise;
    LayerNorm eps 1e-6 (timm's default norm_layer).

    Refused with the reason: other timm models, pooling other than 'map' (e.g. 'avg'), a projection
    head (timm_proj 'linear' / 'mlp': visual.head.*), timm_model_kwargs, a class token or register
    tokens (trunk.cls_token / reg_token)."""
    fn = "open_clip_timm_siglip_config"
    c, v, _ = _open_clip_parts(config, fn)
    name = v.get("timm_model_name")
    if not isinstance(name, str) or not name.startswith("vit_") or "_siglip" not in name:
        raise ValueError(f"{fn}: vision_cfg.timm_model_name {name!r} is not one of timm's SigLIP ViTs (vit_*_siglip_*); "
                         "other timm towers are not supported")
    bad = []
    if v.get("timm_pool", "avg") != "map":
        bad.append(f"timm_pool {v.get('timm_pool', 'avg')!r} (only 'map', SigLIP's attention pooling)")
    if v.get("timm_proj", "linear") not in ("none", None, ""):
        bad.append(f"timm_proj {v.get('timm_proj', 'linear')!r} (a projection head after the trunk)")
    if v.get("timm_model_kwargs"):
        bad.append(f"timm_model_kwargs {v['timm_model_kwargs']!r}")
    if any(k in shapes for k in ("cls_token", "reg_token")):
        bad.append("a class / register token (trunk.cls_token / reg_token)")
    if bad:
        raise ValueError(f"{fn}: this timm tower is not what VisionTower builds: " + "; ".join(bad))
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"{fn}: num_heads must be given as an int >= 1 (a timm model's head count is neither in "
                         f"open_clip's config nor in the weights), got {num_heads!r}")
    need = ("pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in need if k not in shapes]
    if missing:
        raise ValueError(f"{fn}: the state dict lacks {['visual.trunk.' + k for k in missing]}, needed for the sizes")
    ndims = {"pos_embed": 3, "patch_embed.proj.weight": 4, "blocks.0.mlp.fc1.weight": 2}
    wrong = [f"visual.trunk.{k} {tuple(shapes[k])} (needs {n} dims)" for k, n in ndims.items() if len(shapes[k]) != n]
    if wrong:
        raise ValueError(f"{fn}: the sizes cannot be read from " + ", ".join(wrong))
    width, (hidden, _), patch = shapes["pos_embed"][-1], shapes["blocks.0.mlp.fc1.weight"], \
        shapes["patch_embed.proj.weight"][-1]
    depth = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit())
    if width % num_heads:
        raise ValueError(f"{fn}: the width {width} is not a multiple of num_heads {num_heads}")
    image_size = v.get("image_size", 224)
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2 and image_size[0] == image_size[1]:
        image_size = image_size[0]
    image_size = config_int({"image_size": image_size}, "image_size", fn)
    if activation not in ("gelu", "gelu_tanh", "quick_gelu"):
        raise ValueError(f"{fn}: activation must be 'gelu' (timm's default), 'gelu_tanh' or 'quick_gelu', "
                         f"got {activation!r}")
    return dict(layout="siglip", image_size=image_size, patch_size=int(patch),
                in_channels=int(shapes["patch_embed.proj.weight"][1]), dim=int(width), depth=depth,
                num_heads=num_heads, hidden_dim=int(hidden), activation=activation, norm_eps=1e-6, final_norm=True,
                pooling="attention")


def open_clip_text_config(config):
    """An open_clip model config (dict or path: embed_dim, quick_gelu, text_cfg) with open_clip's own
    TextTransformer (keys token_embedding, positional_embedding, transformer.resblocks.i, ln_final,
    text_projection; under text. in a CustomTextCLIP) -> the keyword arguments of
    mmu.models.vila_u.TextEncoder. text_cfg fields and open_clip's defaults: context_length 77,
    vocab_size 49408, width 512, heads 8, layers 12, mlp_ratio 4.0, no_causal_mask False, pool_type
    'argmax', eos_id, proj_type 'linear', proj_bias False, norm_kwargs {'eps': 1e-5}; activation
    QuickGELU when quick_gelu is true, else exact GELU.

    The two pairings TextEncoder builds: a causal mask pooled at the EOT token (pool_type 'argmax', the
    highest id, or 'eos' at text_cfg.eos_id) = layout 'clip', text_projection a (width, embed_dim)
    matrix without bias (proj_bias False); no causal mask pooled at the last position (pool_type
    'last') = layout 'siglip', text_projection a Linear with bias (proj_bias True, open_clip's SigLIP
    configs). proj_type 'none' (or embed_dim 0): no head (embed_dim None). Refused with the reason:
    the other pairings, 'first' pooling, a class token (embed_cls, CoCa), layer scale, Hugging Face
    text towers (hf_model_name), text_arch 'modern', act_kwargs, norm_kwargs beyond eps, the custom
    attention blocks."""
    fn = "open_clip_text_config"
    c, _, t = _open_clip_parts(config, fn)
    if t.get("hf_model_name"):
        raise ValueError(f"{fn}: text_cfg.hf_model_name {t['hf_model_name']!r} is a Hugging Face text tower inside "
                         "open_clip (text.transformer.* of that model's own layout); not supported")
    if t.get("text_arch", "clip") != "clip":
        raise ValueError(f"{fn}: text_cfg.text_arch {t['text_arch']!r} (open_clip's ModernTextTransformer: rope, "
                         "swiglu, rmsnorm) is not supported; only the CLIP text transformer")
    _open_clip_refuse(t, fn, "text_cfg", [
        ("ls_init_value", None, "layer scale, ls_1/ls_2.gamma"), ("embed_cls", False, "CoCa's appended class token")])
    causal = not t.get("no_causal_mask", False)
    pool = t.get("pool_type", "argmax")
    proj_type = t.get("proj_type", "linear")
    proj_bias = bool(t.get("proj_bias", False))
    if proj_type not in ("linear", "none"):
        raise ValueError(f"{fn}: text_cfg.proj_type {proj_type!r} is not supported ('linear' or 'none')")
    embed_dim = c.get("embed_dim", 512)
    head = proj_type == "linear" and bool(embed_dim)
    eot = None
    if causal and pool in ("argmax", "eos"):
        layout = "clip"
        if pool == "eos":
            eot = config_int(t, "eos_id", fn, minimum=0)
    elif not causal and pool == "last":
        layout = "siglip"
    else:
        raise ValueError(f"{fn}: text_cfg {'with' if causal else 'without'} a causal mask pooled by {pool!r} is not "
                         "one of TextEncoder's layouts (causal + 'argmax'/'eos' = CLIP, bidirectional + 'last' = "
                         "SigLIP)")
    if head and proj_bias != (layout == "siglip"):
        raise ValueError(f"{fn}: text_cfg.proj_bias {proj_bias} with the {layout} layout: TextEncoder's head has a "
                         f"bias exactly in the SigLIP layout")
    width = config_int(t, "width", fn, 512)
    heads = config_int(t, "heads", fn, 8)
    if width % heads:
        raise ValueError(f"{fn}: text_cfg.width {width} is not a multiple of heads {heads}")
    out = dict(vocab_size=config_int(t, "vocab_size", fn, 49408), max_len=config_int(t, "context_length", fn, 77),
               dim=width, depth=config_int(t, "layers", fn, 12), num_heads=heads,
               hidden_dim=int(width * config_float(t, "mlp_ratio", fn, 4.0)),
               embed_dim=config_int(c, "embed_dim", fn, 512) if head else None, layout=layout,
               activation=_open_clip_activation(c, t, fn, "text_cfg"), norm_eps=_open_clip_eps(t, fn, "text_cfg"))
    if layout == "clip":
        out["eot_token_id"] = eot
    return out


# --------------------------------------------------------------------------------------------------
# Hugging Face text towers: SiglipTextModel / CLIPTextModel (CLIPTextModelWithProjection), or the
# text_config of a SiglipConfig / CLIPConfig

_TEXT_MODEL_TYPES = {"siglip_text_model": "siglip", "siglip": "siglip", "clip_text_model": "clip", "clip": "clip"}
# transformers' defaults: SiglipTextConfig / CLIPTextConfig
_TEXT_DEFAULTS = {"siglip": dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                 max_position_embeddings=64, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
                  "clip": dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                               max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)}


def text_config_from_hf(config, layout=None, projection=True):
    """A text tower's config.json (dict or path; a full SigLIP / CLIP config's text_config is used,
    its projection_dim with it) -> the keyword arguments of mmu.models.vila_u.TextEncoder.

    layout 'siglip' (SiglipTextModel): no causal mask, pooled = head(final_layer_norm(x)[:, -1]) with
    head a Linear with bias to projection_size (hidden_size when absent); 'clip' (CLIPTextModel):
    causal mask, pooled = final_layer_norm(x) at the EOT token: the highest id in the row when
    eos_token_id is 2 (configs from before transformers PR #24773), else the first position holding
    eos_token_id (eot_token_id); with projection (CLIPTextModelWithProjection / CLIPModel's
    text_projection, no bias) embed_dim = projection_dim (512 by default), without it None.
    Fields (transformers' defaults, SigLIP / CLIP): vocab_size 32000 / 49408, hidden_size 768 / 512,
    intermediate_size 3072 / 2048, num_hidden_layers 12, num_attention_heads 12 / 8,
    max_position_embeddings 64 / 77, hidden_act gelu_pytorch_tanh / quick_gelu, layer_norm_eps
    1e-6 / 1e-5, eos_token_id 49407 (CLIP)."""
    fn = "text_config_from_hf"
    c = read_config(config, fn)
    mt = c.get("model_type")
    if mt is not None and (not isinstance(mt, str) or mt not in _TEXT_MODEL_TYPES):
        raise ValueError(f"{fn}: model_type {mt!r} is not a SigLIP or CLIP config ({sorted(_TEXT_MODEL_TYPES)})")
    top = c
    if mt in ("siglip", "clip") and "text_config" in c:
        c = c["text_config"] or {}
        if not isinstance(c, dict):
            raise TypeError(f"{fn}: text_config must be a dict, got {type(c).__name__}")
    if layout is None:
        if mt is None:
            raise ValueError(f"{fn}: the config has no model_type; pass layout='siglip' or 'clip'")
        layout = _TEXT_MODEL_TYPES[mt]
    elif not isinstance(layout, str) or layout not in ("siglip", "clip"):
        raise ValueError(f"{fn}: layout must be 'siglip' or 'clip', got {layout!r}")
    elif mt is not None and _TEXT_MODEL_TYPES[mt] != layout:
        raise ValueError(f"{fn}: layout {layout!r} contradicts the config's model_type {mt!r}")
    d = _TEXT_DEFAULTS[layout]
    act = c.get("hidden_act", d["hidden_act"])
    if not isinstance(act, str) or act not in HF_ACTIVATIONS:
        raise ValueError(f"{fn}: hidden_act {act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    dim = config_int(c, "hidden_size", fn, d["hidden_size"])
    heads = config_int(c, "num_attention_heads", fn, d["num_attention_heads"])
    if dim % heads:
        raise ValueError(f"{fn}: hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    if layout == "siglip":
        embed_dim = config_int(c, "projection_size", fn, dim)
    elif projection:
        # CLIPModel keeps projection_dim at the top; CLIPTextConfig (CLIPTextModelWithProjection) has its own
        embed_dim = config_int(top if top is not c else c, "projection_dim", fn, 512)
    else:
        embed_dim = None
    out = dict(vocab_size=config_int(c, "vocab_size", fn, d["vocab_size"]),
               max_len=config_int(c, "max_position_embeddings", fn, d["max_position_embeddings"]), dim=dim,
               depth=config_int(c, "num_hidden_layers", fn, 12), num_heads=heads,
               hidden_dim=config_int(c, "intermediate_size", fn, d["intermediate_size"]), embed_dim=embed_dim,
               layout=layout, activation=HF_ACTIVATIONS[act],
               norm_eps=config_float(c, "layer_norm_eps", fn, d["layer_norm_eps"]))
    if layout == "clip":
        eos = config_int(c, "eos_token_id", fn, 49407, minimum=0)
        out["eot_token_id"] = None if eos == 2 else eos
    return out
