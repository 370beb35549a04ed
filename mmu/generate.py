"""Sampling from models: autoregressive generation on a KV cache, MaskGIT iterative decoding and
RVQ depth decoding, all drawn from mmu's counter-based Philox stream (mmu.manual_seed, or an
mmu.Generator passed as `generator=`): a seed reproduces a sample at any thread count.

- `sample_logits(logits (B, V), temperature, top_k, top_p, generator, greedy) -> (ids, logprobs)`:
  one fused C pass per row (csrc/ops/sampling.c): temperature, top-k and top-p with Hugging
  Face's semantics, then the draw.
- `generate(model, input_ids, ...)`: prefill the prompt once, then one token per step on the
  model's cache. The model protocol (mmu.nn.TransformerLM's): `model.new_cache(batch, max_len)`
  and `model(input_ids, attention_mask=, position_ids=, cache=, logits_at='last')`.
- `maskgit_decode(logits_fn, ...)`: MaskGIT (Chang et al. 2022) iterative parallel decoding, as
  google-research/maskgit's `parallel_decode.decode` does it.
- `rvq_depth_decode(depth_fn, hidden, depth, ...)`: D residual codes per position from a depth
  head, one depth at a time (VILA-U / RQ-Transformer).
"""
import math

import numpy as np

from . import _C
from ._args import check_int as _int, check_real as _real, flag as _flag, is_int as _is_int
from .autograd import no_grad
from .tensor import Tensor, _as_tensor
from .tensor import tensor as _tensor

__all__ = ["sample_logits", "generate", "maskgit_decode", "rvq_depth_decode", "mask_schedule"]


# ---------------------------------------------------------------- sample_logits

def _sampling_args(op, temperature, top_k, top_p):
    """(temperature, top_k code (0 = off), top_p code (1 = off)) checked, errors naming op."""
    temperature = _real(temperature, op, "temperature")
    if not (temperature > 0.0 and math.isfinite(temperature)):
        raise ValueError(f"{op}: temperature must be a positive finite number, got {temperature}")
    if top_k is None:
        k = 0
    else:
        k = _int(top_k, op, "top_k")
        if k < 0:
            raise ValueError(f"{op}: top_k must be >= 1 (0 or None: no top-k), got {k}")
    if top_p is None:
        p = 1.0
    else:
        p = _real(top_p, op, "top_p")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{op}: top_p must be in [0, 1] (1 or None: no top-p), got {p}")
    return temperature, k, p


def _check_generator(generator, op):
    if generator is not None and not isinstance(generator, _C.Generator):
        raise TypeError(f"{op}: generator must be an mmu.Generator or None, got {type(generator).__name__}")


def sample_logits(logits, temperature=1.0, top_k=None, top_p=None, generator=None, greedy=False):
    """One token id per row of `logits` (B, V) -> (ids int64 (B,), logprobs float32 (B,)).

    In one C pass per row: the logits are divided by `temperature`; top_k keeps the logits >= the
    k-th largest (ties at the threshold stay, as Hugging Face's TopKLogitsWarper); top_p keeps the
    smallest set of most probable tokens whose probability reaches top_p, at least one (its
    TopPLogitsWarper; equal probabilities are ordered lower id first); then one id is drawn from the
    renormalised remainder (greedy=True: the argmax, the first on ties, no random draw). `logprobs`
    is the log-probability of each id under that filtered distribution.
    top_k None/0 and top_p None/1.0 switch the filters off. -inf logits are never drawn; NaN or
    +inf, or a row of only -inf, is a ValueError. generator: an mmu.Generator or None (the global
    stream); row b reads block b of the call's draw, so any thread count gives the same ids.
    """
    op = "sample_logits"
    temperature, k, p = _sampling_args(op, temperature, top_k, top_p)
    greedy = _flag(greedy, op, "greedy")
    _check_generator(generator, op)
    x = _as_tensor(logits, op)
    if x.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-D (B, V), got shape {tuple(x.shape)}")
    return _C.sample_logits(x, temperature, k, p, greedy, generator)


# ---------------------------------------------------------------- helpers

def _int_array(v, op, name, ndim=None):
    a = np.asarray(v.numpy() if isinstance(v, Tensor) else v)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise TypeError(f"{op}: {name} must be integer token ids, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {a.shape}")
    return a.astype(np.int64)


