"""Small torch models with the published Hugging Face key layouts of Phi (PhiForCausalLM), LLaMA
(LlamaForCausalLM), SigLIP's vision tower (SiglipVisionModel) and CLIP's (CLIPVisionModel), written
here from the transformers sources (modeling_phi.py, modeling_llama.py, modeling_siglip.py,
modeling_clip.py) for the converter tests: the same parameter names and shapes, the same forward
arithmetic in float32 (eager attention), nothing else (no cache, no dropout, no generation).

Every model takes the config dict a checkpoint's config.json holds (the fields used, with
transformers' defaults when absent). torch only: the tests importorskip torch before importing this.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F


def _gelu_tanh(x):
    # transformers' "gelu_new" / "gelu_pytorch_tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x):
    # transformers' "quick_gelu" (CLIP): x * sigmoid(1.702 x)
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "gelu_fast": _gelu_tanh,
               "gelu": F.gelu, "quick_gelu": _quick_gelu, "silu": F.silu, "relu": F.relu}


# ---------------------------------------------------------------------------------------------
# RoPE, the rotate-half convention: dims (i, i + rot/2) of the first `rot` dims of a head are a pair

def rope_cos_sin(position_ids, rot_dim, theta):
    """cos, sin (B, L, rot_dim) for position_ids (B, L): inv_freq_k = theta^(-2k/rot_dim), the
    frequencies written twice (cat(freqs, freqs)) as transformers' default rope init does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))
    freqs = position_ids[..., None].float() * inv_freq          # (B, L, rot/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_partial_rope(x, cos, sin):
    """x (B, H, L, D); cos, sin (B, L, rot) with rot <= D: rotate the first rot dims, pass the rest."""
    rot = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + _rotate_half(x_rot) * sin, x_pass), dim=-1)


