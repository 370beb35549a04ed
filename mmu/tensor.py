"""Tensor creation, the functions on `mmu` (matmul, cat, where, ...) and the
methods of `mmu.Tensor`.

`mmu.Tensor` is the C type of mmu._C; the methods below are thin documented
wrappers attached to it at import. They normalise arguments (dim as an int or
a tuple, keyword defaults, Python scalars) and call one C entry point each;
the C side validates shapes and dtypes and raises with the op's name.
"""
import builtins
import numbers

import numpy as np

from . import _C
from ._C import Tensor

float32 = np.dtype("float32")
int64 = np.dtype("int64")
bool = np.dtype("bool")  # noqa: A001 (torch's name)

_CODES = {float32: 0, int64: 1, bool: 2}
_FLOAT, _INT, _BOOL = 0, 1, 2

# op codes shared with csrc/ops/ops.h
_BIN = dict(add=0, sub=1, mul=2, div=3, maximum=4, minimum=5, lt=6, le=7, gt=8, ge=9, eq=10, ne=11,
            logical_and=12, logical_or=13, logical_xor=14)
_UN = dict(neg=0, exp=1, log=2, sqrt=3, abs=4, tanh=5, sigmoid=6, relu=7, gelu=8, gelu_tanh=9, silu=10)
_RED = dict(sum=0, mean=1, amax=2, amin=3)


def _dtype_code(dtype, op="tensor"):
    if dtype is None:
        return -1
    for py_type, code in ((float, _FLOAT), (int, _INT), (builtins.bool, _BOOL)):  # as torch accepts
        if dtype is py_type:
            return code
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: unknown dtype {dtype!r}; use mmu.float32, mmu.int64 or mmu.bool") from None
    if dt not in _CODES:
        raise TypeError(f"{op}: unsupported dtype {dt}; mmu tensors are float32, int64 or bool")
    return _CODES[dt]


def _size(size, op):
    """zeros(2, 3) and zeros((2, 3)) both mean shape (2, 3)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, numbers.Integral) or isinstance(s, builtins.bool):
            raise TypeError(f"{op}: size must be ints, got {size!r}")
        if s < 0:
            raise ValueError(f"{op}: negative dimension {s} in size {tuple(size)}")
    return tuple(int(s) for s in size)


def _dims(dim, op):
    if dim is None:
        return None
    if isinstance(dim, numbers.Integral) and not isinstance(dim, builtins.bool):
        return (int(dim),)
    if isinstance(dim, (tuple, list)):
        return tuple(dim)
    raise TypeError(f"{op}: dim must be an int, a tuple of ints or None, got {type(dim).__name__}")


def _as_tensor(x, op, arg="input"):
    if isinstance(x, Tensor):
        return x
    if x is None or isinstance(x, (str, bytes, dict)):
        raise TypeError(f"{op}: {arg} must be a Tensor or a numeric array, got {type(x).__name__}")
    return _C.tensor(x, -1, False)


# ----------------------------------------------------------------- creation
def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a COPY of `data` (a NumPy array, list, scalar or Tensor).

    float arrays become float32, integer arrays int64, bool stays bool;
    `dtype` forces one of mmu.float32 / mmu.int64 / mmu.bool."""
    return _C.tensor(data, _dtype_code(dtype), builtins.bool(requires_grad))


def _full(size, value, dtype, requires_grad, op):
    if not isinstance(value, numbers.Number) or isinstance(value, complex):
        raise TypeError(f"{op}: fill_value must be a real number, got {type(value).__name__}")
    code = _dtype_code(dtype, op)
    t = _C.full(size, code if code >= 0 else _FLOAT, float(value))
    if requires_grad:
        t.requires_grad = True
    return t


def zeros(*size, dtype=None, requires_grad=False):
    """Tensor of zeros; `zeros(2, 3)` or `zeros((2, 3))`."""
    return _full(_size(size, "zeros"), 0.0, dtype, requires_grad, "zeros")


def ones(*size, dtype=None, requires_grad=False):
    """Tensor of ones."""
    return _full(_size(size, "ones"), 1.0, dtype, requires_grad, "ones")


