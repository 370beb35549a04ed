"""mmu.generate: autoregressive generation on a model's KV cache (prefill once, one token a step,
left padding, stop tokens, classifier-free guidance), MaskGIT decoding (the masked counts follow
the schedule exactly, the least confident are re-masked, given tokens kept) and RVQ depth
decoding; all seeded. The model is a tiny fake written here that implements the protocol of
mmu.nn.TransformerLM (new_cache, forward(..., cache=, logits_at='last')) with a real
preallocated cache, so cached and recomputed results can be compared exactly."""
import math

import numpy as np
import pytest

import mmu
import mmu.generate as G

V = 11


class TokenCache:
    """A preallocated cache of token ids (batch, max_len); .length tokens are held."""

    def __init__(self, batch_size, max_len):
        self.tokens = np.full((batch_size, max_len), -1, np.int64)
        self.batch_size, self.max_len, self.length = batch_size, max_len, 0

    def advance(self, n):
        self.length += n


class CountingLM:
    """logits(query) = 0.25·(A[its token] + Σ_visible keys Bk[key token] + C[its position]), integer
    tables so any summation order gives the same bits: the logits depend on the token, every
    visible earlier token (through the mask) and the position id, as a transformer's do."""

    def __init__(self, seed=0, advances=True):
        rng = np.random.default_rng(seed)
        self.A = rng.integers(0, 8, (V, V))
        self.Bk = rng.integers(0, 3, (V, V))
        self.C = rng.integers(0, 4, (64, V))
        self.advances = advances
        self.calls = []   # (rows, new tokens) of every forward

    def new_cache(self, batch_size, max_len):
        return TokenCache(batch_size, max_len)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_at="all"):
        assert logits_at == "last"
        ids = input_ids.numpy()
        B, L = ids.shape
        if cache is not None:
            start = cache.length
            assert start + L <= cache.max_len and B == cache.batch_size
            cache.tokens[:, start:start + L] = ids
            keys = cache.tokens[:, :start + L]
        else:
            start, keys = 0, ids
        S = start + L
        mask = np.ones((B, S), bool) if attention_mask is None else attention_mask.numpy()
        assert mask.shape == (B, S)
        pos = np.tile(np.arange(S), (B, 1))[:, start:] if position_ids is None else position_ids.numpy()
        assert pos.shape == (B, L)
        self.calls.append((B, L))
        score = self.A[ids[:, -1]] + self.C[pos[:, -1]]
        for b in range(B):
            score[b] += self.Bk[keys[b, mask[b]]].sum(0)
        if cache is not None and self.advances:
            cache.advance(L)
        return mmu.tensor((score * 0.25).astype(np.float32)[:, None, :])


def reference_generate(model, prompts, n, greedy=True, generator=None, scale=None, uncond=None, **kw):
    """Generation without a cache: the whole sequence recomputed for every token (unpadded prompts)."""
    seqs = [list(p) for p in prompts]
    useqs = [list(p) for p in uncond] if uncond is not None else None
    for _ in range(n):
        logits = np.concatenate([model(mmu.tensor(np.array([s])), logits_at="last").numpy()[:, 0] for s in seqs])
        if scale is not None:
            u = np.concatenate([model(mmu.tensor(np.array([s])), logits_at="last").numpy()[:, 0] for s in useqs])
            logits = u + np.float32(scale) * (logits - u)
        ids = G.sample_logits(logits, greedy=greedy, generator=generator, **kw)[0].numpy()
        for b, t in enumerate(ids):
            seqs[b].append(int(t))
            if useqs is not None:
                useqs[b].append(int(t))
    return np.array(seqs)


PROMPTS = np.array([[1, 4, 2, 7], [3, 3, 0, 9]])


def test_greedy_equals_recomputation_and_prefills_once():
    model = CountingLM()
    out = G.generate(model, PROMPTS, max_new_tokens=6, do_sample=False)
    assert out.dtype == np.int64 and out.shape == (2, 10)
    assert model.calls == [(2, 4)] + [(2, 1)] * 5          # the prompt once, then one token a step
    np.testing.assert_array_equal(out.numpy(), reference_generate(CountingLM(), PROMPTS, 6))


