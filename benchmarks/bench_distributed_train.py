"""Data-parallel scaling of the VQGAN train step (issue 16): 1 rank against 2 ranks, one OpenMP thread
each, the same batch per rank (weak scaling: 2 ranks train on twice the images per step), and how much of
the gradient all-reduce hides behind backward.

    python benchmarks/bench_distributed_train.py [--steps N] [--batch B] [--size S]

spawns `mpirun -np 1` and `mpirun -np 2` of itself. Per run: seconds per step (median of the timed steps),
images per second over all ranks, and for 2 ranks the overlap: the all-reduce time that the step does not
wait for, 1 - wait / blocking, where `wait` is the time finish() blocks on the buckets after backward and
`blocking` the time of the same all-reduces issued one after the other with nothing to overlap (measured
in the same process right after). Prints the machine load beside the figures.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    sys.path.insert(0, REPO)
    import mmu
    from mmu import distributed as dist
    from mmu.distributed import data_parallel as dp
    from mmu.train import Trainer, TrainConfig
    dp._BUCKET_CAP_MB = args.bucket_mb
    dist.init()
    rank, world = dist.get_rank(), dist.get_world_size()
    mmu.manual_seed(0)
    model = mmu.tokenizers.VQGAN(ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[], resolution=args.size,
                                 z_channels=16, embed_dim=16, codebook_size=256, norm_groups=8,
                                 perceptual_weight=0.0, disc_start=0, disc_ndf=16, disc_layers=2, disc_norm="group")
    data = np.tanh(np.random.default_rng(0).standard_normal((256, 3, args.size, args.size))).astype(np.float32)
    tr = Trainer(model, data, TrainConfig(steps=args.steps + 2, batch_size=args.batch, progress=False,
                                          log_every=0, distributed=world > 1))
    times, waits = [], []
    for s in range(args.steps + 2):
        dist.barrier()
        t0 = time.perf_counter()
        tr.train_step()
        times.append(time.perf_counter() - t0)
        if tr._reducer is not None:
            waits.append(tr._reducer.last_wait + tr._disc_reducer.last_wait)
    times = times[2:]
    res = {"world": world, "step_s": float(np.median(times)), "params": sum(int(np.prod(p.shape)) for p in model.parameters())}
    if world > 1:
        # the same buckets, all-reduced one after the other with nothing else running
        blocking = []
        for _ in range(max(3, args.steps)):
            dist.barrier()
            t0 = time.perf_counter()
            for red in (tr._reducer, tr._disc_reducer):
                for b in red.buckets:
                    dist.all_reduce(b.buffer, op="avg")
            blocking.append(time.perf_counter() - t0)
        res["wait_s"] = float(np.median(waits[2:]))
        res["blocking_s"] = float(np.median(blocking))
        res["buckets"] = tr._reducer.num_buckets + tr._disc_reducer.num_buckets
    if rank == 0:
        print("RESULT", res, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--bucket-mb", type=float, default=25.0, help="gradient bucket size (DDP's default 25 MB)")
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    out = {}
    for n in (1, 2):
        cmd = [mpirun, "-np", str(n), "--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        cmd += [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(args.steps),
                "--batch", str(args.batch), "--size", str(args.size), "--bucket-mb", str(args.bucket_mb)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
        if p.returncode or not line:
            print(p.stdout[-2000:], p.stderr[-2000:])
            sys.exit(1)
        out[n] = eval(line[0][7:])   # our own dict literal
    load = os.getloadavg()
    one, two = out[1], out[2]
    print(f"VQGAN train step (generator + discriminator), {one['params']:,} parameters, {args.size} px, batch "
          f"{args.batch} per rank, 1 OpenMP thread per rank; load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("| ranks | s / step | images / s | speed-up |")
    print("|---|---|---|---|")
    for n in (1, 2):
        ips = n * args.batch / out[n]["step_s"]
        print(f"| {n} | {out[n]['step_s']:.3f} | {ips:.1f} | {ips / (args.batch / one['step_s']):.2f}x |")
    hidden = 1.0 - two["wait_s"] / two["blocking_s"] if two["blocking_s"] > 0 else float("nan")
    print(f"all-reduce ({two['buckets']} buckets of <= {args.bucket_mb:g} MB): blocking {1e3 * two['blocking_s']:.2f} ms, waited after backward "
          f"{1e3 * two['wait_s']:.2f} ms -> {100 * max(hidden, 0.0):.0f}% hidden behind backward")


def cases(h):
    """No cases for benchmarks/run.py: the measurement needs mpirun and a process per rank."""
    return []


if __name__ == "__main__":
    main()
