"""sort, argsort and topk (csrc/ops/sort.c, mmu/_fn_sort.py): torch's order (NaN above every number,
-0 == +0, ties in index order), the partial selection of topk against a full sort, gradients against
finite differences, torch parity, the int64 path, return types and errors.

CASES (id, fn, ref, arrays) is walked by tests/test_op_table.py as well, so the SORT and TOPK rows
of the op table are each recorded by a case here."""
import numpy as np
import pytest

import mmu

try:
    from gradcheck import (MmuBackend, TorchBackend, assert_close, check_mmu_grads, random_upstream, run_case,
                           torch_or_skip)
except ImportError:
    from tests.gradcheck import (MmuBackend, TorchBackend, assert_close, check_mmu_grads, random_upstream,
                                 run_case, torch_or_skip)


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ref_order(x, dim=-1, descending=False):
    """Indices that sort x along dim in torch's order, ties by index: NaN largest, -0 == +0."""
    x = np.moveaxis(np.asarray(x), dim, -1)
    out = np.empty(x.shape, np.int64)
    for pos in np.ndindex(*x.shape[:-1]):
        row = x[pos]
        nan = np.isnan(row)
        val = np.where(nan, 0.0, row).astype(np.float64) + 0.0  # -0 -> +0
        # np.lexsort: the last key is the primary one (ascending: numbers, then NaNs; descending: NaNs first)
        primary, secondary = (~nan, -val) if descending else (nan, val)
        out[pos] = np.lexsort((np.arange(len(row)), secondary, primary))
    return np.moveaxis(out, -1, dim)


def ref_sort(x, dim=-1, descending=False):
    i = ref_order(x, dim, descending)
    return np.take_along_axis(np.asarray(x), i, dim), i


def ref_topk(x, k, dim=-1, largest=True):
    v, i = ref_sort(x, dim, descending=largest)
    sel = np.arange(k)
    return np.take(v, sel, axis=dim), np.take(i, sel, axis=dim)


