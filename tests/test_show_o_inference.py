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
from mmu.nn import TransformerLM
from mmu.models.show_o import inference as I

TEXT = 30  # text ids 0..29 (1 = [SOT], 2 = [EOT], as Phi's bos/eos)
SOI, EOI, SOV, EOV, T2I, MMU, T2V, V2V, LVG, PAD = range(TEXT, TEXT + 10)
SOT, EOT = 1, 2
OFFSET, K = TEXT + 10, 16
MASK = OFFSET + K
VOCAB = MASK + 1
N = 9  # image tokens (3 x 3)
IDS = dict(soi_id=SOI, eoi_id=EOI, mask_id=MASK, code_offset=OFFSET, codebook_size=K)


@pytest.fixture(scope="module")
def lm():
    mmu.manual_seed(0)
    m = TransformerLM(VOCAB, 32, 2, 4, residual="parallel", qk_norm="layernorm", rotary_fraction=0.5,
                      activation="gelu_tanh", init_std=0.3)
    m.eval()
    return m


def t2i_prompts(texts):
    """[T2I][SOT] text [EOT] per row, left padded with [PAD] -> (ids, mask)."""
    rows = [[T2I, SOT] + list(t) + [EOT] for t in texts]
    width = max(map(len, rows))
    ids = np.full((len(rows), width), PAD, np.int64)
    mask = np.zeros((len(rows), width), bool)
    for r, row in enumerate(rows):
        ids[r, width - len(row):], mask[r, width - len(row):] = row, True
    return ids, mask


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


def full_recompute_logits(lm, prefix_ids, codes):
    """Show-o's public path: the whole sequence [prefix][SOI] image [EOI] with its published mask and
    positions 0..S-1, logits of every position over the whole vocabulary, then the image positions'
    codebook columns (its logits[:, -(N + 1):-1, offset:-1])."""
    b = prefix_ids.shape[0]
    image = np.where(codes == MASK, MASK, codes + OFFSET)
    seq = np.concatenate([prefix_ids, np.full((b, 1), SOI), image, np.full((b, 1), EOI)], 1).astype(np.int64)
    pos = np.tile(np.arange(seq.shape[1]), (b, 1))
    with mmu.no_grad():
        logits = lm(mmu.tensor(seq), position_ids=mmu.tensor(pos),
                    attn_mask=mmu.tensor(showo_published_mask(seq))).numpy()
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


def test_prefix_cache_logits_equal_full_recomputation_every_step(lm, record):
    ids, mask = t2i_prompts([[5, 6, 7, 8, 9, 10], [11, 12]])
    uids, umask = t2i_prompts([[]] * 2)
    w = 1.5
    I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=6, guidance_scale=w, uncond_ids=uids, uncond_mask=umask,
                   temperature=2.0, generator=mmu.Generator(3), **IDS)
    assert len(record) == 6
    masked = [int((c == MASK).sum()) for _, c, _ in record]
    assert masked[0] == 2 * N and masked == sorted(masked, reverse=True) and masked[-1] > 0
    stepper = record[0][0]
    assert stepper.use_cache and stepper.cache.length == stepper.prefix_len
    # the unconditional prompts padded to the prompts' width, as Show-o pads both to max_text_len
    upad = np.concatenate([np.full((2, ids.shape[1] - uids.shape[1]), PAD), uids], 1)
    recompute = I.ImageLogits(lm, ids, mask, num_image_tokens=N, guidance_scale=w, uncond_ids=uids,
                              uncond_mask=umask, use_cache=False, **IDS)
    worst = 0.0
    for _, codes, guided in record:
        cond_uncond = stepper.cond_uncond(codes)  # the cached path again, unguided
        c = full_recompute_logits(lm, ids, codes)
        u = full_recompute_logits(lm, upad, codes)
        np.testing.assert_allclose(cond_uncond.numpy(), np.concatenate([c, u]), rtol=0, atol=1e-5)
        np.testing.assert_allclose(guided, (1 + w) * c - w * u, rtol=0, atol=1e-4)
        np.testing.assert_allclose(recompute(codes).numpy(), guided, rtol=0, atol=1e-5)
        worst = max(worst, float(np.abs(cond_uncond.numpy() - np.concatenate([c, u])).max()))
    assert stepper.cache.length == stepper.prefix_len  # cropped back after every step
    print(f"max |cached - recomputed| over 6 steps: {worst:.2e}")


