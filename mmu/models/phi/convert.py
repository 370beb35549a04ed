"""Phi checkpoints in Hugging Face's layout (transformers' PhiForCausalLM, e.g. microsoft/phi-1_5's
model.safetensors) -> mmu.nn.TransformerLM. The user reads the safetensors file(s) they have (e.g.
mmu.io.load_file, or safetensors' own load_file) and passes the dict; nothing is downloaded.

| Hugging Face key (i = layer)                          | mmu TransformerLM key                      |
|-------------------------------------------------------|--------------------------------------------|
| model.embed_tokens.weight (V, d)                      | embed_tokens.weight                        |
| model.layers.i.input_layernorm.{weight,bias}          | layers.i.norm1.* (parallel block: one norm)|
| model.layers.i.self_attn.{q,k,v}_proj.{weight,bias}   | layers.i.attn.qkv_proj.* (rows [q; k; v])  |
| model.layers.i.self_attn.dense.{weight,bias}          | layers.i.attn.out_proj.*                   |
| model.layers.i.self_attn.{q,k}_layernorm.*            | layers.i.attn.{q,k}_norm.* (qk_layernorm)  |
| model.layers.i.mlp.fc1.*, mlp.fc2.*                   | layers.i.mlp.fc1.*, mlp.fc2.*              |
| model.final_layernorm.{weight,bias}                   | norm.*                                     |
| lm_head.weight (V, d), lm_head.bias (V,)              | lm_head.* (tied: lm_head_bias)             |

The network is PhiForCausalLM's: x + attn(ln(x)) + mlp(ln(x)) per layer; partial RoPE on the first
int(head_dim x partial_rotary_factor) dims of every head in the rotate-half convention (pairs
(j, j + R/2)), positions 0..L-1; fc1 -> gelu_new (tanh GELU) -> fc2. With qk_layernorm, the
LayerNorm(head_dim) runs on every head's queries and keys before RoPE (as Show-o's phi.py does;
transformers' modeling_phi applies it before splitting the heads, which only runs with one head).
"""
from .._hf import KeyMap, cat_rows, check_tied, checkpoint_arrays, read_config
from .config import phi_config_from_hf

__all__ = ["convert_phi_state_dict", "load_phi"]


def convert_phi_state_dict(state_dict, config, prefix=""):
    """A PhiForCausalLM state dict (keys above; NumPy arrays, torch tensors of any float dtype,
    bfloat16 included, or mmu Tensors) and its config.json (dict or path) -> {mmu TransformerLM key:
    float32 ndarray} for TransformerLM(**phi_config_from_hf(config)). ValueError naming every missing
    key, every key whose shape does not fit the config (with both shapes) and every unexpected key.
    prefix: read only the keys that start with it, without it (a model stored inside another, e.g.
    'showo.' for Show-o's Phi); the other keys are left alone.
    With tie_word_embeddings, a stored lm_head.weight must equal model.embed_tokens.weight."""
    fn = "convert_phi_state_dict"
    cfg = phi_config_from_hf(config)
    src = checkpoint_arrays(state_dict, fn, prefix)
    d, V, H, KV = cfg["dim"], cfg["vocab_size"], cfg["num_heads"], cfg["num_kv_heads"]
    hd, F = d // H, cfg["hidden_dim"]
    km = KeyMap(src, fn, f"the Phi config (hidden_size {d}, {cfg['num_layers']} layers, {H} heads, "
                         f"{KV} kv heads, intermediate_size {F}, vocab_size {V})")
    out = {"embed_tokens.weight": km.get("model.embed_tokens.weight", (V, d))}
    for i in range(cfg["num_layers"]):
        hf, mm = f"model.layers.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            out[mm + "norm1." + p] = km.get(hf + "input_layernorm." + p, (d,))
            rows = {"q": H * hd, "k": KV * hd, "v": KV * hd}
            out[mm + "attn.qkv_proj." + p] = cat_rows(
                [km.get(f"{hf}self_attn.{n}_proj.{p}", (r, d) if p == "weight" else (r,)) for n, r in rows.items()])
            out[mm + "attn.out_proj." + p] = km.get(hf + "self_attn.dense." + p, (d, H * hd) if p == "weight" else (d,))
            if cfg["qk_norm"]:
                out[mm + "attn.q_norm." + p] = km.get(hf + "self_attn.q_layernorm." + p, (hd,))
                out[mm + "attn.k_norm." + p] = km.get(hf + "self_attn.k_layernorm." + p, (hd,))
            out[mm + "mlp.fc1." + p] = km.get(hf + "mlp.fc1." + p, (F, d) if p == "weight" else (F,))
            out[mm + "mlp.fc2." + p] = km.get(hf + "mlp.fc2." + p, (d, F) if p == "weight" else (d,))
    for p in ("weight", "bias"):
        out["norm." + p] = km.get("model.final_layernorm." + p, (d,))
    if cfg["tie_embeddings"]:
        out["lm_head_bias"] = km.get("lm_head.bias", (V,))
        check_tied(km, "lm_head.weight", "model.embed_tokens.weight", fn)
    else:
        out["lm_head.weight"] = km.get("lm_head.weight", (V, d))
        out["lm_head.bias"] = km.get("lm_head.bias", (V,))
    km.finish()
    return out


def load_phi(state_dict, config, prefix=""):
    """A PhiForCausalLM checkpoint (state dict + config.json, see convert_phi_state_dict) -> an
    mmu.models.phi.Phi (an mmu.nn.TransformerLM) with its weights: model(input_ids) gives the same
    logits as transformers' PhiForCausalLM (float32)."""
    config = read_config(config, "load_phi")
    from .model import Phi
    model = Phi(**phi_config_from_hf(config))
    model.load_state_dict(convert_phi_state_dict(state_dict, config, prefix))
    return model
