"""Tests of the VQ family: nearest_code (vs a float64 brute force), VectorQuantize (forward values,
indices and loss terms vs a NumPy reference of the same formulas, STE and rotation-trick gradients,
EMA update, dead-code restart, k-means init, determinism, bad inputs), QuantizerStats."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu.quantizers import QuantizerStats, VectorQuantize, codebook_stats
from mmu.quantizers.vq import rotate_to


def _rng(seed=0):
    return np.random.default_rng(seed)


def _brute(x, e, metric):
    x64, e64 = x.astype(np.float64), e.astype(np.float64)
    if metric == "cosine":
        x64 = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)
        e64 = e64 / np.maximum(np.linalg.norm(e64, axis=1, keepdims=True), 1e-12)
        return -(x64 @ e64.T)
    return ((x64[:, None, :] - e64[None]) ** 2).sum(-1)


def _check_nearest(x, e, metric, tol=1e-4):
    got = F.nearest_code(mmu.tensor(x), mmu.tensor(e), metric=metric)
    assert got.dtype == mmu.int64 and got.shape == (x.shape[0],)
    got = got.numpy()
    d = _brute(x, e, metric)
    ref = d.argmin(1)
    rows = np.arange(x.shape[0])
    # a different index is accepted only as a tie within fp32 rounding of the float64 distances
    scale = np.abs(d).max(1) + 1.0
    gap = d[rows, got] - d[rows, ref]
    assert np.all(gap <= tol * scale), f"{metric}: worst gap {gap.max()}"
    assert np.mean(got == ref) > 0.99 or x.shape[0] < 100  # near-ties: only the gap test above is exact


# ---------------------------------------------------------------- nearest_code
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("N,K,D", [(1, 1, 3), (1, 7, 5), (37, 1, 4), (53, 2049, 9), (600, 300, 16), (5, 4100, 2)])
def test_nearest_code_vs_brute_force(metric, N, K, D):
    r = _rng(N * 1000 + K)
    _check_nearest(r.standard_normal((N, D)).astype(np.float32), r.standard_normal((K, D)).astype(np.float32), metric)


def test_nearest_code_ties_lowest_index():
    # duplicated codes (exact ties), one duplicate straddling a block boundary of 2048 codes
    r = _rng(1)
    e = r.standard_normal((3000, 4)).astype(np.float32)
    e[2500] = e[100]
    e[2047] = e[2048] = e[5]
    x = np.stack([e[100], e[5], e[2048]]) + np.float32(0)
    got = F.nearest_code(x, e).numpy()
    assert got.tolist() == [100, 5, 5]
    assert F.nearest_code(x, e, metric="cosine").numpy().tolist() == [100, 5, 5]
    # all codes equal -> index 0
    assert F.nearest_code(np.ones((2, 3), np.float32), np.zeros((9, 3), np.float32)).numpy().tolist() == [0, 0]


def test_nearest_code_nan_row_gives_zero():
    x = np.array([[np.nan, 0.0], [1.0, 1.0]], np.float32)
    e = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    assert F.nearest_code(x, e).numpy().tolist() == [0, 1]


def test_nearest_code_deterministic_and_empty():
    r = _rng(2)
    x = r.standard_normal((700, 32)).astype(np.float32)
    e = r.standard_normal((2500, 32)).astype(np.float32)
    a = F.nearest_code(x, e).numpy()
    assert np.array_equal(a, F.nearest_code(x, e).numpy())
    assert F.nearest_code(np.zeros((0, 32), np.float32), e).shape == (0,)


def test_nearest_code_bad_inputs():
    e = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="nearest_code"):
        F.nearest_code(np.zeros((2, 5), np.float32), e)
    with pytest.raises(ValueError, match="nearest_code"):
        F.nearest_code(np.zeros((2, 2, 3), np.float32), e)
    with pytest.raises(ValueError, match="nearest_code"):
        F.nearest_code(np.zeros((2, 3), np.float32), np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="metric"):
        F.nearest_code(np.zeros((2, 3), np.float32), e, metric="l1")
    with pytest.raises(TypeError):
        F.nearest_code(mmu.tensor(np.zeros((2, 3), np.int64)), e)


# ---------------------------------------------------------------- NumPy reference of VectorQuantize
def _ref_forward(x, embed, cluster_size, embed_avg, decay, eps, commitment_weight=1.0):
    """x (M, d), embed (K, d): one EMA training step of vector-quantize-pytorch's VectorQuantize, float64."""
    x64, e64 = x.astype(np.float64), embed.astype(np.float64)
    d2 = ((x64[:, None] - e64[None]) ** 2).sum(-1)
    ind = d2.argmin(1)
    q = e64[ind]
    commit = ((q - x64) ** 2).mean()
    K = e64.shape[0]
    onehot = np.eye(K)[ind]
    cs = decay * cluster_size + (1 - decay) * onehot.sum(0)
    avg = decay * embed_avg + (1 - decay) * onehot.T @ x64
    n = cs.sum()
    smoothed = (cs + eps) / (n + K * eps) * n
    new_embed = avg / smoothed[:, None]
    return q, ind, commit * commitment_weight, cs, avg, new_embed


