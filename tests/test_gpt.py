"""mmu.models.gpt: GPTConfig, GPT's Trainer protocol (loss against NumPy, padding), training through the
Trainer with exact resume, KV-cache generation against recomputation, seeds, save/load with the text
tokenizer, the GPT-2 converter against a torch twin, the captions job (loss falls, the samples are
mostly real captions) and `mmu train --model gpt` / `mmu generate`."""
import functools
import json
import math
import os

import numpy as np
import pytest

import mmu
from mmu import __main__ as cli
from mmu.data import captioned
from mmu.models.gpt import GPT, GPTConfig, caption_texts, convert_gpt2_state_dict, train_captions
from mmu.train import Trainer, TrainConfig

pytest.importorskip("tokenizers")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok():
    return mmu.text.TextTokenizer.train_word_level(mmu.data.caption_corpus("digits"))


def _model(tok=None, seed=0, **kw):
    fields = dict(vocab_size=48, dim=32, num_layers=2, num_heads=4, max_seq_len=12)
    fields.update(kw)
    mmu.manual_seed(seed)
    return GPT(GPTConfig(**fields), tokenizer=tok)


@functools.lru_cache(maxsize=1)
def _digit_captions():
    return caption_texts("digits", "train")


def _captions(tok, n=256, seed=0):
    """n training captions of the digits (a seeded draw) as bos caption eos rows, right padded to 9."""
    every = _digit_captions()
    texts = [every[i] for i in np.random.default_rng(seed).permutation(len(every))[:n]]
    ids, mask = tok.encode_batch(texts, add_bos=True, add_eos=True, padding="max_length", max_length=9)
    return {"input_ids": ids, "attention_mask": mask}


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ config
def test_config_validates_and_round_trips():
    cfg = GPTConfig(vocab_size=50, dim=24, num_layers=1, num_heads=6, num_kv_heads=2, pos="learned")
    assert mmu.from_config(mmu.get_config(cfg)) == cfg
    assert GPT(cfg).config == GPT(cfg.to_dict()).config == GPT(**cfg.to_dict()).config == cfg
    model = GPT(cfg)
    again = mmu.from_config(mmu.get_config(model))
    assert isinstance(again, GPT) and again.config == cfg
    assert mmu.models.get("gpt") is GPT and "gpt" in mmu.models.available()
    for bad, exc, word in [(dict(dim=0), ValueError, "dim"), (dict(num_heads=5), ValueError, "multiple"),
                           (dict(num_kv_heads=3), ValueError, "num_kv_heads"), (dict(pos="alibi"), ValueError, "pos"),
                           (dict(activation="tanh"), ValueError, "activation"), (dict(dropout=1.0), ValueError,
                                                                                   "dropout"),
                           (dict(vocab_size=2.5), TypeError, "vocab_size"), (dict(bias=1), TypeError, "bias"),
                           (dict(qk_norm="batchnorm"), ValueError, "qk_norm"), (dict(max_seq_len=1), ValueError,
                                                                                  "max_seq_len")]:
        with pytest.raises(exc, match=word):
            GPTConfig(**dict(dict(vocab_size=10, dim=8, num_heads=4), **bad))
    with pytest.raises(TypeError, match="unknown field"):
        GPT(dims=3)
    with pytest.raises(TypeError, match="not both"):
        GPT(cfg, dim=8)


