"""mmu: discrete visual tokenizers and unified multimodal models on a fast CPU core.

NumPy in, NumPy out: `mmu.tensor(array)` makes a Tensor, `t.numpy()` gives the
array back without a copy, and every function accepts NumPy arrays where it
takes tensors. Names and semantics follow PyTorch (`mmu.matmul`, `t.sum(dim)`,
`mmu.functional.cross_entropy`, ...).
"""
import os as _os

# GNU OpenMP reads its settings once, when libgomp is loaded, which the next lines do (libdnnl.so.3
# and _C.so link it). By default its idle threads spin 300,000 times before sleeping; when another
# process holds a core, a spinning mmu thread then takes the time slice the thread with work needs,
# and every barrier costs milliseconds (a README snippet: 65 s on 2 threads against 3.5 s on one).
# A short spin keeps the quiet-machine speed and does not collapse under load: see the README's
# "Threads" section and benchmarks/bench_threads.py. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
# wins. (torch ships its own libgomp; it reads the same variables if it is imported after mmu.)
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"

from . import _dnnl_loader  # noqa: E402

_dnnl_loader.preload()

from . import _C  # noqa: E402
from ._C import Generator, Tensor  # noqa: E402,F401
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: E402
from .tensor import (  # noqa: E402,F401
    abs, amax, amin, arange, argmax, argmin, bool, cat, chunk, clamp, cumsum, exp, float32, full, gather,
    index_select, int64, log, logsumexp, manual_seed, masked_fill, matmul, max, maximum, mean, min,
    minimum, norm, ones, ones_like, permute, rand, randn, reshape, sigmoid, split, sqrt, stack, std,
    sum, tanh, tensor, transpose, tril, triu, var, where, zeros, zeros_like, get_num_threads,
    set_num_threads,
)
from ._fn_sort import argsort, sort, topk  # noqa: E402  (also Tensor.sort / .argsort / .topk)
from . import functional, io, losses, nn, optim, quantizers  # noqa: E402,F401
from . import data, metrics, tokenizers, train  # noqa: E402,F401  (keep imports light: no matplotlib/PIL at import)
from . import text  # noqa: E402,F401  (mmu.text imports Hugging Face tokenizers only when a tokenizer is made)
from .io import load, save  # noqa: E402,F401
from . import config, models  # noqa: E402,F401
from .config import from_config, get_config  # noqa: E402,F401
from ._fn_sampling import multinomial  # noqa: E402,F401
from . import generate  # noqa: E402,F401  (AR sampling, MaskGIT and RVQ depth decoding)
from . import distributed  # noqa: E402,F401  (MPI collectives; mpi4py is imported only under a launcher)

__version__ = "0.1.0"


def stats():
    """Counters of the C core: oneDNN primitives created, cache hits, allocator bytes."""
    return _C.stats()