def test_vq_forward_and_ema_vs_reference():
    mmu.manual_seed(0)
    vq = VectorQuantize(6, 10, decay=0.7, eps=1e-5, commitment_weight=0.5)
    x = mmu.randn(3, 5, 6)
    e0 = vq.embed.numpy()[0].copy()
    cs0, avg0 = vq.cluster_size.numpy()[0].copy(), vq.embed_avg.numpy()[0].copy()
    q, ind, loss = vq(x)
    q_r, ind_r, loss_r, cs_r, avg_r, emb_r = _ref_forward(x.numpy().reshape(-1, 6), e0, cs0, avg0, 0.7, 1e-5, 0.5)
    assert ind.dtype == mmu.int64 and ind.shape == (3, 5)
    assert np.array_equal(ind.numpy().reshape(-1), ind_r)
    np.testing.assert_allclose(q.numpy().reshape(-1, 6), q_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.item(), loss_r, rtol=1e-5)
    np.testing.assert_allclose(vq.stats.losses["commitment"], loss_r / 0.5, rtol=1e-5)
    np.testing.assert_allclose(vq.cluster_size.numpy()[0], cs_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.embed_avg.numpy()[0], avg_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.embed.numpy()[0], emb_r, rtol=1e-4, atol=1e-6)
    # eval: no EMA update, output is exactly the codes, loss 0
    vq.eval()
    snap = [vq.embed.numpy().copy(), vq.cluster_size.numpy().copy(), vq.embed_avg.numpy().copy()]
    q2, ind2, loss2 = vq(x)
    assert np.array_equal(snap[0], vq.embed.numpy()) and np.array_equal(snap[1], vq.cluster_size.numpy())
    assert np.array_equal(snap[2], vq.embed_avg.numpy())
    np.testing.assert_array_equal(q2.numpy().reshape(-1, 6), vq.embed.numpy()[0][ind2.numpy().reshape(-1)])
    assert loss2.item() == 0.0


def test_vq_learnable_codebook_losses():
    mmu.manual_seed(1)
    vq = VectorQuantize(4, 8, learnable_codebook=True, ema_update=False, commitment_weight=0.25, codebook_weight=2.0)
    x = mmu.randn(2, 6, 4)
    e = vq.embed.numpy()[0].astype(np.float64)
    q, ind, loss = vq(x)
    xr = x.numpy().reshape(-1, 4).astype(np.float64)
    ir = _brute(xr, e, "l2").argmin(1)
    mse = ((e[ir] - xr) ** 2).mean()
    assert np.array_equal(ind.numpy().reshape(-1), ir)
    np.testing.assert_allclose(loss.item(), 0.25 * mse + 2.0 * mse, rtol=1e-5)
    np.testing.assert_allclose(vq.stats.losses["codebook"], mse, rtol=1e-5)
    loss.backward()
    # d(2 mse(q, sg x))/d e_k = 2 * 2/(M d) * sum_{i in k} (e_k - x_i)
    g = np.zeros_like(e)
    np.add.at(g, ir, 2.0 * 2.0 / xr.size * (e[ir] - xr))
    np.testing.assert_allclose(vq.embed.grad.numpy()[0], g, rtol=1e-4, atol=1e-6)


