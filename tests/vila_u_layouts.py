"""Small torch models with the key layout of VILA-U's release (mit-han-lab/vila-u), written here from its
sources for the converter tests: vision_tower/ = RQVAESIGLIPTransformer (rqvaesiglip: a SiglipModel,
the RQBottleneck quantizer with its VQEmbedding codebooks, post_quant_conv, the taming Decoder of
modules.py; rqtransformer: RQTransformer with attention.py's AttentionStack), mm_projector/ =
MultimodalProjector (base_projector.py), llm/ = LlamaForCausalLM (tests/hf_layouts.py). The same
parameter and buffer names and shapes, the same forward arithmetic in float32 (eval mode: no dropout,
no EMA updates), nothing else. One difference, on purpose: the released Upsample casts to bfloat16 after
its float32 interpolation (the model runs in bfloat16); here everything stays float32.
torch only: the tests importorskip torch before importing this.
"""
import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from tests.clip_layouts import _HFTextTransformer
from tests.hf_layouts import _SiglipVisionTransformer


# ---------------------------------------------------------------------------------------------
# rqvaesiglip: quantizations.py (VQEmbedding, RQBottleneck)

class VQEmbedding(nn.Embedding):
    """n_embed codes + one padding row (padding_idx = n_embed, never chosen); EMA buffers
    cluster_size_ema (n_embed,) and embed_ema (n_embed, dim)."""

    def __init__(self, n_embed, dim):
        super().__init__(n_embed + 1, dim, padding_idx=n_embed)
        self.register_buffer("cluster_size_ema", torch.zeros(n_embed))
        self.register_buffer("embed_ema", self.weight[:-1].detach().clone())

    def forward(self, x):
        book = self.weight[:-1]                                              # (K, C)
        flat = x.reshape(-1, x.shape[-1])
        dist = flat.pow(2).sum(1, keepdim=True) + book.t().pow(2).sum(0, keepdim=True) - 2.0 * flat @ book.t()
        idx = dist.reshape(*x.shape[:-1], -1).argmin(dim=-1)
        return F.embedding(idx, self.weight), idx


class RQBottleneck(nn.Module):
    """Residual quantization over depth D = code_shape[2] with latent_shape == code_shape's grid (each
    position its own codes). shared: one VQEmbedding in every slot of `codebooks`."""

    def __init__(self, n_embed, dim, depth, shared=True):
        super().__init__()
        if shared:
            book = VQEmbedding(n_embed, dim)
            self.codebooks = nn.ModuleList([book for _ in range(depth)])
        else:
            self.codebooks = nn.ModuleList([VQEmbedding(n_embed, dim) for _ in range(depth)])
        self.shared = shared

    def forward(self, x):
        """x (B, h, w, C) -> (z_q (B, h, w, C) = the sum of the chosen codes, codes (B, h, w, D))."""
        residual, total, codes = x.detach().clone(), torch.zeros_like(x), []
        for book in self.codebooks:
            quant, code = book(residual)
            residual = residual - quant
            total = total + quant
            codes.append(code.unsqueeze(-1))
        return x + (total - x).detach(), torch.cat(codes, dim=-1)

    def embed_code_with_depth(self, code):
        """code (..., D) -> (..., D, C): each depth's code vector (get_code_emb_with_depth)."""
        books = [self.codebooks[0]] * code.shape[-1] if self.shared else list(self.codebooks)
        return torch.stack([F.embedding(code[..., i], b.weight) for i, b in enumerate(books)], dim=-2)


# ---------------------------------------------------------------------------------------------
# rqvaesiglip: modules.py (taming's Decoder, temb_channels 0)

