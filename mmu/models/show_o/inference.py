"""Show-o inference (the ShowO methods t2i_generate, inpaint, extrapolate, mmu_generate call these):
text-to-image MaskGIT sampling over a cached text prefix with classifier-free guidance, inpainting and
extrapolation from a partial token grid, and answers about images generated on the KV cache.

Why the prefix cache is exact. Under omni-attention a text position attends only to the text before
it, never to an image token, so the prefix of a T2I sequence ([PAD]… [T2I][SOT] text [EOT]) has the
same keys and values at every MaskGIT step. ImageLogits runs it once into a KVCache (the conditional
and the unconditional prompts together, 2B rows); each step runs only the image block [SOI] image [EOI]
(N + 2 positions: [SOI] and [EOI] belong to the image segment, so their keys change with the image)
against it. The block's queries see the prefix's real (non-pad) positions and the whole block —
exactly their rows of the omni-attention mask. ShowO's own layers (eval mode) take a path of their own,
ImageLogits._block_hidden: cached_block_attention reads the cached prefix and the block's keys where
they lie (the cache is never written), the GEMMs add into the residual stream and apply the GELU in
their epilogues; any other model runs lm(block, cache=...) and the cache is cropped back to the prefix
afterwards. Logits are computed only at the N image positions and only for the codebook's rows of the
head (Show-o samples among the codebook ids only, its `logits[..., llm_vocab_size +
num_new_special_tokens:-1]`); with guidance the head runs once on the combined hidden states. Show-o's public sampler (Showo.t2i_generate) recomputes the whole
sequence, text included, and the logits of every position over the whole vocabulary at every step;
ImageLogits(use_cache=False) recomputes the whole sequence with omni_attention_mask (what the tests
compare the cache with, and the benchmark's baseline).

Positions count real tokens (cumsum(mask) - 1, as mmu.generate does), so a left-padded row gives the
same logits as the row alone. ShowO.forward numbers the padded sequence 0..L-1 as Show-o's code does;
with rotary positions a row's real tokens then all move by its number of pads, which leaves every
attention score the same: the two agree on every non-pad position up to float rounding (~2e-6 on the
test model's logits).

Codes are codebook indices in [0, codebook_size) (the vocabulary id is image_token_offset + code);
config.mask_token_id marks a code still to be decoded.
"""
import numpy as np

from ... import functional as F
from ... import _C
from ..._args import check_int, check_real, flag
from ...autograd import is_grad_enabled, no_grad
from ...generate import generate as _generate, maskgit_decode
from ...nn.layers import Linear
from ...tensor import Tensor, tensor as _tensor
from .prompting import _with_sot, mmu_attention_mask, omni_attention_mask, t2i_prompt, text_rows

__all__ = ["ImageLogits", "cached_block_attention", "t2i_prefix", "t2i_generate", "inpaint", "extrapolate", "mmu_generate",
           "DEFAULT_TEMPERATURE_DECAY"]

# Show-o's public sampler compounds the Gumbel temperature (t <- t·(1 − r) every step), and the
# settings it publishes (guidance, steps, temperature 1.0) were chosen with that rule, so a model
# converted from Show-o samples as it was tuned to. MaskGIT's t0·(1 − r) is the other choice.
DEFAULT_TEMPERATURE_DECAY = "compounding"


def _array(v):
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def _model(model, fn):
    from .model import ShowO
    if not isinstance(model, ShowO):
        raise TypeError(f"{fn}: model must be an mmu.models.show_o.ShowO, got {type(model).__name__}")
    return model.lm, model.config


def _text_ids(model, texts, fn, name):
    """Texts (a list of str, encoded with model.text_tokenizer, or of id sequences / a 2-D array, see
    prompting.text_rows) -> list of lists of text ids."""
    if isinstance(texts, str):
        raise TypeError(f"{fn}: {name} must be a list of texts (one per row), got a str")
    if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts):
        if model.text_tokenizer is None:
            raise ValueError(f"{fn}: {name} are strings but the model has no text_tokenizer; pass token ids")
        return [model.text_tokenizer.encode(t).tolist() for t in texts]
    rows = text_rows(texts, fn, name)
    if not rows:
        raise ValueError(f"{fn}: {name} is empty")
    return rows


def t2i_prefix(config, texts):
    """T2I prefixes (B, max_text_len + 1) for ImageLogits: [PAD]... [T2I][SOT] text [EOT] of B texts
    (text ids), the part of Show-o's t2i_gen_prompt before [SOI]."""
    rows = text_rows(texts, "t2i_prefix", "texts")
    blank = np.full((len(rows), config.num_vq_tokens), config.mask_token_id, np.int64)
    return t2i_prompt(config, rows, blank)[0][:, :config.max_text_len + 1]


