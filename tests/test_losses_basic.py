"""mmu.losses reconstruction / adversarial / token: values vs float64 NumPy, gradients vs central
finite differences, torch where installed, known-logit cases and bad inputs."""
import math

import numpy as np
import pytest

import mmu
from mmu import losses as L

from gradcheck import assert_close, numeric_grad, torch_or_skip

RNG = np.random.default_rng(0)


def _t(a, grad=False):
    return mmu.tensor(np.asarray(a, dtype=np.float32), requires_grad=grad)


def _red(x, reduction):
    return {"none": x, "mean": x.mean(), "sum": x.sum()}[reduction]


def _check_grad(mmu_fn, np_fn, arrays, rtol=2e-3, atol=2e-4, wrt=None):
    """Forward vs np_fn (float64) and d(sum(out * up))/d(inputs) vs finite differences."""
    ts = [_t(a, True) for a in arrays]
    out = mmu_fn(*ts)
    ref = np.asarray(np_fn(*[a.astype(np.float64) for a in arrays]))
    assert_close(out.numpy(), ref, rtol=1e-5, atol=5e-5, what="forward")  # a few float32 logs
    up = RNG.standard_normal(ref.shape)
    (out * _t(up)).sum().backward()
    grads = numeric_grad(np_fn, arrays, up, wrt=wrt)
    for i, (t, g) in enumerate(zip(ts, grads)):
        if g is not None:
            assert_close(t.grad.numpy(), g, rtol=rtol, atol=atol, what=f"grad {i}")


# ------------------------------------------------------------------ reconstruction
def np_smooth_l1(x, y, beta):
    d = x - y
    if beta == 0:
        return np.abs(d)
    return np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)


def np_huber(x, y, delta):
    d = x - y
    return np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))


def _away(x, y, c):
    # keep |x - y| away from the kink at c so finite differences are valid
    d = x - y
    bad = np.abs(np.abs(d) - c) < 0.02
    x = x.copy()
    x[bad] += 0.1
    return x


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_smooth_l1(reduction, beta):
    y = RNG.standard_normal((3, 5)).astype(np.float32)
    x = _away(RNG.standard_normal((3, 5)).astype(np.float32) * 2, y, beta)
    x = _away(x, y, 0.0)
    _check_grad(lambda a, b: L.smooth_l1_loss(a, b, reduction=reduction, beta=beta),
                lambda a, b: _red(np_smooth_l1(a, b, beta), reduction), [x, y])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber(reduction, delta):
    y = RNG.standard_normal((4, 3)).astype(np.float32)
    x = _away(RNG.standard_normal((4, 3)).astype(np.float32) * 2, y, delta)
    _check_grad(lambda a, b: L.huber_loss(a, b, reduction=reduction, delta=delta),
                lambda a, b: _red(np_huber(a, b, delta), reduction), [x, y])


def test_smooth_l1_huber_vs_torch():
    torch = torch_or_skip()
    x = RNG.standard_normal((6, 7)).astype(np.float32) * 2
    y = RNG.standard_normal((6, 7)).astype(np.float32)
    for red in ("none", "mean", "sum"):
        for beta in (0.0, 0.7, 1.0):
            tx = torch.tensor(x, requires_grad=True)
            ref = torch.nn.functional.smooth_l1_loss(tx, torch.tensor(y), reduction=red, beta=beta)
            ref.sum().backward()
            mx = _t(x, True)
            out = L.smooth_l1_loss(mx, _t(y), reduction=red, beta=beta)
            out.sum().backward()
            assert_close(out.numpy(), ref.detach().numpy(), what=f"smooth_l1 {red} {beta}")
            assert_close(mx.grad.numpy(), tx.grad.numpy(), what="smooth_l1 grad")
        for delta in (0.7, 1.0, 3.0):
            tx = torch.tensor(x, requires_grad=True)
            ref = torch.nn.functional.huber_loss(tx, torch.tensor(y), reduction=red, delta=delta)
            ref.sum().backward()
            mx = _t(x, True)
            out = L.huber_loss(mx, _t(y), reduction=red, delta=delta)
            out.sum().backward()
            assert_close(out.numpy(), ref.detach().numpy(), what=f"huber {red} {delta}")
            assert_close(mx.grad.numpy(), tx.grad.numpy(), what="huber grad")


def test_l1_mse_reexported():
    assert L.l1_loss is mmu.functional.l1_loss and L.mse_loss is mmu.functional.mse_loss


