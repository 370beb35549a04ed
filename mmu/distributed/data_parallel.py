"""Data parallel training over MPI: the model's state broadcast from rank 0, a check that every rank
holds the same model, and gradients averaged in buckets while backward runs (PyTorch DDP's scheme).

mmu.train.Trainer uses these when TrainConfig.distributed is on (automatic under mpirun); they are
public so a hand-written loop can do the same:

    dp = mmu.distributed.data_parallel
    dp.check_same_model(model)            # names, shapes, dtypes equal on every rank
    dp.broadcast_model(model)             # parameters and buffers := rank 0's
    reducer = dp.GradientReducer(model.named_parameters())
    for step ...:
        for i, batch in enumerate(micro_batches):
            reducer.prepare(sync=(i == len(micro_batches) - 1))   # no traffic on the other micro-steps
            loss(batch).backward()        # each full bucket's all-reduce starts inside backward
        reducer.finish()                  # waits, writes the averaged gradients into .grad
        optimizer.step()

Inside `with synchronized():` (the Trainer enters it around each data-parallel step) the parts of a
model that compute batch statistics keep them global: VectorQuantize (sync_codebook=None) all-reduces
its EMA statistics and decides k-means init and dead-code restarts on rank 0, and VQGAN's adaptive
discriminator weight (mmu.losses.adaptive_weight) averages its two gradients over the ranks first. Every
rank must run the same forward calls inside it (they are collectives). Outside it (evaluation, a rank
training on its own with TrainConfig.distributed=False) nothing communicates.

GradientReducer puts the parameters, in reverse registration order (the order backward tends to
finish them, as DDP), into buckets of about bucket_cap_mb megabytes. A post-accumulate-grad hook
(Tensor.register_post_accumulate_grad_hook) on every parameter marks it ready when backward has
finished its gradient; when every parameter of a bucket is ready, the bucket's gradients are copied
into one flat buffer and its non-blocking all-reduce (mmu.distributed.all_reduce(async_op=True),
MPI_Iallreduce) starts, while backward goes on with the earlier layers. Buckets are started in index
order on every rank (a later bucket that is ready first waits for the earlier ones), because MPI
matches collectives by their order. finish() starts what is left (a parameter without a gradient on
this rank sends zeros), waits, and writes the averages back into .grad. A parameter that got no
gradient on any rank keeps grad None (each bucket carries one "had a gradient" flag per parameter),
so an optimizer skips it exactly as in one process.
"""
import time
import weakref

import numpy as np

from .. import distributed as dist

__all__ = ["model_signature", "check_same_model", "broadcast_model", "GradientReducer", "synchronized",
           "is_synchronized"]

_BUCKET_CAP_MB = 25.0
_sync_depth = 0


class synchronized:
    """Context manager: inside, batch statistics are kept global over the ranks (module docstring).
    synchronized(False) is a no-op (a Trainer that is not data parallel)."""

    def __init__(self, enabled=True):
        self.enabled = bool(enabled)

    def __enter__(self):
        global _sync_depth
        if self.enabled:
            _sync_depth += 1
        return self

    def __exit__(self, *exc):
        global _sync_depth
        if self.enabled:
            _sync_depth -= 1
        return False


def is_synchronized():
    """True inside `synchronized()` with more than one rank: the collectives of batch statistics run."""
    return _sync_depth > 0 and dist.get_world_size() > 1


def _named_state(model):
    """[(kind, name, tensor)]: the parameters, then the buffers, in registration order."""
    out = [("parameter", n, p) for n, p in model.named_parameters()]
    if hasattr(model, "named_buffers"):
        out += [("buffer", n, b) for n, b in model.named_buffers()]
    return out


def model_signature(model):
    """[(kind, name, shape, dtype)] of the model's parameters then buffers (kind "parameter" or
    "buffer"): what check_same_model compares across ranks."""
    return [(kind, name, tuple(int(s) for s in t.shape), str(t.dtype)) for kind, name, t in _named_state(model)]


