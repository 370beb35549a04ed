"""Every public callable of the package is documented: the functions and classes each public module
exports, and the public methods and properties of those classes (a method may inherit its
documentation from the base class it overrides, as help() shows it)."""
import importlib
import inspect
import types

import pytest

MODULES = ["mmu", "mmu.functional", "mmu.nn", "mmu.optim", "mmu.quantizers", "mmu.losses", "mmu.metrics",
           "mmu.tokenizers", "mmu.data", "mmu.io", "mmu.train", "mmu.text", "mmu.models.phi", "mmu.models.llama",
           "mmu.models.vit", "mmu.models.gpt", "mmu.models.show_o", "mmu.models.magvit2", "mmu.generate", "mmu.distributed"]


def _public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if callable(obj) and not isinstance(obj, types.ModuleType):
            yield name, obj


def _api():
    """{id: (qualified name, object)} of the public callables of MODULES (each object once)."""
    seen = {}
    for mod_name in MODULES:
        for name, obj in _public(importlib.import_module(mod_name)):
            seen.setdefault(id(obj), (f"{mod_name}.{name}", obj))
    return list(seen.values())


def _member_doc(cls, name):
    """The docstring help() shows for cls.name: the first definition along the MRO that has one."""
    for klass in cls.__mro__:
        if name not in vars(klass):
            continue
        v = vars(klass)[name]
        v = getattr(v, "__func__", v)  # staticmethod / classmethod
        doc = v.__doc__ if isinstance(v, property) or callable(v) else None
        if doc and doc.strip():
            return doc
    return None


def _members(cls):
    for name in dir(cls):
        if name.startswith("_"):
            continue
        try:
            v = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        v = getattr(v, "__func__", v)
        if isinstance(v, property) or callable(v):
            yield name


def test_the_walk_sees_the_api():
    names = {n for n, _ in _api()}
    assert {"mmu.tensor", "mmu.functional.conv2d", "mmu.nn.Conv2d", "mmu.optim.AdamW", "mmu.quantizers.FSQ",
            "mmu.tokenizers.VQGAN", "mmu.train.Trainer", "mmu.save"} <= names
    assert len(names) > 150


def test_every_public_callable_has_a_docstring():
    missing = [name for name, obj in _api() if not (obj.__doc__ and obj.__doc__.strip())]
    assert not missing, f"public callables without a docstring: {missing}"


def test_every_public_method_of_a_public_class_is_documented():
    missing = []
    for name, obj in _api():
        if not isinstance(obj, type) or not (obj.__module__.startswith("mmu") or obj.__name__ == "Tensor"):
            continue
        missing += [f"{name}.{m}" for m in _members(obj) if not _member_doc(obj, m)]
    assert not missing, f"public methods without a docstring (own or inherited): {sorted(set(missing))}"


@pytest.mark.parametrize("name", ["mmu.nn.ReLU", "mmu.nn.Tanh", "mmu.Tensor.flatten", "mmu.Tensor.T"])
def test_docstrings_say_what_goes_in_and_out(name):
    """A sample of the docstrings written for this test: they give the shapes, not only a name."""
    mod, _, attr = name.rpartition(".")
    owner = importlib.import_module(mod) if mod in MODULES else getattr(importlib.import_module("mmu"), "Tensor")
    doc = _member_doc(owner, attr) if isinstance(owner, type) else getattr(owner, attr).__doc__
    assert doc and ("shape" in doc or "dims" in doc)
