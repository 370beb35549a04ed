"""F.gelu(approximate='tanh') (csrc/ops/unary.c: one C pass forward, one backward, in the sigmoid form
x / (1 + e^-2u)): values and gradients against float64 NumPy (the tanh formula) and finite differences,
the extremes against torch's float64 gelu, and parallel / serial agreement on a tensor past the grain."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from gradcheck import assert_close, check_mmu_grads, torch_or_skip

C = np.sqrt(2.0 / np.pi)


def _ref(x):
    return 0.5 * x * (1.0 + np.tanh(C * (x + 0.044715 * x ** 3)))


def _dref(x):
    t = np.tanh(C * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3 * 0.044715 * x * x)


@pytest.mark.parametrize("shape", [(7,), (3, 33), (2, 5, 17)])
def test_gelu_tanh_forward_and_backward_against_numpy(shape):
    x = (np.random.default_rng(1).standard_normal(shape) * 3.0).astype(np.float32)
    x64 = x.astype(np.float64)
    assert_close(F.gelu(mmu.tensor(x), approximate="tanh").numpy(), _ref(x64), rtol=1e-6, atol=1e-7,
                 what="gelu tanh")
    check_mmu_grads(lambda m, t: m.F.gelu(t, approximate="tanh"), _ref, [x], rtol=2e-3, atol=2e-4)
    t = mmu.tensor(x, requires_grad=True)
    F.gelu(t, approximate="tanh").sum().backward()
    assert_close(t.grad.numpy(), _dref(x64), rtol=1e-5, atol=1e-6, what="d gelu tanh")


def test_gelu_tanh_on_a_large_tensor_matches_numpy_and_every_thread_count():
    # past the parallel grain: the same bits at 1 and 2 threads
    x = (np.random.default_rng(2).standard_normal((300, 1000)) * 4.0).astype(np.float32)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    got = []
    old = mmu.get_num_threads()
    try:
        for n in (1, 2):
            mmu.set_num_threads(n)
            t = mmu.tensor(x, requires_grad=True)
            y = F.gelu(t, approximate="tanh")
            y.backward(mmu.tensor(g))
            got.append((y.numpy().copy(), t.grad.numpy().copy()))
    finally:
        mmu.set_num_threads(old)
    assert np.array_equal(got[0][0], got[1][0]) and np.array_equal(got[0][1], got[1][1])
    x64 = x.astype(np.float64)
    assert_close(got[0][0], _ref(x64), rtol=1e-6, atol=1e-7, what="gelu tanh")
    assert_close(got[0][1], g * _dref(x64), rtol=1e-5, atol=1e-6, what="d gelu tanh")


def test_gelu_tanh_at_extremes_matches_torch_float64():
    torch = torch_or_skip()
    x = np.array([-np.inf, -1e30, -1e13, -100.0, -10.5, -10.0, -9.99, -9.5, -5.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 3.0, 9.5, 10.5,
                  100.0, 1e13, 1e30, np.inf, np.nan], np.float32)
    t = mmu.tensor(x, requires_grad=True)
    y = F.gelu(t, approximate="tanh")
    y.sum().backward()
    r = torch.tensor(x.astype(np.float64), requires_grad=True)
    ry = torch.nn.functional.gelu(r, approximate="tanh")
    ry.sum().backward()
    f32 = lambda a: a.detach().numpy().astype(np.float32).astype(np.float64)
    assert_close(y.numpy(), f32(ry), rtol=2e-6, atol=1e-12, what="gelu tanh forward")
    assert_close(t.grad.numpy(), f32(r.grad), rtol=2e-6, atol=1e-7, what="d gelu tanh")
    assert np.isnan(y.numpy()[0]) and y.numpy()[-2] == np.inf and np.isnan(t.grad.numpy()[[0, -2, -1]]).all()
