"""scaled_dot_product_attention and rotary embeddings: forward vs float64 NumPy (materialised
softmax), gradients vs finite differences and torch, every mask kind, block boundaries,
dropout, bad inputs."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from gradcheck import assert_close, check_mmu_grads, numeric_grad, torch_or_skip

BLOCK = 64  # the kernel's query / key block size: sizes around it cross block boundaries


# ---------------------------------------------------------------- references

def ref_weights(q, k, mask=None, is_causal=False, scale=None):
    """float64 softmax(q kᵀ·scale + bias); a row with no visible key is all 0 (torch 2.13)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / np.sqrt(E) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if is_causal:
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + np.asarray(mask, np.float64)
    mx = np.max(s, axis=-1, keepdims=True)
    dead = ~np.isfinite(mx)
    e = np.exp(s - np.where(dead, 0.0, mx))
    e = np.where(dead, 0.0, e)
    tot = e.sum(-1, keepdims=True)
    return e / np.where(tot == 0, 1.0, tot)


def ref_sdpa(q, k, v, mask=None, is_causal=False, scale=None, keep=None):
    p = ref_weights(q, k, mask, is_causal, scale)
    if keep is not None:
        p = p * keep
    return p @ np.asarray(v, np.float64)


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def run_mmu(q, k, v, mask=None, g=None, **kw):
    tq, tk, tv = (mmu.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else mmu.tensor(mask, requires_grad=mask.dtype == np.float32)
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, **kw)
    grads = None
    if g is not None:
        out.backward(mmu.tensor(g))
        grads = [t.grad.numpy().copy() for t in (tq, tk, tv)]
        if tm is not None and tm.requires_grad:
            grads.append(tm.grad.numpy().copy())
    return out.numpy().copy(), grads


def run_torch(q, k, v, mask=None, g=None, **kw):
    torch = torch_or_skip()
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None
    if mask is not None:
        tm = torch.tensor(mask)
        if mask.dtype == np.float32:
            tm.requires_grad_(True)
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, **kw)
    out.backward(torch.tensor(g))
    grads = [t.grad.numpy() for t in (tq, tk, tv)]
    if tm is not None and tm.requires_grad:
        grads.append(tm.grad.numpy())
    return out.detach().numpy(), grads


# ---------------------------------------------------------------- masks of the models

def omni_mask(n_text, n_img, n_pad):
    """Show-o omni-attention: causal text, bidirectional image tokens (which see the text
    before them), then causal text; n_pad trailing tokens nobody attends to."""
    n = n_text + n_img + n_text + n_pad
    i = np.arange(n)
    m = i[None, :] <= i[:, None]
    m[n_text:n_text + n_img, n_text:n_text + n_img] = True
    m[:, n - n_pad:] = False if n_pad else m[:, n - n_pad:]
    return m


def window_mask(h, w, r):
    """Windowed spatial attention on an h x w grid: |drow| <= r and |dcol| <= r."""
    y, x = np.divmod(np.arange(h * w), w)
    return (np.abs(y[:, None] - y[None]) <= r) & (np.abs(x[:, None] - x[None]) <= r)


def temporal_mask(frames, per):
    """Causal temporal attention: a token sees every token of its frame and earlier frames."""
    f = np.arange(frames * per) // per
    return f[None, :] <= f[:, None]


def prefix_mask(L, S):
    """L new queries after a cached prefix of S - L keys: query i sits at position S - L + i."""
    return np.arange(S)[None, :] <= (S - L + np.arange(L))[:, None]


# ---------------------------------------------------------------- forward + backward vs torch

SHAPES = [
    # (batch dims, L, S, E, Ev)
    ((2, 3), 5, 7, 8, 8),
    ((2, 2), BLOCK + 1, 2 * BLOCK + 3, 64, 64),  # blocks with ragged tails
    ((1, 2), 2 * BLOCK + 5, BLOCK - 1, 40, 24),  # E, Ev not multiples of 16, Ev != E
    ((3,), 1, 9, 16, 16),                        # L = 1
    ((2, 1), 9, 1, 16, 8),                       # S = 1
    ((), 70, 70, 32, 32),                        # no batch dims
]


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_vs_reference_and_torch(shape, is_causal):
    bd, L, S, E, Ev = shape
    rng = np.random.default_rng(1)
    q, k, v, g = rnd(rng, *bd, L, E), rnd(rng, *bd, S, E), rnd(rng, *bd, S, Ev), rnd(rng, *bd, L, Ev)
    out, grads = run_mmu(q, k, v, g=g, is_causal=is_causal)
    assert_close(out, ref_sdpa(q, k, v, is_causal=is_causal), 1e-4, 1e-5, "out vs float64")
    t_out, t_grads = run_torch(q, k, v, g=g, is_causal=is_causal)
    assert_close(out, t_out, 1e-4, 1e-5, "out vs torch")
    for name, a, b in zip("qkv", grads, t_grads):
        assert_close(a, b, 1e-3, 1e-4, f"d{name} vs torch")


