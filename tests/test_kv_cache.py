"""KVCache and cached decoding: chunked prefill + token-by-token decode equals full recomputation
(logits within 1e-5) with GQA, partial RoPE, QK-norm, learned positions, left-padded batches of
prompts of different lengths and explicit masks; the buffers are never reallocated; expand, copy,
crop, reset; argument validation."""
import numpy as np
import pytest

import mmu
from mmu import nn

try:
    from gradcheck import assert_close
except ImportError:  # pragma: no cover
    from tests.gradcheck import assert_close

V = 29
CONFIGS = {
    # GQA (4 query heads on 2 kv heads), Phi's partial RoPE and parallel residual, QK-norm
    "gqa_partial_qknorm": dict(num_kv_heads=2, rotary_fraction=0.5, qk_norm="rmsnorm", residual="parallel",
                               activation="gelu_tanh"),
    # LLaMA-like: multi-query (1 kv head), full RoPE, RMSNorm, SwiGLU, no biases, tied head
    "mqa_llama": dict(num_kv_heads=1, norm="rmsnorm", activation="swiglu", bias=False, tie_embeddings=True),
    # GPT-2-like learned positions, LayerNorm QK-norm, head bias
    "learned": dict(pos="learned", qk_norm="layernorm", head_bias=True),
}


def make(name, seed=0):
    mmu.manual_seed(seed)
    m = nn.TransformerLM(V, 16, 2, 4, hidden_dim=24, max_seq_len=40, **CONFIGS[name])
    # random norm weights/biases too (not only ones/zeros) so a misplaced one shows
    rng = np.random.default_rng(seed)
    with mmu.no_grad():
        for p in m.parameters():
            p.numpy()[...] += rng.standard_normal(p.shape).astype(np.float32) * 0.1
    m.eval()
    return m


def padded_batch(rng, lens, total_new):
    """Left-padded prompts of the given lengths, then total_new tokens for every row."""
    P = max(lens)
    S = P + total_new
    ids = rng.integers(1, V, (len(lens), S)).astype(np.int64)
    am = np.ones((len(lens), S), bool)
    for b, n in enumerate(lens):
        ids[b, :P - n] = 0
        am[b, :P - n] = False
    return ids, am, P


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_cached_decoding_equals_full_recomputation(name, chunk):
    m = make(name)
    rng = np.random.default_rng(chunk)
    ids, am, P = padded_batch(rng, [5, 2, 4], total_new=4)
    B, S = ids.shape
    with mmu.no_grad():
        full = m(mmu.tensor(ids), attention_mask=am).numpy()  # (B, S, V)
        cache = m.new_cache(B, S + 3)
        buffers = [(k.numpy().ctypes.data, v.numpy().ctypes.data) for k, v in zip(cache.keys, cache.values)]
        for s in range(0, P, chunk):  # chunked prefill
            e = min(s + chunk, P)
            out = m(mmu.tensor(ids[:, s:e]), attention_mask=am[:, :e], cache=cache)
            assert cache.length == e
            assert_close(out.numpy(), full[:, s:e], 1e-5, 1e-5, what=f"prefill chunk {s}:{e}")
        for t in range(P, S):  # token by token, only the last logits
            out = m(mmu.tensor(ids[:, t:t + 1]), attention_mask=am[:, :t + 1], cache=cache, logits_at="last")
            assert out.shape == (B, V)
            assert_close(out.numpy(), full[:, t], 1e-5, 1e-5, what=f"decode step {t}")
    assert cache.length == S
    # the buffers were written in place, never reallocated
    assert buffers == [(k.numpy().ctypes.data, v.numpy().ctypes.data) for k, v in zip(cache.keys, cache.values)]


def test_cached_decoding_without_padding_and_with_position_ids():
    m = make("gqa_partial_qknorm")
    rng = np.random.default_rng(5)
    ids = rng.integers(0, V, (2, 7)).astype(np.int64)
    with mmu.no_grad():
        full = m(mmu.tensor(ids)).numpy()
        cache = m.new_cache(2, 7)
        assert_close(m(mmu.tensor(ids[:, :4]), cache=cache).numpy(), full[:, :4], 1e-5, 1e-5)
        for t in range(4, 7):
            pos = np.full((2, 1), t)
            out = m(mmu.tensor(ids[:, t:t + 1]), cache=cache, position_ids=pos, logits_at="last")
            assert_close(out.numpy(), full[:, t], 1e-5, 1e-5)


