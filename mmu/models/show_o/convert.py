"""Show-o's published checkpoint (showlab/Show-o models/modeling_showo.py Showo, released as
showlab/show-o) -> mmu.models.show_o.ShowO: its transformer's keys ("lm.*"; the image tokenizer's
"image_tokenizer.*" come from the tokenizer's own converter, e.g. mmu.models.magvit2.load_magvit2).
The user reads the weights file(s) they have (safetensors: mmu.io.load_file; a .bin:
torch.load(path, map_location="cpu")) and passes the dict; nothing is
downloaded and torch is never imported.

Show-o's transformer is the Phi-1.5 of its models/phi.py (PhiForCausalLM, which forces
qk_layernorm=True) stored under `showo.`, with the embedding and head resized to the unified vocabulary:

| Show-o key (i = layer)                                      | mmu key (under LM_PREFIX)                   |
|-------------------------------------------------------------|---------------------------------------------|
| showo.model.embed_tokens.weight (vocab_size, d)             | embed_tokens.weight                         |
| showo.model.layers.i.input_layernorm.{weight,bias}          | layers.i.norm1.* (one norm, parallel block) |
| showo.model.layers.i.self_attn.{q,k,v}_proj.{weight,bias}   | layers.i.attn.qkv_proj.* (rows [q; k; v])   |
| showo.model.layers.i.self_attn.dense.{weight,bias}          | layers.i.attn.out_proj.*                    |
| showo.model.layers.i.self_attn.{q,k}_layernorm.* (d/heads,) | layers.i.attn.{q,k}_norm.*                  |
| showo.model.layers.i.mlp.fc1.*, mlp.fc2.*                   | layers.i.mlp.fc1.*, mlp.fc2.*               |
| showo.model.final_layernorm.{weight,bias}                   | norm.*                                      |
| showo.lm_head.{weight,bias} (vocab_size, d), (vocab_size,)  | lm_head.*                                   |

The arithmetic (Show-o's phi.py): x + attn(ln(x)) + mlp(ln(x)) per layer; the QK LayerNorm(head_dim),
one affine shared by all heads, runs on every head's queries and keys before RoPE; partial RoPE on
the first half of each head's dims (Phi-1.5's partial_rotary_factor 0.5, rotate-half pairs, base
10000), positions 0 .. L-1 over the whole sequence (pads included); fc1 -> tanh GELU (gelu_new) ->
fc2; lm_head with a bias. mmu.models.phi.convert_phi_state_dict does the mapping (prefix 'showo.').

The published vocabulary (configs/showo_demo.yaml, training/prompting_utils.py UniversalPrompting):
Phi-1.5's tokenizer has llm_vocab_size = 50295 ids; Show-o appends 10 new tokens ([PAD], <|soi|>,
<|eoi|>, <|sov|>, <|eov|>, <|t2i|>, <|mmu|>, <|t2v|>, <|v2v|>, <|lvg|>: ids 50295 .. 50304), the
8192 image codes (50305 + code) and [MASK] = vocab_size - 1 = 58497. There is no separate [SOT] /
[EOT]: Show-o uses the text tokenizer's bos and eos, which for Phi-1.5 are the same token,
<|endoftext|> = 50256 (SHOW_O_RELEASE). A converted model therefore takes sot_token_id =
eot_token_id = 50256: an [EOT] that ends a caption has the same id as the [SOT] that opens it.
"""
import re

from .._hf import checkpoint_arrays
from ..phi import convert_phi_state_dict

__all__ = ["convert_show_o_state_dict", "load_show_o", "show_o_phi_config", "show_o_config_from_state_dict",
           "show_o_release_config", "SHOW_O_RELEASE", "LM_PREFIX"]

# where mmu's Show-o model keeps its TransformerLM (the converted keys are prefixed with it)
LM_PREFIX = "lm."

# the released model's vocabulary (configs/showo_demo.yaml model.showo; Phi-1.5's <|endoftext|> is both
# the tokenizer's bos and eos, so [SOT] and [EOT] are one id)
SHOW_O_RELEASE = dict(llm_vocab_size=50295, num_new_special_tokens=10, codebook_size=8192, num_vq_tokens=256,
                      vocab_size=58498, sot_token_id=50256, eot_token_id=50256, dim=2048, num_layers=24,
                      num_heads=32, hidden_dim=8192, norm_eps=1e-5, rotary_fraction=0.5, rope_base=10000.0)

