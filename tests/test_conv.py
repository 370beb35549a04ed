"""conv1d/2d/3d and conv_transpose1d/2d/3d: forward vs a float64 NumPy reference, gradients vs
central finite differences of that reference and vs torch float32, argument errors, and the
primitive cache.

The references are written from the definitions: a convolution sums, for every kernel offset,
a strided window of the zero-padded input times that offset's weights; a transposed convolution
scatters every input cell times the kernel into a full-size output, then crops `padding` cells
off each side (output_padding extends the right side).
"""
import numpy as np
import pytest

import mmu
import mmu.functional as F

try:
    from gradcheck import assert_close, numeric_grad, torch_or_skip
except ImportError:
    from tests.gradcheck import assert_close, numeric_grad, torch_or_skip


# ---------------------------------------------------------------- references (float64)

def ref_conv(x, w, b, stride, pad_l, pad_r, dilation, groups):
    """x (N, C, *in), w (OC, C/groups, *k), b (OC) or None -> (N, OC, *out)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    sp = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [(pad_l[d], pad_r[d]) for d in range(sp)])
    N, C, OC, k = x.shape[0], x.shape[1], w.shape[0], w.shape[2:]
    out = [(x.shape[2 + d] - dilation[d] * (k[d] - 1) - 1) // stride[d] + 1 for d in range(sp)]
    y = np.zeros((N, OC, *out))
    cg, og = C // groups, OC // groups
    for off in np.ndindex(*k):
        win = tuple(slice(off[d] * dilation[d], off[d] * dilation[d] + stride[d] * (out[d] - 1) + 1, stride[d])
                    for d in range(sp))
        xs = x[(slice(None), slice(None)) + win]
        for gi in range(groups):
            y[:, gi * og:(gi + 1) * og] += np.einsum(
                "nc...,oc->no...", xs[:, gi * cg:(gi + 1) * cg], w[(slice(gi * og, (gi + 1) * og), slice(None)) + off])
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, *[1] * sp)
    return y


def ref_conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation):
    """x (N, IC, *in), w (IC, OC/groups, *k), b (OC) or None -> (N, OC, *out)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    sp = x.ndim - 2
    N, IC, ocg, k, n_in = x.shape[0], x.shape[1], w.shape[1], w.shape[2:], x.shape[2:]
    icg = IC // groups
    full = [(n_in[d] - 1) * stride[d] + dilation[d] * (k[d] - 1) + 1 + output_padding[d] for d in range(sp)]
    y = np.zeros((N, ocg * groups, *full))
    for off in np.ndindex(*k):
        win = tuple(slice(off[d] * dilation[d], off[d] * dilation[d] + stride[d] * (n_in[d] - 1) + 1, stride[d])
                    for d in range(sp))
        for gi in range(groups):
            y[(slice(None), slice(gi * ocg, (gi + 1) * ocg)) + win] += np.einsum(
                "nc...,co->no...", x[:, gi * icg:(gi + 1) * icg], w[(slice(gi * icg, (gi + 1) * icg), slice(None)) + off])
    y = y[(slice(None), slice(None)) + tuple(slice(padding[d], full[d] - padding[d]) for d in range(sp))]
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(1, -1, *[1] * sp)
    return y


def _tup(v, sp):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * sp


