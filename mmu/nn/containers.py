"""Containers: Sequential, ModuleList, ModuleDict (torch.nn's)."""
import collections

from .._args import is_int
from .module import Module


def _index(idx, n, what):
    if not is_int(idx):
        raise TypeError(f"{what} indices must be integers or slices, not {type(idx).__name__}")
    idx = int(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for a {what} of length {n}")
    return idx % n


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: modules under the names "0", "1", ...,
    indexed like a list (negative indices, IndexError past the end), renumbered
    after a removal or an insertion as torch does. _what names the class in errors."""
    _what = "ModuleSequence"

    def _renumber(self, items):
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def _key(self, idx):
        keys = list(self._modules)
        return keys[_index(idx, len(keys), self._what)]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._slice(idx)
        return self._modules[self._key(idx)]

    def __setitem__(self, idx, module):
        setattr(self, self._key(idx), module)

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            for k in list(self._modules)[idx]:
                delattr(self, k)
        else:
            delattr(self, self._key(idx))
        # keep the numbering contiguous, as torch does
        self._renumber(list(self._modules.values()))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Adds module at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self


class Sequential(_ModuleSequence):
    """Runs its modules one after the other: Sequential(m1, m2, ...) or
    Sequential(OrderedDict(name=module, ...)). Indexable, sliceable, appendable."""
    _what = "Sequential"

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], dict):  # an OrderedDict (or a dict, from a config)
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def _slice(self, idx):
        return type(self)(collections.OrderedDict(list(self._modules.items())[idx]))

    def extend(self, modules):
        """Appends every module of an iterable, in order; returns self."""
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        """Inserts module before position index (negative counts from the end; len appends)."""
        n = len(self._modules)
        if not -n <= index <= n:
            raise IndexError(f"index {index} is out of range for a Sequential of length {n}")
        index = index % (n + 1) if index < 0 else index
        items = list(self._modules.values())
        items.insert(index, module)
        if not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._renumber(items)
        return self

    def forward(self, input):
        """Runs the modules in order, each on the previous one's output; returns the last output."""
        for m in self._modules.values():
            input = m(input)
        return input


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered (names "0", "1", ...)."""
    _what = "ModuleList"

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _slice(self, idx):
        return type(self)(list(self._modules.values())[idx])

    def __iadd__(self, modules):
        return self.extend(modules)

    def extend(self, modules):
        """Appends every module of an iterable, in order; returns self."""
        if not hasattr(modules, "__iter__"):
            raise TypeError(f"ModuleList.extend should be called with an iterable, got {type(modules).__name__}")
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        """Inserts module before position index (negative counts from the end)."""
        if not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        items = list(self._modules.values())
        items.insert(index, module)
        self._renumber(items)

    def forward(self, *args, **kwargs):
        """Raises NotImplementedError: a ModuleList holds modules, iterate over it to call them."""
        raise NotImplementedError("ModuleList has no forward; iterate over it")


class ModuleDict(Module):
    """A dict of modules whose parameters are registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        """The names, in insertion order."""
        return self._modules.keys()

    def values(self):
        """The modules, in insertion order."""
        return self._modules.values()

    def items(self):
        """(name, module) pairs, in insertion order."""
        return self._modules.items()

    def pop(self, key):
        """Removes the module named key and returns it (KeyError if absent)."""
        m = self._modules[key]
        del self._modules[key]
        return m

    def clear(self):
        """Removes every module."""
        self._modules.clear()

    def update(self, modules):
        """Adds or replaces modules from a mapping (or a ModuleDict) or an iterable of (name, module)
        pairs.
        """
        items = modules.items() if isinstance(modules, (collections.abc.Mapping, ModuleDict)) else modules
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError("ModuleDict.update expects a mapping or an iterable of (key, module) pairs")
            self[item[0]] = item[1]

    def forward(self, *args, **kwargs):
        """Raises NotImplementedError: a ModuleDict holds modules, index it to call them."""
        raise NotImplementedError("ModuleDict has no forward; index it")
