"""The backward engine (csrc/core/autograd.c) under threads and in-place writes: several threads
backpropagating through one shared graph, and the version counter that refuses a backward
through a tensor written in place after the graph saved it."""
import threading

import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import autograd

RNG = np.random.default_rng(11)


def _shared_graph():
    """x, w leaves -> a loss through a few ops with saved tensors (matmul, tanh, mul, sum)."""
    x = mmu.tensor(RNG.standard_normal((6, 5)).astype(np.float32), requires_grad=True)
    w = mmu.tensor(RNG.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    h = F.linear(x, w).tanh()
    loss = (h * h).sum() + (h * x[:, :4]).mean()
    return x, w, loss


def _threads(n, target):
    errors = []

    def run(k):
        try:
            target(k)
        except Exception as e:  # noqa: BLE001 (collected and asserted on below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# issue 11: the per-run bookkeeping (pending counts, gradient accumulators, node freeing) lived
# in the shared nodes: concurrent backward runs read freed memory, and with retain_graph=True the
# gradients came out wrong (relative error up to 1.2). torch accumulates N correct runs.
def test_concurrent_backward_with_retain_graph_accumulates_every_run():
    x, w, loss = _shared_graph()
    loss.backward(retain_graph=True)
    gx, gw = x.grad.numpy().copy(), w.grad.numpy().copy()
    x.grad = w.grad = None
    n_threads, n_runs = 4, 20

    def work(k):
        for _ in range(n_runs):
            loss.backward(retain_graph=True)

    assert _threads(n_threads, work) == []
    np.testing.assert_allclose(x.grad.numpy(), n_threads * n_runs * gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), n_threads * n_runs * gw, rtol=1e-4, atol=1e-5)


def test_concurrent_grad_and_backward_do_not_see_each_others_pruning():
    # autograd.grad(loss, [x]) prunes w's gradient (switches the edge off for its run); the
    # backward runs at the same time must still get every gradient
    x, w, loss = _shared_graph()
    loss.backward(retain_graph=True)
    gx, gw = x.grad.numpy().copy(), w.grad.numpy().copy()
    x.grad = w.grad = None
    got = [[] for _ in range(4)]

    def work(k):
        for _ in range(15):
            if k % 2:
                got[k].append(autograd.grad(loss, [x], retain_graph=True)[0].numpy().copy())
            else:
                loss.backward(retain_graph=True)

    assert _threads(4, work) == []
    for k in (1, 3):
        for g in got[k]:
            np.testing.assert_allclose(g, gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), 30 * gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), 30 * gw, rtol=1e-4, atol=1e-5)


def test_concurrent_backward_without_retain_graph_one_run_wins():
    for _ in range(5):
        x, w, loss = _shared_graph()
        expected = autograd.grad(loss, [x, w], retain_graph=True)
        barrier = threading.Barrier(4)

        def work(k):
            barrier.wait()
            loss.backward()

        errors = _threads(4, work)
        assert len(errors) == 3
        for e in errors:
            assert isinstance(e, RuntimeError) and "second time" in str(e)
        # the one run that went through accumulated its whole gradient, the others nothing
        np.testing.assert_allclose(x.grad.numpy(), expected[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.grad.numpy(), expected[1].numpy(), rtol=1e-5, atol=1e-6)


def test_concurrent_backward_of_two_losses_sharing_a_trunk():
    # each thread its own loss over one trunk, retain_graph=False: both trunk runs must not free
    # what the other still needs; the second one through the trunk raises, never crashes
    for _ in range(5):
        x = mmu.tensor(RNG.standard_normal((6, 5)).astype(np.float32), requires_grad=True)
        trunk = F.linear(x, np.ones((5, 5), np.float32)).tanh()
        losses = [(trunk * trunk).sum(), trunk.exp().mean()]
        barrier = threading.Barrier(2)

        def work(k):
            barrier.wait()
            losses[k].backward()

        errors = _threads(2, work)
        assert len(errors) <= 1
        for e in errors:
            assert isinstance(e, RuntimeError) and "second time" in str(e)
