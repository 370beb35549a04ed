"""ShowO: one transformer over text and image tokens (Show-o, Xie et al., ICLR 2025): a Phi-style
mmu.nn.TransformerLM with QK LayerNorm over the unified vocabulary, its omni-attention masks, the
three training losses driven by mmu.train.Trainer, and its frozen image tokenizer."""
import math

import numpy as np

from ...autograd import no_grad
from ...functional import cross_entropy
from ...losses import masked_token_loss, next_token_loss
from ...text.tokenizer import SavesTextTokenizer
from ...nn import Module, TransformerLM
from ...nn.module import _class_path, _encode, _NotSerialisable
from ...tensor import rand as _rand
from ...tensor import tensor as _tensor
from ..._args import check_int
from .._batch import task_parts
from .config import ShowOConfig
from .prompting import (IGNORE_INDEX, image_token_ids, lm_prompt, mmu_attention_mask, mmu_prompt,
                        omni_attention_mask, t2i_prompt, text_rows)

__all__ = ["ShowO", "cosine_mask_ratio"]

TASKS = ("t2i", "lm", "mmu")
# the keys of each part of a training batch (model.training_step)
_PART_KEYS = {"t2i": ("text_ids", "codes", "images"), "lm": ("text_ids",),
              "mmu": ("codes", "images", "text_ids", "question_ids", "answer_ids")}


def cosine_mask_ratio(t):
    """MaskGIT's / Show-o's cosine schedule: the fraction of image tokens masked at time t in [0, 1],
    cos(pi t / 2) (models/sampling.py, cosine_schedule)."""
    return np.cos(np.asarray(t, np.float64) * math.pi * 0.5)