def np_logit_laplace(x, mu, log_b, eps=0.1):
    xp = (1 - 2 * eps) * x + eps
    b = np.exp(log_b)
    y = np.log(xp / (1 - xp))
    return np.log(2 * b) + np.abs(y - mu) / b + np.log(xp * (1 - xp))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_logit_laplace(reduction):
    x = RNG.uniform(0, 1, (2, 3, 4)).astype(np.float32)
    mu = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    log_b = (RNG.standard_normal((2, 3, 4)) * 0.5).astype(np.float32)
    # keep mu away from logit(x') (the |.| kink)
    xp = 0.8 * x.astype(np.float64) + 0.1
    y = np.log(xp / (1 - xp))
    mu = np.where(np.abs(mu - y) < 0.02, mu + 0.1, mu).astype(np.float32)
    _check_grad(lambda a, m, lb: L.logit_laplace_loss(a, m, lb, reduction=reduction),
                lambda a, m, lb: _red(np_logit_laplace(a, m, lb), reduction), [x, mu, log_b])


def test_logit_laplace_is_a_density():
    # the NLL integrates to 1 over x' in (0, 1) — check numerically in x' space (eps map removed)
    xs = np.linspace(1e-6, 1 - 1e-6, 200001)
    mu, log_b = 0.3, -0.4
    p = np.exp(-np_logit_laplace((xs - 0.1) / 0.8, mu, log_b))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy 1.x names it trapz
    assert abs(trapezoid(p, xs) - 1.0) < 1e-3
    # extreme pixels stay finite thanks to eps
    out = L.logit_laplace_loss(_t([0.0, 1.0]), _t([0.0, 0.0]), _t([0.0, 0.0]), reduction="none")
    assert np.all(np.isfinite(out.numpy()))


def test_logit_laplace_map_unmap():
    x = RNG.uniform(0, 1, (5, 4)).astype(np.float32)
    m = L.logit_laplace_map(_t(x), eps=0.1)
    assert_close(m.numpy(), 0.8 * x + 0.1)
    assert_close(L.logit_laplace_unmap(m, eps=0.1).numpy(), x, atol=1e-6)
    assert_close(L.logit_laplace_unmap(_t([0.0, 0.5, 1.0])).numpy(), [0.0, 0.5, 1.0])


def test_reconstruction_bad_inputs():
    a, b = _t(np.zeros((2, 3))), _t(np.zeros((3, 2)))
    for fn in (L.smooth_l1_loss, L.huber_loss):
        with pytest.raises(ValueError, match="same shape"):
            fn(a, b)
        with pytest.raises(ValueError, match="reduction"):
            fn(a, a, reduction="avg")
    with pytest.raises(ValueError, match="beta"):
        L.smooth_l1_loss(a, a, beta=-1.0)
    with pytest.raises(ValueError, match="delta"):
        L.huber_loss(a, a, delta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        L.logit_laplace_loss(a, a, b)
    with pytest.raises(ValueError, match="eps"):
        L.logit_laplace_loss(a, a, a, eps=0.5)
    with pytest.raises(ValueError, match="eps"):
        L.logit_laplace_loss(a, a, a, eps=0.0)
    with pytest.raises(TypeError):
        L.smooth_l1_loss(a, None)
    with pytest.raises(TypeError, match="float32"):
        L.huber_loss(mmu.tensor(np.zeros((2, 3), dtype=np.int64)), a)


# ------------------------------------------------------------------ adversarial
def np_softplus(x):
    return np.logaddexp(0.0, x)


def test_softplus_values_grad_torch():
    x = np.array([-100.0, -20.0, -3.0, -0.5, 0.0, 0.5, 3.0, 20.0, 100.0], dtype=np.float32)
    mx = _t(x, True)
    out = L.softplus(mx)
    out.sum().backward()
    # float32 without log1p: absolute (not relative) accuracy in the far negative tail
    assert_close(out.numpy(), np_softplus(x.astype(np.float64)), rtol=1e-5, atol=2e-6)
    sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert_close(mx.grad.numpy(), sig, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(mx.grad.numpy()))
    torch = torch_or_skip()
    assert_close(out.numpy(), torch.nn.functional.softplus(torch.tensor(x)).numpy(), rtol=1e-5, atol=2e-6)


def test_d_g_losses_known_logits():
    real = _t([2.0, 0.5, -1.0])
    fake = _t([-2.0, 0.0, 3.0])
    # hinge D: relu(1 - r) = [0, .5, 2] -> 5/6; relu(1 + f) = [0, 1, 4] -> 5/3; 0.5 * (5/6 + 5/3) = 1.25
    assert abs(L.hinge_d_loss(real, fake).item() - 1.25) < 1e-6
    assert abs(L.hinge_g_loss(fake).item() - (-1.0 / 3.0)) < 1e-6
    r, f = np.array([2.0, 0.5, -1.0]), np.array([-2.0, 0.0, 3.0])
    vd = 0.5 * (np_softplus(-r).mean() + np_softplus(f).mean())
    assert abs(L.vanilla_d_loss(real, fake).item() - vd) < 5e-6
    assert abs(L.vanilla_g_loss(fake).item() - np_softplus(-f).mean()) < 5e-6
    # perfect discriminator: hinge 0
    assert L.hinge_d_loss(_t([1.0, 5.0]), _t([-1.0, -7.0])).item() == 0.0


def test_d_g_losses_grad():
    r = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32) * 2
    f = RNG.standard_normal((2, 1, 4, 4)).astype(np.float32) * 2
    r = np.where(np.abs(np.abs(r) - 1) < 0.02, r + 0.1, r).astype(np.float32)
    f = np.where(np.abs(np.abs(f) - 1) < 0.02, f + 0.1, f).astype(np.float32)
    _check_grad(L.hinge_d_loss, lambda a, b: 0.5 * (np.maximum(1 - a, 0).mean() + np.maximum(1 + b, 0).mean()), [r, f])
    _check_grad(L.vanilla_d_loss, lambda a, b: 0.5 * (np_softplus(-a).mean() + np_softplus(b).mean()), [r, f])
    _check_grad(L.hinge_g_loss, lambda b: -b.mean(), [f])
    _check_grad(L.vanilla_g_loss, lambda b: np_softplus(-b).mean(), [f])


