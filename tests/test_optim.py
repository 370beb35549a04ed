"""mmu.optim: Adam/AdamW/SGD step for step against a float64 NumPy reference of torch's update
formulas and against torch.optim itself, clip_grad_norm_, LR schedules, EMA, state_dict resume."""
import math

import numpy as np
import pytest

import mmu
from gradcheck import torch_or_skip

SHAPES = [(5, 7), (7,), (3, 4, 2), (20000,)]  # the last one spans several C work spans


def _arrays(seed, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _grad_seq(seed, steps, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]


def _groups(ps, **extra):
    # two groups: the second with weight_decay=0 (as for biases / norms)
    return [{"params": ps[:2], **extra}, {"params": ps[2:], "weight_decay": 0.0}]


# ------------------------------------------------------------------ float64 references of torch's formulas
def ref_adam(p, g, m, v, vmax, step, lr, b1, b2, eps, wd, decoupled, amsgrad=False, maximize=False):
    g = -g if maximize else g
    if wd:
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
    m = m + (1 - b1) * (g - m)
    v = b2 * v + (1 - b2) * g * g
    if amsgrad:
        vmax = np.maximum(vmax, v)
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    denom = np.sqrt(vmax if amsgrad else v) / math.sqrt(bc2) + eps
    return p - (lr / bc1) * m / denom, m, v, vmax


def ref_sgd(p, g, buf, lr, momentum, dampening, wd, nesterov, maximize=False):
    g = -g if maximize else g
    if wd:
        g = g + wd * p
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


ADAM_CASES = [
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-2, amsgrad=True, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.05, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.3, 0.9))),  # beta1 < 0.5: the other branch of torch's lerp
]
SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02),
    dict(lr=0.05, momentum=0.5, maximize=True),
]


