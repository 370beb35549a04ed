"""Images with captions and question/answer pairs, for text-conditioned generation and captioning.

- `captioned_digits`: every scikit-learn digit with captions from DIGIT_CAPTION_TEMPLATES ("a handwritten
  seven", "the digit 7", "7", ...) and questions ("what digit is this?" -> "seven", "is this an odd
  number?" -> "yes"); the train/test split is mmu.data.digits' own.
- `captioned_shapes`: synthetic scenes drawn in NumPy - one object (colour x shape x size x position,
  "a small red circle at the top left") or two objects and a relation ("a blue square left of a green
  triangle") - whose test split holds out colour-shape COMBINATIONS (SHAPES_HELD_OUT: a red triangle is
  never drawn in training, though red things and triangles are), so a model must compose the words.
- `caption_corpus`: every caption, question and answer text both sets can produce (a tokenizer's
  training corpus).
- `judge_shapes`: checks images (generated from shapes captions) against the scenes' attributes:
  colour, shape, size, position and relation, per image.

Each set is a `CaptionedImages` (an ImageDataset): float32 (N, C, H, W) images in [-1, 1], `.captions`
(one seeded choice per image), `.questions` / `.answers` (one seeded pair per image), and
`all_captions(i)` / `all_qa(i)` listing every caption and pair of image i.
"""
import functools
import itertools

import numpy as np

from .datasets import ImageDataset, _check_int, _digits_all, _readonly, digits

__all__ = ["CaptionedImages", "captioned_digits", "captioned_shapes", "caption_corpus", "caption_sets", "judge_shapes",
           "DIGIT_WORDS", "DIGIT_CAPTION_TEMPLATES", "SHAPE_COLOURS", "SHAPE_KINDS", "SHAPE_SIZES", "SHAPE_POSITIONS",
           "SHAPE_RELATIONS", "SHAPES_HELD_OUT"]


class _ItemTexts:
    """The texts of a captioned set's items (images or clips, `_items` names them): captions, one
    question/answer pair each, every option per item, and the whole set's texts."""
    _items = "images"

    def _set_texts(self, caption_options, qa_options, caption_choice, qa_choice):
        # caption_options / qa_options: per item a tuple of captions / (question, answer) pairs;
        # caption_choice / qa_choice: per item the index of the one in .captions / .questions
        self._caption_options = caption_options
        self._qa_options = qa_options
        self.captions = [c[k] for c, k in zip(caption_options, caption_choice)]
        self.questions = [q[k][0] for q, k in zip(qa_options, qa_choice)]
        self.answers = [q[k][1] for q, k in zip(qa_options, qa_choice)]
        self.caption_choice = _readonly(np.asarray(caption_choice, np.int64))

    def _index(self, i, fn):
        name = type(self).__name__
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{name}.{fn}: index must be an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{name}.{fn}: index {i} out of range for {n} {self._items}")
        return int(i) % n

    def all_captions(self, i):
        """Every caption of item i (list of str; `.captions[i]` is one of them)."""
        return list(self._caption_options[self._index(i, "all_captions")])

    def all_qa(self, i):
        """Every (question, answer) pair of item i (list of 2-tuples of str)."""
        return list(self._qa_options[self._index(i, "all_qa")])

    def texts(self):
        """Every caption, question and answer of the whole set (list of str, in item order)."""
        out = []
        for caps, qas in zip(self._caption_options, self._qa_options):
            out.extend(caps)
            for q, a in qas:
                out.extend((q, a))
        return out


