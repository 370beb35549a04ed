"""mmu.autograd.grad (torch.autograd.grad): first-order gradients vs backward's .grad, pruning,
retain_graph / allow_unused semantics, create_graph double backward vs torch and finite
differences, and the losses built on it (adaptive_weight, r1_penalty)."""
import os
import zlib

import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import autograd
from mmu.losses import adaptive_weight, r1_penalty, softplus

from gradcheck import assert_close, torch_or_skip

RNG = np.random.default_rng(1234)
SEED_OFFSET = int(os.environ.get("MMU_TEST_SEED_OFFSET", "0"))  # vary to stress the tolerances


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def leaf(a):
    return mmu.tensor(a, requires_grad=True)


# ------------------------------------------------------------ first order
def _mlp(x, w1, b1, w2):
    return ((x @ w1 + b1).tanh() @ w2).sigmoid().mean()


def _convnet(x, w1, b1, w2):
    h = F.leaky_relu(F.conv2d(x, w1, b1, stride=2, padding=1), 0.2)
    return (F.conv2d(h, w2, None, padding=1) ** 2).mean()


def _shared(x, w1, b1, w2):
    y = x * w1  # x feeds two paths (accumulation), broadcasting
    return (y.exp().sum() + (y * b1).sum() + (x.sum(dim=0) * w2).sum())


