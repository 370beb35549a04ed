"""mmu.distributed: training on several processes and machines, over MPI (mpi4py + Open MPI).

    mpirun -np 2 python train.py        # each rank runs the same script

    import mmu.distributed as dist
    dist.init()                          # MPI's world under a launcher, else a world of one
    dist.all_reduce(grad, op="avg")      # in place on an mmu Tensor or a NumPy array

Everything works in one process without MPI (world size 1, rank 0, collectives return their
input), so library code calls these unconditionally; mpi4py is imported only under a launcher.
Every blocking collective is bounded by a timeout (init(timeout=...), MMU_DIST_TIMEOUT, 300 s)
and raises DistributedError naming the collective, the rank and the timeout; abort() then ends
every rank. Install the MPI parts with `pip install 'mmu[mpi]'` (README: "Distributed training").
"""
from ._comm import (  # noqa: F401
    DistributedError, Work, abort, all_gather, all_gather_object, all_reduce, barrier, broadcast,
    broadcast_object, get_local_rank, get_rank, get_world_size, init, is_available, is_initialized,
    is_main_process,
)
