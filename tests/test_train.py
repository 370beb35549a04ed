"""mmu.train: the trainer (loss falls, gradient accumulation, EMA in eval, GAN alternation, exact resume,
atomic and pruned checkpoints), History, TrainConfig validation, the RNG state getter/setter.

The model and loader here are small stand-ins that follow the contract (/tmp/s9/api.md): a tiny conv
autoencoder around mmu.quantizers.VectorQuantize as the Tokenizer (optionally with a tiny
discriminator that starts at disc_start) and a list-backed loader with batches()/state_dict().
"""
import dataclasses
import os

import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import _C, nn
from mmu.quantizers import VectorQuantize
from mmu.train import History, Trainer, TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------- stand-ins
@dataclasses.dataclass
class Out:
    recon: object
    loss: object
    losses: dict
    codes: np.ndarray
    stats: object


class TinyDisc(nn.Module):
    def __init__(self, c=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class TinyTok(nn.Module):
    """conv(stride 2) -> VQ -> conv-transpose; loss = mse + vq loss (+ 0.1 g_adv after disc_start)."""

    def __init__(self, c=1, dim=4, k=8, disc=False, disc_start=0, ema_vq=False, dropout=0.0, expose_start=True):
        super().__init__()
        self.enc = nn.Conv2d(c, dim, 3, stride=2, padding=1)
        self.drop = nn.Dropout(dropout)
        self.quant = VectorQuantize(dim, k, accept_image_fmap=True, learnable_codebook=not ema_vq,
                                    ema_update=ema_vq)
        self.dec = nn.ConvTranspose2d(dim, c, 4, stride=2, padding=1)
        self.discriminator = TinyDisc(c) if disc else None
        self._start = disc_start
        if expose_start:  # the trainer reads model.disc_start (or model.config.disc_start) when there is one
            self.disc_start = disc_start
        self.codebook_size = k
        self.d_calls = []       # steps at which discriminator_loss ran
        self.d_values = []      # the losses it returned
        self.eval_weights = []  # enc.weight seen by forward/encode in eval mode

    def generator_parameters(self):
        d = {id(p) for p in self.discriminator.parameters()} if self.discriminator is not None else set()
        return [p for p in self.parameters() if id(p) not in d and p.requires_grad]

    def forward(self, images, step=0):
        if not self.training:
            self.eval_weights.append(self.enc.weight.numpy().copy())
        z = self.drop(self.enc(images))
        q, idx, qloss = self.quant(z)
        recon = self.dec(q)
        rec = F.mse_loss(recon, images)
        loss = rec + qloss
        losses = {"rec": rec.item(), "quant": qloss.item()}
        if self.discriminator is not None and step >= self._start:
            g_adv = -self.discriminator(recon).mean()
            loss = loss + g_adv * 0.1
            losses["g_adv"] = g_adv.item()
        return Out(recon, loss, losses, idx.numpy(), self.quant.stats)

    def discriminator_loss(self, images, recon, step):
        self.d_calls.append(step)
        if step < self._start:  # adopt_weight(..., value=0.0): a plain 0 without a graph
            return mmu.tensor(np.float32(0.0)), {}
        recon = recon.detach()
        lr_ = F.relu(1.0 - self.discriminator(images)).mean()
        lf = F.relu(1.0 + self.discriminator(recon)).mean()
        loss = (lr_ + lf) * 0.5
        self.d_values.append(loss.item())
        return loss, {"d_loss": loss.item(), "logits_real": lr_.item()}


class ListLoader:
    """batches(): endless epochs of (B, C, H, W) float32 batches; state_dict() = (epoch, position)."""

    def __init__(self, images, batch_size, shuffle=True, seed=0):
        self.images, self.batch_size, self.shuffle, self.seed = images, batch_size, shuffle, seed
        self.epoch = self.pos = 0

    def _order(self):
        n = len(self.images)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def batches(self):
        while True:
            order = self._order()
            while self.pos + self.batch_size <= len(order):
                idx = order[self.pos:self.pos + self.batch_size]
                self.pos += self.batch_size
                yield self.images[idx]
            self.epoch, self.pos = self.epoch + 1, 0

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s):
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])


def images(n=16, c=1, s=8, seed=0):
    rng = np.random.default_rng(seed)
    # smooth blobs so a tiny autoencoder can learn them
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1)
    out = np.empty((n, c, s, s), np.float32)
    for i in range(n):
        cx, cy, w = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.4)
        out[i] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / w ** 2) * 2 - 1
    return out


def cfg(**kw):
    base = dict(steps=6, batch_size=4, lr=1e-2, betas=(0.5, 0.9), log_every=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def params(model):
    return {n: p.numpy().copy() for n, p in model.state_dict().items()}


# ---------------------------------------------------------------------- training
def test_loss_falls_and_history():
    mmu.manual_seed(0)
    model = TinyTok()
    data = images(32)
    tr = Trainer(model, ListLoader(data, 8), cfg(steps=40, log_every=5, warmup_steps=2), eval_data=data[:8])
    hist = tr.fit()
    assert tr.step == 40 and isinstance(hist, History) and len(hist) == 8
    first, last = hist.records[0], hist.last
    assert last["loss"] < 0.5 * first["loss"]
    assert last["psnr"] > first["psnr"]
    for k in ("step", "loss", "rec", "quant", "psnr", "usage", "perplexity", "lr", "time", "grad_norm"):
        assert k in last, k
    assert 0 < last["usage"] <= 1 and 1 <= last["perplexity"] <= 8
    # the lr follows WarmupCosine: 0 at step 0 (warmup from 0), floor min_lr_ratio*lr at the end
    lrs = [r["lr"] for r in hist.records]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 1e-2
    assert tr.optimizer.param_groups[0]["lr"] == tr.scheduler.get_last_lr()[0]
    assert tr.scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.1)
    assert hist.records[-1]["time"] >= hist.records[0]["time"] > 0
    ev = tr.evaluate()
    assert set(ev) == {"eval_psnr", "eval_ssim", "eval_usage", "eval_perplexity"} and np.isfinite(ev["eval_psnr"])
    assert -1.0 <= ev["eval_ssim"] <= 1.0
    assert "History(8 records, steps 5..40" in repr(hist)
    # fit() again is a no-op once config.steps is reached; fit(n) runs n more steps
    assert tr.fit() is hist and tr.step == 40
    tr.fit(2)
    assert tr.step == 42


