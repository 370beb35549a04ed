"""Token objectives: next-token (shifted) and masked-token cross-entropy helpers, and the KL to the
uniform prior of Gumbel quantizers (re-exported from mmu.quantizers.gumbel)."""
import numpy as np

from .._args import check_int
from ..functional import cross_entropy
from ..quantizers.gumbel import kl_to_uniform
from ..tensor import _as_tensor, float32, int64, bool as _bool

__all__ = ["next_token_loss", "masked_token_loss", "kl_to_uniform"]


def _check(logits, tokens, op, tname):
    logits = _as_tensor(logits, op, "logits")
    tokens = _as_tensor(tokens, op, tname)
    if logits.dtype != float32:
        raise TypeError(f"{op}: logits must be float32, got {logits.dtype}")
    if tokens.dtype != int64:
        raise TypeError(f"{op}: {tname} must be int64, got {tokens.dtype}")
    if logits.ndim != 3:
        raise ValueError(f"{op}: logits must be (B, L, V), got shape {tuple(logits.shape)}")
    if tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"{op}: {tname} must be (B, L) = {tuple(logits.shape[:2])} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(tokens.shape)}")
    return logits, tokens


def _check_range(targets, logits, ignore_index, op, tname):
    """Every target that is not ignore_index is a class of logits' V, checked here so that the error
    names this loss (and the caller's shapes) rather than the cross_entropy it calls."""
    V = logits.shape[2]
    t = np.asarray(targets)
    bad = t[(t != ignore_index) & ((t < 0) | (t >= V))]
    if bad.size:
        skipped = f"ignore_index {ignore_index}" if op == "next_token_loss" else "unmasked positions skipped"
        raise IndexError(f"{op}: {tname} value {int(bad[0])} is out of bounds for {V} classes (logits "
                         f"{tuple(logits.shape)}, {tname} {tuple(targets.shape)}, {skipped})")


def next_token_loss(logits, tokens, ignore_index=-100, label_smoothing=0.0):
    """Autoregressive loss: cross_entropy(logits[:, :-1], tokens[:, 1:]) — position t predicts token t+1 —
    averaged over the non-ignored targets. logits (B, L, V) float32, tokens (B, L) int64, L >= 2;
    label_smoothing as in mmu.functional.cross_entropy.

    The logits are read in place, never sliced (a slice is a copy in mmu: B·(L-1)·V floats, gigabytes
    at a 58k vocabulary): the targets are shifted instead, into a (B, L) array whose last column is
    ignore_index, and the fused kernel runs over the (B·L, V) view of the logits. The ignored last
    position adds nothing to the loss, its gradient row is zero, and the mean counts real targets
    only, so value and gradient are those of the sliced form."""
    op = "next_token_loss"
    logits, tokens = _check(logits, tokens, op, "tokens")
    ignore_index = check_int(ignore_index, op, "ignore_index")
    B, L, V = logits.shape
    if L < 2:
        raise ValueError(f"{op}: need L >= 2 to shift, got logits {tuple(logits.shape)}")
    t = tokens.numpy()
    targets = np.empty((B * L,), np.int64)
    shifted = targets.reshape(B, L)
    shifted[:, :-1] = t[:, 1:]
    shifted[:, -1] = ignore_index
    _check_range(shifted, logits, ignore_index, op, "tokens[:, 1:]")
    return cross_entropy(logits.reshape((B * L, V)), targets, ignore_index=ignore_index,
                         label_smoothing=label_smoothing)


def masked_token_loss(logits, targets, mask):
    """Masked-token (MaskGIT / BERT-style) loss: cross-entropy at the positions where mask is True
    only (unshifted), averaged over those positions. logits (B, L, V), targets (B, L) int64, mask
    (B, L) bool. With nothing masked it returns a 0-d zero that still backpropagates (zeros) into logits."""
    op = "masked_token_loss"
    logits, targets = _check(logits, targets, op, "targets")
    mask = _as_tensor(mask, op, "mask")
    if mask.dtype != _bool:
        raise TypeError(f"{op}: mask must be bool, got {mask.dtype}")
    if tuple(mask.shape) != tuple(targets.shape):
        raise ValueError(f"{op}: mask must have targets' shape {tuple(targets.shape)}, got {tuple(mask.shape)}")
    B, L, V = logits.shape
    if not bool(mask.numpy().any()):
        return logits.sum() * 0.0 + 0.0
    # unmasked targets become ignore_index so the fused kernel skips them and the mean counts only masked
    t = targets.masked_fill(~mask, -100)
    _check_range(t, logits, -100, op, "targets")
    return cross_entropy(logits.reshape((B * L, V)), t.reshape((B * L,)), ignore_index=-100)
