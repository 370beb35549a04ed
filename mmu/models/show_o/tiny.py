"""Show-o-tiny on the built-in captioned sets: an LFQ VQ-VAE trained first on the images, a word-level
text tokenizer on mmu.data.caption_corpus, a small ShowO trained by mmu.train.Trainer on mixed T2I +
MMU + LM batches. Each set has its own defaults (PRESETS: image size, token grid, codes, steps), the
settings its accuracies were measured with. The judges that measure a run (a scikit-learn classifier of
real digits, mmu.data.judge_shapes) live outside the library, in benchmarks/eval_show_o_tiny.py.
`mmu showo train` / `mmu showo generate` / `mmu showo answer` run it from the command line."""
import dataclasses
import json
import os
import time

import numpy as np

from ..._args import check_int, check_real, flag
from ...data.captioned import CAPTION_SETS, caption_sets
from ...tensor import manual_seed

__all__ = ["train_show_o_tiny", "show_o_tiny_preset", "show_o_tiny_images", "decode_images", "image_size",
           "merge_background_codes", "ShowOTinyRun", "TINY_SETS", "PRESETS", "DIGIT_QUESTION"]

TINY_SETS = CAPTION_SETS
DIGIT_QUESTION = "what digit is this?"
RUN_FILE = "show_o_tiny_run.json"
TOKENIZER_QUANTIZERS = ("lfq", "ema_vq")
TOKENIZER_VQ_DIM = 8  # the code vectors' dims of an "ema_vq" image tokenizer

# Each set's defaults: what train_show_o_tiny (and mmu showo train) use for a setting left None.
# size: image side (px); downsample: the image tokenizer's (size / downsample)^2 token grid;
# tokenizer_quantizer: "lfq" (MAGVIT-v2's, Show-o's) or "ema_vq" (VQ-VAE's EMA codebook with k-means init and
# dead-code restart); codebook_size: its codes; tokenizer_channels / tokenizer_steps: its width and training
# steps; tokenizer_entropy: the LFQ entropy loss weight (mmu's tokenizer default 1.0; lower keeps sharper edges);
# tokenizer_merge_background ("ema_vq" only; 0: off): after training, the codes used on pure-black patches at
# least that share of the time get one vector (merge_background_codes: the background is then one code, not
# dozens the generator must guess);
# steps, batch_size, lr, dim, num_layers, num_heads, mmu_coeff: the ShowO and its training.
PRESETS = {
    # 16 px -> 8 x 8 tokens of 64 codes: "what digit is this?" 96.1% on the 359 held-out digits, where 4 x 4
    # tokens of 1024 codes stayed near 90% (even at 2000 steps: 90.3%)
    "digits": dict(size=16, downsample=2, tokenizer_quantizer="lfq", codebook_size=64, tokenizer_channels=32,
                   tokenizer_steps=800, tokenizer_entropy=1.0, tokenizer_merge_background=0.0, steps=1000,
                   batch_size=32, lr=2e-3, dim=128, num_layers=2, num_heads=4, mmu_coeff=1.0),
    # 32 px -> 16 x 16 tokens of 256 EMA-VQ codes: judge_shapes passes 98.6% of this tokenizer's reconstructions
    # of the held-out scenes, 98.2% once its background codes are merged (LFQ at the same grid: 62.5% after 800
    # steps; 16 px, 8 x 8 tokens: 65% with EMA VQ; 32 px, 8 x 8 tokens of 1024 EMA-VQ codes: 86.5%); the merge
    # placed the colour right more often at steps 300 and 900 (64 held-out scenes); README "Show-o" has the
    # judged accuracies
    "shapes": dict(size=32, downsample=2, tokenizer_quantizer="ema_vq", codebook_size=256, tokenizer_channels=32,
                   tokenizer_steps=1500, tokenizer_entropy=0.1, tokenizer_merge_background=0.9, steps=1500,
                   batch_size=32, lr=2e-3, dim=128, num_layers=2, num_heads=4, mmu_coeff=1.0),
}


def show_o_tiny_preset(sets):
    """The default settings of a Show-o-tiny run on `sets` (a dict, a copy of PRESETS[set]): one set's
    own; for "digits,shapes" the shapes preset (its image size and token grid: digits are drawn at
    the same size) with the two sets' steps added."""
    sets = _sets(sets, "mmu.models.show_o.show_o_tiny_preset")
    if len(sets) == 1:
        return dict(PRESETS[sets[0]])
    out = dict(PRESETS["shapes"])
    out["steps"] = sum(PRESETS[s]["steps"] for s in sets)
    return out


