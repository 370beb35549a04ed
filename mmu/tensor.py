"""Tensor creation, the functions on `mmu` (matmul, cat, where, ...) and the
methods of `mmu.Tensor`.

`mmu.Tensor` is the C type of mmu._C; the methods below are thin documented
wrappers attached to it at import. They normalise arguments (dim as an int or
a tuple, keyword defaults, Python scalars) and call one C entry point each;
the C side validates shapes and dtypes and raises with the op's name.
"""
import builtins
import math
import numbers

import numpy as np

from . import _C
from ._C import Tensor
from ._args import flag as _flag, int_arg as _int_arg, is_int as _is_int, is_real as _is_real
from .autograd import is_grad_enabled

float32 = np.dtype("float32")
int64 = np.dtype("int64")
bool = np.dtype("bool")  # noqa: A001 (torch's name)

# dtype and op codes, exported by the C core (csrc/python/bind_core.c) rather than mirrored here
_CODES = {np.dtype(name): code for name, code in _C.DTYPES.items()}
_FLOAT, _INT, _BOOL = _C.DTYPES["float32"], _C.DTYPES["int64"], _C.DTYPES["bool"]
_BIN = _C.BINARY_OPS
_UN = _C.UNARY_OPS
_RED = _C.REDUCE_OPS
_FLT_MAX = float(np.finfo(np.float32).max)


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
    """zeros(2, 3) and zeros((2, 3)) both mean shape (2, 3). Sizes that are not ints, negative, or
    too large for any buffer (2**62 bytes) raise naming op, before the C core sees them."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out, numel = [], 1
    for s in size:
        if isinstance(s, Tensor) and s.ndim == 0 and s.dtype == int64:
            s = int(s.item())
        if not isinstance(s, numbers.Integral) or isinstance(s, builtins.bool):
            raise TypeError(f"{op}: size must be ints, got {size!r:.80}")
        if s < 0:
            raise ValueError(f"{op}: negative dimension {s} in size {tuple(size)}")
        if s > 2 ** 62:  # checked per dim too: a 0 elsewhere makes the product small, not the dim
            raise ValueError(f"{op}: size {tuple(size)!r:.80} is too large (dimension {s})")
        out.append(int(s))
        numel *= int(s)
    if len(out) > 6:
        raise ValueError(f"{op}: size {tuple(out)} has {len(out)} dims; mmu tensors have at most 6")
    if numel > 2 ** 59:
        raise ValueError(f"{op}: size {tuple(out)} is too large ({numel} elements)")
    return tuple(out)


def _dims(dim, op):
    if dim is None:
        return None
    if isinstance(dim, numbers.Integral) and not isinstance(dim, builtins.bool):
        dim = (dim,)
    if not isinstance(dim, (tuple, list)) or not builtins.all(_is_int(d) for d in dim):
        raise TypeError(f"{op}: dim must be an int, a tuple of ints or None, got {dim!r:.60}")
    for d in dim:
        if not -2 ** 63 <= d < 2 ** 63:  # (as any dim past 6 is: the C side says so with the shape)
            raise IndexError(f"{op}: dim {d} is out of range")
    return tuple(int(d) for d in dim)


def _wrap_dim(dim, ndim, op, shape):
    """dim in [-n, n) -> [0, n), n = max(ndim, 1) (a 0-d tensor takes dim 0 / -1, as in torch)."""
    dim = _int_arg(dim, op, "dim")
    n = builtins.max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor of shape {shape} (expected [{-n}, {n - 1}])")
    return dim % n


def _float_only(x, op, arg="input"):
    if x.dtype != float32:
        raise TypeError(f"{op}: {arg} must be float32, got {x.dtype} (use .float())")


def _as_tensor(x, op, arg="input"):
    if isinstance(x, Tensor):
        return x
    if x is None or isinstance(x, (str, bytes, dict)):
        raise TypeError(f"{op}: {arg} must be a Tensor or a numeric array, got {type(x).__name__}")
    try:
        return _C.tensor(x, -1, False)
    except (TypeError, ValueError) as e:  # the converter names itself ("tensor: data ..."); name op
        msg = str(e).removeprefix("tensor: data ").removeprefix("tensor: ")
        raise type(e)(f"{op}: {arg} {msg}") from None


# ----------------------------------------------------------------- creation
def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a COPY of `data` (a NumPy array, list, scalar or Tensor).

    float arrays become float32, integer arrays int64, bool stays bool;
    `dtype` forces one of mmu.float32 / mmu.int64 / mmu.bool."""
    return _C.tensor(data, _dtype_code(dtype), _flag(requires_grad, "tensor", "requires_grad"))


def _full(size, value, dtype, requires_grad, op):
    if not isinstance(value, numbers.Number) or isinstance(value, complex):
        raise TypeError(f"{op}: fill_value must be a real number, got {type(value).__name__}")
    code = _dtype_code(dtype, op)
    if _flag(requires_grad, op, "requires_grad") and code not in (-1, _FLOAT):
        raise TypeError(f"{op}: only float32 tensors can require gradients, dtype is {dtype}")
    v = float(value)
    if code in (-1, _FLOAT) and not math.isinf(v) and builtins.abs(v) > _FLT_MAX:
        raise ValueError(f"{op}: fill_value {value} overflows float32 (torch raises too)")
    if code == _INT and not (math.isfinite(v) and -2 ** 63 <= value < 2 ** 63):
        raise ValueError(f"{op}: fill_value {value} does not fit in int64")
    t = _C.full(size, code if code >= 0 else _FLOAT, float(value))
    if requires_grad:
        t.requires_grad = True
    return t


