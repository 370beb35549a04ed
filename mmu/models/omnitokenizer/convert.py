"""OmniTokenizer's checkpoint layout (FoundationVision/OmniTokenizer: the VQGAN Lightning module's
state_dict, keys as its modules define them) -> mmu.models.omnitokenizer.OmniTokenizer. The user reads the
file they have (torch.load(path, map_location="cpu")["state_dict"], or a dict of arrays) and passes the
dict; nothing is downloaded and torch is never imported.

| OmniTokenizer key | mmu key |
|---|---|
| encoder.to_patch_emb_first_frame.{1,2,3}.* (LayerNorm, Linear, LayerNorm) | encoder.first_frame_embed.{norm_in,proj,norm_out}.* |
| encoder.to_patch_emb.{1,2,3}.* | encoder.tube_embed.{norm_in,proj,norm_out}.* |
| {encoder.enc,decoder.dec}_{spatial,temporal}_transformer | {encoder,decoder}.{spatial,temporal} |
| ...layers.{i}.0.dsconv.* (PEG) | ...layers.{i}.peg.dsconv.* |
| ...layers.{i}.1.{norm.gamma,norm.beta,to_q,to_kv,q_scale,k_scale,to_out} (Attention) | ...layers.{i}.attn.* (same names) |
| ...layers.{i}.1.{norm.*,relative_position_bias_table,qkv.weight,proj.*} (WindowAttention) | ...layers.{i}.attn.* (same) |
| ...layers.{i}.3.{0,1,4}.* (FeedForward: LayerNorm, Linear, Linear) | ...layers.{i}.ff.{norm,proj_in,proj_out}.* |
| ...norm_out.{gamma,beta} | the same |
| pre_vq_conv.1.*, post_vq_conv.1.* | pre_quant.*, post_quant.* |
| codebook.embeddings (K, d), codebook.z_avg, codebook.N (K,) | quantize.embed (1, K, d), quantize.embed_avg, quantize.cluster_size (1, K) |
| decoder.to_pixels_first_frame.0.*, decoder.to_pixels.0.* | decoder.to_pixels_first_frame.*, decoder.to_pixels.* |

Dropped: the attention blocks' spatial_rel_pos_bias.* (ContinuousPositionBias: the code computes it but its
SDPA path, taken with torch >= 2.1, never adds it) and context_norm.* (no context in the tokenizer),
WindowAttention.relative_position_index (recomputed; a checkpoint whose index differs is refused),
codebook.codebook_usage (a usage statistic), the discriminators (image_discriminator.*,
video_discriminator.*) and the LPIPS network (perceptual_model.*). A converted model's codebook counts as
initialised (codebook_initted = 1), so training it does not re-draw the codes.
"""
import re

import numpy as np

from .config import OmniTokenizerConfig
from .model import OmniTokenizer, relative_position_index

__all__ = ["convert_omnitokenizer_state_dict", "load_omnitokenizer", "omnitokenizer_state_dict_names"]

_DROP = re.compile(r"(^|\.)(spatial_rel_pos_bias|context_norm)\.|^codebook\.codebook_usage$|"
                   r"^(image_discriminator|video_discriminator|perceptual_model)\.")
_TRANSFORMERS = {"encoder.enc_spatial_transformer": "encoder.spatial", "encoder.enc_temporal_transformer": "encoder.temporal",
                 "decoder.dec_spatial_transformer": "decoder.spatial", "decoder.dec_temporal_transformer": "decoder.temporal"}
_EMBED = {"1": "norm_in", "2": "proj", "3": "norm_out"}
_FF = {"0": "norm", "1": "proj_in", "4": "proj_out"}
_FIXED = {"pre_vq_conv.1.weight": "pre_quant.weight", "pre_vq_conv.1.bias": "pre_quant.bias",
          "post_vq_conv.1.weight": "post_quant.weight", "post_vq_conv.1.bias": "post_quant.bias",
          "decoder.to_pixels_first_frame.0.weight": "decoder.to_pixels_first_frame.weight",
          "decoder.to_pixels_first_frame.0.bias": "decoder.to_pixels_first_frame.bias",
          "decoder.to_pixels.0.weight": "decoder.to_pixels.weight", "decoder.to_pixels.0.bias": "decoder.to_pixels.bias"}


def _mmu_key(key):
    """One OmniTokenizer key -> the mmu key (None for a key mmu drops; KeyError for an unknown key)."""
    if _DROP.search(key):
        return None
    if key in _FIXED:
        return _FIXED[key]
    m = re.match(r"^encoder\.to_patch_emb(_first_frame)?\.([123])\.(weight|bias)$", key)
    if m:
        return f"encoder.{'first_frame_embed' if m.group(1) else 'tube_embed'}.{_EMBED[m.group(2)]}.{m.group(3)}"
    for src, dst in _TRANSFORMERS.items():
        if not key.startswith(src + "."):
            continue
        rest = key[len(src) + 1:]
        if rest in ("norm_out.gamma", "norm_out.beta"):
            return f"{dst}.{rest}"
        m = re.match(r"^layers\.(\d+)\.([013])\.(.+)$", rest)
        if m:
            i, part, name = m.groups()
            if part == "0" and name in ("dsconv.weight", "dsconv.bias"):
                return f"{dst}.layers.{i}.peg.{name}"
            if part == "1" and name in ("norm.gamma", "norm.beta", "to_q.weight", "to_kv.weight", "q_scale", "k_scale",
                                        "to_out.weight", "relative_position_bias_table", "relative_position_index",
                                        "qkv.weight", "proj.weight", "proj.bias"):
                return f"{dst}.layers.{i}.attn.{name}"
            f = re.match(r"^([014])\.(weight|bias)$", name)
            if part == "3" and f:
                return f"{dst}.layers.{i}.ff.{_FF[f.group(1)]}.{f.group(2)}"
    if key in ("codebook.embeddings", "codebook.z_avg", "codebook.N"):
        return {"codebook.embeddings": "quantize.embed", "codebook.z_avg": "quantize.embed_avg",
                "codebook.N": "quantize.cluster_size"}[key]
    raise KeyError(key)


