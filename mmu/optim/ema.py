"""Exponential moving average of a model's weights (for evaluation / sampling).

EMA keeps float32 shadow copies of model.named_parameters() (and of model.named_buffers() when
the model has it) and, at each update(), moves them toward the live weights with one fused C
lerp over all tensors:  shadow += (1 - d) * (param - shadow).

The effective decay is d = min(decay, (1 + n) / (10 + n)) when warmup=True, where n counts the
EMA updates made before this one (0 at the first). The formula is the `num_updates` rule of
TensorFlow's tf.train.ExponentialMovingAverage: early shadows follow the weights closely instead
of remembering the random initialisation. For the first update_after_step calls of update() the
shadows are plain copies of the weights. Buffers that are not float32 (counters, int indices)
are copied, never averaged.

The model is duck-typed: anything with named_parameters() (mmu.nn.Module or a stand-in).
"""
import contextlib

import numpy as np

from .. import _C
from .._C import Tensor
from ..tensor import float32, tensor

__all__ = ["EMA"]


def _named(model):
    if not hasattr(model, "named_parameters"):
        raise TypeError(f"EMA needs a model with named_parameters(), got {type(model).__name__}")
    params = list(model.named_parameters())
    buffers = list(model.named_buffers()) if hasattr(model, "named_buffers") else []
    for name, t in params + buffers:
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise TypeError(f"EMA: named_parameters()/named_buffers() must yield (str, Tensor) pairs, got "
                            f"({type(name).__name__}, {type(t).__name__})")
    return params, buffers


def _copy(t):
    return tensor(np.array(t.numpy(), copy=True))