def _codebook_head(lm, lo, hi):
    """(weight (K, dim), bias (K,) or None): the head's rows of the codebook ids, copied once."""
    if lm.lm_head is not None:
        w, b = lm.lm_head.weight, lm.lm_head.bias
    else:
        w, b = lm.embed_tokens.weight, lm.lm_head_bias
    return (_tensor(np.ascontiguousarray(w.numpy()[lo:hi])),
            None if b is None else _tensor(np.ascontiguousarray(b.numpy()[lo:hi])))


def cached_block_attention(heads, num_heads, num_kv_heads, k_cache, v_cache, prefix_start, prefix_len,
                           query_rows=None, scale=None):
    """Attention of a block of new positions against a cached prefix, both read in place (inference:
    no autograd) -> Tensor (R, n, num_heads·D), the heads of a position side by side (the layout of the
    output projection's input).

    heads (R, num_heads + 2 num_kv_heads, L, D): the block's [q; k; v] heads as F.qkv_heads lays them
    out (QK-norm and RoPE applied). k_cache, v_cache (R, num_kv_heads, M, D): a KVCache layer's buffers;
    row r's prefix is at positions prefix_start[r] .. prefix_len - 1 (prefix_start (R,) ints: the
    left padding before it is never read). query_rows (n,) ints in [0, L) or None (all L): the block
    positions whose outputs are wanted. Query head h uses key/value head h // (num_heads //
    num_kv_heads). Each query attends to its row's prefix and to the whole block (Show-o's image block
    under omni-attention): the same numbers as scaled_dot_product_attention over [prefix; block] with
    the pads masked, up to float rounding. scale: default 1/sqrt(D)."""
    fn = "cached_block_attention"
    for name, t in (("heads", heads), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be an mmu Tensor, got {type(t).__name__}")
    if is_grad_enabled() and any(t.requires_grad for t in (heads, k_cache, v_cache)):
        raise RuntimeError(f"{fn}: inference only (no backward): call it under mmu.no_grad() or on tensors that "
                           f"do not require grad")
    num_heads, num_kv_heads = check_int(num_heads, fn, "num_heads"), check_int(num_kv_heads, fn, "num_kv_heads")
    if not (1 <= num_heads < 2 ** 31 and 1 <= num_kv_heads < 2 ** 31):
        raise ValueError(f"{fn}: num_heads and num_kv_heads must be in [1, 2**31), got {num_heads} and {num_kv_heads}")
    prefix_len = check_int(prefix_len, fn, "prefix_len")
    if not 0 <= prefix_len < 2 ** 62:
        raise ValueError(f"{fn}: prefix_len must be >= 0, got {prefix_len}")
    start = _array(prefix_start)
    if start.dtype == np.bool_ or start.dtype.kind not in "iu":
        raise TypeError(f"{fn}: prefix_start must be integer, got dtype {start.dtype}")
    if query_rows is not None:
        query_rows = _array(query_rows)
        if query_rows.dtype == np.bool_ or query_rows.dtype.kind not in "iu":
            raise TypeError(f"{fn}: query_rows must be integer, got dtype {query_rows.dtype}")
        query_rows = np.ascontiguousarray(query_rows, np.int64)
    if scale is not None:
        scale = check_real(scale, fn, "scale")
    return _C.attention_cached(heads, num_heads, num_kv_heads, k_cache, v_cache,
                               np.ascontiguousarray(start, np.int64), prefix_len, query_rows, scale)


def _residual_add(x, a, linear):
    """x += linear(a) in place (x a tensor of this module's own making, linear an nn.Linear; inference):
    the GEMM adds its product to x inside its kernel (oneDNN's sum post-op) instead of writing it out
    and adding after."""
    _C.linear_add_(x, a, linear.weight, linear.bias)


def _gelu_tanh_mlp(mlp):
    """Whether mlp is fc2(gelu_tanh(fc1(.))) of plain Linear layers (Phi's, Show-o's): then fc1 and the
    GELU run as one GEMM with the activation applied to its output tiles (_C.linear_gelu_tanh)."""
    return (getattr(mlp, "activation", None) == "gelu_tanh" and getattr(mlp, "fc_gate", None) is None and
            type(mlp.fc1) is Linear and type(mlp.fc2) is Linear)


def _prefix_ids(v, config, fn, name):
    a = _array(v)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu" or a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{fn}: {name} must be (B, P) integer ids with B, P >= 1, got {a.dtype} {a.shape}")
    a = a.astype(np.int64)
    real = a != config.pad_token_id
    if not real[:, -1].all() or (np.diff(real.astype(np.int8), axis=1) < 0).any():
        raise ValueError(f"{fn}: {name} must be left padded with [PAD] {config.pad_token_id} (each row pads, "
                         f"then its tokens)")
    soi, eoi = config.special_token_id("<|soi|>"), config.special_token_id("<|eoi|>")
    if ((a < 0) | (a >= config.vocab_size)).any():
        raise ValueError(f"{fn}: {name} must be ids in [0, {config.vocab_size})")
    if ((a == soi) | (a == eoi)).any():
        raise ValueError(f"{fn}: {name} must not hold <|soi|> {soi} or <|eoi|> {eoi}: the image block that follows "
                         f"the prompt is added here")
    return a, real


