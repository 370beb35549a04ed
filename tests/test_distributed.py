"""mmu.distributed: the single-process semantics (world of one, collectives return their input), the
argument checks, and, on 2 MPI ranks (tests/_mpi.py: skipped where mpi4py / mpirun are absent), the
collectives against NumPy reductions of every rank's data, in place on Tensors and arrays; the
timeout; and a rank that raises or is killed ending the whole job with an error instead of a hang."""
import re
import subprocess
import sys

import numpy as np
import pytest

import mmu
import mmu.distributed as dist
from mmu.distributed import _comm
from tests._mpi import REPO, run_mpi

DTYPES = [np.float32, np.float64, np.int64, np.int32]


@pytest.fixture
def fresh_world(monkeypatch):
    """A world that init() has not seen yet, without launcher variables (restored afterwards)."""
    for name in _comm._LAUNCHER_VARS + ("MMU_DIST_TIMEOUT",):
        monkeypatch.delenv(name, raising=False)
    for name in ("initialized", "size", "rank", "local_rank", "timeout", "comm", "MPI", "launcher_var"):
        monkeypatch.setattr(_comm._world, name, getattr(_comm._World, name))  # undone after the test
    return _comm._world


# ----------------------------------------------------------------- one process
def test_single_process_world(fresh_world):
    assert not dist.is_initialized()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
    assert dist.is_initialized() and dist.is_main_process()
    assert fresh_world.comm is None and fresh_world.timeout == 300.0
    dist.barrier()
    dist.init(timeout=5)  # idempotent; a later timeout replaces the first
    assert fresh_world.timeout == 5.0


def test_timeout_from_environment(fresh_world, monkeypatch):
    monkeypatch.setenv("MMU_DIST_TIMEOUT", "2.5")
    dist.init()
    assert fresh_world.timeout == 2.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_process_collectives_return_their_input(fresh_world, dtype):
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    for op in ("sum", "max", "min") + (("avg",) if np.dtype(dtype).kind == "f" else ()):
        assert dist.all_reduce(a, op=op) is a
        work = dist.all_reduce(a, op=op, async_op=True)
        assert work.is_completed() and work.wait() is a
    assert dist.broadcast(a, src=0) is a and dist.broadcast(a, async_op=True).wait() is a
    np.testing.assert_array_equal(a, np.arange(6, dtype=dtype).reshape(2, 3))
    gathered = dist.all_gather(a)
    assert gathered.shape == (1, 2, 3) and gathered.dtype == dtype and not np.shares_memory(gathered, a)
    np.testing.assert_array_equal(gathered[0], a)
    out = np.zeros((1, 2, 3), dtype=dtype)
    assert dist.all_gather(a, out=out) is out
    np.testing.assert_array_equal(out[0], a)


def test_single_process_tensors_and_objects(fresh_world):
    t = mmu.tensor(np.arange(4, dtype=np.float32))
    assert dist.all_reduce(t, op="avg") is t and dist.broadcast(t) is t
    np.testing.assert_array_equal(t.numpy(), np.arange(4, dtype=np.float32))
    g = dist.all_gather(t)
    assert isinstance(g, mmu.Tensor) and g.shape == (1, 4) and g.dtype == mmu.float32
    np.testing.assert_array_equal(g.numpy()[0], t.numpy())
    obj = {"seed": 3, "shape": (2, 3)}
    assert dist.broadcast_object(obj) is obj
    assert dist.all_gather_object(obj) == [obj]