def test_cfg_combination_is_showo_formula(lm):
    ids, mask = t2i_prompts([[5, 6, 7], [8]])
    uids, umask = t2i_prompts([[]] * 2)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, K, (2, N))
    codes[:, ::3] = MASK
    c = I.ImageLogits(lm, ids, mask, num_image_tokens=N, **IDS)(codes).numpy()
    u = I.ImageLogits(lm, uids, umask, num_image_tokens=N, **IDS)(codes).numpy()
    for w in (0.5, 5.0):
        guided = I.ImageLogits(lm, ids, mask, num_image_tokens=N, guidance_scale=w, uncond_ids=uids,
                               uncond_mask=umask, **IDS)(codes).numpy()
        np.testing.assert_allclose(guided, (1 + w) * c - w * u, rtol=1e-5, atol=1e-5)
        assert np.abs(guided - c).max() > 0.1  # the guidance changes the logits
    assert c.shape == (2, N, K)


def test_seeded_determinism(lm):
    ids, mask = t2i_prompts([[5, 6, 7], [9, 10]])
    uids, umask = t2i_prompts([[]] * 2)

    def run(seed):
        return I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=5, guidance_scale=2.0, uncond_ids=uids,
                              uncond_mask=umask, generator=mmu.Generator(seed), **IDS).numpy()

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int64 and a.shape == (2, N) and a.min() >= 0 and a.max() < K
    mmu.manual_seed(11)
    g1 = I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=5, **IDS).numpy()
    mmu.manual_seed(11)
    g2 = I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=5, **IDS).numpy()
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("schedule, steps", [("cosine", 6), ("linear", 4), ("cosine", 9)])
def test_masked_counts_follow_the_schedule(lm, record, schedule, steps):
    ids, mask = t2i_prompts([[5, 6], [7, 8, 9, 10, 11]])
    I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=steps, schedule=schedule,
                   generator=mmu.Generator(0), **IDS)
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


def test_inpainting_keeps_given_tokens(lm, record):
    ids, mask = t2i_prompts([[5, 6, 7], [8, 9]])
    rng = np.random.default_rng(3)
    codes = rng.integers(0, K, (2, 3, 3))
    keep = rng.random((2, 3, 3)) < 0.5
    keep[0, 0, 0], keep[1, 2, 2] = False, False
    out = I.inpaint(lm, ids, mask, codes=codes, keep=keep, steps=4, generator=mmu.Generator(1), **IDS).numpy()
    assert out.shape == (2, 3, 3) and out.min() >= 0 and out.max() < K
    np.testing.assert_array_equal(out[keep], codes[keep])
    first = record[0][1].reshape(2, 3, 3)
    np.testing.assert_array_equal(first == MASK, ~keep)  # the first step sees the given codes, the rest masked
    # the masked count starts from the unknown positions (MaskGIT's N0), not from all N tokens
    unknown = (~keep).reshape(2, -1).sum(1)
    np.testing.assert_array_equal((record[1][1] == MASK).sum(1),
                                  np.maximum(1, np.minimum(unknown - 1, np.floor(unknown * math.cos(math.pi / 8)))))
    # everything given: returned unchanged, no step run
    n_steps = len(record)
    same = I.inpaint(lm, ids, mask, codes=codes, keep=np.ones_like(keep), **IDS).numpy()
    np.testing.assert_array_equal(same, codes)
    assert len(record) == n_steps


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_extrapolation_extends_the_canvas(lm, record, direction):
    ids, mask = t2i_prompts([[5, 6, 7]])
    codes = np.arange(9).reshape(1, 3, 3) % K
    out = I.extrapolate(lm, ids, mask, codes=codes, direction=direction, amount=2, steps=3,
                        generator=mmu.Generator(2), **IDS).numpy()
    window = record[0][1].reshape(1, 3, 3)
    if direction == "left":
        assert out.shape == (1, 3, 5)
        np.testing.assert_array_equal(out[:, :, 2:], codes)
        assert (window[:, :, :2] == MASK).all()
        np.testing.assert_array_equal(window[:, :, 2:], codes[:, :, :1])
    elif direction == "right":
        assert out.shape == (1, 3, 5)
        np.testing.assert_array_equal(out[:, :, :3], codes)
        assert (window[:, :, 1:] == MASK).all()
        np.testing.assert_array_equal(window[:, :, :1], codes[:, :, 2:])
    elif direction == "up":
        assert out.shape == (1, 5, 3)
        np.testing.assert_array_equal(out[:, 2:], codes)
        assert (window[:, :2] == MASK).all()
        np.testing.assert_array_equal(window[:, 2:], codes[:, :1])
    else:
        assert out.shape == (1, 5, 3)
        np.testing.assert_array_equal(out[:, :3], codes)
        assert (window[:, 1:] == MASK).all()
        np.testing.assert_array_equal(window[:, :1], codes[:, 2:])
    assert out.min() >= 0 and out.max() < K


