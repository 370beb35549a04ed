"""What the Hugging Face checkpoint converters (mmu/models/{phi,llama,vit}/convert.py) share: reading
a config.json, turning a dict of tensors into NumPy arrays, and mapping published keys onto an mmu
module's state_dict with every missing, unexpected or mis-shaped key reported together, by name and
shape, before anything is loaded."""
import json
import os

import numpy as np

from .._args import foreign_array

__all__ = ["read_config", "checkpoint_arrays", "KeyMap"]


def read_config(config, fn):
    """config: the dict a checkpoint's config.json holds, or the path of that file -> a dict."""
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{fn}: config file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{fn}: {path!r} is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise TypeError(f"{fn}: config must be a dict (a config.json's contents) or its path, "
                        f"got {type(config).__name__}")
    return config


def config_int(config, key, fn, default=None, minimum=1):
    """config[key] as an int >= minimum (default when absent or null; KeyError-like ValueError when
    there is no default)."""
    v = config.get(key)
    if v is None:
        if default is None:
            raise ValueError(f"{fn}: config has no {key!r}")
        return default
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{fn}: config[{key!r}] must be an int >= {minimum}, got {v!r}")
    return int(v)


def config_float(config, key, fn, default):
    """config[key] as a positive float (default when absent or null)."""
    v = config.get(key)
    if v is None:
        return float(default)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0:
        raise ValueError(f"{fn}: config[{key!r}] must be a positive number, got {v!r}")
    return float(v)


def checkpoint_arrays(state_dict, fn):
    """{key: ndarray} from a dict of NumPy arrays, torch tensors (bfloat16 upcast to float32) or mmu
    Tensors, as read from the checkpoint's safetensors file(s)."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"{fn}: state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    out = {}
    for k, v in state_dict.items():
        if not isinstance(k, str):
            raise TypeError(f"{fn}: state_dict keys must be str, got {type(k).__name__} {k!r}")
        out[k] = foreign_array(v, fn, k)
    return out


class KeyMap:
    """Fills an mmu module's state_dict from published keys.

    targets: {mmu key: shape} (the module's state_dict); source: {published key: ndarray}.
    put(mmu_key, key) takes source[key] (optionally through `transform`) for mmu_key; problems are
    collected, and finish() raises one ValueError naming every missing published key, every mmu
    tensor left unfilled, every shape that does not fit (published key, its shape, the shape the
    config needs) and every published key not used (unless `ignore(key)` is true for it)."""

    def __init__(self, targets, source, fn, describe=""):
        self.targets, self.source, self.fn, self.describe = targets, source, fn, describe
        self.out, self.used, self.missing, self.misshaped = {}, set(), [], []

    def has(self, key):
        return key in self.source

    def get(self, key):
        """source[key] as float32, marked used; None (and recorded missing) when absent."""
        if key not in self.source:
            self.missing.append(key)
            return None
        self.used.add(key)
        return np.ascontiguousarray(self.source[key], dtype=np.float32)

    def put(self, mmu_key, key, transform=None):
        a = self.get(key)
        if a is None:
            return
        if transform is not None:
            a = transform(a)
        self.set(mmu_key, a, key)

    def set(self, mmu_key, a, what):
        """Assigns the array a (made from the published tensor(s) `what`) to mmu_key, shape-checked."""
        want = self.targets.get(mmu_key)
        if want is None:
            raise AssertionError(f"{self.fn}: the mmu model has no tensor {mmu_key!r}")   # a converter bug
        if tuple(a.shape) != tuple(want):
            self.misshaped.append(f"{what} has shape {tuple(a.shape)}, the model{self.describe} needs "
                                  f"{tuple(want)} (for {mmu_key})")
            return
        self.out[mmu_key] = a

    def finish(self, ignore=lambda key: False):
        """The filled {mmu key: float32 array}; ValueError listing every problem."""
        problems = []
        if self.missing:
            problems.append(f"missing key(s): {self.missing}")
        problems += self.misshaped
        unexpected = [k for k in self.source if k not in self.used and not ignore(k)]
        if unexpected:
            problems.append(f"unexpected key(s) (not part of this layout and config): {unexpected}")
        unfilled = [k for k in self.targets if k not in self.out]
        if unfilled and not problems:
            problems.append(f"the mmu model's {unfilled} were not filled")
        if problems:
            raise ValueError(f"{self.fn}: the state dict does not fit the model{self.describe}:\n  "
                             + "\n  ".join(problems))
        return self.out
