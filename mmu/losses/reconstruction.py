"""Reconstruction losses: l1, mse, smooth L1 / Huber, logit-Laplace (DALL-E dVAE).

Each loss is one fused C kernel (csrc/loss/reconstruction.c) with its backward: a composition of
mmu ops would be 5 to 9 passes over the image. l1/mse are mmu.functional's, re-exported."""
import math
import numbers

from .. import _C
from ..functional import _reduction, l1_loss, mse_loss
from ..tensor import _as_tensor, float32

__all__ = ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "logit_laplace_loss",
           "logit_laplace_map", "logit_laplace_unmap"]

def _float_tensor(x, op, arg):
    t = _as_tensor(x, op, arg)
    if t.dtype != float32:
        raise TypeError(f"{op}: {arg} must be float32, got {t.dtype}")
    return t


def _same_shape(a, b, op, an, bn):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{op}: {an} and {bn} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _real(v, op, name, lo=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise TypeError(f"{op}: {name} must be a finite real number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{op}: {name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    return v


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """torch.nn.functional.smooth_l1_loss: with d = input - target,
    0.5 d² / beta where |d| < beta, |d| - 0.5 beta elsewhere; beta = 0 is exactly l1_loss.
    input and target have the same shape (no broadcasting)."""
    op = "smooth_l1_loss"
    red = _reduction(reduction, op)
    beta = _real(beta, op, "beta", lo=0.0)
    x, y = _float_tensor(input, op, "input"), _float_tensor(target, op, "target")
    _same_shape(x, y, op, "input", "target")
    return _C.smooth_l1_loss(x, y, red, beta)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """torch.nn.functional.huber_loss: with d = input - target,
    0.5 d² where |d| < delta, delta (|d| - 0.5 delta) elsewhere (= delta * smooth_l1 with beta = delta).
    delta must be > 0."""
    op = "huber_loss"
    red = _reduction(reduction, op)
    delta = _real(delta, op, "delta", lo=0.0, lo_open=True)
    x, y = _float_tensor(input, op, "input"), _float_tensor(target, op, "target")
    _same_shape(x, y, op, "input", "target")
    return _C.huber_loss(x, y, red, delta)


def _eps(eps, op):
    eps = _real(eps, op, "eps")
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"{op}: eps must be in [0, 0.5), got {eps}")
    return eps


def logit_laplace_map(x, eps=0.1):
    """DALL-E's pixel squeeze x' = (1 - 2 eps) x + eps: maps [0, 1] into [eps, 1 - eps] so that
    logit(x') stays finite (Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation", sec. A.3)."""
    eps = _eps(eps, "logit_laplace_map")
    x = _float_tensor(x, "logit_laplace_map", "x")
    return x * (1.0 - 2.0 * eps) + eps


def logit_laplace_unmap(x, eps=0.1):
    """Inverse of logit_laplace_map, clamped to [0, 1]: x = clamp((x' - eps) / (1 - 2 eps), 0, 1)
    (how DALL-E turns the decoder's predicted location sigmoid(mu) back into pixels)."""
    eps = _eps(eps, "logit_laplace_unmap")
    x = _float_tensor(x, "logit_laplace_unmap", "x")
    return ((x - eps) * (1.0 / (1.0 - 2.0 * eps))).clamp(0.0, 1.0)


def logit_laplace_loss(x, mu, log_b, eps=0.1, reduction="mean"):
    """Negative log-likelihood of the logit-Laplace distribution of DALL-E's dVAE
    (Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation", appendix A.3).

    Pixels x in [0, 1] are squeezed to x' = (1 - 2 eps) x + eps (logit_laplace_map) and y = logit(x')
    is Laplace(mu, b) with b = exp(log_b). The density of x' is then
        p(x') = 1 / (2 b x' (1 - x')) * exp(-|logit(x') - mu| / b),
    so, per element,
        -log p = log(2 b) + |logit(x') - mu| / b + log(x' (1 - x')).
    The Jacobian of the eps map itself (a constant log(1 - 2 eps)) is not included, as in DALL-E.
    x, mu, log_b all have the same shape (the decoder outputs mu and log_b as 2 x C channels);
    gradients flow to mu and log_b (and to x if it requires grad)."""
    op = "logit_laplace_loss"
    red = _reduction(reduction, op)
    eps = _eps(eps, op)
    if eps == 0.0:
        raise ValueError(f"{op}: eps must be > 0 (logit(0) and logit(1) are infinite)")
    x = _float_tensor(x, op, "x")
    mu = _float_tensor(mu, op, "mu")
    log_b = _float_tensor(log_b, op, "log_b")
    _same_shape(x, mu, op, "x", "mu")
    _same_shape(x, log_b, op, "x", "log_b")
    return _C.logit_laplace_loss(x, mu, log_b, eps, red)