def test_vq_straight_through_gradient():
    mmu.manual_seed(2)
    vq = VectorQuantize(5, 7, commitment_weight=0.3)
    x = mmu.randn(2, 4, 5)
    x.requires_grad_(True)
    q, ind, loss = vq(x)
    up = _rng(3).standard_normal((2, 4, 5)).astype(np.float32)
    ((q * mmu.tensor(up)).sum() + loss).backward()
    qv = q.detach().numpy()
    # upstream grad passes through unchanged, plus the commitment term 0.3 * 2 (x - q) / numel
    expect = up + 0.3 * 2.0 * (x.detach().numpy() - qv) / qv.size
    np.testing.assert_allclose(x.grad.numpy(), expect, rtol=1e-5, atol=1e-6)


def test_rotation_trick_value_and_gradient():
    r = _rng(4)
    src = r.standard_normal((3, 4))
    tgt = r.standard_normal((3, 4))
    s = mmu.tensor(src.astype(np.float32))
    s.requires_grad_(True)
    out = rotate_to(s, mmu.tensor(tgt.astype(np.float32)))
    np.testing.assert_allclose(out.detach().numpy(), tgt, rtol=1e-4, atol=1e-5)
    up = r.standard_normal((3, 4))
    (out * mmu.tensor(up.astype(np.float32))).sum().backward()

    # finite differences of the formula with the detached quantities held at their values at src
    u = src / np.linalg.norm(src, axis=1, keepdims=True)
    qh = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    w = (u + qh) / np.linalg.norm(u + qh, axis=1, keepdims=True)
    lam = np.linalg.norm(tgt, axis=1, keepdims=True) / np.linalg.norm(src, axis=1, keepdims=True)

    def f(e):
        ew = (e * w).sum(1, keepdims=True)
        eu = (e * u).sum(1, keepdims=True)
        return ((lam * (e - 2 * ew * w + 2 * eu * qh)) * up).sum()

    num = np.zeros_like(src)
    h = 1e-6
    for i in np.ndindex(*src.shape):
        p, m = src.copy(), src.copy()
        p[i] += h
        m[i] -= h
        num[i] = (f(p) - f(m)) / (2 * h)
    np.testing.assert_allclose(s.grad.numpy(), num, rtol=1e-4, atol=1e-5)
    # the map is a scaled rotation: it keeps angles (R^T R = I)
    R = np.eye(4)[None] - 2 * w[:, :, None] * w[:, None, :] + 2 * qh[:, :, None] * u[:, None, :]
    np.testing.assert_allclose(np.einsum("bij,bik->bjk", R, R), np.broadcast_to(np.eye(4), (3, 4, 4)), atol=1e-10)


def test_vq_rotation_trick_module_gradient_flows():
    mmu.manual_seed(5)
    vq = VectorQuantize(4, 6, rotation_trick=True, commitment_weight=0.0)
    x = mmu.randn(1, 5, 4)
    x.requires_grad_(True)
    e = vq.embed.numpy()[0].copy()
    q, ind, loss = vq(x)
    np.testing.assert_allclose(q.detach().numpy()[0], e[ind.numpy()[0]], rtol=1e-4, atol=1e-5)
    q.sum().backward()
    assert x.grad is not None and np.all(np.isfinite(x.grad.numpy()))
    assert not np.allclose(x.grad.numpy(), 1.0)  # not the identity of the STE


