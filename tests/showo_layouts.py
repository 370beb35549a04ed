"""Torch models with Show-o's published layouts, written here from showlab/Show-o's sources for the
converter tests: MAGVITv2 (models/modeling_magvitv2.py with models/common_modules.py: VQGANEncoder,
VQGANDecoder, LFQuantizer and the get_code / decode_code API) and Showo (models/modeling_showo.py:
the Phi-1.5 of models/phi.py under `showo.`, QK LayerNorm per head). The same parameter and buffer
names and shapes, the same forward arithmetic in float32, nothing else (no losses, no training).
GroupNorm's group count is a parameter (Show-o's is 32) so tiny configs stay tiny.
torch only: the tests importorskip torch before importing this."""
import math

import torch
from torch import nn
from torch.nn import functional as F


def _swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6, affine=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6, affine=True)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)         # b, hw, c
        w = torch.bmm(q, k.reshape(b, c, hh * ww)) * (int(c) ** (-0.5))
        w = torch.softmax(w, dim=2)
        h = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(c, groups):
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = ResnetBlock(c, c, groups), AttnBlock(c, groups), ResnetBlock(c, c, groups)
    return mid


class VQGANEncoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, in_ch, resolution, z_channels, groups):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(in_ch, ch, 3, 1, 1)
        curr_res, in_ch_mult = resolution, (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks[i_level]):
                block.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in, groups))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = _mid(block_in, groups)
        self.norm_out = nn.GroupNorm(groups, block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, x):
        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks[i_level]):
                h = self.down[i_level].block[i_block](hs[-1])
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(self.down[i_level].downsample(hs[-1]))
        h = hs[-1]
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.quant_conv(self.conv_out(_swish(self.norm_out(h))))


class VQGANDecoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, out_ch, resolution, z_channels, groups):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[self.num_resolutions - 1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _mid(block_in, groups)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks[i_level]):
                block.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in, groups))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res *= 2
            self.up.insert(0, up)
        self.norm_out = nn.GroupNorm(groups, block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, z):
        h = self.conv_in(self.post_quant_conv(z))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks[i_level]):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return {"output": self.conv_out(_swish(self.norm_out(h)))}


class LFQuantizer(nn.Module):
    def __init__(self, codebook_dim):
        super().__init__()
        self.codebook_size, self.e_dim = 2 ** codebook_dim, codebook_dim
        indices = torch.arange(self.codebook_size)
        binary = (indices.unsqueeze(1) >> torch.arange(codebook_dim - 1, -1, -1, dtype=torch.long)) & 1
        self.register_buffer("embedding", binary.float() * 2 - 1)
        self.register_buffer("power_vals", 2 ** torch.arange(codebook_dim - 1, -1, -1))

    def get_indices(self, z_q):
        return (self.power_vals.reshape(1, -1, 1, 1) * (z_q > 0).float()).sum(1, keepdim=True).long()

    def get_codebook_entry(self, indices, shape=None):
        if shape is None:
            h = w = int(math.sqrt(indices.shape[-1]))
        else:
            h, w = shape
        b = indices.shape[0]
        z_q = self.embedding[indices.reshape(-1)].view(b, h, w, -1)
        return z_q.permute(0, 3, 1, 2).contiguous()

    def forward(self, z):
        z = z.permute(0, 2, 3, 1).contiguous()
        zf = z.view(-1, self.e_dim)
        ge_zero = (zf > 0).float()
        ones = torch.ones_like(zf)
        z_q = ones * ge_zero + -ones * (1 - ge_zero)
        z_q = zf + (z_q - zf).detach()
        return {"z": z_q.view(z.shape).permute(0, 3, 1, 2).contiguous()}


class MAGVITv2(nn.Module):
    """Show-o's MAGVITv2 with its configuration as arguments (the release: MAGVIT2Config's defaults)."""

    def __init__(self, c):
        super().__init__()
        g = c["norm_groups"]
        out_ch = c.get("out_channels") or c["in_channels"]
        self.encoder = VQGANEncoder(c["ch"], c["encoder_ch_mult"], c["encoder_num_res_blocks"], c["attn_resolutions"],
                                    c["in_channels"], c["resolution"], c["z_channels"], g)
        self.decoder = VQGANDecoder(c["ch"], c["decoder_ch_mult"], c["decoder_num_res_blocks"], c["attn_resolutions"],
                                    out_ch, c["resolution"], c["z_channels"], g)
        self.quantize = LFQuantizer(c["z_channels"])

    def latent(self, pixel_values):
        return self.encoder(pixel_values)

    def get_code(self, pixel_values):
        h = self.encoder(pixel_values)
        return self.quantize.get_indices(self.quantize(h)["z"]).reshape(pixel_values.shape[0], -1)

    def decode_code(self, codebook_indices, shape=None):
        return self.decoder(self.quantize.get_codebook_entry(codebook_indices, shape=shape))["output"]


