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

Rebuilds: `pip install .` and `setup.py build_ext` reuse build/. Every header
under csrc/ is a dependency of every source, and BuildExt records the whole
build configuration (compiler command and version, what -march=native means on
this CPU, flags, macros, NumPy and oneDNN versions, MMU_* switches) beside the
objects; when it differs from the last build, everything is recompiled. Without
that, a header-only change or MMU_PORTABLE=1 after a native build compiled
nothing and installed the old binary.

Switches (environment): MMU_PORTABLE=1 builds for generic x86-64-v3 instead of
-march=native; MMU_DEBUG=1 builds with AddressSanitizer + UBSan (run Python with
LD_PRELOAD=$(gcc -print-file-name=libasan.so), see .ci/run); MMU_DNNL_INCLUDE /
MMU_DNNL_LIB point at a oneDNN found elsewhere.
"""
import glob
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Environment variables that change what gets compiled. CC/CFLAGS/LDFLAGS reach
# the compiler command (recorded as such too); these are listed so a change is
# visible in the recorded configuration even where they act indirectly.
BUILD_ENV = ("MMU_PORTABLE", "MMU_DEBUG", "MMU_DNNL_INCLUDE", "MMU_DNNL_LIB",
             "CC", "CFLAGS", "CPPFLAGS", "LDSHARED", "LDFLAGS")


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
            "onednn-devel-cpu-gomp, which pip installs as build requirements; "
            "with --no-build-isolation install them first, or set MMU_DNNL_INCLUDE and MMU_DNNL_LIB."
        )
    return inc, lib


def compile_args(env=os.environ):
    """Compiler flags for csrc/ under the MMU_* switches in `env`."""
    # -march=native: the package is compiled on the machine that runs it (pip
    # builds from source); MMU_PORTABLE=1 builds for generic x86-64-v3 instead.
    arch = "-march=x86-64-v3" if env.get("MMU_PORTABLE") else "-march=native"
    # -fno-trapping-math: mmu never reads FP exception flags, and without it GCC will not
    # if-convert a branch-free kernel (mmu_log, clamps) whose selects guard FP ops, so the loop
    # stays scalar. Values are unchanged (IEEE results, no reassociation).
    args = ["-std=c11", "-O3", arch, "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wextra",
            "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Wno-cast-function-type",
            "-D_GNU_SOURCE"]
    if env.get("MMU_DEBUG"):
        # AddressSanitizer + UndefinedBehaviorSanitizer; UB halts (no recovery) so a test run
        # fails on the first report. -O1 (the last -O wins) as ASan recommends: -O0 made the
        # suite several times slower and finds nothing more.
        args += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all"]
    return args


def link_args(env=os.environ):
    """Linker flags for _C.so under the MMU_* switches in `env`."""
    args = ["-fopenmp",
            # <venv>/lib/python3.X/site-packages/mmu/_C.so -> <venv>/lib
            "-Wl,-rpath,$ORIGIN/../../..", "-Wl,--enable-new-dtags"]
    if env.get("MMU_DEBUG"):
        args += ["-fsanitize=address,undefined"]
    return args


def headers(root="csrc"):
    """Every header under root: the dependencies of every source (a header edit rebuilds all)."""
    return sorted(glob.glob(os.path.join(root, "**", "*.h"), recursive=True))


def mmu_extension():
    """The mmu._C Extension: sources, headers as depends, include paths, flags."""
    import numpy

    dnnl_inc, dnnl_lib = _onednn_paths()
    return Extension(
        "mmu._C",
        sources=sorted(glob.glob("csrc/**/*.c", recursive=True)),
        depends=headers("csrc"),
        include_dirs=["csrc", numpy.get_include(), dnnl_inc],
        library_dirs=[dnnl_lib],
        libraries=[":libdnnl.so.3"],  # link by soname (-l:libdnnl.so.3): the runtime wheel ships libdnnl.so.3
        extra_link_args=link_args(),
        extra_compile_args=compile_args(),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


def _dist_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _command_output(cmd):
    """stdout+stderr of cmd, or the error: part of the recorded configuration, never fatal."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"error: {e}"


