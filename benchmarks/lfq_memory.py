#!/usr/bin/env python
"""Peak memory of LFQ forward + backward with the entropy loss (d bits, 2^d codes), mmu vs torch, each
in a fresh subprocess (so neither framework's caches or the other's pages count).

    python benchmarks/lfq_memory.py [--d 18] [--N 1024] [--mmu-N 16384] [--threads 2]

torch runs what vector-quantize-pytorch's LFQ does: logits against all 2^d codes, softmax, per-sample
and batch-mean entropies (materialising (N, 2^d) floats several times); mmu.quantizers.LFQ streams the
exact entropy through one 2^d accumulator. The number is the peak RSS (VmHWM, reset through
/proc/self/clear_refs just before the call, inputs already made) minus the RSS before the call.
One (N, 2^d) float32 matrix is N·2^d·4 bytes (1 GiB at N=1024, d=18)."""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
fw, N, d, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
xa = rng.standard_normal((1, N, d), dtype=np.float32) * 0.05
ga = rng.standard_normal((1, N, d), dtype=np.float32)
if fw == "mmu":
    import mmu
    from mmu.quantizers import LFQ
    mmu.set_num_threads(threads)
    q = LFQ(dim=d)
    x, g = mmu.tensor(xa, requires_grad=True), mmu.tensor(ga)
    def run():
        out, idx, loss = q(x)
        ((out * g).sum() + loss).backward()
else:
    import torch
    torch.set_num_threads(threads)
    x, g = torch.tensor(xa, requires_grad=True), torch.tensor(ga)
    mask = 2 ** torch.arange(d - 1, -1, -1)
    codebook = ((torch.arange(2 ** d)[..., None].int() & mask) != 0).float() * 2.0 - 1.0
    def ent(p):
        return (-p * p.clamp(min=1e-5).log()).sum(-1)
    def run():
        qv = torch.where(x > 0, 1.0, -1.0)
        quantized = x + (qv - x).detach()
        prob = (2 * torch.einsum("bnd,cd->bnc", x, codebook) * 100.0).softmax(-1)
        aux = ent(prob).mean() - ent(prob.reshape(-1, prob.shape[-1]).mean(0))
        loss = aux * 0.1 + torch.nn.functional.mse_loss(x, qv.detach()) * 0.25
        ((quantized * g).sum() + loss).backward()
def status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, peak = status_kib("VmRSS"), lambda: status_kib("VmHWM")
except OSError:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run()
print(json.dumps({"peak_mib": (peak() - before) / 1024.0}))
"""


def measure(fw, N, d, threads):
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", CHILD, fw, str(N), str(d), str(threads)], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr else f"exit {r.returncode}"
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"], None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=18)
    ap.add_argument("--N", type=int, default=1024, help="rows for both frameworks")
    ap.add_argument("--mmu-N", type=int, default=16384, help="rows for the extra mmu-only run")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    mat = args.N * 2 ** args.d * 4 / 2 ** 20
    print(f"LFQ fwd+bwd (entropy + commitment) peak RSS growth, d={args.d} ({2 ** args.d} codes), "
          f"one (N, 2^d) matrix at N={args.N} = {mat:.0f} MiB")
    print(f"{'N':>6} | {'mmu MiB':>9} | {'torch MiB':>9} | torch/mmu")
    a, ea = measure("mmu", args.N, args.d, args.threads)
    b, eb = measure("torch", args.N, args.d, args.threads)
    ratio = f"{b / a:9.1f}" if a and b else "-"
    fa = f"{a:9.1f}" if a is not None else "ERR"
    fb = f"{b:9.1f}" if b is not None else "ERR"
    print(f"{args.N:>6} | {fa:>9} | {fb:>9} | {ratio}")
    if args.mmu_N and args.mmu_N != args.N:
        c, ec = measure("mmu", args.mmu_N, args.d, args.threads)
        print(f"{args.mmu_N:>6} | {c if c is None else f'{c:9.1f}':>9} | {'-':>9} | (torch would need "
              f"{args.mmu_N / args.N * b / 1024 if b else float('nan'):.0f} GiB at the same rate)")
        ea = ea or ec
    for e in (ea, eb):
        if e:
            print("error:", e)


if __name__ == "__main__":
    main()
