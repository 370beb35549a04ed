"""SigLIP / CLIP vision configs (Hugging Face SiglipVisionConfig / CLIPVisionConfig, or the
vision_config inside a SiglipConfig / CLIPConfig) -> mmu.models.vit.VisionTower's constructor
arguments."""
from .._hf import config_float, config_int, read_config
from ..phi.config import HF_ACTIVATIONS

__all__ = ["vit_config_from_hf"]

_MODEL_TYPES = {"siglip_vision_model": "siglip", "siglip": "siglip", "clip_vision_model": "clip", "clip": "clip"}
# transformers' defaults per layout: SiglipVisionConfig / CLIPVisionConfig
_DEFAULTS = {"siglip": dict(image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
             "clip": dict(image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)}


def vit_config_from_hf(config, layout=None, num_layers=None):
    """A vision tower's config.json (dict or path; a full SigLIP/CLIP config's vision_config is used)
    -> the keyword arguments of VisionTower. layout: 'siglip' or 'clip', read from model_type
    (siglip_vision_model / siglip / clip_vision_model / clip) when None. Fields (transformers'
    defaults): hidden_size 768, intermediate_size 3072, num_hidden_layers 12, num_attention_heads 12,
    num_channels 3, image_size 224, patch_size 16 (SigLIP) / 32 (CLIP), hidden_act gelu_pytorch_tanh /
    quick_gelu, layer_norm_eps 1e-6 / 1e-5, vision_use_head True (SigLIP's attention-pooling head).

    num_layers: None for the whole tower (features = last_hidden_state, pooled = pooler_output); an
    int k in 1..N, or -N-1 < k < 0 counted from the end as transformers' hidden_states[k] (VILA-U
    reads hidden_states[-2]), for a tower cut after that layer, without final norm or pooling."""
    fn = "vit_config_from_hf"
    c = read_config(config, fn)
    mt = c.get("model_type")
    if mt is not None and mt not in _MODEL_TYPES:
        raise ValueError(f"{fn}: model_type {mt!r} is not a SigLIP or CLIP config ({sorted(_MODEL_TYPES)})")
    if mt in ("siglip", "clip") and "vision_config" in c:
        c = c["vision_config"] or {}
        if not isinstance(c, dict):
            raise TypeError(f"{fn}: vision_config must be a dict, got {type(c).__name__}")
    if layout is None:
        if mt is None:
            raise ValueError(f"{fn}: the config has no model_type; pass layout='siglip' or 'clip'")
        layout = _MODEL_TYPES[mt]
    elif layout not in ("siglip", "clip"):
        raise ValueError(f"{fn}: layout must be 'siglip' or 'clip', got {layout!r}")
    elif mt is not None and _MODEL_TYPES[mt] != layout:
        raise ValueError(f"{fn}: layout {layout!r} contradicts the config's model_type {mt!r}")
    dflt = _DEFAULTS[layout]
    act = c.get("hidden_act", dflt["hidden_act"])
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"{fn}: hidden_act {act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    dim = config_int(c, "hidden_size", fn, 768)
    heads = config_int(c, "num_attention_heads", fn, 12)
    if dim % heads:
        raise ValueError(f"{fn}: hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    depth = config_int(c, "num_hidden_layers", fn, 12)
    image_size = config_int(c, "image_size", fn, dflt["image_size"])
    patch_size = config_int(c, "patch_size", fn, dflt["patch_size"])
    if image_size % patch_size:
        raise ValueError(f"{fn}: patch_size {patch_size} does not divide image_size {image_size}")
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
    return dict(layout=layout, image_size=image_size, patch_size=patch_size,
                in_channels=config_int(c, "num_channels", fn, 3), dim=dim, depth=depth, num_heads=heads,
                hidden_dim=config_int(c, "intermediate_size", fn, 3072), activation=HF_ACTIVATIONS[act],
                norm_eps=config_float(c, "layer_norm_eps", fn, dflt["layer_norm_eps"]), final_norm=final_norm,
                pooling=pooling)
