"""Show-o inference: mmu's cached paths against the torch twin on Show-o's public (recomputing) path.

    python benchmarks/bench_show_o.py                         # tiny and 100m, 1 and 2 threads
    python benchmarks/bench_show_o.py --configs 100m-showo-vocab --repeat 1 --threads 1
    python benchmarks/bench_show_o.py --configs tiny --mmu-paths   # + mmu running Show-o's path
    python benchmarks/bench_show_o.py --configs 100m --cases t2i    # sampling only

T2I: MaskGIT sampling of 16 steps with classifier-free guidance w = 5 (2 rows: the prompt and the empty
prompt) for 256 image tokens after a 64-token prompt ([T2I] + max_text_len 63).
  mmu cached         ShowO.t2i_generate: the prefixes run once into the KV cache; each step runs the
                     image block [SOI] image [EOI] of both CFG rows against it as one batch (the first
                     layer once per distinct token; heads by one qkv_heads pass; attention_cached reading
                     the cached prefix, pads skipped, and the block's keys in place; out_proj and fc2
                     adding into the residual inside their GEMMs, fc1 with the GELU in its epilogue; the
                     last layer's queries, out_proj/MLP, the final norm and the head only at positions
                     still [MASK]; the guidance combined before the head, which runs on B rows);
  torch Show-o path  benchmarks/torch_twins.py::TwinShowO (the same weights, eval, inference_mode, the
                     same thread count) running Showo.t2i_generate step for step: the whole 2-row
                     sequence each step with the omni-attention mask, the logits of every position over
                     the whole vocabulary, the image positions' codebook columns, its MaskGIT update
                     (torch.multinomial, Gumbel noise, sort) in torch;
  mmu Show-o path    (--mmu-paths) the same public path run by mmu.
MMU: an answer of 32 tokens (greedy, no stop token) to a 32-token question about a 256-token image:
  mmu cached         ShowO.mmu_generate: one prefill under Show-o's MMU mask, then one token a step on
                     the cache, the head at the last position only;
  torch Show-o path  Showo.mmu_generate as inference_mmu.py calls it (top_k=1) on the twin: the whole
                     sequence (prompt + answer so far) each step, the mask grown by a row and a column,
                     logits of every position over the whole vocabulary.
Checks printed: the step-1 guided codebook logits of both (relative max difference, argmax agreement;
the samples themselves come from two different random streams, mmu's Philox and torch's generator, so
the codes are not compared), and the greedy answers token for token.
Configs: tiny = 4 layers of 128 (Show-o-tiny's shape) over 256 codes; 100m = Phi-1.5's layer layout
(parallel residual, QK LayerNorm, partial RoPE 0.5, tanh GELU) at 12 layers of 768, 12 heads of 64,
over 8192 codes and 1024 text ids (vocab 9227: 85.0M in the layers, 99.2M in all); 100m-showo-vocab =
the same layers over Show-o's own vocabulary (50295 Phi text ids + 10 + 8192 codes + [MASK] = 58498:
175M in all), where Show-o's path pays its head over 58498 ids at every position of every step.
The callables take turns (A B, B A, ...) after one short warm-up call each; median of --repeat.

Measured on the 2-core shared VM under load 9-17 from other helpers' jobs (a process got 15-40% of a
core, so wall times are 3-7x a quiet run's and wall ratios swing by +-15% between runs; CPU time counts
what each side ran), one process each, the two sides in turns, median of --repeat (tiny 5, 100m 2, the
vocab config 1). Seconds, wall (cpu); before = main at b82a3bd, after = this file's version:
    config            thr  T2I 16 steps cfg          mmu cached        torch Show-o path   speedup wall / cpu
    tiny               1   before                   1.062 (0.330)      1.810 (0.577)        1.70x / 1.75x
    tiny               1   after (4 runs)           0.47-0.80 (0.216-0.232)  1.02-1.82 (0.473-0.516)  1.94-2.27x / 2.12-2.23x
    tiny               2   before                   1.081 (0.403)      2.175 (0.802)        2.01x / 1.99x
    tiny               2   after (4 runs)           0.29-0.64 (0.243-0.258)  0.67-1.59 (0.602-0.646)  2.29-2.62x / 2.48-2.53x
    100m               1   before                 109.2  (16.11)     162.5  (26.30)         1.49x / 1.63x
    100m               1   after                   53.8  (14.92)      90.4  (25.21)         1.68x / 1.69x
    100m               2   before                  55.3  (16.24)     122.8  (26.91)         2.22x / 1.66x
    100m               2   after                   47.6  (14.93)      79.4  (26.45)         1.67x / 1.77x
    100m-showo-vocab   1   after                   44.6  (14.72)     111.5  (39.51)         2.50x / 2.68x
    100m-showo-vocab   2   after                   42.2  (14.88)     113.7  (40.81)         2.70x / 2.74x
Every run: step-1 guided logits within 2.4e-6 (tiny) / 4.9e-6 (100m) of the twin's relative to their
largest, argmax agreement 100%; the codes of the benchmark's generation unchanged by the work above.
MMU answer of 32 tokens (untouched by it): tiny 14.9-16.2x wall / 15.1-15.2x cpu (1 thread), 7.5-11.2x /
7.4-8.1x (2);
100m 17.0x / 21.7x (1), 23.6x / 20.8x (2).
Where a cached tiny step goes (CPU, 1 thread, per 16-step generation of ~230 ms): the GEMMs ~120 ms,
attention_cached ~65 ms (its GEMMs have K or N = head_dim 32: oneDNN sgemm reaches ~75-85 GFLOP/s
there), qkv_heads ~13 ms, the MaskGIT update and sampling ~7 ms, the rest ~25 ms.
What bounds the 100m ratio: the GEMMs are 88% of a cached step, at 101-108 GFLOP/s on one core (the
measured fp32 FMA peak is ~117). A cached step must run the 10 middle layers over all 516 block rows
(both CFG rows: every position's keys and values feed the masked ones, and the known codes' hidden
states change with every step's new codes): 73 GFLOP, against the twin's 126 GFLOP a step (12 layers
over 644 rows, the head over 9227 ids at every position, attention over 322 keys). Even with
everything else free, the ratio at equal GEMM speed is 126 / 73 = 1.72; torch's GEMMs run at 93-100
GFLOP/s on the same shapes, so about 1.85x is the ceiling of exact float32 work here, and 2x at 100m
over the 9227-id vocabulary would take a cheaper arithmetic (the CPU has avx512_bf16) that changes the
numbers. Over Show-o's own 58498-id vocabulary the twin's head is 58 GFLOP a step more, hence 2.5-2.7x.
Tried and measured, not kept: weights reordered once into oneDNN's preferred blocked layout (matmul
with format_tag::any) ran the 100m / tiny GEMM shapes 2-6% faster in isolation, under the noise of a
whole generation here.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Show-o's vocabulary (configs/showo_demo.yaml with Phi-1.5): 50295 text ids + 10 new tokens + 8192 codes + [MASK]
SHOWO_TEXT_VOCAB = 50295
CONFIGS = {
    # Show-o-tiny-like: 4 layers of 128 (the ShowOConfig defaults) over a 256-code image tokenizer
    "tiny": dict(llm_vocab_size=512, codebook_size=256, dim=128, num_layers=4, num_heads=4),
    # ~100M parameters: 12 layers of 768 (12 heads of 64, Phi's head size) over Show-o's 8192 codes and a
    # 1024-id text vocabulary: 85.0M in the layers + 14.2M embedding and head = 99.2M
    "100m": dict(llm_vocab_size=1024, codebook_size=8192, dim=768, num_layers=12, num_heads=12),
    # the same layers over Show-o's own vocabulary layout (58498 ids): 85.0M in the layers + 89.9M embedding
    # and head; Show-o's public path pays the head over all 58498 ids at every position of every step
    "100m-showo-vocab": dict(llm_vocab_size=SHOWO_TEXT_VOCAB, codebook_size=8192, dim=768, num_layers=12,
                             num_heads=12),
}
PROMPT, IMAGE, STEPS, QUESTION, ANSWER, GUIDANCE = 64, 256, 16, 32, 32, 5.0


def build(name):
    import mmu
    from mmu.models.show_o import ShowO, ShowOConfig, default_image_tokenizer
    fields = dict(CONFIGS[name])
    fields["image_tokenizer"] = default_image_tokenizer(fields["codebook_size"], resolution=64)  # 16 x 16 tokens
    # max_seq_len: room for the 291-token MMU prompt and its 32-token answer (Phi-1.5 has 2048 positions)
    cfg = ShowOConfig(num_vq_tokens=IMAGE, max_text_len=PROMPT - 1, init_std=0.02, max_seq_len=2048, **fields)
    mmu.manual_seed(0)
    model = ShowO(cfg)
    model.eval()
    return model


def t2i_sequences(model, prompts):
    """Show-o's t2i_gen prompts of B texts with every image token [MASK] (B, L), the same for the empty
    prompt (the unconditional rows), and the omni-attention mask (2B, 1, L, L) of both, as
    inference_t2i.py builds them (mmu's omni_attention_mask: Show-o's create_attention_mask_predict_next
    on every non-pad row; a pad row sees only itself)."""
    from mmu.models.show_o import t2i_prompt
    cfg = model.config
    b = len(prompts)
    blank = np.full((b, cfg.num_vq_tokens), cfg.mask_token_id, np.int64)
    cond = t2i_prompt(cfg, prompts, blank)[0]
    uncond = t2i_prompt(cfg, [[]] * b, blank)[0]
    return cond, uncond, model.omni_attention_mask(np.concatenate([cond, uncond]))


def showo_public_t2i(model, prompts, guidance_scale, generator, steps=STEPS):
    """Show-o's Showo.t2i_generate path in mmu: every step the whole sequence, all logits."""
    import mmu
    from mmu.generate import maskgit_decode
    cfg = model.config
    b = len(prompts)
    cond, uncond, mask = t2i_sequences(model, prompts)
    prefix = np.concatenate([cond, uncond])[:, :cfg.max_text_len + 1]
    lo, n, w = cfg.image_token_offset, cfg.num_vq_tokens, guidance_scale
    soi = np.full((2 * b, 1), cfg.special_token_id("<|soi|>"))
    eoi = np.full((2 * b, 1), cfg.special_token_id("<|eoi|>"))
    mask = mmu.tensor(mask)

    def logits_fn(codes):
        image = np.where(codes == cfg.mask_token_id, codes, codes + lo)
        image = np.concatenate([image, image])
        seq = np.concatenate([prefix, soi, image, eoi], 1).astype(np.int64)
        logits = model(mmu.tensor(seq), attn_mask=mask).numpy()  # (2B, L, V): every position
        logits = logits[:, -(n + 1):-1, lo:-1]
        return (1 + w) * logits[:b] - w * logits[b:]

    start = np.full((b, n), cfg.mask_token_id, np.int64)
    return maskgit_decode(logits_fn, mask_id=cfg.mask_token_id, steps=steps, choice_temperature=1.0,
                          choice_temperature_decay="compounding", initial_tokens=start, generator=generator)


