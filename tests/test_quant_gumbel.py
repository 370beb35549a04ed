"""GumbelQuantize, gumbel_softmax, kl_to_uniform, gumbel_temperature_schedule against float64 NumPy
references fed the same Gumbel noise, finite differences and torch (taming-transformers' formulas)."""
import math

import numpy as np
import pytest

import mmu
from mmu.quantizers import (GumbelQuantize, QuantizerStats, gumbel_noise, gumbel_softmax,
                            gumbel_temperature_schedule, kl_to_uniform)
from gradcheck import assert_close, numeric_grad, torch_or_skip

RNG = np.random.default_rng(0)


def _softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _gumbel_softmax_ref(logits, noise, tau, hard, axis):
    y = _softmax((logits.astype(np.float64) + noise) / tau, axis)
    if not hard:
        return y
    idx = y.argmax(axis=axis)
    return (np.expand_dims(idx, axis) == np.expand_dims(np.arange(y.shape[axis]),
                                                        tuple(a for a in range(y.ndim) if a != axis % y.ndim))
            ).astype(np.float64)


def _kl_ref(logits, axis):
    q = _softmax(logits.astype(np.float64), axis)
    k = logits.shape[axis]
    return (q * np.log(q * k + 1e-10)).sum(axis=axis).mean()


# ---------------------------------------------------------------- gumbel_softmax

@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dim,shape", [(-1, (5, 7)), (1, (2, 6, 3)), (0, (4, 3))])
def test_gumbel_softmax_matches_reference_with_same_noise(hard, dim, shape):
    logits = RNG.standard_normal(shape).astype(np.float32)
    noise = RNG.gumbel(size=shape).astype(np.float32)
    out = gumbel_softmax(mmu.tensor(logits), tau=0.7, hard=hard, dim=dim, noise=mmu.tensor(noise))
    assert_close(out.numpy(), _gumbel_softmax_ref(logits, noise, 0.7, hard, dim), rtol=1e-5, atol=1e-6)


def test_gumbel_noise_is_seeded_finite_and_gumbel_distributed():
    mmu.manual_seed(3)
    a = gumbel_noise(20000).numpy()
    mmu.manual_seed(3)
    b = gumbel_noise(20000).numpy()
    assert np.array_equal(a, b) and np.isfinite(a).all()
    # Gumbel(0, 1): mean = Euler-Mascheroni, variance = pi^2 / 6
    assert abs(a.mean() - 0.5772) < 0.03 and abs(a.var() - math.pi ** 2 / 6) < 0.08


def test_gumbel_softmax_draws_seeded_noise():
    logits = mmu.tensor(RNG.standard_normal((4, 9)).astype(np.float32))
    mmu.manual_seed(11)
    a = gumbel_softmax(logits, tau=0.5).numpy()
    mmu.manual_seed(11)
    noise = gumbel_noise(4, 9)
    b = gumbel_softmax(logits, tau=0.5, noise=noise).numpy()
    assert np.array_equal(a, b)
    assert_close(a.sum(-1), np.ones(4), atol=1e-6)