def test_gradients_finite_differences():
    rng = np.random.default_rng(2)
    q, k, v = rnd(rng, 2, 3, 4), rnd(rng, 2, 5, 4), rnd(rng, 2, 5, 3)
    check_mmu_grads(lambda m, q, k, v: m.F.scaled_dot_product_attention(q, k, v), ref_sdpa, [q, k, v])
    check_mmu_grads(lambda m, q, k, v: m.F.scaled_dot_product_attention(q, k, v, is_causal=True),
                    lambda q, k, v: ref_sdpa(q, k, v, is_causal=True), [q, k, v])
    mask = rng.random((3, 5)) < 0.6
    mask[:, 0] = True
    check_mmu_grads(lambda m, q, k, v: m.F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.7),
                    lambda q, k, v: ref_sdpa(q, k, v, mask, scale=0.7), [q, k, v])


def test_float_mask_gradient():
    rng = np.random.default_rng(3)
    q, k, v, fm = rnd(rng, 2, 3, 4), rnd(rng, 2, 5, 4), rnd(rng, 2, 5, 3), rnd(rng, 1, 3, 5)
    check_mmu_grads(lambda m, q, k, v, fm: m.F.scaled_dot_product_attention(q, k, v, attn_mask=fm),
                    lambda q, k, v, fm: ref_sdpa(q, k, v, fm), [q, k, v, fm])


# ---------------------------------------------------------------- masks

def _mask_cases():
    rng = np.random.default_rng(4)
    B, H, L, S = 2, 2, 70, 90
    per_sample = rng.random((B, 1, L, S)) < 0.5
    padding = np.ones((B, 1, 1, S), bool)
    padding[0, ..., 60:] = False
    padding[1, ..., 85:] = False
    om = omni_mask(10, 64, 3)
    n_om = om.shape[0]
    sparse = np.kron(rng.random((3, 3)) < 0.5, np.ones((64, 64), bool))[:130, :130] | np.eye(130, dtype=bool)
    return [
        ("bool_LS", (B, H), L, S, rng.random((L, S)) < 0.3),
        ("float_block_sparse", (1, 2), 130, 130, np.where(sparse, 0.0, -np.inf).astype(np.float32)),
        ("per_head_mask", (2, 3), 70, 70, rng.random((2, 3, 70, 70)) < 0.5),
        ("bool_per_sample", (B, H), L, S, per_sample),
        ("padding", (B, H), L, S, padding),
        ("float_additive", (B, H), L, S, rnd(rng, B, 1, L, S)),
        ("float_with_-inf", (B, H), L, S, np.where(rng.random((L, S)) < 0.4, -np.inf, 0.5).astype(np.float32)),
        ("omni", (B, H), n_om, n_om, np.broadcast_to(om, (B, 1, n_om, n_om)).copy()),
        ("window_8x9", (1, 2), 72, 72, window_mask(8, 9, 1)),
        ("temporal", (1, 2), 80, 80, temporal_mask(5, 16)),
        ("prefix_Lq_lt_Lk", (B, H), 20, 150, prefix_mask(20, 150)),
        ("block_sparse", (1, 1), 130, 130, np.kron(rng.random((3, 3)) < 0.5, np.ones((64, 64), bool))[:130, :130]
         | np.eye(130, dtype=bool)),
        ("row_broadcast_1xS", (B, H), L, S, rng.random((1, S)) < 0.5),
        ("col_broadcast_Lx1", (B, H), L, S, rng.random((L, 1)) < 0.5),
    ]


