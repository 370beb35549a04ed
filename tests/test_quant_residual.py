"""ResidualVQ against a loop of float64 NumPy nearest-code levels (values, indices, cumulative
commitment), partial decoding, shared codebook, seeded quantize dropout, gradients, bad inputs."""
import numpy as np
import pytest

import mmu
from mmu.quantizers import vq as _vq

if not hasattr(_vq, "VectorQuantize"):  # the VQ engineer's module lands separately
    pytest.skip("mmu.quantizers.VectorQuantize is not available yet", allow_module_level=True)

from mmu.quantizers import QuantizerStats, ResidualVQ  # noqa: E402
from gradcheck import assert_close  # noqa: E402

RNG = np.random.default_rng(0)


def _codebook(rvq, d):
    # every code of level d, through the public decoding path: (K, codebook_dim)
    k = rvq.codebook_size
    return rvq.level(d).get_output_from_indices(mmu.tensor(np.arange(k, dtype=np.int64).reshape(1, k))
                                                ).numpy().reshape(k, -1).astype(np.float64)


def _ref_rvq(rvq, x, levels=None):
    """NumPy RVQ: nearest code (l2, ties -> lowest index) of the running residual at each level."""
    levels = rvq.num_quantizers if levels is None else levels
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    residual, out, idx, losses = rows.copy(), np.zeros_like(rows), [], []
    for d in range(levels):
        e = _codebook(rvq, d)
        dist = (residual ** 2).sum(1, keepdims=True) - 2 * residual @ e.T + (e ** 2).sum(1)
        i = dist.argmin(1)
        q = e[i]
        losses.append(((residual - q) ** 2).mean())
        residual = residual - q
        out = out + q
        idx.append(i)
    return out.reshape(x.shape), np.stack(idx, -1).reshape(*x.shape[:-1], levels), np.array(losses)


def _rvq(*args, **kw):
    mmu.manual_seed(0)
    return ResidualVQ(*args, **kw)


