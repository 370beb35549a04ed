"""Tensor.register_post_accumulate_grad_hook (torch's name and semantics): called once per backward,
after the leaf's .grad holds every gradient of that backward."""
import numpy as np
import pytest

import mmu
from mmu import nn


def _leaf(a):
    return nn.Parameter(np.asarray(a, np.float32))


def test_hook_runs_once_with_the_final_grad_of_a_leaf_used_twice():
    w, b = _leaf(np.ones((3, 4))), _leaf(np.zeros(4))
    seen = []
    w.register_post_accumulate_grad_hook(lambda p: seen.append(("w", p is w, p.grad.numpy().copy())))
    b.register_post_accumulate_grad_hook(lambda p: seen.append(("b", p is b, p.grad.numpy().copy())))
    x = mmu.tensor(np.ones((2, 3), np.float32))
    y = x @ w + b
    ((y * y).sum() + (w * 2.0).sum()).backward()
    assert sorted(n for n, _, _ in seen) == ["b", "w"] and all(same for _, same, _ in seen)
    got = {n: g for n, _, g in seen}
    # y = 3 everywhere: d/dw = 2 * y * x summed over the batch (12) + 2; d/db = 2 * y * 2 rows = 12
    np.testing.assert_array_equal(got["w"], np.full((3, 4), 14.0, np.float32))
    np.testing.assert_array_equal(got["b"], np.full(4, 12.0, np.float32))
    np.testing.assert_array_equal(got["w"], w.grad.numpy())


def test_hook_sees_accumulated_grad_and_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, xa = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    w = _leaf(a)
    tw = torch.tensor(a, requires_grad=True)
    mine, theirs = [], []
    w.register_post_accumulate_grad_hook(lambda p: mine.append(p.grad.numpy().copy()))
    tw.register_post_accumulate_grad_hook(lambda p: theirs.append(p.grad.numpy().copy()))
    for _ in range(2):   # the second backward adds to .grad; the hook sees the sum
        (mmu.tensor(xa) @ w).tanh().sum().backward()
        (torch.tensor(xa) @ tw).tanh().sum().backward()
    assert len(mine) == len(theirs) == 2
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(m, t, rtol=1e-5, atol=1e-6)


def test_handle_remove_and_no_call_from_autograd_grad():
    w = _leaf(np.ones(3))
    calls = []
    h = w.register_post_accumulate_grad_hook(lambda p: calls.append(1))
    (w * 2.0).sum().backward()
    mmu.autograd.grad((w * 3.0).sum(), [w])     # no .grad accumulation: no hook (as torch)
    assert calls == [1]
    h.remove()
    h.remove()                                   # a second remove does nothing
    (w * 2.0).sum().backward()
    assert calls == [1]


def test_leaf_root_and_hook_errors():
    w = _leaf(np.ones(()))
    calls = []
    w.register_post_accumulate_grad_hook(lambda p: calls.append(float(p.grad.item())))
    w.backward()                                 # a leaf as the root: its seed is its gradient
    assert calls == [1.0]
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2.0).register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        mmu.tensor(np.ones(2, np.float32)).register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(TypeError, match="callable"):
        w.register_post_accumulate_grad_hook(3)

    def boom(p):
        raise KeyError("from the hook")
    v = _leaf(np.ones(2))
    v.register_post_accumulate_grad_hook(boom)
    with pytest.raises(KeyError, match="from the hook"):   # the hook's own exception, as raised
        (v * 2.0).sum().backward()
    u = _leaf(np.ones(2))
    u.register_post_accumulate_grad_hook(lambda p: 5)
    with pytest.raises(RuntimeError, match="must return None"):
        (u * 2.0).sum().backward()