_FIELDS = ("vocab_size", "dim", "num_layers", "num_heads", "hidden_dim", "norm_eps", "rotary_fraction",
           "rope_base")


def _fields(config, fn):
    """config: mmu's Show-o config object (attributes) or a dict of its fields -> the transformer's."""
    if isinstance(config, dict):
        get = config.get
    elif all(hasattr(config, f) for f in ("vocab_size", "dim", "num_layers", "num_heads")):
        def get(k, default=None):
            return getattr(config, k, default)
    else:
        raise TypeError(f"{fn}: config must be a Show-o config (ShowOConfig) or a dict of its fields, got "
                        f"{type(config).__name__}")
    out = {}
    for k in _FIELDS:
        v = get(k, None)
        if v is None and k in ("vocab_size", "dim", "num_layers", "num_heads"):
            raise ValueError(f"{fn}: config has no {k!r}")
        out[k] = v
    return out


def show_o_phi_config(config):
    """mmu's Show-o config (ShowOConfig or a dict of its fields: vocab_size, dim, num_layers, num_heads,
    hidden_dim (None: 4 dim), norm_eps, rotary_fraction, rope_base) -> the Phi config.json dict of
    Show-o's transformer (qk_layernorm true as Show-o's PhiForCausalLM forces, gelu_new, untied head),
    which mmu.models.phi.convert_phi_state_dict reads."""
    f = _fields(config, "show_o_phi_config")
    dim = f["dim"]
    return dict(model_type="phi", vocab_size=f["vocab_size"], hidden_size=dim,
                intermediate_size=f["hidden_dim"] if f["hidden_dim"] is not None else 4 * dim,
                num_hidden_layers=f["num_layers"], num_attention_heads=f["num_heads"],
                layer_norm_eps=f["norm_eps"] if f["norm_eps"] is not None else 1e-5,
                partial_rotary_factor=f["rotary_fraction"] if f["rotary_fraction"] is not None else 0.5,
                rope_theta=f["rope_base"] if f["rope_base"] is not None else 10000.0,
                hidden_act="gelu_new", qk_layernorm=True, tie_word_embeddings=False)


def show_o_config_from_state_dict(state_dict, prefix="showo."):
    """The transformer fields of a Show-o checkpoint read off its shapes: vocab_size and dim
    (model.embed_tokens), num_layers (model.layers.{i}), num_heads (dim / the q_layernorm's head_dim),
    hidden_dim (mlp.fc1). norm_eps, rotary_fraction and rope_base cannot be seen in the weights: Phi-1.5's
    1e-5, 0.5 and 10000 (Show-o's llm_model_path config). Merge the result into the Show-o config with
    the vocabulary fields (SHOW_O_RELEASE for the release)."""
    fn = "show_o_config_from_state_dict"
    src = checkpoint_arrays(state_dict, fn, prefix)

    def shape(key, ndim):
        if key not in src:
            raise ValueError(f"{fn}: the state dict has no {prefix + key!r} (Show-o's Phi layout)")
        s = tuple(src[key].shape)
        if len(s) != ndim or 0 in s:
            raise ValueError(f"{fn}: {prefix + key} has shape {s}, expected {ndim} non-empty dims")
        return s

    vocab, dim = shape("model.embed_tokens.weight", 2)
    n = 0
    while f"model.layers.{n}.input_layernorm.weight" in src:
        n += 1
    if n == 0:
        raise ValueError(f"{fn}: no {prefix}model.layers.0.* keys")
    head_dim = shape("model.layers.0.self_attn.q_layernorm.weight", 1)[0]
    if dim % head_dim:
        raise ValueError(f"{fn}: {prefix}model.layers.0.self_attn.q_layernorm.weight has {head_dim} dims, which "
                         f"do not divide the width {dim} ({prefix}model.embed_tokens.weight {(vocab, dim)})")
    hidden = shape("model.layers.0.mlp.fc1.weight", 2)[0]
    return dict(vocab_size=int(vocab), dim=int(dim), num_layers=n, num_heads=dim // head_dim, hidden_dim=int(hidden),
                norm_eps=1e-5, rotary_fraction=0.5, rope_base=10000.0)


