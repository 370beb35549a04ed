"""Published checkpoints -> mmu.models.vila_u modules. The user reads the files they have (safetensors:
mmu.io.load_file) and passes dicts of arrays; nothing is downloaded and torch is never imported.

Text towers -> TextEncoder: load_text_encoder (Hugging Face SiglipTextModel / CLIPTextModel and the
text half of SiglipModel / CLIPModel), load_open_clip_text (open_clip / OpenAI CLIP); the key tables are
in mmu/models/vit/convert.py.

VILA-U's release (mit-han-lab/vila-u, vila_u_arch.py save_pretrained): three folders, each a
save_pretrained of its own model,
  llm/           a LlamaForCausalLM (config.json + weights) whose vocabulary ends with VILA-U's four
                 image / video start / end tokens -> VILAU.lm through mmu.models.llama's converter;
  vision_tower/  RQVAESIGLIPTransformer: rqvaesiglip.* (the tower) and rqtransformer.* (the depth
                 transformer), config.json {rqvaesiglip: {...}, rqtransformer: {...}, hidden_size};
  mm_projector/  MultimodalProjector: layers.* ('linear': one Linear; 'mlp2x_gelu': layers.0, GELU,
                 layers.2), config.json {mm_projector_type}.
The tower's SigLIP is built from the config of rqvaesiglip.pretrained_model (a Hugging Face SigLIP
config.json, e.g. google/siglip-large-patch16-256's), which vision_tower/config.json only names: the user
passes that config too.

| VILA-U key (vision_tower/)                              | mmu key                                      |
|----------------------------------------------------------|----------------------------------------------|
| rqvaesiglip.siglip_model.vision_model.*                  | tower.vision.* (mmu.models.vit's table)       |
| rqvaesiglip.siglip_model.text_model.*                    | tower.text.* (TextEncoder, SigLIP layout)     |
| rqvaesiglip.siglip_model.logit_scale / logit_bias (1,)   | tower.logit_scale / logit_bias ()             |
| rqvaesiglip.quantizer.codebooks.{d}.weight (K + 1, C)    | tower.quantizer.layers.{0 or d}.embed (1, K, C): rows 0..K-1 (row K is nn.Embedding's padding_idx row, never a code) |
| rqvaesiglip.quantizer.codebooks.{d}.cluster_size_ema (K,)| tower.quantizer.layers.{0 or d}.cluster_size (1, K) |
| rqvaesiglip.quantizer.codebooks.{d}.embed_ema (K, C)     | tower.quantizer.layers.{0 or d}.embed_avg (1, K, C) |
| rqvaesiglip.post_quant_conv.*                            | tower.post_quant_conv.*                       |
| rqvaesiglip.decoder.* (taming's Decoder)                 | tower.decoder.* (the same names)              |
| rqtransformer.in_mlp_1 / in_mlp_2 / pos_emb_d            | depth.in_mlp_1 / in_mlp_2 / pos_emb_d         |
| rqtransformer.head_transformer.blocks.{i}.ln1 / ln2      | depth.head_transformer.{i}.norm1 / norm2      |
| ...blocks.{i}.attn.query / key / value                   | depth.head_transformer.{i}.attn.qkv_proj ([q; k; v]) |
| ...blocks.{i}.attn.proj                                  | depth.head_transformer.{i}.attn.out_proj      |
| ...blocks.{i}.mlp.0 / mlp.2                              | depth.head_transformer.{i}.mlp.fc1 / fc2      |
| rqtransformer.classifier_mlp.layer_norm / linear         | depth.classifier_mlp.layer_norm / linear      |
| mm_projector/ layers.* / layers.0.*, layers.2.*          | mm_projector.* (VILAU's names)                |
With a shared codebook (VILA-U's) the D entries codebooks.0 .. codebooks.{D-1} are one module: a file may
hold all of them or only some (save_pretrained drops tensors that share memory); any held must be equal.

Numbers mmu does not reproduce bit for bit: VILA-U's released decode casts to bfloat16 around each
nearest-neighbour upsampling (its model runs in bfloat16); mmu decodes in float32.
"""
import numpy as np

