"""mmu.Generator, mmu.multinomial and mmu.generate.sample_logits (csrc/ops/sampling.c): streams of
their own, torch.multinomial's semantics and errors, Hugging Face's top-k / top-p semantics;
sample frequencies against the distributions (chi-square, seeded so the tests are fixed), and the
same bits at any thread count."""
import numpy as np
import pytest
from scipy import stats

import mmu
from mmu.generate import sample_logits

# a seeded draw that fails a chi-square test at this level is a bug, not bad luck: the seeds are fixed
P_MIN = 1e-3


def chi_square_p(counts, probs):
    """p-value of observed counts against probabilities (zero-probability cells must be empty)."""
    counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
    assert counts[probs == 0].sum() == 0, "a zero-probability category was drawn"
    keep = probs > 0
    expected = probs[keep] / probs[keep].sum() * counts.sum()
    return stats.chisquare(counts[keep], expected).pvalue


@pytest.fixture
def threads():
    prev = mmu.get_num_threads()
    yield
    mmu.set_num_threads(prev)


# ------------------------------------------------------------------ Generator

def test_generator_draws_the_stream_manual_seed_would_without_touching_it():
    mmu.manual_seed(123)
    want = mmu.rand(10).numpy().copy()
    want_n = mmu.randn(6).numpy().copy()
    mmu.manual_seed(5)
    before = mmu._C.get_rng_state()
    g = mmu.Generator(123)
    assert g.initial_seed() == 123
    np.testing.assert_array_equal(mmu.rand(10, generator=g).numpy(), want)
    np.testing.assert_array_equal(mmu.randn(6, generator=g).numpy(), want_n)
    assert mmu._C.get_rng_state() == before          # the global stream did not move
    assert g.get_state() == (123, 3 + 2)              # 10 uniforms = 3 blocks, 6 normals = 2


def test_generator_state_round_trip_and_manual_seed():
    g = mmu.Generator(7)
    mmu.rand(5, generator=g)
    state = g.get_state()
    a = mmu.randn(9, generator=g).numpy().copy()
    assert g.set_state(state) is g
    np.testing.assert_array_equal(mmu.randn(9, generator=g).numpy(), a)
    assert g.manual_seed(7) is g and g.get_state() == (7, 0)
    assert mmu.Generator(-1).initial_seed() == 2 ** 64 - 1   # seeds wrap to 64 bits, as manual_seed's
    assert "seed=7" in repr(g)
    assert mmu.Generator().get_state() == mmu.Generator(None).get_state()


def test_generator_errors():
    with pytest.raises(TypeError, match="Generator: seed must be an int"):
        mmu.Generator(1.5)
    g = mmu.Generator(0)
    with pytest.raises(TypeError, match="manual_seed: seed must be an int"):
        g.manual_seed("1")
    with pytest.raises(TypeError, match="set_state: state must be a \\(seed, offset\\)"):
        g.set_state([1, 2])
    with pytest.raises(ValueError, match="set_state: seed and offset must be in"):
        g.set_state((1, -2))
    assert g.get_state() == (0, 0)
    with pytest.raises(TypeError, match="rand: generator must be an mmu.Generator or None, got int"):
        mmu.rand(3, generator=3)
    with pytest.raises(TypeError, match="randn: generator must be an mmu.Generator"):
        mmu.randn(3, generator=np.random.default_rng(0))


