"""VILAU: VILA-U's autoregressive model (Wu et al., ICLR 2025; mit-han-lab/vila-u, read): one LLaMA-style
transformer over text tokens and visual positions, a depth transformer that predicts the D residual codes of
each visual position, and the frozen unified vision tower whose codebook embeds the codes.

What follows VILA-U's code (vila_u/model/vila_u_arch.py, language_model/vila_u_llama.py,
train/transformers_replace/models/llama/modeling_llama.py):
- a visual position's input is mm_projector(sum_d e_d(code_d)): the tower's codebook vectors of its D codes,
  summed (VILA-U's `torch.cumsum(embed_with_model_aux(code), dim=-2)[:, :, -1, :]`), through the projector;
- the codes of the visual position p are predicted by the depth transformer from the LLM's final-normed
  hidden state at position p - 1 (VILA-U's `hidden_state[start_idx:end_idx - 1]` for the labels
  `label[start_idx + 1:end_idx]`), so [SOI]'s state predicts the first position's codes;
- the loss is text cross-entropy + code cross-entropy, each a mean over its targets in the batch.
Where mmu differs, on purpose: supervision covers only the later modality, as the issue asks ([image, text]:
the text tokens and [EOT]; [text, image] / [text, video]: the codes of every visual position). VILA-U's
conversation labels also score the [SOI] / [EOI] tokens of a generated image as text; mmu's generation places
them itself. Sequences are minimal (no chat template): see training_step.
"""
import numpy as np

from ..._args import flag, is_int
from .._batch import id_rows, task_parts
from ...autograd import no_grad
from ...functional import cross_entropy
from ...nn import GELU, Linear, Module, Sequential, TransformerLM
from ...nn.module import _class_path, _encode, _NotSerialisable
from ...tensor import _as_tensor, cat as _cat, cumsum as _cumsum
from ...tensor import rand as _rand
from ...tensor import tensor as _tensor
from .config import MM_PROJECTORS, VILAUConfig, tower_geometry
from .depth import DepthTransformer

__all__ = ["VILAU", "MMProjector"]

IGNORE_INDEX = -100
TASKS = ("i2t", "t2i", "t2v")
# the keys of each part of a training batch (training_step)
_PART_KEYS = {"i2t": ("codes", "images", "text_ids", "question_ids"), "t2i": ("codes", "images", "text_ids"),
              "t2v": ("codes", "text_ids")}


class MMProjector(Module):
    """VILA-U's multimodal projector (multimodal_projector/base_projector.py): `layers` is Linear(in_dim,
    out_dim) for 'linear', Sequential(Linear(in_dim, out_dim), GELU() (exact), Linear(out_dim, out_dim)) for
    'mlp2x_gelu'; the state_dict keys are VILA-U's (layers.weight / layers.0.weight, layers.2.weight)."""

    def __init__(self, kind, in_dim, out_dim):
        super().__init__()
        if not isinstance(kind, str) or kind not in MM_PROJECTORS:
            raise ValueError(f"MMProjector: kind must be one of {MM_PROJECTORS}, got {kind!r}")
        self.kind = kind
        if kind == "linear":
            self.layers = Linear(in_dim, out_dim)
        else:
            self.layers = Sequential(Linear(in_dim, out_dim), GELU(), Linear(out_dim, out_dim))

    def forward(self, x):
        """(..., in_dim) -> (..., out_dim)."""
        return self.layers(x)

    def extra_repr(self):
        return f"kind={self.kind!r}"


def _resolve_config(config, fields_):
    if config is not None and fields_:
        raise TypeError("VILAU: give a config or keyword fields, not both")
    if config is None:
        return VILAUConfig.from_dict(fields_)
    if isinstance(config, VILAUConfig):
        return VILAUConfig.from_dict(config.to_dict())  # a private, re-validated copy
    if isinstance(config, dict):
        return VILAUConfig.from_dict(config)
    raise TypeError(f"VILAU: config must be a VILAUConfig or a dict, got {type(config).__name__}")


