"""GPT: a decoder-only language model (mmu.nn.TransformerLM) with the Trainer's protocol, generation
through mmu.generate, and its text tokenizer kept beside its weights."""
import math
import os

import numpy as np

from ..._args import check_int
from ...autograd import no_grad
from ...losses import next_token_loss
from ...text.tokenizer import SavesTextTokenizer
from ...nn import Module, TransformerLM
from ...nn.module import _class_path, _encode, _NotSerialisable
from ...tensor import tensor as _tensor
from .config import GPTConfig

__all__ = ["GPT"]

_IGNORE = -100  # the target of a padded position: next_token_loss skips it


def _resolve_config(config, fields_):
    if config is not None and fields_:
        raise TypeError("GPT: give a config or keyword fields, not both")
    if config is None:
        return GPTConfig.from_dict(fields_)
    if isinstance(config, GPTConfig):
        return GPTConfig.from_dict(config.to_dict())  # a private, re-validated copy
    if isinstance(config, dict):
        return GPTConfig.from_dict(config)
    raise TypeError(f"GPT: config must be a GPTConfig or a dict, got {type(config).__name__}")


def _int_ids(v, fn, name):
    """Token ids (array, list, mmu Tensor) -> a 2-D int64 NumPy array."""
    if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
        v = v.numpy()
    a = np.asarray(v)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must hold integer token ids, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{fn}: {name} must be (B, L), got shape {a.shape}")
    return a.astype(np.int64, copy=False)


def _bool_mask(v, shape, fn):
    if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
        v = v.numpy()
    m = np.asarray(v)
    if m.shape != tuple(shape):
        raise ValueError(f"{fn}: attention_mask must have the shape of input_ids {tuple(shape)}, got {m.shape}")
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iu" or not np.isin(m, (0, 1)).all():
            raise ValueError(f"{fn}: attention_mask must be bool or 0/1 (True = a real token), got dtype {m.dtype}")
        m = m != 0
    return m


class _TokenizerVocab:
    """The model for mmu.generate with the logits of ids >= vocab_size (ids no tokenizer word has) at
    -inf, so they are never drawn: the model protocol of mmu.generate (new_cache, __call__)."""

    def __init__(self, model, vocab_size):
        self.model, self.vocab_size = model, vocab_size

    def new_cache(self, batch_size, max_len):
        return self.model.new_cache(batch_size, max_len)

    def __call__(self, *args, **kwargs):
        logits = np.array(self.model(*args, **kwargs).numpy(), np.float32)
        logits[..., self.vocab_size:] = -np.inf
        return logits