@pytest.mark.parametrize("name,kw", ADAM_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ADAM_CASES)])
def test_adam_vs_numpy_reference(name, kw):
    init, grads = _arrays(0), _grad_seq(1, 20)
    params = [mmu.tensor(a, requires_grad=True) for a in init]
    ids = [id(p) for p in params]
    views = [p.numpy() for p in params]
    opt = getattr(mmu.optim, name)(_groups(params), **kw)
    full = dict(opt.defaults)
    ref = [[a.astype(np.float64), 0.0 * a, 0.0 * a, 0.0 * a] for a in init]
    for step, gs in enumerate(grads, 1):
        for p, g in zip(params, gs):
            p.grad = mmu.tensor(g)
        assert opt.step() is None
        for i, (r, g) in enumerate(zip(ref, gs)):
            wd = full["weight_decay"] if i < 2 else 0.0
            r[:] = ref_adam(r[0], g.astype(np.float64), r[1], r[2], r[3], step, full["lr"], *full["betas"],
                            full["eps"], wd, name == "AdamW", full["amsgrad"], full["maximize"])
        for p, r in zip(params, ref):
            st = opt.state[p]
            assert st["step"] == step
            np.testing.assert_allclose(p.numpy(), r[0], rtol=2e-5, atol=2e-6)
            np.testing.assert_allclose(st["exp_avg"].numpy(), r[1], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(st["exp_avg_sq"].numpy(), r[2], rtol=1e-5, atol=1e-9)
    # updated in place: same objects, same memory
    assert [id(p) for p in params] == ids
    assert all(np.shares_memory(v, p.numpy()) for v, p in zip(views, params))


@pytest.mark.parametrize("kw", SGD_CASES, ids=[str(i) for i in range(len(SGD_CASES))])
def test_sgd_vs_numpy_reference(kw):
    init, grads = _arrays(2), _grad_seq(3, 20)
    params = [mmu.tensor(a, requires_grad=True) for a in init]
    opt = mmu.optim.SGD(_groups(params), **kw)
    full = dict(opt.defaults)
    ref = [[a.astype(np.float64), None] for a in init]
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = mmu.tensor(g)
        opt.step()
        for i, (r, g) in enumerate(zip(ref, gs)):
            wd = full["weight_decay"] if i < 2 else 0.0
            r[:] = ref_sgd(r[0], g.astype(np.float64), r[1], full["lr"], full["momentum"], full["dampening"], wd,
                           full["nesterov"], full["maximize"])
        for p, r in zip(params, ref):
            np.testing.assert_allclose(p.numpy(), r[0], rtol=1e-5, atol=1e-5)
            if full["momentum"]:
                np.testing.assert_allclose(opt.state[p]["momentum_buffer"].numpy(), r[1], rtol=1e-5, atol=1e-5)


def _run_both(torch, name, kw, steps=20, skip_grad=None):
    init, grads = _arrays(4), _grad_seq(5, steps)
    mp = [mmu.tensor(a, requires_grad=True) for a in init]
    tp = [torch.tensor(a, requires_grad=True) for a in init]
    mo = getattr(mmu.optim, name)(_groups(mp), **kw)
    to = getattr(torch.optim, name)(_groups(tp), **kw)
    for step, gs in enumerate(grads):
        for i, (a, b, g) in enumerate(zip(mp, tp, gs)):
            if skip_grad and skip_grad(step, i):
                a.grad, b.grad = None, None
            else:
                a.grad, b.grad = mmu.tensor(g), torch.tensor(g)
        mo.step()
        to.step()
        yield mp, tp, mo, to


@pytest.mark.parametrize("name,kw", ADAM_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ADAM_CASES)])
def test_adam_vs_torch(name, kw):
    torch = torch_or_skip()
    for mp, tp, mo, to in _run_both(torch, name, kw):
        for a, b in zip(mp, tp):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)
            sa, sb = mo.state[a], to.state[b]
            assert sa["step"] == int(sb["step"].item())
            for k in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if mo.defaults["amsgrad"] else ()):
                np.testing.assert_allclose(sa[k].numpy(), sb[k].numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("kw", SGD_CASES, ids=[str(i) for i in range(len(SGD_CASES))])
def test_sgd_vs_torch(kw):
    torch = torch_or_skip()
    for mp, tp, mo, to in _run_both(torch, "SGD", kw):
        for a, b in zip(mp, tp):
            # same float32 operations, including where ATen fuses multiply-add: bit-identical
            np.testing.assert_array_equal(a.numpy(), b.detach().numpy())


def test_params_without_grad_are_skipped_vs_torch():
    torch = torch_or_skip()
    # param 1 gets no gradient on even steps: its step count (and bias correction) falls behind
    skip = lambda step, i: i == 1 and step % 2 == 0  # noqa: E731
    for mp, tp, mo, to in _run_both(torch, "AdamW", dict(lr=1e-2), skip_grad=skip):
        for a, b in zip(mp, tp):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)
        if tp[1] in to.state:
            assert mo.state[mp[1]]["step"] == int(to.state[tp[1]]["step"].item())
        else:
            assert mp[1] not in mo.state
    assert mo.state[mp[1]]["step"] == 10 and mo.state[mp[0]]["step"] == 20


def test_param_groups_defaults_and_repr():
    a, b = mmu.zeros(3, requires_grad=True), mmu.zeros(2, requires_grad=True)
    opt = mmu.optim.AdamW([{"params": [a]}, {"params": b, "lr": 0.5}])
    g0, g1 = opt.param_groups
    assert g0["lr"] == 1e-3 and g1["lr"] == 0.5 and g1["weight_decay"] == 1e-2 and g1["betas"] == (0.9, 0.999)
    assert g0["eps"] == 1e-8 and g0["amsgrad"] is False and g0["maximize"] is False
    assert mmu.optim.Adam([a]).param_groups[0]["weight_decay"] == 0
    assert mmu.optim.SGD([a]).param_groups[0]["lr"] == 1e-3
    r = repr(opt)
    assert r.startswith("AdamW (") and "Parameter Group 1" in r and "lr: 0.5" in r
    c = mmu.zeros(4, requires_grad=True)
    opt.add_param_group({"params": [c], "weight_decay": 0.0})
    assert opt.param_groups[2]["lr"] == 1e-3 and opt.param_groups[2]["weight_decay"] == 0.0