def _array(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else x)


def _tower_dict(tower):
    """The tower's config as a dict of its fields (tower.config.to_dict())."""
    cfg = getattr(tower, "config", None)
    if cfg is None or not callable(getattr(cfg, "to_dict", None)):
        raise TypeError(f"VILAU: the tower must have .config with to_dict() (a UnifiedVisionTowerConfig), got "
                        f"{type(tower).__name__}")
    d = cfg.to_dict()
    if not isinstance(d, dict):
        raise TypeError(f"VILAU: tower.config.to_dict() must return a dict, got {type(d).__name__}")
    return d


def text_rows(text_ids, fn, name, config, batch=None):
    """Texts -> a list of lists of text ids: a list of id sequences or a 2-D int array padded with negative
    values; a leading [SOT] and a trailing [EOT] are dropped (the sequences add them). Every id must be a
    text id in [0, llm_vocab_size)."""
    rows = id_rows(text_ids, fn, name)
    if not rows:
        raise ValueError(f"{fn}: {name} is empty")
    if batch is not None and len(rows) != batch:
        raise ValueError(f"{fn}: {name} has {len(rows)} rows, the batch has {batch}")
    for i, r in enumerate(rows):
        for v in r:
            if not 0 <= v < config.llm_vocab_size:
                raise ValueError(f"{fn}: {name}[{i}] holds id {v}, outside the text ids [0, llm_vocab_size="
                                 f"{config.llm_vocab_size})")
        if r and r[0] == config.sot_token_id:
            r.pop(0)
        if r and r[-1] == config.eot_token_id:
            r.pop()
    return rows