from .._hf import KeyMap, cat_rows, checkpoint_arrays, config_int, read_config
from ..vit.config import open_clip_text_config, text_config_from_hf, vit_config_from_hf
from ..vit.convert import (convert_open_clip_text_state_dict, convert_text_state_dict, convert_vit_state_dict)

__all__ = ["load_text_encoder", "load_open_clip_text", "vila_u_tower_config", "convert_vila_u_tower_state_dict",
           "load_vila_u_tower", "convert_vila_u_depth_state_dict", "convert_vila_u_projector_state_dict",
           "vila_u_config", "load_vila_u"]

_TOWER = "rqvaesiglip."
_SIGLIP = "rqvaesiglip.siglip_model."


def load_text_encoder(state_dict, config, layout=None, projection=None, prefix=""):
    """A SigLIP / CLIP text tower in Hugging Face's layout (state dict + config.json; see
    mmu.models.vit.convert_text_state_dict) -> TextEncoder with its weights: encoder(ids) gives
    (last_hidden_state, pooler_output) for SigLIP, (last_hidden_state, text_embeds) for CLIP with a
    text_projection. Without one (a bare CLIPTextModel) the head is the identity, so pooled is
    CLIPTextModel's pooler_output."""
    from .text_encoder import TextEncoder
    config = read_config(config, "load_text_encoder")
    weights = convert_text_state_dict(state_dict, config, layout, projection, prefix)   # checked first
    if projection is None:
        projection = "text_projection.weight" in checkpoint_arrays(state_dict, "load_text_encoder", prefix)
    kw = text_config_from_hf(config, layout, projection)
    model = TextEncoder(**kw)
    model.load_state_dict(_identity_head(weights, kw))
    return model


def load_open_clip_text(state_dict, config, prefix=""):
    """An open_clip / OpenAI CLIP checkpoint's text tower (state dict + open_clip model config, see
    mmu.models.vit.convert_open_clip_text_state_dict) -> TextEncoder: encoder(ids) gives (ln_final's
    output, encode_text's embedding before normalisation). proj_type 'none': the head is the identity."""
    from .text_encoder import TextEncoder
    config = read_config(config, "load_open_clip_text")
    weights = convert_open_clip_text_state_dict(state_dict, config, prefix)   # checked first
    kw = open_clip_text_config(config)
    model = TextEncoder(**kw)
    model.load_state_dict(_identity_head(weights, kw))
    return model


def _identity_head(weights, kw):
    """A text tower without a projection: TextEncoder always has a head (dim -> dim when embed_dim is
    None), so it becomes the identity (and a zero bias in the SigLIP layout)."""
    if kw["embed_dim"] is None:
        weights = dict(weights, **{"head.weight": np.eye(kw["dim"], dtype=np.float32)})
        if kw["layout"] == "siglip":
            weights["head.bias"] = np.zeros(kw["dim"], np.float32)
    return weights


# --------------------------------------------------------------------------------------------------
# VILA-U's vision tower

def _pair(v, fn, name):
    if not isinstance(v, (list, tuple)) or len(v) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1
                                                               for x in v):
        raise ValueError(f"{fn}: rqvaesiglip.{name} must be a list of 3 ints >= 1, got {v!r}")
    return [int(x) for x in v]


def _int_list(v, fn, name, low):
    if not isinstance(v, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, int) or x < low for x in v):
        raise ValueError(f"{fn}: {name} must be a list of ints >= {low}, got {v!r}")
    return [int(x) for x in v]


def _real(d, key, fn, default):
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise ValueError(f"{fn}: rqvaesiglip.{key} must be a number >= 0, got {v!r}")
    return float(v)