# ---------------------------------------------------------------------------------------------
# Show-o's transformer: models/modeling_showo.py Showo keeps models/phi.py's PhiForCausalLM under
# `showo` (qk_layernorm forced true, embedding and head resized to the unified vocabulary) and calls
# it with input_ids and a 4-D additive attention_mask (the omni-attention mask) or None (causal).

class Showo(nn.Module):
    """c: the Phi config.json fields of the transformer (vocab_size = the unified vocabulary)."""

    def __init__(self, c):
        super().__init__()
        from tests.hf_layouts import PhiForCausalLM
        self.showo = PhiForCausalLM(dict(c, qk_layernorm=True))

    def forward(self, input_ids, attention_mask=None):
        from tests.hf_layouts import apply_partial_rope, rope_cos_sin  # noqa: F401 (the layers use them)
        from tests.hf_layouts import rope_cos_sin as _cos_sin
        lm = self.showo
        B, L = input_ids.shape
        position_ids = torch.arange(L)[None].expand(B, L)          # pads included, as Show-o's PhiModel
        cos, sin = _cos_sin(position_ids, lm.model.layers[0].self_attn.rot, lm.c.get("rope_theta", 10000.0))
        if attention_mask is None:                                  # SDPA with is_causal
            allowed = torch.ones(L, L, dtype=torch.bool).tril()[None, None]
            attention_mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
        x = lm.model.embed_tokens(input_ids)
        for layer in lm.model.layers:
            x = layer(x, cos, sin, attention_mask)
        return lm.lm_head(lm.model.final_layernorm(x))


def create_attention_mask_predict_next(sequence, pad_id, soi_id, eoi_id, rm_pad_in_image=False):
    """Show-o's T2I mask (training/prompting_utils.py) -> (N, 1, L, L) additive float mask: text causal,
    [SOI] image [EOI] bidirectional and seeing the text; with rm_pad_in_image (inference_t2i.py) the rows
    after the last pad and the image rows do not see the pads. The masked value is int64's min, as
    Show-o's (sequence is int64)."""
    N, L = sequence.shape
    is_padding = sequence == pad_id
    is_soi, is_eoi = sequence == soi_id, sequence == eoi_id
    in_image = (torch.cumsum(is_soi, 1) > torch.cumsum(is_eoi, 1)) | is_soi | is_eoi
    is_text = ~in_image
    causal = torch.tril(torch.ones((L, L), dtype=torch.bool))
    mask_text = is_text[:, :, None] * causal[None]
    is_text_image = is_text | in_image
    bi = is_text_image[:, :, None] * is_text_image[:, None, :]
    if rm_pad_in_image:
        sid_img = torch.where(is_soi)[1]
        for i in range(N):
            pads = torch.where(sequence[i] == pad_id)[0]
            if len(pads) != 0:
                mask_text[i][pads[-1] + 1:, :pads[-1] + 1] = 0
            bi[i][sid_img[i]:, torch.where(is_padding[i])[0]] = 0
    mask_text[in_image] = bi[in_image]
    inverted = 1.0 - mask_text.type(sequence.dtype)
    return inverted.masked_fill(inverted.to(torch.bool), torch.iinfo(sequence.dtype).min).unsqueeze(1)


def create_attention_mask_for_mmu(sequence, eoi_id):
    """Show-o's MMU mask: causal, and every row sees the columns up to the first [EOI] (additive)."""
    N, L = sequence.shape
    causal = torch.tril(torch.ones((N, 1, L, L), dtype=torch.bool))
    eoi = torch.where(sequence == eoi_id)[1]
    causal[:, :, :, :eoi[0] + 1] = 1
    inverted = 1.0 - causal.type(sequence.dtype)
    return inverted.masked_fill(inverted.to(torch.bool), torch.iinfo(sequence.dtype).min)


def mmu_generate_greedy(model, idx, attention_mask, max_new_tokens, eot_token):
    """Show-o's Showo.mmu_generate with top_k=1 (the argmax): the whole sequence recomputed every step,
    the mask grown by a row that sees everything and a masked column."""
    result = []
    for _ in range(max_new_tokens):
        logits = model(idx, attention_mask)
        L = attention_mask.shape[-1]
        m = attention_mask.squeeze()
        a = torch.hstack([m, torch.zeros((L, 1)) + torch.finfo(logits.dtype).min])
        attention_mask = torch.vstack([a, torch.hstack([m[-1, :], torch.tensor([0.0])]).unsqueeze(0)])[None, None]
        idx_next = logits[:, -1, :].argmax(-1, keepdim=True)
        result.append(int(idx_next[0, 0]))
        idx = torch.cat((idx, idx_next), dim=1)
        if idx_next.item() == eot_token:
            break
    return result, logits
