"""Show-o inference on an mmu.nn.TransformerLM: text-to-image MaskGIT sampling over a cached text
prefix (with classifier-free guidance), inpainting and extrapolation from a partial token grid, and
answers about an image generated on the KV cache.

Why the prefix cache is exact. Under omni-attention a text position attends only to the text
before it, never to an image token, so the prefix of a T2I sequence ([PAD]… [T2I][SOT] text [EOT])
has the same keys and values at every MaskGIT step. ImageLogits runs it once into a KVCache (the
conditional and the unconditional prompts together, 2B rows); each step runs only the image block
[SOI] image [EOI] (N + 2 positions) against it. The block's queries see the prefix's real (non-pad)
positions and the whole block — exactly their rows of the omni-attention mask — and the cache is
cropped back to the prefix afterwards. Logits are computed only at the N image positions and only
for the codebook's rows of the head (Show-o samples among the codebook ids only: its
`logits[..., llm_vocab_size + num_new_special_tokens:-1]`). Show-o's public sampler
(Showo.t2i_generate) recomputes the whole sequence, text included, and the logits of every
position over the whole vocabulary at every step; ImageLogits(use_cache=False) does that
recomputation (with the omni-attention mask of the whole sequence) and is the reference the tests
compare the cached path with.

Positions count real tokens (cumsum(mask) - 1, as mmu.nn.TransformerLM and mmu.generate do), so
a left-padded prompt gives the same logits as the prompt alone. Show-o's code numbers the padded
sequence 0..S-1 instead; with rotary positions (Show-o is Phi-1.5) a row's real tokens then all
shift by the same number of pads, which leaves every attention score unchanged.

Token ids here are vocabulary ids, except image codes: `codes` are codebook indices in
[0, codebook_size) and sit in the vocabulary at code_offset + code; the [MASK] id (mask_id, a
vocabulary id outside the codebook's range) marks a code still to be decoded.
"""
import numpy as np

from ... import functional as F
from ..._args import check_int, check_real
from ...autograd import no_grad
from ...generate import generate as _generate, maskgit_decode
from ...nn import TransformerLM
from ...tensor import Tensor, tensor as _tensor

__all__ = ["ImageLogits", "t2i_generate", "inpaint", "extrapolate", "mmu_generate", "omni_attention_mask",
           "DEFAULT_TEMPERATURE_DECAY"]

# Show-o's public sampler compounds the Gumbel temperature (t <- t·(1 − r) every step), and the
# settings it publishes (guidance, steps, temperature 1.0) were chosen with that rule, so a model
# converted from Show-o samples as it was tuned to. MaskGIT's t0·(1 − r) is the other choice.
DEFAULT_TEMPERATURE_DECAY = "compounding"


def _array(v):
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def _ids_2d(v, fn, name):
    a = _array(v)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must hold integer token ids, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{fn}: {name} must be (B, L) with B, L >= 1, got shape {a.shape}")
    return a.astype(np.int64)


def _real_mask(v, shape, fn, name):
    """A (B, L) bool mask, True = a real token; left padding only (each row 0s then 1s)."""
    if v is None:
        return np.ones(shape, dtype=bool)
    m = _array(v)
    if m.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have the shape of its ids {tuple(shape)}, got {m.shape}")
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iu" or not np.isin(m, (0, 1)).all():
            raise ValueError(f"{fn}: {name} must be bool or 0/1 (True = a real token), got dtype {m.dtype}")
        m = m != 0
    if not m[:, -1].all() or (np.diff(m.astype(np.int8), axis=1) < 0).any():
        raise ValueError(f"{fn}: {name} must be left padded (each row 0s then 1s, its last column 1)")
    return m


def _left_pad(ids, mask, width, pad_id):
    extra = width - ids.shape[1]
    if extra == 0:
        return ids, mask
    return (np.concatenate([np.full((ids.shape[0], extra), pad_id, np.int64), ids], 1),
            np.concatenate([np.zeros((ids.shape[0], extra), bool), mask], 1))


