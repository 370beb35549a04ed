"""ResidualVQ: a stack of VectorQuantize levels on the running residual (RQ-VAE).

Level d quantises the residual r_d = x - sum_{i<d} sg(q_i) (the previous levels' codes detached, as in
vector-quantize-pytorch), and the output is sum_d q_d. Each level's commitment term is
mse(r_d, sg(q_d)) = ||x - sg(sum_{i<=d} q_i)||^2, so the mean of the level losses is RQ-VAE's cumulative
commitment loss (Lee et al. 2022, eq. 6: the distance of z to every partial sum of codes).
"""
import numbers

import numpy as np

from .. import nn
from ..tensor import _as_tensor, float32, full, int64, rand, stack, tensor, zeros
from .stats import codebook_stats
from .._limits import MAX_CODES, MAX_WIDTH, check_at_most, check_elements

__all__ = ["ResidualVQ"]

# levels of one ResidualVQ: RQ-VAE uses 4-16, neural audio codecs up to 32
MAX_LEVELS = 1024


def _int(v, name, lo):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"ResidualVQ: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"ResidualVQ: {name} must be >= {lo}, got {v}")
    return int(v)


class ResidualVQ(nn.Module):
    """Residual vector quantization: num_quantizers VectorQuantize levels, each on what the previous
    levels left unexplained (RQ-VAE; vector-quantize-pytorch's ResidualVQ).

    dim: feature width; num_quantizers: depth Q; codebook_size: K codes per level; codebook_dim: when
    given and != dim, x is projected to codebook_dim (project_in) and the sum back (project_out), the
    residuals live in codebook space; shared_codebook: one codebook (one VectorQuantize) serves all
    levels; quantize_dropout: in training, only the first L levels are used, L uniform in
    [quantize_dropout_cutoff_index + 1, Q] drawn from mmu's seeded RNG (the others get index -1 and
    loss 0); accept_image_fmap: take (B, dim, H, W) instead of (B, N, dim). Other keyword arguments go
    to every VectorQuantize (decay, commitment_weight, kmeans_init, use_cosine_sim, ...).

    forward(x, return_all_losses=False) -> (quantized (like x), indices (B, N, Q) / (B, H, W, Q) int64,
    loss = mean over the used levels of the level losses[, all_losses (Q,)]). With EMA codebooks the loss
    is commitment_weight * RQ-VAE's cumulative commitment mean_d ||x - sg(sum_{i<=d} q_i)||^2. The
    gradient reaching x is the sum of the levels' straight-through gradients, as in
    vector-quantize-pytorch. self.stats: one QuantizerStats per level.

    Defaults come from VectorQuantize (vector-quantize-pytorch's: decay 0.8, commitment_weight 1.0); the
    tokenizers' "rvq" (mmu.tokenizers.make_quantizer) uses 4 levels with decay 0.99, kmeans_init=True,
    threshold_ema_dead_code=1 and commitment_weight = beta 0.25, as RQ-VAE (EMA 0.99, restarts).

    Limits (ValueError before any level is built, see mmu._limits): num_quantizers <= 1024, codebook_size
    <= 2**24, dim and codebook_dim <= 2**20, all the levels' codebooks together and the projection
    <= 2**28 float32 elements each.
    """

    def __init__(self, dim, num_quantizers, codebook_size, shared_codebook=False, quantize_dropout=False,
                 quantize_dropout_cutoff_index=0, codebook_dim=None, accept_image_fmap=False, **vq_kwargs):
        super().__init__()
        from .vq import VectorQuantize  # written beside this module; imported late to keep imports acyclic
        self.dim = _int(dim, "dim", 1)
        self.num_quantizers = _int(num_quantizers, "num_quantizers", 1)
        self.codebook_size = _int(codebook_size, "codebook_size", 1)
        self.codebook_dim = self.dim if codebook_dim is None else _int(codebook_dim, "codebook_dim", 1)
        self.shared_codebook = bool(shared_codebook)
        self.quantize_dropout = bool(quantize_dropout) and self.num_quantizers > 1
        self.quantize_dropout_cutoff_index = _int(quantize_dropout_cutoff_index, "quantize_dropout_cutoff_index", 0)
        if self.quantize_dropout_cutoff_index >= self.num_quantizers:
            raise ValueError(f"ResidualVQ: quantize_dropout_cutoff_index ({quantize_dropout_cutoff_index}) must be "
                             f"< num_quantizers ({num_quantizers})")
        self.accept_image_fmap = bool(accept_image_fmap)
        # sizes before the levels are built (mmu._limits); each VectorQuantize checks its own codebook, this
        # bounds the loop and the levels' total
        op = "ResidualVQ"
        check_at_most(op, "num_quantizers", self.num_quantizers, MAX_LEVELS)
        check_at_most(op, "codebook_size", self.codebook_size, MAX_CODES)
        check_at_most(op, "dim", self.dim, MAX_WIDTH)
        check_at_most(op, "codebook_dim", self.codebook_dim, MAX_WIDTH)
        n_books = 1 if self.shared_codebook else self.num_quantizers
        check_elements(op, f"{n_books} codebooks of ({self.codebook_size}, {self.codebook_dim})",
                       n_books * self.codebook_size * self.codebook_dim)
        if self.codebook_dim != self.dim:
            check_elements(op, f"the projection ({self.codebook_dim}, {self.dim})", self.codebook_dim * self.dim)
        for bad in ("heads", "separate_codebook_per_head"):
            if vq_kwargs.get(bad, None) not in (None, 1, False):
                raise NotImplementedError(f"ResidualVQ: {bad} is not supported (one head per level)")
        for own in ("dim", "codebook_size", "channel_last"):
            if own in vq_kwargs:
                raise TypeError(f"ResidualVQ: {own!r} is set by ResidualVQ itself, not a VectorQuantize keyword here")
        self.project_in = nn.Linear(self.dim, self.codebook_dim) if self.codebook_dim != self.dim else None
        self.project_out = nn.Linear(self.codebook_dim, self.dim) if self.codebook_dim != self.dim else None
        n_books = 1 if self.shared_codebook else self.num_quantizers
        self.layers = nn.ModuleList([VectorQuantize(self.codebook_dim, self.codebook_size, **vq_kwargs)
                                     for _ in range(n_books)])
        self.stats = None

    def level(self, d):
        """The VectorQuantize of level d (the same module for every level with shared_codebook)."""
        return self.layers[0 if self.shared_codebook else d]

    def _rows(self, x):
        # -> (B, N, dim) channel-last view of x, and how to put an output of that layout back
        if x.dtype != float32:
            raise TypeError(f"ResidualVQ: input must be float32, got {x.dtype}")
        if self.accept_image_fmap:
            if x.ndim != 4 or x.shape[1] != self.dim:
                raise ValueError(f"ResidualVQ: input must be (B, dim={self.dim}, H, W) with accept_image_fmap, "
                                 f"got shape {tuple(x.shape)}")
            b, c, h, w = x.shape
            return x.permute(0, 2, 3, 1).reshape(b, h * w, c), (b, h, w)
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise ValueError(f"ResidualVQ: input must be (B, N, dim={self.dim}), got shape {tuple(x.shape)}")
        return x, None

    def _levels_used(self):
        # vector-quantize-pytorch: randrange(cutoff, Q) is the last level used, so L in [cutoff + 1, Q]
        if not (self.training and self.quantize_dropout):
            return self.num_quantizers
        span = self.num_quantizers - self.quantize_dropout_cutoff_index
        u = float(rand(1).numpy()[0])
        return self.quantize_dropout_cutoff_index + 1 + min(int(u * span), span - 1)

    def forward(self, x, return_all_losses=False):
        """x (B, N, dim) (or (B, dim, H, W) with accept_image_fmap=True) -> (quantized, like x; indices,
        int64 (B, N, Q) / (B, H, W, Q), -1 for levels dropped by quantize_dropout; loss, 0-d, the mean
        over the used levels) and, with return_all_losses=True, also the per-level losses (Q,).
        """
        x = _as_tensor(x, "ResidualVQ", "input")
        rows, image = self._rows(x)
        b, n = rows.shape[0], rows.shape[1]
        if self.project_in is not None:
            rows = self.project_in(rows)
        used = self._levels_used()
        residual = rows
        quantized_out = None
        all_indices, all_losses, stats = [], [], []
        for d in range(self.num_quantizers):
            if d >= used:
                all_indices.append(full((b, n), -1, dtype=int64))
                all_losses.append(zeros(()))
                stats.append(None)
                continue
            vq = self.level(d)
            quantized, indices, loss = vq(residual)
            if d + 1 < used:  # the last level's residual is never read
                residual = residual - quantized.detach()
            quantized_out = quantized if quantized_out is None else quantized_out + quantized
            all_indices.append(indices)
            all_losses.append(loss)
            st = getattr(vq, "stats", None)
            stats.append(st if st is not None else codebook_stats(indices.numpy(), self.codebook_size,
                                                                  losses={"loss": float(loss)}))
        total = all_losses[0]
        for loss in all_losses[1:used]:
            total = total + loss
        total = total / float(used) if used > 1 else total
        if self.project_out is not None:
            quantized_out = self.project_out(quantized_out)
        indices = stack(all_indices, dim=-1)  # (B, N, Q)
        if image is not None:
            bb, h, w = image
            quantized_out = quantized_out.reshape(bb, h, w, self.dim).permute(0, 3, 1, 2)
            indices = indices.reshape(bb, h, w, self.num_quantizers)
        self.stats = stats
        if return_all_losses:
            return quantized_out, indices, total, stack(all_losses, dim=0)
        return quantized_out, indices, total

    def _check_indices(self, indices, op):
        indices = _as_tensor(indices, op, "indices")
        if indices.dtype != int64:
            raise TypeError(f"{op}: indices must be int64, got {indices.dtype}")
        lead = 3 if self.accept_image_fmap else 2
        if indices.ndim != lead + 1 or not 1 <= indices.shape[-1] <= self.num_quantizers:
            want = "(B, H, W, q)" if self.accept_image_fmap else "(B, N, q)"
            raise ValueError(f"{op}: indices must be {want} with 1 <= q <= num_quantizers={self.num_quantizers}, "
                             f"got shape {tuple(indices.shape)}")
        a = indices.numpy()
        if a.size and (a.min() < -1 or a.max() >= self.codebook_size):
            raise ValueError(f"{op}: indices must lie in [0, {self.codebook_size}) or be -1 (dropped level), "
                             f"got range [{a.min()}, {a.max()}]")
        return indices

    def get_codes_from_indices(self, indices):
        """indices (B, N, q) (or (B, H, W, q)), q <= Q, -1 = dropped level -> codes (q, B, N, codebook_dim)
        (or (q, B, H, W, codebook_dim)): each level's code vectors, zero where the index is -1."""
        indices = self._check_indices(indices, "ResidualVQ.get_codes_from_indices")
        lead = tuple(indices.shape[:-1])
        flat = indices.numpy().reshape(1, -1, indices.shape[-1])  # (1, M, q): each level's VQ sees (B, N)
        codes = []
        for d in range(indices.shape[-1]):
            idx = flat[:, :, d]
            dropped = idx < 0
            c = self.level(d).get_output_from_indices(tensor(np.maximum(idx, 0)))  # (1, M, codebook_dim)
            c = c.reshape(1, -1, self.codebook_dim)
            if dropped.any():
                c = c.masked_fill(tensor(dropped[..., None]), 0.0)
            codes.append(c.reshape(*lead, self.codebook_dim))
        return stack(codes, dim=0)

    def indices_to_codes(self, indices, num_levels=None):
        """indices (..., Q) -> what forward returned as `quantized` for them (get_output_from_indices)."""
        return self.get_output_from_indices(indices, num_levels)

    def get_output_from_indices(self, indices, num_levels=None):
        """Decode indices to the quantized output (like forward's), from the first num_levels levels only
        (partial decoding; default all levels in indices): project_out(sum_{d < q} code_d)."""
        indices = self._check_indices(indices, "ResidualVQ.get_output_from_indices")
        if num_levels is not None:
            q = indices.shape[-1]
            if isinstance(num_levels, bool) or not isinstance(num_levels, numbers.Integral):
                raise TypeError(f"ResidualVQ.get_output_from_indices: num_levels must be an int, "
                                f"got {type(num_levels).__name__}")
            if not 1 <= num_levels <= q:
                raise ValueError(f"ResidualVQ.get_output_from_indices: num_levels must be in [1, {q}], got {num_levels}")
            indices = indices[..., :int(num_levels)]
        out = self.get_codes_from_indices(indices).sum(0)
        if self.project_out is not None:
            out = self.project_out(out)
        if self.accept_image_fmap:
            out = out.permute(0, 3, 1, 2)
        return out

    def extra_repr(self):
        return (f"dim={self.dim}, num_quantizers={self.num_quantizers}, codebook_size={self.codebook_size}, "
                f"shared_codebook={self.shared_codebook}, quantize_dropout={self.quantize_dropout}")
