"""mmu.nn benchmarks: a ViT block (mmu.nn.TransformerBlock vs torch's
nn.TransformerEncoderLayer(norm_first=True, batch_first=True), same weights).

vit_block_train_step: forward + backward of one block, dim 384, 6 heads, MLP 1536,
batch 8 x 256 tokens, gelu, no dropout, grads of the input and of every parameter
(set to None before each step in both frameworks, so nothing accumulates).
vit_block_forward: the same block in eval mode under no_grad (torch takes its fused
inference fast path there).

normalize_*: F.normalize (p = 2) on the shapes of the l2-normalised tokenizers, forward alone (no_grad) and
forward + backward of the input: the q / k heads of OmniTokenizer's attention (4, 4, 192, 32) and TiTok's
cosine-VQ rows (4096, 12) over the last dim, and a channel dim that is not the last (16, 64, 64) over dim 1.
Before the row path (norm.c nz_row) mmu's last-dim case walked its column blocks at width 1; main against this
branch, alternating, 1 thread, ms (best of 5 x 30 calls, load 10-12 on 2 cores), mmu before -> after / torch:
    shape, dim             forward                      forward + backward
    (4096, 12), -1         0.60-0.79 -> 0.046 / 0.057   1.2-1.7 -> 0.10-0.28 / 0.64-0.98
    (4, 4, 192, 32), -1    0.51-1.13 -> 0.031 / 0.042   2.8-3.3 -> 0.066 / 0.88-1.5
    (768, 64), -1          0.23-0.48 -> 0.011 / 0.020   1.3-1.6 -> 0.025 / 0.32-0.47
    (16, 64, 64), 1        0.015 -> 0.015 / 0.16-0.30   0.045 -> 0.045 / 1.3
(the composed x / clamp(norm) that OmniTokenizer used meanwhile: 0.024-0.40 forward, 0.09-1.0 with backward)"""
import numpy as np

DIM, HEADS, MLP, BATCH, TOKENS = 384, 6, 1536, 8, 256


def _flops(train):
    b, l, d, f = BATCH, TOKENS, DIM, MLP
    fwd = 2 * b * l * d * (3 * d + d + 2 * f) + 2 * 2 * b * l * l * d
    return 3 * fwd if train else fwd


def _inputs(h):
    def make(rng):
        d, f = DIM, MLP
        u = lambda n, *s: ((rng.random(s, dtype=np.float32) * 2 - 1) / np.sqrt(n)).astype(np.float32)  # noqa: E731
        state = {
            "self_attn.in_proj_weight": u(d, 3 * d, d), "self_attn.in_proj_bias": np.zeros(3 * d, np.float32),
            "self_attn.out_proj.weight": u(d, d, d), "self_attn.out_proj.bias": np.zeros(d, np.float32),
            "linear1.weight": u(d, f, d), "linear1.bias": u(d, f),
            "linear2.weight": u(f, d, f), "linear2.bias": u(f, d),
            "norm1.weight": np.ones(d, np.float32), "norm1.bias": np.zeros(d, np.float32),
            "norm2.weight": np.ones(d, np.float32), "norm2.bias": np.zeros(d, np.float32),
        }
        return {"state": state, "x": h.randn(rng, BATCH, TOKENS, d), "g": h.randn(rng, BATCH, TOKENS, d)}
    return make


def _block(fw, d):
    if fw.name == "mmu":
        block = fw.mod.nn.TransformerBlock(DIM, HEADS, mlp_ratio=MLP / DIM)
        block.load_state_dict(d["state"])
    else:
        block = fw.mod.nn.TransformerEncoderLayer(DIM, HEADS, dim_feedforward=MLP, dropout=0.0, activation="gelu",
                                                  batch_first=True, norm_first=True)
        block.load_state_dict({k: fw.mod.tensor(v) for k, v in d["state"].items()})
    return block


def _train_step(h):
    def setup(fw, d):
        block = _block(fw, d)
        x, g = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["g"])
        return h.fwd_bwd([x] + list(block.parameters()), lambda: block(x), g)
    return setup


def _forward(fw, d):
    block = _block(fw, d).eval()
    x = fw.tensor(d["x"])

    def run():
        with fw.mod.no_grad():
            return block(x)
    return run


NORMALIZE_SHAPES = {"qk_heads": ((4, 4, 192, 32), -1), "codebook": ((4096, 12), -1), "dim1": ((16, 64, 64), 1)}


def _normalize_inputs(h, shape):
    return lambda rng: {"x": h.randn(rng, *shape), "g": h.randn(rng, *shape)}


def _normalize_fwd(dim):
    def setup(fw, d):
        x = fw.tensor(d["x"])

        def run():
            with fw.mod.no_grad():
                return fw.F.normalize(x, dim=dim)
        return run
    return setup


def _normalize_fwd_bwd(h, dim):
    def setup(fw, d):
        x, g = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["g"])
        return h.fwd_bwd([x], lambda: fw.F.normalize(x, dim=dim), g)
    return setup


def cases(h):
    norm_cases = []
    for name, (shape, dim) in NORMALIZE_SHAPES.items():
        norm_cases += [h.Case(f"normalize_{name}_forward", None, _normalize_inputs(h, shape), _normalize_fwd(dim),
                              _normalize_fwd(dim)),
                       h.Case(f"normalize_{name}_fwd_bwd", None, _normalize_inputs(h, shape),
                              _normalize_fwd_bwd(h, dim), _normalize_fwd_bwd(h, dim))]
    return norm_cases + [
        h.Case("vit_block_train_step", _flops(True), _inputs(h), _train_step(h), _train_step(h)),
        h.Case("vit_block_forward", _flops(False), _inputs(h), _forward, _forward),
    ]