def _positions(real):
    """Position ids (B, S) counting real tokens only; pads get 0 (they are never attended to)."""
    return np.maximum(np.cumsum(real, axis=1) - 1, 0).astype(np.int64)


def omni_attention_mask(input_ids, real, soi_id, eoi_id):
    """Show-o's omni-attention as a bool mask (B, 1, S, S), True = attend.

    input_ids (B, S), real (B, S) bool (False = a pad). A position inside an image block (from [SOI]
    to [EOI], both included) attends to every real position before the block and to the whole block;
    every other (text) position attends causally to the real positions up to itself. No position
    attends to a pad. (Show-o's published mask also lets pad rows attend to pads; those rows are
    never read, and every non-pad row is the same.)"""
    ids = np.asarray(input_ids)
    real = np.asarray(real, dtype=bool)
    b, s = ids.shape
    soi, eoi = ids == soi_id, ids == eoi_id
    opened, closed = np.cumsum(soi, axis=1), np.cumsum(eoi, axis=1)
    in_image = (opened > closed) | eoi
    block = np.where(in_image, opened, -1)  # the image block each position is in (-1: text)
    causal = np.tril(np.ones((s, s), dtype=bool))
    same_block = in_image[:, :, None] & (block[:, :, None] == block[:, None, :])
    allowed = (causal[None] | same_block) & real[:, None, :]
    return allowed[:, None]


def _codebook_head(lm, code_offset, codebook_size):
    """(weight (K, dim), bias (K,) or None): the head's rows of the codebook ids, copied once."""
    if lm.lm_head is not None:
        w, b = lm.lm_head.weight, lm.lm_head.bias
    else:
        w, b = lm.embed_tokens.weight, lm.lm_head_bias
    rows = slice(code_offset, code_offset + codebook_size)
    return (_tensor(np.ascontiguousarray(w.numpy()[rows])),
            None if b is None else _tensor(np.ascontiguousarray(b.numpy()[rows])))


def _check_vocab(lm, fn, soi_id, eoi_id, mask_id, code_offset, codebook_size):
    v = lm.vocab_size
    ids = {}
    for name, value in (("soi_id", soi_id), ("eoi_id", eoi_id), ("mask_id", mask_id), ("code_offset", code_offset),
                        ("codebook_size", codebook_size)):
        ids[name] = check_int(value, fn, name)
    if ids["codebook_size"] < 1 or ids["code_offset"] < 0 or ids["code_offset"] + ids["codebook_size"] > v:
        raise ValueError(f"{fn}: the codebook ids [code_offset, code_offset + codebook_size) = [{ids['code_offset']}, "
                         f"{ids['code_offset'] + ids['codebook_size']}) must lie in the vocabulary [0, {v})")
    for name in ("soi_id", "eoi_id", "mask_id"):
        if not 0 <= ids[name] < v:
            raise ValueError(f"{fn}: {name} {ids[name]} is outside the vocabulary [0, {v})")
        if ids["code_offset"] <= ids[name] < ids["code_offset"] + ids["codebook_size"]:
            raise ValueError(f"{fn}: {name} {ids[name]} lies among the codebook ids")
    return ids


