"""VILA-U's generation on mmu's KV cache: text -> image / video codes with classifier-free guidance, and
image -> text answers.

Visual generation follows VILA-U's path (vila_u_arch.generate_image_content / generate_video_content, the
patched LlamaForCausalLM.forward and RQTransformer.generate, read):
- the batch holds the conditional rows ([SOT] prompt [EOT] [SOI], VILA-U's conversation) and after them the
  unconditional ones (the empty prompt: [SOT] [EOT] [SOI], what condition dropout trains), left padded;
- the prompt is run once (prefill); the hidden state of its last position ([SOI] / [SOV]) goes to the depth
  transformer, which samples the D codes of the first visual position one depth at a time, each depth's
  logits guided as u + s (c - u) (conditional rows first, VILA-U's `logits[B//2:] + cfg * (logits[:B//2] -
  logits[B//2:])`) and sampled with temperature, top-k (900, capped at the codebook size) and top-p (0.96);
  the same codes go to both halves. VILA-U reruns the depth transformer on the whole prefix of depths at each
  depth; mmu keeps the depths' keys and values in a small cache (DepthTransformer.step), the same logits;
- the next LLM input is mm_projector(sum_d e_d(code_d)) (the cumsum of the code embeddings over depth, the
  last), one position per step on the cache, until the h w positions of an image (T h w of a video, the
  frames' tokens concatenated) are sampled.
A video is one sequence [SOV] v_1 .. v_TN: frame t's tokens are positions t N .. t N + N - 1.
"""
import numpy as np

from ...autograd import no_grad
from ...generate import rvq_depth_decode, sample_logits
from ...tensor import cumsum as _cumsum
from ...tensor import tensor as _tensor
from ..._args import check_int, check_real, flag
from .model import text_rows

__all__ = ["generate_images", "generate_video", "answer"]


def _sampling(model, fn, cfg_scale, top_k, top_p, temperature, do_sample):
    c = model.config
    k = c.tower_geometry()[0]
    cfg_scale = c.cfg_scale if cfg_scale is None else check_real(cfg_scale, fn, "cfg_scale")
    if not (cfg_scale >= 0.0 and np.isfinite(cfg_scale)):
        raise ValueError(f"{fn}: cfg_scale must be a finite number >= 0, got {cfg_scale}")
    top_k = c.top_k if top_k is None else check_int(top_k, fn, "top_k")
    if top_k < 1:
        raise ValueError(f"{fn}: top_k must be >= 1, got {top_k}")
    top_p = c.top_p if top_p is None else check_real(top_p, fn, "top_p")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"{fn}: top_p must be in (0, 1], got {top_p}")
    temperature = c.temperature if temperature is None else check_real(temperature, fn, "temperature")
    if not (temperature > 0.0 and np.isfinite(temperature)):
        raise ValueError(f"{fn}: temperature must be a positive finite number, got {temperature}")
    return cfg_scale, min(top_k, k), top_p, temperature, flag(do_sample, fn, "do_sample")


