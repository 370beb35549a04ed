"""Show-o inference: the text prefix kept in a KV cache against recomputing the whole sequence, in mmu.

    python benchmarks/bench_show_o.py                      # tiny and ~100M configs, T2I and MMU
    python benchmarks/bench_show_o.py --configs tiny --repeat 3 --threads 2

T2I: MaskGIT sampling of 16 steps with classifier-free guidance (2 rows: the prompt and the empty
prompt) for 256 image tokens after a 64-token prompt ([T2I] + max_text_len 63). Three ways, same
model, same seed, same samples:
  cached      ShowO.t2i_generate: the prefixes run once into the KV cache, each step runs the
              image block [SOI] image [EOI] against it, codebook logits at the image positions only;
  recompute   ImageLogits(use_cache=False): the whole sequence each step with the omni-attention
              mask, codebook logits at the image positions only;
  Show-o      Show-o's public path (Showo.t2i_generate): the whole sequence each step, the logits of
              every position over the whole vocabulary, then the image positions' codebook columns.
MMU: an answer of 32 tokens (greedy, no stop token) to a 32-token question about a 256-token image:
  cached      ShowO.mmu_generate: one prefill under Show-o's MMU mask, then one token a step on the
              cache, the head at the last position only;
  Show-o      Show-o's mmu_generate: the whole sequence (prompt + answer so far) each step with its
              mask, logits of every position.
A torch twin (the issue's baseline) is not part of this file; these are mmu against mmu. No cases
for benchmarks/run.py (which times mmu against torch): run this file.

Measured on the 2-core shared VM (load ~1.5 from other processes), --repeat 3, seconds:
    100m t2i 16 steps cfg      cached 12.53   recompute 12.94   Show-o path 16.15   1.29x
    100m mmu answer 32 tokens  cached  1.85                     Show-o path 16.95   9.15x
    tiny t2i 16 steps cfg      cached  0.41   recompute  0.44   Show-o path  0.46   1.13x
    tiny mmu answer 32 tokens  cached  0.135                    Show-o path  0.616  4.56x
The prefix is 64 of the 322 positions, so caching it saves at most ~20% of a T2I step's work (one
100m step's matmuls: 1.36 s cached against 1.77 s recomputed); Show-o's path also pays the logits
of every position over the whole vocabulary. The answer gains most: one token a step instead of the
whole ~320-token sequence.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = {
    # Show-o-tiny-like: 4 layers of 128 (the ShowOConfig defaults) over a 256-code image tokenizer
    "tiny": dict(llm_vocab_size=512, codebook_size=256, dim=128, num_layers=4, num_heads=4),
    # ~100M parameters: 12 layers of 768 over Show-o's 8192 codes
    "100m": dict(llm_vocab_size=1024, codebook_size=8192, dim=768, num_layers=12, num_heads=12),
}
PROMPT, IMAGE, STEPS, QUESTION, ANSWER = 64, 256, 16, 32, 32


def build(name):
    import mmu
    from mmu.models.show_o import ShowO, ShowOConfig, default_image_tokenizer
    fields = dict(CONFIGS[name])
    fields["image_tokenizer"] = default_image_tokenizer(fields["codebook_size"], resolution=64)  # 16 x 16 tokens
    cfg = ShowOConfig(num_vq_tokens=IMAGE, max_text_len=PROMPT - 1, init_std=0.02, **fields)
    mmu.manual_seed(0)
    model = ShowO(cfg)
    model.eval()
    return model


def showo_public_t2i(model, prompts, guidance_scale, generator):
    """Show-o's Showo.t2i_generate path in mmu: every step the whole sequence, all logits."""
    import mmu
    from mmu.generate import maskgit_decode
    from mmu.models.show_o import t2i_prompt
    cfg = model.config
    b = len(prompts)
    blank = np.full((b, cfg.num_vq_tokens), cfg.mask_token_id, np.int64)
    prefix = np.concatenate([t2i_prompt(cfg, prompts, blank)[0], t2i_prompt(cfg, [[]] * b, blank)[0]])
    prefix = prefix[:, :cfg.max_text_len + 1]
    lo, n, w = cfg.image_token_offset, cfg.num_vq_tokens, guidance_scale
    soi = np.full((2 * b, 1), cfg.special_token_id("<|soi|>"))
    eoi = np.full((2 * b, 1), cfg.special_token_id("<|eoi|>"))
    mask = mmu.tensor(model.omni_attention_mask(np.concatenate([prefix, soi, np.concatenate([blank, blank]), eoi], 1)))

    def logits_fn(codes):
        image = np.where(codes == cfg.mask_token_id, codes, codes + lo)
        image = np.concatenate([image, image])
        seq = np.concatenate([prefix, soi, image, eoi], 1).astype(np.int64)
        logits = model(mmu.tensor(seq), attn_mask=mask).numpy()  # (2B, L, V): every position
        logits = logits[:, -(n + 1):-1, lo:-1]
        return (1 + w) * logits[:b] - w * logits[b:]

    start = np.full((b, n), cfg.mask_token_id, np.int64)
    return maskgit_decode(logits_fn, mask_id=cfg.mask_token_id, steps=STEPS, choice_temperature=1.0,
                          choice_temperature_decay="compounding", initial_tokens=start, generator=generator)


