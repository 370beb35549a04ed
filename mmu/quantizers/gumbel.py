"""GumbelQuantize: Gumbel-softmax quantization with a KL to the uniform prior (DALL-E dVAE).

The encoder's features are projected by a 1x1 convolution to logits over K codes; a (hard or soft)
Gumbel-softmax sample of those logits mixes the codebook rows (taming-transformers' GumbelQuantize,
the DALL-E dVAE bottleneck). The loss is kl_weight times the KL divergence of softmax(logits) from
the uniform prior over codes. The Gumbel noise comes from mmu's seeded counter-based RNG, so
`mmu.manual_seed(s)` reproduces a training step exactly.
"""
import math
import numbers

import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import _as_tensor, arange, argmax, clamp, float32, int64, log, rand
from .stats import codebook_stats
from .._limits import MAX_CODES, MAX_WIDTH, check_at_most, check_elements

__all__ = ["GumbelQuantize", "gumbel_softmax", "gumbel_noise", "kl_to_uniform", "gumbel_temperature_schedule"]

# u is drawn from [0, 1): u = 0 would give -log(-log 0) = -inf, so u is clamped to the smallest
# normal float first (the noise is then bounded below by -log(-log(FLT_MIN)) = -4.47).
_U_MIN = float(np.finfo(np.float32).tiny)


def _int(v, name, op, lo=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if lo is not None and v < lo:
        raise ValueError(f"{op}: {name} must be >= {lo}, got {v}")
    return int(v)


def _positive(v, name, op):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{op}: {name} must be a finite number > 0, got {v}")
    return float(v)


def gumbel_noise(*size):
    """Standard Gumbel samples -log(-log(u)), u ~ U[0, 1) from mmu's seeded RNG (u clamped away from 0)."""
    u = rand(*size)
    return -log(-log(clamp(u, min=_U_MIN)))


def _check_dim(dim, ndim, op):
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise IndexError(f"{op}: dim {dim} out of range for a tensor with {ndim} dims")
    return int(dim) % ndim


def _logits_and_dim(logits, dim, op):
    """The checks gumbel_softmax and kl_to_uniform share: float32 logits with >= 1 dim, dim wrapped."""
    logits = _as_tensor(logits, op, "logits")
    if logits.dtype != float32:
        raise TypeError(f"{op}: logits must be float32, got {logits.dtype}")
    if logits.ndim == 0:
        raise ValueError(f"{op}: logits must have at least one dim")
    return logits, _check_dim(dim, logits.ndim, op)


def _one_hot_of_max(y, dim):
    # ties -> the first maximum, as torch's max(dim) does on CPU
    idx = argmax(y, dim=dim, keepdim=True)
    shape = [1] * y.ndim
    shape[dim] = y.shape[dim]
    return (idx == arange(y.shape[dim]).reshape(shape)).to(float32), idx


def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1, *, noise=None):
    """torch.nn.functional.gumbel_softmax: softmax((logits + g) / tau) along dim, g ~ Gumbel(0, 1).

    hard=True returns the one-hot of the argmax in the forward pass with the soft sample's gradient
    (straight-through: y_hard - sg(y_soft) + y_soft). `eps` is accepted for torch compatibility and
    unused (as in torch). `noise` (keyword only): the Gumbel noise to use instead of drawing it from
    mmu's RNG (same shape as logits) -- to reproduce a sample exactly, e.g. against a reference."""
    logits, dim = _logits_and_dim(logits, dim, "gumbel_softmax")
    tau = _positive(tau, "tau", "gumbel_softmax")
    if noise is None:
        noise = gumbel_noise(*logits.shape)
    else:
        noise = _as_tensor(noise, "gumbel_softmax", "noise")
        if tuple(noise.shape) != tuple(logits.shape):
            raise ValueError(f"gumbel_softmax: noise has shape {tuple(noise.shape)}, logits {tuple(logits.shape)}")
    y_soft = F.softmax((logits + noise) / tau if tau != 1.0 else logits + noise, dim=dim)
    if not hard:
        return y_soft
    y_hard, _ = _one_hot_of_max(y_soft.detach(), dim)
    return y_hard - y_soft.detach() + y_soft


