"""Shared fixtures."""
import pytest

import mmu


@pytest.fixture
def one_thread():
    """Tiny models and graphs: one thread runs them fastest whatever the machine's load (OpenMP's
    spin-waiting makes two threads slow when another process holds a core). Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    prev = mmu.get_num_threads()
    mmu.set_num_threads(1)
    yield
    mmu.set_num_threads(prev)
