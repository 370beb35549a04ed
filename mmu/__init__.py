"""mmu: discrete visual tokenizers and unified multimodal models on a fast CPU core.

NumPy in, NumPy out: `mmu.tensor(array)` makes a Tensor, `t.numpy()` gives the
array back without a copy, and every function accepts NumPy arrays where it
takes tensors. Names and semantics follow PyTorch (`mmu.matmul`, `t.sum(dim)`,
`mmu.functional.cross_entropy`, ...).
"""
from . import _dnnl_loader

_dnnl_loader.preload()

from . import _C  # noqa: E402
from ._C import Tensor  # noqa: E402
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: E402
from .tensor import (  # noqa: E402,F401
    abs, amax, amin, arange, argmax, argmin, bool, cat, chunk, clamp, exp, float32, full, gather,
    index_select, int64, log, logsumexp, manual_seed, masked_fill, matmul, max, maximum, mean, min,
    minimum, norm, ones, ones_like, permute, rand, randn, reshape, sigmoid, split, sqrt, stack, std,
    sum, tanh, tensor, transpose, tril, triu, var, where, zeros, zeros_like, get_num_threads,
    set_num_threads,
)
from . import functional, io, losses, nn, optim, quantizers  # noqa: E402,F401
from . import data, metrics, tokenizers, train  # noqa: E402,F401  (keep imports light: no matplotlib/PIL at import)
from .io import load, save  # noqa: E402,F401

__version__ = "0.1.0"


def stats():
    """Counters of the C core: oneDNN primitives created, cache hits, allocator bytes."""
    return _C.stats()