def test_eval_every_records_and_does_not_change_training():
    data = images(16)
    runs = []
    for eval_every in (0, 2):
        mmu.manual_seed(0)
        model = TinyTok(dropout=0.2)
        tr = Trainer(model, ListLoader(data, 4), cfg(steps=4, eval_every=eval_every, log_every=2), eval_data=data[:4])
        h = tr.fit()
        runs.append(params(model))
        if eval_every:
            assert [r["step"] for r in h.records] == [2, 4]
            assert all("eval_psnr" in r and "loss" in r for r in h.records)
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_grad_accum_equals_one_big_batch():
    data = images(16)
    out = []
    for bs, accum in ((8, 1), (4, 2), (2, 4)):
        mmu.manual_seed(1)
        model = TinyTok()
        tr = Trainer(model, ListLoader(data, bs, shuffle=False), cfg(steps=3, grad_accum=accum, grad_clip=None))
        h = tr.fit()
        out.append((params(model), [r["loss"] for r in h.records]))
    for p, losses in out[1:]:
        np.testing.assert_allclose(losses, out[0][1], rtol=1e-5)
        for k in p:
            np.testing.assert_allclose(p[k], out[0][0][k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_grad_accum_takes_grad_accum_batches_per_step():
    data = images(16)
    loader = ListLoader(data, 2, shuffle=False)
    mmu.manual_seed(0)
    Trainer(TinyTok(), loader, cfg(steps=3, grad_accum=2)).fit()
    assert loader.epoch * 8 + loader.pos // 2 == 6


def test_ema_weights_are_used_in_eval_and_restored():
    mmu.manual_seed(0)
    model = TinyTok()
    data = images(16)
    tr = Trainer(model, ListLoader(data, 4), cfg(steps=5, ema_decay=0.9), eval_data=data[:4])
    tr.fit()
    live = model.enc.weight.numpy().copy()
    shadow = tr.ema.shadow["enc.weight"].numpy().copy()
    assert not np.array_equal(live, shadow)
    assert "discriminator" not in " ".join(tr.ema.shadow)
    # TinyTok has no encode/decode: evaluate() runs forward in eval mode, which records its weights
    model.eval_weights.clear()
    tr.evaluate()
    assert model.eval_weights and all(np.array_equal(w, shadow) for w in model.eval_weights)
    np.testing.assert_array_equal(model.enc.weight.numpy(), live)
    assert model.training
    tr.apply_ema()
    np.testing.assert_array_equal(model.enc.weight.numpy(), shadow)
    # without EMA the live weights are evaluated
    mmu.manual_seed(0)
    m2 = TinyTok()
    t2 = Trainer(m2, ListLoader(data, 4), cfg(steps=2), eval_data=data[:4])
    t2.fit()
    m2.eval_weights.clear()
    t2.evaluate()
    np.testing.assert_array_equal(m2.eval_weights[0], m2.enc.weight.numpy())
    with pytest.raises(ValueError, match="ema_decay"):
        t2.apply_ema()


@pytest.mark.parametrize("expose_start", [True, False])
def test_gan_alternation_after_disc_start(expose_start):
    mmu.manual_seed(0)
    model = TinyTok(disc=True, disc_start=3, expose_start=expose_start)
    data = images(16)
    tr = Trainer(model, ListLoader(data, 4), cfg(steps=6, disc_lr=5e-3))
    d0 = [p.numpy().copy() for p in model.discriminator.parameters()]
    g_ids = {id(p) for p in tr.gen_params}
    assert all(id(p) not in g_ids for p in model.discriminator.parameters())
    hist = tr.fit(3)
    # before disc_start no D step: with model.disc_start known discriminator_loss is not even called;
    # without it, it is called and its plain 0 (no grad) skips the step
    assert model.d_calls == ([] if expose_start else [0, 1, 2]) and tr.disc_steps == 0
    for a, p in zip(d0, model.discriminator.parameters()):
        np.testing.assert_array_equal(a, p.numpy())
    assert "g_adv" not in hist.last and "d_loss" not in hist.last
    assert tr.disc_optimizer.state == {} or all(not s for s in tr.disc_optimizer.state.values())
    d_before = [p.numpy().copy() for p in model.discriminator.parameters()]
    hist = tr.fit()
    assert model.d_calls == ([] if expose_start else [0, 1, 2]) + [3, 4, 5] and tr.disc_steps == 3
    assert any(not np.array_equal(a, p.numpy()) for a, p in zip(d_before, model.discriminator.parameters()))
    assert "g_adv" in hist.last and "d_loss" in hist.last and "d_logits_real" in hist.last
    # the model's own "d_loss" entry is not added on top of the trainer's
    assert hist.last["d_loss"] == model.d_values[-1]
    assert tr.disc_optimizer.param_groups[0]["initial_lr"] == 5e-3
    # the discriminator's parameters require grad again after the generator's step
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_disc_start_from_model_config():
    mmu.manual_seed(0)
    model = TinyTok(disc=True, disc_start=2, expose_start=False)
    model.config = type("Cfg", (), {"disc_start": 2})()
    tr = Trainer(model, ListLoader(images(8), 4), cfg(steps=3))
    tr.fit()
    assert model.d_calls == [2] and tr.disc_steps == 1


def test_generator_step_does_not_move_discriminator():
    # before disc_start the D is untouched; after it, D params change only through the D optimizer
    mmu.manual_seed(0)
    model = TinyTok(disc=True, disc_start=0)
    tr = Trainer(model, ListLoader(images(8), 4), cfg(steps=1))
    calls = []
    orig = tr.disc_optimizer.step
    tr.disc_optimizer.step = lambda *a: (calls.append(1), orig(*a))[1]
    tr.fit()
    assert calls == [1] and tr.disc_steps == 1


# ---------------------------------------------------------------------- checkpoints and resume
def _resume_setup(tmp_path, name, k, **kw):
    c = cfg(steps=2 * k, grad_accum=2, ema_decay=0.8, warmup_steps=1, ckpt_every=k,
            ckpt_dir=str(tmp_path / name), log_every=1, **kw)
    return c


@pytest.mark.parametrize("disc", [False, True])
def test_resume_is_bit_identical(tmp_path, disc):
    k = 3
    data = images(12)

    def new_model(seed):
        mmu.manual_seed(seed)
        return TinyTok(disc=disc, disc_start=2, ema_vq=True, dropout=0.25)

    # uninterrupted
    m1 = new_model(0)
    t1 = Trainer(m1, ListLoader(data, 4, seed=3), _resume_setup(tmp_path, "a", k))
    h1 = t1.fit()
    # interrupted after k steps, then a fresh model / loader / trainer resumes from the folder
    m2 = new_model(0)
    c2 = _resume_setup(tmp_path, "b", k)
    Trainer(m2, ListLoader(data, 4, seed=3), c2).fit(k)
    m3 = new_model(123)  # different init: everything must come from the checkpoint
    _C.manual_seed(999)
    t3 = Trainer.resume(c2.ckpt_dir, m3, ListLoader(data, 4, seed=3), c2)
    assert t3.step == k and len(t3.history) == k
    h3 = t3.fit()
    assert t3.step == 2 * k
    p1, p3 = params(m1), params(m3)
    assert p1.keys() == p3.keys()
    for name in p1:
        np.testing.assert_array_equal(p1[name], p3[name], err_msg=name)
    for name in t1.ema.shadow:
        np.testing.assert_array_equal(t1.ema.shadow[name].numpy(), t3.ema.shadow[name].numpy())
    assert [r["loss"] for r in h1.records] == [r["loss"] for r in h3.records]
    if disc:
        assert t1.disc_steps == t3.disc_steps == 2 * k - 2


def test_resume_rng_state_matches(tmp_path):
    data = images(8)
    mmu.manual_seed(0)
    m = TinyTok(dropout=0.5)
    c = cfg(steps=4, ckpt_every=2, ckpt_dir=str(tmp_path))
    t = Trainer(m, ListLoader(data, 4), c)
    t.fit()
    end_state = _C.get_rng_state()
    mmu.manual_seed(0)
    t2 = Trainer.resume(os.path.join(str(tmp_path), "ckpt_00000002.safetensors"), TinyTok(dropout=0.5),
                        ListLoader(data, 4), c)
    t2.fit()
    assert _C.get_rng_state() == end_state


def test_checkpoints_atomic_pruned_and_complete(tmp_path, monkeypatch):
    mmu.manual_seed(0)
    d = tmp_path / "ck"
    c = cfg(steps=6, ckpt_every=1, ckpt_dir=str(d), keep_last=2, ema_decay=0.9)
    tr = Trainer(TinyTok(disc=True, disc_start=1), ListLoader(images(8), 4), c)
    tr.fit()
    assert sorted(os.listdir(d)) == ["ckpt_00000005.safetensors", "ckpt_00000006.safetensors"]
    ck = mmu.load(str(d / "ckpt_00000006.safetensors"))
    for key in ("step", "model", "optimizer", "scheduler", "disc_optimizer", "disc_scheduler", "ema", "data",
                "rng", "history", "config"):
        assert ck[key] is not None, key
    assert ck["step"] == 6 and list(ck["rng"]) == list(_C.get_rng_state())
    assert ck["config"]["ckpt_dir"] == str(d) and len(ck["history"]["records"]) == 6
    # a write that fails half way leaves the previous file intact and no temp file behind
    import mmu.io.safetensors as st
    target = d / "ckpt_00000006.safetensors"
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(st.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        tr.save_checkpoint(str(target))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(os.listdir(d)) == ["ckpt_00000005.safetensors", "ckpt_00000006.safetensors"]
    assert Trainer.checkpoints(str(d))[-1] == str(target)


def test_resume_errors(tmp_path):
    mmu.manual_seed(0)
    data = ListLoader(images(8), 4)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer.resume(str(tmp_path), TinyTok(), data, cfg())
    with pytest.raises(FileNotFoundError, match="neither"):
        Trainer.resume(str(tmp_path / "missing"), TinyTok(), data, cfg())
    c = cfg(steps=2, ckpt_every=2, ckpt_dir=str(tmp_path))
    Trainer(TinyTok(), data, c).fit()
    with pytest.raises(ValueError, match="EMA"):
        Trainer.resume(str(tmp_path), TinyTok(), ListLoader(images(8), 4), dataclasses.replace(c, ema_decay=0.9))
    with pytest.raises(ValueError, match="discriminator"):
        Trainer.resume(str(tmp_path), TinyTok(disc=True), ListLoader(images(8), 4), c)
    mmu.save({"a": 1}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a trainer checkpoint"):
        Trainer(TinyTok(), data, c).load_checkpoint(str(tmp_path / "other.safetensors"))


def test_load_checkpoint_mismatched_loader_changes_nothing(tmp_path):
    # the loader's state is restored first: a checkpoint for another batch size raises before the
    # model (or anything else) has been overwritten
    from mmu.data import DataLoader
    data = images(16)
    mmu.manual_seed(0)
    t = Trainer(TinyTok(), DataLoader(data, 4, seed=1), cfg(steps=2))
    t.fit()
    path = t.save_checkpoint(str(tmp_path / "ck.safetensors")) or str(tmp_path / "ck.safetensors")
    mmu.manual_seed(5)
    fresh = TinyTok()
    before = params(fresh)
    t2 = Trainer(fresh, DataLoader(data, 2, seed=1), cfg(steps=2, batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        t2.load_checkpoint(path)
    after = params(fresh)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert t2.step == 0


def test_rng_state_get_set():
    mmu.manual_seed(5)
    mmu.randn(3)
    s = _C.get_rng_state()
    assert s == (5, 1)
    a = mmu.randn(7).numpy()
    _C.set_rng_state(*s)
    np.testing.assert_array_equal(mmu.randn(7).numpy(), a)
    _C.set_rng_state(2 ** 64 - 1, 2 ** 64 - 1)
    assert _C.get_rng_state() == (2 ** 64 - 1, 2 ** 64 - 1)
    with pytest.raises(ValueError):
        _C.set_rng_state(-1, 0)
    with pytest.raises(ValueError):
        _C.set_rng_state(0, 2 ** 64)
    with pytest.raises(TypeError):
        _C.set_rng_state(1.5, 0)
    with pytest.raises(TypeError):
        _C.set_rng_state(1)
    mmu.manual_seed(0)


# ---------------------------------------------------------------------- History
def _history():
    h = History()
    for s in range(1, 6):
        h.log({"step": s, "loss": 1.0 / s, "psnr": 10.0 + s, "lr": 1e-3, "time": 0.1 * s})
    h.log({"step": 5, "eval_psnr": 14.0})
    h.log({"step": 6, "eval_psnr": 15.0})
    return h


def test_history_records_csv_state(tmp_path):
    h = _history()
    assert len(h) == 6 and h.last == {"step": 6, "eval_psnr": 15.0}
    assert h.records[4]["eval_psnr"] == 14.0 and h.records[4]["loss"] == 0.2
    np.testing.assert_allclose(h["psnr"], [11, 12, 13, 14, 15])
    steps, v = h.series("eval_psnr")
    assert steps.tolist() == [5, 6] and v.tolist() == [14.0, 15.0]
    with pytest.raises(KeyError):
        h["nope"]
    p = h.to_csv(str(tmp_path / "h.csv"))
    lines = open(p).read().splitlines()
    assert lines[0] == "step,loss,psnr,lr,time,eval_psnr"
    assert lines[1].startswith("1,1.0,11.0,") and lines[-1] == "6,,,,,15.0"
    h2 = History()
    h2.load_state_dict(h.state_dict())
    assert h2.records == h.records and h2.records is not h.records
    mmu.save(h.state_dict(), str(tmp_path / "h.safetensors"))
    h3 = History()
    h3.load_state_dict(mmu.load(str(tmp_path / "h.safetensors")))
    assert h3.records == h.records
    r = repr(h)
    assert r.startswith("History(6 records, steps 1..6; last: eval_psnr=15")
    assert repr(History()) == "History(0 records)"
    with pytest.raises(ValueError, match="step"):
        h.log({"loss": 1.0})
    with pytest.raises(TypeError):
        h.log([1])
    with pytest.raises(ValueError):
        h.load_state_dict({"nope": 1})


def test_history_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h = _history()
    fig = h.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    titles = [a.get_title() for a in fig.axes if a.axison]
    assert titles == ["loss", "psnr", "lr"]  # eval_psnr shares the psnr panel
    psnr_ax = fig.axes[1]
    assert sorted(line.get_label() for line in psnr_ax.get_lines()) == ["eval_psnr", "psnr"]
    plt.close(fig)
    fig, ax = plt.subplots()
    assert h.plot(["loss", "psnr"], ax=ax) is fig and len(ax.get_lines()) == 2
    assert h.plot("loss", ax=ax) is fig
    plt.close(fig)
    with pytest.raises(KeyError, match="nope"):
        h.plot(["nope"])
    with pytest.raises(TypeError):
        h.plot(["loss"], ax="x")
    fig = History().plot()
    plt.close(fig)


# ---------------------------------------------------------------------- config and argument errors
@pytest.mark.parametrize("kw, exc, match", [
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(steps=True), TypeError, "steps"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr="1e-3"), TypeError, "lr"),
    (dict(betas=(0.5,)), TypeError, "betas"),
    (dict(betas=(0.5, 1.0)), ValueError, "betas"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(warmup_steps=-1), ValueError, "warmup_steps"),
    (dict(warmup_steps=20), ValueError, "warmup_steps"),
    (dict(min_lr_ratio=1.5), ValueError, "min_lr_ratio"),
    (dict(grad_clip=-1.0), ValueError, "grad_clip"),
    (dict(ema_decay=1.0), ValueError, "ema_decay"),
    (dict(ema_decay="x"), TypeError, "ema_decay"),
    (dict(disc_lr=0.0), ValueError, "disc_lr"),
    (dict(grad_accum=0), ValueError, "grad_accum"),
    (dict(log_every=-1), ValueError, "log_every"),
    (dict(eval_every=1.0), TypeError, "eval_every"),
    (dict(ckpt_every=5), ValueError, "ckpt_dir"),
    (dict(ckpt_dir=3), TypeError, "ckpt_dir"),
    (dict(keep_last=0), ValueError, "keep_last"),
    (dict(seed=None), TypeError, "seed"),
    (dict(progress=1), TypeError, "progress"),
])
def test_bad_config(kw, exc, match):
    base = dict(steps=10)
    base.update(kw)
    with pytest.raises(exc, match=match):
        TrainConfig(**base)


def test_config_round_trip_and_defaults():
    c = TrainConfig(steps=10)
    assert (c.batch_size, c.lr, c.betas, c.weight_decay, c.warmup_steps, c.min_lr_ratio, c.grad_clip, c.ema_decay,
            c.disc_lr, c.grad_accum, c.log_every, c.eval_every, c.ckpt_every, c.ckpt_dir, c.seed, c.progress) == \
        (32, 2e-4, (0.5, 0.9), 0.0, 0, 0.1, 1.0, None, None, 1, 10, 0, 0, None, 0, True)
    import json
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"steps": 1, "lrr": 2})
    # a config mutated after creation is checked again by the Trainer
    c.grad_accum = 0
    with pytest.raises(ValueError, match="grad_accum"):
        Trainer(TinyTok(), ListLoader(images(8), 4), c)


def test_trainer_argument_errors():
    mmu.manual_seed(0)
    data = ListLoader(images(8), 4)
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(TinyTok(), data, {"steps": 3})
    with pytest.raises(TypeError, match="model"):
        Trainer(object(), data, cfg())
    with pytest.raises(TypeError, match="train_data"):
        Trainer(TinyTok(), 42, cfg())

    class NoState:
        def batches(self):
            yield images(4)
    with pytest.raises(TypeError, match="state_dict"):
        Trainer(TinyTok(), NoState(), cfg())
    tr = Trainer(TinyTok(), data, cfg())
    with pytest.raises(ValueError, match="eval_data"):
        tr.evaluate()
    with pytest.raises(ValueError, match="steps"):
        tr.fit(-1)

    class Finite(ListLoader):
        def batches(self):
            yield self.images[:4]
    with pytest.raises(RuntimeError, match="endless"):
        Trainer(TinyTok(), Finite(images(8), 4), cfg(steps=3)).fit()

    class BadShape(ListLoader):
        def batches(self):
            while True:
                yield self.images[:4, 0]
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Trainer(TinyTok(), BadShape(images(8), 4), cfg()).fit()

    class BadLoss(TinyTok):
        def forward(self, images, step=0):
            out = super().forward(images, step)
            out.loss = 1.0
            return out
    with pytest.raises(TypeError, match="scalar Tensor"):
        Trainer(BadLoss(), ListLoader(images(8), 4), cfg()).fit()


def test_non_finite_loss_stops_before_the_update():
    class Blows(TinyTok):
        def forward(self, images, step=0):
            out = super().forward(images, step)
            if step == 2:
                out.loss = out.loss * float("nan")
            return out
    mmu.manual_seed(0)
    model = Blows()
    tr = Trainer(model, ListLoader(images(8), 4), cfg(steps=5))
    tr.fit(2)
    before = params(model)
    with pytest.raises(FloatingPointError, match="step 2"):
        tr.fit()
    assert tr.step == 2
    after = params(model)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_progress_bar_postfix(capsys):
    mmu.manual_seed(0)
    tr = Trainer(TinyTok(), ListLoader(images(8), 4), cfg(steps=2, progress=True))
    tr.fit()
    err = capsys.readouterr().err
    assert "train" in err and "loss=" in err and "psnr=" in err and "usage=" in err


# ---------------------------------------------------------------------- the real tokenizers and data
# (these run once mmu.tokenizers / mmu.data / the issue-5 losses are merged; until then they skip)
def _need(mod, *names):
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        pytest.skip(f"{mod.__name__} has no {', '.join(missing)} yet")


def _tiny_vqvae(quantizer="ema_vq"):
    return mmu.tokenizers.VQVAE(in_channels=1, hidden_channels=16, res_channels=8, num_res_blocks=1, downsample=2,
                                embed_dim=8, codebook_size=16, quantizer=quantizer, resolution=8)


def test_real_vqvae_on_digits_trains_evaluates_and_resumes_exactly(tmp_path):
    _need(mmu.tokenizers, "VQVAE")
    _need(mmu.data, "digits", "DataLoader")
    train, test = mmu.data.digits(size=8, split="train"), mmu.data.digits(size=8, split="test")
    k = 4
    c = cfg(steps=2 * k, batch_size=16, lr=3e-3, grad_accum=2, ema_decay=0.9, eval_every=k, log_every=2,
            ckpt_every=k, ckpt_dir=str(tmp_path / "a"))
    mmu.manual_seed(0)
    m1 = _tiny_vqvae()
    t1 = Trainer(m1, train, c, eval_data=test.images[:32])  # a dataset: the trainer builds its DataLoader
    h1 = t1.fit()
    assert isinstance(t1.train_data, mmu.data.DataLoader) and t1.train_data.batch_size == 16
    assert h1.last["loss"] < h1.records[0]["loss"]
    assert {"eval_psnr", "eval_usage", "eval_perplexity", "psnr", "usage", "rec"} <= set(h1.last)
    # interrupted at k, resumed by a fresh model / dataset / trainer
    c2 = dataclasses.replace(c, ckpt_dir=str(tmp_path / "b"))
    mmu.manual_seed(0)
    Trainer(_tiny_vqvae(), train, c2, eval_data=test.images[:32]).fit(k)
    mmu.manual_seed(5)
    m3 = _tiny_vqvae()
    t3 = Trainer.resume(c2.ckpt_dir, m3, mmu.data.digits(size=8, split="train"), c2, eval_data=test.images[:32])
    t3.fit()
    s1, s3 = m1.state_dict(), m3.state_dict()
    for name in s1:
        np.testing.assert_array_equal(s1[name].numpy(), s3[name].numpy(), err_msg=name)
    assert [r.get("eval_psnr") for r in h1.records] == [r.get("eval_psnr") for r in t3.history.records]


def test_real_vqgan_alternates_after_disc_start(tmp_path):
    _need(mmu.tokenizers, "VQGAN")
    _need(mmu.losses, "adaptive_weight", "NLayerDiscriminator")
    rng = np.random.default_rng(0)
    data = np.tanh(rng.standard_normal((8, 3, 16, 16))).astype(np.float32)

    def model():
        mmu.manual_seed(0)
        return mmu.tokenizers.VQGAN(ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], resolution=16,
                                    z_channels=4, embed_dim=4, codebook_size=16, norm_groups=4,
                                    perceptual_weight=0.0, disc_start=2, disc_ndf=4, disc_layers=2,
                                    disc_norm="group")
    c = cfg(steps=4, ckpt_every=2, ckpt_dir=str(tmp_path / "a"))
    m1 = model()
    t1 = Trainer(m1, ListLoader(data, 4), c)
    d_ids = {id(p) for p in m1.discriminator.parameters()}
    assert d_ids and not d_ids & {id(p) for p in t1.gen_params}
    t1.fit(2)
    assert t1.disc_steps == 0 and "g_adv" not in t1.history.last
    t1.fit()
    assert t1.disc_steps == 2 and "g_adv" in t1.history.last and "d_loss" in t1.history.last
    c2 = dataclasses.replace(c, ckpt_dir=str(tmp_path / "b"))
    Trainer(model(), ListLoader(data, 4), c2).fit(2)
    m3 = model()
    Trainer.resume(c2.ckpt_dir, m3, ListLoader(data, 4), c2).fit()
    s1, s3 = m1.state_dict(), m3.state_dict()
    for name in s1:
        np.testing.assert_array_equal(s1[name].numpy(), s3[name].numpy(), err_msg=name)


# ---------------------------------------------------------------------- divergence guard
class Explodes(TinyTok):
    """Its loss jumps to `value` from step `at` on (an exploded run: finite but absurd)."""

    def __init__(self, at=3, value=3e23, **kw):
        super().__init__(**kw)
        self.at, self.value = at, value

    def forward(self, images, step=0):
        out = super().forward(images, step)
        if step >= self.at:
            out.loss = out.loss * (self.value / max(out.loss.item(), 1e-12))
        return out


def test_divergence_guard_stops_an_exploded_run_before_its_update(tmp_path):
    from mmu.train import TrainingDiverged
    mmu.manual_seed(0)
    model = Explodes(at=3)
    c = cfg(steps=8, ckpt_every=2, ckpt_dir=str(tmp_path))
    tr = Trainer(model, ListLoader(images(8), 4), c)
    tr.fit(3)
    before = params(model)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 3: the loss is 3e\+23, above max_loss=1e\+06") as e:
        tr.fit()
    assert e.value.step == 3 and e.value.value == pytest.approx(3e23, rel=1e-6)
    assert isinstance(e.value, FloatingPointError)       # what a non-finite loss always raised
    assert tr.step == 3 and [r["step"] for r in tr.history] == [1, 2, 3]
    after = params(model)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert [os.path.basename(p) for p in Trainer.checkpoints(str(tmp_path))] == ["ckpt_00000002.safetensors"]
    # the threshold is configurable and can be turned off (the old behaviour: the run goes on)
    mmu.manual_seed(0)
    tr = Trainer(Explodes(at=3, value=50.0), ListLoader(images(8), 4), cfg(steps=5, max_loss=10.0))
    with pytest.raises(TrainingDiverged, match="above max_loss=10"):
        tr.fit()
    mmu.manual_seed(0)
    tr = Trainer(Explodes(at=3, value=50.0), ListLoader(images(8), 4), cfg(steps=5, max_loss=None))
    tr.fit()
    assert tr.step == 5 and tr.history["loss"][-1] == pytest.approx(50.0, rel=1e-5)


def test_divergence_guard_non_finite_gradient_norm():
    from mmu.train import TrainingDiverged

    class NanGrad(TinyTok):
        def forward(self, images, step=0):
            out = super().forward(images, step)
            if step == 1:  # d/dw sqrt(0 * w) = inf * 0 = NaN, while the loss itself stays finite
                out.loss = out.loss + (self.enc.weight * 0.0).sum().sqrt()
            return out
    mmu.manual_seed(0)
    model = NanGrad()
    tr = Trainer(model, ListLoader(images(8), 4), cfg(steps=4))
    tr.fit(1)
    before = params(model)
    with pytest.raises(TrainingDiverged, match="step 1: the gradient norm is nan"):
        tr.fit()
    for k, v in params(model).items():
        np.testing.assert_array_equal(before[k], v, err_msg=k)
    assert tr.optimizer.state_dict() is not None and tr.step == 1


def test_divergence_guard_discriminator_loss():
    from mmu.train import TrainingDiverged

    class DiscExplodes(TinyTok):
        def discriminator_loss(self, images, recon, step):
            loss, logs = super().discriminator_loss(images, recon, step)
            return (loss * 1e9 if step == 2 else loss), logs
    mmu.manual_seed(0)
    tr = Trainer(DiscExplodes(disc=True, disc_start=0), ListLoader(images(8), 4), cfg(steps=4))
    with pytest.raises(TrainingDiverged, match="step 2: the discriminator loss is .*above max_loss"):
        tr.fit()
    assert tr.step == 2 and tr.disc_steps == 2


@pytest.mark.parametrize("kw, exc, match", [
    (dict(max_loss=0), ValueError, "max_loss"),
    (dict(max_loss="big"), TypeError, "max_loss"),
    (dict(sample_every=2), ValueError, "sample_dir"),
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(tensorboard_dir=3), TypeError, "tensorboard_dir"),
])
def test_bad_config_new_fields(kw, exc, match):
    with pytest.raises(exc, match=match):
        TrainConfig(steps=2, **kw)


