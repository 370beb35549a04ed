"""DepthTransformer: VILA-U's RQTransformer head (after kakaobrain/rq-vae-transformer), which predicts the
D residual codes of one visual position, one depth at a time, from the LLM's hidden state at the position
before it.

VILA-U's rqtransformer/modeling_rqtransformer.py (RQTransformer.forward / generate), read:

    x_0 = in_mlp_2(h)                                       h: the LLM's (final-normed) hidden state
    x_d = in_mlp_1(sum_{j < d} e_j(code_j)),  d = 1 .. D-1  e_j: the tower's codebook vector of code_j
    head_outputs = head_transformer([x_0 .. x_{D-1}] + pos_emb_d)   causal over the D depths
    logits_d = classifier_mlp(head_outputs_d)              (LayerNorm, Linear -> codebook_size)

so depth d sees the hidden state and the partial sums of the codes above it (the cumsum of the code
embeddings over depth, VILA-U's `torch.cumsum(depth_ctx, dim=-2)`), exactly what residual quantization
decodes to after d steps.

head_transformer's blocks are VILA-U's attention.py AttentionBlock: x + attn(ln1(x)), then x + mlp(ln2(x)),
causal multi-head attention with biases (separate query / key / value Linear layers, proj), an MLP
Linear(dim, 4 dim) -> exact GELU -> Linear(4 dim, dim) with biases, LayerNorm eps 1e-5, and dropout
resid_pdrop (0.1 by default) on both residual branches. Here each block is an mmu.nn.TransformerLayer with
that layout; VILA-U's names map onto mmu's as
    head_transformer.blocks.{i}.ln1 / ln2            -> head_transformer.{i}.norm1 / norm2
    ...attn.query / key / value (weights and biases) -> head_transformer.{i}.attn.qkv_proj ([q; k; v] rows)
    ...attn.proj                                     -> head_transformer.{i}.attn.out_proj
    ...mlp.0 / mlp.2                                 -> head_transformer.{i}.mlp.fc1 / fc2
and in_mlp_1, in_mlp_2, pos_emb_d, classifier_mlp.layer_norm, classifier_mlp.linear keep VILA-U's names.
"""
import collections

import numpy as np

from ...nn import KVCache, LayerNorm, Linear, Module, ModuleList, Sequential, TransformerLayer, init
from ...nn.parameter import Parameter
from ...tensor import _as_tensor, cat as _cat, cumsum as _cumsum
from ...tensor import tensor as _tensor
from ..._args import check_real
from ...nn._layer_args import _int

__all__ = ["DepthTransformer"]