# ------------------------------------------------------------------ the Trainer protocol
def test_training_step_is_the_masked_next_token_cross_entropy(tok):
    model = _model()
    batch = _captions(tok, n=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not mask.all()  # right padded
    loss, logs = model.training_step(batch, 0)
    logp = _log_softmax(model(ids).numpy())
    nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0]
    want = nll[mask[:, 1:]].mean()
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert logs["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # the pair form and the same rows left padded (mask and positions inside the model) give the same loss
    assert model.training_step((ids, mask), 0)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    lengths = mask.sum(1)
    left = np.zeros_like(ids)
    lmask = np.zeros_like(mask)
    for i, n in enumerate(lengths):
        left[i, ids.shape[1] - n:], lmask[i, ids.shape[1] - n:] = ids[i, :n], True
    assert model.training_step({"input_ids": left, "attention_mask": lmask}, 0)[0].item() == \
        pytest.approx(loss.item(), rel=1e-5)
    # unpadded ids: every position is a target
    full = ids[:, :4]
    logp = _log_softmax(model(full).numpy())
    want = -np.take_along_axis(logp[:, :-1], full[:, 1:, None], -1).mean()
    assert model.training_step(full, 0)[0].item() == pytest.approx(want, rel=1e-5)
    ev = model.evaluate_step(batch)
    assert ev["loss"] == pytest.approx(loss.item(), rel=1e-6) and set(ev) == {"loss", "perplexity"}
    # token-weighted perplexity over batches of any size
    assert model.perplexity(batch, batch_size=4) == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_training_step_checks_its_batch(tok):
    model = _model()
    good = _captions(tok, n=2)
    cases = [
        (good["input_ids"].astype(np.float32), TypeError, "integer token ids"),
        (good["input_ids"][0], ValueError, r"\(B, L\)"),
        (good["input_ids"][:, :1], ValueError, "L >= 2"),
        (np.full((2, 13), 5), ValueError, "max_seq_len"),
        (np.full((2, 4), 48), ValueError, "outside the vocabulary"),
        ({"ids": good["input_ids"]}, KeyError, "input_ids"),
        ({"input_ids": good["input_ids"], "attention_mask": good["attention_mask"][:, :3]}, ValueError, "shape"),
        ({"input_ids": good["input_ids"], "attention_mask": np.zeros((2, 9), bool)}, ValueError, "without any"),
        ({"input_ids": good["input_ids"], "attention_mask": np.eye(2, 9, dtype=bool)}, ValueError, "no target"),
    ]
    for batch, exc, word in cases:
        with pytest.raises(exc, match=word):
            model.training_step(batch, 0)
    with pytest.raises(ValueError, match="exceeds the model"):
        GPT(vocab_size=10, dim=8, num_layers=1, num_heads=2, tokenizer=tok)
    with pytest.raises(TypeError, match="TextTokenizer"):
        model.tokenizer = "words"


def test_trainer_lowers_the_loss_and_resumes_bit_identically(tok, tmp_path):
    data = _captions(tok, n=512)
    held = _captions(tok, n=128, seed=1)
    cfg = dict(steps=30, batch_size=16, lr=1e-2, betas=(0.9, 0.95), warmup_steps=2, log_every=1, eval_every=15,
               progress=False, ema_decay=0.9)
    full = _model(dropout=0.1)
    hist = Trainer(full, data, TrainConfig(**cfg), eval_data=held).fit()
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    ev = [r for r in hist.records if "eval_loss" in r]
    assert [r["step"] for r in ev] == [15, 30] and ev[-1]["eval_loss"] < ev[0]["eval_loss"]
    assert ev[-1]["eval_perplexity"] == pytest.approx(math.exp(ev[-1]["eval_loss"]), rel=0.05)

    first = _model(dropout=0.1)
    ck = dict(cfg, ckpt_every=10, ckpt_dir=str(tmp_path))
    Trainer(first, data, TrainConfig(**ck), eval_data=held).fit(10)
    second = _model(seed=7, dropout=0.1)  # other weights: the checkpoint must bring everything back
    t2 = Trainer.resume(str(tmp_path), second, data, TrainConfig(**ck), eval_data=held)
    assert t2.step == 10
    t2.fit()
    for k, v in _params(full).items():
        np.testing.assert_array_equal(_params(second)[k], v, err_msg=k)
    np.testing.assert_array_equal(t2.history["loss"], hist["loss"])
    # a checkpoint of another model config is refused, naming the field
    with pytest.raises(ValueError, match="dim"):
        Trainer.resume(str(tmp_path), _model(dim=16, dropout=0.1), data, TrainConfig(**ck))


# ------------------------------------------------------------------ generation
@pytest.mark.parametrize("kw", [dict(), dict(pos="learned", num_kv_heads=2, qk_norm="rmsnorm", tie_embeddings=False),
                                dict(residual="parallel", rotary_fraction=0.5, activation="swiglu")])
def test_kv_cache_generation_equals_recomputation(kw):
    model = _model(seed=3, **kw)
    model.eval()
    prompt = np.array([[1, 5, 9, 4], [0, 1, 7, 6]])
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1]], bool)
    out = model.generate(prompt, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None).numpy()
    assert out.shape == (2, 10) and np.array_equal(out[:, :4], prompt)
    # greedy by recomputing the whole sequence each token, row by row without the padding
    for row, start in ((0, 0), (1, 1)):
        seq = list(prompt[row, start:])
        for _ in range(6):
            logits = model(np.array([seq]), logits_at="last").numpy()[0]
            seq.append(int(logits.argmax()))
        assert seq[-6:] == list(out[row, 4:]), row
    # logits of a cached prefill + one-token steps equal the full forward
    seqs = out[:1]
    cache = model.new_cache(1, 10)
    with mmu.no_grad():
        got = [model(seqs[:, :4], cache=cache).numpy()]
        got += [model(seqs[:, i:i + 1], cache=cache).numpy() for i in range(4, 10)]
    np.testing.assert_allclose(np.concatenate(got, 1), model(seqs).numpy(), atol=1e-5)