def kl_to_uniform(logits, dim=1):
    """Mean over positions of KL(softmax(logits) || uniform) = sum_k q_k log(q_k K + 1e-10) along dim
    (taming-transformers' GumbelQuantize loss before its kl_weight). Returns a 0-d tensor."""
    logits, dim = _logits_and_dim(logits, dim, "kl_to_uniform")
    k = logits.shape[dim]
    q = F.softmax(logits, dim=dim)
    return (q * log(q * float(k) + 1e-10)).sum(dim).mean()


def gumbel_temperature_schedule(step, total_steps, start=1.0, end=1.0 / 16):
    """Cosine-annealed Gumbel-softmax temperature, as DALL-E's dVAE (Ramesh et al. 2021, sec. A.2:
    tau annealed from 1 to 1/16 over the first 150,000 updates with cosine annealing):
    tau(step) = end + (start - end) * (1 + cos(pi * min(step, total) / total)) / 2; `end` after total."""
    step = _int(step, "step", "gumbel_temperature_schedule", 0)
    total_steps = _int(total_steps, "total_steps", "gumbel_temperature_schedule", 1)
    start = _positive(start, "start", "gumbel_temperature_schedule")
    end = _positive(end, "end", "gumbel_temperature_schedule")
    t = min(step, total_steps) / total_steps
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


