"""Small torch models with the published key layouts of open_clip's CLIP (VisionTransformer and
TextTransformer of src/open_clip/transformer.py, the CLIP / CustomTextCLIP containers of model.py)
and of Hugging Face's text towers (SiglipTextModel, CLIPTextModel / CLIPModel's text half, from
transformers' modeling_siglip.py / modeling_clip.py), written here for the converter tests: the
same parameter names and shapes, the same forward arithmetic in float32, nothing else (no dropout,
no caching, no training helpers). torch only: the tests importorskip torch before importing this.
"""
import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from tests.hf_layouts import ACTIVATIONS, _eager_attention


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


# ---------------------------------------------------------------------------------------------
# open_clip: ResidualAttentionBlock (ln_1, attn with a fused in_proj, ln_2, mlp.c_fc / c_proj)

class _OCAttention(nn.Module):
    """open_clip's Attention on its self-attention path: q, k, v = linear(x, in_proj).chunk(3),
    softmax(q k^T / sqrt(D) + mask) v, out_proj."""

    def __init__(self, d, heads):
        super().__init__()
        self.H = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, mask=None):
        B, L, d = x.shape
        q, k, v = (t.reshape(B, L, self.H, d // self.H).transpose(1, 2)
                   for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        return self.out_proj(_eager_attention(q, k, v, mask).transpose(1, 2).reshape(B, L, d))


class _OCBlock(nn.Module):
    def __init__(self, d, heads, hidden, act, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = _OCAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, hidden)), ("gelu", act),
                                              ("c_proj", nn.Linear(hidden, d))]))

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class _OCTransformer(nn.Module):
    def __init__(self, d, layers, heads, hidden, act, eps):
        super().__init__()
        self.resblocks = nn.ModuleList([_OCBlock(d, heads, hidden, act, eps) for _ in range(layers)])

    def forward(self, x, mask=None):
        for blk in self.resblocks:
            x = blk(x, mask)
        return x


class _QuickGELU(nn.Module):
    def forward(self, x):
        return _quick_gelu(x)


def _oc_act(cfg):
    return _QuickGELU() if cfg.get("quick_gelu", False) else nn.GELU()


def _oc_eps(part):
    return (part.get("norm_kwargs") or {}).get("eps", 1e-5)


