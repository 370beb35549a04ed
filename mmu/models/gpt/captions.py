"""The tiny captions language model: a word-level tokenizer, bos caption eos sequences of the built-in
captioned sets, a small GPT trained by mmu.train.Trainer, then captions it writes (sampled with a seed).
`mmu train --model gpt` runs it from the command line."""
import dataclasses
import json
import os

import numpy as np

from ..._args import check_int, check_real, flag
from ...data.captioned import CAPTION_SETS, caption_sets
from ...tensor import manual_seed
from .config import GPTConfig
from .model import GPT

__all__ = ["train_captions", "caption_texts", "CaptionRun", "CAPTION_SETS"]

SAMPLES_FILE = "samples.txt"
RUN_FILE = "caption_run.json"   # how the run was made: sets (or a texts file), seed, the sample settings


def caption_texts(sets=("digits",), split="train", seed=0, shapes_n=None):
    """Every caption of every image of the split, as a list of str (an image gives all its captions:
    8 templates a digit, 3 to 5 a shapes scene). sets: a subset of ("digits", "shapes"); split "train"
    or "test" (the shapes test split holds out colour-shape combinations); shapes_n: scenes of the
    shapes set (default its own 2048 / 512). Images are not kept (shapes are drawn at 16 px)."""
    fn = "mmu.models.gpt.caption_texts"
    sets = caption_sets(sets, fn)
    if split not in ("train", "test"):
        raise ValueError(f"{fn}: split must be 'train' or 'test', got {split!r}")
    from ... import data
    out = []
    for name in sets:
        if name == "digits":
            ds = data.captioned_digits(size=8, split=split, seed=seed)
        else:
            ds = data.captioned_shapes(n=shapes_n, size=16, split=split, seed=seed)
        for i in range(len(ds)):
            out.extend(ds.all_captions(i))
    return out



@dataclasses.dataclass
class CaptionRun:
    """What train_captions returns: the trained `model` (a GPT holding its `tokenizer`), the Trainer's
    `trainer` and `history`, the sampled `samples` (list of str), `valid_fraction` (the share of samples
    that are exactly a training text; None without samples), `train_texts` / `heldout_texts` (lists of str) and
    `heldout_perplexity` (token-weighted, None without held-out texts)."""
    model: GPT
    tokenizer: object
    trainer: object
    history: object
    samples: list
    valid_fraction: "float | None"
    train_texts: list
    heldout_texts: list
    heldout_perplexity: "float | None"


def _encode(tok, texts, width=None):
    """bos text eos rows, right padded: {"input_ids" (N, L) int64, "attention_mask" (N, L) bool}. Each
    distinct text is encoded once (the caption sets repeat a few hundred texts thousands of times)."""
    distinct = sorted(set(texts))
    where = {t: i for i, t in enumerate(distinct)}
    ids, mask = tok.encode_batch(distinct, add_bos=True, add_eos=True,
                                 padding="longest" if width is None else "max_length", max_length=width)
    rows = np.fromiter((where[t] for t in texts), np.int64, len(texts))
    return {"input_ids": ids[rows], "attention_mask": mask[rows]}


def _eval_batches(data, size=256):
    """A list of dict batches of `size` rows (the held-out texts, evaluated in few large batches)."""
    n = len(data["input_ids"])
    return [{k: v[i:i + size] for k, v in data.items()} for i in range(0, n, size)]


