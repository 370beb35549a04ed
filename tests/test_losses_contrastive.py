"""mmu.losses contrastive: CLIP and SigLIP against float64 NumPy formulas, torch, finite differences."""
import math

import numpy as np
import pytest

import mmu
from mmu.losses import ClipLoss, SigLipLoss, clip_loss, siglip_loss

from gradcheck import assert_close, numeric_grad, torch_or_skip


def _emb(B, D, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((B, D))
    t = rng.standard_normal((B, D))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return a.astype(np.float32), t.astype(np.float32)


def _lse(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def clip_ref(a, t, ls):
    a, t = np.asarray(a, np.float64), np.asarray(t, np.float64)
    lg = min(math.exp(float(ls)), 100.0) * a @ t.T
    d = np.diag(lg)
    return np.array(((_lse(lg, 1) - d).mean() + (_lse(lg, 0) - d).mean()) / 2)


def siglip_ref(a, t, tt, b):
    a, t = np.asarray(a, np.float64), np.asarray(t, np.float64)
    B = a.shape[0]
    lg = math.exp(float(tt)) * a @ t.T + float(b)
    z = (2 * np.eye(B) - 1) * lg
    return np.array(np.logaddexp(0, -z).sum() / B)


def _run(fn, arrays):
    ts = [mmu.tensor(x, requires_grad=True) for x in arrays]
    out = fn(*ts)
    out.backward()
    return out.item(), [x.grad.numpy() for x in ts]


@pytest.mark.parametrize("B", [1, 7, 512])
@pytest.mark.parametrize("ls", [math.log(1 / 0.07), 1.0])
def test_clip_vs_numpy_and_torch(B, ls):
    a, t = _emb(B, 24, B)
    lsa = np.float32(ls)
    val, (ga, gt, gl) = _run(clip_loss, [a, t, lsa])
    assert_close(val, clip_ref(a, t, lsa), 1e-5, 1e-5)
    torch = torch_or_skip()
    F = torch.nn.functional
    ta, tt, tl = (torch.tensor(x, requires_grad=True) for x in (a, t, lsa))
    lg = tl.exp().clamp(max=100) * ta @ tt.T
    lab = torch.arange(B)
    ref = (F.cross_entropy(lg, lab) + F.cross_entropy(lg.T, lab)) / 2
    ref.backward()
    assert_close(val, ref.item(), 1e-5, 1e-5)
    assert_close(ga, ta.grad.numpy(), 1e-4, 1e-6, what="d image_emb")
    assert_close(gt, tt.grad.numpy(), 1e-4, 1e-6, what="d text_emb")
    assert_close(gl, tl.grad.numpy(), 1e-4, 1e-6, what="d logit_scale")


@pytest.mark.parametrize("B", [1, 7, 512])
def test_siglip_vs_numpy_and_torch(B):
    a, t = _emb(B, 24, 100 + B)
    tv, bv = np.float32(math.log(10.0)), np.float32(-10.0)
    val, (ga, gt, gtt, gb) = _run(siglip_loss, [a, t, tv, bv])
    assert_close(val, siglip_ref(a, t, tv, bv), 1e-5, 1e-5)
    torch = torch_or_skip()
    F = torch.nn.functional
    ta, tt, ttt, tb = (torch.tensor(x, requires_grad=True) for x in (a, t, tv, bv))
    lg = ttt.exp() * ta @ tt.T + tb
    ref = -F.logsigmoid((2 * torch.eye(B) - 1) * lg).sum() / B
    ref.backward()
    assert_close(val, ref.item(), 1e-5, 1e-5)
    assert_close(ga, ta.grad.numpy(), 1e-4, 1e-6, what="d image_emb")
    assert_close(gt, tt.grad.numpy(), 1e-4, 1e-6, what="d text_emb")
    assert_close(gtt, ttt.grad.numpy(), 1e-4, 1e-6, what="d t")
    assert_close(gb, tb.grad.numpy(), 1e-4, 1e-6, what="d b")


def test_clip_finite_differences():
    rng = np.random.default_rng(3)
    a = (0.5 * rng.standard_normal((3, 4))).astype(np.float32)
    t = (0.5 * rng.standard_normal((3, 4))).astype(np.float32)
    ls = np.array(0.7, np.float32)  # 0-d arrays: numeric_grad differentiates ndarrays only
    _, grads = _run(clip_loss, [a, t, ls])
    num = numeric_grad(clip_ref, [a, t, ls], np.array(1.0))
    for g, n in zip(grads, num):
        assert_close(g, n, 1e-3, 1e-4)


def test_siglip_finite_differences():
    rng = np.random.default_rng(4)
    a = (0.5 * rng.standard_normal((3, 4))).astype(np.float32)
    t = (0.5 * rng.standard_normal((3, 4))).astype(np.float32)
    args = [a, t, np.array(0.5, np.float32), np.array(-1.0, np.float32)]
    _, grads = _run(siglip_loss, args)
    num = numeric_grad(siglip_ref, args, np.array(1.0))
    for g, n in zip(grads, num):
        assert_close(g, n, 1e-3, 1e-4)


def test_clip_scale_clamp():
    a, t = _emb(5, 8, 9)
    ls = np.float32(math.log(100.0) + 0.5)  # exp > 100: clamped, scale = 100, no gradient
    val, (_, _, gl) = _run(clip_loss, [a, t, ls])
    assert_close(val, clip_ref(a, t, ls), 1e-5, 1e-5)
    assert_close(val, clip_ref(a, t, math.log(100.0)), 1e-4, 1e-4)
    assert gl == 0.0
    _, (_, _, gl) = _run(clip_loss, [a, t, np.float32(math.log(100.0) - 0.5)])
    assert gl != 0.0


def test_modules():
    a, t = _emb(6, 8, 11)
    m = ClipLoss()
    assert_close(m.logit_scale.numpy(), np.float32(math.log(1 / 0.07)))
    out = m(mmu.tensor(a), mmu.tensor(t))
    out.backward()
    assert_close(out.item(), clip_ref(a, t, m.logit_scale.numpy()), 1e-5, 1e-5)
    assert m.logit_scale.grad is not None
    s = SigLipLoss()
    assert len(list(s.parameters())) == 2
    out = s(mmu.tensor(a), mmu.tensor(t))
    out.backward()
    assert_close(out.item(), siglip_ref(a, t, math.log(10.0), -10.0), 1e-5, 1e-5)
    assert s.t.grad is not None and s.b.grad is not None


def test_bad_inputs():
    a, t = _emb(4, 8, 0)
    s = np.float32(1.0)
    with pytest.raises(ValueError, match="batch"):
        clip_loss(a, t[:3], s)
    with pytest.raises(ValueError, match="dim"):
        siglip_loss(a, t[:, :5], s, s)
    with pytest.raises(ValueError, match="0-d"):
        clip_loss(a, t, np.ones(1, np.float32))
    with pytest.raises(ValueError, match="0-d"):
        siglip_loss(a, t, s, np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        clip_loss(a[0], t[0], s)


@pytest.mark.parametrize("fn,ref,extra", [
    (clip_loss, clip_ref, [np.array(2.0, np.float32)]),
    (siglip_loss, siglip_ref, [np.array(3.0, np.float32), np.array(-4.0, np.float32)]),
])
def test_upstream_scale_and_no_grad(fn, ref, extra):
    """A non-unit upstream gradient scales every gradient; the value without a graph is the same."""
    a, t = _emb(9, 8, 21)
    arrays = [a, t] + extra
    _, g1 = _run(fn, arrays)
    ts = [mmu.tensor(x, requires_grad=True) for x in arrays]
    (fn(*ts) * 3.0).backward()
    for g, x in zip(g1, ts):
        assert_close(x.grad.numpy(), 3.0 * g, 1e-5, 1e-6)
    plain = fn(*[mmu.tensor(x) for x in arrays])
    assert_close(plain.item(), ref(*arrays), 1e-5, 1e-5)


def test_siglip_extreme_logits():
    """Large |logits| (softplus/sigmoid saturation) stay finite and match the float64 formula."""
    a, t = _emb(16, 8, 5)
    args = [a, t, np.array(math.log(100.0), np.float32), np.array(-50.0, np.float32)]
    val, grads = _run(siglip_loss, args)
    assert_close(val, siglip_ref(*args), 1e-5, 1e-4)
    assert all(np.isfinite(g).all() for g in grads)


def test_no_primitive_per_call():
    a, t = _emb(33, 16, 2)
    s = np.array(1.0, np.float32)

    def step():
        ts = [mmu.tensor(x, requires_grad=True) for x in (a, t, s, s)]
        clip_loss(*ts[:3]).backward()
        siglip_loss(*ts).backward()
    step()
    before = mmu.stats()["primitives_created"]
    for _ in range(3):
        step()
    assert mmu.stats()["primitives_created"] == before
