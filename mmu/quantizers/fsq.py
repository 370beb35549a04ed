"""FSQ: finite scalar quantization (Mentzer et al. 2023).

Each of d = len(levels) channels is bounded by tanh and rounded to one of L_i values; the codebook is
the implicit grid of prod(levels) points, so there is nothing to learn, no codebook loss and no dead
codes to restart. Names and defaults follow vector-quantize-pytorch's FSQ; the bound, round (straight-
through), normalisation by L//2 and the code index are one fused C pass (csrc/quant/lfq.c).
"""
import numpy as np

from .. import _C
import importlib

_t = importlib.import_module("mmu.tensor")  # the module (mmu.tensor the attribute is the function)
from ..nn.layers import Linear
from ..nn.module import Module

from .stats import codebook_stats
from .._limits import MAX_CODES, MAX_WIDTH, check_at_most, check_elements

__all__ = ["FSQ"]


def _levels(levels):
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__"):
        raise TypeError(f"FSQ: levels must be a list of ints, got {levels!r}")
    out = []
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"FSQ: levels must be ints, got {levels!r}")
        if v < 2:
            raise ValueError(f"FSQ: every level must be >= 2, got {list(levels)}")
        out.append(int(v))
    if not out:
        raise ValueError("FSQ: levels must not be empty")
    # the product in Python ints (NumPy's int64 product wraps silently past 2**63)
    size = 1
    for v in out:
        size *= v
        if size > MAX_CODES:
            raise ValueError(f"FSQ: levels {out if len(out) <= 32 else str(out[:32])[:-1] + ', ...]'} give more than "
                             f"{MAX_CODES} codes (the product of the levels); at most {MAX_CODES} per codebook")
    return out


def _int_arg(v, name, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"FSQ: {name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _channel_last(x):
    # (B, C, *spatial) -> (B, prod(spatial), C), and the spatial shape to undo it
    spatial = tuple(x.shape[2:])
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    return x.permute(perm).reshape(x.shape[0], -1, x.shape[1]), spatial


def _channel_first(x, spatial):
    # (B, prod(spatial), C) -> (B, C, *spatial)
    b, _, c = x.shape
    x = x.reshape((b,) + spatial + (c,))
    return x.permute((0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))


def _tokens_last(x, dim, channel_first, op):
    """(B, N, dim), or channel-first (B, dim, *spatial) when channel_first or x has >= 4 dims ->
    (x as (B, N, dim), spatial or None); FSQ and LFQ take their input through this."""
    spatial = None
    if channel_first or x.ndim >= 4:
        if x.ndim < 3:
            raise ValueError(f"{op}: channel-first input must be (B, dim, ...), got {tuple(x.shape)}")
        x, spatial = _channel_last(x)
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"{op}: expected input (B, N, {dim}) or channel-first (B, {dim}, ...), "
                         f"got {tuple(x.shape)}")
    return x, spatial


def _tokens_back(out, idx, spatial):
    """Undoes _tokens_last on a quantizer's output (B, N, C) and indices (B, N, ...): back to
    (B, C, *spatial) and (B, *spatial, ...) when the input was channel-first."""
    if spatial is None:
        return out, idx
    return _channel_first(out, spatial), idx.reshape((idx.shape[0],) + spatial + tuple(idx.shape[2:]))


