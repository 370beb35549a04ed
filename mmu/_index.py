"""Tensor indexing: `x[idx]` and `x[idx] = value` (installed on mmu.Tensor by mmu/tensor.py).

Basic indexing (ints, slices, None, ...) is one strided slice (csrc/ops/shape.c) and a reshape;
a bool mask is masked_select, and tensor indices on adjacent dims are one index_select over the
flattened indexed dims (csrc/ops/index.c), so every read is differentiable. Assignment writes
through NumPy into the tensor's memory (refused while it is recorded by autograd).
"""
import builtins
import numbers

import numpy as np

from . import _C
from ._C import Tensor
from .autograd import is_grad_enabled
from .tensor import _INT, _as_tensor, _np, tensor


class IndexTypeError(IndexError, TypeError):
    """An index of the wrong type: NumPy and torch raise IndexError, Python's
    convention is TypeError; this is both, so either `except` catches it."""


def _expand_index(self, idx):
    """The entries of an index tuple with '...' replaced by full slices and the
    missing trailing dims filled in; None entries stay (each adds a dim)."""
    n_ell = builtins.sum(1 for i in idx if i is Ellipsis)
    if n_ell > 1:
        raise IndexError("index: an index can only have a single ellipsis ('...')")
    n_real = builtins.sum(1 for i in idx if i is not None and i is not Ellipsis)
    if n_real > self.ndim:
        raise IndexError(f"index: too many indices for a tensor of shape {self.shape}: {n_real} given")
    expanded = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (self.ndim - n_real))
        else:
            expanded.append(i)
    if n_ell == 0:
        expanded.extend([slice(None)] * (self.ndim - n_real))
    return expanded


