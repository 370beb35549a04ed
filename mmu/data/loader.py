"""DataLoader: seeded shuffling, batching and horizontal flips over an image dataset held in memory
or streamed from disk (mmu.data.ImageFolder, decoded in background threads).

The order, the flips and the per-image crop seeds of epoch e are a pure function of (seed, e), so
the loader's whole state is two integers (epoch, batch position): `state_dict()` /
`load_state_dict()` resume the exact batch sequence, which the trainer needs for a resumed run to
equal an uninterrupted one. A streamed image depends only on its file and its crop seed, and
batches are assembled in order, so they are bit-identical whatever the number of worker threads.

Data parallel (rank, world_size; mmu.train.Trainer sets them under mpirun): every rank draws the same
epoch plan from (seed, e) and takes its shard of it as torch's DistributedSampler does: the epoch's
order is padded to a multiple of world_size by repeating its first entries (so no rank is short and
every sample is seen at least once per epoch over all ranks; with N % world_size == r != 0,
world_size - r samples are seen twice), and rank k takes positions k, k + world_size, k + 2 world_size,
... The loader's own drop_last then applies to the rank's shard.
"""
import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["DataLoader", "shard_positions"]


def shard_positions(n, rank, world_size):
    """The positions in an epoch's order of n items that rank `rank` of world_size takes: torch's
    DistributedSampler without drop_last (the order padded by its first entries to a multiple of
    world_size, then every world_size-th entry from rank). An int64 array of ceil(n / world_size)."""
    total = -(-n // world_size) * world_size
    return (np.arange(rank, total, world_size) % n).astype(np.int64)


def _check_shard(fn, rank, world_size):
    for name, v, lo in (("rank", rank, 0), ("world_size", world_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{fn}: {name} must be an int >= {lo}, got {v!r}")
    if rank >= world_size:
        raise ValueError(f"{fn}: rank {rank} is not below world_size {world_size}")
    return int(rank), int(world_size)


class DataLoader:
    """Batches of float32 images (B, C, H, W) from a dataset.

    dataset: an ImageDataset (anything with `.images` (N, C, H, W)), a NumPy array or mmu Tensor
    (N, C, H, W), any sequence whose items are (C, H, W) arrays, or a streamed dataset with
    `load_item(i, seed)` (mmu.data.ImageFolder). batch_size: images per batch. shuffle: a new
    seeded permutation every epoch (else the dataset order). seed: int. hflip: flip each image
    left-right with probability 1/2 (drawn per epoch and image, seeded). drop_last: drop the last
    incomplete batch (default True, so every batch has batch_size images).
    num_workers, prefetch (streamed datasets only): images are decoded by num_workers background
    threads (0: in the calling thread, one batch at a time) at most `prefetch` batches ahead, so at
    most (prefetch + 1) * batch_size decoded images are alive at once (the batch being handed out
    and the ones being decoded). Each image gets its own crop seed per epoch (drawn from (seed,
    epoch)), used by a dataset with random crops.

    `for batch in loader` runs the rest of the current epoch (a whole epoch for a fresh loader) and
    then moves to the next epoch, like torch's DataLoader reshuffling on every `iter()`;
    `batches()` is an endless iterator over epochs. Iterators share the loader's position.
    `len(loader)` is the number of batches per epoch. Batches are fresh arrays (safe to modify).
    rank, world_size: this process's shard (module docstring); None: the whole dataset until
    set_shard (the Trainer calls it with the MPI rank and world size when it trains data parallel).
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, hflip=False, drop_last=True, num_workers=2,
                 prefetch=2, rank=None, world_size=None):
        fn = "mmu.data.DataLoader"
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"{fn}: batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"{fn}: batch_size must be >= 1, got {batch_size}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{fn}: seed must be a non-negative int, got {seed!r}")
        for name, v, lo in (("num_workers", num_workers, 0), ("prefetch", prefetch, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{fn}: {name} must be an int >= {lo}, got {v!r}")
        self.num_workers, self.prefetch = int(num_workers), int(prefetch)
        self.streamed = callable(getattr(dataset, "load_item", None))
        if self.streamed:
            arr = None      # decoded on demand: never touch .images (it would decode everything)
        elif isinstance(dataset, np.ndarray):
            arr = dataset
        elif hasattr(dataset, "detach") and hasattr(dataset, "numpy"):     # an mmu Tensor
            arr = dataset.detach().numpy()
        elif hasattr(dataset, "images"):
            arr = np.asarray(dataset.images)
        else:
            arr = None
        if arr is not None and arr.ndim != 4:
            raise ValueError(f"{fn}: dataset images must be (N, C, H, W), got shape {arr.shape}")
        self.dataset = dataset
        self._array = arr
        self.n = len(arr) if arr is not None else len(dataset)
        if self.n == 0:
            raise ValueError(f"{fn}: the dataset is empty")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.hflip = bool(hflip)
        self.drop_last = bool(drop_last)
        if self.drop_last and self.n < self.batch_size:
            raise ValueError(f"{fn}: batch_size {self.batch_size} > {self.n} images with drop_last=True "
                             f"gives no batch; lower batch_size or pass drop_last=False")
        self.rank, self.world_size = 0, 1
        if (rank is None) != (world_size is None):
            raise ValueError(f"{fn}: give both rank and world_size, or neither")
        if rank is not None:
            self.set_shard(rank, world_size)
        self.epoch = 0
        self.position = 0       # batches already handed out in the current epoch

    def set_shard(self, rank, world_size):
        """Makes this loader rank `rank` of world_size (module docstring): its epochs are that rank's
        shard. Call before the first batch (or after load_state_dict of a state with the same world_size)."""
        fn = "mmu.data.DataLoader.set_shard"
        rank, world_size = _check_shard(fn, rank, world_size)
        n_local = -(-self.n // world_size)
        if self.drop_last and n_local < self.batch_size:
            raise ValueError(f"{fn}: a shard of {n_local} images (of {self.n}, {world_size} ranks) gives no batch "
                             f"of batch_size {self.batch_size} with drop_last=True")
        self.rank, self.world_size = rank, world_size
        return self

    @property
    def shard_size(self):
        """Images per epoch of this rank (n when not sharded)."""
        return -(-self.n // self.world_size)

    def __len__(self):
        if self.drop_last:
            return self.shard_size // self.batch_size
        return -(-self.shard_size // self.batch_size)

    def _plan(self, epoch):
        # (order (N,), flips (N,) bool or None, crop seeds (N,) or None) of an epoch: a pure function
        # of (seed, epoch). The crop seeds are drawn last, so order and flips match an in-memory run.
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        flips = rng.random(self.n) < 0.5 if self.hflip else None
        seeds = rng.integers(0, 2 ** 63 - 1, size=self.n, dtype=np.int64) if self.streamed else None
        if self.world_size > 1:   # this rank's positions of the epoch's order (flips go with positions)
            pos = shard_positions(self.n, self.rank, self.world_size)
            order = order[pos]
            flips = flips[pos] if flips is not None else None
        return order, flips, seeds

    def _gather(self, idx):
        if self._array is not None:
            x = self._array[idx]
        else:
            x = np.stack([np.asarray(self.dataset[int(i)]) for i in idx])
        return np.ascontiguousarray(x, dtype=np.float32)

    def _streamed_batches(self, order, seeds, start, nb):
        # Batches start..nb-1 of an epoch, decoded by a thread pool at most `prefetch` batches ahead.
        # Results are taken in submission order, so the batches do not depend on thread timing.
        ds, bs = self.dataset, self.batch_size
        last = min(nb * bs, len(order))
        nxt = start * bs                       # next position in `order` to submit

        def load(j):
            return np.asarray(ds.load_item(int(order[j]), int(seeds[order[j]])), np.float32)

        if self.num_workers == 0:
            for b in range(start, nb):
                sel = range(b * bs, min((b + 1) * bs, last))
                yield np.stack([load(j) for j in sel])
            return
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="mmu-data")
        pending = collections.deque()
        limit = self.prefetch * bs             # images submitted and not yet taken into a batch
        try:
            for b in range(start, nb):
                while nxt < last and len(pending) < limit:
                    pending.append(pool.submit(load, nxt))
                    nxt += 1
                take = min(bs, last - b * bs)
                items = [pending.popleft().result() for _ in range(take)]
                while nxt < last and len(pending) < limit:   # keep the workers busy during the step
                    pending.append(pool.submit(load, nxt))
                    nxt += 1
                x = np.stack(items)
                del items
                yield x
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self):
        nb = len(self)
        if self.position >= nb:
            self.epoch += 1
            self.position = 0
        epoch = self.epoch
        order, flips, seeds = self._plan(epoch)
        if self.streamed:
            source = self._streamed_batches(order, seeds, self.position, nb)
        else:
            source = (self._gather(order[b * self.batch_size:min((b + 1) * self.batch_size, len(order))])
                      for b in range(self.position, nb))
        try:
            while self.epoch == epoch and self.position < nb:
                b = self.position
                x = next(source)
                if flips is not None:
                    f = flips[b * self.batch_size:min((b + 1) * self.batch_size, len(order))]
                    x[f] = x[f, ..., ::-1]
                self.position = b + 1     # advanced before the yield: a state_dict taken now resumes after it
                yield x
        finally:
            source.close()
        if self.epoch == epoch and self.position >= nb:
            self.epoch += 1
            self.position = 0

    def batches(self):
        """Endless iterator of batches, epoch after epoch (reshuffled each epoch)."""
        while True:
            yield from self

    def state_dict(self):
        """{'epoch', 'position', 'seed', 'n', 'batch_size'} (+ 'world_size' when sharded): plain ints
        (JSON-serialisable). Every rank of a data-parallel run has the same state (ranks step together)."""
        st = {"epoch": self.epoch, "position": self.position, "seed": self.seed,
              "n": self.n, "batch_size": self.batch_size}
        if self.world_size > 1:
            st["world_size"] = self.world_size
        return st

    def load_state_dict(self, state):
        """Resume at a state from state_dict(): the following batches equal the original run's.
        The dataset size and batch size must match (else the sequence would differ)."""
        fn = "mmu.data.DataLoader.load_state_dict"
        for k in ("epoch", "position"):
            if k not in state:
                raise KeyError(f"{fn}: state has no {k!r} (keys: {sorted(state)})")
        if "n" in state and int(state["n"]) != self.n:
            raise ValueError(f"{fn}: state is for a dataset of {int(state['n'])} images, this one has {self.n}")
        if "batch_size" in state and int(state["batch_size"]) != self.batch_size:
            raise ValueError(f"{fn}: state is for batch_size {int(state['batch_size'])}, "
                             f"this loader has {self.batch_size}")
        if int(state.get("world_size", 1)) != self.world_size:
            raise ValueError(f"{fn}: state is for {int(state.get('world_size', 1))} rank(s), this loader is sharded "
                             f"over {self.world_size}; resume on as many ranks as the run had")
        epoch, pos = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= pos <= len(self):
            raise ValueError(f"{fn}: bad position epoch={epoch} position={pos} ({len(self)} batches per epoch)")
        self.seed = int(state.get("seed", self.seed))
        self.epoch, self.position = epoch, pos

    def __repr__(self):
        return (f"DataLoader(n={self.n}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, hflip={self.hflip}, drop_last={self.drop_last}, "
                f"streamed={self.streamed}, num_workers={self.num_workers}, "
                + (f"rank={self.rank}/{self.world_size}, " if self.world_size > 1 else "") +
                f"epoch={self.epoch}, position={self.position})")
