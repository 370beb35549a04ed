"""Attention benchmarks: scaled_dot_product_attention forward + backward at B=8, H=8, D=64,
L=256 and L=1024: no mask, causal, a random per-sample boolean mask (B, 1, L, L), and a Show-o
style omni-attention mask (causal text rows, bidirectional image block, per-sample padding),
plus rotary embeddings. Peak memory at L=4096 is measured in subprocesses by
benchmarks/attention_memory.py.

Cached attention (forward only, as in generation): a GPT-2-small-like head layout (12 heads,
D=64) against a KV cache of capacity 512 holding 400 keys. Decode steps (L=1) at B=1 and 8,
with a per-sample padding mask (B, 1, 1, 512) and with grouped-query heads (12 over 4), and a
chunk of 16 new queries after the cached prefix (bottom-right causal). mmu reads the buffer
in place through kv_len / query_offset; torch gets the equivalent sliced views of the buffer
(k_buf[:, :, :kv_len]) and, for the chunk, the explicit bottom-right causal mask (its
is_causal is top-left).

Short and odd lengths (short_cases): the attention of TiTok's transformers (L129: 129 tokens, 4 heads of 32;
forward + backward at the train step's batch 16, forward alone at the eval batch 64), lengths around the
kernel's block choices (63, 65, 200 at D=32), and Show-o's 322 tokens (8 heads of 64) under an omni mask
and causal (L322). `python benchmarks/run.py --filter sdpa_short --threads 1`."""
import numpy as np

B, H, D = 8, 8, 64