class CaptionedImages(_ItemTexts, ImageDataset):
    """An ImageDataset whose images have texts.

    `.captions` (list of N str): one caption per image, a seeded choice among its captions;
    `.questions`, `.answers` (lists of N str): one seeded question/answer pair per image;
    `all_captions(i)`, `all_qa(i)`: every caption (list of str) and every (question, answer) pair of
    image i; `.caption_choice` (N,) int64: the index of `.captions[i]` in `all_captions(i)`. Other
    attributes depend on the set (`.labels` for digits, `.scenes` for shapes).
    """

    def __init__(self, images, name, caption_options, qa_options, caption_choice, qa_choice, **attrs):
        # caption_options / qa_options: per image a tuple of captions / (question, answer) pairs;
        # caption_choice / qa_choice: per image the index of the one in .captions / .questions
        super().__init__(images, name=name, **attrs)
        n = len(self)
        if not (len(caption_options) == len(qa_options) == len(caption_choice) == len(qa_choice) == n):
            raise ValueError(f"CaptionedImages: {n} images but {len(caption_options)} caption lists, "
                             f"{len(qa_options)} question lists")
        self._set_texts(caption_options, qa_options, caption_choice, qa_choice)

    def __repr__(self):
        n, c, h, w = self.images.shape
        return f"CaptionedImages(name={self.name!r}, n={n}, channels={c}, size={h}x{w})"


def _yes(b):
    return "yes" if b else "no"


# ---------------------------------------------------------------------------------------------
# digits

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {word} is the digit's name, {digit} its numeral
DIGIT_CAPTION_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "{digit}",
    "a picture of the number {word}",
    "the number {word}",
    "a handwritten digit {digit}",
    "an image of the digit {word}",
    "{word}",
)


def _digit_texts(label, other):
    """(captions, qa pairs) of a digit `label`; `other` is a different digit for a "no" question."""
    word, digit = DIGIT_WORDS[label], str(label)
    caps = tuple(t.format(word=word, digit=digit) for t in DIGIT_CAPTION_TEMPLATES)
    qa = (("what digit is this?", word),
          ("which number is written here?", digit),
          ("is this an odd number?", _yes(label % 2 == 1)),
          ("is this an even number?", _yes(label % 2 == 0)),
          ("is this number greater than five?", _yes(label > 5)),
          (f"is this the digit {word}?", "yes"),
          (f"is this the digit {DIGIT_WORDS[other]}?", "no"))
    return caps, qa


def captioned_digits(size=16, split="train", seed=0, test_fraction=0.2):
    """scikit-learn's 1797 digits with captions and question/answer pairs -> CaptionedImages.

    Images are mmu.data.digits' ((N, 1, size, size) float32 in [-1, 1], size 8, 16 or 32) with the same
    train/test split for the same (seed, test_fraction); split="all" gives every image in file order.
    Each image has the captions of DIGIT_CAPTION_TEMPLATES ("a handwritten seven", "the digit 7",
    "7", ...) and 7 question/answer pairs ("what digit is this?" -> "seven", "which number is written
    here?" -> "7", odd / even / greater than five -> "yes"/"no", "is this the digit seven?" -> "yes",
    the same with another digit -> "no"). `.captions` / `.questions` / `.answers` pick one per image
    with a generator seeded by `seed` and drawn per file row, so an image has the same texts in
    "all" and in its split. Attributes: `.labels` (N,) int64, `.index` (N,) rows of load_digits(),
    `.caption_choice` (N,) int64 (the DIGIT_CAPTION_TEMPLATES index of `.captions`).
    """
    fn = "mmu.data.captioned_digits"
    if not isinstance(split, str) or split not in ("train", "test", "all"):
        raise ValueError(f"{fn}: split must be 'train', 'test' or 'all', got {split!r}")
    seed = _check_int(fn, "seed", seed, 0)
    parts = [digits(size, s, test_fraction, seed) for s in (("train", "test") if split == "all" else (split,))]
    index = np.concatenate([p.index for p in parts])
    order = np.argsort(index, kind="stable")
    images = np.concatenate([p.images for p in parts])[order]
    labels = np.concatenate([p.labels for p in parts])[order]
    index = index[order]
    caption_choice, qa_choice, other = _digit_choices(seed, len(_digits_all()[1]))
    caption_choice, qa_choice, other = caption_choice[index], qa_choice[index], other[index]
    texts = [_digit_texts(int(y), int((y + 1 + o) % 10)) for y, o in zip(labels, other)]
    return CaptionedImages(_readonly(images), f"captioned-digits{parts[0].size}-{split}",
                           [t[0] for t in texts], [t[1] for t in texts], caption_choice, qa_choice,
                           labels=_readonly(labels), index=_readonly(index))


