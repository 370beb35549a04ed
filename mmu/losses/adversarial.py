"""GAN losses: hinge and non-saturating (vanilla) for D and G, LeCam regularisation, the disc_start
warm-up helper — as in taming-transformers (Esser et al. 2021, taming/modules/losses/vqperceptual.py)
and LeCam-GAN (Tseng et al. 2021, "Regularizing Generative Adversarial Networks under Limited Data").
Composed from mmu's differentiable ops."""
import math
import numbers

import numpy as np

from .. import functional as F
from ..tensor import _as_tensor, float32

__all__ = ["softplus", "hinge_d_loss", "vanilla_d_loss", "hinge_g_loss", "vanilla_g_loss",
           "adopt_weight", "lecam_reg", "LeCamEMA", "adaptive_weight", "r1_penalty"]


def _logits(x, op, arg):
    t = _as_tensor(x, op, arg)
    if t.dtype != float32:
        raise TypeError(f"{op}: {arg} must be float32, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{op}: {arg} is empty (shape {tuple(t.shape)})")
    return t


def softplus(input):
    """log(1 + exp(x)) for the GAN losses: F.softplus with torch's defaults (beta 1, threshold 20),
    overflow-free and relatively accurate for any x (one C pass); gradient sigmoid(x)."""
    return F.softplus(_logits(input, "softplus", "input"))


def hinge_d_loss(logits_real, logits_fake):
    """0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))). The two logit maps may differ in shape."""
    r = _logits(logits_real, "hinge_d_loss", "logits_real")
    f = _logits(logits_fake, "hinge_d_loss", "logits_fake")
    return ((1.0 - r).relu().mean() + (1.0 + f).relu().mean()) * 0.5


def vanilla_d_loss(logits_real, logits_fake):
    """0.5 * (mean(softplus(-D(real))) + mean(softplus(D(fake)))) — binary cross-entropy with real = 1, fake = 0."""
    r = _logits(logits_real, "vanilla_d_loss", "logits_real")
    f = _logits(logits_fake, "vanilla_d_loss", "logits_fake")
    return (softplus(-r).mean() + softplus(f).mean()) * 0.5


def hinge_g_loss(logits_fake):
    """-mean(D(fake)): the generator loss taming-transformers uses with the hinge discriminator."""
    return -_logits(logits_fake, "hinge_g_loss", "logits_fake").mean()


def vanilla_g_loss(logits_fake):
    """Non-saturating generator loss mean(softplus(-D(fake))) = -mean(log sigmoid(D(fake)))."""
    return softplus(-_logits(logits_fake, "vanilla_g_loss", "logits_fake")).mean()


def adopt_weight(weight, global_step, threshold=0, value=0.0):
    """The disc_start warm-up: `value` while global_step < threshold, `weight` from then on."""
    for name, v in (("global_step", global_step), ("threshold", threshold)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"adopt_weight: {name} must be an int, got {v!r}")
    return value if global_step < threshold else weight


