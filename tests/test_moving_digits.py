"""mmu.data.moving_digits: clips of scikit-learn digits moving and bouncing on a canvas."""
import numpy as np
import pytest

import mmu
from mmu.data.captioned import DIGIT_WORDS
from mmu.data.moving import MOVING_CAPTION_TEMPLATES, MOVING_DIRECTIONS

SMALL = dict(n=40, frames=6, size=16, digit_size=8, speed=(1, 3))


def test_shapes_dtype_range_and_layout():
    ds = mmu.data.moving_digits(**SMALL)
    assert ds.clips.shape == (40, 1, 6, 16, 16) and ds.clips.dtype == np.float32 and ds.shape == ds.clips.shape
    assert ds.clips.min() == -1.0 and ds.clips.max() <= 1.0 and ds.clips.max() > 0.5
    assert len(ds) == 40 and ds[3].shape == (1, 6, 16, 16) and ds[:2].shape == (2, 1, 6, 16, 16)
    f = ds.frames()
    assert f.shape == (240, 1, 16, 16)
    np.testing.assert_array_equal(f[3 * 6 + 2], ds.clips[3, :, 2])
    assert ds.labels.shape == (40, 1) and ds.source_index.shape == (40, 1)
    assert ds.start.shape == (40, 1, 2) and ds.velocity.shape == (40, 1, 2)
    assert ds.positions.shape == (40, 6, 1, 2) and ds.velocities.shape == (40, 6, 1, 2)
    assert not ds.clips.flags.writeable
    # a 3-D tokenizer's layout: (N, C, T, H, W)
    assert "frames=6" in repr(ds)


def test_each_frame_is_the_source_digit_at_its_position():
    ds = mmu.data.moving_digits(**SMALL)
    src = mmu.data.digits(8, "train").images
    rows = {int(r): i for i, r in enumerate(mmu.data.digits(8, "train").index)}
    for i in range(len(ds)):
        img = src[rows[int(ds.source_index[i, 0])], 0]
        for t in range(6):
            x, y = ds.positions[i, t, 0]
            want = np.full((16, 16), -1.0, np.float32)
            want[y:y + 8, x:x + 8] = img
            np.testing.assert_array_equal(ds.clips[i, 0, t], want)


def test_same_arguments_same_clips_and_seeds_differ():
    a = mmu.data.moving_digits(**SMALL, seed=3)
    mmu.data.moving._moving.cache_clear()
    b = mmu.data.moving_digits(**SMALL, seed=3)
    np.testing.assert_array_equal(a.clips, b.clips)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.captions == b.captions and a.questions == b.questions and a.answers == b.answers
    c = mmu.data.moving_digits(**SMALL, seed=4)
    assert not np.array_equal(a.clips, c.clips)


def test_bounce_physics():
    ds = mmu.data.moving_digits(n=200, frames=12, size=16, digit_size=8, speed=(1, 5), num_digits=2)
    limit = 16 - 8
    pos, vel = ds.positions, ds.velocities
    assert pos.min() == 0 and pos.max() == limit           # inside, and the walls are reached
    np.testing.assert_array_equal(pos[:, 0], ds.start)
    np.testing.assert_array_equal(vel[:, 0], ds.velocity)
    # one axis moves at a speed in [1, 5]; the other is still
    speed = np.abs(ds.velocity).sum(-1)
    assert speed.min() == 1 and speed.max() == 5 and ((ds.velocity == 0).sum(-1) == 1).all()
    flips = 0
    for t in range(11):
        q = pos[:, t] + vel[:, t]
        out_low, out_high = q < 0, q > limit
        wall = out_low | out_high
        want = np.where(out_low, -q, np.where(out_high, 2 * limit - q, q))
        np.testing.assert_array_equal(pos[:, t + 1], want)
        # the velocity flips exactly at a wall and stays otherwise
        np.testing.assert_array_equal(vel[:, t + 1], np.where(wall, -vel[:, t], vel[:, t]))
        flips += int(wall.sum())
    assert flips > 50
    # |speed| never changes
    np.testing.assert_array_equal(np.abs(vel).sum(-1), np.repeat(speed[:, None], 12, 1))


def test_splits_use_disjoint_digit_images_as_captioned_digits():
    train = mmu.data.moving_digits(n=300, **{k: v for k, v in SMALL.items() if k != "n"})
    test = mmu.data.moving_digits(n=300, split="test", **{k: v for k, v in SMALL.items() if k != "n"})
    assert not set(train.source_index.ravel()) & set(test.source_index.ravel())
    assert set(test.source_index.ravel()) <= set(mmu.data.captioned_digits(8, "test").index)
    assert set(train.source_index.ravel()) <= set(mmu.data.captioned_digits(8, "train").index)
    # labels are the source rows' classes
    all_labels = mmu.data.captioned_digits(8, "all").labels
    np.testing.assert_array_equal(test.labels, all_labels[test.source_index])
    other = mmu.data.moving_digits(n=300, split="test", split_seed=1, **{k: v for k, v in SMALL.items() if k != "n"})
    assert set(other.source_index.ravel()) != set(test.source_index.ravel())


