"""Grad mode. Like torch, it is per thread: `no_grad` in one thread does not
affect another."""
import functools

from . import _C


def is_grad_enabled():
    """True if operations are being recorded for backward in this thread."""
    return _C.is_grad_enabled()


class set_grad_enabled:
    """Set grad mode: as a function call (takes effect at once), a context manager
    (restored on exit) or a decorator (the mode applies inside each call only)."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self.prev = _C.set_grad_enabled(self.mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self.prev)
        return False

    def __call__(self, fn):
        # used as @set_grad_enabled(mode): undo the switch __init__ made at decoration time
        _C.set_grad_enabled(self.prev)
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = _C.set_grad_enabled(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _C.set_grad_enabled(prev)

        return wrapper


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
