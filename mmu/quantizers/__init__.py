"""mmu.quantizers: the quantizers of discrete visual tokenizers, with vector-quantize-pytorch's
vocabulary (VectorQuantize, ResidualVQ, FSQ, LFQ, GumbelQuantize), fused C kernels in csrc/quant/
and codebook statistics (usage, perplexity, dead codes) on every quantizer."""
from . import fsq, gumbel, lfq, residual, stats, vq
from .fsq import *  # noqa: F401,F403
from .gumbel import *  # noqa: F401,F403
from .lfq import *  # noqa: F401,F403
from .residual import *  # noqa: F401,F403
from .stats import *  # noqa: F401,F403
from .vq import *  # noqa: F401,F403

__all__ = stats.__all__ + vq.__all__ + residual.__all__ + fsq.__all__ + lfq.__all__ + gumbel.__all__
