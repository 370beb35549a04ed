"""cached_block_attention (csrc/ops/attention_cache.c): a block's heads against a cached prefix read in
place, against a NumPy reference of softmax(q k^T / sqrt(D)) v over [the row's real prefix keys; every
block key]."""
import numpy as np
import pytest

import mmu
from mmu import functional as F
from mmu.models.show_o.inference import cached_block_attention


def reference(z, hq, hkv, kc, vc, start, plen, rows, scale):
    """NumPy: out (R, n, hq·D), float64."""
    R, _, L, D = z.shape
    q, kb, vb = z[:, :hq], z[:, hq:hq + hkv], z[:, hq + hkv:]
    out = np.zeros((R, len(rows), hq * D))
    for r in range(R):
        for h in range(hq):
            g = h // (hq // hkv)
            k = np.concatenate([kc[r, g, start[r]:plen], kb[r, g]]).astype(np.float64)
            v = np.concatenate([vc[r, g, start[r]:plen], vb[r, g]]).astype(np.float64)
            s = q[r, h, rows].astype(np.float64) @ k.T * scale
            p = np.exp(s - s.max(1, keepdims=True))
            out[r, :, h * D:(h + 1) * D] = (p / p.sum(1, keepdims=True)) @ v
    return out


@pytest.mark.parametrize("hq,hkv,D,L,rows", [(4, 4, 8, 7, None), (4, 2, 16, 19, [0, 5, 18, 3]), (2, 1, 5, 3, [2]),
                                             (3, 3, 32, 150, None)])
