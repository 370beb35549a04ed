"""Optimizers with torch.optim's names, defaults, state layout and arithmetic.

Each step runs ONE fused C call per parameter group (csrc/optim/optim.c): all
the group's tensors are updated in place, in a single OpenMP pass over
p, grad, and the state, with the GIL released. Parameters keep their identity
(the Tensor objects and their memory are the same after a step, so NumPy views
of them stay valid).

Differences from torch, all deliberate:
  - state['step'] is a Python int (torch keeps a float32 0-d tensor); the bias
    corrections are the same (1 - beta ** step in double precision).
  - load_state_dict() copies the state tensors it is given (torch may alias
    them), so two optimizers loaded from one dict never share memory.
  - foreach= and fused= are accepted and ignored (the fused C path is the only
    one); capturable=True and differentiable=True raise.
"""
import math
from collections import defaultdict

import numpy as np

from .. import _C
from .._C import Tensor
from ..autograd import enable_grad
from ..tensor import float32, tensor, zeros_like

__all__ = ["Optimizer", "Adam", "AdamW", "SGD", "required"]


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _check_float(name, value, low=0.0, low_ok=True, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or (v < low if low_ok else v <= low) or (high is not None and v >= high):
        raise ValueError(f"Invalid {name} value: {value}")
    return v


def _torch_switches(capturable, differentiable):
    """foreach= and fused= are accepted (torch code passes them) and mean nothing here: the fused C
    path always runs. capturable (CUDA graphs) and differentiable (autograd through the step) are
    not supported."""
    if capturable:
        raise ValueError("capturable=True is for CUDA graphs; mmu runs on the CPU")
    if differentiable:
        raise NotImplementedError("differentiable=True (autograd through the optimizer step) is not supported")


class Optimizer:
    """Base class: param_groups (dicts holding 'params' and every hyperparameter), state
    (param -> dict), zero_grad, step, state_dict/load_state_dict, add_param_group."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)  # as torch: opt.state[p] of a fresh param is {}
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("params must be an ordered iterable (list, tuple, generator), not a set: "
                            "its order changes from run to run, which breaks state_dict")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}") from None
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group):
        """Adds a group (a dict with 'params' and optional hyperparameters; the rest from defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("param_group must have a 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but params[{i}] is a {type(p).__name__}")
            if p.dtype != float32:
                raise TypeError(f"optimizer can only optimize float32 tensors, params[{i}] is {p.dtype}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        pass

    def zero_grad(self, set_to_none=True):
        """Sets every parameter's .grad to None (default) or fills it with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                else:
                    g = p.grad
                    if g is not None:
                        g.zero_()

    def step(self, closure=None):
        """One update of every parameter that has a .grad; returns closure() (run with grad
        enabled) if given, else None."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group, params):
        raise NotImplementedError

    # ------------------------------------------------------------------ state_dict
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [{hyperparameters..., 'params': [index...]}]}:
        parameters are numbered in group order, as torch does. Tensors are references, not copies."""
        index, groups = {}, []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                g["params"].append(index[id(p)])
            groups.append(g)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores hyperparameters and state from state_dict() output (also after mmu.save/load);
        the parameters stay this optimizer's own."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("load_state_dict: expected a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(state_dict["state"], dict) or not isinstance(saved_groups, (list, tuple)) or \
                not all(isinstance(s, dict) and isinstance(s.get("params"), (list, tuple)) for s in saved_groups):
            raise ValueError("load_state_dict: 'state' must be a dict and 'param_groups' a list of dicts with "
                             "'params' lists")
        for s in saved_groups:
            missing = [k for k in self.defaults if k not in s]
            if missing:
                raise ValueError(f"load_state_dict: a saved parameter group has no {', '.join(missing)}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, s in zip(self.param_groups, saved_groups):
            if len(g["params"]) != len(s["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
        id_map = {}
        for g, s in zip(self.param_groups, saved_groups):
            for p, i in zip(g["params"], s["params"]):
                id_map[i] = p
        new_state = defaultdict(dict)
        for key, values in state_dict["state"].items():
            p = id_map.get(key)
            if p is None:
                p = id_map.get(int(key)) if isinstance(key, str) and key.isdigit() else None
            if p is None:
                raise ValueError(f"load_state_dict: state entry {key!r} refers to no parameter")
            if not isinstance(values, dict):
                raise ValueError(f"load_state_dict: state entry {key!r} must be a dict, got {type(values).__name__}")
            new_state[p] = {name: self._load_value(name, v, p) for name, v in values.items()}
        new_groups = []
        for g, s in zip(self.param_groups, saved_groups):
            ng = {k: v for k, v in s.items() if k != "params"}
            if isinstance(ng.get("betas"), list):  # e.g. from a JSON round trip
                ng["betas"] = tuple(ng["betas"])
            ng["params"] = g["params"]
            self._check_group(ng)
            new_groups.append(ng)
        # everything validated and converted: commit
        self.state = new_state
        self.param_groups = new_groups

    @staticmethod
    def _load_value(name, v, p):
        if name == "step":
            if isinstance(v, Tensor):
                v = v.item()
            elif isinstance(v, np.ndarray):
                v = v.item()
            if hasattr(v, "item") and not isinstance(v, (int, float)):  # a torch tensor
                v = v.item()
            try:
                whole = float(v) == int(v)
            except (TypeError, ValueError, OverflowError):
                whole = False
            if not whole or int(v) < 0:
                raise ValueError(f"load_state_dict: step must be a whole number >= 0, got {v!r}")
            return int(v)
        if v is None:
            return None
        if isinstance(v, Tensor) or isinstance(v, np.ndarray):
            arr = np.asarray(v.numpy() if isinstance(v, Tensor) else v)
            if arr.shape != tuple(p.shape):
                raise ValueError(f"load_state_dict: state {name!r} has shape {arr.shape}, "
                                 f"its parameter {tuple(p.shape)}")
            return tensor(np.array(arr, dtype=np.float32, copy=True))
        if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor from a torch state_dict
            return Optimizer._load_value(name, v.detach().cpu().numpy(), p)
        if name in _TENSOR_STATE:  # the kernels take these as tensors: fail now, not at the next step()
            raise ValueError(f"load_state_dict: state {name!r} must be a tensor or an array, got {type(v).__name__}")
        return v

    def __repr__(self):
        s = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    s += f"    {key}: {group[key]}\n"
        return s + ")"

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)


# per-parameter state the built-in optimizers pass to their C kernels as tensors
_TENSOR_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


class Adam(Optimizer):
    """torch.optim.Adam: weight_decay is L2 (added to the gradient); amsgrad, maximize as torch."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, foreach=None, fused=None, capturable=False, differentiable=False):
        _torch_switches(capturable, differentiable)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, g):
        _check_float("learning rate", g["lr"])
        _check_float("epsilon", g["eps"])
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        _check_float("beta parameter at index 0", betas[0], high=1.0)
        _check_float("beta parameter at index 1", betas[1], high=1.0)
        g["betas"] = (betas[0], betas[1])
        _check_float("weight_decay", g["weight_decay"])
        for k in ("amsgrad", "maximize"):
            if not isinstance(g[k], (bool, np.bool_)):
                raise TypeError(f"{k} must be a bool, got {type(g[k]).__name__}")

    def _update_group(self, group, params):
        amsgrad = bool(group["amsgrad"])
        m, v, vmax, steps = [], [], [], []
        for p in params:
            st = self.state.get(p)
            if not st:
                st = self.state[p] = {"step": 0, "exp_avg": zeros_like(p), "exp_avg_sq": zeros_like(p)}
            if amsgrad and st.get("max_exp_avg_sq") is None:
                st["max_exp_avg_sq"] = zeros_like(p)
            m.append(st["exp_avg"])
            v.append(st["exp_avg_sq"])
            if amsgrad:
                vmax.append(st["max_exp_avg_sq"])
            steps.append(st["step"] + 1)
        beta1, beta2 = group["betas"]
        _C.adam_step(params, m, v, vmax if amsgrad else None, steps, float(group["lr"]), float(beta1),
                     float(beta2), float(group["eps"]), float(group["weight_decay"]), self._decoupled, amsgrad,
                     bool(group["maximize"]))
        for p, s in zip(params, steps):
            self.state[p]["step"] = s


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay (p *= 1 - lr * weight_decay), default 1e-2."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, fused=None, capturable=False, differentiable=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)


class SGD(Optimizer):
    """torch.optim.SGD: momentum (first step: buffer = gradient), dampening, weight_decay, nesterov."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, fused=None, differentiable=False):
        _torch_switches(False, differentiable)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, g):
        _check_float("learning rate", g["lr"])
        _check_float("momentum", g["momentum"])
        _check_float("dampening", g["dampening"], low=-math.inf)
        _check_float("weight_decay", g["weight_decay"])
        for k in ("nesterov", "maximize"):
            if not isinstance(g[k], (bool, np.bool_)):
                raise TypeError(f"{k} must be a bool, got {type(g[k]).__name__}")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update_group(self, group, params):
        momentum = float(group["momentum"])
        bufs, firsts = [], []
        if momentum != 0:
            for p in params:
                buf = self.state.setdefault(p, {}).get("momentum_buffer")
                firsts.append(buf is None)
                if buf is None:
                    buf = zeros_like(p)  # filled with the gradient by the kernel
                bufs.append(buf)
        _C.sgd_step(params, bufs if momentum != 0 else None, firsts if momentum != 0 else None,
                    float(group["lr"]), momentum, float(group["dampening"]), float(group["weight_decay"]),
                    bool(group["nesterov"]), bool(group["maximize"]))
        if momentum != 0:  # without momentum there is no state (as torch)
            for p, b in zip(params, bufs):
                self.state[p]["momentum_buffer"] = b