def test_vanilla_vs_torch_bce():
    torch = torch_or_skip()
    r = RNG.standard_normal(10).astype(np.float32) * 3
    f = RNG.standard_normal(10).astype(np.float32) * 3
    F = torch.nn.functional
    tr, tf = torch.tensor(r), torch.tensor(f)
    ref = 0.5 * (F.binary_cross_entropy_with_logits(tr, torch.ones(10)) + F.binary_cross_entropy_with_logits(tf, torch.zeros(10)))
    assert abs(L.vanilla_d_loss(_t(r), _t(f)).item() - ref.item()) < 1e-5
    refg = F.binary_cross_entropy_with_logits(tf, torch.ones(10))
    assert abs(L.vanilla_g_loss(_t(f)).item() - refg.item()) < 1e-5


def test_adopt_weight():
    assert L.adopt_weight(0.8, 0, threshold=100) == 0.0
    assert L.adopt_weight(0.8, 99, threshold=100) == 0.0
    assert L.adopt_weight(0.8, 100, threshold=100) == 0.8
    assert L.adopt_weight(0.8, 5000, threshold=100) == 0.8
    assert L.adopt_weight(0.8, 3, threshold=10, value=0.25) == 0.25
    assert L.adopt_weight(0.8, 0) == 0.8
    with pytest.raises(TypeError):
        L.adopt_weight(0.8, 1.5, threshold=10)


def np_lecam(r, f, er, ef):
    return np.mean(np.maximum(r - ef, 0) ** 2) + np.mean(np.maximum(er - f, 0) ** 2)


def test_lecam():
    r = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)
    f = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)
    er, ef = 0.3, -0.2
    _check_grad(lambda a, b: L.lecam_reg(a, b, er, ef), lambda a, b: np_lecam(a, b, er, ef), [r, f])
    ema = L.LeCamEMA(decay=0.99)
    ema.update(_t(r), _t(f))
    assert abs(ema.ema_real - 0.01 * r.astype(np.float64).mean()) < 1e-6
    assert abs(ema.ema_fake - 0.01 * f.astype(np.float64).mean()) < 1e-6
    er2 = 0.99 * ema.ema_real + 0.01 * 1.0
    ema.update(_t(np.ones(3)), _t(np.zeros(3)))
    assert abs(ema.ema_real - er2) < 1e-9
    assert abs(ema.reg(_t(r), _t(f)).item() - np_lecam(r, f, ema.ema_real, ema.ema_fake)) < 1e-5
    with pytest.raises(ValueError, match="decay"):
        L.LeCamEMA(decay=1.0)


def test_adversarial_bad_inputs():
    with pytest.raises(TypeError):
        L.hinge_d_loss(None, _t([1.0]))
    with pytest.raises(ValueError, match="empty"):
        L.hinge_g_loss(_t(np.zeros((0,))))
    with pytest.raises(TypeError, match="ema_real"):
        L.lecam_reg(_t([1.0]), _t([1.0]), "x", 0.0)


# ------------------------------------------------------------------ token
def np_ce(logits, t, ignore=-100):
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    keep = t != ignore
    tt = np.where(keep, t, 0)
    nll = lse - np.take_along_axis(logits, tt[..., None], -1)[..., 0]
    return (nll * keep).sum() / max(keep.sum(), 1)