GRAPHS = {
    "mlp": (_mlp, [(4, 3), (3, 5), (5,), (5, 2)]),
    "convnet": (_convnet, [(2, 3, 8, 8), (4, 3, 3, 3), (4,), (2, 4, 3, 3)]),
    "shared": (_shared, [(3, 4), (4,), (3, 4), (4,)]),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_grad_matches_backward_and_leaves_grad_untouched(name):
    fn, shapes = GRAPHS[name]
    arrays = [rand(*s, scale=0.5) for s in shapes]
    ts = [leaf(a) for a in arrays]
    out = fn(*ts)
    grads = autograd.grad(out, ts, retain_graph=True)
    assert all(t.grad is None for t in ts)  # no .grad touched
    assert isinstance(grads, tuple) and len(grads) == len(ts)
    out.backward()
    for g, t in zip(grads, ts):
        assert not g.requires_grad and g.grad_fn is None
        assert_close(g.numpy(), t.grad.numpy(), rtol=1e-6, atol=1e-7, what=name)


def test_subset_of_inputs_and_order():
    arrays = [rand(4, 3), rand(3, 5), rand(5), rand(5, 2)]
    ts = [leaf(a) for a in arrays]
    out = _mlp(*ts)
    g_all = autograd.grad(out, ts, retain_graph=True)
    g_w2, g_x = autograd.grad(out, [ts[3], ts[0]])
    assert_close(g_w2.numpy(), g_all[3].numpy(), rtol=0, atol=0)
    assert_close(g_x.numpy(), g_all[0].numpy(), rtol=0, atol=0)


def test_multiple_outputs_and_grad_outputs():
    x, w = leaf(rand(3, 4)), leaf(rand(4, 2))
    y1 = x @ w
    y2 = (x * x).sum()
    v = rand(3, 2)
    gx, gw = autograd.grad([y1, y2], [x, w], grad_outputs=[v, None], retain_graph=True)
    xn, wn = x.numpy(), w.numpy()
    assert_close(gx.numpy(), v @ wn.T + 2 * xn, rtol=1e-5, atol=1e-5)
    assert_close(gw.numpy(), xn.T @ v, rtol=1e-5, atol=1e-5)
    # grad_outputs as a single array for a single output
    (gx2,) = autograd.grad(y1, x, grad_outputs=v)
    assert_close(gx2.numpy(), v @ wn.T, rtol=1e-5, atol=1e-5)


def test_non_leaf_inputs():
    torch = torch_or_skip()
    a, w = rand(3, 4), rand(4, 5)
    x = leaf(a)
    h = x @ mmu.tensor(w)
    h2 = h.tanh()
    out = (h2 * h2).sum() + h.sum()
    gh, gh2, gx = autograd.grad(out, [h, h2, x])
    xt = torch.tensor(a, requires_grad=True)
    ht = xt @ torch.tensor(w)
    h2t = ht.tanh()
    ht.retain_grad(), h2t.retain_grad()
    ((h2t * h2t).sum() + ht.sum()).backward()
    assert_close(gh.numpy(), ht.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert_close(gh2.numpy(), h2t.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert_close(gx.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_output_is_input_and_leaf_output():
    x = leaf(rand(3))
    y = x * 2.0
    (gy,) = autograd.grad(y, y, grad_outputs=np.ones(3, np.float32))
    assert_close(gy.numpy(), np.ones(3))
    (gx,) = autograd.grad(x, x, grad_outputs=np.full(3, 2.0, np.float32))
    assert_close(gx.numpy(), np.full(3, 2.0))


def test_allow_unused():
    x, z = leaf(rand(3)), leaf(rand(3))
    y = (x * x).sum()
    with pytest.raises(RuntimeError, match="not have been used in the graph.*allow_unused"):
        autograd.grad(y, [x, z], retain_graph=True)
    gx, gz = autograd.grad(y, [x, z], allow_unused=True)
    assert gz is None
    assert_close(gx.numpy(), 2 * x.numpy())


def test_retain_graph():
    x = leaf(rand(3))
    y = (x.exp() * x).sum()
    autograd.grad(y, x, retain_graph=True)
    (g,) = autograd.grad(y, x)  # retain_graph=False frees the graph
    assert_close(g.numpy(), (np.exp(x.numpy()) * (1 + x.numpy())), rtol=1e-5)
    with pytest.raises(RuntimeError, match="second time"):
        autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_reachable_zero_gradient_is_zeros():
    x = leaf(rand(3) - 10.0)
    y = x.relu().sum()
    (g,) = autograd.grad(y, x)
    assert_close(g.numpy(), np.zeros(3))


# ------------------------------------------------------------------ pruning
def test_pruning_skips_the_rest_of_the_graph():
    a, b = leaf(rand(3, 3)), leaf(rand(3, 3))
    h = b
    for _ in range(20):  # a long branch that does not lead to a
        h = (h @ b).tanh()
    y = (a * a).sum() + h.sum()
    n0 = autograd._nodes_run()
    (ga,) = autograd.grad(y, a, retain_graph=True)
    ran = autograd._nodes_run() - n0
    assert ran <= 3, ran  # add, sum, mul: nothing of the b-branch
    assert_close(ga.numpy(), 2 * a.numpy())
    # the switched-off edges are restored: a full backward still reaches b
    y.backward()
    assert b.grad is not None and np.abs(b.grad.numpy()).sum() > 0
    assert_close(a.grad.numpy(), 2 * a.numpy())


def test_pruned_edges_compute_no_unneeded_gradient():
    # only the conv's weight gradient is requested: the edges to x and to the bias are switched off
    # for the run, so the conv's backward computes dw alone (and pow/sum their one input gradient)
    x = leaf(rand(1, 2, 6, 6))
    w, b = leaf(rand(3, 2, 3, 3)), leaf(rand(3))
    y = (F.conv2d(x, w, b, padding=1) ** 2).sum()
    n0, g0 = autograd._nodes_run(), autograd._grads_computed()
    (gw,) = autograd.grad(y, w, retain_graph=True)
    assert autograd._nodes_run() - n0 == 3  # sum, pow, conv
    assert autograd._grads_computed() - g0 == 3  # d pow, d conv, dw (no dx, no db)
    g0 = autograd._grads_computed()
    gx, gb = autograd.grad(y, [x, b], retain_graph=True)
    assert autograd._grads_computed() - g0 == 4  # d pow, d conv, dx, db
    y.backward()  # the switched-off edges were restored
    assert_close(gw.numpy(), w.grad.numpy(), rtol=0, atol=0)
    assert_close(gx.numpy(), x.grad.numpy(), rtol=0, atol=0)
    assert_close(gb.numpy(), b.grad.numpy(), rtol=1e-6, atol=0)  # db alone is a plain sum (not oneDNN's)


def test_pruned_vqgan_like_last_layer():
    # adaptive-weight pattern: only the decoder's last layer weight is asked for
    torch = torch_or_skip()
    z = rand(2, 4, 8, 8)
    ws = [rand(8, 4, 3, 3, scale=0.2), rand(8, 8, 3, 3, scale=0.2), rand(3, 8, 3, 3, scale=0.2)]
    pm = [leaf(w) for w in ws]
    h = mmu.tensor(z)
    for i, w in enumerate(pm):
        h = F.conv2d(h, w, None, padding=1)
        if i < 2:
            h = h.relu()
    loss = (h * h).mean()
    (g_last,) = autograd.grad(loss, pm[-1])
    pt = [torch.tensor(w, requires_grad=True) for w in ws]
    ht = torch.tensor(z)
    for i, w in enumerate(pt):
        ht = torch.nn.functional.conv2d(ht, w, None, padding=1)
        if i < 2:
            ht = ht.relu()
    (gt,) = torch.autograd.grad((ht * ht).mean(), pt[-1])
    assert_close(g_last.numpy(), gt.numpy(), rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in pm)


# ------------------------------------------------------------- bad inputs
def test_bad_inputs():
    x = leaf(rand(3))
    y = (x * 2).sum()
    with pytest.raises(TypeError, match="outputs"):
        autograd.grad("y", x)
    with pytest.raises(TypeError, match="inputs"):
        autograd.grad(y, [x, 3])
    with pytest.raises(RuntimeError, match="does not require grad"):
        autograd.grad(y, mmu.tensor(rand(3)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        autograd.grad(mmu.tensor(rand(1)), x)
    with pytest.raises(ValueError, match="grad_outputs"):
        autograd.grad(y, x, grad_outputs=[np.ones(2, np.float32)])
    with pytest.raises(ValueError, match="grad_outputs has 2 entries"):
        autograd.grad(y, x, grad_outputs=[None, None])
    with pytest.raises(RuntimeError, match="scalar outputs"):
        autograd.grad(x * 2, x)
    with pytest.raises(ValueError, match="empty"):
        autograd.grad(y, [])
    (g,) = autograd.grad(y, x)  # the failed calls did not free the graph
    assert_close(g.numpy(), np.full(3, 2.0))


def test_create_graph_missing_rule_names_op():
    x = leaf(rand(2, 3))
    y = (F.gelu(x) * mmu.tensor(rand(2, 3))).sum()
    with pytest.raises(NotImplementedError, match="double backward of GELU"):
        autograd.grad(y, x, create_graph=True)
    # first order still works
    (g,) = autograd.grad(y, x)
    assert g.shape == (2, 3)


# ---------------------------------------------------------- create_graph
def _cases(M, F_, lib):
    """name -> (fn(*tensors) -> scalar, input shapes). M: mmu or torch, F_: its functional."""
    if lib == "mmu":
        sp = softplus
        from mmu.losses import huber_loss, smooth_l1_loss
    else:
        def sp(x):
            return F_.softplus(x)
        huber_loss, smooth_l1_loss = (F_.huber_loss, F_.smooth_l1_loss) if F_ is not None else (None, None)
    return {
        "add_sub_mul_div_broadcast": (lambda x, y: ((x * y - x / (y * y + 1.0) + y - x) ** 3).sum(),
                                      [(3, 4), (4,)]),
        "neg_exp_log": (lambda x: ((-x).exp() * x + (x * x + 1.0).log()).sum(), [(3, 4)]),
        "sqrt_abs_pow": (lambda x: ((x.abs() + 0.5).sqrt() * x + x.pow(3) * 0.1 + x.pow(2.5 - 0.5)).sum(), [(5,)]),
        "relu_sigmoid_tanh": (lambda x: (x.relu() * x * x + x.sigmoid() * x.tanh()).sum(), [(3, 4)]),
        "leaky_relu": (lambda x: (F_.leaky_relu(x, 0.2) ** 3).sum(), [(3, 4)]),
        "silu_gelu_tanh": (lambda x: (F_.silu(x) * x + F_.gelu(x, approximate="tanh") ** 2).sum(), [(3, 4)]),
        "softplus_clamp": (lambda x: (sp(x) * x + x.clamp(-0.5, 0.5) * x).sum(), [(3, 4)]),
        "maximum": (lambda x, y: (M.maximum(x, y) ** 3).sum(), [(3, 4), (3, 4)]),
        "sum_mean": (lambda x: ((x.sum(dim=1) ** 2).sum() + (x.mean(dim=0) ** 3).sum() + x.mean() * x.sum()),
                     [(3, 4)]),
        "reshape_permute_transpose_expand": (
            lambda x, y: ((x.reshape(2, 6).transpose(0, 1) * y.expand(6, 2)).permute(1, 0) ** 3).sum(),
            [(3, 4), (1, 2)]),
        "slice_cat": (lambda x: (M.cat([x[1:3, ::2], x[:2, 1:]], 1) ** 3).sum(), [(4, 5)]),
        "matmul": (lambda x, w, v: ((x @ w).tanh() @ v).pow(2).sum(), [(2, 3, 4), (4, 5), (5,)]),
        "linear": (lambda x, w, b: F_.linear(x, w, b).sigmoid().pow(2).sum(), [(2, 3, 4), (5, 4), (5,)]),
        "conv2d_stride_pad": (lambda x, w, b: (F_.conv2d(x, w, b, stride=2, padding=1) ** 2).tanh().sum(),
                              [(2, 3, 7, 7), (4, 3, 3, 3), (4,)]),
        "conv2d_dilation": (lambda x, w: (F_.conv2d(x, w, None, stride=1, padding=2, dilation=2) ** 3).sum(),
                            [(1, 2, 6, 6), (3, 2, 3, 3)]),
        "conv2d_same_even": (lambda x, w: (F_.conv2d(x, w, None, padding="same") ** 3).sum(),
                             [(1, 2, 5, 5), (2, 2, 2, 2)]),
        "conv1d_unbatched": (lambda x, w: (F_.conv1d(x, w, None, stride=2, padding=1) ** 3).sum(),
                             [(2, 7), (3, 2, 3)]),
        "conv_transpose2d": (lambda x, w, b: (F_.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
                                             ** 3).sum(), [(2, 3, 4, 4), (3, 2, 3, 3), (2,)]),
        "conv_transpose2d_dilation": (lambda x, w: (F_.conv_transpose2d(x, w, None, stride=1, padding=1, dilation=2)
                                                    ** 3).sum(), [(1, 2, 4, 4), (2, 3, 2, 2)]),
        "group_norm": (lambda x, w, b: (F_.group_norm(x, 2, w, b) ** 3 * x).sum(), [(2, 4, 3, 3), (4,), (4,)]),
        "avg_pool2d": (lambda x: (F_.avg_pool2d(x, 3, stride=2, padding=1) ** 3).sum(), [(2, 2, 6, 6)]),
        "pad": (lambda x: (F_.pad(x, (1, 2, 0, 1)) ** 3 * 0.5).sum(), [(2, 3, 4)]),
        "rms_norm": (lambda x, w: (F_.rms_norm(x, (4,), w, eps=1e-3) ** 3 * x).sum(), [(2, 3, 4), (4,)]),
        "masked_fill": (lambda x: (x.masked_fill(x > 0.3, 0.5) ** 3).sum(), [(3, 4)]),
        "softmax_log_softmax": (lambda x, y: (F_.softmax(x, dim=1) * y).sum() + (F_.log_softmax(x, dim=0) ** 2).sum(),
                                [(3, 4), (3, 4)]),
        "layer_norm": (lambda x, w, b: (F_.layer_norm(x, (4,), w, b) ** 3 * x).sum(), [(2, 3, 4), (4,), (4,)]),
        "mse_l1_loss": (lambda x, y: F_.mse_loss(x * x, y) + F_.l1_loss(x * y, y, reduction="sum")
                        + (F_.mse_loss(x, y, reduction="none") * x).sum(), [(3, 4), (3, 4)]),
        "smooth_l1_huber": (lambda x, y: smooth_l1_loss(x * x, y, beta=0.5)
                            + (huber_loss(x, y, reduction="none", delta=0.7) * x).sum(), [(3, 4), (3, 4)]),
        "upsample_nearest": (lambda x: (F_.interpolate(x, scale_factor=2, mode="nearest") ** 3).sum(),
                             [(1, 2, 3, 3)]),
        "topk_sort_cumsum": (lambda x, y: (M.topk(x, 2).values ** 3).sum() + (M.sort(x, dim=0).values ** 3 * y).sum()
                             + (M.cumsum(x * y, 1) ** 3).sum(), [(3, 5), (3, 5)]),
    }


def _double_backward(fn, tensors, vs):
    gs = autograd.grad(fn(*tensors), tensors, create_graph=True)
    s = None
    for g, v in zip(gs, vs):
        term = (g * mmu.tensor(v)).sum()
        s = term if s is None else s + term
    s.backward()
    return gs


CASE_NAMES = list(_cases(None, None, "mmu"))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", CASE_NAMES)
def test_create_graph_vs_torch(name):
    torch = torch_or_skip()
    fn_m, shapes = _cases(mmu, F, "mmu")[name]
    fn_t, _ = _cases(torch, torch.nn.functional, "torch")[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()) + SEED_OFFSET)
    arrays = [(rng.standard_normal(s) * 0.7).astype(np.float32) for s in shapes]
    if name == "sqrt_abs_pow":
        arrays[0] = np.sign(arrays[0]) * (np.abs(arrays[0]) + 0.2)  # keep |x| away from the kink of abs
    vs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    tm = [leaf(a) for a in arrays]
    gm = _double_backward(fn_m, tm, vs)
    assert all(g.requires_grad for g in gm)
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    gt = torch.autograd.grad(fn_t(*tt), tt, create_graph=True)
    sum(((g * torch.tensor(v)).sum() for g, v in zip(gt, vs))).backward()
    for i, (a, b, t) in enumerate(zip(gm, gt, tt)):
        # float32 sums in different orders: an absolute floor relative to the largest value
        e1 = b.detach().numpy()
        assert_close(a.detach().numpy(), e1, rtol=3e-4, atol=5e-5 * max(1.0, np.abs(e1).max()),
                     what=f"{name} grad {i}")
        tg = t.grad.numpy() if t.grad is not None else np.zeros(t.shape, np.float32)
        assert_close(tm[i].grad.numpy(), tg, rtol=3e-4, atol=1e-4 * max(1.0, np.abs(tg).max()),
                     what=f"{name} grad-of-grad {i}")


@pytest.mark.parametrize("name", ["add_sub_mul_div_broadcast", "neg_exp_log", "conv2d_stride_pad", "group_norm",
                                  "matmul", "slice_cat", "topk_sort_cumsum"])
def test_create_graph_vs_finite_differences(name):
    """d/dx <grad f(x), v> against central differences of the first gradient (float32, h = 1e-2)."""
    fn, shapes = _cases(mmu, F, "mmu")[name]
    rng = np.random.default_rng(7 + SEED_OFFSET)
    arrays = [(rng.standard_normal(s) * 0.7).astype(np.float32) for s in shapes]
    vs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    tm = [leaf(a) for a in arrays]
    _double_backward(fn, tm, vs)
    hvp = [t.grad.numpy().astype(np.float64) for t in tm]

    def inner(arrs):
        ts = [leaf(a) for a in arrs]
        gs = autograd.grad(fn(*ts), ts)
        return sum(float((g.numpy().astype(np.float64) * v).sum()) for g, v in zip(gs, vs))

    h = 1e-2
    for i, a in enumerate(arrays):
        coords = rng.choice(a.size, size=min(a.size, 8), replace=False)  # a few coordinates keep it fast
        num = np.zeros(len(coords))
        for c, j in enumerate(coords):
            for sgn in (1, -1):
                arrs = [x.copy() for x in arrays]
                arrs[i].reshape(-1)[j] += sgn * h
                num[c] += sgn * inner(arrs) / (2 * h)
        got = hvp[i].reshape(-1)[coords]
        scale = max(1.0, np.abs(num).max())
        assert_close(got / scale, num / scale, rtol=0, atol=5e-3, what=f"{name} input {i}")


def test_create_graph_leaves_grad_untouched_and_matches_first_order():
    arrays = [rand(2, 3, 8, 8, scale=0.5), rand(4, 3, 3, 3, scale=0.5), rand(4), rand(2, 4, 3, 3, scale=0.5)]
    ts = [leaf(a) for a in arrays]
    out = _convnet(*ts)
    g1 = autograd.grad(out, ts, retain_graph=True)
    g2 = autograd.grad(out, ts, create_graph=True)
    assert all(t.grad is None for t in ts)
    for a, b in zip(g1, g2):
        assert_close(b.detach().numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def test_create_graph_through_non_leaf_and_saved_output():
    # exp saves its output: the rule differentiates through it again (the output re-attached to its node)
    x = leaf(rand(4, scale=0.5))
    y = x.exp()
    z = (y * y).sum()
    (gy,) = autograd.grad(z, y, create_graph=True)  # = 2 y, a function of x
    gy.sum().backward()
    assert_close(x.grad.numpy(), 2 * np.exp(x.numpy()), rtol=1e-5)
    x2 = leaf(rand(4, scale=0.5))
    (g,) = autograd.grad(x2.exp().sum(), x2, create_graph=True)  # = exp(x)
    (gg,) = autograd.grad(g.sum(), x2, create_graph=True)  # third order: exp(x) again
    gg.sum().backward()
    assert_close(x2.grad.numpy(), np.exp(x2.numpy()), rtol=1e-5)


def test_create_graph_retain_false_frees():
    x = leaf(rand(3))
    y = (x * x).sum()
    (g,) = autograd.grad(y, x, create_graph=True, retain_graph=False)
    assert_close(g.detach().numpy(), 2 * x.numpy())
    with pytest.raises(RuntimeError, match="second time"):
        autograd.grad(y, x)


# --------------------------------------------------------------- losses
def _disc(x, p, F_):
    h = F_.leaky_relu(F_.conv2d(x, p[0], p[1], stride=2, padding=1), 0.2)
    h = F_.group_norm(F_.conv2d(h, p[2], None, stride=2, padding=1), 4)
    h = F_.leaky_relu(h, 0.2)
    return F_.conv2d(h, p[3], None, padding=1)


def test_r1_penalty_vs_torch():
    torch = torch_or_skip()
    x0 = rand(2, 3, 16, 16)
    ws = [rand(8, 3, 4, 4, scale=0.2), rand(8, scale=0.1), rand(16, 8, 4, 4, scale=0.1), rand(1, 16, 3, 3, scale=0.1)]
    pm = [leaf(w) for w in ws]
    xm = leaf(x0)
    r = r1_penalty(_disc(xm, pm, F), xm)
    assert r.shape == () and r.requires_grad
    r.backward()
    pt = [torch.tensor(w, requires_grad=True) for w in ws]
    xt = torch.tensor(x0, requires_grad=True)
    (gt,) = torch.autograd.grad(_disc(xt, pt, torch.nn.functional).sum(), xt, create_graph=True)
    rt = gt.pow(2).reshape(2, -1).sum(1).mean()
    rt.backward()
    assert_close(r.item(), rt.item(), rtol=1e-5, atol=0)
    for i, (a, b) in enumerate(zip(pm, pt)):
        assert_close(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5, what=f"param {i}")


def test_r1_penalty_bad_inputs():
    x = mmu.tensor(rand(2, 3, 4, 4))
    w = leaf(rand(1, 3, 3, 3))
    logits = F.conv2d(x, w)
    with pytest.raises(ValueError, match="requires_grad|require grad"):
        r1_penalty(logits, x)
    xg = leaf(rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        r1_penalty(F.conv2d(xg, w)[:1], xg)
    with pytest.raises(TypeError, match="real_images"):
        r1_penalty(F.conv2d(xg, w), np.zeros((2, 3, 4, 4), np.float32))


def _decoder_losses(scale_g=1.0):
    z = mmu.tensor(rand(2, 4, 8, 8))
    target = mmu.tensor(rand(2, 3, 8, 8))
    ws = [leaf(rand(8, 4, 3, 3, scale=0.2)), leaf(rand(3, 8, 3, 3, scale=0.2))]
    d = leaf(rand(1, 3, 3, 3, scale=0.2))
    rec = F.conv2d(F.conv2d(z, ws[0], None, padding=1).relu(), ws[1], None, padding=1)
    nll = (rec - target).abs().mean()
    g_loss = -F.conv2d(rec, d, None, padding=1).mean() * scale_g
    return nll, g_loss, ws, d


def test_adaptive_weight_by_hand():
    nll, g_loss, ws, d = _decoder_losses()
    lam = adaptive_weight(nll, g_loss, ws[-1])
    (gn,) = autograd.grad(nll, ws[-1], retain_graph=True)
    (gg,) = autograd.grad(g_loss, ws[-1], retain_graph=True)
    expect = np.linalg.norm(gn.numpy().astype(np.float64)) / (np.linalg.norm(gg.numpy().astype(np.float64)) + 1e-4)
    assert lam.shape == () and not lam.requires_grad and lam.grad_fn is None
    assert_close(lam.item(), expect, rtol=1e-6, atol=0)
    # both graphs are kept: the total loss still backpropagates, and no .grad was touched before
    assert all(w.grad is None for w in ws) and d.grad is None
    (nll + lam * g_loss).backward()
    assert ws[0].grad is not None and d.grad is not None


def test_adaptive_weight_vs_torch_formula():
    torch = torch_or_skip()
    nll, g_loss, ws, _ = _decoder_losses()
    (gn,) = autograd.grad(nll, ws[-1], retain_graph=True)
    (gg,) = autograd.grad(g_loss, ws[-1], retain_graph=True)
    t = torch.norm(torch.tensor(gn.numpy())) / (torch.norm(torch.tensor(gg.numpy())) + 1e-4)
    t = torch.clamp(t, 0.0, 1e4).item()
    assert_close(adaptive_weight(nll, g_loss, ws[-1]).item(), t, rtol=1e-5, atol=0)


def test_adaptive_weight_clamped():
    nll, g_loss, ws, _ = _decoder_losses(scale_g=1e-9)
    assert adaptive_weight(nll, g_loss, ws[-1], eps=1e-12).item() == pytest.approx(1e4)
    assert adaptive_weight(nll, g_loss, ws[-1], max_weight=5.0).item() == pytest.approx(5.0)
    assert adaptive_weight(nll * 0.0, g_loss, ws[-1]).item() == 0.0


def test_adaptive_weight_bad_inputs():
    nll, g_loss, ws, d = _decoder_losses()
    with pytest.raises(ValueError, match="scalar"):
        adaptive_weight(nll.reshape(1).expand(2), g_loss, ws[-1])
    with pytest.raises(TypeError, match="last_layer"):
        adaptive_weight(nll, g_loss, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="does not require grad"):
        adaptive_weight(nll, g_loss, mmu.tensor(rand(3)))
    with pytest.raises(ValueError, match="does not depend on last_layer"):
        adaptive_weight(nll, g_loss, leaf(rand(3)))
    with pytest.raises(ValueError, match="max_weight"):
        adaptive_weight(nll, g_loss, ws[-1], max_weight=-1.0)


def _batch_norm_or_skip():
    try:
        x = mmu.tensor(rand(3, 2))
        F.batch_norm(x, None, None, training=True)
    except (AttributeError, NotImplementedError, TypeError) as e:  # the op lands from another branch
        pytest.skip(f"mmu.functional.batch_norm is not available yet ({type(e).__name__}: {e})")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 3)])
def test_create_graph_batch_norm_vs_torch(training, shape):
    _batch_norm_or_skip()
    torch = torch_or_skip()
    rng = np.random.default_rng(5)
    C = shape[1]
    x0, w0, b0 = (rng.standard_normal(shape) * 0.7 + 0.3).astype(np.float32), rand(C) + 1, rand(C)
    rm0, rv0 = rand(C) * 0.1, (np.abs(rand(C)) + 0.5).astype(np.float32)
    vs = [rng.standard_normal(s).astype(np.float32) for s in (shape, (C,), (C,))]

    def run(M, Fn, tensor):
        ts = [tensor(a) for a in (x0, w0, b0)]
        rm, rv = M.tensor(rm0.copy()), M.tensor(rv0.copy())
        y = Fn.batch_norm(ts[0], rm, rv, ts[1], ts[2], training=training, eps=1e-3)
        loss = (y ** 3 * ts[0]).sum()
        gs = (autograd if M is mmu else torch.autograd).grad(loss, ts, create_graph=True)
        s = sum((g * M.tensor(v)).sum() for g, v in zip(gs, vs))
        s.backward()
        return [g.detach().numpy() for g in gs], [t.grad.numpy() for t in ts]

    gm, hm = run(mmu, F, lambda a: mmu.tensor(a, requires_grad=True))
    gt, ht = run(torch, torch.nn.functional, lambda a: torch.tensor(a, requires_grad=True))
    for i in range(3):
        assert_close(gm[i], gt[i], rtol=2e-4, atol=2e-5, what=f"grad {i}")
        assert_close(hm[i], ht[i], rtol=5e-4, atol=5e-5, what=f"grad-of-grad {i}")


def test_create_graph_allow_unused_and_duplicates():
    x, z = leaf(rand(3)), leaf(rand(3))
    y = (x * x * x).sum()
    with pytest.raises(RuntimeError, match="allow_unused"):
        autograd.grad(y, [x, z], create_graph=True)
    gx, gz, gx2 = autograd.grad(y, [x, z, x], create_graph=True, allow_unused=True)
    assert gz is None
    assert_close(gx.detach().numpy(), 3 * x.numpy() ** 2, rtol=1e-5)
    assert_close(gx2.detach().numpy(), gx.detach().numpy(), rtol=0, atol=0)
    # the same input twice in the C path: equal, distinct tensors
    a, b = autograd.grad(y, [x, x])
    assert_close(a.numpy(), b.numpy(), rtol=0, atol=0)
    a.numpy()[0] = 123.0
    assert b.numpy()[0] != 123.0


def test_grad_from_threads():
    # the GIL is released during grad: graphs sharing parameter leaves run from several threads
    import threading

    w = leaf(rand(4, 4))
    xs = [rand(3, 4) for _ in range(4)]
    expect = [autograd.grad((mmu.tensor(x) @ w).tanh().sum(), w)[0].numpy() for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(20):
            got[i] = autograd.grad((mmu.tensor(xs[i]) @ w).tanh().sum(), w)[0].numpy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, e in zip(got, expect):
        assert_close(a, e, rtol=0, atol=0)
    assert w.grad is None


def test_r1_penalty_batchnorm_disc_vs_torch():
    """taming's default PatchGAN uses BatchNorm (training mode) between its convs."""
    _batch_norm_or_skip()
    torch = torch_or_skip()
    x0 = rand(4, 3, 16, 16)
    ws = [rand(8, 3, 4, 4, scale=0.2), rand(16, 8, 4, 4, scale=0.1), rand(16) + 1, rand(16, scale=0.1),
          rand(1, 16, 3, 3, scale=0.1)]

    def disc(x, p, M, F_):
        h = F_.leaky_relu(F_.conv2d(x, p[0], None, stride=2, padding=1), 0.2)
        h = F_.conv2d(h, p[1], None, stride=2, padding=1)
        h = F_.batch_norm(h, M.zeros(16), M.ones(16), p[2], p[3], training=True)
        return F_.conv2d(F_.leaky_relu(h, 0.2), p[4], None, padding=1)

    pm, xm = [leaf(w) for w in ws], leaf(x0)
    r = r1_penalty(disc(xm, pm, mmu, F), xm)
    r.backward()
    pt = [torch.tensor(w, requires_grad=True) for w in ws]
    xt = torch.tensor(x0, requires_grad=True)
    (gt,) = torch.autograd.grad(disc(xt, pt, torch, torch.nn.functional).sum(), xt, create_graph=True)
    rt = gt.pow(2).reshape(4, -1).sum(1).mean()
    rt.backward()
    assert_close(r.item(), rt.item(), rtol=1e-4, atol=0)
    for i, (a, b) in enumerate(zip(pm, pt)):
        # the input gradient does not depend on the BN bias: no gradient (None) on either side
        ga = a.grad.numpy() if a.grad is not None else np.zeros(a.shape, np.float32)
        gb = b.grad.numpy() if b.grad is not None else np.zeros(tuple(b.shape), np.float32)
        assert_close(ga, gb, rtol=1e-3, atol=1e-4, what=f"param {i}")
