"""Moving digits: short clips of scikit-learn digits moving and bouncing on a black canvas, with captions
that say which digit moves which way ("a seven moving right", "a three bouncing up and down").

`moving_digits(...)` -> `MovingDigits`: clips (N, C, T, H, W) float32 in [-1, 1] (C = 1; the layout mmu's
"3d" tokenizers encode), per-clip metadata (digit labels, source rows, start positions, velocities,
per-frame positions and velocities, the motion words) and captions / question-answer pairs built from it.

Physics (integer pixels): a digit's top-left corner p (x right, y down) lives in [0, L], L = size -
digit_size; each frame p <- p + v, and a step that would leave [0, L] is reflected at the wall
(p <- -p below 0, p <- 2 L - p above L) and the velocity along that axis flips. Velocities are along one
axis (right, left, down or up) with a speed of speed[0] .. speed[1] pixels a frame (speed[1] <= L, so a
step reflects at most once). Captions say what the frames show: a digit whose every step goes the same way
is "moving right" / "left" / "down" / "up" (also one that starts at a wall and reflects off it before frame
1), one whose steps reverse or stall (a reflection) is "bouncing left and right" / "bouncing up and down".

Splits: the digit images of "train" and "test" are mmu.data.digits' train / test split for
(split_seed, test_fraction) - the same images as mmu.data.captioned_digits' split - so held-out clips show
handwriting never seen in training; the motions are drawn from separate streams per split.
"""
import functools

import numpy as np

from .captioned import DIGIT_WORDS, _ItemTexts
from .datasets import _check_int, _readonly, digits

__all__ = ["MovingDigits", "moving_digits", "moving_digits_corpus", "MOVING_DIRECTIONS", "MOVING_CAPTION_TEMPLATES"]

# direction name -> unit velocity (x right, y down)
MOVING_DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
# the motion phrase of a digit that bounced along an axis during the clip
_BOUNCING = {0: "bouncing left and right", 1: "bouncing up and down"}
# {word} the digit's name, {digit} its numeral, {motion} "moving right" / "bouncing up and down" / ...
MOVING_CAPTION_TEMPLATES = ("a {word} {motion}", "the digit {digit} {motion}", "a handwritten {word} {motion}")
_COUNT_WORDS = {1: "one", 2: "two"}


def _motion_phrase(positions, velocity):
    """positions (T, 2) of one digit, velocity (2,) its initial one -> its motion phrase, from what the frames
    show: "moving <direction>" when every step goes the same way along the velocity's axis, else "bouncing
    ..." (a step reversed or stalled at a wall; a digit that starts at a wall and reflects before frame 1
    is seen moving away from it, not bouncing)."""
    axis = 0 if velocity[0] != 0 else 1
    steps = np.diff(positions[:, axis])
    if (steps > 0).all():
        return "moving " + ("right" if axis == 0 else "down")
    if (steps < 0).all():
        return "moving " + ("left" if axis == 0 else "up")
    return _BOUNCING[axis]


def _texts(labels, motions, other):
    """(captions, qa pairs) of one clip: labels (K,) digits, motions K phrases; other: a digit not shown."""
    parts = [[t.format(word=DIGIT_WORDS[y], digit=y, motion=m) for y, m in zip(labels, motions)]
             for t in MOVING_CAPTION_TEMPLATES]
    caps = tuple(" and ".join(p) for p in parts)
    words = [DIGIT_WORDS[y] for y in labels]
    qa = [("how many digits are there?", _COUNT_WORDS[len(labels)]),
          (f"is there a {DIGIT_WORDS[other]}?", "no"),
          (f"is there a {words[0]}?", "yes")]
    if len(labels) == 1:
        qa += [("what digit is moving?", words[0]),
               ("how is the digit moving?", motions[0]),
               ("does the digit bounce?", "yes" if motions[0].startswith("bouncing") else "no")]
    else:
        qa += [("what digits are moving?", " and ".join(words))]
        for w, m in zip(words, motions):
            if words.count(w) == 1:   # "the seven" names one digit only when the digits differ
                qa.append((f"how is the {w} moving?", m))
    return caps, tuple(qa)


