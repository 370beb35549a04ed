"""Window and temporal attention: mmu's window_attention / temporal_attention against torch.

Three ways to get the same numbers (OmniTokenizer's spatial window blocks and causal temporal blocks):
  mmu         F.window_attention / F.temporal_attention: each window / location read in place.
  torch-mask  torch SDPA over all N tokens with the equivalent materialised (N, N) boolean mask
              (the generic way: what issue 15 measures against, aim >= 3x).
  torch-part  torch's own partition: Swin's window_partition (view + permute + contiguous) and SDPA on
              (B·nW, H, n, d), then window_reverse; for temporal, permute to (B, H, L, T, d), SDPA
              with is_causal, permute back. The fair fast baseline: it does the same work as mmu.
Forward (no grad) and forward + backward (grads of q, k, v; and of the bias where one is given).

    PYTHONPATH=. python benchmarks/bench_window_attention.py [--threads 1,2] [--repeat 7] [--quick]

The frameworks run in turns inside one process (each sample of each variant in a round-robin), the
median of the repeats is reported, and ratios are torch time / mmu time. The load average is printed
with each table: on a shared machine the absolute times move, the ratios much less.
`cases(h)` also gives benchmarks/run.py its usual mmu-vs-torch-mask rows.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

# (name, B, H, grid, window, d, with bias)
WINDOW_SIZES = [
    ("win g16 w8 H8 d32", 2, 8, (16, 16), (8, 8), 32, False),
    ("win g16 w8 H8 d32 +bias", 2, 8, (16, 16), (8, 8), 32, True),
    ("win g32 w8 H4 d64", 1, 4, (32, 32), (8, 8), 64, False),
    ("win g32 w8 H8 d32 +bias", 1, 8, (32, 32), (8, 8), 32, True),
]
# (name, B, H, T, L, d, causal)
TEMPORAL_SIZES = [
    ("tmp T5 L256 H8 d32", 2, 8, 5, 256, 32, True),
    ("tmp T9 L64 H8 d64", 2, 8, 9, 64, 64, True),
    ("tmp T17 L256 H4 d64", 1, 4, 17, 256, 64, True),
    ("tmp T9 L64 H8 d64 full", 2, 8, 9, 64, 64, False),
]


def window_mask(grid, window):
    (gh, gw), (wh, ww) = grid, window
    y, x = np.divmod(np.arange(gh * gw), gw)
    wid = (y // wh) * (gw // ww) + x // ww
    return wid[:, None] == wid[None, :]


def window_positions(grid, window):
    """in-window position (row-major) of every grid token: the dense bias is bias[:, pos_i, pos_j]"""
    y, x = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    return (y % window[0]) * window[1] + x % window[1]


def temporal_mask(T, L, causal):
    t, loc = np.divmod(np.arange(T * L), L)
    m = loc[:, None] == loc[None, :]
    return m & (t[None, :] <= t[:, None]) if causal else m


# ---------------------------------------------------------------- the three variants

def make_window(fw, torch, mmu, B, H, grid, window, d, with_bias, backward, rng):
    """fw in ("mmu", "torch-mask", "torch-part") -> a zero-argument callable doing the work once"""
    N, n = grid[0] * grid[1], window[0] * window[1]
    arrays = [rng.standard_normal((B, H, N, d), dtype=np.float32) for _ in range(4)]
    bias_np = rng.standard_normal((H, n, n), dtype=np.float32) if with_bias else None
    if fw == "mmu":
        q, k, v = (mmu.tensor(a, requires_grad=backward) for a in arrays[:3])
        g = mmu.tensor(arrays[3])
        bias = None if bias_np is None else mmu.tensor(bias_np, requires_grad=backward)
        fwd = lambda: mmu.functional.window_attention(q, k, v, grid, window, bias=bias)  # noqa: E731
        leaves, ctx = [q, k, v] + ([bias] if bias is not None else []), mmu.no_grad
    else:
        F = torch.nn.functional
        q, k, v = (torch.tensor(a, requires_grad=backward) for a in arrays[:3])
        g = torch.tensor(arrays[3])
        bias = None if bias_np is None else torch.tensor(bias_np, requires_grad=backward)
        leaves, ctx = [q, k, v] + ([bias] if bias is not None else []), torch.no_grad
        if fw == "torch-mask":
            keep = torch.tensor(window_mask(grid, window))
            pos = torch.tensor(window_positions(grid, window))

            def fwd():
                if bias is None:
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
                dense = bias[:, pos[:, None], pos[None, :]].masked_fill(~keep, float("-inf"))
                return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        else:
            (gh, gw), (wh, ww) = grid, window
            nh, nw = gh // wh, gw // ww

            def part(x):  # (B, H, N, d) -> (B·nW, H, n, d): window_partition of each head
                return (x.view(B, H, nh, wh, nw, ww, d).permute(0, 2, 4, 1, 3, 5, 6).contiguous()
                        .view(B * nh * nw, H, n, d))

            def fwd():
                o = F.scaled_dot_product_attention(part(q), part(k), part(v), attn_mask=bias)
                return o.view(B, nh, nw, H, wh, ww, d).permute(0, 3, 1, 4, 2, 5, 6).reshape(B, H, N, d)
    return _step(fwd, leaves, g, backward, ctx)


def make_temporal(fw, torch, mmu, B, H, T, L, d, causal, backward, rng):
    N = T * L
    arrays = [rng.standard_normal((B, H, N, d), dtype=np.float32) for _ in range(4)]
    if fw == "mmu":
        q, k, v = (mmu.tensor(a, requires_grad=backward) for a in arrays[:3])
        g = mmu.tensor(arrays[3])
        fwd = lambda: mmu.functional.temporal_attention(q, k, v, T, causal=causal)  # noqa: E731
        return _step(fwd, [q, k, v], g, backward, mmu.no_grad)
    F = torch.nn.functional
    q, k, v = (torch.tensor(a, requires_grad=backward) for a in arrays[:3])
    g = torch.tensor(arrays[3])
    if fw == "torch-mask":
        keep = torch.tensor(temporal_mask(T, L, causal))
        fwd = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # noqa: E731
    else:
        def seq(x):  # (B, H, T·L, d) -> (B, H, L, T, d)
            return x.view(B, H, T, L, d).transpose(2, 3)

        def fwd():
            o = F.scaled_dot_product_attention(seq(q), seq(k), seq(v), is_causal=causal)
            return o.transpose(2, 3).reshape(B, H, N, d)
    return _step(fwd, [q, k, v], g, backward, torch.no_grad)


def _step(fwd, leaves, g, backward, no_grad):
    if not backward:
        def step():
            with no_grad():
                fwd()
        return step

    def step():
        for t in leaves:
            t.grad = None
        fwd().backward(g)
    return step


# ---------------------------------------------------------------- timing

def _sample(fn, min_s=0.05):
    """(wall seconds, CPU seconds of this process) per call, over calls lasting >= min_s"""
    t0, c0, calls = time.perf_counter(), time.process_time(), 0
    while True:
        fn()
        calls += 1
        el = time.perf_counter() - t0
        if el >= min_s:
            return el / calls, (time.process_time() - c0) / calls


def compare(fns, repeat):
    """{name: (median wall seconds, median CPU seconds)}: every variant warmed up, then `repeat` rounds,
    each timing one sample of every variant in turn (so a burst of load hits all of them alike)."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(_sample(fn))
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}