class VILAU(Module):
    """VILA-U's autoregressive model: `VILAU(VILAUConfig(...), tower=None)`, `VILAU(**fields)` or
    `VILAU(dict)`.

    `.config`: the validated VILAUConfig; `.lm`: mmu.nn.TransformerLM (LLaMA-style: RMSNorm, SwiGLU, RoPE,
    no biases) over config.vocab_size ids (text + [SOI], [EOI], [SOV], [EOV]); `.mm_projector` (MMProjector:
    codebook_dim -> dim); `.depth` (DepthTransformer: hidden state -> the D codes); `.tower`: the frozen
    vision tower (an mmu module becomes a submodule, its weights in the state_dict under "tower.*", kept in
    eval mode without gradients; without tower= it is built from config.tower (build_tower=False: None until
    set); a dict given as tower= is the config field). The tower provides code_embeddings(codes (..., D)) ->
    (..., D, C), encode(images) -> (B, h, w, D), decode(codes) -> images, latent_shape and config (with
    to_dict()). A tower given to the constructor replaces config.tower by its config (the modules are sized
    by it); one assigned later (model.tower = ...) must have config.tower's codebook_size, rvq_depth,
    codebook_dim and latent_shape, and its config is recorded as config.tower.

    Sequences (one position per text token or visual position; image i's codes are at its h w positions in
    row-major order, a video's frames follow each other):
      image -> text  [SOI] v_1 .. v_N [EOI] [SOT] question answer [EOT]   targets: answer, [EOT]
      text -> image  [SOT] text [EOT] [SOI] v_1 .. v_N [EOI]             targets: the D codes of every v_i
      text -> video  [SOT] text [EOT] [SOV] v_1 .. v_TN [EOV]            targets: the D codes of every v_i
    Text -> visual rows are left padded (their [SOI] / [SOV] in one column; positions count real tokens
    only), image -> text rows right padded.

    Trainer protocol: training_step(batch, step) -> (loss_text + loss_visual, logs); evaluate_step(batch).
    Generation (generation.py): generate_images, generate_video, answer.
    """

    config_class = VILAUConfig

    def __init__(self, config=None, tower=None, build_tower=True, **fields_):
        super().__init__()
        if isinstance(tower, dict):  # the config field (the tower's config fields), not a module
            fields_["tower"], tower = tower, None
        cfg = _resolve_config(config, fields_)
        if tower is not None:  # the given tower's config is the config's tower (the modules are sized by it)
            cfg.tower = _tower_dict(tower)
            cfg.validate()
        object.__setattr__(self, "config", cfg)
        k, d, c, _ = cfg.tower_geometry()
        self.lm = TransformerLM(**cfg.lm_kwargs())
        self.mm_projector = MMProjector(cfg.mm_projector, c, cfg.dim)
        self.depth = DepthTransformer(c, cfg.dim, cfg.depth_dim, cfg.depth_layers, cfg.depth_heads, d, k,
                                      dropout=cfg.depth_dropout, init_std=cfg.init_std)
        if tower is None and flag(build_tower, "VILAU", "build_tower"):
            from .tower import UnifiedVisionTower, UnifiedVisionTowerConfig
            tower = UnifiedVisionTower(UnifiedVisionTowerConfig.from_dict(cfg.tower))
        self.tower = tower  # records the config (_record_config)

    # ------------------------------------------------------------------ the tower
    @property
    def tower(self):
        """The frozen vision tower (or None)."""
        m = self.__dict__["_modules"].get("tower")
        return m if m is not None else self.__dict__.get("_tower_object")

    def __setattr__(self, name, value):
        if name == "tower":
            self._set_tower(value)
        else:
            super().__setattr__(name, value)

    def _set_tower(self, tower):
        d = self.__dict__
        if tower is not None:
            for attr in ("code_embeddings", "decode", "encode"):
                if not callable(getattr(tower, attr, None)):
                    raise TypeError(f"VILAU: the tower must have {attr}(), got {type(tower).__name__}")
            have = tower_geometry(_tower_dict(tower))
            if have != self.config.tower_geometry():
                raise ValueError(f"VILAU: the tower's (codebook_size, rvq_depth, codebook_dim, latent_shape) {have} "
                                 f"differ from config.tower's {self.config.tower_geometry()}")
            if tuple(tower.latent_shape) != have[3]:
                raise ValueError(f"VILAU: tower.latent_shape {tuple(tower.latent_shape)} is not the "
                                 f"image_size / patch_size of its config, {have[3]}")
        d["_modules"].pop("tower", None)
        d.pop("_tower_object", None)
        if tower is not None:
            self.config.tower = _tower_dict(tower)
        self._record_config(isinstance(tower, Module))
        if isinstance(tower, Module):
            tower.requires_grad_(False)
            tower.eval()
            d["_modules"]["tower"] = tower
        elif tower is not None:
            d["_tower_object"] = tower

    def _record_config(self, build_tower):
        """What save_pretrained writes: the config's fields (the tower's nested), and whether from_pretrained
        builds the tower (an mmu module, whose weights are in the state_dict) or leaves it to be set."""
        enc = _encode(self.config, "the VILAU config")
        self.__dict__["_config"] = enc if isinstance(enc, _NotSerialisable) else \
            {"class": _class_path(type(self)), "args": {"config": None, "tower": None, "build_tower": build_tower,
                                                         "**fields_": enc["__config__"]["fields"]}}

    def _need_tower(self, fn):
        if self.tower is None:
            raise RuntimeError(f"{fn}: the model has no vision tower (set model.tower = UnifiedVisionTower(...))")
        return self.tower

    def train(self, mode=True):
        """Training mode for the LLM, projector and depth transformer; the frozen tower stays in eval mode."""
        super().train(mode)
        tower = (self.__dict__.get("_modules") or {}).get("tower")
        if tower is not None:
            tower.eval()
        return self

    # ------------------------------------------------------------------ embeddings
    def _codes(self, codes, fn, name, positions=None):
        """Codes -> int64 (B, P, D) in [0, K): (B, P, D) or a grid (B, h, w, D) / (B, T, h, w, D) /
        (B, T, P, D); positions: the multiple of tokens_per_image P must be (None: exactly one image)."""
        k, d, _, _ = self.config.tower_geometry()
        n = self.config.tokens_per_image
        a = _array(codes)
        if a.dtype.kind not in "iu" or a.ndim < 3 or a.shape[-1] != d or a.shape[0] < 1:
            raise ValueError(f"{fn}: {name} must be integer codes (B, ..., D={d}), got {a.dtype} {a.shape}")
        p = int(np.prod(a.shape[1:-1]))
        if (positions is None and p != n) or (positions == "frames" and (p == 0 or p % n)):
            want = f"{n} positions (h w)" if positions is None else f"a multiple of {n} positions (T h w)"
            raise ValueError(f"{fn}: {name} must hold {want} of D={d} codes per row, got shape {a.shape}")
        a = a.reshape(a.shape[0], p, d).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"{fn}: {name} must be in [0, codebook_size={k}), got values in [{a.min()}, {a.max()}]")
        return a

    def code_embeddings(self, codes):
        """The tower's codebook vectors of codes (..., d) int, d <= D (the first d depths) -> Tensor
        (..., d, C) without gradient. Fewer than D codes (generation, depth by depth) are padded with code 0
        for the tower's call and its first d vectors kept (VILA-U fills the rest with the first code)."""
        fn = "VILAU.code_embeddings"
        tower = self._need_tower(fn)
        k, d, c, _ = self.config.tower_geometry()
        a = _array(codes)
        if a.dtype.kind not in "iu" or a.ndim < 1 or not 1 <= a.shape[-1] <= d:
            raise ValueError(f"{fn}: codes must be integer (..., d) with 1 <= d <= D={d}, got {a.dtype} {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"{fn}: codes must be in [0, codebook_size={k}), got values in [{a.min()}, {a.max()}]")
        given = a.shape[-1]
        if given < d:
            a = np.concatenate([a, np.zeros(a.shape[:-1] + (d - given,), a.dtype)], -1)
        out = _as_tensor(tower.code_embeddings(np.ascontiguousarray(a, np.int64)), fn, "tower.code_embeddings")
        if tuple(out.shape) != a.shape + (c,):
            raise ValueError(f"{fn}: tower.code_embeddings returned {out.shape}, expected {a.shape + (c,)}")
        if given < d:
            lead = int(np.prod(a.shape[:-1]))
            out = out.reshape(lead, d, c)[:, :given].reshape(a.shape[:-1] + (given, c))
        return out.detach() if out.requires_grad else out

    def visual_embeddings(self, codes):
        """The LLM input of visual positions: codes (M, D) -> Tensor (M, dim) = mm_projector(sum_d e_d(code_d))
        (VILA-U: cumsum of the code embeddings over depth, the last)."""
        a = _array(codes)
        if a.ndim != 2:
            raise ValueError(f"VILAU.visual_embeddings: codes must be (M, D), got shape {a.shape}")
        e = self.code_embeddings(a)
        d = e.shape[1]
        summed = _cumsum(e, 1)[:, d - 1]
        return self.mm_projector(summed)

    def embed(self, ids, codes=None):
        """The LLM's input embeddings of a mixed sequence -> Tensor (B, L, dim).

        ids (B, L) int: text / special ids in [0, vocab_size) at text positions (anything, e.g. -1, at visual
        ones); codes (B, L, D) int: -1 at text positions, the D codes in [0, codebook_size) at visual ones
        (None: all text). Text positions take lm.embed_tokens, visual ones visual_embeddings."""
        fn = "VILAU"
        c = self.config
        ids = _array(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise ValueError(f"{fn}: ids must be (B, L) integer ids with B, L >= 1, got {ids.dtype} {ids.shape}")
        b, length = ids.shape
        if codes is None:
            visual = np.zeros((b, length), bool)
            flat_codes = None
        else:
            k, d, _, _ = c.tower_geometry()
            codes = _array(codes)
            if codes.dtype.kind not in "iu" or codes.shape != (b, length, d):
                raise ValueError(f"{fn}: codes must be integer (B, L, D) = ({b}, {length}, {d}) with -1 at text "
                                 f"positions, got {codes.dtype} {codes.shape}")
            visual = codes[..., 0] >= 0
            if (codes[visual] < 0).any() or (codes[visual] >= k).any() or (codes[~visual] != -1).any():
                raise ValueError(f"{fn}: codes must be -1 at every depth of a text position and in [0, "
                                 f"codebook_size={k}) at every depth of a visual one")
            flat_codes = codes.reshape(b * length, d)
        text = ids[~visual]
        if text.size and (text.min() < 0 or text.max() >= c.vocab_size):
            raise ValueError(f"{fn}: ids at text positions must be in [0, vocab_size={c.vocab_size}), got values "
                             f"in [{text.min()}, {text.max()}]")
        vis_flat = visual.reshape(-1)
        text_pos, vis_pos = np.flatnonzero(~vis_flat), np.flatnonzero(vis_flat)
        parts = []
        if text_pos.size:
            parts.append(self.lm.embed_tokens(_tensor(np.ascontiguousarray(text.astype(np.int64)))))
        if vis_pos.size:
            parts.append(self.visual_embeddings(flat_codes[vis_pos]))
        if len(parts) == 1:
            x = parts[0]
        else:  # text rows then visual rows, put back in sequence order (index_select's backward scatters)
            order = np.empty(b * length, np.int64)
            order[text_pos] = np.arange(text_pos.size)
            order[vis_pos] = text_pos.size + np.arange(vis_pos.size)
            x = _cat(parts, 0).index_select(0, _tensor(order))
        return x.reshape(b, length, c.dim)

    # ------------------------------------------------------------------ forward
    def forward(self, ids, codes=None, attention_mask=None, position_ids=None, cache=None, attn_mask=None):
        """The LLM's final-normed hidden states (B, L, dim) of a mixed sequence (embed(ids, codes)), after
        cache.length cached positions. attention_mask / position_ids / cache / attn_mask: mmu.nn.TransformerLM's.
        Text logits: lm.head(hidden); code logits: depth(hidden at the position before, code embeddings)."""
        x = self.embed(ids, codes)
        start = cache.length if cache is not None and hasattr(cache, "length") else 0
        if start + x.shape[1] > self.config.max_seq_len:
            raise ValueError(f"VILAU: positions up to {start + x.shape[1]} exceed config.max_seq_len "
                             f"{self.config.max_seq_len}")
        return self.lm(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                       logits_at=None, attn_mask=attn_mask)

    def new_cache(self, batch_size, max_len):
        """An empty mmu.nn.KVCache of the LLM for batch_size rows of up to max_len <= config.max_seq_len
        positions."""
        if is_int(max_len) and max_len > self.config.max_seq_len:
            raise ValueError(f"VILAU.new_cache: max_len {max_len} exceeds config.max_seq_len {self.config.max_seq_len}")
        return self.lm.new_cache(batch_size, max_len)

    def encode_images(self, images):
        """Images (B, C, H, W) -> codes (B, h, w, D) int64: the frozen tower's encode (no graph)."""
        tower = self._need_tower("VILAU.encode_images")
        with no_grad():
            codes = _array(tower.encode(images))
        return np.ascontiguousarray(codes, np.int64)

    def decode(self, codes):
        """Codes (B, h, w, D) (or (B, T, h, w, D): frames) -> images (B, C, H, W) (or (B, T, C, H, W)): the
        tower's decode."""
        tower = self._need_tower("VILAU.decode")
        a = _array(codes)
        _, d, _, (h, w) = self.config.tower_geometry()
        if a.ndim == 5:
            flat = self._codes(a.reshape(-1, h, w, d) if a.shape[2:] == (h, w, d) else a, "VILAU.decode", "codes")
            with no_grad():
                out = _array(tower.decode(flat.reshape(-1, h, w, d)))
            return out.reshape(a.shape[:2] + out.shape[1:])
        flat = self._codes(a, "VILAU.decode", "codes")
        with no_grad():
            return _array(tower.decode(flat.reshape(-1, h, w, d)))

    # ------------------------------------------------------------------ training sequences
    def i2t_sequences(self, codes, text_ids, question_ids=None):
        """Image -> text rows: [SOI] v_1 .. v_N [EOI] [SOT] question text [EOT], right padded ->
        (ids (B, L) with -1 at visual positions and eot_token_id at pads, codes (B, L, D) with -1 at text
        positions, labels (B, L): the text ids and [EOT], -100 elsewhere)."""
        fn = "VILAU.i2t_sequences"
        c = self.config
        codes = self._codes(codes, fn, "codes")
        b, n, d = codes.shape
        texts = text_rows(text_ids, fn, "text_ids", c, batch=b)
        questions = text_rows(question_ids, fn, "question_ids", c, batch=b) if question_ids is not None \
            else [[] for _ in range(b)]
        head = n + 3  # [SOI] image [EOI] [SOT]
        length = head + max(len(q) + len(t) for q, t in zip(questions, texts)) + 1
        ids = np.full((b, length), c.eot_token_id, np.int64)
        full = np.full((b, length, d), -1, np.int64)
        labels = np.full((b, length), IGNORE_INDEX, np.int64)
        ids[:, 0], ids[:, 1:n + 1], ids[:, n + 1], ids[:, n + 2] = c.soi_token_id, -1, c.eoi_token_id, c.sot_token_id
        full[:, 1:n + 1] = codes
        for i, (q, t) in enumerate(zip(questions, texts)):
            row = q + t + [c.eot_token_id]
            ids[i, head:head + len(row)] = row
            labels[i, head + len(q):head + len(row)] = t + [c.eot_token_id]
        return ids, full, labels

    def t2v_sequences(self, text_ids, codes, video=False):
        """Text -> image (video=False: [SOT] text [EOT] [SOI] v_1 .. v_N [EOI]) or text -> video rows
        ([SOV] v_1 .. v_TN [EOV]), left padded so that [SOI] / [SOV] is in one column s ->
        (ids (B, L), codes (B, L, D), attention_mask (B, L) bool, s). The codes of v_j are predicted from
        the hidden state at column s + j - 1."""
        fn = "VILAU.t2v_sequences"
        c = self.config
        codes = self._codes(codes, fn, "codes", positions="frames" if video else None)
        b, p, d = codes.shape
        texts = text_rows(text_ids, fn, "text_ids", c, batch=b)
        s = max(len(t) for t in texts) + 2  # [SOT] text [EOT]
        length = s + p + 2
        ids = np.full((b, length), c.eot_token_id, np.int64)
        full = np.full((b, length, d), -1, np.int64)
        mask = np.zeros((b, length), bool)
        for i, t in enumerate(texts):
            row = [c.sot_token_id] + t + [c.eot_token_id]
            ids[i, s - len(row):s] = row
            mask[i, s - len(row):] = True
        ids[:, s] = c.sov_token_id if video else c.soi_token_id
        ids[:, s + 1:s + 1 + p] = -1
        ids[:, s + 1 + p] = c.eov_token_id if video else c.eoi_token_id
        full[:, s + 1:s + 1 + p] = codes
        return ids, full, mask, s

    # ------------------------------------------------------------------ losses
    def _parts(self, batch, fn):
        """A batch -> {task: part dict}, from {"t2i": {...}, ...} or flat {"t2i.codes": ..., ...}."""
        parts = task_parts(batch, _PART_KEYS, fn)
        for task, part in parts.items():
            if "text_ids" not in part:
                raise KeyError(f"{fn}: the {task!r} part needs 'text_ids'")
            if "codes" not in part and "images" not in part:
                raise KeyError(f"{fn}: the {task!r} part needs 'codes'" + (" or 'images'" if task != "t2v" else ""))
            if "codes" in part and "images" in part:
                raise KeyError(f"{fn}: the {task!r} part has both 'codes' and 'images'; give one")
        return parts

    def _part_codes(self, part):
        return part["codes"] if "codes" in part else self.encode_images(part["images"])

    def _text_loss(self, part, fn):
        ids, codes, labels = self.i2t_sequences(self._part_codes(part), part["text_ids"], part.get("question_ids"))
        b = len(ids)
        # logits only where the next token is a target: position j predicts labels[j + 1]
        targets = [np.flatnonzero(labels[i, 1:] != IGNORE_INDEX) for i in range(b)]
        n = max(len(t) for t in targets)
        where = np.zeros((b, n), np.int64)
        want = np.full((b, n), IGNORE_INDEX, np.int64)
        for i, t in enumerate(targets):
            where[i, :len(t)] = t
            want[i, :len(t)] = labels[i, t + 1]
        x = self.embed(ids, codes)
        if x.shape[1] > self.config.max_seq_len:
            raise ValueError(f"{fn}: an image -> text row of {x.shape[1]} positions exceeds config.max_seq_len "
                             f"{self.config.max_seq_len}")
        logits = self.lm(inputs_embeds=x, logits_at=where)
        return cross_entropy(logits.reshape(b * n, self.config.vocab_size), _tensor(want.reshape(-1)))

    def _visual_loss(self, part, fn, video):
        """(sum of the code cross-entropies, their count, the share of rows whose prompt was dropped)."""
        c = self.config
        codes = self._codes(self._part_codes(part), fn, "the 't2v' codes" if video else "the 't2i' codes",
                            positions="frames" if video else None)
        b, p, d = codes.shape
        texts = text_rows(part["text_ids"], fn, "text_ids", c, batch=b)
        # condition dropout (classifier-free guidance): the prompt becomes the empty text with probability
        # cond_dropout_prob, drawn from mmu's RNG (checkpointed: a resumed run draws the same)
        drop = _rand(b).numpy() < c.cond_dropout_prob
        texts = [[] if dropped else t for t, dropped in zip(texts, drop)]
        ids, full, mask, s = self.t2v_sequences(texts, codes, video=video)
        if ids.shape[1] > c.max_seq_len:
            raise ValueError(f"{fn}: a text -> {'video' if video else 'image'} row of {ids.shape[1]} positions "
                             f"exceeds config.max_seq_len {c.max_seq_len}")
        hidden = self(ids, full, attention_mask=mask)  # (B, L, dim)
        length = ids.shape[1]
        rows = (np.arange(b)[:, None] * length + s + np.arange(p)[None, :]).reshape(-1)
        h = hidden.reshape(b * length, c.dim).index_select(0, _tensor(rows)).reshape(b, p, c.dim)
        logits = self.depth(h, self.code_embeddings(codes))  # (B, P, D, K)
        total = cross_entropy(logits.reshape(b * p * d, logits.shape[-1]), _tensor(codes.reshape(-1)),
                              reduction="sum")
        return total, b * p * d, float(drop.mean())

    def losses(self, batch, fn="VILAU.losses"):
        """The loss terms of a batch -> ({"text": mean text cross-entropy (i2t), "visual": mean code
        cross-entropy over the t2i and t2v codes together}, logs {"loss_text", "loss_image", "loss_video",
        "cond_dropped"} of the parts present)."""
        parts = self._parts(batch, fn)
        terms, logs = {}, {}
        if "i2t" in parts:
            terms["text"] = self._text_loss(parts["i2t"], fn)
            logs["loss_text"] = terms["text"].item()
        total, count, dropped = None, 0, []
        for task, video in (("t2i", False), ("t2v", True)):
            if task in parts:
                part_sum, n, drop = self._visual_loss(parts[task], fn, video)
                logs["loss_video" if video else "loss_image"] = part_sum.item() / n
                total = part_sum if total is None else total + part_sum
                count += n
                dropped.append(drop)
        if total is not None:
            terms["visual"] = total * (1.0 / count)
            logs["cond_dropped"] = float(np.mean(dropped))
        return terms, logs

    def training_step(self, batch, step):
        """The Trainer's step -> (loss, logs). batch: a dict with any of the parts
            "i2t": {"codes" (B, N, D) | "images", "text_ids", optional "question_ids"}  image -> text
            "t2i": {"text_ids", "codes" (B, N, D) | "images"}                            text -> image
            "t2v": {"text_ids", "codes" (B, T N, D) (or (B, T, h, w, D))}               text -> video
        as nested dicts or flat keys ("t2i.codes", ...); text ids are lists of id sequences or 2-D arrays
        padded with -1 (the sequences add [SOT] / [EOT]); N = config.tokens_per_image.
        Next-token prediction supervised only on the later modality: image -> text rows score the text (and
        [EOT], not the question); text -> image / video rows score the D codes of every visual position with
        the depth transformer on the hidden state of the position before it. Condition dropout:
        a text -> visual row's prompt becomes the empty text with probability config.cond_dropout_prob.
        loss = loss_text + loss_visual (VILA-U's sum), each a mean over its targets.
        logs: loss_text, loss_image, loss_video (of the parts present), cond_dropped."""
        terms, logs = self.losses(batch, "VILAU.training_step")
        loss = None
        for term in terms.values():
            loss = term if loss is None else loss + term
        return loss, logs

    def evaluate_step(self, batch):
        """{"loss", "loss_text", ...} of a batch without a graph (the Trainer averages them)."""
        with no_grad():
            loss, logs = self.training_step(batch, 0)
        logs["loss"] = loss.item()
        return logs

    # ------------------------------------------------------------------ generation (generation.py)
    def generate_images(self, prompts, cfg_scale=None, top_k=None, top_p=None, temperature=None, generator=None,
                        do_sample=True, trace=None):
        """Text -> image codes (B, h, w, D) int64: generation.generate_images (its docstring has the details)."""
        from .generation import generate_images
        return generate_images(self, prompts, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p,
                               temperature=temperature, generator=generator, do_sample=do_sample, trace=trace)

    def generate_video(self, prompts, num_frames, cfg_scale=None, top_k=None, top_p=None, temperature=None,
                       generator=None, do_sample=True, trace=None):
        """Text -> video codes (B, T, h, w, D) int64: generation.generate_video."""
        from .generation import generate_video
        return generate_video(self, prompts, num_frames, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p,
                              temperature=temperature, generator=generator, do_sample=do_sample, trace=trace)

    def answer(self, codes=None, question_ids=None, max_new_tokens=32, eos_token_id=None, images=None,
               do_sample=False, temperature=1.0, top_k=None, top_p=None, generator=None, trace=None):
        """Image (codes (B, h, w, D) or images) + question -> text ids (B, n): generation.answer."""
        from .generation import answer
        if (images is None) == (codes is None):
            raise ValueError("VILAU.answer: give codes or images (one of them)")
        if images is not None:
            codes = self.encode_images(images)
        return answer(self, codes, question_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                      do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                      trace=trace)

    def extra_repr(self):
        c = self.config
        k, d, cd, (h, w) = c.tower_geometry()
        return (f"vocab_size={c.vocab_size}, dim={c.dim}, num_layers={c.num_layers}, codebook_size={k}, "
                f"rvq_depth={d}, latent_shape=({h}, {w})")