class EMA:
    """EMA(model, decay=0.999, warmup=True, update_after_step=0, include_buffers=True)."""

    def __init__(self, model, decay=0.999, warmup=True, update_after_step=0, include_buffers=True):
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"EMA: decay must be in [0, 1], got {decay}")
        if isinstance(update_after_step, bool) or not isinstance(update_after_step, int) or update_after_step < 0:
            raise ValueError(f"EMA: update_after_step must be an int >= 0, got {update_after_step!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.update_after_step = update_after_step
        self.include_buffers = bool(include_buffers)
        self.num_updates = 0
        self.model = model
        params, buffers = _named(model)
        for name, p in params:
            if p.dtype != float32:
                raise TypeError(f"EMA: parameter {name!r} is {p.dtype}; only float32 parameters are supported")
        self.shadow = {name: _copy(p) for name, p in params}
        self.buffers = {name: _copy(b) for name, b in buffers} if self.include_buffers else {}

    def get_decay(self):
        """The decay the next update() will use (0 while update_after_step is not reached: a copy)."""
        if self.num_updates < self.update_after_step:
            return 0.0
        n = self.num_updates - self.update_after_step
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    def _pairs(self, model):
        params, buffers = _named(model if model is not None else self.model)
        live = dict(params)
        if set(live) != set(self.shadow):
            missing, extra = set(self.shadow) - set(live), set(live) - set(self.shadow)
            raise ValueError(f"EMA: the model's parameters do not match the EMA's (missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)})")
        names = list(self.shadow)
        bufs = dict(buffers) if self.include_buffers else {}
        bnames = [n for n in self.buffers if n in bufs]
        return names, live, bnames, bufs

    def update(self, model=None):
        """Moves the shadows toward the model's current weights (one fused C call)."""
        names, live, bnames, bufs = self._pairs(model)
        d = self.get_decay()
        self.num_updates += 1
        shadows = [self.shadow[n] for n in names] + [self.buffers[n] for n in bnames
                                                     if self.buffers[n].dtype == float32]
        srcs = [live[n] for n in names] + [bufs[n] for n in bnames if self.buffers[n].dtype == float32]
        _C.multi_lerp_(shadows, srcs, 1.0 - d)
        for n in bnames:
            if self.buffers[n].dtype != float32:
                self.buffers[n].copy_(bufs[n])

    def copy_to(self, model=None):
        """Writes the EMA weights into the model's parameters (and buffers), in place."""
        names, live, bnames, bufs = self._pairs(model)
        _C.multi_lerp_([live[n] for n in names], [self.shadow[n] for n in names], 1.0)
        for n in bnames:
            bufs[n].copy_(self.buffers[n])

    @contextlib.contextmanager
    def average_parameters(self, model=None):
        """with ema.average_parameters(model): ... runs with the EMA weights, then restores the model's."""
        names, live, bnames, bufs = self._pairs(model)
        saved = [_copy(live[n]) for n in names]
        saved_b = [_copy(bufs[n]) for n in bnames]
        self.copy_to(model)
        try:
            yield
        finally:
            _C.multi_lerp_([live[n] for n in names], saved, 1.0)
            for n, b in zip(bnames, saved_b):
                bufs[n].copy_(b)

    def state_dict(self):
        """A dict of the EMA state (decay, warmup, update_after_step, num_updates, and the shadow
        parameters and buffers by name) for a checkpoint; load_state_dict restores it.
        """
        return {"decay": self.decay, "warmup": self.warmup, "update_after_step": self.update_after_step,
                "num_updates": self.num_updates, "shadow": dict(self.shadow), "buffers": dict(self.buffers)}

    def load_state_dict(self, state_dict):
        """Restores a state_dict(); everything is validated before anything is replaced, so a bad dict
        raises ValueError and leaves the EMA as it was.
        """
        # everything is validated and converted before anything is replaced (nothing half-loaded)
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("shadow"), dict):
            raise ValueError("EMA.load_state_dict: expected a dict with a 'shadow' dict (EMA.state_dict())")
        shadow, buffers = state_dict["shadow"], state_dict.get("buffers", {})
        if set(shadow) != set(self.shadow):
            raise ValueError("EMA.load_state_dict: the saved parameter names do not match this EMA's")
        if "num_updates" not in state_dict:
            raise ValueError("EMA.load_state_dict: the state dict has no 'num_updates'")
        if not isinstance(buffers, dict):
            raise ValueError(f"EMA.load_state_dict: 'buffers' must be a dict, got {type(buffers).__name__}")
        try:
            decay = float(state_dict.get("decay", self.decay))
            warmup = bool(state_dict.get("warmup", self.warmup))
            update_after_step = int(state_dict.get("update_after_step", self.update_after_step))
            num_updates = int(state_dict["num_updates"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"EMA.load_state_dict: bad decay/warmup/update_after_step/num_updates ({e})") from None
        if not 0.0 <= decay <= 1.0 or update_after_step < 0 or num_updates < 0:
            raise ValueError(f"EMA.load_state_dict: decay {decay} must be in [0, 1], update_after_step "
                             f"{update_after_step} and num_updates {num_updates} >= 0")
        new_s, new_b = {}, {}
        for src, dst, out in ((shadow, self.shadow, new_s), (buffers, self.buffers, new_b)):
            for n, v in src.items():
                arr = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
                if arr.dtype.kind not in "fiub":
                    raise ValueError(f"EMA.load_state_dict: {n!r} must be a numeric tensor or array, got "
                                     f"{type(v).__name__} of dtype {arr.dtype}")
                if n in dst and tuple(arr.shape) != tuple(dst[n].shape):
                    raise ValueError(f"EMA.load_state_dict: {n!r} has shape {arr.shape}, "
                                     f"expected {tuple(dst[n].shape)}")
                # shadows are float32 (the fused lerp needs it); a buffer keeps its own dtype
                want = np.float32 if dst is self.shadow else dst[n].numpy().dtype if n in dst else arr.dtype
                out[n] = tensor(np.array(arr, dtype=want, copy=True))
        self.shadow, self.buffers = new_s, new_b
        self.decay, self.warmup, self.update_after_step = decay, warmup, update_after_step
        self.num_updates = num_updates