@pytest.mark.parametrize("name,bd,L,S,mask", _mask_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_masks(name, bd, L, S, mask):
    rng = np.random.default_rng(5)
    E = 32
    q, k, v, g = rnd(rng, *bd, L, E), rnd(rng, *bd, S, E), rnd(rng, *bd, S, E), rnd(rng, *bd, L, E)
    out, grads = run_mmu(q, k, v, mask, g)
    assert_close(out, ref_sdpa(q, k, v, mask), 1e-4, 1e-5, f"{name}: out vs float64")
    t_out, t_grads = run_torch(q, k, v, mask, g)
    assert_close(out, t_out, 1e-4, 1e-5, f"{name}: out vs torch")
    for what, a, b in zip(["dq", "dk", "dv", "dmask"], grads, t_grads):
        assert_close(a, b, 1e-3, 1e-4, f"{name}: {what} vs torch")


def test_fully_masked_rows_give_zero():
    # torch 2.13 (math path and CPU flash kernel alike) returns 0 for a query row that can
    # see no key, with zero gradients; mmu does the same (not the NaN of a plain softmax)
    rng = np.random.default_rng(6)
    q, k, v, g = rnd(rng, 2, 4, 8), rnd(rng, 2, 5, 8), rnd(rng, 2, 5, 8), rnd(rng, 2, 4, 8)
    mask = np.ones((4, 5), bool)
    mask[1] = False
    out, grads = run_mmu(q, k, v, mask, g)
    assert np.all(out[:, 1] == 0) and np.all(np.isfinite(out))
    assert np.all(grads[0][:, 1] == 0)
    t_out, t_grads = run_torch(q, k, v, mask, g)
    assert_close(out, t_out, 1e-5, 1e-6)
    for a, b in zip(grads, t_grads):
        assert_close(a, b, 1e-4, 1e-5)
    fmask = np.where(mask, 0.0, -np.inf).astype(np.float32)
    out2, _ = run_mmu(q, k, v, fmask)
    assert_close(out2, out, 1e-6, 1e-7)


def test_causal_with_more_queries_than_keys_and_keys_past_the_diagonal():
    rng = np.random.default_rng(7)
    for L, S in [(130, 70), (70, 130), (3, 200)]:
        q, k, v, g = rnd(rng, 1, 2, L, 16), rnd(rng, 1, 2, S, 16), rnd(rng, 1, 2, S, 16), rnd(rng, 1, 2, L, 16)
        out, grads = run_mmu(q, k, v, g=g, is_causal=True)
        assert_close(out, ref_sdpa(q, k, v, is_causal=True), 1e-4, 1e-5)
        if L < S:  # keys no query can see get no gradient
            assert np.all(grads[1][..., L:, :] == 0) and np.all(grads[2][..., L:, :] == 0)


def test_batch_broadcasting():
    rng = np.random.default_rng(8)
    q, k, v, g = rnd(rng, 3, 2, 6, 8), rnd(rng, 1, 2, 7, 8), rnd(rng, 2, 7, 8), rnd(rng, 3, 2, 6, 8)
    out, grads = run_mmu(q, k, v, g=g)
    t_out, t_grads = run_torch(q, k, v, g=g)
    assert out.shape == (3, 2, 6, 8)
    assert_close(out, t_out, 1e-4, 1e-5)
    for a, b in zip(grads, t_grads):
        assert a.shape == b.shape
        assert_close(a, b, 1e-3, 1e-4)


def test_scale_and_ev():
    rng = np.random.default_rng(9)
    q, k, v = rnd(rng, 2, 5, 8), rnd(rng, 2, 6, 8), rnd(rng, 2, 6, 3)
    for scale in (0.0, 0.3, 2.0):
        out, _ = run_mmu(q, k, v, scale=scale)
        assert_close(out, ref_sdpa(q, k, v, scale=scale), 1e-4, 1e-5)


def test_deterministic_run_to_run():
    rng = np.random.default_rng(10)
    q, k, v, g = rnd(rng, 1, 1, 300, 64), rnd(rng, 1, 1, 300, 64), rnd(rng, 1, 1, 300, 64), rnd(rng, 1, 1, 300, 64)
    a = run_mmu(q, k, v, g=g, is_causal=True)
    b = run_mmu(q, k, v, g=g, is_causal=True)
    assert np.array_equal(a[0], b[0]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def test_no_grad_and_non_contiguous_inputs_from_numpy():
    rng = np.random.default_rng(11)
    q = rnd(rng, 4, 8)
    with mmu.no_grad():
        out = F.scaled_dot_product_attention(mmu.tensor(q), mmu.tensor(q), mmu.tensor(q))
    assert out.grad_fn is None if hasattr(out, "grad_fn") else True
    assert_close(out.numpy(), ref_sdpa(q, q, q), 1e-4, 1e-5)


# ---------------------------------------------------------------- dropout

def _dropout_keep(seed, p, shape_bhls):
    """The keep-scale Z (0 or 1/(1-p)) a seed gives, read through the op itself: q = k = 0
    makes the weights uniform 1/S, v = identity then returns Z/S."""
    *bd, L, S = shape_bhls
    mmu.manual_seed(seed)
    z = np.zeros((*bd, L, 4), np.float32)
    v = np.broadcast_to(np.eye(S, dtype=np.float32), (*bd, S, S)).copy()
    out = F.scaled_dot_product_attention(mmu.tensor(z), mmu.tensor(np.zeros((*bd, S, 4), np.float32)),
                                         mmu.tensor(v), dropout_p=p)
    return out.numpy() * S


def test_dropout_deterministic_with_seed_and_unbiased():
    rng = np.random.default_rng(12)
    q, k, v = rnd(rng, 2, 70, 16), rnd(rng, 2, 80, 16), rnd(rng, 2, 80, 16)
    outs = []
    for seed in (5, 5, 6):
        mmu.manual_seed(seed)
        outs.append(run_mmu(q, k, v, dropout_p=0.3)[0])
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    keep = _dropout_keep(5, 0.3, (2, 70, 80))
    assert np.all((np.abs(keep) < 1e-5) | (np.abs(keep - 1 / 0.7) < 1e-4))
    assert abs((keep > 0).mean() - 0.7) < 0.03
    # the output is softmax weights times that same mask
    assert_close(outs[0], ref_sdpa(q, k, v, keep=keep), 1e-4, 1e-5)
    mmu.manual_seed(0)
    assert np.all(run_mmu(q, k, v, dropout_p=1.0)[0] == 0)


def test_dropout_gradient_matches_finite_differences():
    rng = np.random.default_rng(13)
    q, k, v = rnd(rng, 2, 3, 4), rnd(rng, 2, 5, 4), rnd(rng, 2, 5, 3)
    keep = _dropout_keep(42, 0.4, (2, 3, 5))

    def fn(m, q, k, v):
        mmu.manual_seed(42)
        return m.F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)

    check_mmu_grads(fn, lambda q, k, v: ref_sdpa(q, k, v, keep=keep), [q, k, v])


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs():
    rng = np.random.default_rng(14)
    q, k, v = rnd(rng, 2, 3, 4, 8), rnd(rng, 2, 3, 5, 8), rnd(rng, 2, 3, 5, 8)
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(ValueError, match="last dim"):
        sdpa(q, k[..., :4], v)
    with pytest.raises(ValueError, match="sequence length"):
        sdpa(q, k, v[..., :4, :])
    with pytest.raises(ValueError):
        sdpa(q, rnd(rng, 3, 3, 5, 8), rnd(rng, 3, 3, 5, 8))  # batch dims 2 vs 3
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=np.ones((3, 5), bool))
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=np.ones((4, 2, 1, 4, 5), bool))  # more batch than the output
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=np.ones((4, 5), np.int64))
    with pytest.raises(ValueError, match="dropout_p"):
        sdpa(q, k, v, dropout_p=1.5)
    with pytest.raises(TypeError):
        sdpa(q, k, v, scale="big")
    with pytest.raises(ValueError, match="at least 2-D"):
        sdpa(q[0, 0, 0], k[0, 0, 0], v[0, 0, 0])
    with pytest.raises(TypeError):
        sdpa(q.astype(np.int64), k, v)


