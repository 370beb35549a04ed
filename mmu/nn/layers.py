"""Layers with torch.nn's names, arguments, parameter shapes and default initialisation: Identity,
Linear, Embedding, Dropout, Flatten, Unflatten, Upsample, PixelShuffle, PixelUnshuffle. The layer
families live beside this module (conv.py, norm.py, activation.py, pooling.py); they are
re-exported here too, so the import paths of saved configs (mmu.nn.layers.Conv2d, ...) keep
resolving.

Each forward is one call into mmu.functional (the fused C ops)."""
import math
import numbers

from .. import functional as F
from .._args import flag
from ..tensor import _as_tensor, where as _where
from . import init
from ._layer_args import _int, _ntuple, _param, _real  # noqa: F401 (re-exported for older imports)
from .activation import GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh  # noqa: F401
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d  # noqa: F401
from .module import Module
from .norm import ActNorm, BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm, _BatchNorm  # noqa: F401
from .parameter import Parameter
from .pooling import AvgPool2d, MaxPool2d  # noqa: F401

__all__ = ["Identity", "Linear", "Embedding", "Dropout", "Flatten", "Unflatten", "Upsample", "PixelShuffle",
           "PixelUnshuffle"]


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
        """torch's init: weight and bias U(±1/sqrt(in_features)) (weight by kaiming_uniform_(a=sqrt(5)))."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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
        """torch's init: weight N(0, 1), the padding_idx row (if any) zeroed."""
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
        try:
            return input.reshape(input.shape[:dim] + self.unflattened_size + input.shape[dim + 1:])
        except ValueError as e:  # e.g. a -1 that an empty input leaves ambiguous
            raise ValueError(f"Unflatten: unflattened_size {self.unflattened_size} cannot expand dim {self.dim} of "
                             f"input {input.shape}: {e}") from None

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