class ImageLogits:
    """The codebook logits at the image positions of T2I sequences, one MaskGIT step a call (the
    logits_fn of mmu.generate.maskgit_decode).

    lm: the mmu.nn.TransformerLM. prompt_ids (B, P) int64 with prompt_mask (B, P) (True = a real
    token; left padded): the text prefixes ([T2I][SOT] text [EOT]); the image block [SOI] N codes
    [EOI] follows them. guidance_scale w > 0: classifier-free guidance with uncond_ids (B, Pu) (+
    uncond_mask), run beside the prompts as 2B rows, combined as Show-o does: (1 + w)·c − w·u.
    soi_id, eoi_id, mask_id: vocabulary ids; codes c in [0, codebook_size) are the ids
    code_offset + c.
    use_cache=True: the prefixes are run once into a KVCache and each call runs only the image block
    against them (see the module docstring); use_cache=False: each call runs the whole sequence with
    its omni-attention mask (Show-o's public path).

    __call__(codes (B, N) int64, codes or mask_id) -> logits (B, N, codebook_size) float32 Tensor
    (guided when w > 0). `cond_uncond(codes)` returns the unguided (rows, N, K) logits (rows = 2B
    with guidance, conditional first).
    """

    def __init__(self, lm, prompt_ids, prompt_mask=None, *, num_image_tokens, soi_id, eoi_id, mask_id, code_offset,
                 codebook_size, guidance_scale=0.0, uncond_ids=None, uncond_mask=None, use_cache=True):
        fn = "ImageLogits"
        if not isinstance(lm, TransformerLM):
            raise TypeError(f"{fn}: lm must be an mmu.nn.TransformerLM, got {type(lm).__name__}")
        v = _check_vocab(lm, fn, soi_id, eoi_id, mask_id, code_offset, codebook_size)
        self.lm = lm
        self.soi_id, self.eoi_id, self.mask_id = v["soi_id"], v["eoi_id"], v["mask_id"]
        self.code_offset, self.codebook_size = v["code_offset"], v["codebook_size"]
        self.num_image_tokens = check_int(num_image_tokens, fn, "num_image_tokens")
        if self.num_image_tokens < 1:
            raise ValueError(f"{fn}: num_image_tokens must be >= 1, got {self.num_image_tokens}")
        if not isinstance(use_cache, (bool, np.bool_)):
            raise TypeError(f"{fn}: use_cache must be a bool, got {type(use_cache).__name__}")
        self.use_cache = bool(use_cache)
        self.guidance_scale = check_real(guidance_scale, fn, "guidance_scale")
        if not (self.guidance_scale >= 0.0 and np.isfinite(self.guidance_scale)):
            raise ValueError(f"{fn}: guidance_scale must be >= 0 and finite (0: no guidance), got {guidance_scale}")
        ids = _ids_2d(prompt_ids, fn, "prompt_ids")
        mask = _real_mask(prompt_mask, ids.shape, fn, "prompt_mask")
        self.batch_size = ids.shape[0]
        if self.guidance_scale > 0:
            if uncond_ids is None:
                raise ValueError(f"{fn}: guidance_scale > 0 needs uncond_ids (the unconditional prompts)")
            uids = _ids_2d(uncond_ids, fn, "uncond_ids")
            if uids.shape[0] != self.batch_size:
                raise ValueError(f"{fn}: uncond_ids must have the {self.batch_size} rows of prompt_ids, got "
                                 f"{uids.shape}")
            umask = _real_mask(uncond_mask, uids.shape, fn, "uncond_mask")
            width = max(ids.shape[1], uids.shape[1])
            ids, mask = _left_pad(ids, mask, width, self.mask_id)
            uids, umask = _left_pad(uids, umask, width, self.mask_id)
            ids, mask = np.concatenate([ids, uids]), np.concatenate([mask, umask])
        elif uncond_ids is not None or uncond_mask is not None:
            raise ValueError(f"{fn}: uncond_ids / uncond_mask are used only with guidance_scale > 0")
        if ((ids < 0) | (ids >= lm.vocab_size))[mask].any():
            raise ValueError(f"{fn}: prompt_ids (and uncond_ids) must be in [0, {lm.vocab_size})")
        if ((ids == self.soi_id) | (ids == self.eoi_id))[mask].any():
            raise ValueError(f"{fn}: the prompts must not hold [SOI] {self.soi_id} or [EOI] {self.eoi_id}: the image "
                             f"block that follows them is added here")
        ids = np.where(mask, ids, self.mask_id)  # pads are never attended to; any id in range serves
        self.rows, self.prefix_len = ids.shape
        n, p = self.num_image_tokens, self.prefix_len
        total = p + n + 2
        if lm.pos == "learned" and total > lm.max_seq_len:
            raise ValueError(f"{fn}: {total} positions exceed the model's max_seq_len {lm.max_seq_len}")
        self._head = _codebook_head(lm, self.code_offset, self.codebook_size)
        real = np.concatenate([mask, np.ones((self.rows, n + 2), bool)], 1)
        self._positions = _positions(real)  # (rows, P + N + 2)
        self._prefix_ids = ids
        if self.use_cache:
            self.cache = lm.new_cache(self.rows, total)
            with no_grad():
                lm(_tensor(ids), attention_mask=_tensor(mask), position_ids=_tensor(self._positions[:, :p]),
                   cache=self.cache, logits_at=None)
            # every block query sees the prefix's real positions and the whole block
            self._block_mask = _tensor(np.ascontiguousarray(np.broadcast_to(
                real[:, None, None, :], (self.rows, 1, n + 2, total))))
            self._block_positions = _tensor(np.ascontiguousarray(self._positions[:, p:]))
        else:
            self.cache = None
            # the mask depends only on where the pads, [SOI] and [EOI] are, never on the codes
            seq = np.concatenate([ids, np.full((self.rows, n + 2), self.code_offset, np.int64)], 1)
            seq[:, p], seq[:, p + n + 1] = self.soi_id, self.eoi_id
            self._full_mask = _tensor(omni_attention_mask(seq, real, self.soi_id, self.eoi_id))
            self._full_positions = _tensor(self._positions)

    def _vocab_ids(self, codes):
        fn = "ImageLogits"
        c = _array(codes)
        if c.dtype == np.bool_ or c.dtype.kind not in "iu":
            raise TypeError(f"{fn}: codes must be integer, got dtype {c.dtype}")
        c = c.astype(np.int64).reshape(c.shape[0], -1) if c.ndim >= 2 else c
        if c.ndim != 2 or c.shape[1] != self.num_image_tokens or c.shape[0] not in (self.batch_size, self.rows):
            raise ValueError(f"{fn}: codes must be (B={self.batch_size}, N={self.num_image_tokens}), got "
                             f"{_array(codes).shape}")
        is_mask = c == self.mask_id
        if ((c < 0) | (c >= self.codebook_size))[~is_mask].any():
            raise ValueError(f"{fn}: codes must be in [0, {self.codebook_size}) or mask_id {self.mask_id}")
        c = c[:self.batch_size]  # maskgit_decode with its own guidance would pass the codes twice
        v = np.where(is_mask[:self.batch_size], self.mask_id, c + self.code_offset)
        return np.concatenate([v, v]) if self.rows != self.batch_size else v

    def cond_uncond(self, codes):
        """Unguided codebook logits (rows, N, K) at the image positions for these codes."""
        image = self._vocab_ids(codes)
        n, p = self.num_image_tokens, self.prefix_len
        block = np.concatenate([np.full((self.rows, 1), self.soi_id, np.int64), image,
                                np.full((self.rows, 1), self.eoi_id, np.int64)], 1)
        with no_grad():
            if self.use_cache:
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
            return F.linear(h, self._head[0], self._head[1])

    def __call__(self, codes):
        logits = self.cond_uncond(codes)
        if self.rows == self.batch_size:
            return logits
        a = logits.numpy()
        b, w = self.batch_size, np.float32(self.guidance_scale)
        return _tensor((np.float32(1.0) + w) * a[:b] - w * a[b:])  # Show-o's (1 + w)·c − w·u


