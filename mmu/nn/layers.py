"""Layers with torch.nn's names, arguments, parameter shapes and default
initialisation: Linear, Conv*d, ConvTranspose*d, norms, Embedding, Dropout,
activations, Identity, Flatten, Upsample.

Each forward is one call into mmu.functional (the fused C ops)."""
import builtins
import math
import numbers
import warnings

from .. import functional as F
from .._args import flag, is_int, is_real
from ..tensor import _as_tensor, where as _where, zeros as _zeros
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Identity", "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d", "LayerNorm", "GroupNorm", "RMSNorm", "Embedding", "Dropout", "ReLU", "GELU",
           "SiLU", "Sigmoid", "Tanh", "Softplus", "LeakyReLU", "Softmax", "Flatten", "Unflatten", "Upsample", "AvgPool2d", "PixelShuffle",
           "PixelUnshuffle"]


def _param(*shape):
    """An uninitialised (zero) float32 Parameter; reset_parameters fills it."""
    return Parameter(_zeros(*shape))


def _int(v, name, cls, minimum=None):
    if not is_int(v):
        raise TypeError(f"{cls}: {name} must be an int, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{cls}: {name} must be >= {minimum}, got {v}")
    if v > 2 ** 59:  # no buffer (and no int64 product of sizes) holds that many
        raise ValueError(f"{cls}: {name} {v} is too large")
    return int(v)


def _real(v, name, cls):
    if not is_real(v):
        raise TypeError(f"{cls}: {name} must be a number, got {type(v).__name__}")
    return float(v)


def _ntuple(v, n, name, cls, minimum=None):
    """An int or a sequence of n ints -> a tuple of n ints (torch's _pair/_triple)."""
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ValueError(f"{cls}: {name} must be an int or {n} ints, got {tuple(v)}")
        return tuple(_int(x, name, cls, minimum) for x in v)
    return (_int(v, name, cls, minimum),) * n


class Identity(Module):
    """Returns its input (any constructor arguments are ignored, as in torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


# --------------------------------------------------------------------- Linear
class Linear(Module):
    """y = x Wᵀ + b. weight (out_features, in_features), bias (out_features);
    both U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch initialises them."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _int(in_features, "in_features", "Linear", 0)
        self.out_features = _int(out_features, "out_features", "Linear", 0)
        self.weight = _param(self.out_features, self.in_features)
        if flag(bias, "Linear", "bias"):
            self.bias = _param(self.out_features)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ----------------------------------------------------------------- convolutions
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    _n = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", output_padding=0):
        super().__init__()
        cls, n = type(self).__name__, self._n
        self.in_channels = _int(in_channels, "in_channels", cls, 1)
        self.out_channels = _int(out_channels, "out_channels", cls, 1)
        self.groups = _int(groups, "groups", cls, 1)
        if self.in_channels % self.groups:
            raise ValueError(f"{cls}: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if self.out_channels % self.groups:
            raise ValueError(f"{cls}: out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.kernel_size = _ntuple(kernel_size, n, "kernel_size", cls, 1)
        self.stride = _ntuple(stride, n, "stride", cls, 1)
        self.dilation = _ntuple(dilation, n, "dilation", cls, 1)
        if isinstance(padding, str):
            if self._transposed:
                raise ValueError(f"{cls}: padding must be an int or a tuple of ints, got {padding!r}")
            if padding not in ("same", "valid"):
                raise ValueError(f"{cls}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{cls}: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _ntuple(padding, n, "padding", cls, 0)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{cls}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f"{cls}: only 'zeros' padding mode is supported")
        self.padding_mode = padding_mode
        self.output_padding = _ntuple(output_padding, n, "output_padding", cls, 0)
        if self._transposed:
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= s and op >= d:
                    raise ValueError(f"{cls}: output_padding must be smaller than either stride or dilation, "
                                     f"got output_padding={self.output_padding}, stride={self.stride}, "
                                     f"dilation={self.dilation}")
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = _param(*shape)
        if flag(bias, type(self).__name__, "bias"):
            self.bias = _param(self.out_channels)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # torch: kaiming_uniform_(a=sqrt(5)) -> U(+-1/sqrt(fan_in)); for transposed weights
        # (in, out/groups, k...) the fan_in is out/groups * prod(k) (torch's quirk, kept)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        n = self._n
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _Conv(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)

    def forward(self, input):
        fn = getattr(F, f"conv{self._n}d")
        if self.padding_mode == "zeros":
            return fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        # reflect / replicate / circular: pad explicitly (torch's pad order: last dim first), then a valid conv
        if self.padding == "valid":
            pads = (0,) * (2 * self._n)
        elif self.padding == "same":
            pads = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            pads = tuple(pads)
        else:
            pads = tuple(p for p in reversed(self.padding) for _ in range(2))
        input = F.pad(input, pads, mode=self.padding_mode)
        return fn(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Conv1d(_Conv):
    """1-D convolution over (N, C_in, L) (or unbatched (C_in, L)). weight (C_out, C_in/groups, k)."""
    _n = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)


class Conv2d(_Conv):
    """2-D convolution over (N, C_in, H, W) (or unbatched). weight (C_out, C_in/groups, kh, kw)."""
    _n = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)


class Conv3d(_Conv):
    """3-D convolution over (N, C_in, D, H, W) (or unbatched). weight (C_out, C_in/groups, kd, kh, kw)."""
    _n = 3

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)


class _ConvTranspose(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding)

    def _output_padding(self, input, output_size):
        """torch's rule: the output_padding that makes the output exactly output_size."""
        if output_size is None:
            return self.output_padding
        n = self._n
        output_size = list(output_size)
        if len(output_size) == n + 2 or len(output_size) == n + 1:
            output_size = output_size[-n:]
        if len(output_size) != n:
            raise ValueError(f"{type(self).__name__}: output_size must have {n} or {n + 2} elements "
                             f"(got {len(output_size)})")
        spatial = input.shape[-n:]
        out = []
        for d in range(n):
            smallest = ((spatial[d] - 1) * self.stride[d] - 2 * self.padding[d]
                        + self.dilation[d] * (self.kernel_size[d] - 1) + 1)
            largest = smallest + self.stride[d] - 1
            if not smallest <= output_size[d] <= largest:
                raise ValueError(f"{type(self).__name__}: requested an output size of {output_size}, but valid "
                                 f"sizes range from {smallest} to {largest} (for an input of {tuple(spatial)})")
            out.append(output_size[d] - smallest)
        return tuple(out)

    def forward(self, input, output_size=None):
        fn = getattr(F, f"conv_transpose{self._n}d")
        return fn(input, self.weight, self.bias, self.stride, self.padding,
                  self._output_padding(input, output_size), self.groups, self.dilation)


class ConvTranspose1d(_ConvTranspose):
    """Transposed 1-D convolution. weight (C_in, C_out/groups, k)."""
    _n = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode)