def test_same_bits_at_any_thread_count(threads):
    probs = np.random.default_rng(0).random((64, 700)).astype(np.float32)
    logits = np.log(probs) * 3
    results = []
    for n in (1, 2):
        mmu.set_num_threads(n)
        g = mmu.Generator(11)
        results.append((mmu.multinomial(probs, 50, True, generator=g).numpy().copy(),
                        mmu.multinomial(probs, 50, False, generator=g).numpy().copy(),
                        *(t.numpy().copy() for t in sample_logits(logits, 0.7, 40, 0.9, generator=g)),
                        mmu.rand(100_000, generator=g).numpy().copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ multinomial

def test_multinomial_with_replacement_frequencies():
    weights = np.array([3.0, 0.0, 1.0, 6.0, 0.5, 2.5], np.float32)   # not normalised, one zero
    ids = mmu.multinomial(weights, 40_000, replacement=True, generator=mmu.Generator(1)).numpy()
    assert ids.shape == (40_000,) and ids.dtype == np.int64
    assert chi_square_p(np.bincount(ids, minlength=6), weights) > P_MIN
    rows = np.stack([weights, weights[::-1]])
    ids2 = mmu.multinomial(rows, 20_000, replacement=True, generator=mmu.Generator(2)).numpy()
    assert ids2.shape == (2, 20_000)
    for r in range(2):
        assert chi_square_p(np.bincount(ids2[r], minlength=6), rows[r]) > P_MIN


def test_multinomial_without_replacement_is_sequential_sampling():
    weights = np.array([0.4, 0.3, 0.0, 0.2, 0.1], np.float32)
    p = weights / weights.sum()
    rows = np.tile(weights, (30_000, 1))
    ids = mmu.multinomial(rows, 2, generator=mmu.Generator(3)).numpy()
    assert (ids[:, 0] != ids[:, 1]).all() and not (ids == 2).any()
    # ordered pairs: P(i then j) = p_i · p_j / (1 − p_i)
    pair_p = np.array([[p[i] * p[j] / (1 - p[i]) if i != j else 0.0 for j in range(5)] for i in range(5)])
    counts = np.zeros((5, 5))
    np.add.at(counts, (ids[:, 0], ids[:, 1]), 1)
    assert chi_square_p(counts.ravel(), pair_p.ravel()) > P_MIN
    # as many samples as non-zero weights: a permutation of them
    all_ids = mmu.multinomial(weights, 4, generator=mmu.Generator(4)).numpy()
    assert sorted(all_ids.tolist()) == [0, 1, 3, 4]


def test_multinomial_seeded():
    w = np.random.default_rng(1).random((3, 20)).astype(np.float32)
    for repl in (True, False):
        mmu.manual_seed(9)
        a = mmu.multinomial(w, 5, repl).numpy().copy()
        mmu.manual_seed(9)
        b = mmu.multinomial(w, 5, repl).numpy().copy()
        c = mmu.multinomial(w, 5, repl, generator=mmu.Generator(9)).numpy()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("args, exc, pattern", [
    ((np.ones((2, 2, 2), np.float32), 1), ValueError, "1-D or 2-D"),
    ((np.array([1.0, -0.5], np.float32), 1), ValueError, "inf, nan or element < 0"),
    ((np.array([1.0, np.nan], np.float32), 1), ValueError, "inf, nan or element < 0"),
    ((np.array([1.0, np.inf], np.float32), 1), ValueError, "inf, nan or element < 0"),
    ((np.array([[1.0, 1.0], [0.0, 0.0]], np.float32), 1), ValueError, "sum of probabilities <= 0"),
    ((np.ones(3, np.float32), 0), ValueError, "num_samples <= 0"),
    ((np.ones(3, np.float32), 4), ValueError, "without replacement"),
    ((np.array([1.0, 0.0, 1.0], np.float32), 3), ValueError, "not enough non-zero"),
    ((np.ones(3, np.float32), 1.0), TypeError, "num_samples must be an int"),
    ((np.zeros((2, 0), np.float32), 1), ValueError, "no categories"),
    ((mmu.tensor(np.ones(3, np.int64)), 1), TypeError, "multinomial: input"),
])
def test_multinomial_errors_leave_the_stream_alone(args, exc, pattern):
    g = mmu.Generator(0)
    with pytest.raises(exc, match=pattern):
        mmu.multinomial(*args, generator=g)
    assert g.get_state() == (0, 0)
    with pytest.raises(TypeError, match="multinomial: generator must be"):
        mmu.multinomial(np.ones(3, np.float32), 1, generator="seed")


# ------------------------------------------------------------------ sample_logits

def hf_filtered_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """NumPy float64 twin of Hugging Face's TemperatureLogitsWarper -> TopKLogitsWarper ->
    TopPLogitsWarper (min_tokens_to_keep=1) and the softmax: the distribution the draw follows."""
    z = np.asarray(logits, np.float64) / temperature
    if top_k is not None:
        kth = np.sort(z)[::-1][min(top_k, z.size) - 1]
        z = np.where(z < kth, -np.inf, z)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(z, kind="stable")                      # ascending
        sorted_p = np.exp(z[order] - z.max())
        sorted_p /= sorted_p.sum()
        remove = np.cumsum(sorted_p) <= 1 - top_p
        remove[-1] = False
        z = z.copy()
        z[order[remove]] = -np.inf
    p = np.exp(z - z.max())
    return p / p.sum()


LOGITS = np.array([2.0, 1.2, -0.3, 0.9, 3.1, -np.inf, 0.0, 1.9], np.float32)


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, None, None), (0.6, None, None), (1.0, 3, None), (1.5, 5, None), (1.0, None, 0.8),
    (0.8, None, 0.5), (1.0, 4, 0.9), (1.0, None, 0.0),
])
def test_sample_logits_frequencies_match_the_truncated_distribution(temperature, top_k, top_p):
    probs = hf_filtered_probs(LOGITS, temperature, top_k, top_p)
    rows = np.tile(LOGITS, (30_000, 1))
    ids, logprobs = sample_logits(rows, temperature, top_k, top_p, generator=mmu.Generator(17))
    ids, logprobs = ids.numpy(), logprobs.numpy()
    assert ids.dtype == np.int64 and logprobs.dtype == np.float32 and ids.shape == logprobs.shape == (30_000,)
    counts = np.bincount(ids, minlength=LOGITS.size)
    if (probs > 0).sum() > 1:
        assert chi_square_p(counts, probs) > P_MIN
    else:
        assert counts[probs.argmax()] == counts.sum()
    np.testing.assert_allclose(logprobs, np.log(probs[ids]), rtol=1e-5, atol=1e-6)