def test_next_token_loss():
    B, Ln, V = 2, 5, 7
    lg = RNG.standard_normal((B, Ln, V)).astype(np.float32)
    tok = RNG.integers(0, V, (B, Ln))
    tok[0, 3] = -100
    mt = mmu.tensor(tok)
    _check_grad(lambda a: L.next_token_loss(a, mt), lambda a: np_ce(a[:, :-1], tok[:, 1:]), [lg])
    torch = torch_or_skip()
    ref = torch.nn.functional.cross_entropy(torch.tensor(lg)[:, :-1].reshape(-1, V), torch.tensor(tok)[:, 1:].reshape(-1))
    assert abs(L.next_token_loss(_t(lg), mt).item() - ref.item()) < 1e-5


def _extra_peak_bytes(fn):
    """Allocator bytes fn adds at its peak over what was in use when it started (mmu.stats())."""
    mmu._C.empty_cache()
    base = mmu.stats()["bytes_in_use"]
    mmu._C.reset_peak_bytes()
    fn()
    return mmu.stats()["peak_bytes"] - base


def test_next_token_loss_reads_the_logits_in_place():
    """No copy of logits[:, :-1]: the forward adds (almost) nothing, the backward only the gradient
    of the logits itself. Slicing the logits made both a copy of B·(L-1)·V floats (15/16 of them
    here). A power-of-two size keeps the allocator's size classes exact."""
    B, Ln, V = 2, 16, 2048
    rng = np.random.default_rng(5)
    lg = mmu.tensor(rng.standard_normal((B, Ln, V)).astype(np.float32), requires_grad=True)
    tok = mmu.tensor(rng.integers(0, V, (B, Ln)))
    nbytes = B * Ln * V * 4
    out = []
    assert _extra_peak_bytes(lambda: out.append(L.next_token_loss(lg, tok))) < 0.25 * nbytes
    assert _extra_peak_bytes(lambda: out[0].backward()) < 1.25 * nbytes  # the gradient: 1.0
    assert lg.grad.shape == (B, Ln, V) and not lg.grad.numpy()[:, -1].any()  # the last position predicts nothing


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_next_token_loss_vs_torch_sliced(ignore_index, label_smoothing):
    """Value and gradient equal torch's cross_entropy over the sliced, reshaped logits, with ignored
    targets (ignore_index may be a real class) and label smoothing."""
    torch = torch_or_skip()
    B, Ln, V = 3, 7, 11
    rng = np.random.default_rng(6)
    lg = rng.standard_normal((B, Ln, V)).astype(np.float32)
    tok = rng.integers(0, V, (B, Ln))
    tok[0, 2] = tok[2, 6] = ignore_index
    tok[1, 0] = -100  # the first token is never a target
    x = _t(lg, True)
    loss = L.next_token_loss(x, mmu.tensor(tok), ignore_index=ignore_index, label_smoothing=label_smoothing)
    loss.backward()
    xt = torch.tensor(lg, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(xt[:, :-1].reshape(-1, V), torch.tensor(tok)[:, 1:].reshape(-1),
                                            ignore_index=ignore_index, label_smoothing=label_smoothing)
    ref.backward()
    assert_close(loss.item(), ref.item(), rtol=1e-6, atol=1e-6, what="loss")
    assert_close(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-7, what="grad")


def test_masked_token_loss_reads_the_logits_in_place():
    B, Ln, V = 2, 16, 2048
    rng = np.random.default_rng(7)
    lg = mmu.tensor(rng.standard_normal((B, Ln, V)).astype(np.float32), requires_grad=True)
    tgt, mask = mmu.tensor(rng.integers(0, V, (B, Ln))), mmu.tensor(rng.random((B, Ln)) < 0.5)
    nbytes = B * Ln * V * 4
    out = []
    assert _extra_peak_bytes(lambda: out.append(L.masked_token_loss(lg, tgt, mask))) < 0.25 * nbytes
    assert _extra_peak_bytes(lambda: out[0].backward()) < 1.25 * nbytes


def test_masked_token_loss():
    B, Ln, V = 2, 6, 5
    lg = RNG.standard_normal((B, Ln, V)).astype(np.float32)
    tgt = RNG.integers(0, V, (B, Ln))
    mask = RNG.random((B, Ln)) < 0.5
    mask[0, 0] = True
    mt, mm = mmu.tensor(tgt), mmu.tensor(mask)
    _check_grad(lambda a: L.masked_token_loss(a, mt, mm), lambda a: np_ce(a, np.where(mask, tgt, -100)), [lg])
    # nothing masked: a 0-d zero whose gradient is zeros
    x = _t(lg, True)
    z = L.masked_token_loss(x, mt, mmu.tensor(np.zeros((B, Ln), dtype=bool)))
    assert z.shape == () and z.item() == 0.0
    z.backward()
    assert np.array_equal(x.grad.numpy(), np.zeros_like(lg))


def test_kl_to_uniform_reexported():
    from mmu.quantizers.gumbel import kl_to_uniform
    assert L.kl_to_uniform is kl_to_uniform


def test_token_bad_inputs():
    lg = _t(np.zeros((2, 4, 3)))
    tok = mmu.tensor(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="B, L"):
        L.next_token_loss(mmu.tensor(np.zeros((2, 4), dtype=np.float32)), tok)
    with pytest.raises(ValueError, match="tokens"):
        L.next_token_loss(lg, mmu.tensor(np.zeros((2, 3), dtype=np.int64)))
    with pytest.raises(TypeError, match="int64"):
        L.next_token_loss(lg, _t(np.zeros((2, 4))))
    with pytest.raises(ValueError, match="L >= 2"):
        L.next_token_loss(_t(np.zeros((2, 1, 3))), mmu.tensor(np.zeros((2, 1), dtype=np.int64)))
    with pytest.raises(TypeError, match="bool"):
        L.masked_token_loss(lg, tok, tok)
    with pytest.raises(ValueError, match="mask"):
        L.masked_token_loss(lg, tok, mmu.tensor(np.zeros((2, 3), dtype=bool)))


def test_token_losses_name_themselves_not_cross_entropy():
    """Argument errors said "cross_entropy: ..." (the op inside) before."""
    lg = _t(np.zeros((2, 4, 3)))
    tok = mmu.tensor(np.zeros((2, 4), dtype=np.int64))
    for bad in (1.5, True, None):
        with pytest.raises(TypeError, match=r"^next_token_loss: ignore_index must be an int"):
            L.next_token_loss(lg, tok, ignore_index=bad)
    with pytest.raises(IndexError, match=r"^next_token_loss: tokens\[:, 1:\] value 3 is out of bounds for 3 classes"):
        L.next_token_loss(lg, mmu.tensor(np.int64([[0, 0, 3, 0], [0, 0, 0, 0]])))
    # the first token is never a target; an ignored one may be anything
    assert np.isfinite(L.next_token_loss(lg, mmu.tensor(np.int64([[7, 0, 0, 0], [0, -100, 0, 0]]))).item())
    with pytest.raises(IndexError, match=r"^masked_token_loss: targets value -1 is out of bounds for 3 classes"):
        L.masked_token_loss(lg, mmu.tensor(np.int64([[0, -1, 0, 0], [0, 0, 0, 0]])),
                            mmu.tensor(np.ones((2, 4), dtype=bool)))
    # an out-of-range target at an unmasked position is skipped, as before
    mask = mmu.tensor(np.array([[True, False, True, True], [True] * 4]))
    assert np.isfinite(L.masked_token_loss(lg, mmu.tensor(np.int64([[0, 9, 0, 0], [0, 0, 0, 0]])), mask).item())


@pytest.mark.parametrize("name", ["smooth_l1_loss", "huber_loss", "logit_laplace_loss"])
def test_fused_recon_large_thread_invariant(name):
    # more than one 16384-element chunk and a ragged tail: the float-lane / double-chunk sums
    # match float64 NumPy and are bit-identical on 1 and 2 threads
    n = 3 * 16384 + 77
    x = RNG.uniform(0, 1, n).astype(np.float32)
    y = RNG.standard_normal(n).astype(np.float32)
    z = (0.5 * RNG.standard_normal(n)).astype(np.float32)
    if name == "logit_laplace_loss":
        fn, ref = (lambda: L.logit_laplace_loss(_t(x), _t(y), _t(z))), np_logit_laplace(x, y, z).mean()
    elif name == "huber_loss":
        fn, ref = (lambda: L.huber_loss(_t(x), _t(y), delta=0.5)), np_huber(x, y, 0.5).mean()
    else:
        fn, ref = (lambda: L.smooth_l1_loss(_t(x), _t(y), beta=0.5)), np_smooth_l1(x, y, 0.5).mean()
    prev = mmu.get_num_threads()
    try:
        mmu.set_num_threads(1)
        one = fn().item()
        mmu.set_num_threads(2)
        two = fn().item()
    finally:
        mmu.set_num_threads(prev)
    assert one == two
    assert abs(one - ref) <= 1e-6 * abs(ref)