class FSQ(Module):
    """FSQ(levels, dim=None, num_codebooks=1, keep_num_codebooks_dim=None, channel_first=False,
    projection_has_bias=True, return_indices=True).

    forward(z): z (B, N, dim), or channel-first (B, dim, *spatial) (4-D and up, or channel_first=True)
    -> (quantized same shape, indices (B, N) / (B, *spatial) (with a trailing num_codebooks dim when
    keep_num_codebooks_dim), loss = 0). With dim != len(levels) * num_codebooks, Linear projections
    map dim -> codes -> dim. Each code value is in [-1, 1]: round(tanh-bounded z) / (L // 2).
    Limits (ValueError, see mmu._limits): prod(levels) <= 2**24 codes per codebook, dim and
    len(levels) * num_codebooks <= 2**20, the projection <= 2**28 float32 elements.
    """

    def __init__(self, levels, dim=None, num_codebooks=1, keep_num_codebooks_dim=None, channel_first=False,
                 projection_has_bias=True, return_indices=True):
        super().__init__()
        self.levels = _levels(levels)
        self.num_codebooks = _int_arg(num_codebooks, "num_codebooks")
        self.codebook_dim = len(self.levels)
        self.effective_codebook_dim = self.codebook_dim * self.num_codebooks
        self.keep_num_codebooks_dim = (self.num_codebooks > 1) if keep_num_codebooks_dim is None \
            else bool(keep_num_codebooks_dim)
        if self.num_codebooks > 1 and not self.keep_num_codebooks_dim:
            raise ValueError("FSQ: keep_num_codebooks_dim must be True when num_codebooks > 1")
        check_at_most("FSQ", "len(levels) * num_codebooks", self.effective_codebook_dim, MAX_WIDTH)
        self.dim = self.effective_codebook_dim if dim is None else check_at_most("FSQ", "dim", _int_arg(dim, "dim"),
                                                                                 MAX_WIDTH)
        self.channel_first = bool(channel_first)
        self.return_indices = bool(return_indices)
        self.has_projections = self.dim != self.effective_codebook_dim
        if self.has_projections:
            check_elements("FSQ", f"the projection ({self.effective_codebook_dim}, {self.dim})",
                           self.effective_codebook_dim * self.dim)
            self.project_in = Linear(self.dim, self.effective_codebook_dim, bias=projection_has_bias)
            self.project_out = Linear(self.effective_codebook_dim, self.dim, bias=projection_has_bias)
        lv = np.array(self.levels, dtype=np.int64)
        self._lv = lv
        self._basis = np.cumprod(np.concatenate([[1], lv[:-1]])).astype(np.int64)
        self._half_width = lv // 2
        self.codebook_size = int(np.prod(lv))
        self.stats = None

    # --- the scalar quantizer itself -------------------------------------------------------------
    def bound(self, z):
        """tanh(z + shift) * half_l - offset (the float32 reference formula, for inspection/tests)."""
        z = _t._as_tensor(z, "FSQ.bound")
        if z.ndim < 1 or z.shape[-1] != self.codebook_dim:
            raise ValueError(f"FSQ.bound: z must be (..., {self.codebook_dim}) (one value per level), "
                             f"got {tuple(z.shape)}")
        lv = self._lv.astype(np.float32)
        half_l = (lv - 1) * np.float32(1.001) / np.float32(2)
        offset = np.where(self._lv % 2 == 0, np.float32(0.5), np.float32(0.0)).astype(np.float32)
        shift = np.arctanh(offset / half_l).astype(np.float32)
        return _t.tanh(z + _t.tensor(shift)) * _t.tensor(half_l) - _t.tensor(offset)

    def quantize(self, z):
        """z (..., len(levels)) -> codes in [-1, 1] (straight-through round)."""
        out, _ = _C.fsq(_t._as_tensor(z, "FSQ.quantize"), self.levels, False)
        return out

    def codes_to_indices(self, zhat):
        """codes (..., len(levels)) in the FSQ grid -> int64 indices (...)."""
        z = zhat.detach().numpy() if hasattr(zhat, "detach") else np.asarray(zhat)
        if z.dtype == bool or not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer)):
            raise TypeError(f"FSQ.codes_to_indices: codes must be numbers, got {type(zhat).__name__} of dtype {z.dtype}")
        if z.shape[-1:] != (self.codebook_dim,):
            raise ValueError(f"FSQ.codes_to_indices: codes must end in {self.codebook_dim}, got {z.shape}")
        digits = np.rint(z.astype(np.float64) * self._half_width + self._half_width).astype(np.int64)
        if (digits < 0).any() or (digits >= self._lv).any():
            raise ValueError("FSQ.codes_to_indices: codes are not on the FSQ grid")
        return _t.tensor((digits * self._basis).sum(-1).astype(np.int64))

    def _indices_to_raw_codes(self, indices, op):
        idx = indices.numpy() if hasattr(indices, "numpy") else np.asarray(indices)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"FSQ.{op}: indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.codebook_size):
            raise ValueError(f"FSQ.{op}: indices must lie in [0, {self.codebook_size})")
        digits = (idx[..., None] // self._basis) % self._lv
        return ((digits - self._half_width) / self._half_width).astype(np.float32)

    def indices_to_codes(self, indices, project_out=True):
        """int indices (..., [num_codebooks]) -> codes (..., effective dim), through project_out when
        there are projections (project_out=False gives the raw grid codes), channel-first for images."""
        codes = self._indices_to_raw_codes(indices, "indices_to_codes")
        is_img = codes.ndim - 1 >= 3 + int(self.keep_num_codebooks_dim)
        if self.keep_num_codebooks_dim:
            codes = codes.reshape(codes.shape[:-2] + (-1,))
        codes = _t.tensor(codes)
        if project_out and self.has_projections:
            codes = self.project_out(codes)
        if (is_img or self.channel_first) and codes.ndim >= 3:
            b, c = codes.shape[0], codes.shape[-1]
            spatial = tuple(codes.shape[1:-1])
            codes = _channel_first(codes.reshape(b, -1, c), spatial)
        return codes

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, z):
        """z (B, N, dim) or channel-first (B, dim, *spatial) -> (quantized, same shape; indices, int64
        (B, N) / (B, *spatial), with a trailing num_codebooks dim when keep_num_codebooks_dim; loss, 0 —
        FSQ has no auxiliary loss). The rounding passes gradients straight through.
        """
        z = _t._as_tensor(z, "FSQ")
        z, spatial = _tokens_last(z, self.dim, self.channel_first, "FSQ")
        if self.has_projections:
            z = self.project_in(z)
        b, n = z.shape[0], z.shape[1]
        zc = z.reshape(b, n, self.num_codebooks, self.codebook_dim)
        codes, idx = _C.fsq(zc, self.levels, True)
        out = codes.reshape(b, n, self.effective_codebook_dim)
        if self.has_projections:
            out = self.project_out(out)
        if not self.keep_num_codebooks_dim:
            idx = idx.reshape(b, n)
        out, idx = _tokens_back(out, idx, spatial)
        loss = _t.zeros(())
        self.stats = codebook_stats(idx, self.codebook_size, losses={})
        return out, (idx if self.return_indices else None), loss

    def extra_repr(self):
        return f"levels={self.levels}, dim={self.dim}, num_codebooks={self.num_codebooks}"