def test_sampling_equals_recomputation_under_a_seed():
    kw = dict(temperature=0.8, top_k=6, top_p=0.95)
    out = G.generate(CountingLM(), PROMPTS, max_new_tokens=7, generator=mmu.Generator(4), **kw)
    ref = reference_generate(CountingLM(), PROMPTS, 7, greedy=False, generator=mmu.Generator(4), **kw)
    np.testing.assert_array_equal(out.numpy(), ref)
    again = G.generate(CountingLM(), PROMPTS, max_new_tokens=7, generator=mmu.Generator(4), **kw)
    np.testing.assert_array_equal(out.numpy(), again.numpy())
    mmu.manual_seed(4)
    np.testing.assert_array_equal(G.generate(CountingLM(), PROMPTS, max_new_tokens=7, **kw).numpy(), ref)
    other = G.generate(CountingLM(), PROMPTS, max_new_tokens=7, generator=mmu.Generator(5), **kw)
    assert not np.array_equal(other.numpy(), ref)


def test_a_model_that_leaves_its_cache_alone_gets_it_advanced():
    out = G.generate(CountingLM(advances=False), PROMPTS, max_new_tokens=4, do_sample=False)
    np.testing.assert_array_equal(out.numpy(), reference_generate(CountingLM(), PROMPTS, 4))


def test_left_padding_continues_as_the_unpadded_prompt():
    short, long_ = [5, 2, 8], [1, 4, 2, 7, 6, 3]
    ids = np.array([[0, 0, 0] + short, long_])
    mask = np.array([[0, 0, 0, 1, 1, 1], [1] * 6], bool)
    out = G.generate(CountingLM(), ids, attention_mask=mask, max_new_tokens=5, do_sample=False).numpy()
    alone = [G.generate(CountingLM(), np.array([p]), max_new_tokens=5, do_sample=False).numpy()[0, -5:]
             for p in (short, long_)]
    np.testing.assert_array_equal(out[:, -5:], np.stack(alone))
    np.testing.assert_array_equal(out[:, :6], ids)
    # sampled, under a seed: more padding on the left changes nothing
    kw = dict(max_new_tokens=5, temperature=1.3)
    batch = G.generate(CountingLM(), ids, attention_mask=mask, generator=mmu.Generator(2), **kw).numpy()
    wider = G.generate(CountingLM(), np.pad(ids, ((0, 0), (2, 0))), attention_mask=np.pad(mask, ((0, 0), (2, 0))),
                       generator=mmu.Generator(2), **kw).numpy()
    np.testing.assert_array_equal(batch[:, -5:], wider[:, -5:])
    first = G.generate(CountingLM(), np.array([short]), generator=mmu.Generator(2), **kw).numpy()
    assert batch[0, -5] == first[0, -5]   # row 0's first token reads block 0 of the step, alone or not


def expected_with_stops(full, stops, pad):
    """The rows of `full` (free-running continuations) cut at their first stop token, padded after
    it, and the whole cut after the column where the last row stopped."""
    out, ends = full.copy(), []
    for b in range(full.shape[0]):
        hits = np.flatnonzero(np.isin(full[b], stops))
        ends.append(hits[0] if hits.size else None)
        if hits.size:
            out[b, hits[0] + 1:] = pad
    if all(e is not None for e in ends):
        out = out[:, :max(ends) + 1]
    return out