# ---------------------------------------------------------------- rotary embeddings

def ref_rotary_tables(pos, D, base=10000.0):
    pos = np.asarray(pos, np.float64)
    if pos.ndim == 1:
        inv = base ** (-np.arange(0, D, 2) / D)
        f = pos[:, None] * inv
    else:
        inv = base ** (-np.arange(0, D // 2, 2) / (D // 2))
        f = np.concatenate([pos[:, :1] * inv, pos[:, 1:] * inv], 1)
    emb = np.concatenate([f, f], 1)
    return np.cos(emb), np.sin(emb)


def ref_rotary(x, c, s):
    x = np.asarray(x, np.float64)
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], -1)
    return x * c + rot * s


def test_rotary_tables_and_apply_vs_numpy():
    rng = np.random.default_rng(15)
    L, D = 11, 16
    c, s = F.rotary_cos_sin(np.arange(L), D)
    rc, rs = ref_rotary_tables(np.arange(L), D)
    assert c.shape == (L, D)
    assert_close(c.numpy(), rc, 1e-6, 1e-6)
    assert_close(s.numpy(), rs, 1e-6, 1e-6)
    x = rnd(rng, 2, 3, L, D)
    out = F.apply_rotary(mmu.tensor(x), c, s)
    assert_close(out.numpy(), ref_rotary(x, rc, rs), 1e-5, 1e-5)
    # the pairs (j, j + D/2) are rotated: norms of pairs (hence of x) are preserved
    h = D // 2
    pn = lambda a: a[..., :h] ** 2 + a[..., h:] ** 2  # noqa: E731
    assert_close(pn(out.numpy()), pn(x), 1e-4, 1e-5)
    # positions as an mmu int64 tensor, base argument
    c2, _ = F.rotary_cos_sin(mmu.arange(L), D, base=500.0)
    assert_close(c2.numpy(), ref_rotary_tables(np.arange(L), D, 500.0)[0], 1e-6, 1e-6)


def test_rotary_relative_position():
    rng = np.random.default_rng(16)
    D, L = 32, 40
    c, s = F.rotary_cos_sin(np.arange(L), D)
    qv, kv = rnd(rng, D), rnd(rng, D)
    q = F.apply_rotary(mmu.tensor(np.tile(qv, (L, 1))), c, s).numpy().astype(np.float64)
    k = F.apply_rotary(mmu.tensor(np.tile(kv, (L, 1))), c, s).numpy().astype(np.float64)
    dots = q @ k.T
    for delta in (-5, 0, 3, 17):
        d = np.diagonal(dots, offset=-delta)  # pairs (m, n) with m - n = delta
        assert np.ptp(d) < 1e-3 * (1 + np.abs(d).max())


def test_rotary_gradient():
    rng = np.random.default_rng(17)
    c, s = F.rotary_cos_sin(np.arange(5) * 3, 8)
    cn, sn = c.numpy().astype(np.float64), s.numpy().astype(np.float64)
    x = rnd(rng, 2, 5, 8)
    check_mmu_grads(lambda m, x: m.F.apply_rotary(x, c, s), lambda x: ref_rotary(x, cn, sn), [x])
    torch = torch_or_skip()
    tx = torch.tensor(x, requires_grad=True)
    h = 4
    (tx * torch.tensor(c.numpy()) + torch.cat([-tx[..., h:], tx[..., :h]], -1) * torch.tensor(s.numpy())).sum().backward()
    mx = mmu.tensor(x, requires_grad=True)
    F.apply_rotary(mx, c, s).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), 1e-5, 1e-6)


