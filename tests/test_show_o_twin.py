"""Issue 13 item 7: a torch twin of Show-o-tiny (benchmarks/torch_twins.py TwinShowO) trained side by side
with mmu's ShowO through mmu.train.Trainer for 20 optimiser steps on identical batches: the logits of every
part, each loss term and the final weights agree. torch only (skipped without it)."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import mmu  # noqa: E402
from mmu.models.show_o import ShowO  # noqa: E402
from mmu.models.show_o.prompting import image_token_ids, mmu_prompt, text_rows  # noqa: E402
from mmu.train import TrainConfig, Trainer  # noqa: E402
from torch_twins import TwinShowO, showo_optimizer, showo_step_inputs, showo_train_step  # noqa: E402

STEPS = 20
# measured here (worst over the 20 steps): logits 7e-7 of their largest magnitude, each loss term 1.3e-7
# relative, final weights 1.5e-6 relative per tensor (the key LayerNorm's bias excepted: see below); the
# bounds leave a margin for other BLAS orders
LOGIT_TOL, LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-5, 1e-5


def _data(cfg, n, rng):
    """Random captions (text ids padded with -1), codes, questions and answers for every task."""
    def texts(lo, hi):
        out = np.full((n, hi), -1, np.int64)
        for i in range(n):
            k = rng.integers(lo, hi + 1)
            out[i, :k] = rng.integers(3, cfg["llm_vocab_size"], k)
        return out
    codes = rng.integers(0, cfg["codebook_size"], (n, cfg["num_vq_tokens"]))
    return {"t2i.text_ids": texts(1, 5), "t2i.codes": codes, "lm.text_ids": texts(1, 6),
            "mmu.codes": codes[::-1].copy(), "mmu.question_ids": texts(1, 3), "mmu.answer_ids": texts(1, 2)}


def _nested(batch):
    out = {}
    for key, value in batch.items():
        task, name = key.split(".", 1)
        out.setdefault(task, {})[name] = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    return out


def test_twin_matches_show_o_tiny_over_20_training_steps():
    fields = dict(llm_vocab_size=24, codebook_size=64, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=2,
                  num_heads=2, cond_dropout_prob=0.3)
    mmu.manual_seed(0)
    model = ShowO(**fields)
    data = _data(fields, 48, np.random.default_rng(0))
    train = dict(steps=STEPS, batch_size=8, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05, warmup_steps=3,
                 grad_clip=0.5)
    twin = TwinShowO(model.config.to_dict()).load_mmu_state(model.state_dict())
    opt, sched = showo_optimizer(twin, **{k: v for k, v in train.items() if k not in ("batch_size", "grad_clip")})
    assert sum(p.numel() for p in twin.parameters()) == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("lm."))

    # record what mmu's step drew and computed: the T2I masking / condition dropout, every forward's logits
    drawn, mmu_logits, mmu_ids = [], [], []
    t2i_inputs, forward = model.t2i_training_inputs, model.forward

    def recording_t2i_inputs(*a, **k):
        drawn.append(t2i_inputs(*a, **k))
        return drawn[-1]

    def recording_forward(ids, *a, **k):
        out = forward(ids, *a, **k)
        mmu_ids.append(ids.numpy().copy())
        mmu_logits.append(out.numpy().copy())
        return out

    model.t2i_training_inputs, model.forward = recording_t2i_inputs, recording_forward
    records = []

    def on_step(trainer, record):
        records.append(dict(record))

    seen, dropped = [], 0
    training_step = model.training_step

    def recording_step(batch, step):
        drawn.clear(), mmu_logits.clear(), mmu_ids.clear()
        loss, logs = training_step(batch, step)
        seen.append((_nested(batch), drawn[0], [x for x in mmu_logits], [x for x in mmu_ids], logs))
        return loss, logs

    model.training_step = recording_step
    trainer = Trainer(model, data, TrainConfig(**train, log_every=1, progress=False), callbacks=[on_step])
    worst = {"logits": 0.0, "t2i": 0.0, "lm": 0.0, "mmu": 0.0}
    for step in range(STEPS):
        trainer.fit(1)
        batch, t2i, logits, ids, logs = seen[-1]
        dropped += int(t2i[3].sum())
        inputs = showo_step_inputs(model, batch, t2i)
        for task, got in zip(("t2i", "lm", "mmu"), ids):  # the twin's sequences are the ones mmu ran
            np.testing.assert_array_equal(inputs[task]["ids"], got)
        total, terms, twin_logits = showo_train_step(twin, opt, sched, inputs, grad_clip=train["grad_clip"])
        for task, want in zip(("t2i", "lm", "mmu"), logits):
            got = twin_logits[task].numpy()
            # mmu computes the logits its losses read only (masked image tokens, the answers' predecessors):
            # the twin's at those positions
            if task == "t2i":
                where, _ = model.t2i_loss_positions(t2i[1])
            if task == "mmu":
                p = batch["mmu"]
                _, labels = mmu_prompt(model.config, image_token_ids(model.config, p["codes"]),
                                       text_rows(p["question_ids"], "", ""), text_rows(p["answer_ids"], "", ""))
                where, _ = model.mmu_loss_positions(labels)
            if task in ("t2i", "mmu"):
                got = np.take_along_axis(got, (where - inputs[task]["logits_at"][:, :1])[..., None], 1)
            err = np.abs(got - want).max() / np.abs(want).max()
            worst["logits"] = max(worst["logits"], err)
            assert err < LOGIT_TOL, (step, task, err)
            rel = abs(terms[task] - logs[f"loss_{task}"]) / abs(logs[f"loss_{task}"])
            worst[task] = max(worst[task], rel)
            assert rel < LOSS_TOL, (step, task, terms[task], logs[f"loss_{task}"])
        assert abs(total - records[-1]["loss"]) <= LOSS_TOL * abs(total)
    assert len(seen) == STEPS and dropped > 0  # condition dropout happened on identical rows on both sides
    state = model.state_dict()
    for name, p in twin.state_dict().items():
        want = state[name].numpy()
        got = p.numpy()
        if name.endswith("attn.k_norm.bias"):
            # the key bias on the dims RoPE leaves alone adds q.b to every score of a query: softmax ignores
            # it, so its gradient is zero up to rounding (checked), and Adam's normalisation turns that
            # rounding noise into steps of up to lr; only those 8 numbers are held to an absolute bound
            r = twin.rotary_dim
            assert np.abs(dict(twin.named_parameters())[name].grad.numpy()[r:]).max() < 1e-7
            assert np.abs(got[r:] - want[r:]).max() < STEPS * train["lr"], name
            got, want = got[:r], want[:r]
        # relative to the tensor's size, floored at STEPS * lr (how far Adam can move a weight in the run):
        # biases start at 0 and some barely move (the key biases' rotated dims get gradients near 1e-11)
        err = np.abs(got - want).max() / max(np.abs(want).max(), STEPS * train["lr"])
        if name.endswith("attn.k_norm.bias"):  # measured 1e-5: a key bias nearly constant over positions
            assert err < 10 * WEIGHT_TOL, (name, err)  # is nearly invariant too; its gradient is ~1e-11
        else:
            worst["weights"] = max(worst.get("weights", 0.0), err)
            assert err < WEIGHT_TOL, (name, err)
    # the run learned (a twin that never stepped would not match the final weights)
    assert records[-1]["loss"] < records[0]["loss"]
    print("worst relative differences:", worst)


def test_twin_forward_sees_the_omni_attention_mask():
    """One T2I forward: the twin fed mmu's omni-attention mask matches ShowO's logits; fed a causal mask
    it does not (image tokens must see the later image tokens), so the comparison above can tell masks apart."""
    mmu.manual_seed(1)
    model = ShowO(llm_vocab_size=24, codebook_size=64, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=2,
                  num_heads=2)
    twin = TwinShowO(model.config.to_dict()).load_mmu_state(model.state_dict())
    codes = np.random.default_rng(1).integers(0, 64, (3, 16))
    ids, labels, _, _ = model.t2i_training_inputs([[5, 6], [7], [8, 9, 10]], model.image_token_ids(codes))
    want = model(mmu.tensor(ids), attn_mask=model.omni_attention_mask(ids)).numpy()
    with torch.no_grad():
        got = twin(ids, model.omni_attention_mask(ids)).numpy()
        causal = twin(ids, None).numpy()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 1e-5 * scale
    assert np.abs(causal - want).max() > 1e-2 * scale
