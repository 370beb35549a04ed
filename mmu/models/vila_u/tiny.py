"""VILA-U-tiny on the built-in captioned sets (16 px digits and/or shapes).

1. A word-level text tokenizer on mmu.data.caption_corpus(sets), shared by the tower's text encoder and the
   AR model.
2. The unified vision tower (UnifiedVisionTower: a 3-layer SigLIP-style ViT quantized after layer 2, a 4 x 4
   grid of residual codes, 256 shared codes, depth D = 4) trained with the paper's recipe (recipe.py): stage
   'align' (contrastive on the continuous features, text encoder trainable) then stage 'tower' (text encoder
   frozen, contrastive + reconstruction on the quantized features), on every caption of every train image.
3. VILAU (a LLaMA-style LM + depth transformer over the frozen tower's codes) trained by mmu.train.Trainer on
   batches of image -> text rows (the captions, and every question / answer of the set: "what digit is
   this?" -> "seven") and text -> image rows (caption -> the image's codes).

Tasks: answer_images (image -> caption or answer), generate_images (text -> codes -> tower decoder ->
pixels). The judges of the results (a scikit-learn classifier of real digits, mmu.data.judge_shapes) live in
benchmarks/eval_vila_u_tiny.py, never here. `mmu vila-u train | generate | answer` runs it from the command
line."""
import dataclasses
import json
import os
import time

import numpy as np

from ..._args import check_int, check_real, flag
from ...data.captioned import CAPTION_SETS, caption_sets
from ...tensor import manual_seed

__all__ = ["train_vila_u_tiny", "load_vila_u_tiny", "tiny_tower", "VILAUTinyRun", "generate_images", "answer_images",
           "tiny_images", "TINY_SETS", "DIGIT_QUESTION", "TINY_CFG_SCALE"]

TINY_SETS = CAPTION_SETS
DIGIT_QUESTION = "what digit is this?"
RUN_FILE = "vila_u_tiny_run.json"
TOWER_DIR = "tower"
SIZE = 16  # image side: 16 px, patch 4 -> a 4 x 4 grid of D codes
# the guidance of the tiny preset, from two trainings at seed 0 judged by benchmarks/eval_vila_u_tiny.py (100
# generated digits a scale, sampling seed 0): before the fused attention kernels, cfg 1.5 / 2.0 / 3.0 judged
# 96% / 99% / 92% (seeds 1, 2: 1.5 95% / 96%, 2.0 93% / 97%); on today's kernels 91% / 96% / 97%. 2.0 is the
# one at or above 93% in every sweep (VILA-U's 3.0 overshot the first model)
TINY_CFG_SCALE = 2.0


def _sets(sets, fn):
    """caption_sets in TINY_SETS' order (the order the images are stacked in)."""
    sets = caption_sets(sets, fn)
    return tuple(s for s in TINY_SETS if s in sets)