def test_t2i_batch_of_different_prompt_lengths_equals_one_at_a_time(lm):
    texts = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]]
    ids, mask = t2i_prompts(texts)
    uids, umask = t2i_prompts([[]] * 3)
    rng = np.random.default_rng(5)
    codes = rng.integers(0, K, (3, N))
    codes[:, 1::2] = MASK
    batch = I.ImageLogits(lm, ids, mask, num_image_tokens=N, guidance_scale=3.0, uncond_ids=uids,
                          uncond_mask=umask, **IDS)(codes).numpy()
    kw = dict(num_image_tokens=N, steps=5, temperature=0.0, top_k=1, **IDS)
    together = I.t2i_generate(lm, ids, mask, **kw).numpy()
    for r, t in enumerate(texts):
        i1, m1 = t2i_prompts([t])
        u1, um1 = t2i_prompts([[]])
        alone = I.ImageLogits(lm, i1, m1, num_image_tokens=N, guidance_scale=3.0, uncond_ids=u1, uncond_mask=um1,
                              **IDS)(codes[r:r + 1]).numpy()
        np.testing.assert_allclose(batch[r:r + 1], alone, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(together[r:r + 1], I.t2i_generate(lm, i1, m1, **kw).numpy())


def _mmu_reference(lm, codes, question, max_new_tokens, eos):
    """Greedy answer recomputing the whole sequence every step, one row alone, with Show-o's layout and
    an omni-attention mask built here: the image block [SOI]..[EOI] bidirectional, text causal."""
    seq = [MMU, SOI] + [c + OFFSET for c in codes] + [EOI, SOT] + list(question)
    soi = 1
    out = []
    for _ in range(max_new_tokens):
        s = len(seq)
        allowed = np.tril(np.ones((s, s), bool))
        allowed[soi:soi + N + 2, soi:soi + N + 2] = True
        with mmu.no_grad():
            logits = lm(mmu.tensor(np.array([seq], np.int64)), attn_mask=mmu.tensor(allowed[None, None])).numpy()
        tok = int(np.argmax(logits[0, -1]))
        out.append(tok)
        if tok == eos:
            break
        seq.append(tok)
    return out


def test_mmu_generate_equals_recomputation_greedy_and_batches(lm):
    rng = np.random.default_rng(6)
    codes = rng.integers(0, K, (3, N))
    questions = [[5, 6, 7, 8], [9], [10, 11, 3]]
    width = max(map(len, questions))
    q = np.zeros((3, width), np.int64)
    qmask = np.zeros((3, width), bool)
    for r, t in enumerate(questions):
        q[r, width - len(t):], qmask[r, width - len(t):] = t, True
    n = 8
    kw = dict(mmu_id=MMU, soi_id=SOI, eoi_id=EOI, sot_id=SOT, code_offset=OFFSET, codebook_size=K, pad_id=PAD)
    answers = I.mmu_generate(lm, codes, q, qmask, max_new_tokens=n, **kw).numpy()
    assert answers.shape == (3, n)
    for r in range(3):
        ref = _mmu_reference(lm, codes[r], questions[r], n, eos=None)
        np.testing.assert_array_equal(answers[r], ref)
        alone = I.mmu_generate(lm, codes[r:r + 1].reshape(1, 3, 3), [questions[r]], max_new_tokens=n, **kw).numpy()
        np.testing.assert_array_equal(alone[0], ref)
    # a stop token: the row ends there, later positions are [PAD]
    eos = int(answers[0, 2])
    stopped = I.mmu_generate(lm, codes, q, qmask, max_new_tokens=n, eos_token_id=eos, **kw).numpy()
    ref0 = _mmu_reference(lm, codes[0], questions[0], n, eos=eos)
    np.testing.assert_array_equal(stopped[0, :len(ref0)], ref0)
    assert (stopped[0, len(ref0):] == PAD).all()


def test_logits_only_where_needed(lm, monkeypatch):
    """T2I steps never run the model's head (only the codebook rows at the N image positions);
    answering computes the head at one position per row per step."""
    shapes = []
    head = lm.lm_head.forward

    def spy(x):
        shapes.append(tuple(x.shape))
        return head(x)

    monkeypatch.setattr(lm.lm_head, "forward", spy)
    ids, mask = t2i_prompts([[5, 6], [7]])
    I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=3, generator=mmu.Generator(0), **IDS)
    assert shapes == []
    kw = dict(mmu_id=MMU, soi_id=SOI, eoi_id=EOI, sot_id=SOT, code_offset=OFFSET, codebook_size=K, pad_id=PAD)
    I.mmu_generate(lm, np.zeros((2, N), np.int64), [[5, 6], [7, 8]], max_new_tokens=4, **kw)
    assert shapes and all(s == (2, 32) for s in shapes)