def test_top_p_keeps_the_smallest_set_reaching_top_p():
    # probabilities 0.5, 0.3, 0.15, 0.05 (ids 2, 0, 3, 1): top_p 0.8 keeps {2, 0}; 0.81 also 3
    logits = np.log(np.array([[0.3, 0.05, 0.5, 0.15]], np.float32))
    for top_p, kept in ((0.8, {0, 2}), (0.81, {0, 2, 3}), (0.5, {2}), (0.3, {2}), (0.96, {0, 1, 2, 3})):
        ids = sample_logits(np.repeat(logits, 2000, 0), top_p=top_p, generator=mmu.Generator(0))[0].numpy()
        assert set(ids.tolist()) == kept, top_p


def test_top_k_keeps_ties_at_the_threshold():
    logits = np.array([[1.0, 0.0, 1.0, 1.0, -1.0]], np.float32)
    ids = sample_logits(np.repeat(logits, 3000, 0), top_k=2, generator=mmu.Generator(1))[0].numpy()
    assert set(ids.tolist()) == {0, 2, 3}


def test_top_p_beyond_the_first_candidates():
    # a flat vocabulary of 1000: the nucleus of 0.9 holds 900 tokens, more than the first heap of 64
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal(1000) * 0.01).astype(np.float32)
    probs = hf_filtered_probs(logits, top_p=0.9)
    ids = sample_logits(np.tile(logits, (4000, 1)), top_p=0.9, generator=mmu.Generator(2))[0].numpy()
    assert (probs[ids] > 0).all()
    assert np.isin(np.flatnonzero(probs > 0), ids).mean() > 0.95
    assert abs((probs > 0).sum() - 900) <= 2


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 50)).astype(np.float32)
    logits[2, [4, 9]] = 10.0   # a tie: the first
    g = mmu.Generator(3)
    ids, logprobs = sample_logits(logits, greedy=True, generator=g)
    np.testing.assert_array_equal(ids.numpy(), logits.argmax(1))
    assert g.get_state() == (3, 0)     # greedy draws nothing
    ref = logits - logits.max(1, keepdims=True)
    ref = ref[np.arange(6), logits.argmax(1)] - np.log(np.exp(ref.astype(np.float64)).sum(1))
    np.testing.assert_allclose(logprobs.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_sample_logits_seeded_and_row_streams():
    logits = np.random.default_rng(1).standard_normal((5, 30)).astype(np.float32)
    a = sample_logits(logits, generator=mmu.Generator(8))[0].numpy()
    b = sample_logits(logits, generator=mmu.Generator(8))[0].numpy()
    np.testing.assert_array_equal(a, b)
    mmu.manual_seed(8)
    np.testing.assert_array_equal(sample_logits(logits)[0].numpy(), a)
    # row r reads block r of the draw: the first rows of a longer batch draw the same ids
    np.testing.assert_array_equal(sample_logits(logits[:2], generator=mmu.Generator(8))[0].numpy(), a[:2])
    g = mmu.Generator(8)
    sample_logits(logits, generator=g)
    assert g.get_state() == (8, 5)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(logits=np.array([[0.0, np.nan]], np.float32)), ValueError, "row 0 has NaN"),
    (dict(logits=np.array([[0.0, 1.0], [np.inf, 0.0]], np.float32)), ValueError, "row 1 has \\+inf"),
    (dict(logits=np.full((1, 3), -np.inf, np.float32)), ValueError, "all -inf"),
    (dict(logits=np.zeros(4, np.float32)), ValueError, "2-D"),
    (dict(logits=np.zeros((2, 0), np.float32)), ValueError, "no vocabulary"),
    (dict(temperature=0.0), ValueError, "temperature must be a positive"),
    (dict(temperature="1"), TypeError, "temperature must be a number"),
    (dict(top_k=-1), ValueError, "top_k must be >= 1"),
    (dict(top_k=2.0), TypeError, "top_k must be an int"),
    (dict(top_p=1.5), ValueError, "top_p must be in \\[0, 1\\]"),
    (dict(generator=1), TypeError, "generator must be an mmu.Generator"),
])
def test_sample_logits_errors(kwargs, exc, pattern):
    kwargs = {"logits": np.zeros((2, 4), np.float32), **kwargs}
    g = mmu.Generator(0)
    kwargs.setdefault("generator", g)
    with pytest.raises(exc, match="sample_logits: .*" + pattern):
        sample_logits(**kwargs)
    assert g.get_state() == (0, 0)


