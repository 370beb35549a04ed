"""The world of processes and its collectives, over MPI (mpi4py), with a timeout on every wait.

One process is a world of size 1: rank 0, collectives return their input, nothing is imported.
Under a launcher (mpirun / mpiexec / srun: it sets OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK,
SLURM_STEP_NUM_TASKS, ...) `init` imports mpi4py, which initialises MPI, and the world is MPI's.

In place, no copies: a NumPy array is handed to MPI through the buffer protocol; an mmu Tensor
through `t.numpy()`, a view of the tensor's own memory (mmu tensors are always contiguous), so MPI
reads and writes the tensor's storage directly.

Timeouts: MPI has none, and a blocking MPI call whose peer died or never comes waits forever.
So every collective here is MPI's non-blocking one (Iallreduce, Ibcast, Iallgather, Ibarrier)
followed by a wait loop that calls `Test` until a deadline, then raises DistributedError naming
the collective, the rank and the timeout. `Test` is also what makes progress on the transfer
(Open MPI progresses a non-blocking collective only inside MPI calls), so the loop first calls it
back to back, as Open MPI's own blocking wait spins, for long enough to move the message at a
modest bandwidth, and only then sleeps between calls with a growing back-off (a peer that is late:
its rank is still computing, and a spinning waiter would take its core on an oversubscribed machine).

Overlap: while a non-blocking collective (async_op=True: a Work) is pending, a thread calls into
MPI every 0.1 ms, since Open MPI advances a non-blocking collective only inside MPI calls; mmu's
kernels release the GIL, so a gradient all-reduce moves on during the backward pass.

Failure: an uncaught exception on any rank of a world > 1 ends the whole job (`abort`, MPI_Abort),
as `python -m mpi4py` does, so its peers do not wait for the timeout; a rank that is killed is
seen by the launcher (Open MPI's mpirun ends the job), or else by its peers' timeout.
"""
import atexit
import os
import pickle
import sys
import threading
import time

import numpy as np

from .._C import Tensor
from .._args import flag as _flag, is_int as _is_int, is_real as _is_real

__all__ = [
    "DistributedError", "Work", "abort", "all_gather", "all_gather_object", "all_reduce", "barrier",
    "broadcast", "broadcast_object", "get_local_rank", "get_rank", "get_world_size", "init",
    "is_available", "is_initialized", "is_main_process",
]

# Variables a launcher sets in every process it starts; the first found says "launched by MPI".
# Open MPI (mpirun / prterun), MPICH and Intel MPI (hydra), PMIx launchers, MVAPICH, srun
# (the STEP variables: an sbatch script itself, not started by srun, has SLURM_NTASKS but no step).
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE",
                  "SLURM_STEP_NUM_TASKS")
_DEFAULT_TIMEOUT = 300.0
_OMPI_IALLREDUCE_VAR = "OMPI_MCA_coll_libnbc_iallreduce_algorithm"  # 1: ring (see init)

# The wait loop (see the module docstring): back-to-back Test for _SPIN_MIN_SECONDS plus the time
# the message takes at _SPIN_BYTES_PER_SECOND, then sleeps from _SLEEP_MIN to _SLEEP_MAX seconds.
# The extra latency a late peer sees is at most one sleep (_SLEEP_MAX); benchmarks/bench_distributed.py
# measures the loop against mpi4py's blocking Allreduce.
_SPIN_MIN_SECONDS = 0.002
_SPIN_BYTES_PER_SECOND = 2.0e8
_SLEEP_MIN = 2e-5
_SLEEP_MAX = 1e-3
# While a Work is pending, a thread calls into MPI this often (seconds), see _Progress
_PROGRESS_INTERVAL = 1e-4

_REDUCE_OPS = ("sum", "avg", "max", "min")
_REDUCE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.int32))
# broadcast and all_gather move bytes: bool (mmu's mask tensors) is fine there, not in a reduction
_MOVE_DTYPES = _REDUCE_DTYPES + (np.dtype(np.bool_),)
_REDUCE_SET, _MOVE_SET = frozenset(_REDUCE_DTYPES), frozenset(_MOVE_DTYPES)  # (hashed: a call's check is cheap)


class DistributedError(RuntimeError):
    """A collective did not complete within the timeout, or MPI reported a failure of a peer.

    The message names the collective, this rank and the timeout. The job cannot go on (the other
    ranks are inside or past the collective); `abort(message)` ends every rank."""


