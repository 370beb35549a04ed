"""Issue 15 item 6: the torch twin of TiTok (benchmarks/torch_twins.py, TwinTiTok) trained side by side with mmu's
through mmu.train.Trainer for 20 optimiser steps on identical batches (AdamW, warmup + cosine, clipping; the
twin by torch_twins.tokenizer_train_step at the lr the Trainer used): the generator's (and discriminator's, with
the PatchGAN and LeCam) loss every step, the codes, and the final weights agree. torch only (skipped without it)."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import mmu  # noqa: E402
from mmu.models.titok import TiTok  # noqa: E402
from mmu.train import TrainConfig, Trainer  # noqa: E402
import torch_twins as tt  # noqa: E402

STEPS, BATCH = 20, 4
# measured here (worst over the 20 steps): generator loss 1.1e-7 relative without the discriminator, 1.1e-7 with
# it; the bounds leave room for other BLAS orders and thread counts
LOSS_RTOL = 1e-4


@pytest.fixture(autouse=True)
def one_thread():
    prev, tprev = mmu.get_num_threads(), torch.get_num_threads()
    mmu.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    mmu.set_num_threads(prev)
    torch.set_num_threads(tprev)


class _FixedBatches:
    """A loader for the Trainer that yields the given batches in order."""

    def __init__(self, batches):
        self.items, self.i = batches, 0

    def batches(self):
        while True:
            b = self.items[self.i % len(self.items)]
            self.i += 1
            yield b

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, s):
        self.i = int(s["i"])


def _key_bias(name, model):
    """The key projection's bias only shifts every score of a query by one amount: its gradient is zero up to
    rounding, which Adam turns into steps of up to lr; such entries are compared loosely."""
    if name.endswith("attn.qkv_proj.bias"):
        w = model.config.encoder_width if name.startswith("encoder") else model.config.decoder_width
        return slice(w, 2 * w)
    return None


@pytest.mark.parametrize("gan", [False, True])
def test_titok_twin_matches_over_20_training_steps(gan):
    fields = dict(resolution=16, patch_size=4, in_channels=1, encoder_width=32, encoder_depth=2, encoder_heads=2,
                  decoder_width=32, decoder_depth=2, decoder_heads=2, num_latent_tokens=12, token_size=6,
                  codebook_size=64)
    if gan:
        fields.update(use_discriminator=True, disc_layers=1, disc_ndf=8, disc_start=5, disc_weight=0.1,
                      lecam_weight=0.01, lecam_decay=0.9, disc_norm="none")
    mmu.manual_seed(0)
    model = TiTok(**fields)
    twin = tt.titok_twin(model)
    rng = np.random.default_rng(1)
    batches = [np.tanh(1.5 * rng.standard_normal((BATCH, 1, 16, 16))).astype(np.float32) for _ in range(STEPS)]
    tc = TrainConfig(steps=STEPS, batch_size=BATCH, lr=3e-3, betas=(0.9, 0.99), weight_decay=1e-4, warmup_steps=3,
                     grad_clip=1.0, log_every=0, progress=False, seed=0)
    trainer = Trainer(model, _FixedBatches(batches), tc)
    opt, dopt = tt.make_optimizers(twin, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    assert sum(p.numel() for p in twin.parameters()) == sum(int(np.prod(p.shape)) for p in model.parameters())
    mm, tw, dmm, dtw, code_diff = [], [], [], [], 0
    for s in range(STEPS):
        rec = trainer.train_step()
        for o in (opt, dopt):
            for g in (o.param_groups if o is not None else []):
                g["lr"] = rec["lr"]
        twin.train()
        with torch.no_grad():
            twin_codes = twin.encode(torch.from_numpy(batches[s])).numpy().reshape(BATCH, -1)
        code_diff += int((twin_codes != model.last_output.codes).sum())
        loss, d = tt.tokenizer_train_step(twin, opt, torch.from_numpy(batches[s]), s, dopt, grad_clip=tc.grad_clip)
        mm.append(rec["loss"])
        tw.append(loss)
        if "d_loss" in rec or d is not None:
            dmm.append(rec.get("d_loss", np.nan))
            dtw.append(np.nan if d is None else d)
    mm, tw = np.array(mm), np.array(tw)
    rel = np.abs(mm - tw) / np.abs(tw)
    assert rel.max() < LOSS_RTOL, (rel.max(), rel.argmax(), mm, tw)
    assert mm[-1] < 0.8 * mm[0]
    assert code_diff == 0  # the twin's codes before each step are those mmu's forward gave
    assert bool(dmm) == gan and len(dmm) == (STEPS - 5 if gan else 0)
    if gan:
        np.testing.assert_allclose(dmm, dtw, rtol=LOSS_RTOL, atol=1e-6)
        np.testing.assert_allclose(model.lecam_ema.numpy(), twin.lecam_ema.numpy(), rtol=1e-4, atol=1e-6)
    tstate = twin.state_dict()
    lr = tc.lr
    for k, v in model.state_dict().items():
        a, b = v.numpy().reshape(-1).astype(np.float64), tstate[k].detach().double().numpy().reshape(-1)
        rows = _key_bias(k, model)
        if rows is not None:
            assert np.abs(a[rows] - b[rows]).max() < STEPS * lr, k
            keep = np.ones(a.size, bool)
            keep[rows] = False
            a, b = a[keep], b[keep]
        err = np.abs(a - b).max() / max(np.abs(b).max(), STEPS * lr)
        assert err < 1e-3, (k, err)
    print(f"gan={gan}: max relative loss difference {rel.max():.2e}")