def test_bad_arguments():
    a = mmu.zeros(3, requires_grad=True)
    with pytest.raises(TypeError):
        mmu.optim.AdamW(a)  # a bare tensor
    with pytest.raises(ValueError, match="empty"):
        mmu.optim.AdamW([])
    with pytest.raises(ValueError, match="learning rate"):
        mmu.optim.AdamW([a], lr=-1)
    with pytest.raises(ValueError, match="beta"):
        mmu.optim.Adam([a], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="Nesterov"):
        mmu.optim.SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="more than one"):
        mmu.optim.SGD([{"params": [a]}, {"params": [a]}])
    with pytest.raises(TypeError):
        mmu.optim.SGD([a, "x"])
    with pytest.raises(ValueError, match="non-leaf"):
        mmu.optim.SGD([a * 2])
    with pytest.raises(TypeError):
        mmu.optim.SGD([mmu.zeros(3, dtype=mmu.int64)])
    with pytest.raises(TypeError):
        mmu.optim.SGD({a})
    # the C entry points reject mismatched lists without touching anything
    with pytest.raises((ValueError, TypeError)):
        mmu._C.adam_step([a], [], [], None, [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, False, False)
    with pytest.raises(ValueError, match="grad"):
        mmu._C.adam_step([a], [mmu.zeros(3)], [mmu.zeros(3)], None, [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, False,
                         False)
    a.grad = mmu.ones(3)
    with pytest.raises(ValueError, match="shape"):
        mmu._C.adam_step([a], [mmu.zeros(4)], [mmu.zeros(3)], None, [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, False,
                         False)
    np.testing.assert_array_equal(a.numpy(), 0)


def test_zero_grad_and_closure():
    a = mmu.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = mmu.optim.SGD([a], lr=0.1)
    calls = []

    def closure():
        calls.append(mmu.is_grad_enabled())
        opt.zero_grad()
        loss = (a * a).sum()
        loss.backward()
        return loss

    with mmu.no_grad():
        loss = opt.step(closure)
    assert calls == [True] and float(loss.item()) == 3.0
    np.testing.assert_allclose(a.numpy(), 0.8, rtol=1e-6)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.numpy(), 0)
    opt.zero_grad()
    assert a.grad is None
    opt.step()  # no grads: nothing happens
    np.testing.assert_allclose(a.numpy(), 0.8, rtol=1e-6)


def test_training_with_backward():
    # a real loop: gradients from mmu's autograd (leaf .grad buffers adopted from the engine)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    w_true = rng.standard_normal((5, 1)).astype(np.float32)
    y = mmu.tensor(X @ w_true)
    w = mmu.zeros(5, 1, requires_grad=True)
    b = mmu.zeros(1, requires_grad=True)
    opt = mmu.optim.AdamW([w, b], lr=0.1, weight_decay=0.0)
    for _ in range(100):
        opt.zero_grad()
        loss = ((mmu.matmul(mmu.tensor(X), w) + b - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert float(loss.item()) < 1e-3
    np.testing.assert_allclose(w.numpy(), w_true, atol=0.05)


# ------------------------------------------------------------------ state_dict
@pytest.mark.parametrize("name,kw", [("AdamW", dict(lr=1e-2, amsgrad=True)), ("Adam", dict(weight_decay=0.1)),
                                     ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True))])
@pytest.mark.parametrize("through_file", [False, True])
def test_state_dict_resume_is_exact(name, kw, through_file, tmp_path):
    init, grads = _arrays(6), _grad_seq(7, 10)

    def make(arrays):
        ps = [mmu.tensor(a, requires_grad=True) for a in arrays]
        return ps, getattr(mmu.optim, name)(_groups(ps), **kw)

    def run(ps, opt, gs):
        for step_grads in gs:
            for p, g in zip(ps, step_grads):
                p.grad = mmu.tensor(g)
            opt.step()

    ps, opt = make(init)
    run(ps, opt, grads[:5])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    if through_file:
        mmu.save({"model": [p for p in ps], "optim": sd}, tmp_path / "ckpt.safetensors")
        loaded = mmu.load(tmp_path / "ckpt.safetensors")
        saved_params, sd = [p.numpy() for p in loaded["model"]], loaded["optim"]
    else:
        saved_params = [p.numpy().copy() for p in ps]
    ps2, opt2 = make(saved_params)
    opt2.param_groups[0]["lr"] = 123.0  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt2.param_groups[0]["params"][0] is ps2[0]
    run(ps, opt, grads[5:])
    run(ps2, opt2, grads[5:])
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_state_dict_from_torch_and_errors():
    torch = torch_or_skip()
    init, grads = _arrays(8), _grad_seq(9, 3)
    tp = [torch.tensor(a, requires_grad=True) for a in init]
    to = torch.optim.AdamW(_groups(tp), lr=1e-2)
    for gs in grads:
        for b, g in zip(tp, gs):
            b.grad = torch.tensor(g)
        to.step()
    mp = [mmu.tensor(b.detach().numpy(), requires_grad=True) for b in tp]
    mo = mmu.optim.AdamW(_groups(mp), lr=1e-2)
    tsd = to.state_dict()
    tsd["param_groups"] = [{k: g[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                                              "params")} for g in tsd["param_groups"]]
    mo.load_state_dict(tsd)
    g = _grad_seq(10, 1)[0]
    for a, b, gg in zip(mp, tp, g):
        a.grad, b.grad = mmu.tensor(gg), torch.tensor(gg)
    mo.step()
    to.step()
    for a, b in zip(mp, tp):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)
    bad = mo.state_dict()
    bad["param_groups"] = bad["param_groups"][:1]
    with pytest.raises(ValueError, match="number of parameter groups"):
        mo.load_state_dict(bad)
    bad = mo.state_dict()
    bad["param_groups"][0] = dict(bad["param_groups"][0], params=[0])
    with pytest.raises(ValueError, match="size"):
        mo.load_state_dict(bad)


# ------------------------------------------------------------------ clip_grad_norm_
def _grads_for_clip(seed, with_none=True):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) * 3 for s in SHAPES]
    grads = [None if (with_none and i == 1) else rng.standard_normal(s).astype(np.float32) for i, s in
             enumerate(SHAPES)]
    return arrays, grads


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_vs_reference(norm_type, max_norm):
    arrays, grads = _grads_for_clip(11)
    ps = [mmu.tensor(a, requires_grad=True) for a in arrays]
    for p, g in zip(ps, grads):
        if g is not None:
            p.grad = mmu.tensor(g)
    gs = np.concatenate([g.astype(np.float64).ravel() for g in grads if g is not None])
    ref = np.abs(gs).max() if math.isinf(norm_type) else (np.abs(gs) ** norm_type).sum() ** (1 / norm_type)
    total = mmu.optim.clip_grad_norm_(ps, max_norm, norm_type)
    assert isinstance(total, mmu.Tensor) and total.shape == () and total.dtype == mmu.float32
    np.testing.assert_allclose(total.item(), ref, rtol=1e-6)
    coef = min(1.0, max_norm / (ref + 1e-6))
    for p, g in zip(ps, grads):
        if g is None:
            assert p.grad is None
        elif coef < 1:
            np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-6, atol=1e-9)
        else:
            np.testing.assert_array_equal(p.grad.numpy(), g)  # untouched below max_norm


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.5])
def test_clip_grad_norm_vs_torch(norm_type):
    torch = torch_or_skip()
    arrays, grads = _grads_for_clip(12)
    ps = [mmu.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    for p, t, g in zip(ps, ts, grads):
        if g is not None:
            p.grad, t.grad = mmu.tensor(g), torch.tensor(g)
    a = mmu.optim.clip_grad_norm_(ps, 1.0, norm_type)
    b = torch.nn.utils.clip_grad_norm_(ts, 1.0, norm_type)
    np.testing.assert_allclose(a.item(), b.item(), rtol=2e-6)
    for p, t in zip(ps, ts):
        if t.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=2e-6, atol=1e-9)