def _mask_array(v, shape, op, name):
    if v is None:
        return np.ones(shape, dtype=bool)
    a = np.asarray(v.numpy() if isinstance(v, Tensor) else v)
    if a.shape != tuple(shape):
        raise ValueError(f"{op}: {name} must have the shape of its ids {tuple(shape)}, got {a.shape}")
    if a.dtype != np.bool_:
        if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
            raise ValueError(f"{op}: {name} must be bool or 0/1 (True = a real token)")
        a = a != 0
    return a


def _as_array(x):
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _logits_rows(out, rows, op, what):
    """A model's / callback's logits (Tensor or array) as a float32 (rows, ..., V) array."""
    a = _as_array(out)
    if a.ndim < 2 or a.shape[0] != rows:
        raise ValueError(f"{op}: {what} must return logits with {rows} rows first, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _guided(logits, batch, scale):
    """Classifier-free guidance over a 2B-row batch, conditional rows first: u + s·(c − u)."""
    cond, uncond = logits[:batch], logits[batch:]
    return uncond + np.float32(scale) * (cond - uncond)


def _progress(total, enabled, desc):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


def _stop_ids(eos_token_id, op):
    if eos_token_id is None:
        return np.zeros(0, dtype=np.int64)
    ids = [eos_token_id] if _is_int(eos_token_id) else list(eos_token_id) if isinstance(
        eos_token_id, (list, tuple, np.ndarray)) else None
    if ids is None or not all(_is_int(e) for e in ids):
        raise TypeError(f"{op}: eos_token_id must be an int or a list of ints, got {eos_token_id!r:.60}")
    if any(e < 0 for e in ids):
        raise ValueError(f"{op}: eos_token_id must be >= 0, got {ids}")
    return np.asarray(ids, dtype=np.int64)


def _left_pad(ids, mask, length, pad):
    """Left-pad (B, L) ids and mask to `length` columns."""
    B, L = ids.shape
    if L == length:
        return ids, mask
    extra = length - L
    return (np.concatenate([np.full((B, extra), pad, np.int64), ids], 1),
            np.concatenate([np.zeros((B, extra), bool), mask], 1))


def _model_step(model, cache, ids, mask, positions, attn_mask=None):
    """One forward on the cache; the cache holds ids.shape[1] more tokens afterwards (a model that
    does not advance its cache itself gets it advanced here)."""
    before = cache.length
    extra = {} if attn_mask is None else {"attn_mask": attn_mask}
    out = model(_tensor(ids), attention_mask=_tensor(mask), position_ids=_tensor(positions), cache=cache,
                logits_at="last", **extra)
    if cache.length == before:
        cache.advance(ids.shape[1])
    return out


# ---------------------------------------------------------------- generate

def generate(model, input_ids, attention_mask=None, max_new_tokens=20, do_sample=True, temperature=1.0,
             top_k=None, top_p=None, eos_token_id=None, pad_token_id=None, guidance_scale=None,
             uncond_input_ids=None, uncond_attention_mask=None, generator=None, progress=False, prefill_attn_mask=None):
    """Autoregressive sampling on the model's KV cache -> int64 Tensor (B, L + n), the prompts
    followed by n <= max_new_tokens new tokens.

    model: implements `new_cache(batch, max_len)` and `model(input_ids, attention_mask=,
    position_ids=, cache=, logits_at='last')` (mmu.nn.TransformerLM). The prompt is run once
    (prefill), then one token per step against the cache.
    input_ids (B, L) int64 with attention_mask (B, L) (True / 1 = a real token): prompts of
    different lengths are LEFT padded (a row's mask is 0s then 1s); position ids count real tokens
    only (cumsum(mask) - 1), so a padded prompt continues as the same prompt unpadded would.
    do_sample=False: greedy (argmax); else sample_logits with temperature, top_k, top_p.
    eos_token_id: an int or a list of stop tokens; a row that emits one is finished and its later
    tokens are pad_token_id (default: the first stop token); generation ends when every row is.
    guidance_scale s: classifier-free guidance, logits u + s·(c − u), c from the prompt and u from
    uncond_input_ids (B, Lu) (+ uncond_attention_mask), run alongside as one batch of 2B rows.
    generator: an mmu.Generator or None (the global stream). progress: a tqdm bar over the steps.
    prefill_attn_mask: an explicit (B|1, 1, L, L) bool mask (True = attend) for the prompt's prefill,
    passed to the model as attn_mask= in place of the causal mask (Show-o's omni-attention, where an
    image block inside the prompt is bidirectional); attention_mask's padding still applies and the
    new tokens attend causally to every real position. Not with guidance_scale.
    """
    op = "generate"
    if not callable(model) or not callable(getattr(model, "new_cache", None)):
        raise TypeError(f"{op}: model must be callable and have new_cache(batch, max_len), got {type(model).__name__}")
    ids = _int_array(input_ids, op, "input_ids", ndim=2)
    B, L = ids.shape
    if B == 0 or L == 0:
        raise ValueError(f"{op}: input_ids must have at least one row and one token, got shape {ids.shape}")
    if (ids < 0).any():
        raise ValueError(f"{op}: input_ids must be >= 0")
    mask = _mask_array(attention_mask, ids.shape, op, "attention_mask")
    max_new_tokens = _int(max_new_tokens, op, "max_new_tokens")
    if max_new_tokens < 1:
        raise ValueError(f"{op}: max_new_tokens must be >= 1, got {max_new_tokens}")
    do_sample = _flag(do_sample, op, "do_sample")
    temperature, k, p = _sampling_args(op, temperature, top_k, top_p)
    stops = _stop_ids(eos_token_id, op)
    if pad_token_id is None:
        pad = int(stops[0]) if stops.size else 0
    else:
        pad = _int(pad_token_id, op, "pad_token_id")
        if pad < 0:
            raise ValueError(f"{op}: pad_token_id must be >= 0, got {pad}")
    _check_generator(generator, op)
    progress = _flag(progress, op, "progress")
    if prefill_attn_mask is not None:
        if guidance_scale is not None:
            raise ValueError(f"{op}: prefill_attn_mask cannot be combined with guidance_scale")
        pam = _as_array(prefill_attn_mask)
        if pam.dtype != np.bool_ or pam.ndim != 4 or pam.shape[0] not in (1, B) or pam.shape[1] != 1 or \
                pam.shape[2:] != (L, L):
            raise ValueError(f"{op}: prefill_attn_mask must be bool (B|1, 1, L, L) = ({B}|1, 1, {L}, {L}), got "
                             f"{pam.shape} {pam.dtype}")
        prefill_attn_mask = _tensor(np.ascontiguousarray(pam))

    rows = B
    if guidance_scale is not None:
        guidance_scale = _real(guidance_scale, op, "guidance_scale")
        if uncond_input_ids is None:
            raise ValueError(f"{op}: guidance_scale needs uncond_input_ids (the unconditional prompts)")
        uids = _int_array(uncond_input_ids, op, "uncond_input_ids", ndim=2)
        if uids.shape[0] != B or uids.shape[1] == 0:
            raise ValueError(f"{op}: uncond_input_ids must be ({B}, Lu) with Lu >= 1 like input_ids "
                             f"{ids.shape}, got {uids.shape}")
        if (uids < 0).any():
            raise ValueError(f"{op}: uncond_input_ids must be >= 0")
        umask = _mask_array(uncond_attention_mask, uids.shape, op, "uncond_attention_mask")
        width = max(L, uids.shape[1])
        ids_c, mask_c = _left_pad(ids, mask, width, pad)
        ids_u, mask_u = _left_pad(uids, umask, width, pad)
        batch_ids, batch_mask = np.concatenate([ids_c, ids_u]), np.concatenate([mask_c, mask_u])
        rows = 2 * B
    elif uncond_input_ids is not None or uncond_attention_mask is not None:
        raise ValueError(f"{op}: uncond_input_ids / uncond_attention_mask are used only with guidance_scale")
    else:
        batch_ids, batch_mask = ids, mask
    # left padding only: a row's real tokens must end at the last column, or the next token would
    # follow a pad
    if not batch_mask[:, -1].all() or (np.diff(batch_mask.astype(np.int8), axis=1) < 0).any():
        raise ValueError(f"{op}: attention_mask must be left padded (each row 0s then 1s, its last "
                         f"column 1); pad prompts on the left")

    width = batch_ids.shape[1]
    cache = model.new_cache(rows, width + max_new_tokens)
    full_mask = np.zeros((rows, width + max_new_tokens), dtype=bool)
    full_mask[:, :width] = batch_mask
    positions = np.maximum(np.cumsum(batch_mask, axis=1) - 1, 0).astype(np.int64)
    next_pos = positions[:, -1:] + 1
    finished = np.zeros(B, dtype=bool)
    new_tokens = []
    bar = _progress(max_new_tokens, progress, "generate")
    try:
        with no_grad():
            out = _model_step(model, cache, batch_ids, full_mask[:, :width], positions, prefill_attn_mask)
            for step in range(max_new_tokens):
                logits = _logits_rows(out, rows, op, "model").reshape(rows, -1)
                if guidance_scale is not None:
                    logits = _guided(logits, B, guidance_scale)
                tok, _ = _C.sample_logits(logits, temperature, k, p, not do_sample, generator)
                tok = tok.numpy().copy()
                tok[finished] = pad
                finished |= np.isin(tok, stops)
                new_tokens.append(tok)
                if bar is not None:
                    bar.update(1)
                if finished.all() or step == max_new_tokens - 1:
                    break
                feed = np.concatenate([tok, tok]) if rows == 2 * B else tok
                full_mask[:, width + step] = True
                out = _model_step(model, cache, feed[:, None], full_mask[:, :width + step + 1], next_pos)
                next_pos = next_pos + 1
    finally:
        if bar is not None:
            bar.close()
    return _tensor(np.concatenate([ids, np.stack(new_tokens, axis=1)], axis=1))


# ---------------------------------------------------------------- MaskGIT

def mask_schedule(ratio, schedule="cosine"):
    """MaskGIT's mask ratio after a fraction `ratio` in [0, 1] of the steps: 'cosine' cos(π/2·r),
    'linear' 1 − r, 'square' 1 − r², or a callable r -> ratio; clipped to [1e-6, 1] as in
    google-research/maskgit's mask_schedule.schedule."""
    if callable(schedule):
        value = float(schedule(ratio))
    elif schedule == "cosine":
        value = math.cos(math.pi / 2.0 * ratio)
    elif schedule == "linear":
        value = 1.0 - ratio
    elif schedule == "square":
        value = 1.0 - ratio ** 2
    else:
        raise ValueError(f"mask_schedule: schedule must be 'cosine', 'linear', 'square' or a callable, "
                         f"got {schedule!r}")
    return min(max(value, 1e-6), 1.0)


def _gumbel(shape, generator):
    # uniforms of 24 bits, moved to the middle of their cell so that log never sees 0
    u = _C.random(tuple(shape), False, generator).numpy().astype(np.float64) + 2.0 ** -25
    return -np.log(-np.log(u))


def maskgit_decode(logits_fn, num_tokens=None, mask_id=None, steps=12, schedule="cosine", choice_temperature=4.5,
                   temperature=1.0, top_k=None, top_p=None, batch_size=1, initial_tokens=None, guidance_scale=None,
                   generator=None, progress=False, choice_temperature_decay="linear"):
    """MaskGIT iterative decoding -> int64 Tensor (B, *shape) of tokens, none equal to mask_id.

    logits_fn(tokens) gets the current tokens as an int64 array (B, *shape) (with guidance:
    (2B, *shape), the same tokens twice, conditional half first; the function conditions each
    half) and returns logits (rows, *shape, V) or (rows, N, V).
    num_tokens: an int N or a shape tuple (h, w); with initial_tokens (B, *shape) instead, its
    positions equal to mask_id are decoded and the others are kept (inpainting).
    Each of `steps` steps, as google-research/maskgit's parallel_decode.decode: sample every masked
    position (sample_logits: temperature, top_k, top_p); ratio r = (step + 1) / steps; the number
    to stay masked is floor(N0 · schedule(r)) (N0 = masked at the start, schedule of mask_schedule),
    at least 1 and at most (masked now − 1); confidence = log p(sampled) + t_step · Gumbel noise (the
    given tokens: +inf), and the lowest-confidence positions are masked again. The noise temperature
    t_step follows choice_temperature_decay: 'linear' (the reference) t_step = choice_temperature·(1 − r);
    'compounding' (Show-o's sampler, models/sampling.py + Showo.t2i_generate: `temperature =
    temperature * (1 - ratio)` each step) t_step = choice_temperature·∏_{j <= step} (1 − r_j), which
    falls much faster (at 16 steps: 0.5·t0 at the 4th step where linear has 0.75·t0, under 1% of t0
    from the 10th step on).
    The last step keeps every sample. guidance_scale s: logits u + s·(c − u) (Show-o's
    (1 + w)·c − w·u is s = 1 + w). With temperature 1 and no top-k/top-p, log p(sampled) is the
    log-softmax of the (guided) logits, as in the reference; otherwise it is taken under the
    filtered distribution the token was drawn from.
    """
    op = "maskgit_decode"
    if not callable(logits_fn):
        raise TypeError(f"{op}: logits_fn must be callable, got {type(logits_fn).__name__}")
    if mask_id is None:
        raise ValueError(f"{op}: mask_id is required (the [MASK] token id)")
    mask_id = _int(mask_id, op, "mask_id")
    steps = _int(steps, op, "steps")
    if steps < 1:
        raise ValueError(f"{op}: steps must be >= 1, got {steps}")
    mask_schedule(0.0, schedule)  # checks the name
    choice_temperature = _real(choice_temperature, op, "choice_temperature")
    if not (choice_temperature >= 0.0 and math.isfinite(choice_temperature)):
        raise ValueError(f"{op}: choice_temperature must be >= 0 and finite, got {choice_temperature}")
    if not isinstance(choice_temperature_decay, str) or choice_temperature_decay not in ("linear", "compounding"):
        raise ValueError(f"{op}: choice_temperature_decay must be 'linear' or 'compounding', "
                         f"got {choice_temperature_decay!r}")
    temperature, k, p = _sampling_args(op, temperature, top_k, top_p)
    _check_generator(generator, op)
    progress = _flag(progress, op, "progress")
    if guidance_scale is not None:
        guidance_scale = _real(guidance_scale, op, "guidance_scale")
    if initial_tokens is not None:
        if num_tokens is not None:
            raise ValueError(f"{op}: give num_tokens or initial_tokens, not both")
        tokens = _int_array(initial_tokens, op, "initial_tokens")
        if tokens.ndim < 2 or tokens.size == 0:
            raise ValueError(f"{op}: initial_tokens must be (B, *shape) and not empty, got {tokens.shape}")
    else:
        if num_tokens is None:
            raise ValueError(f"{op}: give num_tokens (an int or a shape) or initial_tokens")
        shape = (num_tokens,) if _is_int(num_tokens) else tuple(num_tokens)
        if not shape or not all(_is_int(s) and s >= 1 for s in shape):
            raise ValueError(f"{op}: num_tokens must be a positive int or a shape of positive ints, got {num_tokens!r}")
        batch_size = _int(batch_size, op, "batch_size")
        if batch_size < 1:
            raise ValueError(f"{op}: batch_size must be >= 1, got {batch_size}")
        tokens = np.full((batch_size,) + tuple(int(s) for s in shape), mask_id, dtype=np.int64)
    shape = tokens.shape
    B, N = shape[0], int(np.prod(shape[1:]))
    tokens = tokens.reshape(B, N).copy()
    unknown_at_start = (tokens == mask_id).sum(axis=1)
    noise_temperature = choice_temperature  # the compounding rule's running value
    bar = _progress(steps, progress, "maskgit")
    try:
        with no_grad():
            for step in range(steps):
                feed = tokens.reshape(shape)
                rows = B
                if guidance_scale is not None:
                    feed, rows = np.concatenate([feed, feed]), 2 * B
                logits = _logits_rows(logits_fn(feed), rows, op, "logits_fn")
                if logits.size % (rows * N) or logits.ndim < 2:
                    raise ValueError(f"{op}: logits_fn must return (rows, *shape, V) logits for tokens of shape "
                                     f"{feed.shape}, got {logits.shape}")
                logits = logits.reshape(rows, N, -1)
                if guidance_scale is not None:
                    logits = _guided(logits, B, guidance_scale)
                V = logits.shape[-1]
                ids, logprobs = _C.sample_logits(logits.reshape(B * N, V), temperature, k, p, False, generator)
                unknown = tokens == mask_id
                sampled = np.where(unknown, ids.numpy().reshape(B, N), tokens)
                if bar is not None:
                    bar.update(1)
                if step == steps - 1:
                    tokens = sampled
                    break
                ratio = (step + 1) / steps
                mask_ratio = mask_schedule(ratio, schedule)
                n_unknown = unknown.sum(axis=1)
                mask_len = np.floor(unknown_at_start * mask_ratio).astype(np.int64)
                mask_len = np.maximum(1, np.minimum(n_unknown - 1, mask_len))
                mask_len = np.minimum(mask_len, n_unknown)  # nothing to decode: nothing to mask
                if choice_temperature_decay == "linear":
                    noise_temperature = choice_temperature * (1.0 - ratio)
                else:
                    noise_temperature = noise_temperature * (1.0 - ratio)
                noise = _gumbel((B, N), generator)
                confidence = np.where(unknown, logprobs.numpy().reshape(B, N).astype(np.float64)
                                      + noise_temperature * noise, np.inf)
                order = np.argsort(confidence, axis=1, kind="stable")
                for b in range(B):
                    sampled[b, order[b, :mask_len[b]]] = mask_id
                tokens = sampled
    finally:
        if bar is not None:
            bar.close()
    return _tensor(tokens.reshape(shape))


# ---------------------------------------------------------------- RVQ depth decoding

def rvq_depth_decode(depth_fn, hidden, depth, temperature=1.0, top_k=None, top_p=None, do_sample=True,
                     guidance_scale=None, generator=None):
    """D residual codes per position from a depth head -> int64 Tensor (B, ..., depth).

    hidden (rows, ..., C): the main transformer's states at the positions to decode (rows, C) for
    one position a row, (rows, N, C) for N. depth_fn(hidden, codes) gets `hidden` unchanged and
    the codes chosen so far, int64 (rows, ..., d) at depth d (d = 0: an empty last axis), and
    returns the logits of the code at depth d, (rows, ..., V). One depth at a time, each conditioned on the ones before (VILA-U's /
    RQ-Transformer's depth transformer). rows = hidden's first dim; with guidance_scale s it is 2B
    (conditional rows first), the logits are u + s·(c − u) and the codes are passed twice.
    Sampling: sample_logits with temperature, top_k, top_p (do_sample=False: argmax).
    """
    op = "rvq_depth_decode"
    if not callable(depth_fn):
        raise TypeError(f"{op}: depth_fn must be callable, got {type(depth_fn).__name__}")
    depth = _int(depth, op, "depth")
    if depth < 1:
        raise ValueError(f"{op}: depth must be >= 1, got {depth}")
    temperature, k, p = _sampling_args(op, temperature, top_k, top_p)
    do_sample = _flag(do_sample, op, "do_sample")
    _check_generator(generator, op)
    shape = tuple(getattr(hidden, "shape", ()))
    if len(shape) < 2 or shape[0] < 1:
        raise ValueError(f"{op}: hidden must be (rows, ..., C) with rows >= 1, got shape {shape}")
    rows = B = int(shape[0])
    inner = shape[1:-1]  # the positions: codes are (B, *inner, d)
    if guidance_scale is not None:
        guidance_scale = _real(guidance_scale, op, "guidance_scale")
        if rows % 2:
            raise ValueError(f"{op}: with guidance_scale hidden must hold 2B rows (conditional first), got {rows}")
        B = rows // 2
    codes = np.zeros((B,) + inner + (0,), np.int64)
    with no_grad():
        for d in range(depth):
            given = np.concatenate([codes, codes]) if rows != B else codes
            logits = _logits_rows(depth_fn(hidden, given), rows, op, "depth_fn")
            if logits.shape[1:-1] != inner:
                raise ValueError(f"{op}: depth_fn must return logits ({rows}, {', '.join(map(str, inner + ('V',)))})"
                                 f" for hidden {shape}, got {logits.shape} at depth {d}")
            if guidance_scale is not None:
                logits = _guided(logits, B, guidance_scale)
            V = logits.shape[-1]
            ids, _ = _C.sample_logits(logits.reshape(-1, V), temperature, k, p, not do_sample, generator)
            codes = np.concatenate([codes, ids.numpy().reshape(codes.shape[:-1] + (1,))], axis=-1)
    return _tensor(codes)