class MovingDigits(_ItemTexts):
    """Clips of moving digits with their metadata and texts (built by mmu.data.moving_digits).

    `.clips` (N, 1, T, H, W) float32 in [-1, 1] (read-only); `len()`; `ds[i]` -> (1, T, H, W);
    `.frames()` -> every frame as an image batch (N T, 1, H, W) (clip-major: clip i's frames are rows
    i T .. i T + T - 1). Metadata (read-only int64 arrays; K digits a clip, x right / y down, pixels):
    `.labels` (N, K) digit classes; `.source_index` (N, K) rows of sklearn's load_digits(); `.start` (N, K, 2)
    the top-left corner in frame 0; `.velocity` (N, K, 2) the initial velocity; `.positions` (N, T, K, 2) the
    top-left corner in every frame; `.velocities` (N, T, K, 2) the velocity leaving every frame (it flips
    after a bounce); `.motions` (N tuples of K str) "moving right" ... "bouncing up and down".
    Texts: `.captions` (one seeded choice per clip of MOVING_CAPTION_TEMPLATES), `.questions` / `.answers`
    (one seeded pair per clip), `all_captions(i)`, `all_qa(i)`. `.digit_size`, `.name`.
    """

    _items = "clips"

    def __init__(self, clips, name, caption_options, qa_options, caption_choice, qa_choice, **attrs):
        self.clips = clips
        self.name = str(name)
        self._set_texts(caption_options, qa_options, caption_choice, qa_choice)
        for k, v in attrs.items():
            setattr(self, k, v)

    def __len__(self):
        return self.clips.shape[0]

    def __getitem__(self, i):
        """ds[i] -> (1, T, H, W) float32 (a view); a slice gives (n, 1, T, H, W)."""
        if isinstance(i, slice):
            return self.clips[i]
        return self.clips[self._index(i, "__getitem__")]

    def __repr__(self):
        n, c, t, h, w = self.clips.shape
        return f"MovingDigits(name={self.name!r}, n={n}, frames={t}, size={h}x{w}, digits={self.labels.shape[1]})"

    @property
    def shape(self):
        """(N, C, T, H, W)."""
        return self.clips.shape

    def frames(self):
        """Every frame as an image: (N T, C, H, W) float32, clip i's frames at rows i T .. i T + T - 1."""
        n, c, t, h, w = self.clips.shape
        return np.ascontiguousarray(self.clips.transpose(0, 2, 1, 3, 4).reshape(n * t, c, h, w))


def _trajectory(start, velocity, frames, limit):
    """start (2,), velocity (2,) ints -> positions (T, 2), velocities (T, 2): p <- p + v, reflected at
    0 and limit (the velocity along the axis flips)."""
    pos = np.empty((frames, 2), np.int64)
    vel = np.empty((frames, 2), np.int64)
    p, v = np.array(start, np.int64), np.array(velocity, np.int64)
    for t in range(frames):
        pos[t], vel[t] = p, v
        q = p + v
        low, high = q < 0, q > limit
        q = np.where(low, -q, np.where(high, 2 * limit - q, q))
        v = np.where(low | high, -v, v)
        p = q
    return pos, vel


@functools.lru_cache(maxsize=8)
def _moving(n, frames, size, digit_size, split, seed, num_digits, speed, test_fraction, split_seed):
    source = digits(digit_size, split, test_fraction, split_seed)
    pool_images, pool_labels, pool_index = source.images, source.labels, source.index
    limit = size - digit_size
    rng = np.random.default_rng([seed, 0x40D1, 0 if split == "train" else 1])
    dirs = np.array(list(MOVING_DIRECTIONS.values()), np.int64)
    pick = rng.integers(0, len(pool_labels), (n, num_digits))
    start = rng.integers(0, limit + 1, (n, num_digits, 2))
    direction = rng.integers(0, len(dirs), (n, num_digits))
    speeds = rng.integers(speed[0], speed[1] + 1, (n, num_digits))
    velocity = dirs[direction] * speeds[..., None]
    caption_choice = rng.integers(0, len(MOVING_CAPTION_TEMPLATES), n)
    qa_key = rng.integers(0, 1 << 30, n)
    other_offset = rng.integers(0, 10, n)
    clips = np.full((n, 1, frames, size, size), -1.0, np.float32)
    positions = np.empty((n, frames, num_digits, 2), np.int64)
    velocities = np.empty((n, frames, num_digits, 2), np.int64)
    for i in range(n):
        for k in range(num_digits):
            positions[i, :, k], velocities[i, :, k] = _trajectory(start[i, k], velocity[i, k], frames, limit)
            img = pool_images[pick[i, k], 0]
            for t in range(frames):
                x, y = positions[i, t, k]
                window = clips[i, 0, t, y:y + digit_size, x:x + digit_size]
                np.maximum(window, img, out=window)   # overlapping digits: the brighter pixel (both on black)
    labels = pool_labels[pick]
    motions = tuple(tuple(_motion_phrase(positions[i, :, k], velocity[i, k]) for k in range(num_digits))
                    for i in range(n))
    caption_options, qa_options, qa_choice = [], [], []
    for i in range(n):
        shown = set(int(y) for y in labels[i])
        other = [d for d in range(10) if d not in shown][other_offset[i] % (10 - len(shown))]
        caps, qa = _texts([int(y) for y in labels[i]], motions[i], other)
        caption_options.append(caps)
        qa_options.append(qa)
        qa_choice.append(int(qa_key[i]) % len(qa))
    return (_readonly(clips), _readonly(labels), _readonly(pool_index[pick]), _readonly(start),
            _readonly(velocity), _readonly(positions), _readonly(velocities), motions,
            tuple(caption_options), tuple(qa_options), _readonly(caption_choice), tuple(qa_choice))


