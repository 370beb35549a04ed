"""Module: the base class of every layer and model (torch.nn.Module's habits).

Attributes that are Parameters, Modules or registered buffers are kept in
ordered dicts, so `named_parameters()`, `state_dict()` and the repr list them
in the order they were assigned (torch's order: a module's own parameters,
then its buffers, then its children, depth first).

Every subclass also records the arguments its constructor was called with
(`__init_subclass__` wraps `__init__`), so `save_pretrained(dir)` can write a
config.json next to the weights and `from_pretrained(dir)` can rebuild the
module without the user repeating its hyper-parameters.
"""
import collections
import dataclasses
import functools
import importlib
import inspect
import json
import math
import numbers
import os
import sys
import tempfile

import numpy as np

from .._C import Tensor
from ..autograd import no_grad
from .parameter import Parameter

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class _IncompatibleKeys(collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What load_state_dict(strict=False) returns (torch's named tuple)."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class _RemovableHandle:
    """What register_forward_hook returns: remove() unregisters the hook (also as a context manager)."""

    _next_id = 0

    def __init__(self, hooks, hook):
        self.hooks, self.id = hooks, _RemovableHandle._next_id
        _RemovableHandle._next_id += 1
        hooks[self.id] = hook

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# ----------------------------------------------------- constructor configs
class _NotSerialisable:
    """Stands in for a constructor argument that JSON cannot hold; save_pretrained
    raises with this message, construction itself never fails because of it."""

    def __init__(self, why):
        self.why = why


def _class_path(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value, where):
    """A constructor argument -> a JSON value, or _NotSerialisable. Tuples
    become lists (every mmu layer accepts either); a Module argument (e.g. the
    layers given to Sequential) is stored as {"__module__": its class path + config};
    a class or function (norm_layer=nn.LayerNorm) as {"__import__": its import path}."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            return _NotSerialisable(f"{where} = {v} is not finite (JSON has no inf/nan)")
        return v
    if isinstance(value, (list, tuple)):
        out = [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        bad = [v for v in out if isinstance(v, _NotSerialisable)]
        return bad[0] if bad else out
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                return _NotSerialisable(f"{where} has a non-string key {k!r}")
            out[k] = _encode(v, f"{where}[{k!r}]")
            if isinstance(out[k], _NotSerialisable):
                return out[k]
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # a config dataclass (possibly holding others): {"__config__": {"class": path, "fields": {...}}}
        cls = type(value)
        if "<locals>" in cls.__qualname__:
            return _NotSerialisable(f"{where} is a {cls.__qualname__}, defined inside a function (not importable)")
        out = {}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name), f"{where}.{f.name}")
            if isinstance(out[f.name], _NotSerialisable):
                return out[f.name]
        return {"__config__": {"class": _class_path(cls), "fields": out}}
    if isinstance(value, Module):
        cfg = value.__dict__.get("_config")
        if cfg is None:
            return _NotSerialisable(f"{where} is a {type(value).__name__} whose constructor arguments "
                                    "were not recorded")
        if isinstance(cfg, _NotSerialisable):
            return _NotSerialisable(f"{where}: {cfg.why}")
        return {"__module__": cfg}
    if isinstance(value, type) or inspect.isfunction(value) or inspect.isbuiltin(value):
        # a class or function given as an argument (norm_layer=nn.LayerNorm, act=F.silu): its import path
        path = f"{getattr(value, '__module__', None)}.{value.__qualname__}"
        try:
            ok = "<" not in path and _import_class(path) is value
        except (ValueError, ImportError):
            ok = False
        if ok:
            return {"__import__": path}
        return _NotSerialisable(f"{where} is {value!r}, which is not importable by name (a lambda, a local "
                                "definition or a bound method)")
    return _NotSerialisable(f"{where} is a {type(value).__name__}, which JSON cannot hold")


def _import_class(path, import_modules=True):
    """The object at an import path. Loading a config (import_modules=False) imports only mmu's
    own modules and otherwise looks in modules already imported: a config.json from elsewhere
    must not be able to import (run) arbitrary installed code."""
    module_name, _, qualname = path.rpartition(".")
    # the qualname may be nested (Outer.Inner): take the longest importable module prefix
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        if import_modules or name == "mmu" or name.startswith("mmu."):
            try:
                obj = importlib.import_module(name)
            except ImportError:
                continue
        elif name in sys.modules:
            obj = sys.modules[name]
        else:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ValueError(f"from_pretrained: cannot find the class {path!r} named in the config (module "
                     f"{module_name!r}, name {qualname!r}); import the module that defines it first")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__module__"}:
            return _build(value["__module__"], Module)
        if set(value) == {"__import__"}:
            obj = _import_class(value["__import__"], import_modules=False)
            # a config names classes and functions as constructor arguments (norm_layer=nn.LayerNorm);
            # only mmu's own may be called from a loaded file (not e.g. "os.system" or "builtins.eval")
            owner = getattr(obj, "__module__", None) or ""
            if owner != "mmu" and not owner.startswith("mmu."):
                raise ValueError(f"from_pretrained: the config names {value['__import__']!r} (defined in "
                                 f"{owner or 'no module'}); a loaded config may only name mmu's own classes "
                                 "and functions")
            return obj
        if set(value) == {"__config__"}:
            return _build_dataclass(value["__config__"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _build_dataclass(cfg):
    """The config dataclass that cfg = {"class": path, "fields": {...}} describes (nested ones too)."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str) or not isinstance(cfg.get("fields"), dict):
        raise ValueError(f"from_config: a dataclass config must be {{'class': str, 'fields': dict}}, got {cfg!r}")
    target = _import_class(cfg["class"], import_modules=False)
    if not (isinstance(target, type) and dataclasses.is_dataclass(target)):
        raise ValueError(f"from_config: the config names {cfg['class']}, which is not a dataclass")
    names = {f.name for f in dataclasses.fields(target) if f.init}
    unknown = sorted(set(cfg["fields"]) - names)
    if unknown:
        raise ValueError(f"from_config: {cfg['class']} has no field(s) {unknown}; its fields are {sorted(names)}")
    return target(**{k: _decode(v) for k, v in cfg["fields"].items()})


def _build(cfg, base, cls=None):
    """Constructs the module that cfg = {"class": path, "args": {...}} describes."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str) or not isinstance(cfg.get("args"), dict):
        raise ValueError(f"from_pretrained: a module config must be {{'class': str, 'args': dict}}, got {cfg!r}")
    path = cfg["class"]
    target = cls if cls is not None and _class_path(cls) == path else _import_class(path, import_modules=False)
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ValueError(f"from_pretrained: the config describes {path}, which is not a subclass of "
                         f"{base.__module__}.{base.__qualname__}")
    sig = inspect.signature(target.__init__)
    params = list(sig.parameters.values())[1:]
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    stored = dict(cfg["args"])
    args, kwargs = [], {}
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            args.extend(_decode(stored.pop("*" + p.name, [])))
        elif p.kind is p.VAR_KEYWORD:
            kwargs.update(_decode(stored.pop("**" + p.name, {})))
        elif p.name not in stored and p.default is p.empty:
            raise ValueError(f"from_pretrained: the config of {path} has no value for the required "
                             f"argument {p.name!r}")
        elif p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and not has_varargs):
            if p.name in stored:
                kwargs[p.name] = _decode(stored.pop(p.name))
        else:  # positional-only, or before a *args: must be passed by position
            args.append(_decode(stored.pop(p.name)) if p.name in stored else p.default)
    if stored:
        raise ValueError(f"from_pretrained: the config of {path} has arguments its constructor does not "
                         f"take: {sorted(stored)}")
    return target(*args, **kwargs)


def _record_init(init):
    """Wraps cls.__init__ so the outermost constructor call of a module records
    its bound arguments (for save_pretrained's config.json)."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        d = self.__dict__
        if "_config" not in d:  # the outermost __init__ of this object (super().__init__ calls pass)
            try:
                bound = sig.bind(self, *args, **kwargs)
            except TypeError:
                d["_config"] = None  # let init raise its own error below
            else:
                bound.apply_defaults()
                stored = {}
                for name, p in list(sig.parameters.items())[1:]:
                    v = bound.arguments.get(name)
                    if p.kind is p.VAR_POSITIONAL:
                        stored["*" + name] = list(v or ())
                    elif p.kind is p.VAR_KEYWORD:
                        stored["**" + name] = dict(v or {})
                    else:
                        stored[name] = v
                enc = {}
                for name, v in stored.items():
                    enc[name] = _encode(v, f"the argument {name.lstrip('*')!r}")
                    if isinstance(enc[name], _NotSerialisable):
                        enc = enc[name]
                        break
                d["_config"] = enc if isinstance(enc, _NotSerialisable) else \
                    {"class": _class_path(type(self)), "args": enc}
        init(self, *args, **kwargs)

    __init__._mmu_recording = True
    return __init__


# -------------------------------------------------------------------- Module

def _current_umask():
    """The process umask, read without changing it (/proc/self/status on Linux; elsewhere the value
    mmu.io read at import, since os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    from ..io.safetensors import _UMASK
    return _UMASK


def _new_file_mode(path):
    """The permission bits a file written to `path` gets: the existing file's, else 0666 & ~umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_current_umask()

class Module:
    """Base class of layers and models (torch.nn.Module).

    Subclasses call `super().__init__()` first, assign Parameters / Modules as
    attributes, and define `forward`; `module(x)` calls `forward(x)`."""

    training: bool

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_mmu_recording", False):
            cls.__init__ = _record_init(init)

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent_buffers"] = set()
        d["_modules"] = {}
        d.setdefault("_config", None)

    # ---------------------------------------------------------- registration
    def _check_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call "
                                 f"(call super().__init__() first in {type(self).__name__}.__init__)")

    def _check_name(self, name, kind, dict_name):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if not name:
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got {name!r}')
        if hasattr(self, name) and name not in self.__dict__[dict_name]:
            raise KeyError(f"attribute {name!r} already exists")

    def register_parameter(self, name, param):
        """Adds a Parameter (or None: a declared but absent parameter, like a bias=False)."""
        self._check_init("parameters")
        self._check_name(name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter {name!r} "
                            "(mmu.nn.Parameter or None required)")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Adds a buffer: state that is not a parameter (e.g. running statistics).

        Persistent buffers are part of state_dict(); non-persistent ones are not."""
        self._check_init("buffers")
        self._check_name(name, "buffer", "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer {name!r} "
                            "(mmu.Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Adds a child module (or None) under `name`."""
        self._check_init("child modules")
        self._check_name(name, "module", "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            self._check_init("parameters")
            self._remove_from(name, d, "_buffers", "_modules")
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter {name!r} "
                                "(mmu.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._check_init("child modules")
            self._remove_from(name, d, "_parameters", "_buffers")
            self._modules[name] = value
        elif d.get("_modules") is not None and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module {name!r} "
                                "(mmu.nn.Module or None expected)")
            d["_modules"][name] = None
        elif d.get("_buffers") is not None and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer {name!r} "
                                "(mmu.Tensor or None expected)")
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def _remove_from(self, name, d, *dict_names):
        d.pop(name, None)
        for dn in dict_names:
            if name in d[dn]:
                del d[dn][name]
                if dn == "_buffers":
                    d["_non_persistent_buffers"].discard(name)

    def __getattr__(self, name):
        # only called when normal lookup fails: parameters, buffers and children live in dicts
        d = self.__dict__
        for dn in ("_parameters", "_buffers", "_modules"):
            members = d.get(dn)
            if members is not None and name in members:
                return members[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for dn in ("_parameters", "_buffers", "_modules"):
            if name in d.get(dn, ()):
                del d[dn][name]
                if dn == "_buffers":
                    d["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = set(super().__dir__())
        for dn in ("_parameters", "_buffers", "_modules"):
            keys.update(self.__dict__.get(dn, {}))
        return sorted(k for k in keys if not k[:1].isdigit())

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ------------------------------------------------------------- iteration
    def _named_members(self, get, prefix="", recurse=True, remove_duplicate=True):
        memo = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for k, v in get(module):
                if v is None or (remove_duplicate and id(v) in memo):
                    continue
                if remove_duplicate:
                    memo.add(id(v))
                yield (module_prefix + "." + k if module_prefix else k), v

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, Parameter) pairs, depth first; a parameter shared by two modules appears once."""
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        """The parameters (each once), depth first."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, Tensor) pairs of the registered buffers."""
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        """Iterator over the module's buffers (and its submodules' with recurse=True)."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_children(self):
        """(name, Module) pairs of the direct children (each once)."""
        memo = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in memo:
                memo.add(id(m))
                yield name, m

    def children(self):
        """Iterator over the immediate submodules."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(name, Module) pairs of this module ("") and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, prefix + "." + name if prefix else name, remove_duplicate)

    def modules(self):
        """Iterator over this module and every submodule, depth first (each once)."""
        for _, m in self.named_modules():
            yield m

    def get_submodule(self, target):
        """The descendant at a dotted path ("blocks.0.attn"); "" is self."""
        m = self
        if target == "":
            return m
        for part in target.split("."):
            if not isinstance(m, Module) or part not in m._modules or m._modules[part] is None:
                raise AttributeError(f"{type(self).__name__} has no submodule {target!r} (no {part!r} in "
                                     f"{type(m).__name__})")
            m = m._modules[part]
        return m

    def num_parameters(self, trainable_only=False):
        """Number of scalar parameters (shared parameters counted once)."""
        return int(sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only))

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        """Sets training mode (dropout active) on this module and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self):
        """train(False): dropout off. Returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Turns gradient recording for every parameter on or off; returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Clears the .grad of every parameter (to None, or to zeros in place)."""
        for p in self.parameters():
            g = p.grad
            if g is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                g.numpy()[...] = 0.0  # not zero_(): a create_graph grad may itself require grad
                g._bump_version()

    def apply(self, fn):
        """Calls fn on every child (recursively) and then on self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs):
        """Accepted for torch code: mmu runs on the CPU in float32, so .to('cpu') /
        .to(mmu.float32) return self; any other device or dtype raises."""
        for a in list(args) + list(kwargs.values()):
            if a is None or isinstance(a, bool) or (isinstance(a, str) and a == "cpu") or \
                    str(getattr(a, "type", "")) == "cpu":
                continue
            try:
                if np.dtype(a) == np.float32:
                    continue
            except TypeError:
                pass
            raise ValueError(f"{type(self).__name__}.to: mmu modules live on the CPU in float32, got {a!r}")
        return self

    def cpu(self):
        """Returns self: mmu modules always live in CPU memory (torch's name, for ported code)."""
        return self

    def float(self):
        """Returns self: parameters are always float32 (torch's name, for ported code)."""
        return self

    # ---------------------------------------------------------------- forward
    def forward(self, *args, **kwargs):
        """The computation of the module, called by module(*args, **kwargs); every subclass defines it
        (this base raises NotImplementedError). Arguments, shapes and returns are documented on each
        subclass.
        """
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        d = self.__dict__
        if not d.get("_forward_pre_hooks") and not d.get("_forward_hooks"):
            return self.forward(*args, **kwargs)
        for hook in list(d.get("_forward_pre_hooks", {}).values()):
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hook in list(d.get("_forward_hooks", {}).values()):
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_pre_hook(self, hook):
        """hook(module, args) runs before forward; returning a value replaces args
        (a tuple, or a single input). Returns a handle whose remove() unregisters it."""
        return _RemovableHandle(self.__dict__.setdefault("_forward_pre_hooks", {}), hook)

    def register_forward_hook(self, hook):
        """hook(module, args, output) runs after forward (e.g. to collect features);
        returning a value replaces the output. Returns a handle with remove()."""
        return _RemovableHandle(self.__dict__.setdefault("_forward_hooks", {}), hook)

    # --------------------------------------------------------------- state dict
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """An ordered dict name -> tensor of every parameter and persistent buffer
        (torch's order and names). The tensors share memory with the module but
        are detached (keep_vars=True returns the Parameters themselves)."""
        if destination is None:
            destination = collections.OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _state_targets(self):
        """name -> the tensor a state_dict entry would be copied into (shared ones under each name)."""
        return self.state_dict(keep_vars=True)

    def load_state_dict(self, state_dict, strict=True):
        """Copies the tensors of state_dict (mmu Tensors, NumPy arrays, or anything with
        .numpy(), e.g. torch tensors) into this module's parameters and buffers.

        Everything is checked first: keys missing from state_dict, keys the module
        does not have (both only with strict=True) and shape mismatches are reported
        together in one RuntimeError, and then nothing has been copied. Returns
        (missing_keys, unexpected_keys)."""
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"load_state_dict: expected a dict-like of tensors, got {type(state_dict).__name__}")
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        errors = []
        staged = []
        for key, target in targets.items():
            if key not in state_dict:
                continue
            try:
                arr = _as_array(state_dict[key])
            except TypeError as e:
                errors.append(f"value for {key}: {e}")
                continue
            if arr.shape != target.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {arr.shape} from "
                              f"checkpoint, the shape in current model is {target.shape}.")
                continue
            want = target.dtype
            if arr.dtype != want:
                ok = (want.kind == "f" and arr.dtype.kind in "fiub") or (want.kind == "i" and arr.dtype.kind in "iub") \
                    or (want.kind == "b" and arr.dtype.kind == "b")
                if not ok:
                    errors.append(f"dtype mismatch for {key}: cannot copy {arr.dtype} from checkpoint into "
                                  f"the model's {want} tensor.")
                    continue
            staged.append((target, arr))
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        with no_grad():
            for target, arr in staged:
                target.numpy()[...] = arr
                target._bump_version()  # an in-place write, as torch's param.copy_
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------- pretrained
    def get_config(self):
        """{'class': import path, 'args': constructor arguments} as recorded at construction."""
        cfg = self.__dict__.get("_config")
        if isinstance(cfg, _NotSerialisable):
            raise ValueError(f"save_pretrained: {type(self).__name__} cannot be rebuilt from a JSON config: "
                             f"{cfg.why}. Give it JSON-serialisable constructor arguments (numbers, strings, "
                             "lists, dicts, modules) or save its state_dict with mmu.io.save_file instead.")
        if cfg is None:
            raise ValueError(f"save_pretrained: the constructor arguments of {type(self).__name__} were not "
                             "recorded (a plain mmu.nn.Module, or one whose __init__ failed)")
        if "<locals>" in cfg["class"]:
            raise ValueError(f"save_pretrained: {cfg['class']} is defined inside a function, so "
                             "from_pretrained could not import it; define the class at module level")
        return json.loads(json.dumps(cfg))

    def save_pretrained(self, save_directory):
        """Writes save_directory/model.safetensors (the state_dict) and config.json
        (class path + constructor arguments); `Class.from_pretrained(dir)` rebuilds it.
        Both files are written to temporary names and renamed into place; a new file gets the
        permissions open() would give it (0666 minus the umask), a replaced file keeps its own."""
        from .. import io as mmu_io
        from .. import __version__

        config = self.get_config()  # raises before anything is written
        config["mmu_version"] = __version__
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"
        state = {k: v for k, v in self.state_dict().items()}
        os.makedirs(save_directory, exist_ok=True)
        weights_path = os.path.join(save_directory, WEIGHTS_NAME)
        config_path = os.path.join(save_directory, CONFIG_NAME)
        fd, tmp_weights = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=save_directory)
        os.close(fd)
        fd, tmp_config = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=save_directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            mmu_io.save_file(state, tmp_weights, metadata={"format": "mmu"})
            # mkstemp made both 0600: give them the mode a plain open() would (or the replaced file's),
            # as mmu.io's writer does, so colleagues can load a shared model
            os.chmod(tmp_weights, _new_file_mode(weights_path))
            os.chmod(tmp_config, _new_file_mode(config_path))
            os.replace(tmp_weights, weights_path)
            os.replace(tmp_config, config_path)
        finally:
            for tmp in (tmp_weights, tmp_config):
                if os.path.exists(tmp):
                    os.remove(tmp)

    @classmethod
    def from_pretrained(cls, save_directory, strict=True):
        """Builds the module config.json describes (a subclass of cls) and loads
        model.safetensors into it (strictly by default). Nothing is returned, and
        nothing is left behind, unless both steps succeed."""
        from .. import io as mmu_io

        config_path = os.path.join(save_directory, CONFIG_NAME)
        weights_path = os.path.join(save_directory, WEIGHTS_NAME)
        for p in (config_path, weights_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"from_pretrained: {p} does not exist (save_pretrained writes "
                                        f"{CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"from_pretrained: {config_path} is not valid JSON (or nested too deeply): "
                             f"{e}") from None
        state = mmu_io.load_file(weights_path)
        try:
            model = _build(config, cls, cls)
        except RecursionError:
            raise ValueError(f"from_pretrained: {config_path} nests modules too deeply") from None
        model.load_state_dict(state, strict=strict)
        return model

    # ------------------------------------------------------------------- repr
    def extra_repr(self):
        """The text inside the parentheses of this module's repr line; override it."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, m in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


def _addindent(s, n):
    first, *rest = s.split("\n")
    if not rest:
        return s
    return first + "\n" + "\n".join(" " * n + line for line in rest)


def _as_array(value):
    """A state_dict value -> NumPy array, without importing torch."""
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy") and hasattr(value, "cpu"):  # a torch tensor
        v = value.detach().cpu()
        if str(getattr(v, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            v = v.float()
        return v.numpy()
    if isinstance(value, (numbers.Number, list, tuple)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"expected a Tensor or an array, got {type(value).__name__}")