@functools.lru_cache(maxsize=8)
def _digit_choices(seed, rows):
    # per file row: caption template, question, and the offset 0..8 of the "no" digit
    rng = np.random.default_rng([seed, 0x7E47])
    return (_readonly(rng.integers(0, len(DIGIT_CAPTION_TEMPLATES), rows)), _readonly(rng.integers(0, 7, rows)),
            _readonly(rng.integers(0, 9, rows)))


# ---------------------------------------------------------------------------------------------
# shapes

# RGB (0..255) of each colour name: far apart, so the nearest one names a pixel unambiguously
SHAPE_COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 80, 235), "yellow": (235, 215, 30),
                 "purple": (150, 50, 200), "white": (240, 240, 240)}
SHAPE_KINDS = ("circle", "square", "triangle", "diamond")
# half the object's extent as a fraction of the image side
SHAPE_SIZES = {"small": 0.12, "large": 0.2}
# the 3 x 3 grid cells (row, col) and how a caption says where an object is
SHAPE_POSITIONS = {"top left": ((0, 0), "at the top left"), "top": ((0, 1), "at the top"),
                   "top right": ((0, 2), "at the top right"), "left": ((1, 0), "on the left"),
                   "center": ((1, 1), "in the center"), "right": ((1, 2), "on the right"),
                   "bottom left": ((2, 0), "at the bottom left"), "bottom": ((2, 1), "at the bottom"),
                   "bottom right": ((2, 2), "at the bottom right")}
# "A <relation> B": A's centre is left of / right of / above / below B's (y grows downwards)
SHAPE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# colour-shape pairs never drawn in the training split; every colour and every shape still is
SHAPES_HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"), ("yellow", "diamond"))

_SINGLE_TEMPLATES = ("a {size} {colour} {shape} {where}", "a {colour} {shape} {where}", "a {size} {colour} {shape}",
                     "a {colour} {shape}", "there is a {size} {colour} {shape} {where}")


def _single_texts(o, other_colour):
    """(captions, qa) of a one-object scene; o = (colour, shape, size, position); other_colour differs."""
    colour, shape, size, pos = o
    where = SHAPE_POSITIONS[pos][1]
    caps = tuple(t.format(size=size, colour=colour, shape=shape, where=where) for t in _SINGLE_TEMPLATES)
    qa = (("how many objects are there?", "one"),
          (f"what colour is the {shape}?", colour),
          ("what shape is this?", shape),
          (f"where is the {colour} {shape}?", pos),
          (f"is the {colour} {shape} small or large?", size),
          (f"is there a {colour} {shape}?", "yes"),
          (f"is there a {other_colour} {shape}?", "no"))
    return caps, qa


def _pair_texts(a, b, relation):
    """(captions, qa) of a two-object scene "a <relation> b" (objects as in _single_texts)."""
    inverse = SHAPE_RELATIONS[relation]
    ca, sa, za = a[:3]
    cb, sb, zb = b[:3]
    caps = (f"a {ca} {sa} {relation} a {cb} {sb}",
            f"a {za} {ca} {sa} {relation} a {zb} {cb} {sb}",
            f"a {cb} {sb} {inverse} a {ca} {sa}")
    qa = [("how many objects are there?", "two"),
          (f"what shape is the {ca} object?", sa), (f"what shape is the {cb} object?", sb),
          (f"is the {ca} {sa} {relation} the {cb} {sb}?", "yes"),
          (f"is the {ca} {sa} {inverse} the {cb} {sb}?", "no"),
          (f"what is {relation} the {cb} {sb}?", f"a {ca} {sa}")]
    if sa != sb:   # "the circle" names one object only when the shapes differ
        qa += [(f"what colour is the {sa}?", ca), (f"what colour is the {sb}?", cb)]
    return caps, tuple(qa)