class GumbelQuantize(nn.Module):
    """Gumbel-softmax quantizer (DALL-E dVAE / taming-transformers' GumbelQuantize).

    dim: input channels; codebook_size: K codes; embedding_dim: code width (default dim).
    forward(x, temperature=None): x (B, dim, H, W) channel-first or (B, N, dim) channel-last ->
    (quantized (B, embedding_dim, H, W) / (B, N, embedding_dim), indices (B, H, W) / (B, N) int64,
    loss = kl_weight * kl_to_uniform(logits)). Training: one_hot = gumbel_softmax(logits, tau,
    hard=straight_through) over the codes, quantized = one_hot @ embed.weight; eval: no noise, the
    code of the largest logit (deterministic). Parameters: proj (Conv2d(dim, K, 1)), embed
    (Embedding(K, embedding_dim)), named as taming's so its checkpoints map one to one.
    temperature is fixed (default 1.0) unless forward is given one; DVAE passes
    gumbel_temperature_schedule(step) instead, annealed from temp_start 1 to temp_end 1/16 over
    temp_anneal_steps (DALL-E). kl_weight 5e-4 is taming's default and DVAE's.
    Limits (ValueError before allocating, see mmu._limits): codebook_size <= 2**24, dim and
    embedding_dim <= 2**20, proj and embed <= 2**28 float32 elements each.
    """

    def __init__(self, dim, codebook_size, embedding_dim=None, straight_through=True, kl_weight=5e-4,
                 temperature=1.0):
        super().__init__()
        self.dim = _int(dim, "dim", "GumbelQuantize", 1)
        self.codebook_size = _int(codebook_size, "codebook_size", "GumbelQuantize", 1)
        self.embedding_dim = self.dim if embedding_dim is None else _int(embedding_dim, "embedding_dim",
                                                                         "GumbelQuantize", 1)
        op = "GumbelQuantize"
        check_at_most(op, "codebook_size", self.codebook_size, MAX_CODES)
        check_at_most(op, "dim", self.dim, MAX_WIDTH)
        check_at_most(op, "embedding_dim", self.embedding_dim, MAX_WIDTH)
        check_elements(op, f"proj ({self.codebook_size}, {self.dim}, 1, 1)", self.codebook_size * self.dim)
        check_elements(op, f"embed ({self.codebook_size}, {self.embedding_dim})", self.codebook_size * self.embedding_dim)
        self.straight_through = bool(straight_through)
        if isinstance(kl_weight, bool) or not isinstance(kl_weight, numbers.Real) or kl_weight < 0:
            raise ValueError(f"GumbelQuantize: kl_weight must be a number >= 0, got {kl_weight!r}")
        self.kl_weight = float(kl_weight)
        self.temperature = _positive(temperature, "temperature", "GumbelQuantize")
        self.proj = nn.Conv2d(self.dim, self.codebook_size, 1)
        self.embed = nn.Embedding(self.codebook_size, self.embedding_dim)
        self.stats = None

    def _flatten_input(self, x):
        # Both layouts become (M, dim) rows so the softmax/argmax over codes runs on contiguous rows.
        if x.dtype != float32:
            raise TypeError(f"GumbelQuantize: input must be float32, got {x.dtype}")
        if x.ndim == 4:
            b, c, h, w = x.shape
            if c != self.dim:
                raise ValueError(f"GumbelQuantize: channel-first input (B, dim, H, W) needs dim = {self.dim}, "
                                 f"got shape {tuple(x.shape)}")
            return x.permute(0, 2, 3, 1).reshape(b * h * w, c), (b, h, w), True
        if x.ndim == 3:
            b, n, c = x.shape
            if c != self.dim:
                raise ValueError(f"GumbelQuantize: channel-last input (B, N, dim) needs dim = {self.dim}, "
                                 f"got shape {tuple(x.shape)}")
            return x.reshape(b * n, c), (b, n), False
        raise ValueError(f"GumbelQuantize: input must be (B, dim, H, W) or (B, N, dim), got shape {tuple(x.shape)}")

    def forward(self, x, temperature=None, *, noise=None):
        """x -> (quantized, indices, loss); `noise` (keyword only): explicit Gumbel noise (M, K) rows
        in the (positions, codes) layout, to reproduce a sample (tests); eval mode draws no noise and ignores it."""
        x = _as_tensor(x, "GumbelQuantize", "input")
        tau = self.temperature if temperature is None else _positive(temperature, "temperature", "GumbelQuantize")
        rows, lead, channel_first = self._flatten_input(x)
        k = self.codebook_size
        # the 1x1 convolution as a linear map over rows (same weights, same math, no layout shuffles)
        logits = F.linear(rows, self.proj.weight.reshape(k, self.dim), self.proj.bias)  # (M, K)
        if self.training and self.straight_through:
            # (y_hard - sg(y_soft) + y_soft) @ E, regrouped: the value is E[argmax]; E's gradient is
            # y_hard^T g (a scatter-add: embedding's backward), y_soft's is g E^T. The one-hot is never
            # materialised and E^T g over all K codes is never formed (torch's einsum does both).
            y_soft = gumbel_softmax(logits, tau=tau, hard=False, dim=1, noise=noise)
            indices = argmax(y_soft.detach(), dim=1)
            soft_mix = y_soft @ self.embed.weight.detach()  # (M, D)
            quantized = F.embedding(indices, self.embed.weight) + (soft_mix - soft_mix.detach())
        elif self.training:
            y_soft = gumbel_softmax(logits, tau=tau, hard=False, dim=1, noise=noise)
            indices = argmax(y_soft.detach(), dim=1)
            quantized = y_soft @ self.embed.weight  # (M, D)
        else:
            indices = argmax(logits.detach(), dim=1)
            quantized = F.embedding(indices, self.embed.weight)
        kl = kl_to_uniform(logits, dim=1)
        loss = kl * self.kl_weight
        d = self.embedding_dim
        if channel_first:
            b, h, w = lead
            quantized = quantized.reshape(b, h, w, d).permute(0, 3, 1, 2)
        else:
            quantized = quantized.reshape(*lead, d)
        indices = indices.reshape(*lead)
        self.stats = codebook_stats(indices.numpy(), k, losses={"kl": float(kl)})
        return quantized, indices, loss

    def get_codes_from_indices(self, indices):
        """int64 indices (...) -> codebook rows (..., embedding_dim)."""
        indices = _as_tensor(indices, "GumbelQuantize.get_codes_from_indices", "indices")
        if indices.dtype != int64:
            raise TypeError(f"GumbelQuantize.get_codes_from_indices: indices must be int64, got {indices.dtype} "
                            f"with shape {tuple(indices.shape)}")
        return F.embedding(indices, self.embed.weight)

    def indices_to_codes(self, indices):
        """indices (B, H, W) or (B, N) -> what forward returns as `quantized` in eval mode for them:
        (B, embedding_dim, H, W) for image indices, (B, N, embedding_dim) otherwise."""
        codes = self.get_codes_from_indices(indices)
        return codes.permute(0, 3, 1, 2) if codes.ndim == 4 else codes

    def extra_repr(self):
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, embedding_dim={self.embedding_dim}, "
                f"straight_through={self.straight_through}, kl_weight={self.kl_weight}, "
                f"temperature={self.temperature}")
