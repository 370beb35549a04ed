"""GPT-2's published layout -> GPT. mmu's own checkpoints need no conversion (GPT.from_pretrained, or
GPT.load_state_dict on a state_dict with mmu's "lm.*" keys).

Hugging Face's GPT2LMHeadModel (the layout of OpenAI's released GPT-2 weights), per layer i:

    transformer.h.{i}.ln_1.{weight,bias}          -> lm.layers.{i}.norm1.*
    transformer.h.{i}.attn.c_attn.{weight,bias}   -> lm.layers.{i}.attn.qkv_proj.*   (weight transposed)
    transformer.h.{i}.attn.c_proj.{weight,bias}   -> lm.layers.{i}.attn.out_proj.*   (weight transposed)
    transformer.h.{i}.ln_2.{weight,bias}          -> lm.layers.{i}.norm2.*
    transformer.h.{i}.mlp.c_fc.{weight,bias}      -> lm.layers.{i}.mlp.fc1.*         (weight transposed)
    transformer.h.{i}.mlp.c_proj.{weight,bias}    -> lm.layers.{i}.mlp.fc2.*         (weight transposed)
    transformer.wte.weight -> lm.embed_tokens.weight, transformer.wpe.weight -> lm.pos_embedding.weight,
    transformer.ln_f.* -> lm.norm.*, lm_head.weight: tied to wte (else lm.lm_head.weight).

GPT-2's Conv1D stores weights (in, out), so each is transposed to Linear's (out, in). c_attn's 3·dim
outputs are q, k, v one after the other, each heads × head_dim: qkv_proj's order. The block is pre-norm
sequential with layernorm (eps 1e-5), tanh-GELU ("gelu_new") and learned positions: GPTConfig(pos=
"learned", activation="gelu_tanh", max_seq_len=n_positions, mlp_ratio=n_inner/dim). The head count is
not in the shapes: pass num_heads (12 for GPT-2 small).
"""
import re

import numpy as np

from ..._args import check_int, foreign_array
from .config import GPTConfig

__all__ = ["convert_gpt2_state_dict"]

_LAYER = re.compile(r"^h\.(\d+)\.(.+)$")
# per-layer GPT-2 names -> (mmu name, transpose)
_LAYER_KEYS = {
    "ln_1.weight": ("norm1.weight", False), "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("attn.qkv_proj.weight", True), "attn.c_attn.bias": ("attn.qkv_proj.bias", False),
    "attn.c_proj.weight": ("attn.out_proj.weight", True), "attn.c_proj.bias": ("attn.out_proj.bias", False),
    "ln_2.weight": ("norm2.weight", False), "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("mlp.fc1.weight", True), "mlp.c_fc.bias": ("mlp.fc1.bias", False),
    "mlp.c_proj.weight": ("mlp.fc2.weight", True), "mlp.c_proj.bias": ("mlp.fc2.bias", False),
}
_TOP_KEYS = {"wte.weight": "lm.embed_tokens.weight", "wpe.weight": "lm.pos_embedding.weight",
             "ln_f.weight": "lm.norm.weight", "ln_f.bias": "lm.norm.bias"}