def load():
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="the first size of each kind only")
    args = ap.parse_args(argv)
    import torch

    import mmu
    print(f"mmu {mmu.__file__}\ntorch {torch.__version__}")
    variants = ("mmu", "torch-mask", "torch-part")
    wsizes, tsizes = (WINDOW_SIZES[:1], TEMPORAL_SIZES[:1]) if args.quick else (WINDOW_SIZES, TEMPORAL_SIZES)
    for threads in (int(t) for t in args.threads.split(",")):
        mmu.set_num_threads(threads)
        torch.set_num_threads(threads)
        print(f"\nthreads {threads}   (ms per call: median of {args.repeat}; x = torch / mmu)")
        cpu_note = "cpu: CPU time of the process, the work itself whatever the load" if threads == 1 else ""
        print(f"{'case':<26}{'pass':<9}{'mmu':>8}{'t-mask':>9}{'t-part':>8}{'x mask':>8}{'x part':>8}"
              + (f"{'cpu mmu':>9}{'x mask':>8}{'x part':>8}" if threads == 1 else "") + f"   load 1/5/15  {cpu_note}")
        for kind, sizes in (("window", wsizes), ("temporal", tsizes)):
            for size in sizes:
                for backward in (False, True):
                    rng = np.random.default_rng(0)
                    if kind == "window":
                        name, B, H, grid, window, d, wb = size
                        fns = {fw: make_window(fw, torch, mmu, B, H, grid, window, d, wb, backward, rng)
                               for fw in variants}
                    else:
                        name, B, H, T, L, d, causal = size
                        fns = {fw: make_temporal(fw, torch, mmu, B, H, T, L, d, causal, backward, rng)
                               for fw in variants}
                    t = compare(fns, args.repeat)
                    (m, mc), (tm, tmc), (tp, tpc) = t["mmu"], t["torch-mask"], t["torch-part"]
                    row = (f"{name:<26}{'fwd+bwd' if backward else 'fwd':<9}{m * 1e3:>8.2f}{tm * 1e3:>9.2f}"
                           f"{tp * 1e3:>8.2f}{tm / m:>8.1f}{tp / m:>8.2f}")
                    if threads == 1:
                        row += f"{mc * 1e3:>9.2f}{tmc / mc:>8.1f}{tpc / mc:>8.2f}"
                    print(row + f"   {load()}", flush=True)
    return 0


# ---------------------------------------------------------------- benchmarks/run.py

def cases(h):
    """run.py rows: mmu against torch SDPA with the materialised mask, forward + backward."""
    def setup_window(size):
        def setup(fw, d):
            _, B, H, grid, window, dd, wb = size
            import mmu
            import torch
            return make_window("mmu" if fw.name == "mmu" else "torch-mask", torch if fw.name != "mmu" else None,
                               mmu if fw.name == "mmu" else None, B, H, grid, window, dd, wb, True,
                               np.random.default_rng(0))
        return setup

    def setup_temporal(size):
        def setup(fw, d):
            _, B, H, T, L, dd, causal = size
            import mmu
            import torch
            return make_temporal("mmu" if fw.name == "mmu" else "torch-mask", torch if fw.name != "mmu" else None,
                                 mmu if fw.name == "mmu" else None, B, H, T, L, dd, causal, True,
                                 np.random.default_rng(0))
        return setup

    out = []
    for size in (WINDOW_SIZES[0], WINDOW_SIZES[2]):
        out.append(h.Case(f"window_attention_{size[0].replace(' ', '_')}_fwd_bwd", None, lambda rng: {},
                          setup_window(size), setup_window(size)))
    for size in (TEMPORAL_SIZES[0], TEMPORAL_SIZES[2]):
        out.append(h.Case(f"temporal_attention_{size[0].replace(' ', '_')}_fwd_bwd", None, lambda rng: {},
                          setup_temporal(size), setup_temporal(size)))
    return out


if __name__ == "__main__":
    sys.exit(main())