def reference(transposed, sp, kw, wshape):
    """A float64 reference f(x, w[, b]) for one case (handles unbatched input and 'same'/'valid')."""
    stride, dilation = _tup(kw.get("stride", 1), sp), _tup(kw.get("dilation", 1), sp)
    groups = kw.get("groups", 1)
    if transposed:
        pad, opad = _tup(kw.get("padding", 0), sp), _tup(kw.get("output_padding", 0), sp)
        core = lambda x, w, b: ref_conv_transpose(x, w, b, stride, pad, opad, groups, dilation)  # noqa: E731
    else:
        padding = kw.get("padding", 0)
        if padding == "valid":
            pl = pr = (0,) * sp
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, wshape[2:])]
            pl, pr = [t // 2 for t in total], [t - t // 2 for t in total]
        else:
            pl = pr = _tup(padding, sp)
        core = lambda x, w, b: ref_conv(x, w, b, stride, pl, pr, dilation, groups)  # noqa: E731

    def f(x, w, b=None):
        if x.ndim == sp + 1:
            return core(x[None], w, b)[0]
        return core(x, w, b)
    return f


# ---------------------------------------------------------------- cases
# (id, transposed, sp, x shape, w shape, bias, kwargs)
CASES = [
    ("c1d_basic", 0, 1, (2, 3, 7), (4, 3, 3), True, {}),
    ("c1d_stride_pad_dil", 0, 1, (2, 4, 11), (6, 2, 3), True, dict(stride=2, padding=2, dilation=2, groups=2)),
    ("c1d_same_even", 0, 1, (1, 2, 6), (3, 2, 4), True, dict(padding="same")),
    ("c1d_unbatched", 0, 1, (3, 7), (2, 3, 2), False, dict(padding=1)),
    ("c2d_basic", 0, 2, (2, 3, 6, 5), (4, 3, 3, 3), True, dict(padding=1)),
    ("c2d_stride_tuple", 0, 2, (2, 3, 7, 8), (4, 3, 3, 2), True, dict(stride=(2, 3), padding=(1, 0))),
    ("c2d_dilation", 0, 2, (1, 2, 7, 7), (3, 2, 3, 3), True, dict(dilation=(2, 1), padding=(2, 1))),
    ("c2d_groups", 0, 2, (2, 4, 5, 5), (6, 2, 3, 3), True, dict(groups=2, padding=1)),
    ("c2d_depthwise", 0, 2, (2, 4, 5, 6), (8, 1, 3, 3), True, dict(groups=4, padding=1)),
    ("c2d_valid", 0, 2, (2, 3, 6, 5), (2, 3, 3, 2), True, dict(padding="valid")),
    ("c2d_same_odd", 0, 2, (2, 3, 5, 6), (2, 3, 3, 5), True, dict(padding="same")),
    ("c2d_same_even", 0, 2, (1, 2, 5, 6), (3, 2, 2, 4), True, dict(padding="same")),
    ("c2d_same_even_dil", 0, 2, (1, 2, 7, 6), (3, 2, 2, 3), True, dict(padding="same", dilation=(3, 2))),
    ("c2d_no_bias", 0, 2, (2, 3, 5, 5), (4, 3, 3, 3), False, dict(stride=2)),
    ("c2d_unbatched", 0, 2, (3, 5, 6), (4, 3, 3, 3), True, dict(padding=1)),
    ("c2d_batch1_1x1", 0, 2, (1, 5, 4, 3), (3, 5, 1, 1), True, {}),
    ("c2d_1x1_stride", 0, 2, (2, 3, 5, 5), (4, 3, 1, 1), True, dict(stride=2)),
    # padding beyond the kernel's reach: the data gradient cannot run as a flipped forward conv
    ("c2d_1x1_padded", 0, 2, (1, 3, 4, 4), (2, 3, 1, 1), True, dict(padding=(1, 2))),
    ("c2d_pad_gt_reach", 0, 2, (1, 2, 4, 4), (3, 2, 2, 3), True, dict(padding=(2, 1))),
    # stride == kernel: non-overlapping patches (the matmul path), whole and with a remainder
    ("c2d_patches", 0, 2, (2, 3, 8, 9), (4, 3, 4, 3), True, dict(stride=(4, 3))),
    ("c2d_patches_rest", 0, 2, (2, 2, 9, 10), (3, 2, 4, 4), True, dict(stride=4)),
    ("c2d_patches_unbatched", 0, 2, (2, 6, 6), (3, 2, 3, 3), False, dict(stride=3)),
    ("c1d_patches", 0, 1, (2, 3, 10), (4, 3, 3), True, dict(stride=3)),
    ("c3d_patches", 0, 3, (2, 2, 4, 6, 5), (3, 2, 2, 3, 2), True, dict(stride=(2, 3, 2))),
    ("c3d_1x1", 0, 3, (2, 3, 2, 3, 4), (5, 3, 1, 1, 1), True, {}),
    ("c3d_basic", 0, 3, (1, 2, 4, 5, 4), (3, 2, 3, 3, 3), True, dict(padding=1)),
    ("c3d_stride_groups", 0, 3, (2, 4, 5, 4, 5), (4, 2, 2, 3, 2), True, dict(stride=(2, 1, 2), groups=2)),
    ("c3d_same_unbatched", 0, 3, (2, 4, 3, 5), (2, 2, 2, 3, 2), False, dict(padding="same")),
    # depthwise 3-D (groups == in_channels: conv.c's direct kernels; OmniTokenizer's PEG is the first): stride 1
    # through a padded box (kernels 3 / mixed / 1, a depth multiplier of 2, dilation, 'same', rows of several
    # vectors), other strides and a padding past the kernel's reach through the row path
    ("c3d_dw_k3_p1", 0, 3, (2, 3, 3, 4, 5), (3, 1, 3, 3, 3), True, dict(padding=1, groups=3)),
    ("c3d_dw_mult2_mixed_k", 0, 3, (1, 2, 4, 4, 5), (4, 1, 3, 1, 2), True, dict(padding=(1, 0, 1), groups=2)),
    ("c3d_dw_dilation", 0, 3, (1, 3, 5, 5, 5), (3, 1, 3, 3, 3), True, dict(padding=2, dilation=2, groups=3)),
    ("c3d_dw_same_unbatched", 0, 3, (3, 3, 4, 5), (3, 1, 2, 3, 2), True, dict(padding="same", groups=3)),
    ("c3d_dw_k1_no_bias", 0, 3, (2, 4, 2, 3, 3), (4, 1, 1, 3, 3), False, dict(padding=(0, 1, 1), groups=4)),
    ("c3d_dw_wide_rows", 0, 3, (1, 2, 3, 6, 20), (2, 1, 3, 3, 3), True, dict(padding=1, groups=2)),
    ("c3d_dw_stride", 0, 3, (2, 2, 5, 6, 7), (2, 1, 3, 3, 3), True, dict(stride=(2, 1, 2), padding=1, groups=2)),
    ("c3d_dw_pad_gt_reach", 0, 3, (1, 2, 3, 4, 4), (2, 1, 2, 2, 3), True, dict(padding=(2, 1, 1), groups=2)),
    ("t1d_basic", 1, 1, (2, 3, 5), (3, 2, 3), True, {}),
    ("t1d_stride_dil_op", 1, 1, (2, 4, 5), (4, 3, 3), True, dict(stride=3, padding=1, output_padding=2, dilation=2,
                                                                  groups=2)),
    ("t1d_unbatched", 1, 1, (3, 4), (3, 2, 2), False, dict(stride=2)),
    ("t2d_k4s2p1", 1, 2, (2, 4, 4, 3), (4, 3, 4, 4), True, dict(stride=2, padding=1)),
    ("t2d_output_padding", 1, 2, (1, 3, 3, 4), (3, 2, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    ("t2d_op_gt_pad", 1, 2, (2, 2, 3, 3), (2, 3, 3, 2), True, dict(stride=3, output_padding=(2, 1))),
    ("t2d_op_dilation", 1, 2, (1, 2, 3, 3), (2, 2, 2, 2), True, dict(dilation=3, output_padding=2)),
    ("t2d_groups", 1, 2, (2, 4, 3, 3), (4, 2, 3, 3), True, dict(groups=2, stride=(1, 2), padding=(1, 0))),
    ("t2d_depthwise", 1, 2, (1, 3, 4, 4), (3, 1, 3, 3), False, dict(groups=3, padding=1)),
    ("t2d_unbatched_1x1", 1, 2, (3, 4, 5), (3, 2, 1, 1), True, {}),
    ("t3d_basic", 1, 3, (1, 2, 3, 2, 3), (2, 3, 2, 3, 2), True, dict(stride=2, padding=(0, 1, 0), output_padding=1)),
    ("t3d_groups_unbatched", 1, 3, (4, 2, 2, 3), (4, 1, 3, 2, 2), True, dict(groups=2, dilation=(1, 2, 1))),
]

FN = {(0, 1): "conv1d", (0, 2): "conv2d", (0, 3): "conv3d",
      (1, 1): "conv_transpose1d", (1, 2): "conv_transpose2d", (1, 3): "conv_transpose3d"}


def make_inputs(case, seed=0):
    _, transposed, sp, xs, ws, bias, kw = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    oc = ws[1] * kw.get("groups", 1) if transposed else ws[0]
    arrays = [x, w]
    if bias:
        arrays.append(rng.standard_normal(oc).astype(np.float32))
    return arrays


def run(lib_F, tensor, case, arrays, upstream=None):
    """Forward (and backward with `upstream`) on mmu or torch; returns (out, grads)."""
    _, transposed, sp, _, _, _, kw = case
    ts = [tensor(a) for a in arrays]
    fn = getattr(lib_F, FN[transposed, sp])
    out = fn(ts[0], ts[1], ts[2] if len(ts) > 2 else None, **kw)
    if upstream is None:
        return out, None
    out.backward(tensor(upstream, grad=False))
    return out, [t.grad for t in ts]


def mmu_tensor(a, grad=True):
    return mmu.tensor(a, requires_grad=grad)


IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward(case):
    arrays = make_inputs(case)
    out, _ = run(F, mmu_tensor, case, arrays)
    expected = reference(case[1], case[2], case[6], case[4])(*arrays)
    assert out.dtype == mmu.float32
    assert tuple(out.shape) == expected.shape
    assert_close(out.numpy(), expected, rtol=1e-4, atol=1e-4, what=f"{case[0]} forward")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_finite_differences(case):
    arrays = make_inputs(case)
    ref = reference(case[1], case[2], case[6], case[4])
    upstream = np.random.default_rng(1).standard_normal(ref(*arrays).shape).astype(np.float32)
    _, grads = run(F, mmu_tensor, case, arrays, upstream)
    expected = numeric_grad(ref, arrays, upstream)
    for i, (g, e) in enumerate(zip(grads, expected)):
        assert g is not None, f"{case[0]}: input {i} got no .grad"
        assert_close(g.numpy(), e, rtol=1e-3, atol=1e-4, what=f"{case[0]} grad of {['input', 'weight', 'bias'][i]}")


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on its own padded copy
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vs_torch(case):
    torch = torch_or_skip()
    import torch.nn.functional as TF
    arrays = make_inputs(case, seed=2)
    out, grads = run(F, mmu_tensor, case, arrays, None)
    upstream = np.random.default_rng(3).standard_normal(tuple(out.shape)).astype(np.float32)
    out, grads = run(F, mmu_tensor, case, arrays, upstream)
    tout, tgrads = run(TF, lambda a, grad=True: torch.tensor(a, requires_grad=grad), case, arrays, upstream)
    assert_close(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5, what=f"{case[0]} forward vs torch")
    for i, (g, tg) in enumerate(zip(grads, tgrads)):
        assert_close(g.numpy(), tg.numpy(), rtol=1e-4, atol=1e-4, what=f"{case[0]} grad {i} vs torch")


def test_grad_of_some_inputs_only():
    # only the weight needs a gradient; then only the input
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 5, 5)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    ref = reference(0, 2, dict(padding=1), w.shape)
    ex, ew = numeric_grad(ref, [x, w], g)
    mx, mw = mmu.tensor(x), mmu.tensor(w, requires_grad=True)
    F.conv2d(mx, mw, padding=1).backward(mmu.tensor(g))
    assert mx.grad is None
    assert_close(mw.grad.numpy(), ew, rtol=1e-3, atol=1e-4, what="weight grad alone")
    mx, mw = mmu.tensor(x, requires_grad=True), mmu.tensor(w)
    b = mmu.tensor(np.ones(4, np.float32), requires_grad=True)
    F.conv2d(mx, mw, b, padding=1).backward(mmu.tensor(g))
    assert mw.grad is None
    assert_close(mx.grad.numpy(), ex, rtol=1e-3, atol=1e-4, what="input grad alone")
    assert_close(b.grad.numpy(), g.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4, what="bias grad")


def test_empty_batch():
    x = mmu.tensor(np.zeros((0, 3, 5, 5), np.float32), requires_grad=True)
    w = mmu.tensor(np.ones((4, 3, 3, 3), np.float32), requires_grad=True)
    b = mmu.tensor(np.ones(4, np.float32), requires_grad=True)
    y = F.conv2d(x, w, b)
    assert tuple(y.shape) == (0, 4, 3, 3)
    y.sum().backward()
    assert tuple(x.grad.shape) == (0, 3, 5, 5)
    assert np.all(w.grad.numpy() == 0) and np.all(b.grad.numpy() == 0)


def test_deterministic_and_larger_shape():
    # channels that fill oneDNN's 16-wide blocks (the blocked-layout path with reorders)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 32, 9, 9)).astype(np.float32), rng.standard_normal((48, 32, 3, 3)).astype(np.float32)
    b, g = rng.standard_normal(48).astype(np.float32), rng.standard_normal((2, 48, 9, 9)).astype(np.float32)
    results = []
    for _ in range(2):
        mx, mw, mb = (mmu.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(mx, mw, mb, padding=1)
        y.backward(mmu.tensor(g))
        results.append([t.numpy().copy() for t in (y, mx.grad, mw.grad, mb.grad)])
    for a, c in zip(*results):
        assert np.array_equal(a, c)
    assert_close(results[0][0], ref_conv(x, w, b, (1, 1), (1, 1), (1, 1), (1, 1), 1), rtol=1e-4, atol=1e-3)


def test_depthwise3d_same_numbers_at_1_and_2_threads_vs_torch():
    """The depthwise 3-D kernels at a PEG-like shape (channels past a vector, rows of several vectors): the same
    bits at 1 and 2 threads (the weight and bias sums run in a fixed order), and torch's numbers."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 24, 3, 6, 18)).astype(np.float32), rng.standard_normal((24, 1, 3, 3, 3)).astype(np.float32)
    b, g = rng.standard_normal(24).astype(np.float32), rng.standard_normal((2, 24, 3, 6, 18)).astype(np.float32)
    prev, results = mmu.get_num_threads(), []
    try:
        for threads in (1, 2):
            mmu.set_num_threads(threads)
            mx, mw, mb = (mmu.tensor(a, requires_grad=True) for a in (x, w, b))
            y = F.conv3d(mx, mw, mb, padding=1, groups=24)
            y.backward(mmu.tensor(g))
            results.append([t.numpy().copy() for t in (y, mx.grad, mw.grad, mb.grad)])
    finally:
        mmu.set_num_threads(prev)
    for a, c in zip(*results):
        assert np.array_equal(a, c)
    assert_close(results[0][0], ref_conv(x, w, b, (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), 24), rtol=1e-4, atol=1e-4)
    torch = torch_or_skip()
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.conv3d(tx, tw, tb, padding=1, groups=24).backward(torch.tensor(g))
    for mine, theirs in zip(results[0][1:], (tx.grad, tw.grad, tb.grad)):
        assert_close(mine, theirs.numpy(), rtol=1e-4, atol=1e-3)


def test_depthwise3d_huge_dilation_runs_without_a_padded_box():
    """A dilation of 2**40 with padding 2**39 (kernel 2, one input cell): one output cell that no tap reaches, so the
    output is the bias and the gradients of x and w are zero. The padded box of the stride-1 path would have
    (2**40)**3 cells: its size is checked in double and the row path runs instead (no wrapped allocation)."""
    x = mmu.tensor(np.full((1, 2, 1, 1, 1), 3.0, np.float32), requires_grad=True)
    w = mmu.tensor(np.ones((2, 1, 2, 2, 2), np.float32), requires_grad=True)
    b = mmu.tensor(np.array([0.5, -1.5], np.float32), requires_grad=True)
    y = F.conv3d(x, w, b, padding=2 ** 39, dilation=2 ** 40, groups=2)
    assert y.shape == (1, 2, 1, 1, 1)
    np.testing.assert_array_equal(y.numpy().ravel(), [0.5, -1.5])
    y.backward(mmu.tensor(np.array([2.0, 3.0], np.float32).reshape(1, 2, 1, 1, 1)))
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((1, 2, 1, 1, 1), np.float32))
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((2, 1, 2, 2, 2), np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 3.0])


@pytest.mark.parametrize("kw", [dict(padding=1, groups=2), dict(padding=(2, 0), dilation=2),
                                dict(stride=2, padding=1), dict(padding="same", groups=32)],
                         ids=["groups", "dilation", "stride", "depthwise"])
def test_blocked_layouts_vs_torch(kw):
    # channels that fill oneDNN's 16-wide blocks, so the primitives pick blocked layouts and the
    # op reorders into and out of them (the tiny cases above mostly run on plain layouts)
    torch = torch_or_skip()
    import torch.nn.functional as TF
    rng = np.random.default_rng(7)
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 32, 10, 9)).astype(np.float32)
    w = rng.standard_normal((64, 32 // groups, 3, 3)).astype(np.float32) * 0.1
    b = rng.standard_normal(64).astype(np.float32)
    mx, mw, mb = (mmu.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y, ty = F.conv2d(mx, mw, mb, **kw), TF.conv2d(tx, tw, tb, **kw)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    y.backward(mmu.tensor(g))
    ty.backward(torch.tensor(g))
    for a, e, what in ((y, ty, "out"), (mx.grad, tx.grad, "dx"), (mw.grad, tw.grad, "dw"), (mb.grad, tb.grad, "db")):
        assert_close(a.numpy(), e.detach().numpy(), rtol=1e-4, atol=2e-4, what=what)
    # the transposed twin (weight (IC, OC/groups, k)), k4 s2 as in an upsampler
    wt = rng.standard_normal((32, 48 // groups, 4, 4)).astype(np.float32) * 0.1
    mwt, twt = mmu.tensor(wt, requires_grad=True), torch.tensor(wt, requires_grad=True)
    mx.grad, tx.grad = None, None
    y = F.conv_transpose2d(mx, mwt, None, stride=2, padding=1, groups=groups)
    ty = TF.conv_transpose2d(tx, twt, None, stride=2, padding=1, groups=groups)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    y.backward(mmu.tensor(g))
    ty.backward(torch.tensor(g))
    for a, e, what in ((y, ty, "t out"), (mx.grad, tx.grad, "t dx"), (mwt.grad, twt.grad, "t dw")):
        assert_close(a.numpy(), e.detach().numpy(), rtol=1e-4, atol=2e-4, what=what)


@pytest.mark.parametrize("shape, k", [((2, 3, 32, 32), 8), ((2, 48, 16, 16), 1), ((3, 16, 20, 22), 4)],
                         ids=["vit_patch_embed", "1x1", "patches_rest"])
def test_patches_vs_torch(shape, k):
    # the non-overlapping-patch matmul path at sizes where a batch sum and blocking matter
    torch = torch_or_skip()
    import torch.nn.functional as TF
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((64, shape[1], k, k)).astype(np.float32) * 0.1
    b = rng.standard_normal(64).astype(np.float32)
    mx, mw, mb = (mmu.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y, ty = F.conv2d(mx, mw, mb, stride=k), TF.conv2d(tx, tw, tb, stride=k)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    y.backward(mmu.tensor(g))
    ty.backward(torch.tensor(g))
    for a, e, what in ((y, ty, "out"), (mx.grad, tx.grad, "dx"), (mw.grad, tw.grad, "dw"), (mb.grad, tb.grad, "db")):
        assert_close(a.numpy(), e.detach().numpy(), rtol=1e-4, atol=2e-4, what=what)


def test_primitive_cache_does_not_grow():
    rng = np.random.default_rng(6)
    x = mmu.tensor(rng.standard_normal((2, 16, 8, 8)).astype(np.float32), requires_grad=True)
    w = mmu.tensor(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), requires_grad=True)
    wt = mmu.tensor(rng.standard_normal((16, 8, 4, 4)).astype(np.float32), requires_grad=True)
    b = mmu.tensor(rng.standard_normal(16).astype(np.float32), requires_grad=True)

    def step():
        F.conv2d(x, w, b, padding=1).sum().backward()
        F.conv_transpose2d(x, wt, None, stride=2, padding=1).sum().backward()
        F.conv1d(x.reshape(2, 16, 64), w[:, :, 0], b, padding="same").sum().backward()
        F.conv2d(x, w[:, :, :2, :2], b, stride=2).sum().backward()  # non-overlapping patches

    step()
    before = mmu.stats()["primitives_created"]
    for _ in range(3):
        step()
    assert mmu.stats()["primitives_created"] == before


# ---------------------------------------------------------------- errors

def _t(*shape, dtype=np.float32):
    return mmu.tensor(np.zeros(shape, dtype))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 2, 3, 3)), ValueError, ["conv2d", "(2, 3, 5, 5)", "(4, 2, 3, 3)"]),
    (lambda: F.conv2d(_t(2, 4, 5, 5), _t(6, 2, 3, 3), groups=3), ValueError, ["conv2d", "groups=3"]),
    (lambda: F.conv2d(_t(2, 4, 5, 5), _t(5, 2, 3, 3), groups=2), ValueError, ["conv2d", "groups=2", "(5, 2, 3, 3)"]),
    (lambda: F.conv2d(_t(2, 4, 5, 5), _t(4, 4, 3, 3), groups=0), ValueError, ["conv2d", "groups"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), padding=-1), ValueError, ["conv2d", "negative padding"]),
    (lambda: F.conv2d(_t(2, 3, 2, 2), _t(4, 3, 3, 3)), ValueError, ["conv2d", "kernel", "(2, 2)", "(3, 3)"]),
    (lambda: F.conv2d(_t(2, 3, 4, 4), _t(4, 3, 3, 3), dilation=2), ValueError, ["conv2d", "(5, 5)"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5, dtype=np.int64), _t(4, 3, 3, 3)), TypeError, ["conv2d", "input", "int64"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3, dtype=np.int64)), TypeError, ["conv2d", "weight"]),
    (lambda: F.conv2d(_t(3, 5, 5)[0], _t(4, 3, 3, 3)), ValueError, ["conv2d", "3D", "4D", "(5, 5)"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3)), ValueError, ["conv2d", "weight", "(4, 3, 3)"]),
    (lambda: F.conv1d(_t(1, 2, 3, 5, 5), _t(4, 2, 3)), ValueError, ["conv1d", "(1, 2, 3, 5, 5)"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), _t(3)), ValueError, ["conv2d", "bias", "(3,)", "(4,)"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), stride=0), ValueError, ["conv2d", "stride"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), dilation=(1, 0)), ValueError, ["conv2d", "dilation"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), stride=2, padding="same"), ValueError, ["conv2d", "same"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), padding="full"), ValueError, ["conv2d", "'full'"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), stride=1.5), TypeError, ["conv2d", "stride"]),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), padding=(1, 2, 3)), ValueError, ["conv2d", "padding"]),
    (lambda: F.conv3d(_t(1, 2, 4, 4, 4), _t(2, 2, 3, 3, 3), groups=1.0), TypeError, ["conv3d", "groups"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 5, 5), _t(4, 2, 3, 3)), ValueError, ["conv_transpose2d", "(4, 2, 3, 3)"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 5, 5), _t(3, 2, 3, 3), groups=2), ValueError, ["conv_transpose2d", "groups"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 5, 5), _t(3, 2, 3, 3), stride=2, output_padding=2), ValueError,
     ["conv_transpose2d", "output_padding", "stride", "dilation"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 5, 5), _t(3, 2, 3, 3), output_padding=1), ValueError,
     ["conv_transpose2d", "output_padding"]),
    (lambda: F.conv_transpose1d(_t(2, 3, 5), _t(3, 2, 3), padding=-1), ValueError, ["conv_transpose1d", "negative"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 1, 1), _t(3, 2, 1, 1), padding=1), ValueError,
     ["conv_transpose2d", "output size"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 5, 5), _t(3, 2, 3, 3), padding="same"), ValueError,
     ["conv_transpose2d", "padding"]),
    (lambda: F.conv_transpose3d(_t(2, 3, 5, 5), _t(3, 2, 3, 3, 3)), ValueError, ["conv_transpose3d", "(2, 3, 5, 5)"]),
    (lambda: F.conv_transpose2d(_t(2, 3, 5, 5, dtype=np.int64), _t(3, 2, 3, 3)), TypeError, ["conv_transpose2d"]),
])
def test_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


# issue 11: conv_transpose with a zero-size dim returned an empty or all-zero tensor where torch
# raises. torch 2.13's outcome for each layout, checked case by case: a non-empty batch with an
# empty spatial dim, a weight with 0 output channels, a weight with fewer rows than groups.
ZERO_SIZE_TRANSPOSED = [
    # (sp, input shape, weight shape, groups, expected output shape or None for an error)
    (3, (2, 4, 0, 3, 3), (4, 2, 2, 2, 2), 1, None),
    (3, (2, 4, 3, 3, 0), (4, 2, 2, 2, 2), 2, None),
    (3, (4, 3, 0, 3), (4, 2, 2, 2, 2), 1, None),      # unbatched: a batch of one
    (3, (2, 4, 3, 3, 3), (4, 0, 2, 2, 2), 1, None),   # 0 output channels
    (3, (2, 0, 3, 3, 3), (0, 2, 2, 2, 2), 1, None),   # weight rows < groups
    (2, (2, 4, 0, 3), (4, 2, 2, 2), 1, None),
    (2, (4, 3, 0), (4, 2, 2, 2), 1, None),
    (1, (2, 4, 0), (4, 2, 2), 1, None),
    (1, (4, 3), (4, 0, 2), 2, None),
    (3, (0, 4, 3, 3, 3), (4, 2, 2, 2, 2), 1, (0, 2, 4, 4, 4)),  # an empty batch is fine
    (3, (0, 4, 0, 3, 3), (4, 2, 2, 2, 2), 2, (0, 4, 1, 4, 4)),  # ... even with an empty spatial dim
    (2, (0, 4, 3, 0), (4, 1, 2, 2), 1, (0, 1, 4, 1)),
]


@pytest.mark.parametrize("sp,xs,ws,groups,expected", ZERO_SIZE_TRANSPOSED)
def test_conv_transpose_zero_size_dims_follow_torch(sp, xs, ws, groups, expected):
    fn = getattr(F, f"conv_transpose{sp}d")
    x, w = np.zeros(xs, np.float32), np.ones(ws, np.float32)
    if expected is None:
        with pytest.raises(ValueError, match=f"conv_transpose{sp}d"):
            fn(x, w, groups=groups)
    else:
        assert tuple(fn(x, w, groups=groups).shape) == expected
    try:
        import torch
    except ImportError:
        return
    tfn = getattr(torch.nn.functional, f"conv_transpose{sp}d")
    if expected is None:
        with pytest.raises(RuntimeError):
            tfn(torch.tensor(x), torch.tensor(w), groups=groups)
    else:
        assert tuple(tfn(torch.tensor(x), torch.tensor(w), groups=groups).shape) == expected