def test_dead_code_restart_raises_usage():
    mmu.manual_seed(6)
    r = _rng(6)
    # every vector sits near one point, so with a spread codebook most codes stay unused
    data = (r.standard_normal((1, 64, 4)) * 0.01 + 5.0).astype(np.float32)
    data[0, 32:] = (r.standard_normal((32, 4)) * 3.0).astype(np.float32)
    kw = dict(decay=0.5)
    a = VectorQuantize(4, 16, **kw)
    mmu.manual_seed(6)
    b = VectorQuantize(4, 16, threshold_ema_dead_code=1.0, **kw)
    for _ in range(3):
        a(mmu.tensor(data))
        b(mmu.tensor(data))
    assert b.stats.batch_usage > a.stats.batch_usage
    assert b.stats.dead_codes <= a.stats.dead_codes or b.stats.ema_usage >= a.stats.ema_usage


def test_kmeans_init_lowers_first_batch_error():
    r = _rng(7)
    centers = r.standard_normal((8, 6)) * 4
    data = (centers[r.integers(0, 8, 256)] + 0.1 * r.standard_normal((256, 6))).astype(np.float32)[None]
    errs = {}
    for km in (False, True):
        mmu.manual_seed(7)
        vq = VectorQuantize(6, 8, kmeans_init=km, kmeans_iters=10)
        q, _, _ = vq(mmu.tensor(data))
        errs[km] = ((q.detach().numpy() - data) ** 2).mean()
        if km:
            assert vq.initted.numpy()[0] == 1.0
    assert errs[True] < 0.5 * errs[False]


def test_same_seed_identical():
    def run():
        mmu.manual_seed(11)
        vq = VectorQuantize(8, 12, heads=2, separate_codebook_per_head=True, kmeans_init=True,
                            threshold_ema_dead_code=1.0, stochastic_sample_codes=True, codebook_dim=3)
        x = mmu.randn(2, 9, 8)
        outs = [vq(x) for _ in range(2)]
        return [o[0].detach().numpy() for o in outs] + [o[1].numpy() for o in outs] + [vq.embed.numpy()]
    for a, b in zip(run(), run()):
        assert np.array_equal(a, b)


def test_heads_cosine_image_and_decoding():
    mmu.manual_seed(8)
    vq = VectorQuantize(8, 5, codebook_dim=4, heads=2, separate_codebook_per_head=True, accept_image_fmap=True,
                        use_cosine_sim=True)
    x = mmu.randn(2, 8, 3, 2)
    vq.eval()
    q, ind, loss = vq(x)
    assert q.shape == (2, 8, 3, 2) and ind.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(np.linalg.norm(vq.embed.numpy(), axis=-1), 1.0, rtol=1e-5)
    # per head: nearest by cosine of the head's slice of the channels
    xs = x.numpy().transpose(0, 2, 3, 1).reshape(-1, 2, 4)
    for h in range(2):
        ref = _brute(xs[:, h].astype(np.float32), vq.embed.numpy()[h], "cosine").argmin(1)
        assert np.array_equal(ind.numpy().reshape(-1, 2)[:, h], ref)
    np.testing.assert_allclose(vq.get_output_from_indices(ind).numpy(), q.numpy(), rtol=1e-6)
    # projection: codebook_dim != dim
    vq2 = VectorQuantize(6, 4, codebook_dim=3).eval()
    x2 = mmu.randn(2, 5, 6)
    q2, i2, _ = vq2(x2)
    assert vq2.get_codes_from_indices(i2).shape == (2, 5, 3)
    np.testing.assert_allclose(vq2.get_output_from_indices(i2).numpy(), q2.numpy(), rtol=1e-5, atol=1e-6)
    # channel-first sequences
    vq3 = VectorQuantize(4, 3, channel_last=False).eval()
    q3, i3, _ = vq3(mmu.randn(2, 4, 7))
    assert q3.shape == (2, 4, 7) and i3.shape == (2, 7)


def test_freeze_codebook_and_stats():
    mmu.manual_seed(9)
    vq = VectorQuantize(4, 6, freeze_codebook=True)
    e = vq.embed.numpy().copy()
    vq(mmu.randn(2, 3, 4))
    assert np.array_equal(e, vq.embed.numpy())
    s = vq.stats
    assert isinstance(s, QuantizerStats) and s.codebook_size == 6 and 0 < s.batch_usage <= 1
    assert 1.0 <= s.perplexity <= 6.0 and "commitment" in s.losses