def vila_u_tower_config(vision_tower_config, siglip_config):
    """VILA-U's vision_tower/config.json (dict or path: {rqvaesiglip: {embed_dim, n_embed, latent_shape,
    code_shape, shared_codebook, ddconfig, decay, latent_loss_weight, decoder_latent_shape,
    pretrained_model}, rqtransformer: {...}}) and the Hugging Face SigLIP config.json its
    pretrained_model names (a SiglipConfig with vision_config and text_config) -> the fields of
    UnifiedVisionTowerConfig: the SigLIP vision and text towers' sizes, quantize_after = layers - 1 (the
    released encode_image quantizes the output of layer len - 2, counted from 0), codebook_size n_embed,
    rvq_depth code_shape[2], the decoder's ddconfig (ch, ch_mult, num_res_blocks, attn_resolutions,
    z_channels), the EMA decay and the commitment weight (latent_loss_weight), kmeans_init False (the
    codebook comes from the file), decoder_latent_shape (set in the 384-px release: its decode resizes the
    27 x 27 grid of so400m-patch14-384 to it bilinearly, align_corners False, before post_quant_conv; the
    tower does the same). Refused with the reason: code_shape's grid differing from latent_shape's (VILA-U's
    RQBottleneck would then quantize blocks of positions, not what UnifiedVisionTower builds), a decoder
    whose upsampling of the decoder grid (decoder_latent_shape, else the latent grid) is not the image
    size, a latent grid or embed_dim that does not match the SigLIP config, SigLIP text settings other
    than TextEncoder's SigLIP defaults (gelu_pytorch_tanh, eps 1e-6: the tower config has no field for
    them)."""
    fn = "vila_u_tower_config"
    vt = read_config(vision_tower_config, fn)
    sc = read_config(siglip_config, fn)
    rq = vt.get("rqvaesiglip")
    if not isinstance(rq, dict):
        raise ValueError(f"{fn}: the vision tower config has no 'rqvaesiglip' dict (VILA-U's "
                         "RQVAESIGLIPTransformerConfig)")
    if sc.get("model_type") != "siglip" or not isinstance(sc.get("vision_config"), dict):
        raise ValueError(f"{fn}: siglip_config must be a SiglipConfig (model_type 'siglip' with vision_config and "
                         f"text_config), the config of rqvaesiglip.pretrained_model {rq.get('pretrained_model')!r}")
    vis = vit_config_from_hf(sc, "siglip")
    txt = text_config_from_hf(sc, "siglip")
    latent, code = _pair(rq.get("latent_shape"), fn, "latent_shape"), _pair(rq.get("code_shape"), fn, "code_shape")
    C = config_int(rq, "embed_dim", fn)
    problems = []
    grid = vis["image_size"] // vis["patch_size"]
    if latent[:2] != code[:2]:
        problems.append(f"code_shape {code} groups latent_shape {latent} positions (RQBottleneck's shape_divisor); "
                        "UnifiedVisionTower quantizes each position")
    if latent != [grid, grid, C] or C != vis["dim"]:
        problems.append(f"latent_shape {latent} / embed_dim {C} do not match the SigLIP tower ({grid} x {grid} "
                        f"patches of width {vis['dim']})")
    dls = rq.get("decoder_latent_shape")
    if dls is not None:
        dls = _int_list(dls, fn, "rqvaesiglip.decoder_latent_shape", 1)
        if len(dls) != 2:
            raise ValueError(f"{fn}: rqvaesiglip.decoder_latent_shape must be None or [h, w], got {dls!r}")
    dec_grid = dls if dls is not None else [grid, grid]
    dd = rq.get("ddconfig")
    if not isinstance(dd, dict):
        raise ValueError(f"{fn}: rqvaesiglip.ddconfig must be a dict (the decoder's sizes), got {dd!r}")
    mult = _int_list(dd.get("ch_mult", [1, 2, 4, 8]), fn, "ddconfig.ch_mult", 1)
    attn = _int_list(dd.get("attn_resolutions", []), fn, "ddconfig.attn_resolutions", 1)
    if not mult:
        raise ValueError(f"{fn}: ddconfig.ch_mult must not be empty")
    up = 2 ** (len(mult) - 1)
    if [v * up for v in dec_grid] != [vis["image_size"]] * 2:
        problems.append(f"ddconfig.ch_mult {mult} upsamples by {up} the {dec_grid[0]} x {dec_grid[1]} decoder grid "
                        f"(decoder_latent_shape, else the latent grid) to {dec_grid[0] * up} x {dec_grid[1] * up}, "
                        f"not the image size {vis['image_size']}")
    if dd.get("out_ch", 3) != 3 or dd.get("resolution", vis["image_size"]) != vis["image_size"]:
        problems.append(f"ddconfig out_ch {dd.get('out_ch')} / resolution {dd.get('resolution')}: the tower "
                        f"decodes 3-channel {vis['image_size']}-px images")
    if txt["activation"] != "gelu_tanh" or txt["norm_eps"] != 1e-6 or txt["embed_dim"] != vis["dim"]:
        problems.append(f"the SigLIP text tower (hidden_act {txt['activation']}, layer_norm_eps {txt['norm_eps']}, "
                        f"projection {txt['embed_dim']}) is not TextEncoder's SigLIP default (gelu_tanh, 1e-6) with "
                        f"the image width {vis['dim']}")
    if problems:
        raise ValueError(f"{fn}: this VILA-U tower is not what UnifiedVisionTower builds: " + "; ".join(problems))
    return dict(image_size=vis["image_size"], patch_size=vis["patch_size"], in_channels=vis["in_channels"],
                dim=vis["dim"], depth=vis["depth"], num_heads=vis["num_heads"], hidden_dim=vis["hidden_dim"],
                activation=vis["activation"], norm_eps=vis["norm_eps"], quantize_after=vis["depth"] - 1,
                codebook_size=config_int(rq, "n_embed", fn, minimum=2), rvq_depth=code[2], codebook_dim=C,
                shared_codebook=bool(rq.get("shared_codebook", False)), ema_decay=_real(rq, "decay", fn, 0.99),
                commitment_weight=_real(rq, "latent_loss_weight", fn, 0.25), kmeans_init=False,
                decoder_latent_shape=dls, decoder_ch=config_int(dd, "ch", fn), decoder_ch_mult=mult,
                decoder_num_res_blocks=config_int(dd, "num_res_blocks", fn),
                decoder_attn_resolutions=attn,
                decoder_z_channels=config_int(dd, "z_channels", fn), decoder_norm_groups=32, contrastive="sigmoid",
                embed_dim=vis["dim"], text_vocab_size=txt["vocab_size"], text_max_len=txt["max_len"],
                text_dim=txt["dim"], text_depth=txt["depth"], text_heads=txt["num_heads"],
                text_hidden_dim=txt["hidden_dim"], text_layout="siglip")


