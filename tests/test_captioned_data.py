"""mmu.data.captioned_digits / captioned_shapes / caption_corpus: seeded, splits disjoint, held-out
colour-shape combinations really absent from training, and texts that say what the pixels show (the
named colour covers the stated area at the stated place, the relation holds between the centroids)."""
import itertools
import re

import numpy as np
import pytest

import mmu
from mmu.data import captioned as C

PALETTE = np.array([(0, 0, 0)] + list(C.SHAPE_COLOURS.values()), np.float64)   # black first
NAMES = ["black"] + list(C.SHAPE_COLOURS)


def _rgb(img):
    """(3, H, W) in [-1, 1] -> (H, W, 3) float64 in 0..255."""
    return (img.transpose(1, 2, 0).astype(np.float64) + 1.0) * 127.5


def _nearest(rgb):
    """(H, W) palette index of each pixel and its distance to that palette colour."""
    d = np.linalg.norm(rgb[:, :, None, :] - PALETTE[None, None], axis=-1)
    return d.argmin(-1), d.min(-1)


def _cell(size, x, y):
    return min(int(y * 3 // size), 2), min(int(x * 3 // size), 2)


# ---------------------------------------------------------------------------------------------
# digits


def test_captioned_digits_are_the_digits_with_their_split():
    for split in ("train", "test"):
        ds = mmu.data.captioned_digits(16, split, seed=3)
        ref = mmu.data.digits(16, split, seed=3)
        assert isinstance(ds, mmu.data.CaptionedImages) and ds.images.shape == ref.images.shape
        assert np.array_equal(ds.images, ref.images) and np.array_equal(ds.labels, ref.labels)
        assert np.array_equal(ds.index, ref.index) and ds.images.dtype == np.float32
    tr, te = mmu.data.captioned_digits(8, "train"), mmu.data.captioned_digits(8, "test")
    assert not set(tr.index) & set(te.index) and len(tr) + len(te) == 1797
    everything = mmu.data.captioned_digits(8, "all")
    assert everything.index.tolist() == list(range(1797)) and everything.images.shape == (1797, 1, 8, 8)
    # an image has the same texts in its split and in "all"
    for part in (tr, te):
        for i in range(0, len(part), 37):
            j = int(part.index[i])
            assert np.array_equal(part.images[i], everything.images[j])
            assert (part.captions[i], part.questions[i], part.answers[i]) == \
                (everything.captions[j], everything.questions[j], everything.answers[j])


def test_captioned_digits_texts_say_the_label_and_are_seeded():
    ds = mmu.data.captioned_digits(16, "all")
    words = C.DIGIT_WORDS
    assert set(ds.caption_choice.tolist()) == set(range(len(C.DIGIT_CAPTION_TEMPLATES)))   # all in use
    for i, y in enumerate(ds.labels.tolist()):
        caps = ds.all_captions(i)
        assert ds.captions[i] == caps[ds.caption_choice[i]] and len(caps) == len(C.DIGIT_CAPTION_TEMPLATES)
        assert "a handwritten " + words[y] in caps and "the digit " + str(y) in caps and str(y) in caps
        for cap in caps:      # every caption names this digit and no other
            named = {k for k, w in enumerate(words) if re.search(rf"\b({w}|{k})\b", cap)}
            assert named == {y}, cap
        qa = dict(ds.all_qa(i))
        assert qa["what digit is this?"] == words[y] and qa["which number is written here?"] == str(y)
        assert qa["is this an odd number?"] == ("yes" if y % 2 else "no")
        assert qa["is this an even number?"] == ("no" if y % 2 else "yes")
        assert qa["is this number greater than five?"] == ("yes" if y > 5 else "no")
        assert qa[f"is this the digit {words[y]}?"] == "yes"
        nos = [q for q, a in qa.items() if q.startswith("is this the digit") and a == "no"]
        assert len(nos) == 1 and words[y] not in nos[0]
        assert (ds.questions[i], ds.answers[i]) in ds.all_qa(i)
    again = mmu.data.captioned_digits(16, "all")
    assert again.captions == ds.captions and again.answers == ds.answers
    other = mmu.data.captioned_digits(16, "all", seed=1)
    assert other.captions != ds.captions and np.array_equal(other.labels, ds.labels)


# ---------------------------------------------------------------------------------------------
# shapes


def test_captioned_shapes_are_seeded():
    a = mmu.data.captioned_shapes(40, 32, "train", seed=5, pair_fraction=0.5)
    b = mmu.data.captioned_shapes(40, 32, "train", seed=5, pair_fraction=0.5)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.scenes == b.scenes
    c = mmu.data.captioned_shapes(40, 32, "train", seed=6, pair_fraction=0.5)
    assert not np.array_equal(a.images, c.images) and a.captions != c.captions
    assert a.images.shape == (40, 3, 32, 32) and a.images.dtype == np.float32
    assert a.images.min() >= -1.0 and a.images.max() <= 1.0
    assert a.images.min() == -1.0          # black background
    assert len(mmu.data.captioned_shapes(size=16, split="test")) == 512


def test_held_out_combinations_never_appear_in_training():
    held = set(C.SHAPES_HELD_OUT)
    tr = mmu.data.captioned_shapes(600, 16, "train", pair_fraction=0.5)
    te = mmu.data.captioned_shapes(300, 16, "test", pair_fraction=0.5)
    train_pairs = {(o["colour"], o["shape"]) for s in tr.scenes for o in s["objects"]}
    assert not train_pairs & held
    # every colour and every shape is still seen in training, and every other combination
    assert train_pairs == set(itertools.product(C.SHAPE_COLOURS, C.SHAPE_KINDS)) - held
    for s in te.scenes:
        assert any((o["colour"], o["shape"]) in held for o in s["objects"])
    assert {(o["colour"], o["shape"]) for s in te.scenes for o in s["objects"]} >= held
    # the held-out words appear together only in test captions: "red triangle" never in training
    for colour, shape in held:
        assert not any(f"{colour} {shape}" in t for t in tr.texts())
        assert any(f"{colour} {shape}" in t for t in te.texts())
    for ds in (tr, te):
        assert {s["relation"] for s in ds.scenes} == set(C.SHAPE_RELATIONS) | {None}
    mine = mmu.data.captioned_shapes(200, 16, "train", held_out=[("white", "circle")], pair_fraction=0.5)
    assert ("white", "circle") not in {(o["colour"], o["shape"]) for s in mine.scenes for o in s["objects"]}
    assert ("red", "triangle") in {(o["colour"], o["shape"]) for s in mine.scenes for o in s["objects"]}


@pytest.mark.parametrize("split", ["train", "test"])
def test_single_object_pixels_match_colour_shape_size_and_position(split):
    size = 32
    ds = mmu.data.captioned_shapes(120, size, split, seed=2, pair_fraction=0.0)
    areas = {"circle": np.pi, "square": 4.0, "triangle": 2.0, "diamond": 2.0}
    seen = set()
    for img, scene, caps in zip(ds.images, ds.scenes, (ds.all_captions(i) for i in range(len(ds)))):
        (o,) = scene["objects"]
        assert scene["relation"] is None
        rgb = _rgb(img)
        idx, dist = _nearest(rgb)
        named = NAMES.index(o["colour"])
        # no other colour anywhere: every pixel is black, the named colour, or a blend of the two
        colour = PALETTE[named]
        alpha = np.clip(rgb @ colour / (colour @ colour), 0.0, 1.0)       # coverage of each pixel
        resid = np.linalg.norm(rgb - alpha[..., None] * colour, axis=-1)
        assert resid.max() < 2.0
        assert (idx == named).sum() > 0 and set(np.unique(idx[dist < 40])) <= {0, named}
        # the covered area is the shape's area at its size (box-filtered: area is kept)
        h = C.SHAPE_SIZES[o["size"]] * size
        assert o["half_extent"] == pytest.approx(h)
        assert alpha.sum() == pytest.approx(areas[o["shape"]] * h * h, rel=0.04)
        # its centroid is the recorded centre (a triangle's sits h/3 below it), in the stated cell
        ys, xs = np.mgrid[0:size, 0:size] + 0.5
        cx, cy = (alpha * xs).sum() / alpha.sum(), (alpha * ys).sum() / alpha.sum()
        ex, ey = o["center"][0], o["center"][1] + (h / 3 if o["shape"] == "triangle" else 0.0)
        assert abs(cx - ex) < 0.3 and abs(cy - ey) < 0.3
        assert _cell(size, *o["center"]) == C.SHAPE_POSITIONS[o["position"]][0]
        # triangle and diamond (same area) differ in their rows: a triangle's widest row is its base
        widths = (alpha > 0.5).sum(1)
        rows = np.nonzero(widths)[0]
        if o["shape"] == "triangle":
            assert widths[rows[-1]] >= widths.max() - 1 and widths[rows[0]] <= 3
        if o["shape"] == "diamond":
            assert widths[rows[0]] <= 3 and widths[rows[-1]] <= 3
        # the captions say it
        assert f"a {o['size']} {o['colour']} {o['shape']} {C.SHAPE_POSITIONS[o['position']][1]}" in caps
        assert all(f"{o['colour']} {o['shape']}" in c for c in caps)
        seen.add((o["colour"], o["shape"], o["size"], o["position"]))
    for i, scene in enumerate(ds.scenes):
        (o,) = scene["objects"]
        qa = dict(ds.all_qa(i))
        assert qa[f"what colour is the {o['shape']}?"] == o["colour"]
        assert qa["what shape is this?"] == o["shape"]
        assert qa[f"where is the {o['colour']} {o['shape']}?"] == o["position"]
        assert qa[f"is the {o['colour']} {o['shape']} small or large?"] == o["size"]
        assert qa[f"is there a {o['colour']} {o['shape']}?"] == "yes"
    assert len({p for _, _, _, p in seen}) == 9 and len({s for _, _, s, _ in seen}) == 2


def test_two_object_scenes_relation_holds_between_the_colours():
    size = 32
    ds = mmu.data.captioned_shapes(100, size, "train", seed=4, pair_fraction=1.0)
    axis = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
    for i, (img, scene) in enumerate(zip(ds.images, ds.scenes)):
        a, b = scene["objects"]
        rel = scene["relation"]
        assert a["colour"] != b["colour"] and rel in C.SHAPE_RELATIONS
        idx, dist = _nearest(_rgb(img))
        cents = []
        for o in (a, b):
            m = (idx == NAMES.index(o["colour"])) & (dist < 40)
            h = o["half_extent"]
            assert m.sum() >= 0.6 * 2 * h * h          # the smallest shape (triangle/diamond) mostly solid
            ys, xs = np.nonzero(m)
            cents.append(np.array([xs.mean() + 0.5, ys.mean() + 0.5]))
        k, sign = axis[rel]
        d = cents[0] - cents[1]
        assert sign * d[k] > a["half_extent"] + b["half_extent"] - 2.0      # apart along the axis
        assert abs(d[1 - k]) < abs(d[k]) / 2                                  # and clearly so
        caps, qa = ds.all_captions(i), dict(ds.all_qa(i))
        assert f"a {a['colour']} {a['shape']} {rel} a {b['colour']} {b['shape']}" in caps
        assert f"a {b['colour']} {b['shape']} {C.SHAPE_RELATIONS[rel]} a {a['colour']} {a['shape']}" in caps
        assert qa[f"is the {a['colour']} {a['shape']} {rel} the {b['colour']} {b['shape']}?"] == "yes"
        assert qa[f"what shape is the {b['colour']} object?"] == b["shape"]
        assert qa["how many objects are there?"] == "two"
        if a["shape"] != b["shape"]:
            assert qa[f"what colour is the {a['shape']}?"] == a["colour"]
        else:
            assert f"what colour is the {a['shape']}?" not in qa      # would be ambiguous


def test_caption_corpus_covers_every_text_of_both_sets():
    corpus = mmu.data.caption_corpus()
    assert corpus == sorted(set(corpus)) and "a small red circle at the top left" in corpus
    assert "a blue square left of a green triangle" in corpus and "a handwritten seven" in corpus
    assert mmu.data.caption_corpus("digits") == sorted(set(mmu.data.caption_corpus(["digits"])))
    texts = set(mmu.data.captioned_digits(8, "all").texts())
    texts |= set(mmu.data.captioned_shapes(300, 16, "test", pair_fraction=0.5).texts())
    texts |= set(mmu.data.captioned_shapes(300, 16, "train", pair_fraction=0.5).texts())
    assert texts <= set(corpus)
    pytest.importorskip("tokenizers")
    tok = mmu.text.TextTokenizer.train_word_level(corpus)
    ids, mask = tok.encode_batch(sorted(texts))
    assert not (ids[mask] == tok.unk_id).any()
    assert tok.vocab_size < 80                  # a small vocabulary: tiny models train on it
    assert tok.decode_batch(ids, mask) == sorted(texts)


def test_captioned_errors():
    with pytest.raises(ValueError, match="captioned_digits: split must be 'train', 'test' or 'all'"):
        mmu.data.captioned_digits(16, "valid")
    with pytest.raises(ValueError, match="size must be 8, 16 or 32"):
        mmu.data.captioned_digits(12)
    with pytest.raises(ValueError, match="captioned_shapes: split must be 'train' or 'test'"):
        mmu.data.captioned_shapes(4, 16, "all")
    with pytest.raises(ValueError, match="captioned_shapes: size must be >= 16"):
        mmu.data.captioned_shapes(4, 8)
    with pytest.raises(ValueError, match="n must be >= 1"):
        mmu.data.captioned_shapes(0)
    with pytest.raises(ValueError, match=r"pair_fraction must be a number in \[0, 1\]"):
        mmu.data.captioned_shapes(4, pair_fraction=1.5)
    with pytest.raises(ValueError, match="held_out pair .*'pink'"):
        mmu.data.captioned_shapes(4, held_out=[("pink", "circle")])
    with pytest.raises(ValueError, match="leave at least one for training"):
        mmu.data.captioned_shapes(4, held_out=list(itertools.product(C.SHAPE_COLOURS, C.SHAPE_KINDS)))
    with pytest.raises(ValueError, match="caption_corpus: sets must name"):
        mmu.data.caption_corpus(["cats"])
    ds = mmu.data.captioned_shapes(4, 16)
    with pytest.raises(IndexError, match="all_captions: index 4 out of range for 4 images"):
        ds.all_captions(4)
    with pytest.raises(TypeError, match="all_qa: index must be an int"):
        ds.all_qa("0")
    assert ds.all_captions(-1) == ds.all_captions(3) and "CaptionedImages(" in repr(ds)


def test_judge_shapes_passes_the_sets_images_and_catches_each_wrong_attribute():
    import copy

    ds = mmu.data.captioned_shapes(160, 32, "test", seed=8, pair_fraction=0.5)
    ok = mmu.data.judge_shapes(ds.images, ds.scenes)
    assert set(ok) == {"colour", "shape", "size", "position", "relation", "all"}
    assert ok["all"].all() and ok["all"].dtype == bool and ok["all"].shape == (160,)
    # noise of ~13 grey levels does not change the verdicts much
    noisy = ds.images + np.random.default_rng(0).normal(0, 0.1, ds.images.shape).astype(np.float32)
    assert mmu.data.judge_shapes(np.clip(noisy, -1, 1), ds.scenes)["all"].mean() > 0.9
    single = [i for i, s in enumerate(ds.scenes) if s["relation"] is None][:12]
    pair = [i for i, s in enumerate(ds.scenes) if s["relation"] is not None][:12]
    colours, kinds = list(C.SHAPE_COLOURS), list(C.SHAPE_KINDS)

    def judged(indices, change):
        scenes = [copy.deepcopy(ds.scenes[i]) for i in indices]
        for s in scenes:
            change(s)
        return mmu.data.judge_shapes(ds.images[indices], scenes)

    def recolour(s):   # a colour not in the scene
        used = {o["colour"] for o in s["objects"]}
        s["objects"][0]["colour"] = next(c for c in colours if c not in used)

    def reshape(s):
        o = s["objects"][0]
        o["shape"] = {"circle": "square", "square": "triangle", "triangle": "circle", "diamond": "circle"}[o["shape"]]

    def resize(s):
        o = s["objects"][0]
        o["size"] = "small" if o["size"] == "large" else "large"

    def move(s):       # the cell diagonally across the grid
        (r, c), _ = C.SHAPE_POSITIONS[s["objects"][0]["position"]]
        s["objects"][0]["position"] = next(k for k, ((rr, cc), _) in C.SHAPE_POSITIONS.items()
                                           if (rr, cc) == (2 - r, 2 - c) and (rr, cc) != (1, 1)) \
            if (r, c) != (1, 1) else "top left"

    def flip(s):
        s["relation"] = C.SHAPE_RELATIONS[s["relation"]]

    for indices, change, key in ((single + pair, recolour, "colour"), (single + pair, resize, "size"),
                                 (single, move, "position"), (pair, flip, "relation")):
        r = judged(indices, change)
        assert not r[key].any() and not r["all"].any(), key
    r = judged(single + pair, reshape)
    assert r["shape"].mean() < 0.1 and r["colour"].all() and r["position"].all()
    blank = mmu.data.judge_shapes(-np.ones((2, 3, 32, 32), np.float32), ds.scenes[:2])
    assert not blank["all"].any() and not blank["colour"].any()
    with pytest.raises(ValueError, match=r"judge_shapes: images must be \(N, 3, S, S\)"):
        mmu.data.judge_shapes(ds.images[:, 0], ds.scenes)
    with pytest.raises(ValueError, match="scenes must be a list of 160 scene dicts"):
        mmu.data.judge_shapes(ds.images, ds.scenes[:3])
    with pytest.raises(ValueError, match=r"scenes\[0\] is not a scene dict"):
        mmu.data.judge_shapes(ds.images[:1], [{"objects": []}])
    with pytest.raises(ValueError, match=r"scenes\[0\] has an unknown attribute"):
        mmu.data.judge_shapes(ds.images[:1], [{"objects": [dict(ds.scenes[0]["objects"][0], colour="pink")],
                                               "relation": None}])
