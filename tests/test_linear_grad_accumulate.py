"""A linear's weight and bias gradients added straight into the parameter's .grad (csrc/core/autograd.c's
accumulates_into, csrc/ops/matmul.c: oneDNN's sum post-op for the weight), when that .grad is the
parameter's own: one weight used by several linears (Show-o's tasks run as separate passes), a second
backward without zero_grad, and every case where it must not write into the .grad it finds (a
reference the user holds, autograd.grad, a frozen weight) — against float64 NumPy."""
import numpy as np

import mmu
import mmu.functional as F
from mmu import autograd
from gradcheck import assert_close

RNG = np.random.default_rng(5)


def _arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _uses(w, b, xs, gs):
    """sum_k <linear(x_k, w, b), g_k>: d w = sum_k g_kᵀ x_k, d b = sum_k colsum(g_k)."""
    loss = None
    for x, g in zip(xs, gs):
        t = (F.linear(mmu.tensor(x), w, b) * mmu.tensor(g)).sum()
        loss = t if loss is None else loss + t
    return loss


def _refs(xs, gs):
    rows = lambda a: a.astype(np.float64).reshape(-1, a.shape[-1])
    dw = sum(rows(g).T @ rows(x) for x, g in zip(xs, gs))
    db = sum(g.astype(np.float64).reshape(-1, g.shape[-1]).sum(0) for g in gs)
    return dw, db


def test_weight_used_by_three_linears_and_two_backwards():
    # rows 40 and 3-D inputs: the GEMM paths (not the few-rows kernel of the forward), R != OUT != IN
    xs = [_arr(40, 7), _arr(2, 20, 7), _arr(33, 7)]
    gs = [_arr(40, 9), _arr(2, 20, 9), _arr(33, 9)]
    w = mmu.tensor(_arr(9, 7), requires_grad=True)
    b = mmu.tensor(_arr(9), requires_grad=True)
    _uses(w, b, xs, gs).backward()
    dw, db = _refs(xs, gs)
    assert_close(w.grad.numpy(), dw, rtol=1e-5, atol=1e-5, what="weight grad, one backward")
    assert_close(b.grad.numpy(), db, rtol=1e-5, atol=1e-5, what="bias grad, one backward")
    _uses(w, b, xs[:2], gs[:2]).backward()  # no zero_grad: adds to what .grad holds
    dw2, db2 = _refs(xs[:2], gs[:2])
    assert_close(w.grad.numpy(), dw + dw2, rtol=1e-5, atol=1e-5, what="weight grad, two backwards")
    assert_close(b.grad.numpy(), db + db2, rtol=1e-5, atol=1e-5, what="bias grad, two backwards")


def test_a_grad_the_user_holds_is_not_written_through():
    xs, gs = [_arr(30, 6), _arr(30, 6)], [_arr(30, 5), _arr(30, 5)]
    w = mmu.tensor(_arr(5, 6), requires_grad=True)
    b = mmu.tensor(_arr(5), requires_grad=True)
    _uses(w, b, xs[:1], gs[:1]).backward()
    held_w, held_b = w.grad, b.grad
    before_w, before_b = held_w.numpy().copy(), held_b.numpy().copy()
    _uses(w, b, xs[1:], gs[1:]).backward()
    assert np.array_equal(held_w.numpy(), before_w) and np.array_equal(held_b.numpy(), before_b)
    dw, db = _refs(xs, gs)
    assert_close(w.grad.numpy(), dw, rtol=1e-5, atol=1e-5, what="weight grad")
    assert_close(b.grad.numpy(), db, rtol=1e-5, atol=1e-5, what="bias grad")


def test_autograd_grad_leaves_dot_grad_alone():
    xs, gs = [_arr(24, 4), _arr(24, 4)], [_arr(24, 3), _arr(24, 3)]
    w = mmu.tensor(_arr(3, 4), requires_grad=True)
    b = mmu.tensor(_arr(3), requires_grad=True)
    _uses(w, b, xs[:1], gs[:1]).backward()
    before = w.grad.numpy().copy()
    gw, gb = autograd.grad(_uses(w, b, xs[1:], gs[1:]), [w, b])
    assert np.array_equal(w.grad.numpy(), before)
    dw, db = _refs(xs[1:], gs[1:])
    assert_close(gw.numpy(), dw, rtol=1e-5, atol=1e-5, what="autograd.grad weight")
    assert_close(gb.numpy(), db, rtol=1e-5, atol=1e-5, what="autograd.grad bias")


def test_frozen_weight_trainable_bias_and_input():
    xs, gs = [_arr(20, 4), _arr(20, 4)], [_arr(20, 3), _arr(20, 3)]
    w = mmu.tensor(_arr(3, 4))
    b = mmu.tensor(_arr(3), requires_grad=True)
    x0 = mmu.tensor(xs[0], requires_grad=True)
    loss = (F.linear(x0, w, b) * mmu.tensor(gs[0])).sum() + _uses(w, b, xs[1:], gs[1:])
    loss.backward()
    loss2 = (F.linear(x0, w, b) * mmu.tensor(gs[0])).sum()
    loss2.backward()
    assert w.grad is None
    _, db = _refs(xs + [xs[0]], gs + [gs[0]])
    assert_close(b.grad.numpy(), db, rtol=1e-5, atol=1e-5, what="bias grad")
    assert_close(x0.grad.numpy(), 2 * gs[0].astype(np.float64) @ w.numpy().astype(np.float64), rtol=1e-5,
                 atol=1e-5, what="input grad")


def test_a_cleared_grad_starts_again():
    w = mmu.tensor(_arr(3, 4), requires_grad=True)
    _uses(w, None, [_arr(20, 4)], [_arr(20, 3)]).backward()
    w.grad = None
    _uses(w, None, [_arr(20, 4)], [_arr(20, 3)]).backward()  # starts again from nothing
    assert w.grad.shape == (3, 4)
