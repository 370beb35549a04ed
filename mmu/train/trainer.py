"""Trainer: one training loop for tokenizers, language models and unified models.

The protocol: `model.training_step(batch, step) -> (loss, logs)` (loss a 0-d Tensor, logs a dict of
floats or 0-d Tensors: the logged terms), optionally `model.discriminator_step(batch, step) ->
(d_loss, logs)` or None, run after the generator's step over the same micro-batches (then
`model.discriminator`, a Module, holds the discriminator's parameters, trained by their own
optimizer), and optionally `model.evaluate_step(batch) -> dict of floats` for evaluation.
Tokenizers (mmu.tokenizers.Tokenizer: anything with a `latent_layout`) implement training_step and
discriminator_step on top of forward(images, step); the Trainer then adds the reconstruction logs
(psnr, usage, perplexity) and evaluates by encode/decode. A model without training_step is trained
through its forward(images, step) -> output with .loss, .recon, .losses, .codes, .stats and
discriminator_loss(images, recon, step), the protocol before training_step (kept for such models).

Data: a loader with batches() and state_dict()/load_state_dict() (mmu.data.DataLoader), a dataset or
an (N, C, H, W) image array (wrapped in an mmu.data.DataLoader), an array of any dtype and shape
(token ids (N, L) int64, clips (N, C, T, H, W): random row batches), a dict of equal-length arrays
(batches are dicts), or an iterable of ready batches (mmu.train.batches).

One step = grad_accum micro-batches of the generator (training_step, for a tokenizer forward(images, step) ->
TokenizerOutput; loss / grad_accum backpropagated, so the accumulated gradient is the mean over all the images),
global-norm clipping, an AdamW step, the warmup + cosine schedule, an EMA update; then, for a model
with a discriminator, the discriminator's step (discriminator_step; for a tokenizer discriminator_loss(images,
recon.detach(), step)) over the same micro-batches (taming-transformers' alternation: first the autoencoder, then the
discriminator, with the reconstructions of the generator's forward). The model decides when the
adversarial terms start (disc_start, mmu.losses.adopt_weight); the trainer skips the discriminator
step (no discriminator_loss call, no optimiser step) while step < disc_start when the model or
model.config has an int `disc_start`, and otherwise whenever discriminator_loss returns None or a loss
whose value is exactly 0 and that needs no gradient. During the generator's backward
the discriminator's parameters do not require grad (their gradient would be thrown away).

A checkpoint (mmu.save: one safetensors file, written atomically) holds the step, the model, the EMA,
both optimizers and schedulers, the data loader's state, mmu's RNG state (Philox seed and offset,
_C.get_rng_state) and NumPy's global RNG state, the history and the elapsed time; loading it into a
fresh Trainer continues the run bit for bit. Evaluation saves and restores the RNG state and runs in
eval mode under no_grad, so evaluating never changes the training trajectory. A checkpoint also records
the model's config (get_config) and the TrainConfig; load_checkpoint refuses one written under another
config and names the fields that differ (only steps and the bookkeeping fields may change on resume).

Interrupts: inside fit() (on the main thread) a first Ctrl-C lets the current step finish, writes a
checkpoint of that step into ckpt_dir (when there is one) and then raises KeyboardInterrupt; a second
Ctrl-C stops at once. A KeyboardInterrupt raised at a step boundary (by a callback, say) also gets the
checkpoint; one raised in the middle of a step does not (the step's state is half written).

Divergence: a non-finite loss or gradient norm, or a loss above config.max_loss, raises TrainingDiverged
before that step's update; the history and the checkpoints written so far stay as they were.

Data parallel (config.distributed, automatic under mpirun): at creation every rank checks that it holds
the same model as rank 0 (mmu.distributed.data_parallel.check_same_model: ValueError naming the first
differing parameter and the ranks) and takes rank 0's parameters and buffers; the data loader gives each
rank its shard; the gradients of each step are averaged over the ranks by a GradientReducer (buckets
all-reduced during the last micro-batch's backward; the discriminator has its own); the logged loss and
terms are the means over the ranks and the divergence guard decides the same on every rank. Rank 0
alone shows the progress bar and writes checkpoints, samples and TensorBoard; resume() reads the
checkpoint rank 0 chose on every rank. BatchNorm batch statistics are per rank (each rank normalises with
its own micro-batch; running statistics are rank 0's in checkpoints), as PyTorch DDP without SyncBatchNorm.
Every rank evaluates (the models are the same, so are the numbers), so no rank waits in a collective
while rank 0 alone evaluates.
"""
import contextlib
import glob
import math
import numbers
import os
import re
import signal
import threading
import time

import numpy as np

from .. import _C
from .._C import Tensor
from ..autograd import no_grad
from ..io import load as _load
from ..io import save as _save
from ..metrics.image import ssim as _ssim
from ..optim import EMA, AdamW, clip_grad_norm_
from ..optim.lr_scheduler import WarmupCosine
from ..tensor import manual_seed, tensor
from .config import TrainConfig
from .config import RESUMABLE_FIELDS
from .batches import ArrayLoader, IterableLoader
from .batches import _as_columns as _columns
from .history import History
from ..metrics.codebook import _usage_perplexity
from ..metrics.image import _psnr_values

__all__ = ["Trainer", "TrainingDiverged", "batch_psnr"]

_CKPT_RE = re.compile(r"^ckpt_(\d+)\.safetensors$")
# the temp file mmu.save writes next to ckpt_N.safetensors before renaming it into place
# (mmu.io's _atomic_write: "." + basename + "." + mkstemp's random part + ".tmp")
_CKPT_TMP_RE = re.compile(r"^\.(ckpt_\d+\.safetensors)\.[A-Za-z0-9_]+\.tmp$")
_FORMAT = "mmu.train.checkpoint/1"

# checkpoint paths this process is writing now: _prune never removes their temp files
_SAVING = set()
_SAVING_LOCK = threading.Lock()


class TrainingDiverged(FloatingPointError):
    """The run diverged: a non-finite loss or gradient norm, or a loss above TrainConfig.max_loss.
    .step is the step that was stopped (its update was not applied), .value the offending number."""

    def __init__(self, message, step=None, value=None):
        super().__init__(message)
        self.step = step
        self.value = value