class ImageLogits:
    """The codebook logits at the image positions of T2I sequences, one MaskGIT step a call (the
    logits_fn of mmu.generate.maskgit_decode).

    model: a ShowO. prompt_ids (B, P): T2I prefixes [PAD]... [T2I][SOT] text [EOT], left padded with
    [PAD] (the first max_text_len + 1 columns of t2i_prompt); the image block [SOI] N codes [EOI]
    (N = config.num_vq_tokens) follows them. guidance_scale w > 0: classifier-free guidance with
    uncond_ids (B, Pu) (default: the empty prompt [T2I][SOT][EOT], Show-o's), run beside the prompts
    as 2B rows and combined as Show-o does: (1 + w)·c − w·u.
    use_cache=True: the prefixes run once into a KVCache and each call runs only the image block
    against them (see the module docstring); use_cache=False: each call runs the whole sequence with
    omni_attention_mask (Show-o's public path). With the cache (eval mode) the block walks the layers
    in _block_hidden, which runs the first layer's per-token work once per distinct token.
    masked_only=True: only the positions still [MASK] in some row get logits (the last layer's
    out_proj/MLP, the final norm and the head run there only); the others are 0. MaskGIT never reads
    them (t2i_generate uses this).

    __call__(codes (B, N) int64: codes in [0, codebook_size), or config.mask_token_id) -> logits
    (B, N, codebook_size) float32 Tensor, guided when w > 0. cond_uncond(codes): the unguided logits
    (rows, N, codebook_size), rows = 2B with guidance (conditional rows first).
    """

    def __init__(self, model, prompt_ids, guidance_scale=0.0, uncond_ids=None, use_cache=True, masked_only=False):
        fn = "ImageLogits"
        self.lm, self.config = lm, cfg = _model(model, fn)
        self.use_cache = flag(use_cache, fn, "use_cache")
        self.masked_only = flag(masked_only, fn, "masked_only")
        self.guidance_scale = check_real(guidance_scale, fn, "guidance_scale")
        if not (self.guidance_scale >= 0.0 and np.isfinite(self.guidance_scale)):
            raise ValueError(f"{fn}: guidance_scale must be >= 0 and finite (0: no guidance), got {guidance_scale}")
        ids, real = _prefix_ids(prompt_ids, cfg, fn, "prompt_ids")
        self.batch_size = b = ids.shape[0]
        if self.guidance_scale > 0:
            if uncond_ids is None:
                uids = t2i_prefix(cfg, [[]] * b)
            else:
                uids = _prefix_ids(uncond_ids, cfg, fn, "uncond_ids")[0]
                if uids.shape[0] != b:
                    raise ValueError(f"{fn}: uncond_ids must have the {b} rows of prompt_ids, got {uids.shape}")
            width = max(ids.shape[1], uids.shape[1])
            pad = lambda a: np.concatenate([np.full((b, width - a.shape[1]), cfg.pad_token_id, np.int64), a], 1)
            ids = np.concatenate([pad(ids), pad(uids)])
            real = ids != cfg.pad_token_id
        elif uncond_ids is not None:
            raise ValueError(f"{fn}: uncond_ids is used only with guidance_scale > 0")
        self.rows, self.prefix_len = ids.shape
        n, p = cfg.num_vq_tokens, self.prefix_len
        self.num_image_tokens, total = n, p + n + 2
        self.soi_id, self.eoi_id = cfg.special_token_id("<|soi|>"), cfg.special_token_id("<|eoi|>")
        self.mask_id, self.codebook_size = cfg.mask_token_id, cfg.codebook_size
        self.code_offset = cfg.image_token_offset
        self._head = _codebook_head(lm, self.code_offset, self.code_offset + self.codebook_size)
        real = np.concatenate([real, np.ones((self.rows, n + 2), bool)], 1)
        positions = np.maximum(np.cumsum(real, axis=1) - 1, 0).astype(np.int64)
        self._prefix_ids = ids
        if self.use_cache:
            self.cache = lm.new_cache(self.rows, total)
            with no_grad():
                lm(_tensor(ids), attention_mask=_tensor(real[:, :p]), position_ids=_tensor(positions[:, :p]),
                   cache=self.cache, logits_at=None)
            # _block_hidden's first-layer saving needs a layer input that is the token's embedding alone
            # (RoPE, no learned positions), Phi's parallel residual (ShowO's transformer) and plain Linear
            # projections (their GEMMs run with fused epilogues)
            self._own_layers = lm.pos == "rope" and all(
                l.residual == "parallel" and type(l.attn.qkv_proj) is Linear and type(l.attn.out_proj) is Linear
                for l in lm.layers)
            # the prefix's real positions are a suffix of it (left padding): row r's start .. p - 1
            self._prefix_start = np.ascontiguousarray(p - real[:, :p].sum(1)).astype(np.int64)
            # the general path (training mode, other layer kinds): every block query sees the prefix's real
            # positions and the whole block
            self._block_mask = _tensor(np.ascontiguousarray(np.broadcast_to(real[:, None, None, :],
                                                                            (self.rows, 1, n + 2, total))))
            self._block_positions = _tensor(np.ascontiguousarray(positions[:, p:]))
            # the block's positions are the same every step: its RoPE tables are made once
            r = lm.rotary_dim
            if r:
                cos, sin = F.rotary_cos_sin(positions[:, p:].reshape(-1), r, lm.rope_base)
                self._block_rope = (cos.reshape(self.rows, 1, n + 2, r), sin.reshape(self.rows, 1, n + 2, r))
            else:
                self._block_rope = None
        else:
            self.cache, self._own_layers = None, False
            # the mask depends only on where the pads, [SOI] and [EOI] are, never on the codes
            seq = np.concatenate([ids, np.full((self.rows, n + 2), self.code_offset, np.int64)], 1)
            seq[:, p], seq[:, p + n + 1] = self.soi_id, self.eoi_id
            self._full_mask = _tensor(omni_attention_mask(cfg, seq))
            self._full_positions = _tensor(positions)

    def _vocab_ids(self, codes):
        fn = "ImageLogits"
        c = _array(codes)
        if c.dtype == np.bool_ or c.dtype.kind not in "iu":
            raise TypeError(f"{fn}: codes must be integer, got dtype {c.dtype}")
        if c.ndim != 2 or c.shape != (self.batch_size, self.num_image_tokens):
            raise ValueError(f"{fn}: codes must be (B, N) = ({self.batch_size}, {self.num_image_tokens}), got "
                             f"{c.shape}")
        c = c.astype(np.int64)
        is_mask = c == self.mask_id
        if ((c < 0) | (c >= self.codebook_size))[~is_mask].any():
            raise ValueError(f"{fn}: codes must be in [0, {self.codebook_size}) or [MASK] {self.mask_id}")
        v = np.where(is_mask, self.mask_id, c + self.code_offset)
        return np.concatenate([v, v]) if self.rows != self.batch_size else v

    def cond_uncond(self, codes):
        """Unguided codebook logits (rows, N, codebook_size) at the image positions for these codes
        (masked_only=True: zeros at the positions whose code is known, in every row)."""
        h, wanted = self._wanted_hidden(codes)
        return self._scatter(F.linear(h, self._head[0], self._head[1]), wanted)

    def _scatter(self, part, wanted):
        """Logits (r, len(wanted), K) at the wanted positions -> (r, N, K), zeros elsewhere."""
        n = self.num_image_tokens
        if len(wanted) == n:
            return part
        out = np.zeros((part.shape[0], n, self.codebook_size), np.float32)
        out[:, wanted] = part.numpy()
        return _tensor(out)

    def _wanted_hidden(self, codes):
        """-> (final-normed hidden states (rows, len(wanted), dim) Tensor, wanted: the image positions
        computed, all N or with masked_only those still [MASK] in some row)."""
        image = self._vocab_ids(codes)
        n, p = self.num_image_tokens, self.prefix_len
        block = np.concatenate([np.full((self.rows, 1), self.soi_id, np.int64), image,
                                np.full((self.rows, 1), self.eoi_id, np.int64)], 1)
        wanted = np.nonzero((image == self.mask_id).any(0))[0] if self.masked_only else np.arange(n)
        if len(wanted) == 0:
            wanted = np.arange(n)
        own = self.use_cache and self._own_layers and not self.lm.training
        with no_grad():
            if own:
                h = self._block_hidden(block, wanted + 1)  # reads the cache, never writes it
            elif self.use_cache:
                try:
                    h = self.lm(_tensor(block), position_ids=self._block_positions, cache=self.cache,
                                attn_mask=self._block_mask, logits_at=None)
                finally:
                    self.cache.crop(p)
                h = h[:, 1:n + 1]
            else:
                seq = _tensor(np.concatenate([self._prefix_ids, block], 1))
                h = self.lm(seq, position_ids=self._full_positions, attn_mask=self._full_mask, logits_at=None)
                h = h[:, p + 1:p + n + 1]
            if not own and len(wanted) < n:
                h = _tensor(np.ascontiguousarray(h.numpy()[:, wanted]))
            return h, wanted

    def _block_hidden(self, block, wanted):
        """The image block [SOI] image [EOI] (rows, N + 2) through the layers against the cached prefix
        -> final-normed hidden states (rows, len(wanted), dim) at block positions `wanted` (eval mode).

        The same numbers as lm(block, cache=...) at those positions, with savings that are exact:
        - the first layer's norm, qkv projection and MLP see one row per DISTINCT token of the block (its
          input is the token's embedding alone: a [MASK] at 200 positions is one row), then the rows are
          gathered; QK-norm and RoPE, which depends on the position, come after, per position;
        - each layer's heads come out of one qkv_heads pass (QK-norm and RoPE applied, no split/permute
          copies), and cached_block_attention reads the cached prefix (its real positions only) and the
          block's own keys where they lie: the cache is never written, and the output is already in the
          (rows, N + 2, heads·head_dim) layout of out_proj;
        - the last layer's queries, out_proj, MLP and the final norm run only at the wanted positions
          (every position's keys and values are still computed: the wanted ones attend to all of them)."""
        lm, cache, p = self.lm, self.cache, self.prefix_len
        cos, sin = self._block_rope if self._block_rope is not None else (None, None)
        rows, width = block.shape
        layers = list(lm.layers)
        uniq, inverse = np.unique(block, return_inverse=True)
        inverse = inverse.reshape(rows, width)
        # the distinct tokens padded to a multiple of 32 rows (repeats of the last, never gathered): the
        # first layer's GEMMs then come in few shapes, whose oneDNN primitives are made once, not for
        # every new count of distinct tokens (a generation of new codes made ~40 of them)
        uniq = np.concatenate([uniq, np.full(-len(uniq) % 32, uniq[-1], uniq.dtype)])
        x = None
        for i, layer in enumerate(layers):
            attn = layer.attn
            last = i == len(layers) - 1
            if i == 0:
                xu = lm.embed_tokens(_tensor(uniq))  # (U, dim)
                hu = layer.norm1(xu)
                qkv = _tensor(attn.qkv_proj(hu).numpy()[inverse])  # (rows, N + 2, (H + 2 Hkv) hd)
                mlp_out = layer.mlp(hu).numpy()[inverse]
                x = xu.numpy()[inverse]
            else:
                h = layer.norm1(x)
                qkv = attn.qkv_proj(h)
            qn, kn = attn.q_norm, attn.k_norm
            if qn is None:
                z = F.qkv_heads(qkv, attn.num_heads, attn.num_kv_heads, cos=cos, sin=sin)
            else:
                eps = qn.eps if qn.eps is not None else float(np.finfo(np.float32).eps)
                z = F.qkv_heads(qkv, attn.num_heads, attn.num_kv_heads, attn.qk_norm, qn.weight,
                                getattr(qn, "bias", None), kn.weight, getattr(kn, "bias", None), eps, cos, sin)
            a = cached_block_attention(z, attn.num_heads, attn.num_kv_heads, cache.keys[attn.layer_idx],
                                       cache.values[attn.layer_idx], self._prefix_start, p,
                                       query_rows=wanted if last else None)
            # x + out_proj(a) + mlp(h), Phi's parallel residual, in that order of additions
            if i == 0:
                if last:
                    x, mlp_out = x[:, wanted], mlp_out[:, wanted]
                x = _tensor(np.ascontiguousarray(x))
                _residual_add(x, a, attn.out_proj)
                x = x + _tensor(np.ascontiguousarray(mlp_out))
                continue
            if last:
                x = _tensor(np.ascontiguousarray(x.numpy()[:, wanted]))
                h = _tensor(np.ascontiguousarray(h.numpy()[:, wanted]))
            _residual_add(x, a, attn.out_proj)
            mlp = layer.mlp
            if _gelu_tanh_mlp(mlp):
                _residual_add(x, _C.linear_gelu_tanh(h, mlp.fc1.weight, mlp.fc1.bias), mlp.fc2)
            else:
                x = x + mlp(h)
        return lm.norm(x)

    def __call__(self, codes):
        h, wanted = self._wanted_hidden(codes)
        if self.rows != self.batch_size:
            # Show-o's (1 + w)·c − w·u of the logits c = h_c·Wᵀ + b, u = h_u·Wᵀ + b is ((1 + w)·h_c − w·h_u)·Wᵀ + b:
            # the head is linear, so the guidance combines the hidden states and the head runs on B rows, not 2B
            a = h.numpy()
            b, w = self.batch_size, np.float32(self.guidance_scale)
            h = _tensor((np.float32(1.0) + w) * a[:b] - w * a[b:])
        return self._scatter(F.linear(h, self._head[0], self._head[1]), wanted)