def moving_digits(n=None, frames=8, size=32, split="train", seed=0, num_digits=1, digit_size=16, speed=(1, 3),
                  test_fraction=0.2, split_seed=0):
    """Clips of scikit-learn digits moving and bouncing on a black canvas -> MovingDigits.

    n: clips (default 1024 train, 256 test); frames: T >= 2; size: the canvas side H = W; digit_size: the
    digits' side, 8 (the originals), 16 or 32 (mmu.data.digits' bilinear enlargement), < size;
    num_digits: 1 or 2 digits a clip (two may overlap: the brighter pixel wins); speed: (lowest, highest)
    pixels a frame, 1 <= lowest <= highest <= size - digit_size. Each digit starts at a uniform top-left
    corner in [0, size - digit_size]^2, moves right, left, down or up (uniform) at a uniform speed and
    reflects off the canvas' walls (the module docstring has the rule). Digit images come from
    mmu.data.digits(digit_size, split, test_fraction, split_seed): "test" clips show only held-out
    handwriting (captioned_digits' test images for the same split_seed / test_fraction).
    Captions (MOVING_CAPTION_TEMPLATES): "a seven moving right", "the digit 3 bouncing up and down",
    "a handwritten seven moving left and a handwritten two moving up"; questions: "how many digits are
    there?", "what digit is moving?", "how is the digit moving?", "does the digit bounce?", "is there a
    <digit>?" (yes / no), ...
    A pure function of its arguments (seeded NumPy streams, separate per split); built once per
    argument set (cached: the arrays are read-only). Returns clips (n, 1, frames, size, size) float32
    in [-1, 1] with the metadata of MovingDigits.
    """
    fn = "mmu.data.moving_digits"
    if not isinstance(split, str) or split not in ("train", "test"):
        raise ValueError(f"{fn}: split must be 'train' or 'test', got {split!r}")
    n = (1024 if split == "train" else 256) if n is None else _check_int(fn, "n", n, 1)
    frames = _check_int(fn, "frames", frames, 2)
    size = _check_int(fn, "size", size, 9)
    if size > 256:
        raise ValueError(f"{fn}: size must be <= 256, got {size}")
    digit_size = _check_int(fn, "digit_size", digit_size, 1)
    if digit_size not in (8, 16, 32):
        raise ValueError(f"{fn}: digit_size must be 8, 16 or 32, got {digit_size}")
    if digit_size >= size:
        raise ValueError(f"{fn}: digit_size ({digit_size}) must be smaller than size ({size}) so digits can move")
    num_digits = _check_int(fn, "num_digits", num_digits, 1)
    if num_digits > 2:
        raise ValueError(f"{fn}: num_digits must be 1 or 2, got {num_digits}")
    if isinstance(speed, (str, bytes)) or not hasattr(speed, "__len__") or len(speed) != 2:
        raise TypeError(f"{fn}: speed must be a pair (lowest, highest) of ints, got {speed!r}")
    lo, hi = (_check_int(fn, f"speed[{j}]", s, 1) for j, s in enumerate(speed))
    if lo > hi or hi > size - digit_size:
        raise ValueError(f"{fn}: speed must satisfy 1 <= lowest <= highest <= size - digit_size = "
                         f"{size - digit_size}, got {tuple(speed)}")
    seed = _check_int(fn, "seed", seed, 0)
    split_seed = _check_int(fn, "split_seed", split_seed, 0)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"{fn}: test_fraction must be in (0, 1), got {test_fraction!r}")
    (clips, labels, index, start, velocity, positions, velocities, motions, caption_options, qa_options,
     caption_choice, qa_choice) = _moving(n, frames, size, digit_size, split, seed, num_digits, (lo, hi),
                                          float(test_fraction), split_seed)
    return MovingDigits(clips, f"moving-digits{size}x{frames}-{split}", list(caption_options), list(qa_options),
                        caption_choice, qa_choice, labels=labels, source_index=index, start=start,
                        velocity=velocity, positions=positions, velocities=velocities, motions=list(motions),
                        digit_size=digit_size)


def moving_digits_corpus(num_digits=(1, 2)):
    """Every caption, question and answer text moving_digits can produce for the given digit counts
    (1, 2 or both) -> sorted list of unique str: the corpus of a word-level text tokenizer
    (mmu.text.TextTokenizer.train_word_level) so that no word of the set is unknown."""
    fn = "mmu.data.moving_digits_corpus"
    counts = (num_digits,) if not isinstance(num_digits, (tuple, list)) else tuple(num_digits)
    if not counts or any(isinstance(k, bool) or k not in (1, 2) for k in counts):
        raise ValueError(f"{fn}: num_digits must be 1, 2 or a list of them, got {num_digits!r}")
    phrases = [f"moving {d}" for d in MOVING_DIRECTIONS] + list(_BOUNCING.values())
    out = set()
    for k in sorted(set(counts)):
        for labels in np.ndindex(*(10,) * k):
            for motions in np.ndindex(*(len(phrases),) * k):
                for other in set(range(10)) - set(labels):
                    caps, qa = _texts(list(labels), [phrases[m] for m in motions], other)
                    out.update(caps)
                    for q, a in qa:
                        out.update((q, a))
    return sorted(out)
