"""mmu.io: checkpoints as safetensors files (readable by the safetensors package and PyTorch).

save_file(tensors, path, metadata=None) / load_file(path): a flat {name: Tensor} safetensors file
(format, validation and dtype rules in mmu/io/safetensors.py).

save(obj, path) / load(path): any nesting of dict / list / tuple holding Tensors, NumPy arrays,
Python ints, floats, strs, bools and None (a model state_dict, an optimizer state_dict, a
training-loop checkpoint). The tensors and arrays go into the safetensors data under their path
in obj ("state.0.exp_avg"); the rest of the structure is JSON in the header's __metadata__
("mmu.structure"), so the file is still an ordinary safetensors file for other readers. Round
trips are exact: tensor and array bits (NaN payloads, -0.0), ints stay ints (any size), floats
keep their value (inf and NaN included), tuples stay tuples, dict keys keep their type (str, int,
float, bool, None) and order, a tensor that occurs twice is stored once and comes back as one
object, requires_grad is kept. NumPy scalars come back as 0-d arrays of their dtype.
load() of a plain safetensors file (no mmu structure) returns load_file()'s dict.
"""
import json
import math
import os

import numpy as np

from .._C import Tensor
from .safetensors import CheckpointError, load_file, load_metadata, read_raw, save_file, write_file
from .safetensors import _FROM_NP, _as_array, _to_tensor

__all__ = ["CheckpointError", "save_file", "load_file", "load_metadata", "save", "load"]

_STRUCT_KEY = "mmu.structure"
_VERSION_KEY = "mmu.version"
_VERSION = "1"