def _start_codes(config, codes, known, b, fn):
    """The first MaskGIT state (B, N): the codes where known, [MASK] elsewhere."""
    c, k = _array(codes), _array(known)
    if c.dtype == np.bool_ or c.dtype.kind not in "iu":
        raise TypeError(f"{fn}: codes must be integer, got dtype {c.dtype}")
    if k.dtype != np.bool_:
        raise TypeError(f"{fn}: known must be a bool array (True = keep that code), got dtype {k.dtype}")
    if c.shape != k.shape or c.ndim < 2 or c.shape[0] != b or int(np.prod(c.shape[1:])) != config.num_vq_tokens:
        raise ValueError(f"{fn}: codes and known must have one shape ({b}, num_vq_tokens={config.num_vq_tokens}) "
                         f"or ({b}, h, w), got {c.shape} and {k.shape}")
    c = c.reshape(b, -1).astype(np.int64)
    k = k.reshape(b, -1)
    if ((c < 0) | (c >= config.codebook_size))[k].any():
        raise ValueError(f"{fn}: the known codes must be in [0, {config.codebook_size})")
    return np.where(k, c, config.mask_token_id)


def t2i_generate(model, prompts, steps=18, guidance_scale=0.0, temperature=1.0,
                 temperature_decay=DEFAULT_TEMPERATURE_DECAY, uncond_prompts=None, schedule="cosine",
                 sample_temperature=1.0, top_k=None, top_p=None, codes=None, known=None, generator=None,
                 use_cache=True, progress=False):
    """Text-to-image with MaskGIT and classifier-free guidance -> codes int64 Tensor (B, num_vq_tokens)
    in [0, codebook_size) (row-major over the image tokenizer's grid).

    prompts: B texts (str, with model.text_tokenizer; or text id sequences), each made Show-o's prefix
    [PAD]... [T2I][SOT] text [EOT]; guidance_scale w > 0 adds uncond_prompts (default: the empty text,
    Show-o's) and combines (1 + w)·c − w·u. The prefixes run once into a KV cache and each step runs
    only the image block (use_cache=False: the whole sequence, Show-o's public path; same logits).
    Decoding is mmu.generate.maskgit_decode's (google-research/maskgit's, as Show-o): every masked
    position is drawn from the (guided) codebook logits (sample_temperature, top_k, top_p); after step
    k, floor(N0·schedule((k + 1) / steps)) positions stay masked (N0 = masked at the start), the least
    confident by log p + t_k·Gumbel noise. temperature t0 is that noise's temperature (Show-o's
    `temperature`); temperature_decay 'compounding' (the default, Show-o's sampler: t_k = t_{k-1}·(1 −
    r_k), under which its published settings were chosen) or 'linear' (MaskGIT's t0·(1 − r_k)).
    steps=18, w=0, t0=1 are Show-o's t2i_generate defaults (its README: w=5, 50 steps).
    codes + known (bool, same shape (B, N) or (B, h, w)): inpainting, the known codes kept.
    generator: an mmu.Generator (None: the global stream).
    """
    fn = "t2i_generate"
    lm, cfg = _model(model, fn)
    steps = check_int(steps, fn, "steps")
    if steps < 1:
        raise ValueError(f"{fn}: steps must be >= 1, got {steps}")
    temperature = check_real(temperature, fn, "temperature")
    if not (temperature >= 0.0 and np.isfinite(temperature)):
        raise ValueError(f"{fn}: temperature (the Gumbel noise's) must be >= 0 and finite, got {temperature}")
    if not isinstance(temperature_decay, str) or temperature_decay not in ("compounding", "linear"):
        raise ValueError(f"{fn}: temperature_decay must be 'compounding' (Show-o) or 'linear' (MaskGIT), "
                         f"got {temperature_decay!r}")
    rows = _text_ids(model, prompts, fn, "prompts")
    b = len(rows)
    uncond = None
    if uncond_prompts is not None:
        urows = _text_ids(model, uncond_prompts, fn, "uncond_prompts")
        if len(urows) != b:
            raise ValueError(f"{fn}: uncond_prompts must have one text per prompt ({b}), got {len(urows)}")
        uncond = t2i_prefix(cfg, urows)
    if codes is None:
        if known is not None:
            raise ValueError(f"{fn}: known needs codes")
        start = np.full((b, cfg.num_vq_tokens), cfg.mask_token_id, np.int64)
    else:
        if known is None:
            raise ValueError(f"{fn}: codes need known (bool: True = keep that code)")
        start = _start_codes(cfg, codes, known, b, fn)
        if (start != cfg.mask_token_id).all():
            return _tensor(start)
    # masked_only: MaskGIT reads the logits of the positions still [MASK] only (a known code is kept,
    # its confidence is +inf, and sample_logits draws each row from its own counter)
    logits_fn = ImageLogits(model, t2i_prefix(cfg, rows), guidance_scale=guidance_scale,
                            uncond_ids=uncond if guidance_scale else None, use_cache=use_cache, masked_only=True)
    return maskgit_decode(logits_fn, mask_id=cfg.mask_token_id, steps=steps, schedule=schedule,
                          choice_temperature=temperature, choice_temperature_decay=temperature_decay,
                          temperature=sample_temperature, top_k=top_k, top_p=top_p, initial_tokens=start,
                          generator=generator, progress=progress)