def test_clip_grad_norm_edge_cases():
    a = mmu.zeros(3, requires_grad=True)
    assert mmu.optim.clip_grad_norm_([a], 1.0).item() == 0.0  # no grads at all
    a.grad = mmu.tensor(np.array([3.0, 4.0, 0.0], np.float32))
    assert mmu.optim.clip_grad_norm_(a, 10.0).item() == 5.0  # a bare tensor is accepted
    a.grad = mmu.tensor(np.array([np.inf, 1.0, 0.0], np.float32))
    with pytest.raises(RuntimeError, match="non-finite"):
        mmu.optim.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError):
        mmu.optim.clip_grad_norm_([a], 1.0, norm_type=0)
    # a gradient buffer shared by two leaves (both inputs of an add) is scaled once per leaf
    x = mmu.tensor(np.ones(4, np.float32), requires_grad=True)
    y = mmu.tensor(np.ones(4, np.float32), requires_grad=True)
    ((x + y) * 3.0).sum().backward()
    total = mmu.optim.clip_grad_norm_([x, y], 1.0)
    np.testing.assert_allclose(total.item(), math.sqrt(8 * 9), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), 3.0 / math.sqrt(72), rtol=1e-5)
    np.testing.assert_allclose(y.grad.numpy(), 3.0 / math.sqrt(72), rtol=1e-5)