def t2i_generate(lm, prompt_ids, prompt_mask=None, *, num_image_tokens, soi_id, eoi_id, mask_id, code_offset,
                 codebook_size, steps=18, guidance_scale=0.0, uncond_ids=None, uncond_mask=None, temperature=1.0,
                 temperature_decay=DEFAULT_TEMPERATURE_DECAY, schedule="cosine", sample_temperature=1.0, top_k=None,
                 top_p=None, codes=None, generator=None, use_cache=True, progress=False):
    """Text-to-image with MaskGIT and classifier-free guidance -> codes int64 (B, N) in
    [0, codebook_size).

    The prompts (prompt_ids (B, P), prompt_mask: left padded, see ImageLogits) and, with
    guidance_scale w > 0, the unconditional prompts run once into a KV cache; each of `steps` steps
    runs only the image block (use_cache=False: the whole sequence, Show-o's public path).
    Decoding is mmu.generate.maskgit_decode's (google-research/maskgit's, as Show-o): every masked
    position is sampled from the (guided) logits (sample_temperature, top_k, top_p), the number
    left masked after step k is floor(N0·schedule((k + 1) / steps)) (N0 masked at the start), the
    least confident are masked again with confidence log p + t_k·Gumbel noise.
    temperature t0 is that Gumbel temperature (Show-o's `temperature`); temperature_decay:
    'compounding' (the default, Show-o's sampler: t_k = t_{k-1}·(1 − r_k), so its published
    settings reproduce) or 'linear' (MaskGIT's t0·(1 − r_k)). steps=18 and guidance_scale 0 are
    Show-o's t2i_generate defaults (its README samples with w = 5 at 50 steps).
    codes (B, N) with mask_id at the positions to decode: inpainting (the other codes are kept).
    generator: an mmu.Generator (or None: the global stream).
    """
    fn = "t2i_generate"
    steps = check_int(steps, fn, "steps")
    if steps < 1:
        raise ValueError(f"{fn}: steps must be >= 1, got {steps}")
    temperature = check_real(temperature, fn, "temperature")
    if not (temperature >= 0.0 and np.isfinite(temperature)):
        raise ValueError(f"{fn}: temperature (the Gumbel noise's) must be >= 0 and finite, got {temperature}")
    if not isinstance(temperature_decay, str) or temperature_decay not in ("compounding", "linear"):
        raise ValueError(f"{fn}: temperature_decay must be 'compounding' (Show-o) or 'linear' (MaskGIT), "
                         f"got {temperature_decay!r}")
    logits_fn = ImageLogits(lm, prompt_ids, prompt_mask, num_image_tokens=num_image_tokens, soi_id=soi_id,
                            eoi_id=eoi_id, mask_id=mask_id, code_offset=code_offset, codebook_size=codebook_size,
                            guidance_scale=guidance_scale, uncond_ids=uncond_ids, uncond_mask=uncond_mask,
                            use_cache=use_cache)
    b, n = logits_fn.batch_size, logits_fn.num_image_tokens
    if codes is None:
        start = np.full((b, n), logits_fn.mask_id, np.int64)
    else:
        start = _array(codes)
        if start.dtype == np.bool_ or start.dtype.kind not in "iu":
            raise TypeError(f"{fn}: codes must be integer, got dtype {start.dtype}")
        if start.shape != (b, n):
            raise ValueError(f"{fn}: codes must be (B, N) = ({b}, {n}), got {start.shape}")
        start = start.astype(np.int64)
        given = start != logits_fn.mask_id
        if ((start < 0) | (start >= logits_fn.codebook_size))[given].any():
            raise ValueError(f"{fn}: codes must be in [0, {logits_fn.codebook_size}) or mask_id {logits_fn.mask_id}")
        if given.all():
            return _tensor(start.copy())
    out = maskgit_decode(logits_fn, mask_id=logits_fn.mask_id, steps=steps, schedule=schedule,
                         choice_temperature=temperature, choice_temperature_decay=temperature_decay,
                         temperature=sample_temperature, top_k=top_k, top_p=top_p, initial_tokens=start,
                         generator=generator, progress=progress)
    return out


