"""F.swiglu (csrc/ops/unary.c): silu(gate) * up in one pass, LLaMA's MLP activation (nn.MLP with
activation='swiglu' runs on it). Forward and backward against float64 NumPy and finite differences,
its double-backward rule against the composed ops, values at the extremes against torch's float64
silu(gate) * up, and bad input."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import autograd
from gradcheck import assert_close, check_mmu_grads, torch_or_skip


def _ref(a, b):
    return a / (1.0 + np.exp(-a)) * b


def _rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 2.0


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5), (4, 33)])
def test_swiglu_forward_and_backward_against_numpy(shape):
    a, b = _rnd(*shape, seed=1), _rnd(*shape, seed=2)
    out = F.swiglu(mmu.tensor(a), mmu.tensor(b)).numpy()
    assert_close(out, _ref(a.astype(np.float64), b.astype(np.float64)), rtol=1e-6, atol=1e-6, what="swiglu")
    check_mmu_grads(lambda m, x, y: m.F.swiglu(x, y), _ref, [a, b], rtol=2e-3, atol=2e-4)


def test_swiglu_gradient_of_one_input_only():
    a, b = _rnd(3, 4, seed=3), _rnd(3, 4, seed=4)
    ta, tb = mmu.tensor(a, requires_grad=True), mmu.tensor(b)
    F.swiglu(ta, tb).sum().backward()
    s = 1.0 / (1.0 + np.exp(-a.astype(np.float64)))
    assert_close(ta.grad.numpy(), b * s * (1 + a * (1 - s)), rtol=1e-5, atol=1e-6, what="d gate")
    ta, tb = mmu.tensor(a), mmu.tensor(b, requires_grad=True)
    F.swiglu(ta, tb).sum().backward()
    assert_close(tb.grad.numpy(), a * s, rtol=1e-5, atol=1e-6, what="d up")


def test_swiglu_double_backward_matches_the_composed_ops():
    a, b, v = _rnd(3, 5, seed=5), _rnd(3, 5, seed=6), _rnd(3, 5, seed=7)
    got = []
    for fn in (F.swiglu, lambda x, y: F.silu(x) * y):
        ta, tb = mmu.tensor(a, requires_grad=True), mmu.tensor(b, requires_grad=True)
        ga, gb = autograd.grad(fn(ta, tb), [ta, tb], grad_outputs=mmu.tensor(v), create_graph=True)
        ((ga * ga).sum() + (gb * ga).sum()).backward()
        got.append((ta.grad.numpy(), tb.grad.numpy()))
    for (x, y), what in zip(zip(*got), ("d gate", "d up")):
        assert_close(x, y, rtol=1e-4, atol=1e-5, what=f"double backward {what}")


def test_swiglu_at_extremes_matches_torch_float64():
    torch = torch_or_skip()
    a = np.array([-np.inf, -1e30, -100.0, -20.0, -1.0, 0.0, 1e-8, 3.0, 20.0, 100.0, 1e30, np.inf, np.nan],
                 np.float32)
    b = np.linspace(-2.0, 2.0, a.size).astype(np.float32)
    ta, tb = mmu.tensor(a, requires_grad=True), mmu.tensor(b, requires_grad=True)
    F.swiglu(ta, tb).sum().backward()
    ra = torch.tensor(a.astype(np.float64), requires_grad=True)
    rb = torch.tensor(b.astype(np.float64), requires_grad=True)
    (torch.nn.functional.silu(ra) * rb).sum().backward()
    f32 = lambda t: t.detach().numpy().astype(np.float32).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        assert_close(F.swiglu(mmu.tensor(a), mmu.tensor(b)).numpy(), f32(torch.nn.functional.silu(ra) * rb),
                     rtol=2e-6, atol=1e-36, what="swiglu forward")
        assert_close(ta.grad.numpy(), f32(ra.grad), rtol=2e-6, atol=1e-8, what="d gate")
        assert_close(tb.grad.numpy(), f32(rb.grad), rtol=2e-6, atol=1e-8, what="d up")


def test_mlp_swiglu_matches_the_composed_activation():
    mmu.manual_seed(0)
    mlp = mmu.nn.MLP(8, 16, activation="swiglu")
    x = mmu.tensor(_rnd(2, 3, 8, seed=8))
    want = mlp.fc2(F.silu(mlp.fc_gate(x)) * mlp.fc1(x)).numpy()
    assert_close(mlp(x).numpy(), want, rtol=1e-5, atol=1e-6, what="MLP swiglu")


def test_swiglu_bad_input_names_the_op():
    with pytest.raises(ValueError, match=r"swiglu: gate has shape \(2, 3\) but up has shape \(3, 2\)"):
        F.swiglu(mmu.tensor(np.zeros((2, 3), np.float32)), mmu.tensor(np.zeros((3, 2), np.float32)))
    with pytest.raises((TypeError, ValueError), match="swiglu"):
        F.swiglu(mmu.tensor(np.zeros(3, np.int64)), mmu.tensor(np.zeros(3, np.float32)))
    with pytest.raises((TypeError, ValueError), match="swiglu"):
        F.swiglu(mmu.tensor(np.zeros(3, np.float32)), "up")