def test_codebook_stats():
    s = codebook_stats(np.array([0, 1, 1, 3]), 4, losses={"a": mmu.tensor(0.5)},
                       ema_counts=np.array([1.0, 0.0, 2.0, 0.1]), dead_threshold=0.5)
    assert s.batch_usage == 0.75 and s.ema_usage == 0.5 and s.dead_codes == 2 and s.losses == {"a": 0.5}
    p = np.array([0.25, 0.5, 0.25])
    np.testing.assert_allclose(s.perplexity, np.exp(-(p * np.log(p)).sum()))
    s2 = codebook_stats(mmu.tensor(np.array([[2, 2]], np.int64)), 4)
    assert s2.ema_usage is None and s2.dead_codes == 3 and s2.perplexity == 1.0
    with pytest.raises(ValueError):
        codebook_stats(np.array([4]), 4)
    with pytest.raises(ValueError):
        codebook_stats(np.array([0]), 0)


def test_vq_bad_inputs():
    with pytest.raises(TypeError):
        VectorQuantize(4.0, 8)
    with pytest.raises(ValueError):
        VectorQuantize(4, 0)
    with pytest.raises(ValueError):
        VectorQuantize(4, 8, decay=1.5)
    with pytest.raises(ValueError):
        VectorQuantize(4, 8, learnable_codebook=True)
    vq = VectorQuantize(4, 8)
    with pytest.raises(ValueError, match="VectorQuantize"):
        vq(mmu.randn(2, 3, 5))
    with pytest.raises(ValueError, match="VectorQuantize"):
        VectorQuantize(4, 8, accept_image_fmap=True)(mmu.randn(2, 4, 3))
    with pytest.raises(IndexError):
        vq.get_codes_from_indices(np.array([8]))
    with pytest.raises(IndexError):
        mmu._C._vq_ema_update(np.zeros((1, 4), np.float32), np.array([9]), vq.cluster_size, vq.embed_avg,
                              vq.embed, 0, 0.8, 1e-5)


def test_kernels_independent_of_thread_count():
    r = _rng(12)
    x = r.standard_normal((400, 96)).astype(np.float32)
    e = r.standard_normal((300, 96)).astype(np.float32)
    ind = r.integers(0, 300, 400)
    outs = []
    n0 = mmu.get_num_threads()
    try:
        for n in (1, 2):
            mmu.set_num_threads(n)
            cs, avg, emb = (mmu.tensor(np.ones((1, 300), np.float32)), mmu.tensor(e[None].copy()),
                            mmu.tensor(e[None].copy()))
            mmu._C._vq_ema_update(x, ind, cs, avg, emb, 0, 0.9, 1e-5)
            outs.append((F.nearest_code(x, e).numpy(), emb.numpy(), avg.numpy(), cs.numpy()))
    finally:
        mmu.set_num_threads(n0)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- issue 11: the EMA start and the k-means init
def test_ema_unused_codes_keep_their_scale():
    # vector-quantize-pytorch starts cluster_size at ones: a code no batch uses decays its count and its
    # embed_avg together, so it stays where it was (until the Laplace eps matters, d^t ~ eps). mmu started the
    # counts at zero: after one update every unused code was 0.8 * embed / ~eps, norms ~1e4, never chosen again.
    mmu.manual_seed(13)
    K, d, decay, eps = 64, 8, 0.8, 1e-5
    vq = VectorQuantize(d, K, decay=decay, eps=eps)
    np.testing.assert_array_equal(vq.cluster_size.numpy(), np.ones((1, K), np.float32))
    np.testing.assert_array_equal(vq.embed_avg.numpy(), vq.embed.numpy())
    e0 = vq.embed.numpy()[0].astype(np.float64).copy()
    cs, avg, emb = np.ones(K), e0.copy(), e0.copy()
    used = np.zeros(K, bool)
    r = _rng(13)
    # every batch sits next to the same 3 codes: the other 61 are never chosen
    near = e0[:3]
    for step in range(40):
        x = (near[r.integers(0, 3, 24)] + 1e-3 * r.standard_normal((24, d))).astype(np.float32)
        _, ind, _ = vq(mmu.tensor(x[None]))
        used[ind.numpy().reshape(-1)] = True
        _, ind_r, _, cs, avg, emb = _ref_forward(x, emb, cs, avg, decay, eps)
        assert np.array_equal(ind.numpy().reshape(-1), ind_r)
        np.testing.assert_allclose(vq.embed.numpy()[0], emb, rtol=1e-4, atol=1e-7)
        ratio = np.linalg.norm(vq.embed.numpy()[0][~used], axis=1) / np.linalg.norm(e0[~used], axis=1)
        # d^t / (d^t + eps) of the scale after t updates: >= 0.92 up to t = 40 at decay 0.8
        assert ratio.max() <= 1.0 + 1e-4 and ratio.min() >= 0.9, (step, ratio.min(), ratio.max())
    assert used.sum() <= 3