def build_config(compiler_so, linker_so, ext, env=os.environ):
    """Everything that decides the bytes of the built extension, as a JSON-able dict.

    Include/library paths are not recorded as such: pip's isolated builds put NumPy and
    oneDNN in a new temporary prefix each time, which would force a full rebuild on every
    `pip install .`; the versions of those packages (and MMU_DNNL_* when set) are recorded
    instead. What -march=native selects is recorded as the compiler's own expansion of it,
    so a build/ carried to another CPU rebuilds."""
    cc = list(compiler_so)
    version = _command_output([cc[0], "--version"]).splitlines()[:1]
    expanded = ""
    if "-march=native" in ext.extra_compile_args:
        # `cc -march=native -### -E -` prints the cc1 command line with the CPU's real -march/-m flags
        out = _command_output([cc[0], "-march=native", "-###", "-E", "-"])
        expanded = next((line.strip() for line in out.splitlines() if "-march=" in line and "cc1" in line), out)
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    return {
        "compiler": cc, "linker": list(linker_so), "compiler_version": version, "native": expanded,
        "extra_compile_args": list(ext.extra_compile_args or []),
        "extra_link_args": list(ext.extra_link_args or []),
        "define_macros": [list(m) for m in ext.define_macros or []], "libraries": list(ext.libraries or []),
        "sources": sorted(ext.sources), "depends": sorted(ext.depends or []),
        "python": sys.version, "numpy": numpy_version,
        "onednn": [_dist_version("onednn-cpu-gomp"), _dist_version("onednn-devel-cpu-gomp")],
        "env": {k: env.get(k) for k in BUILD_ENV},
    }


class BuildExt(build_ext):
    """build_ext that rebuilds on any configuration change and compiles sources in parallel.

    setuptools relinks an extension when the .so is older than a source or a depends (the
    headers), and otherwise does nothing: a change of flags, compiler or MMU_PORTABLE left
    the old .so in place. The configuration of the last build is recorded in build_temp, one
    file per output path; when it differs, everything is recompiled. With the configuration
    unchanged, a source recompiles when it or any header is newer than its object."""

    def config_path(self, ext):
        """Where the configuration of `ext`'s last build is recorded (keyed by its output path)."""
        out = os.path.abspath(self.get_ext_fullpath(ext.name))
        key = hashlib.sha256(out.encode()).hexdigest()[:16]
        return os.path.join(self.build_temp, f"build-config-{ext.name}-{key}.json")

    def build_extension(self, ext):
        config = build_config(self.compiler.compiler_so, self.compiler.linker_so, ext)
        path = self.config_path(ext)
        try:
            with open(path) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None
        force = self.force
        if previous != config:
            self.force = True  # build_ext's own up-to-date check sees only timestamps
        try:
            # a failed build leaves no record, so the next one starts from scratch
            if os.path.exists(path):
                os.remove(path)
            self._compile_parallel(ext)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(config, f, indent=1)
        finally:
            self.force = force

    def _compile_parallel(self, ext):
        """super().build_extension with the compiler's per-source loop run by a thread pool.

        -j N (or the CPU count) compiles N sources at once: setuptools' own -j only runs
        separate extensions in parallel, and mmu has one."""
        jobs = self.parallel if isinstance(self.parallel, int) and self.parallel > 1 else (os.cpu_count() or 1)
        compiler = self.compiler
        if jobs == 1 or not hasattr(compiler, "_compile"):  # compilers that override compile() whole
            return super().build_extension(ext)
        serial_compile = compiler.compile

        def compile_parallel(sources, output_dir=None, macros=None, include_dirs=None, debug=False,
                             extra_preargs=None, extra_postargs=None, depends=None):
            macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
                output_dir, macros, include_dirs, sources, depends, extra_postargs)
            cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
            # Every header is a dependency of every source, so an object is current when it is
            # newer than its source and every header and the configuration is unchanged (not
            # forced): then only the edited .c files recompile.
            newest_header = max((os.stat(h).st_mtime for h in depends or []), default=0.0)

            def current(obj, src):
                return (not self.force and os.path.exists(obj)
                        and os.stat(obj).st_mtime > max(os.stat(src).st_mtime, newest_header))

            jobs_list = [(obj, build[obj]) for obj in objects if obj in build and not current(obj, build[obj][0])]
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                # list(): re-raises the first compile error
                list(pool.map(lambda j: compiler._compile(j[0], j[1][0], j[1][1], cc_args, extra_postargs, pp_opts),
                              jobs_list))
            return objects

        compiler.compile = compile_parallel
        try:
            super().build_extension(ext)
        finally:
            compiler.compile = serial_compile


if __name__ == "__main__":
    setup(ext_modules=[mmu_extension()], cmdclass={"build_ext": BuildExt})
