"""benchmarks/bench_decode.py and its torch twin of TransformerLM (benchmarks/torch_twins.py): the twin
takes the mmu model's state_dict and computes the same logits, its KV cache decodes as its recomputation
does, and every path the benchmark times (mmu.generate, torch on a cache, torch recomputing, the tiny LM's
train step) does the same work on a tiny model. No timing is asserted."""
import os
import sys

import numpy as np
import pytest

import mmu

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_decode as bd  # noqa: E402
import torch_twins as tt  # noqa: E402

SMALL = dict(vocab_size=61, dim=32, num_layers=2, num_heads=4, max_seq_len=48)


@pytest.fixture(autouse=True)
def one_thread():
    prev, tprev = mmu.get_num_threads(), torch.get_num_threads()
    mmu.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    mmu.set_num_threads(prev)
    torch.set_num_threads(tprev)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_twin_loads_the_mmu_state_dict_and_matches_its_logits(pos):
    model, twin = bd.build_pair(SMALL, pos=pos, fresh=True)
    assert sorted(twin.state_dict()) == sorted(model.state_dict())  # load_state_dict was strict, too
    ids = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (3, 9))
    want = model(mmu.tensor(ids)).numpy()
    with torch.inference_mode():
        got = twin(torch.from_numpy(ids)).numpy()
        # the twin's cache: a 5-token prefill, a 2-token chunk (bottom-right causal), two single tokens
        cache = twin.new_cache(3, 12)
        chunks = [twin(torch.from_numpy(ids[:, a:b]), cache=cache) for a, b in ((0, 5), (5, 7), (7, 8), (8, 9))]
    assert cache.length == 9
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(torch.cat(chunks, 1).numpy(), want, atol=1e-5, rtol=0)
    with torch.inference_mode():
        last = twin(torch.from_numpy(ids), logits_at="last").numpy()
    np.testing.assert_allclose(last, want[:, -1], atol=1e-5, rtol=0)


def test_every_timed_decoding_path_writes_the_same_tokens():
    model, twin = bd.build_pair(SMALL, fresh=True)
    prompt = np.random.default_rng(1).integers(0, SMALL["vocab_size"], (2, 6))
    ours = bd.mmu_generate(model, prompt, 7)
    cached = bd.torch_generate_cached(twin, prompt, 7)
    recomputed = bd.torch_generate_recompute(twin, prompt, 7)
    assert ours.shape == (2, 13)
    np.testing.assert_array_equal(ours[:, :6], prompt)
    np.testing.assert_array_equal(cached, ours)
    np.testing.assert_array_equal(recomputed, ours)
    # the prefills return the logits at the prompt's last position
    np.testing.assert_allclose(bd.mmu_prefill(model, prompt).numpy(), bd.torch_prefill(twin, prompt).numpy(),
                               atol=1e-5, rtol=0)


def test_table_row_and_recompute_estimate():
    # a tiny run of the script's table: fields filled, the same tokens, the recomputation estimate is the
    # sum of a quadratic through the three timed step lengths (one per length here)
    lines = []
    rows = bd.run_table(SMALL, 5, 4, [2], [1], repeat=1, out=lines.append)
    (row,) = rows
    assert row["same_tokens"] and row["threads"] == 1 and row["batch"] == 2
    assert sorted(row["recompute_step_s"]) == [5, 6, 8]
    assert all(row[k] > 0 for k in ("prefill_mmu_s", "prefill_torch_s", "gen_mmu_s", "gen_torch_cache_s",
                                    "gen_torch_recompute_s"))
    assert len(lines) == 1 and len(lines[0]) == len(bd.HEADER)


def test_recompute_estimate_sums_the_quadratic_over_every_step(monkeypatch):
    # a fake step whose time is a known quadratic in the sequence length L: 1 + L/10 + L^2/1000 seconds
    def fake_timed(fn):
        L = fn()
        return 1 + L / 10 + L ** 2 / 1000, None

    monkeypatch.setattr(bd, "torch_recompute_step", lambda twin, ids: ids.shape[1])
    monkeypatch.setattr(bd, "_timed", fake_timed)
    total, steps = bd.recompute_seconds(None, np.zeros((1, 5), np.int64), 4, SMALL["vocab_size"])
    assert sorted(steps) == [5, 6, 8]  # the first, middle and last lengths of 4 steps after 5 tokens
    assert total == pytest.approx(sum(1 + L / 10 + L ** 2 / 1000 for L in range(5, 9)), rel=1e-9)


def test_tiny_train_step_starts_from_the_same_loss_in_both_frameworks(monkeypatch):
    monkeypatch.setattr(bd, "TINY", dict(SMALL, max_seq_len=16))
    monkeypatch.setattr(bd, "TINY_BATCH", 3)
    monkeypatch.setattr(bd, "TINY_LEN", 7)
    sys.path.insert(0, os.path.dirname(bd.__file__))
    import run as h
    fws = {fw.name: fw for fw in h.load_frameworks(False)}
    data = bd._tiny_inputs(np.random.default_rng(0))
    steps = {name: bd._tiny_train_step(fw, data) for name, fw in fws.items()}
    losses = {name: [float(step().item()) for _ in range(3)] for name, step in steps.items()}
    # the same start; AdamW moves both the same way (float32 drift only)
    np.testing.assert_allclose(losses["mmu"], losses["torch"], rtol=1e-4)
    assert losses["mmu"][2] < losses["mmu"][0]
    names = [c.name for c in bd.cases(h)]
    assert names == ["gpt_prefill128_B1", "gpt_decode_step_B1", "gpt_prefill128_B8", "gpt_decode_step_B8",
                     "gpt_decode_step_B1_vs_torch_recompute", "tinylm_train_step"]
