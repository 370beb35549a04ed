"""FSQ and LFQ (mmu.quantizers.fsq / lfq): FSQ against its NumPy formulas, LFQ quantisation, indices
and commitment against NumPy, and the exact streamed LFQ entropy against a float64 NumPy reference
that materialises all 2^d codes (values and gradients), plus finite differences."""
import numpy as np
import pytest

import mmu
from mmu.quantizers import FSQ, LFQ
from mmu.quantizers.lfq import lfq_entropy
from tests.gradcheck import assert_close, torch_or_skip


# ----------------------------------------------------------------------------- FSQ references
def fsq_ref(z, levels):
    """float64 version of vector-quantize-pytorch's FSQ: (zhat, indices, d zhat / d z)."""
    L = np.asarray(levels, np.float64)
    half_l = (L - 1) * (1 + 1e-3) / 2
    offset = np.where(np.asarray(levels) % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    t = np.tanh(z + shift)
    b = t * half_l - offset
    hw = np.asarray(levels) // 2
    zhat = np.round(b) / hw
    basis = np.cumprod([1] + list(levels[:-1]))
    idx = ((zhat * hw + hw) * basis).sum(-1).round().astype(np.int64)
    return zhat, idx, (1 - t * t) * half_l / hw


LEVELS = [[8, 5, 5, 5], [7, 5, 5, 5, 5], [8, 6, 5], [2, 3, 4]]


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_values_indices_grad(levels):
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((3, 11, len(levels))) * 2).astype(np.float32)
    q = FSQ(levels)
    zt = mmu.tensor(z, requires_grad=True)
    out, idx, loss = q(zt)
    zhat, ridx, dref = fsq_ref(z.astype(np.float64), levels)
    assert_close(out.numpy(), zhat, rtol=0, atol=1e-6, what="zhat")
    np.testing.assert_array_equal(idx.numpy(), ridx)
    assert idx.dtype == np.int64 and idx.shape == (3, 11) and float(loss) == 0.0
    assert q.codebook_size == int(np.prod(levels))
    g = rng.standard_normal(z.shape).astype(np.float32)
    (out * mmu.tensor(g)).sum().backward()
    assert_close(zt.grad.numpy(), g * dref, rtol=1e-5, atol=1e-6, what="STE grad")
    # stats
    assert q.stats.codebook_size == q.codebook_size
    assert 0 < q.stats.batch_usage <= 1


def test_fsq_round_trip_all_codes():
    levels = [8, 5, 5, 5]
    q = FSQ(levels)
    idx = np.arange(q.codebook_size)
    codes = q.indices_to_codes(idx)
    assert codes.shape == (q.codebook_size, 4)
    np.testing.assert_array_equal(q.codes_to_indices(codes).numpy(), idx)
    # every code is on the grid and quantize() maps it to itself... through atanh of the bound
    c = codes.numpy()
    hw = np.array(levels) // 2
    assert np.all(np.abs(c) <= 1) and np.allclose(c * hw, np.round(c * hw))
    # forward indices decode back to the forward output exactly
    z = mmu.randn(2, 9, 4) * 3
    out, i, _ = q(z)
    np.testing.assert_array_equal(q.indices_to_codes(i).numpy(), out.numpy())


def test_fsq_projection_and_images():
    mmu.manual_seed(0)
    q = FSQ([8, 5, 5], dim=10)
    assert q.has_projections
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 10, 3, 4)).astype(np.float32)
    xt = mmu.tensor(x, requires_grad=True)
    out, idx, _ = q(xt)
    assert out.shape == (2, 10, 3, 4) and idx.shape == (2, 3, 4)
    W, b = q.project_in.weight.numpy(), q.project_in.bias.numpy()
    Wo, bo = q.project_out.weight.numpy(), q.project_out.bias.numpy()
    xl = x.transpose(0, 2, 3, 1).astype(np.float64)
    zhat, ridx, _ = fsq_ref(xl @ W.T + b, [8, 5, 5])
    np.testing.assert_array_equal(idx.numpy(), ridx)
    assert_close(out.numpy(), (zhat @ Wo.T + bo).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5, what="proj out")
    out.sum().backward()
    assert xt.grad.shape == x.shape and np.isfinite(xt.grad.numpy()).all()
    assert_close(q.indices_to_codes(idx).numpy(), out.numpy(), rtol=1e-5, atol=1e-5, what="decode")


