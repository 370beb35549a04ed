"""Activation layers with torch.nn's names and arguments: ReLU, SiLU, GELU, Sigmoid, Tanh,
Softplus, LeakyReLU, Softmax."""
import warnings

from .. import functional as F
from .._args import flag
from ..tensor import _as_tensor
from ._layer_args import _real
from .module import Module

__all__ = ["ReLU", "SiLU", "GELU", "Sigmoid", "Tanh", "Softplus", "LeakyReLU", "Softmax"]


class _Activation(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Activation):
    """max(x, 0) elementwise, as torch.nn.ReLU: input of any shape -> output of the same shape.
    inplace=True is refused (mmu ops never modify their inputs)."""

    def __init__(self, inplace=False):
        super().__init__(inplace)

    def forward(self, input):
        return F.relu(input)


class SiLU(_Activation):
    """x·sigmoid(x) elementwise (swish), as torch.nn.SiLU: any shape -> the same shape.
    inplace=True is refused."""

    def __init__(self, inplace=False):
        super().__init__(inplace)

    def forward(self, input):
        return F.silu(input)


class GELU(Module):
    """GELU, exact ('none') or with the tanh approximation ('tanh')."""

    def __init__(self, approximate="none"):
        super().__init__()
        if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise, as torch.nn.Sigmoid: any shape -> the same shape."""

    def __init__(self):
        super().__init__()

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    """tanh(x) elementwise, as torch.nn.Tanh: any shape -> the same shape."""

    def __init__(self):
        super().__init__()

    def forward(self, input):
        return F.tanh(input)


class Softplus(Module):
    """log(1 + exp(beta·x)) / beta, linear above `threshold` (torch.nn.Softplus; see F.softplus)."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = F._softplus_args(beta, threshold, "Softplus")

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class LeakyReLU(Module):
    """x if x > 0 else negative_slope·x elementwise, as torch.nn.LeakyReLU (negative_slope=0.01):
    any shape -> the same shape. inplace=True is refused."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = _real(negative_slope, "negative_slope", "LeakyReLU")
        self.inplace = flag(inplace, "LeakyReLU", "inplace")

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Softmax(Module):
    """softmax along dim; dim=None picks torch's legacy default (0 for 0-, 1- and 3-D input, else 1)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        input = _as_tensor(input, "Softmax")
        dim = self.dim
        if dim is None:
            warnings.warn("Implicit dimension choice for softmax has been deprecated. Change the call to "
                          "include dim=X as an argument.", stacklevel=2)
            dim = 0 if input.ndim in (0, 1, 3) else 1
        return F.softmax(input, dim)

    def extra_repr(self):
        return f"dim={self.dim}"