class ConvTranspose2d(_ConvTranspose):
    """Transposed 2-D convolution. weight (C_in, C_out/groups, kh, kw)."""
    _n = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode)


class ConvTranspose3d(_ConvTranspose):
    """Transposed 3-D convolution. weight (C_in, C_out/groups, kd, kh, kw)."""
    _n = 3

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode)


# ----------------------------------------------------------------------- norms
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
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


# ------------------------------------------------------------------ embedding
class Embedding(Module):
    """A lookup table: weight (num_embeddings, embedding_dim) ~ N(0, 1); rows
    picked by int64 indices. padding_idx: that row starts at zero and gets no
    gradient (torch's semantics)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False):
        super().__init__()
        self.num_embeddings = _int(num_embeddings, "num_embeddings", "Embedding", 0)
        self.embedding_dim = _int(embedding_dim, "embedding_dim", "Embedding", 0)
        if padding_idx is not None:
            padding_idx = _int(padding_idx, "padding_idx", "Embedding")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings, got {padding_idx}")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("Embedding: max_norm, scale_grad_by_freq and sparse are not supported in mmu")
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = _param(self.num_embeddings, self.embedding_dim)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {tuple(_weight.shape)}, expected "
                                 f"{(self.num_embeddings, self.embedding_dim)}")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.numpy()[self.padding_idx] = 0.0

    def forward(self, input):
        if self.padding_idx is None:
            return F.embedding(input, self.weight)
        input = _as_tensor(input, "Embedding")
        out = F.embedding(input, self.weight)
        if self.weight.requires_grad:
            # positions holding padding_idx keep their value but pass no gradient to that row
            keep = (input != self.padding_idx).unsqueeze(-1)
            out = _where(keep, out, out.detach())
        return out

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, **kwargs):
        """An Embedding holding (a copy-free wrap of) the given 2-D weights (torch's classmethod);
        with a directory path it is Module.from_pretrained."""
        if isinstance(embeddings, (str, bytes)) or hasattr(embeddings, "__fspath__"):
            return super().from_pretrained(embeddings, **kwargs)
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx, _weight=embeddings, _freeze=freeze)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s


# --------------------------------------------------------------- elementwise
class Dropout(Module):
    """Zeroes elements with probability p during training and scales the rest by 1/(1-p)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, input):
        if not self.training or self.p == 0.0:
            return input
        return F.dropout(input, self.p, True)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class _Activation(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Activation):
    def __init__(self, inplace=False):
        super().__init__(inplace)

    def forward(self, input):
        return F.relu(input)


