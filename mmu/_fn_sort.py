"""Sorting along a dim: sort, argsort and topk (csrc/ops/sort.c), with torch's names, arguments,
order and return types; also Tensor methods (t.sort(), t.argsort(), t.topk()).

The order is torch's: NaN is larger than every number (ascending: NaNs last; descending and
largest=True: NaNs first), -0.0 equals 0.0. Equal values keep their index order: sort is always
stable (stable=False is accepted and sorts stably too; torch leaves the order of ties free there),
and topk returns the lower index first among equal values (torch's CPU kernel gives no order for
ties). float32 input runs the C kernels and is differentiable (the gradient of values[j] goes to
input[indices[j]]); int64 (and bool, for sort/argsort) input is sorted by NumPy with the same order
and gives no gradient.
"""
import collections

import numpy as np

from . import _C
from ._args import flag as _flag, int_arg as _int_arg
from ._C import Tensor
from .tensor import _as_tensor, _wrap_dim, bool as _bool, float32, int64, tensor as _tensor

__all__ = ["topk", "sort", "argsort"]

_topk_result = collections.namedtuple("topk", ["values", "indices"])
_sort_result = collections.namedtuple("sort", ["values", "indices"])
_topk_result.__doc__ = "(values, indices) of topk, like torch.return_types.topk: unpacks as a tuple."
_sort_result.__doc__ = "(values, indices) of sort, like torch.return_types.sort: unpacks as a tuple."


def _numpy_order(x, dim, descending, op):
    """Stable index order of an int64 / bool tensor along dim (NumPy), descending by ~a (no overflow)."""
    a = x.numpy()
    d = _wrap_dim(dim, x.ndim, op, tuple(x.shape))
    key = ~a if descending else a  # int64: ~a = -a - 1 reverses the order; bool: logical not
    return a, np.argsort(key, axis=d, kind="stable").astype(np.int64), d


def _other_dtype(x, op, allow_bool):
    if x.dtype == float32:
        return False
    if x.dtype == int64 or (allow_bool and x.dtype == _bool):
        return True
    kinds = "float32 or int64" + (" (or bool)" if allow_bool else "")
    raise TypeError(f"{op}: input must be {kinds}, got {x.dtype} with shape {tuple(x.shape)}")


def sort(input, dim=-1, descending=False, stable=False):
    """Sorts input along dim (torch.sort): returns (values, indices), a named tuple with .values and
    .indices, both of input's shape; values[..., j, ...] = input[..., indices[..., j, ...], ...].
    Ascending unless descending=True; NaN counts as larger than every number; equal values keep
    their index order (always stable, whatever `stable` says). float32 input is differentiable:
    the gradient of values goes back to the positions in indices."""
    return _sort(input, dim, descending, stable, "sort")


def argsort(input, dim=-1, descending=False, stable=False):
    """The indices that sort input along dim (torch.argsort): sort(input, dim, descending,
    stable).indices, int64 of input's shape, ties in index order (stable)."""
    return _sort(input, dim, descending, stable, "argsort").indices


def _sort(input, dim, descending, stable, op):
    x = _as_tensor(input, op)
    descending, _ = _flag(descending, op, "descending"), _flag(stable, op, "stable")
    dim = _wrap_dim(dim, x.ndim, op, tuple(x.shape))
    if _other_dtype(x, op, allow_bool=True):
        if x.ndim == 0:
            return _sort_result(_tensor(x.numpy().copy()), _tensor(np.zeros((), np.int64)))
        a, order, d = _numpy_order(x, dim, descending, op)
        return _sort_result(_tensor(np.take_along_axis(a, order, d)), _tensor(order))
    return _sort_result(*_C.sort(x, dim, descending))


def topk(input, k, dim=-1, largest=True, sorted=True):
    """The k largest (largest=False: smallest) elements of input along dim (torch.topk): returns
    (values, indices), a named tuple with .values and .indices of input's shape with dim of size k.
    The best comes first (sorted=False is accepted and returns them sorted as well); NaN counts as
    larger than every number; among equal values the lower index comes first. 0 <= k <= size of
    dim, else IndexError. A partial selection (a heap of k over each row), not a full sort, when k
    is small against the row. float32 input is differentiable: the gradient of values goes back to
    the positions in indices, zero elsewhere."""
    op = "topk"
    x = _as_tensor(input, op)
    k = _int_arg(k, op, "k")
    largest, _ = _flag(largest, op, "largest"), _flag(sorted, op, "sorted")
    dim = _int_arg(dim, op, "dim")
    if _other_dtype(x, op, allow_bool=False):
        n = x.shape[_wrap_dim(dim, x.ndim, op, tuple(x.shape))] if x.ndim else 1
        if not 0 <= k <= n:
            raise IndexError(f"{op}: k = {k} is out of range for dim {dim} of size {n} (input shape "
                             f"{tuple(x.shape)}); expected 0 <= k <= {n}")
        if x.ndim == 0:
            return _topk_result(_tensor(x.numpy().copy()), _tensor(np.zeros((), np.int64)))
        a, order, d = _numpy_order(x, dim, largest, op)
        order = np.ascontiguousarray(np.take(order, np.arange(k), axis=d))
        return _topk_result(_tensor(np.take_along_axis(a, order, d)), _tensor(order))
    return _topk_result(*_C.topk(x, k, dim, largest))


for _name, _fn in (("sort", sort), ("argsort", argsort), ("topk", topk)):
    setattr(Tensor, _name, _fn)
del _name, _fn
