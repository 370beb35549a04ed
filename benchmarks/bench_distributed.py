"""All-reduce bandwidth of mmu.distributed against plain mpi4py, on the same buffers, 2 ranks.

    python benchmarks/bench_distributed.py              # starts itself under mpirun -np 2
    mpirun -np 2 python benchmarks/bench_distributed.py --sizes 4K,1M,64M --rounds 7

One OpenMP thread a rank (OMP_NUM_THREADS=1). For each size (float32 buffers of 4 KB ... 64 MB),
in turns within one process, each round timing a batch of calls after a barrier:
  - mpi4py Allreduce:  comm.Allreduce(MPI.IN_PLACE, array) — MPI's blocking call (the reference);
  - mpi4py Iallreduce: comm.Iallreduce(...).Wait() — the non-blocking algorithm mmu uses, waited
    on by MPI itself: the difference to the line above is MPI's, not mmu's;
  - mmu array:  mmu.distributed.all_reduce(array) — Iallreduce + mmu's Test loop with a deadline;
  - mmu Tensor: the same on an mmu Tensor (its memory, through t.numpy(): no copy).
Printed: the best (over the rounds) time of one call and its algorithm bandwidth (bytes of the
buffer / time, as nccl-tests' algbw), then the ratios mmu / mpi4py Allreduce of the best and of the
median times (> 1: mmu slower). On a shared machine the best round is the one least disturbed by
other programs; the median says how a loaded machine treats each way of waiting.

Both Iallreduce lines use the ring algorithm mmu.distributed.init selects for Open MPI's non-blocking
all-reduce; `OMPI_MCA_coll_libnbc_iallreduce_algorithm=0 python benchmarks/bench_distributed.py`
shows Open MPI's own choice (a binomial tree through rank 0 for an in-place buffer).

Last, overlap: an all_reduce(async_op=True) started before ~50 ms of mmu matmuls and waited after
them, with mmu's progress thread off and on: how long the wait takes once the compute is done.

Before that, the cost of mmu's wait loop when the peer is late: rank 1 sleeps `late` ms before a 4 KB
all-reduce; printed is how long rank 0 waits past the lateness (the latency the loop's sleeps add)
and the CPU time rank 0 burns while waiting (a blocking MPI wait spins the whole time).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = "4K,16K,64K,256K,1M,4M,16M,64M"


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def human(nbytes):
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def cases(h):
    """No cases for benchmarks/run.py: this compares MPI with MPI (no torch twin) and needs 2 ranks
    under mpirun."""
    return []


def relaunch(argv):
    """Not under a launcher: run this script again under mpirun -np 2 (one thread a rank)."""
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    if not os.path.exists(mpirun):
        sys.exit("bench_distributed: no mpirun beside this Python; pip install '.[mpi]'")
    cmd = [mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sys.exit(subprocess.call(cmd + [sys.executable, os.path.abspath(__file__), *argv], env=env))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=SIZES, help=f"buffer sizes in bytes, K/M suffixes (default {SIZES})")
    parser.add_argument("--rounds", type=int, default=7, help="timed batches per size and method")
    parser.add_argument("--batch-bytes", default="16M", help="bytes all-reduced in one timed batch "
                        "(calls = this / size, 3 to 100)")
    parser.add_argument("--late", default="1,10,50", help="lateness of rank 1 in ms for the wait-loop table")
    parser.add_argument("--overlap-sizes", default="1M,16M", help="all-reduce sizes of the overlap table")
    args = parser.parse_args()

    import mmu
    import mmu.distributed as dist
    if dist._comm._launcher() is None:
        relaunch(sys.argv[1:])
    dist.init(timeout=120)
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    main_rank = rank == 0

    def say(*a):
        if main_rank:
            print(*a, flush=True)

    say(f"mmu {mmu.__file__}; mpi4py {sys.modules['mpi4py'].__version__}; {MPI.Get_library_version().splitlines()[0]}")
    say(f"{size} ranks, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"OMPI_MCA_coll_libnbc_iallreduce_algorithm={os.environ.get('OMPI_MCA_coll_libnbc_iallreduce_algorithm')}, "
        f"load before: {os.getloadavg()}")

    def timed(call, reps):
        """Seconds of one call: a barrier, `reps` calls, the slowest rank's time / reps."""
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(reps):
            call()
        elapsed = time.perf_counter() - start
        return comm.allreduce(elapsed, op=MPI.MAX) / reps

    rows = []
    for nbytes in (parse_size(s) for s in args.sizes.split(",")):
        n = nbytes // 4
        array = np.ones(n, np.float32)
        tensor = mmu.ones(n)
        methods = {
            "mpi4py Allreduce": lambda: comm.Allreduce(MPI.IN_PLACE, array),
            "mpi4py Iallreduce": lambda: comm.Iallreduce(MPI.IN_PLACE, array).Wait(),
            "mmu array": lambda: dist.all_reduce(array),
            "mmu Tensor": lambda: dist.all_reduce(tensor),
        }
        reps = max(3, min(100, parse_size(args.batch_bytes) // nbytes))
        timed(methods["mpi4py Allreduce"], 1)  # first touch of the buffers, MPI's connections
        times = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, call in methods.items():  # in turns, so load changes hit every method alike
                times[name].append(timed(call, reps))
        rows.append((nbytes, reps, {name: (min(t), statistics.median(t)) for name, t in times.items()}))
        # (the buffers grew by 2x a call: values do not matter, overflow to inf costs the same)

    names = list(rows[0][2])
    say("\nall-reduce (sum, float32, in place): best time of one call over the rounds, algbw = bytes / time")
    say(f"{'size':>8} {'calls':>6} " + " ".join(f"{n:>25}" for n in names) + f" {'mmu/Allreduce best':>19}"
        f" {'median':>11}")
    for nbytes, reps, t in rows:
        cells = [f"{t[n][0] * 1e6:10.1f} us {nbytes / t[n][0] / 1e9:8.3f} GB/s" for n in names]
        best = f"{t['mmu array'][0] / t['mpi4py Allreduce'][0]:.2f} / {t['mmu Tensor'][0] / t['mpi4py Allreduce'][0]:.2f}"
        median = f"{t['mmu array'][1] / t['mpi4py Allreduce'][1]:.2f} / {t['mmu Tensor'][1] / t['mpi4py Allreduce'][1]:.2f}"
        say(f"{human(nbytes):>8} {reps:>6} " + " ".join(f"{c:>25}" for c in cells) + f" {best:>19} {median:>11}")
    say("(mmu/Allreduce: the array's / the Tensor's time over mpi4py's blocking Allreduce)")

    # the wait loop against a late peer
    say("\nlate peer: rank 1 sleeps before a 4 KB all-reduce; rank 0's wait past the lateness, and its CPU time")
    say(f"{'late':>7} {'method':>18} {'extra wait':>12} {'rank-0 CPU':>12}")
    small = np.ones(1024, np.float32)
    for late_ms in (float(s) for s in args.late.split(",")):
        for name, call in (("mpi4py Allreduce", lambda: comm.Allreduce(MPI.IN_PLACE, small)),
                           ("mmu array", lambda: dist.all_reduce(small))):
            extra, cpu = [], []
            for _ in range(args.rounds):
                comm.Barrier()
                start, cpu_start = time.perf_counter(), time.process_time()
                if rank == 1:
                    time.sleep(late_ms / 1e3)
                call()
                extra.append(time.perf_counter() - start - late_ms / 1e3)
                cpu.append(time.process_time() - cpu_start)
            say(f"{late_ms:5g} ms {name:>18} {statistics.median(extra) * 1e6:9.0f} us "
                f"{statistics.median(cpu) * 1e3:9.2f} ms")

    # overlap: an all-reduce started before compute (mmu matmuls: the GIL is released, as in a
    # backward pass), waited after it; without mmu's progress thread Open MPI moves it only in the wait
    say("\noverlap: all_reduce(async_op=True), then ~50 ms of mmu matmuls (1 thread), then wait()")
    say(f"{'size':>8} {'progress thread':>16} {'compute':>10} {'wait':>10} {'compute alone':>14}")
    a = mmu.randn(256, 256)

    def compute():
        start = time.perf_counter()
        while time.perf_counter() - start < 0.05:
            mmu.matmul(a, a)

    def one(nbytes):
        buf = np.ones(nbytes // 4, np.float32)
        comm.Barrier()
        start = time.perf_counter()
        compute()
        alone = time.perf_counter() - start
        comm.Barrier()
        work = dist.all_reduce(buf, async_op=True)
        start = time.perf_counter()
        compute()
        mid = time.perf_counter()
        work.wait()
        end = time.perf_counter()
        return [comm.allreduce(v, op=MPI.MAX) for v in (mid - start, end - mid, alone)]

    overlap_sizes = [parse_size(x) for x in args.overlap_sizes.split(",")]
    for enabled in (False, True):
        # (the thread starts with the first pending Work; False keeps it from starting, None lets it)
        dist._comm._progress.thread = None if enabled else False
        for nbytes in overlap_sizes:
            runs = [one(nbytes) for _ in range(args.rounds)]
            c, w, alone = (statistics.median(r[i] for r in runs) for i in range(3))
            say(f"{human(nbytes):>8} {'on' if enabled else 'off':>16} {c * 1e3:7.1f} ms {w * 1e3:7.2f} ms "
                f"{alone * 1e3:11.1f} ms")
    say(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
