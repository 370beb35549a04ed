"""Normalisation layers with torch.nn's names, arguments, parameters and buffers: LayerNorm,
GroupNorm, RMSNorm, BatchNorm1d/2d, and taming-transformers' ActNorm."""
import numbers

import numpy as _np

from .. import functional as F
from .._args import flag, is_int
from ..autograd import no_grad
from ..tensor import _as_tensor, zeros as _zeros
from . import init
from ._layer_args import _int, _param, _real
from .module import Module
from .parameter import Parameter

__all__ = ["LayerNorm", "GroupNorm", "RMSNorm", "BatchNorm1d", "BatchNorm2d", "ActNorm"]


def _shape_tuple(normalized_shape, cls):
    if is_int(normalized_shape):
        normalized_shape = (normalized_shape,)
    if not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(f"{cls}: normalized_shape must be an int or a tuple of ints, got "
                        f"{type(normalized_shape).__name__}")
    return tuple(_int(s, "normalized_shape", cls, 1) for s in normalized_shape)


class LayerNorm(Module):
    """Normalises over the trailing normalized_shape dims; weight ones, bias zeros."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape, "LayerNorm")
        self.eps = _real(eps, "eps", "LayerNorm")
        self.elementwise_affine = flag(elementwise_affine, "LayerNorm", "elementwise_affine")
        if self.elementwise_affine:
            self.weight = _param(*self.normalized_shape)
            if flag(bias, "LayerNorm", "bias"):
                self.bias = _param(*self.normalized_shape)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """weight to ones and bias to zeros (torch's init), when elementwise_affine."""
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalises (N, C, *) over groups of C/num_groups channels; per-channel weight ones, bias zeros."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, bias=True):
        super().__init__()
        self.num_groups = _int(num_groups, "num_groups", "GroupNorm", 1)
        self.num_channels = _int(num_channels, "num_channels", "GroupNorm", 1)
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.eps = _real(eps, "eps", "GroupNorm")
        self.affine = flag(affine, "GroupNorm", "affine")
        if self.affine:
            self.weight = _param(self.num_channels)
            if flag(bias, "GroupNorm", "bias"):
                self.bias = _param(self.num_channels)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """weight to ones and bias to zeros (torch's init), when affine."""
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) * weight over the trailing dims (torch.nn.RMSNorm:
    eps=None means float32's machine epsilon); weight ones, no bias."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True):
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape, "RMSNorm")
        self.eps = None if eps is None else _real(eps, "eps", "RMSNorm")
        self.elementwise_affine = flag(elementwise_affine, "RMSNorm", "elementwise_affine")
        if self.elementwise_affine:
            self.weight = _param(*self.normalized_shape)
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self):
        """weight to ones (torch's init), when elementwise_affine."""
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class _BatchNorm(Module):
    """torch.nn's _BatchNorm: weight ones, bias zeros; buffers running_mean (zeros), running_var
    (ones), num_batches_tracked (int64 0) when track_running_stats. Training uses the batch
    statistics and updates the running ones in place (momentum=None: cumulative average,
    factor 1/num_batches_tracked); eval uses the running ones (the batch's when they are not
    tracked). One fused C op forward and backward (mmu.functional.batch_norm)."""
    _expected = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *, bias=True):
        super().__init__()
        cls = type(self).__name__
        self.num_features = _int(num_features, "num_features", cls, 1)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise TypeError(f"{cls}: eps must be a number, got {type(eps).__name__}")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)):
            raise TypeError(f"{cls}: momentum must be a number or None, got {type(momentum).__name__}")
        self.eps = eps
        self.momentum = momentum
        self.affine = flag(affine, cls, "affine")
        self.track_running_stats = flag(track_running_stats, cls, "track_running_stats")
        if self.affine:
            self.weight = _param(self.num_features)
            if flag(bias, cls, "bias"):
                self.bias = _param(self.num_features)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", _zeros(self.num_features))
            self.register_buffer("running_var", _zeros(self.num_features))
            self.register_buffer("num_batches_tracked", _as_tensor(_np.array(0, _np.int64), cls))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        """running_mean to zeros, running_var to ones, num_batches_tracked to 0 (in place)."""
        if self.track_running_stats:
            for buf, value in ((self.running_mean, 0.0), (self.running_var, 1.0), (self.num_batches_tracked, 0)):
                buf.fill_(value)

    def reset_parameters(self):
        """The running statistics reset, weight to ones and bias to zeros (torch's init)."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, input):
        raise NotImplementedError

    def forward(self, input):
        x = _as_tensor(input, type(self).__name__)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else float(self.momentum)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.numpy())
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_buffers = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if use_buffers else None,
                            self.running_var if use_buffers else None, self.weight, self.bias, bn_training,
                            factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """torch.nn.BatchNorm1d: input (N, C) or (N, C, L), statistics per channel over N (and L)."""

    def _check_input_dim(self, input):
        if input.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2D or 3D input (got {input.ndim}D input)")


class BatchNorm2d(_BatchNorm):
    """torch.nn.BatchNorm2d: input (N, C, H, W), statistics per channel over N, H, W."""

    def _check_input_dim(self, input):
        if input.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected 4D input (got {input.ndim}D input)")


class ActNorm(Module):
    """Activation normalisation of taming-transformers (taming/modules/discriminator/model.py,
    after Glow, Kingma & Dhariwal 2018): h = scale·(x + loc) per channel, loc (1, C, 1, 1) zeros and
    scale (1, C, 1, 1) ones as Parameters, and a data-dependent init on the first forward in training
    mode: loc = -mean_c, scale = 1/(std_c + 1e-6) over N, H, W (std unbiased, as torch.std), after
    which the int64 buffer `initialized` is 1 (taming keeps it as uint8; a taming state_dict loads).
    Input (N, C, H, W) or (N, C). logdet=True also returns H·W·Σ log|scale| per sample (N,).
    affine must be True (as taming asserts). reverse(y) = y/scale - loc."""

    def __init__(self, num_features, logdet=False, affine=True, allow_reverse_init=False):
        super().__init__()
        if not flag(affine, "ActNorm", "affine"):
            raise ValueError("ActNorm: affine must be True (taming-transformers' ActNorm asserts it)")
        self.num_features = _int(num_features, "num_features", "ActNorm", 1)
        self.logdet = flag(logdet, "ActNorm", "logdet")
        self.allow_reverse_init = flag(allow_reverse_init, "ActNorm", "allow_reverse_init")
        self.loc = Parameter(_zeros(1, self.num_features, 1, 1))
        self.scale = Parameter(_zeros(1, self.num_features, 1, 1))
        init.ones_(self.scale)
        self.register_buffer("initialized", _as_tensor(_np.array(0, _np.int64), "ActNorm"))

    def _as4d(self, input, what):
        x = _as_tensor(input, "ActNorm")
        if x.ndim not in (2, 4):
            raise ValueError(f"ActNorm: expected {what} of shape (N, C, H, W) or (N, C), got {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"ActNorm: expected {self.num_features} channels in {what}, got shape {tuple(x.shape)}")
        return (x.reshape(x.shape[0], x.shape[1], 1, 1), True) if x.ndim == 2 else (x, False)

    def initialize(self, input):
        """loc = -mean_c, scale = 1/(std_c + 1e-6) from input (N, C, H, W), per channel, no grad."""
        a = input.detach().numpy().astype(_np.float64).transpose(1, 0, 2, 3).reshape(self.num_features, -1)
        mean = a.mean(1)
        std = a.std(1, ddof=1) if a.shape[1] > 1 else _np.full(self.num_features, _np.nan)
        with no_grad():  # copy_ bumps the version counters, so a graph that saved loc/scale raises
            self.loc.copy_((-mean).astype(_np.float32).reshape(1, -1, 1, 1))
            self.scale.copy_((1.0 / (std.astype(_np.float32) + _np.float32(1e-6))).reshape(1, -1, 1, 1))

    def forward(self, input, reverse=False):
        """x (N, C, H, W) or (N, C) -> scale·(x + loc), same shape (and, with logdet=True, also
        H·W·Σ log|scale| per sample, (N,)). The first call in training mode initialises loc and scale
        from x's per-channel statistics.
        """
        if reverse:
            return self.reverse(input)
        x, squeeze = self._as4d(input, "input")
        # an empty batch has no statistics: initializing from it would set loc/scale to nan for good
        if self.training and int(self.initialized.numpy()) == 0 and x.numel() > 0:
            self.initialize(x)
            self.initialized.fill_(1)
        h = self.scale * (x + self.loc)
        if squeeze:
            h = h.reshape(h.shape[0], h.shape[1])
        if self.logdet:
            height, width = x.shape[2], x.shape[3]
            logdet = (self.scale.abs().log().sum() * float(height * width)).reshape(1) * \
                _as_tensor(_np.ones(x.shape[0], _np.float32), "ActNorm")
            return h, logdet
        return h

    def reverse(self, output):
        """The inverse of forward: output (N, C, H, W) or (N, C) -> output / scale - loc, same shape
        (initialising from output first only with allow_reverse_init=True).
        """
        y, squeeze = self._as4d(output, "output")
        if self.training and int(self.initialized.numpy()) == 0 and y.numel() > 0:
            if not self.allow_reverse_init:
                raise RuntimeError("ActNorm: initializing ActNorm in reverse direction is disabled by default; "
                                   "use allow_reverse_init=True to enable it")
            self.initialize(y)
            self.initialized.fill_(1)
        h = y / self.scale - self.loc
        if squeeze:
            h = h.reshape(h.shape[0], h.shape[1])
        return h

    def extra_repr(self):
        return f"{self.num_features}" + (", logdet=True" if self.logdet else "")
