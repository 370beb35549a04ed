"""Build of mmu._C: one C extension from csrc/, linked to oneDNN and OpenMP.

oneDNN comes from the PyPI wheels onednn-cpu-gomp (libdnnl.so.3, built for
GNU OpenMP) and onednn-devel-cpu-gomp (headers), both build requirements in
pyproject.toml. pip installs their files under the environment's data prefix
(<prefix>/include, <prefix>/lib), whichever prefix that is (the build's
isolated environment, a venv, --user), so we ask importlib.metadata where the
files landed instead of guessing paths.

At run time mmu/_dnnl_loader.py preloads libdnnl.so.3 from wherever pip put
the runtime wheel, so `import mmu` needs no LD_LIBRARY_PATH; an rpath to the
usual venv location is kept as a second way for non-Python users of _C.so.
"""
import glob
import os
import sys
from importlib import metadata

import numpy
from setuptools import Extension, setup


def _locate(dist_name, suffix):
    """Directory of the first file of `dist_name` whose path ends with suffix."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith(suffix):
            return os.path.dirname(os.path.abspath(str(dist.locate_file(f))))
    return None


def _onednn_paths():
    inc = os.environ.get("MMU_DNNL_INCLUDE") or _locate("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.h")
    lib = os.environ.get("MMU_DNNL_LIB") or _locate("onednn-cpu-gomp", "libdnnl.so.3")
    if inc and inc.endswith(os.path.join("oneapi", "dnnl")):
        inc = os.path.dirname(os.path.dirname(inc))
    if not inc or not lib:
        sys.exit(
            "mmu: cannot find oneDNN. It comes from the PyPI packages onednn-cpu-gomp and "
            "onednn-devel-cpu-gomp (==2023.2.0), which pip installs as build requirements; "
            "with --no-build-isolation install them first, or set MMU_DNNL_INCLUDE and MMU_DNNL_LIB."
        )
    return inc, lib


dnnl_inc, dnnl_lib = _onednn_paths()
sources = sorted(glob.glob("csrc/**/*.c", recursive=True))

# -march=native: the package is compiled on the machine that runs it (pip
# builds from source); MMU_PORTABLE=1 builds for generic x86-64-v3 instead.
arch = "-march=x86-64-v3" if os.environ.get("MMU_PORTABLE") else "-march=native"
# -fno-trapping-math: mmu never reads FP exception flags, and without it GCC will not
# if-convert a branch-free kernel (mmu_log, clamps) whose selects guard FP ops, so the loop
# stays scalar. Values are unchanged (IEEE results, no reassociation).
extra_compile = ["-std=c11", "-O3", arch, "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wextra",
                 "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Wno-cast-function-type",
                 "-D_GNU_SOURCE"]
extra_link = ["-fopenmp", "-l:libdnnl.so.3",
              # <venv>/lib/python3.X/site-packages/mmu/_C.so -> <venv>/lib
              "-Wl,-rpath,$ORIGIN/../../..", "-Wl,--enable-new-dtags"]
if os.environ.get("MMU_DEBUG"):
    # AddressSanitizer build; run Python with LD_PRELOAD=$(gcc -print-file-name=libasan.so)
    extra_compile += ["-O0", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
    extra_link += ["-fsanitize=address"]

ext = Extension(
    "mmu._C",
    sources=sources,
    include_dirs=["csrc", numpy.get_include(), dnnl_inc],
    library_dirs=[dnnl_lib],
    # link by soname: the runtime wheel ships libdnnl.so.3
    extra_link_args=extra_link,
    extra_compile_args=extra_compile,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(ext_modules=[ext])
