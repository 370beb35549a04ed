"""Show-o-tiny on the built-in captioned sets: an LFQ VQ-VAE trained first on the images (16 px, 4 x 4 =
16 tokens), a word-level text tokenizer on mmu.data.caption_corpus, a small ShowO trained by
mmu.train.Trainer on mixed T2I + MMU + LM batches; then measured by evaluate_show_o_tiny (judges that
live in the evaluation only: a scikit-learn classifier of real digits, mmu.data.judge_shapes).
`mmu showo train` / `mmu showo generate` / `mmu showo answer` run it from the command line."""
import dataclasses
import json
import os
import time

import numpy as np

from ..._args import check_int, check_real, flag
from ...data.captioned import CAPTION_SETS, caption_sets
from ...tensor import manual_seed

__all__ = ["train_show_o_tiny", "evaluate_show_o_tiny", "show_o_tiny_images", "decode_images", "ShowOTinyRun", "TINY_SETS",
           "DIGIT_QUESTION"]

TINY_SETS = CAPTION_SETS
DIGIT_QUESTION = "what digit is this?"
RUN_FILE = "show_o_tiny_run.json"
SIZE = 16  # image side: 16 px -> a 4 x 4 token grid


def _sets(sets, fn):
    """caption_sets, in TINY_SETS' order (the order the images are stacked in)."""
    sets = caption_sets(sets, fn)
    return tuple(s for s in TINY_SETS if s in sets)


def _channels(sets):
    return 3 if "shapes" in sets else 1


def show_o_tiny_images(images, channels):
    """Images (N, C, 16, 16) in [-1, 1] made `channels` wide: a grey digit repeated on 3 channels (so
    digits and coloured shapes share one RGB image tokenizer) or RGB averaged to grey."""
    images = np.asarray(images, np.float32)
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=1))
    return np.ascontiguousarray(images.mean(1, keepdims=True))


def _load(name, split, seed):
    from ... import data
    if name == "digits":
        return data.captioned_digits(SIZE, split, seed)
    return data.captioned_shapes(size=SIZE, split=split, seed=seed)


def _rows(ds, repeat):
    """Every image `repeat` times, the k-th copy with its (k mod count)-th caption and question/answer:
    (images index, captions, questions, answers). All captions and every question of an image are
    trained on (one seeded pick per image would leave most images without "what digit is this?")."""
    index, caps, qs, ans = [], [], [], []
    for i in range(len(ds)):
        c, qa = ds.all_captions(i), ds.all_qa(i)
        for k in range(repeat):
            index.append(i)
            caps.append(c[k % len(c)])
            q, a = qa[k % len(qa)]
            qs.append(q)
            ans.append(a)
    return np.asarray(index, np.int64), caps, qs, ans