def _normalize_index(self, idx):
    """Basic indexing -> (start, step, length) per dim, and the output shape."""
    expanded = _expand_index(self, idx if isinstance(idx, tuple) else (idx,))
    starts, steps, lengths, out_shape = [], [], [], []
    d = 0
    for i in expanded:
        if i is None:
            out_shape.append(1)
            continue
        size = self.shape[d]
        if isinstance(i, slice):
            start, stop, step = i.indices(size)
            if step <= 0:
                raise ValueError("index: slice steps must be positive")
            length = builtins.max(0, (stop - start + step - 1) // step)
            starts.append(start if length else 0)
            steps.append(step)
            lengths.append(length)
            out_shape.append(length)
        elif isinstance(i, numbers.Integral) and not isinstance(i, builtins.bool):
            i = int(i)
            if not -size <= i < size:
                raise IndexError(f"index: index {i} is out of bounds for dim {d} with size {size} "
                                 f"(tensor of shape {self.shape})")
            starts.append(i % size)
            steps.append(1)
            lengths.append(1)
        else:
            raise IndexTypeError(f"index: unsupported index {i!r} of type {type(i).__name__} "
                             "(use ints, slices, None, ... or a single int64/bool index tensor)")
        d += 1
    return starts, steps, lengths, out_shape


def _getitem(self, idx):
    if isinstance(idx, (Tensor, np.ndarray, list)):
        if isinstance(idx, list) and not idx:
            idx = np.zeros(0, np.int64)  # x[[]] selects no rows (torch), not a float index
        t = _as_tensor(idx, "index", "index")
        if t.dtype == bool:
            if t.shape == self.shape:
                return _C.masked_select(self, t)
            k = t.ndim
            if k > self.ndim or t.shape != self.shape[:k]:
                raise IndexError(f"index: a bool mask must match the leading dims of the tensor's shape "
                                 f"{self.shape}, got {t.shape}")
            # a mask over the leading dims picks whole sub-tensors (torch)
            rows = _C.tensor(np.flatnonzero(t.numpy()), _INT, False)
            return _C.index_select(_C.reshape(self, (-1,) + self.shape[k:]), 0, rows)
        if self.ndim == 0:
            raise IndexError("index: too many indices for a 0-d tensor")
        return _advanced_getitem(self, (t,))
    if isinstance(idx, tuple) and builtins.any(isinstance(i, (Tensor, np.ndarray, list)) for i in idx):
        return _advanced_getitem(self, idx)
    starts, steps, lengths, out_shape = _normalize_index(self, idx)
    x = self
    if builtins.any(s != 0 or st != 1 or ln != sz
                    for s, st, ln, sz in zip(starts, steps, lengths, self.shape)):
        x = _C.slice(self, tuple(starts), tuple(steps), tuple(lengths))
    if tuple(out_shape) != x.shape:
        x = _C.reshape(x, tuple(out_shape))
    return x


def _advanced_getitem(self, idx):
    """x[a, b], x[:, idx], x[0, idx], x[..., idx]: NumPy/torch advanced indexing where
    the array indices (ints count as 0-d arrays) sit on adjacent dims, the other
    entries being slices. Done as basic slicing, then one index_select over the
    flattened indexed dims (differentiable)."""
    if builtins.any(i is None for i in idx):
        raise IndexTypeError("index: None cannot be combined with tensor indices in mmu; unsqueeze afterwards")
    entries = _expand_index(self, idx)
    adv = [k for k, i in enumerate(entries) if not isinstance(i, slice)]
    if adv != list(range(adv[0], adv[-1] + 1)):
        raise IndexTypeError("index: mmu supports tensor indices on adjacent dims only (e.g. x[:, i, j]), "
                             f"got {idx!r}")
    arrays = []
    for k in adv:
        a = np.asarray(_np(entries[k]))
        if a.dtype == np.bool_:
            if a.ndim != 1 or a.shape[0] != self.shape[k]:
                raise IndexError(f"index: a bool index inside a tuple must be 1-D with the size of its dim "
                                 f"({self.shape[k]}), got shape {a.shape}")
            a = np.flatnonzero(a)
        elif a.dtype.kind not in "iu":
            raise IndexTypeError(f"index: tensors used as indices must be int64 or bool, got {a.dtype}")
        size = self.shape[k]
        if a.size and (a.min() < -size or a.max() >= size):
            bad = a[(a < -size) | (a >= size)].flat[0]
            raise IndexError(f"index: index {int(bad)} is out of bounds for dim {k} with size {size} "
                             f"(tensor of shape {self.shape})")
        arrays.append(np.where(a < 0, a + size, a).astype(np.int64))
    try:
        arrays = np.broadcast_arrays(*arrays)
    except ValueError:
        raise IndexError("index: shape mismatch: the tensor indices cannot be broadcast together "
                         f"({[a.shape for a in arrays]})") from None
    # 1. basic slicing on the other dims (keeps every dim)
    x = self[tuple(slice(None) if k in adv else e for k, e in enumerate(entries))]
    # 2. the indexed dims, flattened into one, selected at once
    first, last = adv[0], adv[-1] + 1
    flat = np.ravel_multi_index(arrays, x.shape[first:last]) if arrays[0].size else np.zeros(arrays[0].shape, np.int64)
    merged = _C.reshape(x, x.shape[:first] + (int(np.prod(x.shape[first:last])),) + x.shape[last:])
    out = _C.index_select(merged, first, tensor(flat.reshape(-1).astype(np.int64)))
    return _C.reshape(out, x.shape[:first] + arrays[0].shape + x.shape[last:])


def _setitem(self, idx, value):
    if is_grad_enabled() and (self.requires_grad or self.grad_fn is not None):
        raise RuntimeError("index assignment: writing in place into a tensor that requires grad while grad "
                           "is recorded would corrupt autograd; do it under `with mmu.no_grad():`, or use "
                           "masked_fill / where")
    if isinstance(idx, Tensor):
        idx = idx.numpy()
    elif isinstance(idx, tuple):
        idx = tuple(i.numpy() if isinstance(i, Tensor) else i for i in idx)
    try:
        self.numpy()[idx] = _np(value)
    except (ValueError, TypeError, IndexError, OverflowError) as e:
        shape = getattr(value, "shape", None)
        raise (IndexError if isinstance(e, (IndexError, OverflowError)) else ValueError)(f"index assignment: cannot assign a value{f' of shape {shape}' if shape else ''} "
                         f"to {idx!r} of a tensor of shape {self.shape}: {e}") from None
    self._bump_version()