def showo_public_mmu(model, codes, question, max_new_tokens):
    """Show-o's mmu_generate path in mmu: the whole sequence every step, all logits, greedy."""
    import mmu
    cfg = model.config
    seq = mmu_prompt_ids(model, codes, question)
    out = []
    with mmu.no_grad():
        for _ in range(max_new_tokens):
            ids = np.array([seq], np.int64)
            logits = model.lm(mmu.tensor(ids), attn_mask=mmu.tensor(model.mmu_attention_mask(ids))).numpy()
            tok = int(np.argmax(logits[0, -1]))
            out.append(tok)
            seq.append(tok)
    return np.array(out)


def mmu_prompt_ids(model, codes, question):
    """[MMU][SOI] image [EOI][SOT] question, as a list of ids (one row)."""
    cfg = model.config
    return [cfg.special_token_id("<|mmu|>"), cfg.special_token_id("<|soi|>")] + \
        (codes[0] + cfg.image_token_offset).tolist() + [cfg.special_token_id("<|eoi|>"), cfg.sot_token_id] + question


# ------------------------------------------------------------------------------------------ torch twin
def torch_twin(model):
    """benchmarks/torch_twins.py::TwinShowO holding the mmu model's transformer weights, in eval mode."""
    from torch_twins import TwinShowO
    twin = TwinShowO(model.config.to_dict()).load_mmu_state(model.state_dict())
    return twin.eval()