def test_rotary_2d_grid():
    rng = np.random.default_rng(18)
    hgt, wid, D = 3, 4, 16
    rows, cols = np.divmod(np.arange(hgt * wid), wid)
    pos = np.stack([rows, cols], 1)
    c, s = F.rotary_cos_sin(pos, D)
    rc, rs = ref_rotary_tables(pos, D)
    assert_close(c.numpy(), rc, 1e-6, 1e-6)
    assert_close(s.numpy(), rs, 1e-6, 1e-6)
    # pairs j < D/4 follow the row, D/4 <= j < D/2 the column
    same_row = rows == rows[0]
    assert np.allclose(c.numpy()[same_row][:, : D // 4], c.numpy()[0, : D // 4])
    same_col = cols == cols[0]
    assert np.allclose(c.numpy()[same_col][:, D // 4: D // 2], c.numpy()[0, D // 4: D // 2])
    x = rnd(rng, 2, hgt * wid, D)
    assert_close(F.apply_rotary(mmu.tensor(x), c, s).numpy(), ref_rotary(x, rc, rs), 1e-5, 1e-5)
    # relative: the score depends only on (drow, dcol)
    qv, kv = rnd(rng, D), rnd(rng, D)
    q = F.apply_rotary(mmu.tensor(np.tile(qv, (hgt * wid, 1))), c, s).numpy().astype(np.float64)
    k = F.apply_rotary(mmu.tensor(np.tile(kv, (hgt * wid, 1))), c, s).numpy().astype(np.float64)
    # (row 1, col 1)->(row 0, col 0) and (row 2, col 3)->(row 1, col 2): same offset
    assert abs(q[1 * wid + 1] @ k[0] - q[2 * wid + 3] @ k[1 * wid + 2]) < 1e-4


def test_rotary_bad_inputs():
    c, s = F.rotary_cos_sin(np.arange(5), 8)
    with pytest.raises(ValueError):
        F.rotary_cos_sin(np.arange(5), 7)
    with pytest.raises(ValueError):
        F.rotary_cos_sin(np.zeros((5, 2)), 6)  # 2-D needs a multiple of 4
    with pytest.raises(ValueError):
        F.rotary_cos_sin(np.zeros((5, 3)), 8)
    with pytest.raises(TypeError):
        F.rotary_cos_sin(np.arange(5), 8.0)
    with pytest.raises(ValueError, match="cos/sin"):
        F.apply_rotary(np.zeros((2, 6, 8), np.float32), c, s)
    with pytest.raises(ValueError, match="even"):
        F.apply_rotary(np.zeros((2, 5, 7), np.float32), c, s)
    with pytest.raises(ValueError):
        F.apply_rotary(np.zeros((2, 5, 8), np.float32), c, s[:4])


def test_empty_and_nan():
    rng = np.random.default_rng(19)
    for qs, ks in [((2, 0, 8), (2, 5, 8)), ((2, 4, 8), (2, 0, 8)), ((0, 4, 8), (0, 5, 8))]:
        q, k = rnd(rng, *qs), rnd(rng, *ks)
        out, grads = run_mmu(q, k, k, g=np.ones(qs, np.float32))
        assert out.shape == qs and np.all(out == 0)
        assert grads[0].shape == qs and np.all(grads[0] == 0)
    # a NaN in a query row makes that row NaN (as torch), the others stay finite
    q, k = rnd(rng, 1, 4, 8), rnd(rng, 1, 5, 8)
    q[0, 1, 2] = np.nan
    out, _ = run_mmu(q, k, k)
    assert np.all(np.isnan(out[0, 1])) and np.all(np.isfinite(np.delete(out, 1, axis=1)))


def ref_grads(q, k, v, g, keep, scale=None):
    """Analytic float64 gradients of (softmax(q kᵀ·scale) ∘ keep) v."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, g))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = ref_weights(q, k, scale=scale)
    dv = np.swapaxes(p * keep, -1, -2) @ g
    dp = (g @ np.swapaxes(v, -1, -2)) * keep
    ds = p * (dp - np.sum(dp * p, -1, keepdims=True))
    return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, dv


def test_dropout_gradient_across_several_key_blocks_and_one_head():
    # one (batch·head) with several key blocks: the backward splits the keys between threads
    # and sums their partial dQ; the dropout mask must be regenerated identically in each part
    rng = np.random.default_rng(20)
    q, k, v, g = rnd(rng, 1, 70, 16), rnd(rng, 1, 150, 16), rnd(rng, 1, 150, 8), rnd(rng, 1, 70, 8)
    keep = _dropout_keep(7, 0.25, (1, 70, 150))
    mmu.manual_seed(7)
    out, grads = run_mmu(q, k, v, g=g, dropout_p=0.25)
    assert_close(out, ref_sdpa(q, k, v, keep=keep), 1e-4, 1e-5)
    for name, a, b in zip("qkv", grads, ref_grads(q, k, v, g, keep)):
        assert_close(a, b, 1e-3, 1e-4, f"d{name}")


@pytest.mark.parametrize("qs,ks,vs", [
    ((2, 6, 5, 8), (2, 2, 7, 8), (2, 2, 7, 4)),
    ((2, 6, 5, 8), (1, 2, 7, 8), (2, 1, 7, 4)),   # GQA together with batch broadcasting
    ((6, 5, 8), (3, 7, 8), (6, 7, 8)),            # unbatched (H, L, E)
    ((1, 4, 70, 16), (1, 2, 130, 16), (1, 2, 130, 16)),
])
def test_grouped_query_attention(qs, ks, vs):
    rng = np.random.default_rng(21)
    q, k, v = rnd(rng, *qs), rnd(rng, *ks), rnd(rng, *vs)
    g = rnd(rng, *qs[:-1], vs[-1])
    out, grads = run_mmu(q, k, v, g=g, enable_gqa=True, is_causal=True)
    t_out, t_grads = run_torch(q, k, v, g=g, enable_gqa=True, is_causal=True)
    assert_close(out, t_out, 1e-4, 1e-5)
    for name, a, b in zip("qkv", grads, t_grads):
        assert_close(a, b, 1e-3, 1e-4, f"d{name}")


def test_grouped_query_attention_errors():
    rng = np.random.default_rng(22)
    q, k = rnd(rng, 2, 6, 5, 8), rnd(rng, 2, 4, 7, 8)
    with pytest.raises(ValueError, match="divide"):
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
    with pytest.raises(ValueError):  # without enable_gqa, 6 vs 4 heads do not broadcast
        F.scaled_dot_product_attention(q, rnd(rng, 2, 2, 7, 8), rnd(rng, 2, 2, 7, 8))


# ---------------------------------------------------------------- cached attention: kv_len, query_offset

def ref_cached(q, kbuf, vbuf, kv_len, mask=None, is_causal=False, query_offset=0, scale=None):
    """float64 reference of attention over the first kv_len rows of a key/value buffer, query
    row i at key position query_offset + i; the mask (last dim kv_len or the buffer's) and
    the causal mask both apply."""
    k, v = kbuf[..., :kv_len, :], vbuf[..., :kv_len, :]
    L = q.shape[-2]
    causal = np.arange(kv_len)[None, :] <= (query_offset + np.arange(L))[:, None]
    if mask is not None:
        mask = mask[..., :kv_len] if mask.shape[-1] == kbuf.shape[-2] else mask
    if not is_causal:
        return ref_sdpa(q, k, v, mask, scale=scale)
    if mask is None:
        return ref_sdpa(q, k, v, causal, scale=scale)
    if mask.dtype == bool:
        return ref_sdpa(q, k, v, mask & causal, scale=scale)
    return ref_sdpa(q, k, v, np.asarray(mask, np.float64) + np.where(causal, 0.0, -np.inf), scale=scale)


def torch_cached(q, kbuf, vbuf, kv_len, mask=None, is_causal=False, query_offset=0, g=None, **kw):
    """torch on the equivalent inputs: the buffer sliced to kv_len, the causal part turned into
    an explicit mask (torch refuses is_causal with a mask, and aligns it top-left)."""
    torch = torch_or_skip()
    L = q.shape[-2]
    tq, tk, tv = (torch.tensor(np.ascontiguousarray(a), requires_grad=True)
                  for a in (q, kbuf[..., :kv_len, :], vbuf[..., :kv_len, :]))
    tm = full = None
    if mask is not None:
        tm = torch.tensor(mask[..., :kv_len] if mask.shape[-1] == kbuf.shape[-2] else mask)
        if mask.dtype == np.float32:
            tm.requires_grad_(True)
        full = tm
    if is_causal:
        causal = torch.tensor(np.arange(kv_len)[None, :] <= (query_offset + np.arange(L))[:, None])
        if full is None:
            full = causal
        elif mask.dtype == bool:
            full = full & causal
        else:
            full = full + torch.where(causal, 0.0, float("-inf"))
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=full, **kw)
    out.backward(torch.tensor(g))
    grads = [t.grad.numpy() for t in (tq, tk, tv)]
    if tm is not None and tm.requires_grad:
        grads.append(tm.grad.numpy())
    return out.detach().numpy(), grads


def _pad_grad(gr, S_buf):
    """A gradient of the first kv_len rows (dim -2) placed into zeros of the buffer's length."""
    out = np.zeros((*gr.shape[:-2], S_buf, gr.shape[-1]), gr.dtype)
    out[..., :gr.shape[-2], :] = gr
    return out


CACHED = [
    # (batch dims, L, S_buf, kv_len, E, Ev, query_offset)
    ((2, 3), 1, 12, 7, 8, 8, 6),                          # one decode step
    ((2, 2), 3, 12, 9, 8, 4, 6),                          # a chunk bottom-right aligned
    ((2, 2), 5, BLOCK + 9, BLOCK + 3, 16, 16, BLOCK - 2),  # the diagonal across a key block boundary
    ((1, 2), BLOCK + 2, 2 * BLOCK + 8, 2 * BLOCK + 1, 24, 40, BLOCK - 1),  # several query / key blocks
    ((3,), 4, 10, 10, 16, 16, 0),                         # kv_len = the buffer, top-left
    ((2,), 3, 9, 2, 8, 8, 9),                             # offset past kv_len: every key visible
]


@pytest.mark.parametrize("mask_kind", [None, "bool_kv", "bool_buf", "float_kv", "float_buf"])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("shape", CACHED, ids=str)
def test_cached_prefix_vs_reference_and_torch(shape, is_causal, mask_kind):
    bd, L, S_buf, kv_len, E, Ev, qo = shape
    rng = np.random.default_rng(30)
    q, kb, vb, g = rnd(rng, *bd, L, E), rnd(rng, *bd, S_buf, E), rnd(rng, *bd, S_buf, Ev), rnd(rng, *bd, L, Ev)
    mask = None
    if mask_kind is not None:
        Sm = kv_len if mask_kind.endswith("kv") else S_buf
        shape_m = (bd[0], *([1] * (len(bd) - 1)), L, Sm)  # per sample, broadcast over heads
        if mask_kind.startswith("bool"):
            mask = rng.random(shape_m) < 0.7
            mask[..., 0] = True
        else:
            mask = rnd(rng, *shape_m)
    # the buffer rows and mask columns past kv_len are never read: NaN there changes nothing
    kb[..., kv_len:, :] = np.nan
    vb[..., kv_len:, :] = np.nan
    if mask is not None and S_buf > kv_len and mask.shape[-1] == S_buf:
        mask[..., kv_len:] = False if mask.dtype == bool else np.float32(np.nan)
    kw = dict(is_causal=is_causal, query_offset=qo, kv_len=kv_len)
    out, grads = run_mmu(q, kb, vb, mask, g, **kw)
    assert_close(out, ref_cached(q, kb, vb, kv_len, mask, is_causal, qo), 1e-4, 1e-5, "out vs float64")
    t_out, t_grads = torch_cached(q, kb, vb, kv_len, mask, is_causal, qo, g)
    assert_close(out, t_out, 1e-4, 1e-5, "out vs torch")
    assert_close(grads[0], t_grads[0], 1e-3, 1e-4, "dq vs torch")
    # gradients of the buffer rows past kv_len are exactly zero
    assert_close(grads[1], _pad_grad(t_grads[1], S_buf), 1e-3, 1e-4, "dk vs torch")
    assert_close(grads[2], _pad_grad(t_grads[2], S_buf), 1e-3, 1e-4, "dv vs torch")
    assert np.all(grads[1][..., kv_len:, :] == 0) and np.all(grads[2][..., kv_len:, :] == 0)
    if mask is not None and mask.dtype == np.float32:
        dm = grads[3]
        assert dm.shape == mask.shape
        exp = np.zeros(mask.shape, np.float32)
        exp[..., :kv_len] = t_grads[3]
        assert_close(dm, exp, 1e-3, 1e-4, "dmask vs torch")


def test_cached_gradients_finite_differences():
    rng = np.random.default_rng(31)
    q, kb, vb = rnd(rng, 2, 2, 4), rnd(rng, 2, 6, 4), rnd(rng, 2, 6, 3)
    mask = rng.random((2, 1, 6)) < 0.7
    mask[..., 0] = True
    fm = rnd(rng, 2, 2, 6)
    sdpa = lambda m, *a, **kw: m.F.scaled_dot_product_attention(*a, **kw)  # noqa: E731
    check_mmu_grads(lambda m, q, k, v: sdpa(m, q, k, v, kv_len=4, query_offset=2, is_causal=True),
                    lambda q, k, v: ref_cached(q, k, v, 4, None, True, 2), [q, kb, vb])
    check_mmu_grads(lambda m, q, k, v: sdpa(m, q, k, v, attn_mask=mask, kv_len=5, query_offset=3, is_causal=True),
                    lambda q, k, v: ref_cached(q, k, v, 5, mask, True, 3), [q, kb, vb])
    check_mmu_grads(lambda m, q, k, v, fm: sdpa(m, q, k, v, attn_mask=fm, kv_len=5, query_offset=1, is_causal=True),
                    lambda q, k, v, fm: ref_cached(q, k, v, 5, fm, True, 1), [q, kb, vb, fm])


@pytest.mark.parametrize("L", [1, 3])
def test_cached_grouped_query_attention(L):
    # GQA with a cache: Hq = 6 query heads over 2 key/value heads, a left-padding mask (B, 1, 1, S_buf)
    rng = np.random.default_rng(32)
    B, Hq, Hk, S_buf, kv_len, E = 2, 6, 2, 20, 13, 16
    q, kb, vb, g = rnd(rng, B, Hq, L, E), rnd(rng, B, Hk, S_buf, E), rnd(rng, B, Hk, S_buf, E), rnd(rng, B, Hq, L, E)
    pad = np.ones((B, 1, 1, S_buf), bool)
    pad[1, ..., :4] = False
    kw = dict(is_causal=True, query_offset=kv_len - L, kv_len=kv_len, enable_gqa=True)
    out, grads = run_mmu(q, kb, vb, pad, g, **kw)
    rep = lambda a: np.repeat(a, Hq // Hk, axis=1)  # noqa: E731
    assert_close(out, ref_cached(q, rep(kb), rep(vb), kv_len, pad, True, kv_len - L), 1e-4, 1e-5, "out vs float64")
    t_out, t_grads = torch_cached(q, kb, vb, kv_len, pad, True, kv_len - L, g, enable_gqa=True)
    assert_close(out, t_out, 1e-4, 1e-5, "out vs torch")
    assert_close(grads[0], t_grads[0], 1e-3, 1e-4, "dq vs torch")
    assert_close(grads[1], _pad_grad(t_grads[1], S_buf), 1e-3, 1e-4, "dk vs torch")
    assert_close(grads[2], _pad_grad(t_grads[2], S_buf), 1e-3, 1e-4, "dv vs torch")


def test_chunked_prefill_and_decode_equal_full_causal_attention():
    # a cache filled chunk by chunk: each chunk attends to everything cached so far
    # (bottom-right causal through query_offset); the rows equal one full causal pass
    rng = np.random.default_rng(33)
    B, H, T, S_buf, E = 2, 3, 90, 128, 16
    q, k, v = rnd(rng, B, H, T, E), rnd(rng, B, H, T, E), rnd(rng, B, H, T, E)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True).numpy()
    kbuf, vbuf = np.zeros((B, H, S_buf, E), np.float32), np.zeros((B, H, S_buf, E), np.float32)
    kt, vt = mmu.tensor(kbuf), mmu.tensor(vbuf)  # one buffer, written in place between calls
    pos = 0
    for n in (70, 5, 1, 1, 13):
        kt.numpy()[:, :, pos:pos + n] = k[:, :, pos:pos + n]
        vt.numpy()[:, :, pos:pos + n] = v[:, :, pos:pos + n]
        out = F.scaled_dot_product_attention(mmu.tensor(q[:, :, pos:pos + n]), kt, vt, is_causal=True,
                                             query_offset=pos, kv_len=pos + n)
        assert_close(out.numpy(), full[:, :, pos:pos + n], 1e-5, 1e-6, f"chunk at {pos}")
        pos += n


def test_cached_with_dropout_matches_sliced():
    # the dropout stream is indexed over (b, i, j < kv_len): the same draw as on the sliced keys
    rng = np.random.default_rng(34)
    q, kb, vb = rnd(rng, 2, 3, 8), rnd(rng, 2, 11, 8), rnd(rng, 2, 11, 8)
    mmu.manual_seed(5)
    a = F.scaled_dot_product_attention(q, kb, vb, dropout_p=0.3, kv_len=7).numpy()
    mmu.manual_seed(5)
    b = F.scaled_dot_product_attention(q, np.ascontiguousarray(kb[:, :7]), np.ascontiguousarray(vb[:, :7]),
                                       dropout_p=0.3).numpy()
    assert_close(a, b, 1e-6, 1e-7)


def test_cached_zero_keys_and_bad_inputs():
    rng = np.random.default_rng(35)
    q, kb = rnd(rng, 2, 3, 8), rnd(rng, 2, 6, 8)
    out, grads = run_mmu(q, kb, kb, g=np.ones((2, 3, 8), np.float32), kv_len=0)
    assert np.all(out == 0) and np.all(grads[0] == 0) and np.all(grads[1] == 0)
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(ValueError, match="query_offset"):
        sdpa(q, kb, kb, query_offset=-1)
    with pytest.raises(ValueError, match="kv_len"):
        sdpa(q, kb, kb, kv_len=-2)
    with pytest.raises(ValueError, match=r"kv_len must be in \[0, 6\]"):
        sdpa(q, kb, kb, kv_len=7)
    with pytest.raises(TypeError, match="kv_len"):
        sdpa(q, kb, kb, kv_len=2.0)
    with pytest.raises(TypeError, match="query_offset"):
        sdpa(q, kb, kb, query_offset=True)
    with pytest.raises(ValueError, match="attn_mask.*buffer's length 6"):  # neither kv_len nor the buffer
        sdpa(q, kb, kb, attn_mask=np.ones((3, 5), bool), kv_len=4)
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, kb, kb, attn_mask=np.ones((2, 2, 6), bool), kv_len=4)
    with pytest.raises(TypeError):  # keyword-only
        sdpa(q, kb, kb, None, 0.0, False, None, False, 0)


@pytest.mark.parametrize("threads", [1, 2, 3])  # 2: one head cut in 4 pieces, the last empty
def test_decode_path_pieces_masks_and_groups(threads):
    # few query rows (L·group <= 16, Ev a multiple of 16) take the decode path; with few heads its
    # keys are cut into pieces (threads = 3: 6 pieces for one head) merged after: compare both
    # ways against float64, with a padding mask over the buffer, causal offsets, GQA groups
    # whose rows form one block (8 query heads over 2: 4 x L = 2 rows; 4 x 5 rows are too many: one
    # block per query head), and a row that sees nothing
    rng = np.random.default_rng(36)
    old = mmu.get_num_threads()
    mmu.set_num_threads(threads)
    try:
        for B, Hq, Hk, L, S_buf, kv_len, E in [(1, 1, 1, 1, 700, 650, 32), (2, 8, 2, 2, 300, 290, 24),
                                               (1, 3, 3, 16, 260, 259, 16), (1, 8, 2, 5, 140, 100, 16)]:
            q, kb, vb = rnd(rng, B, Hq, L, E), rnd(rng, B, Hk, S_buf, E), rnd(rng, B, Hk, S_buf, 16)
            kb[..., kv_len:, :] = np.nan  # never read
            vb[..., kv_len:, :] = np.nan
            g = rnd(rng, B, Hq, L, 16)
            pad = rng.random((B, 1, 1, S_buf)) < 0.8
            qo = kv_len - L
            rep = lambda a: np.repeat(a, Hq // Hk, axis=1)  # noqa: E731
            for kw in (dict(is_causal=True, query_offset=qo), dict(attn_mask=pad, is_causal=True, query_offset=qo),
                       dict(attn_mask=pad)):
                mask = kw.pop("attn_mask", None)
                out, grads = run_mmu(q, kb, vb, mask, g, kv_len=kv_len, enable_gqa=Hk != Hq, **kw)
                ref = ref_cached(q, rep(kb), rep(vb), kv_len, mask, kw.get("is_causal", False),
                                 kw.get("query_offset", 0))
                assert_close(out, ref, 1e-4, 1e-5, f"{B, Hq, Hk, L} {list(kw)}")
                assert np.all(grads[1][..., kv_len:, :] == 0)
        # a row that sees no key gives 0; a NaN query gives a NaN row (as the block path)
        q, kb = rnd(rng, 1, 2, 1, 16), rnd(rng, 1, 2, 300, 16)
        q[0, 1, 0, 3] = np.nan
        none = np.zeros((1, 1, 1, 300), bool)
        none[..., 290:] = True  # visible keys only past kv_len: the row sees nothing
        out, _ = run_mmu(q, kb, kb, none, kv_len=280)
        assert np.all(out[0, 0] == 0)
        out, _ = run_mmu(q, kb, kb, kv_len=280)
        assert np.all(np.isnan(out[0, 1])) and np.all(np.isfinite(out[0, 0]))
    finally:
        mmu.set_num_threads(old)
