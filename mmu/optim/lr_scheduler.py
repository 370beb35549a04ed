"""Learning-rate schedules with torch.optim.lr_scheduler's protocol.

Construction records each group's 'initial_lr' and sets the lr of step 0 (as torch does, so
the first optimizer.step() already uses it); scheduler.step() advances last_epoch by one and
sets every group's lr; get_last_lr() returns the lrs last set. All schedules here are closed
forms of last_epoch (lr = base_lr * factor(last_epoch)), so state_dict()/load_state_dict()
resume them exactly.
"""
import math
import numbers

__all__ = ["LRScheduler", "LambdaLR", "WarmupCosine", "ConstantLR"]


def _check_int(name, v, low=0):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


class LRScheduler:
    """Base class: subclasses define _lr(base_lr, group_index, epoch)."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        last_epoch = _check_int("last_epoch", last_epoch, low=-1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming an "
                                   "optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        return [self._lr(base, i, self.last_epoch) for i, base in enumerate(self.base_lrs)]

    def _lr(self, base_lr, i, epoch):
        raise NotImplementedError

    def step(self, epoch=None):
        """Advances to the next step (or to `epoch`) and sets each group's lr."""
        if epoch is None:
            self.last_epoch += 1
        else:
            self.last_epoch = _check_int("epoch", epoch)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        """The lrs set by the last step(), one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer (and, for LambdaLR, the lambdas)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={getattr(self, '_last_lr', None)})"


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(epoch), one lambda or one per group (torch.optim.lr_scheduler.LambdaLR)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        for f in self.lr_lambdas:
            if not callable(f):
                raise TypeError(f"lr_lambda must be callable, got {type(f).__name__}")
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, i, epoch):
        return base_lr * self.lr_lambdas[i](epoch)

    def state_dict(self):
        """As torch: the lambdas are not saved (functions do not serialise); pass them again."""
        s = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        s["lr_lambdas"] = [None] * len(self.lr_lambdas)
        return s

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        state_dict.pop("lr_lambdas", None)
        self.__dict__.update(state_dict)


class WarmupCosine(LRScheduler):
    """Linear warmup then cosine decay to a floor.

    For epoch t:  t < warmup_steps:  lr = base * (start_factor + (1 - start_factor) * t / warmup_steps)
                  then               lr = floor + (base - floor) * (1 + cos(pi * progress)) / 2,
                                     progress = (t - warmup_steps) / (total_steps - warmup_steps), capped at 1
    so the lr rises from base*start_factor (0 by default) to base at t = warmup_steps and reaches the
    floor at t = total_steps (and stays there). floor = min_lr (absolute) or min_lr_ratio * base.
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0, min_lr_ratio=None, start_factor=0.0,
                 last_epoch=-1):
        self.warmup_steps = _check_int("warmup_steps", warmup_steps)
        self.total_steps = _check_int("total_steps", total_steps, low=1)
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")
        if min_lr_ratio is not None:
            if min_lr:
                raise ValueError("give min_lr or min_lr_ratio, not both")
            if not (0.0 <= float(min_lr_ratio) <= 1.0):
                raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if not float(min_lr) >= 0.0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        if not (0.0 <= float(start_factor) <= 1.0):
            raise ValueError(f"start_factor must be in [0, 1], got {start_factor}")
        self.min_lr = float(min_lr)
        self.min_lr_ratio = None if min_lr_ratio is None else float(min_lr_ratio)
        self.start_factor = float(start_factor)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, i, t):
        if t < self.warmup_steps:
            return base_lr * (self.start_factor + (1.0 - self.start_factor) * t / self.warmup_steps)
        floor = self.min_lr if self.min_lr_ratio is None else base_lr * self.min_lr_ratio
        span = self.total_steps - self.warmup_steps
        progress = 1.0 if span == 0 else min(1.0, (t - self.warmup_steps) / span)
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ConstantLR(LRScheduler):
    """torch's ConstantLR (lr = base * factor until total_iters, then base), plus an optional linear
    warmup: for t < warmup_steps the lr is further multiplied by t / warmup_steps. ConstantLR(opt,
    factor=1.0, total_iters=0, warmup_steps=W) is "constant with warmup"; with warmup_steps=0 the
    schedule is torch's (in closed form)."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, warmup_steps=0, last_epoch=-1):
        if not (0.0 <= float(factor) <= 1.0):
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = float(factor)
        self.total_iters = _check_int("total_iters", total_iters)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, i, t):
        f = self.factor if t < self.total_iters else 1.0
        if t < self.warmup_steps:
            f = f * (t / self.warmup_steps)
        return base_lr * f