def test_omni_attention_mask_rule():
    seq = np.array([[PAD, PAD, T2I, SOT, 5, EOT, SOI, 41, 42, EOI, 7, 8]])
    real = seq != PAD
    m = I.omni_attention_mask(seq, real, SOI, EOI)[0, 0]
    published = showo_published_mask(seq[:, :10])[0, 0]
    np.testing.assert_array_equal(m[2:10, :10], published[2:10])  # every non-pad row as Show-o's
    assert not m[:, :2].any()  # nobody attends to a pad
    assert m[6, 9] and m[9, 6] and m[7, 2] and not m[5, 6]  # image block both ways, sees the text; text not it
    np.testing.assert_array_equal(m[10, :11], real[0, :11])  # text after the image: causal over real tokens
    assert not m[6, 10]  # the image does not see the text after it


def test_errors(lm):
    ids, mask = t2i_prompts([[5, 6]])
    with pytest.raises(TypeError, match="ImageLogits: lm must be"):
        I.ImageLogits(object(), ids, mask, num_image_tokens=N, **IDS)
    with pytest.raises(ValueError, match="guidance_scale > 0 needs uncond_ids"):
        I.t2i_generate(lm, ids, mask, num_image_tokens=N, guidance_scale=2.0, **IDS)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        I.ImageLogits(lm, ids, mask, num_image_tokens=N, guidance_scale=-1.0, uncond_ids=ids, **IDS)
    with pytest.raises(ValueError, match="used only with guidance_scale"):
        I.ImageLogits(lm, ids, mask, num_image_tokens=N, uncond_ids=ids, **IDS)
    with pytest.raises(ValueError, match=r"must not hold \[SOI\]"):
        I.ImageLogits(lm, np.array([[T2I, SOI, EOT]]), None, num_image_tokens=N, **IDS)
    two, two_mask = t2i_prompts([[5, 6, 7], [5]])
    with pytest.raises(ValueError, match="left padded"):
        I.ImageLogits(lm, two, two_mask[:, ::-1].copy(), num_image_tokens=N, **IDS)
    with pytest.raises(ValueError, match="lies among the codebook ids"):
        I.ImageLogits(lm, ids, mask, num_image_tokens=N, **{**IDS, "soi_id": OFFSET + 1})
    with pytest.raises(ValueError, match="must lie in the vocabulary"):
        I.ImageLogits(lm, ids, mask, num_image_tokens=N, **{**IDS, "codebook_size": K + 5})
    with pytest.raises(ValueError, match="codes must be in"):
        I.t2i_generate(lm, ids, mask, num_image_tokens=N, codes=np.full((1, N), K), **IDS)
    with pytest.raises(ValueError, match=r"codes must be \(B, N\)"):
        I.t2i_generate(lm, ids, mask, num_image_tokens=N, codes=np.full((1, N + 1), MASK), **IDS)
    with pytest.raises(ValueError, match="temperature_decay must be"):
        I.t2i_generate(lm, ids, mask, num_image_tokens=N, temperature_decay="cosine", **IDS)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        I.t2i_generate(lm, ids, mask, num_image_tokens=N, steps=0, **IDS)
    with pytest.raises(TypeError, match="keep must be a bool"):
        I.inpaint(lm, ids, mask, codes=np.zeros((1, N), np.int64), keep=np.zeros((1, N)), **IDS)
    with pytest.raises(ValueError, match="direction must be one of"):
        I.extrapolate(lm, ids, mask, codes=np.zeros((1, 3, 3), np.int64), direction="diagonal", amount=1, **IDS)
    with pytest.raises(ValueError, match=r"amount must be in \[1, 3\)"):
        I.extrapolate(lm, ids, mask, codes=np.zeros((1, 3, 3), np.int64), direction="left", amount=3, **IDS)
    kw = dict(mmu_id=MMU, soi_id=SOI, eoi_id=EOI, sot_id=SOT, code_offset=OFFSET, codebook_size=K, pad_id=PAD)
    with pytest.raises(ValueError, match="mmu_generate: codes must be in"):
        I.mmu_generate(lm, np.full((1, N), K), [[5]], **kw)
    with pytest.raises(ValueError, match="one row per image"):
        I.mmu_generate(lm, np.zeros((2, N), np.int64), [[5]], **kw)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        I.mmu_generate(lm, np.zeros((1, N), np.int64), [[5]], max_new_tokens=0, **kw)
    with pytest.raises(ValueError, match="choice_temperature_decay must be"):
        G.maskgit_decode(lambda t: np.zeros((1, 4, 3), np.float32), num_tokens=4, mask_id=9,
                         choice_temperature_decay="fast")
    with pytest.raises(ValueError, match="prefill_attn_mask must be bool"):
        G.generate(lm, np.array([[5, 6]]), max_new_tokens=1, prefill_attn_mask=np.ones((1, 1, 2, 3), bool))
    with pytest.raises(ValueError, match="cannot be combined with guidance_scale"):
        G.generate(lm, np.array([[5, 6]]), max_new_tokens=1, guidance_scale=2.0, uncond_input_ids=np.array([[5, 6]]),
                   prefill_attn_mask=np.ones((1, 1, 2, 2), bool))
