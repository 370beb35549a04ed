"""Neural-network functions, named and behaving like torch.nn.functional."""
import numbers

from . import _C
from ._args import check_real as _real, flag as _flag, is_int, is_real
from .tensor import _UN, _as_tensor

_REDUCTIONS = _C.LOSS_REDUCTIONS  # {"none", "mean", "sum"} -> the C core's mmu_reduction codes


def _reduction(reduction, op):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return _REDUCTIONS[reduction]


def linear(input, weight, bias=None):
    """y = x Wᵀ + b. input (..., in_features), weight (out_features, in_features), bias (out_features)."""
    return _C.linear(input, weight, bias)


def relu(input):
    """max(x, 0) elementwise: input float32, any shape -> the same shape."""
    return _C.unary(_UN["relu"], input)


def gelu(input, approximate="none"):
    """GELU: x·Φ(x) ('none', exact erf) or its tanh approximation ('tanh')."""
    if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _C.unary(_UN["gelu" if approximate == "none" else "gelu_tanh"], input)


def silu(input):
    """x·sigmoid(x) (a.k.a. swish) elementwise: input float32, any shape -> the same shape."""
    return _C.unary(_UN["silu"], input)


def swiglu(gate, up):
    """silu(gate) * up in one pass (LLaMA's SwiGLU MLP activation, fused forward and backward): gate and
    up float32 of one shape -> that shape. The same values as F.silu(gate) * up to float32 rounding."""
    return _C.swiglu(gate, up)


def sigmoid(input):
    """1 / (1 + exp(-x)) elementwise: input float32, any shape -> the same shape."""
    return _C.unary(_UN["sigmoid"], input)


def tanh(input):
    """Hyperbolic tangent elementwise: input float32, any shape -> the same shape."""
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


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope·x, elementwise: input float32, any shape -> the same shape.
    inplace=True is refused (mmu ops do not modify their inputs)."""
    if _flag(inplace, "leaky_relu", "inplace"):
        raise ValueError("leaky_relu: inplace=True is not supported (mmu ops do not modify their inputs)")
    return _C.leaky_relu(input, _real(negative_slope, "leaky_relu", "negative_slope"))


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


def embedding(input, weight):
    """Rows of weight (num_embeddings, dim) picked by the int64 indices in input -> (*input.shape, dim)."""
    return _C.embedding(input, weight)


def cross_entropy(input, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of logits (N, C) / (N, C, d1, ...) against int64 class targets (N) / (N, d1, ...).

    Fused log-softmax + NLL in one C kernel; `ignore_index` targets contribute nothing (and
    'mean' divides by the number of non-ignored targets); `label_smoothing` mixes the one-hot
    target with the uniform distribution, as torch does.

    Sequence logits (B, L, V), as a language model gives them: pass `input.reshape(-1, V)` and
    `target.reshape(-1)` (views, no copy), not torch's (B, V, L) layout (a permute is a copy in mmu).
    For next-token prediction use `mmu.losses.next_token_loss(logits, tokens)`: it shifts the targets
    instead of slicing `logits[:, :-1]`, which would copy B·(L-1)·V floats."""
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


# The op families live in their own modules (mmu/_fn_<family>.py); each has __all__.
from . import (_fn_attention, _fn_batch_norm, _fn_conv, _fn_dropout, _fn_lpips, _fn_norm, _fn_pool,  # noqa: E402
               _fn_quant_vq, _fn_spatial)
from ._fn_attention import *  # noqa: E402,F401,F403
from ._fn_batch_norm import *  # noqa: E402,F401,F403
from ._fn_conv import *  # noqa: E402,F401,F403
from ._fn_dropout import *  # noqa: E402,F401,F403
from ._fn_lpips import *  # noqa: E402,F401,F403
from ._fn_norm import *  # noqa: E402,F401,F403
from ._fn_pool import *  # noqa: E402,F401,F403
from ._fn_quant_vq import *  # noqa: E402,F401,F403
from ._fn_spatial import *  # noqa: E402,F401,F403

__all__ = ["linear", "relu", "gelu", "silu", "swiglu", "sigmoid", "tanh", "softplus", "leaky_relu", "softmax", "log_softmax", "embedding",
           "cross_entropy", "mse_loss", "l1_loss", "_as_tensor"]
for _family in (_fn_attention, _fn_batch_norm, _fn_conv, _fn_dropout, _fn_lpips, _fn_norm, _fn_pool, _fn_quant_vq,
                _fn_spatial):
    __all__ += _family.__all__
del _family
