"""mmu.models: the models beyond the three conv tokenizers, one folder each, and a lookup by name.

Layout: `mmu/models/<name>/` holds
  config.py   the model's config dataclass (JSON fields; it may hold its tokenizer's config, which
              mmu.get_config / mmu.from_config round-trip),
  model.py    the model, built from mmu.nn parts and trained by mmu.train.Trainer through
              `training_step(batch, step) -> (loss, logs)` (optionally `discriminator_step`,
              `evaluate_step`),
  convert.py  published checkpoint layouts (a dict of arrays the user has) -> the model's state_dict.
The folders the later issues add: show_o, magvit2 (Show-o's image tokenizer), vila_u, titok, omnitokenizer,
gpt. The conv tokenizers
(VQVAE, DVAE, VQGAN) stay in mmu.tokenizers and are registered here under their lower-case names.

Layering: mmu.models builds on nn, quantizers, losses, tokenizers, generate and text; nothing below it
imports it (tests/test_layout.py checks this). `register(name, cls)` adds a model; `get(name)` returns
its class; `available()` lists the names.
"""
import importlib
import re

import numpy as np

__all__ = ["register", "get", "available", "ShowO"]

# model classes exported here, imported on first access (mmu.models.ShowO): name -> (folder, class name)
_LAZY = {"ShowO": ("show_o", "ShowO")}


def __getattr__(name):
    if name in _LAZY:
        folder, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{folder}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY = {}
# the models of mmu.tokenizers (and models registered under a name other than their folder), imported on
# first lookup: name -> (module, class name)
_BUILTIN = {"vqvae": ("mmu.tokenizers", "VQVAE"), "dvae": ("mmu.tokenizers", "DVAE"),
            "vqgan": ("mmu.tokenizers", "VQGAN"), "vila_u_tower": ("mmu.models.vila_u", "UnifiedVisionTower")}


def register(name, cls, overwrite=False):
    """Registers the model class `cls` under `name` (lower case letters, digits, '_'); each
    mmu/models/<name>/__init__.py calls it. A name taken by another class raises ValueError unless
    overwrite=True. Returns cls (usable as a decorator through functools.partial)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"mmu.models.register: name must be lower case letters, digits and '_' (starting with a "
                         f"letter), got {name!r}")
    if not isinstance(cls, type):
        raise TypeError(f"mmu.models.register: cls must be a class, got {type(cls).__name__}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"mmu.models.register: overwrite must be a bool, got {type(overwrite).__name__}")
    have = _REGISTRY.get(name)
    if have is not None and have is not cls and not overwrite:
        raise ValueError(f"mmu.models.register: {name!r} is already {have.__module__}.{have.__qualname__}; "
                         "pass overwrite=True to replace it")
    _REGISTRY[name] = cls
    return cls


def get(name):
    """The model class registered as `name` (e.g. get("vqvae") is mmu.tokenizers.VQVAE); a folder
    mmu/models/<name>/ is imported on first use. KeyError lists the available names."""
    if not isinstance(name, str):
        raise TypeError(f"mmu.models.get: name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        if name in _BUILTIN:
            module, attr = _BUILTIN[name]
            _REGISTRY[name] = getattr(importlib.import_module(module), attr)
        elif _NAME.match(name):
            try:
                importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{__name__}.{name}":
                    raise
    if name not in _REGISTRY:
        raise KeyError(f"mmu.models.get: no model named {name!r}; available: {available()}")
    return _REGISTRY[name]


def available():
    """The registered model names, sorted (the conv tokenizers and every mmu/models/<name>/ folder)."""
    import pkgutil
    names = set(_REGISTRY) | set(_BUILTIN)
    names |= {m.name for m in pkgutil.iter_modules(__path__) if m.ispkg}
    return sorted(names)