def _arrays(state_dict):
    if not isinstance(state_dict, dict):
        raise TypeError(f"convert_omnitokenizer_state_dict: state_dict must be a dict of arrays, got "
                        f"{type(state_dict).__name__}")
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]   # a Lightning checkpoint
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):                # a torch tensor: numpy without importing torch here
            v = v.detach().cpu().numpy()
        out[str(k)] = np.asarray(v)
    return out


def convert_omnitokenizer_state_dict(state_dict, config):
    """OmniTokenizer's state_dict (dict of arrays or torch tensors; a Lightning checkpoint's outer dict
    works too) and the OmniTokenizerConfig it was trained with -> mmu's state_dict (float32 arrays) for
    OmniTokenizer(config). Raises KeyError naming unknown or missing keys, ValueError naming a key whose
    shape differs from what the config gives."""
    sd = _arrays(state_dict)
    cfg = config if isinstance(config, OmniTokenizerConfig) else OmniTokenizerConfig.from_dict(dict(config))
    want = OmniTokenizer(cfg).state_dict()
    out, unknown = {}, []
    for k, v in sd.items():
        try:
            name = _mmu_key(k)
        except KeyError:
            unknown.append(k)
            continue
        if name is None:
            continue
        if name.endswith("relative_position_index"):
            w = int(round(np.sqrt(v.shape[0]))) if v.ndim == 2 else -1
            if v.ndim != 2 or w * w != v.shape[0] or not np.array_equal(v, relative_position_index(w)):
                raise ValueError(f"convert_omnitokenizer_state_dict: {k} is not Swin's relative_position_index "
                                 f"of a square window (shape {v.shape})")
            continue
        if name.startswith("quantize."):
            v = v[None]
        if name not in want:
            unknown.append(k)
            continue
        shape = tuple(want[name].shape)
        if tuple(v.shape) != shape:
            raise ValueError(f"convert_omnitokenizer_state_dict: {k} has shape {tuple(v.shape)}, the config gives "
                             f"{shape} (for {name})")
        out[name] = np.ascontiguousarray(v, dtype=np.float32)
    if unknown:
        raise KeyError(f"convert_omnitokenizer_state_dict: keys OmniTokenizer's modules do not define (or this "
                       f"config does not have): {sorted(unknown)[:8]}" + (" ..." if len(unknown) > 8 else ""))
    out["codebook_initted"] = np.ones(1, np.float32)
    if "quantize.initted" in want:
        out["quantize.initted"] = np.ones(1, np.float32)
    missing = sorted(set(want) - set(out))
    if missing:
        raise KeyError(f"convert_omnitokenizer_state_dict: the checkpoint lacks {missing[:8]}"
                       + (" ..." if len(missing) > 8 else ""))
    return out


def load_omnitokenizer(state_dict, config):
    """OmniTokenizer(config) with the converted weights of an OmniTokenizer checkpoint (see
    convert_omnitokenizer_state_dict), in eval mode."""
    cfg = config if isinstance(config, OmniTokenizerConfig) else OmniTokenizerConfig.from_dict(dict(config))
    model = OmniTokenizer(cfg)
    model.load_state_dict(convert_omnitokenizer_state_dict(state_dict, cfg))
    return model.eval()


def omnitokenizer_state_dict_names(config):
    """The mmu key each OmniTokenizer key of a model with this config maps to, as {published: mmu}, for
    the keys mmu keeps (handy to write a checkpoint in the published layout, as the tests do)."""
    cfg = config if isinstance(config, OmniTokenizerConfig) else OmniTokenizerConfig.from_dict(dict(config))
    names = {}
    for src, dst in _TRANSFORMERS.items():
        side, kind = dst.split(".")
        pattern = ("t" * cfg.temporal_depth) if kind == "temporal" else \
            (cfg.enc_block if side == "encoder" else cfg.dec_block)
        for i, b in enumerate(pattern):
            if b == "t":
                keys = ["0.dsconv.weight", "0.dsconv.bias", "1.norm.gamma", "1.norm.beta", "1.to_q.weight",
                        "1.to_kv.weight", "1.q_scale", "1.k_scale", "1.to_out.weight"]
            else:
                keys = ["1.norm.gamma", "1.norm.beta", "1.relative_position_bias_table", "1.qkv.weight",
                        "1.proj.weight", "1.proj.bias"]
            keys += ["3.0.weight", "3.0.bias", "3.1.weight", "3.4.weight"]
            for k in keys:
                names[f"{src}.layers.{i}.{k}"] = _mmu_key(f"{src}.layers.{i}.{k}")
        for k in ("norm_out.gamma", "norm_out.beta"):
            names[f"{src}.{k}"] = _mmu_key(f"{src}.{k}")
    for ff in ("_first_frame", ""):
        for j in "123":
            for w in ("weight", "bias"):
                k = f"encoder.to_patch_emb{ff}.{j}.{w}"
                names[k] = _mmu_key(k)
    for k in list(_FIXED) + ["codebook.embeddings", "codebook.z_avg", "codebook.N"]:
        names[k] = _mmu_key(k)
    return names