class _World:
    """The process's view of the world, set once by init()."""
    initialized = False
    size = 1
    rank = 0
    local_rank = 0
    timeout = _DEFAULT_TIMEOUT
    comm = None          # mpi4py communicator: a duplicate of COMM_WORLD (ours only), or None in one process
    MPI = None           # the mpi4py.MPI module once imported
    mpi_types = None     # {NumPy dtype: MPI datatype}
    mpi_ops = None       # {op name: MPI op}
    launcher_var = None  # the variable that said "launched by MPI"


_world = _World()


def _launcher():
    """(name, value) of the first launcher variable in the environment, or None."""
    for name in _LAUNCHER_VARS:
        if os.environ.get(name):
            return name, os.environ[name]
    return None


def _check_timeout(timeout, op, arg="timeout"):
    if not _is_real(timeout):
        raise TypeError(f"{op}: {arg} must be a number of seconds, got {type(timeout).__name__}")
    timeout = float(timeout)
    if not 0 < timeout < float("inf"):
        raise ValueError(f"{op}: {arg} must be a positive, finite number of seconds, got {timeout}")
    return timeout


def _timeout_from_env():
    value = os.environ.get("MMU_DIST_TIMEOUT")
    if value is None or value == "":
        return _DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"init: MMU_DIST_TIMEOUT must be a number of seconds, got {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"init: MMU_DIST_TIMEOUT must be a positive, finite number of seconds, got {value!r}")
    return seconds


