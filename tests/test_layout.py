"""The source layout mmu/ARCHITECTURE.md describes, checked on the files: the layering of csrc/ (which
folder may include which) and one family name end to end (csrc/<dir>/<family>.c,
csrc/python/bind_<family>.c, mmu/_fn_<family>.py)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
pytestmark = pytest.mark.skipif(not CSRC.is_dir(), reason="needs the source tree (csrc/)")

# the folders of csrc/ whose headers each folder may include
MAY_INCLUDE = {
    "core": {"core"},
    "dnnl": {"core", "dnnl"},
    "ops": {"core", "dnnl", "ops"},
    "loss": {"core", "dnnl", "ops", "loss"},
    "quant": {"core", "dnnl", "ops", "quant"},
    "optim": {"core", "ops", "optim"},
    "python": {"core", "ops", "python"},
}
# the binding's module state (stats, version) is the one place Python reaches the oneDNN seam
EXCEPTIONS = {("python/module.c", "dnnl")}


def _local_includes(path):
    """The csrc folders of the project headers path includes ("..." includes, resolved)."""
    for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.M):
        yield (path.parent / name).resolve().relative_to(CSRC).parts[0]


def test_csrc_folders_include_only_the_layers_below_them():
    bad = []
    for path in sorted(CSRC.rglob("*.[ch]")):
        rel = path.relative_to(CSRC).as_posix()
        folder = path.relative_to(CSRC).parts[0]
        for inc in _local_includes(path):
            if inc not in MAY_INCLUDE[folder] and (rel, inc) not in EXCEPTIONS:
                bad.append(f"{rel} includes a header of csrc/{inc}/")
    assert not bad, "layering: " + "; ".join(bad)


def test_third_party_headers_stay_in_their_folder():
    for path in sorted(CSRC.rglob("*.[ch]")):
        text, folder = path.read_text(), path.relative_to(CSRC).parts[0]
        if "dnnl.h>" in text:
            assert folder == "dnnl", f"{path.relative_to(ROOT)} includes dnnl.h outside csrc/dnnl/"
        if re.search(r"#\s*include\s*<Python\.h>", text):
            assert folder == "python", f"{path.relative_to(ROOT)} includes Python.h outside csrc/python/"


def test_the_autograd_engine_does_not_know_the_ops():
    text = (CSRC / "core" / "autograd.c").read_text()
    assert "ops.h" not in text and "mmu_reduce(" not in text
    assert "mmu_op_table[" in text  # it dispatches through the table


def _family_sources():
    return {p.stem for d in ("ops", "loss", "optim") for p in (CSRC / d).glob("*.c")} | \
        {"quant_" + p.stem for p in (CSRC / "quant").glob("*.c")}


def test_every_binding_is_named_after_its_family():
    families = _family_sources() | {"core", "autograd"}  # bind_core.c: the core op families
    stray = [p.name for p in (CSRC / "python").glob("bind_*.c") if p.stem[len("bind_"):] not in families]
    assert not stray, f"bindings named after no op family file: {stray}"


def test_every_functional_module_is_named_after_its_binding():
    bindings = {p.stem[len("bind_"):] for p in (CSRC / "python").glob("bind_*.c")}
    stray = [p.name for p in (ROOT / "mmu").glob("_fn_*.py") if p.stem[len("_fn_"):] not in bindings]
    assert not stray, f"mmu/_fn_*.py without a csrc/python/bind_<family>.c: {stray}"


def test_nothing_in_the_project_points_outside_it():
    """No file of the repository refers to the team's workspace (files outside the repository)."""
    patterns = re.compile(r"\.\./shared|/work/|DESIGN\.md|REFERENCES\.md")
    hits = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        # build products (pip's egg-info copies the README a build saw) are not the project's files
        if not path.is_file() or rel.parts[0] in {".git", ".venv", "build", "dist", "data", ".pytest_cache"} \
                or rel.parts[0].endswith(".egg-info") or path.suffix in {
                ".so", ".png", ".jpg", ".npz", ".safetensors", ".pyc"}:
            continue
        if path.name == "test_layout.py":
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{rel}: {m.group(0)}" for m in patterns.finditer(text)]
    assert not hits, f"pointers to files outside the repository: {hits}"


def test_the_layer_split_keeps_the_old_import_paths():
    """Saved configs name classes by import path (mmu.nn.layers.Conv2d before the split into conv.py,
    norm.py, activation.py, pooling.py): those paths still give the same classes."""
    import mmu.nn as nn
    from mmu.nn import layers
    from mmu.nn.module import _decode
    moved = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LayerNorm",
             "GroupNorm", "RMSNorm", "BatchNorm1d", "BatchNorm2d", "ActNorm", "ReLU", "SiLU", "GELU", "Sigmoid",
             "Tanh", "LeakyReLU", "Softmax", "AvgPool2d", "MaxPool2d"]
    for name in moved:
        assert getattr(layers, name) is getattr(nn, name), name
        assert _decode({"__import__": f"mmu.nn.layers.{name}"}) is getattr(nn, name), name


# the Python packages that may import mmu.models (the layer above everything but the tools on top)
MAY_IMPORT_MODELS = {"models", "compare.py", "__main__.py", "__init__.py", "demo.py"}


def test_nothing_below_the_models_layer_imports_it():
    """mmu/models/ sits above nn, quantizers, losses, tokenizers, train, data and metrics: none of
    those imports it (a lower layer reaching up would make a cycle), and it imports no tool on top."""
    pkg = ROOT / "mmu"
    up = re.compile(r"^\s*(?:from\s+(?:mmu|\.+)\s*(?:\.\s*models\b|\s+import\s+[^#\n]*\bmodels\b)"
                    r"|from\s+\.+models\b|import\s+mmu\.models\b)", re.M)
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg)
        if rel.parts[0] in MAY_IMPORT_MODELS:
            continue
        if up.search(path.read_text()):
            bad.append(rel.as_posix())
    assert not bad, f"below mmu/models/ but importing it: {bad}"
    down = re.compile(r"^\s*(?:from\s+(?:mmu|\.\.)\s*\.?\s*(?:compare|__main__)\b|import\s+mmu\.(?:compare|__main__))",
                      re.M)
    for path in sorted((pkg / "models").rglob("*.py")):
        assert not down.search(path.read_text()), f"{path.relative_to(ROOT)} imports a tool above it"


def test_every_model_folder_has_config_model_convert():
    """mmu/models/<name>/ = config.py, model.py, convert.py (mmu/models/__init__.py documents it)."""
    pkg = ROOT / "mmu" / "models"
    assert (pkg / "__init__.py").is_file()
    for d in sorted(p for p in pkg.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        missing = [f for f in ("__init__.py", "config.py", "model.py", "convert.py") if not (d / f).is_file()]
        assert not missing, f"mmu/models/{d.name}/ lacks {missing}"
