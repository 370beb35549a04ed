#!/usr/bin/env python
"""Time mmu against PyTorch on the same work, in one process, with the same thread count.

    python benchmarks/run.py [--filter NAME[,NAME]] [--repeat N] [--warmup N] [--threads N]
                             [--no-torch] [--json PATH] [--peak-gflops X]

If mmu cannot be imported, the torch column is timed alone (handy while mmu does not build).

Adding a case: append a Case to CASES at the bottom, or, for an op family, write
benchmarks/bench_<family>.py with a function `cases(h)` returning a list of Cases (h is this
module: h.Case, h.randn, h.fwd_bwd); every bench_*.py is collected. A case is a name, a FLOP count (or None),
a function making its inputs as NumPy arrays from a seeded generator, and one setup function
per framework. Both setups receive the SAME inputs; each returns a zero-argument callable that
does the work once. Everything a setup does is untimed. Most cases can use one setup for both
frameworks, because mmu copies torch's names: `fw.tensor`, `fw.F` and `fw.mod` hide the rest.
"""
import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

# An installed mmu takes precedence; otherwise fall back to the checkout this file lives in.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(REPO)


@dataclass
class Framework:
    name: str  # "mmu" or "torch": also the name of the Case field holding its setup
    mod: Any  # the mmu or torch module
    F: Any  # mmu.functional or torch.nn.functional
    version: str

    def tensor(self, array, requires_grad=False):
        # mmu.tensor and torch.tensor both copy, so neither side can see the other's writes.
        return self.mod.tensor(array, requires_grad=requires_grad)


@dataclass
class Case:
    name: str
    flops: Optional[float]  # per call of the callable; None where a FLOP count means little
    inputs: Callable[[np.random.Generator], dict]  # -> NumPy arrays shared by both frameworks
    mmu: Callable[[Framework, dict], Callable[[], Any]]
    torch: Callable[[Framework, dict], Callable[[], Any]]
    report_peak: bool = False  # also print the fraction of the CPU's fp32 peak


# ---------------------------------------------------------------- machine and peak

def cpu_info():
    """Model, vendor, family, flags and clock of the first CPU in /proc/cpuinfo, and the
    number of physical cores (distinct (physical id, core id) pairs)."""
    info = {"model": platform.processor() or "unknown", "vendor": "", "family": None,
            "mhz": None, "flags": set(), "cores": os.cpu_count() or 1}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    cores, seen, phys = set(), set(), "0"
    for line in text.splitlines():
        key, _, val = (s.strip() for s in line.partition(":"))
        if key == "physical id":
            phys = val
        elif key == "core id":
            cores.add((phys, val))
        if key in seen:
            continue  # keep the first processor's values
        seen.add(key)
        if key == "model name":
            info["model"] = val
        elif key == "vendor_id":
            info["vendor"] = val
        elif key == "cpu family":
            info["family"] = int(val)
        elif key == "cpu MHz":
            info["mhz"] = float(val)
        elif key == "flags":
            info["flags"] = set(val.split())
    info["cores"] = len(cores) or info["cores"]
    return info