class GPT(SavesTextTokenizer, Module):
    """A GPT-style language model: `GPT(GPTConfig(...))`, `GPT(**fields)` or `GPT(dict)`; `.config` is
    the (validated) GPTConfig and `.lm` the mmu.nn.TransformerLM it builds (state_dict keys "lm.*").

    tokenizer: an mmu.text.TextTokenizer (or None) whose ids the model reads; it is not a weight, but
    save_pretrained writes it beside config.json and model.safetensors and from_pretrained loads it
    back, and generate_text / perplexity of texts use it. Its vocab_size must not exceed
    config.vocab_size.

    Trainer protocol: training_step(batch, step) -> (next-token loss, {"perplexity"}), evaluate_step(batch)
    -> {"loss", "perplexity"}. A batch is token ids (B, L) (every position a real token), a dict
    {"input_ids": (B, L), "attention_mask": (B, L) bool} or a pair (input_ids, attention_mask); the
    loss is the mean cross-entropy of predicting token t+1 from tokens <= t, over the pairs (t, t+1)
    the mask marks both real. Right padding (text first) needs no attention mask inside the model
    (causal attention never looks right); left-padded rows are run with it.
    """

    config_class = GPTConfig
    text_tokenizer_attr = "tokenizer"

    def __init__(self, config=None, tokenizer=None, **fields_):
        super().__init__()
        cfg = _resolve_config(config, fields_)
        object.__setattr__(self, "config", cfg)
        enc = _encode(cfg, "the GPT config")
        # recorded as keyword fields: from_pretrained calls GPT(**fields), which rebuilds the same config;
        # the tokenizer is saved as its own files, never inside config.json
        self.__dict__["_config"] = enc if isinstance(enc, _NotSerialisable) else \
            {"class": _class_path(type(self)), "args": {"config": None, "tokenizer": None,
                                                         "**fields_": enc["__config__"]["fields"]}}
        c = cfg
        self.lm = TransformerLM(c.vocab_size, c.dim, c.num_layers, c.num_heads, num_kv_heads=c.num_kv_heads,
                                head_dim=c.head_dim, hidden_dim=c.hidden_dim, activation=c.activation, bias=c.bias,
                                norm=c.norm, norm_eps=c.norm_eps, residual=c.residual, qk_norm=c.qk_norm, pos=c.pos,
                                rotary_fraction=c.rotary_fraction, rope_base=c.rope_base, max_seq_len=c.max_seq_len,
                                dropout=c.dropout, attn_dropout=c.attn_dropout, tie_embeddings=c.tie_embeddings,
                                init_std=c.init_std)
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        """The mmu.text.TextTokenizer of the model's ids, or None."""
        return self.__dict__.get("_tokenizer")

    @tokenizer.setter
    def tokenizer(self, tok):
        if tok is not None:
            from ...text import TextTokenizer
            if not isinstance(tok, TextTokenizer):
                raise TypeError(f"GPT: tokenizer must be an mmu.text.TextTokenizer or None, got {type(tok).__name__}")
            if tok.vocab_size > self.config.vocab_size:
                raise ValueError(f"GPT: the tokenizer's vocab_size {tok.vocab_size} exceeds the model's "
                                 f"config.vocab_size {self.config.vocab_size}")
        self.__dict__["_tokenizer"] = tok

    def _need_tokenizer(self, fn):
        tok = self.tokenizer
        if tok is None:
            raise ValueError(f"{fn}: the model has no tokenizer (pass tokenizer= to GPT, or set model.tokenizer)")
        return tok

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, logits_at="all",
                inputs_embeds=None, attn_mask=None):
        """Logits of the tokens: mmu.nn.TransformerLM.forward (same arguments; 'all' -> (B, L, V),
        'last' -> (B, V), None -> final hidden states). A chunk may not reach past config.max_seq_len."""
        chunk = input_ids if input_ids is not None else inputs_embeds
        shape = np.shape(chunk.numpy() if hasattr(chunk, "numpy") and not isinstance(chunk, np.ndarray) else chunk)
        start = getattr(cache, "length", 0) if cache is not None else 0
        length = shape[1] if len(shape) >= 2 else 0
        if start + length > self.config.max_seq_len:
            raise ValueError(f"GPT: positions up to {start + length} exceed config.max_seq_len "
                             f"{self.config.max_seq_len}")
        return self.lm(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                       logits_at=logits_at, inputs_embeds=inputs_embeds, attn_mask=attn_mask)

    def new_cache(self, batch_size, max_len):
        """An empty mmu.nn.KVCache for batch_size rows of up to max_len <= config.max_seq_len positions."""
        max_len = check_int(max_len, "GPT.new_cache", "max_len")
        if max_len > self.config.max_seq_len:
            raise ValueError(f"GPT.new_cache: max_len {max_len} (prompt + new tokens) exceeds config.max_seq_len "
                             f"{self.config.max_seq_len}")
        return self.lm.new_cache(batch_size, max_len)

    # ------------------------------------------------------------------ training
    def _batch(self, batch, fn):
        """A batch -> (ids (B, L) int64, mask (B, L) bool or None), checked against the config."""
        mask = None
        if isinstance(batch, dict):
            if "input_ids" not in batch:
                raise KeyError(f"{fn}: a dict batch needs 'input_ids' (and optionally 'attention_mask'), got keys "
                               f"{sorted(batch)}")
            unknown = sorted(set(batch) - {"input_ids", "attention_mask"})
            if unknown:
                raise KeyError(f"{fn}: unknown key(s) {unknown} in the batch (known: input_ids, attention_mask)")
            ids, mask = batch["input_ids"], batch.get("attention_mask")
        elif isinstance(batch, (tuple, list)) and len(batch) == 2 and not np.isscalar(batch[0]) \
                and np.ndim(batch[0]) == 2:
            ids, mask = batch
        else:
            ids = batch
        ids = _int_ids(ids, fn, "input_ids")
        b, l = ids.shape
        if b == 0 or l < 2:
            raise ValueError(f"{fn}: input_ids must be (B, L) with B >= 1 and L >= 2 (a next token to predict), "
                             f"got shape {ids.shape}")
        if l > self.config.max_seq_len:
            raise ValueError(f"{fn}: sequences of {l} tokens exceed config.max_seq_len {self.config.max_seq_len}")
        if mask is not None:
            mask = _bool_mask(mask, ids.shape, fn)
            if not mask.any(axis=1).all():
                raise ValueError(f"{fn}: attention_mask has a row without any real token")
            if mask.all():
                mask = None
        real = ids if mask is None else ids[mask]
        if real.size and (real.min() < 0 or real.max() >= self.config.vocab_size):
            bad = real[(real < 0) | (real >= self.config.vocab_size)][0]
            raise ValueError(f"{fn}: token id {int(bad)} is outside the vocabulary [0, {self.config.vocab_size})")
        if mask is not None:
            ids = np.where(mask, ids, 0)  # padded places may hold anything: give the embedding a valid id
        return ids, mask

    def _loss(self, ids, mask, fn):
        """Mean next-token cross-entropy (a 0-d Tensor) and the number of targets."""
        if mask is None:
            targets, count = ids, ids.shape[0] * (ids.shape[1] - 1)
            logits = self.lm(_tensor(ids), logits_at="all")
        else:
            # token t+1 is a target when it and the token t predicting it are real (a left-padded row's
            # first token follows a pad: not a target)
            valid = mask[:, 1:] & mask[:, :-1]
            targets = np.full(ids.shape, _IGNORE, np.int64)
            targets[:, 1:] = np.where(valid, ids[:, 1:], _IGNORE)
            count = int(valid.sum())
            if count == 0:
                raise ValueError(f"{fn}: the batch has no target (every row has at most one real token)")
            # a row that is a prefix of real tokens (right padding) is exact without the mask: causal
            # attention never reads the pads after a token, and its positions are 0.. either way
            right_padded = not (np.diff(mask.astype(np.int8), axis=1) > 0).any()
            logits = self.lm(_tensor(ids), attention_mask=None if right_padded else mask, logits_at="all")
        return next_token_loss(logits, _tensor(np.ascontiguousarray(targets)), ignore_index=_IGNORE), count

    def training_step(self, batch, step):
        """The Trainer's step: (mean next-token cross-entropy over the real targets, {"perplexity":
        exp(loss)})."""
        ids, mask = self._batch(batch, "GPT.training_step")
        loss, _ = self._loss(ids, mask, "GPT.training_step")
        return loss, {"perplexity": math.exp(min(loss.item(), 80.0))}

    def evaluate_step(self, batch):
        """{"loss": mean next-token cross-entropy of the batch, "perplexity": exp(loss)} (no graph).
        The Trainer averages these over the eval batches; `perplexity(data)` weighs every token equally."""
        ids, mask = self._batch(batch, "GPT.evaluate_step")
        with no_grad():
            loss = self._loss(ids, mask, "GPT.evaluate_step")[0].item()
        return {"loss": loss, "perplexity": math.exp(min(loss, 80.0))}

    def perplexity(self, data, attention_mask=None, batch_size=64):
        """exp(mean next-token cross-entropy over every real target of `data`), each token weighing the
        same: data is token ids (N, L) (with attention_mask (N, L)), a dict {"input_ids",
        "attention_mask"}, or a list of str (encoded by the model's tokenizer as bos text eos).
        Runs in eval mode without a graph and restores the mode."""
        fn = "GPT.perplexity"
        if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
            if attention_mask is not None:
                raise ValueError(f"{fn}: attention_mask goes with token ids, not with texts")
            ids, mask = self._need_tokenizer(fn).encode_batch(list(data), add_bos=True, add_eos=True)
        elif isinstance(data, dict):
            if attention_mask is not None:
                raise ValueError(f"{fn}: give the mask inside the dict or as attention_mask, not both")
            ids, mask = data.get("input_ids"), data.get("attention_mask")
            if ids is None:
                raise KeyError(f"{fn}: a dict needs 'input_ids'")
        else:
            ids, mask = data, attention_mask
        ids = _int_ids(ids, fn, "data")
        batch_size = check_int(batch_size, fn, "batch_size")
        if batch_size < 1:
            raise ValueError(f"{fn}: batch_size must be >= 1, got {batch_size}")
        if mask is not None:
            mask = _bool_mask(mask, ids.shape, fn)
        total, count = 0.0, 0
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for i in range(0, len(ids), batch_size):
                    part = ids[i:i + batch_size] if mask is None else \
                        {"input_ids": ids[i:i + batch_size], "attention_mask": mask[i:i + batch_size]}
                    b_ids, b_mask = self._batch(part, fn)
                    loss, n = self._loss(b_ids, b_mask, fn)
                    total += loss.item() * n
                    count += n
        finally:
            self.train(was_training)
        if count == 0:
            raise ValueError(f"{fn}: data is empty")
        return math.exp(total / count)

    # ------------------------------------------------------------------ generation
    def generate(self, input_ids, attention_mask=None, max_new_tokens=20, do_sample=True, temperature=1.0,
                 top_k=None, top_p=None, eos_token_id="tokenizer", pad_token_id=None, generator=None, seed=None,
                 progress=False):
        """Sampled continuations -> int64 Tensor (B, L + n): mmu.generate.generate on this model's KV
        cache (prompts of different lengths LEFT padded, attention_mask True on real tokens; greedy with
        do_sample=False; temperature, top_k, top_p; stops at eos_token_id, then pad_token_id). The
        prompt plus max_new_tokens must fit config.max_seq_len. eos_token_id "tokenizer" (default) is
        the tokenizer's eos (None without a tokenizer); pad_token_id None is the tokenizer's pad.
        seed: an int makes a fresh mmu.Generator(seed) (or pass generator=, not both). Runs in eval mode
        (no dropout) and restores the mode."""
        return self._generate(self, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                              eos_token_id, pad_token_id, generator, seed, progress)

    def _generate(self, target, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                  eos_token_id, pad_token_id, generator, seed, progress):
        # target: the model mmu.generate runs (self, or _TokenizerVocab around it)
        fn = "GPT.generate"
        tok = self.tokenizer
        if isinstance(eos_token_id, str):
            if eos_token_id != "tokenizer":
                raise ValueError(f"{fn}: eos_token_id must be an int, a list of ints, None or 'tokenizer', got "
                                 f"{eos_token_id!r}")
            eos_token_id = tok.eos_id if tok is not None else None
        if pad_token_id is None and tok is not None and tok.pad_id is not None:
            pad_token_id = tok.pad_id
        generator = self._generator(generator, seed, fn)
        from ...generate import generate
        was_training = self.training
        self.eval()
        try:
            return generate(target, input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                            eos_token_id=eos_token_id, pad_token_id=pad_token_id, generator=generator,
                            progress=progress)
        finally:
            self.train(was_training)

    @staticmethod
    def _generator(generator, seed, fn):
        if seed is None:
            return generator
        if generator is not None:
            raise ValueError(f"{fn}: give seed or generator, not both")
        from ... import Generator
        return Generator(check_int(seed, fn, "seed"))

    def generate_text(self, prompts=None, num_samples=1, max_new_tokens=None, do_sample=True, temperature=1.0,
                      top_k=None, top_p=None, generator=None, seed=None, progress=False):
        """Texts written by the model with its tokenizer -> list of str (prompt + continuation, special
        tokens dropped).

        prompts: None (every sample starts from bos alone) or a list of str (each encoded as bos + text,
        left padded into one batch); num_samples: samples per prompt (rows of one prompt are adjacent).
        max_new_tokens: default config.max_seq_len minus the longest prompt. Generation of a row stops at
        the tokenizer's eos. Ids past the tokenizer's vocabulary (a model vocab_size larger than the
        tokenizer's) are never sampled. do_sample / temperature / top_k / top_p / generator / seed: see generate."""
        fn = "GPT.generate_text"
        tok = self._need_tokenizer(fn)
        if tok.bos_id is None:
            raise ValueError(f"{fn}: the tokenizer has no bos token to start a text with")
        num_samples = check_int(num_samples, fn, "num_samples")
        if num_samples < 1:
            raise ValueError(f"{fn}: num_samples must be >= 1, got {num_samples}")
        if prompts is None:
            prompts = [""]
        elif isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
            raise TypeError(f"{fn}: prompts must be None or a non-empty list of str, got {prompts!r:.60}")
        texts = [p for p in prompts for _ in range(num_samples)]
        if tok.pad_id is None and len({len(tok.encode(t)) for t in prompts}) > 1:
            raise ValueError(f"{fn}: prompts of different lengths need a tokenizer with a pad token")
        ids, mask = tok.encode_batch(texts, add_bos=True, padding_side="left")
        room = self.config.max_seq_len - ids.shape[1]
        if room < 1:
            raise ValueError(f"{fn}: the prompts take {ids.shape[1]} tokens, leaving no room under config.max_seq_len "
                             f"{self.config.max_seq_len}")
        if max_new_tokens is None:
            max_new_tokens = room
        # a model whose vocabulary is larger than its tokenizer's never writes an id the tokenizer lacks
        target = self if tok.vocab_size == self.config.vocab_size else _TokenizerVocab(self, tok.vocab_size)
        out = self._generate(target, ids, mask, max_new_tokens, do_sample, temperature, top_k, top_p, "tokenizer",
                             None, generator, seed, progress)
        out = out.numpy()
        full = np.concatenate([mask, np.ones((len(out), out.shape[1] - ids.shape[1]), bool)], axis=1)
        if tok.eos_id is not None:  # drop whatever follows a row's first eos (generate pads it)
            new = out[:, ids.shape[1]:]
            after = np.cumsum(new == tok.eos_id, axis=1) > 0
            full[:, ids.shape[1]:] &= ~after
        return tok.decode_batch(out, attention_mask=full)

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, dim={c.dim}, num_layers={c.num_layers}, num_heads={c.num_heads}, "
                f"pos={c.pos!r}, max_seq_len={c.max_seq_len}, tokenizer={'yes' if self.tokenizer else 'no'}")