def inpaint(model, prompts, codes, known, **kwargs):
    """Inpainting (Show-o's inference_t2i.py inpainting mode): codes (B, N) or (B, h, w) with known
    (bool, same shape: True = keep); the other codes are decoded by t2i_generate (its keyword
    arguments) -> codes of codes' shape."""
    shape = _array(codes).shape
    out = t2i_generate(model, prompts, codes=codes, known=known, **kwargs)
    return _tensor(out.numpy().reshape(shape))


_DIRECTIONS = ("left", "right", "up", "down")


def extrapolate(model, prompts, codes, direction, amount, **kwargs):
    """Extrapolation (outpainting) as Show-o's demo does it: the canvas grows by `amount` new columns
    (direction 'left' / 'right') or rows ('up' / 'down').

    codes (B, h, w): the model's grid (h·w = num_vq_tokens). The model sees a window of the grid's size:
    the new strip (amount columns / rows, masked) beside the (w − amount) columns (h − amount rows) of
    codes next to it; t2i_generate (its keyword arguments) decodes the strip, and the result is the
    strip joined to the whole given grid -> codes (B, h, w + amount) or (B, h + amount, w). Show-o's
    demo: amount = w/2 + offset (its extrapolation_prompt's keep = w − amount)."""
    fn = "extrapolate"
    _, cfg = _model(model, fn)
    c = _array(codes)
    if c.dtype == np.bool_ or c.dtype.kind not in "iu":
        raise TypeError(f"{fn}: codes must be integer, got dtype {c.dtype}")
    if c.ndim != 3 or c.shape[1] * c.shape[2] != cfg.num_vq_tokens:
        raise ValueError(f"{fn}: codes must be a grid (B, h, w) with h·w = num_vq_tokens {cfg.num_vq_tokens}, "
                         f"got shape {c.shape}")
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        raise ValueError(f"{fn}: direction must be one of {_DIRECTIONS}, got {direction!r}")
    amount = check_int(amount, fn, "amount")
    b, h, w = c.shape
    side = w if direction in ("left", "right") else h
    if not 1 <= amount < side:
        raise ValueError(f"{fn}: amount must be in [1, {side}) for direction {direction!r} on a {h}x{w} grid, "
                         f"got {amount}")
    c = c.astype(np.int64)
    known = np.ones_like(c, dtype=bool)
    if direction == "left":
        window = np.concatenate([np.zeros((b, h, amount), np.int64), c[:, :, :w - amount]], 2)
        known[:, :, :amount] = False
    elif direction == "right":
        window = np.concatenate([c[:, :, amount:], np.zeros((b, h, amount), np.int64)], 2)
        known[:, :, w - amount:] = False
    elif direction == "up":
        window = np.concatenate([np.zeros((b, amount, w), np.int64), c[:, :h - amount]], 1)
        known[:, :amount] = False
    else:
        window = np.concatenate([c[:, amount:], np.zeros((b, amount, w), np.int64)], 1)
        known[:, h - amount:] = False
    out = t2i_generate(model, prompts, codes=window, known=known, **kwargs).numpy().reshape(b, h, w)
    if direction == "left":
        return _tensor(np.concatenate([out[:, :, :amount], c], 2))
    if direction == "right":
        return _tensor(np.concatenate([c, out[:, :, w - amount:]], 2))
    if direction == "up":
        return _tensor(np.concatenate([out[:, :amount], c], 1))
    return _tensor(np.concatenate([c, out[:, h - amount:]], 1))


