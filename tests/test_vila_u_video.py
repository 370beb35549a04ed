"""VILA-U text -> short video on moving digits (mmu.models.vila_u.video_tiny) and the judge of
benchmarks/eval_vila_u_video.py."""
import os
import sys

import numpy as np
import pytest

import mmu
from mmu.models.vila_u import UnifiedVisionTower
from mmu.models.vila_u.video_tiny import (VIDEO_TINY_DATA, _video_codes, frame_captions, generate_clips,
                                          train_vila_u_video_tiny, video_tiny_data)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import eval_vila_u_video as judge_mod  # noqa: E402

SMALL_MODEL = dict(dim=32, num_layers=1, num_heads=2, depth_dim=32, depth_layers=1, depth_heads=2)


@pytest.fixture(scope="module")
def trained():
    data = video_tiny_data(32, "train")
    kw = dict(steps=16, tower_steps=4, data=data, batch_size=8, lr=3e-3, tower_batch_size=32,
              model_fields=SMALL_MODEL, tower_fields=dict(dim=32, num_heads=2, codebook_size=64, rvq_depth=2))
    return train_vila_u_video_tiny(**kw), kw


def test_loss_falls_and_the_same_seed_is_bit_identical(trained):
    (model, info), kw = trained
    loss = np.asarray(info["history"]["loss"])
    assert np.isfinite(loss).all() and loss[-3:].mean() < 0.8 * loss[:3].mean()
    assert set(info["tower_history"]) == {"align", "tower"} and len(info["history"]["loss_video"]) == len(loss)
    again, info2 = train_vila_u_video_tiny(**kw)
    np.testing.assert_array_equal(info2["history"]["loss"], loss)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
    other, _ = train_vila_u_video_tiny(**{**kw, "seed": 1, "steps": 2})
    assert not np.array_equal(np.asarray(other.state_dict()["mm_projector.layers.0.weight"]),
                              np.asarray(model.state_dict()["mm_projector.layers.0.weight"]))


def test_video_rows_are_the_frames_codes_in_order_and_generation_decodes_clips(trained):
    (model, info), _ = trained
    data, tower = info["data"], model.tower
    codes = _video_codes(tower, data)
    h, w = tower.latent_shape
    t = VIDEO_TINY_DATA["frames"]
    assert codes.shape == (32, t * h * w, 2)
    for i in (0, 5):
        for f in range(t):
            np.testing.assert_array_equal(codes[i, f * h * w:(f + 1) * h * w],
                                          tower.encode(data.clips[i:i + 1, :, f]).reshape(h * w, -1))
    assert frame_captions(data)[:t + 1] == ["a handwritten " + mmu.data.captioned.DIGIT_WORDS[data.labels[0, 0]]] * t \
        + ["a handwritten " + mmu.data.captioned.DIGIT_WORDS[data.labels[1, 0]]]
    caps = data.captions[:2]
    clips = generate_clips(model, info["tokenizer"], caps, t, seed=3)
    assert clips.shape == (2, 1, t, 16, 16) and clips.dtype == np.float32
    assert clips.min() >= -1.0 and clips.max() <= 1.0
    np.testing.assert_array_equal(generate_clips(model, info["tokenizer"], caps, t, seed=3), clips)
    gen = model.generate_video([info["tokenizer"].encode(c) for c in caps], t, generator=mmu.Generator(3))
    want = np.clip(np.asarray(tower.decode(gen.reshape(-1, h, w, gen.shape[-1]))), -1, 1)
    np.testing.assert_array_equal(clips.transpose(0, 2, 1, 3, 4).reshape(want.shape), want)


def test_a_given_tower_is_used_as_it_is(trained):
    (model, info), kw = trained
    before = {k: np.asarray(v).copy() for k, v in model.tower.state_dict().items()}
    m2, info2 = train_vila_u_video_tiny(**{**kw, "steps": 2, "tower": model.tower, "tower_steps": 0})
    assert info2["tower_history"] is None and m2.tower is model.tower
    for k, v in model.tower.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)


def test_bad_arguments_raise_clear_errors(trained):
    (model, info), kw = trained
    with pytest.raises(TypeError, match="train_vila_u_video_tiny: data must be a MovingDigits"):
        train_vila_u_video_tiny(data=mmu.data.digits(8))
    with pytest.raises(TypeError, match="train_vila_u_video_tiny: tower must be a UnifiedVisionTower"):
        train_vila_u_video_tiny(data=kw["data"], tower=object())
    small = UnifiedVisionTower(image_size=8, patch_size=4, in_channels=1, dim=16, depth=1, num_heads=2,
                               codebook_size=8, rvq_depth=1, decoder_ch=8, decoder_ch_mult=[1, 1, 2],
                               decoder_z_channels=8, decoder_norm_groups=8, text_dim=16, text_depth=1, text_heads=2)
    with pytest.raises(ValueError, match="the tower takes \\(1, 8, 8\\) frames, the clips have \\(1, 16, 16\\)"):
        train_vila_u_video_tiny(data=kw["data"], tower=small, steps=1)
    with pytest.raises(ValueError, match="tower_steps must be >= 2"):
        train_vila_u_video_tiny(data=kw["data"], tower_steps=1)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train_vila_u_video_tiny(data=kw["data"], steps=0)
    with pytest.raises(TypeError, match="model_fields must be a dict"):
        train_vila_u_video_tiny(data=kw["data"], model_fields=[1])
    with pytest.raises(TypeError, match="generate_clips: captions must be a non-empty list of str"):
        generate_clips(model, info["tokenizer"], "a seven moving right", 4)
    with pytest.raises(ValueError, match="generate_clips: num_frames must be >= 1"):
        generate_clips(model, info["tokenizer"], ["a seven moving right"], 0)


def test_the_benchmark_judge_passes_real_clips_and_fails_wrong_ones():
    clf, real = judge_mod.fit_digit_classifier(8)
    assert real > 0.9
    test = mmu.data.moving_digits(120, split="test", **VIDEO_TINY_DATA)
    labels, motions = test.labels[:, 0], [m[0] for m in test.motions]
    j = judge_mod.judge(test.clips, labels, motions, 8, clf)
    assert j["motion"].all() and j["digit"].mean() > 0.88
    # the wrong digit, time reversed clips and still clips fail
    assert judge_mod.judge(test.clips, (labels + 1) % 10, motions, 8, clf)["digit"].mean() < 0.1
    moving = np.array([m.startswith("moving") for m in motions])
    back = judge_mod.judge(test.clips[moving][:, :, ::-1], labels[moving], [m for m, k in zip(motions, moving) if k],
                           8, clf)
    assert not back["motion"].any()
    still = np.repeat(test.clips[:, :, :1], test.clips.shape[2], axis=2)
    assert not judge_mod.judge(still, labels, motions, 8, clf)["motion"].any()