def test_clip_grad_norm_deterministic_across_threads():
    arrays, grads = _grads_for_clip(13, with_none=False)
    results = []
    prev = mmu.get_num_threads()
    try:
        for n in (1, 2):
            mmu.set_num_threads(n)
            ps = [mmu.tensor(a, requires_grad=True) for a in arrays]
            for p, g in zip(ps, grads):
                p.grad = mmu.tensor(g)
            results.append(mmu._C.grad_norm(ps, 2.0))
    finally:
        mmu.set_num_threads(prev)
    assert results[0] == results[1]


def test_clip_reexported_by_nn_utils_if_present():
    utils = getattr(getattr(mmu, "nn", None), "utils", None)
    if utils is None or not hasattr(utils, "clip_grad_norm_"):
        pytest.skip("mmu.nn.utils not merged yet")
    assert utils.clip_grad_norm_ is mmu.optim.clip_grad_norm_


# ------------------------------------------------------------------ LR schedules
def _opt(lr=0.1, groups=2):
    ps = [mmu.zeros(2, requires_grad=True) for _ in range(groups)]
    return mmu.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)], lr=lr)


def test_lambda_lr_vs_torch():
    torch = torch_or_skip()
    f = lambda e: 0.95 ** e if e > 2 else (e + 1) / 3  # noqa: E731
    mo = _opt()
    tps = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    to = torch.optim.SGD([{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(tps)], lr=0.1)
    ms, ts = mmu.optim.lr_scheduler.LambdaLR(mo, f), torch.optim.lr_scheduler.LambdaLR(to, f)
    for _ in range(12):
        assert ms.get_last_lr() == ts.get_last_lr()
        assert [g["lr"] for g in mo.param_groups] == [g["lr"] for g in to.param_groups]
        assert ms.last_epoch == ts.last_epoch
        mo.step()
        to.step()
        ms.step()
        ts.step()


def test_constant_lr_vs_torch():
    torch = torch_or_skip()
    mo = _opt()
    to = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": 0.1 * (i + 1)} for i in range(2)])
    ms = mmu.optim.lr_scheduler.ConstantLR(mo, factor=0.5, total_iters=4)
    ts = torch.optim.lr_scheduler.ConstantLR(to, factor=0.5, total_iters=4)
    for _ in range(8):
        np.testing.assert_allclose(ms.get_last_lr(), ts.get_last_lr(), rtol=1e-15)
        to.step()
        ms.step()
        ts.step()


def test_warmup_cosine_formula():
    mo = _opt(lr=1.0, groups=1)
    s = mmu.optim.lr_scheduler.WarmupCosine(mo, warmup_steps=4, total_steps=14, min_lr=0.1)
    lrs = [s.get_last_lr()[0]]
    for _ in range(20):
        s.step()
        lrs.append(mo.param_groups[0]["lr"])
    assert lrs[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for t in range(4, 21):
        prog = min(1.0, (t - 4) / 10)
        assert lrs[t] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)), abs=1e-15)
    assert lrs[14] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.1)
    # min_lr_ratio: the floor is relative to each group's base lr; start_factor
    mo = _opt(lr=1.0, groups=2)
    s = mmu.optim.lr_scheduler.WarmupCosine(mo, 2, 4, min_lr_ratio=0.5, start_factor=0.5)
    assert s.get_last_lr() == [0.5, 1.0]
    for _ in range(4):
        s.step()
    assert s.get_last_lr() == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError):
        mmu.optim.lr_scheduler.WarmupCosine(mo, 5, 4)
    with pytest.raises(ValueError):
        mmu.optim.lr_scheduler.WarmupCosine(mo, 1, 4, min_lr=0.1, min_lr_ratio=0.1)