def _numpy_kmeans_init_step(x, init_rows, K, iters, decay, eps, cosine):
    """vector-quantize-pytorch's kmeans + init_embed_ + one EMA training step, float64.
    x (M, d) the batch (already l2-normalised for cosine); init_rows: the rows of x the sampler drew as
    the starting centres. -> (means, bins, embed after init, indices, cluster_size, embed_avg, embed)."""
    x = x.astype(np.float64)

    def l2(a):
        return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)

    def nearest(e):
        return (x @ e.T).argmax(1) if cosine else ((x[:, None] - e[None]) ** 2).sum(-1).argmin(1)

    def smooth(cs, avg):
        n = cs.sum()
        e = avg / ((cs + eps) / (n + K * eps) * n)[:, None]
        return l2(e) if cosine else e

    means = x[init_rows].copy()
    for _ in range(iters):
        b = nearest(means)
        bins = np.bincount(b, minlength=K).astype(np.float64)
        new = np.zeros_like(means)
        np.add.at(new, b, x)
        new = new / np.maximum(bins, 1)[:, None]
        if cosine:
            new = l2(new)
        means = np.where(bins[:, None] == 0, means, new)
    cs, avg = bins.copy(), means * bins[:, None]
    emb0 = smooth(cs, avg)
    ind = nearest(emb0)
    cs = decay * cs + (1 - decay) * np.bincount(ind, minlength=K)
    sums = np.zeros_like(avg)
    np.add.at(sums, ind, x)
    avg = decay * avg + (1 - decay) * sums
    return means, bins, emb0, ind, cs, avg, smooth(cs, avg)


@pytest.mark.parametrize("M,K,cosine", [(96, 8, False), (96, 8, True), (5, 8, False)])
def test_kmeans_init_then_one_ema_step_matches_numpy(monkeypatch, M, K, cosine):
    # after k-means, embed_avg must be centre * count and cluster_size the counts (mmu had embed_avg = centre:
    # the first EMA step divided every code by ~its count, median norm 0.03 against 1.83 for the centres).
    # M < K: the sampler draws rows with replacement, duplicated centres leave clusters empty -> count 0, code 0.
    import mmu.quantizers.vq as vqmod
    r = _rng(14)
    d, decay, eps, iters = 6, 0.99, 1e-5, 4
    centres = r.standard_normal((K, d)) * 3
    x = (centres[r.integers(0, K, M)] + 0.3 * r.standard_normal((M, d))).astype(np.float32)
    xs = x / np.linalg.norm(x, axis=1, keepdims=True) if cosine else x
    rows = r.permutation(M)[:K] if M >= K else r.integers(0, M, K)
    drawn = []

    def fixed_rows(samples, num):
        drawn.append(num)
        return samples[rows[:num]]

    monkeypatch.setattr(vqmod, "_sample_rows", fixed_rows)
    vq = VectorQuantize(d, K, decay=decay, eps=eps, kmeans_init=True, kmeans_iters=iters, use_cosine_sim=cosine)
    assert vq.initted.numpy()[0] == 0.0 and not vq.embed.numpy().any()
    _, ind, _ = vq(mmu.tensor(x[None]))
    assert drawn == [K] and vq.initted.numpy()[0] == 1.0
    means, bins, emb0, ind_r, cs_r, avg_r, emb_r = _numpy_kmeans_init_step(xs, rows, K, iters, decay, eps, cosine)
    assert np.array_equal(ind.numpy().reshape(-1), ind_r)
    np.testing.assert_allclose(vq.cluster_size.numpy()[0], cs_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.embed_avg.numpy()[0], avg_r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vq.embed.numpy()[0], emb_r, rtol=1e-4, atol=1e-5)
    full = bins > 0
    if M < K:
        assert (~full).any()  # the case exists
        assert not vq.embed.numpy()[0][~full].any()  # empty clusters: code 0 (vector-quantize-pytorch's)
    # the first step does not shrink the codes: each used code stays next to its centre
    shift = np.linalg.norm(vq.embed.numpy()[0][full] - means[full], axis=1)
    assert shift.max() < 0.05 * np.median(np.linalg.norm(means[full], axis=1)), shift.max()


