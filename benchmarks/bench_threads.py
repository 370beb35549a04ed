"""Threads: GNU OpenMP's wait policy / spin count and mmu's thread count, on a quiet machine and on
one where another process holds a core (the README's "Threads" section comes from this).

    python benchmarks/bench_threads.py                 # every policy, 1 and 2 threads, quiet + loaded
    python benchmarks/bench_threads.py --steps 20 --policies default,spin10k

Each (policy, threads, load) runs in a fresh process, since libgomp reads OMP_WAIT_POLICY and
GOMP_SPINCOUNT once, when it is loaded. "loaded" starts one busy process (`while 1: pass`, in a
session of its own) for the measurement and ends it after. Two workloads:
  - the VQ-VAE train step of `mmu compare` on digits (1 x 16 x 16, batch 32; forward, backward,
    clip_grad_norm_, AdamW): many small ops, so many short parallel regions and barriers;
  - matmul 1024^3 (oneDNN): one big op, where a second core pays off.
Printed: the median milliseconds of each. On a shared machine, run it at the top priority of
Linux's autogroup scheduler so that other users' work does not count as load (as root:
`setsid bash -c 'echo -20 > /proc/self/autogroup; exec nice -n -20 python benchmarks/bench_threads.py'`;
the busy process takes the same priority); the README's table was measured so. Why it matters: at the end of a parallel region libgomp's
threads spin (busy-wait) for GOMP_SPINCOUNT iterations before sleeping. When another process holds
one of two cores, a spinning mmu thread and the mmu thread that still has work share the other core,
and every barrier can cost a scheduler time slice (milliseconds) instead of microseconds.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# env for each policy; "default" spells out libgomp's own default (300,000 spins when
# OMP_WAIT_POLICY is unset) so that mmu's default does not apply
POLICIES = {
    "default": {"GOMP_SPINCOUNT": "300000"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "spin3k": {"GOMP_SPINCOUNT": "3000"},
    "spin1k": {"GOMP_SPINCOUNT": "1000"},
    "passive": {"OMP_WAIT_POLICY": "passive"},
    "mmu": {},  # whatever `import mmu` sets by default
}
POLICY_LABEL = {
    "default": "libgomp default (GOMP_SPINCOUNT=300000)",
    "spin10k": "GOMP_SPINCOUNT=10000",
    "spin3k": "GOMP_SPINCOUNT=3000",
    "spin1k": "GOMP_SPINCOUNT=1000",
    "passive": "OMP_WAIT_POLICY=passive",
    "mmu": "mmu's default: import mmu sets GOMP_SPINCOUNT=1000",
}


# The load: another program (its own session, so under Linux's autogroup scheduling it competes
# as a separate group, like a job started from another terminal) that keeps one core busy. It takes
# this benchmark's autogroup priority where it may, so that running the benchmark itself at a higher
# priority (to shield it from unrelated load) does not starve the load it is meant to measure.
BUSY = """
import os
try:
    nice = open(f"/proc/{os.getppid()}/autogroup").read().split()[-1]
    with open("/proc/self/autogroup", "w") as f:
        f.write(nice)
except (OSError, IndexError):
    pass
while 1:
    pass
"""


def _median_ms(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def worker(threads, steps):
    """Runs in the child process: prints {"vqvae_ms": .., "matmul_ms": .., "env": ..} as JSON."""
    import numpy as np

    sys.path.insert(0, HERE)
    if glob.glob(os.path.join(os.path.dirname(HERE), "mmu", "_C*.so")):
        sys.path.insert(0, os.path.dirname(HERE))  # a checkout built in place: measure its mmu
    import mmu
    from bench_tokenizers import mmu_optimizers, mmu_train_step

    mmu.set_num_threads(threads)
    mmu.manual_seed(0)
    # mmu compare's VQ-VAE on digits (compare._conv_fields, not --fast)
    model = mmu.tokenizers.VQVAE(in_channels=1, hidden_channels=64, res_channels=32, num_res_blocks=1,
                                 downsample=4, embed_dim=32, codebook_size=256, resolution=16, quantizer="vq")
    model.train()
    opt, dopt = mmu_optimizers(model)
    x = mmu.tensor(np.tanh(np.random.default_rng(0).standard_normal((32, 1, 16, 16))).astype(np.float32))
    step = {"i": 0}

    def train_step():
        step["i"] += 1
        mmu_train_step(model, opt, x, step["i"], dopt)

    a = mmu.tensor(np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32))
    b = mmu.tensor(np.random.default_rng(2).standard_normal((1024, 1024)).astype(np.float32))
    out = {"vqvae_ms": _median_ms(train_step, steps, 5),
           "matmul_ms": _median_ms(lambda: mmu.matmul(a, b), steps, 3),
           "threads": mmu.get_num_threads(), "mmu": mmu.__file__,
           "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}
    print(json.dumps(out))


def cases(h):
    """No cases for benchmarks/run.py: each measurement here needs its own process (libgomp reads
    its settings once, when loaded) and the loaded runs a busy process beside it."""
    return []


def run_one(policy, threads, steps):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(POLICIES[policy])
    r = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--steps", str(steps)],
                       env=env, capture_output=True, text=True, cwd=os.path.dirname(HERE), timeout=900)
    if r.returncode:
        raise RuntimeError(f"bench_threads worker failed ({policy}, {threads} threads):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated: " + ", ".join(POLICIES))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--loads", default="quiet,loaded", help="quiet, loaded or both")
    ap.add_argument("--steps", type=int, default=30, help="timed calls per workload (median)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.steps)

    policies = [p for p in args.policies.split(",") if p]
    for p in policies:
        if p not in POLICIES:
            ap.error(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f} before the runs")
    print(f"{'load':7s} {'policy':52s} {'threads':>7s} {'VQ-VAE step ms':>15s} {'matmul 1024^3 ms':>17s}")
    for load in args.loads.split(","):
        busy = None
        if load == "loaded":
            busy = subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)
        try:
            for p in policies:
                for t in threads:
                    r = run_one(p, t, args.steps)
                    print(f"{load:7s} {POLICY_LABEL[p]:52s} {t:7d} {r['vqvae_ms']:15.2f} {r['matmul_ms']:17.2f}",
                          flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()


if __name__ == "__main__":
    main()