def check_same_model(model, where="data parallel"):
    """Raises ValueError on every rank (the same message everywhere, so no rank is left waiting in a
    collective) when the ranks do not hold the same model: the first parameter or buffer whose name,
    shape or dtype differs from rank 0's, with the ranks that differ. One all_gather_object. Returns
    the signature (model_signature)."""
    mine = model_signature(model)
    sigs = dist.all_gather_object(mine)
    ref = sigs[0]
    for r, sig in enumerate(sigs[1:], start=1):
        if sig == ref:
            continue
        bad = [q for q, s in enumerate(sigs) if s != ref]
        for i in range(max(len(ref), len(sig))):
            a = ref[i] if i < len(ref) else None
            b = sig[i] if i < len(sig) else None
            if a == b:
                continue
            if a is None:
                what = f"rank {r} has an extra {b[0]} {b[1]!r} {b[2]} {b[3]} that rank 0 does not have"
            elif b is None:
                what = f"rank {r} lacks rank 0's {a[0]} {a[1]!r} {a[2]} {a[3]}"
            elif a[:2] != b[:2]:
                what = f"{a[0]} {i} is {a[1]!r} on rank 0 but {b[0]} {b[1]!r} on rank {r}"
            else:
                what = f"{a[0]} {a[1]!r} is {a[2]} {a[3]} on rank 0 but {b[2]} {b[3]} on rank {r}"
            raise ValueError(f"{where}: the ranks hold different models ({len(ref)} tensors on rank 0, "
                             f"{len(sig)} on rank {r}); {what} (ranks differing from rank 0: {bad}). "
                             "Every rank must build the same model from the same config")
    return mine


def _as_buffer(t):
    """A tensor's memory as a writable NumPy array (no copy); bool tensors as uint8."""
    a = t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)
    return a.view(np.uint8) if a.dtype == np.bool_ else a


def broadcast_model(model, src=0):
    """Overwrites every parameter and buffer with rank src's values, in place (MPI broadcast through
    the buffer protocol; float32 and int64 as they are, bool as bytes). Call check_same_model first:
    a broadcast between tensors of different sizes is undefined."""
    if dist.get_world_size() == 1:
        return model
    for _, _, t in _named_state(model):
        a = _as_buffer(t)
        if a.dtype == np.uint8:
            a[...] = np.asarray(dist.broadcast_object(a if dist.get_rank() == src else None, src=src))
        else:
            dist.broadcast(a, src=src)
        t._bump_version()
    return model