@pytest.mark.parametrize("threads", [1, 2])
def test_equals_numpy_reference(hq, hkv, D, L, rows, threads):
    rng = np.random.default_rng(hq + D + L)
    R, M, plen = 3, 13, 9
    start = np.array([0, 4, 9])  # a whole prefix, a left-padded one, an empty one (only the block)
    z = rng.standard_normal((R, hq + 2 * hkv, L, D)).astype(np.float32)
    kc = rng.standard_normal((R, hkv, M, D)).astype(np.float32)
    vc = rng.standard_normal((R, hkv, M, D)).astype(np.float32)
    for r in range(R):  # what the kernel must never read: the pads and the positions past prefix_len
        kc[r, :, :start[r]] = vc[r, :, :start[r]] = np.nan
    kc[:, :, plen:] = vc[:, :, plen:] = np.nan
    old = mmu.get_num_threads()
    mmu.set_num_threads(threads)
    try:
        with mmu.no_grad():
            got = cached_block_attention(mmu.tensor(z), hq, hkv, mmu.tensor(kc), mmu.tensor(vc), start, plen,
                                         query_rows=rows).numpy()
            scaled = cached_block_attention(mmu.tensor(z), hq, hkv, mmu.tensor(kc), mmu.tensor(vc), start, plen,
                                            query_rows=rows, scale=0.3).numpy()
    finally:
        mmu.set_num_threads(old)
    want_rows = np.arange(L) if rows is None else np.array(rows)
    assert got.shape == (R, len(want_rows), hq * D)
    np.testing.assert_allclose(got, reference(z, hq, hkv, kc, vc, start, plen, want_rows, D ** -0.5),
                               rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(scaled, reference(z, hq, hkv, kc, vc, start, plen, want_rows, 0.3),
                               rtol=1e-5, atol=2e-6)


def test_equals_sdpa_over_the_cache_with_a_padding_mask():
    """The path it replaces: the block's keys written into the cache, a mask hiding the pads, sdpa,
    the output permuted into (R, L, H·D)."""
    rng = np.random.default_rng(7)
    R, hq, hkv, L, D, plen = 2, 4, 2, 11, 16, 6
    start = np.array([2, 5])
    z = rng.standard_normal((R, hq + 2 * hkv, L, D)).astype(np.float32)
    kc = rng.standard_normal((R, hkv, plen + L, D)).astype(np.float32)
    vc = rng.standard_normal((R, hkv, plen + L, D)).astype(np.float32)
    with mmu.no_grad():
        got = cached_block_attention(mmu.tensor(z), hq, hkv, mmu.tensor(kc), mmu.tensor(vc), start, plen).numpy()
        k, v = kc.copy(), vc.copy()
        k[:, :, plen:], v[:, :, plen:] = z[:, hq:hq + hkv], z[:, hq + hkv:]
        mask = np.arange(plen + L)[None, None, None, :] >= start[:, None, None, None]
        ref = F.scaled_dot_product_attention(mmu.tensor(np.ascontiguousarray(z[:, :hq])), mmu.tensor(k), mmu.tensor(v),
                                             attn_mask=mmu.tensor(np.broadcast_to(mask, (R, 1, L, plen + L)).copy()),
                                             enable_gqa=True).numpy()
    np.testing.assert_allclose(got, ref.transpose(0, 2, 1, 3).reshape(R, L, hq * D), rtol=0, atol=2e-6)


def test_errors():
    z = mmu.zeros(2, 12, 5, 8)  # hq 4 + 2·hkv 4
    kc = mmu.zeros(2, 4, 10, 8)
    start = np.array([0, 3])
    with mmu.no_grad():
        with pytest.raises(ValueError, match=r"attention_cached: heads must be \(R, num_heads \+ 2 num_kv_heads = 12"):
            cached_block_attention(mmu.zeros(2, 11, 5, 8), 4, 4, kc, kc, start, 6)
        with pytest.raises(ValueError, match="attention_cached: num_heads 3 must be a multiple of num_kv_heads 2"):
            cached_block_attention(mmu.zeros(2, 7, 5, 8), 3, 2, kc, kc, start, 6)
        with pytest.raises(ValueError, match=r"attention_cached: k_cache and v_cache must both be \(R 2, num_kv_heads 4"):
            cached_block_attention(z, 4, 4, kc, mmu.zeros(2, 4, 9, 8), start, 6)
        with pytest.raises(ValueError, match=r"attention_cached: prefix_len must be in \[0, 10\]"):
            cached_block_attention(z, 4, 4, kc, kc, start, 11)
        with pytest.raises(ValueError, match=r"attention_cached: prefix_start\[1\] = 7 is outside \[0, prefix_len 6\]"):
            cached_block_attention(z, 4, 4, kc, kc, np.array([0, 7]), 6)
        with pytest.raises(ValueError, match=r"attention_cached: prefix_start must be \(R = 2,\)"):
            cached_block_attention(z, 4, 4, kc, kc, np.array([0]), 6)
        with pytest.raises(ValueError, match=r"attention_cached: query_rows\[1\] = 5 is outside \[0, L = 5\)"):
            cached_block_attention(z, 4, 4, kc, kc, start, 6, query_rows=[0, 5])
        with pytest.raises(ValueError, match="attention_cached: scale must be > 0"):
            cached_block_attention(z, 4, 4, kc, kc, start, 6, scale=0.0)
        with pytest.raises(TypeError, match="cached_block_attention: prefix_start must be integer"):
            cached_block_attention(z, 4, 4, kc, kc, np.array([0.0, 1.0]), 6)
        with pytest.raises(TypeError, match="cached_block_attention: heads must be an mmu Tensor"):
            cached_block_attention(np.zeros((2, 12, 5, 8), np.float32), 4, 4, kc, kc, start, 6)
    w = mmu.zeros(2, 12, 5, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="cached_block_attention: inference only"):
        cached_block_attention(w, 4, 4, kc, kc, start, 6)


# ------------------------------------------------ linear layers with a fused epilogue (csrc/ops/linear_post.c)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_epilogues_equal_linear_then_gelu_or_add(bias):
    from mmu import _C
    rng = np.random.default_rng(3)
    x = mmu.tensor(rng.standard_normal((2, 7, 12)).astype(np.float32))
    w = mmu.tensor(rng.standard_normal((20, 12)).astype(np.float32))
    b = mmu.tensor(rng.standard_normal(20).astype(np.float32)) if bias else None
    acc0 = rng.standard_normal((2, 7, 20)).astype(np.float32)
    acc = mmu.tensor(acc0.copy())
    with mmu.no_grad():
        y = F.linear(x, w, b)
        np.testing.assert_allclose(_C.linear_gelu_tanh(x, w, b).numpy(), F.gelu(y, approximate="tanh").numpy(),
                                   rtol=1e-5, atol=1e-6)
        assert _C.linear_add_(acc, x, w, b) is None
    np.testing.assert_allclose(acc.numpy(), acc0 + y.numpy(), rtol=1e-5, atol=1e-5)


def test_linear_epilogue_errors():
    from mmu import _C
    x, w = mmu.zeros(3, 4), mmu.zeros(5, 4)
    with pytest.raises(ValueError, match=r"linear_gelu_tanh: x must be \(\.\.\., IN = 4\)"):
        _C.linear_gelu_tanh(mmu.zeros(3, 5), w, None)
    with pytest.raises(ValueError, match=r"linear_gelu_tanh: bias must be \(OUT = 5,\)"):
        _C.linear_gelu_tanh(x, w, mmu.zeros(4))
    with pytest.raises(ValueError, match=r"linear_add_: acc must be x's shape \(3, 4\) with the last dim OUT = 5"):
        _C.linear_add_(mmu.zeros(3, 4), x, w, None)
    with pytest.raises(ValueError, match="linear_add_: acc must not share memory with x"):
        _C.linear_add_(x, x, mmu.zeros(4, 4), None)
    with pytest.raises(TypeError, match="linear_add_: acc must be an mmu Tensor"):
        _C.linear_add_(np.zeros((3, 5), np.float32), x, w, None)


def test_image_block_with_an_mlp_that_is_not_tanh_gelu():
    """ImageLogits' own walk fuses fc1 + tanh-GELU only where the MLP is that; another activation runs the
    MLP module as it is, and the logits still equal lm(block, cache=...)'s."""
    from mmu.models.show_o import ShowO, ShowOConfig
    from mmu.models.show_o import inference as I
    cfg = ShowOConfig(llm_vocab_size=30, codebook_size=16, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=3,
                      num_heads=4, init_std=0.3)
    mmu.manual_seed(4)
    m = ShowO(cfg)
    m.eval()
    m.lm.layers[1].mlp.activation = "gelu"  # exact erf GELU in the middle layer
    assert I._gelu_tanh_mlp(m.lm.layers[0].mlp) and not I._gelu_tanh_mlp(m.lm.layers[1].mlp)
    prefix = I.t2i_prefix(cfg, [[5, 6, 7], [8]])
    codes = np.full((2, cfg.num_vq_tokens), cfg.mask_token_id, np.int64)
    codes[:, :5] = 3
    ours = I.ImageLogits(m, prefix, guidance_scale=1.5)
    assert ours._own_layers
    reference = I.ImageLogits(m, prefix, guidance_scale=1.5)
    reference._own_layers = False
    np.testing.assert_allclose(ours(codes).numpy(), reference(codes).numpy(), rtol=0, atol=1e-5)
    m.lm.layers[1].mlp.activation = "gelu_tanh"
    tanh = I.ImageLogits(m, prefix, guidance_scale=1.5)(codes).numpy()
    assert np.abs(tanh - ours(codes).numpy()).max() > 1e-4  # the activation was really the erf GELU


def test_out_of_range_ints_are_value_errors():
    z, kc, start = mmu.zeros(2, 12, 5, 8), mmu.zeros(2, 4, 10, 8), np.array([0, 3])
    with mmu.no_grad():
        with pytest.raises(ValueError, match=r"cached_block_attention: num_heads and num_kv_heads must be in \[1, 2\*\*31\)"):
            cached_block_attention(z, 2 ** 62, 2 ** 62, kc, kc, start, 6)
        with pytest.raises(ValueError, match="cached_block_attention: prefix_len must be >= 0"):
            cached_block_attention(z, 4, 4, kc, kc, start, 2 ** 70)
        with pytest.raises(TypeError, match="cached_block_attention: query_rows must be integer"):
            cached_block_attention(z, 4, 4, kc, kc, start, 6, query_rows=[2 ** 70])