def showo_public_mmu(model, codes, question, max_new_tokens):
    """Show-o's mmu_generate path in mmu: the whole sequence every step, all logits, greedy."""
    import mmu
    cfg = model.config
    seq = [cfg.special_token_id("<|mmu|>"), cfg.special_token_id("<|soi|>")] + \
        (codes[0] + cfg.image_token_offset).tolist() + [cfg.special_token_id("<|eoi|>"), cfg.sot_token_id] + question
    out = []
    with mmu.no_grad():
        for _ in range(max_new_tokens):
            ids = np.array([seq], np.int64)
            logits = model.lm(mmu.tensor(ids), attn_mask=mmu.tensor(model.mmu_attention_mask(ids))).numpy()
            tok = int(np.argmax(logits[0, -1]))
            out.append(tok)
            seq.append(tok)
    return np.array(out)


def timed(fns, repeat):
    """Median seconds of each callable and its last result; the callables take turns (A B C, C B A,
    ...) so that load from other processes that comes and goes hits them alike."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    for r in range(repeat):
        order = list(range(len(fns)))[::-1 if r % 2 else 1]
        for i in order:
            t0 = time.perf_counter()
            outs[i] = fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], outs


def run(name, repeat):
    import mmu
    from mmu.models.show_o.inference import ImageLogits, t2i_prefix
    from mmu.generate import maskgit_decode
    model = build(name)
    cfg = model.config
    params = sum(p.numel() for p in model.lm.parameters())
    rng = np.random.default_rng(0)
    prompt = [rng.integers(3, cfg.llm_vocab_size, PROMPT - 3).tolist()]  # [T2I][SOT] 61 ids [EOT] = 64
    w = 5.0
    rows = []

    def cached():
        return model.t2i_generate(prompt, steps=STEPS, guidance_scale=w, generator=mmu.Generator(1)).numpy()

    def recompute():
        fn = ImageLogits(model, t2i_prefix(cfg, prompt), guidance_scale=w, use_cache=False)
        return maskgit_decode(fn, mask_id=cfg.mask_token_id, steps=STEPS, choice_temperature=1.0,
                              choice_temperature_decay="compounding",
                              initial_tokens=np.full((1, IMAGE), cfg.mask_token_id, np.int64),
                              generator=mmu.Generator(1)).numpy()

    def public():
        return showo_public_t2i(model, prompt, w, mmu.Generator(1)).numpy()

    (cached_s, recompute_s, public_s), (a, b, c) = timed([cached, recompute, public], repeat)
    same = "same codes" if np.array_equal(a, b) and np.array_equal(a, c) else "codes differ"
    rows.append((f"{name} t2i {STEPS} steps cfg", cached_s, recompute_s, public_s, same))

    codes = rng.integers(0, cfg.codebook_size, (1, IMAGE))
    question = rng.integers(3, cfg.llm_vocab_size, QUESTION - 1).tolist()  # [SOT] + 31 = 32
    (cached_s, public_s), (a, c) = timed(
        [lambda: model.mmu_generate([question], codes=codes, max_new_tokens=ANSWER, eos_token_id=[]).numpy()[0],
         lambda: showo_public_mmu(model, codes, question, ANSWER)], repeat)
    same = "same answer" if np.array_equal(a, c) else "answers differ"
    rows.append((f"{name} mmu answer {ANSWER} tokens", cached_s, None, public_s, same))
    return params, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,100m", help=f"comma-separated, of {sorted(CONFIGS)}")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each, in turns (median)")
    ap.add_argument("--threads", type=int, default=None, help="mmu.set_num_threads (default: mmu's)")
    args = ap.parse_args(argv)
    import mmu
    if args.threads:
        mmu.set_num_threads(args.threads)
    print(f"mmu {mmu.__version__}, threads {mmu.get_num_threads()}, median of {args.repeat}; seconds per call")
    print(f"{'case':<32} | {'cached':>8} | {'recompute':>9} | {'Show-o path':>11} | {'speedup':>7} | check")
    print("(speedup = Show-o path / cached)")
    for name in [s for s in args.configs.split(",") if s]:
        params, rows = run(name, args.repeat)
        print(f"-- {name}: {params / 1e6:.1f}M transformer parameters")
        for case, cached_s, recompute_s, public_s, check in rows:
            rec = f"{recompute_s:9.3f}" if recompute_s is not None else f"{'-':>9}"
            print(f"{case:<32} | {cached_s:8.3f} | {rec} | {public_s:11.3f} | {public_s / cached_s:6.2f}x | {check}")


def cases(h):
    """No cases for benchmarks/run.py (mmu against torch); this file times mmu against mmu."""
    return []


if __name__ == "__main__":
    main()