def inpaint(lm, prompt_ids, prompt_mask=None, *, codes, keep, mask_id, **kwargs):
    """Inpainting: codes (B, N) (or (B, h, w)) with keep (same shape, bool: True = keep this code);
    the others are decoded by t2i_generate (its keyword arguments) -> codes of codes' shape."""
    fn = "inpaint"
    c, k = _array(codes), _array(keep)
    if k.dtype != np.bool_:
        raise TypeError(f"{fn}: keep must be a bool array (True = keep the code), got dtype {k.dtype}")
    if c.shape != k.shape or c.ndim < 2:
        raise ValueError(f"{fn}: codes (B, N) or (B, h, w) and keep must have one shape, got {c.shape} and {k.shape}")
    if c.dtype == np.bool_ or c.dtype.kind not in "iu":
        raise TypeError(f"{fn}: codes must be integer, got dtype {c.dtype}")
    mask_id = check_int(mask_id, fn, "mask_id")
    start = np.where(k, c.astype(np.int64), mask_id).reshape(c.shape[0], -1)
    out = t2i_generate(lm, prompt_ids, prompt_mask, num_image_tokens=start.shape[1], mask_id=mask_id, codes=start,
                       **kwargs)
    return _tensor(out.numpy().reshape(c.shape))


_DIRECTIONS = ("left", "right", "up", "down")