class OpenClipVisionTransformer(nn.Module):
    """open_clip's VisionTransformer (pool_type 'tok', learnable positions, ln_pre, no attentional
    pool): forward(images) -> (pooled = ln_post(x)[:, 0] @ proj, x = the transformer's output before
    ln_post)."""

    def __init__(self, cfg):
        super().__init__()
        v = cfg["vision_cfg"]
        d, p, size = v.get("width", 768), v.get("patch_size", 16), v.get("image_size", 224)
        heads = d // v.get("head_width", 64)
        hidden = int(d * v.get("mlp_ratio", 4.0))
        self.conv1 = nn.Conv2d(3, d, p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.positional_embedding = nn.Parameter(torch.randn((size // p) ** 2 + 1, d))
        self.ln_pre = nn.LayerNorm(d, eps=_oc_eps(v))
        self.transformer = _OCTransformer(d, v.get("layers", 12), heads, hidden, _oc_act(cfg), _oc_eps(v))
        self.ln_post = nn.LayerNorm(d, eps=_oc_eps(v))
        self.proj = nn.Parameter(torch.randn(d, cfg.get("embed_dim", 512)))

    def forward(self, images):
        x = self.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)[:, 0] @ self.proj, x


class OpenClipTextTransformer(nn.Module):
    """open_clip's TextTransformer (no class token): token + positional embedding, the blocks under
    the causal mask (unless no_causal_mask), ln_final, pooled by pool_type ('argmax': the highest id;
    'eos': the first eos_id; 'last'), then text_projection (a (width, E) parameter, or a Linear with
    bias when proj_bias)."""

    def __init__(self, cfg):
        super().__init__()
        t = cfg["text_cfg"]
        d, L = t.get("width", 512), t.get("context_length", 77)
        self.t = t
        self.token_embedding = nn.Embedding(t.get("vocab_size", 49408), d)
        self.positional_embedding = nn.Parameter(torch.randn(L, d))
        self.transformer = _OCTransformer(d, t.get("layers", 12), t.get("heads", 8), int(d * t.get("mlp_ratio", 4.0)),
                                          _oc_act(cfg), _oc_eps(t))
        self.ln_final = nn.LayerNorm(d, eps=_oc_eps(t))
        E = cfg.get("embed_dim", 512)
        if t.get("proj_bias", False):
            self.text_projection = nn.Linear(d, E)
        else:
            self.text_projection = nn.Parameter(torch.randn(d, E))
        if not t.get("no_causal_mask", False):
            self.register_buffer("attn_mask", torch.full((L, L), float("-inf")).triu_(1), persistent=False)
        else:
            self.attn_mask = None

    def forward(self, ids):
        L = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:L]
        mask = None if self.attn_mask is None else self.attn_mask[:L, :L]
        x = self.ln_final(self.transformer(x, mask))
        pool = self.t.get("pool_type", "argmax")
        rows = torch.arange(ids.shape[0])
        if pool == "argmax":
            pooled = x[rows, ids.argmax(dim=-1)]
        elif pool == "eos":
            pooled = x[rows, (ids == self.t["eos_id"]).int().argmax(dim=-1)]
        else:
            assert pool == "last"
            pooled = x[:, -1]
        if isinstance(self.text_projection, nn.Linear):
            return x, self.text_projection(pooled)
        return x, pooled @ self.text_projection


class OpenClipCLIP(nn.Module):
    """open_clip's CLIP: visual.* and the text tower's parts at the top (token_embedding,
    positional_embedding, transformer, ln_final, text_projection), logit_scale."""

    def __init__(self, cfg):
        super().__init__()
        self.visual = OpenClipVisionTransformer(cfg)
        text = OpenClipTextTransformer(cfg)
        self.text_tower = [text]                  # a list: its parameters are registered below, at the top
        self.token_embedding, self.positional_embedding = text.token_embedding, text.positional_embedding
        self.transformer, self.ln_final, self.text_projection = text.transformer, text.ln_final, text.text_projection
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, ids):
        return self.text_tower[0](ids)


class OpenClipCustomTextCLIP(nn.Module):
    """open_clip's CustomTextCLIP (its SigLIP configs' text side): visual.*, text.*, logit_scale,
    logit_bias."""

    def __init__(self, cfg):
        super().__init__()
        self.visual = OpenClipVisionTransformer(cfg)
        self.text = OpenClipTextTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def encode_text(self, ids):
        return self.text(ids)


# ---------------------------------------------------------------------------------------------
# Hugging Face text towers: SiglipTextModel and CLIPTextModel (+ CLIPModel's text_projection)

class _HFTextAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.H = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask):
        B, L, d = x.shape
        q, k, v = (p(x).view(B, L, self.H, d // self.H).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(_eager_attention(q, k, v, mask).transpose(1, 2).reshape(B, L, d))


class _HFTextMLP(nn.Module):
    def __init__(self, d, hidden, act):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.act = ACTIVATIONS[act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _HFTextLayer(nn.Module):
    def __init__(self, c, act, eps):
        super().__init__()
        d = c["hidden_size"]
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.self_attn = _HFTextAttention(d, c["num_attention_heads"])
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = _HFTextMLP(d, c["intermediate_size"], act)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class _HFTextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])


class _HFEncoder(nn.Module):
    def __init__(self, c, act, eps):
        super().__init__()
        self.layers = nn.ModuleList([_HFTextLayer(c, act, eps) for _ in range(c["num_hidden_layers"])])


class _HFTextTransformer(nn.Module):
    def __init__(self, c, siglip):
        super().__init__()
        act = c.get("hidden_act", "gelu_pytorch_tanh" if siglip else "quick_gelu")
        eps = c.get("layer_norm_eps", 1e-6 if siglip else 1e-5)
        self.embeddings = _HFTextEmbeddings(c)
        self.encoder = _HFEncoder(c, act, eps)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=eps)
        if siglip:
            self.head = nn.Linear(c["hidden_size"], c.get("projection_size") or c["hidden_size"])

    def features(self, ids, causal):
        L = ids.shape[1]
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding.weight[:L][None]
        mask = torch.full((L, L), torch.finfo(torch.float32).min).triu(1)[None, None] if causal else None
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.final_layer_norm(x)