class SiLU(_Activation):
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
    def __init__(self):
        super().__init__()

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
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


# -------------------------------------------------------------------- reshape
class Flatten(Module):
    """Flattens dims start_dim..end_dim into one (default: all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return _as_tensor(input, "Flatten").flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Expands dim into unflattened_size."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError(f"Unflatten: unflattened_size must be a tuple of ints, got {type(unflattened_size).__name__}")
        self.dim = _int(dim, "dim", "Unflatten")
        self.unflattened_size = tuple(_int(s, "unflattened_size", "Unflatten", -1) for s in unflattened_size)

    def forward(self, input):
        input = _as_tensor(input, "Unflatten")
        if not -input.ndim <= self.dim < input.ndim:
            raise IndexError(f"Unflatten: dim {self.dim} is out of range for input of shape {input.shape}")
        dim = self.dim % input.ndim
        n = 1
        for s in self.unflattened_size:
            n *= s
        if n != input.shape[dim] and -1 not in self.unflattened_size:
            raise ValueError(f"Unflatten: unflattened_size {self.unflattened_size} does not multiply to dim {self.dim} "
                             f"of size {input.shape[dim]} (input of shape {input.shape})")
        return input.reshape(input.shape[:dim] + self.unflattened_size + input.shape[dim + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Upsample(Module):
    """Resizes (N, C, *spatial) by size or scale_factor with mode 'nearest' or 'bilinear'."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: exactly one of size and scale_factor must be given")
        self.size = tuple(size) if isinstance(size, list) else size
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(_real(s, "scale_factor", "Upsample") for s in scale_factor)
        else:
            self.scale_factor = _real(scale_factor, "scale_factor", "Upsample") if scale_factor is not None else None
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return info + f", mode={self.mode!r}"


class AvgPool2d(Module):
    """2-D average pooling (torch.nn.AvgPool2d's arguments)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class PixelShuffle(Module):
    """(N, C·r², H, W) -> (N, C, H·r, W·r)."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = _int(upscale_factor, "upscale_factor", "PixelShuffle", 1)

    def forward(self, input):
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """(N, C, H·r, W·r) -> (N, C·r², H, W)."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = _int(downscale_factor, "downscale_factor", "PixelUnshuffle", 1)

    def forward(self, input):
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"


# ---- batch norm (issue 5: BatchNorm1d/2d, ActNorm) ----
import numpy as _np  # noqa: E402

__all__ += ["BatchNorm1d", "BatchNorm2d", "ActNorm"]


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
        if self.track_running_stats:
            self.running_mean.numpy()[...] = 0.0
            self.running_var.numpy()[...] = 1.0
            self.num_batches_tracked.numpy()[...] = 0

    def reset_parameters(self):
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
            self.num_batches_tracked.numpy()[...] += 1
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
        self.loc.numpy()[...] = (-mean).astype(_np.float32).reshape(1, -1, 1, 1)
        self.scale.numpy()[...] = (1.0 / (std.astype(_np.float32) + _np.float32(1e-6))).reshape(1, -1, 1, 1)

    def forward(self, input, reverse=False):
        if reverse:
            return self.reverse(input)
        x, squeeze = self._as4d(input, "input")
        # an empty batch has no statistics: initializing from it would set loc/scale to nan for good
        if self.training and int(self.initialized.numpy()) == 0 and x.numel() > 0:
            self.initialize(x)
            self.initialized.numpy()[...] = 1
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
        y, squeeze = self._as4d(output, "output")
        if self.training and int(self.initialized.numpy()) == 0 and y.numel() > 0:
            if not self.allow_reverse_init:
                raise RuntimeError("ActNorm: initializing ActNorm in reverse direction is disabled by default; "
                                   "use allow_reverse_init=True to enable it")
            self.initialize(y)
            self.initialized.numpy()[...] = 1
        h = y / self.scale - self.loc
        if squeeze:
            h = h.reshape(h.shape[0], h.shape[1])
        return h

    def extra_repr(self):
        return f"{self.num_features}" + (", logdet=True" if self.logdet else "")
# ---- end batch norm ----


# ---- pooling (issue 5: MaxPool2d) ----
class MaxPool2d(Module):
    """2-D max pooling (torch.nn.MaxPool2d's arguments and repr); see mmu.functional.max_pool2d.
    stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")
# ---- end pooling ----