def zeros(*size, dtype=None, requires_grad=False):
    """Tensor of zeros; `zeros(2, 3)` or `zeros((2, 3))`."""
    return _full(_size(size, "zeros"), 0.0, dtype, requires_grad, "zeros")


def ones(*size, dtype=None, requires_grad=False):
    """A tensor of ones of shape size (ones(2, 3) or ones((2, 3))), dtype float32 unless given
    (mmu.float32, mmu.int64 or mmu.bool); requires_grad makes it a leaf that records gradients."""
    return _full(_size(size, "ones"), 1.0, dtype, requires_grad, "ones")


def full(size, fill_value, dtype=None, requires_grad=False):
    """Tensor filled with `fill_value` (dtype inferred from it when not given)."""
    if dtype is None:
        dtype = bool if isinstance(fill_value, builtins.bool) else int64 if isinstance(fill_value, numbers.Integral) else float32
    if isinstance(size, numbers.Integral):
        size = (size,)
    elif isinstance(size, (tuple, list)):
        size = tuple(size)
    else:
        raise TypeError(f"full: size must be an int or a tuple of ints, got {type(size).__name__}")
    return _full(_size(size, "full"), fill_value, dtype, requires_grad, "full")


def zeros_like(t, dtype=None, requires_grad=False):
    """Zeros with t's shape (and dtype unless given)."""
    t = _as_tensor(t, "zeros_like")
    return _full(t.shape, 0.0, t.dtype if dtype is None else dtype, requires_grad, "zeros_like")


def ones_like(t, dtype=None, requires_grad=False):
    """Ones with t's shape (and dtype unless given)."""
    t = _as_tensor(t, "ones_like")
    return _full(t.shape, 1.0, t.dtype if dtype is None else dtype, requires_grad, "ones_like")


def randn(*size, generator=None, requires_grad=False):
    """Standard normal float32 samples from mmu's seeded counter-based RNG (or from `generator`, an mmu.Generator)."""
    t = _C.random(_size(size, "randn"), True, generator)
    if _flag(requires_grad, "randn", "requires_grad"):
        t.requires_grad = True
    return t


def rand(*size, generator=None, requires_grad=False):
    """Uniform [0, 1) float32 samples from mmu's seeded counter-based RNG (or from `generator`, an mmu.Generator)."""
    t = _C.random(_size(size, "rand"), False, generator)
    if _flag(requires_grad, "rand", "requires_grad"):
        t.requires_grad = True
    return t


def arange(start, end=None, step=1, dtype=None):
    """Values start, start+step, ... < end (int64 if all arguments are ints, else float32)."""
    if end is None:
        start, end = 0, start
    for name, v in (("start", start), ("end", end), ("step", step)):
        if not isinstance(v, numbers.Real):
            raise TypeError(f"arange: {name} must be a number, got {type(v).__name__}")
        if not math.isfinite(v):  # (the count would be NaN or inf; torch: "unsupported range")
            raise ValueError(f"arange: {name} must be finite, got {v}")
    all_int = builtins.all(isinstance(v, numbers.Integral) for v in (start, end, step))
    # Python ints and floats from here (NumPy int64 scalars would overflow in (end - start) * step)
    start, end, step = (int(v) if isinstance(v, numbers.Integral) else float(v) for v in (start, end, step))
    if dtype is None:
        code = _INT if all_int else _FLOAT
    else:
        code = _dtype_code(dtype, "arange")
        if code == _BOOL:
            raise TypeError("arange: dtype bool is not supported (use float32 or int64)")
    if (end - start) * step < 0:
        raise ValueError(f"arange: end ({end}) must be reachable from start ({start}) by step ({step})")
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


# ---------------------------------------------------------------- promotion
# torch's type promotion for the three dtypes: bool < int64 < float32, where a
# Python float makes integer tensors float32 and a Python int keeps them int64.
# Integer and bool tensors never require grad, so their arithmetic is done by
# NumPy on zero-copy views; float work goes to the C core.
def _kind(x):
    if isinstance(x, Tensor):
        return {float32: "f", int64: "i", bool: "b"}[x.dtype]
    if isinstance(x, builtins.bool) or isinstance(x, np.bool_):
        return "b"
    if isinstance(x, numbers.Integral):
        return "i"
    return "f"


def _float(x):
    return _C.cast(x, _FLOAT) if isinstance(x, Tensor) and x.dtype != float32 else x


def _np(x):
    return x.numpy() if isinstance(x, Tensor) else x


def _operand(x, op):
    """Tensors and Python numbers pass; arrays and lists become tensors; anything else: None."""
    if isinstance(x, (Tensor, numbers.Number)):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        return _as_tensor(x, op, "other")
    return None


_NP_BINARY = dict(add=np.add, sub=np.subtract, mul=np.multiply, maximum=np.maximum, minimum=np.minimum,
                  logical_and=np.logical_and, logical_or=np.logical_or, logical_xor=np.logical_xor,
                  floordiv=np.floor_divide, mod=np.remainder, pow=np.power)


class IntegerDivisionByZero(ZeroDivisionError, RuntimeError):
    """// or % of integer tensors by zero: a ZeroDivisionError (Python's name) that is also the
    RuntimeError torch raises, so either `except` catches it."""


def _int64_overflow(a, b):
    """A Python int outside int64 meeting an integer operand: NumPy 2 raises OverflowError there,
    NumPy 1.x makes an object array; both become the same ValueError."""
    for v, other in ((a, b), (b, a)):
        if isinstance(v, int) and not isinstance(v, builtins.bool) and not -2 ** 63 <= v < 2 ** 63:
            if isinstance(other, (int, np.integer)) or np.issubdtype(np.asarray(_np(other)).dtype, np.integer) \
                    or np.asarray(_np(other)).dtype == np.bool_:
                return True
    return False


