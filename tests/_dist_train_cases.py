"""The models, data and configs of tests/test_distributed_train.py, and its MPI worker.

`mpirun -np 2 python tests/_dist_train_cases.py OUT` runs every case data parallel (batch B per rank)
and writes OUT/<case>_rank<r>.npz (the final state_dict of each rank); the test compares them with one
process trained on batches of 2B (make_reference), each the concatenation of the two ranks' batches.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mmu  # noqa: E402
from mmu.train import Trainer, TrainConfig  # noqa: E402
from mmu.train.batches import ArrayLoader  # noqa: E402

B = 4            # batch per rank
STEPS = int(os.environ.get("MMU_DIST_TEST_STEPS", 20))
CASES = tuple(os.environ.get("MMU_DIST_TEST_CASES", "vqvae,vqgan,lm,accum").split(","))


def images(n=32, c=1, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((n, c, size, size))).astype(np.float32)


def tokens(n=32, length=9, vocab=32, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=(n, length)).astype(np.int64)


def model(case):
    mmu.manual_seed(0)
    if case in ("vqvae", "accum", "resume"):
        # EMA VQ with k-means init and dead-code restarts (threshold 1: codes restart within the run)
        return mmu.tokenizers.VQVAE(in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=1, downsample=2,
                                    embed_dim=4, codebook_size=16, quantizer="ema_vq", resolution=8)
    if case == "vqgan":
        m = mmu.tokenizers.VQGAN(ch=4, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], resolution=16,
                                    in_channels=3, z_channels=4, embed_dim=4, codebook_size=8, norm_groups=2,
                                    perceptual_weight=0.0, disc_start=0, disc_ndf=4, disc_layers=2, disc_norm="group")
        # a key bias has no effect on attention (softmax is shift invariant): its gradient is rounding noise,
        # which AdamW turns into +-lr steps that differ between any two summation orders; frozen here
        for name, p in m.named_parameters():
            if name.endswith("attn_1.k.bias"):
                p.requires_grad_(False)
        return m
    if case == "lm":
        from mmu.models.gpt import GPT, GPTConfig
        return GPT(GPTConfig(vocab_size=32, dim=16, num_layers=2, num_heads=2, max_seq_len=16, bias=False))
    raise ValueError(case)


def data(case):
    if case == "vqgan":
        return images(c=3, size=16)
    if case == "lm":
        return tokens()
    return images()


def config(case, **kw):
    # the VQGAN's GAN game amplifies float rounding: at lr 3e-3 one process fed the same batches with the
    # images in reverse order (another summation order) parts from itself by 3% in 20 steps; at 3e-4 by 5e-6
    c = dict(steps=STEPS, batch_size=B, lr=3e-4 if case == "vqgan" else 3e-3, log_every=5, progress=False, seed=0,
             grad_accum=2 if case == "accum" else 1)
    c.update(kw)
    return TrainConfig(**c)


def loader(case, rank=None, world=None):
    d = data(case)
    if case == "lm":
        ld = ArrayLoader(d, B, shuffle=True, seed=0)
        return ld.set_shard(rank, world) if rank is not None else ld
    return mmu.data.DataLoader(d, B, shuffle=True, seed=0, rank=rank, world_size=world)


class ConcatShards:
    """One process's loader of the 2-rank run's global batches: rank 0's batch then rank 1's."""

    def __init__(self, case):
        self.parts = [loader(case, r, 2) for r in range(2)]

    def batches(self):
        its = [p.batches() for p in self.parts]
        while True:
            yield np.concatenate([next(i) for i in its])

    def state_dict(self):
        return self.parts[0].state_dict()

    def load_state_dict(self, state):
        for p in self.parts:
            p.load_state_dict(state)


def make_reference(case):
    """The state_dict (name -> ndarray) of one process trained on the global batches, with distributed
    off."""
    m = model(case)
    tr = Trainer(m, ConcatShards(case), config(case, distributed=False))
    tr.fit()
    return {k: v.numpy().copy() for k, v in m.state_dict().items()}


def _save(m, path):
    np.savez(path, **{k: v.numpy() for k, v in m.state_dict().items()})


def worker(out):
    from mmu import distributed as dist
    dist.init()
    rank = dist.get_rank()
    for case in CASES:
        m = model(case)
        tr = Trainer(m, loader(case), config(case))
        assert tr.distributed and tr.world_size == 2
        tr.fit()
        _save(m, os.path.join(out, f"{case}_rank{rank}.npz"))
    # resume: 10 steps with a checkpoint, then fresh trainers on every rank continue to STEPS
    ck = os.path.join(out, "ckpt")
    m = model("resume")
    Trainer(m, loader("resume"), config("resume", ckpt_every=10, ckpt_dir=ck)).fit(10)
    dist.barrier()
    m = model("resume")
    mmu.manual_seed(123)   # the checkpoint restores everything
    tr = Trainer.resume(ck, m, loader("resume"), config("resume", ckpt_every=10, ckpt_dir=ck))
    assert tr.step == 10
    tr.fit()
    _save(m, os.path.join(out, f"resume_rank{rank}.npz"))
    # a model of another shape on rank 1: every rank raises at start, naming the parameter and the rank
    m = model("vqvae") if rank == 0 else mmu.tokenizers.VQVAE(
        in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=1, downsample=2, embed_dim=4,
        codebook_size=32, quantizer="ema_vq", resolution=8)
    try:
        Trainer(m, loader("vqvae"), config("vqvae"))
        msg = "no error"
    except ValueError as e:
        msg = str(e)
    with open(os.path.join(out, f"mismatch_rank{rank}.txt"), "w") as f:
        f.write(msg)


if __name__ == "__main__":
    worker(sys.argv[1])
