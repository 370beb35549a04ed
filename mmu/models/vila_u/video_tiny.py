"""Text -> short video with VILA-U on moving digits, small enough to train in minutes on 2 cores.

VILA-U generates a video as one sequence: [SOT] prompt [EOT] [SOV] v_1 .. v_TN [EOV], the frames' N = h w
tokens concatenated frame after frame (vila_u_arch.generate_video_content; VILAU's "t2v" part and
generate_video). Here:
1. a tiny UnifiedVisionTower learns the FRAMES of mmu.data.moving_digits clips with still captions ("a
   handwritten seven": a single frame shows no motion) through recipe.train_recipe ('align' then 'tower',
   the paper's recipe), unless the caller gives a trained tower;
2. every clip is encoded frame by frame -> codes (T h w, D), and VILAU learns [caption] -> [video codes]
   ("t2v" batches: the depth-transformer code loss on every visual position);
3. generate_clips samples codes with classifier-free guidance and decodes them -> clips (B, 1, T, H, W).
benchmarks/eval_vila_u_video.py judges the generated clips (the digit of each frame, the direction of the
motion).
"""
import time

import numpy as np

from ..._args import check_int, is_int

__all__ = ["VIDEO_TINY_DATA", "video_tiny_tokenizer", "video_tiny_data", "train_vila_u_video_tiny",
           "generate_clips", "frame_captions"]

# the clips the tiny run learns: 4 frames of a 16 px canvas, one 8 px digit moving 1-2 px a frame
VIDEO_TINY_DATA = dict(frames=4, size=16, digit_size=8, speed=(1, 2), num_digits=1)
# the tiny tower: 4 x 4 patches of 4 px, 2 residual depths of a 256-code shared codebook. Measured on 60 held-out
# clips after 100 'align' + 700 'tower' steps (benchmarks/eval_vila_u_video.py's judge): depth 2 reconstructs
# frames at PSNR 21.3 dB with 77% of their digits recognised, depth 4 at 22.5 dB / 83% (both trained on the same
# 4096 clips); the AR model then has half the codes to predict a position
_TOWER = dict(patch_size=4, in_channels=1, dim=64, depth=2, num_heads=4, codebook_size=256, rvq_depth=2,
              decoder_ch=16, decoder_ch_mult=[1, 1, 2], decoder_z_channels=16, decoder_norm_groups=8,
              text_dim=32, text_depth=1, text_heads=2)
_MODEL = dict(dim=64, num_layers=2, num_heads=4, depth_dim=64, depth_layers=1, depth_heads=2)


def video_tiny_tokenizer():
    """A word-level mmu.text.TextTokenizer over every text of moving digits (one and two digits) and of
    captioned digits (the still frame captions): no word of either is unknown."""
    from ...data import caption_corpus, moving_digits_corpus
    from ...text import TextTokenizer
    return TextTokenizer.train_word_level(moving_digits_corpus() + caption_corpus("digits"))


def video_tiny_data(n=None, split="train", seed=0, **data):
    """mmu.data.moving_digits(n, split=split, seed=seed, **{**VIDEO_TINY_DATA, **data}): the clips of the
    tiny run (default 4 frames of 16 x 16, one 8 px digit at 1-2 px a frame)."""
    from ...data import moving_digits
    return moving_digits(n, split=split, seed=seed, **{**VIDEO_TINY_DATA, **data})


def frame_captions(dataset):
    """The still caption of each frame of a MovingDigits set (clip-major, T per clip, as dataset.frames()):
    "a handwritten seven" (two digits: "a handwritten seven and a handwritten three")."""
    from ...data.captioned import DIGIT_WORDS
    t = dataset.clips.shape[2]
    out = []
    for labels in dataset.labels:
        text = " and ".join(f"a handwritten {DIGIT_WORDS[int(y)]}" for y in labels)
        out.extend([text] * t)
    return out


