"""batch_norm (the fused C op), BatchNorm1d/2d and ActNorm: forward vs a float64 NumPy reference,
running-statistic updates, eval mode, gradients vs finite differences and vs torch, bad inputs."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from gradcheck import assert_close, numeric_grad, torch_or_skip

# (N, C), (N, C, L) short and long, (N, C, H, W) with few and many channels and spatial sizes below and
# above the kernel's short-segment switch (S < 32: column sums; else per-channel segments, S = 49 and 72
# for the vector remainders), (N, C, D, H, W), and C·S = 2600 columns (two column tiles, two row blocks)
SHAPES = [(6, 5), (4, 3, 7), (3, 2, 40), (2, 5, 3, 3), (3, 6, 6, 7), (2, 3, 8, 9), (3, 5, 7, 7), (2, 3, 2, 3, 4),
          (18, 130, 20)]


def _ref(x, rm, rv, w, b, training, momentum, eps):
    """float64 batch norm -> (y, new running_mean, new running_var)."""
    x = x.astype(np.float64)
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if training:
        mean = x.mean(axes)
        var = x.var(axes)
        M = x.size // C
        if rm is not None:
            rm = (1 - momentum) * rm + momentum * mean
            rv = (1 - momentum) * rv + momentum * var * M / (M - 1)
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    y = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
    if w is not None:
        y = y * w.reshape(bshape)
    if b is not None:
        y = y + b.reshape(bshape)
    return y, rm, rv


def _data(shape, seed, offset=0.0, scale=2.0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    rm = rng.standard_normal(C).astype(np.float32)
    rv = (rng.random(C) + 0.5).astype(np.float32)
    w = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    return x, rm, rv, w, b, g


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_vs_numpy(shape, training, affine):
    x, rm, rv, w, b, _ = _data(shape, 1)
    if not affine:
        w = b = None
    trm, trv = mmu.tensor(rm), mmu.tensor(rv)
    y = F.batch_norm(x, trm, trv, w, b, training=training, momentum=0.3, eps=1e-5)
    ey, erm, erv = _ref(x, rm.astype(np.float64), rv.astype(np.float64), w, b, training, 0.3, 1e-5)
    assert_close(y.numpy(), ey, rtol=1e-5, atol=2e-6, what="y")
    assert_close(trm.numpy(), erm, rtol=1e-6, atol=1e-6, what="running_mean")
    assert_close(trv.numpy(), erv, rtol=1e-6, atol=1e-6, what="running_var")


@pytest.mark.parametrize("shape", [(64, 3), (4, 3, 50), (3, 8, 6, 6)])
def test_large_mean_keeps_precision(shape):
    """mean 1e4, std 1: a one-pass float E[x²] - E[x]² would lose every digit of the variance."""
    x, rm, rv, w, b, _ = _data(shape, 2, offset=1e4, scale=1.0)
    trm, trv = mmu.tensor(np.zeros_like(rm)), mmu.tensor(np.ones_like(rv))
    y = F.batch_norm(x, trm, trv, w, b, training=True, momentum=0.5)
    ey, erm, erv = _ref(x, np.zeros(shape[1]), np.ones(shape[1]), w, b, True, 0.5, 1e-5)
    assert_close(y.numpy(), ey, rtol=1e-4, atol=1e-4, what="y")
    assert_close(trv.numpy(), erv, rtol=1e-4, atol=1e-5, what="running_var")
    assert_close(trm.numpy(), erm, rtol=1e-7, atol=0, what="running_mean")


def test_training_without_running_stats():
    x, _, _, w, b, _ = _data((4, 3, 5), 3)
    y = F.batch_norm(x, None, None, w, b, training=True)
    assert_close(y.numpy(), _ref(x, None, None, w, b, True, 0.1, 1e-5)[0], rtol=1e-5, atol=2e-6)


def test_empty_batch():
    y = F.batch_norm(np.zeros((0, 3, 4), np.float32), None, None, training=True)
    assert y.shape == (0, 3, 4)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 5), (2, 2, 2, 3), (2, 2, 2, 2, 2), (2, 2, 33)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_grad_finite_differences(shape, training, affine):
    x, rm, rv, w, b, g = _data(shape, 4)

    def f64(x, w=None, b=None):
        return _ref(x, rm.astype(np.float64), rv.astype(np.float64), w, b, training, 0.1, 1e-5)[0]

    args = [x, w, b] if affine else [x]
    expected = numeric_grad(f64, args, g)
    leaves = [mmu.tensor(a, requires_grad=True) for a in args]
    mx, mw, mb = leaves if affine else (leaves[0], None, None)
    y = F.batch_norm(mx, mmu.tensor(rm), mmu.tensor(rv), mw, mb, training=training)
    y.backward(mmu.tensor(g))
    for name, t, e in zip(("dx", "dweight", "dbias"), leaves, expected):
        assert_close(t.grad.numpy(), e, rtol=1e-3, atol=2e-4, what=name)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_vs_torch(shape, training, affine):
    torch = torch_or_skip()
    x, rm, rv, w, b, g = _data(shape, 5, offset=3.0)
    if not affine:
        w = b = None
    mx = mmu.tensor(x, requires_grad=True)
    mw, mb = (mmu.tensor(a, requires_grad=True) if a is not None else None for a in (w, b))
    mrm, mrv = mmu.tensor(rm), mmu.tensor(rv)
    y = F.batch_norm(mx, mrm, mrv, mw, mb, training, 0.2, 1e-3)
    y.backward(mmu.tensor(g))
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = (torch.tensor(a, requires_grad=True) if a is not None else None for a in (w, b))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, 0.2, 1e-3)
    ty.backward(torch.tensor(g))
    assert_close(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5, what="y")
    assert_close(mrm.numpy(), trm.numpy(), rtol=1e-6, atol=1e-6, what="running_mean")
    assert_close(mrv.numpy(), trv.numpy(), rtol=1e-6, atol=1e-6, what="running_var")
    assert_close(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5, what="dx")
    if affine:
        assert_close(mw.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-4, what="dweight")
        assert_close(mb.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-4, what="dbias")


def test_only_weight_grad_and_no_grad_mode():
    x, rm, rv, w, b, g = _data((3, 4, 6, 6), 6)
    mw = mmu.tensor(w, requires_grad=True)
    y = F.batch_norm(x, None, None, mw, b, training=True)
    y.backward(mmu.tensor(g))
    xh = _ref(x, None, None, None, None, True, 0.1, 1e-5)[0]
    assert_close(mw.grad.numpy(), (g * xh).sum((0, 2, 3)), rtol=1e-4, atol=1e-4, what="dweight")
    with mmu.no_grad():
        y2 = F.batch_norm(x, None, None, mw, b, training=True)
    assert y2.grad_fn is None
    assert np.array_equal(y2.numpy(), y.numpy())


@pytest.mark.parametrize("shape", [(64, 24), (40, 130, 20), (4, 3, 20, 20), (4, 16, 10, 10)])
def test_deterministic_across_thread_counts(shape):
    x, rm, rv, w, b, g = _data(shape, 7, offset=2.0)
    outs = []
    prev = mmu.get_num_threads()
    try:
        for nt in (1, 2, 1):
            mmu.set_num_threads(nt)
            mx, mw = mmu.tensor(x, requires_grad=True), mmu.tensor(w, requires_grad=True)
            mrm, mrv = mmu.tensor(rm), mmu.tensor(rv)
            y = F.batch_norm(mx, mrm, mrv, mw, b, training=True)
            y.backward(mmu.tensor(g))
            outs.append([y.numpy().copy(), mx.grad.numpy().copy(), mw.grad.numpy().copy(), mrv.numpy().copy()])
    finally:
        mmu.set_num_threads(prev)
    for a, c in zip(outs[0], outs[1]):
        assert np.array_equal(a, c)
    for a, c in zip(outs[0], outs[2]):
        assert np.array_equal(a, c)


def test_bad_inputs():
    x = np.zeros((4, 3, 5), np.float32)
    rm, rv = mmu.zeros(3), mmu.ones(3)
    with pytest.raises(TypeError, match="batch_norm"):
        F.batch_norm(np.zeros((4, 3), np.int64), None, None, training=True)
    with pytest.raises(ValueError, match="at least 2 dims"):
        F.batch_norm(np.zeros(5, np.float32), None, None, training=True)
    with pytest.raises(ValueError, match="weight must have shape"):
        F.batch_norm(x, rm, rv, mmu.ones(4))
    with pytest.raises(ValueError, match="running_var must have shape"):
        F.batch_norm(x, rm, mmu.ones(2), training=True)
    with pytest.raises(ValueError, match="evaluation mode"):
        F.batch_norm(x, None, None)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.zeros((1, 3), np.float32), None, None, training=True)
    with pytest.raises(TypeError, match="momentum"):
        F.batch_norm(x, rm, rv, training=True, momentum=None)
    with pytest.raises(TypeError, match="in place"):
        F.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
    with pytest.raises(TypeError, match="training"):
        F.batch_norm(x, rm, rv, training=1)
    with pytest.raises(ValueError, match="both"):
        F.batch_norm(x, rm, None, training=True)
    with pytest.raises(ValueError, match="share memory"):
        F.batch_norm(x, rm, rm, training=True)
    with pytest.raises(TypeError, match="running_mean"):
        F.batch_norm(x, mmu.zeros(3, dtype=mmu.int64), rv, training=True)
    # nothing was written by the failed calls
    assert np.array_equal(rm.numpy(), np.zeros(3)) and np.array_equal(rv.numpy(), np.ones(3))


# ------------------------------------------------------------------ modules
def test_module_repr_and_state_dict_like_torch():
    torch = torch_or_skip()
    for args, kw in [((3,), {}), ((4,), dict(momentum=None, affine=False, track_running_stats=False)),
                     ((5,), dict(eps=1e-3, bias=False))]:
        for name in ("BatchNorm1d", "BatchNorm2d"):
            m, t = getattr(mmu.nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
            assert repr(m) == repr(t)
            assert list(m.state_dict().keys()) == list(t.state_dict().keys())
            for k, v in t.state_dict().items():
                assert np.array_equal(m.state_dict()[k].numpy(), v.numpy()), k


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [True, False])
def test_module_steps_vs_torch(momentum, track):
    torch = torch_or_skip()
    rng = np.random.default_rng(8)
    m, t = mmu.nn.BatchNorm2d(3, momentum=momentum, track_running_stats=track), \
        torch.nn.BatchNorm2d(3, momentum=momentum, track_running_stats=track)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(rng.standard_normal(3).astype(np.float32)))
        t.bias.copy_(torch.tensor(rng.standard_normal(3).astype(np.float32)))
    m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    for step in range(4):
        x = (rng.standard_normal((4, 3, 5, 5)) * (step + 1) + step).astype(np.float32)
        if step == 3:
            m.eval(), t.eval()
        y, ty = m(x), t(torch.tensor(x))
        assert_close(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5, what=f"y step {step}")
        for k, v in t.state_dict().items():
            assert_close(m.state_dict()[k].numpy(), v.numpy(), rtol=1e-6, atol=1e-6, what=k)


def test_module_1d_and_dim_checks():
    torch = torch_or_skip()
    x = np.random.default_rng(9).standard_normal((6, 4, 3)).astype(np.float32)
    m, t = mmu.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    assert_close(m(x).numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert_close(m(x[:, :, 0]).numpy(), t(torch.tensor(x[:, :, 0])).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert_close(m.running_var.numpy(), t.running_var.numpy(), rtol=1e-6, atol=1e-6)
    assert int(m.num_batches_tracked.numpy()) == 2
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        m(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="expected 4D input"):
        mmu.nn.BatchNorm2d(4)(x)
    with pytest.raises(TypeError, match="num_features"):
        mmu.nn.BatchNorm2d(4.0)
    with pytest.raises(ValueError, match="num_features"):
        mmu.nn.BatchNorm2d(0)
    with pytest.raises(TypeError, match="momentum"):
        mmu.nn.BatchNorm2d(4, momentum="x")


def test_module_eval_without_running_stats_uses_batch():
    x = np.random.default_rng(10).standard_normal((5, 2, 4)).astype(np.float32)
    m = mmu.nn.BatchNorm1d(2, track_running_stats=False).eval()
    assert_close(m(x).numpy(), _ref(x, None, None, None, None, True, 0.1, 1e-5)[0], rtol=1e-5, atol=2e-6)
    assert m.running_mean is None and m.num_batches_tracked is None


# ------------------------------------------------------------------ ActNorm
def _taming_actnorm(torch):
    """taming-transformers' ActNorm (taming/modules/discriminator/model.py), rewritten for the test."""
    class ActNorm(torch.nn.Module):
        def __init__(self, num_features, logdet=False):
            super().__init__()
            self.logdet = logdet
            self.loc = torch.nn.Parameter(torch.zeros(1, num_features, 1, 1))
            self.scale = torch.nn.Parameter(torch.ones(1, num_features, 1, 1))
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

        def forward(self, x):
            squeeze = x.dim() == 2
            if squeeze:
                x = x[:, :, None, None]
            if self.training and self.initialized.item() == 0:
                with torch.no_grad():
                    flat = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
                    self.loc.copy_(-flat.mean(1).view(1, -1, 1, 1))
                    self.scale.copy_(1 / (flat.std(1).view(1, -1, 1, 1) + 1e-6))
                self.initialized.fill_(1)
            h = self.scale * (x + self.loc)
            if squeeze:
                h = h.squeeze(-1).squeeze(-1)
            if self.logdet:
                return h, x.shape[2] * x.shape[3] * torch.sum(torch.log(torch.abs(self.scale))) * \
                    torch.ones(x.shape[0])
            return h
    return ActNorm


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (6, 3)])
def test_actnorm_vs_taming(shape):
    torch = torch_or_skip()
    rng = np.random.default_rng(11)
    x1 = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    x2 = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    m, t = mmu.nn.ActNorm(3), _taming_actnorm(torch)(3)
    assert int(m.initialized.numpy()) == 0
    assert_close(m(x1).numpy(), t(torch.tensor(x1)).detach().numpy(), rtol=1e-5, atol=1e-5, what="init batch")
    assert int(m.initialized.numpy()) == 1
    y = m(x1)
    assert_close(y.numpy().mean(axis=(0,) + tuple(range(2, len(shape)))), np.zeros(3), atol=1e-5)
    mx = mmu.tensor(x2, requires_grad=True)
    tx = torch.tensor(x2, requires_grad=True)
    y, ty = m(mx), t(tx)  # initialised: the second batch does not re-initialise
    assert_close(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    y.backward(mmu.tensor(g)), ty.backward(torch.tensor(g))
    assert_close(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-5, what="dx")
    assert_close(m.loc.grad.numpy(), t.loc.grad.numpy(), rtol=1e-4, atol=1e-4, what="dloc")
    assert_close(m.scale.grad.numpy(), t.scale.grad.numpy(), rtol=1e-4, atol=1e-4, what="dscale")
    assert list(m.state_dict().keys()) == list(t.state_dict().keys())
    m2 = mmu.nn.ActNorm(3)
    m2.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    assert int(m2.initialized.numpy()) == 1
    assert_close(m2(x2).numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5, what="loaded")


def test_actnorm_eval_logdet_reverse_and_errors():
    torch = torch_or_skip()
    x = np.random.default_rng(12).standard_normal((2, 3, 4, 4)).astype(np.float32)
    m = mmu.nn.ActNorm(3, logdet=True).eval()
    h, ld = m(x)  # eval: no data-dependent init
    assert int(m.initialized.numpy()) == 0 and np.array_equal(h.numpy(), x)
    m.train()
    h, ld = m(x)
    t = _taming_actnorm(torch)(3, logdet=True)
    th, tld = t(torch.tensor(x))
    assert_close(ld.numpy(), tld.detach().numpy(), rtol=1e-5, atol=1e-4, what="logdet")
    assert_close(m.reverse(h).numpy(), x, rtol=1e-4, atol=1e-4, what="reverse")
    with pytest.raises(RuntimeError, match="reverse"):
        mmu.nn.ActNorm(3).reverse(x)
    with pytest.raises(ValueError, match="channels"):
        m(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="affine"):
        mmu.nn.ActNorm(3, affine=False)
