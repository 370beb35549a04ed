"""Show-o's unified prompting and omni-attention, in NumPy.

The sequences are exactly those of Show-o's training/prompting_utils.py (UniversalPrompting), with the
ids of a ShowOConfig (config.py: text ids, then [PAD], <|soi|>, <|eoi|>, ..., then the image codes,
[MASK] last):

    T2I   [PAD]... [T2I] [SOT] text [EOT] [SOI] image [EOI]        t2i_prompt (left padded, as Show-o)
    MMU   [MMU] [SOI] image [EOI] [SOT] text [EOT] [PAD]...        mmu_prompt (right padded)
    LM    [SOT] text [EOT] [PAD]...                                lm_prompt
    inpainting / extrapolation: a T2I prompt whose image part keeps the given codes and holds [MASK]
          elsewhere                                                inpainting_prompt, extrapolation_prompt
    mixed [SOT] text [EOT] [SOI] image [EOI] [SOT] text [EOT] ...  mixed_prompt (right padded)

A text gets [SOT] in front unless it starts with it (Show-o: `text_ids[i] = [bos] + text_ids[i]`), an
empty text is [SOT] alone; a text longer than its room is cut and closed with [EOT] (T2I, MMU) or just
cut (LM), as Show-o does. Labels use -100 for "no target"; they are Show-o's own label rows (the
losses in model.py say which positions count).

Masks (B, 1, L, L) bool, True = may attend, broadcast over the heads (mmu's attention reads them in
place and skips the blocks that are fully hidden):
    omni_attention_mask  text rows causal; a row inside an image segment ([SOI] .. [EOI]) sees every
                         earlier position and its whole segment; no row sees a [PAD]; a [PAD] row sees
                         only itself. On every non-pad row of a T2I or LM sequence this is Show-o's
                         create_attention_mask_predict_next(rm_pad_in_image=True); there a pad row sees
                         the pads before it instead (its output is never a target).
    mmu_attention_mask   Show-o's create_attention_mask_for_mmu: causal, and every row sees the whole
                         prefix up to the first [EOI] (so [MMU] sees the image too); [PAD] as above.
"""
import numpy as np

from ..._args import is_int
from .._batch import id_rows
from .config import ShowOConfig

__all__ = ["IGNORE_INDEX", "t2i_prompt", "mmu_prompt", "lm_prompt", "inpainting_prompt", "extrapolation_prompt",
           "mixed_prompt", "image_token_ids", "omni_attention_mask", "mmu_attention_mask", "text_rows"]

IGNORE_INDEX = -100


def _cfg(config, fn):
    if not isinstance(config, ShowOConfig):
        raise TypeError(f"{fn}: config must be a ShowOConfig, got {type(config).__name__}")
    return config


def text_rows(text_ids, fn, name="text_ids", batch=None):
    """Texts -> a list of lists of int: a list of sequences (lists / 1-D arrays) or a 2-D int array
    whose negative entries are padding (dropped)."""
    return id_rows(text_ids, fn, name, batch)


def _check_text(rows, config, fn, name):
    for i, r in enumerate(rows):
        for v in r:
            if not 0 <= v < config.llm_vocab_size:
                raise ValueError(f"{fn}: {name}[{i}] holds id {v}, outside the text ids [0, "
                                 f"llm_vocab_size={config.llm_vocab_size})")


def _with_sot(row, config):
    # UniversalPrompting: [] -> [bos]; a text not starting with bos gets it in front
    if not row:
        return [config.sot_token_id]
    if row[0] != config.sot_token_id:
        return [config.sot_token_id] + row
    return list(row)


def _ids2d(v, fn, name, config, allow_mask=True, width=None):
    if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
        v = v.numpy()
    a = np.asarray(v)
    if a.dtype.kind not in "iu" or a.ndim != 2:
        raise ValueError(f"{fn}: {name} must be (B, num_vq_tokens) integer ids, got {a.dtype} {a.shape}")
    if width is not None and a.shape[1] != width:
        raise ValueError(f"{fn}: {name} must have num_vq_tokens={width} columns, got shape {a.shape}")
    a = a.astype(np.int64)
    lo, hi = config.image_token_offset, config.image_token_offset + config.codebook_size
    ok = (a >= lo) & (a < hi)
    if allow_mask:
        ok |= a == config.mask_token_id
    if not ok.all():
        bad = int(a[~ok][0])
        raise ValueError(f"{fn}: {name} holds id {bad}; image ids are [{lo}, {hi}) (image_token_ids(codes))"
                         + (f" or [MASK] {config.mask_token_id}" if allow_mask else ""))
    return a