def test_constant_with_warmup_and_scheduler_state_dict():
    mo = _opt(lr=1.0, groups=1)
    s = mmu.optim.lr_scheduler.ConstantLR(mo, factor=1.0, total_iters=0, warmup_steps=4)
    got = [s.get_last_lr()[0]]
    for _ in range(6):
        s.step()
        got.append(s.get_last_lr()[0])
    assert got == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    mo2 = _opt(lr=1.0, groups=1)
    s1 = mmu.optim.lr_scheduler.WarmupCosine(mo, 3, 10)
    for _ in range(5):
        s1.step()
    s2 = mmu.optim.lr_scheduler.WarmupCosine(mo2, 3, 10)
    s2.load_state_dict(s1.state_dict())
    for _ in range(3):
        s1.step()
        s2.step()
        assert s1.get_last_lr() == s2.get_last_lr() and s1.last_epoch == s2.last_epoch
    lam = mmu.optim.lr_scheduler.LambdaLR(mo, lambda e: 1.0)
    assert lam.state_dict()["lr_lambdas"] == [None]


# ------------------------------------------------------------------ EMA
class TinyModel:
    """A stand-in for mmu.nn.Module: named_parameters() and named_buffers()."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.w = mmu.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
        self.b = mmu.tensor(rng.standard_normal(40000).astype(np.float32), requires_grad=True)
        self.running = mmu.tensor(rng.standard_normal(4).astype(np.float32))
        self.count = mmu.tensor(np.array(0, np.int64))

    def named_parameters(self):
        return iter([("w", self.w), ("b", self.b)])

    def named_buffers(self):
        return iter([("running", self.running), ("count", self.count)])


def test_ema_formula():
    m = TinyModel(0)
    ema = mmu.optim.EMA(m, decay=0.9, update_after_step=2)
    ref = {n: t.numpy().astype(np.float64) for n, t in list(m.named_parameters()) + [("running", m.running)]}
    rng = np.random.default_rng(1)
    for k in range(8):
        with mmu.no_grad():
            for t in (m.w, m.b, m.running):
                t.add_(mmu.tensor(rng.standard_normal(t.shape).astype(np.float32)))
        m.count.fill_(k + 1)
        d_expected = 0.0 if k < 2 else min(0.9, (1 + (k - 2)) / (10 + (k - 2)))
        assert ema.get_decay() == pytest.approx(d_expected)
        ema.update()
        for n, t in (("w", m.w), ("b", m.b), ("running", m.running)):
            ref[n] = d_expected * ref[n] + (1 - d_expected) * t.numpy()
    np.testing.assert_allclose(ema.shadow["w"].numpy(), ref["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ema.shadow["b"].numpy(), ref["b"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ema.buffers["running"].numpy(), ref["running"], rtol=1e-5, atol=1e-6)
    assert ema.buffers["count"].item() == 8  # integer buffers are copied, not averaged
    # no warmup: the plain decay
    m2 = TinyModel(2)
    e2 = mmu.optim.EMA(m2, decay=0.99, warmup=False)
    assert e2.get_decay() == 0.99


def test_ema_swap_copy_and_state_dict():
    m = TinyModel(3)
    ema = mmu.optim.EMA(m, decay=0.5)
    live = m.w.numpy().copy()
    with mmu.no_grad():
        m.w.add_(1.0)
    ema.update()
    live = m.w.numpy().copy()
    w_obj = m.w
    with ema.average_parameters(m):
        np.testing.assert_array_equal(m.w.numpy(), ema.shadow["w"].numpy())
        assert m.w is w_obj
    np.testing.assert_array_equal(m.w.numpy(), live)  # restored
    with pytest.raises(KeyError):
        with ema.average_parameters():
            raise KeyError("boom")
    np.testing.assert_array_equal(m.w.numpy(), live)  # restored on error too
    sd = ema.state_dict()
    e2 = mmu.optim.EMA(TinyModel(4))
    e2.load_state_dict(sd)
    assert e2.num_updates == 1
    np.testing.assert_array_equal(e2.shadow["w"].numpy(), ema.shadow["w"].numpy())
    ema.copy_to(m)
    np.testing.assert_array_equal(m.w.numpy(), ema.shadow["w"].numpy())
    with pytest.raises(TypeError):
        mmu.optim.EMA(object())


def test_state_dict_layout_matches_torch():
    torch = torch_or_skip()
    for name, kw in (("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9)), ("AdamW", {}),
                     ("Adam", dict(amsgrad=True))):
        for mp, tp, mo, to in _run_both(torch, name, kw, steps=1):
            msd, tsd = mo.state_dict(), to.state_dict()
            assert sorted(msd["state"]) == sorted(tsd["state"])
            for k in tsd["state"]:
                assert set(msd["state"][k]) == set(tsd["state"][k])
            assert [g["params"] for g in msd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
            for mg, tg in zip(msd["param_groups"], tsd["param_groups"]):
                for key, val in mg.items():
                    assert tg[key] == val, key


def test_full_checkpoint_resume_through_file(tmp_path):
    """model + AdamW + WarmupCosine + EMA saved with mmu.save mid-run: the resumed run is identical."""
    grads = _grad_seq(20, 8, shapes=[(3, 4), (40000,)])

    def make():
        m = TinyModel(5)
        opt = mmu.optim.AdamW([{"params": [m.w]}, {"params": [m.b], "weight_decay": 0.0}], lr=0.05)
        sched = mmu.optim.lr_scheduler.WarmupCosine(opt, 2, 8, min_lr_ratio=0.1)
        return m, opt, sched, mmu.optim.EMA(m, decay=0.9)

    def run(m, opt, sched, ema, gs):
        for g in gs:
            m.w.grad, m.b.grad = mmu.tensor(g[0]), mmu.tensor(g[1])
            mmu.optim.clip_grad_norm_([m.w, m.b], 50.0)
            opt.step()
            sched.step()
            ema.update()

    a = make()
    run(*a, grads[:4])
    mmu.save({"model": dict(a[0].named_parameters()), "optim": a[1].state_dict(), "sched": a[2].state_dict(),
              "ema": a[3].state_dict()}, tmp_path / "ckpt.safetensors")
    ck = mmu.load(tmp_path / "ckpt.safetensors")
    b = make()
    for name, p in b[0].named_parameters():
        p.numpy()[...] = ck["model"][name].numpy()
    b[1].load_state_dict(ck["optim"])
    b[2].load_state_dict(ck["sched"])
    b[3].load_state_dict(ck["ema"])
    run(*a, grads[4:])
    run(*b, grads[4:])
    for (_, p), (_, q) in zip(a[0].named_parameters(), b[0].named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    np.testing.assert_array_equal(a[3].shadow["b"].numpy(), b[3].shadow["b"].numpy())
    assert a[2].get_last_lr() == b[2].get_last_lr()


def test_ema_update_matches_torch_lerp():
    torch = torch_or_skip()
    m = TinyModel(7)
    ema = mmu.optim.EMA(m, decay=0.99, warmup=False)
    shadow = [torch.tensor(t.numpy().copy()) for _, t in m.named_parameters()]
    rng = np.random.default_rng(8)
    for _ in range(5):
        with mmu.no_grad():
            for _, t in m.named_parameters():
                t.add_(mmu.tensor(rng.standard_normal(t.shape).astype(np.float32)))
        ema.update()
        for s, (_, t) in zip(shadow, m.named_parameters()):
            s.lerp_(torch.tensor(t.numpy()), 1 - 0.99)
    for s, name in zip(shadow, ["w", "b"]):
        np.testing.assert_array_equal(ema.shadow[name].numpy(), s.numpy())  # same fused multiply-add


def test_torch_switches_accepted():
    a = mmu.zeros(3, requires_grad=True)
    mmu.optim.AdamW([a], foreach=True, fused=True)
    mmu.optim.SGD([a], foreach=False)
    with pytest.raises(NotImplementedError):
        mmu.optim.Adam([a], differentiable=True)
    with pytest.raises(ValueError):
        mmu.optim.AdamW([a], capturable=True)