def _sets(sets, fn):
    """caption_sets, in TINY_SETS' order (the order the images are stacked in)."""
    sets = caption_sets(sets, fn)
    return tuple(s for s in TINY_SETS if s in sets)


def _channels(sets):
    return 3 if "shapes" in sets else 1


def image_size(model):
    """The image side (px) a Show-o-tiny model's image tokenizer takes (its config.resolution)."""
    return int(model.image_tokenizer.config.resolution)


def show_o_tiny_images(images, channels):
    """Images (N, C, S, S) in [-1, 1] made `channels` wide: a grey digit repeated on 3 channels (so
    digits and coloured shapes share one RGB image tokenizer) or RGB averaged to grey."""
    images = np.asarray(images, np.float32)
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=1))
    return np.ascontiguousarray(images.mean(1, keepdims=True))


def merge_background_codes(tokenizer, images, share=0.99, rounds=4, batch_size=64):
    """Gives one vector to the codes of a trained EMA-VQ image tokenizer that are used (almost) only on
    pure-background patches -> how many codes lost their own vector (the tokenizer changes in place).

    A convolutional encoder sees past its patch, so an all-black patch encodes differently next to an
    object than far from one, and the codebook spends dozens of codes on black that all decode to
    black: a generator trained on those codes must guess among them. The shapes preset's tokenizer
    (32 px, 16 x 16 tokens of 256 codes) used 180 codes on black patches, 3.7 nats a token over all its
    tokens; with share 0.9, 147 codes merged, 1.6 nats a token, and judge_shapes still passes 98.2% of
    its reconstructions of the held-out scenes (98.6% before; share 0.99: 99.0%, 2.6 nats; 0.75: 93.8%).
    images: (N, C, S, S) in [-1, 1], the tokenizer's training images. A token's patch (S / grid pixels
    square) is background when every pixel of every channel is <= -0.99 (black); a code whose uses in
    `images` are background patches at least `share` of the time is merged: all of them get the
    vector (and EMA statistics) of the most used of them, so encode picks one index for all (the
    lowest: argmin's first) and decode draws them alike. Repeated `rounds` times (features that went
    to a merged code may land on another such code); stops early when at most one is left. For a
    frozen tokenizer: training it further would move the codes apart again."""
    fn = "mmu.models.show_o.merge_background_codes"
    q = getattr(tokenizer, "quantize", None)
    if not (hasattr(q, "_codebook_np") and hasattr(q, "cluster_size") and hasattr(q, "embed_avg")):
        raise TypeError(f"{fn}: tokenizer must be a VQVAE with an EMA VQ codebook (quantizer 'ema_vq'), got "
                        f"{type(tokenizer).__name__} with {type(q).__name__}")
    rounds, batch_size = check_int(rounds, fn, "rounds"), check_int(batch_size, fn, "batch_size")
    share = check_real(share, fn, "share")
    if rounds < 1 or batch_size < 1 or not 0.5 < share <= 1.0:
        raise ValueError(f"{fn}: rounds and batch_size must be >= 1 and share in (0.5, 1], got {rounds}, "
                         f"{batch_size}, {share}")
    x = np.asarray(images, np.float32)
    size = int(tokenizer.config.resolution)
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] != tokenizer.config.in_channels or x.shape[2:] != (size, size):
        raise ValueError(f"{fn}: images must be (N >= 1, {tokenizer.config.in_channels}, {size}, {size}), got "
                         f"{x.shape}")
    k = int(tokenizer.config.codebook_size)
    merged = 0
    for _ in range(rounds):
        codes = np.asarray(tokenizer.encode(x, batch_size=batch_size))
        grid = codes.shape[-1]
        step = size // grid
        # (N, grid * grid): does the token's patch hold any pixel brighter than black?
        lit = (x.max(1) > -0.99).reshape(len(x), grid, step, grid, step).any((2, 4)).reshape(len(x), -1)
        codes = codes.reshape(len(x), -1)
        used = np.bincount(codes.ravel(), minlength=k)
        on_black = np.bincount(codes[~lit], minlength=k)
        only = np.flatnonzero((used > 0) & (on_black >= share * used))
        if len(only) <= 1:
            break
        keep = only[np.argmax(used[only])]
        for name in ("embed", "embed_avg", "cluster_size"):
            buf = getattr(q, name).detach().numpy().copy()   # (codebooks, K, dim) / (codebooks, K)
            buf[:, only] = buf[:, keep:keep + 1]
            q._set_buffers(**{name: buf})
        merged += len(only) - 1
    return merged


