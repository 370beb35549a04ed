"""Sampler ops at decoding shapes: topk (top-k sampling), sort descending and cumsum (top-p: sort the
probabilities, accumulate, cut), over rows of a ~58k vocabulary (Show-o's text + image tokens).

mmu's topk keeps a heap of the k best per row (a partial selection: a few hundred heap updates on
random logits); its sort is a stable radix sort; cumsum accumulates in double like torch's CPU
kernel. torch runs torch.topk / torch.sort / torch.cumsum on the same arrays. One row per thread.
The last case is a sorted row's gradient (a scatter back to the indices) at a training shape."""
import numpy as np

V = 58_498  # Show-o's vocabulary (Phi-1.5's text tokens + 8,192 image codes + specials)


def _logits(B):
    return lambda rng: {"x": rng.standard_normal((B, V), dtype=np.float32)}


def _topk(k):
    def make(fw, d):
        x = fw.tensor(d["x"])
        return lambda: fw.mod.topk(x, k)
    return make


def _sort(fw, d):
    x = fw.tensor(d["x"])
    return lambda: fw.mod.sort(x, descending=True)


def _cumsum(fw, d):
    x = fw.tensor(d["x"])
    return lambda: fw.mod.cumsum(x, -1)


def _topk_fwd_bwd(h):
    def make(fw, d):
        x = fw.tensor(d["x"], requires_grad=True)
        return h.fwd_bwd([x], lambda: (fw.mod.topk(x, 64).values ** 2).sum())
    return make


def cases(h):
    out = []
    for B in (1, 8):
        out += [h.Case(f"topk_k50_B{B}_V58k", None, _logits(B), _topk(50), _topk(50)),
                h.Case(f"topk_k100_B{B}_V58k", None, _logits(B), _topk(100), _topk(100)),
                h.Case(f"sort_desc_B{B}_V58k", None, _logits(B), _sort, _sort),
                h.Case(f"cumsum_B{B}_V58k", None, _logits(B), _cumsum, _cumsum)]
    out.append(h.Case("topk_k64_fwd_bwd_B64_V58k", None, _logits(64), _topk_fwd_bwd(h), _topk_fwd_bwd(h)))
    return out