def convert_show_o_state_dict(state_dict, config, prefix="showo."):
    """Show-o's state dict (keys above; NumPy arrays, torch tensors of any float dtype, bfloat16
    included, or mmu Tensors) and mmu's Show-o config (ShowOConfig or a dict of its fields; the
    transformer fields are read, see show_o_phi_config) -> {mmu key: float32 ndarray}, the transformer's
    keys under LM_PREFIX. ValueError naming every missing key, every key whose shape does not fit the
    config (with both shapes) and every unexpected key under `prefix` (keys outside it, e.g. a CLIP
    projector's mm_projector.*, are refused too: mmu's Show-o has none)."""
    fn = "convert_show_o_state_dict"
    if not hasattr(state_dict, "items"):
        raise TypeError(f"{fn}: state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    other = [k for k in state_dict if isinstance(k, str) and not k.startswith(prefix)]
    if other:
        raise ValueError(f"{fn}: key(s) outside {prefix!r} have no counterpart in mmu's Show-o (w_clip_vit "
                         f"checkpoints' mm_projector is not supported): {sorted(other)[:8]}"
                         + (f" and {len(other) - 8} more" if len(other) > 8 else ""))
    phi = show_o_phi_config(config)
    try:
        out = convert_phi_state_dict(state_dict, phi, prefix=prefix)
    except ValueError as e:
        # the Phi converter names keys without the prefix: put it back so every key reads as stored
        msg = str(e).replace("convert_phi_state_dict", fn, 1).replace("the Phi config", "the Show-o config")
        raise ValueError(re.sub(r"(?<![\w.])(model\.|lm_head\.)", lambda m: prefix + m.group(1), msg)) from None
    return {LM_PREFIX + k: v for k, v in out.items()}


def show_o_release_config(**fields):
    """The ShowOConfig of the released Show-o (configs/showo_demo.yaml with microsoft/phi-1_5): the
    SHOW_O_RELEASE vocabulary and transformer sizes, max_text_len 128 (dataset.preprocessing.
    max_seq_length) and Show-o's MAGVIT-v2 (mmu.models.magvit2.MAGVIT2, MAGVIT2Config's defaults) as the
    image tokenizer; **fields override any field."""
    from ..magvit2 import MAGVIT2Config
    from .config import ShowOConfig
    d = dict(SHOW_O_RELEASE, max_text_len=128,
             image_tokenizer={"class": "mmu.models.magvit2.model.MAGVIT2",
                              "args": {"config": None, "**fields_": MAGVIT2Config().to_dict()}})
    d.update(fields)
    return ShowOConfig.from_dict(d)


def load_show_o(state_dict, config, image_tokenizer, text_tokenizer=None, prefix="showo."):
    """Show-o's checkpoint and its image tokenizer -> an mmu.models.show_o.ShowO in eval mode whose
    transformer holds the converted weights (convert_show_o_state_dict): model(input_ids, attn_mask)
    gives Show-o's logits. config: ShowOConfig or a dict of its fields (show_o_release_config() for the
    release); image_tokenizer: the loaded mmu tokenizer (for the release: mmu.models.magvit2.load_magvit2 of
    Show-o's MAGVIT-v2 file), whose codebook_size and tokens per image must be the config's;
    text_tokenizer: an mmu.text.TextTokenizer or None (for the release: Phi-1.5's tokenizer.json with
    Show-o's 10 new tokens added, whose bos = eos = 50256)."""
    from .config import ShowOConfig
    from .model import ShowO
    if isinstance(config, dict):
        config = ShowOConfig.from_dict(config)
    if not isinstance(config, ShowOConfig):
        raise TypeError(f"load_show_o: config must be a ShowOConfig or a dict of its fields, got "
                        f"{type(config).__name__}")
    if image_tokenizer is None:
        raise TypeError("load_show_o: image_tokenizer must be the loaded mmu tokenizer (e.g. "
                        "mmu.models.magvit2.load_magvit2(magvit2_state_dict)), got None")
    sd = convert_show_o_state_dict(state_dict, config, prefix=prefix)
    model = ShowO(config, text_tokenizer=text_tokenizer, image_tokenizer=image_tokenizer)
    model.lm.load_state_dict({k[len(LM_PREFIX):]: v for k, v in sd.items()})
    model.eval()
    return model
