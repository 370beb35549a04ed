"""Show-o inference (mmu/models/show_o/inference.py) on a tiny random Phi-style TransformerLM with
QK-norm over a unified vocabulary: text ids, Show-o's 10 special tokens, a 16-code codebook and
[MASK] last.

The prefix-cache test is the proof that running the text prefix once is exact: at every MaskGIT
step the codebook logits of the cached path equal a recomputation of the whole sequence under
Show-o's published omni-attention mask (its create_attention_mask_predict_next, rewritten below
from its rule), numbered 0..S-1 over the padded sequence as Show-o's code does."""
import math

import numpy as np
import pytest

import mmu
import mmu.generate as G
from mmu.models.show_o import ShowO, ShowOConfig, t2i_prompt
from mmu.models.show_o import inference as I

# max_seq_len 40: room for the answers below (the longest prompt alone is 27 = max_text_len + 3 + 16)
CFG = ShowOConfig(llm_vocab_size=30, codebook_size=16, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=2,
                  num_heads=4, init_std=0.3, max_seq_len=40)
PAD, SOI, EOI = CFG.pad_token_id, CFG.special_token_id("<|soi|>"), CFG.special_token_id("<|eoi|>")
T2I, MMU = CFG.special_token_id("<|t2i|>"), CFG.special_token_id("<|mmu|>")
SOT, EOT = CFG.sot_token_id, CFG.eot_token_id
OFFSET, K, MASK, N = CFG.image_token_offset, CFG.codebook_size, CFG.mask_token_id, CFG.num_vq_tokens


@pytest.fixture(scope="module")
def model():
    mmu.manual_seed(0)
    m = ShowO(CFG)
    m.eval()
    return m


def showo_published_mask(seq, pad_id=PAD, soi_id=SOI, eoi_id=EOI):
    """Show-o's create_attention_mask_predict_next(..., rm_pad_in_image=True) as a bool (B, 1, S, S)."""
    b, s = seq.shape
    is_pad = seq == pad_id
    in_image = (np.cumsum(seq == soi_id, 1) > np.cumsum(seq == eoi_id, 1)) | (seq == soi_id) | (seq == eoi_id)
    causal = np.tril(np.ones((s, s), bool))
    mask_text = (~in_image)[:, :, None] & causal[None]
    bi = np.ones((b, s, s), bool)
    for i in range(b):
        pads = np.nonzero(is_pad[i])[0]
        if pads.size:
            mask_text[i, pads[-1] + 1:, :pads[-1] + 1] = False
        sid = np.nonzero(seq[i] == soi_id)[0][0]
        bi[i][sid:, pads] = False
    out = np.where(in_image[:, :, None], bi, mask_text)
    return out[:, None]


def full_recompute_logits(model, texts, codes):
    """Show-o's public path: the whole T2I sequence (t2i_prompt) with its published mask and positions
    0..S-1 through ShowO.forward, logits of every position over the whole vocabulary, then the image
    positions' codebook columns (Showo.t2i_generate's logits[:, -(N + 1):-1, offset:-1])."""
    image = np.where(codes == MASK, MASK, codes + OFFSET)
    seq = t2i_prompt(CFG, texts, image)[0]
    with mmu.no_grad():
        logits = model(mmu.tensor(seq), attn_mask=showo_published_mask(seq)).numpy()
    return logits[:, -(N + 1):-1, OFFSET:-1]


@pytest.fixture
def record(monkeypatch):
    """Every MaskGIT step of t2i_generate: (the ImageLogits, codes fed, logits returned)."""
    calls = []
    real = I.maskgit_decode

    def wrapped(logits_fn, **kwargs):
        def fn(codes):
            out = logits_fn(codes)
            calls.append((logits_fn, np.array(codes), np.array(out.numpy())))
            return out
        return real(fn, **kwargs)

    monkeypatch.setattr(I, "maskgit_decode", wrapped)
    return calls