def _ids(tokenizer, texts):
    rows = [tokenizer.encode(t) for t in texts]
    out = np.full((len(rows), max(len(r) for r in rows)), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _video_codes(tower, dataset, batch_size=256):
    """Clips -> codes (N, T h w, D) int64: each frame through tower.encode, frames concatenated in order."""
    n, _, t = dataset.clips.shape[:3]
    codes = tower.encode(dataset.frames(), batch_size=batch_size)   # (N T, h, w, D)
    return np.ascontiguousarray(codes.reshape(n, t * codes.shape[1] * codes.shape[2], codes.shape[3]))


def train_vila_u_video_tiny(steps=6000, tower=None, tower_steps=800, align_steps=None, n=4096, seed=0,
                            batch_size=16, lr=3e-3, tower_batch_size=64, tower_lr=2e-3, tokenizer=None, data=None,
                            model_fields=None, tower_fields=None, progress=False):
    """Trains VILA-U's text -> video task on moving digits -> (model, info).

    The defaults are the measured recipe (benchmarks/eval_vila_u_video.py): 4096 training clips and 6000
    steps at lr 3e-3; with 1024 clips and 800 steps, or 4096 clips and 1500 steps, the generated clips stay
    near chance.

    data: a MovingDigits set (default video_tiny_data(n, "train", seed)); its frames must be single-channel
    squares. tower: a trained UnifiedVisionTower of the frames (its config's image_size / in_channels);
    None: a tiny one (_TOWER, tower_fields override) is built with mmu.manual_seed(seed) and trained on the
    frames with their still captions by recipe.train_recipe('align_tower', tower_steps) (align_steps of stage
    'align', default max(1, tower_steps // 8): the rest trains reconstruction, what the frames need; batch
    tower_batch_size, lr tower_lr). The clips' codes (frames concatenated: (T h w, D) a clip) and their
    captions then train a VILAU (_MODEL sizes, model_fields override; max_seq_len fits the longest row) on
    "t2v" batches for `steps` AdamW steps (batch_size, lr, 5% warmup) through mmu.train.Trainer.
    tokenizer: an mmu.text.TextTokenizer (default video_tiny_tokenizer()). Seeded: the same arguments give
    bit-identical weights.
    info: {"tokenizer", "data", "tower_history" (None with a given tower), "history", "tower_seconds",
    "seconds", "frames"}.
    """
    from ...train import TrainConfig, Trainer
    from ... import manual_seed
    from .model import VILAU
    from .recipe import train_recipe
    from .tower import UnifiedVisionTower
    fn = "train_vila_u_video_tiny"
    steps = check_int(steps, fn, "steps")
    tower_steps = check_int(tower_steps, fn, "tower_steps")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("tower_batch_size", tower_batch_size)):
        if not is_int(v) or v < 1:
            raise ValueError(f"{fn}: {name} must be an int >= 1, got {v!r}")
    if tower is None and tower_steps < 2:
        raise ValueError(f"{fn}: tower_steps must be >= 2 (align, then tower) when no tower is given, got "
                         f"{tower_steps}")
    for name, v in (("model_fields", model_fields), ("tower_fields", tower_fields)):
        if v is not None and not isinstance(v, dict):
            raise TypeError(f"{fn}: {name} must be a dict of config fields or None, got {type(v).__name__}")
    if data is None:
        data = video_tiny_data(n, "train", seed)
    if not hasattr(data, "clips") or not hasattr(data, "captions") or np.ndim(data.clips) != 5:
        raise TypeError(f"{fn}: data must be a MovingDigits set (mmu.data.moving_digits), got {type(data).__name__}")
    _, c, t, h, w = data.clips.shape
    tok = video_tiny_tokenizer() if tokenizer is None else tokenizer
    if tower is not None and not isinstance(tower, UnifiedVisionTower):
        raise TypeError(f"{fn}: tower must be a UnifiedVisionTower or None, got {type(tower).__name__}")

    tower_history, tower_seconds = None, 0.0
    if tower is None:
        caps = frame_captions(data)
        fields = dict(_TOWER, image_size=h, in_channels=c, text_vocab_size=tok.vocab_size,
                      text_max_len=max(len(tok.encode(x)) for x in caps) + 1, text_pad_id=tok.pad_id)
        fields.update(tower_fields or {})
        manual_seed(seed)
        tower = UnifiedVisionTower(**fields)
        frames = data.frames()
        tower_data = {"images": frames, "text_ids": tower.tokenize(caps, tok)}
        start = time.perf_counter()
        align = max(1, tower_steps // 8) if align_steps is None else align_steps
        tower_history = train_recipe(tower, tower_data, "align_tower", tower_steps, align_steps=align,
                                     batch_size=tower_batch_size,
                                     lr=tower_lr, seed=seed, warmup_steps=tower_steps // 20, progress=progress)
        tower_seconds = time.perf_counter() - start
    tc = tower.config
    if (tc.image_size, tc.in_channels) != (h, c) or h != w:
        raise ValueError(f"{fn}: the tower takes ({tc.in_channels}, {tc.image_size}, {tc.image_size}) frames, the "
                         f"clips have ({c}, {h}, {w})")
    tower.eval()
    codes = _video_codes(tower, data)
    text_ids = _ids(tok, data.captions)
    longest = int((text_ids >= 0).sum(1).max()) + 2 + codes.shape[1] + 2
    fields = dict(_MODEL, llm_vocab_size=tok.vocab_size, sot_token_id=tok.bos_id, eot_token_id=tok.eos_id,
                  max_seq_len=longest)
    fields.update(model_fields or {})
    manual_seed(seed)
    model = VILAU(tower=tower, **fields)
    batch = {"t2v.text_ids": text_ids, "t2v.codes": codes}
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, betas=(0.9, 0.95), warmup_steps=steps // 20,
                      log_every=max(1, steps // 50), seed=seed, progress=progress)
    start = time.perf_counter()
    history = Trainer(model, batch, cfg).fit()
    seconds = time.perf_counter() - start
    model.eval()
    return model, {"tokenizer": tok, "data": data, "tower_history": tower_history, "history": history,
                   "tower_seconds": tower_seconds, "seconds": seconds, "frames": t}


def generate_clips(model, tokenizer, captions, num_frames, seed=0, cfg_scale=None, top_k=None, top_p=None,
                   temperature=None, do_sample=True):
    """Captions (list of str) -> clips (B, C, T, H, W) float32: model.generate_video on the tokenized captions
    (classifier-free guidance and sampling: VILAU.generate_video's arguments, an mmu.Generator(seed)), each
    frame's codes decoded by the tower; (B, C, T, H, W) is mmu.data.moving_digits' layout."""
    from ... import Generator
    fn = "generate_clips"
    if isinstance(captions, str) or not isinstance(captions, (list, tuple)) or not captions \
            or any(not isinstance(x, str) for x in captions):
        raise TypeError(f"{fn}: captions must be a non-empty list of str")
    num_frames = check_int(num_frames, fn, "num_frames")
    if num_frames < 1:
        raise ValueError(f"{fn}: num_frames must be >= 1, got {num_frames}")
    prompts = [tokenizer.encode(x) for x in captions]
    codes = model.generate_video(prompts, num_frames, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p,
                                 temperature=temperature, generator=Generator(check_int(seed, fn, "seed")),
                                 do_sample=do_sample)
    video = model.decode(codes)   # (B, T, C, H, W)
    return np.ascontiguousarray(np.clip(video, -1.0, 1.0).transpose(0, 2, 1, 3, 4), np.float32)