class _Bucket:
    __slots__ = ("params", "offsets", "buffer", "ready", "pending", "work", "launched")

    def __init__(self, params):
        self.params = params
        sizes = [int(np.prod(p.shape)) for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # the gradients, then one "had a gradient" flag per parameter (averaged: > 0 when any rank had one)
        self.buffer = np.zeros(int(self.offsets[-1]) + len(params), np.float32)
        self.ready = [False] * len(params)
        self.pending = len(params)
        self.work = None
        self.launched = False


class GradientReducer:
    """Averages the gradients of `params` (an iterable of parameters or of (name, parameter) pairs)
    over the ranks in buckets of about bucket_cap_mb MB (None: 25, PyTorch DDP's default), each bucket's all-reduce started from a
    post-accumulate-grad hook as soon as backward has finished all its gradients (see the module
    docstring). Call prepare(sync) before each backward and finish() after the last one of a step.

    Timings of the last finish(): last_wait (seconds blocked in finish waiting for all-reduces),
    last_launched_in_backward (buckets whose all-reduce started during backward) and num_buckets.
    remove() unregisters the hooks."""

    def __init__(self, params, bucket_cap_mb=None):
        if bucket_cap_mb is None:
            bucket_cap_mb = _BUCKET_CAP_MB
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"GradientReducer: bucket_cap_mb must be a number > 0, got {bucket_cap_mb!r}")
        plist = [p[1] if isinstance(p, tuple) else p for p in params]
        plist = [p for p in plist if p.requires_grad]
        if not plist:
            raise ValueError("GradientReducer: no parameter requires grad")
        if len({id(p) for p in plist}) != len(plist):
            raise ValueError("GradientReducer: a parameter appears twice")
        for p in plist:
            if str(p.dtype) != "float32":
                raise TypeError(f"GradientReducer: parameters must be float32, got {p.dtype} of shape {tuple(p.shape)}")
        cap = bucket_cap_mb * 1024 * 1024
        self.buckets, cur, size = [], [], 0
        for p in reversed(plist):     # backward finishes the last layers first
            nbytes = 4 * int(np.prod(p.shape))
            if cur and size + nbytes > cap:
                self.buckets.append(_Bucket(cur))
                cur, size = [], 0
            cur.append(p)
            size += nbytes
        self.buckets.append(_Bucket(cur))
        self._where = {}
        for b, bucket in enumerate(self.buckets):
            for i, p in enumerate(bucket.params):
                self._where[id(p)] = (b, i)
        self._sync = False
        self._next = 0          # the next bucket to launch (buckets start in index order on every rank)
        self._in_backward = 0
        self.last_wait = 0.0
        self.last_launched_in_backward = 0
        self.num_buckets = len(self.buckets)
        # the hooks hold the reducer weakly: a reducer (and its model-sized buffers) that is no longer used
        # goes away, and its hooks with it (__del__)
        ref = weakref.ref(self)

        def hook(p):
            reducer = ref()
            if reducer is not None:
                reducer._hook(p)
        self._handles = [p.register_post_accumulate_grad_hook(hook) for p in plist]

    # ------------------------------------------------------------------ during backward
    def prepare(self, sync=True):
        """Before a backward: sync=True makes this backward's hooks start the all-reduces (the last
        micro-batch of a step); sync=False lets gradients accumulate locally (the others)."""
        self._sync = bool(sync)
        if self._sync:
            self._reset()

    def _reset(self):
        for bucket in self.buckets:
            if bucket.work is not None:
                raise RuntimeError("GradientReducer.prepare: the previous step's all-reduces were not finished "
                                   "(call finish() after the last backward of a step)")
            bucket.ready = [False] * len(bucket.params)
            bucket.pending = len(bucket.params)
            bucket.launched = False
        self._next = 0
        self._in_backward = 0

    def _hook(self, p):
        if not self._sync:
            return
        b, i = self._where[id(p)]
        bucket = self.buckets[b]
        if not bucket.ready[i]:
            bucket.ready[i] = True
            bucket.pending -= 1
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self._launch(self.buckets[self._next])
            self._in_backward += 1
        # an MPI call drives the progress of the all-reduces already started (no progress thread)
        for bk in self.buckets[:self._next]:
            if bk.work is not None:
                bk.work.is_completed()

    def _launch(self, bucket):
        buf, off = bucket.buffer, bucket.offsets
        n = len(bucket.params)
        for i, p in enumerate(bucket.params):
            g = p.grad
            if g is None:
                buf[off[i]:off[i + 1]] = 0.0
                buf[off[-1] + i] = 0.0
            else:
                buf[off[i]:off[i + 1]] = g.numpy().reshape(-1)
                buf[off[-1] + i] = 1.0
        assert buf.shape[0] == off[-1] + n
        work = dist.all_reduce(buf, op="avg", async_op=True)
        bucket.work = work if hasattr(work, "wait") else None   # one process: done already
        bucket.launched = True
        self._next += 1

    # ------------------------------------------------------------------ after backward
    def finish(self):
        """Starts the buckets not started yet, waits for all, and sets each parameter's .grad to the
        average (a new tensor; a parameter with no gradient on this rank but one on another gets one).
        Returns self."""
        if not self._sync:
            raise RuntimeError("GradientReducer.finish: the last backward ran with prepare(sync=False)")
        while self._next < len(self.buckets):
            self._launch(self.buckets[self._next])
        t0 = time.perf_counter()
        for bucket in self.buckets:
            if bucket.work is not None:
                bucket.work.wait()
        self.last_wait = time.perf_counter() - t0
        self.last_launched_in_backward = self._in_backward
        from ..tensor import tensor
        for bucket in self.buckets:
            bucket.work = None
            buf, off = bucket.buffer, bucket.offsets
            for i, p in enumerate(bucket.params):
                if buf[off[-1] + i] == 0.0:
                    continue   # no rank had a gradient: grad stays None, as in one process
                # a new tensor, not a write into .grad: autograd may hand two leaves (or a leaf and the
                # caller's seed) one gradient tensor, whose memory must not change under the other
                p.grad = tensor(buf[off[i]:off[i + 1]].reshape(tuple(p.shape)))
        self._sync = False
        return self

    def remove(self):
        """Unregisters the hooks (the reducer does nothing after this)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __del__(self):
        try:
            self.remove()
        except Exception:   # interpreter shutdown: the module's globals may be gone
            pass

    def __repr__(self):
        sizes = [f"{b.buffer.nbytes / 2**20:.2f}" for b in self.buckets]
        return f"GradientReducer({len(self._where)} parameters in {len(self.buckets)} buckets of {sizes} MB)"