def test_prefix_cache_logits_equal_full_recomputation_every_step(model, record):
    texts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    w = 1.5
    model.t2i_generate(texts, steps=6, guidance_scale=w, temperature=2.0, generator=mmu.Generator(3))
    assert len(record) == 6
    masked = [int((c == MASK).sum()) for _, c, _ in record]
    assert masked[0] == 2 * N and masked == sorted(masked, reverse=True) and masked[-1] > 0
    stepper = record[0][0]
    assert stepper.use_cache and stepper.rows == 4 and stepper.prefix_len == CFG.max_text_len + 1
    assert stepper.masked_only  # t2i_generate computes the logits of the positions still [MASK] only
    every = I.ImageLogits(model, I.t2i_prefix(CFG, texts), guidance_scale=w)  # cached, every position
    recompute = I.ImageLogits(model, I.t2i_prefix(CFG, texts), guidance_scale=w, use_cache=False)
    worst, skipped = 0.0, 0
    for _, codes, guided in record:
        cond_uncond = every.cond_uncond(codes).numpy()  # the cached path, unguided
        c = full_recompute_logits(model, texts, codes)
        u = full_recompute_logits(model, [[]] * 2, codes)
        np.testing.assert_allclose(cond_uncond, np.concatenate([c, u]), rtol=0, atol=1e-5)
        np.testing.assert_allclose(every(codes).numpy(), (1 + w) * c - w * u, rtol=0, atol=1e-4)
        np.testing.assert_allclose(recompute(codes).numpy(), every(codes).numpy(), rtol=0, atol=1e-5)
        # what MaskGIT got: the same numbers where some row is still [MASK], zeros where every row knows
        wanted = (codes == MASK).any(0)
        skipped += int((~wanted).sum())
        np.testing.assert_allclose(guided[:, wanted], (1 + w) * c[:, wanted] - w * u[:, wanted], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(guided[:, ~wanted], 0.0)
        worst = max(worst, float(np.abs(cond_uncond - np.concatenate([c, u])).max()))
    assert skipped > 0  # some steps had positions known in both rows
    assert stepper.cache.length == stepper.prefix_len and every.cache.length == every.prefix_len  # cropped back
    print(f"max |cached - recomputed| over 6 steps: {worst:.2e}")


def test_cfg_combination_is_showo_formula(model):
    texts = [[5, 6, 7], [8]]
    rng = np.random.default_rng(1)
    codes = rng.integers(0, K, (2, N))
    codes[:, ::3] = MASK
    prefix = I.t2i_prefix(CFG, texts)
    c = I.ImageLogits(model, prefix)(codes).numpy()
    u = I.ImageLogits(model, I.t2i_prefix(CFG, [[]] * 2))(codes).numpy()
    for w in (0.5, 5.0):
        guided = I.ImageLogits(model, prefix, guidance_scale=w)(codes).numpy()
        np.testing.assert_allclose(guided, (1 + w) * c - w * u, rtol=1e-5, atol=1e-5)
        assert np.abs(guided - c).max() > 0.1  # the guidance changes the logits
    assert c.shape == (2, N, K)
    # an explicit unconditional prompt replaces the empty one
    other = I.ImageLogits(model, prefix, guidance_scale=2.0, uncond_ids=I.t2i_prefix(CFG, [[9], [9]]))(codes)
    u9 = I.ImageLogits(model, I.t2i_prefix(CFG, [[9], [9]]))(codes).numpy()
    np.testing.assert_allclose(other.numpy(), 3 * c - 2 * u9, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_image_block_own_layers_equal_the_lm_forward(num_layers):
    """ImageLogits' own walk through the layers (the first layer once per distinct token, the last
    layer's out_proj/MLP only where logits are wanted) gives lm(block, cache=...)'s numbers; with
    masked_only the positions known in every row get zeros, and t2i_generate samples the same codes
    as the whole-sequence recomputation."""
    cfg = ShowOConfig(llm_vocab_size=30, codebook_size=16, num_vq_tokens=16, max_text_len=8, dim=32,
                      num_layers=num_layers, num_heads=4, init_std=0.3)
    mmu.manual_seed(1)
    m = ShowO(cfg)
    m.eval()
    rng = np.random.default_rng(5)
    prefix = I.t2i_prefix(cfg, [[5, 6, 7], [8]])
    codes = np.full((2, N), MASK, np.int64)
    codes[:, :6] = rng.integers(0, K, (2, 6))  # known in both rows
    codes[0, 6:9] = [1, 2, 1]  # known in one row only: still wanted
    codes[1, 9] = 3
    reference = I.ImageLogits(m, prefix, guidance_scale=2.0)
    reference._own_layers = False  # lm(block, cache=...) and the head over every position
    ref = reference(codes).numpy()
    for masked_only in (False, True):
        ours = I.ImageLogits(m, prefix, guidance_scale=2.0, masked_only=masked_only)
        assert ours._own_layers
        got = ours(codes).numpy()
        wanted = np.arange(N) >= 6
        np.testing.assert_allclose(got[:, wanted], ref[:, wanted], rtol=0, atol=1e-5)
        if masked_only:
            np.testing.assert_array_equal(got[:, ~wanted], 0.0)
        else:
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
        assert ours.cache.length == ours.prefix_len
    a = m.t2i_generate([[5, 6, 7], [8]], steps=4, guidance_scale=2.0, generator=mmu.Generator(2)).numpy()
    b = m.t2i_generate([[5, 6, 7], [8]], steps=4, guidance_scale=2.0, generator=mmu.Generator(2),
                       use_cache=False).numpy()
    np.testing.assert_array_equal(a, b)


def test_seeded_determinism(model):
    texts = [[5, 6, 7], [9, 10]]

    def run(seed):
        return model.t2i_generate(texts, steps=5, guidance_scale=2.0, generator=mmu.Generator(seed)).numpy()

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int64 and a.shape == (2, N) and a.min() >= 0 and a.max() < K
    mmu.manual_seed(11)
    g1 = model.t2i_generate(texts, steps=5).numpy()
    mmu.manual_seed(11)
    g2 = model.t2i_generate(texts, steps=5).numpy()
    np.testing.assert_array_equal(g1, g2)
    # the recomputing path draws the same samples from the same logits
    np.testing.assert_array_equal(model.t2i_generate(texts, steps=5, guidance_scale=2.0, use_cache=False,
                                                     generator=mmu.Generator(7)).numpy(), a)


@pytest.mark.parametrize("schedule, steps", [("cosine", 6), ("linear", 4), ("cosine", 9)])
def test_masked_counts_follow_the_schedule(model, record, schedule, steps):
    model.t2i_generate([[5, 6], [7, 8, 9, 10, 11]], steps=steps, schedule=schedule, generator=mmu.Generator(0))
    counts = np.array([(c == MASK).sum(1) for _, c, _ in record])  # (steps, B)
    expect = [N]
    for k in range(1, steps):
        r = k / steps
        ratio = math.cos(math.pi / 2 * r) if schedule == "cosine" else 1 - r
        expect.append(max(1, min(expect[-1] - 1, math.floor(N * ratio))))
    np.testing.assert_array_equal(counts, np.array(expect)[:, None].repeat(2, 1))


def _numpy_reference_decode(logits, steps, t0, decay, seed):
    """Show-o's loop (Showo.t2i_generate + mask_by_random_topk) in NumPy for fixed logits (B, N, V),
    drawing the samples and the Gumbel uniforms from the same mmu.Generator stream in the same order."""
    g = mmu.Generator(seed)
    b, n, v = logits.shape
    tokens = np.full((b, n), MASK)
    history = []
    temperature = t0
    for step in range(steps):
        history.append(tokens.copy())
        ids, logp = G.sample_logits(logits.reshape(b * n, v), generator=g)
        unknown = tokens == MASK
        sampled = np.where(unknown, ids.numpy().reshape(b, n), tokens)
        if step == steps - 1:
            return sampled, history
        ratio = (step + 1) / steps
        mask_len = np.floor(n * math.cos(math.pi / 2 * ratio))
        mask_len = np.maximum(1, np.minimum(unknown.sum(1) - 1, mask_len)).astype(int)
        if decay == "compounding":
            temperature = temperature * (1.0 - ratio)  # Show-o: t <- t (1 - r), every step
        else:
            temperature = t0 * (1.0 - ratio)  # MaskGIT
        u = mmu.rand(b, n, generator=g).numpy().astype(np.float64) + 2.0 ** -25
        confidence = logp.numpy().reshape(b, n) + temperature * -np.log(-np.log(u))
        confidence = np.where(unknown, confidence, np.finfo(np.float64).max)
        cut_off = np.sort(confidence, 1)[np.arange(b), mask_len]
        tokens = np.where(confidence < cut_off[:, None], MASK, sampled)


@pytest.mark.parametrize("decay", ["compounding", "linear"])
def test_temperature_conventions_match_numpy_reference(decay):
    rng = np.random.default_rng(2)
    logits = (1.5 * rng.standard_normal((3, 12, 7))).astype(np.float32)
    seen = []

    def fn(tokens):
        seen.append(np.array(tokens))
        return logits

    steps, t0 = 7, 3.0
    out = G.maskgit_decode(fn, num_tokens=12, mask_id=MASK, steps=steps, batch_size=3, choice_temperature=t0,
                           choice_temperature_decay=decay, generator=mmu.Generator(4)).numpy()
    ref, history = _numpy_reference_decode(logits, steps, t0, decay, seed=4)
    np.testing.assert_array_equal(out, ref)
    for mine, theirs in zip(seen, history):
        np.testing.assert_array_equal(mine, theirs)
    # the two conventions choose differently: the other rule does not reproduce this one's masks
    other = "linear" if decay == "compounding" else "compounding"
    _, other_history = _numpy_reference_decode(logits, steps, t0, other, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(history, other_history))


def test_inpainting_keeps_given_tokens(model, record):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, K, (2, 4, 4))
    known = rng.random((2, 4, 4)) < 0.5
    known[0, 0, 0], known[1, 3, 3] = False, False
    out = model.inpaint([[5, 6, 7], [8, 9]], codes, known, steps=4, generator=mmu.Generator(1)).numpy()
    assert out.shape == (2, 4, 4) and out.min() >= 0 and out.max() < K
    np.testing.assert_array_equal(out[known], codes[known])
    first = record[0][1].reshape(2, 4, 4)
    np.testing.assert_array_equal(first == MASK, ~known)  # the first step sees the given codes, the rest masked
    np.testing.assert_array_equal(first[known], codes[known])
    # the masked count starts from the unknown positions (MaskGIT's N0), not from all N tokens
    unknown = (~known).reshape(2, -1).sum(1)
    np.testing.assert_array_equal((record[1][1] == MASK).sum(1),
                                  np.maximum(1, np.minimum(unknown - 1, np.floor(unknown * math.cos(math.pi / 8)))))
    # everything given: returned unchanged, no step run
    n_steps = len(record)
    np.testing.assert_array_equal(model.inpaint([[5], [6]], codes, np.ones_like(known)).numpy(), codes)
    assert len(record) == n_steps


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_extrapolation_extends_the_canvas(model, record, direction):
    codes = (np.arange(16).reshape(1, 4, 4) * 3) % K
    out = model.extrapolate([[5, 6, 7]], codes, direction, 3, steps=3, generator=mmu.Generator(2)).numpy()
    window = record[0][1].reshape(1, 4, 4)
    if direction == "left":
        assert out.shape == (1, 4, 7)
        np.testing.assert_array_equal(out[:, :, 3:], codes)
        assert (window[:, :, :3] == MASK).all()
        np.testing.assert_array_equal(window[:, :, 3:], codes[:, :, :1])
        np.testing.assert_array_equal(out[:, :, 3:4], codes[:, :, :1])
    elif direction == "right":
        assert out.shape == (1, 4, 7)
        np.testing.assert_array_equal(out[:, :, :4], codes)
        assert (window[:, :, 1:] == MASK).all()
        np.testing.assert_array_equal(window[:, :, :1], codes[:, :, 3:])
    elif direction == "up":
        assert out.shape == (1, 7, 4)
        np.testing.assert_array_equal(out[:, 3:], codes)
        assert (window[:, :3] == MASK).all()
        np.testing.assert_array_equal(window[:, 3:], codes[:, :1])
    else:
        assert out.shape == (1, 7, 4)
        np.testing.assert_array_equal(out[:, :4], codes)
        assert (window[:, 1:] == MASK).all()
        np.testing.assert_array_equal(window[:, :1], codes[:, 3:])
    assert out.min() >= 0 and out.max() < K


def test_t2i_batch_of_different_prompt_lengths_equals_one_at_a_time(model):
    texts = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]]
    rng = np.random.default_rng(5)
    codes = rng.integers(0, K, (3, N))
    codes[:, 1::2] = MASK
    batch = I.ImageLogits(model, I.t2i_prefix(CFG, texts), guidance_scale=3.0)(codes).numpy()
    kw = dict(steps=5, temperature=0.0, top_k=1, guidance_scale=3.0)
    together = model.t2i_generate(texts, **kw).numpy()
    for r, t in enumerate(texts):
        alone = I.ImageLogits(model, I.t2i_prefix(CFG, [t]), guidance_scale=3.0)(codes[r:r + 1]).numpy()
        np.testing.assert_allclose(batch[r:r + 1], alone, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(together[r:r + 1], model.t2i_generate([t], **kw).numpy())


def _mmu_reference(model, codes, question, max_new_tokens, eos, attention):
    """Greedy answer recomputing the whole sequence every step, one row alone, Show-o's MMU layout and
    mask built here: 'mmu' = create_attention_mask_for_mmu (causal, every row sees up to [EOI]);
    'omni' = the image block [SOI]..[EOI] bidirectional, text causal."""
    seq = [MMU, SOI] + [c + OFFSET for c in codes] + [EOI, SOT] + list(question)
    out = []
    for _ in range(max_new_tokens):
        s = len(seq)
        allowed = np.tril(np.ones((s, s), bool))
        if attention == "mmu":
            allowed[:, :N + 3] = True
        else:
            allowed[1:N + 3, 1:N + 3] = True
        with mmu.no_grad():
            logits = model.lm(mmu.tensor(np.array([seq], np.int64)), attn_mask=mmu.tensor(allowed[None, None])).numpy()
        tok = int(np.argmax(logits[0, -1]))
        out.append(tok)
        if tok == eos:
            break
        seq.append(tok)
    return out


@pytest.mark.parametrize("attention", ["mmu", "omni"])
def test_mmu_generate_equals_recomputation_greedy_and_batches(model, attention):
    rng = np.random.default_rng(6)
    codes = rng.integers(0, K, (3, N))
    questions = [[5, 6, 7, 8], [9], [10, 11, 3]]
    n = 8
    answers = model.mmu_generate(questions, codes=codes, max_new_tokens=n, attention=attention,
                                 eos_token_id=[]).numpy()
    assert answers.shape == (3, n)
    for r in range(3):
        ref = _mmu_reference(model, codes[r], questions[r], n, None, attention)
        np.testing.assert_array_equal(answers[r], ref)
        alone = model.mmu_generate([questions[r]], codes=codes[r:r + 1].reshape(1, 4, 4), max_new_tokens=n,
                                   attention=attention, eos_token_id=[]).numpy()
        np.testing.assert_array_equal(alone[0], ref)
    # a stop token: the row ends there, later positions are [PAD]
    eos = int(answers[0, 2])
    stopped = model.mmu_generate(questions, codes=codes, max_new_tokens=n, attention=attention,
                                 eos_token_id=eos).numpy()
    ref0 = _mmu_reference(model, codes[0], questions[0], n, eos, attention)
    np.testing.assert_array_equal(stopped[0, :len(ref0)], ref0)
    assert (stopped[0, len(ref0):] == PAD).all()


def test_mmu_generate_from_images(model):
    rng = np.random.default_rng(7)
    images = rng.uniform(-1, 1, (2, 1, 16, 16)).astype(np.float32)
    codes = model.tokenize_images(images)
    a = model.mmu_generate([[5], [6, 7]], images=images, max_new_tokens=3).numpy()
    b = model.mmu_generate([[5], [6, 7]], codes=codes, max_new_tokens=3).numpy()
    np.testing.assert_array_equal(a, b)


def test_mmu_generate_refuses_an_answer_past_max_seq_len(model):
    """The answer runs on model.lm (not ShowO.forward, which refuses positions past config.max_seq_len):
    the prompt and max_new_tokens must fit, checked before anything runs; exactly fitting is allowed."""
    codes = np.zeros((2, N), np.int64)
    width = 2 + N + 1 + 1 + 4  # [MMU][SOI] image [EOI] [SOT] + the longest question (4 ids)
    ok = model.mmu_generate([[5, 6, 7, 8], [9]], codes=codes, max_new_tokens=CFG.max_seq_len - width,
                            eos_token_id=[]).numpy()
    assert ok.shape == (2, CFG.max_seq_len - width)
    with pytest.raises(ValueError, match=rf"mmu_generate: the longest prompt \({width} tokens.*max_new_tokens "
                                         rf"{CFG.max_seq_len - width + 1} need {CFG.max_seq_len + 1} positions, more "
                                         rf"than config.max_seq_len {CFG.max_seq_len}"):
        model.mmu_generate([[5, 6, 7, 8], [9]], codes=codes, max_new_tokens=CFG.max_seq_len - width + 1)


def test_logits_only_where_needed(model, monkeypatch):
    """T2I steps never run the model's head (only the codebook rows at the N image positions);
    answering computes the head at one position per row per step."""
    shapes = []
    head = model.lm.lm_head.forward

    def spy(x):
        shapes.append(tuple(x.shape))
        return head(x)

    monkeypatch.setattr(model.lm.lm_head, "forward", spy)
    model.t2i_generate([[5, 6], [7]], steps=3, guidance_scale=1.0, generator=mmu.Generator(0))
    assert shapes == []
    model.mmu_generate([[5, 6], [7, 8]], codes=np.zeros((2, N), np.int64), max_new_tokens=4, eos_token_id=[])
    assert len(shapes) == 4 and all(s == (2, CFG.dim) for s in shapes)


def test_errors(model):
    with pytest.raises(TypeError, match="ImageLogits: model must be"):
        I.ImageLogits(object(), np.array([[T2I, SOT, EOT]]))
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        model.t2i_generate([[5]], guidance_scale=-1.0)
    with pytest.raises(ValueError, match="used only with guidance_scale"):
        I.ImageLogits(model, np.array([[T2I, SOT, EOT]]), uncond_ids=np.array([[T2I, SOT, EOT]]))
    with pytest.raises(ValueError, match=r"must not hold <\|soi\|>"):
        I.ImageLogits(model, np.array([[T2I, SOI, EOT]]))
    with pytest.raises(ValueError, match="left padded"):
        I.ImageLogits(model, np.array([[T2I, SOT, EOT, PAD]]))
    with pytest.raises(ValueError, match="known codes must be in"):
        model.inpaint([[5]], np.full((1, N), K), np.ones((1, N), bool))
    with pytest.raises(ValueError, match="codes and known must have one shape"):
        model.inpaint([[5]], np.zeros((1, N + 1), np.int64), np.zeros((1, N + 1), bool))
    with pytest.raises(TypeError, match="known must be a bool"):
        model.inpaint([[5]], np.zeros((1, N), np.int64), np.zeros((1, N)))
    with pytest.raises(ValueError, match="temperature_decay must be"):
        model.t2i_generate([[5]], temperature_decay="cosine")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.t2i_generate([[5]], steps=0)
    with pytest.raises(TypeError, match="must be a list of texts"):
        model.t2i_generate("a prompt")
    with pytest.raises(ValueError, match="no text_tokenizer"):
        model.t2i_generate(["a prompt"])
    with pytest.raises(ValueError, match="outside the text ids"):
        model.t2i_generate([[CFG.llm_vocab_size]])
    with pytest.raises(ValueError, match="direction must be one of"):
        model.extrapolate([[5]], np.zeros((1, 4, 4), np.int64), "diagonal", 1)
    with pytest.raises(ValueError, match=r"amount must be in \[1, 4\)"):
        model.extrapolate([[5]], np.zeros((1, 4, 4), np.int64), "left", 4)
    with pytest.raises(ValueError, match="h·w = num_vq_tokens"):
        model.extrapolate([[5]], np.zeros((1, 3, 3), np.int64), "left", 1)
    with pytest.raises(ValueError, match="mmu_generate: codes must be in"):
        model.mmu_generate([[5]], codes=np.full((1, N), K))
    with pytest.raises(ValueError, match="one question per image"):
        model.mmu_generate([[5]], codes=np.zeros((2, N), np.int64))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        model.mmu_generate([[5]], codes=np.zeros((1, N), np.int64), max_new_tokens=0)
    with pytest.raises(ValueError, match="attention must be"):
        model.mmu_generate([[5]], codes=np.zeros((1, N), np.int64), attention="causal")
    with pytest.raises(ValueError, match="give images or codes"):
        model.mmu_generate([[5]])
    with pytest.raises(ValueError, match="choice_temperature_decay must be"):
        G.maskgit_decode(lambda t: np.zeros((1, 4, 3), np.float32), num_tokens=4, mask_id=9,
                         choice_temperature_decay="fast")
    with pytest.raises(ValueError, match="prefill_attn_mask must be bool"):
        G.generate(model.lm, np.array([[5, 6]]), max_new_tokens=1, prefill_attn_mask=np.ones((1, 1, 2, 3), bool))
    with pytest.raises(ValueError, match="cannot be combined with guidance_scale"):
        G.generate(model.lm, np.array([[5, 6]]), max_new_tokens=1, guidance_scale=2.0,
                   uncond_input_ids=np.array([[5, 6]]), prefill_attn_mask=np.ones((1, 1, 2, 2), bool))


def test_prompts_as_text_use_the_models_text_tokenizer(model):
    pytest.importorskip("tokenizers")
    tok = mmu.text.TextTokenizer.train_word_level(["a red circle", "what digit is this ?"])
    model.text_tokenizer = tok
    try:
        ids = [tok.encode("a red circle").tolist(), tok.encode("what digit").tolist()]
        a = model.t2i_generate(["a red circle", "what digit"], steps=3, guidance_scale=1.0,
                               generator=mmu.Generator(5)).numpy()
        b = model.t2i_generate(ids, steps=3, guidance_scale=1.0, generator=mmu.Generator(5)).numpy()
        np.testing.assert_array_equal(a, b)
        codes = np.zeros((1, N), np.int64)
        question = "what digit is this ?"
        np.testing.assert_array_equal(model.mmu_generate([question], codes=codes, max_new_tokens=3).numpy(),
                                      model.mmu_generate([tok.encode(question).tolist()], codes=codes,
                                                         max_new_tokens=3).numpy())
    finally:
        model.text_tokenizer = None