def torch_showo_t2i(twin, cfg, cond, uncond, mask, guidance_scale, steps, generator, first_logits=None):
    """Show-o's Showo.t2i_generate (models/modeling_showo.py) on the torch twin, step for step: each step
    the whole 2-row CFG batch (the prompt, and the empty prompt's prefix + the current image tokens) with
    the omni-attention mask, the logits of every position over the whole vocabulary, (1 + w)·c − w·u,
    the image positions' codebook columns, then its MaskGIT update (softmax, torch.multinomial,
    cosine schedule, confidence log p + t·Gumbel with the compounding temperature, sort, cut-off:
    models/sampling.py's mask_by_random_topk). Returns the codes (B, N); first_logits (a list) gets the
    step-1 guided codebook logits."""
    import math
    import torch
    n, lo, w, mask_id = cfg.num_vq_tokens, cfg.image_token_offset, guidance_scale, cfg.mask_token_id
    input_ids = torch.from_numpy(cond.copy())
    uncond_prefix = torch.from_numpy(uncond)[:, :cfg.max_text_len + 1]
    attention_mask = torch.from_numpy(mask)
    known = input_ids[:, -(n + 1):-1].clone()
    known = torch.where(known == mask_id, mask_id, known - lo)
    temperature = 1.0
    for step in range(steps):
        uncond_input_ids = torch.cat([uncond_prefix, input_ids[:, cfg.max_text_len + 1:]], dim=1)
        cond_logits, uncond_logits = twin(torch.cat([input_ids, uncond_input_ids]), attention_mask).chunk(2)
        logits = (1 + w) * cond_logits - w * uncond_logits
        logits = logits[:, -(n + 1):-1, lo:-1]
        if step == 0 and first_logits is not None:
            first_logits.append(logits.numpy().copy())
        probs = logits.softmax(dim=-1)
        sampled_ids = torch.multinomial(probs.reshape(-1, logits.size(-1)), 1, generator=generator)[:, 0]
        sampled_ids = sampled_ids.view(*logits.shape[:-1])
        unknown_map = known == mask_id
        sampled_ids = torch.where(unknown_map, sampled_ids, known)
        ratio = 1.0 * (step + 1) / steps
        mask_ratio = torch.cos(torch.tensor(ratio) * math.pi * 0.5)
        selected_probs = torch.gather(probs, -1, sampled_ids.long()[..., None]).squeeze(-1)
        selected_probs = torch.where(unknown_map, selected_probs, torch.finfo(selected_probs.dtype).max)
        mask_len = (n * mask_ratio).floor().unsqueeze(0)
        mask_len = torch.max(torch.tensor([1]), torch.min(unknown_map.sum(dim=-1, keepdim=True) - 1, mask_len))
        temperature = temperature * (1.0 - ratio)
        noise = torch.zeros_like(selected_probs).uniform_(0, 1, generator=generator)
        gumbel = -torch.log((-torch.log(noise.clamp(min=1e-20))).clamp(min=1e-20))
        confidence = torch.log(selected_probs.clamp(min=1e-20)) + temperature * gumbel
        cut_off = torch.gather(torch.sort(confidence, dim=-1).values, 1, mask_len.long())
        masking = confidence < cut_off
        input_ids[:, -(n + 1):-1] = torch.where(masking, mask_id, sampled_ids + lo)
        known = torch.where(masking, mask_id, sampled_ids)
    return sampled_ids.numpy()