def _visual(model, fn, prompts, num_positions, start_id, cfg_scale, top_k, top_p, temperature, generator,
            do_sample, trace):
    """The shared loop -> codes (B, num_positions, D) int64."""
    c = model.config
    model._need_tower(fn)
    if trace is not None and not isinstance(trace, list):
        raise TypeError(f"{fn}: trace must be a list (it receives one dict per visual position) or None, got "
                        f"{type(trace).__name__}")
    cfg_scale, top_k, top_p, temperature, do_sample = _sampling(model, fn, cfg_scale, top_k, top_p, temperature,
                                                                do_sample)
    texts = text_rows(prompts, fn, "prompts", c)
    b = len(texts)
    guided = cfg_scale != 1.0  # s = 1: u + (c - u) = c, the unconditional rows are not needed
    rows_text = texts + [[] for _ in range(b)] if guided else texts
    seqs = [[c.sot_token_id] + t + [c.eot_token_id, start_id] for t in rows_text]
    width = max(len(s) for s in seqs)
    if width + num_positions - 1 > c.max_seq_len:
        raise ValueError(f"{fn}: a prompt of {width} positions and {num_positions} visual positions exceed "
                         f"config.max_seq_len {c.max_seq_len}")
    rows = len(seqs)
    ids = np.full((rows, width), c.eot_token_id, np.int64)
    mask = np.zeros((rows, width + num_positions - 1), bool)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = True
    mask[:, width:] = True
    positions = np.maximum(np.cumsum(mask[:, :width], 1) - 1, 0)
    next_pos = positions[:, -1:] + 1
    _, depth, _, _ = c.tower_geometry()
    out = np.zeros((b, num_positions, depth), np.int64)
    model_was_training = model.training
    model.eval()
    try:
        with no_grad():
            cache = model.new_cache(rows, width + num_positions - 1)
            hidden = model(ids, attention_mask=mask[:, :width], position_ids=positions, cache=cache)
            h = hidden[:, width - 1]  # (rows, dim): the state at [SOI] / [SOV]
            depth_cache = model.depth.new_cache(rows)
            for j in range(num_positions):
                record = {"hidden": h.numpy().copy(), "logits": []} if trace is not None else None
                depth_cache.reset()

                def depth_fn(hid, given, record=record):
                    # D short steps on the depth transformer's cache: depth d feeds only its own input
                    d = given.shape[-1]
                    if d == 0:
                        logits = model.depth.step(depth_cache, hidden=hid)
                    else:
                        sums = _cumsum(model.code_embeddings(given), 1)[:, d - 1]
                        logits = model.depth.step(depth_cache, code_sum=sums)
                    if record is not None:
                        record["logits"].append(logits.numpy().copy())
                    return logits

                codes = rvq_depth_decode(depth_fn, h, depth, temperature=temperature, top_k=top_k, top_p=top_p,
                                         do_sample=do_sample, guidance_scale=cfg_scale if guided else None,
                                         generator=generator).numpy()
                out[:, j] = codes
                if record is not None:
                    record["codes"] = codes.copy()
                    trace.append(record)
                if j == num_positions - 1:
                    break
                feed = np.concatenate([codes, codes]) if guided else codes
                x = model.visual_embeddings(feed).reshape(rows, 1, c.dim)
                h = model.lm(inputs_embeds=x, attention_mask=mask[:, :width + j + 1], position_ids=next_pos,
                             cache=cache, logits_at=None).reshape(rows, c.dim)
                next_pos = next_pos + 1
    finally:
        model.train(model_was_training)
    return out


def generate_images(model, prompts, cfg_scale=None, top_k=None, top_p=None, temperature=None, generator=None,
                    do_sample=True, trace=None):
    """Text -> image codes (B, h, w, D) int64 in [0, codebook_size) (decode them with model.decode).

    prompts: B texts as text ids (a list of id sequences or a 2-D array padded with -1; [SOT] / [EOT] are
    added). cfg_scale s (None: config.cfg_scale, 3.0): each depth's logits are u + s (c - u), u from the
    empty prompt run alongside as B more rows (s = 1 runs only the B conditional rows). top_k (None:
    config.top_k 900, capped at the codebook size), top_p (config.top_p 0.96), temperature (config 1.0):
    mmu.generate.sample_logits' filters; do_sample=False takes the argmax. generator: an mmu.Generator (or
    None: the global stream). trace: a list that receives one dict per visual position {"hidden": the LLM's
    state (rows, dim) the codes are predicted from, "logits": D arrays (rows, K) of the unguided depth
    logits, "codes": (B, D)} (for tests and inspection).
    The LLM runs the prompt once, then one position per step on its KV cache; the depth transformer takes
    D short steps per position (module docstring)."""
    fn = "VILAU.generate_images"
    c = model.config
    _, d, _, (h, w) = c.tower_geometry()
    codes = _visual(model, fn, prompts, h * w, c.soi_token_id, cfg_scale, top_k, top_p, temperature, generator,
                    do_sample, trace)
    return codes.reshape(len(codes), h, w, d)