def _real(v, op, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise TypeError(f"{op}: {name} must be a finite real number, got {v!r}")
    return float(v)


def lecam_reg(real_pred, fake_pred, ema_real, ema_fake):
    """LeCam regulariser (Tseng et al. 2021, eq. 3):
    mean(relu(D(real) - ema_fake)²) + mean(relu(ema_real - D(fake))²), with ema_real / ema_fake the
    exponential moving averages of the discriminator's mean outputs on real / fake (floats)."""
    op = "lecam_reg"
    r = _logits(real_pred, op, "real_pred")
    f = _logits(fake_pred, op, "fake_pred")
    er, ef = _real(ema_real, op, "ema_real"), _real(ema_fake, op, "ema_fake")
    a = (r - ef).relu()
    b = (er - f).relu()
    return (a * a).mean() + (b * b).mean()


class LeCamEMA:
    """Tracks the EMAs LeCam needs: ema <- decay * ema + (1 - decay) * mean(pred), starting at 0
    (as the LeCam-GAN reference code). Call update(real_pred, fake_pred) each D step, then
    loss = lecam_weight * ema.reg(real_pred, fake_pred)."""

    def __init__(self, decay=0.99, init=0.0):
        decay = _real(decay, "LeCamEMA", "decay")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCamEMA: decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.ema_real = _real(init, "LeCamEMA", "init")
        self.ema_fake = self.ema_real

    def update(self, real_pred, fake_pred):
        """Folds this discriminator step's mean predictions into the EMAs: real_pred and fake_pred are
        D's logits (any shape); returns self.
        """
        r = _logits(real_pred, "LeCamEMA.update", "real_pred")
        f = _logits(fake_pred, "LeCamEMA.update", "fake_pred")
        d = self.decay
        self.ema_real = d * self.ema_real + (1.0 - d) * float(r.detach().mean().item())
        self.ema_fake = d * self.ema_fake + (1.0 - d) * float(f.detach().mean().item())
        return self

    def reg(self, real_pred, fake_pred):
        """lecam_reg(real_pred, fake_pred, ema_real, ema_fake) with the tracked EMAs: a 0-d Tensor,
        differentiable in the predictions.
        """
        return lecam_reg(real_pred, fake_pred, self.ema_real, self.ema_fake)

    def state_dict(self):
        """{'decay', 'ema_real', 'ema_fake'} as floats, for a checkpoint."""
        return {"decay": self.decay, "ema_real": self.ema_real, "ema_fake": self.ema_fake}

    def load_state_dict(self, state):
        """Restores a state_dict()."""
        self.decay, self.ema_real, self.ema_fake = (float(state["decay"]), float(state["ema_real"]),
                                                     float(state["ema_fake"]))

    def __repr__(self):
        return f"LeCamEMA(decay={self.decay}, ema_real={self.ema_real:.6g}, ema_fake={self.ema_fake:.6g})"


# ---- adaptive weight and R1 penalty (mmu.autograd.grad) ----
def _graph_tensor(x, op, arg, scalar=False):
    from ..tensor import Tensor

    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {arg} must be an mmu Tensor (part of the autograd graph), got {type(x).__name__}")
    if x.dtype != float32:
        raise TypeError(f"{op}: {arg} must be float32, got {x.dtype}")
    if scalar and x.numel() != 1:
        raise ValueError(f"{op}: {arg} must be a scalar loss, got shape {tuple(x.shape)}")
    if not x.requires_grad:
        raise ValueError(f"{op}: {arg} (shape {tuple(x.shape)}) does not require grad; it must be part of the "
                         "autograd graph")
    return x


def adaptive_weight(nll_loss, g_loss, last_layer, max_weight=1e4, eps=1e-4):
    """VQGAN's adaptive discriminator weight (Esser et al. 2021, eq. 7; taming-transformers'
    VQLPIPSWithDiscriminator.calculate_adaptive_weight):

        λ = ‖∇_last nll_loss‖ / (‖∇_last g_loss‖ + eps), clamped to [0, max_weight], detached

    with ∇_last the gradient w.r.t. `last_layer` (the decoder's last conv weight). nll_loss and
    g_loss are scalar losses of the same graph; both graphs are kept (retain_graph=True) so the
    caller can still backward the total loss nll + λ·disc_weight·g_loss. Only the part of the graph
    leading to last_layer is run (mmu.autograd.grad prunes the rest). Returns a scalar Tensor.
    In a data-parallel step (mmu.distributed.data_parallel.synchronized) the two gradients are averaged
    over the ranks first, so λ is the global batch's, as in one process (taming under DDP uses each
    rank's own)."""
    from ..autograd import grad
    from ..tensor import tensor

    op = "adaptive_weight"
    nll = _graph_tensor(nll_loss, op, "nll_loss", scalar=True)
    g = _graph_tensor(g_loss, op, "g_loss", scalar=True)
    last = _graph_tensor(last_layer, op, "last_layer")
    max_weight, eps = _real(max_weight, op, "max_weight"), _real(eps, op, "eps")
    if max_weight < 0 or eps < 0:
        raise ValueError(f"{op}: max_weight and eps must be >= 0, got {max_weight} and {eps}")
    (g_nll,) = grad(nll, last, retain_graph=True, allow_unused=True)
    (g_adv,) = grad(g, last, retain_graph=True, allow_unused=True)
    if g_nll is None or g_adv is None:
        which = "nll_loss" if g_nll is None else "g_loss"
        raise ValueError(f"{op}: {which} does not depend on last_layer (shape {tuple(last.shape)}); pass the "
                         "decoder's last layer weight")
    g_nll, g_adv = g_nll.numpy(), g_adv.numpy()
    from ..distributed.data_parallel import is_synchronized
    if is_synchronized():
        from .. import distributed as dist
        both = dist.all_reduce(np.concatenate([g_nll.reshape(-1), g_adv.reshape(-1)]), op="avg")
        g_nll, g_adv = both[:g_nll.size], both[g_nll.size:]
    n_nll = math.sqrt(float((g_nll.astype("float64") ** 2).sum()))
    n_adv = math.sqrt(float((g_adv.astype("float64") ** 2).sum()))
    d = n_nll / (n_adv + eps) if n_adv + eps > 0 else (0.0 if n_nll == 0 else math.inf)
    return tensor(min(max(d, 0.0), max_weight))


def r1_penalty(real_logits, real_images):
    """R1 gradient penalty (Mescheder et al. 2018, "Which Training Methods for GANs do actually
    Converge?", eq. 9): mean over the batch of ‖∇_x D(x)‖² summed over C, H, W, for real images x.
    The caller multiplies by gamma / 2. real_images must have requires_grad=True before the
    discriminator's forward (so real_logits = D(real_images) depends on them). The gradient is taken
    with create_graph=True, so the penalty is differentiable w.r.t. the discriminator's parameters
    (its backward is a double backward). real_logits (B, ...) any shape, real_images (B, ...)."""
    from ..autograd import grad

    op = "r1_penalty"
    logits = _graph_tensor(real_logits, op, "real_logits")
    x = _graph_tensor(real_images, op, "real_images")
    if x.ndim < 1 or logits.ndim < 1 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"{op}: real_logits {tuple(logits.shape)} and real_images {tuple(x.shape)} must share "
                         "the batch dimension")
    (gx,) = grad(logits.sum(), x, create_graph=True, allow_unused=True)
    if gx is None:
        raise ValueError(f"{op}: real_logits do not depend on real_images; call real_images.requires_grad_() "
                         "before the discriminator's forward")
    return (gx * gx).reshape(x.shape[0], -1).sum(dim=1).mean()
