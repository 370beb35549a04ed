"""Phi (Hugging Face PhiConfig, e.g. microsoft/phi-1_5's config.json) -> mmu.nn.TransformerLM's
constructor arguments."""
from .._hf import config_float, config_int, read_config

__all__ = ["phi_config_from_hf", "HF_ACTIVATIONS"]

# transformers' ACT2FN names -> mmu.nn.MLP's activation
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "quick_gelu": "quick_gelu"}


def phi_config_from_hf(config):
    """A Phi config.json (dict or path) -> the keyword arguments of mmu.nn.TransformerLM that build the
    same network: residual='parallel' (one LayerNorm feeding attention and MLP), biases everywhere,
    head_bias=True (lm_head has a bias), partial RoPE (rotary_fraction = partial_rotary_factor of each
    head's dims, base rope_theta), QK LayerNorm per head when qk_layernorm, untied head unless
    tie_word_embeddings. Fields and transformers' defaults (phi-1_5's values): vocab_size 51200,
    hidden_size 2048, intermediate_size 8192, num_hidden_layers 24, num_attention_heads 32,
    num_key_value_heads (= heads), hidden_act 'gelu_new', max_position_embeddings 2048,
    layer_norm_eps 1e-5, partial_rotary_factor 0.5, rope_theta 10000, qk_layernorm False,
    resid_pdrop / attention_dropout 0 (-> dropout / attn_dropout; embd_pdrop shares `dropout`).
    rope_scaling other than null raises NotImplementedError (mmu's RoPE has no scaled frequencies)."""
    fn = "phi_config_from_hf"
    c = read_config(config, fn)
    if c.get("model_type", "phi") != "phi":
        raise ValueError(f"{fn}: config is for model_type {c['model_type']!r}, not 'phi'")
    if c.get("rope_scaling") is not None:
        raise NotImplementedError(f"{fn}: rope_scaling {c['rope_scaling']!r} is not supported (only null)")
    act = c.get("hidden_act", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"{fn}: hidden_act {act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    dim = config_int(c, "hidden_size", fn, 2048)
    heads = config_int(c, "num_attention_heads", fn, 32)
    if dim % heads:
        raise ValueError(f"{fn}: hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    fraction = c.get("partial_rotary_factor", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"{fn}: partial_rotary_factor must be in [0, 1], got {fraction!r}")
    eps = config_float(c, "layer_norm_eps", fn, 1e-5)
    return dict(vocab_size=config_int(c, "vocab_size", fn, 51200), dim=dim,
                num_layers=config_int(c, "num_hidden_layers", fn, 24), num_heads=heads,
                num_kv_heads=config_int(c, "num_key_value_heads", fn, heads),
                hidden_dim=config_int(c, "intermediate_size", fn, 8192), activation=HF_ACTIVATIONS[act],
                bias=True, norm="layernorm", norm_eps=eps, residual="parallel",
                qk_norm="layernorm" if c.get("qk_layernorm", False) else None, qk_norm_eps=eps,
                pos="rope", rotary_fraction=float(fraction), rope_base=config_float(c, "rope_theta", fn, 10000.0),
                max_seq_len=config_int(c, "max_position_embeddings", fn, 2048),
                dropout=float(c.get("resid_pdrop") or 0.0), attn_dropout=float(c.get("attention_dropout") or 0.0),
                tie_embeddings=bool(c.get("tie_word_embeddings", False)), head_bias=True)