# buffers of older transformers versions (the causal mask), not weights
_BUFFERS = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def convert_gpt2_state_dict(state_dict, num_heads, layer_norm_epsilon=1e-5):
    """GPT-2 weights in Hugging Face's GPT2LMHeadModel / GPT2Model layout (a dict of arrays or torch
    tensors; keys with or without the "transformer." prefix) -> (GPTConfig, state_dict of GPT).

    Load with `model = GPT(config); model.load_state_dict(sd)`. The config is read off the shapes
    (vocab_size, dim, num_layers, max_seq_len, mlp_ratio) with num_heads given; tie_embeddings is True
    when lm_head.weight is absent or equals wte.weight. Every key must be known: an unknown key, a
    missing one or a shape that does not fit raises ValueError naming it."""
    fn = "convert_gpt2_state_dict"
    if not isinstance(state_dict, dict):
        raise TypeError(f"{fn}: state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    num_heads = check_int(num_heads, fn, "num_heads")
    if num_heads < 1:
        raise ValueError(f"{fn}: num_heads must be >= 1, got {num_heads}")
    arrays, head = {}, None
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"{fn}: keys must be str, got {key!r}")
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if _BUFFERS.match(name):
            continue
        arr = np.asarray(foreign_array(value, fn, key), np.float32)
        if name == "lm_head.weight":
            head = arr
        else:
            arrays[name] = (key, arr)
    for need in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        if need not in arrays:
            raise ValueError(f"{fn}: the state_dict has no {need!r} (nor 'transformer.{need}'): not GPT-2's layout")
    wte, wpe = arrays["wte.weight"][1], arrays["wpe.weight"][1]
    if wte.ndim != 2 or wpe.ndim != 2 or wte.shape[1] != wpe.shape[1]:
        raise ValueError(f"{fn}: wte {wte.shape} and wpe {wpe.shape} must be (vocab, dim) and (positions, dim)")
    vocab, dim = wte.shape
    layers = sorted({int(m.group(1)) for m in (_LAYER.match(n) for n in arrays) if m})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{fn}: the layers h.{{i}} must be numbered 0..n-1, got {layers}")
    fc = arrays.get("h.0.mlp.c_fc.weight")
    if fc is None:
        raise ValueError(f"{fn}: the state_dict has no 'h.0.mlp.c_fc.weight'")
    hidden = fc[1].shape[-1]
    if dim % num_heads:
        raise ValueError(f"{fn}: dim {dim} is not a multiple of num_heads {num_heads}")
    tied = head is None or (head.shape == wte.shape and np.array_equal(head, wte))
    cfg = GPTConfig(vocab_size=vocab, dim=dim, num_layers=len(layers), num_heads=num_heads,
                    mlp_ratio=hidden / dim, activation="gelu_tanh", norm="layernorm",
                    norm_eps=float(layer_norm_epsilon), residual="sequential", bias=True, pos="learned",
                    max_seq_len=wpe.shape[0], tie_embeddings=tied)
    if cfg.hidden_dim != hidden:
        raise ValueError(f"{fn}: the MLP width {hidden} is not int(mlp_ratio * dim) for dim {dim}")
    want = {
        "norm1.weight": (dim,), "norm1.bias": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,),
        "attn.qkv_proj.weight": (3 * dim, dim), "attn.qkv_proj.bias": (3 * dim,),
        "attn.out_proj.weight": (dim, dim), "attn.out_proj.bias": (dim,),
        "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,),
    }
    out = {}
    for name, (key, arr) in arrays.items():
        if name in _TOP_KEYS:
            target, t = _TOP_KEYS[name], False
            shape = {"wte.weight": (vocab, dim), "wpe.weight": wpe.shape}.get(name, (dim,))
        else:
            m = _LAYER.match(name)
            if m is None or m.group(2) not in _LAYER_KEYS:
                raise ValueError(f"{fn}: unknown key {key!r} (not in GPT-2's layout)")
            sub, t = _LAYER_KEYS[m.group(2)]
            target, shape = f"lm.layers.{m.group(1)}.{sub}", want[sub]
        value = arr.T if t else arr
        if value.shape != tuple(shape):
            raise ValueError(f"{fn}: {key!r} has shape {arr.shape}, expected "
                             f"{tuple(reversed(shape)) if t else tuple(shape)} for dim {dim}, MLP width {hidden}")
        out[target] = np.ascontiguousarray(value)
    if not tied:
        if head.shape != (vocab, dim):
            raise ValueError(f"{fn}: 'lm_head.weight' has shape {head.shape}, expected {(vocab, dim)}")
        out["lm.lm_head.weight"] = np.ascontiguousarray(head)
    missing = [f"h.{i}.{k}" for i in layers for k, (sub, _) in _LAYER_KEYS.items()
               if f"lm.layers.{i}.{sub}" not in out]
    if missing:
        raise ValueError(f"{fn}: the state_dict lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return cfg, out
