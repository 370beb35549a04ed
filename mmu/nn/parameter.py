"""Parameter: a Tensor that a Module registers as one of its weights."""
import numpy as np

from .._C import Tensor
from ..tensor import tensor as _tensor


def _rebuild_parameter(array, requires_grad):
    return Parameter(_tensor(array), requires_grad)


class Parameter(Tensor):
    """A leaf Tensor that requires grad by default and that `Module.__setattr__`
    registers (torch.nn.Parameter).

    `Parameter(t)` shares t's memory (like torch): writes through either are
    seen by both, but the parameter is a new leaf cut from t's graph. Anything
    else (an ndarray, a list) is copied. Ops on a Parameter return plain
    Tensors; `isinstance(p, mmu.Tensor)` is True."""

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = np.zeros(0, np.float32)
        p = Tensor.__new__(cls, data)
        if requires_grad:
            if p.dtype != np.float32:
                raise TypeError(f"Parameter: only float32 tensors can require gradients, got {p.dtype} "
                                "(pass requires_grad=False for an integer parameter)")
            p.requires_grad = True
        return p

    def __repr__(self):
        return "Parameter containing:\n" + Tensor.__repr__(self)

    __str__ = __repr__

    def __reduce_ex__(self, protocol):
        # pickle / copy.deepcopy keep the class and requires_grad (a graph is not pickled)
        return _rebuild_parameter, (self.detach().numpy().copy(), self.requires_grad)

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = _rebuild_parameter(self.detach().numpy().copy(), self.requires_grad)
        memo[id(self)] = p
        return p