def _x(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def test_residual_vq_matches_numpy_levels_and_cumulative_commitment():
    rvq = _rvq(6, 3, 8, commitment_weight=1.0, freeze_codebook=True).train()  # losses, fixed codebook
    x = _x(2, 5, 6)
    q, idx, loss, all_losses = rvq(mmu.tensor(x), return_all_losses=True)
    rq, ri, rl = _ref_rvq(rvq, x)
    assert q.shape == (2, 5, 6) and idx.shape == (2, 5, 3) and idx.dtype == mmu.int64
    assert np.array_equal(idx.numpy(), ri)
    assert_close(q.numpy(), rq, rtol=1e-5, atol=1e-5)
    assert_close(all_losses.numpy(), rl, rtol=1e-4, atol=1e-6)
    # RQ-VAE: mean over depth d of ||x - sg(sum_{i<=d} e_i)||^2
    partial = np.cumsum([_codebook(rvq, d)[ri.reshape(-1, 3)[:, d]] for d in range(3)], axis=0)
    cumulative = np.mean([((x.reshape(-1, 6) - p) ** 2).mean() for p in partial])
    assert_close(float(loss), cumulative, rtol=1e-4, atol=1e-6)
    assert isinstance(rvq.stats, list) and len(rvq.stats) == 3
    assert all(isinstance(s, QuantizerStats) for s in rvq.stats)


def test_residual_levels_reduce_the_error():
    rvq = _rvq(4, 4, 16).eval()
    x = _x(3, 20, 4)
    _, idx, _ = rvq(mmu.tensor(x))
    errs = [((x - rvq.get_output_from_indices(idx, num_levels=q).numpy()) ** 2).mean() for q in range(1, 5)]
    assert errs[-1] < errs[0]


def test_partial_decoding_is_the_sum_of_the_first_levels():
    rvq = _rvq(6, 4, 8).eval()
    x = _x(2, 7, 6)
    q, idx, _ = rvq(mmu.tensor(x))
    codes = rvq.get_codes_from_indices(idx)
    assert codes.shape == (4, 2, 7, 6)
    c = codes.numpy()
    for lv in range(1, 5):
        part = rvq.get_output_from_indices(idx, num_levels=lv).numpy()
        assert_close(part, c[:lv].sum(0), rtol=1e-6, atol=1e-6)
    assert_close(rvq.get_output_from_indices(idx).numpy(), q.numpy(), rtol=1e-5, atol=1e-5)
    # fewer index levels than quantizers decode too (as vector-quantize-pytorch pads them)
    assert_close(rvq.get_output_from_indices(idx[:, :, :2]).numpy(), c[:2].sum(0), rtol=1e-6, atol=1e-6)


def test_image_fmap_layout():
    rvq = _rvq(5, 2, 8, accept_image_fmap=True).eval()
    x = _x(2, 5, 3, 4)
    q, idx, _ = rvq(mmu.tensor(x))
    assert q.shape == (2, 5, 3, 4) and idx.shape == (2, 3, 4, 2)
    rq, ri, _ = _ref_rvq(rvq, x.transpose(0, 2, 3, 1))
    assert np.array_equal(idx.numpy(), ri)
    assert_close(q.numpy(), rq.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert_close(rvq.get_output_from_indices(idx).numpy(), q.numpy(), rtol=1e-5, atol=1e-5)


def test_shared_codebook_is_one_module_and_one_set_of_tensors():
    rvq = _rvq(6, 4, 8, shared_codebook=True)
    assert all(rvq.level(d) is rvq.level(0) for d in range(4))
    own = _rvq(6, 4, 8)
    assert len(rvq.state_dict()) * 4 == len(own.state_dict())
    rvq.eval()
    x = _x(2, 5, 6)
    _, idx, _ = rvq(mmu.tensor(x))
    _, ri, _ = _ref_rvq(rvq, x)
    assert np.array_equal(idx.numpy(), ri)


def test_quantize_dropout_is_seeded_and_keeps_at_least_cutoff_plus_one_levels():
    rvq = _rvq(6, 5, 8, quantize_dropout=True, quantize_dropout_cutoff_index=1).train()
    x = mmu.tensor(_x(2, 4, 6))
    used = []
    for seed in range(12):
        mmu.manual_seed(seed)
        _, idx, _, losses = rvq(x, return_all_losses=True)
        a = idx.numpy()
        n = int((a[0, 0] >= 0).sum())
        assert (a[..., :n] >= 0).all() and (a[..., n:] == -1).all()
        assert np.all(losses.numpy()[n:] == 0)
        assert n >= 2
        used.append(n)
        mmu.manual_seed(seed)
        _, idx2, _ = rvq(x)
        assert np.array_equal((idx2.numpy() >= 0).sum(-1), (a >= 0).sum(-1))
    assert len(set(used)) > 1
    codes = rvq.get_codes_from_indices(idx).numpy()
    assert np.all(codes[used[-1]:] == 0)
    rvq.eval()
    _, idx, _ = rvq(x)
    assert (idx.numpy() >= 0).all()  # no dropout outside training


def test_gradient_reaches_the_input_straight_through():
    rvq = _rvq(6, 3, 8, commitment_weight=0.0).train()
    x = mmu.tensor(_x(2, 4, 6), requires_grad=True)
    g = _x(2, 4, 6)
    q, _, loss = rvq(x)
    ((q * mmu.tensor(g)).sum()).backward()
    # each level passes its gradient straight through to its residual, which is x minus detached codes
    assert_close(x.grad.numpy(), 3 * g, rtol=1e-6, atol=1e-6)


def test_commitment_gradient_matches_formula():
    rvq = _rvq(6, 2, 8, commitment_weight=1.0, freeze_codebook=True).train()
    xa = _x(2, 3, 6)
    x = mmu.tensor(xa, requires_grad=True)
    q, idx, loss = rvq(x)
    loss.backward()
    partial = np.cumsum([_codebook(rvq, d)[idx.numpy().reshape(-1, 2)[:, d]] for d in range(2)], axis=0)
    ref = np.mean([2 * (xa.reshape(-1, 6) - p) / xa.size for p in partial], axis=0)
    assert_close(x.grad.numpy().reshape(-1, 6), ref, rtol=1e-4, atol=1e-6)


def test_bad_inputs_raise():
    rvq = _rvq(6, 3, 8)
    with pytest.raises(ValueError, match="dim"):
        rvq(mmu.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="shape"):
        rvq(mmu.zeros(2, 6))
    with pytest.raises(TypeError, match="float32"):
        rvq(mmu.tensor(np.zeros((2, 4, 6), np.int64)))
    idx = mmu.tensor(np.zeros((2, 4, 3), np.int64))
    with pytest.raises(ValueError, match="num_levels"):
        rvq.get_output_from_indices(idx, num_levels=4)
    with pytest.raises(ValueError):
        rvq.get_codes_from_indices(mmu.tensor(np.full((2, 4, 3), 8, np.int64)))
    with pytest.raises(ValueError):
        rvq.get_codes_from_indices(mmu.tensor(np.zeros((2, 4, 5), np.int64)))
    with pytest.raises(TypeError):
        rvq.get_codes_from_indices(mmu.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="cutoff"):
        ResidualVQ(6, 3, 8, quantize_dropout=True, quantize_dropout_cutoff_index=3)
    with pytest.raises(ValueError):
        ResidualVQ(6, 0, 8)
    with pytest.raises(TypeError):
        ResidualVQ(6, 2.0, 8)


def _ref_ema_step(books, x, decay, eps, shared):
    """One training step of vector-quantize-pytorch's ResidualVQ with EMA codebooks, in float64:
    each level searches with its codebook as it stands, then updates it (cluster_size, embed_avg,
    Laplace-smoothed normalisation); books: list of [embed, cluster_size, embed_avg] (updated in place)."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    residual, out, idx, losses = rows.copy(), np.zeros_like(rows), [], []
    for d in range(shared if shared else len(books)):
        book = books[0 if shared else d]
        e, cs, ea = book
        dist = (residual ** 2).sum(1, keepdims=True) - 2 * residual @ e.T + (e ** 2).sum(1)
        i = dist.argmin(1)
        q = e[i]
        losses.append(((residual - q) ** 2).mean())
        k = e.shape[0]
        onehot = np.eye(k)[i]
        cs[:] = decay * cs + (1 - decay) * onehot.sum(0)
        ea[:] = decay * ea + (1 - decay) * onehot.T @ residual
        n = cs.sum()
        e[:] = ea / ((cs + eps) / (n + k * eps) * n)[:, None]
        residual = residual - q
        out = out + q
        idx.append(i)
    return out.reshape(x.shape), np.stack(idx, -1).reshape(*x.shape[:-1], len(idx)), np.mean(losses)


@pytest.mark.parametrize("shared", [False, True])
def test_ema_training_steps_match_reference(shared):
    depth = 3
    rvq = _rvq(4, depth, 6, shared_codebook=shared, decay=0.7).train()
    n_books = 1 if shared else depth
    books = [[rvq.layers[b].embed.numpy()[0].astype(np.float64).copy(),
              rvq.layers[b].cluster_size.numpy()[0].astype(np.float64).copy(),
              rvq.layers[b].embed_avg.numpy()[0].astype(np.float64).copy()] for b in range(n_books)]
    for step in range(2):
        x = _x(2, 9, 4)
        q, idx, loss = rvq(mmu.tensor(x))
        rq, ri, rl = _ref_ema_step(books, x, 0.7, 1e-5, depth if shared else False)
        assert np.array_equal(idx.numpy(), ri), step
        assert_close(q.numpy(), rq, rtol=1e-4, atol=1e-5)
        assert_close(float(loss), rl, rtol=1e-4, atol=1e-6)
        for b in range(n_books):
            assert_close(rvq.layers[b].embed.numpy()[0], books[b][0], rtol=1e-4, atol=1e-5)
            assert_close(rvq.layers[b].cluster_size.numpy()[0], books[b][1], rtol=1e-4, atol=1e-5)
    assert all(s.ema_usage is not None for s in rvq.stats)


def test_codebook_dim_projection():
    rvq = _rvq(6, 2, 8, codebook_dim=3).eval()
    assert rvq.project_in is not None and rvq.level(0).dim == 3
    x = mmu.tensor(_x(2, 5, 6))
    q, idx, _ = rvq(x)
    assert q.shape == (2, 5, 6) and idx.shape == (2, 5, 2)
    assert rvq.get_codes_from_indices(idx).shape == (2, 2, 5, 3)
    assert_close(rvq.get_output_from_indices(idx).numpy(), q.numpy(), rtol=1e-5, atol=1e-5)


def test_unsupported_and_reserved_keywords_raise():
    with pytest.raises(NotImplementedError, match="heads"):
        ResidualVQ(6, 2, 8, heads=2)
    with pytest.raises(TypeError, match="channel_last"):
        ResidualVQ(6, 2, 8, channel_last=False)
    rvq = _rvq(5, 2, 8, accept_image_fmap=True)
    with pytest.raises(ValueError, match="H, W"):
        rvq(mmu.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="H, W, q"):
        rvq.get_output_from_indices(mmu.tensor(np.zeros((2, 3, 2), np.int64)))


@pytest.mark.parametrize("kind", ["ema_vq", "rvq"])
def test_tokenizer_kmeans_quantizers_keep_codes_at_the_data_scale(kind):
    # issue 11: the tokenizers' ema_vq and rvq start from k-means (decay 0.99). With embed_avg = centres the
    # first EMA step divided each code by ~its count: level 0's median code norm 1.35 for latents of median norm
    # 5.31 (and half of that at every further level). With vector-quantize-pytorch's init (embed_avg = centre *
    # count) every used code stays at its centre: each level's codes are at the scale of the residual it sees.
    from mmu.tokenizers.base import make_quantizer
    mmu.manual_seed(0)
    q = make_quantizer(kind, 8, 64).train()
    x = (np.random.default_rng(21).standard_normal((4, 8, 8, 8)) * 2).astype(np.float32)
    q(mmu.tensor(x))
    residual = x.transpose(0, 2, 3, 1).reshape(-1, 8).astype(np.float64)
    for level in (q.layers if kind == "rvq" else [q]):
        codes = level.embed.numpy()[0].astype(np.float64)
        ratio = np.median(np.linalg.norm(codes, axis=1)) / np.median(np.linalg.norm(residual, axis=1))
        assert 0.8 < ratio < 1.2, ratio
        # EMA invariant of vector-quantize-pytorch's update: embed = embed_avg / Laplace-smoothed count
        cs = level.cluster_size.numpy()[0].astype(np.float64)
        n = cs.sum()
        assert_close(codes, level.embed_avg.numpy()[0] / ((cs + 1e-5) / (n + 64e-5) * n)[:, None], rtol=1e-3,
                     atol=1e-5)
        residual = residual - codes[((residual[:, None] - codes[None]) ** 2).sum(-1).argmin(1)]
