"""Grad mode, and `grad` (torch.autograd.grad: gradients of chosen inputs, with
create_graph for double backward). Like torch, grad mode is per thread: `no_grad`
in one thread does not affect another."""
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


def _tensor_seq(x, what, allow_none=False):
    """A Tensor or a sequence of Tensors (None entries where allowed) -> list."""
    from ._C import Tensor

    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        items = list(x)
        for i, t in enumerate(items):
            if not (isinstance(t, Tensor) or (allow_none and t is None)):
                raise TypeError(f"autograd.grad: {what}[{i}] must be a Tensor{' or None' if allow_none else ''}, "
                                f"got {type(t).__name__}")
        return items
    raise TypeError(f"autograd.grad: {what} must be a Tensor or a sequence of Tensors, got {type(x).__name__}")


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of `outputs` with respect to `inputs`, as new tensors — torch.autograd.grad.

    outputs: a Tensor or a sequence of Tensors; inputs: a Tensor or a sequence (leaves or
    non-leaf tensors of the graph; a non-leaf input's gradient is the gradient flowing into it).
    grad_outputs: the vector of each vector-Jacobian product (a Tensor/array shaped like its
    output, or None = 1 for a scalar output). No `.grad` anywhere is read or written. Only the
    part of the graph leading to `inputs` is run, and nodes there compute only the gradients
    that lead to an input.

    retain_graph (default: create_graph) keeps the saved tensors for another backward.
    create_graph=True makes the returned gradients differentiable (double backward, e.g. an R1
    gradient penalty); it runs every node through a double-backward rule written with mmu's
    differentiable ops (mmu/_double_backward.py) and raises NotImplementedError naming an op
    without one. allow_unused: an input the outputs do not depend on gets None instead of an
    error. Returns a tuple with one entry per input."""
    from ._C import Tensor
    from ._C import grad as _c_grad

    outs = _tensor_seq(outputs, "outputs")
    ins = _tensor_seq(inputs, "inputs")
    if not outs:
        raise ValueError("autograd.grad: outputs is empty")
    if not ins:
        raise ValueError("autograd.grad: inputs is empty")
    gouts = None
    if grad_outputs is not None:
        if isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
            grad_outputs = [grad_outputs]
        if len(grad_outputs) != len(outs):
            raise ValueError(f"autograd.grad: grad_outputs has {len(grad_outputs)} entries but there are "
                             f"{len(outs)} outputs")
        from .tensor import _as_tensor

        gouts = [None if g is None else _as_tensor(g, "autograd.grad", f"grad_outputs[{i}]")
                 for i, g in enumerate(grad_outputs)]
    retain = create_graph if retain_graph is None else retain_graph
    if create_graph:
        from ._double_backward import grad_create_graph

        return grad_create_graph(outs, gouts, ins, bool(retain), bool(allow_unused))
    return _c_grad(outs, gouts, ins, bool(retain), bool(allow_unused))


def _nodes_run():
    """How many node backward functions the C engine has run (tests check pruning with it)."""
    return _C.autograd_nodes_run()


def _grads_computed():
    """How many input gradients those backward functions produced (tests check edge pruning with it)."""
    return _C.autograd_grads_computed()


class RemovableHandle:
    """What Tensor.register_post_accumulate_grad_hook returns: .remove() unregisters the hook (calling it
    again does nothing). It holds the tensor weakly."""

    def __init__(self, t, key):
        import weakref
        self._tensor = weakref.ref(t)
        self._key = key

    def remove(self):
        """Unregisters the hook (a no-op once removed or once the tensor is gone)."""
        t = self._tensor()
        if t is not None:
            _C._remove_post_accumulate_grad_hook(t, self._key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def _register_post_accumulate_grad_hook(self, hook):
    """t.register_post_accumulate_grad_hook(hook) -> handle (torch's name and semantics): every backward
    calls hook(t) once, right after the last gradient that backward sends to the leaf t has been added
    to t.grad (so t.grad is final for that backward), while the rest of the backward still runs. hook
    returns None. Only leaves that require grad take hooks (RuntimeError otherwise); autograd.grad
    (which does not accumulate into .grad) does not call them. Several hooks run in registration order;
    an exception of a hook stops the backward and propagates from backward() as it was raised. The hook
    keeps what it references alive until handle.remove()."""
    key = _C._add_post_accumulate_grad_hook(self, hook)
    return RemovableHandle(self, key)


_register_post_accumulate_grad_hook.__name__ = _register_post_accumulate_grad_hook.__qualname__ = \
    "register_post_accumulate_grad_hook"
_C.Tensor.register_post_accumulate_grad_hook = _register_post_accumulate_grad_hook