def estimate_peak_gflops(cpu, threads):
    """fp32 peak = cores used x clock x FLOP per cycle per core; returns (GFLOP/s or None, how).

    FLOP/cycle, for the AMD CPUs with AVX-512 known here (CPUID family; family 25 without AVX-512
    is Zen 3): Zen 5 (family 0x1A = 26) has two FMA pipes a full 512 bits wide, each finishing one
    16-lane fp32 FMA (32 FLOP) per cycle: 64 FLOP/cycle/core. Zen 4 (family 0x19 = 25 with
    AVX-512) runs a 512-bit op as two 256-bit halves on its two 256-bit FMA pipes: 32 FLOP/cycle,
    the same as with AVX2.
    Clock: 'cpu MHz' from /proc/cpuinfo. Under a hypervisor that is the nominal TSC rate, not
    the boost clock the cores really run at, so the fraction of peak comes out too high. The
    project's 2-core KVM machine ('cpu MHz' 2596) has run on both: on a Zen 5 host independent
    AVX-512 FMAs reached ~230 GFLOP/s per core (64 FLOP/cycle at ~3.6 GHz), on a Zen 4 host
    (family 25, model 17) ~113 GFLOP/s per core (32 FLOP/cycle; 512-bit and 256-bit FMAs measured
    the same FLOP rate). Use --peak-gflops X for a number you trust, or the measured default.
    """
    flop_per_cycle = {26: (64, "Zen 5: 2 FMA pipes x 16 fp32 lanes x 2"),
                      25: (32, "Zen 4: 2 FMA pipes x 8 fp32 lanes x 2; AVX-512 as two 256-bit halves")}
    known = flop_per_cycle.get(cpu["family"]) if cpu["vendor"] == "AuthenticAMD" else None
    if known and "avx512f" in cpu["flags"] and cpu["mhz"]:
        flop, how = known
        cores, ghz = min(threads, cpu["cores"]), cpu["mhz"] / 1000
        caveat = ("; a VM reports its nominal clock, the real one may be higher"
                  if "hypervisor" in cpu["flags"] else "")
        return cores * ghz * flop, (f"{cores} cores x {ghz:.2f} GHz (/proc/cpuinfo) x {flop} FLOP/cycle "
                                    f"({how}){caveat}")
    return None, "unknown for this CPU; pass --peak-gflops"


# ---------------------------------------------------------------- timing

# Pause before each timed sample when two frameworks take turns. Each has its own OpenMP pool
# (torch ships its own libgomp; mmu links the system's), and an idle GNU OpenMP worker keeps
# spinning for ~10 ms after a parallel region (measured here): without the pause it would eat
# a core during the other framework's sample. (OMP_WAIT_POLICY=active would make it spin
# forever: don't set it for this benchmark.)
SWITCH_PAUSE_S = 0.05


def warm_up(fn, warmup, min_warmup_s=0.25, min_sample_s=0.05):
    """Call fn at least `warmup` times and for at least min_warmup_s (the first calls build
    kernels, caches and allocator pools, and wake the cores up). Returns how many calls one
    timed sample should loop over: calls too short for the timer to resolve well are repeated
    within a sample, as timeit does, so that each sample lasts >= min_sample_s."""
    t0, calls = time.perf_counter(), 0
    while calls < warmup or time.perf_counter() - t0 < min_warmup_s:
        fn()
        calls += 1
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, math.ceil(min_sample_s / once)) if once > 0 else 1000


