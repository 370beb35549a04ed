"""The training recipe of VILA-U's vision tower and its metrics.

VILA-U's released code has no tower training code; the recipe follows the paper (Wu et al., ICLR 2025,
sec. 3.1 and 4.1): training the tower with the contrastive and the reconstruction loss together from
scratch does not converge well (5% zero-shot top-1), so the tower is first aligned contrastively (the
paper starts from a pretrained CLIP/SigLIP: stage 1, 'align') and then trained with the text encoder
frozen on contrastive + reconstruction losses over the quantized features (stage 2, 'tower'). 'joint'
is the from-scratch recipe, for the comparison.

- tower_data: a captioned set (mmu.data.captioned_digits / captioned_shapes) -> {"images", "text_ids"}
  for mmu.train.Trainer, each image with every caption (or its one) tokenized for the tower's layout.
- train_tower: one stage through mmu.train.Trainer; train_recipe: 'align_tower' (align then tower)
  or 'joint'.
- zero_shot_accuracy: classification of held-out images by text prompts ("a handwritten seven"):
  argmax over the classes of the cosine between the image embedding (quantized features) and the
  class prompts' text embeddings.
- tower_metrics: PSNR / SSIM of decode(encode(images)) and the code usage (and perplexity) per depth.
"""
import numpy as np

from ...autograd import no_grad
from ...metrics import psnr, ssim
from ...metrics.codebook import _usage_perplexity
from ..._args import is_int
from .tower import STAGES, UnifiedVisionTower

__all__ = ["tower_data", "train_tower", "train_recipe", "RECIPES", "zero_shot_accuracy", "tower_metrics",
           "digit_prompts"]

RECIPES = ("align_tower", "joint")


def _check_tower(tower, fn):
    if not isinstance(tower, UnifiedVisionTower):
        raise TypeError(f"{fn}: tower must be a UnifiedVisionTower, got {type(tower).__name__}")


def _check_count(v, fn, name, lo=1):
    if not is_int(v) or v < lo:
        raise ValueError(f"{fn}: {name} must be an int >= {lo}, got {v!r}")
    return int(v)


def digit_prompts(template="a handwritten {word}"):
    """The ten class prompts of the digits: template.format(word=DIGIT_WORDS[k], digit=k) for k = 0..9
    ("a handwritten zero", ..., "a handwritten nine")."""
    from ...data.captioned import DIGIT_WORDS
    if not isinstance(template, str):
        raise TypeError(f"digit_prompts: template must be a str, got {type(template).__name__}")
    try:
        return [template.format(word=w, digit=k) for k, w in enumerate(DIGIT_WORDS)]
    except (KeyError, IndexError) as e:
        raise ValueError(f"digit_prompts: template may use {{word}} and {{digit}} only, got {template!r} "
                         f"({e})") from None


def tower_data(dataset, tower, tokenizer=None, all_captions=True):
    """A captioned dataset (.images, .captions, .all_captions(i)) -> {"images": (M, C, H, W) float32,
    "text_ids": (M, L) int64 padded with -1} for the tower's Trainer: with all_captions every image once
    per caption (the digits: 8 captions each), else once with its `.captions[i]`. The texts are tokenized
    by tower.tokenize (the layout's specials; tokenizer default: tower.text_tokenizer)."""
    fn = "tower_data"
    _check_tower(tower, fn)
    for attr in ("images", "captions", "all_captions"):
        if not hasattr(dataset, attr):
            raise TypeError(f"{fn}: dataset must be a captioned dataset (with .{attr}), got {type(dataset).__name__}")
    images = np.asarray(dataset.images, np.float32)
    if all_captions:
        texts, rows = [], []
        for i in range(len(images)):
            caps = dataset.all_captions(i)
            texts.extend(caps)
            rows.extend([i] * len(caps))
    else:
        texts, rows = list(dataset.captions), list(range(len(images)))
    ids = tower.tokenize(texts, tokenizer)
    return {"images": images[np.asarray(rows, np.int64)], "text_ids": ids}


