"""Weight initialisation (torch.nn.init): in place, under no_grad, drawing from
mmu's seeded RNG (mmu.manual_seed), so the same seed gives the same weights.

The distributions and their parameters (fans, gains, bounds) are torch's;
the numbers themselves come from mmu's Philox generator, not torch's."""
import math

import numpy as np

from .._C import Tensor
from .._args import is_real
from ..tensor import rand as _rand, randn as _randn

__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


def _target(tensor, fn):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn}: expected an mmu.Tensor, got {type(tensor).__name__}")
    if tensor.dtype != np.float32:
        raise TypeError(f"{fn}: expected a float32 tensor, got {tensor.dtype}")
    tensor._bump_version()  # the fill that follows is an in-place write (torch's fills bump it too)
    return tensor.numpy()  # a writable view: writes bypass autograd, like torch's no_grad fills


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (torch's table): linear/conv/sigmoid 1,
    tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope^2)), selu 3/4."""
    linear_fns = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d")
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif is_real(param):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (torch's
    rule; for a ConvTranspose weight (in, out/groups, k...) this makes fan_in = out/groups * k)."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = 1
    for s in tensor.shape[2:]:
        receptive *= s
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower() if isinstance(mode, str) else mode
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fills tensor with U(a, b)."""
    out = _target(tensor, "uniform_")
    if not a <= b:
        raise ValueError(f"uniform_: expects a <= b, got a={a}, b={b}")
    u = _rand(*tensor.shape).numpy()
    out[...] = (a + (b - a) * u.astype(np.float64)).astype(np.float32)
    return tensor


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fills tensor with N(mean, std^2)."""
    out = _target(tensor, "normal_")
    if std < 0:
        raise ValueError(f"normal_: std must be non-negative, got {std}")
    out[...] = mean + std * _randn(*tensor.shape).numpy()
    return tensor


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fills tensor with N(mean, std^2) truncated to [a, b] (a and b are absolute
    bounds, as in torch). Out-of-range draws are redrawn (rejection), which gives
    exactly the truncated distribution."""
    out = _target(tensor, "trunc_normal_")
    if not a < b:
        raise ValueError(f"trunc_normal_: expects a < b, got a={a}, b={b}")
    if std <= 0:
        raise ValueError(f"trunc_normal_: std must be positive, got {std}")
    lo, hi = (a - mean) / std, (b - mean) / std
    # the probability mass inside [lo, hi]; rejection needs about 1/mass rounds
    mass = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    if mass < 1e-3:
        raise ValueError(f"trunc_normal_: [a, b] = [{a}, {b}] holds too little of N({mean}, {std}^2) "
                         "to sample by rejection")
    flat = np.empty(out.size, np.float32)
    todo = np.arange(out.size)
    while todo.size:
        z = _randn(todo.size).numpy()
        ok = (z >= lo) & (z <= hi)
        flat[todo[ok]] = z[ok]
        todo = todo[~ok]
    out[...] = np.clip(mean + std * flat.reshape(out.shape).astype(np.float64), a, b).astype(np.float32)
    return tensor


def constant_(tensor, val):
    """Fills tensor with val."""
    _target(tensor, "constant_")[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def eye_(tensor):
    """The identity matrix in a 2-D tensor."""
    out = _target(tensor, "eye_")
    if out.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    out[...] = np.eye(*out.shape, dtype=np.float32)
    return tensor


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -a, a)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al.); gain from
    calculate_gain(nonlinearity, a). Linear/Conv use a = sqrt(5): bound = 1/sqrt(fan_in)."""
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std^2) with std = gain / sqrt(fan)."""
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))