def _check_held_out(fn, held_out):
    if held_out is None:
        return SHAPES_HELD_OUT
    try:
        pairs = tuple(tuple(p) for p in held_out)
    except TypeError:
        raise TypeError(f"{fn}: held_out must be a list of (colour, shape) pairs, got {held_out!r}") from None
    for p in pairs:
        if len(p) != 2 or p[0] not in SHAPE_COLOURS or p[1] not in SHAPE_KINDS:
            raise ValueError(f"{fn}: held_out pair {p!r} is not (colour, shape) with a colour of "
                             f"{tuple(SHAPE_COLOURS)} and a shape of {SHAPE_KINDS}")
    pairs = tuple(sorted(set(pairs)))
    if not pairs or len(pairs) == len(SHAPE_COLOURS) * len(SHAPE_KINDS):
        raise ValueError(f"{fn}: held_out must hold at least one colour-shape pair and leave at least one "
                         f"for training, got {len(pairs)}")
    return pairs


def _coverage(shape, cx, cy, h, size):
    """(size, size) float32: the fraction of each pixel inside the shape, from ss x ss samples per pixel
    (pixel (x, y) covers [x, x+1) x [y, y+1); samples at the sub-pixel centres; ss from 4 to 16 so that
    about 128 samples span the shape), so the covered area is the shape's within ~1.5%: circle pi h^2,
    square 4 h^2, triangle and diamond 2 h^2."""
    ss = int(np.clip(np.ceil(64.0 / h), 4, 16))
    x0, x1 = max(int(np.floor(cx - h)), 0), min(int(np.ceil(cx + h)), size)
    y0, y1 = max(int(np.floor(cy - h)), 0), min(int(np.ceil(cy + h)), size)
    xs = x0 + (np.arange((x1 - x0) * ss) + 0.5) / ss - cx     # sample offsets from the centre
    ys = y0 + (np.arange((y1 - y0) * ss) + 0.5) / ss - cy
    dx, dy = np.abs(xs)[None, :], ys[:, None]
    if shape == "circle":
        inside = dx * dx + dy * dy <= h * h
    elif shape == "square":
        inside = (dx <= h) & (np.abs(dy) <= h)
    elif shape == "triangle":   # apex (cx, cy - h), base from (cx - h, cy + h) to (cx + h, cy + h)
        inside = (dy <= h) & (dx <= (dy + h) / 2)
    else:                       # diamond
        inside = dx + np.abs(dy) <= h
    out = np.zeros((size, size), np.float32)
    out[y0:y1, x0:x1] = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return out


def _object(rng, size, colour, shape, size_name, pos_name, jitter=0.2):
    """An object dict with its centre drawn inside its grid cell (at most `jitter` cells from the
    cell's centre) and kept inside the image."""
    (row, col), _ = SHAPE_POSITIONS[pos_name]
    h = SHAPE_SIZES[size_name] * size
    cell = size / 3.0
    cx = (col + 0.5 + rng.uniform(-jitter, jitter)) * cell
    cy = (row + 0.5 + rng.uniform(-jitter, jitter)) * cell
    cx, cy = float(np.clip(cx, h + 0.5, size - h - 0.5)), float(np.clip(cy, h + 0.5, size - h - 0.5))
    return {"colour": colour, "shape": shape, "size": size_name, "position": pos_name, "center": (cx, cy),
            "half_extent": float(h)}


