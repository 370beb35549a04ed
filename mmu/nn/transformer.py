"""Transformer blocks and models.

TransformerBlock: the pre-norm encoder block with torch.nn.TransformerEncoderLayer's names.
mmu's own composable parts (built on Attention and MLP): TransformerLayer (sequential or
parallel residual), TransformerLM (a decoder-only language model with a KV cache) and
ViTEncoder (patch embedding, learned or 2-D RoPE positions, extra learned tokens)."""
import numbers

import numpy as np

from .. import functional as F
from .._args import check_real, flag
from ..tensor import _as_tensor, cat as _cat, tensor as _tensor, where as _where
from . import init
from .attention import Attention, MultiheadAttention, _check_rows, take_rows
from ._layer_args import _int, _named_errors, _ntuple
from .containers import ModuleList
from .conv import Conv2d
from .kv_cache import KVCache
from .layers import Dropout, Embedding, Linear
from .mlp import MLP
from .norm import LayerNorm, RMSNorm
from .module import Module
from .parameter import Parameter

__all__ = ["TransformerBlock", "TransformerLayer", "TransformerLM", "ViTEncoder"]

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class TransformerBlock(Module):
    """Pre-norm transformer block on batch-first (B, L, D) input:

        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))

    Its submodules are named like torch.nn.TransformerEncoderLayer(d_model=dim,
    nhead=num_heads, dim_feedforward=int(mlp_ratio * dim), dropout, activation,
    batch_first=True, norm_first=True, bias=bias), so with qk_norm off the
    state_dict keys are the same and torch weights load directly.

    dropout applies to the two residual branches and the MLP hidden layer,
    attn_dropout to the attention weights (torch uses `dropout` for both).
    norm: 'layernorm' or 'rmsnorm'; qk_norm / rope: see MultiheadAttention.
    forward's attn_mask / key_padding_mask follow torch's convention
    (bool True = NOT allowed, or float additive)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, dropout=0.0, attn_dropout=0.0, qk_norm=False,
                 activation="gelu", norm_eps=1e-5, bias=True, norm="layernorm", rope=False, rope_base=10000.0):
        super().__init__()
        self.dim = _int(dim, "dim", "TransformerBlock", 1)
        if not isinstance(mlp_ratio, numbers.Real) or mlp_ratio <= 0:
            raise ValueError(f"TransformerBlock: mlp_ratio must be a positive number, got {mlp_ratio!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerBlock: activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        if norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"TransformerBlock: norm must be 'layernorm' or 'rmsnorm', got {norm!r}")
        hidden = int(mlp_ratio * dim)
        self.self_attn = MultiheadAttention(dim, num_heads, dropout=attn_dropout, bias=bias, batch_first=True,
                                            qk_norm=qk_norm, rope=rope, rope_base=rope_base)
        self.linear1 = Linear(dim, hidden, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(hidden, dim, bias=bias)
        if norm == "layernorm":
            self.norm1 = LayerNorm(dim, eps=norm_eps, bias=bias)
            self.norm2 = LayerNorm(dim, eps=norm_eps, bias=bias)
        else:
            self.norm1 = RMSNorm(dim, eps=norm_eps)
            self.norm2 = RMSNorm(dim, eps=norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation_name = activation
        self._act = _ACTIVATIONS[activation]

    def forward(self, x, attn_mask=None, is_causal=False, key_padding_mask=None, rope=None):
        h = self.norm1(x)
        h = self.self_attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=attn_mask,
                           is_causal=is_causal, rope=rope)[0]
        x = x + self.dropout1(h)
        h = self.linear2(self.dropout(self._act(self.linear1(self.norm2(x)))))
        return x + self.dropout2(h)

    def extra_repr(self):
        return f"activation={self.activation_name!r}"


def _norm(kind, dim, eps, cls):
    if not isinstance(kind, str):
        raise TypeError(f"{cls}: norm must be 'layernorm' or 'rmsnorm', got {type(kind).__name__}")
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"{cls}: norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


class TransformerLayer(Module):
    """One pre-norm transformer layer on (B, L, dim), built from Attention and MLP.

    residual='sequential' (LLaMA, ViT):
        x = x + dropout(attn(norm1(x)));  [x = x + dropout(cross_attn(norm_cross(x), context))];
        x = x + dropout(mlp(norm2(x)))
    residual='parallel' (Phi, GPT-J: ONE norm feeding both branches, no norm2):
        h = norm1(x);  x = x + dropout(attn(h)) + dropout(mlp(h))

    Submodules: norm1, attn (Attention), norm2 (sequential only), mlp (MLP: fc1, fc2, fc_gate
    for SwiGLU), and with cross_attention=True (sequential only) norm_cross and cross_attn
    (Attention(cross_attention=True, kv_dim=context_dim)). norm: 'layernorm' or 'rmsnorm'
    (eps norm_eps). hidden_dim: the MLP width (default 4 dim). bias: every Linear's bias.
    The attention arguments (num_kv_heads, head_dim, qk_norm, qk_norm_eps, rotary_fraction,
    rope_base, attn_dropout = dropout on the attention weights) go to Attention.
    """

    @_named_errors("TransformerLayer")
    def __init__(self, dim, num_heads, num_kv_heads=None, head_dim=None, hidden_dim=None, activation="gelu",
                 bias=True, norm="layernorm", norm_eps=1e-5, residual="sequential", qk_norm=None, qk_norm_eps=1e-5,
                 rotary_fraction=0.0, rope_base=10000.0, dropout=0.0, attn_dropout=0.0, cross_attention=False,
                 context_dim=None):
        super().__init__()
        cls = "TransformerLayer"
        self.dim = _int(dim, "dim", cls, 1)
        hidden_dim = 4 * self.dim if hidden_dim is None else _int(hidden_dim, "hidden_dim", cls, 1)
        if not isinstance(residual, str) or residual not in ("sequential", "parallel"):
            raise ValueError(f"TransformerLayer: residual must be 'sequential' or 'parallel', got {residual!r}")
        cross_attention = flag(cross_attention, cls, "cross_attention")
        if cross_attention and residual == "parallel":
            raise ValueError("TransformerLayer: cross_attention needs residual='sequential'")
        self.residual = residual
        self.norm1 = _norm(norm, self.dim, norm_eps, cls)
        self.attn = Attention(self.dim, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, bias=bias,
                              qk_norm=qk_norm, qk_norm_eps=qk_norm_eps, rotary_fraction=rotary_fraction,
                              rope_base=rope_base, dropout=attn_dropout)
        if cross_attention:
            self.norm_cross = _norm(norm, self.dim, norm_eps, cls)
            self.cross_attn = Attention(self.dim, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                                        bias=bias, qk_norm=qk_norm, qk_norm_eps=qk_norm_eps, cross_attention=True,
                                        kv_dim=context_dim if context_dim is not None else self.dim,
                                        dropout=attn_dropout)
        else:
            self.norm_cross = self.cross_attn = None
        self.norm2 = _norm(norm, self.dim, norm_eps, cls) if residual == "sequential" else None
        self.mlp = MLP(self.dim, hidden_dim, activation=activation, bias=bias)
        self.dropout = Dropout(dropout)

    @_named_errors("TransformerLayer")
    def forward(self, x, attn_mask=None, is_causal=False, rope=None, cache=None, context=None, context_mask=None,
                rows=None):
        """x (B, L, dim) -> (B, L, dim). attn_mask / is_causal / rope / cache: see Attention.forward;
        context (B, S, context_dim) and context_mask (bool/additive over S) for cross-attention.
        rows: an int (B, n) array of positions -> (B, n, dim), the layer's output at those positions
        only (every position still gives keys and values; the other rows' queries, MLP and residual
        are not computed): a last layer read at a few positions. Not with cache or cross-attention."""
        h = self.norm1(x)
        if rows is not None:
            if self.cross_attn is not None:
                raise ValueError("TransformerLayer: rows is not supported with cross-attention")
            rows = _check_rows(rows, x.shape[0], x.shape[1], "TransformerLayer")
            a = self.attn(h, attn_mask=attn_mask, is_causal=is_causal, rope=rope, cache=cache, rows=rows)
            x = take_rows(x, rows)
            if self.residual == "parallel":
                return x + self.dropout(a) + self.dropout(self.mlp(take_rows(h, rows)))
            x = x + self.dropout(a)
            return x + self.dropout(self.mlp(self.norm2(x)))
        a = self.attn(h, attn_mask=attn_mask, is_causal=is_causal, rope=rope, cache=cache)
        if self.residual == "parallel":
            return x + self.dropout(a) + self.dropout(self.mlp(h))
        x = x + self.dropout(a)
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("TransformerLayer: a layer with cross_attention needs context (B, S, context_dim)")
            x = x + self.dropout(self.cross_attn(self.norm_cross(x), context=context, attn_mask=context_mask))
        return x + self.dropout(self.mlp(self.norm2(x)))

    def extra_repr(self):
        return f"residual={self.residual!r}"


def _int_array(v, cls, name):
    """A tensor/array/list of integers -> int64 NumPy array (without a copy for int64 arrays)."""
    if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
        v = v.numpy()
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{cls}: {name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


class TransformerLM(Module):
    """A decoder-only language model: token embedding, [learned positions], num_layers
    TransformerLayer, a final norm and a head (tied to the embedding or separate).

    Submodules (names for weight converters): embed_tokens (Embedding(vocab_size, dim)),
    pos_embedding (Embedding(max_seq_len, dim), pos='learned' only), layers.{i} (TransformerLayer:
    norm1, attn.qkv_proj, attn.out_proj, [attn.q_norm, attn.k_norm], [norm2], mlp.fc1, mlp.fc2,
    [mlp.fc_gate]), norm (final), lm_head (Linear(dim, vocab_size, bias=head_bias)) unless
    tie_embeddings, where the logits use embed_tokens.weight (and lm_head_bias if head_bias).

    pos: 'rope' (rotary_fraction of head_dim rotates: 1.0 LLaMA, 0.5 Phi-1.5; base rope_base) or
    'learned' (GPT-2). Layer arguments: see TransformerLayer (residual 'parallel' for Phi).
    Weights start as GPT-2: N(0, init_std) for Linear and Embedding weights, zero biases.
    """

    @_named_errors("TransformerLM")
    def __init__(self, vocab_size, dim, num_layers, num_heads, num_kv_heads=None, head_dim=None, hidden_dim=None,
                 activation="gelu", bias=True, norm="layernorm", norm_eps=1e-5, residual="sequential",
                 qk_norm=None, qk_norm_eps=1e-5, pos="rope", rotary_fraction=1.0, rope_base=10000.0,
                 max_seq_len=2048, dropout=0.0, attn_dropout=0.0, tie_embeddings=False, head_bias=False,
                 init_std=0.02):
        super().__init__()
        cls = "TransformerLM"
        self.vocab_size = _int(vocab_size, "vocab_size", cls, 1)
        self.dim = _int(dim, "dim", cls, 1)
        self.num_layers = _int(num_layers, "num_layers", cls, 1)
        self.max_seq_len = _int(max_seq_len, "max_seq_len", cls, 1)
        if not isinstance(pos, str) or pos not in ("rope", "learned"):
            raise ValueError(f"TransformerLM: pos must be 'rope' or 'learned', got {pos!r}")
        self.pos = pos
        self.tie_embeddings = flag(tie_embeddings, cls, "tie_embeddings")
        head_bias = flag(head_bias, cls, "head_bias")
        init_std = check_real(init_std, cls, "init_std")
        self.embed_tokens = Embedding(self.vocab_size, self.dim)
        self.pos_embedding = Embedding(self.max_seq_len, self.dim) if pos == "learned" else None
        self.dropout = Dropout(dropout)
        self.layers = ModuleList([
            TransformerLayer(self.dim, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, hidden_dim=hidden_dim,
                             activation=activation, bias=bias, norm=norm, norm_eps=norm_eps, residual=residual,
                             qk_norm=qk_norm, qk_norm_eps=qk_norm_eps,
                             rotary_fraction=rotary_fraction if pos == "rope" else 0.0, rope_base=rope_base,
                             dropout=dropout, attn_dropout=attn_dropout)
            for _ in range(self.num_layers)])
        for i, layer in enumerate(self.layers):
            layer.attn.layer_idx = i
        attn = self.layers[0].attn
        self.num_heads, self.num_kv_heads, self.head_dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
        self.rotary_dim, self.rope_base = attn.rotary_dim, attn.rope_base
        self.norm = _norm(norm, self.dim, norm_eps, cls)
        if self.tie_embeddings:
            self.lm_head = None
            self.lm_head_bias = Parameter(_tensor(np.zeros(self.vocab_size, np.float32))) if head_bias else None
        else:
            self.lm_head = Linear(self.dim, self.vocab_size, bias=bool(head_bias))
            self.lm_head_bias = None
        std = float(init_std)
        for m in self.modules():
            if isinstance(m, (Linear, Embedding)):
                init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    init.zeros_(m.bias)

    def new_cache(self, batch_size, max_len):
        """An empty KVCache for batch_size rows of at most max_len positions (prompt + new tokens)."""
        if self.pos == "learned" and _int(max_len, "max_len", "TransformerLM.new_cache", 1) > self.max_seq_len:
            raise ValueError(f"TransformerLM.new_cache: max_len {max_len} exceeds the learned positions' "
                             f"max_seq_len {self.max_seq_len}")
        return KVCache(self.num_layers, batch_size, self.num_kv_heads, max_len, self.head_dim)

    def head(self, h):
        """Final hidden states (..., dim) (after the final norm) -> logits (..., vocab_size)."""
        if self.lm_head is not None:
            return self.lm_head(h)
        return F.linear(h, self.embed_tokens.weight, self.lm_head_bias)

    @_named_errors("TransformerLM")
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, logits_at="all",
                inputs_embeds=None, attn_mask=None):
        """Logits (or final hidden states) of a chunk of L tokens, after cache.length cached ones.

        input_ids (B, L) int64, or inputs_embeds (B, L, dim) instead.
        attention_mask (B, S_total) bool, True = a real token, over the cached and the new
            positions (S_total = cache.length + L): left-padded prompts. Default: all real.
        position_ids (B, L): default cumsum(attention_mask) - 1 over the last L columns (padding
            gets 1, as Hugging Face), or start .. start+L-1 without attention_mask.
        cache: a KVCache from new_cache; every layer writes its keys/values at cache.length,
            then the cache advances by L. Decoding with a cache runs under mmu.no_grad().
        logits_at: 'all' -> (B, L, V); 'last' -> (B, V) (only the last position's logits are
            computed); an int array (B, n) of positions in [0, L) -> (B, n, V); None -> the final
            hidden states (B, L, dim) after the final norm.
        attn_mask: an explicit (B|1, 1|H, L, S_total) bool (True = attend) or additive mask
            replacing the causal mask (e.g. Show-o's omni-attention); attention_mask's padding
            still applies.
        """
        cls = "TransformerLM"
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("TransformerLM: give exactly one of input_ids (B, L) and inputs_embeds (B, L, dim)")
        if input_ids is not None:
            input_ids = _as_tensor(input_ids, cls, "input_ids")
            if input_ids.ndim != 2 or input_ids.dtype != np.int64:
                raise ValueError(f"TransformerLM: input_ids must be (B, L) int64, got {input_ids.shape} "
                                 f"{input_ids.dtype}")
            x = self.embed_tokens(input_ids)
        else:
            x = _as_tensor(inputs_embeds, cls, "inputs_embeds")
            if x.ndim != 3 or x.shape[2] != self.dim:
                raise ValueError(f"TransformerLM: inputs_embeds must be (B, L, dim={self.dim}), got {x.shape}")
        b, l = x.shape[0], x.shape[1]
        if l == 0:
            raise ValueError("TransformerLM: the chunk is empty (L = 0)")
        # checked before any layer writes into the cache: a bad logits_at must not advance it
        logits_at = self._logits_index(logits_at, b, l)
        start = 0
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise TypeError(f"TransformerLM: cache must be a KVCache (from new_cache), got {type(cache).__name__}")
            if cache.batch_size != b or cache.num_layers != self.num_layers or \
                    cache.num_kv_heads != self.num_kv_heads or cache.head_dim != self.head_dim:
                raise ValueError(f"TransformerLM: {cache!r} does not fit this model and batch {b}")
            if cache.length + l > cache.max_len:
                raise ValueError(f"TransformerLM: {l} new positions after {cache.length} cached exceed the "
                                 f"cache's max_len {cache.max_len}")
            start = cache.length
        s_total = start + l
        am = None
        if attention_mask is not None:
            am = attention_mask.numpy() if hasattr(attention_mask, "numpy") and \
                not isinstance(attention_mask, np.ndarray) else np.asarray(attention_mask)
            if am.dtype != np.bool_ or am.shape != (b, s_total):
                raise ValueError(f"TransformerLM: attention_mask must be bool (B, cache.length + L) = "
                                 f"({b}, {s_total}), got {am.shape} {am.dtype}")
        if position_ids is not None:
            pos = _int_array(position_ids, cls, "position_ids")
            if pos.shape != (b, l):
                raise ValueError(f"TransformerLM: position_ids must be (B, L) = ({b}, {l}), got {pos.shape}")
            if pos.size and pos.min() < 0:
                raise ValueError("TransformerLM: position_ids must be >= 0")
        elif am is not None and not am.all():
            pos = np.where(am, np.cumsum(am, -1) - 1, 1)[:, start:]
        else:
            pos = np.arange(start, s_total)  # shared by every row
        if self.pos == "learned":
            if pos.max() >= self.max_seq_len:
                raise ValueError(f"TransformerLM: position {int(pos.max())} is beyond the learned positions "
                                 f"(max_seq_len {self.max_seq_len})")
            x = x + self.pos_embedding(_tensor(pos))
            rope = None
        elif self.rotary_dim:
            cos, sin = F.rotary_cos_sin(pos.reshape(-1), self.rotary_dim, self.rope_base)
            if pos.ndim == 2:  # per-row positions: (B, 1, L, R) tables broadcast over the heads
                cos, sin = cos.reshape(b, 1, l, self.rotary_dim), sin.reshape(b, 1, l, self.rotary_dim)
            rope = (cos, sin)
        else:
            rope = None
        mask = None
        if am is not None and not am.all():
            mask = _tensor(am.reshape(b, 1, 1, s_total))
        is_causal = attn_mask is None
        if attn_mask is not None:
            attn_mask = _as_tensor(attn_mask, cls, "attn_mask")
            if attn_mask.dtype != np.bool_ and attn_mask.dtype != np.float32:
                raise TypeError(f"TransformerLM: attn_mask must be bool or float32, got {attn_mask.dtype}")
            if attn_mask.ndim != 4 or attn_mask.shape[0] not in (1, b) or attn_mask.shape[1] not in \
                    (1, self.num_heads) or attn_mask.shape[2:] != (l, s_total):
                raise ValueError(f"TransformerLM: attn_mask must be (B|1, 1|H, L, S_total) = ({b}|1, 1|"
                                 f"{self.num_heads}, {l}, {s_total}), got {attn_mask.shape}")
            if mask is None:
                mask = attn_mask
            elif attn_mask.dtype == np.bool_:
                mask = attn_mask & mask
            else:
                mask = attn_mask + _where(mask, 0.0, float("-inf"))
        x = self.dropout(x)
        rows = self._last_layer_rows(logits_at, l, cache, mask)
        for i, layer in enumerate(self.layers):
            last = rows is not None and i == len(self.layers) - 1
            x = layer(x, attn_mask=mask, is_causal=is_causal, rope=rope, cache=cache, rows=rows if last else None)
        if cache is not None:
            cache.advance(l)
        if rows is not None:  # x is already (B, n, dim) at the positions asked for
            return self.head(self.norm(x))
        return self._logits(x, logits_at)

    def _last_layer_rows(self, logits_at, l, cache, mask):
        """The positions the last layer must compute when logits are asked at an index array: only
        those rows reach the logits, so the last layer skips the others' queries, MLP and residual
        (exact: no other output depends on them). None (every row) with a cache (the cache path keeps
        its own layout), when the index covers L rows or more, with a mask that requires grad, or
        with dropout in training (its draws would be shaped differently)."""
        if cache is not None or logits_at is None or isinstance(logits_at, str) or logits_at.shape[1] >= l:
            return None
        if mask is not None and mask.requires_grad:
            return None
        last = self.layers[-1]
        if self.training and (last.dropout.p > 0.0 or last.attn.dropout > 0.0):
            return None
        return logits_at

    @staticmethod
    def _logits_index(logits_at, b, l):
        """logits_at checked: None, 'all', 'last' or an int64 (B, n) array of positions in [0, L)."""
        if logits_at is None:
            return None
        if isinstance(logits_at, str):
            if logits_at in ("all", "last"):
                return logits_at
            raise ValueError(f"TransformerLM: logits_at must be 'all', 'last', None or an index array (B, n), "
                             f"got {logits_at!r}")
        idx = _int_array(logits_at, "TransformerLM", "logits_at")
        if idx.ndim != 2 or idx.shape[0] != b:
            raise ValueError(f"TransformerLM: logits_at must be an index array (B={b}, n), got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= l):
            raise ValueError(f"TransformerLM: logits_at positions must be in [0, L={l})")
        return idx

    def _logits(self, h, logits_at):
        b, l, d = h.shape
        if logits_at is None:
            return self.norm(h)
        if isinstance(logits_at, str):
            if logits_at == "all":
                return self.head(self.norm(h))
            last = h.reshape(b, d) if l == 1 else h[:, l - 1]
            return self.head(self.norm(last))
        idx = self._logits_index(logits_at, b, l)
        flat = (idx + np.arange(b)[:, None] * l).reshape(-1)
        picked = h.reshape(b * l, d).index_select(0, _tensor(flat)).reshape(b, idx.shape[1], d)
        return self.head(self.norm(picked))

    def extra_repr(self):
        return f"vocab_size={self.vocab_size}, pos={self.pos!r}, tie_embeddings={self.tie_embeddings}"


class ViTEncoder(Module):
    """A Vision Transformer encoder: images (B, C, H, W) -> tokens (B, num_extra_tokens + N, dim),
    N = floor(H / patch) floor(W / patch) patches in row-major order.

    patch_embed: Conv2d(in_channels, dim, patch_size, stride=patch_size); extra_tokens
    (1, num_extra_tokens, dim): learned tokens prepended (a CLS token, or TiTok's latent tokens);
    pos='learned': pos_embedding (1, num_extra_tokens + N, dim) added to every token (CLIP's
    layout: the class position first); pos='rope2d': 2-D rotary embeddings over each head (row in
    the first head_dim/4 pairs, column in the next), the extra tokens unrotated (any image size of at
    least one patch). As the stride-patch convolution of SigLIP / CLIP, the last H mod patch rows and
    W mod patch columns fill no patch and are not read (SigLIP so400m-patch14-384: 27 x 27 patches
    of a 384-px image). pre_norm (CLIP's pre_layrnorm) optional; layers.{i}: pre-norm
    TransformerLayer without causal mask; norm: the final norm (final_norm=True).
    """

    @_named_errors("ViTEncoder")
    def __init__(self, image_size, patch_size, in_channels=3, dim=768, depth=12, num_heads=12, num_kv_heads=None,
                 hidden_dim=None, activation="gelu", bias=True, norm="layernorm", norm_eps=1e-6, qk_norm=None,
                 pos="learned", rope_base=10000.0, num_extra_tokens=0, final_norm=True, pre_norm=False,
                 dropout=0.0, attn_dropout=0.0):
        super().__init__()
        cls = "ViTEncoder"
        self.image_size = _ntuple(image_size, 2, "image_size", cls, 1)
        self.patch_size = _ntuple(patch_size, 2, "patch_size", cls, 1)
        if self.image_size[0] < self.patch_size[0] or self.image_size[1] < self.patch_size[1]:
            raise ValueError(f"ViTEncoder: image_size {self.image_size} is smaller than one patch {self.patch_size}")
        self.grid = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.dim = _int(dim, "dim", cls, 1)
        self.in_channels = _int(in_channels, "in_channels", cls, 1)
        self.num_extra_tokens = _int(num_extra_tokens, "num_extra_tokens", cls, 0)
        if not isinstance(pos, str) or pos not in ("learned", "rope2d"):
            raise ValueError(f"ViTEncoder: pos must be 'learned' or 'rope2d', got {pos!r}")
        self.pos = pos
        self.rope_base = check_real(rope_base, cls, "rope_base")
        pre_norm, final_norm = flag(pre_norm, cls, "pre_norm"), flag(final_norm, cls, "final_norm")
        self.patch_embed = Conv2d(self.in_channels, self.dim, self.patch_size, stride=self.patch_size, bias=bias)
        if self.num_extra_tokens:
            self.extra_tokens = Parameter(_tensor(np.zeros((1, self.num_extra_tokens, self.dim), np.float32)))
            init.normal_(self.extra_tokens, 0.0, 0.02)
        else:
            self.extra_tokens = None
        if pos == "learned":
            n = self.num_extra_tokens + self.grid[0] * self.grid[1]
            self.pos_embedding = Parameter(_tensor(np.zeros((1, n, self.dim), np.float32)))
            init.normal_(self.pos_embedding, 0.0, 0.02)
        else:
            self.pos_embedding = None
        self.pre_norm = _norm(norm, self.dim, norm_eps, cls) if pre_norm else None
        self.layers = ModuleList([
            TransformerLayer(self.dim, num_heads, num_kv_heads=num_kv_heads, hidden_dim=hidden_dim,
                             activation=activation, bias=bias, norm=norm, norm_eps=norm_eps, qk_norm=qk_norm,
                             dropout=dropout, attn_dropout=attn_dropout)
            for _ in range(_int(depth, "depth", cls, 1))])
        self.head_dim = self.layers[0].attn.head_dim
        if pos == "rope2d" and self.head_dim % 4:
            raise ValueError(f"ViTEncoder: pos='rope2d' needs head_dim a multiple of 4, got {self.head_dim}")
        self.norm = _norm(norm, self.dim, norm_eps, cls) if final_norm else None

    def _rope2d(self, gh, gw):
        """(cos, sin) (E + gh gw, head_dim): the extra tokens' rows the identity rotation."""
        rows, cols = np.divmod(np.arange(gh * gw), gw)
        cos, sin = F.rotary_cos_sin(np.stack([rows, cols], 1), self.head_dim, self.rope_base)
        if not self.num_extra_tokens:
            return cos, sin
        e = self.num_extra_tokens
        c = np.concatenate([np.ones((e, self.head_dim), np.float32), cos.numpy()])
        s = np.concatenate([np.zeros((e, self.head_dim), np.float32), sin.numpy()])
        return _tensor(c), _tensor(s)

    @_named_errors("ViTEncoder")
    def forward(self, images):
        """images (B, in_channels, H, W) -> (B, num_extra_tokens + floor(H/p) floor(W/p), dim)."""
        images = _as_tensor(images, "ViTEncoder", "images")
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ViTEncoder: images must be (B, {self.in_channels}, H, W), got {images.shape}")
        hgt, wid = images.shape[2:]
        if hgt < self.patch_size[0] or wid < self.patch_size[1]:
            raise ValueError(f"ViTEncoder: the image size {(hgt, wid)} is smaller than one patch {self.patch_size}")
        if self.pos == "learned" and (hgt, wid) != self.image_size:
            raise ValueError(f"ViTEncoder: learned positions need images of {self.image_size}, got {(hgt, wid)}")
        b = images.shape[0]
        x = self.patch_embed(images)  # (B, dim, gh, gw)
        gh, gw = x.shape[2], x.shape[3]
        x = x.reshape(b, self.dim, gh * gw).transpose(1, 2)  # (B, N, dim)
        if self.extra_tokens is not None:
            x = _cat([self.extra_tokens.expand(b, self.num_extra_tokens, self.dim), x], 1)
        rope = None
        if self.pos_embedding is not None:
            x = x + self.pos_embedding
        else:
            rope = self._rope2d(gh, gw)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for layer in self.layers:
            x = layer(x, rope=rope)
        return self.norm(x) if self.norm is not None else x

    def extra_repr(self):
        return (f"image_size={self.image_size}, patch_size={self.patch_size}, pos={self.pos!r}, "
                f"num_extra_tokens={self.num_extra_tokens}")
