"""mmu.functional: batch normalisation (csrc/ops/batch_norm.c).

Part of mmu.functional (re-exported there). Arguments are checked here the way torch checks them
(TypeError for a wrong type, ValueError for a wrong value); the C op checks the shapes.
"""
from . import _C
from ._args import is_real as _is_real
from .tensor import Tensor, _as_tensor

__all__ = ["batch_norm"]


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation of input (N, C, *) per channel C — torch.nn.functional.batch_norm.

    Shapes: input (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W) (any N, C, *); running_mean,
    running_var, weight, bias (C,) or None. Returns a tensor of input's shape.

    training=True: the statistics are the batch's, over N and the spatial dims (M = N·prod(*)
    values per channel; M == 1 raises ValueError like torch): mean_c and the biased var_c.
    If running_mean / running_var are given (mmu Tensors; they are written IN PLACE) they become
        running_mean = (1 - momentum)·running_mean + momentum·mean_c
        running_var  = (1 - momentum)·running_var  + momentum·var_c·M/(M - 1)   (unbiased)
    momentum is a float (the module's momentum=None cumulative average passes 1/num_batches_tracked,
    as torch's BatchNorm does; F.batch_norm itself rejects None like torch).
    training=False: the running statistics are used (both required).
        y = (x - mean_c)·rstd_c·weight_c + bias_c,  rstd_c = 1/sqrt(var_c + eps)
    (weight None = 1, bias None = 0). The statistics are computed in one fused pass per channel
    (shifted float sums per segment merged in double, Chan et al.), then one normalise+affine pass.

    Autograd (for a double-backward rule): the C op records one node BATCH_NORM with inputs
    (input, weight, bias) — the running stats are not differentiable inputs — and saves
        input (x), weight (or nothing), mean (C,), rstd (C,), mean_lo (C,)
    where in training mode mean/rstd are the BATCH mean and 1/sqrt(biased var + eps) (mean_lo the
    float32 rounding remainder of the double mean, only for precision), and in eval mode mean is
    running_mean and rstd = 1/sqrt(running_var + eps) as they were at the forward (mean_lo 0).
    In the C node: saved[0] = x, saved[1] = weight (or empty), saved[2] = mean, saved[3] = rstd,
    saved[4] = mean_lo; ctx.i[0..3] = N, C, S (product of the spatial dims), training (0/1).
    Its backward, with g the output gradient, xhat = (x - mean)·rstd, and per channel
    sg = Σ g, sgx = Σ g·(x - mean) over N and the spatial dims:
        dbias_c   = sg
        dweight_c = rstd·sgx                                   (= Σ g·xhat)
        training: dx = weight_c·rstd·(g - sg/M - xhat·rstd·sgx/M)
                     = weight_c·rstd·(g - mean(g) - xhat·mean(g·xhat))
        eval:     dx = weight_c·rstd·g
    (mean() over the M values of the channel). The backward is itself not differentiable in
    the C op (it runs with grad mode off).
    """
    x = _as_tensor(input, "batch_norm")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input with at least 2 dims (N, C, *), got shape {tuple(x.shape)}")
    if not isinstance(training, bool):
        raise TypeError(f"batch_norm: training must be a bool, got {type(training).__name__}")
    if momentum is None or not _is_real(momentum):
        raise TypeError(f"batch_norm: momentum must be a float, got {type(momentum).__name__}")
    if not _is_real(eps):
        raise TypeError(f"batch_norm: eps must be a number, got {type(eps).__name__}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"batch_norm: {name} must be an mmu Tensor or None (it is updated in place), "
                            f"got {type(t).__name__}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must be defined in evaluation mode "
                         "(training=False)")
    if training:
        size = x.shape[0]
        for s in x.shape[2:]:
            size *= s
        if size == 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input "
                             f"size {tuple(x.shape)}")
    return _C.batch_norm(x, running_mean, running_var, weight, bias, training, float(momentum), float(eps))