def omni_mask(rng, batch, n):
    """(B, 1, n, n) bool: text tokens causal, the image block (the middle half) attends to
    itself bidirectionally and to the text before it, then causal text again; the last few
    tokens of each sample are padding no one attends to."""
    i = np.arange(n)
    m = i[None, :] <= i[:, None]
    lo, hi = n // 4, 3 * n // 4
    m[lo:hi, lo:hi] = True
    out = np.repeat(m[None, None], batch, axis=0)
    for b in range(batch):
        pad = int(rng.integers(0, n // 8))
        if pad:
            out[b, 0, :, n - pad:] = False
            out[b, 0, n - pad:, :] = False
            out[b, 0, n - pad:, 0] = True  # padded queries still see one key
    return out


def _inputs(L, mask):
    def make(rng):
        d = {k: rng.standard_normal((B, H, L, D), dtype=np.float32) for k in ("q", "k", "v", "g")}
        if mask == "random":
            d["mask"] = rng.random((B, 1, L, L)) < 0.5
        elif mask == "omni":
            d["mask"] = omni_mask(rng, B, L)
        return d
    return make


def _sdpa(causal):
    def setup(fw, d):
        q, k, v = (fw.tensor(d[n], requires_grad=True) for n in ("q", "k", "v"))
        mask = fw.tensor(d["mask"]) if "mask" in d else None
        g = fw.tensor(d["g"])
        return lambda: _step(fw, q, k, v, mask, causal, g)
    return setup


def _step(fw, q, k, v, mask, causal, g):
    for t in (q, k, v):
        t.grad = None
    fw.F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).backward(g)


def _rope_inputs(rng):
    return {"x": rng.standard_normal((B, H, 1024, D), dtype=np.float32),
            "g": rng.standard_normal((B, H, 1024, D), dtype=np.float32)}


def _rope_tables(L, Dh):
    inv = 10000.0 ** (-np.arange(Dh // 2) * 2.0 / Dh)
    f = np.arange(L)[:, None] * inv[None]
    emb = np.concatenate([f, f], 1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def rope_mmu(fw, d):
    x = fw.tensor(d["x"], requires_grad=True)
    c, s = (fw.tensor(a) for a in _rope_tables(1024, D))
    g = fw.tensor(d["g"])

    def step():
        x.grad = None
        fw.F.apply_rotary(x, c, s).backward(g)
    return step


def rope_torch(fw, d):
    # the usual Hugging Face formula
    torch = fw.mod
    x = fw.tensor(d["x"], requires_grad=True)
    c, s = (fw.tensor(a) for a in _rope_tables(1024, D))
    g = fw.tensor(d["g"])

    def rot(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def step():
        x.grad = None
        (x * c + rot(x) * s).backward(g)
    return step


CACHE_H, CACHE_BUF, CACHE_LEN = 12, 512, 400


def _cached_inputs(B, L, kv_heads, mask):
    def make(rng):
        d = {"q": rng.standard_normal((B, CACHE_H, L, D), dtype=np.float32),
             "k": rng.standard_normal((B, kv_heads, CACHE_BUF, D), dtype=np.float32),
             "v": rng.standard_normal((B, kv_heads, CACHE_BUF, D), dtype=np.float32)}
        if mask:  # left padding: sample b starts at key b (the first keys of the buffer are pads)
            m = np.ones((B, 1, 1, CACHE_BUF), bool)
            for b in range(B):
                m[b, ..., :b] = False
            d["mask"] = m
        return d
    return make


def _cached_mmu(L, gqa):
    def setup(fw, d):
        q, k, v = (fw.tensor(d[n]) for n in ("q", "k", "v"))
        mask = fw.tensor(d["mask"]) if "mask" in d else None
        kw = dict(attn_mask=mask, is_causal=L > 1, enable_gqa=gqa, query_offset=CACHE_LEN - L, kv_len=CACHE_LEN)
        return lambda: fw.F.scaled_dot_product_attention(q, k, v, **kw)
    return setup


def _cached_torch(L, gqa):
    def setup(fw, d):
        q = fw.tensor(d["q"])
        k, v = (fw.tensor(d[n])[:, :, :CACHE_LEN] for n in ("k", "v"))  # views into the buffer
        mask = fw.tensor(d["mask"][..., :CACHE_LEN]) if "mask" in d else None
        if L > 1:  # bottom-right causal, as an explicit mask
            causal = fw.tensor(np.arange(CACHE_LEN)[None, :] <= (CACHE_LEN - L + np.arange(L))[:, None])
            mask = causal if mask is None else mask & causal
        return lambda: fw.F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    return setup


def cached_cases(h):
    out = []
    for name, B, L, kv_heads, mask in (("decode_B1", 1, 1, CACHE_H, False), ("decode_B8", 8, 1, CACHE_H, False),
                                       ("decode_B1_pad", 1, 1, CACHE_H, True), ("decode_B8_pad", 8, 1, CACHE_H, True),
                                       ("decode_B1_gqa", 1, 1, 4, False), ("decode_B8_gqa", 8, 1, 4, False),
                                       ("chunk16_B1", 1, 16, CACHE_H, False), ("chunk16_B8_pad", 8, 16, CACHE_H, True)):
        gqa = kv_heads != CACHE_H
        flops = 4 * B * CACHE_H * L * CACHE_LEN * D
        out.append(h.Case(f"sdpa_cached_{name}", flops, _cached_inputs(B, L, kv_heads, mask), _cached_mmu(L, gqa),
                          _cached_torch(L, gqa)))
    return out


def _short_inputs(b, heads, L, d, mask):
    def make(rng):
        out = {k: rng.standard_normal((b, heads, L, d), dtype=np.float32) for k in ("q", "k", "v", "g")}
        if mask == "omni":
            out["mask"] = omni_mask(rng, b, L)
        return out
    return make


def _sdpa_forward(causal):
    def setup(fw, d):
        q, k, v = (fw.tensor(d[n]) for n in ("q", "k", "v"))
        mask = fw.tensor(d["mask"]) if "mask" in d else None
        return lambda: fw.F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return setup


def short_cases(h):
    out = []
    for name, b, heads, L, d, mask, causal, backward in (
            ("L129_h4_fwd_bwd", 16, 4, 129, 32, None, False, True),
            ("L129_b64_fwd", 64, 4, 129, 32, None, False, False),
            ("L63_fwd_bwd", 16, 4, 63, 32, None, False, True),
            ("L65_fwd_bwd", 16, 4, 65, 32, None, False, True),
            ("L200_fwd_bwd", 16, 4, 200, 32, None, False, True),
            ("L322_omni_fwd_bwd", 4, 8, 322, 64, "omni", False, True),
            ("L322_causal_fwd_bwd", 4, 8, 322, 64, None, True, True)):
        gemm = 2 * 2 * b * heads * L * L * d  # the forward's 2 GEMMs of 2·L·L·D; the backward's 5 are 2.5 times it
        flops = None if mask else gemm * (3.5 if backward else 1.0) / (2 if causal else 1)
        setup = _sdpa(causal) if backward else _sdpa_forward(causal)
        out.append(h.Case(f"sdpa_short_{name}", flops, _short_inputs(b, heads, L, d, mask), setup, setup))
    return out


def cases(h):
    out = []
    for L in (256, 1024):
        full = 2 * 2 * B * H * L * L * D * 3.5  # fwd 2 GEMMs, bwd 5: 7 GEMMs of 2·L·L·D
        for name, causal, mask, flops in (("", False, None, full), ("_causal", True, None, full / 2),
                                          ("_mask", False, "random", full), ("_omni", False, "omni", None)):
            out.append(h.Case(f"sdpa_L{L}{name}_fwd_bwd", flops, _inputs(L, mask), _sdpa(causal), _sdpa(causal),
                              report_peak=True))
    out.append(h.Case("rope_fwd_bwd", None, _rope_inputs, rope_mmu, rope_torch))
    return out + short_cases(h) + cached_cases(h)
