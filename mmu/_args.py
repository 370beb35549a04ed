"""Type predicates shared by the argument checks of mmu.functional (_fn_*.py) and
mmu.nn: Python and NumPy numbers count, bools do not (as torch refuses True for
an int or float argument)."""
import numbers

import numpy as np


def is_int(v):
    """An int (numpy integers too), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v):
    """An int or float (numpy ones too), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def pair(v, op, name):
    """An int or a 1- or 2-tuple of ints -> a 2-tuple (torch's _pair, as the 2-D pooling ops take it);
    TypeError naming op and argument otherwise."""
    if is_int(v):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) in (1, 2) and all(is_int(e) for e in v):
        return (int(v[0]), int(v[-1]))
    raise TypeError(f"{op}: {name} must be an int or a tuple of 1 or 2 ints, got {v!r}")


def check_int(v, op, name):
    """v as an int; TypeError naming op and argument unless it is one (numpy ints too, not a bool)."""
    if not is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    return int(v)


def check_real(v, op, name):
    """v as a float; TypeError naming op and argument unless it is a number (not a bool)."""
    if not is_real(v):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    return float(v)


def flag(v, op, name):
    """A bool argument (keepdim, requires_grad, align_corners, ...): Python or NumPy bools and the
    ints 0 / 1 pass, as bool; anything else (a tensor, a string) is a TypeError naming op and name,
    where bool(v) would take any object, or raise "Boolean value of a tensor ... is ambiguous"."""
    if isinstance(v, (bool, np.bool_)) or (is_int(v) and v in (0, 1)):
        return bool(v)
    raise TypeError(f"{op}: {name} must be a bool, got {_what(v)}")


def int_arg(v, op, name):
    """An int argument (a dim, a size, a diagonal): a Python or NumPy int, or a one-element int64
    tensor (as torch takes them); a TypeError naming op and name otherwise."""
    if is_int(v):
        return int(v)
    if getattr(v, "dtype", None) == np.dtype("int64") and getattr(v, "ndim", None) == 0:
        return int(v.item())
    raise TypeError(f"{op}: {name} must be an int, got {_what(v)}")


def _what(v):
    shape = getattr(v, "shape", None)
    return f"{type(v).__name__} of shape {tuple(shape)}" if shape is not None else f"{type(v).__name__} {v!r:.40}"


def foreign_array(v, op, name, kinds="fiu"):
    """v (a torch tensor, an mmu Tensor or anything array-like) as a NumPy array, for the weight
    converters: no torch import needed (detach, cpu, bfloat16 up to float32, numpy by duck typing).
    TypeError naming op and the key `name` unless its dtype kind is one of `kinds`."""
    if hasattr(v, "detach"):
        v = v.detach()
        if hasattr(v, "cpu"):
            v = v.cpu()
        if hasattr(v, "float") and str(getattr(v, "dtype", "")) == "torch.bfloat16":
            v = v.float()   # NumPy has no bfloat16: torch's .numpy() refuses it
    if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
        v = v.numpy()
    try:
        arr = np.asarray(v)
    except ValueError as e:  # a ragged nested list
        raise ValueError(f"{op}: {name!r} is not a rectangular array ({e})") from None
    if arr.dtype.kind not in kinds:
        raise TypeError(f"{op}: {name!r} is not a numeric tensor (dtype {arr.dtype})")
    return arr