def test_cached_decoding_with_an_explicit_mask():
    """Show-o style: the prompt's first 3 tokens see each other fully, the rest is causal; the
    explicit mask rows of each chunk against every key so far give the full pass's logits."""
    m = make("mqa_llama")
    rng = np.random.default_rng(6)
    ids, am, P = padded_batch(rng, [6, 4], total_new=3)
    B, S = ids.shape
    omni = np.tril(np.ones((S, S), bool))
    omni[:3, :3] = True
    omni = omni[None, None]
    with mmu.no_grad():
        full = m(mmu.tensor(ids), attention_mask=am, attn_mask=omni).numpy()
        cache = m.new_cache(B, S)
        for s, e in ((0, 4), (4, P)):
            out = m(mmu.tensor(ids[:, s:e]), attention_mask=am[:, :e], attn_mask=omni[:, :, s:e, :e], cache=cache)
            assert_close(out.numpy(), full[:, s:e], 1e-5, 1e-5)
        for t in range(P, S):
            out = m(mmu.tensor(ids[:, t:t + 1]), attention_mask=am[:, :t + 1], attn_mask=omni[:, :, t:t + 1, :t + 1],
                    cache=cache, logits_at="last")
            assert_close(out.numpy(), full[:, t], 1e-5, 1e-5)


def test_expand_shares_one_prefill_over_samples():
    m = make("gqa_partial_qknorm")
    rng = np.random.default_rng(7)
    ids, am, P = padded_batch(rng, [3, 5], total_new=2)
    n = 3
    with mmu.no_grad():
        cache = m.new_cache(2, ids.shape[1])
        m(mmu.tensor(ids[:, :P]), attention_mask=am[:, :P], cache=cache)
        big = cache.expand(n)
        assert (big.batch_size, big.length, big.max_len) == (6, P, cache.max_len)
        assert cache.batch_size == 2  # self unchanged
        # each of the n samples of a prompt continues with its own tokens
        rows = np.repeat(ids, n, 0)
        rows[:, P:] = rng.integers(1, V, (6, ids.shape[1] - P))
        ams = np.repeat(am, n, 0)
        full = m(mmu.tensor(rows), attention_mask=ams).numpy()
        for t in range(P, ids.shape[1]):
            out = m(mmu.tensor(rows[:, t:t + 1]), attention_mask=ams[:, :t + 1], cache=big, logits_at="last")
            assert_close(out.numpy(), full[:, t], 1e-5, 1e-5)
    for kb, kbig in zip(cache.keys, big.keys):
        assert np.array_equal(np.repeat(kb.numpy()[:, :, :P], n, 0), kbig.numpy()[:, :, :P])


def test_copy_crop_and_reset():
    m = make("learned")
    rng = np.random.default_rng(8)
    ids = rng.integers(0, V, (2, 6)).astype(np.int64)
    alt = ids.copy()
    alt[:, 5] = (ids[:, 5] + 1) % V
    with mmu.no_grad():
        full, full_alt = m(mmu.tensor(ids)).numpy(), m(mmu.tensor(alt)).numpy()
        cache = m.new_cache(2, 8)
        m(mmu.tensor(ids[:, :5]), cache=cache)
        snap = [k.numpy().copy() for k in cache.keys]
        twin = cache.copy()
        out = m(mmu.tensor(alt[:, 5:6]), cache=twin, logits_at="last")  # the copy diverges...
        assert_close(out.numpy(), full_alt[:, 5], 1e-5, 1e-5)
        assert all(np.array_equal(a, k.numpy()) for a, k in zip(snap, cache.keys))  # ...the original does not
        assert (cache.length, twin.length) == (5, 6)
        out = m(mmu.tensor(ids[:, 5:6]), cache=cache, logits_at="last")
        assert_close(out.numpy(), full[:, 5], 1e-5, 1e-5)
        cache.crop(5)  # roll the last token back and take the other one
        assert cache.length == 5
        out = m(mmu.tensor(alt[:, 5:6]), cache=cache, logits_at="last")
        assert_close(out.numpy(), full_alt[:, 5], 1e-5, 1e-5)
        cache.reset()
        assert cache.length == 0
        assert_close(m(mmu.tensor(ids), cache=cache).numpy(), full, 1e-5, 1e-5)


