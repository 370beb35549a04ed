"""Attention at short and odd sequence lengths (issue 15: TiTok's 129 tokens; Show-o's 322 under an omni
mask): the kernel chooses its work blocks from L and S (one key block up to 256 keys, row blocks in whole
6-row tiles, trailing hidden keys trimmed per block), so lengths around those choices are checked against
float64 NumPy forward and backward (analytic gradients; finite differences on small shapes), every mask
kind, one and two threads; and attention_of_heads' query_rows (only some queries) against the sliced whole."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from gradcheck import assert_close, check_mmu_grads
from test_attention import ref_sdpa, ref_weights, rnd

# around a 6-row tile, a 64-row mask block, the 256-key block limit (257: two key blocks of 144 + 113)
LENGTHS = [1, 2, 63, 64, 65, 127, 129, 200, 257]


def ref_grads(q, k, v, g, mask=None, is_causal=False, scale=None):
    """float64 gradients of sum(sdpa(q, k, v) * g) with respect to q, k, v (rows that see no key: 0)."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, g))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = ref_weights(q, k, mask, is_causal, scale)
    dv = np.swapaxes(p, -1, -2) @ g
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, dv


def run(q, k, v, g, mask=None, is_causal=False):
    tq, tk, tv = (mmu.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=None if mask is None else mmu.tensor(mask),
                                         is_causal=is_causal)
    out.backward(mmu.tensor(g))
    return out.numpy().copy(), [t.grad.numpy().copy() for t in (tq, tk, tv)]


def check(q, k, v, mask=None, is_causal=False, seed=0):
    g = rnd(np.random.default_rng(seed), *q.shape[:-1], v.shape[-1])
    out, grads = run(q, k, v, g, mask, is_causal)
    assert_close(out, ref_sdpa(q, k, v, mask, is_causal), 1e-4, 1e-5, "out vs float64")
    for name, a, b in zip("qkv", grads, ref_grads(q, k, v, g, mask, is_causal)):
        assert_close(a, b, 1e-3, 2e-5, f"d{name} vs float64")


@pytest.mark.parametrize("E", [32, 24])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("L", LENGTHS)
def test_self_attention_lengths_vs_float64(L, is_causal, E):
    rng = np.random.default_rng(L)
    q, k, v = rnd(rng, 2, L, E), rnd(rng, 2, L, E), rnd(rng, 2, L, E)
    check(q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("L,S", [(1, 129), (129, 1), (65, 200), (200, 65), (129, 300), (16, 17)])
def test_queries_and_keys_of_different_lengths(L, S):
    rng = np.random.default_rng(L * 1000 + S)
    q, k, v = rnd(rng, 3, L, 32), rnd(rng, 3, S, 32), rnd(rng, 3, S, 16)
    check(q, k, v)
    check(q, k, v, is_causal=True)


def omni_mask(L, text):
    """Show-o's omni-attention: the first `text` tokens causal among themselves, the rest (the image) see
    every token; (L, L) bool."""
    m = np.ones((L, L), bool)
    m[:text] = np.tril(np.ones((text, L), bool))
    return m


@pytest.mark.parametrize("L,text", [(129, 40), (200, 70), (322, 66)])
def test_omni_mask_vs_float64(L, text):
    """The text rows see no image key: their blocks' trailing keys are trimmed, not computed and masked."""
    rng = np.random.default_rng(7)
    q, k, v = rnd(rng, 2, 2, L, 16), rnd(rng, 2, 2, L, 16), rnd(rng, 2, 2, L, 16)
    check(q, k, v, mask=omni_mask(L, text))
    pad = omni_mask(L, text)[None, None].repeat(2, 0)
    pad[1, :, :, :5] = False  # the second batch row left-padded: 5 keys nobody sees
    pad[1, :, :5, :] = False  # and its padded query rows see nothing (their output and gradients are 0)
    check(q, k, v, mask=pad)


@pytest.mark.parametrize("L", [65, 129, 257])
def test_float_mask_key_padding_and_hidden_tail(L):
    rng = np.random.default_rng(L)
    q, k, v = rnd(rng, 2, 2, L, 32), rnd(rng, 2, 2, L, 32), rnd(rng, 2, 2, L, 32)
    fm = (rng.standard_normal((L, L)) * 0.5).astype(np.float32)
    fm[:, L // 2:] = -np.inf  # the whole second half hidden from every row: trimmed
    check(q, k, v, mask=fm)
    keep = np.ones((2, 1, 1, L), bool)
    keep[0, ..., L - 3:] = False  # key padding (B, 1, 1, S)
    check(q, k, v, mask=keep, is_causal=True)


def test_finite_differences_across_the_new_blocks():
    """65 queries (row blocks of 36 + 29) against 70 keys (one block of 80 columns), causal and masked."""
    rng = np.random.default_rng(3)
    q, k, v = rnd(rng, 65, 4), rnd(rng, 70, 4), rnd(rng, 70, 3)
    check_mmu_grads(lambda m, q, k, v: m.F.scaled_dot_product_attention(q, k, v), ref_sdpa, [q, k, v])
    mask = rng.random((65, 70)) < 0.7
    mask[:, 0] = True
    check_mmu_grads(lambda m, q, k, v: m.F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True),
                    lambda q, k, v: ref_sdpa(q, k, v, mask, True), [q, k, v])


@pytest.mark.parametrize("B,H", [(1, 1), (4, 4)])
def test_one_and_two_threads_agree(B, H):
    """One head and two threads: the backward cuts the keys into pieces whose partial dQ are summed; many heads:
    one task per head. Same numbers up to rounding, and the same bits run to run at each thread count."""
    rng = np.random.default_rng(5)
    z = rnd(rng, B, 3 * H, 129, 32)
    g = rnd(rng, B, H, 129, 32)
    mask = omni_mask(129, 30)
    prev = mmu.get_num_threads()
    res = {}
    try:
        for t in (1, 2, 2):
            mmu.set_num_threads(t)
            tz = mmu.tensor(z, requires_grad=True)
            out = F.attention_of_heads(tz, H, attn_mask=mask)
            out.backward(mmu.tensor(g))
            r = (out.numpy().copy(), tz.grad.numpy().copy())
            if t in res:
                assert all(np.array_equal(a, b) for a, b in zip(r, res[t]))
            res[t] = r
    finally:
        mmu.set_num_threads(prev)
    np.testing.assert_array_equal(res[1][0], res[2][0])  # the forward's rows do not depend on the split
    assert_close(res[2][1], res[1][1], 1e-5, 1e-6, "dz at 2 threads vs 1")


# ---------------------------------------------------------------- attention_of_heads(query_rows=...)

@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2)])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float", "keys"])
def test_query_rows_equal_the_sliced_whole(hq, hkv, is_causal, mask_kind):
    rng = np.random.default_rng(11)
    B, L, E = 2, 129, 16
    z = rnd(rng, B, hq + 2 * hkv, L, E)
    mask = None
    if mask_kind == "bool":
        mask = rng.random((B, 1, L, L)) < 0.8
        mask[..., 0] = True
    elif mask_kind == "float":
        mask = np.where(rng.random((L, L)) < 0.8, rng.standard_normal((L, L)), -np.inf).astype(np.float32)
        mask[:, 0] = 0.0
    elif mask_kind == "keys":
        mask = rng.random((B, 1, 1, L)) < 0.9
        mask[..., 0] = True
    for lo, hi in [(1, 65), (64, 129), (0, 1), (0, L)]:
        zf, zr = mmu.tensor(z, requires_grad=True), mmu.tensor(z, requires_grad=True)
        full = F.attention_of_heads(zf, hq, hkv, attn_mask=mask, is_causal=is_causal)
        part = F.attention_of_heads(zr, hq, hkv, attn_mask=mask, is_causal=is_causal, query_rows=(lo, hi))
        assert part.shape == (B, hq, hi - lo, E)
        np.testing.assert_array_equal(part.numpy(), full.numpy()[:, :, lo:hi])  # the same numbers
        g = rnd(rng, B, hq, hi - lo, E)
        gf = np.zeros((B, hq, L, E), np.float32)
        gf[:, :, lo:hi] = g
        part.backward(mmu.tensor(g))
        full.backward(mmu.tensor(gf))
        assert_close(zr.grad.numpy(), zf.grad.numpy(), 1e-5, 1e-6, f"dz of rows {lo}:{hi}")
        dq = zr.grad.numpy()[:, :hq]
        assert not dq[:, :, :lo].any() and not dq[:, :, hi:].any()  # the other queries took no part