def _load(name, split, seed, size):
    from ... import data
    if name == "digits":
        return data.captioned_digits(size, split, seed)
    return data.captioned_shapes(size=size, split=split, seed=seed)


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
    `settings` (every setting the run used: the preset's where the call left one None)."""
    model: object
    history: object
    tokenizer_history: object
    seconds: dict
    sets: tuple
    settings: dict


def train_show_o_tiny(sets=("digits",), steps=None, batch_size=None, lr=None, dim=None, num_layers=None,
                      num_heads=None, codebook_size=None, downsample=None, size=None, tokenizer_steps=None,
                      tokenizer_channels=None, tokenizer_entropy=None, tokenizer_quantizer=None,
                      tokenizer_merge_background=None, mmu_coeff=None, seed=0, out=None, resume=False, progress=False,
                      verbose=False):
    """Trains Show-o-tiny on built-in captioned images -> ShowOTinyRun.

    sets: ("digits",), ("shapes",) or both (then the grey digits are repeated on 3 channels). Every
    setting left None takes the value of show_o_tiny_preset(sets) (PRESETS: the settings whose judged
    accuracies the README reports). Images: `size` px (digits: 16 or 32), the train splits (the shapes
    train split never draws SHAPES_HELD_OUT's colour-shape pairs; the held-out splits are never seen).
    1. image tokenizer: mmu.tokenizers.VQVAE with `tokenizer_quantizer` "lfq" (MAGVIT-v2's quantizer kind:
       LFQ entropy loss weight `tokenizer_entropy`) or "ema_vq" (an EMA codebook of TOKENIZER_VQ_DIM-dim
       codes, k-means init, dead-code restart: make_quantizer's defaults), codebook_size codes (a power of 2),
       `tokenizer_channels` wide, `downsample` (a power of 2 dividing size: a (size / downsample)^2 token
       grid), trained tokenizer_steps steps by the Trainer (lr 2e-3, batch 64), frozen; with
       tokenizer_merge_background > 0 (a share in (0.5, 1]; "ema_vq"), merge_background_codes(share=it) then.
    2. text tokenizer: word level on mmu.data.caption_corpus(sets).
    3. ShowO(dim, num_layers, num_heads, max_text_len = the longest caption / question + [SOT]/[EOT],
       mmu_coeff: the weight of the answer loss; t2i 1.0 and lm 0.1 as Show-o), trained `steps` steps of
       `batch_size` rows, each row one image with a caption (T2I and LM) and a question/answer pair
       (MMU), every caption and question of an image used (`_rows`); AdamW lr with warmup steps//20
       and cosine decay, seed. Same arguments and seed: bit-identical weights.
    out: a folder for the run: checkpoints/ (every steps//5), the model (ShowO.save_pretrained: load with
    ShowO.from_pretrained), history.csv and show_o_tiny_run.json (settings, seconds, last losses).
    resume: continue the run in out from its latest checkpoint (the image tokenizer is read back from
    out). Measure a run with benchmarks/eval_show_o_tiny.py (the judges are not part of mmu)."""
    fn = "mmu.models.show_o.train_show_o_tiny"
    from ... import data as mdata
    from ...text import TextTokenizer
    from ...tokenizers import VQVAE
    from ...train import Trainer, TrainConfig
    from .model import ShowO

    sets = _sets(sets, fn)
    given = dict(steps=steps, batch_size=batch_size, lr=lr, dim=dim, num_layers=num_layers, num_heads=num_heads,
                 codebook_size=codebook_size, downsample=downsample, size=size, tokenizer_steps=tokenizer_steps,
                 tokenizer_channels=tokenizer_channels, tokenizer_entropy=tokenizer_entropy,
                 tokenizer_quantizer=tokenizer_quantizer, tokenizer_merge_background=tokenizer_merge_background,
                 mmu_coeff=mmu_coeff)
    cfg = show_o_tiny_preset(sets)
    cfg.update({k: v for k, v in given.items() if v is not None})
    for name in ("steps", "batch_size", "dim", "num_layers", "num_heads", "codebook_size", "downsample", "size",
                 "tokenizer_channels"):
        if check_int(cfg[name], fn, name) < 1:
            raise ValueError(f"{fn}: {name} must be >= 1, got {cfg[name]}")
    if check_int(cfg["tokenizer_steps"], fn, "tokenizer_steps") < 0 or check_int(seed, fn, "seed") < 0:
        raise ValueError(f"{fn}: tokenizer_steps and seed must be >= 0, got {cfg['tokenizer_steps']}, {seed}")
    size, downsample, codebook_size = cfg["size"], cfg["downsample"], cfg["codebook_size"]
    if "digits" in sets and size not in (16, 32):
        raise ValueError(f"{fn}: the captioned digits come at size 16 or 32, got size {size}")
    if size < 16:
        raise ValueError(f"{fn}: size must be >= 16, got {size}")
    if downsample & (downsample - 1) or size % downsample:
        raise ValueError(f"{fn}: downsample must be a power of 2 dividing the image side {size}, got {downsample}")
    quantizer = cfg["tokenizer_quantizer"]
    if not isinstance(quantizer, str) or quantizer not in TOKENIZER_QUANTIZERS:
        raise ValueError(f"{fn}: tokenizer_quantizer must be one of {TOKENIZER_QUANTIZERS}, got {quantizer!r}")
    bits = int(round(np.log2(codebook_size)))
    if 2 ** bits != codebook_size or codebook_size < 2:  # LFQ's, and ShowOConfig's check of any tokenizer
        raise ValueError(f"{fn}: codebook_size must be a power of 2 >= 2, got {codebook_size}")
    lr = cfg["lr"] = check_real(cfg["lr"], fn, "lr")
    mmu_coeff = cfg["mmu_coeff"] = check_real(cfg["mmu_coeff"], fn, "mmu_coeff")
    entropy = cfg["tokenizer_entropy"] = check_real(cfg["tokenizer_entropy"], fn, "tokenizer_entropy")
    if not lr > 0 or not mmu_coeff >= 0 or not entropy >= 0:
        raise ValueError(f"{fn}: lr must be > 0, mmu_coeff and tokenizer_entropy >= 0, "
                         f"got {lr}, {mmu_coeff}, {entropy}")
    merge = cfg["tokenizer_merge_background"] = check_real(cfg["tokenizer_merge_background"], fn,
                                                           "tokenizer_merge_background")
    if not (merge == 0.0 or 0.5 < merge <= 1.0):
        raise ValueError(f"{fn}: tokenizer_merge_background must be 0 (off) or a share in (0.5, 1], got {merge}")
    if merge and quantizer != "ema_vq":
        raise ValueError(f"{fn}: tokenizer_merge_background needs tokenizer_quantizer 'ema_vq' (a codebook), got "
                         f"{quantizer!r}")
    resume, progress, verbose = flag(resume, fn, "resume"), flag(progress, fn, "progress"), flag(verbose, fn, "verbose")
    if resume and out is None:
        raise ValueError(f"{fn}: resume=True needs the run's folder as out")
    ch = _channels(sets)

    # ---- data
    parts = [_load(name, "train", seed, size) for name in sets]
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
        width = cfg["tokenizer_channels"]
        lfq = quantizer == "lfq"
        image_tokenizer = VQVAE(in_channels=ch, hidden_channels=width, res_channels=max(1, width // 2),
                                num_res_blocks=1, downsample=downsample, embed_dim=bits if lfq else TOKENIZER_VQ_DIM,
                                codebook_size=codebook_size, quantizer=quantizer,
                                quantizer_kwargs=dict(entropy_loss_weight=entropy) if lfq else {}, resolution=size)
        if cfg["tokenizer_steps"]:
            start = time.perf_counter()
            n = cfg["tokenizer_steps"]
            tr = Trainer(image_tokenizer, unique_images, TrainConfig(
                steps=n, batch_size=min(64, len(unique_images)), lr=2e-3, warmup_steps=n // 20,
                log_every=max(1, n // 20), seed=seed, progress=progress))
            tok_history = tr.fit()
        image_tokenizer.eval()
        if merge and cfg["tokenizer_steps"]:
            merge_background_codes(image_tokenizer, unique_images, share=merge)
        seconds["tokenizer"] = time.perf_counter() - start if cfg["tokenizer_steps"] else 0.0
        if out is not None:
            image_tokenizer.save_pretrained(os.path.join(os.fspath(out), "image_tokenizer"))

    # ---- Show-o-tiny
    manual_seed(seed)
    model = ShowO(llm_vocab_size=tok.vocab_size, codebook_size=codebook_size,
                  num_vq_tokens=image_tokenizer.tokens_per_image, max_text_len=text_len, dim=cfg["dim"],
                  num_layers=cfg["num_layers"], num_heads=cfg["num_heads"], mmu_coeff=mmu_coeff,
                  sot_token_id=tok.bos_id, eot_token_id=tok.eos_id, image_tokenizer=image_tokenizer,
                  text_tokenizer=tok)
    codes = model.tokenize_images(unique_images)[rows]  # each image tokenised once
    train_data = {"t2i.text_ids": _ids(tok, caps), "t2i.codes": codes, "lm.text_ids": _ids(tok, caps),
                  "mmu.codes": codes, "mmu.question_ids": _ids(tok, qs), "mmu.answer_ids": _ids(tok, ans)}
    steps = cfg["steps"]
    tfields = dict(steps=steps, batch_size=min(cfg["batch_size"], len(codes)), lr=lr, betas=(0.9, 0.95),
                   warmup_steps=steps // 20, log_every=max(1, steps // 50), seed=seed, progress=progress)
    if out is not None:
        tfields.update(ckpt_dir=os.path.join(os.fspath(out), "checkpoints"), ckpt_every=max(1, steps // 5))
    tcfg = TrainConfig(**tfields)
    trainer = Trainer.resume(tcfg.ckpt_dir, model, train_data, tcfg) if resume else \
        Trainer(model, train_data, tcfg)
    if verbose:
        print(f"Show-o-tiny on {'+'.join(sets)}: {model.num_parameters():,} parameters, {size} px images -> "
              f"{model.config.num_vq_tokens} tokens of {codebook_size} codes, {len(codes)} rows, "
              f"{tcfg.steps} steps x batch {tcfg.batch_size}" + (f", resumed at step {trainer.step}" if resume else ""))
    start = time.perf_counter()
    history = trainer.fit()
    seconds["show_o"] = time.perf_counter() - start
    if out is not None and trainer._saved_step != trainer.step:
        trainer.save_checkpoint(trainer._ckpt_path(trainer.step))
        trainer._prune()
    model.eval()
    cfg.update(seed=seed, steps=trainer.step)
    run = ShowOTinyRun(model, history, tok_history, seconds, sets, cfg)
    last = {k: float(history.last[k]) for k in ("loss", "loss_t2i", "loss_lm", "loss_mmu")
            if len(history) and k in history.last}
    if out is not None:
        out = os.fspath(out)
        model.save_pretrained(out)
        if len(history):
            history.to_csv(os.path.join(out, "history.csv"))
        with open(os.path.join(out, RUN_FILE), "w") as f:
            json.dump({"sets": list(sets), **cfg, "seconds": seconds, "last_losses": last}, f, indent=2)
    if verbose:
        print(f"trained in {seconds['tokenizer']:.0f} s (image tokenizer) + {seconds['show_o']:.0f} s (Show-o)"
              + ("; last losses " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()) if last else ""))
    return run


def _load_tokenizer(path, fn):
    from ...tokenizers import VQVAE
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{fn}: resume=True but {path!r} holds no image tokenizer")
    return VQVAE.from_pretrained(path)


def decode_images(model, codes):
    """Image codes (B, num_vq_tokens) (Tensor or array) -> images np.float32 (B, C, S, S) in [-1, 1] (S:
    image_size(model)): the model's frozen image tokenizer's decode of its square grid."""
    codes = np.asarray(codes.numpy() if hasattr(codes, "numpy") else codes, np.int64)
    side = int(round(np.sqrt(model.config.num_vq_tokens)))  # the tokenizer's square latent grid
    out = model.image_tokenizer.decode(codes.reshape(len(codes), side, side))
    return np.clip(out, -1.0, 1.0)