def test_stop_tokens_end_rows_and_pad_them():
    full = G.generate(CountingLM(), PROMPTS, max_new_tokens=8, do_sample=False).numpy()[:, 4:]
    j = next(j for j in range(1, 8) if full[0, j] not in full[0, :j])   # row 0 stops after j tokens
    stop = int(full[0, j])
    out = G.generate(CountingLM(), PROMPTS, max_new_tokens=8, do_sample=False, eos_token_id=stop,
                     pad_token_id=10).numpy()
    np.testing.assert_array_equal(out[:, 4:], expected_with_stops(full, [stop], 10))
    assert out[0, 4 + j] == stop and (out[0, 5 + j:] == 10).all()
    # a list of stop tokens that ends every row: generation ends there; pad defaults to the first
    stops = [int(full[0, 1]), int(full[1, 0])]
    out = G.generate(CountingLM(), PROMPTS, max_new_tokens=8, do_sample=False, eos_token_id=stops).numpy()
    want = expected_with_stops(full, stops, stops[0])
    assert want.shape[1] <= 2
    np.testing.assert_array_equal(out[:, 4:], want)


def test_classifier_free_guidance_combines_u_plus_s_times_c_minus_u():
    uncond = np.array([[6], [6]])
    for scale in (3.0, -0.5):
        out = G.generate(CountingLM(), PROMPTS, max_new_tokens=5, do_sample=False, guidance_scale=scale,
                         uncond_input_ids=uncond).numpy()
        ref = reference_generate(CountingLM(), PROMPTS, 5, scale=scale, uncond=uncond)
        np.testing.assert_array_equal(out, ref)
    model = CountingLM()
    G.generate(model, PROMPTS, max_new_tokens=3, do_sample=False, guidance_scale=2.0, uncond_input_ids=uncond)
    assert model.calls == [(4, 4), (4, 1), (4, 1)]        # one batch of 2B rows
    # s = 1 is the conditional model, s = 0 the unconditional one
    cond = G.generate(CountingLM(), PROMPTS, max_new_tokens=4, do_sample=False).numpy()
    s1 = G.generate(CountingLM(), PROMPTS, max_new_tokens=4, do_sample=False, guidance_scale=1.0,
                    uncond_input_ids=uncond).numpy()
    np.testing.assert_array_equal(s1, cond)
    s0 = G.generate(CountingLM(), PROMPTS, max_new_tokens=4, do_sample=False, guidance_scale=0.0,
                    uncond_input_ids=uncond).numpy()
    np.testing.assert_array_equal(s0[:, 4:], G.generate(CountingLM(), uncond, max_new_tokens=4,
                                                        do_sample=False).numpy()[:, 1:])


def test_generate_on_transformer_lm_equals_recomputation():
    """The real mmu.nn.TransformerLM and KVCache (GQA, partial RoPE, parallel residual): a
    left-padded batch decoded on the cache gives each prompt's greedy continuation recomputed
    without a cache, and guidance runs its 2B rows through one cache."""
    mmu.manual_seed(0)
    lm = mmu.nn.TransformerLM(vocab_size=37, dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                              rotary_fraction=0.5, residual="parallel", max_seq_len=64)
    lm.eval()
    prompts = [[3, 5, 7], [1, 2, 3, 4, 5, 6]]
    ids = np.array([[0, 0, 0] + prompts[0], prompts[1]])
    mask = ids > 0
    out = G.generate(lm, ids, attention_mask=mask, max_new_tokens=6, do_sample=False).numpy()
    for b, p in enumerate(prompts):
        seq = list(p)
        with mmu.no_grad():
            for _ in range(6):
                seq.append(int(lm(mmu.tensor(np.array([seq])), logits_at="last").numpy().argmax()))
        np.testing.assert_array_equal(out[b, 6:], seq[len(p):])
    kw = dict(max_new_tokens=4, top_k=10, top_p=0.9, guidance_scale=2.0, uncond_input_ids=np.array([[1], [1]]))
    a = G.generate(lm, ids, attention_mask=mask, generator=mmu.Generator(1), **kw).numpy()
    np.testing.assert_array_equal(a, G.generate(lm, ids, attention_mask=mask, generator=mmu.Generator(1), **kw).numpy())
    assert a.shape == (2, 10) and (a[:, 6:] < 37).all()


