"""mmu.functional.group_norm_silu: silu(group_norm(x)) fused into one op (forward, backward, double backward).

Forward vs a float64 NumPy reference, gradients vs central finite differences of that reference and
vs torch's F.silu(F.group_norm(...)), 1 vs 2 threads bit-identical, create_graph vs torch, bad
arguments. Both group_norm schedules are covered: a (sample, group) per task when N·G >= 2·threads,
channels spread over the threads otherwise.
"""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import autograd

try:
    from gradcheck import assert_close, check_mmu_grads, torch_or_skip
except ImportError:
    from tests.gradcheck import assert_close, check_mmu_grads, torch_or_skip


def rnd(*shape, seed=0, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(np.float32)


def gn_silu_ref(x, groups, w=None, b=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    mu = xg.mean(-1, keepdims=True)
    var = ((xg - mu) ** 2).mean(-1, keepdims=True)
    z = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if w is not None:
        z = z * np.asarray(w, np.float64).reshape(shape)
    if b is not None:
        z = z + np.asarray(b, np.float64).reshape(shape)
    return z / (1.0 + np.exp(-z))


# name -> (x, groups, weight, bias, eps)
CASES = {
    "affine_g2_4d": (rnd(2, 6, 3, 4, seed=1), 2, 1 + 0.3 * rnd(6, seed=2), 0.5 * rnd(6, seed=3), 1e-5),
    "no_affine_g3": (rnd(2, 6, 5, seed=4), 3, None, None, 1e-5),
    "weight_only_gC": (rnd(1, 4, 3, 3, seed=5), 4, rnd(4, seed=6), None, 1e-6),
    "bias_only_g1": (rnd(3, 4, 2, 2, seed=7), 1, None, rnd(4, seed=8), 1e-5),
    "large_mean": (rnd(2, 4, 3, 3, seed=9, scale=2.0, offset=100.0), 2, 1 + 0.3 * rnd(4, seed=10),
                   0.5 * rnd(4, seed=11), 1e-6),
    "2d_input": (rnd(5, 6, seed=12), 3, rnd(6, seed=13), rnd(6, seed=14), 1e-5),
    "saturated": (rnd(2, 4, 3, 3, seed=15), 2, 30 * rnd(4, seed=16), 40 * rnd(4, seed=17), 1e-5),
}


def _args(case):
    x, G, w, b, eps = case
    return x, G, w, b, eps


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_vs_numpy(name):
    x, G, w, b, eps = CASES[name]
    y = F.group_norm_silu(x, G, None if w is None else mmu.tensor(w), None if b is None else mmu.tensor(b), eps)
    assert y.shape == x.shape
    assert_close(y.numpy(), gn_silu_ref(x, G, w, b, eps), 1e-5, 2e-5 if name != "large_mean" else 1e-4, "forward")


@pytest.mark.parametrize("name", sorted(n for n in CASES if n != "saturated"))
def test_grads_vs_finite_differences(name):
    x, G, w, b, eps = CASES[name]
    arrays = [x] + [a for a in (w, b) if a is not None]
    has_w, has_b = w is not None, b is not None

    def split(args):
        it = iter(args[1:])
        return args[0], next(it) if has_w else None, next(it) if has_b else None

    def fn(m, *args):
        xx, ww, bb = split(args)
        return m.F.group_norm_silu(xx, G, ww, bb, eps)

    def ref(*args):
        xx, ww, bb = split(args)
        return gn_silu_ref(xx, G, ww, bb, eps)

    # the large-mean case's finite differences of x cancel 100-sized values: looser there
    tol = (1e-2, 1e-3) if name == "large_mean" else (1e-3, 1e-4)
    check_mmu_grads(fn, ref, arrays, rtol=tol[0], atol=tol[1])


def _mmu_and_torch(x, G, w, b, eps, g):
    torch = torch_or_skip()
    xm = mmu.tensor(x, requires_grad=True)
    wm = None if w is None else mmu.tensor(w, requires_grad=True)
    bm = None if b is None else mmu.tensor(b, requires_grad=True)
    ym = F.group_norm_silu(xm, G, wm, bm, eps)
    ym.backward(mmu.tensor(g))
    xt = torch.tensor(x, requires_grad=True)
    wt = None if w is None else torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    # torch 2.13's group_norm backward fails ("tensor does not have a device") with a bias and
    # no weight: give it a constant ones weight, the same function
    wt_ = torch.ones(x.shape[1]) if wt is None and bt is not None else wt
    yt = torch.nn.functional.silu(torch.nn.functional.group_norm(xt, G, wt_, bt, eps))
    yt.backward(torch.tensor(g))
    return (ym, xm, wm, bm), (yt, xt, wt, bt)


@pytest.mark.parametrize("name", sorted(CASES) + ["vqgan_like"])
def test_vs_torch(name):
    if name == "vqgan_like":  # 8 groups of 4 channels, 16x16: the group-per-task schedule on 2 threads
        x, G, w, b, eps = rnd(2, 32, 16, 16, seed=20), 8, 1 + 0.1 * rnd(32, seed=21), 0.1 * rnd(32, seed=22), 1e-6
    else:
        x, G, w, b, eps = CASES[name]
    g = rnd(*x.shape, seed=30)
    (ym, *mm), (yt, *tt) = _mmu_and_torch(x, G, w, b, eps, g)
    atol = 1e-4 if name in ("large_mean", "saturated") else 2e-5
    assert_close(ym.numpy(), yt.detach().numpy(), 1e-5, atol, "forward")
    for a, t in zip(mm, tt):
        if a is not None:
            scale = max(1.0, float(np.abs(t.grad.numpy()).max()))
            assert_close(a.grad.numpy(), t.grad.numpy(), 1e-4, atol * scale, "grad")


def test_only_weight_and_bias_need_grad():
    """x without requires_grad: dz needs a buffer of its own; dweight/dbias as with x."""
    x, G, w, b, eps = CASES["affine_g2_4d"]
    g = rnd(*x.shape, seed=31)
    wm, bm = mmu.tensor(w, requires_grad=True), mmu.tensor(b, requires_grad=True)
    F.group_norm_silu(mmu.tensor(x), G, wm, bm, eps).backward(mmu.tensor(g))
    xm, wm2, bm2 = mmu.tensor(x, requires_grad=True), mmu.tensor(w, requires_grad=True), mmu.tensor(b, requires_grad=True)
    F.group_norm_silu(xm, G, wm2, bm2, eps).backward(mmu.tensor(g))
    assert np.array_equal(wm.grad.numpy(), wm2.grad.numpy())
    assert np.array_equal(bm.grad.numpy(), bm2.grad.numpy())


def test_matches_unfused_mmu():
    """The fused op equals silu(group_norm(x)) from mmu's own two ops to float rounding."""
    x, G, w, b, eps = rnd(2, 16, 8, 8, seed=40), 4, 1 + 0.2 * rnd(16, seed=41), 0.3 * rnd(16, seed=42), 1e-6
    g = rnd(*x.shape, seed=43)
    outs = []
    for fused in (True, False):
        xm, wm, bm = (mmu.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.group_norm_silu(xm, G, wm, bm, eps) if fused else F.silu(F.group_norm(xm, G, wm, bm, eps))
        y.backward(mmu.tensor(g))
        outs.append([y.numpy(), xm.grad.numpy(), wm.grad.numpy(), bm.grad.numpy()])
    for a, r in zip(*outs):
        assert_close(a, r, 1e-4, 1e-5)


def test_deterministic_across_threads():
    """1 and 2 threads give the same bits, on both schedules (many groups; 3 (sample, group) pairs)."""
    shapes = [((4, 32, 16, 16), 8), ((1, 6, 40, 40), 3)]
    results = []
    old = mmu.get_num_threads()
    try:
        for t in (1, 2):
            mmu.set_num_threads(t)
            res = []
            for k, (shape, G) in enumerate(shapes):
                x, g = rnd(*shape, seed=50 + k), rnd(*shape, seed=60 + k)
                xm = mmu.tensor(x, requires_grad=True)
                wm = mmu.tensor(1 + 0.1 * rnd(shape[1], seed=70 + k), requires_grad=True)
                bm = mmu.tensor(0.1 * rnd(shape[1], seed=80 + k), requires_grad=True)
                y = F.group_norm_silu(xm, G, wm, bm, 1e-6)
                y.backward(mmu.tensor(g))
                res += [y.numpy().copy(), xm.grad.numpy().copy(), wm.grad.numpy().copy(), bm.grad.numpy().copy()]
            results.append(res)
    finally:
        mmu.set_num_threads(old)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("affine", [True, False])
def test_double_backward_vs_torch(affine):
    torch = torch_or_skip()
    x, c = rnd(2, 4, 3, 3, seed=90), rnd(2, 4, 3, 3, seed=91)
    w, b = 1 + 0.3 * rnd(4, seed=92), 0.5 * rnd(4, seed=93)

    def run(lib, F_, t, grad):
        xx = t(x)
        ww, bb = (t(w), t(b)) if affine else (None, None)
        if lib == "mmu":
            y = F_.group_norm_silu(xx, 2, ww, bb, 1e-5)
        else:
            y = F_.silu(F_.group_norm(xx, 2, ww, bb, 1e-5))
        loss = (y * y * t(c, False)).sum()
        params = [xx] + ([ww, bb] if affine else [])
        gs = grad(loss, params)
        pen = sum((gi * gi).sum() for gi in gs)
        return [gi.detach().numpy() if lib == "torch" else gi.numpy() for gi in gs], pen, params

    gm, pm, prm = run("mmu", F, lambda a, rg=True: mmu.tensor(a, requires_grad=rg),
                      lambda l, p: autograd.grad(l, p, create_graph=True))
    pm.backward()
    gt, pt, prt = run("torch", torch.nn.functional, lambda a, rg=True: torch.tensor(a, requires_grad=rg),
                      lambda l, p: torch.autograd.grad(l, p, create_graph=True))
    pt.backward()
    for a, r in zip(gm, gt):
        assert_close(a, r, 1e-4, 1e-5, "first-order grad")
    for a, r in zip(prm, prt):
        scale = max(1.0, float(np.abs(r.grad.numpy()).max()))
        assert_close(a.grad.numpy(), r.grad.numpy(), 1e-3, 1e-4 * scale, "second-order grad")


def test_bad_arguments():
    x = rnd(2, 6, 3)
    with pytest.raises(ValueError, match="group_norm_silu.*divisible"):
        F.group_norm_silu(x, 4)
    with pytest.raises(ValueError, match="group_norm_silu.*at least 2 dims"):
        F.group_norm_silu(rnd(6), 2)
    with pytest.raises(TypeError, match="group_norm_silu.*num_groups"):
        F.group_norm_silu(x, 2.0)
    with pytest.raises(TypeError, match="group_norm_silu.*eps"):
        F.group_norm_silu(x, 2, eps="1e-5")
    with pytest.raises(ValueError, match="group_norm_silu.*weight"):
        F.group_norm_silu(x, 2, mmu.tensor(rnd(5)))
    with pytest.raises(ValueError, match="group_norm_silu.*bias"):
        F.group_norm_silu(x, 2, None, mmu.tensor(rnd(6, 1)))


def test_empty_input():
    y = F.group_norm_silu(np.zeros((0, 4, 3), np.float32), 2)
    assert y.shape == (0, 4, 3)