# (id, fn, float64 reference of values, arrays): forward vs the reference, gradients vs finite differences
CASES = [
    ("sort_last", lambda m, x: m.sort(x).values, lambda x: np.sort(x, -1), [rnd(3, 6, seed=1)]),
    ("sort_dim0_descending", lambda m, x: m.sort(x, dim=0, descending=True).values,
     lambda x: -np.sort(-x, 0), [rnd(5, 2, 3, seed=2)]),
    ("sort_method_stable", lambda m, x: x.sort(dim=1, stable=True)[0], lambda x: np.sort(x, 1), [rnd(2, 7, 2, seed=3)]),
    ("topk_last", lambda m, x: m.topk(x, 3).values, lambda x: -np.sort(-x, -1)[..., :3], [rnd(4, 9, seed=4)]),
    ("topk_dim1_smallest", lambda m, x: m.topk(x, 2, dim=1, largest=False).values,
     lambda x: np.sort(x, 1)[:, :2], [rnd(2, 6, 3, seed=5)]),
    ("topk_method_all", lambda m, x: x.topk(5).values, lambda x: -np.sort(-x, -1),
     [rnd(3, 5, seed=6)]),
    ("topk_0d", lambda m, x: m.topk(x, 1).values, lambda x: x, [np.array(0.7, np.float32)]),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward(case):
    _, fn, ref, arrays = case
    _, out, _, _, _ = run_case(MmuBackend(), fn, arrays, [False] * len(arrays))
    assert out.dtype == np.float32
    assert_close(out, ref(*[a.astype(np.float64) for a in arrays]), rtol=0, atol=0, what="forward")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward(case):
    _, fn, ref, arrays = case
    check_mmu_grads(fn, ref, arrays, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vs_torch(case):
    torch = torch_or_skip()
    _, fn, _, arrays = case
    flags = [True] * len(arrays)
    _, out_m, _, grads_m, _ = run_case(MmuBackend(), fn, arrays, flags, upstream_fn=random_upstream(3))
    _, out_t, _, grads_t, _ = run_case(TorchBackend(torch), fn, arrays, flags, upstream_fn=random_upstream(3))
    assert_close(out_m, out_t, rtol=0, atol=0, what="forward vs torch")
    for k, (gm, gt) in enumerate(zip(grads_m, grads_t)):
        assert_close(gm, gt, rtol=0, atol=0, what=f"grad of input {k} vs torch")


# rows with ties, NaNs (both signs), infinities and signed zeros
SPECIAL = np.array([[1.0, np.nan, 3.0, 3.0, -0.0, 0.0, -np.inf, np.inf, -np.nan, 3.0, -1.0, 0.0],
                    [2.0, 2.0, 2.0, np.nan, 2.0, -5.0, np.inf, np.nan, -0.0, 2.0, -np.inf, 1.0]], np.float32)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dim", [-1, 0])
def test_sort_order_nan_ties_signed_zero(descending, dim):
    x = SPECIAL if dim == -1 else np.ascontiguousarray(SPECIAL.T)
    v, i = mmu.sort(x, dim=dim, descending=descending)
    rv, ri = ref_sort(x, dim, descending)
    np.testing.assert_array_equal(i.numpy(), ri)
    np.testing.assert_array_equal(v.numpy(), rv)  # NaN == NaN here
    assert v.dtype == mmu.float32 and i.dtype == mmu.int64
    np.testing.assert_array_equal(mmu.argsort(x, dim=dim, descending=descending).numpy(), ri)


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("k", [0, 1, 3, 7, 12])
def test_topk_order_nan_ties(largest, k):
    v, i = mmu.topk(SPECIAL, k, largest=largest)
    rv, ri = ref_topk(SPECIAL, k, largest=largest)
    np.testing.assert_array_equal(i.numpy(), ri)
    np.testing.assert_array_equal(v.numpy(), rv)
    assert v.shape == (2, k)


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("shape,dim,k", [((3, 20000), -1, 50), ((2, 5000), 1, 1), ((1000, 3), 0, 7),
                                         ((2, 700, 2), 1, 100)])
def test_topk_selection_matches_a_full_sort(shape, dim, k, largest):
    """The heap path (4k < n, contiguous and strided rows) against the reference full sort, on
    random values and on values with many ties and a few NaNs."""
    rng = np.random.default_rng(sum(shape) + k)
    for x in (rng.standard_normal(shape).astype(np.float32),
              rng.integers(-20, 20, shape).astype(np.float32)):
        x.reshape(-1)[rng.integers(0, x.size, 5)] = np.nan
        v, i = mmu.topk(x, k, dim=dim, largest=largest)
        rv, ri = ref_topk(x, k, dim, largest)
        np.testing.assert_array_equal(i.numpy(), ri)
        np.testing.assert_array_equal(v.numpy(), rv)


@pytest.mark.parametrize("n", [5, 33, 5000])
def test_sort_long_and_short_rows(n):
    """Insertion sort (<= 32) and radix sort rows, with ties, against NumPy's stable argsort."""
    rng = np.random.default_rng(n)
    x = np.round(rng.standard_normal((3, n)) * 4).astype(np.float32) / 4
    for descending in (False, True):
        v, i = mmu.sort(x, descending=descending)
        ri = np.argsort(-x if descending else x, axis=-1, kind="stable")
        np.testing.assert_array_equal(i.numpy(), ri)
        np.testing.assert_array_equal(v.numpy(), np.take_along_axis(x, ri, -1))


def test_gradient_goes_to_the_selected_positions():
    x = mmu.tensor(np.array([[0.5, 2.0, -1.0, 3.0], [1.0, 1.0, 0.0, -2.0]], np.float32), requires_grad=True)
    v, i = x.topk(2)
    (v * mmu.tensor(np.array([[10.0, 20.0], [30.0, 40.0]], np.float32))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 20, 0, 10], [30, 40, 0, 0]])
    np.testing.assert_array_equal(i.numpy(), [[3, 1], [0, 1]])  # tie 1.0 == 1.0: the lower index first
    y = mmu.tensor(np.array([3.0, 1.0, 2.0], np.float32), requires_grad=True)
    (y.sort().values * mmu.tensor(np.array([1.0, 2.0, 3.0], np.float32))).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [3, 1, 2])