# ---------------------------------------------------------------------- interrupts
def test_keyboard_interrupt_at_a_step_boundary_checkpoints_and_resumes_exactly(tmp_path):
    data = images(12)

    def model():
        mmu.manual_seed(0)
        return TinyTok(ema_vq=True, dropout=0.25)
    c = cfg(steps=6, ema_decay=0.8, ckpt_dir=str(tmp_path / "ck"))   # no periodic checkpoints at all
    m1 = model()
    Trainer(m1, ListLoader(data, 4, seed=3), c).fit()

    def stop_at_3(trainer, record):
        if trainer.step == 3:
            raise KeyboardInterrupt
    m2 = model()
    t2 = Trainer(m2, ListLoader(data, 4, seed=3), c, callbacks=stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        t2.fit()
    assert t2.interrupted and t2.step == 3
    assert [os.path.basename(p) for p in Trainer.checkpoints(c.ckpt_dir)] == ["ckpt_00000003.safetensors"]
    t3 = Trainer.resume(c.ckpt_dir, model(), ListLoader(data, 4, seed=3), c)
    assert t3.step == 3 and len(t3.history) == 3
    t3.fit()
    for k, v in params(m1).items():
        np.testing.assert_array_equal(v, params(t3.model)[k], err_msg=k)


def test_ctrl_c_finishes_the_step_then_checkpoints(tmp_path):
    import signal

    class CtrlC(TinyTok):
        presses = {}

        def forward(self, images, step=0):
            for _ in range(self.presses.get(step, 0)):
                signal.raise_signal(signal.SIGINT)   # as a terminal's Ctrl-C would, in the middle of the step
            return super().forward(images, step)
    c = cfg(steps=6, ckpt_dir=str(tmp_path / "a"))
    mmu.manual_seed(0)
    m = CtrlC()
    m.presses = {2: 1}
    tr = Trainer(m, ListLoader(images(8), 4), c)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    # step 2 (the third) ran to its end, was logged and checkpointed; Python's handler is back
    assert tr.step == 3 and tr.interrupted and len(tr.history) == 3
    assert [os.path.basename(p) for p in Trainer.checkpoints(c.ckpt_dir)] == ["ckpt_00000003.safetensors"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # a second Ctrl-C stops at once, mid-step: no checkpoint of a half-done step
    c = cfg(steps=6, ckpt_dir=str(tmp_path / "b"))
    mmu.manual_seed(0)
    m = CtrlC()
    m.presses = {2: 2}
    tr = Trainer(m, ListLoader(images(8), 4), c)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert tr.step == 2 and tr.interrupted and Trainer.checkpoints(c.ckpt_dir) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------- config recorded, compared at resume
def test_resume_refuses_another_config_and_names_the_fields(tmp_path):
    data = images(8)
    c = cfg(steps=4, ckpt_every=2, ckpt_dir=str(tmp_path))
    mmu.manual_seed(0)
    Trainer(TinyTok(k=8), ListLoader(data, 4), c).fit(2)
    ck = mmu.load(str(tmp_path / "ckpt_00000002.safetensors"))
    assert ck["model_config"]["args"]["k"] == 8 and ck["config"]["lr"] == pytest.approx(1e-2)
    fresh = TinyTok(k=8)
    before = params(fresh)
    with pytest.raises(ValueError, match=r"2 field\(s\) differ\): train\.lr: 0\.01 in the checkpoint, 0\.005 now; "
                                         r"train\.warmup_steps: 0 in the checkpoint, 1 now"):
        Trainer.resume(str(tmp_path), fresh, ListLoader(data, 4), dataclasses.replace(c, lr=5e-3, warmup_steps=1))
    for k, v in params(fresh).items():   # nothing was loaded
        np.testing.assert_array_equal(before[k], v)
    with pytest.raises(ValueError, match=r"model\.k: 8 in the checkpoint, 16 now"):
        Trainer.resume(str(tmp_path), TinyTok(k=16), ListLoader(data, 4), c)
    # steps and the bookkeeping fields may change (a longer run, other logging)
    t = Trainer.resume(str(tmp_path), TinyTok(k=8), ListLoader(data, 4),
                       dataclasses.replace(c, steps=6, log_every=2, keep_last=1, progress=False))
    assert t.step == 2
    # check_config=False loads it anyway (the caller's decision)
    t = Trainer.resume(str(tmp_path), TinyTok(k=8), ListLoader(data, 4), dataclasses.replace(c, lr=5e-3),
                       check_config=False)
    assert t.step == 2 and t.optimizer.param_groups[0]["initial_lr"] == pytest.approx(5e-3)


# ---------------------------------------------------------------------- stale temp files of killed saves
def test_prune_removes_stale_checkpoint_temp_files_only(tmp_path, monkeypatch):
    from mmu.train.trainer import _CKPT_TMP_RE
    d = tmp_path / "ck"
    d.mkdir()
    stale = [".ckpt_00000001.safetensors.k2x_9q0a.tmp", ".ckpt_00000007.safetensors.abcdefgh.tmp"]
    mine = [".notes.tmp", "ckpt_00000001.safetensors.tmp", ".ckpt_1.safetensors.abc.tmp.bak",
            ".ckpt_x.safetensors.abcdefgh.tmp", "scratch.tmp", ".model.safetensors.abcdefgh.tmp"]
    for name in stale + mine:
        (d / name).write_bytes(b"partial")
    mmu.manual_seed(0)
    tr = Trainer(TinyTok(), ListLoader(images(8), 4), cfg(steps=4, ckpt_every=2, ckpt_dir=str(d)))
    # while a checkpoint is being written, a prune (from another thread, say) must not touch its temp file
    import mmu.io.safetensors as st
    real_fsync, seen = st.os.fsync, []

    def fsync_then_prune(fd):
        names = [n for n in os.listdir(d) if _CKPT_TMP_RE.match(n) and n not in stale]
        if names:  # the temp file of the save in progress, named by mmu.save itself
            tr._prune()
            seen.append((names, [n for n in os.listdir(d) if n in names]))
        return real_fsync(fd)
    monkeypatch.setattr(st.os, "fsync", fsync_then_prune)
    tr.fit()
    monkeypatch.undo()
    assert len(seen) == 2 and all(before == after and len(before) == 1 for before, after in seen)
    assert sorted(os.listdir(d)) == sorted(mine + ["ckpt_00000002.safetensors", "ckpt_00000004.safetensors"])


# ---------------------------------------------------------------------- samples and TensorBoard
def _crc32c_bitwise(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _read_records(path):
    """TFRecord framing, checked independently of the writer: [data bytes]."""
    import struct
    raw = open(path, "rb").read()
    out, pos = [], 0

    def masked(b):
        c = _crc32c_bitwise(b)
        return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    while pos < len(raw):
        head = raw[pos:pos + 8]
        (n,) = struct.unpack("<Q", head)
        (crc_len,) = struct.unpack("<I", raw[pos + 8:pos + 12])
        assert crc_len == masked(head)
        data = raw[pos + 12:pos + 12 + n]
        assert len(data) == n
        (crc_data,) = struct.unpack("<I", raw[pos + 12 + n:pos + 16 + n])
        assert crc_data == masked(data)
        out.append(data)
        pos += 16 + n
    assert pos == len(raw)
    return out


def _proto(b):
    """{field: [values]} of a protobuf message: varints as int, fixed64 as double, fixed32 as float,
    length-delimited as bytes."""
    import struct
    fields, pos = {}, 0

    def varint():
        nonlocal pos
        shift = value = 0
        while True:
            byte = b[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
    while pos < len(b):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            v = varint()
        elif wire == 1:
            v = struct.unpack("<d", b[pos:pos + 8])[0]
            pos += 8
        elif wire == 5:
            v = struct.unpack("<f", b[pos:pos + 4])[0]
            pos += 4
        elif wire == 2:
            n = varint()
            v = b[pos:pos + n]
            pos += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        fields.setdefault(field, []).append(v)
    return fields


def _events(folder):
    files = sorted(f for f in os.listdir(folder) if f.startswith("events.out.tfevents."))
    return [[_proto(r) for r in _read_records(os.path.join(folder, f))] for f in files]


def test_crc32c_known_answers():
    from mmu.train.tensorboard import crc32c, masked_crc32c
    assert crc32c(b"123456789") == 0xE3069283          # the CRC-32C check value (RFC 3720)
    assert crc32c(b"") == 0 and crc32c(bytes(32)) == 0x8A9136AA
    rng = np.random.default_rng(0)
    for n in (1, 7, 100):
        b = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(b) == _crc32c_bitwise(b)
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_samples_and_tensorboard_event_files(tmp_path):
    from PIL import Image

    from mmu.train.trainer import _to_uint8
    data = images(12, c=1, s=8)
    evald = images(5, c=1, s=8, seed=1)
    sd, tb = tmp_path / "samples", tmp_path / "tb"
    mmu.manual_seed(0)
    plain = Trainer(TinyTok(dropout=0.25), ListLoader(data, 4), cfg(steps=4, log_every=1, eval_every=2), evald)
    plain.fit()
    mmu.manual_seed(0)
    c = cfg(steps=4, log_every=1, eval_every=2, sample_every=2, sample_dir=str(sd), num_samples=3,
            tensorboard_dir=str(tb))
    tr = Trainer(TinyTok(dropout=0.25), ListLoader(data, 4), c, evald)
    tr.fit()
    # samples and TensorBoard change nothing of the run (eval mode, no_grad, RNG restored)
    for k, v in params(plain.model).items():
        np.testing.assert_array_equal(v, params(tr.model)[k], err_msg=k)
    assert [r["loss"] for r in plain.history] == [r["loss"] for r in tr.history]
    assert sorted(os.listdir(sd)) == ["step_00000002.png", "step_00000004.png"]
    grid = np.asarray(Image.open(sd / "step_00000004.png"))
    f, pad = 8, 2                         # 8 px tiles are enlarged 8x to 64 px, 2 px apart
    assert grid.shape == (2 * 64 + 3 * pad, 3 * 64 + 4 * pad)
    top, bottom = _to_uint8(evald[:3]), _to_uint8(tr.reconstruct(evald[:3]))
    for i in range(3):
        x0 = pad + i * (64 + pad)
        np.testing.assert_array_equal(grid[pad:pad + 64, x0:x0 + 64], top[i, ..., 0].repeat(f, 0).repeat(f, 1))
        np.testing.assert_array_equal(grid[2 * pad + 64:2 * pad + 128, x0:x0 + 64],
                                      bottom[i, ..., 0].repeat(f, 0).repeat(f, 1))
    # the event file: framing and CRCs (checked above), then the protobuf fields and values
    (events,) = _events(tb)
    assert events[0][3] == [b"brain.Event:2"] and 2 not in events[0]
    scalars, imgs = {}, {}
    for ev in events[1:]:
        step = ev[2][0]
        assert abs(ev[1][0] - __import__("time").time()) < 3600
        for value in (_proto(v) for v in _proto(ev[5][0])[1]):
            tag = value[1][0].decode()
            if 2 in value:
                scalars[(tag, step)] = value[2][0]
            else:
                imgs[(tag, step)] = _proto(value[4][0])
    for r in tr.history:
        np.testing.assert_array_equal(np.float32(scalars[("train/loss", r["step"])]), np.float32(r["loss"]))
        if "eval_psnr" in r:
            assert scalars[("eval/psnr", r["step"])] == np.float32(r["eval_psnr"])
    assert {s for t, s in scalars if t == "train/lr"} == {1, 2, 3, 4}
    assert sorted(imgs) == [("samples", 2), ("samples", 4)]
    im = imgs[("samples", 4)]
    assert (im[1][0], im[2][0], im[3][0]) == (grid.shape[0], grid.shape[1], 1)
    assert im[4][0] == (sd / "step_00000004.png").read_bytes()


def test_tensorboard_resume_marks_the_restart(tmp_path):
    c = cfg(steps=4, ckpt_every=2, ckpt_dir=str(tmp_path / "ck"), tensorboard_dir=str(tmp_path / "tb"))
    mmu.manual_seed(0)
    Trainer(TinyTok(), ListLoader(images(8), 4), c).fit(3)
    Trainer.resume(c.ckpt_dir, TinyTok(), ListLoader(images(8), 4), c).fit()
    first, second = _events(tmp_path / "tb")
    assert [e[2][0] for e in first[1:]] == [1, 2, 3]
    # SessionLog START (Event field 7, status 1) at the first step the resumed writer logs: TensorBoard drops
    # the interrupted writer's step 3 instead of drawing it twice
    assert second[1][2] == [3] and _proto(second[1][7][0]) == {1: [1]}
    assert [e[2][0] for e in second[2:]] == [3, 4]


def test_tensorboard_reads_our_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    mmu.manual_seed(0)
    c = cfg(steps=3, tensorboard_dir=str(tmp_path), sample_every=3, sample_dir=str(tmp_path / "s"))
    tr = Trainer(TinyTok(), ListLoader(images(8), 4), c)
    tr.fit()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert got == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in tr.history]
    assert [i.step for i in acc.Images("samples")] == [3]


def test_save_pretrained_files_get_the_usual_permissions(tmp_path):
    model = nn.Linear(3, 2)
    old = os.umask(0o027)
    try:
        model.save_pretrained(str(tmp_path / "a"))
        os.umask(0o002)
        model.save_pretrained(str(tmp_path / "b"))
    finally:
        os.umask(old)
    for f in ("config.json", "model.safetensors"):
        assert os.stat(tmp_path / "a" / f).st_mode & 0o777 == 0o640, f
        assert os.stat(tmp_path / "b" / f).st_mode & 0o777 == 0o664, f
    # a replaced file keeps its own mode (as mmu.io's writer does)
    os.chmod(tmp_path / "a" / "model.safetensors", 0o604)
    model.save_pretrained(str(tmp_path / "a"))
    assert os.stat(tmp_path / "a" / "model.safetensors").st_mode & 0o777 == 0o604
    assert nn.Module.from_pretrained(str(tmp_path / "a")).weight.shape == (2, 3)