def torch_showo_mmu(twin, cfg, seq, mask, max_new_tokens, generator):
    """Show-o's Showo.mmu_generate as its inference_mmu.py calls it (top_k=1) on the torch twin: each
    step the whole sequence under the MMU mask grown by one row and column (the new token sees what the
    last one saw and itself), the logits of every position over the whole vocabulary, the last one's
    top-1 kept, torch.multinomial."""
    import torch
    idx = torch.tensor([seq], dtype=torch.long)
    attention_mask = torch.from_numpy(mask[0, 0])
    result = []
    for _ in range(max_new_tokens):
        logits = twin(idx, attention_mask[None, None])
        length = attention_mask.shape[-1]
        grown = torch.zeros((length + 1, length + 1), dtype=torch.bool)
        grown[:length, :length] = attention_mask
        grown[length, :length] = attention_mask[-1]
        grown[length, length] = True
        attention_mask = grown
        logits = logits[:, -1, :]
        v, _ = torch.topk(logits, 1)
        logits[logits < v[:, [-1]]] = -float("inf")
        idx_next = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)
        result.append(int(idx_next[0][0]))
        idx = torch.cat((idx, idx_next), dim=1)
    return np.array(result)


def timed(fns, repeat):
    """Median wall seconds and median CPU seconds (this process, all its threads) of each callable, and
    its last result; the callables take turns (A B C, C B A, ...) so that load from other processes that
    comes and goes hits them alike. Each is first called once with warmup=True (a short run of the same
    shapes: oneDNN / torch pick and build their kernels). On a loaded machine the wall times stretch by
    however much of a core the process got; CPU time counts only what it ran (at 1 thread the fairer
    figure; at 2 threads it also counts OpenMP's spinning at the barriers, in both frameworks)."""
    for f in fns:
        f(warmup=True)
    times, cpus, outs = [[] for _ in fns], [[] for _ in fns], [None] * len(fns)
    for r in range(repeat):
        order = list(range(len(fns)))[::-1 if r % 2 else 1]
        for i in order:
            t0, c0 = time.perf_counter(), time.process_time()
            outs[i] = fns[i](warmup=False)
            times[i].append(time.perf_counter() - t0)
            cpus[i].append(time.process_time() - c0)
    return [statistics.median(t) for t in times], [statistics.median(c) for c in cpus], outs