def _numpy_binary(name, a, b):
    if _int64_overflow(a, b):
        raise ValueError(f"{name}: a Python int operand does not fit in int64")
    with np.errstate(divide="raise"):
        try:
            return tensor(_NP_BINARY[name](_np(a), _np(b)))
        except FloatingPointError:
            raise IntegerDivisionByZero(f"{name}: integer division by zero") from None
        except ValueError as e:  # NumPy's broadcast error names no op
            raise ValueError(f"{name}: shapes {np.shape(_np(a))} and {np.shape(_np(b))} cannot be broadcast "
                             f"together ({e})") from None
        except OverflowError:  # a Python int past int64 meets an integer tensor
            raise ValueError(f"{name}: a Python int operand does not fit in int64") from None
        except TypeError as e:  # e.g. a complex operand
            raise TypeError(f"{name}: unsupported operands ({e})") from None


def _binary(name, a, b):
    """a (op) b with broadcasting and promotion; a or b may be a Python number."""
    ka, kb = _kind(a), _kind(b)
    if name in ("logical_and", "logical_or", "logical_xor"):
        if "f" in (ka, kb):
            raise TypeError(f"{name}: not defined for float32 tensors (use bool masks)")
        if ka == kb == "b":
            return _C.binary(_BIN[name], a, b)
        return _numpy_binary(name, a, b)  # bitwise on int64, like torch
    if name in ("lt", "le", "gt", "ge", "eq", "ne"):
        if "f" in (ka, kb):
            a, b = _float(a), _float(b)
        elif ka != kb:  # bool vs int64: compare as int64
            a = _C.cast(a, _INT) if isinstance(a, Tensor) and ka == "b" else a
            b = _C.cast(b, _INT) if isinstance(b, Tensor) and kb == "b" else b
        return _C.binary(_BIN[name], a, b)
    if name == "div" or "f" in (ka, kb):  # true division always gives float, as in torch
        return _C.binary(_BIN[name], _float(a), _float(b))
    if name == "sub" and "b" in (ka, kb) and ka == kb:
        raise TypeError("sub: subtraction of bool tensors is not supported (use ^ or logical_xor)")
    return _numpy_binary(name, a, b)


# ---------------------------------------------------------------- functions
def matmul(input, other):
    """Matrix product with torch.matmul's rules (1-D, 2-D, batched with broadcast batch dims)."""
    return _C.matmul(input, other)


def cat(tensors, dim=0):
    """Concatenate tensors (same shape except along dim)."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat: tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    return _C.cat(_promote_all(tensors, "cat"), _int_arg(dim, "cat", "dim"))


def _promote_all(tensors, op):
    """Tensors of mixed dtypes -> the common one (float32 > int64 > bool), like torch.cat."""
    ts = [_as_tensor(t, op, "tensors") for t in tensors]
    kinds = {_kind(t) for t in ts}
    if len(kinds) > 1:
        code = _FLOAT if "f" in kinds else _INT
        ts = [_C.cast(t, code) for t in ts]
    return ts


def stack(tensors, dim=0):
    """Stack equally shaped tensors along a new dim."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"stack: tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    ts = _promote_all(tensors, "stack")
    shape = ts[0].shape
    for t in ts:
        if t.shape != shape:
            raise ValueError(f"stack: all tensors must have the same shape, got {shape} and {t.shape}")
    nd = len(shape) + 1
    if nd > 6:
        raise ValueError(f"stack: the result would have {nd} dims; mmu tensors have at most 6")
    dim = _wrap_dim(dim, nd, "stack", shape + (1,))
    return _C.cat([t.unsqueeze(dim) for t in ts], dim)


def where(condition, input, other):
    """Elementwise `input if condition else other`, broadcasting all three (scalars allowed)."""
    if not isinstance(input, (Tensor, numbers.Number)):
        input = _as_tensor(input, "where")
    if not isinstance(other, (Tensor, numbers.Number)):
        other = _as_tensor(other, "where", "other")
    if _kind(input) != _kind(other) and "f" in (_kind(input), _kind(other)):
        input, other = _float(input), _float(other)
    return _C.where(condition, input, other)


def _unary(name):
    code = _UN[name]

    def fn(input):
        return _C.unary(code, input)

    fn.__name__ = fn.__qualname__ = name  # Python's own argument errors then name the op
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
    return _binary("maximum", _as_tensor(input, "maximum"), other)


def minimum(input, other):
    """Elementwise minimum (broadcasting); ties split the gradient."""
    return _binary("minimum", _as_tensor(input, "minimum"), other)


def _reducer(name):
    code = _RED[name]

    def fn(input, dim=None, keepdim=False):
        if isinstance(input, Tensor) and input.dtype != float32:
            return _int_reduce(name, input, _dims(dim, name), _flag(keepdim, name, "keepdim"))
        return _C.reduce(code, input, _dims(dim, name), _flag(keepdim, name, "keepdim"))

    fn.__name__ = fn.__qualname__ = name  # Python's own argument errors then name the op
    fn.__doc__ = f"{name} over `dim` (int, tuple or None for all), keeping reduced dims if keepdim."
    return fn