class _Encoder:
    def __init__(self):
        self.arrays = {}      # file name -> ndarray
        self.by_id = {}       # id(tensor or array) -> (tag, file name)
        self.keep = []        # keeps objects alive while ids are in use
        self.active = set()   # ids of containers on the current path (cycle check)

    def _name(self, path):
        base = ".".join(path) or "_"
        name, k = base, 1
        while name in self.arrays or name == "__metadata__":
            name, k = f"{base}#{k}", k + 1
        return name

    def _leaf(self, obj, tag, path):
        hit = self.by_id.get(id(obj))
        if hit is not None and hit[0] == tag:
            return {tag: hit[1]}
        name = self._name(path)
        if tag == "tensor":
            self.arrays[name] = obj.detach().numpy()
        else:
            self.arrays[name] = _as_array(name, obj)
        self.by_id[id(obj)] = (tag, name)
        self.keep.append(obj)
        out = {tag: name}
        if tag == "tensor" and obj.requires_grad:
            out["requires_grad"] = True
        return out

    def key(self, k, path):
        if k is None or isinstance(k, (str, bool, int)):
            return k
        if isinstance(k, float):
            return self.value(k, path)
        raise TypeError(f"mmu.save: dict key {k!r} at {'.'.join(path) or '<root>'} has type {type(k).__name__}; "
                        "keys must be str, int, float, bool or None")

    def value(self, obj, path):
        where = ".".join(path) or "<root>"
        if obj is None or isinstance(obj, (str, bool)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)
            return {"float": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
        if isinstance(obj, Tensor):
            return self._leaf(obj, "tensor", path)
        if isinstance(obj, np.ndarray):
            return self._leaf(obj, "array", path)
        if isinstance(obj, np.generic) and np.dtype(type(obj)).newbyteorder("=") in _FROM_NP:
            return self._leaf(np.asarray(obj), "array", path)
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in self.active:
                raise ValueError(f"mmu.save: the object contains itself (a reference cycle at {where})")
            self.active.add(id(obj))
            try:
                if isinstance(obj, dict):
                    return {"dict": [[self.key(k, path), self.value(v, path + [str(k)])] for k, v in obj.items()]}
                items = [self.value(v, path + [str(i)]) for i, v in enumerate(obj)]
                return items if isinstance(obj, list) else {"tuple": items}
            finally:
                self.active.discard(id(obj))
        raise TypeError(f"mmu.save: cannot save an object of type {type(obj).__name__} (at {where}); supported: "
                        "Tensor, numpy array, int, float, str, bool, None and dict/list/tuple of them")


def save(obj, path):
    """Saves a (nested) dict/list/tuple of Tensors, arrays, numbers, strings, bools and None to one
    safetensors file, atomically (temp file in the same directory, fsync, os.replace)."""
    enc = _Encoder()
    structure = enc.value(obj, [])
    meta = {_VERSION_KEY: _VERSION, _STRUCT_KEY: json.dumps(structure, separators=(",", ":"), allow_nan=False)}
    write_file(enc.arrays, path, meta)


class _Decoder:
    def __init__(self, path, data, dtypes):
        self.path, self.data, self.dtypes = path, data, dtypes
        self.objects = {}

    def fail(self, msg):
        raise CheckpointError(f"{self.path}: {msg}")

    def _leaf(self, tag, node):
        name = node[tag]
        if not isinstance(name, str) or name not in self.data:
            self.fail(f"the structure refers to a missing tensor {name!r}")
        key = (tag, name)
        if key not in self.objects:
            arr = self.data[name]
            if tag == "tensor":
                if not isinstance(arr, Tensor):
                    arr = _to_tensor(self.path, name, arr, self.dtypes[name])
                if node.get("requires_grad"):
                    if arr.dtype != np.float32:
                        self.fail(f"tensor {name!r} is {arr.dtype} but marked requires_grad (only float32 can be)")
                    arr.requires_grad_(True)
            elif isinstance(arr, Tensor):
                arr = arr.numpy()
            elif self.dtypes[name] == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
                self.fail(f"tensor {name!r}: BOOL bytes must be 0 or 1")
            self.objects[key] = arr
        return self.objects[key]

    def value(self, node):
        if node is None or isinstance(node, (str, bool, int, float)):
            return node
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if isinstance(node, dict) and len(node) >= 1:
            if "tensor" in node:
                return self._leaf("tensor", node)
            if "array" in node:
                return self._leaf("array", node)
            if "tuple" in node and isinstance(node["tuple"], list):
                return tuple(self.value(v) for v in node["tuple"])
            if "float" in node and node["float"] in ("nan", "inf", "-inf"):
                return float(node["float"])
            if "dict" in node and isinstance(node["dict"], list):
                out = {}
                for pair in node["dict"]:
                    if not isinstance(pair, list) or len(pair) != 2:
                        self.fail("malformed dict entry in the mmu structure")
                    k = self.value(pair[0])
                    if not (k is None or isinstance(k, (str, bool, int, float))):
                        self.fail(f"malformed dict key {pair[0]!r} in the mmu structure")
                    out[k] = self.value(pair[1])
                return out
        self.fail(f"malformed node {str(node)[:80]!r} in the mmu structure")


def _tensor_names(structure, out):
    if isinstance(structure, list):
        for v in structure:
            _tensor_names(v, out)
    elif isinstance(structure, dict):
        if isinstance(structure.get("tensor"), str):
            out.add(structure["tensor"])
        for v in structure.values():
            if isinstance(v, (list, dict)):
                _tensor_names(v, out)
    return out


def load(path):
    """Loads what save() wrote (or a plain safetensors file, as {name: Tensor}). Everything is read
    and checked before anything is returned; the file is closed on return."""
    path = os.fspath(path)
    parsed = {}

    def wanted(metadata):
        if not metadata or _STRUCT_KEY not in metadata:
            return None
        try:
            parsed["structure"] = json.loads(metadata[_STRUCT_KEY])
        except ValueError as e:
            raise CheckpointError(f"{path}: the mmu structure in __metadata__ is not valid JSON ({e})") from None
        except RecursionError:
            raise CheckpointError(f"{path}: the mmu structure in __metadata__ is nested too deeply") from None
        return _tensor_names(parsed["structure"], set())

    metadata, data, dtypes = read_raw(path, wanted)
    if "structure" not in parsed:
        return {name: _to_tensor(path, name, arr, dtypes[name]) for name, arr in data.items()}
    try:
        return _Decoder(path, data, dtypes).value(parsed["structure"])
    except RecursionError:
        raise CheckpointError(f"{path}: the mmu structure in __metadata__ is nested too deeply") from None
