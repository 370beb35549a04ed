"""SigLIP and CLIP vision towers in Hugging Face's layout (transformers' SiglipVisionModel /
CLIPVisionModel, or the vision half of SiglipModel / CLIPModel) -> mmu.models.vit.VisionTower. The
user reads the safetensors file they have and passes the dict; nothing is downloaded.

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

Keys not part of the vision tower in a two-tower checkpoint (text_model.*, logit_scale, logit_bias,
text_projection.weight, visual_projection.weight) and the position_ids buffer older CLIP files
store are skipped; a tower cut after layer k (num_layers) skips the later layers, post_layernorm
and the head. open_clip's / OpenAI's own layout (visual.transformer.resblocks.*) is not this one
and is refused with that reason.
"""
import numpy as np

from .._hf import KeyMap, cat_rows, checkpoint_arrays, read_config
from .config import vit_config_from_hf
from .model import VisionTower

__all__ = ["convert_vit_state_dict", "load_vit"]

_OTHER_TOWER = ("text_model.", "logit_scale", "logit_bias", "text_projection.", "visual_projection.")


def convert_vit_state_dict(state_dict, config, layout=None, num_layers=None, prefix=""):
    """A SigLIP / CLIP vision state dict (keys above, with or without the vision_model. prefix;
    NumPy arrays, torch tensors of any float dtype, bfloat16 included, or mmu Tensors) and its
    config.json (dict or path) -> {mmu VisionTower key: float32 ndarray} for
    VisionTower(**vit_config_from_hf(config, layout, num_layers)). ValueError naming every missing
    key, every key whose shape does not fit the config (with both shapes) and every unexpected key.
    prefix: read only the keys that start with it, without it (a tower stored inside another model);
    the other keys are left alone."""
    fn = "convert_vit_state_dict"
    cfg = vit_config_from_hf(read_config(config, fn), layout, num_layers)
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
    for i in range(depth):
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


def load_vit(state_dict, config, layout=None, num_layers=None, prefix=""):
    """A SigLIP / CLIP vision tower checkpoint (state dict + config.json, see convert_vit_state_dict)
    -> an mmu VisionTower with its weights: tower(images) gives transformers' (last_hidden_state,
    pooler_output) in float32, or with num_layers=k its hidden_states[k] and None."""
    config = read_config(config, "load_vit")
    model = VisionTower(**vit_config_from_hf(config, layout, num_layers))
    model.load_state_dict(convert_vit_state_dict(state_dict, config, layout, num_layers, prefix))
    return model
