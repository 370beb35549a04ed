"""linear of a single input row (a decoding step's M = 1) runs its own kernel (csrc/ops/matmul.c,
linear_one_row: one dot product per weight row) instead of oneDNN: the same values as float64 NumPy for
every input width (whole 32-float steps, a 16-float step, a masked tail), with and without bias, any
leading shape of one row; the same bits at any thread count; gradients unchanged."""
import numpy as np
import pytest

import mmu
import mmu.functional as F


@pytest.mark.parametrize("IN", [1, 5, 16, 17, 32, 48, 63, 771])
@pytest.mark.parametrize("bias", [False, True])
def test_one_row_matches_float64(IN, bias):
    rng = np.random.default_rng(IN)
    OUT = 37
    w = rng.standard_normal((OUT, IN), dtype=np.float32)
    b = rng.standard_normal(OUT, dtype=np.float32) if bias else None
    for shape in ((IN,), (1, IN), (1, 1, IN)):
        x = rng.standard_normal(shape, dtype=np.float32)
        got = F.linear(mmu.tensor(x), mmu.tensor(w), None if b is None else mmu.tensor(b))
        want = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
        assert got.shape == shape[:-1] + (OUT,)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5 * np.sqrt(IN))


def test_one_row_same_bits_at_any_thread_count():
    rng = np.random.default_rng(0)
    # big enough (IN·OUT > the parallel grain) that two threads split the rows
    w = mmu.tensor(rng.standard_normal((3000, 200), dtype=np.float32))
    x = mmu.tensor(rng.standard_normal((1, 200), dtype=np.float32))
    prev = mmu.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            mmu.set_num_threads(t)
            outs.append(F.linear(x, w).numpy().copy())
    finally:
        mmu.set_num_threads(prev)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_one_row_agrees_with_the_many_row_path_and_its_gradients():
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((9, 45), dtype=np.float32)
    w0 = rng.standard_normal((9, 45), dtype=np.float32)
    b0 = rng.standard_normal(9, dtype=np.float32)
    g = rng.standard_normal((9, 9), dtype=np.float32)
    # nine rows (more than the few-rows kernel takes) go through oneDNN; each row alone through the one-row kernel
    w, b = mmu.tensor(w0, requires_grad=True), mmu.tensor(b0, requires_grad=True)
    x = mmu.tensor(xs, requires_grad=True)
    both = F.linear(x, w, b)
    (both * mmu.tensor(g)).sum().backward()
    gw_both, gb_both, gx_both = w.grad.numpy().copy(), b.grad.numpy().copy(), x.grad.numpy().copy()
    w.grad = b.grad = None
    rows, gxs = [], []
    for r in range(9):
        xr = mmu.tensor(xs[r:r + 1], requires_grad=True)
        yr = F.linear(xr, w, b)
        rows.append(yr.numpy().copy())
        (yr * mmu.tensor(g[r:r + 1])).sum().backward()
        gxs.append(xr.grad.numpy().copy())
    np.testing.assert_allclose(np.concatenate(rows), both.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), gw_both, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), gb_both, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(gxs), gx_both, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ a few rows (2 .. 8)
# R <= 8 rows (a guided decoding step's conditional + unconditional rows, VILA-U's depth transformer on a few
# depths) take the one-row kernel on groups of up to 4 rows, each weight row read once per group.

@pytest.mark.parametrize("R", [2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("IN", [5, 16, 17, 48, 771])
def test_few_rows_match_float64_and_the_one_row_bits(R, IN):
    rng = np.random.default_rng(R * 1000 + IN)
    OUT = 37
    w = rng.standard_normal((OUT, IN), dtype=np.float32)
    b = rng.standard_normal(OUT, dtype=np.float32)
    x = rng.standard_normal((R, IN), dtype=np.float32)
    got = F.linear(mmu.tensor(x), mmu.tensor(w), mmu.tensor(b)).numpy()
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(IN))
    # every row's outputs are the bits the row gets alone (the one-row order of summation)
    alone = np.concatenate([F.linear(mmu.tensor(x[r:r + 1]), mmu.tensor(w), mmu.tensor(b)).numpy()
                            for r in range(R)])
    np.testing.assert_array_equal(got, alone)
    # a leading shape of R rows in all
    got3 = F.linear(mmu.tensor(x.reshape(1, R, IN)), mmu.tensor(w), mmu.tensor(b)).numpy()
    np.testing.assert_array_equal(got3.reshape(R, OUT), got)


def test_few_rows_same_bits_at_any_thread_count_and_gradients():
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((3000, 200), dtype=np.float32)  # IN·OUT above the parallel grain: threads split it
    x0 = rng.standard_normal((6, 200), dtype=np.float32)
    prev = mmu.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            mmu.set_num_threads(t)
            outs.append(F.linear(mmu.tensor(x0), mmu.tensor(w0)).numpy().copy())
    finally:
        mmu.set_num_threads(prev)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # gradients through the few-rows forward: float64 references
    x, w = mmu.tensor(x0[:, :40], requires_grad=True), mmu.tensor(w0[:7, :40], requires_grad=True)
    g = rng.standard_normal((6, 7), dtype=np.float32)
    (F.linear(x, w) * mmu.tensor(g)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), g.astype(np.float64) @ w0[:7, :40], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), g.T.astype(np.float64) @ x0[:, :40], rtol=1e-5, atol=1e-5)