def extrapolate(lm, prompt_ids, prompt_mask=None, *, codes, direction, amount, mask_id, **kwargs):
    """Extrapolation (outpainting) as Show-o's demo does it: the canvas grows by `amount` columns
    (direction 'left'/'right') or rows ('up'/'down') of new codes.

    codes (B, h, w): the model's grid (h·w = its image tokens). The model sees a window of the grid's
    size: the new strip (amount columns/rows, all masked) beside the h×(w − amount) (or
    (h − amount)×w) codes next to it, decodes the strip with t2i_generate (its keyword arguments),
    and the result is the new strip joined to the whole given grid -> codes (B, h, w + amount) or
    (B, h + amount, w). Show-o's demo uses amount = w/2 + offset."""
    fn = "extrapolate"
    c = _array(codes)
    if c.dtype == np.bool_ or c.dtype.kind not in "iu":
        raise TypeError(f"{fn}: codes must be integer, got dtype {c.dtype}")
    if c.ndim != 3:
        raise ValueError(f"{fn}: codes must be a grid (B, h, w), got shape {c.shape}")
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        raise ValueError(f"{fn}: direction must be one of {_DIRECTIONS}, got {direction!r}")
    amount = check_int(amount, fn, "amount")
    mask_id = check_int(mask_id, fn, "mask_id")
    b, h, w = c.shape
    side = w if direction in ("left", "right") else h
    if not 1 <= amount < side:
        raise ValueError(f"{fn}: amount must be in [1, {side}) for direction {direction!r} on a {h}x{w} grid, "
                         f"got {amount}")
    c = c.astype(np.int64)
    if direction == "left":
        window = np.concatenate([np.full((b, h, amount), mask_id, np.int64), c[:, :, :w - amount]], 2)
    elif direction == "right":
        window = np.concatenate([c[:, :, amount:], np.full((b, h, amount), mask_id, np.int64)], 2)
    elif direction == "up":
        window = np.concatenate([np.full((b, amount, w), mask_id, np.int64), c[:, :h - amount]], 1)
    else:
        window = np.concatenate([c[:, amount:], np.full((b, amount, w), mask_id, np.int64)], 1)
    out = t2i_generate(lm, prompt_ids, prompt_mask, num_image_tokens=h * w, mask_id=mask_id,
                       codes=window.reshape(b, h * w), **kwargs).numpy().reshape(b, h, w)
    if direction == "left":
        return _tensor(np.concatenate([out[:, :, :amount], c], 2))
    if direction == "right":
        return _tensor(np.concatenate([c, out[:, :, w - amount:]], 2))
    if direction == "up":
        return _tensor(np.concatenate([out[:, :amount], c], 1))
    return _tensor(np.concatenate([c, out[:, h - amount:]], 1))