def test_fsq_num_codebooks():
    q = FSQ([5, 5], num_codebooks=3)
    z = mmu.randn(2, 4, 6)
    out, idx, _ = q(z)
    assert idx.shape == (2, 4, 3)
    zhat, ridx, _ = fsq_ref(z.numpy().reshape(2, 4, 3, 2).astype(np.float64), [5, 5])
    np.testing.assert_array_equal(idx.numpy(), ridx)
    np.testing.assert_array_equal(q.indices_to_codes(idx).numpy(), out.numpy())


def test_fsq_vs_torch():
    torch = torch_or_skip()
    levels = [8, 5, 5, 5]
    z = np.random.default_rng(3).standard_normal((4, 16, 4)).astype(np.float32) * 2
    L = torch.tensor(levels, dtype=torch.int32)
    half_l = (L - 1) * (1 + 1e-3) / 2
    offset = torch.where(L % 2 == 0, 0.5, 0.0)
    shift = (offset / half_l).atanh()
    zt = torch.tensor(z, requires_grad=True)
    bnd = (zt + shift).tanh() * half_l - offset
    q = bnd + (bnd.round() - bnd).detach()
    ref = q / (L // 2)
    ref.sum().backward()
    m = mmu.tensor(z, requires_grad=True)
    out, _, _ = FSQ(levels)(m)
    out.sum().backward()
    assert_close(out.numpy(), ref.detach().numpy(), rtol=0, atol=1e-6)
    assert_close(m.grad.numpy(), zt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_fsq_bad_inputs():
    with pytest.raises(ValueError):
        FSQ([8, 1, 5])
    with pytest.raises(TypeError):
        FSQ("855")
    with pytest.raises(TypeError):
        FSQ([8, 5.0])
    q = FSQ([8, 5, 5])
    with pytest.raises(ValueError):
        q(mmu.randn(2, 3, 4))
    with pytest.raises(ValueError):
        q.indices_to_codes(np.array([q.codebook_size]))
    with pytest.raises(ValueError):
        q.codes_to_indices(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError):
        mmu._C.fsq(mmu.randn(2, 3), [8, 5], True)


# ----------------------------------------------------------------------------- LFQ references
def all_codes(d):
    c = np.arange(2 ** d)[:, None] >> np.arange(d)[None, :] & 1
    return np.where(c == 1, 1.0, -1.0)


def entropy_ref(x, tau, scale=1.0):
    """float64, materialising every code: [mean_{n,k} H(p(.|x)), mean_k H(mean_n p(.|x))]."""
    N, K, d = x.shape
    C = all_codes(d) * scale
    hs, hc = [], []
    for k in range(K):
        # vector-quantize-pytorch's logits: -(|x|^2 - 2 x.c + |c|^2) * inv_temperature
        lg = -((x[:, k, None, :] - C[None]) ** 2).sum(-1) * tau
        lg -= lg.max(1, keepdims=True)
        p = np.exp(lg)
        p /= p.sum(1, keepdims=True)
        hs.append(-(p * np.log(np.where(p > 0, p, 1))).sum(1))
        pb = p.mean(0)
        hc.append(-(pb * np.log(np.where(pb > 0, pb, 1))).sum())
    return np.array([np.mean(hs), np.mean(hc)])


def fd_grad(f, x, w, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (w @ (f(xp) - f(xm))) / (2 * eps)
    return g


@pytest.mark.parametrize("N,K,d,tau,scale", [(40, 1, 10, 1.0, 1.0), (33, 2, 7, 0.7, 1.5), (25, 1, 1, 2.0, 1.0),
                                             (30, 3, 4, 100.0, 1.0), (50, 1, 9, 5.0, 0.5)])
def test_lfq_entropy_brute_force(N, K, d, tau, scale):
    rng = np.random.default_rng(d * 7 + K)
    x = (rng.standard_normal((N, K, d)) * (0.02 if tau > 50 else 0.5)).astype(np.float32)
    xt = mmu.tensor(x, requires_grad=True)
    out = lfq_entropy(xt, tau, scale)
    ref = entropy_ref(x.astype(np.float64), tau, scale)
    assert_close(out.numpy(), ref, rtol=2e-5, atol=2e-6, what="entropies")
    w = np.array([0.7, -1.3])
    (out * mmu.tensor(w.astype(np.float32))).sum().backward()
    # analytic float64 gradient of the brute-force reference via finite differences
    x64 = x.astype(np.float64)
    if N * K * d <= 300:
        g = fd_grad(lambda v: entropy_ref(v, tau, scale), x64, w, eps=1e-6)
        assert_close(xt.grad.numpy(), g, rtol=1e-3, atol=2e-6, what="grad vs FD of brute force")


@pytest.mark.parametrize("chunk", [7, 64])
def test_lfq_entropy_streamed_chunks(chunk):
    # several GEMM chunks (and a ragged last one) must give the one-chunk result and the brute force
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((150, 2, 8)) * 0.3).astype(np.float32)
    w = mmu.tensor(np.array([0.4, -1.1], np.float32))
    grads, outs = [], []
    for c in (0, chunk, chunk):
        xt = mmu.tensor(x, requires_grad=True)
        out = lfq_entropy(xt, 3.0, chunk=c)
        (out * w).sum().backward()
        outs.append(out.numpy().copy())
        grads.append(xt.grad.numpy().copy())
    assert_close(outs[1], entropy_ref(x.astype(np.float64), 3.0), rtol=2e-5, atol=2e-6)
    assert_close(outs[1], outs[0], rtol=2e-6, atol=1e-6)
    assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(outs[1], outs[2])  # deterministic run to run
    np.testing.assert_array_equal(grads[1], grads[2])


def test_lfq_entropy_grad_vs_torch_materialised():
    torch = torch_or_skip()
    rng = np.random.default_rng(5)
    N, d, tau = 64, 10, 3.0
    x = (rng.standard_normal((N, 1, d)) * 0.3).astype(np.float32)
    xt = torch.tensor(x.astype(np.float64)[:, 0], requires_grad=True)
    codes = torch.tensor(all_codes(d))
    p = (2 * tau * xt @ codes.T).softmax(-1)
    hs = -(torch.special.xlogy(p, p)).sum(-1).mean()
    pb = p.mean(0)
    hc = -(torch.special.xlogy(pb, pb)).sum()
    (hs - 0.5 * hc).backward()
    m = mmu.tensor(x, requires_grad=True)
    out = lfq_entropy(m, tau)
    (out * mmu.tensor(np.array([1.0, -0.5], np.float32))).sum().backward()
    assert_close(out.numpy(), [hs.item(), hc.item()], rtol=2e-5, atol=2e-6)
    assert_close(m.grad.numpy()[:, 0], xt.grad.numpy(), rtol=1e-3, atol=1e-6)


def test_lfq_entropy_grouped_is_sum_of_group_entropies():
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((30, 2, 6)) * 0.5).astype(np.float32)
    out = lfq_entropy(x, 1.0, group_bits=3).numpy()
    groups = entropy_ref(x.reshape(30, 4, 3).astype(np.float64), 1.0) * 2
    assert_close(out, groups, rtol=2e-5, atol=2e-6)
    exact = entropy_ref(x.astype(np.float64), 1.0)
    assert abs(out[0] - exact[0]) < 1e-4 and out[1] >= exact[1] - 1e-5  # per-sample exact; upper bound
    with pytest.raises(ValueError):
        lfq_entropy(x, 1.0, group_bits=4)


def test_lfq_forward_values():
    mmu.manual_seed(0)
    rng = np.random.default_rng(7)
    q = LFQ(dim=6, entropy_loss_weight=0.1, commitment_loss_weight=0.25, diversity_gamma=0.8,
            inv_temperature=2.0, codebook_scale=1.5)
    x = (rng.standard_normal((3, 5, 6)) * 0.4).astype(np.float32)
    xt = mmu.tensor(x, requires_grad=True)
    out, idx, loss = q(xt)
    qref = np.where(x > 0, 1.5, -1.5)
    np.testing.assert_array_equal(out.numpy(), qref.astype(np.float32))
    ridx = ((x > 0) * (2 ** np.arange(5, -1, -1))).sum(-1)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    commit = ((x.astype(np.float64) - qref) ** 2).mean()
    e = entropy_ref(x.reshape(15, 1, 6).astype(np.float64), 2.0, 1.5)
    assert_close(float(loss), 0.1 * (e[0] - 0.8 * e[1]) + 0.25 * commit, rtol=1e-5, atol=1e-6)
    assert_close(q.stats.losses["commitment"], commit, rtol=1e-5)
    # gradient: identity through the STE + commitment + entropy
    g = rng.standard_normal(x.shape).astype(np.float32)
    ((out * mmu.tensor(g)).sum() + loss).backward()
    x64 = x.astype(np.float64)

    def f(v):
        e = entropy_ref(v.reshape(15, 1, 6), 2.0, 1.5)
        return np.array([0.1 * (e[0] - 0.8 * e[1]) + 0.25 * ((v - qref) ** 2).mean()])
    ref = g + fd_grad(f, x64, np.array([1.0]), eps=1e-6)
    assert_close(xt.grad.numpy(), ref, rtol=1e-3, atol=1e-5, what="LFQ grad")
    # decode
    np.testing.assert_array_equal(q.indices_to_codes(idx).numpy(), out.numpy())
    # eval: no loss
    q.eval()
    _, _, l2 = q(xt)
    assert float(l2) == 0.0


def test_lfq_projection_images_codebooks_and_seed():
    def run():
        mmu.manual_seed(3)
        q = LFQ(dim=16, codebook_size=2 ** 5, num_codebooks=2)
        x = mmu.randn(2, 16, 3, 3)
        return q, q(x)
    q, (o, i, l) = run()
    _, (o2, i2, l2) = run()
    assert o.shape == (2, 16, 3, 3) and i.shape == (2, 3, 3, 2)
    np.testing.assert_array_equal(o.numpy(), o2.numpy())
    np.testing.assert_array_equal(i.numpy(), i2.numpy())
    assert float(l) == float(l2)
    assert_close(q.indices_to_codes(i).numpy(), o.numpy(), rtol=1e-5, atol=1e-5)
    assert 0 < q.stats.batch_usage <= 1 and q.stats.codebook_size == 32


def test_lfq_bad_inputs():
    with pytest.raises(ValueError):
        LFQ()
    with pytest.raises(ValueError):
        LFQ(codebook_size=100)
    with pytest.raises(ValueError):
        LFQ(dim=4, inv_temperature=0.0)
    with pytest.raises(ValueError):
        LFQ(dim=6, entropy_group_bits=4)
    q = LFQ(dim=4)
    with pytest.raises(ValueError):
        q(mmu.randn(2, 3, 5))
    with pytest.raises(ValueError):
        q.indices_to_codes(np.array([16]))
    with pytest.raises(ValueError):
        lfq_entropy(mmu.randn(4, 25), 1.0)
    with pytest.raises(ValueError):
        mmu._C.lfq_entropy(mmu.randn(4, 1, 25), 1.0, 1.0)
    with pytest.raises(ValueError):
        mmu._C.lfq_entropy(mmu.randn(4, 1, 3), -1.0, 1.0)
    with pytest.raises(TypeError):
        mmu._C.lfq_entropy(np.zeros((4, 1, 3), np.int64), 1.0, 1.0)
