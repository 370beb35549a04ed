"""max_pool2d / nn.MaxPool2d: forward vs a float64 NumPy reference (values and torch's indices),
gradients vs finite differences and torch, ceil_mode / padding / dilation edge cases, NaN, bad inputs."""
import numpy as np
import pytest

import mmu
import mmu.functional as F

try:
    from gradcheck import assert_close, numeric_grad, torch_or_skip
except ImportError:
    from tests.gradcheck import assert_close, numeric_grad, torch_or_skip


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_size(n, k, s, p, d, ceil):
    num = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """float64 reference: values and torch's flat plane indices (first maximum, NaN wins)."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    x = np.asarray(x, np.float64)
    H, W = x.shape[-2:]
    OH, OW = _out_size(H, kh, sh, ph, dh, ceil_mode), _out_size(W, kw, sw, pw, dw, ceil_mode)
    planes = x.reshape(-1, H, W)
    out = np.full((planes.shape[0], OH, OW), -np.inf)
    idx = np.zeros((planes.shape[0], OH, OW), np.int64)
    for p in range(planes.shape[0]):
        for oh in range(OH):
            for ow in range(OW):
                best, bi = -np.inf, None
                for i in range(kh):
                    for j in range(kw):
                        h, w = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                        if 0 <= h < H and 0 <= w < W:
                            v = planes[p, h, w]
                            if bi is None:
                                bi = h * W + w
                            if v > best or np.isnan(v):
                                best, bi = v, h * W + w
                out[p, oh, ow], idx[p, oh, ow] = best, bi
    shape = x.shape[:-2] + (OH, OW)
    return out.reshape(shape), idx.reshape(shape)


CASES = [
    ((2, 3, 8, 8), dict(kernel_size=2)),                                   # VGG
    ((2, 3, 9, 9), dict(kernel_size=2)),                                   # odd size: last row/col dropped
    ((2, 3, 15, 13), dict(kernel_size=3, stride=2)),                       # AlexNet, overlapping
    ((2, 2, 9, 7), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((3, 7, 6), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # 3-D unbatched
    ((1, 2, 10, 11), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(2, 3), ceil_mode=True)),
    ((1, 2, 6, 6), dict(kernel_size=3, stride=1, padding=1)),
    ((1, 1, 5, 5), dict(kernel_size=5, stride=3, padding=2, ceil_mode=True)),
    ((1, 2, 20, 18), dict(kernel_size=16, stride=3, padding=8)),           # kh*kw >= 255: int64 indices
]


def _data(shape, seed):
    rng = np.random.default_rng(seed)
    # distinct values: finite differences need a unique maximum per window
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) * 4 - 2).astype(np.float32)


@pytest.mark.parametrize("shape,kw", CASES)
def test_forward_and_indices(shape, kw):
    x = _data(shape, 1)
    y, i = F.max_pool2d(x, return_indices=True, **kw)
    ry, ri = ref_max_pool(x, **kw)
    assert y.dtype == mmu.float32 and i.dtype == mmu.int64
    assert_close(y.numpy(), ry, 0, 0)
    np.testing.assert_array_equal(i.numpy(), ri)
    assert_close(F.max_pool2d(x, **kw).numpy(), ry, 0, 0)  # no indices, no grad: the value-only path


@pytest.mark.parametrize("shape,kw", CASES[:8])
def test_backward_finite_differences(shape, kw):
    shape = (1,) * (len(shape) - 3) + (2,) + tuple(min(s, 9) for s in shape[-2:])  # small: the reference is a loop
    x = _data(shape, 2)
    xm = mmu.tensor(x, requires_grad=True)
    y = F.max_pool2d(xm, **kw)
    g = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    y.backward(mmu.tensor(g))
    (num,) = numeric_grad(lambda a: ref_max_pool(a, **kw)[0], [x], g, eps=1e-4)
    assert_close(xm.grad.numpy(), num, 1e-5, 1e-5, "dx")


@pytest.mark.parametrize("shape,kw", CASES)
def test_vs_torch(shape, kw):
    torch = torch_or_skip()
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    g = None
    xt = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, return_indices=True, **kw)
    g = np.random.default_rng(5).standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g))
    xm = mmu.tensor(x, requires_grad=True)
    y, i = F.max_pool2d(xm, return_indices=True, **kw)
    y.backward(mmu.tensor(g))
    assert_close(y.numpy(), yt.detach().numpy(), 0, 0)
    np.testing.assert_array_equal(i.numpy(), it.numpy())
    assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-6, 1e-6, "dx")


def test_ties_nan_and_inf():
    x = np.array([[[[1, 1, 0, -np.inf], [1, 1, -np.inf, -np.inf]],
                   [[np.nan, 5, 2, np.nan], [7, np.nan, 3, 1]]]], np.float32)
    y, i = F.max_pool2d(x, 2, return_indices=True)
    ry, ri = ref_max_pool(x, 2)
    assert_close(y.numpy(), ry, 0, 0)
    np.testing.assert_array_equal(i.numpy(), ri)
    assert np.isnan(y.numpy()[0, 1, 0, 0]) and i.numpy()[0, 1, 0, 0] == 5  # the last NaN wins (torch)
    xm = mmu.tensor(x, requires_grad=True)
    F.max_pool2d(xm, 2).sum().backward()
    gx = xm.grad.numpy()
    assert gx[0, 0, 0, 0] == 1 and gx[0, 0].sum() == 2  # ties: the first maximum gets it all


def test_overlapping_windows_accumulate_deterministically():
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = 1  # the centre is the max of all four 3x3 / stride-2 windows
    xm = mmu.tensor(x, requires_grad=True)
    F.max_pool2d(xm, 3, 2).sum().backward()
    assert xm.grad.numpy()[0, 0, 2, 2] == 4 and xm.grad.numpy().sum() == 4
    big = np.random.default_rng(6).standard_normal((4, 16, 33, 33)).astype(np.float32)
    grads = []
    for _ in range(2):
        bm = mmu.tensor(big, requires_grad=True)
        F.max_pool2d(bm, 3, 2, padding=1).sum().backward()
        grads.append(bm.grad.numpy().copy())
    np.testing.assert_array_equal(grads[0], grads[1])


def test_empty_batch():
    # torch allows N = 0 (and only N): an empty output of the right shape, an empty gradient
    x = mmu.tensor(np.zeros((0, 3, 8, 8), np.float32), requires_grad=True)
    y = F.max_pool2d(x, 2)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 8, 8)


def test_empty_window_is_minus_inf_without_gradient():
    # window rows/cols {-1, 2} with dilation 3: nothing of the 2x2 input lies inside
    x = mmu.tensor(np.ones((1, 1, 2, 2), np.float32), requires_grad=True)
    y = F.max_pool2d(x, 2, stride=1, padding=1, dilation=3)
    assert y.shape == (1, 1, 1, 1) and y.numpy()[0, 0, 0, 0] == -np.inf
    y.sum().backward()
    assert np.all(x.grad.numpy() == 0)


def test_ceil_mode_last_window_rule():
    # 5 wide, k 2, s 2, p 1: ceil gives 4 windows by the formula, the 4th would start in the right padding
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    assert F.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    assert F.max_pool2d(x, 2, 2, 0, ceil_mode=True).shape == (1, 1, 3, 3)
    assert F.max_pool2d(x, 2, 2, 0, ceil_mode=False).shape == (1, 1, 2, 2)


def test_module_and_repr():
    m = mmu.nn.MaxPool2d(2)
    assert repr(m) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    m2 = mmu.nn.MaxPool2d((2, 3), stride=1, padding=1, dilation=2, ceil_mode=True)
    assert repr(m2) == "MaxPool2d(kernel_size=(2, 3), stride=1, padding=1, dilation=2, ceil_mode=True)"
    x = _data((2, 3, 8, 8), 7)
    assert_close(m(x).numpy(), ref_max_pool(x, 2)[0], 0, 0)
    y, i = mmu.nn.MaxPool2d(3, 2, return_indices=True)(x)
    np.testing.assert_array_equal(i.numpy(), ref_max_pool(x, 3, 2)[1])
    assert "MaxPool2d" in mmu.nn.__all__ and "max_pool2d" in mmu.functional.__all__


def test_bad_inputs():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="half of kernel size"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="half of kernel size"):  # torch: the kernel, not the dilated one
        F.max_pool2d(np.zeros((1, 1, 9, 9), np.float32), 3, padding=2, dilation=2)
    with pytest.raises(ValueError, match="too small"):
        F.max_pool2d(x, 5)
    with pytest.raises(ValueError, match="3-D .* or 4-D"):
        F.max_pool2d(np.zeros((4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="3-D .* or 4-D"):
        F.max_pool2d(np.zeros((1, 0, 4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="positive"):
        F.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="positive"):
        F.max_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match="positive"):
        F.max_pool2d(x, 2, dilation=0)
    with pytest.raises(TypeError, match="kernel_size"):
        F.max_pool2d(x, 2.5)
    with pytest.raises(TypeError, match="stride"):
        F.max_pool2d(x, 2, stride="2")
    with pytest.raises(TypeError):
        F.max_pool2d(np.zeros((1, 1, 4, 4), np.int64), 2)