def _model_config(model):
    """mmu.get_config(model) without the version stamp, or None when the model cannot describe itself."""
    from ..config import get_config
    try:
        cfg = get_config(model) if not hasattr(model, "get_config") else model.get_config()
    except (AttributeError, ValueError, TypeError):
        return None
    if isinstance(cfg, dict):
        cfg.pop("mmu_version", None)
    return cfg


def _flat(obj, prefix=""):
    """{dotted path: leaf} of nested dicts (lists and scalars are leaves, JSON-normalised)."""
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, tuple):
        obj = list(obj)
    return {prefix[:-1]: obj}


def _config_name(path):
    # a tokenizer records its fields as args["**fields_"]: name them as the user writes them
    parts = [p for p in path.split(".") if p not in ("args", "**fields_", "__config__", "fields")]
    return ".".join(parts) or path


def _config_diff(saved, now, prefix):
    """["prefix.field: A in the checkpoint, B now", ...] for the leaves that differ."""
    a, b = _flat(saved), _flat(now)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "(absent)"), b.get(key, "(absent)")
        if _same(va, vb):
            continue
        out.append(f"{prefix}{_config_name(key)}: {va!r} in the checkpoint, {vb!r} now")
    return out


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def batch_psnr(recon, images, data_range=2.0):
    """Per-image PSNR (dB) of recon against images (N, ...), both in [-1, 1] (data_range 2):
    mmu.metrics.psnr's formula (no input checks). Returns a float64 array (N,)."""
    return _psnr_values(recon, images, data_range)


def _code_stats(codes, codebook_size):
    """(usage, perplexity) of an int code array (mmu.metrics.codebook_usage / perplexity; codes
    outside [0, codebook_size) are not counted)."""
    c = np.asarray(codes).reshape(-1).astype(np.int64)
    if c.size == 0 or not codebook_size:
        return float("nan"), float("nan")
    c = c[(c >= 0) & (c < codebook_size)]
    return _usage_perplexity(np.bincount(c, minlength=codebook_size))


def _scalar(v, where):
    """A logged value (number or one-element Tensor) -> float."""
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise TypeError(f"{where} must be a number or a 0-d Tensor, got a Tensor of shape {tuple(v.shape)}")
        return float(v.item())
    if isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return float(v)
    raise TypeError(f"{where} must be a number or a 0-d Tensor, got {type(v).__name__}")


def _as_images(batch, where, ndims=(4,)):
    """A loader's batch (ndarray / Tensor / (images, ...) tuple) -> a float32 (B, C, H, W) Tensor
    ((B, C, T, H, W) clips when 5 is in ndims)."""
    if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], numbers.Number):
        batch = batch[0]
    if isinstance(batch, Tensor):
        arr = batch.detach().numpy()
    else:
        arr = np.asarray(batch)
    if arr.ndim not in ndims:
        what = "images (B, C, H, W)" + (" or clips (B, C, T, H, W)" if 5 in ndims else "")
        raise ValueError(f"{where}: expected a batch of {what}, got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{where}: images must be floating point in [-1, 1], got dtype {arr.dtype}")
    return tensor(np.ascontiguousarray(arr, np.float32))


