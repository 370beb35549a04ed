"""F.qkv_heads (a fused projection's heads with QK-norm and RoPE in one pass) and F.attention_of_heads
(attention reading q, k, v in place from those heads), against the unfused composition they replace
(reshape + permute + split + layer_norm / rms_norm + apply_rotary + scaled_dot_product_attention):
outputs bit for bit, every gradient to rounding, for LayerNorm / RMSNorm / no norm, per-row RoPE
tables, no RoPE, GQA, causal and explicit masks; nn.Attention takes this path (its torch twins in
test_transformer.py check it against torch); bad arguments are named errors. The float64 reference
and finite differences of both ops are in test_op_table.OP_CASES."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import nn

CASES = [  # B, L, H, Hkv, D, norm, R, per-row tables, masking
    (2, 7, 2, 2, 8, "layernorm", 4, False, "bool"),
    (2, 5, 4, 2, 8, "rmsnorm", 8, True, "causal"),
    (1, 6, 2, 1, 4, None, 0, False, "none"),
    (2, 9, 3, 3, 8, "layernorm", 0, True, "float"),
    (3, 70, 2, 2, 16, "layernorm", 8, False, "causal_and_bool"),  # more than one 64-row block
]


def _run(case, fused):
    b, l, h, hkv, d, norm, R, perb, masking = case
    rng = np.random.default_rng(0)
    H = h + 2 * hkv
    y = rng.standard_normal((b, l, H * d)).astype(np.float32)
    ws = [rng.standard_normal(d).astype(np.float32) if norm else None for _ in range(4)]
    if norm == "rmsnorm":
        ws[1] = ws[3] = None
    cos = sin = None
    if R:
        pos = np.arange(b * l).reshape(b, l) if perb else np.arange(l)
        cos, sin = F.rotary_cos_sin(pos.reshape(-1), R)
        if perb:
            cos, sin = cos.reshape(b, 1, l, R), sin.reshape(b, 1, l, R)
    allowed = rng.random((b, 1, l, l)) < 0.7
    allowed[..., np.arange(l), np.arange(l)] = True
    mask = {"bool": allowed, "float": np.where(allowed, 0.0, -np.inf).astype(np.float32)
            + rng.normal(size=(b, 1, l, l)).astype(np.float32), "causal_and_bool": allowed}.get(masking)
    causal = masking.startswith("causal")
    g = rng.standard_normal((b, h, l, d)).astype(np.float32)
    yt = mmu.tensor(y, requires_grad=True)
    wt = [mmu.tensor(w, requires_grad=True) if w is not None else None for w in ws]
    mt = None if mask is None else mmu.tensor(mask)
    if fused:
        z = F.qkv_heads(yt, h, hkv, norm, *wt, eps=1e-5, cos=cos, sin=sin)
        o = F.attention_of_heads(z, h, hkv, attn_mask=mt, is_causal=causal)
    else:
        q, k, v = yt.reshape(b, l, H, d).permute(0, 2, 1, 3).split([h, hkv, hkv], dim=1)
        if norm == "layernorm":
            q, k = F.layer_norm(q, (d,), wt[0], wt[1]), F.layer_norm(k, (d,), wt[2], wt[3])
        elif norm == "rmsnorm":
            q, k = F.rms_norm(q, (d,), wt[0], 1e-5), F.rms_norm(k, (d,), wt[2], 1e-5)
        if R:
            q, k = F.apply_rotary(q, cos, sin), F.apply_rotary(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mt, is_causal=causal, enable_gqa=hkv != h)
    (o * mmu.tensor(g)).sum().backward()
    return o.numpy().copy(), yt.grad.numpy().copy(), [None if w is None else w.grad.numpy().copy() for w in wt]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[5]}-R{c[6]}-{c[8]}-gqa{c[2] != c[3]}" for c in CASES])
def test_fused_heads_and_attention_equal_the_unfused_composition(case):
    out, dy, dw = _run(case, True)
    want_out, want_dy, want_dw = _run(case, False)
    np.testing.assert_array_equal(out, want_out)  # the same row kernels in the same order
    np.testing.assert_allclose(dy, want_dy, rtol=0, atol=1e-6 * np.abs(want_dy).max())
    # sums over rows in other blocks: rounding only, relative to the largest norm-weight gradient (a key bias
    # off the rotated dims has a zero gradient up to rounding: softmax ignores a constant shift of a row)
    scale = max([np.abs(w).max() for w in want_dw if w is not None] + [1e-6])
    for got, want in zip(dw, want_dw):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


def test_attention_layer_takes_the_fused_path_and_keeps_the_general_one_for_caches():
    """nn.Attention without a cache runs qkv_heads + attention_of_heads, with a cache (or dropout in
    training) the general path, with the same outputs."""
    mmu.manual_seed(0)
    attn = nn.Attention(16, 2, qk_norm="layernorm", rotary_fraction=0.5)
    x = mmu.tensor(np.random.default_rng(1).standard_normal((2, 5, 16)).astype(np.float32))
    calls = []
    real = F.qkv_heads

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)
    F.qkv_heads = spy
    try:
        full = attn(x, is_causal=True).numpy()
        assert calls == [(2, 5, 48)]
        with mmu.no_grad():
            cached = attn(x, is_causal=True, cache=nn.KVCache(1, 2, 2, 5, 8)).numpy()
        assert calls == [(2, 5, 48)]
    finally:
        F.qkv_heads = real
    np.testing.assert_allclose(cached, full, rtol=0, atol=1e-6)


def test_arguments_are_checked():
    y = mmu.tensor(np.zeros((2, 3, 16), np.float32))
    w = mmu.tensor(np.ones(4, np.float32))
    for call, err, msg in [
        (lambda: F.qkv_heads(y, 2, 2), ValueError, r"qkv_heads: qkv must be \(B, L, \(num_heads \+ 2 num_kv_heads\)"),
        (lambda: F.qkv_heads(y, 2, 1, "batchnorm"), ValueError, "qkv_heads: norm must be"),
        (lambda: F.qkv_heads(y, 2, 1, None, w), ValueError, "qkv_heads: norm weights are given without a norm"),
        (lambda: F.qkv_heads(y, 2, 1, "rmsnorm", w, w), ValueError, "qkv_heads: rmsnorm takes no bias"),
        (lambda: F.qkv_heads(y, 2, 1, "layernorm", mmu.tensor(np.ones(3, np.float32))), ValueError,
         r"qkv_heads: q_weight must be \(head_dim=4,\)"),
        (lambda: F.qkv_heads(y, 2, 1, cos=mmu.tensor(np.ones((3, 2), np.float32))), ValueError,
         "qkv_heads: give both cos and sin"),
        (lambda: F.qkv_heads(y, 2, 1, cos=mmu.tensor(np.ones((4, 2), np.float32)),
                             sin=mmu.tensor(np.ones((4, 2), np.float32))), ValueError, r"qkv_heads: cos/sin must be \(L=3"),
        (lambda: F.qkv_heads(y, 0, 1), ValueError, "qkv_heads: num_heads and num_kv_heads must be >= 1"),
        (lambda: F.qkv_heads(y, 2.0, 1), TypeError, "qkv_heads: num_heads and num_kv_heads must be ints"),
        (lambda: F.attention_of_heads(mmu.tensor(np.zeros((2, 4, 3, 4), np.float32)), 2, 2), ValueError,
         r"attention_of_heads: the heads must be \(B, num_heads \+ 2 num_kv_heads = 6, L, E\)"),
        (lambda: F.attention_of_heads(mmu.tensor(np.zeros((2, 5, 3, 4), np.float32)), 3, 2), ValueError,
         r"attention_of_heads: num_kv_heads \(2\) must divide num_heads \(3\)"),
        (lambda: F.attention_of_heads(mmu.tensor(np.zeros((2, 4, 3, 4), np.float32)), 2, 1,
                                      attn_mask=mmu.tensor(np.zeros((3, 3), np.float32), requires_grad=True)),
         ValueError, "attention_of_heads: attn_mask must not require grad"),
        (lambda: F.attention_of_heads(mmu.tensor(np.zeros((2, 4, 3, 4), np.float32)), 2, 1,
                                      attn_mask=mmu.tensor(np.zeros((5, 5), np.bool_))),
         ValueError, "attn_mask of shape"),
        (lambda: F.attention_of_heads(mmu.tensor(np.zeros((2, 4, 3, 4), np.float32)), 2, 1, is_causal=1),
         TypeError, "attention_of_heads: is_causal must be a bool"),
    ]:
        with pytest.raises(err, match=msg):
            call()


def test_norm_that_is_not_a_name_is_a_clear_error():
    # the API fuzz passed an array as norm: an unhashable TypeError that did not name qkv_heads
    qkv = mmu.tensor(np.zeros((2, 3, 12), np.float32))
    with pytest.raises(ValueError, match="qkv_heads: norm must be"):
        F.qkv_heads(qkv, 2, norm=np.zeros((2, 3)))
