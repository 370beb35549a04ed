"""Argument helpers shared by the layer modules of mmu.nn (layers, conv, norm, activation,
pooling, attention, transformer)."""
from .._args import check_real, is_int
from ..tensor import zeros as _zeros
from .parameter import Parameter


def _param(*shape):
    """An uninitialised (zero) float32 Parameter; reset_parameters fills it."""
    return Parameter(_zeros(*shape))


def _int(v, name, cls, minimum=None):
    if not is_int(v):
        raise TypeError(f"{cls}: {name} must be an int, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{cls}: {name} must be >= {minimum}, got {v}")
    if v > 2 ** 59:  # no buffer (and no int64 product of sizes) holds that many
        raise ValueError(f"{cls}: {name} {v} is too large")
    return int(v)


def _real(v, name, cls):
    return check_real(v, cls, name)


def _ntuple(v, n, name, cls, minimum=None):
    """An int or a sequence of n ints -> a tuple of n ints (torch's _pair/_triple)."""
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ValueError(f"{cls}: {name} must be an int or {n} ints, got {tuple(v)}")
        return tuple(_int(x, name, cls, minimum) for x in v)
    return (_int(v, name, cls, minimum),) * n


def _named_errors(cls):
    """Decorate __init__/forward of a layer built from other layers: an error raised inside a part
    (Attention, LayerNorm, matmul, ...) is re-raised with the layer's own name in front, so the
    message names what the user called."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (TypeError, ValueError, IndexError, RuntimeError) as e:
                msg = str(e)
                if msg.startswith(cls) or type(e) not in (TypeError, ValueError, IndexError, RuntimeError):
                    raise
                raise type(e)(f"{cls}: {msg}") from None
        return inner
    return wrap