def run(model, twin, repeat, mmu_paths, cases=("t2i", "mmu")):
    """One config at the current thread count -> rows (case, {column: wall seconds}, {column: CPU seconds},
    check) of the cases asked for ('t2i', 'mmu')."""
    rng = np.random.default_rng(0)
    prompt = [rng.integers(3, model.config.llm_vocab_size, PROMPT - 3).tolist()]  # [T2I][SOT] 61 ids [EOT] = 64
    rows = []
    if "t2i" in cases:
        rows.append(run_t2i(model, twin, repeat, mmu_paths, prompt))
    if "mmu" in cases:
        rows.append(run_mmu(model, twin, repeat, mmu_paths, rng))
    return rows


def run_t2i(model, twin, repeat, mmu_paths, prompt):
    """The T2I sampling row."""
    import mmu
    import torch
    from mmu.models.show_o.inference import ImageLogits, t2i_prefix
    cfg = model.config
    w = GUIDANCE
    cond, uncond, mask = t2i_sequences(model, prompt)
    first = []
    steps = lambda warmup: 1 if warmup else STEPS
    fns = {"mmu cached": lambda warmup: model.t2i_generate(prompt, steps=steps(warmup), guidance_scale=w,
                                                           generator=mmu.Generator(1)).numpy(),
           "torch Show-o path": lambda warmup: torch_showo_t2i(twin, cfg, cond, uncond, mask, w, steps(warmup),
                                                               torch.Generator().manual_seed(1), first)}
    if mmu_paths:
        fns["mmu Show-o path"] = lambda warmup: showo_public_t2i(model, prompt, w, mmu.Generator(1),
                                                                 steps(warmup)).numpy()
    with torch.inference_mode():
        secs, cpu, outs = timed(list(fns.values()), repeat)
    with mmu.no_grad():
        blank = np.full((1, IMAGE), cfg.mask_token_id, np.int64)
        ours = ImageLogits(model, t2i_prefix(cfg, prompt), guidance_scale=w)(blank).numpy()
    diff = float(np.abs(ours - first[-1]).max() / np.abs(first[-1]).max())
    agree = float((ours.argmax(-1) == first[-1].argmax(-1)).mean())
    check = f"step-1 logits rel diff {diff:.1e}, argmax agree {agree:.0%}"
    if mmu_paths:
        check += ", mmu paths " + ("same codes" if np.array_equal(outs[0], outs[2]) else "codes differ")
    return f"t2i {STEPS} steps cfg", dict(zip(fns, secs)), dict(zip(fns, cpu)), check