def test_query_rows_vs_float64_reference():
    rng = np.random.default_rng(12)
    z = rnd(rng, 1, 3, 70, 8)
    q, k, v = z[:, :1], z[:, 1:2], z[:, 2:]
    mask = rng.random((70, 70)) < 0.7
    mask[:, 0] = True
    out = F.attention_of_heads(mmu.tensor(z), 1, attn_mask=mask, is_causal=True, query_rows=(5, 67))
    assert_close(out.numpy(), ref_sdpa(q, k, v, mask, True)[:, :, 5:67], 1e-4, 1e-5, "rows 5:67 vs float64")


@pytest.mark.parametrize("query_rows", [None, (2, 7)])
def test_masks_without_a_key_dim(query_rows):
    # a 0-d mask (and a 1-d one over the keys) broadcasts over every score: the kernel once read the key dim
    # as shape[ndim - 1] of a 0-d mask (index -1, caught by UBSan in the API fuzz)
    rng = np.random.default_rng(13)
    z = rnd(rng, 2, 6, 9, 8)
    lo, hi = query_rows or (0, 9)
    plain = F.attention_of_heads(mmu.tensor(z), 2, query_rows=query_rows).numpy()
    for mask, want in [(np.array(True), plain), (np.array(0.0, np.float32), plain),
                       (np.ones(9, bool), plain)]:
        got = F.attention_of_heads(mmu.tensor(z), 2, attn_mask=mask, query_rows=query_rows).numpy()
        np.testing.assert_array_equal(got, want)
    keys = rng.random(9) < 0.6
    keys[0] = True
    q, k, v = z[:, :2], z[:, 2:4], z[:, 4:]
    got = F.attention_of_heads(mmu.tensor(z), 2, attn_mask=keys, query_rows=query_rows).numpy()
    assert_close(got, ref_sdpa(q, k, v, np.broadcast_to(keys, (9, 9)), False)[:, :, lo:hi], 1e-4, 1e-5,
                 "1-d key mask vs float64")


def test_query_rows_bad_arguments():
    z = mmu.tensor(np.zeros((1, 3, 10, 4), np.float32))
    for bad in [(1,), (1, 2, 3), (1.0, 2), "ab", 3]:
        with pytest.raises(TypeError, match="attention_of_heads: query_rows"):
            F.attention_of_heads(z, 1, query_rows=bad)
    for bad in [(-1, 3), (3, 3), (5, 2)]:
        with pytest.raises(ValueError, match="attention_of_heads: query_rows"):
            F.attention_of_heads(z, 1, query_rows=bad)
    with pytest.raises(ValueError, match=r"attention_of_heads: query_rows \(2, 11\).*L = 10"):
        F.attention_of_heads(z, 1, query_rows=(2, 11))
