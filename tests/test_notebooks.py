"""The notebooks run top to bottom (MMU_FAST=1: tiny budgets) in a kernel of this very interpreter,
with this checkout's mmu first on the path; any cell error fails the test."""
import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

import mmu  # noqa: E402

if not hasattr(mmu.tokenizers, "VQVAE") or not hasattr(mmu.train, "Trainer"):
    pytest.skip("mmu.tokenizers / mmu.train are not in this build", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["01_quickstart.ipynb", "02_tokenizer_comparison.ipynb", "03_language_model.ipynb", "04_show_o.ipynb",
             "05_vila_u.ipynb", "06_1d_and_video_tokenizers.ipynb"]
KERNEL = "mmu-test-python"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec that launches sys.executable, found through JUPYTER_PATH; the kernel inherits
    MMU_FAST=1 and a PYTHONPATH that puts this checkout first."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mmu tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MMU_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, kernel_env):
    path = os.path.join(ROOT, "notebooks", name)
    nb = nbformat.read(path, as_version=4)
    # the committed notebook carries no outputs
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600, allow_errors=False,
                                     resources={"metadata": {"path": str(kernel_env)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the plots were drawn