def _int_reduce(name, x, dims, keepdim):
    """sum/amax/amin of int64 or bool tensors (never differentiable): NumPy, int64 result like torch."""
    if name == "mean":
        raise TypeError(f"mean: input must be float32, got {x.dtype} (use .float().mean())")
    axis = None if dims is None else tuple(_wrap_dim(d, x.ndim, name, x.shape) for d in dims)
    if x.ndim == 0:
        axis = None
    a = x.numpy().astype(np.int64) if name == "sum" else x.numpy()
    if name != "sum" and a.size == 0:
        raise ValueError(f"{name}: cannot reduce an empty tensor of shape {x.shape}")
    f = {"sum": np.sum, "amax": np.amax, "amin": np.amin}[name]
    return tensor(np.asarray(f(a, axis=axis, keepdims=builtins.bool(keepdim))))


sum = _reducer("sum")  # noqa: A001
mean = _reducer("mean")
amax = _reducer("amax")
amin = _reducer("amin")


def argmax(input, dim=None, keepdim=False):
    """Index of the maximum (int64); over the flattened tensor if dim is None. Ties: first index."""
    return _C.argreduce(True, input, dim, _flag(keepdim, "argmax", "keepdim"))


def argmin(input, dim=None, keepdim=False):
    """Index of the minimum (int64); over the flattened tensor if dim is None. Ties: first index."""
    return _C.argreduce(False, input, dim, _flag(keepdim, "argmin", "keepdim"))


def _extremum(name, is_max):
    def fn(input, dim=None, keepdim=False):
        input = _as_tensor(input, name)
        keepdim = _flag(keepdim, name, "keepdim")
        if dim is None:  # the whole tensor: ties share the gradient (torch's max())
            return amax(input) if is_max else amin(input)
        dim = _wrap_dim(dim, input.ndim, name, input.shape)
        idx = _C.argreduce(is_max, input, dim, True)
        values = _C.gather(input, int(dim), idx)  # the gradient goes to the chosen index, as in torch
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return MaxMin(values, idx)
    fn.__name__ = fn.__qualname__ = name  # Python's own argument errors then name the op
    fn.__doc__ = (f"{name}(x) -> the {'largest' if is_max else 'smallest'} value; {name}(x, dim, keepdim) -> "
                  "(values, indices), the first index on ties, gradient to that index.")
    return fn