def _causal_additive_mask(attention_mask, L, dtype=torch.float32):
    """(B, 1, L, L) additive: 0 where key j <= query i and key j is a real token, the dtype's min
    otherwise (transformers' eager mask)."""
    allowed = torch.ones(L, L, dtype=torch.bool).tril()[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def _eager_attention(q, k, v, mask):
    """q (B, H, L, D), k / v (B, KV, S, D) with H a multiple of KV (grouped-query heads repeated)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    w = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1])
    if mask is not None:
        w = w + mask
    return torch.softmax(w, dim=-1) @ v


# ---------------------------------------------------------------------------------------------
# Phi (PhiForCausalLM): parallel block with one LayerNorm, q/k/v/dense with biases, partial RoPE,
# optional per-head QK LayerNorm, fc1 -> gelu_new -> fc2, final_layernorm, lm_head with a bias.

class PhiAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        dim, self.H = c["hidden_size"], c["num_attention_heads"]
        self.KV = c.get("num_key_value_heads") or self.H
        self.D = dim // self.H
        self.rot = int(self.D * c.get("partial_rotary_factor", 0.5))
        self.q_proj = nn.Linear(dim, self.H * self.D)
        self.k_proj = nn.Linear(dim, self.KV * self.D)
        self.v_proj = nn.Linear(dim, self.KV * self.D)
        self.dense = nn.Linear(self.H * self.D, dim)
        self.qk_layernorm = c.get("qk_layernorm", False)
        if self.qk_layernorm:
            eps = c.get("layer_norm_eps", 1e-5)
            self.q_layernorm = nn.LayerNorm(self.D, eps=eps)
            self.k_layernorm = nn.LayerNorm(self.D, eps=eps)

    def forward(self, x, cos, sin, mask):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.KV, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.KV, self.D).transpose(1, 2)
        if self.qk_layernorm:
            # over each head's D dims, one affine for all heads, before RoPE (Show-o's phi.py; HF's
            # modeling_phi applies its LayerNorm(D) before the head split, which runs only for 1 head)
            q, k = self.q_layernorm(q), self.k_layernorm(k)
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        o = _eager_attention(q, k, v, mask).transpose(1, 2).reshape(B, L, self.H * self.D)
        return self.dense(o)


class PhiMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])
        self.act = ACTIVATIONS[c.get("hidden_act", "gelu_new")]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PhiDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = PhiAttention(c)
        self.mlp = PhiMLP(c)
        self.input_layernorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-5))

    def forward(self, x, cos, sin, mask):
        h = self.input_layernorm(x)
        return x + self.self_attn(h, cos, sin, mask) + self.mlp(h)


class PhiModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([PhiDecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.final_layernorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-5))


class PhiForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = PhiModel(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=True)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L)[None].expand(B, L)
        attn0 = self.model.layers[0].self_attn
        cos, sin = rope_cos_sin(position_ids, attn0.rot, self.c.get("rope_theta", 10000.0))
        mask = _causal_additive_mask(attention_mask, L)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.final_layernorm(x))


# ---------------------------------------------------------------------------------------------
# LLaMA (LlamaForCausalLM): sequential pre-RMSNorm block, GQA, full RoPE, SwiGLU gate/up/down, no
# biases by default, model.norm, lm_head (absent from the file and tied to embed_tokens when
# tie_word_embeddings).

class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        dim, self.H = c["hidden_size"], c["num_attention_heads"]
        self.KV = c.get("num_key_value_heads") or self.H
        self.D = c.get("head_dim") or dim // self.H
        bias = c.get("attention_bias", False)
        self.q_proj = nn.Linear(dim, self.H * self.D, bias=bias)
        self.k_proj = nn.Linear(dim, self.KV * self.D, bias=bias)
        self.v_proj = nn.Linear(dim, self.KV * self.D, bias=bias)
        self.o_proj = nn.Linear(self.H * self.D, dim, bias=bias)

    def forward(self, x, cos, sin, mask):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.KV, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.KV, self.D).transpose(1, 2)
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        o = _eager_attention(q, k, v, mask).transpose(1, 2).reshape(B, L, self.H * self.D)
        return self.o_proj(o)


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        dim, hidden, bias = c["hidden_size"], c["intermediate_size"], c.get("mlp_bias", False)
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = ACTIVATIONS[c.get("hidden_act", "silu")]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c.get("rms_norm_eps", 1e-6)
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = LlamaRMSNorm(c["hidden_size"], eps)
        self.post_attention_layernorm = LlamaRMSNorm(c["hidden_size"], eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = LlamaRMSNorm(c["hidden_size"], c.get("rms_norm_eps", 1e-6))


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = LlamaModel(c)
        self.tied = bool(c.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def published_state_dict(self):
        """The keys a checkpoint file holds: with tied embeddings there is no lm_head.weight."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L)[None].expand(B, L)
        cos, sin = rope_cos_sin(position_ids, self.model.layers[0].self_attn.D, self.c.get("rope_theta", 10000.0))
        mask = _causal_additive_mask(attention_mask, L)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        w = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        return x @ w.T


# ---------------------------------------------------------------------------------------------
# ViT towers: SigLIP (SiglipVisionModel) and CLIP (CLIPVisionModel). Same encoder layer names
# (layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1/fc2, pre-norm sequential block).

class _ViTAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.H, self.D = heads, dim // heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        B, L, dim = x.shape
        q, k, v = (p(x).view(B, L, self.H, self.D).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(_eager_attention(q, k, v, None).transpose(1, 2).reshape(B, L, dim))


class _ViTMLP(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = ACTIVATIONS[act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _ViTLayer(nn.Module):
    def __init__(self, c, default_act, default_eps):
        super().__init__()
        dim, eps = c["hidden_size"], c.get("layer_norm_eps", default_eps)
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = _ViTAttention(dim, c["num_attention_heads"])
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _ViTMLP(dim, c["intermediate_size"], c.get("hidden_act", default_act))

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, c, act, eps):
        super().__init__()
        self.layers = nn.ModuleList([_ViTLayer(c, act, eps) for _ in range(c["num_hidden_layers"])])


class _SiglipEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["patch_size"]
        self.patch_embedding = nn.Conv2d(c.get("num_channels", 3), c["hidden_size"], p, stride=p)
        self.position_embedding = nn.Embedding((c["image_size"] // p) ** 2, c["hidden_size"])


class _SiglipHead(nn.Module):
    """The attention-pooling head: one learned probe attends over the tokens (torch's
    nn.MultiheadAttention, fused in_proj), then a LayerNorm and a residual MLP."""

    def __init__(self, c):
        super().__init__()
        dim = c["hidden_size"]
        self.probe = nn.Parameter(torch.randn(1, 1, dim))
        self.attention = nn.MultiheadAttention(dim, c["num_attention_heads"], batch_first=True)
        self.layernorm = nn.LayerNorm(dim, eps=c.get("layer_norm_eps", 1e-6))
        self.mlp = _ViTMLP(dim, c["intermediate_size"], c.get("hidden_act", "gelu_pytorch_tanh"))

    def forward(self, x):
        probe = self.probe.repeat(x.shape[0], 1, 1)
        h = self.attention(probe, x, x, need_weights=False)[0]
        return (h + self.mlp(self.layernorm(h)))[:, 0]


class _SiglipVisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = _SiglipEmbeddings(c)
        self.encoder = _Encoder(c, "gelu_pytorch_tanh", 1e-6)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-6))
        if c.get("vision_use_head", True):
            self.head = _SiglipHead(c)


class SiglipVisionModel(nn.Module):
    """forward(pixel_values) -> (last_hidden_state = post_layernorm(encoder output), pooler_output =
    head(last_hidden_state) or None, hidden_states = [embeddings, after layer 1, ..., after layer N])."""

    def __init__(self, c):
        super().__init__()
        self.vision_model = _SiglipVisionTransformer(c)

    def forward(self, pixel_values):
        vm = self.vision_model
        x = vm.embeddings.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = x + vm.embeddings.position_embedding.weight[None]
        hidden = [x]
        for layer in vm.encoder.layers:
            x = layer(x)
            hidden.append(x)
        last = vm.post_layernorm(x)
        pooled = vm.head(last) if hasattr(vm, "head") else None
        return last, pooled, hidden


class _ClipEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        p, dim = c["patch_size"], c["hidden_size"]
        self.class_embedding = nn.Parameter(torch.randn(dim))
        self.patch_embedding = nn.Conv2d(c.get("num_channels", 3), dim, p, stride=p, bias=False)
        self.position_embedding = nn.Embedding((c["image_size"] // p) ** 2 + 1, dim)


class _ClipVisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = _ClipEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-5))  # sic: HF's name
        self.encoder = _Encoder(c, "quick_gelu", 1e-5)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-5))


class CLIPVisionModel(nn.Module):
    """forward(pixel_values) -> (last_hidden_state = encoder output (no post_layernorm), pooler_output =
    post_layernorm(last_hidden_state[:, 0]), hidden_states = [pre_layrnorm(embeddings), after layer 1, ...])."""

    def __init__(self, c):
        super().__init__()
        self.vision_model = _ClipVisionTransformer(c)

    def forward(self, pixel_values):
        vm = self.vision_model
        x = vm.embeddings.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = vm.embeddings.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + vm.embeddings.position_embedding.weight[None]
        x = vm.pre_layrnorm(x)
        hidden = [x]
        for layer in vm.encoder.layers:
            x = layer(x)
            hidden.append(x)
        return x, vm.post_layernorm(x[:, 0]), hidden


def randomize_(model, seed, scale=0.5):
    """Every parameter (norm weights and biases included) drawn N(0, scale^2 / fan) so that a test
    exercises every weight; norm weights around 1 so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan = p.shape[-1] if p.ndim >= 2 else 1
                if p.ndim == 4:
                    fan = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(fan))
    return model