def full(size, fill_value, dtype=None, requires_grad=False):
    """Tensor filled with `fill_value` (dtype inferred from it when not given)."""
    if dtype is None:
        dtype = bool if isinstance(fill_value, builtins.bool) else int64 if isinstance(fill_value, numbers.Integral) else float32
    size = (size,) if isinstance(size, numbers.Integral) else tuple(size)
    return _full(_size(size, "full"), fill_value, dtype, requires_grad, "full")


def zeros_like(t, dtype=None, requires_grad=False):
    """Zeros with t's shape (and dtype unless given)."""
    t = _as_tensor(t, "zeros_like")
    return _full(t.shape, 0.0, dtype or t.dtype, requires_grad, "zeros_like")


def ones_like(t, dtype=None, requires_grad=False):
    """Ones with t's shape (and dtype unless given)."""
    t = _as_tensor(t, "ones_like")
    return _full(t.shape, 1.0, dtype or t.dtype, requires_grad, "ones_like")


def randn(*size, requires_grad=False):
    """Standard normal float32 samples from mmu's seeded counter-based RNG."""
    t = _C.random(_size(size, "randn"), True)
    if requires_grad:
        t.requires_grad = True
    return t


def rand(*size, requires_grad=False):
    """Uniform [0, 1) float32 samples from mmu's seeded counter-based RNG."""
    t = _C.random(_size(size, "rand"), False)
    if requires_grad:
        t.requires_grad = True
    return t


def arange(start, end=None, step=1, dtype=None):
    """Values start, start+step, ... < end (int64 if all arguments are ints, else float32)."""
    if end is None:
        start, end = 0, start
    for name, v in (("start", start), ("end", end), ("step", step)):
        if not isinstance(v, numbers.Real):
            raise TypeError(f"arange: {name} must be a number, got {type(v).__name__}")
    if dtype is None:
        all_int = builtins.all(isinstance(v, numbers.Integral) for v in (start, end, step))
        code = _INT if all_int else _FLOAT
    else:
        code = _dtype_code(dtype, "arange")
    return _C.arange(float(start), float(end), float(step), code)


def manual_seed(seed):
    """Seed mmu's RNG (randn, rand, dropout, sampling): same seed, same numbers, any thread count."""
    if not isinstance(seed, numbers.Integral):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _C.manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)


def set_num_threads(n):
    """Threads used by oneDNN and mmu's OpenMP kernels."""
    if not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _C.set_num_threads(int(n))


def get_num_threads():
    """Threads used by oneDNN and mmu's OpenMP kernels."""
    return _C.get_num_threads()


# ---------------------------------------------------------------- functions
def matmul(input, other):
    """Matrix product with torch.matmul's rules (1-D, 2-D, batched with broadcast batch dims)."""
    return _C.matmul(input, other)


def cat(tensors, dim=0):
    """Concatenate tensors (same shape except along dim)."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat: tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    return _C.cat(list(tensors), int(dim))


def stack(tensors, dim=0):
    """Stack equally shaped tensors along a new dim."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"stack: tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    ts = [_as_tensor(t, "stack", "tensors") for t in tensors]
    shape = ts[0].shape
    for t in ts:
        if t.shape != shape:
            raise ValueError(f"stack: all tensors must have the same shape, got {shape} and {t.shape}")
    nd = len(shape) + 1
    if not -nd <= dim < nd:
        raise IndexError(f"stack: dim {dim} is out of range for {nd}-d result")
    dim = dim % nd
    return _C.cat([t.unsqueeze(dim) for t in ts], dim)


def where(condition, input, other):
    """Elementwise `input if condition else other`, broadcasting all three (scalars allowed)."""
    return _C.where(condition, input, other)


def _unary(name):
    code = _UN[name]

    def fn(input):
        return _C.unary(code, input)

    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} (float32), differentiable."
    return fn


exp = _unary("exp")
log = _unary("log")
sqrt = _unary("sqrt")
abs = _unary("abs")  # noqa: A001
tanh = _unary("tanh")
sigmoid = _unary("sigmoid")


def clamp(input, min=None, max=None):  # noqa: A002
    """Clamp to [min, max] (either may be None). Gradient flows where min <= x <= max."""
    for name, v in (("min", min), ("max", max)):
        if v is not None and (not isinstance(v, numbers.Real)):
            raise TypeError(f"clamp: {name} must be a number or None, got {type(v).__name__}")
    return _C.clamp(input, min, max)