def run_mmu(model, twin, repeat, mmu_paths, rng):
    """The MMU answering row."""
    import mmu
    import torch
    cfg = model.config
    codes = rng.integers(0, cfg.codebook_size, (1, IMAGE))
    question = rng.integers(3, cfg.llm_vocab_size, QUESTION - 1).tolist()  # [SOT] + 31 = 32
    seq = mmu_prompt_ids(model, codes, question)
    mmu_mask = model.mmu_attention_mask(np.array([seq], np.int64))
    tokens = lambda warmup: 2 if warmup else ANSWER
    fns = {"mmu cached": lambda warmup: model.mmu_generate([question], codes=codes, max_new_tokens=tokens(warmup),
                                                           eos_token_id=[]).numpy()[0],
           "torch Show-o path": lambda warmup: torch_showo_mmu(twin, cfg, seq, mmu_mask, tokens(warmup),
                                                               torch.Generator().manual_seed(1))}
    if mmu_paths:
        fns["mmu Show-o path"] = lambda warmup: showo_public_mmu(model, codes, question, tokens(warmup))
    with torch.inference_mode():
        secs, cpu, outs = timed(list(fns.values()), repeat)
    same = sum(int(a == b) for a, b in zip(outs[0], outs[1]))
    check = "same answer" if same == ANSWER else f"answers differ ({same}/{ANSWER} tokens equal)"
    return f"mmu answer {ANSWER} tokens", dict(zip(fns, secs)), dict(zip(fns, cpu)), check


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,100m", help=f"comma-separated, of {sorted(CONFIGS)}")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each, in turns (median)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (mmu and torch alike)")
    ap.add_argument("--mmu-paths", action="store_true", help="also time Show-o's public path run by mmu")
    ap.add_argument("--cases", default="t2i,mmu", help="comma-separated, of t2i (sampling) and mmu (answering)")
    args = ap.parse_args(argv)
    import mmu
    import torch
    threads = [int(t) for t in args.threads.split(",") if t]
    print(f"mmu {mmu.__version__}, torch {torch.__version__}, median of {args.repeat}; seconds per call; "
          f"{os.cpu_count()} cpus")
    print("speedup = torch Show-o path / mmu cached, of the wall times and of the CPU times; load: the 1-minute "
          "load average before and after")
    for name in [s for s in args.configs.split(",") if s]:
        model = build(name)
        twin = torch_twin(model)
        params = sum(p.numel() for p in model.lm.parameters())
        body = sum(p.numel() for n, p in model.lm.named_parameters() if n.startswith("layers."))
        print(f"-- {name}: {params / 1e6:.1f}M transformer parameters ({body / 1e6:.1f}M in the layers), vocab "
              f"{model.config.vocab_size}")
        for t in threads:
            mmu.set_num_threads(t)
            torch.set_num_threads(t)
            load = os.getloadavg()[0]
            for case, secs, cpu, check in run(model, twin, args.repeat, args.mmu_paths, args.cases.split(",")):
                cols = "  ".join(f"{k} {v:7.3f} (cpu {cpu[k]:7.3f})" for k, v in secs.items())
                ratio = secs["torch Show-o path"] / secs["mmu cached"]
                cpu_ratio = cpu["torch Show-o path"] / cpu["mmu cached"]
                print(f"{name:<16} thr {t} | {case:<22} | {cols} | {ratio:5.2f}x wall, {cpu_ratio:5.2f}x cpu | "
                      f"{check} | load {load:.1f}-{os.getloadavg()[0]:.1f}")
            sys.stdout.flush()


def cases(h):
    """No cases for benchmarks/run.py: this file's cases take seconds each; run it directly."""
    return []


if __name__ == "__main__":
    main()
