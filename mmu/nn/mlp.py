"""MLP: the feed-forward part of a transformer layer (GELU, tanh-GELU, ReLU, SiLU, quick-GELU or SwiGLU)."""
from .. import functional as F
from .._args import flag
from ._layer_args import _int, _named_errors
from .layers import Linear
from .module import Module

__all__ = ["MLP"]

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2 / Phi's gelu_new
    "relu": F.relu,
    "silu": F.silu,
    "quick_gelu": lambda x: x * F.sigmoid(1.702 * x),  # CLIP's (OpenAI) sigmoid approximation of GELU
}


class MLP(Module):
    """fc2(act(fc1(x))), or with activation='swiglu' fc2(silu(fc_gate(x)) * fc1(x)) (LLaMA).

    Parameters: fc1 (hidden_dim, dim), fc2 (dim, hidden_dim), and for SwiGLU fc_gate
    (hidden_dim, dim); each with a bias if bias=True. Published names map as
    fc1 = GPT/Phi's fc1 = LLaMA's up_proj, fc_gate = LLaMA's gate_proj, fc2 = fc2 / down_proj.
    activation: 'gelu' (exact erf), 'gelu_tanh' (tanh approximation, Phi's gelu_new), 'relu',
    'silu', 'quick_gelu' (x sigmoid(1.702 x), CLIP's) or 'swiglu'. Input (..., dim) -> (..., dim).
    """

    @_named_errors("MLP")
    def __init__(self, dim, hidden_dim, activation="gelu", bias=True):
        super().__init__()
        self.dim = _int(dim, "dim", "MLP", 1)
        self.hidden_dim = _int(hidden_dim, "hidden_dim", "MLP", 1)
        if not isinstance(activation, str) or (activation != "swiglu" and activation not in _ACTIVATIONS):
            raise ValueError(f"MLP: activation must be one of {sorted(_ACTIVATIONS) + ['swiglu']}, "
                             f"got {activation!r}")
        bias = flag(bias, "MLP", "bias")
        self.activation = activation
        self.fc1 = Linear(self.dim, self.hidden_dim, bias=bias)
        self.fc_gate = Linear(self.dim, self.hidden_dim, bias=bias) if activation == "swiglu" else None
        self.fc2 = Linear(self.hidden_dim, self.dim, bias=bias)

    @_named_errors("MLP")
    def forward(self, x):
        """x (..., dim) -> (..., dim)."""
        if self.fc_gate is not None:
            return self.fc2(F.swiglu(self.fc_gate(x), self.fc1(x)))
        return self.fc2(_ACTIVATIONS[self.activation](self.fc1(x)))

    def extra_repr(self):
        return f"dim={self.dim}, hidden_dim={self.hidden_dim}, activation={self.activation!r}"
