#!/usr/bin/env python
"""Peak memory of scaled_dot_product_attention forward + backward, mmu vs torch, each run in a
fresh subprocess (so neither framework's caches or the other's pages count).

    python benchmarks/attention_memory.py [--L 4096] [--B 1] [--H 8] [--D 64] [--threads 2]

The number is the peak RSS (VmHWM, reset through /proc/self/clear_refs just before the call,
inputs already made; ru_maxrss where /proc is missing) minus the RSS before the call: the memory
the op itself needed at its peak, outputs and gradients included. For reference: one (B, H, L, L) float32 attention matrix is
B·H·L²·4 bytes (512 MiB at B=1, H=8, L=4096)."""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
fw, B, H, L, D, mode, threads = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6], int(sys.argv[7])
rng = np.random.default_rng(0)
arrs = [rng.standard_normal((B, H, L, D), dtype=np.float32) for _ in range(4)]
mask = None
if mode == "mask":  # Show-o-like: causal text, a bidirectional image block, per-sample (B, 1, L, L)
    i = np.arange(L)
    m = i[None, :] <= i[:, None]
    m[L // 4: 3 * L // 4, L // 4: 3 * L // 4] = True
    mask = np.broadcast_to(m, (B, 1, L, L)).copy()
if fw == "mmu":
    import mmu, mmu.functional as F
    mmu.set_num_threads(threads)
    mk = lambda a, rg=False: mmu.tensor(a, requires_grad=rg)
else:
    import torch, torch.nn.functional as F
    torch.set_num_threads(threads)
    mk = lambda a, rg=False: torch.tensor(a, requires_grad=rg)
q, k, v = (mk(a, True) for a in arrs[:3])
g = mk(arrs[3])
m = None if mask is None else mk(mask)
del arrs, mask
def status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
try:  # reset the high-water mark so that making the inputs does not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, peak = status_kib("VmRSS"), lambda: status_kib("VmHWM")
except OSError:  # no /proc: ru_maxrss (an earlier, higher peak would hide the op's)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=(mode == "causal"))
out.backward(g)
print(json.dumps({"peak_mib": (peak() - before) / 1024.0}))
"""


def measure(fw, args, mode):
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", CHILD, fw, str(args.B), str(args.H), str(args.L), str(args.D), mode,
                        str(args.threads)], capture_output=True, text=True, env=env)
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr else f"exit {r.returncode}"
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"], None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=4096)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    att = args.B * args.H * args.L * args.L * 4 / 2 ** 20
    print(f"sdpa fwd+bwd peak RSS growth, B={args.B} H={args.H} L={args.L} D={args.D} "
          f"(one attention matrix = {att:.0f} MiB)")
    print(f"{'mask':<8} | {'mmu MiB':>9} | {'torch MiB':>9} | torch/mmu")
    for mode in ("none", "causal", "mask"):
        a, ea = measure("mmu", args, mode)
        b, eb = measure("torch", args, mode)
        ratio = f"{b / a:9.1f}" if a and b else "-"
        fa = f"{a:9.1f}" if a is not None else "ERR"
        fb = f"{b:9.1f}" if b is not None else "ERR"
        print(f"{mode:<8} | {fa:>9} | {fb:>9} | {ratio}")
        for e in (ea, eb):
            if e:
                print("   ", e)


if __name__ == "__main__":
    main()