def _phrase(pos, vel):
    # what the frames show: every step one way along the velocity's axis -> moving, else bouncing
    axis = 0 if vel[0, 0] != 0 else 1
    steps = np.diff(pos[:, axis])
    if len(set(np.sign(steps).tolist())) == 1 and steps[0] != 0:
        unit = [0, 0]
        unit[axis] = int(np.sign(steps[0]))
        return "moving " + {v: k for k, v in MOVING_DIRECTIONS.items()}[tuple(unit)]
    return "bouncing left and right" if axis == 0 else "bouncing up and down"


@pytest.mark.parametrize("num_digits", [1, 2])
def test_captions_and_answers_follow_the_metadata(num_digits):
    ds = mmu.data.moving_digits(n=120, frames=6, size=16, digit_size=8, num_digits=num_digits)
    corpus = set(mmu.data.moving_digits_corpus(num_digits))
    kinds = set()
    for i in range(len(ds)):
        motions = [_phrase(ds.positions[i, :, k], ds.velocities[i, :, k]) for k in range(num_digits)]
        assert tuple(motions) == tuple(ds.motions[i])
        for k, m in enumerate(motions):
            flips = (np.diff(ds.velocities[i, :, k], axis=0) != 0).any(-1)
            if m.startswith("moving"):   # a steady motion: no flip after frame 0 (one at frame 0 is not seen)
                assert not flips[1:].any()
                step = np.diff(ds.positions[i, :, k], axis=0)
                np.testing.assert_array_equal(step, np.repeat(step[:1], len(step), 0))
                assert tuple(np.sign(step[0])) == MOVING_DIRECTIONS[m[7:]]
            else:                        # a bounce: a flip, and the steps reverse or stall
                assert flips.any()
                axis = 0 if ds.velocity[i, k, 0] != 0 else 1
                step = np.diff(ds.positions[i, :, k, axis])
                assert (step == 0).any() or len(set(np.sign(step).tolist()) - {0}) == 2
        kinds.update(motions)
        words = [DIGIT_WORDS[y] for y in ds.labels[i]]
        want = [" and ".join(t.format(word=w, digit=y, motion=m) for w, y, m in zip(words, ds.labels[i], motions))
                for t in MOVING_CAPTION_TEMPLATES]
        assert ds.all_captions(i) == want and ds.captions[i] == want[ds.caption_choice[i]]
        qa = dict(ds.all_qa(i))
        assert qa["how many digits are there?"] == ["one", "two"][num_digits - 1]
        if num_digits == 1:
            assert qa["what digit is moving?"] == words[0] and qa["how is the digit moving?"] == motions[0]
            assert qa["does the digit bounce?"] == ("yes" if motions[0].startswith("bouncing") else "no")
        else:
            assert qa["what digits are moving?"] == " and ".join(words)
        no = [q for q, a in ds.all_qa(i) if q.startswith("is there") and a == "no"]
        assert len(no) == 1 and no[0][11:-1] not in words
        assert (ds.questions[i], ds.answers[i]) in ds.all_qa(i)
        assert set(ds.all_captions(i)) <= corpus and all(q in corpus and a in corpus for q, a in ds.all_qa(i))
    assert len(kinds) == 6   # all four directions and both bounces occur


def test_bad_arguments_raise_clear_errors():
    f = mmu.data.moving_digits
    with pytest.raises(ValueError, match="moving_digits: split"):
        f(split="val")
    with pytest.raises(ValueError, match="moving_digits: num_digits must be 1 or 2"):
        f(num_digits=3)
    with pytest.raises(ValueError, match="moving_digits: digit_size .* smaller than size"):
        f(size=16, digit_size=16)
    with pytest.raises(ValueError, match="moving_digits: digit_size must be 8, 16 or 32"):
        f(digit_size=12)
    with pytest.raises(ValueError, match="speed must satisfy"):
        f(size=16, digit_size=8, speed=(1, 9))
    with pytest.raises(ValueError, match="speed must satisfy"):
        f(speed=(3, 2))
    with pytest.raises(TypeError, match="speed must be a pair"):
        f(speed=2)
    with pytest.raises(TypeError, match="moving_digits: frames must be an int"):
        f(frames=2.0)
    with pytest.raises(ValueError, match="moving_digits: frames must be >= 2"):
        f(frames=1)
    with pytest.raises(ValueError, match="moving_digits: n must be >= 1"):
        f(n=0)
    with pytest.raises(ValueError, match="test_fraction"):
        f(test_fraction=1.5)
    with pytest.raises(ValueError, match="moving_digits_corpus: num_digits"):
        mmu.data.moving_digits_corpus(3)
    ds = f(**SMALL)
    with pytest.raises(IndexError, match="MovingDigits.all_captions: index 40 out of range"):
        ds.all_captions(40)
    with pytest.raises(TypeError, match="MovingDigits.__getitem__: index must be an int"):
        ds["a"]