def time_sample(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def cpu_seconds():
    """(busy CPU seconds of the whole machine including steal, CPU seconds of this process), or
    None off Linux. Their difference over a run is the load that other processes (or the
    hypervisor) put on the machine meanwhile."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(t) for t in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def load_frameworks(no_torch):
    fws = []
    try:
        import mmu
        import mmu.functional
        fws.append(Framework("mmu", mmu, mmu.functional, _version(mmu, "mmu")))
    except Exception as e:  # ImportError, or an OSError from a half-built extension
        print(f"note: cannot import mmu ({type(e).__name__}: {e}); timing the torch column only")
    if not no_torch:
        try:
            import torch
            import torch.nn.functional
            fws.append(Framework("torch", torch, torch.nn.functional, torch.__version__))
        except ImportError:
            print("note: torch is not installed; timing the mmu column only")
    return fws


def _version(mod, dist):
    if getattr(mod, "__version__", None):
        return mod.__version__
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return "unknown"


def run_case(case, fws, warmup, repeat):
    """Time one case in every framework. Returns ({framework name: median seconds per call, or
    None if it failed}, list of error strings, CPUs' worth of load from other processes).

    Both frameworks' callables are built and warmed up first; then their samples are taken in
    turns (A B, B A, A B, ...), so that load from elsewhere that comes and goes hits both alike."""
    errors = []
    try:
        data = case.inputs(np.random.default_rng(0))  # seeded per case: --filter changes nothing
    except Exception as e:
        return {fw.name: None for fw in fws}, [f"{case.name}: inputs: {type(e).__name__}: {e}"], None
    fns, inner, samples, broken = {}, {}, {fw.name: [] for fw in fws}, set()

    def failed(name, e):  # one failing case (e.g. an op mmu lacks yet) must not stop the run
        errors.append(f"{case.name} [{name}]: {type(e).__name__}: {e}")
        fns.pop(name, None)
        broken.add(name)

    for fw in fws:
        try:
            fns[fw.name] = getattr(case, fw.name)(fw, data)
            inner[fw.name] = warm_up(fns[fw.name], warmup)
        except Exception as e:
            failed(fw.name, e)
    gc.collect()
    gc.disable()  # a collection landing in one framework's samples would bias it
    start, t0 = cpu_seconds(), time.perf_counter()
    try:
        for r in range(repeat):
            for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                if len(fns) > 1:
                    time.sleep(SWITCH_PAUSE_S)
                try:
                    samples[name].append(time_sample(fns[name], inner[name]))
                except Exception as e:
                    failed(name, e)
    finally:
        gc.enable()
    end, wall = cpu_seconds(), time.perf_counter() - t0
    others = (end[0] - start[0] - (end[1] - start[1])) / wall if start and end and wall > 0 else None
    fns.clear()  # free the tensors before the next case allocates its own
    gc.collect()
    times = {name: statistics.median(s) if s and name not in broken else None
             for name, s in samples.items()}
    return times, errors, others


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="", help="run only cases whose name contains one of "
                                                 "these comma-separated substrings")
    ap.add_argument("--repeat", type=int, default=10, help="timed samples per case (median)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="default: os.cpu_count()")
    ap.add_argument("--no-torch", action="store_true", help="time mmu only")
    ap.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    ap.add_argument("--peak-gflops", type=float, help="fp32 peak of this machine at --threads; "
                                                      "default: estimated from /proc/cpuinfo")
    args = ap.parse_args(argv)

    fws = load_frameworks(args.no_torch)
    if not fws:
        sys.exit("nothing to time: neither mmu nor torch could be imported")
    for fw in fws:
        fw.mod.set_num_threads(args.threads)
    wanted = [s for s in args.filter.split(",") if s]
    cases = [c for c in CASES if not wanted or any(s in c.name for s in wanted)]
    if not cases:
        sys.exit(f"no case matches {args.filter!r}; cases: {', '.join(c.name for c in CASES)}")

    cpu = cpu_info()
    if args.peak_gflops:
        peak, peak_how = args.peak_gflops, "given with --peak-gflops"
    elif any(fw.name == "mmu" for fw in fws):
        # measured, not computed from a clock: a timed loop of independent AVX-512 FMAs on every
        # thread (csrc/core/peak.c), the best of three; nominal clocks lie under KVM and boost
        import mmu
        peak = max(mmu._C.measure_peak_gflops(0.3) for _ in range(3))
        nominal, _ = estimate_peak_gflops(cpu, args.threads)
        peak_how = (f"measured: sustained FMA throughput on {args.threads} threads"
                    + (f"; the nominal-clock estimate would be {nominal:.0f}" if nominal else ""))
    else:
        peak, peak_how = estimate_peak_gflops(cpu, args.threads)
    family = f", family {cpu['family']}" if cpu["family"] is not None else ""
    threads = ", ".join(f"{fw.name} {fw.mod.get_num_threads()}" for fw in fws)
    print(f"machine: {cpu['model']}{family}, {cpu['cores']} cores, {os.cpu_count()} logical CPUs"
          f" | threads: {threads} | " + " | ".join(f"{fw.name} {fw.version}" for fw in fws)
          + f" | numpy {np.__version__} | python {platform.python_version()}")
    print(f"fp32 peak: " + (f"{peak:.0f} GFLOP/s ({peak_how})" if peak else peak_how))
    print(f"median of {args.repeat} samples per framework, taken in turns, after >= {args.warmup} "
          f"warm-up calls; ratio = torch ms / mmu ms (> 1: mmu is faster)\n")

    width = max(len(c.name) for c in cases)
    header = (f"{'case':<{width}} | {'mmu ms':>9} | {'torch ms':>9} | {'torch/mmu':>9} | "
              f"{'mmu GFLOP/s':>11} | {'torch GFLOP/s':>13}")
    print(header)
    print("-" * len(header))
    results, errors = [], []
    for case in cases:
        times, errs, others = run_case(case, fws, args.warmup, args.repeat)
        errors += errs
        mmu_s, torch_s = times.get("mmu"), times.get("torch")
        rate = {k: case.flops / s / 1e9 if case.flops and s else None for k, s in times.items()}
        ratio = torch_s / mmu_s if mmu_s and torch_s else None
        results.append({"case": case.name, "flops": case.flops,
                        "mmu_ms": mmu_s and mmu_s * 1e3, "torch_ms": torch_s and torch_s * 1e3,
                        "ratio_torch_over_mmu": ratio, "mmu_gflops": rate.get("mmu"),
                        "torch_gflops": rate.get("torch"), "report_peak": case.report_peak,
                        "other_processes_cpus": others})
        # Another build or test run on the same cores makes any timing meaningless: say so.
        busy = f"  <- other processes kept {others:.1f} CPUs busy" if others and others > 0.2 else ""
        ms = lambda k: _fmt(times.get(k), 1e3, ".3f", 9, failed=k in times)
        print(f"{case.name:<{width}} | {ms('mmu')} | {ms('torch')} | {_fmt(ratio, 1, '.2f', 9)} | "
              f"{_fmt(rate.get('mmu'), 1, '.1f', 11)} | {_fmt(rate.get('torch'), 1, '.1f', 13)}{busy}",
              flush=True)

    for r in results:
        if r["report_peak"] and peak:
            parts = [f"{k} {r[k + '_gflops'] / peak:.0%}" for k in ("mmu", "torch")
                     if r.get(k + "_gflops")]
            if parts:
                print(f"\n{r['case']}: " + ", ".join(parts) + f" of the fp32 peak ({peak:.0f} GFLOP/s)")
    if errors:
        print("\nerrors:\n  " + "\n  ".join(errors))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cpu": cpu["model"], "family": cpu["family"], "cores": cpu["cores"],
                                   "logical_cpus": os.cpu_count(), "mhz": cpu["mhz"]},
                       "versions": {fw.name: fw.version for fw in fws} | {"numpy": np.__version__},
                       "threads": args.threads, "repeat": args.repeat, "warmup": args.warmup,
                       "peak_gflops": peak, "peak_how": peak_how,
                       "results": results, "errors": errors}, f, indent=2)
        print(f"\nsaved {args.json}")
    return 0


def _fmt(value, scale, spec, width, failed=False):
    if value is None:
        return f"{'ERR' if failed else '-':>{width}}"
    return f"{value * scale:>{width}{spec}}"


# ---------------------------------------------------------------- cases

def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def fwd_bwd(leaves, forward, grad=None):
    """A callable that runs forward() and backpropagates `grad` through it (grad=None: the
    output is a scalar loss). The leaves' grads are set to None first so that every call does
    the same work in both frameworks: no accumulation into an existing grad."""
    def step():
        for t in leaves:
            t.grad = None
        forward().backward(grad)
    return step


def matmul(fw, d):
    a, b = fw.tensor(d["a"]), fw.tensor(d["b"])
    return lambda: a @ b


def linear_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fwd_bwd([x, w, b], lambda: fw.F.linear(x, w, b), fw.tensor(d["g"]))


def layer_norm_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    shape = d["x"].shape[-1:]
    return fwd_bwd([x, w, b], lambda: fw.F.layer_norm(x, shape, w, b), fw.tensor(d["g"]))


def softmax_fwd_bwd(fw, d):
    x = fw.tensor(d["x"], requires_grad=True)
    return fwd_bwd([x], lambda: fw.F.softmax(x, dim=-1), fw.tensor(d["g"]))


def gelu_fwd_bwd(fw, d):
    x = fw.tensor(d["x"], requires_grad=True)
    return fwd_bwd([x], lambda: fw.F.gelu(x, approximate="none"), fw.tensor(d["g"]))


def cross_entropy_fwd_bwd(fw, d):
    x, target = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["target"])
    return fwd_bwd([x], lambda: fw.F.cross_entropy(x, target, reduction="mean"))


def embedding_fwd_bwd(fw, d):
    idx, w = fw.tensor(d["idx"]), fw.tensor(d["w"], requires_grad=True)
    return fwd_bwd([w], lambda: fw.F.embedding(idx, w), fw.tensor(d["g"]))


def permute_fwd_bwd(fw, d):
    # (B, T, H, D) -> (B, H, T, D), the attention head split; torch needs .contiguous() to do
    # the same work (mmu's permute always returns a contiguous copy)
    x = fw.tensor(d["x"], requires_grad=True)
    return fwd_bwd([x], lambda: x.permute(0, 2, 1, 3).contiguous(), fw.tensor(d["g"]))


DEMO_BATCH, DEMO_LR = 256, 3e-3


def demo_inputs(rng):
    try:
        from mmu import demo
    except ImportError as e:
        raise RuntimeError("this case needs mmu.demo (the model's initial weights and the "
                           f"digits come from it), and mmu cannot be imported: {e}") from None
    x_train, _ = demo.load_digits_data(rng)
    model = demo.MLPAutoencoder()
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    return {"state": state, "batch": x_train[:DEMO_BATCH]}


def demo_step_mmu(fw, d):
    from mmu import demo
    model = demo.MLPAutoencoder()
    model.load_state_dict(d["state"])  # the same start as the twin
    optimizer = fw.mod.optim.Adam(model.parameters(), lr=DEMO_LR)
    batch = fw.tensor(d["batch"])
    return lambda: demo.train_step(model, optimizer, batch)


def demo_step_torch(fw, d):
    from mmu import demo
    from torch_twins import TorchMLPAutoencoder, train_step  # benchmarks/ is sys.path[0] as a script
    model = TorchMLPAutoencoder(d["state"], demo.LAYER_SIZES)
    optimizer = fw.mod.optim.Adam(model.parameters(), lr=DEMO_LR)
    batch = fw.tensor(d["batch"])
    return lambda: train_step(model, optimizer, batch)


CASES = [
    Case("matmul_1024", 2 * 1024 ** 3,
         lambda rng: {"a": randn(rng, 1024, 1024), "b": randn(rng, 1024, 1024)},
         matmul, matmul, report_peak=True),
    # forward, grad of input, grad of weight: three (4096 x 768) x (768 x 3072) products
    Case("linear_fwd_bwd", 3 * 2 * 4096 * 768 * 3072,
         lambda rng: {"x": randn(rng, 4096, 768), "w": randn(rng, 3072, 768) / 768 ** 0.5,
                      "b": randn(rng, 3072), "g": randn(rng, 4096, 3072)},
         linear_fwd_bwd, linear_fwd_bwd),
    Case("layer_norm_fwd_bwd", None,
         lambda rng: {"x": randn(rng, 4096, 768), "w": 1 + 0.1 * randn(rng, 768),
                      "b": 0.1 * randn(rng, 768), "g": randn(rng, 4096, 768)},
         layer_norm_fwd_bwd, layer_norm_fwd_bwd),
    Case("embedding_fwd_bwd", None,
         lambda rng: {"idx": rng.integers(0, 8192, 4096), "w": randn(rng, 8192, 768),
                      "g": randn(rng, 4096, 768)},
         embedding_fwd_bwd, embedding_fwd_bwd),
    Case("permute_fwd_bwd", None,
         lambda rng: {"x": randn(rng, 8, 256, 12, 64), "g": randn(rng, 8, 12, 256, 64)},
         permute_fwd_bwd, permute_fwd_bwd),
    Case("softmax_fwd_bwd", None,
         lambda rng: {"x": randn(rng, 4096, 1024), "g": randn(rng, 4096, 1024)},
         softmax_fwd_bwd, softmax_fwd_bwd),
    Case("gelu_fwd_bwd", None,
         lambda rng: {"x": randn(rng, 4096, 3072), "g": randn(rng, 4096, 3072)},
         gelu_fwd_bwd, gelu_fwd_bwd),
    Case("cross_entropy_fwd_bwd", None,
         lambda rng: {"x": randn(rng, 4096, 8192), "target": rng.integers(0, 8192, 4096)},
         cross_entropy_fwd_bwd, cross_entropy_fwd_bwd),
    Case("demo_train_step", None, demo_inputs, demo_step_mmu, demo_step_torch),
]



def _family_cases():
    """Cases of the op families, from benchmarks/bench_*.py (each has `cases(h)`)."""
    import importlib
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    for name in sorted(os.listdir(here)):
        if name.startswith("bench_") and name.endswith(".py"):
            yield from importlib.import_module(name[:-3]).cases(sys.modules[__name__])


CASES += list(_family_cases())

if __name__ == "__main__":
    sys.exit(main())
