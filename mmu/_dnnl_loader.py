"""Find and preload oneDNN's shared library before mmu._C is imported.

The runtime comes from the PyPI package onednn-cpu-gomp, which installs
libdnnl.so.3 under the environment's data prefix (<prefix>/lib), a folder the
dynamic loader does not search. Loading it here by absolute path (RTLD_GLOBAL)
means _C.so's dependency on libdnnl.so.3 is already satisfied when Python
imports it: no LD_LIBRARY_PATH, in a venv, a --user install, editable or not.
"""
import ctypes
import os
import sys
from importlib import metadata

_SONAME = "libdnnl.so.3"


def _candidates():
    env = os.environ.get("MMU_DNNL_LIB")
    if env:
        yield os.path.join(env, _SONAME)
    try:
        dist = metadata.distribution("onednn-cpu-gomp")
        for f in dist.files or []:
            if str(f).endswith(_SONAME):
                yield str(dist.locate_file(f))
    except metadata.PackageNotFoundError:
        pass
    for prefix in {sys.prefix, sys.base_prefix, os.path.expanduser("~/.local")}:
        yield os.path.join(prefix, "lib", _SONAME)


def preload():
    """Load libdnnl.so.3 globally; return its path (None if the loader must find it)."""
    for path in _candidates():
        if os.path.exists(path):
            ctypes.CDLL(os.path.abspath(path), mode=ctypes.RTLD_GLOBAL)
            return os.path.abspath(path)
    return None