def mmu_generate(lm, codes, question_ids, question_mask=None, *, mmu_id, soi_id, eoi_id, sot_id, code_offset,
                 codebook_size, pad_id, max_new_tokens=100, eos_token_id=None, do_sample=False, temperature=1.0,
                 top_k=None, top_p=None, generator=None, progress=False):
    """Answers about images -> int64 Tensor (B, n) of new tokens (n <= max_new_tokens; after its stop
    token a row is filled with pad_id).

    The prompt is Show-o's MMU sequence [MMU][SOI] image [EOI][SOT] question: codes (B, N) in
    [0, codebook_size) (ids code_offset + code), question_ids (B, Lq) left padded by question_mask
    (True = a real token); rows are left padded as a whole. It is run once (prefill) with the
    omni-attention mask (the image block bidirectional, text causal), then the answer is generated
    one token at a time on the KV cache by mmu.generate.generate, each step computing only the last
    position's logits. do_sample=False: greedy (Show-o's demo uses top_k=1); else sampling with
    temperature, top_k, top_p. eos_token_id: a stop token or list of them (Show-o: [EOT])."""
    fn = "mmu_generate"
    if not isinstance(lm, TransformerLM):
        raise TypeError(f"{fn}: lm must be an mmu.nn.TransformerLM, got {type(lm).__name__}")
    c = _ids_2d(codes, fn, "codes") if _array(codes).ndim == 2 else None
    if c is None:
        a = _array(codes)
        if a.ndim < 2:
            raise ValueError(f"{fn}: codes must be (B, N) or (B, h, w), got shape {a.shape}")
        c = _ids_2d(a.reshape(a.shape[0], -1), fn, "codes")
    codebook_size = check_int(codebook_size, fn, "codebook_size")
    code_offset = check_int(code_offset, fn, "code_offset")
    if codebook_size < 1 or code_offset < 0 or code_offset + codebook_size > lm.vocab_size:
        raise ValueError(f"{fn}: the codebook ids [{code_offset}, {code_offset + codebook_size}) must lie in the "
                         f"vocabulary [0, {lm.vocab_size})")
    if ((c < 0) | (c >= codebook_size)).any():
        raise ValueError(f"{fn}: codes must be in [0, {codebook_size})")
    q = _ids_2d(question_ids, fn, "question_ids")
    if q.shape[0] != c.shape[0]:
        raise ValueError(f"{fn}: codes ({c.shape[0]} rows) and question_ids ({q.shape[0]} rows) must have one row "
                         f"per image")
    qmask = _real_mask(question_mask, q.shape, fn, "question_mask")
    special = {}
    for name, value in (("mmu_id", mmu_id), ("soi_id", soi_id), ("eoi_id", eoi_id), ("sot_id", sot_id),
                        ("pad_id", pad_id)):
        special[name] = check_int(value, fn, name)
        if not 0 <= special[name] < lm.vocab_size:
            raise ValueError(f"{fn}: {name} {special[name]} is outside the vocabulary [0, {lm.vocab_size})")
    if ((q < 0) | (q >= lm.vocab_size))[qmask].any():
        raise ValueError(f"{fn}: question_ids must be in [0, {lm.vocab_size})")
    b, n = c.shape
    # each row: [MMU][SOI] codes [EOI][SOT] its real question tokens, then the rows left padded together
    lengths = qmask.sum(1)
    width = 4 + n + int(lengths.max())
    ids = np.full((b, width), special["pad_id"], np.int64)
    real = np.zeros((b, width), bool)
    for r in range(b):
        row = np.concatenate([[special["mmu_id"], special["soi_id"]], c[r] + code_offset,
                              [special["eoi_id"], special["sot_id"]], q[r][qmask[r]]])
        ids[r, width - row.size:] = row
        real[r, width - row.size:] = True
    omni = omni_attention_mask(ids, real, special["soi_id"], special["eoi_id"])
    out = _generate(lm, ids, attention_mask=real, max_new_tokens=max_new_tokens, do_sample=do_sample,
                    temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                    pad_token_id=pad_id, generator=generator, progress=progress, prefill_attn_mask=omni)
    return _tensor(np.ascontiguousarray(out.numpy()[:, width:]))
