"""Loaders the Trainer builds for data that is not a batch of images: an array of any dtype and
shape (token ids (N, L) int64, clips (N, C, T, H, W)), a dict of equal-length arrays, or an
iterable of ready batches. Each has batches() (endless) and state_dict()/load_state_dict() so a
checkpoint resumes the batch sequence exactly (mmu.data.DataLoader's contract)."""
import numbers

import numpy as np

__all__ = ["ArrayLoader", "IterableLoader"]


def _as_columns(data, fn):
    """data -> (dict name -> array, is_dict); an mmu Tensor becomes its array."""
    def arr(v, name):
        if hasattr(v, "detach") and hasattr(v, "numpy"):
            v = v.detach().numpy()
        a = np.asarray(v)
        if a.dtype == object or a.ndim == 0:
            raise TypeError(f"{fn}: {name} must be an array with the examples on dim 0, got "
                            f"{type(v).__name__} of dtype {a.dtype}, shape {a.shape}")
        return a
    if isinstance(data, dict):
        if not data:
            raise ValueError(f"{fn}: the dict of arrays is empty")
        cols = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise TypeError(f"{fn}: dict keys must be str, got {k!r}")
            cols[k] = arr(v, f"data[{k!r}]")
        lens = {k: len(v) for k, v in cols.items()}
        if len(set(lens.values())) != 1:
            raise ValueError(f"{fn}: the arrays of a dict must have the same length (dim 0), got {lens}")
        return cols, True
    return {"": arr(data, "data")}, False


class ArrayLoader:
    """Random batches of rows of an array (any dtype; float arrays become float32) or of a dict of
    equal-length arrays (batches are dicts with the same keys), batch_size rows each (the last
    incomplete batch of an epoch is dropped). Epoch e's order is
    np.random.default_rng([seed, e]).permutation(N) (shuffle) or 0..N-1. set_shard(rank, world_size)
    (the Trainer calls it when it trains data parallel) keeps this rank's shard of every epoch's order,
    as mmu.data.DataLoader (torch's DistributedSampler: padded to a multiple of world_size)."""

    def __init__(self, data, batch_size, shuffle=True, seed=0):
        fn = "mmu.train.ArrayLoader"
        self.columns, self.is_dict = _as_columns(data, fn)
        self.n = len(next(iter(self.columns.values())))
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"{fn}: batch_size must be an int >= 1, got {batch_size!r}")
        if self.n < batch_size:
            raise ValueError(f"{fn}: {self.n} examples give no batch of batch_size {batch_size}")
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.epoch = self.position = 0
        self.rank, self.world_size = 0, 1

    def set_shard(self, rank, world_size):
        """Makes this loader rank `rank` of world_size: its epochs are that rank's shard."""
        from ..data.loader import _check_shard
        rank, world_size = _check_shard("mmu.train.ArrayLoader.set_shard", rank, world_size)
        if -(-self.n // world_size) < self.batch_size:
            raise ValueError(f"mmu.train.ArrayLoader.set_shard: a shard of {-(-self.n // world_size)} examples "
                             f"(of {self.n}, {world_size} ranks) gives no batch of batch_size {self.batch_size}")
        self.rank, self.world_size = rank, world_size
        return self

    def __len__(self):
        return -(-self.n // self.world_size) // self.batch_size

    def _gather(self, idx):
        out = {}
        for k, a in self.columns.items():
            b = a[idx]
            out[k] = np.ascontiguousarray(b, np.float32) if b.dtype.kind == "f" else np.ascontiguousarray(b)
        return out if self.is_dict else out[""]

    def batches(self):
        """Endless iterator of batches, epoch after epoch."""
        while True:
            if self.position >= len(self):
                self.epoch, self.position = self.epoch + 1, 0
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
            if self.world_size > 1:
                from ..data.loader import shard_positions
                order = order[shard_positions(self.n, self.rank, self.world_size)]
            while self.position < len(self):
                b = self.position
                self.position += 1  # advanced before the yield: a state_dict taken now resumes after it
                yield self._gather(order[b * self.batch_size:(b + 1) * self.batch_size])

    def state_dict(self):
        """{'epoch', 'position', 'seed', 'n', 'batch_size'} (+ 'world_size' when sharded) (ints)."""
        st = {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n,
              "batch_size": self.batch_size}
        if self.world_size > 1:
            st["world_size"] = self.world_size
        return st

    def load_state_dict(self, state):
        """Resumes at a state_dict(); the data size and batch size must match."""
        fn = "mmu.train.ArrayLoader.load_state_dict"
        for k in ("epoch", "position", "n", "batch_size"):
            if k not in state:
                raise KeyError(f"{fn}: state has no {k!r} (keys: {sorted(state)})")
        if int(state["n"]) != self.n or int(state["batch_size"]) != self.batch_size:
            raise ValueError(f"{fn}: state is for {int(state['n'])} examples in batches of {int(state['batch_size'])}, "
                             f"this loader has {self.n} in batches of {self.batch_size}")
        if int(state.get("world_size", 1)) != self.world_size:
            raise ValueError(f"{fn}: state is for {int(state.get('world_size', 1))} rank(s), this loader is sharded "
                             f"over {self.world_size}; resume on as many ranks as the run had")
        self.seed, self.epoch, self.position = int(state.get("seed", self.seed)), int(state["epoch"]), \
            int(state["position"])


class IterableLoader:
    """The batches of an iterable, as they come (a model's own batch format). A re-iterable (a list of
    batches, or an object whose iter() starts over) is cycled endlessly and resumes by skipping the
    batches already seen; a one-shot iterator (a generator) runs once and cannot be resumed.
    set_shard(rank, world_size) (data parallel) hands out only the batches rank, rank + world_size, ...
    of the iterable."""

    def __init__(self, data):
        if not hasattr(data, "__iter__"):
            raise TypeError(f"mmu.train.IterableLoader: data must be iterable, got {type(data).__name__}")
        self.data = data
        self.one_shot = iter(data) is data
        self.epoch = self.position = 0
        self.rank, self.world_size = 0, 1

    def set_shard(self, rank, world_size):
        """Makes this loader rank `rank` of world_size: it takes every world_size-th batch from rank."""
        from ..data.loader import _check_shard
        self.rank, self.world_size = _check_shard("mmu.train.IterableLoader.set_shard", rank, world_size)
        return self

    def batches(self):
        """Endless iterator of the iterable's batches (a one-shot iterator ends when it does)."""
        while True:
            skip, seen = self.position, 0
            for batch in self.data:
                seen += 1
                if seen <= skip:
                    continue
                self.position = seen
                if (seen - 1) % self.world_size != self.rank:
                    continue
                yield batch
            if self.one_shot:
                return
            if seen == 0:
                raise ValueError("mmu.train.IterableLoader: the iterable yields no batch")
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self):
        """{'epoch', 'position'}: the epoch and the batches of it already handed out."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        """Resumes a re-iterable at a state_dict(); a one-shot iterator raises ValueError."""
        if self.one_shot and (int(state["epoch"]) or int(state["position"])):
            raise ValueError("mmu.train.IterableLoader: a one-shot iterator (a generator) cannot be resumed; "
                             "give a list of batches, an array or a loader with state_dict()")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