def _loss_positions(want, offset):
    """want (B, N) bool: the columns a loss reads -> (offset + positions (B, n) int64, counted (B, n) bool).
    Row b lists its wanted columns in order, then repeats its first one (or column 0 if it has none),
    not counted, up to n: the most any row has, rounded up to a multiple of 32 (at most N), so that a
    training run meets a handful of shapes (oneDNN makes a primitive once per shape; a new one costs
    milliseconds)."""
    count = want.sum(1)
    n = min(want.shape[1], -(-max(1, int(count.max())) // 32) * 32)
    order = np.argsort(~want, axis=1, kind="stable")[:, :n]  # each row's wanted columns first, in order
    counted = np.arange(n)[None, :] < count[:, None]
    positions = offset + np.where(counted, order, order[:, :1])
    return np.ascontiguousarray(positions, np.int64), counted


def _resolve_config(config, fields_):
    if config is not None and fields_:
        raise TypeError("ShowO: give a config or keyword fields, not both")
    if config is None:
        return ShowOConfig.from_dict(fields_)
    if isinstance(config, ShowOConfig):
        return ShowOConfig.from_dict(config.to_dict())  # a private, re-validated copy
    if isinstance(config, dict):
        return ShowOConfig.from_dict(config)
    raise TypeError(f"ShowO: config must be a ShowOConfig or a dict, got {type(config).__name__}")


class ShowO(SavesTextTokenizer, Module):
    """Show-o: `ShowO(ShowOConfig(...))`, `ShowO(**fields)` or `ShowO(dict)`; `.config` is the validated
    ShowOConfig, `.lm` the mmu.nn.TransformerLM (Phi-1.5's layout with QK LayerNorm: parallel residual,
    partial RoPE, tanh GELU, lm_head with a bias; state_dict keys "lm.*") over config.vocab_size ids,
    and `.image_tokenizer` the frozen image tokenizer (keys "image_tokenizer.*"; built from
    config.image_tokenizer, or the module passed as image_tokenizer=, whose config is then recorded; a dict
    given as image_tokenizer= is the config field).

    text_tokenizer: an mmu.text.TextTokenizer (or None) for the text ids; its bos / eos must be
    config.sot_token_id / eot_token_id and its vocabulary fit llm_vocab_size. save_pretrained writes it
    beside the weights, from_pretrained reads it back.

    Every sequence runs with positions 0..L-1 (pads included, as Show-o's PhiModel with a 4-D mask) and
    an explicit (B, 1, L, L) bool mask: omni_attention_mask for T2I (and mixed) sequences,
    mmu_attention_mask for MMU ones, plain causal for LM text.

    Trainer protocol: training_step(batch, step) -> (t2i_coeff L_t2i + lm_coeff L_lm + mmu_coeff L_mmu,
    {"loss_t2i", "loss_lm", "loss_mmu", "mask_ratio"}); evaluate_step(batch) -> the same logs and
    "loss" (no graph). See training_step for the batch.
    """

    config_class = ShowOConfig
    # several tasks of one batch size train in one packed forward pass (_packed_losses); False: a pass each
    _pack_tasks = True

    def __init__(self, config=None, text_tokenizer=None, image_tokenizer=None, **fields_):
        super().__init__()
        if isinstance(image_tokenizer, dict):  # the config field (a tokenizer's get_config), not a module
            fields_["image_tokenizer"], image_tokenizer = image_tokenizer, None
        cfg = _resolve_config(config, fields_)
        from ...config import from_config, get_config
        if image_tokenizer is not None:
            if not isinstance(image_tokenizer, Module) or not hasattr(image_tokenizer, "latent_layout"):
                raise TypeError(f"ShowO: image_tokenizer must be an mmu tokenizer (mmu.tokenizers.Tokenizer), got "
                                f"{type(image_tokenizer).__name__}")
            cfg.image_tokenizer = get_config(image_tokenizer)
        object.__setattr__(self, "config", cfg)
        enc = _encode(cfg, "the ShowO config")
        # recorded as keyword fields: from_pretrained calls ShowO(**fields), which rebuilds the same config and
        # the image tokenizer from its nested config (its weights are in the state_dict); the text tokenizer
        # is saved as its own files
        self.__dict__["_config"] = enc if isinstance(enc, _NotSerialisable) else \
            {"class": _class_path(type(self)), "args": {"config": None, "text_tokenizer": None,
                                                         "image_tokenizer": None,
                                                         "**fields_": enc["__config__"]["fields"]}}
        self.lm = TransformerLM(**cfg.lm_kwargs())
        tok = image_tokenizer if image_tokenizer is not None else from_config(cfg.image_tokenizer)
        if not isinstance(tok, Module) or not hasattr(tok, "latent_layout"):
            raise TypeError(f"ShowO: config.image_tokenizer builds a {type(tok).__name__}, not an mmu tokenizer")
        if tok.codebook_size != cfg.codebook_size:
            raise ValueError(f"ShowO: the image tokenizer has {tok.codebook_size} codes, config.codebook_size is "
                             f"{cfg.codebook_size}")
        if tok.tokens_per_image != cfg.num_vq_tokens:
            raise ValueError(f"ShowO: the image tokenizer gives {tok.tokens_per_image} tokens per image, "
                             f"config.num_vq_tokens is {cfg.num_vq_tokens}")
        tok.requires_grad_(False)
        self.image_tokenizer = tok
        self.image_tokenizer.eval()
        self.text_tokenizer = text_tokenizer

    # ------------------------------------------------------------------ tokenizers
    @property
    def text_tokenizer(self):
        """The mmu.text.TextTokenizer of the text ids, or None."""
        return self.__dict__.get("_text_tokenizer")

    @text_tokenizer.setter
    def text_tokenizer(self, tok):
        if tok is not None:
            from ...text import TextTokenizer
            if not isinstance(tok, TextTokenizer):
                raise TypeError(f"ShowO: text_tokenizer must be an mmu.text.TextTokenizer or None, got "
                                f"{type(tok).__name__}")
            c = self.config
            if tok.vocab_size > c.llm_vocab_size:
                raise ValueError(f"ShowO: the text tokenizer's vocab_size {tok.vocab_size} exceeds config."
                                 f"llm_vocab_size {c.llm_vocab_size}")
            if tok.bos_id != c.sot_token_id or tok.eos_id != c.eot_token_id:
                raise ValueError(f"ShowO: the text tokenizer's bos / eos ids ({tok.bos_id}, {tok.eos_id}) must be "
                                 f"config.sot_token_id / eot_token_id ({c.sot_token_id}, {c.eot_token_id})")
        self.__dict__["_text_tokenizer"] = tok

    def train(self, mode=True):
        """Training mode for the transformer; the frozen image tokenizer stays in eval mode."""
        super().train(mode)
        tok = (self.__dict__.get("_modules") or {}).get("image_tokenizer")
        if tok is not None:
            tok.eval()
        return self

    def tokenize_images(self, images, batch_size=64):
        """Images (N, C, H, W) float32 in [-1, 1] -> image codes (N, num_vq_tokens) int64 in
        [0, codebook_size), row-major over the tokenizer's latent grid: the frozen image tokenizer's
        encode, batch_size images per pass (eval mode, no graph). Encode a dataset once and train on the
        codes (captioned_token_data)."""
        batch_size = check_int(batch_size, "ShowO.tokenize_images", "batch_size")
        codes = self.image_tokenizer.encode(images, batch_size=batch_size)
        return np.ascontiguousarray(codes.reshape(len(codes), -1), np.int64)

    def image_token_ids(self, codes, known=None):
        """Codes -> vocabulary ids (B, N) (+ image_token_offset; [MASK] where known is False)."""
        return image_token_ids(self.config, codes, known)

    def omni_attention_mask(self, input_ids):
        """omni_attention_mask(self.config, input_ids): (B, 1, L, L) bool."""
        return omni_attention_mask(self.config, input_ids)

    def mmu_attention_mask(self, input_ids):
        """mmu_attention_mask(self.config, input_ids): (B, 1, L, L) bool."""
        return mmu_attention_mask(self.config, input_ids)

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids=None, attn_mask=None, attention_mask=None, position_ids=None, cache=None,
                logits_at="all", inputs_embeds=None):
        """Logits of a chunk of tokens: mmu.nn.TransformerLM.forward (attn_mask: an explicit (B|1, 1, L,
        S_total) bool mask such as omni_attention_mask; None is causal). Positions default to
        cache.length .. cache.length + L - 1, pads included (Show-o's). A chunk may not reach past
        config.max_seq_len."""
        chunk = input_ids if input_ids is not None else inputs_embeds
        shape = np.shape(chunk.numpy() if hasattr(chunk, "numpy") and not isinstance(chunk, np.ndarray) else chunk)
        start = getattr(cache, "length", 0) if cache is not None else 0
        length = shape[1] if len(shape) >= 2 else 0
        if start + length > self.config.max_seq_len:
            raise ValueError(f"ShowO: positions up to {start + length} exceed config.max_seq_len "
                             f"{self.config.max_seq_len}")
        if attn_mask is not None and isinstance(attn_mask, np.ndarray):
            attn_mask = _tensor(np.ascontiguousarray(attn_mask))
        return self.lm(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                       logits_at=logits_at, inputs_embeds=inputs_embeds, attn_mask=attn_mask)

    def new_cache(self, batch_size, max_len):
        """An empty mmu.nn.KVCache for batch_size rows of up to max_len <= config.max_seq_len positions."""
        max_len = check_int(max_len, "ShowO.new_cache", "max_len")
        if max_len > self.config.max_seq_len:
            raise ValueError(f"ShowO.new_cache: max_len {max_len} exceeds config.max_seq_len "
                             f"{self.config.max_seq_len}")
        return self.lm.new_cache(batch_size, max_len)

    # ------------------------------------------------------------------ inference (inference.py)
    def t2i_generate(self, prompts, steps=18, guidance_scale=0.0, temperature=1.0, **kwargs):
        """Text-to-image codes (B, num_vq_tokens) by MaskGIT with classifier-free guidance over a cached
        text prefix: inference.t2i_generate(self, prompts, ...) (its docstring has every argument)."""
        from .inference import t2i_generate
        return t2i_generate(self, prompts, steps=steps, guidance_scale=guidance_scale, temperature=temperature,
                            **kwargs)

    def inpaint(self, prompts, codes, known, **kwargs):
        """The codes where known is False decoded from the prompts: inference.inpaint."""
        from .inference import inpaint
        return inpaint(self, prompts, codes, known, **kwargs)

    def extrapolate(self, prompts, codes, direction, amount, **kwargs):
        """The grid (B, h, w) extended by `amount` new columns / rows: inference.extrapolate."""
        from .inference import extrapolate
        return extrapolate(self, prompts, codes, direction, amount, **kwargs)

    def mmu_generate(self, questions, images=None, codes=None, max_new_tokens=100, **kwargs):
        """Answers (B, n) text ids to questions about images (B, C, H, W) in [-1, 1] (tokenised by the
        image tokenizer) or their codes (B, num_vq_tokens): inference.mmu_generate, on the KV cache."""
        from .inference import mmu_generate
        if (images is None) == (codes is None):
            raise ValueError("ShowO.mmu_generate: give images or codes (one of them)")
        if images is not None:
            codes = self.tokenize_images(images)
        return mmu_generate(self, codes, questions, max_new_tokens=max_new_tokens, **kwargs)

    # ------------------------------------------------------------------ training
    def mask_image_tokens(self, image_ids, generator=None):
        """Show-o's mask_or_random_replace_tokens (noise_type 'mask'): per row t ~ U(0, 1) from mmu's RNG
        (or generator), ratio = max(cos(pi t / 2), min_masking_rate), n = max(1, round(N ratio)) tokens
        masked at the positions of a random permutation's n smallest values -> (input image ids with
        [MASK], labels (true ids where masked, -100 elsewhere), ratio (B,) float64)."""
        fn = "ShowO.mask_image_tokens"
        a = np.asarray(image_ids.numpy() if hasattr(image_ids, "numpy") and not isinstance(image_ids, np.ndarray)
                       else image_ids)
        if a.ndim != 2 or a.dtype.kind not in "iu" or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{fn}: image_ids must be (B, N) integer ids with B, N >= 1, got {a.dtype} {a.shape}")
        b, n = a.shape
        t = _rand(b, generator=generator).numpy().astype(np.float64)
        ratio = np.maximum(cosine_mask_ratio(t), self.config.min_masking_rate)
        count = np.maximum(np.round(n * ratio), 1)
        rank = np.argsort(_rand(b, n, generator=generator).numpy(), axis=-1, kind="stable")
        mask = rank < count[:, None]
        ids = np.where(mask, self.config.mask_token_id, a).astype(np.int64)
        labels = np.where(mask, a, IGNORE_INDEX).astype(np.int64)
        return ids, labels, ratio

    def t2i_training_inputs(self, text_ids, image_ids, generator=None):
        """One T2I training batch as Show-o's prepare_inputs_and_labels builds it: mask_image_tokens, then
        per row u ~ U(0, 1) and the caption replaced by the empty prompt where u < cond_dropout_prob, then
        t2i_prompt -> (input_ids (B, L), labels (B, L), mask ratio (B,), dropped (B,) bool).
        text_ids: B captions (text ids); image_ids (B, num_vq_tokens): the true image vocabulary ids."""
        fn = "ShowO.t2i_training_inputs"
        image_ids = np.asarray(image_ids.numpy() if hasattr(image_ids, "numpy") and
                               not isinstance(image_ids, np.ndarray) else image_ids)
        if image_ids.ndim != 2 or image_ids.shape[1] != self.config.num_vq_tokens:
            raise ValueError(f"{fn}: image_ids must be (B, num_vq_tokens={self.config.num_vq_tokens}), got "
                             f"shape {image_ids.shape}")
        texts = text_rows(text_ids, fn, "text_ids", batch=len(image_ids))
        masked, labels, ratio = self.mask_image_tokens(image_ids, generator)
        # drawn after the masking, as Show-o's t2i_prompt draws its probs after mask_or_random_replace_tokens
        drop = _rand(len(image_ids), generator=generator).numpy() < self.config.cond_dropout_prob
        ids, labels = t2i_prompt(self.config, texts, masked, labels, drop_condition=drop)
        return ids, labels, ratio, drop

    def _codes(self, part, fn, name):
        c = self.config
        if "codes" in part:
            codes = part["codes"]
            codes = np.asarray(codes.numpy() if hasattr(codes, "numpy") and not isinstance(codes, np.ndarray)
                               else codes)
            if codes.dtype.kind not in "iu" or codes.ndim < 2 or int(np.prod(codes.shape[1:])) != c.num_vq_tokens:
                raise ValueError(f"{fn}: {name}['codes'] must be integer (B, num_vq_tokens={c.num_vq_tokens}) (or the "
                                 f"tokenizer's grid), got {codes.dtype} {codes.shape}")
            codes = codes.reshape(len(codes), -1)
        elif "images" in part:
            codes = self.tokenize_images(part["images"])
        else:
            raise KeyError(f"{fn}: {name} needs 'codes' (cached image codes) or 'images'")
        return image_token_ids(c, codes)

    def _parts(self, batch, fn):
        """A batch -> {task: part dict}, from {"t2i": {...}, ...} or flat {"t2i.codes": ..., ...}."""
        return task_parts(batch, _PART_KEYS, fn)

    def t2i_loss_positions(self, labels):
        """The positions whose logits the T2I loss reads: labels (B, L) of t2i_training_inputs ->
        (positions (B, n) int64 into the sequence, counted (B, n) bool). Row b lists its masked image
        tokens (image labels != -100) in order, then repeats its first masked position (not counted) up
        to n: the most any row has, rounded up to a multiple of 32 (at most num_vq_tokens), so that a
        training run meets a handful of shapes (oneDNN makes a primitive once per shape; a new one
        costs milliseconds). Only these rows of the logits are computed: the cross-entropy is over
        the masked tokens only, the logits of the others would be thrown away."""
        c = self.config
        labels = np.asarray(labels)
        start = c.max_text_len + 2  # the first image token, after [T2I] + text room and [SOI]
        if labels.ndim != 2 or labels.shape[1] != start + c.num_vq_tokens + 1 or labels.shape[0] == 0:
            raise ValueError(f"ShowO.t2i_loss_positions: labels must be (B >= 1, {start + c.num_vq_tokens + 1}), "
                             f"got {labels.shape}")
        return _loss_positions(labels[:, start:start + c.num_vq_tokens] != IGNORE_INDEX, start)

    def mmu_loss_positions(self, labels):
        """The positions whose logits the MMU loss reads: labels (B, L) of mmu_prompt -> (positions (B, n)
        int64, counted (B, n) bool): the positions t from [EOI] on whose next token labels[t + 1] is a
        target (the answer and its [EOT]; the question's positions predict nothing), in order, padded
        and rounded as t2i_loss_positions. The targets are labels[b, positions + 1] where counted."""
        c = self.config
        labels = np.asarray(labels)
        start = 2 + c.num_vq_tokens  # [EOI]: predicts the first text token
        if labels.ndim != 2 or labels.shape[1] <= start + 1 or labels.shape[0] == 0:
            raise ValueError(f"ShowO.mmu_loss_positions: labels must be (B >= 1, L > {start + 1}), got {labels.shape}")
        return _loss_positions(labels[:, start + 1:] != IGNORE_INDEX, start)

    def _t2i_inputs(self, part, fn):
        """The 't2i' part -> (ids (B, L), mask (B, 1, L, L), where (B, n), targets (B, n) with -100 where not
        counted, logs): the masked image tokens are the loss's rows (unshifted); labels are -100 elsewhere."""
        if "text_ids" not in part:
            raise KeyError(f"{fn}: the 't2i' part needs 'text_ids'")
        image_ids = self._codes(part, fn, "the 't2i' part")
        ids, labels, ratio, drop = self.t2i_training_inputs(part["text_ids"], image_ids)
        # logits at the masked image tokens only (labels are -100 everywhere else)
        where, counted = self.t2i_loss_positions(labels)
        targets = np.where(counted, np.take_along_axis(labels, where, 1), IGNORE_INDEX)
        return ids, self.omni_attention_mask(ids), where, targets, \
            {"mask_ratio": float(ratio.mean()), "cond_dropped": float(drop.mean())}

    def _lm_inputs(self, part, fn):
        """The 'lm' part -> (ids, None (causal), None (every position), labels (B, L), {}): next-token targets."""
        if "text_ids" not in part:
            raise KeyError(f"{fn}: the 'lm' part needs 'text_ids'")
        ids, labels = lm_prompt(self.config, text_rows(part["text_ids"], fn, "lm text_ids"))
        if (labels[:, 1:] == IGNORE_INDEX).all():
            raise ValueError(f"{fn}: the 'lm' part has no target")
        return ids, None, None, labels, {}

    def _mmu_inputs(self, part, fn):
        """The 'mmu' part -> (ids, mask, where, targets (the next token's label at where, -100 where not
        counted), {})."""
        c = self.config
        image_ids = self._codes(part, fn, "the 'mmu' part")
        b = len(image_ids)
        if "question_ids" in part or "answer_ids" in part:
            if "text_ids" in part or "question_ids" not in part or "answer_ids" not in part:
                raise KeyError(f"{fn}: the 'mmu' part has 'text_ids' (captioning) or 'question_ids' and "
                               "'answer_ids' (answer tokens are the targets)")
            ids, labels = mmu_prompt(c, image_ids, text_rows(part["question_ids"], fn, "question_ids", batch=b),
                                     text_rows(part["answer_ids"], fn, "answer_ids", batch=b))
        elif "text_ids" in part:
            ids, labels = mmu_prompt(c, image_ids, text_rows(part["text_ids"], fn, "mmu text_ids", batch=b))
        else:
            raise KeyError(f"{fn}: the 'mmu' part needs 'text_ids' or 'question_ids' + 'answer_ids'")
        # logits only where a next text token is a target (from [EOI] on: the answer's and [EOT]'s predecessors)
        where, counted = self.mmu_loss_positions(labels)
        targets = np.where(counted, np.take_along_axis(labels, where + 1, 1), IGNORE_INDEX)
        return ids, self.mmu_attention_mask(ids), where, targets, {}

    def _task_loss(self, task, inputs):
        """One task's loss from its own forward pass."""
        ids, mask, where, targets, _ = inputs
        if task == "lm":  # right padding: causal attention never reads the pads after a real token
            return next_token_loss(self(_tensor(ids)), _tensor(targets), ignore_index=IGNORE_INDEX)
        logits = self(_tensor(ids), attn_mask=mask, logits_at=where)
        if task == "t2i":
            counted = targets != IGNORE_INDEX
            return masked_token_loss(logits, _tensor(np.where(counted, targets, 0)), _tensor(counted))
        b, n = where.shape
        return cross_entropy(logits.reshape((b * n, logits.shape[2])), _tensor(targets.reshape(-1)),
                             ignore_index=IGNORE_INDEX)

    def _packed_losses(self, inputs):
        """Every task's loss from ONE forward pass: row b of each task's batch placed side by side in one
        sequence [lm | t2i | mmu], attention kept inside each segment by a block-diagonal mask (each block
        the task's own mask: causal, omni-attention, MMU), positions restarting at 0 in each segment, and
        logits only at the rows the losses read, from one head product. The same numbers as one pass per
        task (no position sees another segment; each row's sums follow the same order), by less work:
        every weight is packed once per pass instead of once per task, the LM's short rows join the others'
        products (a 64-row product runs well below a 700-row one), a weight gradient is one product over
        every task's rows instead of one per task added in, and a third of the calls.
        inputs: {task: _<task>_inputs(...)} with one batch size -> {task: 0-d mean cross-entropy}."""
        c = self.config
        order = [t for t in ("lm", "t2i", "mmu") if t in inputs]
        b = len(inputs[order[0]][0])
        lengths = [inputs[t][0].shape[1] for t in order]
        total = sum(lengths)
        ids = np.concatenate([inputs[t][0] for t in order], 1)
        mask = np.zeros((b, 1, total, total), bool)
        pos, where, targets, spans, start, at = [], [], [], {}, 0, 0
        for t, length in zip(order, lengths):
            tid, tmask, twhere, ttargets, _ = inputs[t]
            seg = slice(start, start + length)
            mask[:, :, seg, seg] = np.tril(np.ones((length, length), bool)) if tmask is None else tmask
            pos.append(np.arange(length))
            if twhere is None:  # every position; next-token targets shifted left, the last ignored
                twhere = np.broadcast_to(np.arange(length), (b, length))
                ttargets = np.concatenate([ttargets[:, 1:], np.full((b, 1), IGNORE_INDEX, np.int64)], 1)
            where.append(twhere + start)
            targets.append(ttargets)
            spans[t] = (at, at + twhere.shape[1])
            start, at = start + length, at + twhere.shape[1]
        where = np.ascontiguousarray(np.concatenate(where, 1), np.int64)
        targets = np.concatenate(targets, 1)
        positions = np.ascontiguousarray(np.broadcast_to(np.concatenate(pos), (b, total)), np.int64)
        logits = self.lm(_tensor(ids), attn_mask=_tensor(mask), position_ids=positions, logits_at=where)
        n = where.shape[1]
        ce = cross_entropy(logits.reshape((b * n, c.vocab_size)), _tensor(targets.reshape(-1)),
                           ignore_index=IGNORE_INDEX, reduction="none")
        terms = {}
        for t in order:
            lo, hi = spans[t]
            weight = np.zeros((b, n), np.float32)
            weight[:, lo:hi] = targets[:, lo:hi] != IGNORE_INDEX
            weight /= weight.sum()  # the mean over the task's targets
            terms[t] = (ce * _tensor(weight.reshape(-1))).sum()
        return terms

    def losses(self, batch, fn="ShowO.losses"):
        """The loss terms of a batch -> ({"t2i", "lm", "mmu"}: 0-d Tensors of the parts present, logs).
        Parts with one batch size run as one packed forward pass (_packed_losses), others one pass each."""
        parts = self._parts(batch, fn)
        build = {"t2i": self._t2i_inputs, "lm": self._lm_inputs, "mmu": self._mmu_inputs}
        inputs, logs = {}, {}
        for task in TASKS:
            if task in parts:
                inputs[task] = build[task](parts[task], fn)
                logs.update(inputs[task][4])
        # (every prompt fits config.max_seq_len, which the config holds >= the longest prompt)
        if len(inputs) > 1 and self._pack_tasks and len({len(v[0]) for v in inputs.values()}) == 1:
            terms = self._packed_losses(inputs)
        else:
            terms = {task: self._task_loss(task, v) for task, v in inputs.items()}
        return {t: terms[t] for t in TASKS if t in terms}, logs

    def training_step(self, batch, step):
        """The Trainer's step -> (loss, logs). batch: a dict with any of the parts
            "t2i": {"text_ids": captions (text ids), "codes": (B, num_vq_tokens) cached codes | "images"}
            "lm":  {"text_ids": texts}
            "mmu": {"codes" | "images", "text_ids": captions (every text token a target) or
                    "question_ids" + "answer_ids" (only the answer and [EOT] are targets)}
        as nested dicts or flat keys "t2i.codes", "mmu.answer_ids", ... (what captioned_token_data
        gives the Trainer); text ids are lists of id sequences or 2-D arrays padded with -1.
        T2I: Show-o's masking (mask_image_tokens), condition dropout (the caption -> the empty prompt with
        probability cond_dropout_prob), omni-attention, cross-entropy on the masked image tokens only,
        unshifted (mmu.losses.masked_token_loss; Show-o's slice also counts its [SOI] / [EOI] positions,
        each labelled with itself). LM and MMU: next-token cross-entropy over the targets.
        loss = t2i_coeff L_t2i + lm_coeff L_lm + mmu_coeff L_mmu over the parts present.
        logs: loss_t2i / loss_lm / loss_mmu (of the parts present), mask_ratio and cond_dropped (T2I)."""
        terms, logs = self.losses(batch, "ShowO.training_step")
        c = self.config
        weights = {"t2i": c.t2i_coeff, "lm": c.lm_coeff, "mmu": c.mmu_coeff}
        loss = None
        for task, term in terms.items():
            loss = term * weights[task] if loss is None else loss + term * weights[task]
            logs[f"loss_{task}"] = term.item()
        return loss, logs

    def evaluate_step(self, batch):
        """{"loss", "loss_t2i", ...} of a batch without a graph (the Trainer averages them)."""
        with no_grad():
            loss, logs = self.training_step(batch, 0)
        logs["loss"] = loss.item()
        return logs

    # ------------------------------------------------------------------ data
    def captioned_token_data(self, dataset, tasks=TASKS, batch_size=64):
        """A captioned dataset (mmu.data.captioned_digits / captioned_shapes: .images, .captions,
        .questions, .answers) -> a dict of equal-length arrays for the Trainer, the images tokenised once
        by the frozen image tokenizer: "t2i.text_ids" + "t2i.codes" (captions), "lm.text_ids" (captions),
        "mmu.codes" + "mmu.question_ids" + "mmu.answer_ids" (question -> answer), for the tasks asked.
        Text ids come from self.text_tokenizer, padded with -1 (the prompts add [SOT] / [EOT])."""
        fn = "ShowO.captioned_token_data"
        tok = self.text_tokenizer
        if tok is None:
            raise ValueError(f"{fn}: the model has no text_tokenizer (pass text_tokenizer= to ShowO)")
        if isinstance(tasks, str) or not tasks or any(t not in TASKS for t in tasks):
            raise ValueError(f"{fn}: tasks must be a non-empty list of {TASKS}, got {tasks!r}")
        for attr in ("images", "captions", "questions", "answers"):
            if not hasattr(dataset, attr):
                raise TypeError(f"{fn}: dataset must be a captioned dataset (with .{attr}), got {type(dataset).__name__}")

        def ids(texts):
            rows = [tok.encode(t) for t in texts]
            out = np.full((len(rows), max(1, max(len(r) for r in rows))), -1, np.int64)
            for i, r in enumerate(rows):
                out[i, :len(r)] = r
            return out

        out = {}
        codes = self.tokenize_images(dataset.images, batch_size) if {"t2i", "mmu"} & set(tasks) else None
        if "t2i" in tasks:
            out["t2i.text_ids"], out["t2i.codes"] = ids(dataset.captions), codes
        if "lm" in tasks:
            out["lm.text_ids"] = ids(dataset.captions)
        if "mmu" in tasks:
            out["mmu.codes"] = codes
            out["mmu.question_ids"], out["mmu.answer_ids"] = ids(dataset.questions), ids(dataset.answers)
        return out

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, llm_vocab_size={c.llm_vocab_size}, codebook_size={c.codebook_size}, "
                f"num_vq_tokens={c.num_vq_tokens}, dim={c.dim}, num_layers={c.num_layers}")