@contextlib.contextmanager
def _deferred_sigint():
    """Inside: a first SIGINT (Ctrl-C) only sets a flag (the yielded function returns True from then
    on), so the loop can stop between steps with a consistent state; a second raises KeyboardInterrupt
    at once. Installed only on the main thread and only over Python's default handler (a program with
    its own SIGINT handler keeps it)."""
    state = {"requested": False}

    def handler(signum, frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True
        try:  # os.write, not print: the handler may run in the middle of another write to stderr
            os.write(2, b"\nmmu.train: Ctrl-C: stopping after this step (press Ctrl-C again to stop now)\n")
        except OSError:
            pass

    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                previous = signal.signal(signal.SIGINT, handler)
        except (ValueError, OSError):
            previous = None
    try:
        yield lambda: state["requested"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _to_uint8(images):
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 (the first 3 channels; 1 stays grey)."""
    a = np.asarray(images, np.float32)
    a = a[:, :3] if a.shape[1] >= 3 else a[:, :1]
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip((a + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _sample_grid(originals, recons, pad=2):
    """A (H', W', C) uint8 grid: originals on the top row, reconstructions below, tiles enlarged by an
    integer factor (nearest) to at least 64 px and separated by `pad` white pixels."""
    if np.ndim(originals) == 5:  # clips (N, C, T, H, W): their first frames
        originals, recons = np.asarray(originals)[:, :, 0], np.asarray(recons)[:, :, 0]
    top, bottom = _to_uint8(originals), _to_uint8(recons)
    if top.shape[1:3] != bottom.shape[1:3] or top.shape[-1] != bottom.shape[-1]:
        raise ValueError(f"Trainer.save_samples: reconstructions {recons.shape} do not match the images "
                         f"{originals.shape}")
    n, h, w, ch = top.shape
    f = max(1, -(-64 // max(1, min(h, w))))
    th, tw = h * f, w * f
    grid = np.full((2 * th + 3 * pad, n * tw + (n + 1) * pad, ch), 255, np.uint8)
    for row, imgs in enumerate((top, bottom)):
        for i in range(n):
            tile = imgs[i].repeat(f, axis=0).repeat(f, axis=1)
            y, x = pad + row * (th + pad), pad + i * (tw + pad)
            grid[y:y + th, x:x + tw] = tile
    return grid


class _GeneratorView:
    """The generator's part of a model, for mmu.optim.EMA: its trainable generator parameters and
    every buffer outside the discriminator, looked up by name at every call (a module that replaces
    a buffer object is still followed)."""

    def __init__(self, model, gen_params, disc):
        ids = {id(p) for p in gen_params}
        self.model = model
        self.param_names = [n for n, p in model.named_parameters() if id(p) in ids]
        dids = set()
        if disc is not None:
            dids = {id(t) for t in disc.parameters()} | {id(t) for t in disc.buffers()}
        self.buffer_names = [n for n, b in model.named_buffers() if id(b) not in dids] \
            if hasattr(model, "named_buffers") else []

    def named_parameters(self):
        live = dict(self.model.named_parameters())
        return [(n, live[n]) for n in self.param_names]

    def named_buffers(self):
        live = dict(self.model.named_buffers())
        return [(n, live[n]) for n in self.buffer_names if n in live]


class Trainer:
    """Trainer(model, train_data, config, eval_data=None, callbacks=None): trains any model with the
    training_step protocol (a tokenizer, a language model, a unified model).

    model: a Module with training_step(batch, step) -> (loss 0-d Tensor, logs dict of floats / 0-d
        Tensors); optionally discriminator_step(batch, step) -> (d_loss, logs) or None together with
        `discriminator` (the Module whose parameters get the second optimizer), generator_parameters()
        (default: every trainable parameter outside the discriminator) and evaluate_step(batch) -> dict
        of floats. A tokenizer (a model with `latent_layout`, encode and decode, e.g. mmu.tokenizers)
        gets image batches as float32 Tensors, reconstruction logs (psnr, usage, perplexity from its
        `last_output`) and encode/decode evaluation. A model without training_step uses the older
        protocol: forward(images, step) -> an output with .loss (scalar Tensor), .recon, .losses (dict of
        floats), .codes, .stats, and discriminator_loss(images, recon, step) -> (Tensor or None, dict).
    train_data: a loader with batches() (an endless iterator of batches) and state_dict()/
        load_state_dict() (mmu.data.DataLoader); for an image model a dataset / an (N, C, H, W) array,
        which gets an mmu.data.DataLoader(batch_size=config.batch_size, shuffle=True, seed=config.seed);
        an array of any dtype and shape or a dict of equal-length arrays (mmu.train.batches.ArrayLoader:
        seeded random rows, batches of the same type); or, for a non-image model, an iterable of batches
        (IterableLoader; a list or other re-iterable resumes exactly, a generator cannot be resumed).
    config: a TrainConfig. eval_data: a dataset, an array (or dict of arrays) or an iterable of batches.
    callbacks: callables cb(trainer, record) run after every step (after its logging, evaluation,
        checkpoint and samples), record being the step's measurements; raising KeyboardInterrupt
        there stops the run like Ctrl-C (with a checkpoint of that step).
    Sample grids (config.sample_every) use model.reconstruct(images) when the model has it, else
        decode(encode(images)), else forward(images, step).recon.

    The trainer seeds mmu's RNG with config.seed when it is created. fit() trains and returns the
    History; save_checkpoint / load_checkpoint / Trainer.resume continue a run exactly.
    """

    def __init__(self, model, train_data, config, eval_data=None, callbacks=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer: config must be a TrainConfig, got {type(config).__name__}")
        config.validate()
        if not callable(model) or not hasattr(model, "parameters"):
            raise TypeError(f"Trainer: model must be a Module (callable, with parameters()), got {type(model).__name__}")
        if callbacks is None:
            callbacks = []
        elif callable(callbacks):
            callbacks = [callbacks]
        callbacks = list(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"Trainer: callbacks must be callables cb(trainer, record), got {type(cb).__name__}")
        self.model = model
        self.config = config
        self.callbacks = callbacks
        # which protocol: training_step (new) or forward(images, step) -> output (the older one)
        self._stepwise = callable(getattr(model, "training_step", None))
        # an image model: batches are images, logs and evaluation are about reconstructions
        self._images = not self._stepwise or getattr(model, "latent_layout", None) is not None
        self._image_ndims = (4, 5) if self._images and getattr(model, "latent_layout", None) == "3d" else (4,)
        manual_seed(config.seed)
        self.train_data = self._as_loader(train_data)
        self.eval_data = eval_data
        self._sample_images = None
        if config.sample_every and self._images:
            for source in (eval_data, train_data, getattr(self.train_data, "dataset", None)):
                self._sample_images = self._first_images(source, config.num_samples)
                if self._sample_images is not None:
                    break  # else the first training batch gives them (train_step)

        gen = model.generator_parameters() if hasattr(model, "generator_parameters") else model.parameters()
        self.gen_params = [p for p in gen if p.requires_grad]
        if not self.gen_params:
            raise ValueError("Trainer: the model has no trainable generator parameters")
        self.disc = getattr(model, "discriminator", None)
        self.disc_params = []
        if self.disc is not None:
            if self._stepwise and not callable(getattr(model, "discriminator_step", None)):
                raise TypeError("Trainer: the model has a discriminator but no discriminator_step(batch, step)")
            if not self._stepwise and not hasattr(model, "discriminator_loss"):
                raise TypeError("Trainer: the model has a discriminator but no discriminator_loss(images, recon, step)")
            self.disc_params = [p for p in self.disc.parameters() if p.requires_grad]
            overlap = {id(p) for p in self.disc_params} & {id(p) for p in self.gen_params}
            if overlap:
                raise ValueError(f"Trainer: {len(overlap)} discriminator parameters are also in "
                                 "generator_parameters(); the two optimizers must own disjoint parameters")
        c = config
        self.optimizer = AdamW(self.gen_params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        self.scheduler = WarmupCosine(self.optimizer, c.warmup_steps, c.steps, min_lr_ratio=c.min_lr_ratio)
        self.disc_optimizer = self.disc_scheduler = None
        if self.disc_params:
            dlr = c.lr if c.disc_lr is None else c.disc_lr
            self.disc_optimizer = AdamW(self.disc_params, lr=dlr, betas=c.betas, weight_decay=c.weight_decay)
            self.disc_scheduler = WarmupCosine(self.disc_optimizer, c.warmup_steps, c.steps,
                                               min_lr_ratio=c.min_lr_ratio)
        self._ema_view = _GeneratorView(model, self.gen_params, self.disc)
        self.ema = EMA(self._ema_view, decay=c.ema_decay) if c.ema_decay is not None else None
        self.step = 0
        self.disc_steps = 0
        self.history = History()
        self.elapsed = 0.0
        self._batches = None
        self._stop_local = None     # fit's Ctrl-C flag (data parallel: agreed by all ranks every step)
        self._stop_agreed = False
        self._setup_distributed()
        self._at_boundary = True    # False while a step is half done (no checkpoint can be taken then)
        self._saved_step = None     # the step of the last checkpoint this trainer wrote
        self.interrupted = False    # fit() ended by KeyboardInterrupt

    # ------------------------------------------------------------------ data parallel
    def _setup_distributed(self):
        """Decides config.distributed (None: on when MPI runs more than one rank), then checks and
        broadcasts the model and hooks the gradient reducers (see the module docstring)."""
        from .. import distributed as dist
        want = self.config.distributed
        if want is False:
            self.distributed, self.rank, self.world_size = False, 0, 1
        else:
            dist.init()
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            self.distributed = bool(want) or self.world_size > 1
        self._reducer = self._disc_reducer = None
        shard = getattr(self.train_data, "set_shard", None)
        if callable(shard):
            shard(self.rank if self.distributed else 0, self.world_size if self.distributed else 1)
        if not self.distributed:
            return
        from ..distributed import data_parallel as dp
        dp.check_same_model(self.model, "Trainer (data parallel)")
        dp.broadcast_model(self.model)
        self._reducer = dp.GradientReducer(self.gen_params)
        if self.disc_params:
            self._disc_reducer = dp.GradientReducer(self.disc_params)

    @property
    def is_main_process(self):
        """True on rank 0 (and when not data parallel): the process that prints and writes."""
        return not self.distributed or self.rank == 0

    def _agree(self, rec, bad):
        """Data parallel: the means over the ranks of rec's numbers (loss and logged terms), and the first
        divergence any rank found ((what, value) or None), the same on every rank."""
        from .. import distributed as dist
        got = dist.all_gather_object((rec, bad))
        bad = next((b for _, b in got if b is not None), None)
        keys = [k for k in rec if all(k in r for r, _ in got)]
        return {k: float(np.mean([r[k] for r, _ in got])) for k in keys}, bad

    # ------------------------------------------------------------------ data
    def _as_loader(self, data):
        if hasattr(data, "batches") and callable(data.batches):
            if not (hasattr(data, "state_dict") and hasattr(data, "load_state_dict")):
                raise TypeError("Trainer: train_data has batches() but no state_dict()/load_state_dict(); "
                                "checkpoints need the loader's position")
            return data
        c = self.config
        if isinstance(data, Tensor):
            data = data.detach().numpy()
        if isinstance(data, dict) or (isinstance(data, np.ndarray) and not (self._images and data.ndim == 4)):
            return ArrayLoader(data, c.batch_size, shuffle=True, seed=c.seed)
        if not self._images and hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
            return IterableLoader(data)
        if isinstance(data, np.ndarray) or (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            try:
                from ..data import DataLoader
            except ImportError:
                raise TypeError("Trainer: train_data must be a loader with batches() and state_dict() "
                                "(mmu.data.DataLoader is not available to wrap a dataset)") from None
            return DataLoader(data, batch_size=self.config.batch_size, shuffle=True, seed=self.config.seed)
        raise TypeError(f"Trainer: train_data must be a DataLoader (with batches()), a dataset, an array, a dict of "
                        f"arrays or (for a non-image model) an iterable of batches, got {type(data).__name__}")

    def _next_batch(self):
        if self._batches is None:
            self._batches = iter(self.train_data.batches())
        try:
            batch = next(self._batches)
        except StopIteration:
            raise RuntimeError("Trainer: train_data.batches() ended; it must be an endless iterator") from None
        if not self._images:
            return batch
        return _as_images(batch, "Trainer: train_data batch", self._image_ndims)

    def _first_images(self, data, n):
        """The first n images of eval/train data as float32 (n, C, H, W), or None for data that
        cannot be read twice (a one-shot iterator or a loader that moves when iterated)."""
        if data is None or hasattr(data, "__next__") or hasattr(data, "batches"):
            return None
        got, have = [], 0
        try:
            for batch in self._eval_batches(data):
                arr = _as_images(batch, "Trainer: sample images", self._image_ndims).numpy()
                got.append(arr[:n - have].copy())
                have += len(got[-1])
                if have >= n:
                    break
        except TypeError:
            return None
        return np.concatenate(got) if got else None

    def _eval_batches(self, data):
        bs = self.config.batch_size
        if isinstance(data, Tensor):
            data = data.numpy()
        if isinstance(data, np.ndarray):
            for i in range(0, len(data), bs):
                yield data[i:i + bs]
        elif isinstance(data, dict):
            cols, _ = _columns(data, "Trainer.evaluate")
            n = len(next(iter(cols.values())))
            for i in range(0, n, bs):
                yield {k: v[i:i + bs] for k, v in cols.items()}
        elif isinstance(getattr(data, "images", None), np.ndarray):
            for i in range(0, len(data.images), bs):
                yield data.images[i:i + bs]
        elif hasattr(data, "__len__") and hasattr(data, "__getitem__") and not hasattr(data, "__iter__"):
            for i in range(0, len(data), bs):
                yield np.stack([np.asarray(data[j]) for j in range(i, min(len(data), i + bs))])
        elif hasattr(data, "__iter__"):
            yield from data
        else:
            raise TypeError(f"Trainer.evaluate: eval data must be an array, a dataset or an iterable of batches, "
                            f"got {type(data).__name__}")

    # ------------------------------------------------------------------ one step
    @contextlib.contextmanager
    def _frozen(self, params):
        """The parameters do not require grad inside (restored after, even on error)."""
        frozen = [p for p in params if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _codebook_size(self, out=None):
        k = getattr(self.model, "codebook_size", None)
        if k is None and out is not None and getattr(out, "stats", None) is not None:
            k = getattr(out.stats, "codebook_size", None)
        return k

    def train_step(self):
        """One optimiser step (grad_accum micro-batches, then the discriminator's step). Returns the
        step's measurements (a dict; psnr / usage only on logging steps). Data parallel: inside
        mmu.distributed.data_parallel.synchronized (global codebook statistics and adaptive weight)."""
        if not self.distributed:
            return self._train_step()
        from ..distributed.data_parallel import synchronized
        with synchronized():
            return self._train_step()

    def _train_step(self):
        c, model, step = self.config, self.model, self.step
        log_now = c.log_every > 0 and (step + 1) % c.log_every == 0
        accum = c.grad_accum
        lr = self.scheduler.get_last_lr()[0]
        model.zero_grad(set_to_none=True)
        rec = {"loss": 0.0}
        terms, psnrs, usage, ppl, ema_usage = {}, [], [], [], []
        kept = []
        bad = None      # data parallel: the first divergence of this rank, decided with the others after backward
        with self._frozen(self.disc_params):
            for micro in range(accum):
                x = self._next_batch()
                if self._stepwise:
                    res = model.training_step(x, step)
                    if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict)):
                        raise TypeError(f"Trainer: model.training_step(batch, step) must return (loss, logs dict), "
                                        f"got {type(res).__name__}")
                    loss, logs = res
                    if not isinstance(loss, Tensor) or loss.numel() != 1:
                        raise TypeError(f"Trainer: the loss of model.training_step must be a scalar Tensor, got "
                                        f"{type(loss).__name__}")
                    if not loss.requires_grad:  # backward would fail naming only itself
                        raise RuntimeError(f"Trainer: the loss of model.training_step does not require grad (a "
                                           f"{loss.dtype} Tensor computed under no_grad, detached, or from no "
                                           f"trainable parameter)")
                    # a tokenizer keeps its last (detached) output for the reconstruction logs
                    out = getattr(model, "last_output", None) if self._images and log_now else None
                else:
                    out = model(x, step)
                    loss = getattr(out, "loss", None)
                    if not isinstance(loss, Tensor) or loss.numel() != 1:
                        raise TypeError(f"Trainer: model(images, step).loss must be a scalar Tensor, got "
                                        f"{type(loss).__name__}")
                    logs = getattr(out, "losses", None) or {}
                value = loss.item()
                if not self.distributed:
                    self._check_loss(value, "loss", step, lr, logs)
                elif bad is None and not self._loss_ok(value):
                    bad = ("loss", value, {k: _scalar(v, k) for k, v in logs.items()})
                if c.sample_every and self._images and self._sample_images is None:
                    self._sample_images = x.numpy()[:c.num_samples].copy()
                if self._reducer is not None:
                    self._reducer.prepare(sync=micro == accum - 1)
                (loss if accum == 1 else loss * (1.0 / accum)).backward()
                rec["loss"] += value / accum
                for k, v in logs.items():
                    terms[k] = terms.get(k, 0.0) + _scalar(v, f"Trainer: the logged term {k!r}") / accum
                if self.disc_params:
                    kept.append(x if self._stepwise else (x, out.recon.detach()))
                if log_now and out is not None and getattr(out, "recon", None) is not None:
                    psnrs.append(batch_psnr(out.recon.detach().numpy(), x.numpy()))
                    st = getattr(out, "stats", None)
                    if st is not None and getattr(st, "batch_usage", None) is not None:
                        usage.append(float(st.batch_usage))
                        ppl.append(float(st.perplexity))
                        if getattr(st, "ema_usage", None) is not None:
                            ema_usage.append(float(st.ema_usage))
                    elif getattr(out, "codes", None) is not None and self._codebook_size(out):
                        u, p = _code_stats(out.codes, self._codebook_size(out))
                        usage.append(u)
                        ppl.append(p)
                del out, loss
        if self._reducer is not None:
            self._reducer.finish()
            stop = float(self._stop_local is not None and self._stop_local())
            avg, bad = self._agree({"loss": rec["loss"], "_stop": stop, **terms}, bad)
            self._stop_agreed = avg.pop("_stop") > 0     # a Ctrl-C on any rank stops all after this step
            rec["loss"] = avg.pop("loss")
            terms = avg
            if bad is not None:
                self._check_loss(bad[1], bad[0], step, lr, bad[2])
        if c.grad_clip:
            rec["grad_norm"] = clip_grad_norm_(self.gen_params, c.grad_clip).item()
            if not math.isfinite(rec["grad_norm"]):
                model.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"Trainer: the run diverged at step {step}: the gradient norm is {rec['grad_norm']} (loss "
                    f"{rec['loss']:.4g}); stopped before the update, the weights are those after step {step}. "
                    f"Lower lr (now {lr:.3g}).", step=step, value=rec["grad_norm"])
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self._ema_view)
        rec.update(terms)
        if self.disc_params:
            rec.update(self._disc_step(kept, step))
            self.disc_scheduler.step()
        self.step += 1
        rec["lr"] = lr
        if psnrs:
            rec["psnr"] = float(np.mean(np.concatenate(psnrs)))
        if usage:
            rec["usage"] = float(np.mean(usage))
            rec["perplexity"] = float(np.mean(ppl))
        if ema_usage:
            rec["ema_usage"] = float(np.mean(ema_usage))
        return rec

    def _loss_ok(self, value):
        limit = self.config.max_loss
        return math.isfinite(value) and (limit is None or value <= limit)

    def _check_loss(self, value, what, step, lr, terms=None):
        """The divergence guard: raises TrainingDiverged (gradients dropped, nothing updated) when the
        loss is not finite or above config.max_loss."""
        if self._loss_ok(value):
            return
        limit = self.config.max_loss
        self.model.zero_grad(set_to_none=True)
        why = f"the {what} is {value:.4g}" + ("" if not math.isfinite(value) else
                                             f", above max_loss={limit:g} (TrainConfig.max_loss)")
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in (terms or {}).items()
                          if isinstance(v, (numbers.Real, np.floating)))
        where = ("the weights are those after step " + str(step)) if what == "loss" else \
            f"the generator has taken step {step}'s update, the discriminator has not"
        raise TrainingDiverged(
            f"Trainer: the run diverged at step {step}: {why}" + (f" (terms: {shown})" if shown else "")
            + f"; stopped before the update, {where}. Lower lr (now {lr:.3g}) or set grad_clip.",
            step=step, value=value)

    def _disc_start(self):
        """The model's disc_start (an attribute of the model or of model.config), or None."""
        for owner in (self.model, getattr(self.model, "config", None)):
            v = getattr(owner, "disc_start", None) if owner is not None else None
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                return int(v)
        return None

    def _disc_step(self, kept, step):
        accum = len(kept)
        start = self._disc_start()
        if start is not None and step < start:
            return {}  # not active yet: no discriminator forward at all
        self.model.zero_grad(set_to_none=True)
        active, logs, bad = False, {}, None
        red = self._disc_reducer
        for k_item, item in enumerate(kept):
            if self._stepwise:
                res = self.model.discriminator_step(item, step)
            else:
                res = self.model.discriminator_loss(item[0], item[1], step)
            d_loss, d_logs = res if isinstance(res, tuple) else (res, {})
            if d_loss is None:
                continue
            if not isinstance(d_loss, Tensor) or d_loss.numel() != 1:
                raise TypeError(f"Trainer: discriminator_{'step' if self._stepwise else 'loss'} must return a scalar "
                                f"Tensor (or None), got "
                                f"{type(d_loss).__name__}")
            value = d_loss.item()
            if red is None:
                self._check_loss(value, "discriminator loss", step, self.disc_scheduler.get_last_lr()[0])
            elif bad is None and not self._loss_ok(value):
                bad = ("discriminator loss", value, {})
            if not d_loss.requires_grad and value == 0.0:
                continue  # the discriminator is not active yet (adopt_weight before disc_start)
            active = True
            if d_loss.requires_grad:
                if red is not None:
                    red.prepare(sync=k_item == accum - 1)
                (d_loss if accum == 1 else d_loss * (1.0 / accum)).backward()
            logs["d_loss"] = logs.get("d_loss", 0.0) + value / accum
            for k, v in (d_logs or {}).items():
                if isinstance(v, (numbers.Real, np.floating)) or (isinstance(v, Tensor) and v.numel() == 1):
                    name = k if k.startswith(("d_", "disc")) else f"d_{k}"
                    if name == "d_loss":
                        continue  # the loss itself is logged from its value above
                    v = v.item() if isinstance(v, Tensor) else float(v)
                    logs[name] = logs.get(name, 0.0) + v / accum
        if red is not None:
            # every rank takes part, whatever its own losses were (a rank that skipped the last backward
            # sends zeros with a "no gradient" flag)
            if not red._sync:
                red.prepare(sync=True)
            red.finish()
            flags, bad = self._agree({"active": float(active), **logs}, bad)
            active = flags.pop("active") > 0
            logs = flags
            if bad is not None:
                self._check_loss(bad[1], bad[0], step, self.disc_scheduler.get_last_lr()[0])
        if active:
            if self.config.grad_clip:
                clip_grad_norm_(self.disc_params, self.config.grad_clip)
            self.disc_optimizer.step()
            self.disc_steps += 1
        return logs

    # ------------------------------------------------------------------ the loop
    def fit(self, steps=None):
        """Trains `steps` more steps (default: until config.steps) and returns the History.

        Every log_every steps a record goes into self.history (and the progress bar's postfix, and
        TensorBoard when config.tensorboard_dir is set); every eval_every steps evaluate() adds
        eval_psnr / eval_usage / eval_perplexity; every ckpt_every steps a checkpoint is written into
        ckpt_dir (the last keep_last are kept); every sample_every steps a sample grid goes into
        sample_dir; then the callbacks run. Ctrl-C / KeyboardInterrupt: see the module docstring
        (self.interrupted is set, the exception propagates)."""
        c = self.config
        if steps is None:
            steps = max(0, c.steps - self.step)
        elif isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"Trainer.fit: steps must be an int >= 0 or None, got {steps!r}")
        if steps == 0:
            return self.history
        from tqdm import tqdm
        self.model.train()
        self.interrupted = False
        self._at_boundary = True
        tb = None
        main = self.is_main_process
        if c.tensorboard_dir is not None and main:
            from .tensorboard import TensorBoardWriter
            tb = TensorBoardWriter(c.tensorboard_dir, start_step=self.step + 1 if self.step else 0)
        bar = tqdm(total=steps, disable=not (c.progress and main), desc="train", unit="step", dynamic_ncols=True)
        try:
            with _deferred_sigint() as local_stop:
                if self.distributed:
                    self._stop_local, self._stop_agreed = local_stop, False
                    stop_requested = lambda: self._stop_agreed  # noqa: E731 (the same step on every rank)
                else:
                    stop_requested = local_stop
                for _ in range(steps):
                    if stop_requested():
                        raise KeyboardInterrupt  # Ctrl-C came during the last step, which has finished
                    self._at_boundary = False
                    t0 = time.perf_counter()
                    rec = self.train_step()
                    self.elapsed += time.perf_counter() - t0
                    s = self.step
                    if c.log_every and s % c.log_every == 0:
                        rec["time"] = self.elapsed
                        self.history.log({"step": s, **rec})
                        if tb is not None:
                            tb.add_scalars({f"train/{k}": v for k, v in rec.items()}, s)
                        post = {"loss": f"{rec['loss']:.4g}"}
                        if "psnr" in rec:
                            post["psnr"] = f"{rec['psnr']:.2f}"
                        if "usage" in rec:
                            post["usage"] = f"{rec['usage']:.0%}"
                        bar.set_postfix(post, refresh=False)
                    self._at_boundary = True
                    # every rank evaluates (the same weights: the same numbers), so none waits for rank 0
                    # in its next collective for as long as an evaluation takes
                    if c.eval_every and s % c.eval_every == 0 and self.eval_data is not None:
                        t0 = time.perf_counter()
                        ev = self.evaluate()
                        self.elapsed += time.perf_counter() - t0
                        self.history.log({"step": s, **ev, "time": self.elapsed})
                        if tb is not None:
                            tb.add_scalars({f"eval/{k[5:] if k.startswith('eval_') else k}": v
                                            for k, v in ev.items()}, s)
                    if c.ckpt_every and s % c.ckpt_every == 0 and main:
                        self.save_checkpoint(self._ckpt_path(s))
                        self._prune()
                    if c.sample_every and s % c.sample_every == 0 and main:
                        self.save_samples(os.path.join(os.fspath(c.sample_dir), f"step_{s:08d}.png"), tb)
                    if tb is not None:
                        tb.flush()
                    for cb in self.callbacks:
                        cb(self, rec)
                    bar.update(1)
                if stop_requested():
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.interrupted = True
            if self._at_boundary and c.ckpt_dir is not None and self._saved_step != self.step and main:
                self.save_checkpoint(self._ckpt_path(self.step))
                self._prune()
            raise
        finally:
            self._stop_local = None
            bar.close()
            if tb is not None:
                tb.close()
        return self.history

    def _ckpt_path(self, step):
        return os.path.join(os.fspath(self.config.ckpt_dir), f"ckpt_{step:08d}.safetensors")

    @contextlib.contextmanager
    def _eval_mode(self):
        """Eval mode, no_grad and the EMA weights (when EMA is on) inside; the RNG state, the weights
        and the train/eval mode are restored after."""
        model = self.model
        rng = _C.get_rng_state()
        was_training = getattr(model, "training", True)
        model.eval()
        try:
            ctx = self.ema.average_parameters(self._ema_view) if self.ema is not None else contextlib.nullcontext()
            with ctx, no_grad():
                yield
        finally:
            model.train(was_training)
            _C.set_rng_state(*rng)

    def evaluate(self, data=None):
        """Mean PSNR, codebook usage and perplexity of the model on `data` (default: eval_data), with
        the EMA weights when EMA is on. Uses encode/decode when the model has them (the tokenizer's
        real round trip), else forward(). Runs in eval mode under no_grad and leaves the RNG, the
        weights and the train/eval mode as they were. Returns {"eval_psnr", "eval_ssim" (mmu.metrics.ssim; images
        of at least 3x3), "eval_usage", "eval_perplexity"}.

        A model that is not an image model is evaluated by model.evaluate_step(batch) -> dict of floats
        when it has one (each key gets an "eval_" prefix), else by its training_step's loss and logs
        under no_grad ({"eval_loss", "eval_<term>"}); the values are averaged over the batches."""
        data = self.eval_data if data is None else data
        if data is None:
            raise ValueError("Trainer.evaluate: no eval_data given (pass it to Trainer or to evaluate())")
        if not self._images:
            return self._evaluate_steps(data)
        model = self.model
        psnrs, ssims, codes, ksize = [], [], [], self._codebook_size()
        with self._eval_mode():
            for batch in self._eval_batches(data):
                x = _as_images(batch, "Trainer.evaluate: eval batch", self._image_ndims)
                if hasattr(model, "encode") and hasattr(model, "decode"):
                    z = np.asarray(model.encode(x))
                    r = model.decode(z)
                else:
                    out = model(x, self.step)
                    z, r = getattr(out, "codes", None), out.recon
                    if ksize is None:
                        ksize = self._codebook_size(out)
                r = r.numpy() if isinstance(r, Tensor) else np.asarray(r)
                psnrs.append(batch_psnr(r, x.numpy()))
                if min(r.shape[-2:]) >= 3 and r.ndim in (4, 5):
                    ssims.append(_ssim(r, x.numpy(), reduction="none"))
                if z is not None:
                    codes.append(np.asarray(z).reshape(-1))
        if not psnrs:
            raise ValueError("Trainer.evaluate: the eval data is empty")
        res = {"eval_psnr": float(np.mean(np.concatenate(psnrs)))}
        if ssims:
            res["eval_ssim"] = float(np.mean(np.concatenate(ssims)))
        if codes and ksize:
            res["eval_usage"], res["eval_perplexity"] = _code_stats(np.concatenate(codes), ksize)
        return res

    def _evaluate_steps(self, data):
        """evaluate() of a non-image model: the mean over the batches of evaluate_step's dict (or of the
        training_step loss and logs)."""
        model = self.model
        sums, n = {}, 0
        step_fn = getattr(model, "evaluate_step", None)
        with self._eval_mode():
            for batch in self._eval_batches(data):
                if callable(step_fn):
                    res = step_fn(batch)
                    if not isinstance(res, dict):
                        raise TypeError(f"Trainer.evaluate: model.evaluate_step must return a dict of floats, "
                                        f"got {type(res).__name__}")
                else:
                    loss, logs = model.training_step(batch, self.step)
                    res = {"loss": loss, **logs}
                for k, v in res.items():
                    name = k if k.startswith("eval_") else f"eval_{k}"
                    sums[name] = sums.get(name, 0.0) + _scalar(v, f"Trainer.evaluate: {k!r}")
                n += 1
        if not n:
            raise ValueError("Trainer.evaluate: the eval data is empty")
        return {k: v / n for k, v in sums.items()}

    def reconstruct(self, images):
        """The model's reconstructions of images (N, C, H, W) as float32 NumPy, as evaluate() sees them
        (eval mode, no_grad, EMA weights; RNG and mode restored): model.reconstruct when it exists,
        else decode(encode(images)), else forward(images, step).recon."""
        if not self._images:
            raise TypeError(f"Trainer.reconstruct: {type(self.model).__name__} is not an image model")
        x = _as_images(images, "Trainer.reconstruct: images", self._image_ndims)
        model = self.model
        with self._eval_mode():
            if hasattr(model, "reconstruct"):
                r = model.reconstruct(x)
            elif hasattr(model, "encode") and hasattr(model, "decode"):
                r = model.decode(np.asarray(model.encode(x)))
            else:
                r = model(x, self.step).recon
        r = r.numpy() if isinstance(r, Tensor) else np.asarray(r)
        return np.asarray(r, np.float32)

    def save_samples(self, path, tensorboard=None):
        """Writes a PNG grid to `path`: the fixed sample images (top row) over their reconstructions
        (bottom row), each tile enlarged to at least 64 px; with a TensorBoardWriter, also as the image
        "samples" at the current step. Returns the path (None when no sample images are known yet)."""
        x = self._sample_images
        if x is None:
            return None
        grid = _sample_grid(x, self.reconstruct(x))
        import io

        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buf, format="PNG")
        png = buf.getvalue()
        path = os.fspath(path)
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(png)
        os.replace(tmp, path)
        if tensorboard is not None:
            tensorboard.add_image("samples", png, grid.shape[0], grid.shape[1], grid.shape[2], self.step)
        return path

    def apply_ema(self):
        """Writes the EMA weights into the model (for saving or using the averaged model after training);
        the live weights are lost, so call it when training is over. Needs config.ema_decay."""
        if self.ema is None:
            raise ValueError("Trainer.apply_ema: EMA is off (set TrainConfig.ema_decay)")
        self.ema.copy_to(self._ema_view)
        return self.model

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """Everything a resumed run needs (see the module docstring); tensors are references."""
        return {
            "format": _FORMAT,
            "step": self.step,
            "disc_steps": self.disc_steps,
            "elapsed": float(self.elapsed),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "disc_optimizer": None if self.disc_optimizer is None else self.disc_optimizer.state_dict(),
            "disc_scheduler": None if self.disc_scheduler is None else self.disc_scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "data": self.train_data.state_dict(),
            "rng": list(_C.get_rng_state()),
            "numpy_rng": list(np.random.get_state(legacy=True)),
            "history": self.history.state_dict(),
            "config": self.config.to_dict(),
            "model_config": _model_config(self.model),
        }

    def save_checkpoint(self, path):
        """Writes state_dict() to `path` with mmu.save (atomic: a temp file moved into place)."""
        path = os.fspath(path)
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        key = os.path.abspath(path)
        with _SAVING_LOCK:
            _SAVING.add(key)
        try:
            _save(self.state_dict(), path)
        finally:
            with _SAVING_LOCK:
                _SAVING.discard(key)
        self._saved_step = self.step
        return path

    def load_checkpoint(self, path, check_config=True):
        """Restores a checkpoint written by save_checkpoint into this trainer (its model, optimizers,
        schedulers, EMA, data loader, RNG, history and step). The schedule follows this trainer's
        config (the same config continues the run exactly).

        check_config: the checkpoint's recorded model config and TrainConfig must equal this trainer's,
        except for RESUMABLE_FIELDS (steps and the bookkeeping fields); otherwise ValueError names every
        field that differs, before anything is loaded. False skips the comparison."""
        ckpt = _load(os.fspath(path))
        if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
            raise ValueError(f"Trainer.load_checkpoint: {path} is not a trainer checkpoint (no format {_FORMAT!r})")
        if (ckpt["disc_optimizer"] is None) != (self.disc_optimizer is None):
            raise ValueError("Trainer.load_checkpoint: the checkpoint and this trainer disagree on whether there is "
                             "a discriminator")
        if (ckpt["ema"] is None) != (self.ema is None):
            raise ValueError(f"Trainer.load_checkpoint: the checkpoint has {'no ' if ckpt['ema'] is None else ''}EMA "
                             f"weights but config.ema_decay is {self.config.ema_decay}")
        if check_config:
            self._check_config(ckpt, path)
        # the loader first: its state is the one most likely not to fit (another batch size or loader
        # type), and it raises before anything of the model or the optimizers has been overwritten
        # (model.load_state_dict itself copies nothing unless every key fits)
        self.train_data.load_state_dict(ckpt["data"])
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self._apply_schedule(self.scheduler, self.config.lr)
        if self.disc_optimizer is not None:
            self.disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
            self.disc_scheduler.load_state_dict(ckpt["disc_scheduler"])
            c = self.config
            self._apply_schedule(self.disc_scheduler, c.lr if c.disc_lr is None else c.disc_lr)
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self._batches = None
        self.history.load_state_dict(ckpt["history"])
        self.step = int(ckpt["step"])
        self.disc_steps = int(ckpt["disc_steps"])
        self.elapsed = float(ckpt["elapsed"])
        np_state = ckpt.get("numpy_rng")
        if np_state is not None:
            np.random.set_state(tuple(np_state))
        _C.set_rng_state(*[int(v) for v in ckpt["rng"]])
        return self

    def _check_config(self, ckpt, path):
        diffs = []
        saved = ckpt.get("config")
        if isinstance(saved, dict):
            now = self.config.to_dict()
            keep = [k for k in set(saved) | set(now) if k not in RESUMABLE_FIELDS]
            diffs += _config_diff({k: saved[k] for k in keep if k in saved},
                                  {k: now[k] for k in keep if k in now}, "train.")
        saved_model, now_model = ckpt.get("model_config"), _model_config(self.model)
        if saved_model is not None and now_model is not None:
            diffs += _config_diff(saved_model, now_model, "model.")
        if diffs:
            raise ValueError(f"Trainer.load_checkpoint: {path} belongs to a run with another config "
                             f"({len(diffs)} field(s) differ): " + "; ".join(diffs)
                             + ". Resume with that run's config, or start a new run elsewhere")

    def _apply_schedule(self, sched, base_lr):
        # the config's schedule and hyperparameters win over the saved ones (identical when unchanged)
        c = self.config
        sched.warmup_steps, sched.total_steps = c.warmup_steps, c.steps
        sched.min_lr, sched.min_lr_ratio = 0.0, c.min_lr_ratio
        sched.base_lrs = [base_lr] * len(sched.optimizer.param_groups)
        lrs = sched.get_lr()
        for g, lr in zip(sched.optimizer.param_groups, lrs):
            g["initial_lr"], g["lr"] = base_lr, lr
            g["betas"], g["weight_decay"] = tuple(c.betas), c.weight_decay
        sched._last_lr = list(lrs)

    @staticmethod
    def checkpoints(ckpt_dir):
        """The checkpoint files of ckpt_dir, oldest step first."""
        found = []
        for p in glob.glob(os.path.join(glob.escape(os.fspath(ckpt_dir)), "ckpt_*.safetensors")):
            m = _CKPT_RE.match(os.path.basename(p))
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def _prune(self):
        # only this run's checkpoints (step <= the current step): a later-step file left in ckpt_dir by
        # another run would otherwise count as newest and get this run's checkpoints deleted
        ckpt_dir = os.fspath(self.config.ckpt_dir)
        files = [p for p in self.checkpoints(ckpt_dir)
                 if int(_CKPT_RE.match(os.path.basename(p)).group(1)) <= self.step]
        stale = []
        # temp files of checkpoint saves that never finished (a process killed inside mmu.save): only
        # mmu.save's own temp names of ckpt_N.safetensors, never one whose save is running in this process
        try:
            names = os.listdir(ckpt_dir)
        except OSError:
            names = []
        with _SAVING_LOCK:
            saving = set(_SAVING)
        for name in names:
            m = _CKPT_TMP_RE.match(name)
            if m and os.path.abspath(os.path.join(ckpt_dir, m.group(1))) not in saving:
                stale.append(os.path.join(ckpt_dir, name))
        for p in files[:-self.config.keep_last] + stale:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass

    @classmethod
    def resume(cls, ckpt_dir, model, train_data, config, eval_data=None, callbacks=None, check_config=True):
        """A Trainer continued from the latest checkpoint in ckpt_dir (or from ckpt_dir itself when it is
        a checkpoint file); fit() then goes on to config.steps exactly as the interrupted run would have.
        check_config: see load_checkpoint."""
        trainer = cls(model, train_data, config, eval_data, callbacks)
        found, path = None, os.fspath(ckpt_dir)
        if trainer.is_main_process:
            # data parallel: rank 0 chooses the checkpoint and every rank loads that one (a rank must not
            # pick a newer file rank 0 is writing, nor fail alone)
            if os.path.isdir(path):
                files = cls.checkpoints(path)
                found = files[-1] if files else \
                    f"Trainer.resume: no checkpoint (ckpt_*.safetensors) in {path}"
            elif os.path.isfile(path):
                found = path
            else:
                found = f"Trainer.resume: {path} is neither a checkpoint folder nor a checkpoint file"
        if trainer.distributed:
            from .. import distributed as dist
            found = dist.broadcast_object(found)
        if found.startswith("Trainer.resume: "):
            raise FileNotFoundError(found)
        trainer.load_checkpoint(found, check_config=check_config)
        return trainer

    def __repr__(self):
        return (f"Trainer(step {self.step}/{self.config.steps}, {type(self.model).__name__}, "
                f"discriminator={'yes' if self.disc_params else 'no'}, ema={self.config.ema_decay}, "
                f"grad_accum={self.config.grad_accum})")

