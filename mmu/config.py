"""mmu.config: the one JSON codec of mmu's configs, for modules and for config dataclasses.

`get_config(obj)` turns a Module (its recorded constructor arguments) or a config dataclass into a
JSON-ready dict; `from_config(d)` builds the object again, so `from_config(get_config(x)) == x` for a
config and rebuilds an equal (freshly initialised) module. Configs nest: a dataclass field may hold
another config dataclass (a model's config holding its tokenizer's VQVAEConfig), a dict, a list or
a Module, and each comes back as what it was.

Forms: a module is {"class": import path, "args": {constructor argument: value}} (what
Module.get_config returns and save_pretrained writes into config.json); a dataclass is
{"class": import path, "fields": {name: value}}; inside either, a nested dataclass is written
{"__config__": {...}}, a nested module {"__module__": {...}}, and a class or function given as an
argument {"__import__": path}. Loading imports only mmu's own modules and otherwise looks in the
modules already imported (a config.json from elsewhere cannot import arbitrary code): import the
module defining a custom class before from_config.

Module.save_pretrained / from_pretrained and the Trainer's checkpoint config check use these
functions; they are also `mmu.get_config` and `mmu.from_config`.
"""
import dataclasses
import json

from .nn.module import Module, _build, _decode, _encode, _NotSerialisable

__all__ = ["get_config", "from_config"]


def get_config(obj):
    """A JSON-ready dict describing obj: a Module ({"class", "args"}, its recorded constructor
    arguments) or a config dataclass instance ({"class", "fields"}, nested configs included).
    ValueError when something in it cannot be written as JSON (the message names it)."""
    if isinstance(obj, Module):
        return obj.get_config()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        enc = _encode(obj, f"the {type(obj).__name__} config")
        if isinstance(enc, _NotSerialisable):
            raise ValueError(f"mmu.get_config: {enc.why}")
        return json.loads(json.dumps(enc["__config__"], allow_nan=False))
    raise TypeError(f"mmu.get_config: expected an mmu.nn.Module or a config dataclass instance, got "
                    f"{type(obj).__name__}")


def from_config(config):
    """The object get_config described: a config dataclass (from {"class", "fields"}) or a Module with
    fresh weights (from {"class", "args"}; load weights with from_pretrained or load_state_dict).
    A config.json's "mmu_version" stamp is ignored."""
    if not isinstance(config, dict):
        raise TypeError(f"mmu.from_config: config must be a dict (as get_config returns), got "
                        f"{type(config).__name__}")
    d = {k: v for k, v in config.items() if k != "mmu_version"}
    if "fields" not in d and "args" not in d:
        raise ValueError(f"mmu.from_config: config must have 'class' and 'fields' (a dataclass) or 'args' (a module), "
                         f"got keys {sorted(config, key=str)}")
    try:
        return _decode({"__config__": d}) if "fields" in d else _build(d, Module)
    except RecursionError:
        raise ValueError("mmu.from_config: the config nests modules or configs too deeply") from None
    except (TypeError, ValueError) as e:
        # the shared loader says from_pretrained, a constructor names its class: name this function too
        msg = str(e)
        for prefix in ("from_pretrained: ", "from_config: "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        raise (TypeError if isinstance(e, TypeError) else ValueError)(f"mmu.from_config: {msg}") from None