def test_gumbel_softmax_matches_torch_with_torch_noise():
    torch = torch_or_skip()
    logits = RNG.standard_normal((6, 10)).astype(np.float32)
    for hard in (False, True):
        torch.manual_seed(5)
        ref = torch.nn.functional.gumbel_softmax(torch.tensor(logits), tau=0.3, hard=hard, dim=-1)
        torch.manual_seed(5)  # the same draw torch made: -log(Exp(1))
        noise = -torch.empty(6, 10).exponential_().log()
        out = gumbel_softmax(mmu.tensor(logits), tau=0.3, hard=hard, noise=mmu.tensor(noise.numpy()))
        assert_close(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_gumbel_softmax_soft_gradient_vs_finite_differences():
    logits = RNG.standard_normal((3, 5))
    noise = RNG.gumbel(size=(3, 5))
    up = RNG.standard_normal((3, 5))
    x = mmu.tensor(logits.astype(np.float32), requires_grad=True)
    out = gumbel_softmax(x, tau=0.8, noise=mmu.tensor(noise.astype(np.float32)))
    (out * mmu.tensor(up.astype(np.float32))).sum().backward()
    num = numeric_grad(lambda z: _gumbel_softmax_ref(z, noise, 0.8, False, -1), [logits], up)[0]
    assert_close(x.grad.numpy(), num, rtol=1e-3, atol=1e-5)


def test_hard_straight_through_gradient_equals_soft_gradient():
    logits = RNG.standard_normal((4, 8)).astype(np.float32)
    noise = mmu.tensor(RNG.gumbel(size=(4, 8)).astype(np.float32))
    up = mmu.tensor(RNG.standard_normal((4, 8)).astype(np.float32))
    grads = []
    for hard in (False, True):
        x = mmu.tensor(logits, requires_grad=True)
        (gumbel_softmax(x, tau=0.5, hard=hard, noise=noise) * up).sum().backward()
        grads.append(x.grad.numpy().copy())
    assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def test_gumbel_softmax_bad_inputs():
    x = mmu.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax(x, tau=0.0)
    with pytest.raises(IndexError, match="dim"):
        gumbel_softmax(x, dim=2)
    with pytest.raises(TypeError, match="dim"):
        gumbel_softmax(x, dim=1.0)
    with pytest.raises(ValueError, match="noise"):
        gumbel_softmax(x, noise=mmu.zeros(3, 2))
    with pytest.raises(TypeError, match="float32"):
        gumbel_softmax(mmu.tensor(np.zeros((2, 3), np.int64)))


# ---------------------------------------------------------------- kl_to_uniform

def test_kl_to_uniform_formula_and_gradient():
    logits = RNG.standard_normal((2, 6, 3, 2))
    x = mmu.tensor(logits.astype(np.float32), requires_grad=True)
    kl = kl_to_uniform(x, dim=1)
    assert kl.ndim == 0
    assert_close(float(kl), _kl_ref(logits, 1), rtol=1e-5, atol=1e-6)
    kl.backward()
    num = numeric_grad(lambda z: np.array(_kl_ref(z, 1)), [logits], np.array(1.0))[0]
    assert_close(x.grad.numpy(), num, rtol=1e-3, atol=1e-6)
    # uniform logits: q = 1/K, KL = log(1 + 1e-10) ~ 0
    assert abs(float(kl_to_uniform(mmu.zeros(3, 5), dim=-1))) < 1e-6


def test_kl_to_uniform_bad_inputs():
    with pytest.raises(IndexError):
        kl_to_uniform(mmu.zeros(2, 3), dim=3)
    with pytest.raises(ValueError):
        kl_to_uniform(mmu.tensor(np.float32(1.0)))


# ---------------------------------------------------------------- temperature schedule

def test_temperature_schedule_endpoints_and_formula():
    assert gumbel_temperature_schedule(0, 150000) == pytest.approx(1.0)
    assert gumbel_temperature_schedule(150000, 150000) == pytest.approx(1 / 16)
    assert gumbel_temperature_schedule(10 ** 6, 150000) == pytest.approx(1 / 16)  # held after the end
    assert gumbel_temperature_schedule(75000, 150000) == pytest.approx((1 + 1 / 16) / 2)
    s, t, a, b = 1234, 5000, 2.0, 0.1
    assert gumbel_temperature_schedule(s, t, start=a, end=b) == pytest.approx(
        b + (a - b) * 0.5 * (1 + math.cos(math.pi * s / t)))
    taus = [gumbel_temperature_schedule(i, 100) for i in range(101)]
    assert all(x >= y for x, y in zip(taus, taus[1:]))
    with pytest.raises(ValueError):
        gumbel_temperature_schedule(-1, 10)
    with pytest.raises(ValueError):
        gumbel_temperature_schedule(1, 0)
    with pytest.raises(TypeError):
        gumbel_temperature_schedule(1.5, 10)


# ---------------------------------------------------------------- GumbelQuantize

def _module(dim=5, k=7, d=4, **kw):
    mmu.manual_seed(0)
    return GumbelQuantize(dim, k, embedding_dim=d, **kw)


def _ref_forward(q, x_rows, noise, tau, hard):
    k = q.codebook_size
    w = q.proj.weight.numpy().reshape(k, -1).astype(np.float64)
    b = q.proj.bias.numpy().astype(np.float64)
    logits = x_rows.astype(np.float64) @ w.T + b
    one_hot = _gumbel_softmax_ref(logits, noise, tau, hard, 1)
    quant = one_hot @ q.embed.weight.numpy().astype(np.float64)
    return quant, one_hot.argmax(1), q.kl_weight * _kl_ref(logits, 1)


@pytest.mark.parametrize("hard", [True, False])
def test_gumbel_quantize_channel_first_matches_reference(hard):
    q = _module(straight_through=hard, kl_weight=0.5, temperature=0.6)
    x = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)
    noise = RNG.gumbel(size=(2 * 3 * 4, 7)).astype(np.float32)
    out, idx, loss = q(mmu.tensor(x), noise=mmu.tensor(noise))
    rows = x.transpose(0, 2, 3, 1).reshape(-1, 5)
    rq, ri, rl = _ref_forward(q, rows, noise, 0.6, hard)
    assert out.shape == (2, 4, 3, 4) and idx.shape == (2, 3, 4) and idx.dtype == mmu.int64
    assert_close(out.numpy(), rq.reshape(2, 3, 4, 4).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert np.array_equal(idx.numpy().reshape(-1), ri)
    assert_close(float(loss), rl, rtol=1e-5, atol=1e-7)
    assert isinstance(q.stats, QuantizerStats) and q.stats.losses["kl"] == pytest.approx(rl / 0.5, rel=1e-5)


def test_gumbel_quantize_channel_last_and_temperature_override():
    q = _module(d=None)
    x = RNG.standard_normal((3, 6, 5)).astype(np.float32)
    noise = RNG.gumbel(size=(18, 7)).astype(np.float32)
    out, idx, loss = q(mmu.tensor(x), temperature=2.0, noise=mmu.tensor(noise))
    rq, ri, rl = _ref_forward(q, x.reshape(-1, 5), noise, 2.0, True)
    assert out.shape == (3, 6, 5) and idx.shape == (3, 6)
    assert_close(out.numpy(), rq.reshape(3, 6, 5), rtol=1e-5, atol=1e-5)
    assert np.array_equal(idx.numpy().reshape(-1), ri)


def test_gumbel_quantize_eval_is_deterministic_argmax():
    q = _module()
    q.eval()
    x = mmu.tensor(RNG.standard_normal((2, 5, 3, 3)).astype(np.float32))
    a, ia, la = q(x)
    b, ib, lb = q(x)
    assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(ia.numpy(), ib.numpy())
    rows = x.numpy().transpose(0, 2, 3, 1).reshape(-1, 5)
    logits = rows @ q.proj.weight.numpy().reshape(7, 5).T + q.proj.bias.numpy()
    assert np.array_equal(ia.numpy().reshape(-1), logits.argmax(1))
    assert_close(a.numpy().transpose(0, 2, 3, 1).reshape(-1, 4), q.embed.weight.numpy()[logits.argmax(1)])
    assert_close(q.get_codes_from_indices(ia).numpy(), a.numpy().transpose(0, 2, 3, 1))


def test_gumbel_quantize_training_is_seeded():
    q = _module()
    x = mmu.tensor(RNG.standard_normal((2, 5, 4, 4)).astype(np.float32))
    mmu.manual_seed(42)
    a, ia, _ = q(x)
    mmu.manual_seed(42)
    b, ib, _ = q(x)
    assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(ia.numpy(), ib.numpy())


@pytest.mark.parametrize("hard", [True, False])
def test_gumbel_quantize_gradients_match_torch_taming(hard):
    torch = torch_or_skip()
    q = _module(straight_through=hard, kl_weight=0.3, temperature=0.7)
    x = RNG.standard_normal((2, 5, 3, 2)).astype(np.float32)
    noise = RNG.gumbel(size=(12, 7)).astype(np.float32)
    up = RNG.standard_normal((2, 4, 3, 2)).astype(np.float32)
    xm = mmu.tensor(x, requires_grad=True)
    out, idx, loss = q(xm, noise=mmu.tensor(noise))
    ((out * mmu.tensor(up)).sum() + loss).backward()

    # taming-transformers' GumbelQuantize.forward, with the same noise in its (B, K, H, W) layout
    xt = torch.tensor(x, requires_grad=True)
    w = torch.tensor(q.proj.weight.numpy(), requires_grad=True)
    bias = torch.tensor(q.proj.bias.numpy(), requires_grad=True)
    e = torch.tensor(q.embed.weight.numpy(), requires_grad=True)
    logits = torch.nn.functional.conv2d(xt, w, bias)
    g = torch.tensor(noise).reshape(2, 3, 2, 7).permute(0, 3, 1, 2)
    y_soft = ((logits + g) / 0.7).softmax(dim=1)
    if hard:
        y_hard = torch.zeros_like(y_soft).scatter_(1, y_soft.argmax(1, keepdim=True), 1.0)
        y = y_hard - y_soft.detach() + y_soft
    else:
        y = y_soft
    zq = torch.einsum("bnhw,nd->bdhw", y, e)
    qy = logits.softmax(dim=1)
    diff = 0.3 * torch.sum(qy * torch.log(qy * 7 + 1e-10), dim=1).mean()
    ((zq * torch.tensor(up)).sum() + diff).backward()
    assert_close(out.numpy(), zq.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert np.array_equal(idx.numpy(), y.argmax(1).numpy())
    assert_close(float(loss), float(diff.detach()), rtol=1e-5, atol=1e-7)
    assert_close(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert_close(q.proj.weight.grad.numpy(), w.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert_close(q.proj.bias.grad.numpy(), bias.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert_close(q.embed.weight.grad.numpy(), e.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_gumbel_quantize_state_dict_names_match_taming():
    q = _module()
    assert set(q.state_dict()) == {"proj.weight", "proj.bias", "embed.weight"}
    assert q.proj.weight.shape == (7, 5, 1, 1) and q.embed.weight.shape == (7, 4)


def test_gumbel_quantize_bad_inputs():
    q = _module()
    with pytest.raises(ValueError, match="dim"):
        q(mmu.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="dim"):
        q(mmu.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="shape"):
        q(mmu.zeros(2, 5))
    with pytest.raises(TypeError, match="float32"):
        q(mmu.tensor(np.zeros((2, 3, 5), np.int64)))
    with pytest.raises(ValueError, match="temperature"):
        q(mmu.zeros(2, 3, 5), temperature=-1.0)
    with pytest.raises(ValueError, match="noise"):
        q(mmu.zeros(2, 3, 5), noise=mmu.zeros(6, 3))
    with pytest.raises(ValueError):
        GumbelQuantize(0, 7)
    with pytest.raises(TypeError):
        GumbelQuantize(5, 7.0)
    with pytest.raises(ValueError, match="kl_weight"):
        GumbelQuantize(5, 7, kl_weight=-1)
    with pytest.raises(ValueError, match="temperature"):
        GumbelQuantize(5, 7, temperature=0)