def maximum(input, other):
    """Elementwise maximum (broadcasting); ties split the gradient."""
    return _C.binary(_BIN["maximum"], input, other)


def minimum(input, other):
    """Elementwise minimum (broadcasting); ties split the gradient."""
    return _C.binary(_BIN["minimum"], input, other)


def _reducer(name):
    code = _RED[name]

    def fn(input, dim=None, keepdim=False):
        return _C.reduce(code, input, _dims(dim, name), builtins.bool(keepdim))

    fn.__name__ = name
    fn.__doc__ = f"{name} over `dim` (int, tuple or None for all), keeping reduced dims if keepdim."
    return fn


sum = _reducer("sum")  # noqa: A001
mean = _reducer("mean")
amax = _reducer("amax")
amin = _reducer("amin")


def argmax(input, dim=None, keepdim=False):
    """Index of the maximum (int64); over the flattened tensor if dim is None. Ties: first index."""
    return _C.argreduce(True, input, dim, builtins.bool(keepdim))


def argmin(input, dim=None, keepdim=False):
    """Index of the minimum (int64); over the flattened tensor if dim is None. Ties: first index."""
    return _C.argreduce(False, input, dim, builtins.bool(keepdim))


def reshape(input, shape):
    """Same data, new shape (one -1 is inferred). Shares memory: all tensors are contiguous."""
    return _C.reshape(input, tuple(shape))


def permute(input, dims):
    """Reorder dims (a copy: mmu tensors are always contiguous)."""
    return _C.permute(input, tuple(dims))


def transpose(input, dim0, dim1):
    """Swap two dims (a copy)."""
    input = _as_tensor(input, "transpose")
    nd = builtins.max(input.ndim, 1)
    for d in (dim0, dim1):
        if not -nd <= d < nd:
            raise IndexError(f"transpose: dim {d} is out of range for a tensor of shape {input.shape}")
    if input.ndim < 2:
        return input
    perm = list(range(input.ndim))
    perm[dim0 % nd], perm[dim1 % nd] = perm[dim1 % nd], perm[dim0 % nd]
    return _C.permute(input, tuple(perm))


def gather(input, dim, index):
    """torch.gather: out[i][j] = input[index[i][j]][j] for dim 0 (index int64, input's ndim)."""
    return _C.gather(input, int(dim), index)


def index_select(input, dim, index):
    """Select entries along dim by a 1-D int64 index."""
    return _C.index_select(input, int(dim), index)