def test_generation_is_seeded_and_reads_the_tokenizer(tok):
    model = _model(tok, seed=1)
    a = model.generate_text(num_samples=6, seed=5)
    assert a == model.generate_text(num_samples=6, seed=5)
    assert a == model.generate_text(num_samples=6, generator=mmu.Generator(5))
    assert a != model.generate_text(num_samples=6, seed=6)
    assert len(a) == 6 and all(isinstance(t, str) for t in a)
    texts = model.generate_text(prompts=["the digit", "a handwritten"], num_samples=2, seed=0, max_new_tokens=3)
    assert [t.split()[:2] for t in texts] == [["the", "digit"]] * 2 + [["a", "handwritten"]] * 2
    ids = model.generate(np.array([[tok.bos_id]]), max_new_tokens=5, seed=1, top_k=3, temperature=0.7)
    assert ids.shape[1] <= 6 and model.training
    greedy = model.generate_text(num_samples=3, do_sample=False)
    assert len(set(greedy)) == 1
    with pytest.raises(ValueError, match="not both"):
        model.generate_text(seed=1, generator=mmu.Generator(1))
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(np.array([[1, 2]]), max_new_tokens=11)
    with pytest.raises(ValueError, match="no tokenizer"):
        _model().generate_text()
    with pytest.raises(TypeError, match="prompts"):
        model.generate_text(prompts="the digit")


# ------------------------------------------------------------------ files
def test_save_and_load_keep_the_tokenizer(tok, tmp_path):
    model = _model(tok, seed=2, pos="learned")
    model.save_pretrained(tmp_path / "m")
    assert {"config.json", "model.safetensors", "tokenizer.json", "mmu_text_tokenizer.json"} <= \
        set(os.listdir(tmp_path / "m"))
    again = GPT.from_pretrained(tmp_path / "m")
    assert again.config == model.config and again.tokenizer is not None
    assert again.tokenizer.get_vocab() == tok.get_vocab() and again.tokenizer.eos_id == tok.eos_id
    ids = _captions(tok, n=3)["input_ids"]
    np.testing.assert_array_equal(again(ids).numpy(), model(ids).numpy())
    assert again.generate_text(num_samples=4, seed=3) == model.generate_text(num_samples=4, seed=3)
    assert isinstance(mmu.nn.Module.from_pretrained(tmp_path / "m"), GPT)
    # saved again without a tokenizer: the old tokenizer files go, loading gives no tokenizer
    bare = _model(seed=2)
    bare.save_pretrained(tmp_path / "m")
    assert "tokenizer.json" not in os.listdir(tmp_path / "m")
    assert GPT.from_pretrained(tmp_path / "m").tokenizer is None