def is_available():
    """True when mpi4py can be imported (the `mpi` extra: `pip install 'mmu[mpi]'`).

    Importing mpi4py does not initialise MPI; only init() under a launcher does."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init(timeout=None):
    """Join the world of processes; idempotent.

    Under mpirun / mpiexec / srun (detected from the variables they set: OMPI_COMM_WORLD_SIZE,
    PMI_SIZE, PMIX_RANK, MV2_COMM_WORLD_SIZE, SLURM_STEP_NUM_TASKS) this initialises MPI through
    mpi4py and takes MPI's world; otherwise the world is this process alone (size 1, rank 0) and
    MPI is not imported. Every other function of mmu.distributed calls init() itself on first use.

    timeout: seconds that every blocking collective (and Work.wait) may wait before raising
    DistributedError; default MMU_DIST_TIMEOUT from the environment, else 300. A later call with
    a timeout changes it (init's other work is done once).

    Before MPI starts, init sets OMPI_MCA_coll_libnbc_iallreduce_algorithm=1 unless it is set:
    Open MPI's non-blocking all-reduce then takes its ring algorithm instead of a binomial tree
    through rank 0 (which is up to 2x slower on large buffers). It has no effect when the program
    imported mpi4py.MPI (so started MPI) before.

    Under MPI with more than one rank, an uncaught exception on any rank ends the whole job
    (`abort`, MPI_Abort) after printing its traceback, so the other ranks do not wait for the
    timeout (sys.excepthook; `python -m mpi4py` does the same)."""
    if timeout is not None:
        timeout = _check_timeout(timeout, "init")
    if _world.initialized:
        if timeout is not None:
            _world.timeout = timeout
        return
    seconds = timeout if timeout is not None else _timeout_from_env()
    launcher = _launcher()
    if launcher is not None:
        # Open MPI's non-blocking all-reduce (libnbc) on an in-place buffer, which is what all_reduce
        # hands it, always takes a binomial tree (the whole buffer reduced at rank 0, then sent back);
        # its ring gives each rank a part of the buffer to reduce and pass on: at 64 MB on 2 ranks the
        # tree took 1.6-2.3x the time of the blocking MPI_Allreduce and the ring the same or less
        # (benchmarks/bench_distributed.py).
        # MPI reads the variable once, in MPI_Init below; the user's own setting wins. Other MPIs
        # ignore it.
        os.environ.setdefault(_OMPI_IALLREDUCE_VAR, "1")
        try:
            from mpi4py import MPI  # initialises MPI (MPI_Init_thread)
        except ImportError as e:
            raise DistributedError(
                f"init: this process was started by an MPI launcher ({launcher[0]}={launcher[1]}) but mpi4py "
                f"cannot be imported ({e}); install the mpi extra: pip install 'mmu[mpi]'") from None
        # a communicator of our own: messages of the user's code on COMM_WORLD never match ours
        comm = MPI.COMM_WORLD.Dup()
        comm.Set_errhandler(MPI.ERRORS_RETURN)  # MPI errors become mpi4py exceptions, not an abort
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine (shared memory)
        _world.local_rank = node.Get_rank()
        node.Free()
        _world.MPI, _world.comm, _world.launcher_var = MPI, comm, launcher[0]
        _world.mpi_types = dict(zip(_MOVE_DTYPES, (MPI.FLOAT, MPI.DOUBLE, MPI.INT64_T, MPI.INT32_T, MPI.C_BOOL)))
        _world.mpi_ops = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        _world.size, _world.rank = comm.Get_size(), comm.Get_rank()
        if _world.size > 1:
            _install_excepthook()
    _world.timeout = seconds
    _world.initialized = True


def _install_excepthook():
    previous = sys.excepthook

    def abort_on_uncaught_exception(kind, value, tb):
        previous(kind, value, tb)
        if issubclass(kind, KeyboardInterrupt):
            # mpirun forwards Ctrl-C to every rank itself; each ends on its own
            return
        abort(f"uncaught {kind.__name__} on rank {_world.rank}; ending every rank")

    sys.excepthook = abort_on_uncaught_exception


def _ready():
    if not _world.initialized:
        init()
    return _world


def is_initialized():
    """True once init() ran (explicitly, or through the first call of another function here)."""
    return _world.initialized


def get_rank():
    """This process's rank in the world, 0 .. world size - 1 (0 in a single process)."""
    return _ready().rank


def get_world_size():
    """The number of processes in the world (1 without a launcher)."""
    return _ready().size


def get_local_rank():
    """This process's rank among the processes on the same machine (shared memory), 0 in a single
    process: the one to pick per-machine resources by."""
    return _ready().local_rank


def is_main_process():
    """True on rank 0: the rank that writes checkpoints, logs and progress bars."""
    return _ready().rank == 0


def abort(message="mmu.distributed.abort"):
    """End every rank of the job now (MPI_Abort of the world), after printing `message` with this
    rank to stderr; exit status 1. In a single process it ends this process the same way (no
    cleanup handlers run, as with MPI_Abort). Use it after a DistributedError: the other ranks
    cannot finish the collective and would otherwise wait for their own timeout."""
    world = _world
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 (a closed stdout must not stop the abort)
        pass
    print(f"mmu.distributed: rank {world.rank} of {world.size}: {message}", file=sys.stderr, flush=True)
    if world.MPI is not None:
        world.MPI.COMM_WORLD.Abort(1)
    os._exit(1)


# ----------------------------------------------------------------- waiting with a deadline
def _timeout_error(what, timeout):
    w = _world
    return DistributedError(
        f"{what}: rank {w.rank} of {w.size} waited {timeout:g} s (the timeout) and the collective did not "
        f"complete: another rank failed, exited or is not calling {what}. Call mmu.distributed.abort() "
        f"to end every rank (set the timeout with mmu.distributed.init(timeout=...) or MMU_DIST_TIMEOUT)")


def _mpi_error(what, e):
    w = _world
    return DistributedError(f"{what}: rank {w.rank} of {w.size}: MPI failed: {e}")


def _wait_request(request, what, timeout, nbytes):
    """Poll request.Test() until it completes or `timeout` seconds pass (DistributedError)."""
    MPI = _world.MPI
    try:
        if request.Test():
            return
        start = time.monotonic()
        deadline = start + timeout
        spin_until = start + _SPIN_MIN_SECONDS + nbytes / _SPIN_BYTES_PER_SECOND
        delay = _SLEEP_MIN
        while not request.Test():
            now = time.monotonic()
            if now >= deadline:
                raise _timeout_error(what, timeout)
            # while spinning, no sched_yield either: under load it gives away a whole time slice
            # (milliseconds) where the collective needs microseconds
            if now >= spin_until:
                time.sleep(delay)
                delay = min(2.0 * delay, _SLEEP_MAX)
    except MPI.Exception as e:
        raise _mpi_error(what, e) from None


# Works dropped before they completed: (request, buffers) kept until MPI is done with the buffers,
# which would otherwise be freed while MPI still writes into them; pruned when a Work is made
_orphans = []


class _Progress:
    """A thread that calls into MPI (an Iprobe on COMM_SELF, which matches nothing of ours) every
    _PROGRESS_INTERVAL seconds while a Work is pending.

    Open MPI moves a non-blocking collective forward only inside MPI calls: a large all-reduce
    started before a backward pass would otherwise wait at its first handshake until the wait
    after it, and overlap nothing. mmu's kernels release the GIL, so this thread runs during them.
    It needs MPI_THREAD_MULTIPLE (mpi4py's default); at another thread level there is none and
    Works progress only in is_completed() / wait(). Stopped before MPI_Finalize (atexit)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.pending = 0
        self.thread = None
        self.stopping = False

    def begin(self):
        """A Work started: wake the thread (started on first use)."""
        with self.cond:
            self.pending += 1
            if self.thread is None and not self.stopping:
                MPI = _world.MPI
                if MPI.Query_thread() == MPI.THREAD_MULTIPLE:
                    self.thread = threading.Thread(target=self._run, name="mmu.distributed progress", daemon=True)
                    self.thread.start()
                    atexit.register(self.stop)  # after mpi4py's own: runs before MPI_Finalize
                else:
                    self.thread = False
            self.cond.notify()

    def end(self):
        """A Work completed (or a dropped one's buffers were released)."""
        with self.cond:
            self.pending -= 1

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread:
            self.thread.join(timeout=5)

    def _run(self):
        probe = _world.MPI.COMM_SELF.Iprobe
        while True:
            with self.cond:
                while self.pending <= 0 and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
            try:
                probe()
            except Exception:  # noqa: BLE001 (MPI is gone or failing: the waits report it)
                return
            time.sleep(_PROGRESS_INTERVAL)


_progress = _Progress()


class Work:
    """A collective started with async_op=True. `wait(timeout=None)` blocks until it completes and
    returns its result (the tensor or array given); `is_completed()` asks without blocking.

    The collective writes into the buffer given until it completes: do not read or write that
    buffer before then (a Work dropped before that keeps the buffer alive until MPI is done).
    While a Work is pending, a thread of mmu.distributed calls into MPI every 0.1 ms, so the
    collective moves on while this thread computes (Open MPI advances it only inside MPI calls)."""

    def __init__(self, what, request, result, nbytes, finish=None):
        self._what = what
        self._request = request  # None: done already (a world of one)
        self._result = result    # also keeps the buffers alive while MPI uses them
        self._nbytes = nbytes
        self._finish = finish
        self._done = request is None
        if not self._done:
            _progress.begin()
            if _orphans:
                kept = [o for o in _orphans if not o[0].Test()]
                for _ in range(len(_orphans) - len(kept)):
                    _progress.end()
                _orphans[:] = kept

    def __del__(self):
        if not self._done:
            _orphans.append((self._request, self._result))

    def _complete(self):
        self._done = True
        self._request = None
        _progress.end()
        if self._finish is not None:
            self._finish()
            self._finish = None

    def is_completed(self):
        """True once the collective has completed (its result is then ready); never blocks."""
        if not self._done:
            try:
                completed = self._request.Test()
            except _world.MPI.Exception as e:
                raise _mpi_error(self._what, e) from None
            if completed:
                self._complete()
        return self._done

    def wait(self, timeout=None):
        """Block until the collective completes and return its result. timeout: seconds (default:
        the world's, from init); DistributedError naming the collective, the rank and the timeout
        when it passes. After a timeout the collective is still pending: abort() the job."""
        seconds = _world.timeout if timeout is None else _check_timeout(timeout, f"{self._what}: wait")
        if not self._done:
            _wait_request(self._request, self._what, seconds, self._nbytes)
            self._complete()
        return self._result

    def __repr__(self):
        return f"<mmu.distributed.Work {self._what} {'completed' if self._done else 'pending'}>"


# ----------------------------------------------------------------- buffers
def _buffer(x, op, arg, dtypes, writable):
    """(array view of x's own memory, tensor or None): x an mmu Tensor or a NumPy array, C-contiguous,
    of one of `dtypes`; errors name op and arg."""
    if isinstance(x, Tensor):
        tensor, arr = x, x.numpy()  # a view: mmu tensors are contiguous, the array shares the storage
    elif isinstance(x, np.ndarray):
        tensor, arr = None, x
    else:
        raise TypeError(f"{op}: {arg} must be an mmu Tensor or a NumPy array, got {type(x).__name__}")
    if arr.dtype not in dtypes:
        names = ", ".join(str(d) for d in _MOVE_DTYPES if d in dtypes)
        raise TypeError(f"{op}: {arg} has dtype {arr.dtype}; expected one of {names}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{op}: {arg} of shape {arr.shape} is not C-contiguous (strides {arr.strides}); "
                         f"MPI reads it in place: pass np.ascontiguousarray({arg}) and use the result")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{op}: {arg} of shape {arr.shape} is read-only; the result is written into it")
    return arr, tensor


def _check_src(src, op, size):
    if not _is_int(src):
        raise TypeError(f"{op}: src must be an int rank, got {type(src).__name__}")
    if not 0 <= src < size:
        raise ValueError(f"{op}: src {src} is not a rank of this world (size {size})")
    return int(src)


def _run(what, request, result, nbytes, finish, async_op):
    if async_op:
        return Work(what, request, result, nbytes, finish)
    if request is not None:
        _wait_request(request, what, _world.timeout, nbytes)
        if finish is not None:
            finish()
    return result


# ----------------------------------------------------------------- collectives on buffers
def all_reduce(x, op="sum", async_op=False):
    """Reduce x over every rank, in place: afterwards every rank's x holds the elementwise
    sum / average / max / min of all ranks' x.

    x: an mmu Tensor or a NumPy array, C-contiguous, float32 / float64 / int64 / int32 (mmu
    Tensors are float32 or int64), the same shape and dtype on every rank (a rank with fewer
    elements than its peers gets MPI's truncation error as a DistributedError, its peers a timeout).
    MPI reads and writes x's own memory (no copy). op: "sum", "avg" (float only: MPI's sum, then a division by the world
    size in place, as MPI has no average), "max" or "min".

    Returns x; with async_op=True a Work whose wait() returns x. A Tensor's write counts in its
    _version (autograd refuses a backward through a node that saved it before); autograd does not
    record the collective (as torch.distributed). In a single process x is returned unchanged."""
    world = _ready()
    arr, tensor = _buffer(x, "all_reduce", "x", _REDUCE_SET, writable=True)
    if op not in _REDUCE_OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(map(repr, _REDUCE_OPS))}, got {op!r}")
    if op == "avg" and arr.dtype.kind != "f":
        raise TypeError(f"all_reduce: op 'avg' needs a float x (float32 / float64), got {arr.dtype}; "
                        "use op='sum' and divide")
    async_op = _flag(async_op, "all_reduce", "async_op")
    if world.size == 1:
        return _run("all_reduce", None, x, 0, None, async_op)
    MPI = world.MPI
    finish = None
    if tensor is not None or op == "avg":
        if tensor is not None:
            tensor._bump_version()  # MPI starts writing now

        def finish():
            if op == "avg":
                np.divide(arr, world.size, out=arr)
            if tensor is not None:
                tensor._bump_version()

    try:
        request = world.comm.Iallreduce(MPI.IN_PLACE, [arr, world.mpi_types[arr.dtype]], world.mpi_ops[op])
    except MPI.Exception as e:
        raise _mpi_error("all_reduce", e) from None
    return _run("all_reduce", request, x, arr.nbytes, finish, async_op)


def broadcast(x, src=0, async_op=False):
    """Copy rank src's x into x on every other rank, in place (MPI reads and writes x's own memory).

    x: an mmu Tensor or a NumPy array, C-contiguous, float32 / float64 / int64 / int32 / bool, the
    same shape and dtype on every rank. Returns x; with async_op=True a Work whose wait() returns x.
    A Tensor's write counts in its _version; autograd does not record it. In a single process
    (src must be 0) x is returned unchanged."""
    world = _ready()
    arr, tensor = _buffer(x, "broadcast", "x", _MOVE_SET, writable=True)
    src = _check_src(src, "broadcast", world.size)
    async_op = _flag(async_op, "broadcast", "async_op")
    if world.size == 1:
        return _run("broadcast", None, x, 0, None, async_op)
    MPI = world.MPI
    receives = tensor is not None and world.rank != src
    if receives:
        tensor._bump_version()
    try:
        request = world.comm.Ibcast([arr, world.mpi_types[arr.dtype]], root=src)
    except MPI.Exception as e:
        raise _mpi_error("broadcast", e) from None
    finish = tensor._bump_version if receives else None
    return _run("broadcast", request, x, arr.nbytes, finish, async_op)


def all_gather(x, out=None):
    """Every rank's x, stacked: an array (or Tensor, when x is one) of shape (world size, *x.shape)
    whose row r is rank r's x, on every rank.

    x: an mmu Tensor or a NumPy array, C-contiguous, float32 / float64 / int64 / int32 / bool, the
    same shape and dtype on every rank; MPI reads it in place. out: optional Tensor or array of
    shape (world size, *x.shape) and x's dtype, C-contiguous and writable, that receives the result
    (MPI writes into it directly) and is returned. In a single process the result is a copy of x
    with a leading dimension of 1."""
    world = _ready()
    arr, _ = _buffer(x, "all_gather", "x", _MOVE_SET, writable=False)
    shape = (world.size,) + arr.shape
    if out is None:
        if isinstance(x, Tensor):
            from ..tensor import zeros
            out = zeros(shape, dtype=arr.dtype)
        else:
            out = np.empty(shape, dtype=arr.dtype)
    out_arr, out_tensor = _buffer(out, "all_gather", "out", _MOVE_SET, writable=True)
    if out_arr.shape != shape or out_arr.dtype != arr.dtype:
        raise ValueError(f"all_gather: out has shape {out_arr.shape} and dtype {out_arr.dtype}; expected shape "
                         f"{shape} (world size, *x.shape) and dtype {arr.dtype}")
    if np.shares_memory(arr, out_arr):
        raise ValueError("all_gather: out overlaps x; MPI reads x while it writes out")
    if out_tensor is not None:
        out_tensor._bump_version()
    if world.size == 1:
        out_arr[0] = arr
        return out
    MPI = world.MPI
    mpi_type = world.mpi_types[arr.dtype]
    try:
        request = world.comm.Iallgather([arr, mpi_type], [out_arr, mpi_type])
    except MPI.Exception as e:
        raise _mpi_error("all_gather", e) from None
    finish = out_tensor._bump_version if out_tensor is not None else None
    return _run("all_gather", request, out, out_arr.nbytes, finish, async_op=False)


def barrier():
    """Wait until every rank has called barrier() (DistributedError after the timeout)."""
    world = _ready()
    if world.size == 1:
        return
    try:
        request = world.comm.Ibarrier()
    except world.MPI.Exception as e:
        raise _mpi_error("barrier", e) from None
    _run("barrier", request, None, 0, None, async_op=False)


# ----------------------------------------------------------------- Python objects
def _dumps(obj, op):
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001 (pickle raises PicklingError, TypeError, AttributeError, ...)
        raise TypeError(f"{op}: obj of type {type(obj).__name__} cannot be pickled: {e}") from None


def broadcast_object(obj, src=0):
    """Rank src's `obj` (any picklable Python object: a decision, a shape, a seed), on every rank.

    Rank src gets obj itself back, the others an unpickled copy. In a single process (src must be
    0) obj is returned as is. Bounded by the timeout like every collective."""
    world = _ready()
    src = _check_src(src, "broadcast_object", world.size)
    if world.size == 1:
        return obj
    MPI = world.MPI
    length = np.zeros(1, dtype=np.int64)
    payload = None
    if world.rank == src:
        payload = _dumps(obj, "broadcast_object")
        length[0] = len(payload)
    try:
        _run("broadcast_object", world.comm.Ibcast([length, MPI.INT64_T], root=src), None, 8, None, False)
        data = np.frombuffer(payload, dtype=np.uint8) if world.rank == src else np.empty(int(length[0]), np.uint8)
        if data.size:  # (pickles are never empty; kept general)
            _run("broadcast_object", world.comm.Ibcast([data, MPI.BYTE], root=src), None, data.size, None, False)
    except MPI.Exception as e:
        raise _mpi_error("broadcast_object", e) from None
    return obj if world.rank == src else pickle.loads(data.tobytes())


def all_gather_object(obj):
    """Every rank's `obj` (any picklable Python object), as a list indexed by rank, on every rank.

    This rank's entry is obj itself, the others unpickled copies. In a single process: [obj]."""
    world = _ready()
    if world.size == 1:
        return [obj]
    MPI = world.MPI
    payload = _dumps(obj, "all_gather_object")
    lengths = np.zeros(world.size, dtype=np.int64)
    mine = np.array([len(payload)], dtype=np.int64)
    try:
        _run("all_gather_object", world.comm.Iallgather([mine, MPI.INT64_T], [lengths, MPI.INT64_T]),
             None, lengths.nbytes, None, False)
        offsets = np.zeros(world.size, dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        gathered = np.empty(int(lengths.sum()), dtype=np.uint8)
        request = world.comm.Iallgatherv([np.frombuffer(payload, dtype=np.uint8), MPI.BYTE],
                                         [gathered, (lengths, offsets), MPI.BYTE])
        _run("all_gather_object", request, None, gathered.nbytes, None, False)
    except MPI.Exception as e:
        raise _mpi_error("all_gather_object", e) from None
    return [obj if r == world.rank else pickle.loads(gathered[offsets[r]:offsets[r] + lengths[r]].tobytes())
            for r in range(world.size)]