def masked_fill(input, mask, value):
    """Copy of input with `value` where the bool mask (broadcastable) is True."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"masked_fill: value must be a number, got {type(value).__name__}")
    input, mask = _as_tensor(input, "masked_fill"), _as_tensor(mask, "masked_fill", "mask")
    if mask.ndim > input.ndim or builtins.any(m != 1 and m != x for m, x in
                                               zip(reversed(mask.shape), reversed(input.shape))):
        # a mask larger than input broadcasts the result, like torch's out-of-place masked_fill
        try:
            shape = np.broadcast_shapes(tuple(input.shape), tuple(mask.shape))
        except ValueError:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} cannot be broadcast with "
                             f"input of shape {input.shape}") from None
        input = _C.expand(input, shape)
    return _C.masked_fill(input, mask, float(value))


# ----------------------------------------------------------- Tensor methods
def _repr(self):
    arr = self.numpy()
    body = np.array2string(arr, separator=", ", prefix="tensor(", threshold=200, edgeitems=3,
                           precision=4)
    extras = []
    if self.dtype != float32:
        extras.append(f"dtype=mmu.{self.dtype}")
    if self.grad_fn is not None:
        extras.append(f"grad_fn=<{self.grad_fn}>")
    elif self.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"


def _scalar_or_tensor(x):
    return x if isinstance(x, (Tensor, numbers.Number)) else _as_tensor(x, "arithmetic", "other")


def _binop(name, reverse=False):
    code = _BIN[name]
    if reverse:
        def op(self, other):
            if not isinstance(other, (Tensor, numbers.Number, np.ndarray, list, tuple)):
                return NotImplemented
            return _C.binary(code, other, self)
    else:
        def op(self, other):
            if not isinstance(other, (Tensor, numbers.Number, np.ndarray, list, tuple)):
                return NotImplemented
            return _C.binary(code, self, other)
    return op


def _pow(self, exponent):
    if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real):
        raise TypeError("pow: the exponent must be a Python number (tensor ** tensor is not supported)")
    return _C.pow(self, float(exponent))


def _rpow(self, base):
    if not isinstance(base, numbers.Real):
        return NotImplemented
    # base ** t = exp(t * log(base))
    import math
    return _C.unary(_UN["exp"], _C.binary(_BIN["mul"], self, math.log(base)))


def _invert(self):
    if self.dtype != bool:
        raise TypeError(f"~: only bool tensors can be inverted, got {self.dtype}")
    return _C.logical_not(self)


class IndexTypeError(IndexError, TypeError):
    """An index of the wrong type: NumPy and torch raise IndexError, Python's
    convention is TypeError; this is both, so either `except` catches it."""


def _normalize_index(self, idx):
    """Basic indexing -> (start, step, length) per dim, dims to drop, dims to insert."""
    if not isinstance(idx, tuple):
        idx = (idx,)
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
        if t.dtype != int64:
            raise IndexTypeError(f"index: tensors used as indices must be int64 or bool, got {t.dtype}")
        if self.ndim == 0:
            raise IndexError("index: too many indices for a 0-d tensor")
        a, n = t.numpy(), self.shape[0]
        if (a < 0).any():  # negative indices count from the end (torch, NumPy); index_select rejects them
            bad = a[(a < -n) | (a >= n)]
            if bad.size:
                raise IndexError(f"index: index {int(bad.flat[0])} is out of bounds for dim 0 with size {n} "
                                 f"(tensor of shape {self.shape})")
            t = _C.tensor(np.where(a < 0, a + n, a), _INT, False)
        flat = _C.index_select(self, 0, t.reshape(-1)) if t.ndim != 1 else _C.index_select(self, 0, t)
        if t.ndim != 1:
            flat = flat.reshape(tuple(t.shape) + tuple(self.shape[1:]))
        return flat
    starts, steps, lengths, out_shape = _normalize_index(self, idx)
    x = self
    if builtins.any(s != 0 or st != 1 or ln != sz
                    for s, st, ln, sz in zip(starts, steps, lengths, self.shape)):
        x = _C.slice(self, tuple(starts), tuple(steps), tuple(lengths))
    if tuple(out_shape) != x.shape:
        x = _C.reshape(x, tuple(out_shape))
    return x


def _setitem(self, idx, value):
    if self.requires_grad or self.grad_fn is not None:
        raise RuntimeError("index assignment: in-place writes into a tensor that requires grad would "
                           "corrupt autograd; use masked_fill / where, or write to .detach()")
    if isinstance(idx, Tensor):
        idx = idx.numpy()
    self.numpy()[idx] = np.asarray(value)


def _reshape_m(self, *shape):
    """t.reshape(2, 3) or t.reshape((2, 3)); one -1 is inferred. Shares memory."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return _C.reshape(self, shape)


def _permute_m(self, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return _C.permute(self, dims)


def _flatten(self, start_dim=0, end_dim=-1):
    nd = self.ndim
    if nd == 0:
        return _C.reshape(self, (1,))
    if not (-nd <= start_dim < nd and -nd <= end_dim < nd):
        raise IndexError(f"flatten: dims ({start_dim}, {end_dim}) out of range for a tensor of shape {self.shape}")
    s, e = start_dim % nd, end_dim % nd
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} (shape {self.shape})")
    shape = self.shape[:s] + (-1,) + self.shape[e + 1:]
    if 0 in self.shape:
        n = 1
        for v in self.shape[s:e + 1]:
            n *= v
        shape = self.shape[:s] + (n,) + self.shape[e + 1:]
    return _C.reshape(self, shape)


def _unsqueeze(self, dim):
    nd = self.ndim + 1
    if not -nd <= dim < nd:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of shape {self.shape}")
    dim %= nd
    return _C.reshape(self, self.shape[:dim] + (1,) + self.shape[dim:])


def _squeeze(self, dim=None):
    if dim is None:
        return _C.reshape(self, tuple(s for s in self.shape if s != 1))
    dims = _dims(dim, "squeeze")
    nd = builtins.max(self.ndim, 1)
    for d in dims:
        if not -nd <= d < nd:
            raise IndexError(f"squeeze: dim {d} is out of range for a tensor of shape {self.shape}")
    dims = {d % nd for d in dims}
    return _C.reshape(self, tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1)))


