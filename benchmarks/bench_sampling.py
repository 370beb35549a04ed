"""Sampling cases: multinomial (with and without replacement) and the fused logits sampler.

mmu runs one C pass per row (csrc/ops/sampling.c); torch runs torch.multinomial, and for the
sampler the chain of ops a Hugging Face-style decoder runs per step: logits / temperature, top-k
threshold, sort + softmax + cumsum for top-p, softmax, multinomial, and the log-probability of
the drawn ids. Shapes: a decode step of a 51k vocabulary at batch 8, and a MaskGIT step of
1024 image tokens over an 8192 codebook."""
import numpy as np


def _probs(rows, V):
    def inputs(rng):
        return {"p": rng.random((rows, V), dtype=np.float32)}
    return inputs


def _multinomial(n, replacement):
    def make(fw, d):
        p = fw.tensor(d["p"])
        if fw.name == "mmu":
            g = fw.mod.Generator(0)
            return lambda: fw.mod.multinomial(p, n, replacement, generator=g)
        g = fw.mod.Generator().manual_seed(0)
        return lambda: fw.mod.multinomial(p, n, replacement, generator=g)
    return make


def _logits(rows, V):
    def inputs(rng):
        return {"x": (3.0 * rng.standard_normal((rows, V))).astype(np.float32)}
    return inputs


def _sampler(temperature, top_k, top_p):
    def make(fw, d):
        x = fw.tensor(d["x"])
        if fw.name == "mmu":
            import mmu.generate
            g = fw.mod.Generator(0)
            return lambda: mmu.generate.sample_logits(x, temperature, top_k, top_p, generator=g)
        torch = fw.mod
        g = torch.Generator().manual_seed(0)

        def step():
            z = x / temperature
            if top_k is not None:
                z = z.masked_fill(z < torch.topk(z, top_k)[0][..., -1:], float("-inf"))
            if top_p is not None:
                sz, si = torch.sort(z, descending=False)
                remove = sz.softmax(-1).cumsum(-1) <= 1 - top_p
                remove[..., -1:] = False
                z = z.masked_fill(remove.scatter(1, si, remove), float("-inf"))
            logp = z.log_softmax(-1)
            ids = torch.multinomial(logp.exp(), 1, generator=g)
            return ids[:, 0], logp.gather(1, ids)[:, 0]
        return step
    return make


def cases(h):
    return [
        h.Case("multinomial_replacement_64x8192", None, _probs(64, 8192), _multinomial(64, True),
               _multinomial(64, True)),
        h.Case("multinomial_no_replacement_64x8192", None, _probs(64, 8192), _multinomial(16, False),
               _multinomial(16, False)),
        h.Case("sample_logits_topk_topp_8x51200", None, _logits(8, 51200), _sampler(0.8, 50, 0.9),
               _sampler(0.8, 50, 0.9)),
        h.Case("sample_logits_topp_8x51200", None, _logits(8, 51200), _sampler(1.0, None, 0.95),
               _sampler(1.0, None, 0.95)),
        h.Case("sample_logits_maskgit_1024x8192", None, _logits(1024, 8192), _sampler(1.0, None, None),
               _sampler(1.0, None, None)),
    ]