def test_vs_torch_random_and_stable_ties():
    torch = torch_or_skip()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3000)).astype(np.float32)
    for largest in (True, False):
        v, i = mmu.topk(x, 40, largest=largest)
        tv, ti = torch.topk(torch.tensor(x), 40, largest=largest)
        np.testing.assert_array_equal(v.numpy(), tv.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
    ties = np.round(rng.standard_normal((3, 200, 2)) * 2).astype(np.float32)
    ties[0, 3, 0] = np.nan
    for descending in (False, True):
        v, i = mmu.sort(ties, dim=1, descending=descending)
        tv, ti = torch.sort(torch.tensor(ties), dim=1, descending=descending, stable=True)
        np.testing.assert_array_equal(v.numpy(), tv.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
    # torch's topk leaves the order of ties free: the values agree and the indices point at them
    v, i = mmu.topk(ties, 30, dim=1)
    tv, _ = torch.topk(torch.tensor(ties), 30, dim=1)
    np.testing.assert_array_equal(v.numpy(), tv.numpy())
    np.testing.assert_array_equal(np.take_along_axis(ties, i.numpy(), 1), v.numpy())


def test_int64_and_bool_inputs_sort_like_float():
    a = np.array([[3, -1, 3, 2 ** 62, -(2 ** 63), 0]], np.int64)
    for descending in (False, True):
        v, i = mmu.sort(a, descending=descending)
        ri = np.argsort(~a if descending else a, axis=-1, kind="stable")
        np.testing.assert_array_equal(i.numpy(), ri)
        np.testing.assert_array_equal(v.numpy(), np.take_along_axis(a, ri, -1))
        assert v.dtype == mmu.int64
    v, i = mmu.topk(a, 3)
    np.testing.assert_array_equal(v.numpy(), [[2 ** 62, 3, 3]])
    np.testing.assert_array_equal(i.numpy(), [[3, 0, 2]])
    v, i = mmu.topk(a, 2, largest=False)
    np.testing.assert_array_equal(v.numpy(), [[-(2 ** 63), -1]])
    b = np.array([True, False, True, False])
    np.testing.assert_array_equal(mmu.argsort(b).numpy(), [1, 3, 0, 2])
    np.testing.assert_array_equal(mmu.sort(b, descending=True).values.numpy(), [True, True, False, False])
    v, i = mmu.sort(mmu.tensor(np.int64(4)))
    assert v.shape == () and int(v.item()) == 4 and int(i.item()) == 0


def test_return_types_methods_and_shapes():
    x = mmu.tensor(rnd(2, 5, 3, seed=8))
    r = x.topk(2, dim=1)
    assert type(r).__name__ == "topk" and isinstance(r, tuple)
    v, i = r
    assert v is r.values and i is r.indices and v.shape == i.shape == (2, 2, 3)
    s = x.sort(dim=0)
    assert type(s).__name__ == "sort" and s.values.shape == s.indices.shape == (2, 5, 3)
    np.testing.assert_array_equal(x.argsort(dim=-1, descending=True).numpy(),
                                  np.argsort(-x.numpy(), -1, kind="stable"))
    for shape in ((0,), (2, 0), (0, 3)):  # empty tensors sort to empty tensors
        e = mmu.zeros(*shape)
        assert mmu.sort(e).values.shape == shape and mmu.topk(e, 0).indices.shape == shape[:-1] + (0,)
    z = mmu.topk(mmu.tensor(np.float32(2.5)), 1)
    assert z.values.shape == () and z.values.item() == 2.5 and z.indices.item() == 0
    assert mmu.topk(x, 0, dim=1).values.shape == (2, 0, 3)
    # sorted=False is accepted and gives the sorted result (torch leaves that order free)
    np.testing.assert_array_equal(x.topk(3, dim=1, sorted=False).indices.numpy(), x.topk(3, dim=1).indices.numpy())


@pytest.mark.parametrize("call,exc,match", [
    (lambda x: mmu.topk(x, 6), IndexError, r"topk: k = 6 is out of range for dim -1 of size 5 \(input shape \(2, 5\)\)"),
    (lambda x: mmu.topk(x, -1), IndexError, r"topk: k = -1 is out of range"),
    (lambda x: mmu.topk(x, 2, dim=2), IndexError, r"topk: dim 2 is out of range"),
    (lambda x: mmu.sort(x, dim=-3), IndexError, r"sort: dim -3 is out of range"),
    (lambda x: mmu.topk(x, 2.0), TypeError, r"topk: k must be an int"),
    (lambda x: mmu.topk(x, 2, dim=None), TypeError, r"topk: dim must be an int"),
    (lambda x: mmu.topk(x, 2, largest="yes"), TypeError, r"topk: largest must be a bool"),
    (lambda x: mmu.sort(x, descending=None), TypeError, r"sort: descending must be a bool"),
    (lambda x: mmu.argsort(x, stable="no"), TypeError, r"sort: stable must be a bool"),
    (lambda x: mmu.topk(x > 0, 1), TypeError, r"topk: input must be float32 or int64, got bool"),
    (lambda x: mmu.topk(np.zeros((2, 3), np.int64), 4), IndexError, r"topk: k = 4 is out of range"),
    (lambda x: mmu.sort("abc"), TypeError, r"sort: input must be a Tensor"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(mmu.tensor(rnd(2, 5)))


def test_threads_do_not_change_results():
    x = rnd(64, 2000, seed=9)
    before = mmu.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            mmu.set_num_threads(n)
            outs.append((mmu.topk(x, 20)[1].numpy().copy(), mmu.sort(x, dim=0)[1].numpy().copy()))
    finally:
        mmu.set_num_threads(before)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
