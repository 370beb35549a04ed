"""TextTokenizer: a Hugging Face `tokenizers.Tokenizer` with mmu's conventions on top.

What mmu adds to the wrapped tokenizer:
- special-token roles (pad, bos, eos, unk), each a token of the vocabulary or None, kept beside the
  tokenizer.json in a small JSON file (META_FILE) by `save` and read back by `from_pretrained`;
- `encode` never runs the file's post-processor (LLaMA's tokenizer.json prepends "<s>" by itself):
  bos/eos are added only when asked (add_bos / add_eos), so one call means the same for every file;
- batches are padded here, in NumPy, to a (B, L) int64 array and a (B, L) bool mask, on the right
  or on the left (batched generation: every prompt ends at the last column), whatever padding or
  truncation the file itself configured (both are switched off on load);
- ids and text are checked: an id outside the vocabulary or a text that is not a str is an error
  naming the method, not a silent "" or a Rust panic.

`tokenizers` is imported when a tokenizer is built or loaded, never by `import mmu`.
"""
import json
import os

import numpy as np

from .._args import flag, foreign_array, is_int

__all__ = ["TextTokenizer", "DEFAULT_SPECIAL_TOKENS", "SPECIAL_ROLES", "TOKENIZER_FILE", "META_FILE",
           "save_beside_model", "load_beside_model"]

SPECIAL_ROLES = ("pad", "bos", "eos", "unk")
# the role tokens of a trained tokenizer, at ids 0, 1, 2, 3 in this order
DEFAULT_SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "mmu_text_tokenizer.json"
_META_FORMAT = "mmu.text.TextTokenizer"
_META_VERSION = 1