class MaxMin(tuple):
    """(values, indices) of max/min along a dim, like torch.return_types.max."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


max = _extremum("max", True)  # noqa: A001
min = _extremum("min", False)  # noqa: A001


def var(input, dim=None, correction=1, keepdim=False):
    """Variance over dim (all if None), dividing by N - correction (1: unbiased, torch's default)."""
    return _var(input, dim, correction, keepdim, "var")


def _var(input, dim, correction, keepdim, op):
    input = _as_tensor(input, op)
    _float_only(input, op)
    if not _is_int(correction):
        raise TypeError(f"{op}: correction must be an int, got {type(correction).__name__}")
    correction = int(correction)
    whole = dim is None or input.ndim == 0  # torch's var_backward has a separate rule for these
    dims = _unique_dims(_dims(dim, op), input, op)
    keepdim = _flag(keepdim, op, "keepdim")
    n = input.numel() if dims is None else int(np.prod([input.shape[d] if input.ndim else 1 for d in dims]))
    dof = n - correction
    if dof > 0:
        centered = input - mean(input, dims, keepdim=True)
        return sum(centered * centered, dims, keepdim=keepdim) / dof
    # No degrees of freedom: the value is sum((x - mean)^2) / 0 (inf, NaN for a constant row) and the
    # gradient is torch's var_backward, which drops the mean's term (it sums to zero when dof > 0):
    #   whole reduction: grad · (inf where x != mean, NaN where x == mean), whatever the sign of x - mean;
    #   explicit dims:   grad · 2/dof · (x - mean), so ±inf (NaN at x == mean) for dof == 0 and finite
    #                    for dof < 0.
    # Composed autograd with the mean's term gives inf - inf = NaN everywhere instead.
    centered = input - mean(input, dims, keepdim=True).detach()
    squares = centered * centered
    if whole:
        # d/dx = 1 where x != mean, 0 where x == mean; the division by 0 turns these into inf and NaN
        moving = _C.cast(centered.detach() != 0.0, _FLOAT)
        return sum((input - input.detach()) * moving + squares.detach(), dims, keepdim=keepdim) / 0.0
    value = sum(squares, dims, keepdim=keepdim) / 0.0
    if dof == 0:
        return value
    slope = sum(squares, dims, keepdim=keepdim) / float(dof)  # finite: carries the gradient only
    return value.detach() + (slope - slope.detach())


def _unique_dims(dims, x, op):
    """dims (a tuple; None or () = all, as torch) wrapped into [0, ndim), each at most once."""
    if not dims:
        return tuple(range(x.ndim))
    dims = tuple(_wrap_dim(d, x.ndim, op, x.shape) for d in dims)
    if len(set(dims)) != len(dims):
        raise ValueError(f"{op}: dim {dims} names a dim more than once (tensor of shape {x.shape})")
    return dims


def _sqrt_zero_grad(s):
    """sqrt(s) for s >= 0 whose gradient is 0 (not inf · 0 = NaN) where s == 0: torch's
    subgradient for std and norm at a constant row / the zero vector. The sqrt sees 1 there."""
    zero = s == 0.0
    return where(zero, 0.0, sqrt(where(zero, 1.0, s)))


def std(input, dim=None, correction=1, keepdim=False):
    """Standard deviation sqrt(var(input, dim, correction, keepdim)) over dim (an int, a tuple, or
    None for all): float32 input -> the reduced shape (keepdim keeps size-1 dims); correction=1 is
    Bessel's (unbiased), 0 the population value. The gradient of a constant row is 0, as in torch."""
    return _sqrt_zero_grad(_var(input, dim, correction, keepdim, "std"))


def logsumexp(input, dim, keepdim=False):
    """log(sum(exp(x))) along dim, computed stably (shifted by the max)."""
    input = _as_tensor(input, "logsumexp")
    _float_only(input, "logsumexp")
    keepdim = _flag(keepdim, "logsumexp", "keepdim")
    dim = _unique_dims(_dims(dim, "logsumexp"), input, "logsumexp")
    if input.ndim and builtins.any(input.shape[d] == 0 for d in dim):  # log(0) = -inf, as torch
        return sum(input, dim, keepdim) - float("inf")
    m = amax(input, dim, keepdim=True).detach()
    m = where(m.abs() == float("inf"), 0.0, m)  # an all -inf row stays -inf instead of NaN
    out = log(sum(exp(input - m), dim, keepdim=True)) + m
    return out if keepdim else out.squeeze(dim)


def cumsum(input, dim):
    """Running sums along dim (torch.cumsum): out[..., i, ...] = input[..., 0, ...] + ... +
    input[..., i, ...], input's shape. float32 sums in double and is differentiable (the gradient is
    the running sum of the output's gradient taken from the end); int64 and bool input give int64
    (no gradient), as torch."""
    input = _as_tensor(input, "cumsum")
    dim = _int_arg(dim, "cumsum", "dim")
    if input.dtype != float32:
        d = _wrap_dim(dim, input.ndim, "cumsum", input.shape)
        a = input.numpy().astype(np.int64)
        return tensor(a.copy() if input.ndim == 0 else np.cumsum(a, axis=d))
    return _C.cumsum(input, dim, False)


def norm(input, p=2, dim=None, keepdim=False):
    """Vector p-norm over dim (all if None): (sum |x|^p)^(1/p) for p > 0 ('fro' = 2), max |x| for
    inf, min |x| for -inf, the count of non-zeros for 0. As in torch, the gradient is 0 at x = 0
    (elementwise, and for a zero vector), never NaN."""
    input = _as_tensor(input, "norm")
    _float_only(input, "norm")
    keepdim = _flag(keepdim, "norm", "keepdim")
    dim = None if dim is None else _unique_dims(_dims(dim, "norm"), input, "norm")
    if p is None or (isinstance(p, str) and p == "fro"):  # torch: None and 'fro' are the 2-norm
        p = 2
    if not isinstance(p, str) and not _is_real(p):
        raise TypeError(f"norm: p must be a number or 'fro', got {type(p).__name__}")
    if isinstance(p, str) or p != p or (p < 0 and p != -float("inf")):
        raise ValueError(f"norm: p must be a number > 0, 0, inf, -inf or 'fro', got {p!r}")
    if builtins.abs(p) == float("inf"):
        reduced = input.shape if dim is None or input.ndim == 0 else [input.shape[d] for d in dim]  # 0-d: dim 0/-1
        if 0 in reduced:  # max / min of nothing has no value (torch raises too)
            raise ValueError(f"norm: the {p} norm of an empty reduction is not defined (input of shape "
                             f"{input.shape}, dim {dim})")
    if p == float("inf"):
        return amax(abs(input), dim, keepdim)
    if p == -float("inf"):
        return amin(abs(input), dim, keepdim)
    if p == 0:  # the count; differentiable with a zero gradient, like torch's
        count = _C.cast(input.detach() != 0.0, _FLOAT)
        return sum(where(zeros_like(input, dtype=bool), input, count), dim, keepdim)
    if p == 1:
        return sum(abs(input), dim, keepdim)
    if p == 2:
        return _sqrt_zero_grad(sum(input * input, dim, keepdim))
    a = abs(input)
    zero = a == 0.0
    s = sum(where(zero, 0.0, where(zero, 1.0, a) ** float(p)), dim, keepdim)  # 0^p with a 0 gradient
    zero = s == 0.0
    return where(zero, 0.0, where(zero, 1.0, s) ** (1.0 / float(p)))


def split(input, split_size_or_sections, dim=0):
    """Pieces of split_size along dim (the last may be smaller), or of the given section sizes."""
    input = _as_tensor(input, "split")
    if input.ndim == 0:
        raise IndexError("split: a 0-d tensor cannot be split")
    dim = _wrap_dim(dim, input.ndim, "split", input.shape)
    size = input.shape[dim]
    if isinstance(split_size_or_sections, numbers.Integral):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sections = [builtins.min(step, size - i) for i in range(0, size, step)] or [0]
    else:
        if not isinstance(split_size_or_sections, (tuple, list)) or \
                not builtins.all(_is_int(v) and v >= 0 for v in split_size_or_sections):
            raise TypeError(f"split: split_size_or_sections must be an int or a list of non-negative ints, "
                            f"got {split_size_or_sections!r:.60}")
        sections = [int(v) for v in split_size_or_sections]
        if builtins.sum(sections) != size:
            raise ValueError(f"split: sections {sections} do not add up to {size} (dim {dim} of {input.shape})")
    pieces, start = [], 0
    for n in sections:
        index = [slice(None)] * input.ndim
        index[dim] = slice(start, start + n)
        pieces.append(input[tuple(index)])
        start += n
    return tuple(pieces)


def chunk(input, chunks, dim=0):
    """`chunks` pieces along dim, as equal as possible (torch's rule: ceil(size / chunks) each)."""
    input = _as_tensor(input, "chunk")
    if not isinstance(chunks, numbers.Integral) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    if input.ndim == 0:
        raise IndexError("chunk: a 0-d tensor cannot be chunked")
    dim = _wrap_dim(dim, input.ndim, "chunk", input.shape)
    size = input.shape[dim]
    return split(input, builtins.max(1, -(-size // chunks)), dim)


def _triangle(name, upper):
    def fn(input, diagonal=0):
        input = _as_tensor(input, name)
        diagonal = _int_arg(diagonal, name, "diagonal")
        if input.ndim < 2:
            raise ValueError(f"{name}: input must have at least 2 dims, got shape {input.shape}")
        r, c = input.shape[-2:]
        rows, cols = np.arange(r)[:, None], np.arange(c)[None, :]
        keep = cols - rows >= diagonal if upper else cols - rows <= diagonal
        return masked_fill(input, tensor(~keep), 0)
    fn.__name__ = fn.__qualname__ = name  # Python's own argument errors then name the op
    fn.__doc__ = (f"Zero the elements {'below' if upper else 'above'} the given diagonal of the last two dims "
                  "(causal masks: tril).")
    return fn


tril = _triangle("tril", False)
triu = _triangle("triu", True)


def _int_tuple(v, op, name):
    if _is_int(v):
        return (int(v),)
    if not isinstance(v, (tuple, list)):
        raise TypeError(f"{op}: {name} must be a tuple of ints, got {type(v).__name__}")
    return tuple(v)


def reshape(input, shape):
    """Same data, new shape (one -1 is inferred). Shares memory: all tensors are contiguous."""
    return _C.reshape(input, _int_tuple(shape, "reshape", "shape"))


def permute(input, dims):
    """Reorder dims (a copy: mmu tensors are always contiguous)."""
    return _C.permute(input, _int_tuple(dims, "permute", "dims"))


def transpose(input, dim0, dim1):
    """input with dims dim0 and dim1 swapped (a copy; negative dims allowed), differentiable."""
    input = _as_tensor(input, "transpose")
    dim0, dim1 = (_wrap_dim(d, input.ndim, "transpose", input.shape) for d in (dim0, dim1))
    if input.ndim < 2:
        return input
    perm = list(range(input.ndim))
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    return _C.permute(input, tuple(perm))


def gather(input, dim, index):
    """torch.gather: out[i][j] = input[index[i][j]][j] for dim 0 (index int64, input's ndim)."""
    return _C.gather(input, _int_arg(dim, "gather", "dim"), index)


def index_select(input, dim, index):
    """Select entries along dim by a 1-D int64 index."""
    return _C.index_select(input, _int_arg(dim, "index_select", "dim"), index)


def masked_fill(input, mask, value):
    """Copy of input with `value` where the bool mask (broadcastable) is True."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.ndim == 0 and value.requires_grad:
        # the value is differentiable too: torch sends it the sum of the filled positions' grads
        return where(mask, value, input)
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


def _binop(name, reverse=False):
    def op(self, other):
        other = _operand(other, name)
        if other is None:
            return NotImplemented
        return _binary(name, other, self) if reverse else _binary(name, self, other)
    op.__name__ = op.__qualname__ = name
    return op


def _needs_grad(*xs):
    return builtins.any(isinstance(x, Tensor) and x.requires_grad for x in xs)


def _int_only_op(name, reverse=False):
    """// and %: NumPy's (Python's) semantics; not differentiable in mmu."""
    def op(self, other):
        other = _operand(other, name)
        if other is None:
            return NotImplemented
        a, b = (other, self) if reverse else (self, other)
        if _needs_grad(a, b) and is_grad_enabled():
            raise TypeError(f"{name}: not differentiable in mmu; use it on detached tensors or under no_grad")
        if "f" in (_kind(a), _kind(b)):
            a, b = _float(a), _float(b)
        return _numpy_binary(name, a, b)
    op.__name__ = op.__qualname__ = name
    return op


def _neg(self):
    if self.dtype == float32:
        return _C.unary(_UN["neg"], self)
    if self.dtype == bool:
        raise TypeError("neg: negation of a bool tensor is not supported; use ~ (logical not)")
    return tensor(-self.numpy())


def _inplace(name):
    """a += b, a.add_(b), ...: write the result into a's own memory, so every
    reference to a sees it (the PyTorch optimizer idiom `p -= lr * p.grad` under
    no_grad). With grad recording on, a tensor in the graph cannot be written in
    place (its old value may be saved for the backward): a leaf that requires
    grad raises like torch; anything else gets the out-of-place result."""
    def op(self, other, *, alpha=None):
        if alpha is not None:
            if not _is_real(alpha):
                raise TypeError(f"{name}_: alpha must be a number, got {type(alpha).__name__}")
            other = _operand(other, name)
            if other is None:
                raise TypeError(f"{name}_: other must be a Tensor or a number")
            if _int64_overflow(other, alpha):  # NumPy 1.x would give a float instead of raising
                raise ValueError(f"{name}_: other * alpha: a Python int operand does not fit in int64")
            try:
                other = other * alpha
            except (ValueError, TypeError, OverflowError) as e:
                kind = TypeError if isinstance(e, TypeError) else ValueError
                raise kind(f"{name}_: other * alpha: {e}") from None
        out = _binary(name, self, other)
        if is_grad_enabled() and (self.requires_grad or _needs_grad(other)):
            if self.is_leaf and self.requires_grad:
                raise RuntimeError(f"{name}_: a leaf tensor that requires grad cannot be modified in place "
                                   "while grad is recorded; wrap the update in `with mmu.no_grad():`")
            return out
        if out.shape != self.shape:
            raise ValueError(f"{name}_: the result has shape {out.shape}, which cannot be written into a "
                             f"tensor of shape {self.shape}")
        if out.dtype != self.dtype:
            raise TypeError(f"{name}_: the result is {out.dtype}, which cannot be written in place into a "
                            f"{self.dtype} tensor")
        self.numpy()[...] = out.numpy()
        self._bump_version()
        return self
    op.__name__ = op.__qualname__ = f"{name}_"
    op.__doc__ = (f"t.{name}_(other, *, alpha=None): t = t {name} (other · alpha), written into t's own memory "
                  f"(other broadcast to t's shape); returns t. {_inplace.__doc__}")
    return op


def _fill_(self, value):
    """t.fill_(value): set every element to value (a number or a one-element tensor) in t's own memory;
    returns t. Refused on a tensor that requires grad while grad is recorded."""
    return _fill(self, value, "fill_")


def _fill(self, value, op):
    if is_grad_enabled() and self.requires_grad:
        raise RuntimeError(f"{op}: a leaf tensor that requires grad cannot be modified in place while grad "
                           "is recorded; wrap it in `with mmu.no_grad():`")
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{op}: value must be a number or a one-element tensor, got shape {value.shape}")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: value must be a number, got {type(value).__name__}")
    _full((), value, self.dtype, False, op)  # the range checks (float32 / int64 overflow)
    self.numpy()[...] = value
    self._bump_version()
    return self


def _copy_(self, src):
    """t.copy_(src): write src (a Tensor or array, broadcast to t's shape) into t's own memory; returns t.
    Refused on a tensor that requires grad while grad is recorded.
    """
    if is_grad_enabled() and self.requires_grad:
        raise RuntimeError("copy_: a leaf tensor that requires grad cannot be modified in place while grad "
                           "is recorded; wrap it in `with mmu.no_grad():`")
    src = _as_tensor(src, "copy_", "src")
    try:
        self.numpy()[...] = np.broadcast_to(src.numpy(), self.shape)
    except ValueError:
        raise ValueError(f"copy_: src of shape {src.shape} cannot be broadcast to {self.shape}") from None
    self._bump_version()
    return self


def _pow(self, exponent):
    """t ** exponent, t.pow(exponent): elementwise power by a Python number (differentiable for float32;
    integer tensors stay integer for integer exponents). Returns a new tensor of t's shape.
    """
    if isinstance(exponent, Tensor):
        raise TypeError("pow: tensor ** tensor is not supported; the exponent must be a Python number")
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    if self.dtype != float32:
        if isinstance(exponent, numbers.Integral) and exponent < 0:
            raise ValueError("pow: integers to negative integer powers are not allowed (as in torch)")
        return _numpy_binary("pow", self.float() if isinstance(exponent, float) else self, exponent)
    return _C.pow(self, float(exponent))


def _rpow(self, base):
    if not isinstance(base, numbers.Real):
        return NotImplemented
    if self.dtype != float32:
        return _numpy_binary("pow", base, self)
    if base > 0:  # base ** t = exp(t · log(base)), differentiable in t
        import math
        return _C.unary(_UN["exp"], _C.binary(_BIN["mul"], self, math.log(base)))
    if self.requires_grad and is_grad_enabled():
        raise ValueError(f"pow: the gradient of {base} ** t is not defined in mmu for a base <= 0")
    with np.errstate(all="ignore"):
        return tensor(np.power(np.float32(base), self.numpy()))


def _invert(self):
    if self.dtype != bool:
        raise TypeError(f"~: only bool tensors can be inverted, got {self.dtype}")
    return _C.logical_not(self)


def _reshape_m(self, *shape):
    """t.reshape(2, 3) or t.reshape((2, 3)); one -1 is inferred. Shares memory."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return _C.reshape(self, shape)


def _permute_m(self, *dims):
    """t.permute(*dims) or t.permute(dims): the dims reordered (a copy); dims is a permutation of
    range(t.ndim), negative dims allowed.
    """
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return _C.permute(self, dims)


def _flatten(self, start_dim=0, end_dim=-1):
    """t.flatten(start_dim=0, end_dim=-1): the dims start_dim..end_dim merged into one (shares memory);
    a 0-d tensor becomes shape (1,).
    """
    nd = self.ndim
    s, e = (_wrap_dim(d, nd, "flatten", self.shape) for d in (start_dim, end_dim))
    if nd == 0:
        return _C.reshape(self, (1,))
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
    """t.unsqueeze(dim): a size-1 dim inserted at dim (-t.ndim-1 <= dim <= t.ndim; shares memory)."""
    nd = self.ndim + 1
    if nd > 6:
        raise ValueError(f"unsqueeze: the result would have {nd} dims; mmu tensors have at most 6")
    dim = _wrap_dim(dim, nd, "unsqueeze", self.shape)
    return _C.reshape(self, self.shape[:dim] + (1,) + self.shape[dim:])


def _squeeze(self, dim=None):
    """t.squeeze(dim=None): the size-1 dims removed (all of them, or those among dim, an int or a tuple;
    shares memory).
    """
    if dim is None:
        return _C.reshape(self, tuple(s for s in self.shape if s != 1))
    dims = _dims(dim, "squeeze")
    dims = {_wrap_dim(d, self.ndim, "squeeze", self.shape) for d in dims}
    return _C.reshape(self, tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1)))


def _expand(self, *sizes):
    """t.expand(*sizes) or t.expand(sizes): t broadcast to sizes by NumPy's rules, -1 keeping a dim
    (a copy; its gradient sums over the broadcast dims).
    """
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    return _C.expand(self, sizes)


def _size_m(self, dim=None):
    """t.size() -> the shape tuple; t.size(dim) -> the size of one dim (negative dims allowed)."""
    if dim is None:
        return self.shape
    if self.ndim == 0:
        raise IndexError(f"size: a 0-d tensor has no dims (dim {dim!r:.40} was asked)")
    return self.shape[_wrap_dim(dim, self.ndim, "size", self.shape)]


def _requires_grad_(self, requires_grad=True):
    """t.requires_grad_(requires_grad=True): set requires_grad on a float32 leaf in place; returns t."""
    self.requires_grad = _flag(requires_grad, "requires_grad_", "requires_grad")
    return self


def _tolist(self):
    """t.tolist(): the values as nested Python lists (a Python number for a 0-d tensor)."""
    return self.numpy().tolist()


def _to(self, dtype):
    """t.to(dtype): a copy converted to dtype (mmu.float32, mmu.int64, mmu.bool or float / int / bool);
    float32 -> float32 keeps the graph.
    """
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
    # pickle / copy.deepcopy: the data and, for a leaf, requires_grad (a graph is not pickled)
    return _rebuild, (self.numpy().copy(), self.requires_grad and self.is_leaf)


def _t(self):
    """t.t(): the transpose of a 2-D tensor (a copy); 0-D and 1-D tensors are returned as they are."""
    if self.ndim > 2:
        raise ValueError(f"t: expects a tensor with <= 2 dims, got shape {self.shape}; use transpose")
    return transpose(self, 0, 1) if self.ndim == 2 else self


def _format(self, spec):
    if not isinstance(spec, str):
        raise TypeError(f"format: the format spec must be a str, got {type(spec).__name__}")
    if self.numel() == 1 and spec:
        return format(self.item(), spec)
    return format(repr(self), spec)


def _index(self):
    if self.dtype == float32 or self.numel() != 1:
        raise TypeError("only one-element integer tensors can be used as an index")
    return int(self.item())


def _install():
    from ._index import _getitem, _setitem  # indexing lives in mmu/_index.py (it imports this module)

    m = {
        "__repr__": _repr, "__str__": _repr,
        "__add__": _binop("add"), "__radd__": _binop("add", True),
        "__sub__": _binop("sub"), "__rsub__": _binop("sub", True),
        "__mul__": _binop("mul"), "__rmul__": _binop("mul", True),
        "__truediv__": _binop("div"), "__rtruediv__": _binop("div", True),
        "__matmul__": lambda a, b: _C.matmul(a, b), "__rmatmul__": lambda a, b: _C.matmul(b, a),
        "__pow__": _pow, "__rpow__": _rpow,
        "__neg__": _neg,
        "__floordiv__": _int_only_op("floordiv"), "__rfloordiv__": _int_only_op("floordiv", True),
        "__mod__": _int_only_op("mod"), "__rmod__": _int_only_op("mod", True),
        "__iadd__": _inplace("add"), "__isub__": _inplace("sub"), "__imul__": _inplace("mul"),
        "__itruediv__": _inplace("div"),
        "add_": _inplace("add"), "sub_": _inplace("sub"), "mul_": _inplace("mul"), "div_": _inplace("div"),
        "zero_": lambda self: _fill(self, 0, "zero_"), "fill_": _fill_, "copy_": _copy_,
        "__format__": _format, "__index__": _index,
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
        "max": max, "min": min, "var": var, "std": std, "logsumexp": logsumexp, "norm": norm,
        "cumsum": cumsum,
        "split": split, "chunk": chunk, "tril": tril, "triu": triu,
        "reshape": _reshape_m, "view": _reshape_m, "permute": _permute_m, "transpose": transpose,
        "contiguous": lambda self: self, "flatten": _flatten, "unsqueeze": _unsqueeze,
        "squeeze": _squeeze, "expand": _expand, "masked_fill": masked_fill, "gather": gather,
        "index_select": index_select, "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "tanh": tanh,
        "sigmoid": sigmoid, "relu": lambda self: _C.unary(_UN["relu"], self), "clamp": clamp,
        "pow": _pow, "matmul": matmul, "size": _size_m, "requires_grad_": _requires_grad_,
        "tolist": _tolist, "to": _to, "float": lambda self: _to(self, float32),
        "long": lambda self: _to(self, int64), "bool": lambda self: _to(self, bool),
        "dim": lambda self: self.ndim,
        "t": _t,
        "T": property(lambda self: permute(self, tuple(reversed(range(self.ndim)))),
                      doc="The tensor with all its dims reversed (a copy): t.permute(t.ndim - 1, ..., 0)."),
    }
    docs = {  # the one-line methods above
        "zero_": "t.zero_(): set every element to 0 in t's own memory; returns t.",
        "contiguous": "t.contiguous(): t itself (mmu tensors are always contiguous).",
        "relu": "t.relu(): max(t, 0), elementwise (differentiable).",
        "float": "t.float(): t converted to float32 (see to).", "long": "t.long(): t converted to int64 (see to).",
        "bool": "t.bool(): t converted to bool (see to).", "dim": "t.dim(): the number of dims (t.ndim).",
        "__matmul__": "a @ b: matmul(a, b).", "__rmatmul__": "b @ a: matmul(b, a).", "__pos__": "+t: t itself.",
    }
    for name, doc in docs.items():
        m[name].__doc__ = doc
    for name, fn in m.items():
        if callable(fn) and not isinstance(fn, property) and fn.__doc__ is None and name in globals():
            fn.__doc__ = globals()[name].__doc__
        if getattr(fn, "__name__", None) in ("<lambda>", "_getitem", "_setitem", "_iter", "_t", "_to", "_flatten",
                                              "_unsqueeze", "_squeeze", "_expand", "_size_m", "_reshape_m",
                                              "_permute_m", "_fill_", "_copy_", "_pow", "_rpow", "_neg", "_invert"):
            fn.__name__ = fn.__qualname__ = name  # Python's own argument errors then name the method
        setattr(Tensor, name, fn)


_install()
