"""DataLoader: seeded shuffling, batching and horizontal flips over an in-memory image dataset.

The order and the flips of epoch e are a pure function of (seed, e), so the loader's whole state is
two integers (epoch, batch position): `state_dict()` / `load_state_dict()` resume the exact batch
sequence, which the trainer needs for a resumed run to equal an uninterrupted one.
"""
import numpy as np

__all__ = ["DataLoader"]


class DataLoader:
    """Batches of float32 images (B, C, H, W) from a dataset.

    dataset: an ImageDataset (anything with `.images` (N, C, H, W)), a NumPy array or mmu Tensor
    (N, C, H, W), or any sequence whose items are (C, H, W) arrays. batch_size: images per batch. shuffle: a new
    seeded permutation every epoch (else the dataset order). seed: int. hflip: flip each image
    left-right with probability 1/2 (drawn per epoch and image, seeded). drop_last: drop the last
    incomplete batch (default True, so every batch has batch_size images).

    `for batch in loader` runs the rest of the current epoch (a whole epoch for a fresh loader) and
    then moves to the next epoch, like torch's DataLoader reshuffling on every `iter()`;
    `batches()` is an endless iterator over epochs. Iterators share the loader's position.
    `len(loader)` is the number of batches per epoch. Batches are fresh arrays (safe to modify).
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, hflip=False, drop_last=True):
        fn = "mmu.data.DataLoader"
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"{fn}: batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"{fn}: batch_size must be >= 1, got {batch_size}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{fn}: seed must be a non-negative int, got {seed!r}")
        if isinstance(dataset, np.ndarray):
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
        self.epoch = 0
        self.position = 0       # batches already handed out in the current epoch

    def __len__(self):
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def _plan(self, epoch):
        # (order (N,), flips (N,) bool or None) of an epoch: a pure function of (seed, epoch).
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        flips = rng.random(self.n) < 0.5 if self.hflip else None
        return order, flips

    def _gather(self, idx):
        if self._array is not None:
            x = self._array[idx]
        else:
            x = np.stack([np.asarray(self.dataset[int(i)]) for i in idx])
        return np.ascontiguousarray(x, dtype=np.float32)

    def __iter__(self):
        nb = len(self)
        if self.position >= nb:
            self.epoch += 1
            self.position = 0
        epoch = self.epoch
        order, flips = self._plan(epoch)
        while self.epoch == epoch and self.position < nb:
            b = self.position
            sel = slice(b * self.batch_size, min((b + 1) * self.batch_size, self.n))
            x = self._gather(order[sel])
            if flips is not None:
                f = flips[sel]
                x[f] = x[f, ..., ::-1]
            self.position = b + 1     # advanced before the yield: a state_dict taken now resumes after it
            yield x
        if self.epoch == epoch and self.position >= nb:
            self.epoch += 1
            self.position = 0

    def batches(self):
        """Endless iterator of batches, epoch after epoch (reshuffled each epoch)."""
        while True:
            yield from self

    def state_dict(self):
        """{'epoch', 'position', 'seed', 'n', 'batch_size'}: plain ints (JSON-serialisable)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "n": self.n, "batch_size": self.batch_size}

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
        epoch, pos = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= pos <= len(self):
            raise ValueError(f"{fn}: bad position epoch={epoch} position={pos} ({len(self)} batches per epoch)")
        self.seed = int(state.get("seed", self.seed))
        self.epoch, self.position = epoch, pos

    def __repr__(self):
        return (f"DataLoader(n={self.n}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, hflip={self.hflip}, drop_last={self.drop_last}, "
                f"epoch={self.epoch}, position={self.position})")