# ------------------------------------------------------------------ GPT-2's layout
def _gpt2_weights(rng, vocab=40, dim=16, layers=2, positions=12, hidden=64):
    sd = {"transformer.wte.weight": rng.normal(0, 0.3, (vocab, dim)),
          "transformer.wpe.weight": rng.normal(0, 0.3, (positions, dim)),
          "transformer.ln_f.weight": 1 + rng.normal(0, 0.1, dim), "transformer.ln_f.bias": rng.normal(0, 0.1, dim)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        sd.update({p + "ln_1.weight": 1 + rng.normal(0, 0.1, dim), p + "ln_1.bias": rng.normal(0, 0.1, dim),
                   p + "attn.c_attn.weight": rng.normal(0, 0.3, (dim, 3 * dim)),
                   p + "attn.c_attn.bias": rng.normal(0, 0.1, 3 * dim),
                   p + "attn.c_proj.weight": rng.normal(0, 0.3, (dim, dim)),
                   p + "attn.c_proj.bias": rng.normal(0, 0.1, dim),
                   p + "ln_2.weight": 1 + rng.normal(0, 0.1, dim), p + "ln_2.bias": rng.normal(0, 0.1, dim),
                   p + "mlp.c_fc.weight": rng.normal(0, 0.3, (dim, hidden)),
                   p + "mlp.c_fc.bias": rng.normal(0, 0.1, hidden),
                   p + "mlp.c_proj.weight": rng.normal(0, 0.3, (hidden, dim)),
                   p + "mlp.c_proj.bias": rng.normal(0, 0.1, dim),
                   p + "attn.bias": np.tril(np.ones((1, 1, positions, positions)))})  # an old transformers buffer
    sd = {k: v.astype(np.float32) for k, v in sd.items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def _gpt2_torch_logits(sd, heads, ids):
    """GPT-2's forward as Hugging Face's GPT2LMHeadModel computes it, in float64 torch."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    T = {k: torch.tensor(v, dtype=torch.float64) for k, v in sd.items()}
    b, l = ids.shape
    dim = T["transformer.wte.weight"].shape[1]
    x = T["transformer.wte.weight"][torch.tensor(ids)] + T["transformer.wpe.weight"][:l]
    i = 0
    while f"transformer.h.{i}.ln_1.weight" in T:
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (dim,), T[p + "ln_1.weight"], T[p + "ln_1.bias"], 1e-5)
        q, k, v = (h @ T[p + "attn.c_attn.weight"] + T[p + "attn.c_attn.bias"]).split(dim, -1)
        q, k, v = (t.view(b, l, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, l, dim)
        x = x + a @ T[p + "attn.c_proj.weight"] + T[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (dim,), T[p + "ln_2.weight"], T[p + "ln_2.bias"], 1e-5)
        x = x + F.gelu(h @ T[p + "mlp.c_fc.weight"] + T[p + "mlp.c_fc.bias"], approximate="tanh") \
            @ T[p + "mlp.c_proj.weight"] + T[p + "mlp.c_proj.bias"]
        i += 1
    x = F.layer_norm(x, (dim,), T["transformer.ln_f.weight"], T["transformer.ln_f.bias"], 1e-5)
    return (x @ T["lm_head.weight"].T).numpy()


def test_gpt2_layout_converts_and_matches_a_torch_twin():
    sd = _gpt2_weights(np.random.default_rng(0))
    cfg, state = convert_gpt2_state_dict(sd, num_heads=4)
    assert (cfg.vocab_size, cfg.dim, cfg.num_layers, cfg.max_seq_len, cfg.hidden_dim) == (40, 16, 2, 12, 64)
    assert cfg.pos == "learned" and cfg.activation == "gelu_tanh" and cfg.tie_embeddings
    model = GPT(cfg)
    model.load_state_dict(state)
    ids = np.random.default_rng(1).integers(0, 40, (2, 12))
    np.testing.assert_allclose(model(ids).numpy(), _gpt2_torch_logits(sd, 4, ids), atol=1e-4, rtol=1e-4)
    # an untied head, keys without the "transformer." prefix
    untied = {k.replace("transformer.", ""): v for k, v in sd.items()}
    untied["lm_head.weight"] = np.random.default_rng(2).normal(0, 0.3, (40, 16)).astype(np.float32)
    cfg2, state2 = convert_gpt2_state_dict(untied, num_heads=4)
    assert not cfg2.tie_embeddings
    m2 = GPT(cfg2)
    m2.load_state_dict(state2)
    want = dict(sd, **{"lm_head.weight": untied["lm_head.weight"]})
    np.testing.assert_allclose(m2(ids).numpy(), _gpt2_torch_logits(want, 4, ids), atol=1e-4, rtol=1e-4)


def test_gpt2_converter_names_what_does_not_fit():
    sd = _gpt2_weights(np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown key 'transformer.h.0.attn.q_proj.weight'"):
        convert_gpt2_state_dict(dict(sd, **{"transformer.h.0.attn.q_proj.weight": np.zeros((16, 16))}), 4)
    short = dict(sd)
    del short["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match="h.1.mlp.c_fc.bias"):
        convert_gpt2_state_dict(short, 4)
    with pytest.raises(ValueError, match="c_proj.weight' has shape"):
        convert_gpt2_state_dict(dict(sd, **{"transformer.h.0.attn.c_proj.weight": np.zeros((16, 15))}), 4)
    with pytest.raises(ValueError, match="wte.weight"):
        convert_gpt2_state_dict({"foo": np.zeros(3)}, 4)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        convert_gpt2_state_dict(sd, 5)


# ------------------------------------------------------------------ the captions job
def test_train_captions_lowers_the_loss_and_writes_real_captions(capsys):
    run = train_captions(steps=100, num_samples=16, seed=0, progress=False, train=dict(eval_every=50))
    losses = run.history["loss"]
    assert losses[-1] < 0.4 * losses[0]
    # 80 distinct digit captions; after 100 steps most samples are exactly one of them (0.875 measured)
    assert len(run.samples) == 16 and run.valid_fraction >= 0.5
    assert run.valid_fraction == sum(s in set(run.train_texts) for s in run.samples) / 16
    assert len(set(run.train_texts)) == 80 and set(run.heldout_texts) <= set(run.train_texts)
    # held out: near the perplexity of a uniform choice among the captions (2.7), far from the vocabulary's
    assert run.heldout_perplexity < 3.5 < run.tokenizer.vocab_size
    out = capsys.readouterr().out
    assert "exactly a training text" in out and all(f"  {s}\n" in out for s in run.samples)
    with pytest.raises(ValueError, match="caption sets"):
        train_captions(sets=("letters",))
    with pytest.raises(ValueError, match="resume"):
        train_captions(resume=True)
    with pytest.raises(ValueError, match="top_p"):  # before any training
        train_captions(top_p=1.5, steps=10 ** 6)


def test_caption_texts_of_both_sets():
    digits = caption_texts("digits", "train")
    both = caption_texts("digits,shapes", "train", shapes_n=12)
    assert both[:len(digits)] == digits and 12 * 3 <= len(both) - len(digits) <= 12 * 5
    shapes = both[len(digits):]
    # the train split never names a held-out colour-shape pair
    for colour, shape in captioned.SHAPES_HELD_OUT:
        assert not any(f"{colour} {shape}" in t for t in shapes)
    assert len(caption_texts("digits", "test")) == 8 * (1797 - 1438)
    with pytest.raises(ValueError, match="split"):
        caption_texts("digits", "val")
    with pytest.raises(ValueError, match="each once"):
        caption_texts(("digits", "digits"))


def test_perplexity_of_texts_uses_the_tokenizer(tok):
    model = _model(tok, seed=4)
    texts = ["the digit 7", "a handwritten seven", "seven"]
    ids, mask = tok.encode_batch(texts, add_bos=True, add_eos=True)
    want = model.perplexity({"input_ids": ids, "attention_mask": mask})
    assert model.perplexity(texts) == pytest.approx(want, rel=1e-6)
    assert model.perplexity(ids, attention_mask=mask, batch_size=1) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="not with texts"):
        model.perplexity(texts, attention_mask=mask)
    with pytest.raises(ValueError, match="batch_size"):
        model.perplexity(ids, batch_size=0)


def test_train_captions_on_texts_of_ones_own():
    texts = [f"{c} {s}" for c in ("red", "green", "blue", "white") for s in ("circle", "square", "star")] * 4
    run = train_captions(texts=texts, steps=30, num_samples=4, progress=False, verbose=False, dim=32)
    assert len(run.heldout_texts) == 4 and len(run.train_texts) == 44
    assert run.history["loss"][-1] < run.history["loss"][0] and len(run.samples) == 4


def test_cli_trains_a_gpt_and_generates(tmp_path, capsys):
    out = tmp_path / "lm"
    args = ["train", "--model", "gpt", "--steps", "20", "--out", str(out), "--quiet", "--dim", "32",
            "--samples", "4", "--seed", "1"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    for f in ("config.json", "model.safetensors", "tokenizer.json", "history.csv", "loss_curves.png",
              "samples.txt", "caption_run.json"):
        assert (out / f).is_file(), f
    samples = (out / "samples.txt").read_text().splitlines()
    assert len(samples) == 4 and all(f"  {s}\n" in printed for s in samples)
    meta = json.loads((out / "caption_run.json").read_text())
    assert meta["step"] == 20 and meta["sets"] == ["digits"]
    model = GPT.from_pretrained(out)
    assert model.config.dim == 32 and model.tokenizer is not None
    # the CLI's samples are the library's: same seed, same texts
    assert model.generate_text(num_samples=4, seed=1) == samples

    assert cli.main(["generate", "--model", str(out), "--num-samples", "3", "--seed", "2",
                     "--prompt", "the digit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == model.generate_text(prompts=["the digit"], num_samples=3, seed=2)
    assert cli.main(["generate", "--model", str(out), "--num-samples", "2", "--greedy", "--top-k", "2"]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 2 and greedy[0] == greedy[1]

    # the folder holds a run now: refused unless resumed or overwritten; --resume goes on to more steps
    assert cli.main(args) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(args[:4] + ["30"] + args[5:] + ["--resume"]) == 0
    assert "resumed at step 20" in capsys.readouterr().out
    assert json.loads((out / "caption_run.json").read_text())["step"] == 30

    # a text file of one's own, and a --config
    (tmp_path / "texts.txt").write_text("".join(f"a {c} {s}\n" for c in ("red", "blue") for s in ("cat", "dog")) * 3)
    (tmp_path / "cfg.json").write_text(json.dumps({"config": {"num_layers": 1, "pos": "learned"},
                                                   "train": {"lr": 0.01}}))
    assert cli.main(["train", "--model", "gpt", "--data", str(tmp_path / "texts.txt"), "--steps", "5", "--quiet",
                     "--out", str(tmp_path / "lm2"), "--config", str(tmp_path / "cfg.json"), "--samples", "2"]) == 0
    capsys.readouterr()
    m2 = GPT.from_pretrained(tmp_path / "lm2")
    assert m2.config.num_layers == 1 and m2.config.pos == "learned"


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "bert"], "unknown language model"),
    (["train", "--model", "gpt", "--data", "letters"], "caption sets"),
    (["train", "--model", "gpt", "--tensorboard"], "for tokenizers"),
    (["train", "--dim", "8", "--config", "cfg.json", "--data", "."], "go with --model gpt"),
    (["train", "--model", "gpt", "--resume"], "no checkpoint"),
    (["generate", "--model", "nowhere"], "no such folder"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv + (["--out", str(tmp_path / "o")] if argv[0] == "train" and "--model" in argv else [])) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_generate_refuses_a_tokenizer_folder(tmp_path, capsys):
    m = mmu.tokenizers.VQVAE(in_channels=1, resolution=8, hidden_channels=8, res_channels=4, num_res_blocks=0,
                             embed_dim=4, codebook_size=16)
    m.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    assert cli.main(["generate", "--model", str(tmp_path / "tok")]) == 1
    assert "not a subclass" in capsys.readouterr().err
