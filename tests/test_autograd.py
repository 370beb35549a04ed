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
        expected = [autograd.grad(loss, [x], retain_graph=True)[0].numpy() for loss in losses]
        barrier = threading.Barrier(2)

        def work(k):
            barrier.wait()
            losses[k].backward()

        errors = _threads(2, work)
        # whichever run collects the trunk first frees it: the other refuses before adding anything
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError) and "second time" in str(errors[0])
        assert any(np.allclose(x.grad.numpy(), e, rtol=1e-5, atol=1e-6) for e in expected)


# ------------------------------------------------------------------ version counter (issue 11)
def _inplace_error(match_op, match_shape):
    return pytest.raises(RuntimeError, match=rf"modified by an inplace operation: .*shape \({match_shape}\) "
                                             rf"saved by {match_op}.* is at version \d+; expected version \d+")


# issue 11: writing in place into a tensor the graph saved gave silently wrong gradients
# (the backward read the new values); torch raises
def test_inplace_write_into_a_saved_tensor_raises_at_backward():
    y = mmu.tensor(np.float32([1, 2, 3]), requires_grad=True)
    z = (y * y).sum()
    with mmu.no_grad():
        y.add_(1)
    with _inplace_error("MUL", "3,"):
        z.backward()
    try:  # torch agrees
        import torch
    except ImportError:
        return
    ty = torch.tensor([1.0, 2, 3], requires_grad=True)
    tz = (ty * ty).sum()
    with torch.no_grad():
        ty.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tz.backward()


def _bumps(t, write):
    before = t._version
    write()
    return t._version - before


def test_every_inplace_path_bumps_the_version():
    t = mmu.tensor(np.ones((2, 3), np.float32))
    view = t.reshape(6)  # shares the storage, so it shares the counter (as torch's views)
    with mmu.no_grad():
        for write in (lambda: t.add_(1), lambda: t.sub_(1), lambda: t.mul_(2), lambda: t.div_(2),
                      lambda: t.fill_(3), lambda: t.zero_(), lambda: t.copy_(np.ones(3, np.float32)),
                      lambda: t.__setitem__((0, 1), 5.0), lambda: t.__iadd__(1), lambda: view.mul_(1),
                      lambda: t.detach().add_(1)):
            assert _bumps(t, write) == 1
            assert view._version == t._version
    # a write through a NumPy view is not seen (documented: t.numpy() is untracked)
    assert _bumps(t, lambda: t.numpy().__setitem__(0, 7.0)) == 0

    # fused optimizer steps, gradient clipping, EMA, quantizer and batch-norm buffers (C kernels)
    lin = mmu.nn.Linear(3, 2)
    for opt in (mmu.optim.AdamW(lin.parameters(), lr=0.1), mmu.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9),
                mmu.optim.Adam(lin.parameters(), lr=0.1, amsgrad=True)):
        lin(mmu.ones(4, 3)).sum().backward()
        assert _bumps(lin.weight, opt.step) == 1
        assert _bumps(lin.weight.grad, lambda: mmu.optim.clip_grad_norm_(lin.parameters(), 1e-3)) == 1
        opt.zero_grad(set_to_none=False)
    ema = mmu.optim.EMA(lin, decay=0.5, warmup=False)
    shadow = ema.shadow["weight"]
    assert _bumps(shadow, lambda: ema.update(lin)) == 1
    assert _bumps(lin.weight, lambda: lin.load_state_dict(lin.state_dict())) == 1
    assert _bumps(lin.weight, lambda: mmu.nn.init.normal_(lin.weight)) == 1
    bn = mmu.nn.BatchNorm2d(2)
    assert _bumps(bn.running_mean, lambda: bn(mmu.randn(3, 2, 2, 2))) == 1
    assert _bumps(bn.num_batches_tracked, lambda: bn(mmu.randn(3, 2, 2, 2))) == 1
    for buf in (bn.running_mean, bn.running_var, bn.num_batches_tracked):
        assert _bumps(buf, bn.reset_running_stats) == 1
    # ActNorm's data-dependent init writes loc/scale (and its flag) through NumPy
    act = mmu.nn.ActNorm(2)
    for buf in (act.loc, act.scale, act.initialized):
        act.initialized.zero_()  # forces the init again on the next training forward
        assert _bumps(buf, lambda: act(mmu.randn(3, 2, 2, 2))) == 1
    # EMA's buffer copies (int64 num_batches_tracked and float buffers with include_buffers)
    net = mmu.nn.Sequential(mmu.nn.Linear(2, 2), mmu.nn.BatchNorm1d(2))
    ema_b = mmu.optim.EMA(net, decay=0.5, warmup=False, include_buffers=True)
    assert _bumps(ema_b.buffers["1.num_batches_tracked"], lambda: ema_b.update(net)) == 1
    assert _bumps(net[1].num_batches_tracked, lambda: ema_b.copy_to(net)) == 1
    assert _bumps(net[1].running_mean, lambda: ema_b.copy_to(net)) == 1
    with ema_b.average_parameters(net):
        before = net[1].num_batches_tracked._version
    assert net[1].num_batches_tracked._version - before == 1  # the restore
    vq = mmu.quantizers.VectorQuantize(dim=4, codebook_size=8, decay=0.8)
    vq.train()
    embed = vq.embed
    assert _bumps(embed, lambda: vq(mmu.randn(2, 5, 4))) >= 1


def test_no_false_positives_only_changed_saved_tensors_raise():
    x = mmu.tensor(RNG.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    w = mmu.tensor(RNG.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    unsaved = mmu.tensor(np.ones(2, np.float32))
    loss = (F.linear(x, w) + unsaved).tanh().sum()  # the add does not save `unsaved`
    with mmu.no_grad():
        unsaved.add_(1)
    loss.backward()  # fine: nothing the backward reads has changed
    g = x.grad.numpy().copy()
    # the training idiom: backward, then the optimizer writes the parameters; the next graph saves
    # the new versions
    opt = mmu.optim.AdamW([x, w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.linear(x, w).tanh().sum().backward()
        opt.step()
    assert np.isfinite(g).all()
    # retain_graph, then a write, then a second backward through the same graph: raises
    loss = (x * w[0]).sum()
    loss.backward(retain_graph=True)
    opt.step()
    with _inplace_error("MUL", "4, 3"):
        loss.backward()


def test_saved_output_written_in_place_raises_also_for_double_backward():
    x = mmu.tensor(np.float32([0.5, 1.0, 2.0]), requires_grad=True)
    h = x.exp()  # exp saves its own output
    loss = h.sum()
    with mmu.no_grad():
        h[0] = 5.0
    with _inplace_error("EXP", "3,"):
        loss.backward()
    x = mmu.tensor(np.float32([0.5, 1.0, 2.0]), requires_grad=True)
    y = x.tanh()
    z = (y * y).sum()
    with mmu.no_grad():
        y.mul_(2.0)
    with _inplace_error("MUL", "3,"):
        autograd.grad(z, [x], create_graph=True)
