"""Neural-network functions, named and behaving like torch.nn.functional."""
import numbers

from . import _C
from ._args import is_int, is_real
from .tensor import _UN, _as_tensor

_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _reduction(reduction, op):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return _REDUCTIONS[reduction]


def linear(input, weight, bias=None):
    """y = x Wᵀ + b. input (..., in_features), weight (out_features, in_features), bias (out_features)."""
    return _C.linear(input, weight, bias)


def relu(input):
    """max(x, 0)."""
    return _C.unary(_UN["relu"], input)


def gelu(input, approximate="none"):
    """GELU: x·Φ(x) ('none', exact erf) or its tanh approximation ('tanh')."""
    if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _C.unary(_UN["gelu" if approximate == "none" else "gelu_tanh"], input)


def silu(input):
    """x·sigmoid(x) (a.k.a. swish)."""
    return _C.unary(_UN["silu"], input)


def sigmoid(input):
    """1 / (1 + exp(-x))."""
    return _C.unary(_UN["sigmoid"], input)


def tanh(input):
    """Hyperbolic tangent."""
    return _C.unary(_UN["tanh"], input)


def _softplus_args(beta, threshold, op="softplus"):
    """beta and threshold checked (real; beta finite, non-zero; threshold not NaN) -> floats."""
    for name, v in (("beta", beta), ("threshold", threshold)):
        if not is_real(v):
            raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    beta, threshold = float(beta), float(threshold)
    if beta == 0 or beta != beta or abs(beta) == float("inf"):
        raise ValueError(f"{op}: beta must be finite and non-zero, got {beta}")
    if threshold != threshold:
        raise ValueError(f"{op}: threshold must not be NaN")
    return beta, threshold


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta·x)) / beta, and x itself where beta·x > threshold (torch's rule and defaults).

    One C pass (csrc/core/vmath.h): max(z, 0) + log1p(exp(-|z|)) never overflows and keeps float32
    relative precision for z << 0, where softplus(z) ≈ exp(z). Gradient sigmoid(beta·x)."""
    return _C.softplus(input, *_softplus_args(beta, threshold))


def _dim(dim, op):
    if dim is None:
        raise TypeError(f"{op}: dim must be given (an int), as in torch")
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    return int(dim)


def softmax(input, dim):
    """exp(x) / sum(exp(x)) along dim (one fused, vectorised C pass per row; saves only the output)."""
    return _C.softmax(input, _dim(dim, "softmax"), False)


def log_softmax(input, dim):
    """x - logsumexp(x) along dim (stable: shifted by the row max)."""
    return _C.softmax(input, _dim(dim, "log_softmax"), True)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing `normalized_shape` dims, then scale by weight and shift by bias."""
    if is_int(normalized_shape):
        normalized_shape = (int(normalized_shape),)
    if not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(f"layer_norm: normalized_shape must be an int or a tuple of ints, "
                        f"got {type(normalized_shape).__name__}")
    if not is_real(eps):
        raise TypeError(f"layer_norm: eps must be a number, got {type(eps).__name__}")
    return _C.layer_norm(input, tuple(normalized_shape), weight, bias, float(eps))


def embedding(input, weight):
    """Rows of weight (num_embeddings, dim) picked by the int64 indices in input -> (*input.shape, dim)."""
    return _C.embedding(input, weight)


def cross_entropy(input, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of logits (N, C) / (N, C, d1, ...) against int64 class targets (N) / (N, d1, ...).

    Fused log-softmax + NLL in one C kernel; `ignore_index` targets contribute nothing (and
    'mean' divides by the number of non-ignored targets); `label_smoothing` mixes the one-hot
    target with the uniform distribution, as torch does."""
    if not is_real(label_smoothing):
        raise TypeError(f"cross_entropy: label_smoothing must be a number, got {type(label_smoothing).__name__}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not is_int(ignore_index):
        raise TypeError(f"cross_entropy: ignore_index must be an int, got {type(ignore_index).__name__}")
    return _C.cross_entropy(input, target, int(ignore_index), float(label_smoothing),
                            _reduction(reduction, "cross_entropy"))


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum, or elementwise) squared error; input and target have the same shape."""
    return _C.mse_loss(input, target, _reduction(reduction, "mse_loss"))


def l1_loss(input, target, reduction="mean"):
    """Mean (or sum, or elementwise) absolute error; input and target have the same shape."""
    return _C.l1_loss(input, target, _reduction(reduction, "l1_loss"))


# The op families of the layers issue live in their own modules; each has __all__.
from . import _fn_attention, _fn_batchnorm, _fn_conv, _fn_lpips, _fn_quant, _fn_spatial  # noqa: E402
from ._fn_attention import *  # noqa: E402,F401,F403
from ._fn_batchnorm import *  # noqa: E402,F401,F403
from ._fn_conv import *  # noqa: E402,F401,F403
from ._fn_lpips import *  # noqa: E402,F401,F403
from ._fn_quant import *  # noqa: E402,F401,F403
from ._fn_spatial import *  # noqa: E402,F401,F403

__all__ = ["linear", "relu", "gelu", "silu", "sigmoid", "tanh", "softplus", "softmax", "log_softmax", "layer_norm",
           "embedding", "cross_entropy", "mse_loss", "l1_loss", "_as_tensor"] + _fn_conv.__all__ + _fn_spatial.__all__ + _fn_attention.__all__ + _fn_quant.__all__ + \
    _fn_batchnorm.__all__ + _fn_lpips.__all__