def _expand(self, *sizes):
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    return _C.expand(self, sizes)


def _size_m(self, dim=None):
    if dim is None:
        return self.shape
    nd = builtins.max(self.ndim, 1)
    if not -nd <= dim < nd:
        raise IndexError(f"size: dim {dim} is out of range for a tensor of shape {self.shape}")
    return self.shape[dim]


def _requires_grad_(self, requires_grad=True):
    self.requires_grad = requires_grad
    return self


def _tolist(self):
    return self.numpy().tolist()


def _to(self, dtype):
    return _C.cast(self, _dtype_code(dtype, "to"))


def _iter(self):
    if self.ndim == 0:
        raise TypeError("iteration over a 0-d tensor")
    return (self[i] for i in range(self.shape[0]))


def _bool_value(self):
    if self.numel() != 1:
        raise RuntimeError(f"Boolean value of a tensor with {self.numel()} elements is ambiguous")
    return builtins.bool(self.item())


def _float_value(self):
    return float(self.item())


def _int_value(self):
    return int(self.item())


def _rebuild(array, requires_grad):
    return tensor(array, requires_grad=requires_grad)


def _reduce(self):
    # pickle / copy.deepcopy: the data and the leaf flag (like torch, a graph is not pickled)
    return _rebuild, (self.numpy().copy(), self.requires_grad and self.is_leaf)


def _install():
    m = {
        "__repr__": _repr, "__str__": _repr,
        "__add__": _binop("add"), "__radd__": _binop("add", True),
        "__sub__": _binop("sub"), "__rsub__": _binop("sub", True),
        "__mul__": _binop("mul"), "__rmul__": _binop("mul", True),
        "__truediv__": _binop("div"), "__rtruediv__": _binop("div", True),
        "__matmul__": lambda a, b: _C.matmul(a, b), "__rmatmul__": lambda a, b: _C.matmul(b, a),
        "__pow__": _pow, "__rpow__": _rpow,
        "__neg__": lambda a: _C.unary(_UN["neg"], a),
        "__pos__": lambda a: a,
        "__lt__": _binop("lt"), "__le__": _binop("le"), "__gt__": _binop("gt"), "__ge__": _binop("ge"),
        "__eq__": _binop("eq"), "__ne__": _binop("ne"),
        "__and__": _binop("logical_and"), "__or__": _binop("logical_or"), "__xor__": _binop("logical_xor"),
        "__rand__": _binop("logical_and", True), "__ror__": _binop("logical_or", True),
        "__invert__": _invert,
        "__getitem__": _getitem, "__setitem__": _setitem, "__iter__": _iter,
        "__bool__": _bool_value, "__float__": _float_value, "__int__": _int_value,
        "__hash__": object.__hash__, "__reduce__": _reduce,
        # NumPy must hand `ndarray (op) Tensor` back to us instead of converting the tensor
        "__array_ufunc__": None, "__array_priority__": 1000,
        "sum": sum, "mean": mean, "amax": amax, "amin": amin, "argmax": argmax, "argmin": argmin,
        "reshape": _reshape_m, "view": _reshape_m, "permute": _permute_m, "transpose": transpose,
        "contiguous": lambda self: self, "flatten": _flatten, "unsqueeze": _unsqueeze,
        "squeeze": _squeeze, "expand": _expand, "masked_fill": masked_fill, "gather": gather,
        "index_select": index_select, "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "tanh": tanh,
        "sigmoid": sigmoid, "relu": lambda self: _C.unary(_UN["relu"], self), "clamp": clamp,
        "pow": _pow, "matmul": matmul, "size": _size_m, "requires_grad_": _requires_grad_,
        "tolist": _tolist, "to": _to, "float": lambda self: _to(self, float32),
        "long": lambda self: _to(self, int64), "bool": lambda self: _to(self, bool),
        "dim": lambda self: self.ndim,
        "t": lambda self: transpose(self, 0, 1) if self.ndim == 2 else self,
        "T": property(lambda self: permute(self, tuple(reversed(range(self.ndim))))),
    }
    for name, fn in m.items():
        if callable(fn) and not isinstance(fn, property) and fn.__doc__ is None and name in globals():
            fn.__doc__ = globals()[name].__doc__
        setattr(Tensor, name, fn)


_install()
