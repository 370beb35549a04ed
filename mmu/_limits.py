"""Size limits the constructors of quantizers and discriminators check before they allocate or loop.

An absurd integer used to hang a constructor or eat the machine's memory before anything complained
(LFQ(dim=2**40) evaluated 2**2**40, ResidualVQ(5, 2**62, 49) looped over 2**62 levels,
NLayerDiscriminator(n_layers=2**31-1) reached 6 GB). The limits are far above any published model and
low enough that one tensor a constructor makes fits a workstation's memory:

MAX_CODES     codes in one codebook, 2**24 (16.7 M): per-forward histograms are (K,), LFQ's entropy
              accumulator is (2**bits,); the largest published codebooks are 2**18.
MAX_ELEMENTS  float32 elements of one parameter or buffer, 2**28 (1 GiB).
MAX_WIDTH     a feature width (dim, codebook_dim, channels), 2**20.
"""
from ._args import is_int

MAX_CODES = 2 ** 24
MAX_ELEMENTS = 2 ** 28
MAX_WIDTH = 2 ** 20


def check_at_most(op, name, value, limit, why=""):
    """ValueError naming op and argument when the int value exceeds limit (why: what the limit protects)."""
    if is_int(value) and value > limit:
        raise ValueError(f"{op}: {name} must be <= {limit}{why}, got {value}")
    return value


def check_elements(op, what, count, limit=MAX_ELEMENTS):
    """ValueError when a tensor of count float32 elements (an exact Python int) would exceed limit."""
    if count > limit:
        raise ValueError(f"{op}: {what} would hold {count} float32 elements ({count * 4 / 2 ** 30:.4g} GiB); "
                         f"at most {limit} ({limit * 4 / 2 ** 30:.4g} GiB) per tensor")
    return count