def _cell_name(size, cx, cy):
    row, col = min(int(cy * 3 // size), 2), min(int(cx * 3 // size), 2)
    return next(k for k, ((r, c), _) in SHAPE_POSITIONS.items() if (r, c) == (row, col))


def _pair_objects(rng, size, a, b, relation):
    """Object dicts of A and B ((colour, shape, size-name) triples) placed so that "A <relation> B" holds
    clearly: along the relation's axis the centres are at least half_A + half_B + 0.1 * size apart (no
    overlap), across it they differ by at most 0.1 * size (less than half that gap)."""
    ha, hb = SHAPE_SIZES[a[2]] * size, SHAPE_SIZES[b[2]] * size
    a_first = relation in ("left of", "above")        # A has the smaller x ("left of") or y ("above")
    h1, h2 = (ha, hb) if a_first else (hb, ha)
    lo, hi = h1 + 0.5, size - h2 - 0.5                 # range of the first and second centres
    gap = rng.uniform(h1 + h2 + 0.1 * size, hi - lo)
    p1 = lo + rng.uniform(0.0, hi - lo - gap)
    p2 = p1 + gap
    pa, pb = (p1, p2) if a_first else (p2, p1)
    hmax = max(ha, hb)
    line = rng.uniform(hmax + 0.5, size - hmax - 0.5)
    qa, qb = line + rng.uniform(-0.05, 0.05, 2) * size
    qa, qb = float(np.clip(qa, ha + 0.5, size - ha - 0.5)), float(np.clip(qb, hb + 0.5, size - hb - 0.5))
    horizontal = relation in ("left of", "right of")
    objs = []
    for (colour, shape, size_name), p, q, h in ((a, pa, qa, ha), (b, pb, qb, hb)):
        cx, cy = (p, q) if horizontal else (q, p)
        objs.append({"colour": colour, "shape": shape, "size": size_name, "position": _cell_name(size, cx, cy),
                     "center": (float(cx), float(cy)), "half_extent": float(h)})
    return objs


@functools.lru_cache(maxsize=8)
def _shapes(n, size, split, seed, pair_fraction, held_out):
    rng = np.random.default_rng([seed, 0x5A4E, 0 if split == "train" else 1])
    all_pairs = list(itertools.product(SHAPE_COLOURS, SHAPE_KINDS))
    train_pairs = [p for p in all_pairs if p not in held_out]
    sizes, positions, colours = list(SHAPE_SIZES), list(SHAPE_POSITIONS), list(SHAPE_COLOURS)
    images = np.empty((n, 3, size, size), np.float32)
    scenes = []
    for i in range(n):
        def pick(pool):
            return pool[rng.integers(len(pool))]

        if rng.random() >= pair_fraction:
            colour, shape = pick(held_out if split == "test" else train_pairs)
            objs = [_object(rng, size, colour, shape, pick(sizes), pick(positions))]
            relation = None
        else:
            relation = pick(list(SHAPE_RELATIONS))
            first = pick(held_out if split == "test" else train_pairs)
            # the second: any pair in test (the scene is held out already), a training pair in train;
            # never the first one's colour, so each colour names one object
            pool = [p for p in (all_pairs if split == "test" else train_pairs) if p[0] != first[0]]
            second = pick(pool)
            if rng.random() < 0.5:
                first, second = second, first
            a, b = (first + (pick(sizes),)), (second + (pick(sizes),))
            objs = _pair_objects(rng, size, a, b, relation)
        rgb = np.zeros((3, size, size), np.float32)     # black, 0..255
        for o in objs:   # objects never overlap; painting over covers edges correctly anyway
            cov = _coverage(o["shape"], *o["center"], o["half_extent"], size)
            rgb += cov * (np.asarray(SHAPE_COLOURS[o["colour"]], np.float32)[:, None, None] - rgb)
        images[i] = rgb / 127.5 - 1.0
        # the colour of the "is there a <colour> <shape>?" -> "no" question: never a held-out pair in
        # training, where even a question must not name one
        shape0 = objs[0]["shape"]
        other = pick([c for c in colours
                      if c != objs[0]["colour"] and (split == "test" or (c, shape0) not in held_out)])
        scenes.append((tuple(tuple(sorted(o.items())) for o in objs), relation, other,
                       int(rng.integers(1 << 30)), int(rng.integers(1 << 30))))
    return _readonly(images), tuple(scenes)


def captioned_shapes(n=None, size=32, split="train", seed=0, pair_fraction=0.25, held_out=None):
    """Synthetic scenes of coloured shapes with compositional captions -> CaptionedImages.

    A scene is one object - a colour of SHAPE_COLOURS (red, green, blue, yellow, purple, white), a shape
    of SHAPE_KINDS (circle, square, triangle, diamond), a size of SHAPE_SIZES (small: 0.12 of the side
    from centre to edge, large: 0.2) and a cell of the 3 x 3 grid (SHAPE_POSITIONS: "top left", "top",
    ..., "center", ..., "bottom right"; the centre is jittered within its cell) - captioned like
    "a small red circle at the top left"; or (a `pair_fraction` of the scenes) two objects of different
    colours and a relation of SHAPE_RELATIONS ("a blue square left of a green triangle"; the other
    axis differs by less than the gap). Objects are drawn on black in NumPy, each pixel coloured by
    the fraction of it the shape covers (4 x 4 to 16 x 16 samples a pixel: antialiased edges, areas
    within ~1.5%). Held-out combinations: no object of the "train" split has a colour-shape pair of
    `held_out` (default SHAPES_HELD_OUT: red triangle, green circle, blue square, yellow diamond), and
    no training text names one; every scene of "test" has at least one, so a model that only
    memorised training captions cannot draw them.

    n: scenes (default 2048 train, 512 test); size: image side, 16..256; seed: the scenes are a pure
    function of the arguments (train and test draw from different streams). Returns (n, 3, size, size)
    float32 in [-1, 1] images with `.captions`, `.questions`, `.answers`, `all_captions(i)`,
    `all_qa(i)`, and `.scenes`: per image a dict {"objects": [{"colour", "shape", "size", "position",
    "center": (x, y) in pixels (x right, y down), "half_extent": pixels}, ...], "relation": str or None
    ("A <relation> B" for objects [A, B])} - what a judge checks a generated image against.
    """
    fn = "mmu.data.captioned_shapes"
    if not isinstance(split, str) or split not in ("train", "test"):
        raise ValueError(f"{fn}: split must be 'train' or 'test', got {split!r}")
    n = (2048 if split == "train" else 512) if n is None else _check_int(fn, "n", n, 1)
    size = _check_int(fn, "size", size, 16)
    if size > 256:
        raise ValueError(f"{fn}: size must be <= 256, got {size}")
    seed = _check_int(fn, "seed", seed, 0)
    if isinstance(pair_fraction, bool) or not isinstance(pair_fraction, (int, float, np.floating)) \
            or not 0.0 <= float(pair_fraction) <= 1.0:
        raise ValueError(f"{fn}: pair_fraction must be a number in [0, 1], got {pair_fraction!r}")
    held_out = _check_held_out(fn, held_out)
    images, raw = _shapes(n, size, split, seed, float(pair_fraction), held_out)
    scenes, caption_options, qa_options, caption_choice, qa_choice = [], [], [], [], []
    for objs, relation, other, ck, qk in raw:
        objs = [dict(o) for o in objs]
        keys = [tuple(o[k] for k in ("colour", "shape", "size", "position")) for o in objs]
        caps, qa = _single_texts(keys[0], other) if relation is None else _pair_texts(keys[0], keys[1], relation)
        scenes.append({"objects": objs, "relation": relation})
        caption_options.append(caps)
        qa_options.append(qa)
        caption_choice.append(ck % len(caps))
        qa_choice.append(qk % len(qa))
    return CaptionedImages(images, f"captioned-shapes{size}-{split}", caption_options, qa_options, caption_choice,
                           qa_choice, scenes=scenes, held_out=held_out)


def _classify_shape(alpha, cx, cy):
    """Shape name of one object's coverage map `alpha` (S, S) with centroid (cx, cy): the shape of
    SHAPE_KINDS whose rendering of the same area at the same centroid overlaps it most (soft IoU)."""
    area, size = float(alpha.sum()), alpha.shape[0]
    best, best_iou = None, -1.0
    for shape, unit in (("circle", np.pi), ("square", 4.0), ("triangle", 2.0), ("diamond", 2.0)):
        h = np.sqrt(area / unit)
        cov = _coverage(shape, cx, cy - (h / 3.0 if shape == "triangle" else 0.0), h, size)
        iou = np.minimum(alpha, cov).sum() / max(np.maximum(alpha, cov).sum(), 1e-9)
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def judge_shapes(images, scenes, max_distance=80.0):
    """Check images (e.g. generated from captions) against shape scenes -> dict of (N,) bool arrays.

    images: (N, 3, S, S) in [-1, 1] (NumPy or anything array-like); scenes: N scene dicts as in
    `captioned_shapes(...).scenes`. A pixel belongs to a colour when that colour of SHAPE_COLOURS (or
    black) is the nearest to it and within `max_distance` (RGB, 0..255); its coverage there (and on
    the black pixels next to it: antialiased edges) is its projection on that colour. For each scene:
    "colour": every object's colour covers at least half the area of the smallest object (a small
    triangle; whatever shape and size the scene states); "shape": of the four
    shapes drawn with the same area at the same centroid, the stated one overlaps the coverage most;
    "size": the area is nearer (log scale) to the stated size's than to the other size's; "position"
    (one-object scenes, whose captions state it; True for two): the centre is in the stated cell of
    the 3 x 3 grid; "relation" (two-object scenes; True for one): the centroids satisfy it; "all":
    every check. The dataset's own images pass every check at size >= 32; at 16 px a small shape is
    ~4 px wide and its shape is often not decidable.
    """
    fn = "mmu.data.judge_shapes"
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{fn}: images must be (N, 3, S, S), got shape {x.shape}")
    if not isinstance(scenes, (list, tuple)) or len(scenes) != x.shape[0]:
        raise ValueError(f"{fn}: scenes must be a list of {x.shape[0]} scene dicts (one per image), got "
                         f"{type(scenes).__name__} of {len(scenes) if hasattr(scenes, '__len__') else '?'}")
    size = x.shape[2]
    palette = np.array([(0, 0, 0)] + list(SHAPE_COLOURS.values()), np.float64)
    names = ["black"] + list(SHAPE_COLOURS)
    areas = {"circle": np.pi, "square": 4.0, "triangle": 2.0, "diamond": 2.0}
    out = {k: np.zeros(x.shape[0], bool) for k in ("colour", "shape", "size", "position", "relation")}
    # a colour is there when it covers half the smallest object (a small triangle), whatever was asked
    smallest = 0.5 * min(areas.values()) * (min(SHAPE_SIZES.values()) * size) ** 2
    for i, scene in enumerate(scenes):
        try:
            objs, relation = scene["objects"], scene["relation"]
            keys = [(o["colour"], o["shape"], o["size"], o["position"]) for o in objs]
        except (TypeError, KeyError) as e:
            raise ValueError(f"{fn}: scenes[{i}] is not a scene dict of captioned_shapes ({e!r})") from None
        rgb = (x[i].transpose(1, 2, 0) + 1.0) * 127.5
        d = np.linalg.norm(rgb[:, :, None, :] - palette[None, None], axis=-1)
        label = np.where(d.min(-1) <= max_distance, d.argmin(-1), -1)
        ok = dict.fromkeys(("colour", "shape", "size", "position"), True)
        centres = []
        for colour, shape, size_name, pos in keys:
            if colour not in SHAPE_COLOURS or shape not in areas or size_name not in SHAPE_SIZES \
                    or pos not in SHAPE_POSITIONS:
                raise ValueError(f"{fn}: scenes[{i}] has an unknown attribute in {(colour, shape, size_name, pos)}")
            idx = names.index(colour)
            m = label == idx
            if m.sum() < smallest:
                ok = dict.fromkeys(ok, False)
                centres.append(None)
                continue
            # coverage of the colour (edges blend it with black): on its pixels and their black
            # neighbours, not on another colour's pixels
            near = m.copy()
            near[1:] |= m[:-1]
            near[:-1] |= m[1:]
            near[:, 1:] |= near[:, :-1].copy()
            near[:, :-1] |= near[:, 1:].copy()
            c = palette[idx]
            alpha = np.clip(rgb @ c / (c @ c), 0.0, 1.0) * (near & ((label == idx) | (label == 0) | (label == -1)))
            area = alpha.sum()
            ys, xs = np.mgrid[0:size, 0:size] + 0.5
            cx, cy = (alpha * xs).sum() / area, (alpha * ys).sum() / area
            centres.append((cx, cy))
            found = _classify_shape(alpha, cx, cy)
            ok["shape"] &= found == shape
            # size: nearer (in log area) to the stated size's area than to the other size's
            err = {z: abs(np.log(area / (areas[shape] * (SHAPE_SIZES[z] * size) ** 2))) for z in SHAPE_SIZES}
            ok["size"] &= min(err, key=err.get) == size_name
            if relation is None:   # only a one-object caption states a position; a triangle's centre
                gy = cy - (np.sqrt(area / 2.0) / 3.0 if found == "triangle" else 0.0)  # is above its centroid
                ok["position"] &= (min(int(gy * 3 // size), 2), min(int(cx * 3 // size), 2)) == \
                    SHAPE_POSITIONS[pos][0]
        for k, v in ok.items():
            out[k][i] = v
        if relation is None:
            out["relation"][i] = True
        elif len(centres) == 2 and None not in centres:
            (ax, ay), (bx, by) = centres
            out["relation"][i] = {"left of": ax < bx, "right of": ax > bx, "above": ay < by,
                                  "below": ay > by}[relation]
    out["all"] = out["colour"] & out["shape"] & out["size"] & out["position"] & out["relation"]
    return out


CAPTION_SETS = ("digits", "shapes")


def caption_sets(sets, fn="caption_sets"):
    """The built-in captioned sets a job names: "digits", "shapes", "digits,shapes" or a sequence of those
    names -> a tuple in the order given; TypeError / ValueError (naming fn) for anything else, an empty
    choice or a set named twice."""
    if isinstance(sets, str):
        sets = tuple(s.strip() for s in sets.split(",") if s.strip())
    try:
        sets = tuple(sets)
    except TypeError:
        raise TypeError(f"{fn}: sets must name caption sets among {CAPTION_SETS}, got {sets!r}") from None
    if not sets or any(s not in CAPTION_SETS for s in sets) or len(set(sets)) != len(sets):
        raise ValueError(f"{fn}: sets must name caption sets among {CAPTION_SETS} (each once), got {sets!r}")
    return sets


def caption_corpus(sets=("digits", "shapes")):
    """Every caption, question and answer text that `captioned_digits` and `captioned_shapes` can
    produce (held-out combinations included: they use the same words) -> sorted list of unique str.
    The corpus to train a word-level text tokenizer on (mmu.text.TextTokenizer.train_word_level), so no
    word of either set is ever unknown. sets: a subset of ("digits", "shapes")."""
    fn = "mmu.data.caption_corpus"
    if isinstance(sets, str):
        sets = (sets,)
    try:
        sets = tuple(sets)
    except TypeError:
        raise TypeError(f"{fn}: sets must be a list of 'digits' / 'shapes', got {sets!r}") from None
    if not sets or any(s not in ("digits", "shapes") for s in sets):
        raise ValueError(f"{fn}: sets must name 'digits' and/or 'shapes', got {sets!r}")
    out = set()

    def add(caps, qa):
        out.update(caps)
        for q, a in qa:
            out.update((q, a))

    if "digits" in sets:
        for label in range(10):
            for other in range(10):
                if other != label:
                    add(*_digit_texts(label, other))
    if "shapes" in sets:
        colours = list(SHAPE_COLOURS)
        for colour, shape, size, pos in itertools.product(colours, SHAPE_KINDS, SHAPE_SIZES, SHAPE_POSITIONS):
            for other in colours:
                if other != colour:
                    add(*_single_texts((colour, shape, size, pos), other))
        for (ca, sa), (cb, sb) in itertools.product(itertools.product(colours, SHAPE_KINDS), repeat=2):
            if ca == cb:
                continue
            for za, zb in itertools.product(SHAPE_SIZES, repeat=2):
                for relation in SHAPE_RELATIONS:
                    add(*_pair_texts((ca, sa, za), (cb, sb, zb), relation))
    return sorted(out)