def train_captions(sets=("digits",), texts=None, steps=300, batch_size=32, lr=3e-3, dim=64, num_layers=2,
                   num_heads=4, seed=0, config=None, train=None, num_samples=16, temperature=1.0, top_k=None,
                   top_p=None, out=None, resume=False, progress=True, verbose=True):
    """Trains a tiny GPT on captions and lets it write some -> CaptionRun.

    The texts: every caption of the training images of `sets` ("digits": captioned_digits, 80 distinct
    captions; "shapes": captioned_shapes' compositional scene captions), held out: those of the test
    images; or `texts`, a list of str of your own (a seeded tenth held out when there are 10 or more).
    A word-level mmu.text.TextTokenizer is trained on mmu.data.caption_corpus(sets) (on the texts
    themselves for `texts`); each text becomes bos text eos, right padded with the mask marking it.
    The model: GPTConfig(vocab_size=the tokenizer's, dim, num_layers, num_heads, max_seq_len=the longest
    sequence) updated with `config` (a dict of GPTConfig fields); trained by mmu.train.Trainer with
    TrainConfig(steps, batch_size, lr, betas (0.9, 0.95), warmup steps//10, seed) updated with `train`
    (a dict of TrainConfig fields), evaluated on the held-out texts every steps//5 steps.
    Afterwards `num_samples` captions are sampled from bos (temperature, top_k, top_p; generator
    mmu.Generator(seed)) and compared with the training texts.

    out: a folder to write the run into: checkpoints/ during training (every steps//5 steps), then the
    model and its tokenizer (save_pretrained: load with GPT.from_pretrained), history.csv,
    loss_curves.png, samples.txt and caption_run.json. resume=True continues the run in `out` from its
    latest checkpoint (the same arguments; steps may grow). verbose prints the sizes, the held-out
    perplexity and the samples."""
    fn = "mmu.models.gpt.train_captions"
    from ... import data as mdata
    from ...text import TextTokenizer
    from ...train import Trainer, TrainConfig

    steps, batch_size = check_int(steps, fn, "steps"), check_int(batch_size, fn, "batch_size")
    seed, num_samples = check_int(seed, fn, "seed"), check_int(num_samples, fn, "num_samples")
    if steps < 1 or batch_size < 1 or num_samples < 0 or seed < 0:
        raise ValueError(f"{fn}: steps and batch_size must be >= 1, num_samples and seed >= 0; got steps={steps}, "
                         f"batch_size={batch_size}, num_samples={num_samples}, seed={seed}")
    lr = check_real(lr, fn, "lr")
    from ...generate import _sampling_args
    _sampling_args(fn, temperature, top_k, top_p)  # checked before training, not after it
    resume, progress, verbose = flag(resume, fn, "resume"), flag(progress, fn, "progress"), flag(verbose, fn, "verbose")
    for name, v in (("config", config), ("train", train)):
        if v is not None and not isinstance(v, dict):
            raise TypeError(f"{fn}: {name} must be a dict of fields or None, got {type(v).__name__}")
    if resume and out is None:
        raise ValueError(f"{fn}: resume=True needs the run's folder as out")

    # ---- texts and tokenizer
    if texts is not None:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"{fn}: texts must be a list of str, got {type(texts).__name__}")
        texts = [t for t in texts if isinstance(t, str) and t.strip()] if all(isinstance(t, str) for t in texts) \
            else None
        if not texts:
            raise ValueError(f"{fn}: texts must be a non-empty list of str with some non-space text")
        order = np.random.default_rng([seed, 0xCAB]).permutation(len(texts))
        n_held = len(texts) // 10 if len(texts) >= 10 else 0
        train_texts = [texts[i] for i in sorted(order[n_held:])]
        heldout_texts = [texts[i] for i in sorted(order[:n_held])]
        tok = TextTokenizer.train_word_level(train_texts)
        source = {"texts": len(texts)}
    else:
        sets = caption_sets(sets, fn)
        train_texts = caption_texts(sets, "train", seed)
        heldout_texts = caption_texts(sets, "test", seed)
        tok = TextTokenizer.train_word_level(mdata.caption_corpus(sets))
        source = {"sets": list(sets)}
    train_data = _encode(tok, train_texts)
    width = max(train_data["input_ids"].shape[1], 2)
    if heldout_texts:
        longest = max(len(tok.encode(t)) for t in heldout_texts) + 2
        width = max(width, longest)
        train_data = _encode(tok, train_texts, width)
    heldout = _encode(tok, heldout_texts, width) if heldout_texts else None

    # ---- model and trainer
    fields = dict(vocab_size=tok.vocab_size, dim=dim, num_layers=num_layers, num_heads=num_heads, max_seq_len=width)
    fields.update(config or {})
    cfg = GPTConfig.from_dict(fields)
    if cfg.vocab_size < tok.vocab_size or cfg.max_seq_len < width:
        raise ValueError(f"{fn}: config must keep vocab_size >= {tok.vocab_size} and max_seq_len >= {width} "
                         f"(the tokenizer's vocabulary and the longest caption), got {cfg.vocab_size}, "
                         f"{cfg.max_seq_len}")
    tfields = dict(steps=steps, batch_size=min(batch_size, len(train_texts)), lr=lr, betas=(0.9, 0.95),
                   warmup_steps=steps // 10, log_every=max(1, steps // 50), seed=seed, progress=progress,
                   eval_every=max(1, steps // 5) if heldout is not None else 0)
    if out is not None:
        tfields.update(ckpt_dir=os.path.join(os.fspath(out), "checkpoints"), ckpt_every=max(1, steps // 5))
    if resume and "warmup_steps" not in (train or {}):
        # the warmup the run started with (steps//10 of its first steps; a resumed run may have more steps)
        tfields["warmup_steps"] = _checkpoint_warmup(fn, tfields["ckpt_dir"], tfields["warmup_steps"])
    tfields.update(train or {})
    tcfg = TrainConfig(**tfields)
    manual_seed(seed)
    model = GPT(cfg, tokenizer=tok)
    eval_data = _eval_batches(heldout) if heldout is not None else None
    if resume:
        trainer = Trainer.resume(tcfg.ckpt_dir, model, train_data, tcfg, eval_data=eval_data)
    else:
        trainer = Trainer(model, train_data, tcfg, eval_data=eval_data)
    if verbose:
        print(f"tiny GPT: {model.num_parameters():,} parameters, vocabulary {tok.vocab_size}, "
              f"{len(train_texts)} training texts ({len(set(train_texts))} distinct) of up to {width} tokens, "
              f"{len(heldout_texts)} held out; {tcfg.steps} steps x batch {tcfg.batch_size}"
              + (f", resumed at step {trainer.step}" if resume else ""))
    history = trainer.fit()
    main = trainer.is_main_process   # data parallel (mpirun): rank 0 alone writes
    if out is not None and trainer._saved_step != trainer.step and main:   # the final state is resumable too
        trainer.save_checkpoint(trainer._ckpt_path(trainer.step))
        trainer._prune()
    model.eval()
    ppl = model.perplexity(heldout) if heldout is not None else None

    # ---- captions it writes
    samples = model.generate_text(num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed) if num_samples else []
    known = set(train_texts)
    valid = sum(s in known for s in samples) / len(samples) if samples else None
    run = CaptionRun(model, tok, trainer, history, samples, valid, train_texts, heldout_texts, ppl)
    if out is not None and main:
        _write_run(run, out, dict(source, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p))
    if out is not None and trainer.distributed:
        from ... import distributed
        distributed.barrier()   # the other ranks return once rank 0 has written the run
    if verbose:
        last = history.last if len(history) else {}
        print(f"train loss {last.get('loss', float('nan')):.3f}" +
              (f", held-out perplexity {ppl:.3f}" if ppl is not None else "") +
              (f"; {len(samples)} sampled captions, {valid:.0%} exactly a training text:" if samples else ""))
        for s in samples:
            print(f"  {s}")
    return run


def _checkpoint_warmup(fn, ckpt_dir, default):
    from ...io import load
    from ...train import Trainer
    files = Trainer.checkpoints(ckpt_dir)
    if not files:
        raise FileNotFoundError(f"{fn}: resume=True but {ckpt_dir!r} holds no checkpoint")
    saved = load(files[-1]).get("config")
    return int(saved.get("warmup_steps", default)) if isinstance(saved, dict) else default


def _write_run(run, out, meta):
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    run.model.save_pretrained(out)
    if len(run.history):
        run.history.to_csv(os.path.join(out, "history.csv"))
        fig = run.history.plot()
        fig.savefig(os.path.join(out, "loss_curves.png"), dpi=100)
        import matplotlib.pyplot as plt
        plt.close(fig)
    with open(os.path.join(out, SAMPLES_FILE), "w") as f:
        f.write("".join(s + "\n" for s in run.samples))
    meta = dict(meta, step=run.trainer.step, valid_fraction=run.valid_fraction,
                heldout_perplexity=run.heldout_perplexity)
    with open(os.path.join(out, RUN_FILE), "w") as f:
        json.dump(meta, f, indent=2)