def test_top_k_large_k_ties_and_draws_across_blocks():
    rng = np.random.default_rng(7)
    V = 3000
    g = mmu.Generator(12)
    # k > 1024 (the quickselect path), with ties at the threshold: every logit >= the k-th stays
    logits = rng.integers(0, 10, V).astype(np.float32)
    kth = np.sort(logits)[::-1][1499]
    ids = sample_logits(np.tile(logits, (4000, 1)), top_k=1500, generator=g)[0].numpy()
    assert (logits[ids] >= kth).all() and (logits[ids] == kth).any()
    # the same with k <= 1024 (the heap path)
    kth = np.sort(logits)[::-1][999]
    ids = sample_logits(np.tile(logits, (4000, 1)), top_k=1000, generator=g)[0].numpy()
    assert (logits[ids] >= kth).all() and (logits[ids] == kth).any()
    # weights in far-apart blocks of the draw's running sum
    sparse = np.full(V, -np.inf, np.float32)
    sparse[[3, 700, 1500, 2999]] = [0.0, 1.0, -0.5, 0.7]
    ids = sample_logits(np.tile(sparse, (20_000, 1)), generator=g)[0].numpy()
    assert chi_square_p(np.bincount(ids, minlength=V), hf_filtered_probs(sparse)) > P_MIN