def test_generate_progress_bar(capsys):
    out = G.generate(CountingLM(), PROMPTS, max_new_tokens=3, do_sample=False, progress=True)
    assert out.shape == (2, 7)
    assert "generate" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(attention_mask=np.array([[1, 1, 0, 0], [1, 1, 1, 1]])), ValueError, "left padded"),
    (dict(attention_mask=np.ones((2, 3))), ValueError, "attention_mask must have the shape"),
    (dict(input_ids=np.array([1, 2, 3])), ValueError, "input_ids must be 2-D"),
    (dict(input_ids=np.array([[1.0, 2.0]])), TypeError, "input_ids must be integer"),
    (dict(input_ids=np.array([[1, -2]])), ValueError, "input_ids must be >= 0"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens must be >= 1"),
    (dict(eos_token_id="x"), TypeError, "eos_token_id must be an int or a list"),
    (dict(guidance_scale=2.0), ValueError, "needs uncond_input_ids"),
    (dict(uncond_input_ids=np.array([[1]])), ValueError, "only with guidance_scale"),
    (dict(guidance_scale=2.0, uncond_input_ids=np.array([[1]])), ValueError, "uncond_input_ids must be \\(2, Lu\\)"),
    (dict(top_p=2.0), ValueError, "top_p must be in"),
    (dict(generator=0), TypeError, "generator must be an mmu.Generator"),
    (dict(model=object()), TypeError, "model must be callable"),
])
def test_generate_errors(kwargs, exc, pattern):
    kwargs = {"model": CountingLM(), "input_ids": PROMPTS, **kwargs}
    with pytest.raises(exc, match="generate: .*" + pattern):
        G.generate(**kwargs)


# ------------------------------------------------------------------ MaskGIT

MASK = 7   # outside the vocabulary of 5 the logits cover


class TableLogits:
    """Fixed logits per position (B, N, 5), whatever the tokens; records the masked count per row
    of the tokens of every call."""

    def __init__(self, B, N, seed=0, margin=None):
        rng = np.random.default_rng(seed)
        self.logits = rng.standard_normal((B, N, 5)).astype(np.float32)
        if margin is not None:     # one clear winner per position, by `margin` nats
            self.logits[:] = 0.0
            self.logits[..., 0] = margin
        self.masked = []

    def __call__(self, tokens):
        flat = tokens.reshape(tokens.shape[0], -1)
        self.masked.append((flat == MASK).sum(1))
        return self.logits[:tokens.shape[0]]


def expected_masked(n0, steps, schedule):
    """MaskGIT's counts still masked before each step: floor(N0·γ(r)), at least 1, at most the
    current count − 1 (google-research/maskgit parallel_decode)."""
    counts, cur = [n0], n0
    for s in range(steps - 1):
        ratio = (s + 1) / steps
        gamma = {"cosine": math.cos(math.pi / 2 * ratio), "linear": 1 - ratio, "square": 1 - ratio ** 2}[schedule]
        cur = max(1, min(cur - 1, math.floor(n0 * min(max(gamma, 1e-6), 1.0))))
        counts.append(cur)
    return counts


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square"])
@pytest.mark.parametrize("steps", [1, 4, 8, 20])
def test_maskgit_masked_counts_follow_the_schedule(schedule, steps):
    fn = TableLogits(2, 16)
    out = G.maskgit_decode(fn, num_tokens=(4, 4), mask_id=MASK, steps=steps, schedule=schedule, batch_size=2,
                           generator=mmu.Generator(1))
    assert out.shape == (2, 4, 4) and out.dtype == np.int64
    assert not (out.numpy() == MASK).any() and (out.numpy() < 5).all()
    want = expected_masked(16, steps, schedule)
    np.testing.assert_array_equal(np.stack(fn.masked), np.stack([want, want], 1))