class DepthTransformer(Module):
    """The depth transformer (VILA-U's RQTransformer): DepthTransformer(code_dim, body_dim, dim, num_layers,
    num_heads, depth, codebook_size, dropout=0.1, init_std=0.02).

    code_dim: C, the width of a code embedding (VILA-U's input_embed_dim_1); body_dim: the LLM's width
    (input_embed_dim_2); dim: the head's width (embed_dim); num_layers / num_heads: head_transformer's
    (head.n_layer / head.block.n_head); depth: D (block_size[2]); codebook_size: K (vocab_size).
    Modules: in_mlp_1 Linear(C, dim), in_mlp_2 Linear(body_dim, dim), pos_emb_d (1, D, dim),
    head_transformer (num_layers TransformerLayers, the module docstring has the layout and names),
    classifier_mlp (layer_norm, linear -> K). Linear weights start N(0, init_std) with zero biases (a GPT-style
    start; VILA-U's class keeps PyTorch's defaults and loads trained weights), pos_emb_d N(0, 0.02) as VILA-U.
    """

    def __init__(self, code_dim, body_dim, dim, num_layers, num_heads, depth, codebook_size, dropout=0.1,
                 init_std=0.02):
        super().__init__()
        cls = "DepthTransformer"
        self.code_dim = _int(code_dim, "code_dim", cls, 1)
        self.body_dim = _int(body_dim, "body_dim", cls, 1)
        self.dim = _int(dim, "dim", cls, 1)
        self.depth = _int(depth, "depth", cls, 1)
        self.codebook_size = _int(codebook_size, "codebook_size", cls, 2)
        num_layers = _int(num_layers, "num_layers", cls, 1)
        num_heads = _int(num_heads, "num_heads", cls, 1)
        if self.dim % num_heads:
            raise ValueError(f"{cls}: dim ({self.dim}) must be a multiple of num_heads ({num_heads})")
        dropout = check_real(dropout, cls, "dropout")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{cls}: dropout must be in [0, 1), got {dropout}")
        init_std = check_real(init_std, cls, "init_std")
        self.in_mlp_1 = Linear(self.code_dim, self.dim)
        self.in_mlp_2 = Linear(self.body_dim, self.dim)
        self.pos_emb_d = Parameter(_tensor(np.zeros((1, self.depth, self.dim), np.float32)))
        self.head_transformer = ModuleList([
            TransformerLayer(self.dim, num_heads, hidden_dim=4 * self.dim, activation="gelu", bias=True,
                             norm="layernorm", norm_eps=1e-5, residual="sequential", rotary_fraction=0.0,
                             dropout=dropout)
            for _ in range(num_layers)])
        for i, block in enumerate(self.head_transformer):
            block.attn.layer_idx = i  # its slot in a generation cache (new_cache)
        self.num_heads = num_heads
        self.classifier_mlp = Sequential(collections.OrderedDict([
            ("layer_norm", LayerNorm(self.dim, eps=1e-5)), ("linear", Linear(self.dim, self.codebook_size))]))
        for m in self.modules():
            if isinstance(m, Linear):
                init.normal_(m.weight, 0.0, float(init_std))
                if m.bias is not None:
                    init.zeros_(m.bias)
        init.normal_(self.pos_emb_d, 0.0, 0.02)

    def forward(self, hidden, code_embeddings=None, last_only=False):
        """Logits of the codes of each position.

        hidden (..., body_dim): the LLM's hidden state at the position before each visual position.
        code_embeddings (..., d, C), 0 <= d <= D (None: d = 0): e_j(code_j) of the first d depths, the
        tower's code_embeddings (not summed: the partial sums are taken here, VILA-U's cumsum).
        The head runs on L = min(d + 1, D) inputs [in_mlp_2(h), in_mlp_1(e_0), in_mlp_1(e_0 + e_1), ...]
        (with d = D, training: the last partial sum is not an input, as VILA-U's depth_ctx[:, :, :-1]).
        Returns (..., L, K) logits (depth j's logits at index j), or with last_only=True (..., K), the
        logits of depth L - 1 only (generation: VILA-U's head_outputs[:, -1, :]).
        """
        fn = "DepthTransformer"
        hidden = _as_tensor(hidden, fn, "hidden")
        if hidden.ndim < 2 or hidden.shape[-1] != self.body_dim:
            raise ValueError(f"{fn}: hidden must be (..., body_dim={self.body_dim}) with at least one leading "
                             f"dim, got {hidden.shape}")
        lead = tuple(hidden.shape[:-1])
        rows = int(np.prod(lead))
        d = 0
        if code_embeddings is not None:
            code_embeddings = _as_tensor(code_embeddings, fn, "code_embeddings")
            if code_embeddings.ndim != len(lead) + 2 or tuple(code_embeddings.shape[:-2]) != lead or \
                    code_embeddings.shape[-1] != self.code_dim or code_embeddings.shape[-2] > self.depth:
                raise ValueError(f"{fn}: code_embeddings must be (*{lead}, d <= D={self.depth}, "
                                 f"C={self.code_dim}) for hidden {hidden.shape}, got {code_embeddings.shape}")
            d = code_embeddings.shape[-2]
        length = min(d + 1, self.depth)
        x = self.in_mlp_2(hidden.reshape(rows, self.body_dim)).reshape(rows, 1, self.dim)
        if length > 1:
            e = code_embeddings.reshape(rows, d, self.code_dim)
            if d > length - 1:  # training: the sum of all D codes is no input
                e = e[:, :length - 1]
            ctx = self.in_mlp_1(_cumsum(e, 1))  # (rows, length - 1, dim): the partial sums above each depth
            x = _cat([x, ctx], 1)
        pos = self.pos_emb_d if length == self.depth else self.pos_emb_d[:, :length]
        x = x + pos
        for block in self.head_transformer:
            x = block(x, is_causal=True)
        if last_only:
            x = x.reshape(rows, self.dim) if length == 1 else x[:, length - 1]
            return self.classifier_mlp(x).reshape(lead + (self.codebook_size,))
        return self.classifier_mlp(x).reshape(lead + (length, self.codebook_size))

    def new_cache(self, rows):
        """An empty mmu.nn.KVCache for `rows` positions decoded together, one slot per depth (max_len D):
        step() writes one depth's keys and values at a time."""
        return KVCache(len(self.head_transformer), rows, self.num_heads, self.depth, self.dim // self.num_heads)

    def step(self, cache, hidden=None, code_sum=None):
        """Generation's short step on a cache: the logits (rows, K) of depth d = cache.length.

        d = 0: hidden (rows, body_dim), the LLM's state (input in_mlp_2(hidden)); d >= 1: code_sum (rows, C) =
        e_0 + ... + e_{d-1}, the partial sum of the codes chosen so far (input in_mlp_1(code_sum)). The depth's
        input + pos_emb_d[d] runs through head_transformer against the cached depths 0 .. d-1, then the cache
        advances by one. The logits equal forward(...)[..., d, :] on the same inputs (causal attention: a depth
        never sees the ones after it), with one input per step instead of VILA-U's d + 1 (it recomputes the
        prefix each depth). Run under mmu.no_grad()."""
        fn = "DepthTransformer.step"
        if not isinstance(cache, KVCache) or cache.num_layers != len(self.head_transformer) or \
                cache.max_len != self.depth or cache.head_dim != self.dim // self.num_heads:
            raise TypeError(f"{fn}: cache must come from this model's new_cache(rows), got {cache!r}")
        d = cache.length
        if d >= self.depth:
            raise ValueError(f"{fn}: the cache already holds all D={self.depth} depths; reset() it for the next "
                             "position")
        if (d == 0) != (hidden is not None) or (d > 0) != (code_sum is not None):
            raise ValueError(f"{fn}: depth {d} needs " + ("hidden (rows, body_dim)" if d == 0 else
                                                          "code_sum (rows, C), not hidden"))
        x, layer, width = (hidden, self.in_mlp_2, self.body_dim) if d == 0 else (code_sum, self.in_mlp_1, self.code_dim)
        x = _as_tensor(x, fn, "hidden" if d == 0 else "code_sum")
        if x.shape != (cache.batch_size, width):
            raise ValueError(f"{fn}: {'hidden' if d == 0 else 'code_sum'} must be (rows={cache.batch_size}, {width}), "
                             f"got {x.shape}")
        x = (layer(x) + self.pos_emb_d[0, d]).reshape(cache.batch_size, 1, self.dim)
        for block in self.head_transformer:
            x = block(x, is_causal=True, cache=cache)
        cache.advance(1)
        return self.classifier_mlp(x.reshape(cache.batch_size, self.dim))

    def extra_repr(self):
        return f"depth={self.depth}, codebook_size={self.codebook_size}"