def test_kmeans_iters_must_be_positive_with_kmeans_init():
    # vector-quantize-pytorch's kmeans has no counts without an iteration; mmu would start from all-zero codes
    with pytest.raises(ValueError, match="VectorQuantize: kmeans_iters"):
        VectorQuantize(4, 8, kmeans_init=True, kmeans_iters=0)
    VectorQuantize(4, 8, kmeans_iters=0)  # unused without kmeans_init


def test_dead_code_restart_state_is_vector_quantize_pytorchs(monkeypatch):
    # a restarted code: embed = a batch vector v, cluster_size = threshold, embed_avg = v * threshold
    import mmu.quantizers.vq as vqmod
    mmu.manual_seed(15)
    thr, decay = 0.9, 0.5
    vq = VectorQuantize(4, 6, decay=decay, threshold_ema_dead_code=thr)
    e0 = vq.embed.numpy()[0].copy()
    x = (np.repeat(e0[:1], 10, 0) + 1e-3 * _rng(15).standard_normal((10, 4))).astype(np.float32)
    picked = []

    def first_rows(samples, num):
        picked.append(samples[:num].copy())
        return samples[:num]

    monkeypatch.setattr(vqmod, "_sample_rows", first_rows)
    vq(mmu.tensor(x[None]))
    # counts from ones: code 0 -> 0.5 + 0.5 * 10 = 5.5, the others 0.5 < 0.9 -> restarted
    dead = np.arange(1, 6)
    np.testing.assert_allclose(vq.cluster_size.numpy()[0], [5.5] + [thr] * 5, rtol=1e-6)
    np.testing.assert_array_equal(vq.embed.numpy()[0][dead], picked[0])
    np.testing.assert_allclose(vq.embed_avg.numpy()[0][dead], picked[0] * thr, rtol=1e-6)


def test_dead_code_restart_with_learnable_codebook_tracks_usage():
    # without the EMA update the counts are still tracked (vector-quantize-pytorch); mmu kept them at their start
    # value, so with any threshold every code was restarted at every step (a learnable codebook rewritten each step)
    mmu.manual_seed(16)
    vq = VectorQuantize(4, 6, learnable_codebook=True, ema_update=False, decay=0.5, threshold_ema_dead_code=0.8)
    e0 = vq.embed.detach().numpy()[0].copy()
    x = mmu.tensor((e0[[0, 0, 0, 1, 1, 2]] + 1e-3 * _rng(16).standard_normal((6, 4))).astype(np.float32)[None])
    _, ind, _ = vq(x)
    counts = np.bincount(ind.numpy().reshape(-1), minlength=6)
    cs = 0.5 + 0.5 * counts
    live = cs >= 0.8
    np.testing.assert_allclose(vq.cluster_size.numpy()[0], np.where(live, cs, 0.8), rtol=1e-6)
    np.testing.assert_array_equal(vq.embed.detach().numpy()[0][live], e0[live])  # used codes untouched
    assert live.any() and (~live).any()
