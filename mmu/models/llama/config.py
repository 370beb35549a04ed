"""LLaMA (Hugging Face LlamaConfig, e.g. a LLaMA-2 config.json such as VILA-U's language model) ->
mmu.nn.TransformerLM's constructor arguments."""
from .._hf import config_float, config_int, read_config

__all__ = ["llama_config_from_hf"]


def llama_config_from_hf(config):
    """A LLaMA config.json (dict or path) -> the keyword arguments of mmu.nn.TransformerLM that build
    the same network: sequential pre-RMSNorm layers (eps rms_norm_eps), grouped-query attention
    (num_key_value_heads), full RoPE (base rope_theta) over head_dim (config head_dim, default
    hidden_size / heads), SwiGLU MLP of width intermediate_size (hidden_act must be 'silu'), no
    biases unless attention_bias / mlp_bias (mmu has one bias switch: when only one of them is true,
    the other part's biases are loaded as zeros), a head without bias, tied to the embedding when
    tie_word_embeddings. transformers' defaults for absent fields: vocab_size 32000, hidden_size
    4096, intermediate_size 11008, 32 layers, 32 heads, rms_norm_eps 1e-6, rope_theta 10000,
    max_position_embeddings 2048, attention_dropout 0. rope_scaling other than null (linear,
    dynamic, llama3, yarn) raises NotImplementedError."""
    fn = "llama_config_from_hf"
    c = read_config(config, fn)
    if c.get("model_type", "llama") != "llama":
        raise ValueError(f"{fn}: config is for model_type {c['model_type']!r}, not 'llama'")
    if c.get("rope_scaling") is not None:
        raise NotImplementedError(f"{fn}: rope_scaling {c['rope_scaling']!r} is not supported (only null: "
                                  "mmu's RoPE has no scaled frequencies)")
    act = c.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"{fn}: hidden_act {act!r} is not supported (LLaMA's SwiGLU gate is 'silu')")
    dim = config_int(c, "hidden_size", fn, 4096)
    heads = config_int(c, "num_attention_heads", fn, 32)
    head_dim = c.get("head_dim")
    if head_dim is None:
        if dim % heads:
            raise ValueError(f"{fn}: hidden_size {dim} is not a multiple of num_attention_heads {heads} "
                             "and there is no head_dim")
        head_dim = dim // heads
    head_dim = config_int({"head_dim": head_dim}, "head_dim", fn)
    return dict(vocab_size=config_int(c, "vocab_size", fn, 32000), dim=dim,
                num_layers=config_int(c, "num_hidden_layers", fn, 32), num_heads=heads,
                num_kv_heads=config_int(c, "num_key_value_heads", fn, heads), head_dim=head_dim,
                hidden_dim=config_int(c, "intermediate_size", fn, 11008), activation="swiglu",
                bias=bool(c.get("attention_bias", False) or c.get("mlp_bias", False)), norm="rmsnorm",
                norm_eps=config_float(c, "rms_norm_eps", fn, 1e-6), residual="sequential", qk_norm=None,
                pos="rope", rotary_fraction=1.0, rope_base=config_float(c, "rope_theta", fn, 10000.0),
                max_seq_len=config_int(c, "max_position_embeddings", fn, 2048), dropout=0.0,
                attn_dropout=float(c.get("attention_dropout") or 0.0),
                tie_embeddings=bool(c.get("tie_word_embeddings", False)), head_bias=False)