def train_tower(tower, data, stage, steps, batch_size=64, lr=1e-3, seed=0, warmup_steps=0, eval_data=None,
                progress=False, **train_config):
    """Trains `tower` for one stage ('align', 'tower' or 'joint', see UnifiedVisionTower.set_stage) on `data`
    (tower_data's dict, or anything mmu.train.Trainer takes) for `steps` AdamW steps -> the Trainer's
    History. The stage is set first, so the Trainer optimises exactly the parameters the stage trains.
    Other keyword arguments go to mmu.train.TrainConfig (betas default (0.9, 0.99) here: a contrastive
    model, not a GAN)."""
    from ...train import TrainConfig, Trainer
    fn = "train_tower"
    _check_tower(tower, fn)
    if not isinstance(stage, str) or stage not in STAGES:
        raise ValueError(f"{fn}: stage must be one of {STAGES}, got {stage!r}")
    steps = _check_count(steps, fn, "steps")
    tower.set_stage(stage)
    train_config.setdefault("betas", (0.9, 0.99))
    train_config.setdefault("log_every", max(1, steps // 20))
    cfg = TrainConfig(steps=steps, batch_size=_check_count(batch_size, fn, "batch_size"), lr=lr, seed=seed,
                      warmup_steps=warmup_steps, progress=progress, **train_config)
    trainer = Trainer(tower, data, cfg, eval_data=eval_data)
    history = trainer.fit()
    tower.eval()
    return history


def train_recipe(tower, data, recipe, steps, align_steps=None, **kw):
    """A whole recipe: 'align_tower' = train_tower 'align' for align_steps (default steps // 2) then 'tower'
    for the rest; 'joint' = train_tower 'joint' for all `steps` (the same budget). -> {stage: History}."""
    fn = "train_recipe"
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise ValueError(f"{fn}: recipe must be one of {RECIPES}, got {recipe!r}")
    steps = _check_count(steps, fn, "steps", 2 if recipe == "align_tower" else 1)
    if recipe == "joint":
        return {"joint": train_tower(tower, data, "joint", steps, **kw)}
    a = steps // 2 if align_steps is None else _check_count(align_steps, fn, "align_steps")
    if a >= steps:
        raise ValueError(f"{fn}: align_steps ({a}) must be < steps ({steps}) to leave steps for stage 'tower'")
    return {"align": train_tower(tower, data, "align", a, **kw),
            "tower": train_tower(tower, data, "tower", steps - a, **kw)}


def _images(images, tower, fn):
    x = np.asarray(images.numpy() if hasattr(images, "numpy") and not isinstance(images, np.ndarray) else images)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: images must be a float array (N, C, H, W), got dtype {x.dtype}")
    c = tower.config
    if x.ndim != 4 or x.shape[1:] != (c.in_channels, c.image_size, c.image_size) or len(x) == 0:
        raise ValueError(f"{fn}: images must be (N, {c.in_channels}, {c.image_size}, {c.image_size}) with N >= 1, "
                         f"got shape {x.shape}")
    return np.ascontiguousarray(x, np.float32)


def _eval(tower, run):
    was = tower.training
    tower.train(False)
    try:
        with no_grad():
            return run()
    finally:
        tower.train(was)


def zero_shot_accuracy(tower, images, labels, class_texts, text_tokenizer=None, quantized=True, batch_size=256):
    """Zero-shot classification accuracy in [0, 1]: image i is put in the class k whose prompt embedding has
    the highest cosine with its image embedding (from the QUANTIZED features; quantized=False: the
    continuous ones, what stage 'align' trains). class_texts: one prompt per class (["a handwritten
    zero", ...]), or per class a list of prompts whose normalised embeddings are averaged (CLIP's prompt
    ensembling). labels (N,) ints in [0, K). text_tokenizer: default tower.text_tokenizer. Eval mode,
    no_grad (the codebook is not updated)."""
    fn = "zero_shot_accuracy"
    _check_tower(tower, fn)
    x = _images(images, tower, fn)
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise ValueError(f"{fn}: labels must be ints of shape ({len(x)},) (one per image), got {y.dtype} {y.shape}")
    if isinstance(class_texts, str) or not isinstance(class_texts, (list, tuple)) or len(class_texts) < 2:
        raise TypeError(f"{fn}: class_texts must be a list of at least 2 prompts (str, or lists of str)")
    groups = [[t] if isinstance(t, str) else list(t) for t in class_texts]
    if any(not g or any(not isinstance(s, str) for s in g) for g in groups):
        raise TypeError(f"{fn}: each class needs a prompt (str) or a non-empty list of prompts")
    if y.min() < 0 or y.max() >= len(groups):
        raise ValueError(f"{fn}: labels must lie in [0, {len(groups)}) (the classes of class_texts), got "
                         f"[{y.min()}, {y.max()}]")
    bs = _check_count(batch_size, fn, "batch_size")

    def run():
        flat = [s for g in groups for s in g]
        t = tower.text_embeddings(tower.tokenize(flat, text_tokenizer)).numpy().astype(np.float64)
        cls, at = [], 0
        for g in groups:
            m = t[at:at + len(g)].mean(0)
            cls.append(m / max(np.linalg.norm(m), 1e-12))
            at += len(g)
        cls = np.stack(cls)
        pred = np.concatenate([(tower.image_embeddings(x[i:i + bs], quantized=quantized).numpy() @ cls.T).argmax(1)
                               for i in range(0, len(x), bs)])
        return float((pred == y).mean())
    return _eval(tower, run)


def tower_metrics(tower, images, batch_size=256):
    """{"psnr", "ssim": of decode(encode(images)) against images (data range 2, mmu.metrics),
    "code_usage_per_depth": [D] the fraction of the codebook used at each depth over all the images,
    "perplexity_per_depth": [D] exp(entropy) of each depth's code distribution, "code_usage": the
    fraction of the codebook used at any depth}. Eval mode, no_grad."""
    fn = "tower_metrics"
    _check_tower(tower, fn)
    x = _images(images, tower, fn)
    bs = _check_count(batch_size, fn, "batch_size")
    codes = tower.encode(x, batch_size=bs)
    recon = tower.decode(codes, batch_size=bs)
    k, depth = tower.codebook_size, tower.rvq_depth
    flat = codes.reshape(-1, depth)
    usage, ppl = [], []
    for d in range(depth):
        u, p = _usage_perplexity(np.bincount(flat[:, d], minlength=k))
        usage.append(u)
        ppl.append(p)
    return {"psnr": psnr(recon, x), "ssim": ssim(recon, x), "code_usage_per_depth": usage,
            "perplexity_per_depth": ppl, "code_usage": float(np.unique(flat).size) / k}