def _ids(tok, texts):
    rows = [tok.encode(t) for t in texts]
    out = np.full((len(rows), max(1, max(len(r) for r in rows))), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@dataclasses.dataclass
class ShowOTinyRun:
    """What train_show_o_tiny returns: the trained `model` (a ShowO holding its image tokenizer and
    text tokenizer), `history` (the ShowO Trainer's), `tokenizer_history` (the image tokenizer's; None
    when it came from `out` on resume), `seconds` {"tokenizer", "show_o"} of training, `sets`,
    `metrics` (evaluate_show_o_tiny's dict, or None when evaluate=False)."""
    model: object
    history: object
    tokenizer_history: object
    seconds: dict
    sets: tuple
    metrics: "dict | None"


def train_show_o_tiny(sets=("digits",), steps=1000, batch_size=32, lr=2e-3, dim=128, num_layers=2, num_heads=4,
                      codebook_size=1024, downsample=4, tokenizer_steps=800, seed=0, out=None, resume=False, evaluate=True,
                      eval_kwargs=None, progress=False, verbose=False):
    """Trains Show-o-tiny on built-in captioned images -> ShowOTinyRun.

    sets: ("digits",), ("shapes",) or both (then the grey digits are repeated on 3 channels). Images:
    16 px, the train splits (the shapes train split never draws SHAPES_HELD_OUT's colour-shape pairs).
    1. image tokenizer: mmu.tokenizers.VQVAE with LFQ (MAGVIT-v2's quantizer kind), codebook_size codes,
       downsample 4 (16 tokens an image; 2: 8 x 8 = 64 tokens, finer but 4x the sequence), trained tokenizer_steps steps by the Trainer (lr 2e-3), frozen.
    2. text tokenizer: word level on mmu.data.caption_corpus(sets).
    3. ShowO(dim, num_layers, num_heads, max_text_len = the longest caption / question + [SOT]/[EOT]),
       trained `steps` steps of `batch_size` rows, each row one image with a caption (T2I and LM) and a
       question/answer pair (MMU), every caption and question of an image used (`_rows`); AdamW lr with
       warmup steps//20 and cosine decay, seed.
    out: a folder for the run: checkpoints/ (every steps//5), the model (ShowO.save_pretrained: load with
    ShowO.from_pretrained), history.csv and show_o_tiny_run.json (settings, seconds, metrics). resume:
    continue the run in out from its latest checkpoint (the image tokenizer is read back from out).
    evaluate: run evaluate_show_o_tiny(model, sets, seed=seed, **eval_kwargs) afterwards."""
    fn = "mmu.models.show_o.train_show_o_tiny"
    from ... import data as mdata
    from ...text import TextTokenizer
    from ...tokenizers import VQVAE
    from ...train import Trainer, TrainConfig
    from .model import ShowO

    sets = _sets(sets, fn)
    for name, v in (("steps", steps), ("batch_size", batch_size), ("dim", dim), ("num_layers", num_layers),
                    ("num_heads", num_heads), ("codebook_size", codebook_size), ("downsample", downsample)):
        if check_int(v, fn, name) < 1:
            raise ValueError(f"{fn}: {name} must be >= 1, got {v}")
    if check_int(tokenizer_steps, fn, "tokenizer_steps") < 0 or check_int(seed, fn, "seed") < 0:
        raise ValueError(f"{fn}: tokenizer_steps and seed must be >= 0, got {tokenizer_steps}, {seed}")
    if SIZE % downsample:
        raise ValueError(f"{fn}: downsample must divide the image side {SIZE}, got {downsample}")
    lr = check_real(lr, fn, "lr")
    resume, evaluate = flag(resume, fn, "resume"), flag(evaluate, fn, "evaluate")
    progress, verbose = flag(progress, fn, "progress"), flag(verbose, fn, "verbose")
    if resume and out is None:
        raise ValueError(f"{fn}: resume=True needs the run's folder as out")
    if eval_kwargs is not None and not isinstance(eval_kwargs, dict):
        raise TypeError(f"{fn}: eval_kwargs must be a dict or None, got {type(eval_kwargs).__name__}")
    ch = _channels(sets)

    # ---- data
    parts = [_load(name, "train", seed) for name in sets]
    repeat = max(max(len(p.all_captions(i)), len(p.all_qa(i))) for p in parts for i in range(len(p)))
    rows, caps, qs, ans, offset = [], [], [], [], 0
    for p in parts:
        idx, c, q, a = _rows(p, repeat)
        rows.append(idx + offset)
        offset += len(p)
        caps += c
        qs += q
        ans += a
    rows = np.concatenate(rows)
    unique_images = np.concatenate([show_o_tiny_images(p.images, ch) for p in parts])
    tok = TextTokenizer.train_word_level(mdata.caption_corpus(sets))
    text_len = max(len(tok.encode(t)) for t in mdata.caption_corpus(sets)) + 2

    # ---- image tokenizer (trained first, then frozen)
    seconds = {"tokenizer": 0.0, "show_o": 0.0}
    tok_history = None
    if resume:
        image_tokenizer = ShowO.from_pretrained(os.fspath(out)).image_tokenizer if \
            os.path.exists(os.path.join(os.fspath(out), "config.json")) else \
            _load_tokenizer(os.path.join(os.fspath(out), "image_tokenizer"), fn)
    else:
        manual_seed(seed)
        bits = int(round(np.log2(codebook_size)))
        if 2 ** bits != codebook_size:
            raise ValueError(f"{fn}: codebook_size must be a power of 2 (LFQ), got {codebook_size}")
        image_tokenizer = VQVAE(in_channels=ch, hidden_channels=32, res_channels=16, num_res_blocks=1, downsample=downsample,
                                embed_dim=bits, codebook_size=codebook_size, quantizer="lfq", resolution=SIZE)
        if tokenizer_steps:
            start = time.perf_counter()
            tr = Trainer(image_tokenizer, unique_images, TrainConfig(
                steps=tokenizer_steps, batch_size=min(64, len(unique_images)), lr=2e-3, warmup_steps=tokenizer_steps // 20,
                log_every=max(1, tokenizer_steps // 20), seed=seed, progress=progress))
            tok_history = tr.fit()
            seconds["tokenizer"] = time.perf_counter() - start
        image_tokenizer.eval()
        if out is not None:
            image_tokenizer.save_pretrained(os.path.join(os.fspath(out), "image_tokenizer"))

    # ---- Show-o-tiny
    manual_seed(seed)
    model = ShowO(llm_vocab_size=tok.vocab_size, codebook_size=codebook_size,
                  num_vq_tokens=image_tokenizer.tokens_per_image,
                  max_text_len=text_len, dim=dim, num_layers=num_layers, num_heads=num_heads,
                  sot_token_id=tok.bos_id, eot_token_id=tok.eos_id, image_tokenizer=image_tokenizer,
                  text_tokenizer=tok)
    codes = model.tokenize_images(unique_images)[rows]  # each image tokenised once
    train_data = {"t2i.text_ids": _ids(tok, caps), "t2i.codes": codes, "lm.text_ids": _ids(tok, caps),
                  "mmu.codes": codes, "mmu.question_ids": _ids(tok, qs), "mmu.answer_ids": _ids(tok, ans)}
    tfields = dict(steps=steps, batch_size=min(batch_size, len(codes)), lr=lr, betas=(0.9, 0.95),
                   warmup_steps=steps // 20, log_every=max(1, steps // 50), seed=seed, progress=progress)
    if out is not None:
        tfields.update(ckpt_dir=os.path.join(os.fspath(out), "checkpoints"), ckpt_every=max(1, steps // 5))
    tcfg = TrainConfig(**tfields)
    trainer = Trainer.resume(tcfg.ckpt_dir, model, train_data, tcfg) if resume else \
        Trainer(model, train_data, tcfg)
    if verbose:
        print(f"Show-o-tiny on {'+'.join(sets)}: {model.num_parameters():,} parameters, {len(codes)} rows, "
              f"{tcfg.steps} steps x batch {tcfg.batch_size}" + (f", resumed at step {trainer.step}" if resume else ""))
    start = time.perf_counter()
    history = trainer.fit()
    seconds["show_o"] = time.perf_counter() - start
    if out is not None and trainer._saved_step != trainer.step:
        trainer.save_checkpoint(trainer._ckpt_path(trainer.step))
        trainer._prune()
    model.eval()
    metrics = evaluate_show_o_tiny(model, sets, seed=seed, **(eval_kwargs or {})) if evaluate else None
    run = ShowOTinyRun(model, history, tok_history, seconds, sets, metrics)
    if out is not None:
        out = os.fspath(out)
        model.save_pretrained(out)
        if len(history):
            history.to_csv(os.path.join(out, "history.csv"))
        with open(os.path.join(out, RUN_FILE), "w") as f:
            json.dump({"sets": list(sets), "steps": trainer.step, "batch_size": tcfg.batch_size, "lr": lr, "dim": dim,
                       "num_layers": num_layers, "num_heads": num_heads, "codebook_size": codebook_size, "downsample": downsample,
                       "tokenizer_steps": tokenizer_steps, "seed": seed, "seconds": seconds, "metrics": metrics},
                      f, indent=2)
    if verbose:
        print(f"trained in {seconds['tokenizer']:.0f} s (image tokenizer) + {seconds['show_o']:.0f} s (Show-o); "
              f"last loss {history.last.get('loss', float('nan')):.3f}" if len(history) else "")
        if metrics:
            print("  " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    return run


def _load_tokenizer(path, fn):
    from ...tokenizers import VQVAE
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{fn}: resume=True but {path!r} holds no image tokenizer")
    return VQVAE.from_pretrained(path)


def decode_images(model, codes):
    """Image codes (B, num_vq_tokens) (Tensor or array) -> images np.float32 (B, C, 16, 16) in [-1, 1]: the model's
    frozen image tokenizer's decode of its square grid."""
    codes = np.asarray(codes.numpy() if hasattr(codes, "numpy") else codes, np.int64)
    side = int(round(np.sqrt(model.config.num_vq_tokens)))  # the tokenizer's square latent grid
    out = model.image_tokenizer.decode(codes.reshape(len(codes), side, side))
    return np.clip(out, -1.0, 1.0)


def evaluate_show_o_tiny(model, sets=("digits",), samples_per_prompt=10, steps=8, guidance_scale=2.0,
                         temperature=1.0, num_questions=None, num_shapes=None, seed=0):
    """Measures a Show-o-tiny -> dict of floats.

    digits (when in sets):
      "digits_t2i": for each digit d and caption "a handwritten <word>", samples_per_prompt images
        (t2i_generate, `steps` MaskGIT steps, CFG guidance_scale, Gumbel temperature, mmu.Generator(seed)),
        decoded by the image tokenizer, judged by a scikit-learn LogisticRegression fitted here on the
        real training digits at 16 px (a judge of this evaluation, never part of the model): the share
        classified as d. "digits_judge_heldout": that judge's own accuracy on the real held-out digits.
      "digits_mmu": "what digit is this?" on the held-out digit images (num_questions of them; None:
        all), greedy answers: the share exactly the digit's word.
    shapes: the held-out split's scenes (num_shapes of them; None: all 512), one image each from its
      caption, judged by mmu.data.judge_shapes: "shapes_colour", "shapes_shape", "shapes_colour_shape"
      (both), and the same on the held-out colour-shape combinations only ("heldout_combo_*")."""
    fn = "mmu.models.show_o.evaluate_show_o_tiny"
    from ... import data as mdata
    from ... import Generator
    from ...data.captioned import DIGIT_WORDS, SHAPES_HELD_OUT
    sets = _sets(sets, fn)
    samples_per_prompt = check_int(samples_per_prompt, fn, "samples_per_prompt")
    if samples_per_prompt < 1:
        raise ValueError(f"{fn}: samples_per_prompt must be >= 1, got {samples_per_prompt}")
    ch = model.config.image_tokenizer["args"]["**fields_"].get("in_channels", 1) \
        if isinstance(model.config.image_tokenizer, dict) else 1
    gen_kwargs = dict(steps=steps, guidance_scale=guidance_scale, temperature=temperature)
    out = {}
    if "digits" in sets:
        from sklearn.linear_model import LogisticRegression
        train, test = mdata.captioned_digits(SIZE, "train", seed), mdata.captioned_digits(SIZE, "test", seed)
        judge = LogisticRegression(max_iter=2000, C=0.1)
        judge.fit(train.images.reshape(len(train), -1), train.labels)
        out["digits_judge_heldout"] = float(judge.score(test.images.reshape(len(test), -1), test.labels))
        prompts = [f"a handwritten {w}" for w in DIGIT_WORDS for _ in range(samples_per_prompt)]
        want = np.repeat(np.arange(10), samples_per_prompt)
        codes = model.t2i_generate(prompts, generator=Generator(seed), **gen_kwargs)
        images = show_o_tiny_images(decode_images(model, codes), 1)
        pred = judge.predict(images.reshape(len(images), -1))
        out["digits_t2i"] = float((pred == want).mean())
        out["digits_t2i_per_digit"] = [float((pred[want == d] == d).mean()) for d in range(10)]
        n = len(test) if num_questions is None else min(int(num_questions), len(test))
        q_codes = model.tokenize_images(show_o_tiny_images(test.images[:n], ch))
        answers = model.mmu_generate([DIGIT_QUESTION] * n, codes=q_codes, max_new_tokens=3).numpy()
        said = [model.text_tokenizer.decode([int(t) for t in row if 0 <= t < model.config.llm_vocab_size]).strip()
                for row in answers]
        out["digits_mmu"] = float(np.mean([s == DIGIT_WORDS[y] for s, y in zip(said, test.labels[:n])]))
    if "shapes" in sets:
        test = mdata.captioned_shapes(size=SIZE, split="test", seed=seed)
        n = len(test) if num_shapes is None else min(int(num_shapes), len(test))
        codes = model.t2i_generate(list(test.captions[:n]), generator=Generator(seed + 1), **gen_kwargs)
        images = show_o_tiny_images(decode_images(model, codes), 3)
        verdict = mdata.judge_shapes(images, test.scenes[:n])
        both = verdict["colour"] & verdict["shape"]
        out["shapes_colour"], out["shapes_shape"] = float(verdict["colour"].mean()), float(verdict["shape"].mean())
        out["shapes_colour_shape"] = float(both.mean())
        held = set(SHAPES_HELD_OUT)
        combo = np.array([any((o["colour"], o["shape"]) in held for o in s["objects"]) for s in test.scenes[:n]])
        if combo.any():
            out["heldout_combo_colour"] = float(verdict["colour"][combo].mean())
            out["heldout_combo_shape"] = float(verdict["shape"][combo].mean())
            out["heldout_combo_colour_shape"] = float(both[combo].mean())
    return out
