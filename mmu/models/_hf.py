"""What the Hugging Face checkpoint converters (mmu/models/{phi,llama,vit}/convert.py) share: reading
a config.json, turning a dict of tensors into NumPy arrays, and mapping published keys onto an mmu
module's state_dict with every missing, unexpected or mis-shaped key reported together, by name and
shape, before anything is loaded."""
import json
import os

import numpy as np

from .._args import foreign_array

__all__ = ["read_config", "config_int", "config_float", "checkpoint_arrays", "KeyMap", "cat_rows", "check_tied"]


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


def checkpoint_arrays(state_dict, fn, prefix=""):
    """{key: ndarray} from a dict of NumPy arrays, torch tensors (bfloat16 upcast to float32) or mmu
    Tensors, as read from the checkpoint's safetensors file(s). prefix: only the keys starting with
    it are taken, with the prefix removed (a model stored inside another, e.g. Show-o's 'showo.');
    the others are left alone (not converted)."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"{fn}: state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"{fn}: prefix must be a str, got {type(prefix).__name__}")
    out = {}
    for k, v in state_dict.items():
        if not isinstance(k, str):
            raise TypeError(f"{fn}: state_dict keys must be str, got {type(k).__name__} {k!r}")
        if k.startswith(prefix):
            out[k[len(prefix):]] = foreign_array(v, fn, k)
    if prefix and not out:
        raise ValueError(f"{fn}: no key of the state dict starts with prefix {prefix!r}")
    return out


class KeyMap:
    """Reads published keys out of a checkpoint for one layout and config.

    source: {published key: ndarray}. get(key, shape) returns source[key] as a float32 array when
    it has the shape the config needs, and otherwise records the key as missing or mis-shaped and
    returns None; finish() then raises one ValueError naming every missing key, every shape that
    does not fit (the key, its shape, the shape the config needs) and every key left unread
    (unless ignore(key) is true for it), so nothing is loaded from a checkpoint that does not fit."""

    def __init__(self, source, fn, describe):
        self.source, self.fn, self.describe = source, fn, describe
        self.used, self.missing, self.misshaped = set(), [], []

    def has(self, key):
        return key in self.source

    def get(self, key, shape):
        if key not in self.source:
            self.missing.append(key)
            return None
        self.used.add(key)
        a = self.source[key]
        if tuple(a.shape) != tuple(shape):
            self.misshaped.append(f"{key} has shape {tuple(a.shape)}, {self.describe} needs {tuple(shape)}")
            return None
        return np.ascontiguousarray(a, dtype=np.float32)

    def skip(self, key):
        """Marks key as read without using it (a tensor the mmu model has no use for)."""
        self.used.add(key)

    def finish(self, ignore=lambda key: False):
        """Raises ValueError listing every problem, if any."""
        problems = []
        if self.missing:
            problems.append(f"missing key(s): {self.missing}")
        problems += self.misshaped
        unexpected = [k for k in self.source if k not in self.used and not ignore(k)]
        if unexpected:
            problems.append(f"unexpected key(s): {unexpected}")
        if problems:
            raise ValueError(f"{self.fn}: the state dict does not fit {self.describe}:\n  " + "\n  ".join(problems))


def cat_rows(parts):
    """[W_q, W_k, W_v] (or biases) -> one array stacked along dim 0 (mmu's fused qkv_proj); None if any
    part is None (already reported missing or mis-shaped)."""
    if any(p is None for p in parts):
        return None
    return np.concatenate(parts, axis=0)


def check_tied(km, head_key, embed_key, fn):
    """A tied checkpoint may still store the head: read it, and it must be the embedding."""
    if not km.has(head_key):
        return
    km.skip(head_key)
    head, embed = km.source[head_key], km.source.get(embed_key)
    if embed is not None and (head.shape != embed.shape or not np.array_equal(head, embed)):
        raise ValueError(f"{fn}: tie_word_embeddings is true but {head_key} {tuple(head.shape)} differs from "
                         f"{embed_key} {tuple(embed.shape)}; set tie_word_embeddings false to keep a separate head")