class SiglipTextModel(nn.Module):
    """forward(ids) -> (last_hidden_state = final_layer_norm(x), pooler_output = head(x[:, -1])):
    no causal mask (SigLIP pads to max length; the last token is the pooled one)."""

    def __init__(self, c):
        super().__init__()
        self.text_model = _HFTextTransformer(c, siglip=True)

    def forward(self, ids):
        x = self.text_model.features(ids, causal=False)
        return x, self.text_model.head(x[:, -1])


class CLIPTextModel(nn.Module):
    """CLIPTextModel (projection=False) or CLIPTextModelWithProjection / CLIPModel's text half
    (text_projection, no bias, beside text_model): forward(ids) -> (last_hidden_state, pooled) with
    the causal mask; pooled at argmax(ids) when eos_token_id == 2, else at the first eos_token_id,
    then text_projection when there is one."""

    def __init__(self, c, projection_dim=None):
        super().__init__()
        self.eos = c.get("eos_token_id", 49407)
        self.text_model = _HFTextTransformer(c, siglip=False)
        if projection_dim is not None:
            self.text_projection = nn.Linear(c["hidden_size"], projection_dim, bias=False)

    def forward(self, ids):
        x = self.text_model.features(ids, causal=True)
        rows = torch.arange(ids.shape[0])
        idx = ids.argmax(dim=-1) if self.eos == 2 else (ids == self.eos).int().argmax(dim=-1)
        pooled = x[rows, idx]
        return x, self.text_projection(pooled) if hasattr(self, "text_projection") else pooled


# ---------------------------------------------------------------------------------------------
# open_clip's timm SigLIP tower (TimmModel with timm_pool 'map', timm_proj 'none'): visual.trunk = timm's
# VisionTransformer (class_token False, global_pool 'map', num_classes 0), from timm's vision_transformer.py
# (Block: norm1, attn.qkv fused [q;k;v], attn.proj, norm2, mlp.fc1/fc2; LayerNorm eps 1e-6, nn.GELU) and
# layers/attention_pool.py (AttentionPoolLatent: latent, q, kv, proj, norm, mlp; x + mlp(norm(x)))

class _TimmAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.H = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, N, d = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.H, d // self.H).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(_eager_attention(q, k, v, None).transpose(1, 2).reshape(B, N, d))


class _TimmMlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _TimmBlock(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d, eps=1e-6), _TimmAttention(d, heads)
        self.norm2, self.mlp = nn.LayerNorm(d, eps=1e-6), _TimmMlp(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _TimmPatchEmbed(nn.Module):
    def __init__(self, d, p):
        super().__init__()
        self.proj = nn.Conv2d(3, d, p, stride=p)


class _AttentionPoolLatent(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.H = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, d))
        self.q, self.kv, self.proj = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.norm, self.mlp = nn.LayerNorm(d, eps=1e-6), _TimmMlp(d, hidden)

    def forward(self, x):
        B, N, d = x.shape
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.H, d // self.H).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, self.H, d // self.H).permute(2, 0, 3, 1, 4).unbind(0)
        x = self.proj(_eager_attention(q, k, v, None).transpose(1, 2).reshape(B, 1, d))
        return (x + self.mlp(self.norm(x)))[:, 0]


class TimmSiglipTrunk(nn.Module):
    """forward(images) -> (forward_features = norm(blocks(patches + pos_embed)), attn_pool of them)."""

    def __init__(self, d, depth, heads, hidden, image_size, p):
        super().__init__()
        self.patch_embed = _TimmPatchEmbed(d, p)
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // p) ** 2, d))
        self.blocks = nn.ModuleList([_TimmBlock(d, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.attn_pool = _AttentionPoolLatent(d, heads, hidden)

    def forward(self, images):
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x, self.attn_pool(x)


class OpenClipTimmVisual(nn.Module):
    def __init__(self, d, depth, heads, hidden, image_size, p):
        super().__init__()
        self.trunk = TimmSiglipTrunk(d, depth, heads, hidden, image_size, p)
        self.head = nn.Sequential()


class OpenClipSiglip(nn.Module):
    """open_clip's CustomTextCLIP of a SigLIP config: visual.trunk.*, text.*, logit_scale, logit_bias."""

    def __init__(self, cfg, d, depth, heads, hidden, p):
        super().__init__()
        self.visual = OpenClipTimmVisual(d, depth, heads, hidden, cfg["vision_cfg"]["image_size"], p)
        self.text = OpenClipTextTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
