"""LLaMA checkpoints in Hugging Face's layout (transformers' LlamaForCausalLM, e.g. LLaMA-2's
model-0000k-of-0000n.safetensors merged into one dict) -> mmu.nn.TransformerLM. The user reads the
safetensors file(s) they have and passes the dict; nothing is downloaded.

| Hugging Face key (i = layer)                          | mmu TransformerLM key                      |
|-------------------------------------------------------|--------------------------------------------|
| model.embed_tokens.weight (V, d)                      | embed_tokens.weight                        |
| model.layers.i.input_layernorm.weight                 | layers.i.norm1.weight (RMSNorm)            |
| model.layers.i.self_attn.{q,k,v}_proj.weight [.bias]  | layers.i.attn.qkv_proj.* (rows [q; k; v])  |
| model.layers.i.self_attn.o_proj.weight [.bias]        | layers.i.attn.out_proj.*                   |
| model.layers.i.post_attention_layernorm.weight        | layers.i.norm2.weight                      |
| model.layers.i.mlp.gate_proj / up_proj / down_proj    | layers.i.mlp.fc_gate / fc1 / fc2           |
| model.norm.weight                                     | norm.weight                                |
| lm_head.weight (V, d) (absent when tied)              | lm_head.weight                             |

The network is LlamaForCausalLM's: x + attn(rms(x)); x + down(silu(gate(rms(x))) * up(rms(x)));
RoPE over all head_dim dims in the rotate-half convention, positions 0..L-1; grouped-query heads
(query head h reads key/value head h // (heads / kv_heads), as transformers' repeat_kv).
Sharded checkpoints: merge the shards' dicts ({**load_file(a), **load_file(b)}) first.
"""
import numpy as np

from .._hf import KeyMap, cat_rows, check_tied, checkpoint_arrays, read_config
from .config import llama_config_from_hf

__all__ = ["convert_llama_state_dict", "load_llama"]


def convert_llama_state_dict(state_dict, config, prefix=""):
    """A LlamaForCausalLM state dict (keys above; NumPy arrays, torch tensors of any float dtype,
    bfloat16 included, or mmu Tensors) and its config.json (dict or path) -> {mmu TransformerLM key:
    float32 ndarray} for TransformerLM(**llama_config_from_hf(config)). ValueError naming every
    missing key, every key whose shape does not fit the config (with both shapes) and every
    unexpected key.
    prefix: read only the keys that start with it, without it (a model stored inside another, e.g.
    'showo.' for Show-o's Phi); the other keys are left alone. Rotary tables stored by old checkpoints (self_attn.rotary_emb.inv_freq) are
    skipped; with tie_word_embeddings a stored lm_head.weight must equal the embedding."""
    fn = "convert_llama_state_dict"
    c = read_config(config, fn)
    cfg = llama_config_from_hf(c)
    src = checkpoint_arrays(state_dict, fn, prefix)
    d, V, H, KV = cfg["dim"], cfg["vocab_size"], cfg["num_heads"], cfg["num_kv_heads"]
    hd, F = cfg["head_dim"], cfg["hidden_dim"]
    attn_bias, mlp_bias = bool(c.get("attention_bias", False)), bool(c.get("mlp_bias", False))
    km = KeyMap(src, fn, f"the LLaMA config (hidden_size {d}, {cfg['num_layers']} layers, {H} heads, {KV} kv "
                         f"heads, head_dim {hd}, intermediate_size {F}, vocab_size {V})")

    def linear(mm, hf, rows, cols, has_bias):
        # mmu's bias switch is shared: a part the checkpoint stores without bias gets zeros
        out[mm + ".weight"] = km.get(hf + ".weight", (rows, cols))
        if cfg["bias"]:
            out[mm + ".bias"] = km.get(hf + ".bias", (rows,)) if has_bias else np.zeros(rows, np.float32)

    out = {"embed_tokens.weight": km.get("model.embed_tokens.weight", (V, d))}
    for i in range(cfg["num_layers"]):
        hf, mm = f"model.layers.{i}.", f"layers.{i}."
        out[mm + "norm1.weight"] = km.get(hf + "input_layernorm.weight", (d,))
        out[mm + "norm2.weight"] = km.get(hf + "post_attention_layernorm.weight", (d,))
        rows = {"q": H * hd, "k": KV * hd, "v": KV * hd}
        out[mm + "attn.qkv_proj.weight"] = cat_rows([km.get(f"{hf}self_attn.{n}_proj.weight", (r, d))
                                                     for n, r in rows.items()])
        if cfg["bias"]:
            out[mm + "attn.qkv_proj.bias"] = cat_rows([km.get(f"{hf}self_attn.{n}_proj.bias", (r,)) if attn_bias
                                                       else np.zeros(r, np.float32) for n, r in rows.items()])
        linear(mm + "attn.out_proj", hf + "self_attn.o_proj", d, H * hd, attn_bias)
        linear(mm + "mlp.fc_gate", hf + "mlp.gate_proj", F, d, mlp_bias)
        linear(mm + "mlp.fc1", hf + "mlp.up_proj", F, d, mlp_bias)
        linear(mm + "mlp.fc2", hf + "mlp.down_proj", d, F, mlp_bias)
        if km.has(hf + "self_attn.rotary_emb.inv_freq"):
            km.skip(hf + "self_attn.rotary_emb.inv_freq")   # a table, recomputed from rope_theta
    out["norm.weight"] = km.get("model.norm.weight", (d,))
    if cfg["tie_embeddings"]:
        check_tied(km, "lm_head.weight", "model.embed_tokens.weight", fn)
    else:
        out["lm_head.weight"] = km.get("lm_head.weight", (V, d))
    km.finish()
    return out


def load_llama(state_dict, config, prefix=""):
    """A LlamaForCausalLM checkpoint (state dict + config.json, see convert_llama_state_dict) -> an
    mmu.models.llama.Llama (an mmu.nn.TransformerLM) with its weights: model(input_ids) gives the
    same logits as transformers' LlamaForCausalLM (float32)."""
    config = read_config(config, "load_llama")
    from .model import Llama
    model = Llama(**llama_config_from_hf(config))
    model.load_state_dict(convert_llama_state_dict(state_dict, config, prefix))
    return model
