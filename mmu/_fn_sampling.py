"""multinomial on mmu's counter-based Philox stream (csrc/ops/sampling.c).

Exported as mmu.multinomial. The fused logits sampler of the same C family is
mmu.generate.sample_logits.
"""
from . import _C
from ._args import check_int as _int, flag as _flag
from .tensor import _as_tensor

__all__ = ["multinomial"]


def multinomial(input, num_samples, replacement=False, generator=None):
    """Category ids drawn from the rows of `input`, torch.multinomial's semantics.

    input: (V,) or (R, V) float32 non-negative weights, finite, each row summing to > 0 (they need
    not be normalised). Returns int64 (num_samples,) or (R, num_samples). Without replacement a
    category is drawn at most once per row, so num_samples must not exceed the number of non-zero
    weights of any row; the ids come in the order sequential draws would give them.
    generator: an mmu.Generator, or None for the global stream (mmu.manual_seed). The draw of row r
    depends on the seed, the stream position and r only: the same at any thread count.
    """
    num_samples = _int(num_samples, "multinomial", "num_samples")
    replacement = _flag(replacement, "multinomial", "replacement")
    x = _as_tensor(input, "multinomial")
    return _C.multinomial(x, num_samples, replacement, generator)