def generate_video(model, prompts, num_frames, cfg_scale=None, top_k=None, top_p=None, temperature=None,
                   generator=None, do_sample=True, trace=None):
    """Text -> video codes (B, T, h, w, D) int64: one sequence [SOT] prompt [EOT] [SOV] v_1 .. v_{T h w}, the
    frames' tokens concatenated (VILA-U's generate_video_content, 8 frames there). num_frames T >= 1; the
    other arguments as generate_images."""
    fn = "VILAU.generate_video"
    num_frames = check_int(num_frames, fn, "num_frames")
    if num_frames < 1:
        raise ValueError(f"{fn}: num_frames must be >= 1, got {num_frames}")
    c = model.config
    _, d, _, (h, w) = c.tower_geometry()
    codes = _visual(model, fn, prompts, num_frames * h * w, c.sov_token_id, cfg_scale, top_k, top_p, temperature,
                    generator, do_sample, trace)
    return codes.reshape(len(codes), num_frames, h, w, d)


def answer(model, codes, question_ids=None, max_new_tokens=32, eos_token_id=None, do_sample=False,
           temperature=1.0, top_k=None, top_p=None, generator=None, trace=None):
    """Image -> text on the KV cache: rows [SOI] v_1 .. v_N [EOI] [SOT] question (the training sequence of
    image -> text, left padded), run once, then one token per step -> int64 (B, n), n <= max_new_tokens new
    ids; a row that emitted eos_token_id (None: config.eot_token_id) is finished and continues with it;
    generation stops when every row is. question_ids: B questions (text ids) or None (captioning).
    do_sample=False: greedy; else mmu.generate.sample_logits with temperature, top_k, top_p, generator.
    trace: a list that receives the (B, vocab_size) logits of every step."""
    fn = "VILAU.answer"
    c = model.config
    model._need_tower(fn)
    codes = model._codes(codes, fn, "codes")
    b, n, d = codes.shape
    questions = text_rows(question_ids, fn, "question_ids", c, batch=b) if question_ids is not None \
        else [[] for _ in range(b)]
    max_new_tokens = check_int(max_new_tokens, fn, "max_new_tokens")
    if max_new_tokens < 1:
        raise ValueError(f"{fn}: max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = c.eot_token_id if eos_token_id is None else check_int(eos_token_id, fn, "eos_token_id")
    if not 0 <= eos < c.vocab_size:
        raise ValueError(f"{fn}: eos_token_id must be in [0, vocab_size={c.vocab_size}), got {eos}")
    do_sample = flag(do_sample, fn, "do_sample")
    if trace is not None and not isinstance(trace, list):
        raise TypeError(f"{fn}: trace must be a list or None, got {type(trace).__name__}")
    width = n + 3 + max(len(q) for q in questions)
    if width + max_new_tokens - 1 > c.max_seq_len:
        raise ValueError(f"{fn}: {width} prompt positions and {max_new_tokens} new tokens exceed config.max_seq_len "
                         f"{c.max_seq_len}")
    ids = np.full((b, width), c.eot_token_id, np.int64)
    full = np.full((b, width, d), -1, np.int64)
    mask = np.zeros((b, width + max_new_tokens - 1), bool)
    for i, q in enumerate(questions):
        s = width - (n + 3 + len(q))
        ids[i, s] = c.soi_token_id
        ids[i, s + 1:s + 1 + n] = -1
        full[i, s + 1:s + 1 + n] = codes[i]
        ids[i, s + n + 1:s + n + 3] = (c.eoi_token_id, c.sot_token_id)
        ids[i, s + n + 3:width] = q
        mask[i, s:] = True
    positions = np.maximum(np.cumsum(mask[:, :width], 1) - 1, 0)
    next_pos = positions[:, -1:] + 1
    finished = np.zeros(b, bool)
    new = []
    model_was_training = model.training
    model.eval()
    try:
        with no_grad():
            cache = model.new_cache(b, width + max_new_tokens - 1)
            hidden = model(ids, full, attention_mask=mask[:, :width], position_ids=positions, cache=cache)
            logits = model.lm.head(hidden[:, width - 1])
            for step in range(max_new_tokens):
                if trace is not None:
                    trace.append(logits.numpy().copy())
                tok, _ = sample_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                       generator=generator, greedy=not do_sample)
                tok = tok.numpy().copy()
                tok[finished] = eos
                finished |= tok == eos
                new.append(tok)
                if finished.all() or step == max_new_tokens - 1:
                    break
                logits = model.lm(_tensor(tok[:, None]), attention_mask=mask[:, :width + step + 1],
                                  position_ids=next_pos, cache=cache, logits_at="last")
                next_pos = next_pos + 1
    finally:
        model.train(model_was_training)
    return np.stack(new, 1)