def _decoder_shapes(f):
    """{taming Decoder key: shape} (VILA-U's modules.Decoder, temb_channels 0) for the tower fields f."""
    out = {}

    def conv(name, cout, cin, k):
        out[name + ".weight"], out[name + ".bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        out[name + ".weight"], out[name + ".bias"] = (c,), (c,)

    def resnet(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cout, cin, 3)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(name + ".nin_shortcut", cout, cin, 1)

    def attn(name, c):
        norm(name + ".norm", c)
        for n in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{n}", c, c, 1)

    ch, mult = f["decoder_ch"], f["decoder_ch_mult"]
    block_in = ch * mult[-1]
    res = f["image_size"] // 2 ** (len(mult) - 1)
    conv("conv_in", block_in, f["decoder_z_channels"], 3)
    resnet("mid.block_1", block_in, block_in)
    attn("mid.attn_1", block_in)
    resnet("mid.block_2", block_in, block_in)
    for i in reversed(range(len(mult))):
        block_out = ch * mult[i]
        for j in range(f["decoder_num_res_blocks"] + 1):
            resnet(f"up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if res in f["decoder_attn_resolutions"]:
                attn(f"up.{i}.attn.{j}", block_in)
        if i != 0:
            conv(f"up.{i}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("norm_out", block_in)
    conv("conv_out", f["in_channels"], block_in, 3)
    return out


def _codebooks(km, f, out, fn):
    """rqvaesiglip.quantizer.codebooks.{d}.* -> quantizer.layers.{0 or d}.* (see the module table)."""
    K, C, D = f["codebook_size"], f["codebook_dim"], f["rvq_depth"]
    q = _TOWER + "quantizer.codebooks."
    shapes = {"weight": (K + 1, C), "cluster_size_ema": (K,), "embed_ema": (K, C)}
    for level in range(1 if f["shared_codebook"] else D):
        got = {}
        for name, shape in shapes.items():
            held = [d for d in (range(D) if f["shared_codebook"] else [level]) if km.has(f"{q}{d}.{name}")]
            first = km.get(f"{q}{held[0] if held else level}.{name}", shape)
            for d in held[1:]:                       # the shared module's other names: the same tensor
                other = km.get(f"{q}{d}.{name}", shape)
                if first is not None and other is not None and not np.array_equal(first, other):
                    km.other.append(f"{q}{d}.{name} differs from {q}{held[0]}.{name}, but shared_codebook is true")
            got[name] = first
        m = f"quantizer.layers.{level}."
        out[m + "embed"] = None if got["weight"] is None else got["weight"][:K][None]
        out[m + "cluster_size"] = None if got["cluster_size_ema"] is None else got["cluster_size_ema"][None]
        out[m + "embed_avg"] = None if got["embed_ema"] is None else got["embed_ema"][None]
        out[m + "initted"] = np.ones(1, np.float32)   # the codebook is set: no k-means initialisation


def convert_vila_u_tower_state_dict(state_dict, vision_tower_config, siglip_config, prefix=""):
    """VILA-U's vision_tower/ weights (rqvaesiglip.* keys; rqtransformer.* are the depth transformer's and
    are skipped here) + its config.json + the SigLIP config.json (see vila_u_tower_config) ->
    {UnifiedVisionTower key: float32 ndarray}. One ValueError names every missing key, every shape that
    does not fit (both shapes) and every unexpected key, over all the parts."""
    fn = "convert_vila_u_tower_state_dict"
    f = vila_u_tower_config(vision_tower_config, siglip_config)
    sc = read_config(siglip_config, fn)
    src = checkpoint_arrays(state_dict, fn, prefix)
    out, problems = {}, []
    siglip = {k: v for k, v in src.items() if k.startswith(_SIGLIP)}
    for part, convert in (("vision.", lambda: convert_vit_state_dict(siglip, sc, "siglip", prefix=_SIGLIP)),
                          ("text.", lambda: convert_text_state_dict(siglip, sc, "siglip", prefix=_SIGLIP))):
        try:
            out.update({part + k: v for k, v in convert().items()})
        except ValueError as e:
            problems.append(str(e))
    km = KeyMap(src, fn, f"the VILA-U tower config (codebook {f['codebook_size']} x {f['codebook_dim']}, "
                         f"depth {f['rvq_depth']}, decoder ch {f['decoder_ch']} x {f['decoder_ch_mult']})")
    for name in ("logit_scale", "logit_bias"):
        a = km.get(_SIGLIP + name, (1,))
        out[name] = None if a is None else a.reshape(())
    _codebooks(km, f, out, fn)
    z, C = f["decoder_z_channels"], f["codebook_dim"]
    out["post_quant_conv.weight"] = km.get(_TOWER + "post_quant_conv.weight", (z, C, 1, 1))
    out["post_quant_conv.bias"] = km.get(_TOWER + "post_quant_conv.bias", (z,))
    for k, shape in _decoder_shapes(f).items():
        out["decoder." + k] = km.get(_TOWER + "decoder." + k, shape)
    try:
        km.finish(lambda k: k.startswith(("rqtransformer.", _SIGLIP)))
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise ValueError(f"{fn}: the VILA-U vision tower does not fit:\n" + "\n".join(problems))
    return out


def load_vila_u_tower(state_dict, vision_tower_config, siglip_config, prefix=""):
    """VILA-U's vision tower (see convert_vila_u_tower_state_dict) -> UnifiedVisionTower with its weights:
    encode(images) gives the released encode_image's codes (B, h, w, D), decode(codes) its decode of
    the summed code embeddings, code_embeddings its get_code_emb_with_depth, text(ids) SigLIP's text tower."""
    from .tower import UnifiedVisionTower
    weights = convert_vila_u_tower_state_dict(state_dict, vision_tower_config, siglip_config, prefix)
    tower = UnifiedVisionTower(**vila_u_tower_config(vision_tower_config, siglip_config))
    tower.load_state_dict(weights)
    return tower


# --------------------------------------------------------------------------------------------------
# the depth transformer and the projector

def _rqtransformer_config(vision_tower_config, fn):
    vt = read_config(vision_tower_config, fn)
    rq = vt.get("rqtransformer")
    if not isinstance(rq, dict) or not isinstance(rq.get("head"), dict) or \
            not isinstance(rq["head"].get("block"), dict):
        raise ValueError(f"{fn}: the vision tower config has no 'rqtransformer' dict with head.block "
                         "(VILA-U's RQTransformerConfig)")
    bs = rq.get("block_size")
    if not isinstance(bs, (list, tuple)) or len(bs) != 3:
        raise ValueError(f"{fn}: rqtransformer.block_size must be a list of 3 ints (the last: the code depth D), "
                         f"got {bs!r}")
    dim = config_int(rq, "embed_dim", fn)
    heads = config_int(rq["head"]["block"], "n_head", fn)
    if dim % heads:
        raise ValueError(f"{fn}: rqtransformer.embed_dim {dim} is not a multiple of head.block.n_head {heads}")
    return dict(code_dim=config_int(rq, "input_embed_dim_1", fn), body_dim=config_int(rq, "input_embed_dim_2", fn),
                dim=dim, num_layers=config_int(rq["head"], "n_layer", fn), num_heads=heads,
                depth=config_int({"D": bs[2]}, "D", fn), codebook_size=config_int(rq, "vocab_size", fn, minimum=2))


def convert_vila_u_depth_state_dict(state_dict, vision_tower_config, prefix=""):
    """VILA-U's rqtransformer.* weights (in vision_tower/, beside rqvaesiglip.*, which are skipped) + the
    vision tower's config.json -> {DepthTransformer key: float32 ndarray} for DepthTransformer(code_dim
    = input_embed_dim_1, body_dim = input_embed_dim_2, dim = embed_dim, num_layers = head.n_layer,
    num_heads = head.block.n_head, depth = block_size[2], codebook_size = vocab_size). One ValueError
    names every missing, mis-shaped and unexpected key."""
    fn = "convert_vila_u_depth_state_dict"
    c = _rqtransformer_config(vision_tower_config, fn)
    src = checkpoint_arrays(state_dict, fn, prefix)
    C, B, d, D, K = c["code_dim"], c["body_dim"], c["dim"], c["depth"], c["codebook_size"]
    km = KeyMap(src, fn, f"the rqtransformer config (embed_dim {d}, input dims {C} / {B}, depth {D}, vocab {K})")
    r = "rqtransformer."
    out = {}
    for w in ("weight", "bias"):
        vec = w == "bias"
        out["in_mlp_1." + w] = km.get(f"{r}in_mlp_1.{w}", (d,) if vec else (d, C))
        out["in_mlp_2." + w] = km.get(f"{r}in_mlp_2.{w}", (d,) if vec else (d, B))
        out["classifier_mlp.layer_norm." + w] = km.get(f"{r}classifier_mlp.layer_norm.{w}", (d,))
        out["classifier_mlp.linear." + w] = km.get(f"{r}classifier_mlp.linear.{w}", (K,) if vec else (K, d))
    out["pos_emb_d"] = km.get(r + "pos_emb_d", (1, D, d))
    for i in km.layers(c["num_layers"], r + "head_transformer.blocks."):
        v, m = f"{r}head_transformer.blocks.{i}.", f"head_transformer.{i}."
        for w in ("weight", "bias"):
            vec = w == "bias"
            out[m + "norm1." + w] = km.get(v + "ln1." + w, (d,))
            out[m + "norm2." + w] = km.get(v + "ln2." + w, (d,))
            out[m + "attn.qkv_proj." + w] = cat_rows([km.get(f"{v}attn.{n}.{w}", (d,) if vec else (d, d))
                                                      for n in ("query", "key", "value")])
            out[m + "attn.out_proj." + w] = km.get(f"{v}attn.proj.{w}", (d,) if vec else (d, d))
            out[m + "mlp.fc1." + w] = km.get(f"{v}mlp.0.{w}", (4 * d,) if vec else (4 * d, d))
            out[m + "mlp.fc2." + w] = km.get(f"{v}mlp.2.{w}", (d,) if vec else (d, 4 * d))
    km.finish(lambda k: k.startswith(_TOWER))
    return out


def convert_vila_u_projector_state_dict(state_dict, mm_projector_config, mm_hidden_size, hidden_size, prefix=""):
    """VILA-U's mm_projector/ weights (MultimodalProjector: 'linear' -> layers.weight / bias;
    'mlp2x_gelu' -> layers.0.* and layers.2.*, exact GELU between) + its config.json
    ({mm_projector_type}) -> {VILAU mm_projector key: float32 ndarray} ('0.*' / '2.*' of a Sequential
    for mlp2x_gelu, the Linear's own keys for linear). mm_hidden_size: the code width C; hidden_size:
    the LLM's. 'identity' and other depths are refused."""
    fn = "convert_vila_u_projector_state_dict"
    c = read_config(mm_projector_config, fn)
    kind = c.get("mm_projector_type")
    if kind not in ("linear", "mlp2x_gelu"):
        raise ValueError(f"{fn}: mm_projector_type {kind!r} is not supported ('linear' or 'mlp2x_gelu', what VILAU "
                         "builds)")
    src = checkpoint_arrays(state_dict, fn, prefix)
    C, H = mm_hidden_size, hidden_size
    km = KeyMap(src, fn, f"the {kind} projector (mm_hidden_size {C}, hidden_size {H})")
    if kind == "linear":
        out = {"weight": km.get("layers.weight", (H, C)), "bias": km.get("layers.bias", (H,))}
    else:
        out = {"0.weight": km.get("layers.0.weight", (H, C)), "0.bias": km.get("layers.0.bias", (H,)),
               "2.weight": km.get("layers.2.weight", (H, H)), "2.bias": km.get("layers.2.bias", (H,))}
    km.finish()
    return out


# --------------------------------------------------------------------------------------------------
# the whole release

def vila_u_config(llm_config, vision_tower_config, siglip_config, mm_projector_config):
    """VILA-U's configs (llm/config.json: a LlamaConfig; vision_tower/config.json; the SigLIP config.json
    its rqvaesiglip.pretrained_model names; mm_projector/config.json) -> the fields of VILAUConfig:
    llm_vocab_size = the LLM's vocab_size - 4 (VILA-U's tokenizer ends with <im_start>, <im_end>,
    <vi_start>, <vi_end>: VILAU's [SOI], [EOI], [SOV], [EOV]), sot / eot = the LLaMA config's
    bos_token_id / eos_token_id (1 / 2 by default), the LLaMA sizes (max_seq_len =
    max_position_embeddings), mm_projector = mm_projector_type, the depth transformer's sizes from
    rqtransformer, the tower's fields (vila_u_tower_config). Refused with the reason: a LLaMA layout
    TransformerLM(**VILAUConfig.lm_kwargs()) does not build (head_dim other than hidden / heads,
    attention or MLP biases), and an rqtransformer whose input widths, depth or vocabulary disagree
    with the tower and the LLM."""
    from ..llama.config import llama_config_from_hf
    fn = "vila_u_config"
    lc = read_config(llm_config, fn)
    lm = llama_config_from_hf(lc)
    tower = vila_u_tower_config(vision_tower_config, siglip_config)
    dep = _rqtransformer_config(vision_tower_config, fn)
    kind = read_config(mm_projector_config, fn).get("mm_projector_type")
    problems = []
    if lm["head_dim"] * lm["num_heads"] != lm["dim"] or lm["bias"] or lm["head_bias"] or lm["qk_norm"]:
        problems.append(f"the LLaMA config (head_dim {lm['head_dim']}, attention_bias / mlp_bias {lm['bias']}) is not "
                        "the layout VILAU's LLM builds (head_dim = hidden_size / heads, no biases)")
    if lm["vocab_size"] < 6:
        problems.append(f"the LLM's vocab_size {lm['vocab_size']} cannot end with VILA-U's four visual tokens")
    want = dict(code_dim=tower["codebook_dim"], body_dim=lm["dim"], depth=tower["rvq_depth"],
                codebook_size=tower["codebook_size"])
    bad = {k: (dep[k], v) for k, v in want.items() if dep[k] != v}
    if bad:
        problems.append("rqtransformer disagrees with the tower / LLM (field: (rqtransformer, expected)): "
                        + ", ".join(f"{k}: {v}" for k, v in bad.items()))
    if kind not in ("linear", "mlp2x_gelu"):
        problems.append(f"mm_projector_type {kind!r} is not supported ('linear' or 'mlp2x_gelu')")
    if problems:
        raise ValueError(f"{fn}: " + "; ".join(problems))
    return dict(llm_vocab_size=lm["vocab_size"] - 4, sot_token_id=config_int(lc, "bos_token_id", fn, 1, minimum=0),
                eot_token_id=config_int(lc, "eos_token_id", fn, 2, minimum=0), dim=lm["dim"],
                num_layers=lm["num_layers"], num_heads=lm["num_heads"], num_kv_heads=lm["num_kv_heads"],
                hidden_dim=lm["hidden_dim"], norm_eps=lm["norm_eps"], rope_base=lm["rope_base"],
                max_seq_len=lm["max_seq_len"], tie_embeddings=lm["tie_embeddings"], mm_projector=kind,
                depth_dim=dep["dim"], depth_layers=dep["num_layers"], depth_heads=dep["num_heads"], tower=tower)


def load_vila_u(llm_state_dict, llm_config, vision_tower_state_dict, vision_tower_config, siglip_config,
                mm_projector_state_dict, mm_projector_config):
    """VILA-U's release (module docstring: llm/, vision_tower/ and mm_projector/, each a dict of arrays
    read from that folder's safetensors files, merged when sharded, and its config.json; plus the SigLIP
    config.json that vision_tower/config.json's rqvaesiglip.pretrained_model names) -> mmu.models.vila_u.VILAU
    with its tower: the LLM through mmu.models.llama's converter, the tower (load_vila_u_tower), the depth
    transformer (rqtransformer.*) and the projector. Every part is checked before anything is built; one
    ValueError lists every missing, mis-shaped and unexpected key of every part."""
    from ..llama.convert import convert_llama_state_dict
    from .model import VILAU
    fn = "load_vila_u"
    fields = vila_u_config(llm_config, vision_tower_config, siglip_config, mm_projector_config)
    parts, problems = {}, []
    for name, convert in (
            ("lm", lambda: convert_llama_state_dict(llm_state_dict, read_config(llm_config, fn))),
            ("tower", lambda: convert_vila_u_tower_state_dict(vision_tower_state_dict, vision_tower_config,
                                                              siglip_config)),
            ("depth", lambda: convert_vila_u_depth_state_dict(vision_tower_state_dict, vision_tower_config)),
            ("mm_projector", lambda: convert_vila_u_projector_state_dict(
                mm_projector_state_dict, mm_projector_config, fields["tower"]["codebook_dim"], fields["dim"]))):
        try:
            parts[name] = convert()
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError(f"{fn}: the VILA-U checkpoint does not fit:\n" + "\n".join(problems))
    from .tower import UnifiedVisionTower
    tower = UnifiedVisionTower(**fields["tower"])
    tower.load_state_dict(parts["tower"])
    model = VILAU(tower=tower, **{k: v for k, v in fields.items() if k != "tower"})
    model.lm.load_state_dict(parts["lm"])
    model.depth.load_state_dict(parts["depth"])
    model.mm_projector.layers.load_state_dict(parts["mm_projector"])
    return model