def test_maskgit_remasks_the_least_confident():
    # choice_temperature 0: no noise, the positions with the largest log p(sampled) are kept; the
    # margins make the sampled token the winner (p > 1 - 1e-4) and its log p increase with n
    margins = np.linspace(10.0, 30.0, 12).astype(np.float32)
    fn = TableLogits(1, 12, margin=0.0)
    fn.logits[0, :, 0] = margins
    seen = []
    orig = fn.__call__

    def record(tokens):
        seen.append(tokens.copy())
        return orig(tokens)
    G.maskgit_decode(record, num_tokens=12, mask_id=MASK, steps=3, choice_temperature=0.0, generator=mmu.Generator(0))
    after_first = seen[1][0]
    kept = np.flatnonzero(after_first != MASK)
    n_kept = 12 - expected_masked(12, 3, "cosine")[1]
    np.testing.assert_array_equal(kept, np.arange(12 - n_kept, 12))   # the most confident stay


def test_maskgit_gumbel_noise_changes_the_choice_and_is_seeded():
    fn = TableLogits(1, 24, seed=3)
    kw = dict(num_tokens=24, mask_id=MASK, steps=4, choice_temperature=50.0)
    a = G.maskgit_decode(fn, generator=mmu.Generator(3), **kw).numpy()
    b = G.maskgit_decode(fn, generator=mmu.Generator(3), **kw).numpy()
    np.testing.assert_array_equal(a, b)
    mmu.manual_seed(3)
    np.testing.assert_array_equal(G.maskgit_decode(fn, **kw).numpy(), a)
    c = G.maskgit_decode(fn, generator=mmu.Generator(4), **kw).numpy()
    assert not np.array_equal(a, c)


def test_maskgit_progress_bar(capsys):
    out = G.maskgit_decode(TableLogits(1, 4), num_tokens=4, mask_id=MASK, steps=2, progress=True)
    assert out.shape == (1, 4)
    assert "maskgit" in capsys.readouterr().err


def test_maskgit_inpainting_keeps_the_given_tokens():
    init = np.full((2, 10), MASK)
    init[0, [1, 4, 5]] = [3, 2, 9]        # 9: given tokens need not be in the sampled vocabulary
    init[1, :] = 4
    init[1, 6] = MASK
    fn = TableLogits(2, 10)
    out = G.maskgit_decode(fn, initial_tokens=init, mask_id=MASK, steps=5, generator=mmu.Generator(0)).numpy()
    np.testing.assert_array_equal(out[0, [1, 4, 5]], [3, 2, 9])
    np.testing.assert_array_equal(np.delete(out[1], 6), np.delete(init[1], 6))
    assert not (out == MASK).any()
    counts = np.stack(fn.masked)
    np.testing.assert_array_equal(counts[:, 0], expected_masked(7, 5, "cosine"))
    np.testing.assert_array_equal(counts[:, 1], [1, 1, 1, 1, 1])   # one unknown: decided at the last step


def test_maskgit_guidance():
    B, N = 2, 6
    rng = np.random.default_rng(8)
    cond, uncond = rng.standard_normal((2, B, N, 5)).astype(np.float32)
    rows = []

    def fn(tokens):
        rows.append(tokens.shape[0])
        np.testing.assert_array_equal(tokens[:B], tokens[B:])
        return np.concatenate([cond, uncond])
    out = G.maskgit_decode(fn, num_tokens=N, mask_id=MASK, steps=1, batch_size=B, top_k=1, guidance_scale=2.5)
    assert rows == [2 * B]
    np.testing.assert_array_equal(out.numpy(), (uncond + np.float32(2.5) * (cond - uncond)).argmax(-1))


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(mask_id=None), ValueError, "mask_id is required"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(schedule="log"), ValueError, "schedule must be"),
    (dict(num_tokens=None), ValueError, "give num_tokens"),
    (dict(num_tokens=(2, 0)), ValueError, "num_tokens must be a positive"),
    (dict(initial_tokens=np.full((1, 4), MASK)), ValueError, "not both"),
    (dict(choice_temperature=-1.0), ValueError, "choice_temperature must be >= 0"),
    (dict(logits_fn=lambda t: np.zeros((1, 3, 5), np.float32)), ValueError, "logits_fn must return"),
    (dict(logits_fn=3), TypeError, "logits_fn must be callable"),
])
def test_maskgit_errors(kwargs, exc, pattern):
    kwargs = {"logits_fn": TableLogits(1, 4), "num_tokens": 4, "mask_id": MASK, **kwargs}
    with pytest.raises(exc, match=pattern):
        G.maskgit_decode(**kwargs)


