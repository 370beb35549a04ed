"""TrainConfig: the trainer's hyperparameters (a JSON-serialisable dataclass, validated on creation)."""
import dataclasses
import math
import numbers
import os
from dataclasses import dataclass

__all__ = ["TrainConfig", "RESUMABLE_FIELDS"]

# fields a resumed run may change: they decide what is logged, evaluated, saved and shown, and how long
# the run is, not the trajectory of its steps (Trainer.load_checkpoint compares all the others)
RESUMABLE_FIELDS = ("steps", "log_every", "eval_every", "ckpt_every", "ckpt_dir", "keep_last", "progress",
                    "max_loss", "sample_every", "sample_dir", "num_samples", "tensorboard_dir", "distributed")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass
class TrainConfig:
    """Hyperparameters of mmu.train.Trainer.

    steps: optimiser steps of the whole run (the cosine schedule ends there).
    batch_size: images per micro-batch when the trainer builds the DataLoader itself (a Dataset or an
        array was given); a DataLoader passed in keeps its own batch size.
    lr, betas, weight_decay: AdamW of the generator (betas (0.5, 0.9) and lr 2e-4 after
        taming-transformers' VQGAN; weight_decay 0 as taming's Adam).
    warmup_steps, min_lr_ratio: linear warmup from 0, then cosine decay to min_lr_ratio * lr at `steps`
        (mmu.optim.lr_scheduler.WarmupCosine).
    grad_clip: max global L2 norm of the gradients (clip_grad_norm_); None or 0 disables clipping.
    ema_decay: decay of an EMA of the generator weights (mmu.optim.EMA); None disables it. With EMA,
        evaluation runs on the EMA weights.
    disc_lr: the discriminator's AdamW lr (None: lr).
    grad_accum: micro-batches whose gradients are averaged into one optimiser step.
    log_every / eval_every / ckpt_every: record the History / evaluate on eval_data / write a
        checkpoint every that many steps (0: never; evaluation is skipped when the Trainer has no
        eval_data).
    ckpt_dir: folder of the checkpoints (needed when ckpt_every > 0); keep_last: how many checkpoints
        are kept there (older ones are deleted).
    seed: the trainer seeds mmu's RNG (mmu.manual_seed) with it when it is created.
    progress: show a tqdm progress bar with live loss / PSNR / codebook usage.
    max_loss: the divergence guard: a generator or discriminator loss above it (or any non-finite loss
        or gradient norm, always) stops the run with mmu.train.TrainingDiverged before that step's update.
        1e6 is far above what any mmu model's loss reaches while training normally (reconstruction
        terms are O(1) on [-1, 1] images, an adaptive GAN weight is clamped at 1e4); None turns the
        threshold off (non-finite values still stop the run).
    sample_every / sample_dir / num_samples: every sample_every steps (0: never) a PNG grid of
        num_samples fixed images (top row) and their reconstructions (bottom row) is written to
        sample_dir/step_<step>.png (also into TensorBoard when tensorboard_dir is set). The images are
        the first num_samples of eval_data, else of the training dataset, else of the first batch.
    tensorboard_dir: when set, every logged record (and evaluation) is also written there as TensorBoard
        scalars (tags train/<key> and eval/<key>), in TensorBoard's own event-file format (no extra
        dependency; `tensorboard --logdir DIR` reads it).
    distributed: data parallel over MPI (mmu.distributed; README "Distributed training"). None: on when
        the process runs under mpirun / srun with more than one rank; True: on (also in one process,
        where the gradient buckets run without traffic); False: off (each rank trains on its own).
        When on, every rank checks that it holds the same model as rank 0 and takes rank 0's weights,
        trains on its own shard of the data (batch_size is per rank: the global batch is
        world_size * batch_size * grad_accum), and the gradients are averaged over the ranks (one
        all-reduce per ~25 MB bucket, started during backward; none on the non-final micro-batches of
        grad_accum); only rank 0 writes checkpoints, samples, TensorBoard and shows the progress bar.

    When a run resumes from a checkpoint (Trainer.load_checkpoint), steps and the bookkeeping fields
    (RESUMABLE_FIELDS: logging, evaluation, checkpoint, sample and TensorBoard settings, progress,
    max_loss, distributed: the data loader's state refuses another world size) may differ from the
    checkpoint's config; every other field must be the same.
    """

    steps: int
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple = (0.5, 0.9)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: "float | None" = 1.0
    ema_decay: "float | None" = None
    disc_lr: "float | None" = None
    grad_accum: int = 1
    log_every: int = 10
    eval_every: int = 0
    ckpt_every: int = 0
    ckpt_dir: "str | None" = None
    seed: int = 0
    progress: bool = True
    keep_last: int = 3
    max_loss: "float | None" = 1e6
    sample_every: int = 0
    sample_dir: "str | None" = None
    num_samples: int = 8
    tensorboard_dir: "str | None" = None
    distributed: "bool | None" = None

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Checks every field; raises TypeError / ValueError naming the field and the value."""
        def bad(name, want, exc=ValueError):
            raise exc(f"TrainConfig: {name} must be {want}, got {getattr(self, name)!r}")

        def int_field(name, low):
            v = getattr(self, name)
            if not _is_int(v):
                bad(name, f"an int >= {low}", TypeError)
            if v < low:
                bad(name, f"an int >= {low}")

        def num_field(name, low, low_ok, high=None, optional=False):
            v = getattr(self, name)
            if v is None and optional:
                return
            want = f"a number {'>=' if low_ok else '>'} {low}" + (f" and <= {high}" if high is not None else "")
            if optional:
                want += " or None"
            if not _is_num(v):
                bad(name, want, TypeError)
            v = float(v)
            if math.isnan(v) or (v < low if low_ok else v <= low) or (high is not None and v > high) or math.isinf(v):
                bad(name, want)

        int_field("steps", 1)
        int_field("batch_size", 1)
        num_field("lr", 0.0, False)
        b = self.betas
        if not isinstance(b, (tuple, list)) or len(b) != 2 or not all(_is_num(x) for x in b):
            bad("betas", "a pair of numbers (beta1, beta2)", TypeError)
        if not all(0.0 <= float(x) < 1.0 for x in b):
            bad("betas", "a pair of numbers in [0, 1)")
        self.betas = (float(b[0]), float(b[1]))
        num_field("weight_decay", 0.0, True)
        int_field("warmup_steps", 0)
        if self.warmup_steps > self.steps:
            raise ValueError(f"TrainConfig: warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")
        num_field("min_lr_ratio", 0.0, True, 1.0)
        num_field("grad_clip", 0.0, True, optional=True)
        v = self.ema_decay
        if v is not None and (not _is_num(v) or not 0.0 < float(v) < 1.0):
            bad("ema_decay", "None or a number in (0, 1)", TypeError if not _is_num(v) else ValueError)
        num_field("disc_lr", 0.0, False, optional=True)
        int_field("grad_accum", 1)
        int_field("log_every", 0)
        int_field("eval_every", 0)
        int_field("ckpt_every", 0)
        int_field("keep_last", 1)
        if self.ckpt_dir is not None and not isinstance(self.ckpt_dir, (str, os.PathLike)):
            bad("ckpt_dir", "a path (str) or None", TypeError)
        if self.ckpt_every > 0 and self.ckpt_dir is None:
            raise ValueError(f"TrainConfig: ckpt_every={self.ckpt_every} needs a ckpt_dir to write the checkpoints to")
        num_field("max_loss", 0.0, False, optional=True)
        int_field("sample_every", 0)
        int_field("num_samples", 1)
        for name in ("sample_dir", "tensorboard_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, os.PathLike)):
                bad(name, "a path (str) or None", TypeError)
        if self.sample_every > 0 and self.sample_dir is None:
            raise ValueError(f"TrainConfig: sample_every={self.sample_every} needs a sample_dir to write the "
                             "sample grids to")
        if not _is_int(self.seed):
            bad("seed", "an int", TypeError)
        if not isinstance(self.progress, bool):
            bad("progress", "a bool", TypeError)
        if self.distributed is not None and not isinstance(self.distributed, bool):
            bad("distributed", "None, True or False", TypeError)
        return self

    def to_dict(self):
        """The fields as a JSON-friendly dict (betas as a list, paths as str)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        for name in ("ckpt_dir", "sample_dir", "tensorboard_dir"):
            if d[name] is not None:
                d[name] = os.fspath(d[name])
        return d

    @classmethod
    def from_dict(cls, d):
        """TrainConfig(**d), rejecting unknown keys with their names."""
        if not isinstance(d, dict):
            raise TypeError(f"TrainConfig.from_dict: expected a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig.from_dict: unknown fields {unknown} (known: {sorted(names)})")
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        return cls(**d)
