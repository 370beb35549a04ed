"""mmu's OpenMP defaults: `import mmu` gives libgomp a short spin count (GOMP_SPINCOUNT) unless the
user set OMP_WAIT_POLICY or GOMP_SPINCOUNT; checked in fresh processes, with libgomp's own report of
the settings it read (OMP_DISPLAY_ENV=verbose prints them to stderr when it is loaded)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _libgomp_settings(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra, OMP_DISPLAY_ENV="verbose")
    r = subprocess.run([sys.executable, "-c", "import mmu; mmu.zeros(4).sum()"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # one block per libgomp loaded (mmu's, and torch's copy if something imported torch)
    return dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", r.stderr, re.M))


def test_import_sets_a_short_spin_count():
    assert _libgomp_settings({})["GOMP_SPINCOUNT"] == "1000"


@pytest.mark.parametrize("user, key, value", [
    ({"GOMP_SPINCOUNT": "123"}, "GOMP_SPINCOUNT", "123"),
    ({"OMP_WAIT_POLICY": "passive"}, "GOMP_SPINCOUNT", "0"),
])
def test_user_settings_win(user, key, value):
    assert _libgomp_settings(user)[key] == value