# Role names guessed for a tokenizer.json loaded without roles (first match in the vocabulary wins).
# Phi-1.5 / GPT-2 / CodeGen use "<|endoftext|>" as both bos and eos and have no pad; LLaMA 1/2 use
# "<s>" / "</s>" (its post-processor template names "<s>" too); LLaMA 3 "<|begin_of_text|>" /
# "<|end_of_text|>".
_GUESS = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "bos": ("<bos>", "<s>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"),
    "eos": ("<eos>", "</s>", "<|end_of_text|>", "<|endoftext|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}
_INFER = object()   # default of from_file's role arguments: take the role from the file


def _hf(fn):
    """The `tokenizers` package, imported on first use (a clear message when it is missing)."""
    try:
        import tokenizers
    except ImportError as e:  # a declared dependency, but mmu must still import without it
        raise ImportError(f"{fn}: needs Hugging Face's tokenizers package: pip install tokenizers") from e
    return tokenizers


def _check_str(v, fn, name):
    if not isinstance(v, str):
        raise TypeError(f"{fn}: {name} must be a str, got {type(v).__name__}")
    return v


def _check_texts(texts, fn):
    """A list/tuple of str -> list (a bare str is refused: it would be a batch of characters)."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{fn}: texts must be a list or tuple of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{fn}: texts[{i}] must be a str, got {type(t).__name__}")
    return list(texts)


def _check_corpus(corpus, fn):
    """An iterable of str -> list; ValueError when it holds no text at all."""
    if isinstance(corpus, (str, bytes)):
        raise TypeError(f"{fn}: corpus must be an iterable of str (a list of sentences), not a single "
                        f"{type(corpus).__name__}")
    try:
        items = list(corpus)
    except TypeError:
        raise TypeError(f"{fn}: corpus must be an iterable of str, got {type(corpus).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"{fn}: corpus[{i}] must be a str, got {type(t).__name__}")
    if not any(t.strip() for t in items):
        raise ValueError(f"{fn}: corpus is empty ({len(items)} texts, none with a non-space character)")
    return items


def _special_list(fn, special_tokens, roles):
    """The trained tokenizer's special tokens in id order: the role tokens (pad, bos, eos, unk that are
    not None) then the extra `special_tokens` -> (list of tokens, {role: token})."""
    out, role_tokens = [], {}
    for role in SPECIAL_ROLES:
        tok = roles[role]
        if tok is None:
            role_tokens[role] = None
            continue
        _check_str(tok, fn, f"{role}_token")
        if not tok:
            raise ValueError(f"{fn}: {role}_token must not be empty")
        if tok in out:
            raise ValueError(f"{fn}: {role}_token {tok!r} is also the token of another role")
        out.append(tok)
        role_tokens[role] = tok
    if special_tokens is not None:
        if isinstance(special_tokens, str) or not isinstance(special_tokens, (list, tuple)):
            raise TypeError(f"{fn}: special_tokens must be a list of str or None, got {type(special_tokens).__name__}")
        for i, tok in enumerate(special_tokens):
            _check_str(tok, fn, f"special_tokens[{i}]")
            if not tok:
                raise ValueError(f"{fn}: special_tokens[{i}] is empty")
            if tok in out:
                raise ValueError(f"{fn}: special token {tok!r} is listed twice (or is a role token already)")
            out.append(tok)
    return out, role_tokens


def _check_count(v, fn, name, lo):
    if not is_int(v):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{fn}: {name} must be >= {lo}, got {v}")
    return int(v)


def _role_property(role):
    def get_token(self):
        return self._roles[role]

    def set_token(self, token):
        self._set_role(role, token, f"TextTokenizer.{role}_token")

    def get_id(self):
        tok = self._roles[role]
        return None if tok is None else self._tok.token_to_id(tok)

    token = property(get_token, set_token, doc=f"The {role} token (a str of the vocabulary) or None. Assign a "
                                                f"token of the vocabulary (or None) to change the role.")
    ident = property(get_id, doc=f"Id of the {role} token, or None when the tokenizer has no {role} token.")
    return token, ident


class TextTokenizer:
    """A text tokenizer: a Hugging Face `tokenizers.Tokenizer` plus special-token roles, NumPy batches
    and checked arguments.

    Build one with `from_file` (a tokenizer.json the user has: Phi-1.5's byte-level BPE, LLaMA's BPE
    with byte fallback, ...), `from_pretrained` (a directory written by `save`, or a Hugging Face
    tokenizer directory), `train_bpe` or `train_word_level`; or wrap a `tokenizers.Tokenizer` directly:
    `TextTokenizer(tokenizer, pad_token=..., bos_token=..., eos_token=..., unk_token=...)` (each role
    a token of its vocabulary, or None).

    Roles: `pad_token`/`pad_id`, `bos_token`/`bos_id`, `eos_token`/`eos_id`, `unk_token`/`unk_id`
    (None when absent; assignable, e.g. `tok.pad_token = tok.eos_token` for a Phi tokenizer, which has
    no pad token). Trained tokenizers put "<pad>", "<bos>", "<eos>", "<unk>" at ids 0, 1, 2, 3.
    """

    pad_token, pad_id = _role_property("pad")
    bos_token, bos_id = _role_property("bos")
    eos_token, eos_id = _role_property("eos")
    unk_token, unk_id = _role_property("unk")

    def __init__(self, tokenizer, pad_token=None, bos_token=None, eos_token=None, unk_token=None):
        fn = "TextTokenizer"
        tokenizers = _hf(fn)
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"{fn}: tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        # mmu pads and truncates itself (encode_batch): a file's own settings would change the lengths
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        self._refresh()
        self._roles = dict.fromkeys(SPECIAL_ROLES)
        for role, tok in zip(SPECIAL_ROLES, (pad_token, bos_token, eos_token, unk_token)):
            self._set_role(role, tok, fn)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path, *, pad_token=_INFER, bos_token=_INFER, eos_token=_INFER, unk_token=_INFER):
        """Load a tokenizer.json (the `tokenizers` library's format: Phi-1.5's, LLaMA's, or one saved by
        `save`). Nothing is downloaded.

        Each role argument is a token of the file's vocabulary, None (no such role), or left out: then
        the role is taken from the file - unk from the model's unk_token, bos/eos from the
        post-processor's single-sequence template ("<s> $A" names bos "<s>"), else the first of the
        usual names present in the vocabulary (pad: "<pad>", "[PAD]"; bos: "<bos>", "<s>",
        "<|begin_of_text|>", "<|endoftext|>"; eos: "<eos>", "</s>", "<|end_of_text|>",
        "<|endoftext|>"; unk: "<unk>", "[UNK]"). The file's ids are kept as they are.
        """
        fn = "TextTokenizer.from_file"
        tokenizers = _hf(fn)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{fn}: no tokenizer file at {path!r}")
        try:
            tok = tokenizers.Tokenizer.from_file(path)
        except Exception as e:  # the Rust side raises a bare Exception on a malformed file
            raise ValueError(f"{fn}: {path!r} is not a tokenizer.json the tokenizers library can read: {e}") from e
        given = dict(zip(SPECIAL_ROLES, (pad_token, bos_token, eos_token, unk_token)))
        guessed = _guess_roles(tok)
        roles = {r: guessed[r] if given[r] is _INFER else given[r] for r in SPECIAL_ROLES}
        return cls(tok, **{f"{r}_token": roles[r] for r in SPECIAL_ROLES})

    @classmethod
    def from_pretrained(cls, directory):
        """Load a directory: its tokenizer.json and the roles from `save`'s META_FILE; a Hugging Face
        tokenizer directory without it takes the roles from its special_tokens_map.json or
        tokenizer_config.json (bos_token, eos_token, unk_token, pad_token), else as `from_file` guesses.
        """
        fn = "TextTokenizer.from_pretrained"
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{fn}: {directory!r} is not a directory")
        path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{fn}: {directory!r} holds no {TOKENIZER_FILE}")
        meta_path = os.path.join(directory, META_FILE)
        if os.path.isfile(meta_path):
            roles = _read_meta(meta_path, fn)
            return cls.from_file(path, **{f"{r}_token": roles[r] for r in SPECIAL_ROLES})
        roles = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the latter wins
            p = os.path.join(directory, name)
            if os.path.isfile(p):
                try:
                    with open(p, encoding="utf-8") as f:
                        cfg = json.load(f)
                except (OSError, ValueError) as e:
                    raise ValueError(f"{fn}: cannot read {p!r}: {e}") from e
                for r in SPECIAL_ROLES:
                    v = cfg.get(f"{r}_token") if isinstance(cfg, dict) else None
                    if isinstance(v, dict):   # {"content": "<|endoftext|>", "lstrip": false, ...}
                        v = v.get("content")
                    if isinstance(v, str):
                        roles[f"{r}_token"] = v
        return cls.from_file(path, **roles)

    @classmethod
    def train_bpe(cls, corpus, vocab_size, special_tokens=None, min_frequency=2, *, pad_token="<pad>",
                  bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"):
        """Train a byte-level BPE tokenizer (GPT-2's scheme: every byte has a token, so no text is ever
        unknown; spaces belong to the following word) on `corpus`, an iterable of str.

        vocab_size: the largest vocabulary (specials + 256 bytes + merges; a small corpus may stop
        earlier); special_tokens: extra special tokens (e.g. ["<image>"]) after the role tokens;
        min_frequency: a pair is merged only when it occurs at least this often. Ids: pad, bos, eos,
        unk (the role tokens that are not None, in this order) at 0, 1, 2, 3, then the extra special
        tokens, then the 256 byte tokens and the merges. The unk token is never produced by a
        byte-level BPE; it is kept so the trained tokenizers share their special ids.
        """
        fn = "TextTokenizer.train_bpe"
        tokenizers = _hf(fn)
        corpus = _check_corpus(corpus, fn)
        specials, roles = _special_list(fn, special_tokens, dict(pad=pad_token, bos=bos_token, eos=eos_token,
                                                                   unk=unk_token))
        vocab_size = _check_count(vocab_size, fn, "vocab_size", 1)
        if vocab_size < len(specials) + 256:
            raise ValueError(f"{fn}: vocab_size {vocab_size} is below the {len(specials)} special tokens + "
                             f"256 byte tokens of a byte-level BPE")
        min_frequency = _check_count(min_frequency, fn, "min_frequency", 1)
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=False,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(corpus, trainer)
        return cls._trained(tok, specials, roles, fn)

    @classmethod
    def train_word_level(cls, corpus, vocab_size=None, special_tokens=None, min_frequency=1, lowercase=True, *,
                         pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"):
        """Train a word-level tokenizer on `corpus`, an iterable of str: one id per word or punctuation
        mark - the small, readable vocabulary a tiny captioning model wants.

        Text is NFKC-normalised, lowercased (lowercase=True), runs of whitespace become one space and
        the ends are stripped; words split at spaces and every punctuation character stands alone
        ("what digit is this?" -> "what", "digit", "is", "this", "?"). A word keeps a mark of the space
        before it (as SentencePiece's "▁"), so decode gives back the normalised text exactly, e.g.
        "it's" and "seven, eight" survive. Words not in the vocabulary become unk_token (required).
        vocab_size: None keeps every word seen min_frequency times, an int keeps the most frequent
        ones up to that total (specials included). Ids as in `train_bpe`: pad, bos, eos, unk at
        0, 1, 2, 3, then extra `special_tokens`, then the words by decreasing frequency.
        """
        fn = "TextTokenizer.train_word_level"
        tokenizers = _hf(fn)
        corpus = _check_corpus(corpus, fn)
        specials, roles = _special_list(fn, special_tokens, dict(pad=pad_token, bos=bos_token, eos=eos_token,
                                                                   unk=unk_token))
        if roles["unk"] is None:
            raise ValueError(f"{fn}: a word-level tokenizer needs an unk_token for the words it has not seen")
        if vocab_size is None:
            vocab_size = 1 << 30
        vocab_size = _check_count(vocab_size, fn, "vocab_size", len(specials) + 1)
        min_frequency = _check_count(min_frequency, fn, "min_frequency", 1)
        lowercase = flag(lowercase, fn, "lowercase")
        n, p, d = tokenizers.normalizers, tokenizers.pre_tokenizers, tokenizers.decoders
        tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token=roles["unk"]))
        steps = [n.NFKC()] + ([n.Lowercase()] if lowercase else []) + \
                [n.Replace(tokenizers.Regex(r"\s+"), " "), n.Strip()]
        tok.normalizer = n.Sequence(steps)
        tok.pre_tokenizer = p.Sequence([p.Metaspace(), p.Punctuation("isolated")])
        # an unknown word was a word: it gets the space mark back when decoded ("a <unk> circle")
        tok.decoder = d.Sequence([d.Replace(roles["unk"], "\u2581" + roles["unk"]), d.Metaspace()])
        trainer = tokenizers.trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                                       special_tokens=specials, show_progress=False)
        tok.train_from_iterator(corpus, trainer)
        return cls._trained(tok, specials, roles, fn)

    @classmethod
    def _trained(cls, tok, specials, roles, fn):
        for i, s in enumerate(specials):   # the trainers put the special tokens first; make sure of it
            if tok.token_to_id(s) != i:
                raise RuntimeError(f"{fn}: special token {s!r} got id {tok.token_to_id(s)}, not {i}")
        return cls(tok, **{f"{r}_token": roles[r] for r in SPECIAL_ROLES})

    # ------------------------------------------------------------------ vocabulary and roles

    def _refresh(self):
        # vocab_size = largest id + 1 (the embedding rows a model needs), and the ids decode skips
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self._vocab_size = max(vocab.values()) + 1 if vocab else 0
        self._special_ids = frozenset(i for i, t in self._tok.get_added_tokens_decoder().items() if t.special)

    def _set_role(self, role, token, fn):
        if token is not None:
            _check_str(token, fn, f"{role}_token")
            if self._tok.token_to_id(token) is None:
                raise ValueError(f"{fn}: {role}_token {token!r} is not in the vocabulary (add it first with "
                                 f"add_special_tokens([{token!r}]))")
        self._roles[role] = token

    @property
    def vocab_size(self):
        """Number of ids: the largest id + 1, added special tokens included (an embedding's rows)."""
        return self._vocab_size

    def __len__(self):
        return self._vocab_size

    @property
    def special_tokens(self):
        """{role: token} for pad, bos, eos, unk (None where the role is empty)."""
        return dict(self._roles)

    @property
    def all_special_ids(self):
        """Sorted ids of every special token of the vocabulary (the ones `decode` skips, but unk)."""
        return sorted(self._special_ids)

    @property
    def backend(self):
        """The wrapped `tokenizers.Tokenizer` (shared, not a copy)."""
        return self._tok

    def token_to_id(self, token):
        """Id of `token` (a str of the vocabulary, special tokens included), or None if absent."""
        return self._tok.token_to_id(_check_str(token, "TextTokenizer.token_to_id", "token"))

    def id_to_token(self, index):
        """The token (str) of id `index`; IndexError outside [0, vocab_size) or for an unused id."""
        fn = "TextTokenizer.id_to_token"
        if not is_int(index):
            raise TypeError(f"{fn}: index must be an int, got {type(index).__name__}")
        tok = self._tok.id_to_token(int(index)) if 0 <= index < self._vocab_size else None
        if tok is None:
            raise IndexError(f"{fn}: id {index} is not in the vocabulary (vocab_size {self._vocab_size})")
        return tok

    def get_vocab(self):
        """{token: id} of the whole vocabulary, added tokens included (a new dict)."""
        return self._tok.get_vocab(with_added_tokens=True)

    def add_special_tokens(self, tokens):
        """Append special tokens at the end of the vocabulary: the i-th new token gets id
        vocab_size + i (as Show-o appends its tokens after Phi-1.5's vocabulary). A special token is
        matched whole in the text before any other rule and is skipped by decode. Returns their ids
        (list of int). A token already in the vocabulary, or listed twice, is a ValueError (its id
        could not be the next one); nothing is added then.
        """
        fn = "TextTokenizer.add_special_tokens"
        if isinstance(tokens, str) or not isinstance(tokens, (list, tuple)):
            raise TypeError(f"{fn}: tokens must be a list of str, got {type(tokens).__name__}")
        if not tokens:
            raise ValueError(f"{fn}: tokens is empty")
        seen = set()
        for i, t in enumerate(tokens):
            _check_str(t, fn, f"tokens[{i}]")
            if not t:
                raise ValueError(f"{fn}: tokens[{i}] is empty")
            if t in seen:
                raise ValueError(f"{fn}: {t!r} is listed twice")
            old = self._tok.token_to_id(t)
            if old is not None:
                raise ValueError(f"{fn}: {t!r} is already in the vocabulary at id {old}")
            seen.add(t)
        start = self._vocab_size
        n_tokens = len(self._tok.get_vocab(with_added_tokens=True))
        if n_tokens != start:
            # the tokenizers library gives a new token the next id after the model's *count* of
            # tokens, which falls in a hole of these ids, not at vocab_size: refuse before adding
            raise ValueError(f"{fn}: the vocabulary has {n_tokens} tokens for ids 0..{start - 1} (unused ids in "
                             f"between), so new tokens could not get ids {start}.. at its end; nothing was added")
        tokenizers = _hf(fn)
        self._tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in tokens])
        self._refresh()
        ids = [self._tok.token_to_id(t) for t in tokens]
        if ids != list(range(start, start + len(tokens))):   # a vocabulary with holes in its ids
            raise RuntimeError(f"{fn}: the new tokens got ids {ids}, not {start}..{start + len(tokens) - 1}")
        return ids

    # ------------------------------------------------------------------ encoding

    def _with_specials(self, ids, add_bos, add_eos, fn):
        if add_bos:
            if self.bos_id is None:
                raise ValueError(f"{fn}: add_bos=True but the tokenizer has no bos token (set tok.bos_token)")
            ids = [self.bos_id] + ids
        if add_eos:
            if self.eos_id is None:
                raise ValueError(f"{fn}: add_eos=True but the tokenizer has no eos token (set tok.eos_token)")
            ids = ids + [self.eos_id]
        return ids

    def encode(self, text, add_bos=False, add_eos=False):
        """Token ids of `text` (a str) -> (n,) int64 array; add_bos / add_eos put the bos / eos id at the
        start / end (an error when that role is empty). The file's post-processor (LLaMA's automatic
        "<s>") never runs: specials come only from these flags."""
        fn = "TextTokenizer.encode"
        _check_str(text, fn, "text")
        add_bos, add_eos = flag(add_bos, fn, "add_bos"), flag(add_eos, fn, "add_eos")
        ids = self._with_specials(self._tok.encode(text, add_special_tokens=False).ids, add_bos, add_eos, fn)
        return np.asarray(ids, dtype=np.int64)

    def encode_batch(self, texts, padding="longest", max_length=None, truncation=False, padding_side="right",
                     add_bos=False, add_eos=False):
        """Encode a list of str into one padded batch -> (ids (B, L) int64, attention_mask (B, L) bool).

        padding: "longest" (L = the longest encoded text) or "max_length" (L = max_length, required).
        max_length: with truncation=True, each text is cut to max_length ids (bos/eos included: the
        text's last ids go, the added bos/eos stay); with truncation=False a text longer than
        max_length is a ValueError. padding_side: "right" (text first, then pad ids) or "left" (pad ids
        first: every row ends at the last column, as batched generation appends there). The mask is
        True on real tokens (bos/eos included), False on padding; padded places hold pad_id (a
        tokenizer without a pad token raises when some row needs padding: set tok.pad_token).
        """
        fn = "TextTokenizer.encode_batch"
        texts = _check_texts(texts, fn)
        if not texts:
            raise ValueError(f"{fn}: texts is empty")
        if not isinstance(padding, str) or padding not in ("longest", "max_length"):
            raise ValueError(f"{fn}: padding must be 'longest' or 'max_length', got {padding!r}")
        if not isinstance(padding_side, str) or padding_side not in ("left", "right"):
            raise ValueError(f"{fn}: padding_side must be 'left' or 'right', got {padding_side!r}")
        truncation = flag(truncation, fn, "truncation")
        add_bos, add_eos = flag(add_bos, fn, "add_bos"), flag(add_eos, fn, "add_eos")
        n_special = int(add_bos) + int(add_eos)
        if max_length is not None:
            max_length = _check_count(max_length, fn, "max_length", max(n_special, 1))
            if max_length > 2 ** 31 - 1:  # padding='max_length' would allocate (B, max_length) ids
                raise ValueError(f"{fn}: max_length {max_length} is too large (at most 2**31 - 1)")
        elif padding == "max_length":
            raise ValueError(f"{fn}: padding='max_length' needs max_length")
        elif truncation:
            raise ValueError(f"{fn}: truncation=True needs max_length")
        rows = []
        for i, enc in enumerate(self._tok.encode_batch(texts, add_special_tokens=False)):
            ids = enc.ids
            if max_length is not None and len(ids) + n_special > max_length:
                if not truncation:
                    raise ValueError(f"{fn}: texts[{i}] encodes to {len(ids) + n_special} ids, more than "
                                     f"max_length {max_length} (pass truncation=True to cut it)")
                ids = ids[:max_length - n_special]
            rows.append(self._with_specials(ids, add_bos, add_eos, fn))
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        if self.pad_id is None and any(len(r) < width for r in rows):
            raise ValueError(f"{fn}: the batch needs padding but the tokenizer has no pad token "
                             f"(set one, e.g. tok.pad_token = tok.eos_token)")
        out = np.full((len(rows), width), self.pad_id if self.pad_id is not None else 0, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            start = width - len(r) if padding_side == "left" else 0
            out[i, start:start + len(r)] = r
            mask[i, start:start + len(r)] = True
        return out, mask

    # ------------------------------------------------------------------ decoding

    def _ids(self, ids, fn, ndim):
        try:
            a = np.asarray(ids) if isinstance(ids, (list, tuple)) else foreign_array(ids, fn, "ids", kinds="biufcOSUV")
        except ValueError as e:   # a ragged nested list
            raise ValueError(f"{fn}: ids must be a rectangular {ndim}-D sequence of ints: {e}") from None
        if a.size == 0:
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{fn}: ids must hold ints, got dtype {a.dtype}")
        if a.ndim != ndim:
            raise ValueError(f"{fn}: ids must be {ndim}-D, got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= self._vocab_size):
            bad = a[(a < 0) | (a >= self._vocab_size)].flat[0]
            raise ValueError(f"{fn}: id {bad} is outside the vocabulary [0, {self._vocab_size})")
        return a.astype(np.int64, copy=False)

    def _decode_row(self, ids, skip_special_tokens):
        keep = [int(i) for i in ids]
        if skip_special_tokens:
            unk = self.unk_id   # unk stands for text that was there: kept
            keep = [i for i in keep if i not in self._special_ids or i == unk]
        return self._tok.decode(keep, skip_special_tokens=False)

    def decode(self, ids, skip_special_tokens=True):
        """Text of a 1-D sequence of ids (list, NumPy array, mmu or torch tensor). skip_special_tokens
        drops the special tokens (pad, bos, eos, added ones) but keeps unk, which stands for text."""
        fn = "TextTokenizer.decode"
        a = self._ids(ids, fn, 1)
        return self._decode_row(a, flag(skip_special_tokens, fn, "skip_special_tokens"))

    def decode_batch(self, ids, attention_mask=None, skip_special_tokens=True):
        """Texts of a (B, L) batch of ids -> list of B str. attention_mask (B, L) bool, when given,
        keeps only the True places (the padding of either side goes, whatever token it holds)."""
        fn = "TextTokenizer.decode_batch"
        a = self._ids(ids, fn, 2)
        skip = flag(skip_special_tokens, fn, "skip_special_tokens")
        if attention_mask is not None:
            m = np.asarray(foreign_array(attention_mask, fn, "attention_mask", kinds="bui"))
            if m.shape != a.shape:
                raise ValueError(f"{fn}: attention_mask has shape {m.shape}, ids {a.shape}")
            m = m.astype(bool)
            return [self._decode_row(a[i][m[i]], skip) for i in range(a.shape[0])]
        return [self._decode_row(row, skip) for row in a]

    # ------------------------------------------------------------------ files

    def save(self, directory):
        """Write `directory`/tokenizer.json (the tokenizers library's format) and `directory`/META_FILE
        (the special-token roles), each atomically (a temp file moved into place); the directory is
        made if missing. `from_pretrained(directory)` loads it back."""
        from ..io.safetensors import _atomic_write

        fn = "TextTokenizer.save"
        directory = os.fspath(directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise FileExistsError(f"{fn}: {directory!r} exists and is not a directory")
        os.makedirs(directory, exist_ok=True)
        body = self._tok.to_str(pretty=True).encode("utf-8")
        meta = {"format": _META_FORMAT, "version": _META_VERSION, "special_tokens": self.special_tokens}
        _atomic_write(os.path.join(directory, TOKENIZER_FILE), lambda f: f.write(body))
        _atomic_write(os.path.join(directory, META_FILE),
                      lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode("utf-8")))

    def __repr__(self):
        roles = ", ".join(f"{r}={t!r}" for r, t in self._roles.items() if t is not None)
        return f"TextTokenizer(vocab_size={self._vocab_size}, {type(self._tok.model).__name__}, {roles})"


def _read_meta(path, fn):
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{fn}: cannot read {path!r}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != _META_FORMAT:
        raise ValueError(f"{fn}: {path!r} is not an mmu text tokenizer file (format {_META_FORMAT!r})")
    if meta.get("version") != _META_VERSION:
        raise ValueError(f"{fn}: {path!r} has version {meta.get('version')!r}; this mmu reads {_META_VERSION}")
    roles = meta.get("special_tokens")
    if not isinstance(roles, dict) or set(roles) != set(SPECIAL_ROLES) or \
            not all(v is None or isinstance(v, str) for v in roles.values()):
        raise ValueError(f"{fn}: {path!r}: special_tokens must map {SPECIAL_ROLES} to a str or null")
    return roles


def _guess_roles(tok):
    """{role: token or None} read from a loaded tokenizers.Tokenizer (see TextTokenizer.from_file)."""
    roles = dict.fromkeys(SPECIAL_ROLES)
    try:
        spec = json.loads(tok.to_str())
    except ValueError:
        spec = {}
    unk = (spec.get("model") or {}).get("unk_token")
    if isinstance(unk, str) and tok.token_to_id(unk) is not None:
        roles["unk"] = unk
    post = spec.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        seq = [i for i, p in enumerate(single) if "Sequence" in p]
        if seq:
            for role, part in (("bos", single[:seq[0]]), ("eos", single[seq[0] + 1:])):
                names = [p["SpecialToken"]["id"] for p in part if "SpecialToken" in p]
                if len(names) == 1 and tok.token_to_id(names[0]) is not None:
                    roles[role] = names[0]
    for role, names in _GUESS.items():
        if roles[role] is None:
            roles[role] = next((n for n in names if tok.token_to_id(n) is not None), None)
    return roles


def save_beside_model(tokenizer, directory):
    """A model's save_pretrained helper: writes the tokenizer's files into the model's folder, or, for a
    model without one (tokenizer None), removes the pair an earlier save left there, so loading the
    folder gives back what was saved."""
    if tokenizer is not None:
        tokenizer.save(directory)
        return
    paths = [os.path.join(directory, f) for f in (TOKENIZER_FILE, META_FILE)]
    if all(os.path.isfile(p) for p in paths):  # only a pair that TextTokenizer.save wrote
        for p in paths:
            os.remove(p)


def load_beside_model(directory):
    """The TextTokenizer that save_beside_model wrote into a model's folder, or None when it holds none."""
    if os.path.isfile(os.path.join(directory, TOKENIZER_FILE)):
        return TextTokenizer.from_pretrained(directory)
    return None


class SavesTextTokenizer:
    """Mixin for a Module (listed before Module in its bases) that owns a text tokenizer in the attribute
    named by `text_tokenizer_attr`: save_pretrained also writes the tokenizer's files beside the weights,
    and from_pretrained gives the loaded model the tokenizer the folder holds (or None)."""
    text_tokenizer_attr = "text_tokenizer"

    def save_pretrained(self, save_directory):
        """config.json + model.safetensors (Module.save_pretrained) and the text tokenizer's files beside
        them (TextTokenizer.save); without a tokenizer, tokenizer files an earlier save left are removed,
        so loading the folder gives back what was saved."""
        super().save_pretrained(save_directory)
        save_beside_model(getattr(self, self.text_tokenizer_attr), save_directory)

    @classmethod
    def from_pretrained(cls, save_directory, strict=True):
        """The model save_pretrained wrote, with its text tokenizer when the folder holds one."""
        model = super().from_pretrained(save_directory, strict=strict)
        setattr(model, cls.text_tokenizer_attr, load_beside_model(save_directory))
        return model