def tiny_images(images, channels):
    """Images (N, C, 16, 16) in [-1, 1] made `channels` wide: a grey digit repeated on 3 channels (digits
    and coloured shapes then share one RGB tower) or RGB averaged to grey."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or channels not in (1, 3):
        raise ValueError(f"tiny_images: images must be (N, 1 or 3, H, W) and channels 1 or 3, got "
                         f"{images.shape} and {channels!r}")
    if images.shape[1] == channels:
        return np.ascontiguousarray(images)
    if channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=1))
    return np.ascontiguousarray(images.mean(1, keepdims=True))


def _load(name, split, seed):
    from ... import data
    if name == "digits":
        return data.captioned_digits(SIZE, split, seed)
    return data.captioned_shapes(size=SIZE, split=split, seed=seed)


class _SetsData:
    """The captioned sets stacked: .images (N, C, 16, 16), .captions, .all_captions(i), .all_qa(i) (what
    recipe.tower_data reads)."""

    def __init__(self, parts, channels):
        self.parts = parts
        self.images = np.concatenate([tiny_images(p.images, channels) for p in parts])
        self.where = [(p, i) for p in parts for i in range(len(p))]
        self.captions = [p.captions[i] for p, i in self.where]

    def __len__(self):
        return len(self.images)

    def all_captions(self, i):
        p, j = self.where[i]
        return p.all_captions(j)

    def all_qa(self, i):
        p, j = self.where[i]
        return p.all_qa(j)


def _rows(ds):
    """Every image R times (R = the most captions + questions of any image); its k-th copy is the text ->
    image row of caption k (mod its captions) and the image -> text row of item k (mod its captions +
    questions): captions first (no question: captioning), then each question with its answer.
    -> (image index, t2i captions, i2t questions ('' for captioning), i2t targets)."""
    repeat = max(len(ds.all_captions(i)) + len(ds.all_qa(i)) for i in range(len(ds)))
    index, caps, qs, targets = [], [], [], []
    for i in range(len(ds)):
        c, qa = ds.all_captions(i), ds.all_qa(i)
        items = [("", t) for t in c] + list(qa)
        for k in range(repeat):
            index.append(i)
            caps.append(c[k % len(c)])
            q, t = items[k % len(items)]
            qs.append(q)
            targets.append(t)
    return np.asarray(index, np.int64), caps, qs, targets


def _ids(tok, texts):
    rows = [tok.encode(t) if t else [] for t in texts]
    out = np.full((len(rows), max(1, max(len(r) for r in rows))), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@dataclasses.dataclass
class VILAUTinyRun:
    """What train_vila_u_tiny returns: the trained `model` (a VILAU holding its frozen tower), `tokenizer`
    (the word-level mmu.text.TextTokenizer of its texts; the tower's text tokenizer too), `history` (the
    VILAU Trainer's), `tower_history` ({"align": History, "tower": History}; None when the tower came from
    `out` on resume), `seconds` {"tower", "vila_u"} of training, `sets`, `channels` (1: digits only, 3),
    `seed` (the run's: it also drew the sets' train / test splits, so evaluations read this seed's test
    split)."""
    model: object
    tokenizer: object
    history: object
    tower_history: object
    seconds: dict
    sets: tuple
    channels: int
    seed: int = 0


def tiny_tower(sets=("digits",), dim=64, codebook_size=256, rvq_depth=4, tokenizer=None):
    """The untrained tower of VILA-U-tiny -> UnifiedVisionTower: 16 px, patch 4 (a 4 x 4 grid), a dim-wide
    3-layer SigLIP-style ViT quantized after layer 2, codebook_size shared codes, depth rvq_depth, SigLIP's
    sigmoid contrastive loss, a 2-layer text encoder over `tokenizer` (default: the word-level tokenizer of
    mmu.data.caption_corpus(sets), set as tower.text_tokenizer); 1 channel for digits alone, else 3.
    Seed with mmu.manual_seed first for a reproducible init."""
    fn = "mmu.models.vila_u.tiny_tower"
    from ... import data as mdata
    from ...text import TextTokenizer
    from .tower import UnifiedVisionTower
    sets = _sets(sets, fn)
    corpus = mdata.caption_corpus(sets)
    tok = TextTokenizer.train_word_level(corpus) if tokenizer is None else tokenizer
    if not isinstance(tok, TextTokenizer):
        raise TypeError(f"{fn}: tokenizer must be an mmu.text.TextTokenizer or None, got {type(tok).__name__}")
    text_max_len = max(len(tok.encode(t)) for t in corpus) + 1  # SigLIP's layout: text + eos
    return UnifiedVisionTower(text_tokenizer=tok, image_size=SIZE, patch_size=4, in_channels=3 if "shapes" in sets
                              else 1, dim=check_int(dim, fn, "dim"), depth=3, num_heads=4, quantize_after=2,
                              codebook_size=check_int(codebook_size, fn, "codebook_size"),
                              rvq_depth=check_int(rvq_depth, fn, "rvq_depth"), contrastive="sigmoid",
                              text_vocab_size=tok.vocab_size, text_max_len=text_max_len, text_dim=dim, text_depth=2,
                              text_heads=4)


def train_vila_u_tiny(sets=("digits",), steps=1200, batch_size=32, lr=2e-3, dim=128, num_layers=2, num_heads=4,
                      tower_steps=1200, align_steps=None, tower_batch_size=64, tower_lr=1e-3, tower_dim=64,
                      codebook_size=256, rvq_depth=4, seed=0, out=None, resume=False, progress=False, verbose=False):
    """Trains VILA-U-tiny on built-in captioned images -> VILAUTinyRun.

    sets: ("digits",), ("shapes",) or both (then the grey digits are repeated on 3 channels). Images: 16 px,
    the train splits only (the shapes' train split never draws SHAPES_HELD_OUT's colour-shape pairs), so
    evaluations on the test splits are on images never trained on.
    1. the tower (tower_dim wide, 3 ViT layers quantized after 2, a 4 x 4 grid, codebook_size shared codes,
       rvq_depth D): recipe.train_recipe 'align_tower' for tower_steps AdamW steps (align_steps of stage
       'align', default half; the rest stage 'tower'), batch tower_batch_size, lr tower_lr, on every caption
       of every train image (recipe.tower_data). Frozen afterwards.
    2. VILAU(dim, num_layers, num_heads; depth transformer dim wide, 2 layers) trained `steps` steps of
       `batch_size` rows, each row an image -> text row (a caption, or a question and its answer) and a text
       -> image row (a caption -> the image's codes) of one image (`_rows`); AdamW lr, warmup steps // 20,
       cosine decay, condition dropout 0.1 (config.cond_dropout_prob), config.cfg_scale = TINY_CFG_SCALE.
    Everything is seeded by `seed`: the same seed gives bit-identical weights.
    out: the run's folder: tower/ (the trained tower, UnifiedVisionTower.save_pretrained), checkpoints/ (every
    steps // 5), the model (VILAU.save_pretrained + the text tokenizer: load_vila_u_tiny(out)),
    history.csv, vila_u_tiny_run.json (settings and seconds). resume: continue the run in `out` (the tower
    read back from out/tower, VILAU from its latest checkpoint)."""
    fn = "mmu.models.vila_u.train_vila_u_tiny"
    from ... import data as mdata
    from ...text import TextTokenizer
    from ...train import Trainer, TrainConfig
    from .model import VILAU
    from .recipe import tower_data, train_recipe
    from .tower import UnifiedVisionTower

    sets = _sets(sets, fn)
    for name, v in (("steps", steps), ("batch_size", batch_size), ("dim", dim), ("num_layers", num_layers),
                    ("num_heads", num_heads), ("tower_steps", tower_steps), ("tower_batch_size", tower_batch_size),
                    ("tower_dim", tower_dim), ("codebook_size", codebook_size), ("rvq_depth", rvq_depth)):
        if check_int(v, fn, name) < 1:
            raise ValueError(f"{fn}: {name} must be >= 1, got {v}")
    if tower_steps < 2:
        raise ValueError(f"{fn}: tower_steps must be >= 2 (stage 'align' then stage 'tower'), got {tower_steps}")
    if check_int(seed, fn, "seed") < 0:
        raise ValueError(f"{fn}: seed must be >= 0, got {seed}")
    lr, tower_lr = check_real(lr, fn, "lr"), check_real(tower_lr, fn, "tower_lr")
    if not lr > 0 or not tower_lr > 0:
        raise ValueError(f"{fn}: lr and tower_lr must be > 0, got {lr}, {tower_lr}")
    resume, progress, verbose = flag(resume, fn, "resume"), flag(progress, fn, "progress"), flag(verbose, fn, "verbose")
    if resume and out is None:
        raise ValueError(f"{fn}: resume=True needs the run's folder as out")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{fn}: out must be a folder path or None, got {type(out).__name__}")
    tower_dir = os.path.join(os.fspath(out), TOWER_DIR) if out is not None else None
    if resume and not os.path.isfile(os.path.join(tower_dir, "config.json")):
        raise FileNotFoundError(f"{fn}: resume=True but {tower_dir!r} holds no trained tower")
    ch = 3 if "shapes" in sets else 1

    # ---- data and the text tokenizer
    ds = _SetsData([_load(name, "train", seed) for name in sets], ch)
    corpus = mdata.caption_corpus(sets)
    tok = TextTokenizer.train_word_level(corpus)

    # ---- the tower: align then tower (the paper's recipe), frozen afterwards
    seconds = {"tower": 0.0, "vila_u": 0.0}
    tower_history = None
    if resume:
        tower = UnifiedVisionTower.from_pretrained(tower_dir)
        tower.text_tokenizer = tok
    else:
        manual_seed(seed)
        tower = tiny_tower(sets, tower_dim, codebook_size, rvq_depth, tokenizer=tok)
        start = time.perf_counter()
        tower_history = train_recipe(tower, tower_data(ds, tower), "align_tower", tower_steps, align_steps=align_steps,
                                     batch_size=tower_batch_size, lr=tower_lr, seed=seed, progress=progress)
        seconds["tower"] = time.perf_counter() - start
        tower.eval()
        if tower_dir is not None:
            tower.save_pretrained(tower_dir)

    # ---- VILAU on image -> text and text -> image rows
    index, caps, qs, targets = _rows(ds)
    max_text = max(len(tok.encode(t)) for t in corpus)
    manual_seed(seed)
    model = VILAU(tower=tower, llm_vocab_size=tok.vocab_size, sot_token_id=tok.bos_id, eot_token_id=tok.eos_id,
                  dim=dim, num_layers=num_layers, num_heads=num_heads, depth_dim=dim, depth_layers=2,
                  depth_heads=num_heads, max_seq_len=tower.tokens_per_image + 2 * max_text + 8,
                  cfg_scale=TINY_CFG_SCALE)
    codes = model.encode_images(ds.images)  # each image encoded once
    n = tower.tokens_per_image
    codes = codes.reshape(len(codes), n, -1)[index]
    train_data = {"i2t.codes": codes, "i2t.question_ids": _ids(tok, qs), "i2t.text_ids": _ids(tok, targets),
                  "t2i.text_ids": _ids(tok, caps), "t2i.codes": codes}
    tfields = dict(steps=steps, batch_size=min(batch_size, len(codes)), lr=lr, betas=(0.9, 0.95),
                   warmup_steps=steps // 20, log_every=max(1, steps // 50), seed=seed, progress=progress)
    if out is not None:
        tfields.update(ckpt_dir=os.path.join(os.fspath(out), "checkpoints"), ckpt_every=max(1, steps // 5))
    tcfg = TrainConfig(**tfields)
    trainer = Trainer.resume(tcfg.ckpt_dir, model, train_data, tcfg) if resume else Trainer(model, train_data, tcfg)
    if verbose:
        print(f"VILA-U-tiny on {'+'.join(sets)}: tower {tower.num_parameters():,} parameters, VILAU "
              f"{model.num_parameters() - tower.num_parameters():,} more, {len(codes)} rows, {tcfg.steps} steps x "
              f"batch {tcfg.batch_size}" + (f", resumed at step {trainer.step}" if resume else ""))
    start = time.perf_counter()
    history = trainer.fit()
    seconds["vila_u"] = time.perf_counter() - start
    if out is not None and trainer._saved_step != trainer.step:
        trainer.save_checkpoint(trainer._ckpt_path(trainer.step))
        trainer._prune()
    model.eval()
    run = VILAUTinyRun(model, tok, history, tower_history, seconds, sets, ch, seed)
    if out is not None:
        out = os.fspath(out)
        model.save_pretrained(out)
        tok.save(out)
        if len(history):
            history.to_csv(os.path.join(out, "history.csv"))
        with open(os.path.join(out, RUN_FILE), "w") as f:
            json.dump({"sets": list(sets), "steps": trainer.step, "batch_size": tcfg.batch_size, "lr": lr, "dim": dim,
                       "num_layers": num_layers, "num_heads": num_heads, "tower_steps": tower_steps,
                       "align_steps": align_steps, "tower_batch_size": tower_batch_size, "tower_lr": tower_lr,
                       "tower_dim": tower_dim, "codebook_size": codebook_size, "rvq_depth": rvq_depth, "seed": seed,
                       "seconds": seconds}, f, indent=2)
    if verbose:
        print(f"trained in {seconds['tower']:.0f} s (tower) + {seconds['vila_u']:.0f} s (VILA-U)" +
              (f"; last loss {history.last.get('loss', float('nan')):.3f}" if len(history) else ""))
    return run


def load_vila_u_tiny(path):
    """A folder written by train_vila_u_tiny(out=path) -> VILAUTinyRun (model in eval mode, tokenizer,
    sets and channels from the run file; histories None, seconds as recorded)."""
    fn = "mmu.models.vila_u.load_vila_u_tiny"
    from ...text import TextTokenizer
    from .model import VILAU
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a folder path, got {type(path).__name__}")
    path = os.fspath(path)
    for f in ("config.json", RUN_FILE, "tokenizer.json"):
        if not os.path.isfile(os.path.join(path, f)):
            raise FileNotFoundError(f"{fn}: {path!r} holds no {f} (a folder written by train_vila_u_tiny(out=...))")
    with open(os.path.join(path, RUN_FILE)) as f:
        info = json.load(f)
    model = VILAU.from_pretrained(path).eval()
    tok = TextTokenizer.from_pretrained(path)
    model.tower.text_tokenizer = tok
    sets = tuple(info["sets"])
    return VILAUTinyRun(model, tok, None, None, info.get("seconds", {}), sets, 3 if "shapes" in sets else 1,
                        int(info.get("seed", 0)))


def _check_run(run, fn):
    if not isinstance(run, VILAUTinyRun):
        raise TypeError(f"{fn}: run must be a VILAUTinyRun (train_vila_u_tiny / load_vila_u_tiny), got "
                        f"{type(run).__name__}")


def _texts(texts, fn, name):
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts or any(not isinstance(t, str) for t in texts):
        raise TypeError(f"{fn}: {name} must be a str or a non-empty list of str")
    return list(texts)


def generate_images(run, prompts, num_samples=1, cfg_scale=None, temperature=None, top_k=None, top_p=None,
                    seed=0):
    """Text -> image codes -> the tower's decoder -> images np.float32 (len(prompts) * num_samples, C, 16, 16)
    in [-1, 1], the num_samples images of a prompt together. cfg_scale (None: the model's config.cfg_scale,
    TINY_CFG_SCALE for a tiny run), temperature / top_k / top_p: VILAU.generate_images; seed: an
    mmu.Generator(seed) for the sampling."""
    fn = "mmu.models.vila_u.tiny.generate_images"
    from ..._C import Generator
    _check_run(run, fn)
    prompts = _texts(prompts, fn, "prompts")
    if check_int(num_samples, fn, "num_samples") < 1:
        raise ValueError(f"{fn}: num_samples must be >= 1, got {num_samples}")
    ids = [run.tokenizer.encode(p) for p in prompts for _ in range(num_samples)]
    codes = run.model.generate_images(ids, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                                      generator=Generator(check_int(seed, fn, "seed")))
    return np.clip(run.model.decode(codes), -1.0, 1.0)


def answer_images(run, images, question=DIGIT_QUESTION, max_new_tokens=6, batch_size=64):
    """Image -> text: the greedy answer to `question` (a str for every image, or a list of one per image;
    None or '' captions the image) about images (N, C, 16, 16) in [-1, 1] (grey digits are widened to the tower's
    channels) -> a list of N strings."""
    fn = "mmu.models.vila_u.tiny.answer_images"
    _check_run(run, fn)
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2:] != (SIZE, SIZE) or not len(x):
        raise ValueError(f"{fn}: images must be (N, 1 or 3, {SIZE}, {SIZE}) with N >= 1, got {x.shape}")
    x = tiny_images(x, run.channels)
    if question is None or isinstance(question, str):
        questions = [question or ""] * len(x)
    else:
        if not isinstance(question, (list, tuple)) or any(q is not None and not isinstance(q, str) for q in question):
            raise TypeError(f"{fn}: question must be a str, None, or a list of them (one per image)")
        questions = [q or "" for q in question]
        if len(questions) != len(x):
            raise ValueError(f"{fn}: {len(questions)} questions for {len(x)} images")
    m, tok = run.model, run.tokenizer
    if check_int(batch_size, fn, "batch_size") < 1:
        raise ValueError(f"{fn}: batch_size must be >= 1, got {batch_size}")
    out = []
    for s in range(0, len(x), batch_size):
        q = [tok.encode(t) if t else [] for t in questions[s:s + batch_size]]
        ids = m.answer(images=x[s:s + batch_size], question_ids=q, max_new_tokens=max_new_tokens)
        out += [tok.decode([int(t) for t in row if 0 <= t < m.config.llm_vocab_size and t != tok.eos_id]).strip()
                for row in ids]
    return out