def test_cache_update_writes_in_place_and_returns_kv_len():
    c = nn.KVCache(2, batch_size=2, num_kv_heads=1, max_len=5, head_dim=3)
    assert c.shape == (2, 1, 5, 3) and c.length == 0
    k = np.arange(12, dtype=np.float32).reshape(2, 1, 2, 3)
    kb, vb, n = c.update(1, k, -k)
    assert n == 2 and kb is c.keys[1] and vb is c.values[1] and kb.shape == (2, 1, 5, 3)
    assert np.array_equal(kb.numpy()[:, :, :2], k) and np.array_equal(vb.numpy()[:, :, :2], -k)
    assert not kb.numpy()[:, :, 2:].any()
    assert c.length == 0  # update does not advance; the model advances after its last layer
    c.advance(2)
    kb, _, n = c.append(1, k[:, :, :1], k[:, :, :1])
    assert n == 3 and np.array_equal(kb.numpy()[:, :, 2], k[:, :, 0])


def test_cache_validation():
    with pytest.raises(ValueError, match="KVCache: max_len must be >= 1"):
        nn.KVCache(1, 1, 1, 0, 4)
    with pytest.raises(TypeError, match="KVCache: head_dim must be an int"):
        nn.KVCache(1, 1, 1, 4, 4.0)
    with pytest.raises(ValueError, match="too large"):
        nn.KVCache(1, 2 ** 20, 8, 2 ** 20, 64)
    c = nn.KVCache(2, 1, 2, 4, 3)
    k = mmu.zeros(1, 2, 3, 3)
    with pytest.raises(IndexError, match="layer_idx"):
        c.update(2, k, k)
    with pytest.raises(ValueError, match=r"KVCache.update: k must be \(batch 1, num_kv_heads 2, L, head_dim 3\)"):
        c.update(0, mmu.zeros(1, 1, 3, 3), k)
    with pytest.raises(ValueError, match="must have the same shape"):
        c.update(0, k, mmu.zeros(1, 2, 2, 3))
    c.update(0, k, k)
    c.advance(3)
    with pytest.raises(ValueError, match="exceed max_len 4"):
        c.update(0, mmu.zeros(1, 2, 2, 3), mmu.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match="KVCache.advance"):
        c.advance(2)
    with pytest.raises(ValueError, match="KVCache.crop: cannot crop to 4"):
        c.crop(4)
    with pytest.raises(ValueError, match="KVCache.expand: n must be >= 1"):
        c.expand(0)
    assert c.length == 3  # nothing above changed the cache
    kg = mmu.zeros(1, 2, 1, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        c.update(0, kg, kg)
    # the model checks its cache before writing anything
    m = nn.TransformerLM(V, 16, 2, 4, num_kv_heads=2)
    ids = mmu.tensor(np.zeros((2, 3), np.int64))
    with mmu.no_grad():
        with pytest.raises(ValueError, match="does not fit this model and batch 2"):
            m(ids, cache=m.new_cache(3, 8))
        with pytest.raises(ValueError, match="does not fit"):
            m(ids, cache=nn.KVCache(2, 2, 4, 8, 4))
        cache = m.new_cache(2, 4)
        m(ids, cache=cache)
        with pytest.raises(ValueError, match="exceed the cache's max_len 4"):
            m(ids, cache=cache)
        assert cache.length == 3
        cache = m.new_cache(2, 8)
        m(ids, cache=cache)
        with pytest.raises(ValueError, match=r"attention_mask must be bool \(B, cache.length \+ L\) = \(2, 6\)"):
            m(ids, cache=cache, attention_mask=np.ones((2, 3), bool))  # the mask covers the cached positions too
        with pytest.raises(TypeError, match="cache must be a KVCache"):
            m(ids, cache={})
    with pytest.raises(RuntimeError, match="no_grad"):  # decoding with grad recorded is refused
        m(ids, cache=m.new_cache(2, 4))
    with pytest.raises(ValueError, match="max_seq_len"):
        nn.TransformerLM(V, 16, 1, 2, pos="learned", max_seq_len=8).new_cache(1, 9)