def image_token_ids(config, codes, known=None):
    """Image codes (B, ...) in [0, codebook_size) -> vocabulary ids (B, N) (code + image_token_offset,
    Show-o's `vq_model.get_code(x) + len(uni_prompting.text_tokenizer)`), flattened row-major; where
    `known` (same shape, bool) is False the id is [MASK]."""
    fn = "image_token_ids"
    _cfg(config, fn)
    if hasattr(codes, "numpy") and not isinstance(codes, np.ndarray):
        codes = codes.numpy()
    c = np.asarray(codes)
    if c.dtype.kind not in "iu" or c.ndim < 2:
        raise ValueError(f"{fn}: codes must be integer (B, ...) codes, got {c.dtype} {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= config.codebook_size):
        raise ValueError(f"{fn}: codes must lie in [0, codebook_size={config.codebook_size}), got range "
                         f"[{c.min()}, {c.max()}]")
    ids = c.astype(np.int64) + config.image_token_offset
    if known is not None:
        k = np.asarray(known.numpy() if hasattr(known, "numpy") and not isinstance(known, np.ndarray) else known)
        if k.dtype != np.bool_ or k.shape != c.shape:
            raise ValueError(f"{fn}: known must be bool with the shape of codes {c.shape}, got {k.dtype} {k.shape}")
        ids = np.where(k, ids, config.mask_token_id)
    return ids.reshape(len(c), -1)


def t2i_prompt(config, text_ids, image_ids, image_labels=None, drop_condition=None):
    """Text-to-image sequences, Show-o's t2i_prompt / t2i_gen_prompt -> (input_ids (B, L), labels (B, L)
    or None), L = max_text_len + 1 + num_vq_tokens + 2:

        [PAD]... [T2I] [SOT] text [EOT] [SOI] image [EOI]

    text_ids: B texts (text ids, see text_rows); image_ids (B, num_vq_tokens): vocabulary ids of the
    image (image_token_ids; [MASK] where hidden). image_labels (B, num_vq_tokens) or None: the targets
    of the image positions (the true ids where masked, -100 elsewhere); the labels row is then Show-o's:
    the prompt ids with [PAD] -> -100, [SOI], image_labels, [EOI]. drop_condition (B,) bool: those rows
    get the empty prompt [T2I] [SOT] [EOT] (classifier-free guidance's condition dropout)."""
    fn = "t2i_prompt"
    _cfg(config, fn)
    image_ids = _ids2d(image_ids, fn, "image_ids", config, width=config.num_vq_tokens)
    b = len(image_ids)
    rows = text_rows(text_ids, fn, batch=b)
    _check_text(rows, config, fn, "text_ids")
    if drop_condition is not None:
        drop_condition = np.asarray(drop_condition)
        if drop_condition.dtype != np.bool_ or drop_condition.shape != (b,):
            raise ValueError(f"{fn}: drop_condition must be bool ({b},), got {drop_condition.dtype} "
                             f"{drop_condition.shape}")
    if image_labels is not None:
        if hasattr(image_labels, "numpy") and not isinstance(image_labels, np.ndarray):
            image_labels = image_labels.numpy()
        image_labels = np.asarray(image_labels)
        if image_labels.dtype.kind not in "iu" or image_labels.shape != image_ids.shape:
            raise ValueError(f"{fn}: image_labels must be integer {image_ids.shape}, got {image_labels.dtype} "
                             f"{image_labels.shape}")
        lo, hi = config.image_token_offset, config.image_token_offset + config.codebook_size
        ok = (image_labels == IGNORE_INDEX) | ((image_labels >= lo) & (image_labels < hi))
        if not ok.all():
            raise ValueError(f"{fn}: image_labels must be image ids [{lo}, {hi}) or -100, got {int(image_labels[~ok][0])}")
    t2i, pad, eot = config.special_token_id("<|t2i|>"), config.pad_token_id, config.eot_token_id
    room = config.max_text_len + 1  # UniversalPrompting.max_text_len = max_seq_length + 1 (the task token)
    prompts = np.empty((b, room), np.int64)
    for i, r in enumerate(rows):
        temp = [t2i] + _with_sot(r, config) + [eot]
        if drop_condition is not None and drop_condition[i]:
            temp = [t2i, config.sot_token_id, eot]
        if len(temp) <= room:
            temp = [pad] * (room - len(temp)) + temp
        else:
            temp = temp[:room - 1] + [eot]
        prompts[i] = temp
    soi = np.full((b, 1), config.special_token_id("<|soi|>"), np.int64)
    eoi = np.full((b, 1), config.special_token_id("<|eoi|>"), np.int64)
    input_ids = np.concatenate([prompts, soi, image_ids, eoi], axis=1)
    if image_labels is None:
        return input_ids, None
    labels = np.concatenate([prompts, soi, image_labels.astype(np.int64), eoi], axis=1)
    labels[labels == pad] = IGNORE_INDEX
    return input_ids, labels


def mmu_prompt(config, image_ids, text_ids, answer_ids=None):
    """Multimodal-understanding sequences, Show-o's mmu_prompt -> (input_ids (B, L), labels (B, L)),
    L = 3 + num_vq_tokens + max_text_len:

        [MMU] [SOI] image [EOI] [SOT] text [EOT] [PAD]...

    image_ids (B, num_vq_tokens): image vocabulary ids (no [MASK]). text_ids: B texts. Without
    answer_ids (captioning, Show-o's mmu_prompt) the labels are -100 over [MMU] [SOI] image [EOI] and the
    text ids [SOT] text [EOT] after (pads -100): every text token is a target. With answer_ids (B
    answers) the text is question + answer and only the answer's ids and the closing [EOT] are
    targets (Show-o's instruction data, where LLaVA-style labels hide the question)."""
    fn = "mmu_prompt"
    _cfg(config, fn)
    image_ids = _ids2d(image_ids, fn, "image_ids", config, allow_mask=False, width=config.num_vq_tokens)
    b = len(image_ids)
    rows = text_rows(text_ids, fn, batch=b)
    _check_text(rows, config, fn, "text_ids")
    answers = None
    if answer_ids is not None:
        answers = text_rows(answer_ids, fn, "answer_ids", batch=b)
        _check_text(answers, config, fn, "answer_ids")
    pad, eot, room = config.pad_token_id, config.eot_token_id, config.max_text_len
    texts = np.empty((b, room), np.int64)
    targets = np.empty((b, room), np.int64)
    for i, r in enumerate(rows):
        temp = _with_sot(r, config) + (answers[i] if answers is not None else []) + [eot]
        target = list(temp)
        if answers is not None:  # only the answer and its [EOT] are targets
            n_question = len(temp) - len(answers[i]) - 1
            target = [IGNORE_INDEX] * n_question + temp[n_question:]
        if len(temp) <= room:
            fill = room - len(temp)
            temp, target = temp + [pad] * fill, target + [IGNORE_INDEX] * fill
        else:
            temp = temp[:room - 1] + [eot]
            target = target[:room - 1] + [eot]
        texts[i], targets[i] = temp, target
    head = np.array([config.special_token_id("<|mmu|>"), config.special_token_id("<|soi|>")], np.int64)
    eoi = np.full((b, 1), config.special_token_id("<|eoi|>"), np.int64)
    input_ids = np.concatenate([np.broadcast_to(head, (b, 2)), image_ids, eoi, texts], axis=1)
    labels = np.concatenate([np.full((b, 3 + config.num_vq_tokens), IGNORE_INDEX, np.int64), targets], axis=1)
    labels[labels == pad] = IGNORE_INDEX
    return input_ids, labels


def lm_prompt(config, text_ids, max_len=None):
    """Language-modelling sequences, Show-o's lm_prompt -> (input_ids (B, L), labels (B, L)):
    [SOT] text [EOT] [PAD]..., labels the ids with -100 on the pads. A text longer than max_len is cut
    to max_len ids without [EOT] (as Show-o). max_len: Show-o's max_seq_len (it passes the T2I length);
    None is the longest row, at most config.max_seq_len (right padding does not change the real
    tokens' results, so a shorter L is the same computation)."""
    fn = "lm_prompt"
    _cfg(config, fn)
    rows = text_rows(text_ids, fn)
    if not rows:
        raise ValueError(f"{fn}: text_ids is empty")
    _check_text(rows, config, fn, "text_ids")
    seqs = [_with_sot(r, config) + [config.eot_token_id] for r in rows]
    if max_len is None:
        max_len = min(max(len(s) for s in seqs), config.max_seq_len)
    elif not is_int(max_len) or max_len < 2:
        raise ValueError(f"{fn}: max_len must be None or an int >= 2, got {max_len!r}")
    input_ids = np.full((len(seqs), max_len), config.pad_token_id, np.int64)
    labels = np.full((len(seqs), max_len), IGNORE_INDEX, np.int64)
    for i, s in enumerate(seqs):
        s = s[:max_len]
        input_ids[i, :len(s)] = s
        labels[i, :len(s)] = s
    return input_ids, labels


def inpainting_prompt(config, text_ids, codes, known, drop_condition=None):
    """Inpainting: a T2I prompt whose image part keeps the codes where `known` is True and is [MASK]
    elsewhere (Show-o's inference_t2i.py inpainting mode) -> (input_ids (B, L), labels (B, L)), the
    labels holding the true ids of the hidden positions (so the same prompt trains or checks the
    prediction of the hidden region). codes (B, h, w) or (B, N) in [0, codebook_size); known: bool,
    same shape."""
    fn = "inpainting_prompt"
    _cfg(config, fn)
    ids = image_token_ids(config, codes)
    hidden_ids = image_token_ids(config, codes, known)
    labels = np.where(hidden_ids == config.mask_token_id, ids, IGNORE_INDEX)
    return t2i_prompt(config, text_ids, hidden_ids, labels, drop_condition)


def extrapolation_prompt(config, text_ids, codes, direction, keep):
    """Extrapolation (Show-o's inference_t2i.py extrapolation mode): the codes grid (B, h, w) shifted so
    that its `keep` columns (rows) next to `direction` stay and the new side is [MASK] -> (input_ids
    (B, L), image_ids (B, h w)). direction 'left': [MASK] (w - keep columns) then codes[:, :, :keep];
    'right': codes[:, :, -keep:] then [MASK]; 'up' / 'down': the same with rows. Show-o's keep is
    W // 2 - offset."""
    fn = "extrapolation_prompt"
    _cfg(config, fn)
    if hasattr(codes, "numpy") and not isinstance(codes, np.ndarray):
        codes = codes.numpy()
    c = np.asarray(codes)
    if c.ndim != 3:
        raise ValueError(f"{fn}: codes must be a grid (B, h, w), got shape {c.shape}")
    if direction not in ("left", "right", "up", "down"):
        raise ValueError(f"{fn}: direction must be 'left', 'right', 'up' or 'down', got {direction!r}")
    size = c.shape[2] if direction in ("left", "right") else c.shape[1]
    if not is_int(keep) or not 1 <= keep < size:
        raise ValueError(f"{fn}: keep must be an int in [1, {size}) (the kept columns / rows), got {keep!r}")
    ids = image_token_ids(config, c).reshape(c.shape)
    axis = 2 if direction in ("left", "right") else 1
    shape = list(c.shape)
    shape[axis] = size - keep
    new = np.full(shape, config.mask_token_id, np.int64)
    if direction == "left":
        grid = np.concatenate([new, ids[:, :, :keep]], axis=2)
    elif direction == "right":
        grid = np.concatenate([ids[:, :, -keep:], new], axis=2)
    elif direction == "up":
        grid = np.concatenate([new, ids[:, :keep, :]], axis=1)
    else:
        grid = np.concatenate([ids[:, -keep:, :], new], axis=1)
    image_ids = grid.reshape(len(c), -1)
    return t2i_prompt(config, text_ids, image_ids)[0], image_ids


def mixed_prompt(config, rows, max_len=None):
    """Mixed-modality sequences (texts and images interleaved) -> (input_ids (B, L), labels (B, L)).
    rows: B lists of segments ('text', text ids) -> [SOT] text [EOT] and ('image', image ids (N,)) ->
    [SOI] image [EOI]; right padded with [PAD] to max_len (None: the longest row). Labels: the ids of
    the text segments ([SOT] .. [EOT], next-token targets), -100 on images and pads. Use with
    omni_attention_mask: each text attends causally to everything before it, each image to everything
    before it and to itself."""
    fn = "mixed_prompt"
    _cfg(config, fn)
    if not isinstance(rows, (list, tuple)) or not rows:
        raise TypeError(f"{fn}: rows must be a non-empty list of segment lists")
    soi, eoi = config.special_token_id("<|soi|>"), config.special_token_id("<|eoi|>")
    seqs, targets = [], []
    for i, segs in enumerate(rows):
        if not isinstance(segs, (list, tuple)) or not segs:
            raise ValueError(f"{fn}: rows[{i}] must be a non-empty list of ('text' | 'image', ids) segments")
        s, t = [], []
        for j, seg in enumerate(segs):
            if not isinstance(seg, (list, tuple)) or len(seg) != 2 or seg[0] not in ("text", "image"):
                raise ValueError(f"{fn}: rows[{i}][{j}] must be ('text', ids) or ('image', ids)")
            if seg[0] == "text":
                r = text_rows([seg[1]], fn, f"rows[{i}][{j}]")[0]
                _check_text([r], config, fn, f"rows[{i}][{j}]")
                r = _with_sot(r, config) + [config.eot_token_id]
                s += r
                t += r
            else:
                img = _ids2d(np.asarray(seg[1]).reshape(1, -1), fn, f"rows[{i}][{j}]", config)[0].tolist()
                s += [soi] + img + [eoi]
                t += [IGNORE_INDEX] * (len(img) + 2)
        seqs.append(s)
        targets.append(t)
    longest = max(len(s) for s in seqs)
    if max_len is None:
        max_len = longest
    elif not is_int(max_len) or max_len < longest:
        raise ValueError(f"{fn}: max_len must be None or an int >= the longest row ({longest}), got {max_len!r}")
    input_ids = np.full((len(seqs), max_len), config.pad_token_id, np.int64)
    labels = np.full((len(seqs), max_len), IGNORE_INDEX, np.int64)
    for i, (s, t) in enumerate(zip(seqs, targets)):
        input_ids[i, :len(s)], labels[i, :len(t)] = s, t
    return input_ids, labels


def _seq(config, input_ids, fn):
    _cfg(config, fn)
    if hasattr(input_ids, "numpy") and not isinstance(input_ids, np.ndarray):
        input_ids = input_ids.numpy()
    a = np.asarray(input_ids)
    if a.dtype.kind not in "iu" or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{fn}: input_ids must be (B, L) integer ids with L >= 1, got {a.dtype} {a.shape}")
    return a


def _finish(allowed, pad):
    # no row sees a pad; a pad row sees only itself (a row with nothing to attend to would be 0/0)
    allowed &= ~pad[:, None, :]
    allowed &= ~pad[:, :, None]
    b, l = pad.shape
    bi, li = np.nonzero(pad)
    allowed[bi, li, li] = True
    return allowed.reshape(b, 1, l, l)


def omni_attention_mask(config, input_ids):
    """Show-o's omni-attention for sequences input_ids (B, L) -> (B, 1, L, L) bool (True = attend).

    A position is in an image segment from an <|soi|> through the next <|eoi|> (both included; an
    unclosed segment runs to the end), as create_attention_mask_predict_next counts them. Row i (a
    query) sees column j (a key) iff j is not [PAD] and (j <= i, or i and j are in the same image
    segment): text causal, image tokens bidirectional within their image and seeing everything before
    it. A [PAD] row sees only itself. See the module docstring for how this matches Show-o."""
    fn = "omni_attention_mask"
    ids = _seq(config, input_ids, fn)
    b, l = ids.shape
    soi = ids == config.special_token_id("<|soi|>")
    eoi = ids == config.special_token_id("<|eoi|>")
    start, end = np.cumsum(soi, 1), np.cumsum(eoi, 1)
    inside = (start > end) | soi | eoi
    seg = np.where(inside, start, 0)  # the image segment's number (1, 2, ...), 0 for text
    causal = np.tril(np.ones((l, l), bool))
    same = (seg[:, :, None] == seg[:, None, :]) & inside[:, :, None]
    return _finish(causal[None] | same, ids == config.pad_token_id)


def mmu_attention_mask(config, input_ids):
    """Show-o's create_attention_mask_for_mmu for MMU sequences input_ids (B, L) -> (B, 1, L, L) bool:
    causal, and every row sees the positions up to its row's first <|eoi|> (so [MMU], [SOI] and the
    image see the whole image). No row sees a [PAD]; a [PAD] row sees only itself (Show-o: the pad rows
    after the text see everything before them). A row without <|eoi|> is causal."""
    fn = "mmu_attention_mask"
    ids = _seq(config, input_ids, fn)
    b, l = ids.shape
    eoi = ids == config.special_token_id("<|eoi|>")
    first = np.where(eoi.any(1), eoi.argmax(1), -1)  # -1: nothing beyond causal
    prefix = np.arange(l)[None, None, :] <= first[:, None, None]
    causal = np.tril(np.ones((l, l), bool))
    return _finish(causal[None] | prefix, ids == config.pad_token_id)