def test_mask_schedule_values():
    assert G.mask_schedule(0.0) == 1.0 and G.mask_schedule(1.0) == 1e-6
    assert G.mask_schedule(0.5, "linear") == 0.5 and G.mask_schedule(0.5, "square") == 0.75
    assert G.mask_schedule(0.5) == pytest.approx(math.cos(math.pi / 4))
    assert G.mask_schedule(0.3, lambda r: 1 - r ** 3) == pytest.approx(1 - 0.027)


# ------------------------------------------------------------------ RVQ depth decoding

class DepthHead:
    """logits of depth d = W[d][hidden class] + U[d][sum of the codes so far]; records the codes."""

    def __init__(self, D, seed=0):
        rng = np.random.default_rng(seed)
        self.W = rng.standard_normal((D, 3, 6)).astype(np.float32)
        self.U = rng.standard_normal((D, 64, 6)).astype(np.float32)
        self.given = []

    def __call__(self, hidden, codes):
        self.given.append(codes.copy())
        d = codes.shape[-1]
        cls = np.asarray(hidden)[..., 0].astype(np.int64)
        return self.W[d][cls] + self.U[d][codes.sum(-1) % 64]


def test_rvq_depth_decode_conditions_each_depth_on_the_codes_so_far():
    hidden = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 5.0]], np.float32)   # (B, C), class = column 0
    head = DepthHead(4)
    codes = G.rvq_depth_decode(head, hidden, depth=4, do_sample=False).numpy()
    assert codes.shape == (3, 4) and codes.dtype == np.int64
    ref = np.zeros((3, 0), np.int64)
    cls = hidden[:, 0].astype(np.int64)
    for d in range(4):
        np.testing.assert_array_equal(head.given[d], ref)
        ref = np.concatenate([ref, (head.W[d][cls] + head.U[d][ref.sum(-1) % 64]).argmax(-1)[:, None]], 1)
    np.testing.assert_array_equal(codes, ref)


def test_rvq_depth_decode_positions_seeding_and_guidance():
    hidden = np.random.default_rng(0).integers(0, 3, (2, 5, 4)).astype(np.float32)   # (B, N, C)
    a = G.rvq_depth_decode(DepthHead(3), hidden, 3, generator=mmu.Generator(6)).numpy()
    assert a.shape == (2, 5, 3)
    np.testing.assert_array_equal(a, G.rvq_depth_decode(DepthHead(3), hidden, 3, generator=mmu.Generator(6)).numpy())
    # guidance: 2B rows, codes passed twice, u + s(c - u)
    h2 = np.concatenate([hidden, np.zeros_like(hidden)])
    head = DepthHead(3)
    g = G.rvq_depth_decode(head, h2, 3, do_sample=False, guidance_scale=1.5).numpy()
    assert g.shape == (2, 5, 3)
    for codes in head.given:
        np.testing.assert_array_equal(codes[:2], codes[2:])
    full = [head.W[d][h2[..., 0].astype(np.int64)] + head.U[d][head.given[d].sum(-1) % 64] for d in range(3)]
    for d in range(3):
        c, u = full[d][:2], full[d][2:]
        np.testing.assert_array_equal(g[..., d], (u + np.float32(1.5) * (c - u)).argmax(-1))
    with pytest.raises(ValueError, match="rvq_depth_decode: with guidance_scale hidden must hold 2B"):
        G.rvq_depth_decode(DepthHead(3), hidden[:1].repeat(3, 0), 2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="rvq_depth_decode: depth must be >= 1"):
        G.rvq_depth_decode(DepthHead(3), hidden, 0)
    with pytest.raises(ValueError, match="rvq_depth_decode: depth_fn must return logits"):
        G.rvq_depth_decode(lambda h, c: np.zeros((2, 6), np.float32), hidden, 2)
