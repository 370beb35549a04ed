"""KVCache: preallocated per-layer key/value buffers for incremental decoding.

Every mmu tensor is row-major contiguous and slicing copies, so a cache that
grew by concatenation, or was sliced to its filled part each step, would copy
the whole prefix once per token. This cache allocates each layer's buffers once,
(batch, num_kv_heads, max_len, head_dim), writes a step's keys/values in place
at the current start position, and hands attention the full buffers together
with the number of valid positions (kv_len): scaled_dot_product_attention reads
the first kv_len keys in place.
"""
import numpy as np

from ..autograd import is_grad_enabled
from ..tensor import _as_tensor, zeros as _zeros
from ._layer_args import _int

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of every layer, preallocated (batch_size, num_kv_heads, max_len, head_dim).

    length: the number of positions written so far (the same for every layer and batch row:
    with left-padded prompts the padding occupies cache slots too and the attention mask hides
    it). A forward pass at start position `length` calls update(layer_idx, k, v) in every layer,
    which writes k, v (B, H_kv, L, head_dim) at positions length .. length+L-1 and returns
    (k_buf, v_buf, kv_len = length + L); once every layer has written, the model calls
    advance(L). Nothing is ever reallocated; update raises if the chunk does not fit.

    The cache holds constants: writing a key that requires grad while grad is recorded is
    refused (decode under `with mmu.no_grad():`), since backward could not reach through it.
    """

    def __init__(self, num_layers, batch_size, num_kv_heads, max_len, head_dim):
        cls = "KVCache"
        self.num_layers = _int(num_layers, "num_layers", cls, 1)
        self.batch_size = _int(batch_size, "batch_size", cls, 1)
        self.num_kv_heads = _int(num_kv_heads, "num_kv_heads", cls, 1)
        self.max_len = _int(max_len, "max_len", cls, 1)
        self.head_dim = _int(head_dim, "head_dim", cls, 1)
        per_layer = self.batch_size * self.num_kv_heads * self.max_len * self.head_dim
        if per_layer > 2 ** 31:
            raise ValueError(f"KVCache: a layer buffer of {per_layer} floats (batch {batch_size} x kv heads "
                             f"{num_kv_heads} x max_len {max_len} x head_dim {head_dim}) is too large")
        shape = (self.batch_size, self.num_kv_heads, self.max_len, self.head_dim)
        self.keys = [_zeros(*shape) for _ in range(self.num_layers)]
        self.values = [_zeros(*shape) for _ in range(self.num_layers)]
        self.length = 0

    @property
    def shape(self):
        """The shape of every layer's key (and value) buffer."""
        return (self.batch_size, self.num_kv_heads, self.max_len, self.head_dim)

    def _layer(self, layer_idx):
        if not isinstance(layer_idx, (int, np.integer)) or isinstance(layer_idx, bool) or \
                not 0 <= layer_idx < self.num_layers:
            raise IndexError(f"KVCache: layer_idx must be an int in [0, {self.num_layers}), got {layer_idx!r}")
        return int(layer_idx)

    def update(self, layer_idx, k, v):
        """Write k, v (batch, num_kv_heads, L, head_dim) at positions length .. length+L-1 of
        layer layer_idx, in place. Returns (k_buf, v_buf, kv_len): the whole buffers
        (batch, num_kv_heads, max_len, head_dim) and kv_len = length + L, the number of valid
        positions for this step's attention. length itself moves only with advance()."""
        i = self._layer(layer_idx)
        k, v = _as_tensor(k, "KVCache.update", "k"), _as_tensor(v, "KVCache.update", "v")
        want = (self.batch_size, self.num_kv_heads, self.head_dim)
        for name, t in (("k", k), ("v", v)):
            if t.ndim != 4 or (t.shape[0], t.shape[1], t.shape[3]) != want:
                raise ValueError(f"KVCache.update: {name} must be (batch {want[0]}, num_kv_heads {want[1]}, L, "
                                 f"head_dim {want[2]}), got {t.shape}")
            if t.dtype != np.float32:
                raise TypeError(f"KVCache.update: {name} must be float32, got {t.dtype}")
        if k.shape != v.shape:
            raise ValueError(f"KVCache.update: k {k.shape} and v {v.shape} must have the same shape")
        if is_grad_enabled() and (k.requires_grad or v.requires_grad):
            raise RuntimeError("KVCache.update: the keys/values require grad while grad is recorded; a cache "
                               "holds constants that backward cannot reach through: decode under "
                               "`with mmu.no_grad():`")
        n = k.shape[2]
        start, end = self.length, self.length + n
        if end > self.max_len:
            raise ValueError(f"KVCache.update: {n} new positions after {start} cached exceed max_len "
                             f"{self.max_len}")
        kb, vb = self.keys[i], self.values[i]
        kb.numpy()[:, :, start:end] = k.numpy()
        vb.numpy()[:, :, start:end] = v.numpy()
        kb._bump_version()
        vb._bump_version()
        return kb, vb, end

    append = update

    def advance(self, n):
        """Move the start position by n after every layer has written n positions."""
        n = _int(n, "n", "KVCache.advance", 0)
        if self.length + n > self.max_len:
            raise ValueError(f"KVCache.advance: {self.length} + {n} positions exceed max_len {self.max_len}")
        self.length += n

    def reset(self):
        """Forget every position (length 0); the buffers stay allocated."""
        self.length = 0

    def crop(self, n):
        """Keep only the first n positions (0 <= n <= length), e.g. to roll back a rejected draft."""
        n = _int(n, "n", "KVCache.crop", 0)
        if n > self.length:
            raise ValueError(f"KVCache.crop: cannot crop to {n} positions, only {self.length} are cached")
        self.length = n

    def _new_like(self, batch_size):
        out = KVCache.__new__(KVCache)
        out.num_layers, out.batch_size, out.num_kv_heads = self.num_layers, batch_size, self.num_kv_heads
        out.max_len, out.head_dim, out.length = self.max_len, self.head_dim, self.length
        return out

    def expand(self, n):
        """A new cache of batch_size * n rows where rows b*n .. b*n+n-1 hold row b's cached prefix
        (repeat_interleave order): n samples continue one prompt from a single prefill. Only the
        first `length` positions are copied; self is unchanged."""
        n = _int(n, "n", "KVCache.expand", 1)
        out = self._new_like(self.batch_size * n)
        shape = out.shape
        out.keys, out.values = [], []
        for src, dst in ((self.keys, out.keys), (self.values, out.values)):
            for buf in src:
                t = _zeros(*shape)
                t.numpy()[:, :, :self.length] = np.repeat(buf.numpy()[:, :, :self.length], n, axis=0)
                dst.append(t)
        return out

    def copy(self):
        """An independent cache with the same contents, length and capacity."""
        out = self._new_like(self.batch_size)
        out.keys = [_copy(b) for b in self.keys]
        out.values = [_copy(b) for b in self.values]
        return out

    def __repr__(self):
        return (f"KVCache(num_layers={self.num_layers}, batch_size={self.batch_size}, num_kv_heads="
                f"{self.num_kv_heads}, max_len={self.max_len}, head_dim={self.head_dim}, length={self.length})")


def _copy(buf):
    t = _zeros(*buf.shape)
    t.numpy()[...] = buf.numpy()
    return t