def mmu_generate(model, codes, questions, max_new_tokens=100, attention="mmu", eos_token_id=None, do_sample=False,
                 temperature=1.0, top_k=None, top_p=None, generator=None, progress=False):
    """Answers about images -> int64 Tensor (B, n) of new text ids (n <= max_new_tokens; after its stop
    token a row holds [PAD]).

    Each row is Show-o's MMU prompt [MMU][SOI] image [EOI][SOT] question (codes (B, num_vq_tokens) or
    (B, h, w) in [0, codebook_size); questions: B texts, str with model.text_tokenizer or text ids; Show-o's
    demo wraps a question as 'USER: \\n' + question + ' ASSISTANT:'); rows of different lengths are
    left padded with [PAD]. The prompt is run once (prefill) under the mask MMU sequences train with,
    then the answer is generated one token at a time on the KV cache (mmu.generate.generate), each step
    computing only the last position's logits. attention: 'mmu' (mmu_attention_mask, Show-o's
    create_attention_mask_for_mmu, which its MMU training and demo use: every prompt row sees the
    image) or 'omni' (omni_attention_mask). eos_token_id: stop token(s), default [EOT]. do_sample=False:
    greedy (Show-o's demo: top_k=1); else sampling with temperature, top_k, top_p."""
    fn = "mmu_generate"
    lm, cfg = _model(model, fn)
    c = _array(codes)
    if c.dtype == np.bool_ or c.dtype.kind not in "iu" or c.ndim < 2 or c.shape[0] == 0 or \
            int(np.prod(c.shape[1:])) != cfg.num_vq_tokens:
        raise ValueError(f"{fn}: codes must be integer (B, num_vq_tokens={cfg.num_vq_tokens}) or (B, h, w), got "
                         f"{c.dtype} {c.shape}")
    c = c.reshape(len(c), -1).astype(np.int64)
    if ((c < 0) | (c >= cfg.codebook_size)).any():
        raise ValueError(f"{fn}: codes must be in [0, {cfg.codebook_size})")
    rows = _text_ids(model, questions, fn, "questions")
    if len(rows) != len(c):
        raise ValueError(f"{fn}: {len(c)} images and {len(rows)} questions: give one question per image")
    for i, r in enumerate(rows):
        if any(not 0 <= v < cfg.llm_vocab_size for v in r):
            raise ValueError(f"{fn}: questions[{i}] holds ids outside the text ids [0, {cfg.llm_vocab_size})")
    if attention not in ("mmu", "omni"):
        raise ValueError(f"{fn}: attention must be 'mmu' (Show-o's MMU mask) or 'omni', got {attention!r}")
    head = [cfg.special_token_id("<|mmu|>"), cfg.special_token_id("<|soi|>")]
    seqs = [head + (c[i] + cfg.image_token_offset).tolist() + [cfg.special_token_id("<|eoi|>")] +
            _with_sot(r, cfg) for i, r in enumerate(rows)]
    width = max(map(len, seqs))
    max_new_tokens = check_int(max_new_tokens, fn, "max_new_tokens")
    if max_new_tokens < 1:
        raise ValueError(f"{fn}: max_new_tokens must be >= 1, got {max_new_tokens}")
    # the answer runs on lm directly (not ShowO.forward, which refuses positions past max_seq_len)
    if width + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"{fn}: the longest prompt ({width} tokens: [MMU][SOI], {cfg.num_vq_tokens} image tokens, "
                         f"[EOI], [SOT] and {width - cfg.num_vq_tokens - 4} question ids) and max_new_tokens "
                         f"{max_new_tokens} need {width + max_new_tokens} positions, more than config.max_seq_len "
                         f"{cfg.max_seq_len}")
    ids = np.full((len(seqs), width), cfg.pad_token_id, np.int64)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = s
    real = ids != cfg.pad_token_id
    mask = mmu_attention_mask(cfg, ids) if attention == "mmu" else omni_attention_mask(cfg, ids)
    out = _generate(lm, ids, attention_mask=real, max_new_tokens=max_new_tokens, do_sample=do_sample,
                    temperature=temperature, top_k=top_k, top_p=top_p,
                    eos_token_id=cfg.eot_token_id if eos_token_id is None else eos_token_id,
                    pad_token_id=cfg.pad_token_id, generator=generator, progress=progress, prefill_attn_mask=mask)
    return _tensor(np.ascontiguousarray(out.numpy()[:, width:]))