def test_tensor_buffer_is_the_tensor_memory():
    # what makes the collectives copy-free on Tensors: t.numpy() is a writable view of t's storage
    t = mmu.tensor(np.zeros(5, dtype=np.float32))
    view = t.numpy()
    assert view.flags.writeable and view.flags.c_contiguous and view.ctypes.data == t._data_ptr()
    view[2] = 7.0
    assert t.numpy()[2] == 7.0


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("call, error, words", [
    (lambda: dist.all_reduce([1.0, 2.0]), TypeError, "all_reduce: x must be an mmu Tensor or a NumPy array"),
    (lambda: dist.all_reduce(np.zeros(3, np.float16)), TypeError, "all_reduce: x has dtype float16"),
    (lambda: dist.all_reduce(mmu.tensor([True, False])), TypeError, "all_reduce: x has dtype bool"),
    (lambda: dist.all_reduce(np.zeros((4, 4), np.float32)[:, 1]), ValueError, "all_reduce: x of shape (4,) is not C-contiguous"),
    (lambda: dist.all_reduce(np.zeros(3, np.float32), op="prod"), ValueError, "all_reduce: op must be one of"),
    (lambda: dist.all_reduce(np.zeros(3, np.int64), op="avg"), TypeError, "all_reduce: op 'avg' needs a float x"),
    (lambda: dist.all_reduce(np.zeros(3, np.float32), async_op="yes"), TypeError, "all_reduce: async_op must be a bool"),
    (lambda: dist.all_reduce(_read_only(np.zeros(3, np.float32))), ValueError, "all_reduce: x of shape (3,) is read-only"),
    (lambda: dist.broadcast(np.zeros(3, np.float32), src=1), ValueError, "broadcast: src 1 is not a rank of this world (size 1)"),
    (lambda: dist.broadcast(np.zeros(3, np.float32), src=0.0), TypeError, "broadcast: src must be an int"),
    (lambda: dist.broadcast("abc"), TypeError, "broadcast: x must be an mmu Tensor or a NumPy array, got str"),
    (lambda: dist.all_gather(np.zeros(3, np.float32), out=np.zeros((1, 4), np.float32)), ValueError,
     "all_gather: out has shape (1, 4) and dtype float32; expected shape (1, 3)"),
    (lambda: dist.all_gather(np.zeros(3, np.float32), out=np.zeros((1, 3), np.float64)), ValueError,
     "expected shape (1, 3) (world size, *x.shape) and dtype float32"),
    (lambda: dist.all_gather(np.zeros(3, np.float32), out=[0.0]), TypeError, "all_gather: out must be an mmu Tensor"),
    (lambda: dist.broadcast_object(1, src=2), ValueError, "broadcast_object: src 2 is not a rank"),
    (lambda: dist.init(timeout=-1), ValueError, "init: timeout must be a positive, finite number of seconds"),
    (lambda: dist.init(timeout=float("inf")), ValueError, "init: timeout must be a positive, finite"),
    (lambda: dist.init(timeout="10"), TypeError, "init: timeout must be a number of seconds, got str"),
    (lambda: dist.all_reduce(np.zeros(3, np.float32), async_op=True).wait(timeout=0), ValueError,
     "all_reduce: wait: timeout must be a positive"),
])
def test_bad_arguments_are_named(fresh_world, call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_all_gather_refuses_out_overlapping_x(fresh_world):
    buf = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="all_gather: out overlaps x"):
        dist.all_gather(buf[0], out=buf)


