"""Grad mode. Like torch, it is per thread: `no_grad` in one thread does not
affect another."""
import functools

from . import _C


def is_grad_enabled():
    """True if operations are being recorded for backward in this thread."""
    return _C.is_grad_enabled()


class set_grad_enabled:
    """Set grad mode (usable as a function, a context manager or a decorator)."""

    def __init__(self, mode):
        self.prev = _C.set_grad_enabled(bool(mode))
        self.mode = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self.prev)
        return False


class _GradMode:
    mode = True

    def __enter__(self):
        self.prev = _C.set_grad_enabled(self.mode)
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self.prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Context manager / decorator: record nothing, keep no intermediates.

    Inference must not pay for training: inside `no_grad` no graph is built,
    so every intermediate tensor is freed as soon as it is unused."""

    mode = False


class enable_grad(_GradMode):
    """Context manager / decorator that turns recording back on inside no_grad."""

    mode = True
