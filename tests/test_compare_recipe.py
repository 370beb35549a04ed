"""mmu compare's per-entry training recipes (issue 15): Entry.train overrides the shared recipe, and
Entry.train_per_step sets TrainConfig fields to a fraction of the run's steps (TiTok's warm-up), so the same
entry keeps its schedule at the digits budget (1500 steps), the moving-digits budget (1000) or a short test."""
import numpy as np
import pytest

import mmu
from mmu import compare as C


@pytest.fixture
def seen_configs(monkeypatch):
    """Every TrainConfig that compare.train_entry builds, in order."""
    import mmu.train as train
    seen = []
    real = train.TrainConfig

    def capture(**kw):
        cfg = real(**kw)
        seen.append(cfg)
        return cfg
    monkeypatch.setattr(train, "TrainConfig", capture)
    return seen


def _images(n=8, size=16):
    return np.random.default_rng(0).uniform(-1, 1, (n, 1, size, size)).astype(np.float32)


def test_titok_entries_carry_the_transformer_recipe(seen_configs):
    for name in ("titok-32", "titok-64"):
        e = C.REGISTRY[name](1, 16, True)
        assert e.train["betas"] == (0.9, 0.99) and e.train["weight_decay"] > 0
        assert e.train["lr"] != C.DEFAULT_LR and e.train["grad_clip"] == 1.0
        assert e.train_per_step == {"warmup_steps": 0.1}
    e = C.REGISTRY["titok-32"](1, 16, True)
    for steps in (20, 3):
        C.train_entry(e, _images(), steps, 4, 0, progress=False)
    first, short = seen_configs
    # the entry's recipe, the warm-up 10% of whatever budget the run has (at least one step)
    assert first.lr == e.train["lr"] and tuple(first.betas) == (0.9, 0.99)
    assert first.weight_decay == e.train["weight_decay"] and first.warmup_steps == 2 and first.steps == 20
    assert short.warmup_steps == 1 and short.steps == 3


def test_the_shared_recipe_stays_for_the_conv_entries(seen_configs):
    e = C.REGISTRY["vqvae-ema"](1, 16, True)
    assert e.train_per_step == {}
    C.train_entry(e, _images(), 40, 4, 0, progress=False)
    cfg = seen_configs[0]
    assert cfg.lr == C.DEFAULT_LR and cfg.warmup_steps == 40 // 20 and tuple(cfg.betas) == (0.5, 0.9)


def test_train_per_step_fractions_round_and_reach_the_report(tmp_path, monkeypatch, seen_configs):
    base = C.REGISTRY["vqvae-vq"]

    def entry(ch, size, fast):
        e = base(ch, size, fast)
        return C.Entry("frac", "fractions", e.tokenizer, e.config, dict(lr=5e-4), train_per_step={"warmup_steps": 0.25})
    monkeypatch.setitem(C.REGISTRY, "frac", entry)
    C.compare(["frac"], fast=True, steps=10, progress=False, out_dir=str(tmp_path / "r"))
    assert seen_configs[0].warmup_steps == 2 and seen_configs[0].lr == 5e-4    # round(0.25 * 10) = 2 (banker's)
    import json
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["config"]["entries"]["frac"]["train_per_step"] == {"warmup_steps": 0.25}