def test_bad_timeout_in_environment(fresh_world, monkeypatch):
    monkeypatch.setenv("MMU_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="init: MMU_DIST_TIMEOUT must be a number of seconds, got 'soon'"):
        dist.init()
    assert not dist.is_initialized()


def test_launcher_without_mpi4py_is_an_error(fresh_world, monkeypatch):
    # mpirun started 2 processes, but they cannot talk: two independent trainings would be wrong
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    assert not dist.is_available()
    with pytest.raises(dist.DistributedError, match=r"OMPI_COMM_WORLD_SIZE=2.*pip install 'mmu\[mpi\]'"):
        dist.get_world_size()
    assert not dist.is_initialized()


def test_abort_in_one_process_ends_it_with_status_1():
    code = "import mmu.distributed as d; print('before', flush=True); d.abort('gave up'); print('after')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1, result.stderr
    assert result.stdout == "before\n"
    assert "mmu.distributed: rank 0 of 1: gave up" in result.stderr


def _readme_snippet():
    text = open(REPO / "README.md").read()
    section = text[text.index("## Distributed training"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_in_one_process(fresh_world, capsys):
    exec(compile(_readme_snippet(), "README.md", "exec"), {})
    assert capsys.readouterr().out == "1 [1. 1. 1. 1.] [1. 1. 1.] 1234 [(4,)] [[0.0, 0.0]]\n"


def test_readme_snippet_on_two_ranks(tmp_path):
    result = run_mpi(tmp_path, _readme_snippet(), np=2)
    assert result.returncode == 0, result.output
    assert result.stdout == "2 [1.5 1.5 1.5 1.5] [2. 2. 2.] 1234 [(4,), (4,)] [[0.0, 0.0], [1.0, 1.0]]\n", result.output


# ----------------------------------------------------------------- 2 ranks
COLLECTIVES = """
import gc
import os
import time
import weakref
import numpy as np
import mmu
import mmu.distributed as dist

dist.init(timeout=60)
rank, size = dist.get_rank(), dist.get_world_size()
assert size == 2 and dist.get_local_rank() == rank and dist.is_main_process() == (rank == 0)
assert os.environ["OMPI_MCA_coll_libnbc_iallreduce_algorithm"] == "1"  # Open MPI's ring (see init)

def data(r, dtype, shape=(3, 5)):
    # every rank can build every rank's input, so each checks the result against NumPy itself
    g = np.random.default_rng(100 + r)
    if np.dtype(dtype).kind == "f":
        return g.standard_normal(shape).astype(dtype)
    return g.integers(-1000, 1000, shape).astype(dtype)

reduce = {"sum": lambda xs: xs[0] + xs[1], "avg": lambda xs: (xs[0] + xs[1]) / xs[0].dtype.type(2),
          "max": lambda xs: np.maximum(*xs), "min": lambda xs: np.minimum(*xs)}
for dtype in (np.float32, np.float64, np.int64, np.int32):
    for op in ("sum", "avg", "max", "min"):
        if op == "avg" and np.dtype(dtype).kind != "f":
            continue
        x = data(rank, dtype)
        address = x.ctypes.data
        assert dist.all_reduce(x, op=op) is x and x.ctypes.data == address
        want = reduce[op]([data(r, dtype) for r in range(size)])
        assert want.dtype == dtype
        np.testing.assert_array_equal(x, want, err_msg=f"{op} {np.dtype(dtype)}")
# fewer elements than ranks, and none (the ring algorithm splits the buffer in world-size parts)
for n in (0, 1):
    x = data(rank, np.float32, (n,))
    dist.all_reduce(x)
    np.testing.assert_array_equal(x, data(0, np.float32, (n,)) + data(1, np.float32, (n,)))

# Tensors: in place, the storage MPI wrote is the tensor's own (a view taken before sees it),
# and the write is counted in the tensor's version
for dtype, op in ((np.float32, "sum"), (np.float32, "avg"), (np.int64, "max")):
    t = mmu.tensor(data(rank, dtype))
    view, version = t.numpy(), t._version
    assert dist.all_reduce(t, op=op) is t
    want = reduce[op]([data(r, dtype) for r in range(size)])
    np.testing.assert_array_equal(view, want)
    np.testing.assert_array_equal(t.numpy(), want)
    assert t._version > version

# async: two in flight at once, completed in the opposite order
a, b = data(rank, np.float32), data(rank, np.float64, (1000,))
work_a = dist.all_reduce(a, async_op=True)
work_b = dist.all_reduce(b, op="max", async_op=True)
assert isinstance(work_b, dist.Work)
assert work_b.wait() is b and work_b.is_completed()
assert work_a.wait(timeout=30) is a and work_a.is_completed()
np.testing.assert_array_equal(a, data(0, np.float32) + data(1, np.float32))
np.testing.assert_array_equal(b, np.maximum(data(0, np.float64, (1000,)), data(1, np.float64, (1000,))))

# a pending Work moves on without MPI calls from this thread (mmu.distributed's progress thread):
# a 1 MB all-reduce needs several handshakes, so without it the buffer would hold the sum only
# after wait(); here it fills while this thread sleeps (time.sleep makes no MPI call)
big = np.full(1 << 18, rank + 1.0, np.float32)
work = dist.all_reduce(big, async_op=True)
for _ in range(3000):
    if (big == 3.0).all():
        break
    time.sleep(0.01)
assert (big == 3.0).all(), "the all-reduce made no progress while this thread slept"
work.wait()
assert dist._comm._progress.pending == 0

# a Work dropped before it completed keeps its buffer alive until MPI is done with it
buffer = np.ones(1000, np.float32)
alive = weakref.ref(buffer)
work = dist.all_reduce(buffer, async_op=True)
del work, buffer
gc.collect()
assert alive() is not None
for _ in range(50):  # each new Work checks the dropped ones (the same count on both ranks)
    dist.all_reduce(np.ones(1), async_op=True).wait()
assert alive() is None and not dist._comm._orphans

# broadcast from each rank: arrays of each dtype, a Tensor, a bool mask
for src in range(size):
    for dtype in (np.float32, np.float64, np.int64, np.int32, np.bool_):
        x = data(rank, np.int64).astype(dtype)
        assert dist.broadcast(x, src=src) is x
        np.testing.assert_array_equal(x, data(src, np.int64).astype(dtype))
    t = mmu.tensor(data(rank, np.float32))
    view = t.numpy()
    dist.broadcast(t, src=src, async_op=True).wait()
    np.testing.assert_array_equal(view, data(src, np.float32))

# all_gather: a new array / Tensor, or into out
for dtype in (np.float32, np.int32):
    g = dist.all_gather(data(rank, dtype))
    np.testing.assert_array_equal(g, np.stack([data(r, dtype) for r in range(size)]))
t = mmu.tensor(data(rank, np.int64, (4,)))
g = dist.all_gather(t)
assert isinstance(g, mmu.Tensor) and g.shape == (2, 4)
np.testing.assert_array_equal(g.numpy(), np.stack([data(r, np.int64, (4,)) for r in range(size)]))
out = mmu.zeros(2, 3, 5)
assert dist.all_gather(mmu.tensor(data(rank, np.float32)), out=out) is out
np.testing.assert_array_equal(out.numpy(), np.stack([data(r, np.float32) for r in range(size)]))

# Python objects
mine = {"rank": rank, "shape": (rank, 2), "name": "r" * (rank * 1000 + 1)}
assert dist.all_gather_object(mine) == [{"rank": r, "shape": (r, 2), "name": "r" * (r * 1000 + 1)} for r in range(size)]
assert dist.broadcast_object(mine if rank == 1 else None, src=1) == {"rank": 1, "shape": (1, 2), "name": "r" * 1001}
dist.barrier()
print(f"collectives ok on rank {rank}", flush=True)
"""


def test_collectives_on_two_ranks_match_numpy(tmp_path):
    result = run_mpi(tmp_path, COLLECTIVES, np=2)
    assert result.returncode == 0, result.output
    assert "collectives ok on rank 0" in result.stdout and "collectives ok on rank 1" in result.stdout, result.output


TIMEOUT = """
import time
import numpy as np
import mmu.distributed as dist

dist.init(timeout=1.5)
rank = dist.get_rank()
if rank == 1:
    time.sleep(100)  # never comes to the collective; rank 0's abort ends this rank
x = np.ones(4, np.float32)
work = dist.all_reduce(x, async_op=True)
try:
    work.wait(timeout=0.3)
except dist.DistributedError as e:
    print("work timed out:", e, flush=True)
assert not work.is_completed()
try:
    dist.barrier()  # (not a broadcast from rank 0: its send may complete without the receiver)
except dist.DistributedError as e:
    print("caught:", e, flush=True)
    dist.abort("rank 0 gives up")
print("not reached", flush=True)
"""


def test_a_collective_that_does_not_complete_times_out_and_abort_ends_the_job(tmp_path):
    result = run_mpi(tmp_path, TIMEOUT, np=2)
    assert result.returncode != 0, result.output
    assert "work timed out: all_reduce: rank 0 of 2 waited 0.3 s (the timeout)" in result.stdout, result.output
    assert "caught: barrier: rank 0 of 2 waited 1.5 s (the timeout)" in result.stdout, result.output
    assert "mmu.distributed: rank 0 of 2: rank 0 gives up" in result.stderr, result.output
    assert "not reached" not in result.stdout


RAISES = """
import numpy as np
import mmu.distributed as dist

dist.init(timeout=90)  # far beyond the test's own bound: the job must end through the abort
if dist.get_rank() == 1:
    raise ValueError("bad batch on rank 1")
dist.all_reduce(np.ones(4, np.float32))
print("not reached", flush=True)
"""


def test_a_rank_that_raises_ends_every_rank(tmp_path):
    # the uncaught exception aborts the job (MPI_Abort) at once: rank 0 does not wait for its timeout
    result = run_mpi(tmp_path, RAISES, np=2, timeout=60)
    assert result.returncode != 0, result.output
    assert "ValueError: bad batch on rank 1" in result.stderr, result.output
    assert "mmu.distributed: rank 1 of 2: uncaught ValueError on rank 1; ending every rank" in result.stderr
    assert "not reached" not in result.stdout and "waited" not in result.stdout + result.stderr


KILLED = """
import os
import signal
import numpy as np
import mmu.distributed as dist

dist.init(timeout=90)
if dist.get_rank() == 1:
    os.kill(os.getpid(), signal.SIGKILL)
dist.all_reduce(np.ones(4, np.float32))
print("not reached", flush=True)
"""


def test_a_killed_rank_ends_the_job(tmp_path):
    # Open MPI's mpirun sees the death and ends the job itself (status non-zero, its message names the
    # rank and the signal); rank 0 is not left waiting for its 90 s timeout
    result = run_mpi(tmp_path, KILLED, np=2, timeout=60)
    assert result.returncode != 0, result.output
    said = " ".join(result.stderr.split())  # (mpirun wraps its message at a width of its own)
    assert "process rank 1 with PID" in said and "signal 9 (Killed)" in said, result.output
    assert "not reached" not in result.stdout and "waited" not in result.stdout + result.stderr