def _norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).permute(0, 2, 1)
        k = self.k(h).reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
        out = torch.bmm(self.v(h).reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels):
        super().__init__()
        self.levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (self.levels - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = (ResnetBlock(block_in, block_in), AttnBlock(block_in),
                                                               ResnetBlock(block_in, block_in))
        up = []
        for i in reversed(range(self.levels)):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out, self.conv_out = _norm(block_in), nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(self.levels)):
            for j, block in enumerate(self.up[i].block):
                h = block(h)
                if len(self.up[i].attn) > 0:
                    h = self.up[i].attn[j](h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------
# rqvaesiglip: modeling_rqvaesiglip.py

class SiglipModel(nn.Module):
    """SiglipModel's keys: vision_model.*, text_model.*, logit_scale (1,), logit_bias (1,)."""

    def __init__(self, sc):
        super().__init__()
        self.vision_model = _SiglipVisionTransformer(sc["vision_config"])
        self.text_model = _HFTextTransformer(sc["text_config"], siglip=True)
        self.logit_scale = nn.Parameter(torch.randn(1))
        self.logit_bias = nn.Parameter(torch.randn(1))


class RQVAESiglipModel(nn.Module):
    def __init__(self, rq, sc):
        super().__init__()
        self.siglip_model = SiglipModel(sc)
        self.quantizer = RQBottleneck(rq["n_embed"], rq["embed_dim"], rq["code_shape"][2], rq["shared_codebook"])
        dd = rq["ddconfig"]
        self.post_quant_conv = nn.Conv2d(rq["embed_dim"], dd["z_channels"], 1)
        self.decoder = Decoder(dd["ch"], dd["out_ch"], dd["ch_mult"], dd["num_res_blocks"], dd["attn_resolutions"],
                               dd["resolution"], dd["z_channels"])
        self.decoder_latent_shape = rq.get("decoder_latent_shape")

    def encode_image(self, image):
        """VILA-U's encode_image: the output of layer len - 2 (from 0), (B, h, w, C), quantized ->
        (codes (B, h, w, D), z_q)."""
        vm = self.siglip_model.vision_model
        x = vm.embeddings.patch_embedding(image).flatten(2).transpose(1, 2) + vm.embeddings.position_embedding.weight
        for i, layer in enumerate(vm.encoder.layers):
            x = layer(x)
            if i == len(vm.encoder.layers) - 2:
                B, L, C = x.shape
                z_q, code = self.quantizer(x.reshape(B, int(L ** 0.5), int(L ** 0.5), C))
                return code, z_q

    def decode(self, z_q):
        """VILA-U's decode: (B, h, w, C) -> channels first, resized to decoder_latent_shape when the config has
        one (F.interpolate, bilinear, align_corners left at its default; the release casts to float32 for it
        and back to bfloat16), post_quant_conv, the decoder."""
        z_q = z_q.permute(0, 3, 1, 2).contiguous()
        if self.decoder_latent_shape is not None:
            z_q = F.interpolate(z_q.to(torch.float32), size=tuple(self.decoder_latent_shape), mode="bilinear")
        return self.decoder(self.post_quant_conv(z_q))

    def get_code_emb_with_depth(self, code):
        return self.quantizer.embed_code_with_depth(code)


# ---------------------------------------------------------------------------------------------
# rqtransformer: modeling_rqtransformer.py + attention.py

class MultiSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.key, self.query, self.value, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.H = heads

    def forward(self, x):
        B, T, C = x.shape
        k, q, v = (m(x).view(B, T, self.H, C // self.H).transpose(1, 2) for m in (self.key, self.query, self.value))
        att = q @ k.transpose(-2, -1) / math.sqrt(C // self.H)
        att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        return self.proj((att.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, C))


class AttentionBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MultiSelfAttention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(0.1))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class AttentionStack(nn.Module):
    def __init__(self, d, heads, n_layer):
        super().__init__()
        self.blocks = nn.ModuleList([AttentionBlock(d, heads) for _ in range(n_layer)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class RQTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["embed_dim"]
        self.in_mlp_1 = nn.Linear(c["input_embed_dim_1"], d)
        self.in_mlp_2 = nn.Linear(c["input_embed_dim_2"], d)
        self.head_transformer = AttentionStack(d, c["head"]["block"]["n_head"], c["head"]["n_layer"])
        self.pos_emb_d = nn.Parameter(torch.zeros(1, c["block_size"][2], d))
        self.classifier_mlp = nn.Sequential(OrderedDict([("layer_norm", nn.LayerNorm(d)),
                                                         ("linear", nn.Linear(d, c["vocab_size"]))]))

    def forward(self, embed_from_body, code, model_aux):
        """The training forward: (B, S, body) hidden states and (B, S, D) codes -> (B, S, D, K) logits."""
        B, S, D = code.shape
        ctx = self.in_mlp_1(torch.cumsum(model_aux.get_code_emb_with_depth(code), dim=-2))
        full = torch.cat([self.in_mlp_2(embed_from_body).view(B, S, 1, -1), ctx[:, :, :-1, :]], dim=-2)
        full = full.reshape(B * S, D, -1) + self.pos_emb_d[:, :D, :]
        return self.classifier_mlp(self.head_transformer(full).reshape(B, S, D, -1))


class RQVAESIGLIPTransformer(nn.Module):
    """vision_tower/'s model: rqvaesiglip.* and rqtransformer.*."""

    def __init__(self, vt, sc):
        super().__init__()
        self.rqvaesiglip = RQVAESiglipModel(vt["rqvaesiglip"], sc)
        self.rqtransformer = RQTransformer(vt["rqtransformer"])


class MultimodalProjector(nn.Module):
    """mm_projector/'s model: layers = Linear ('linear') or Linear, GELU, Linear ('mlp2x_gelu')."""

    def __init__(self, kind, mm_hidden, hidden):
        super().__init__()
        if kind == "linear":
            self.layers = nn.Linear(mm_hidden, hidden)
        else:
            self.layers = nn.Sequential(nn.Linear(mm_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, x):
        return self.layers(x)
