"""dropout on mmu's seeded Philox stream (csrc/ops/dropout.c).

Part of mmu.functional (re-exported there).
"""
from . import _C
from ._args import check_real as _real, flag as _flag
from .tensor import _as_tensor

__all__ = ["dropout"]


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1/(1-p), on mmu's seeded Philox
    stream (mmu.manual_seed): the mask depends on the seed and the stream position only, not on
    the thread count. With training=False or p=0 the input itself is returned, as torch does."""
    if _flag(inplace, "dropout", "inplace"):
        raise ValueError("dropout: inplace=True is not supported (mmu ops do not modify their inputs)")
    p = _real(p, "dropout", "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    x = _as_tensor(input, "dropout")
    if not _flag(training, "dropout", "training") or p == 0.0 or x.numel() == 0:
        return x
    return _C.dropout(x, p)
