"""Decoding benchmarks (issue 12): a GPT-2-small-sized mmu.nn.TransformerLM (vocab 50257, dim 768, 12
layers, 12 heads, learned positions, tied head, tanh-GELU: 124M parameters) decoding greedily after a
128-token prompt, against its torch twin (benchmarks/torch_twins.py: TwinTransformerLM, the same weights)
decoding (a) on a KV cache written as a careful torch user would (preallocated buffers written in place,
views of the filled prefix into F.scaled_dot_product_attention, logits at the last position only,
inference_mode) and (b) without one, recomputing the whole sequence and its logits at every position for
every new token, as Show-o's public generation loop does. And the tiny captions LM's training step
(mmu.models.gpt.GPTConfig's defaults: dim 128, 4 layers, 4 heads, RoPE, exact GELU, tied head; vocab 200,
24 tokens, batch 32: forward, backward, AdamW) against its twin.

As a family of run.py (cases(h)): the prefill of the 128-token prompt; one decode step at the middle of the
generation (255 cached positions; 128 + 256 / 2) on each side's cache; the same mmu step against torch
recomputing the 256-token sequence (batch 1); the tiny LM's train step.

As a script, the end-to-end table, both frameworks in this process with the same thread count:

    python benchmarks/bench_decode.py [--quick] [--threads 1,2] [--batch 1,8] [--repeat 3]

mmu runs mmu.generate.generate(model, prompt, max_new_tokens=256, do_sample=False) (prefill + 256 tokens on
its cache); torch runs torch_twins.lm_greedy_cached. Both end to end, timed in turns, median of --repeat;
tokens/s = batch x new tokens / seconds; the prefill is timed on its own as well. Recomputation costs
minutes per generation here, so it is not run end to end: its step time is measured at the first, middle
and last sequence lengths (128, 256, 383), a quadratic in the length (linear layers + attention) goes
through the three, and its sum over the 256 steps is the generation time. --quick: 32 new tokens.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

GPT = dict(vocab_size=50257, dim=768, num_layers=12, num_heads=12, max_seq_len=1024)
PROMPT, NEW_TOKENS = 128, 256
TINY = dict(vocab_size=200, dim=128, num_layers=4, num_heads=4, max_seq_len=64)
TINY_BATCH, TINY_LEN, TINY_LR = 32, 24, 3e-4

_MODELS = {}


def build_pair(config, pos="learned", activation="gelu_tanh", seed=0, fresh=False):
    """(mmu TransformerLM, torch TwinTransformerLM) with the same weights (GPT-2's init drawn by mmu,
    copied into the twin), both in eval mode. Memoised (run.py's cases share one pair) unless fresh."""
    key = (tuple(sorted(config.items())), pos, activation, seed)
    if fresh or key not in _MODELS:
        import mmu
        import torch
        here = os.path.dirname(os.path.abspath(__file__))
        if here not in sys.path:
            sys.path.insert(0, here)
        from torch_twins import TwinTransformerLM
        mmu.manual_seed(seed)
        model = mmu.nn.TransformerLM(**config, activation=activation, pos=pos, tie_embeddings=True)
        model.eval()
        twin = TwinTransformerLM(**config, activation=activation, pos=pos, tie_embeddings=True)
        twin.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
        twin.eval()
        if fresh:
            return model, twin
        _MODELS[key] = (model, twin)
    return _MODELS[key]


def mmu_prefill(model, prompt):
    """Prefill a fresh cache with prompt (B, P) and return the logits at the last position (B, V)."""
    import mmu
    with mmu.no_grad():
        cache = model.new_cache(prompt.shape[0], prompt.shape[1] + 1)
        return model(mmu.tensor(prompt), cache=cache, logits_at="last")


def torch_prefill(twin, prompt):
    import torch
    with torch.inference_mode():
        cache = twin.new_cache(prompt.shape[0], prompt.shape[1] + 1)
        return twin(torch.from_numpy(prompt), cache=cache, logits_at="last")


def mmu_generate(model, prompt, new_tokens):
    import mmu
    return mmu.generate.generate(model, prompt, max_new_tokens=new_tokens, do_sample=False).numpy()


def torch_generate_cached(twin, prompt, new_tokens):
    import torch
    from torch_twins import lm_greedy_cached
    return lm_greedy_cached(twin, torch.from_numpy(prompt), new_tokens).numpy()


def torch_generate_recompute(twin, prompt, new_tokens):
    import torch
    from torch_twins import lm_greedy_recompute
    return lm_greedy_recompute(twin, torch.from_numpy(prompt), new_tokens).numpy()


def torch_recompute_step(twin, ids):
    """One step of the recomputing loop on ids (B, L): every position's logits, the last one's argmax."""
    import torch
    with torch.inference_mode():
        return twin(ids)[:, -1].argmax(-1)


# ---------------------------------------------------------------- run.py cases

MID = PROMPT + NEW_TOKENS // 2 - 1  # cached positions before the middle step of a generation


def _prompt_inputs(batch, length):
    def make(rng):
        return {"ids": rng.integers(0, GPT["vocab_size"], (batch, length))}
    return make


def _prefill(fw, d):
    model, twin = build_pair(GPT)
    if fw.name == "mmu":
        return lambda: mmu_prefill(model, d["ids"])
    return lambda: torch_prefill(twin, d["ids"])


def _decode_step(fw, d):
    """One greedy step at MID cached positions: write this token's keys/values at MID, attend, logits at
    the one position, argmax. The cache is rolled back to MID before each call (the buffers' contents do
    not change the work), so every call does the same step."""
    model, twin = build_pair(GPT)
    b = d["ids"].shape[0]
    if fw.name == "mmu":
        import mmu
        cache = model.new_cache(b, PROMPT + NEW_TOKENS)
        cache.advance(MID)
        tok = mmu.tensor(d["ids"][:, :1])

        def step():
            cache.crop(MID)
            with mmu.no_grad():
                return model(tok, cache=cache, logits_at="last").argmax(-1)
        return step
    import torch
    cache = twin.new_cache(b, PROMPT + NEW_TOKENS)
    tok = torch.from_numpy(d["ids"][:, :1])

    def step():
        cache.length = MID
        with torch.inference_mode():
            return twin(tok, cache=cache, logits_at="last").argmax(-1)
    return step


def _recompute_step(fw, d):
    """torch's side recomputes the MID + 1 = 256-token sequence; mmu's side is _decode_step."""
    if fw.name == "mmu":
        return _decode_step(fw, d)
    _, twin = build_pair(GPT)
    ids = fw.mod.from_numpy(d["ids"])
    return lambda: torch_recompute_step(twin, ids)


def _tiny_inputs(rng):
    return {"ids": rng.integers(0, TINY["vocab_size"], (TINY_BATCH, TINY_LEN + 1))}


def _tiny_train_step(fw, d):
    """Forward on tokens 0..L-1, cross-entropy against tokens 1..L, backward, AdamW: the captions LM's step.
    Each framework trains its own copy from the same initial weights."""
    pair = build_pair(TINY, pos="rope", activation="gelu", seed=1, fresh=True)
    model = pair[0] if fw.name == "mmu" else pair[1]
    model.train()
    opt = fw.mod.optim.AdamW(model.parameters(), lr=TINY_LR, weight_decay=0.01)
    x = fw.tensor(np.ascontiguousarray(d["ids"][:, :-1]))
    y = fw.tensor(np.ascontiguousarray(d["ids"][:, 1:]).reshape(-1))
    V = TINY["vocab_size"]

    def step():
        opt.zero_grad()
        loss = fw.F.cross_entropy(model(x).reshape(-1, V), y)
        loss.backward()
        opt.step()
        return loss
    return step


def cases(h):
    out = []
    for b in (1, 8):
        # a forward of 128 tokens: 2 x 85M weights x tokens FLOPs in the layers, one row of the head
        out.append(h.Case(f"gpt_prefill128_B{b}", None, _prompt_inputs(b, PROMPT), _prefill, _prefill))
        out.append(h.Case(f"gpt_decode_step_B{b}", None, _prompt_inputs(b, PROMPT), _decode_step, _decode_step))
    # ratio = torch recomputing 256 tokens (full logits) / mmu's cached step: the speed-up of one token
    out.append(h.Case("gpt_decode_step_B1_vs_torch_recompute", None, _prompt_inputs(1, MID + 1),
                      _recompute_step, _recompute_step))
    out.append(h.Case("tinylm_train_step", None, _tiny_inputs, _tiny_train_step, _tiny_train_step))
    return out


# ---------------------------------------------------------------- the end-to-end table

def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _in_turns(fns, repeat, pause=0.05):
    """Median seconds of each zero-argument callable, sampled in turns (A B, B A, ...), and their last
    outputs."""
    times, outs = {k: [] for k in fns}, {}
    for r in range(repeat):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            time.sleep(pause)  # let the other framework's idle OpenMP workers stop spinning
            t, outs[k] = _timed(fns[k])
            times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def recompute_seconds(twin, prompt, new_tokens, vocab_size, repeat=1):
    """Seconds the recomputing loop takes for new_tokens tokens, from its step time at the first, middle
    and last sequence lengths: the quadratic through the three points summed over every step's length."""
    import torch
    p = prompt.shape[1]
    last = p + new_tokens - 1
    lengths = sorted({p, (p + last) // 2, last})
    rng = np.random.default_rng(1)
    ts = []
    for L in lengths:
        ids = torch.from_numpy(rng.integers(0, vocab_size, (prompt.shape[0], L)))
        torch_recompute_step(twin, ids)  # warm up at this length
        ts.append(statistics.median(_timed(lambda: torch_recompute_step(twin, ids))[0] for _ in range(repeat)))
    coef = np.polyfit(lengths, ts, len(lengths) - 1)
    return float(np.polyval(coef, np.arange(p, last + 1)).sum()), dict(zip(lengths, ts))


def load_now():
    """The 1-minute load average (the machine is shared: a load above the core count means contention)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_table(config, prompt_len, new_tokens, batches, threads, repeat, recompute=True, out=print):
    import mmu
    import torch
    model, twin = build_pair(config)
    rows = []
    for t in threads:
        mmu.set_num_threads(t)
        torch.set_num_threads(t)
        for b in batches:
            prompt = np.random.default_rng(0).integers(0, config["vocab_size"], (b, prompt_len))
            load0 = load_now()
            mmu_generate(model, prompt, 2)  # warm up both (kernels, allocator pools)
            torch_generate_cached(twin, prompt, 2)
            pre, _ = _in_turns({"mmu": lambda: mmu_prefill(model, prompt),
                                "torch": lambda: torch_prefill(twin, prompt)}, repeat)
            gen, outs = _in_turns({"mmu": lambda: mmu_generate(model, prompt, new_tokens),
                                   "torch": lambda: torch_generate_cached(twin, prompt, new_tokens)}, repeat)
            rec, rec_steps = recompute_seconds(twin, prompt, new_tokens, config["vocab_size"]) if recompute else (None, {})
            row = {"threads": t, "batch": b, "prefill_mmu_s": pre["mmu"], "prefill_torch_s": pre["torch"],
                   "gen_mmu_s": gen["mmu"], "gen_torch_cache_s": gen["torch"], "gen_torch_recompute_s": rec,
                   "recompute_step_s": rec_steps, "same_tokens": bool(np.array_equal(outs["mmu"], outs["torch"])),
                   "load": (load0 + load_now()) / 2}
            rows.append(row)
            out(_format_row(row, b * new_tokens))
    return rows


HEADER = (f"{'thr':>3} {'B':>2} | {'prefill ms mmu':>14} {'torch':>8} {'t/m':>5} | {'tok/s mmu':>9} "
          f"{'torch$':>8} {'t/m':>5} | {'torch recompute tok/s':>21} {'r/m':>6} | {'same':>4} {'load':>5}")


def _format_row(r, tokens):
    rate = {k: tokens / r[k] if r[k] else None for k in ("gen_mmu_s", "gen_torch_cache_s", "gen_torch_recompute_s")}
    rec = rate["gen_torch_recompute_s"]
    return (f"{r['threads']:>3} {r['batch']:>2} | {r['prefill_mmu_s'] * 1e3:>14.1f} {r['prefill_torch_s'] * 1e3:>8.1f} "
            f"{r['prefill_torch_s'] / r['prefill_mmu_s']:>5.2f} | {rate['gen_mmu_s']:>9.2f} "
            f"{rate['gen_torch_cache_s']:>8.2f} {r['gen_torch_cache_s'] / r['gen_mmu_s']:>5.2f} | "
            + (f"{rec:>21.3f} {r['gen_torch_recompute_s'] / r['gen_mmu_s']:>6.1f}" if rec else f"{'-':>21} {'-':>6}")
            + f" | {'yes' if r['same_tokens'] else 'no':>4} {r['load']:>5.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"32 new tokens instead of {NEW_TOKENS}")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (both frameworks)")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--repeat", type=int, default=3, help="timed generations per framework (median)")
    ap.add_argument("--no-recompute", action="store_true", help="skip torch's recomputing loop")
    args = ap.parse_args(argv)
    new_tokens = 32 if args.quick else NEW_TOKENS
    threads = [int(s) for s in args.threads.split(",") if s]
    batches = [int(s) for s in args.batch.split(",") if s]
    import mmu
    import torch
    print(f"GPT {GPT}, prompt {PROMPT}, {new_tokens} new tokens, greedy | mmu {mmu.__version__}, torch "
          f"{torch.__version__} | {os.cpu_count()} logical CPUs, load {load_now():.1f}")
    print("tok/s = batch x new tokens / end-to-end seconds (prefill included); t/m = torch time / mmu time "
          "(> 1: mmu is faster); torch$ = torch with a KV cache; recompute: estimated from 3 timed steps; "
          "same = the same tokens\n")
    print(HEADER)
    print("-" * len(HEADER))
    run_table(GPT, PROMPT, new_tokens, batches, threads, args.repeat, recompute=not args.no_recompute)
    return 0


if __name__ == "__main__":
    sys.exit(main())
