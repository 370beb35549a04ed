"""MultiheadAttention (torch.nn.MultiheadAttention's parameters, init, masks and
returns) with two mmu extensions used by modern ViTs and unified models:
QK-norm (a norm over head_dim on queries and keys) and rotary position
embeddings; RotaryEmbedding, the cos/sin helper; and Attention, mmu's own layer for
transformer models (grouped-query heads, partial RoPE, QK-norm, cross-attention, KV cache)."""
import math
import numbers

import numpy as np

from .. import functional as F
from .._args import flag
from ..tensor import _as_tensor, arange as _arange, ones as _ones, tril as _tril, where as _where
from . import init
from ._layer_args import _int, _named_errors, _param
from .layers import Linear
from .norm import LayerNorm, RMSNorm
from .module import Module

__all__ = ["Attention", "MultiheadAttention", "RotaryEmbedding"]


class RotaryEmbedding(Module):
    """cos/sin tables of rotary position embeddings for heads of size head_dim
    (no parameters). forward(positions) takes int64/float positions (L,) for
    1-D RoPE or (L, 2) (row, col) for 2-D image-grid RoPE, or an int L for
    positions 0..L-1, and returns (cos, sin) for F.apply_rotary."""

    def __init__(self, head_dim, base=10000.0):
        super().__init__()
        self.head_dim = _int(head_dim, "head_dim", "RotaryEmbedding", 2)
        if self.head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        self.base = float(base)
        self._cache = {}

    def forward(self, positions):
        if isinstance(positions, numbers.Integral):
            key = int(positions)
            if key not in self._cache:
                if len(self._cache) > 8:
                    self._cache.clear()
                self._cache[key] = F.rotary_cos_sin(_arange(key), self.head_dim, self.base)
            return self._cache[key]
        return F.rotary_cos_sin(positions, self.head_dim, self.base)

    def extra_repr(self):
        return f"head_dim={self.head_dim}, base={self.base}"


def _merge_masks(attn_mask, key_padding_mask, n, h, l, s, is_causal):
    """torch's masks (bool True = NOT allowed, or float additive; attn_mask (L, S)
    or (N*H, L, S), key_padding_mask (N, S)) -> one mask for scaled_dot_product_attention
    (bool True = attend, or float additive) broadcastable to (N, H, L, S), and the
    is_causal flag to pass on."""
    masks = []
    if attn_mask is not None:
        attn_mask = _as_tensor(attn_mask, "MultiheadAttention", "attn_mask")
        if attn_mask.ndim == 2:
            if attn_mask.shape != (l, s):
                raise ValueError(f"MultiheadAttention: the shape of the 2D attn_mask is {attn_mask.shape}, "
                                 f"but should be {(l, s)}")
        elif attn_mask.ndim == 3:
            if attn_mask.shape != (n * h, l, s):
                raise ValueError(f"MultiheadAttention: the shape of the 3D attn_mask is {attn_mask.shape}, "
                                 f"but should be {(n * h, l, s)}")
            attn_mask = attn_mask.reshape(n, h, l, s)
        else:
            raise ValueError(f"MultiheadAttention: attn_mask's dimension {attn_mask.ndim} is not supported "
                             "(2-D (L, S) or 3-D (N*num_heads, L, S))")
        masks.append(attn_mask)
        is_causal = False  # an explicit mask wins (torch treats is_causal as a hint then)
    elif is_causal and key_padding_mask is not None:
        masks.append(~_tril(_ones(l, s, dtype=np.bool_)))
        is_causal = False
    if key_padding_mask is not None:
        kpm = _as_tensor(key_padding_mask, "MultiheadAttention", "key_padding_mask")
        if kpm.shape != (n, s):
            raise ValueError(f"MultiheadAttention: expected key_padding_mask of shape {(n, s)}, got {kpm.shape}")
        masks.append(kpm.reshape(n, 1, 1, s))
    for m in masks:
        if m.dtype != np.float32 and m.dtype != np.bool_:
            raise TypeError(f"MultiheadAttention: only bool and float masks are supported, got {m.dtype}")
    if not masks:
        return None, is_causal
    if all(m.dtype == np.bool_ for m in masks):
        allowed = ~masks[0]
        for m in masks[1:]:
            allowed = allowed & ~m
        return allowed, is_causal
    additive = None
    for m in masks:
        m = _where(m, float("-inf"), 0.0) if m.dtype == np.bool_ else m
        additive = m if additive is None else additive + m
    return additive, is_causal


def _attention_weights(q, k, v, mask, is_causal, dropout_p):
    """The materialising path (need_weights=True): softmax(q kᵀ / sqrt(d) + mask) v, and the weights."""
    l, s = q.shape[-2], k.shape[-2]
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if is_causal:
        mask = _tril(_ones(l, s, dtype=np.bool_))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == np.bool_ else scores + mask
    weights = F.softmax(scores, -1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p, True)
    return weights @ v, weights


class MultiheadAttention(Module):
    """Multi-head attention with torch.nn.MultiheadAttention's parameters
    (in_proj_weight (3E, E) xavier-uniform, in_proj_bias zeros, out_proj;
    q/k/v_proj_weight when kdim/vdim differ from embed_dim), arguments and
    returns. forward(query, key, value, ...) -> (output, weights or None).

    Masks follow torch: attn_mask (L, S) or (N*num_heads, L, S) and
    key_padding_mask (N, S), bool True = NOT allowed, or float (added to the
    scores). need_weights=False runs mmu's fused scaled_dot_product_attention;
    need_weights=True (torch's default) materialises the weights to return them.

    mmu extensions: qk_norm=True adds q_norm / k_norm (RMSNorm or LayerNorm over
    head_dim, qk_norm_type='rmsnorm' | 'layernorm') applied to queries and keys
    per head; rope=True applies 1-D rotary embeddings over positions 0..L-1
    (a RotaryEmbedding `rotary`), and forward(..., rope=(cos, sin)) applies the
    given tables (e.g. 2-D grid RoPE) with or without rope=True."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, qk_norm=False, qk_norm_type="rmsnorm",
                 qk_norm_eps=1e-6, rope=False, rope_base=10000.0):
        super().__init__()
        self.embed_dim = _int(embed_dim, "embed_dim", "MultiheadAttention", 1)
        self.num_heads = _int(num_heads, "num_heads", "MultiheadAttention", 1)
        self.kdim = self.embed_dim if kdim is None else _int(kdim, "kdim", "MultiheadAttention", 1)
        self.vdim = self.embed_dim if vdim is None else _int(vdim, "vdim", "MultiheadAttention", 1)
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported in mmu")
        self.add_zero_attn = False
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _param(3 * e, e)
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = _param(e, e)
            self.k_proj_weight = _param(e, self.kdim)
            self.v_proj_weight = _param(e, self.vdim)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = _param(3 * e)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bias)
        self.bias_k = self.bias_v = None
        if qk_norm:
            if qk_norm_type not in ("rmsnorm", "layernorm"):
                raise ValueError(f"MultiheadAttention: qk_norm_type must be 'rmsnorm' or 'layernorm', "
                                 f"got {qk_norm_type!r}")
            norm = RMSNorm if qk_norm_type == "rmsnorm" else LayerNorm
            self.q_norm = norm(self.head_dim, eps=qk_norm_eps)
            self.k_norm = norm(self.head_dim, eps=qk_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.qk_norm = bool(qk_norm)
        self.rotary = RotaryEmbedding(self.head_dim, rope_base) if rope else None
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _project(self, query, key, value):
        """(N, L, E), (N, S, kdim), (N, S, vdim) -> q (N, L, E), k, v (N, S, E)."""
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def _heads(self, x, norm):
        """(N, L, E) -> (N, H, L, head_dim), with the QK-norm over head_dim if any."""
        n, l, _ = x.shape
        x = x.reshape(n, l, self.num_heads, self.head_dim)
        if norm is not None:
            x = norm(x)
        return x.permute(0, 2, 1, 3)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False, rope=None):
        query = _as_tensor(query, "MultiheadAttention", "query")
        key = _as_tensor(key, "MultiheadAttention", "key")
        value = _as_tensor(value, "MultiheadAttention", "value")
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key and value must all be 3-D (batched) or 2-D "
                             f"(unbatched), got {query.shape}, {key.shape}, {value.shape}")
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = _as_tensor(key_padding_mask, "MultiheadAttention", "key_padding_mask").unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, l, eq = query.shape
        s = key.shape[1]
        if eq != self.embed_dim:
            raise ValueError(f"MultiheadAttention: was expecting embedding dimension of {self.embed_dim}, "
                             f"but got {eq}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != n:
            raise ValueError(f"MultiheadAttention: key {key.shape} and value {value.shape} must have the same "
                             f"batch and sequence sizes, matching query {query.shape}")
        if key.shape[2] != self.kdim or value.shape[2] != self.vdim:
            raise ValueError(f"MultiheadAttention: key/value feature sizes {key.shape[2]}/{value.shape[2]} do not "
                             f"match kdim/vdim {self.kdim}/{self.vdim}")
        mask, causal = _merge_masks(attn_mask, key_padding_mask, n, self.num_heads, l, s, is_causal)
        q, k, v = self._project(query, key, value)
        q, k, v = self._heads(q, self.q_norm), self._heads(k, self.k_norm), self._heads(v, None)
        if rope is None and self.rotary is not None:
            if l == s:
                rope = self.rotary(l)
            else:  # queries at the end of the keys (a block attending to a cached prefix)
                rope = (self.rotary(_arange(s - l, s)), self.rotary(s))
        if rope is not None:
            if isinstance(rope, tuple) and len(rope) == 2 and isinstance(rope[0], tuple):
                (qcos, qsin), (kcos, ksin) = rope
            else:
                (qcos, qsin), (kcos, ksin) = rope, rope
            q, k = F.apply_rotary(q, qcos, qsin), F.apply_rotary(k, kcos, ksin)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = _attention_weights(q, k, v, mask, causal, dropout_p)
            if average_attn_weights:
                weights = weights.mean(1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
            weights = None
        out = out.permute(0, 2, 1, 3).reshape(n, l, self.embed_dim)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self):
        s = ""
        if self.qk_norm:
            s += "qk_norm=True"
        if self.rotary is not None:
            s += (", " if s else "") + "rope=True"
        return s


def _sdpa(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0, enable_gqa=False, query_offset=0, kv_len=None):
    """Attention's one call into scaled_dot_product_attention: q (B, H, L, E) against the first
    kv_len positions of k, v (B, H_kv, S_buf, E), read in place from a cache's buffers; query
    row i sits at key position query_offset + i (causal: key j visible iff j <= query_offset + i);
    attn_mask (bool True = attend, or additive, broadcastable to (B, H, L, kv_len)) applies
    together with is_causal."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                          enable_gqa=enable_gqa, query_offset=query_offset, kv_len=kv_len)


_QK_NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def _check_rows(rows, b, l, cls):
    """rows: an int (B, n) array of positions in [0, L) (n >= 1) -> int64 NumPy array."""
    if hasattr(rows, "numpy") and not isinstance(rows, np.ndarray):
        rows = rows.numpy()
    r = np.asarray(rows)
    if r.dtype.kind not in "iu" or r.ndim != 2 or r.shape[0] != b or r.shape[1] == 0:
        raise ValueError(f"{cls}: rows must be an integer (B={b}, n >= 1) array of positions, got {r.dtype} {r.shape}")
    if r.min() < 0 or r.max() >= l:
        raise ValueError(f"{cls}: rows must be positions in [0, L={l}), got values in [{r.min()}, {r.max()}]")
    return r.astype(np.int64, copy=False)


def take_rows(t, rows, dim=1):
    """t (B, L, ...) -> (B, n, ...): row rows[b, i] of batch b, rows (B, n) int64 positions
    (differentiable: one index_select). dim=2: t (B, G, L, ...) (heads before positions) and every
    group of a batch takes that batch's rows -> (B, G, n, ...)."""
    b, n = rows.shape
    groups = t.shape[1] if dim == 2 else 1
    l = t.shape[dim]
    flat = (rows[:, None, :] + (np.arange(b * groups) * l).reshape(b, groups, 1)).reshape(-1)
    rest = t.shape[dim + 1:]
    out = t.reshape((b * groups * l,) + rest).index_select(0, _as_tensor(flat, "take_rows", "rows"))
    return out.reshape((b,) + ((groups,) if dim == 2 else ()) + (n,) + rest)


def _table_rows(table, rows):
    """A RoPE table (L, R) or (B|1, 1, L, R) -> (B, 1, n, R) at the rows of each batch."""
    t = table.numpy() if hasattr(table, "numpy") and not isinstance(table, np.ndarray) else np.asarray(table)
    b, n = rows.shape
    if t.ndim == 2:
        return _as_tensor(np.ascontiguousarray(t[rows][:, None]), "Attention", "rope")
    t = np.broadcast_to(t, (b,) + t.shape[1:])
    return _as_tensor(np.ascontiguousarray(np.take_along_axis(t, rows[:, None, :, None], axis=2)), "Attention",
                      "rope")


def _mask_rows(mask, rows, is_causal, s):
    """The attention mask of the query rows rows (B, n) against s keys: attn_mask (broadcastable to
    (B, H, L, s), bool or additive; None) restricted to those rows, and the causal mask of their
    positions (key j <= rows[b, i]) when is_causal -> (B, 1|H, n, s) (or a mask without a row dim as
    it was)."""
    b, n = rows.shape
    out = None
    if mask is not None:
        m = mask.numpy()
        m = m.reshape((1,) * (4 - m.ndim) + m.shape)
        if m.shape[2] == 1:
            out = m  # broadcast over the query rows: the same for any row
        else:
            m = np.broadcast_to(m, (b,) + m.shape[1:])
            out = np.take_along_axis(m, rows[:, None, :, None], axis=2)
    if is_causal:
        allowed = np.arange(s)[None, None, None, :] <= rows[:, None, :, None]
        if out is None:
            out = allowed
        elif out.dtype == np.bool_:
            out = out & allowed
        else:
            out = out + np.where(allowed, np.float32(0.0), np.float32(-np.inf))
    return None if out is None else _as_tensor(np.ascontiguousarray(out), "Attention", "attn_mask")


class Attention(Module):
    """mmu's attention layer for transformer models: grouped-query heads, full or partial RoPE
    (1-D or 2-D positions via precomputed tables), QK-norm, optional biases, cross-attention,
    and a KV cache. Batch-first: x (B, L, dim) -> (B, L, dim).

    Heads: num_heads query heads, num_kv_heads key/value heads (default num_heads; a divisor of
    it: GQA, query head h uses key/value head h // (num_heads // num_kv_heads), without copies),
    each of head_dim (default dim // num_heads).

    Parameters (names for weight converters):
      self-attention: qkv_proj, one fused Linear(dim, (num_heads + 2 num_kv_heads) head_dim):
        its output rows are [q (num_heads head_dim); k (num_kv_heads head_dim); v (...)], each
        head-major (row h head_dim + d), i.e. cat([W_q, W_k, W_v], 0) of the published separate
        q/k/v projections (LLaMA's q_proj/k_proj/v_proj, Phi's q_proj/k_proj/v_proj);
      cross-attention: q_proj Linear(dim, num_heads head_dim) and kv_proj Linear(kv_dim,
        2 num_kv_heads head_dim) with rows [k; v];
      out_proj Linear(num_heads head_dim, dim) (Phi's dense, LLaMA's o_proj), bias out_bias
        (default: bias);
      q_norm, k_norm: LayerNorm or RMSNorm over head_dim (qk_norm='layernorm'|'rmsnorm', eps
        qk_norm_eps), applied per head to queries and keys before RoPE.

    RoPE: rotary_fraction of head_dim rotates (0 none, 1 all, 0.5 Phi-1.5's partial: the first
    R = int(rotary_fraction head_dim) dims of every head, rotate-half pairs (j, j + R/2)); base
    rope_base. forward(..., rope=(cos, sin)) takes tables (L, R) or per batch (B, 1, L, R) (e.g.
    2-D grid positions, or left-padded batches); without them the layer uses positions
    start .. start+L-1 (start = cache.length, or 0).
    """

    @_named_errors("Attention")
    def __init__(self, dim, num_heads, num_kv_heads=None, head_dim=None, bias=True, qk_norm=None,
                 qk_norm_eps=1e-5, rotary_fraction=0.0, rope_base=10000.0, cross_attention=False, kv_dim=None,
                 dropout=0.0, out_bias=None):
        super().__init__()
        cls = "Attention"
        self.dim = _int(dim, "dim", cls, 1)
        self.num_heads = _int(num_heads, "num_heads", cls, 1)
        self.num_kv_heads = self.num_heads if num_kv_heads is None else _int(num_kv_heads, "num_kv_heads", cls, 1)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"Attention: num_heads ({num_heads}) must be a multiple of num_kv_heads "
                             f"({num_kv_heads})")
        if head_dim is None:
            if self.dim % self.num_heads:
                raise ValueError(f"Attention: dim ({dim}) must be divisible by num_heads ({num_heads}) unless "
                                 "head_dim is given")
            head_dim = self.dim // self.num_heads
        self.head_dim = _int(head_dim, "head_dim", cls, 1)
        if not isinstance(rotary_fraction, numbers.Real) or not 0.0 <= rotary_fraction <= 1.0:
            raise ValueError(f"Attention: rotary_fraction must be in [0, 1], got {rotary_fraction!r}")
        self.rotary_fraction = float(rotary_fraction)
        self.rotary_dim = int(self.head_dim * self.rotary_fraction)
        if self.rotary_dim % 2:
            raise ValueError(f"Attention: the rotary width int(head_dim {self.head_dim} x rotary_fraction "
                             f"{rotary_fraction}) = {self.rotary_dim} must be even")
        if not isinstance(rope_base, numbers.Real) or not rope_base > 0:
            raise ValueError(f"Attention: rope_base must be a positive number, got {rope_base!r}")
        self.rope_base = float(rope_base)
        if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"Attention: dropout must be in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        self.cross_attention = flag(cross_attention, cls, "cross_attention")
        if kv_dim is not None and not self.cross_attention:
            raise ValueError("Attention: kv_dim is for cross_attention=True")
        self.kv_dim = self.dim if kv_dim is None else _int(kv_dim, "kv_dim", cls, 1)
        if self.cross_attention and self.rotary_dim:
            raise ValueError("Attention: rotary embeddings are not supported with cross_attention (queries and "
                             "context have unrelated positions)")
        bias = flag(bias, cls, "bias")
        out_bias = bias if out_bias is None else flag(out_bias, cls, "out_bias")
        hq, hkv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.cross_attention:
            self.q_proj = Linear(self.dim, hq, bias=bias)
            self.kv_proj = Linear(self.kv_dim, 2 * hkv, bias=bias)
            self.qkv_proj = None
        else:
            self.qkv_proj = Linear(self.dim, hq + 2 * hkv, bias=bias)
            self.q_proj = self.kv_proj = None
        self.out_proj = Linear(hq, self.dim, bias=out_bias)
        if qk_norm is not None and (not isinstance(qk_norm, str) or qk_norm not in _QK_NORMS):
            raise ValueError(f"Attention: qk_norm must be 'layernorm', 'rmsnorm' or None, got {qk_norm!r}")
        self.qk_norm = qk_norm
        if qk_norm is not None:
            self.q_norm = _QK_NORMS[qk_norm](self.head_dim, eps=qk_norm_eps)
            self.k_norm = _QK_NORMS[qk_norm](self.head_dim, eps=qk_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.layer_idx = 0  # the cache slot; TransformerLM numbers its layers

    def _split_heads(self, y, n_heads):
        """(B, L, n_heads head_dim) -> (B, n_heads, L, head_dim)."""
        b, l, _ = y.shape
        if l == 1:  # the same memory order: no copy
            return y.reshape(b, n_heads, 1, self.head_dim)
        return y.reshape(b, l, n_heads, self.head_dim).permute(0, 2, 1, 3)

    def _project(self, x, context, rows=None):
        """-> q (B, H, L, hd) (or (B, H, n, hd) at rows (B, n)), k, v (B, H_kv, S, hd)."""
        h, hkv = self.num_heads, self.num_kv_heads
        if self.qkv_proj is not None:
            qkv = self._split_heads(self.qkv_proj(x), h + 2 * hkv)  # (B, H + 2 H_kv, L, hd)
            q, k, v = qkv.split([h, hkv, hkv], dim=1)
        else:
            q = self._split_heads(self.q_proj(x), h)
            k, v = self._split_heads(self.kv_proj(context), 2 * hkv).split([hkv, hkv], dim=1)
        if rows is not None:
            q = take_rows(q, rows, dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    @_named_errors("Attention")
    def forward(self, x, context=None, attn_mask=None, is_causal=False, rope=None, cache=None, layer_idx=None,
                rows=None):
        """x (B, L, dim) -> (B, L, dim).

        context (B, S, kv_dim): the keys/values' sequence (cross_attention=True only).
        attn_mask: bool (True = attend) or float (added to the scores), broadcastable to
        (B, num_heads, L, S) with S the key length (cache.length + L with a cache); it applies
        together with is_causal. is_causal: query i sees keys j <= start + i (bottom-right
        aligned after a cached prefix). rope: (cos, sin) tables (L, R) or (B, 1, L, R); default
        positions start .. start+L-1 when rotary_fraction > 0. cache: a KVCache; this layer
        writes its keys/values at cache.length into slot layer_idx (default self.layer_idx) and
        attends to everything cached; the caller advances the cache after the last layer.
        rows: an int (B, n) array of positions (self-attention without a cache): only those query
        rows are computed -> (B, n, dim), row i of batch b the output at position rows[b, i] (keys
        and values still come from every position; attn_mask / is_causal / rope are taken at those
        rows). A last layer whose other rows nobody reads (TransformerLM with logits_at) skips them.
        """
        x = _as_tensor(x, "Attention", "x")
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise ValueError(f"Attention: x must be (B, L, dim={self.dim}), got {x.shape}")
        if self.cross_attention:
            if context is None:
                raise ValueError("Attention: cross_attention=True needs a context (B, S, kv_dim)")
            context = _as_tensor(context, "Attention", "context")
            if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != self.kv_dim:
                raise ValueError(f"Attention: context must be (B={x.shape[0]}, S, kv_dim={self.kv_dim}), "
                                 f"got {context.shape}")
            if cache is not None:
                raise ValueError("Attention: a KV cache is for self-attention; cross-attention recomputes its "
                                 "keys from context")
        elif context is not None:
            raise ValueError("Attention: context is only for cross_attention=True")
        is_causal = flag(is_causal, "Attention", "is_causal")
        if attn_mask is not None:  # checked before anything is written into the cache
            attn_mask = _as_tensor(attn_mask, "Attention", "attn_mask")
            if attn_mask.dtype != np.bool_ and attn_mask.dtype != np.float32:
                raise TypeError(f"Attention: attn_mask must be bool or float32, got {attn_mask.dtype}")
        b, l, _ = x.shape
        start = 0 if cache is None else cache.length
        if rows is not None:
            if cache is not None or self.cross_attention:
                raise ValueError("Attention: rows is for self-attention without a cache")
            if attn_mask is not None and attn_mask.requires_grad:
                raise ValueError("Attention: rows needs an attn_mask that does not require grad")
            rows = _check_rows(rows, b, l, "Attention")
        dropout_p = self.dropout if self.training else 0.0
        if cache is None and rows is None and self.qkv_proj is not None and dropout_p == 0.0 and \
                (attn_mask is None or not attn_mask.requires_grad):
            return self._fused_self_attention(x, attn_mask, is_causal, rope, l)
        q, k, v = self._project(x, context, rows)
        if rope is None and self.rotary_dim:
            rope = F.rotary_cos_sin(np.arange(start, start + l), self.rotary_dim, self.rope_base)
        if rope is not None:
            if not (isinstance(rope, (tuple, list)) and len(rope) == 2):
                raise TypeError("Attention: rope must be a (cos, sin) pair of tables")
            cos, sin = rope
            if rows is not None:
                q = F.apply_rotary(q, _table_rows(cos, rows), _table_rows(sin, rows))
            else:
                q = F.apply_rotary(q, cos, sin)
            k = F.apply_rotary(k, cos, sin)
        if rows is not None:
            attn_mask, is_causal = _mask_rows(attn_mask, rows, is_causal, l), False
            l = rows.shape[1]
        kv_len = None
        if cache is not None:
            idx = self.layer_idx if layer_idx is None else layer_idx
            if b != cache.batch_size:
                raise ValueError(f"Attention: x has batch {b} but the cache holds {cache.batch_size} rows")
            k, v, kv_len = cache.update(idx, k, v)
        out = _sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p,
                    enable_gqa=self.num_kv_heads != self.num_heads, query_offset=start, kv_len=kv_len)
        if l == 1:
            out = out.reshape(b, 1, self.num_heads * self.head_dim)
        else:
            out = out.permute(0, 2, 1, 3).reshape(b, l, self.num_heads * self.head_dim)
        return self.out_proj(out)

    def _fused_self_attention(self, x, attn_mask, is_causal, rope, l):
        """Self-attention without a cache or dropout (a training or full-sequence forward): the projection's
        heads, QK-norm and RoPE in one pass (F.qkv_heads) and attention reading q, k, v in place from
        them (F.attention_of_heads): the same numbers as the general path without its copies."""
        b = x.shape[0]
        if rope is None and self.rotary_dim:
            rope = F.rotary_cos_sin(np.arange(l), self.rotary_dim, self.rope_base)
        if rope is not None and not (isinstance(rope, (tuple, list)) and len(rope) == 2):
            raise TypeError("Attention: rope must be a (cos, sin) pair of tables")
        cos, sin = rope if rope is not None else (None, None)
        qn, kn = self.q_norm, self.k_norm
        if qn is None:
            z = F.qkv_heads(self.qkv_proj(x), self.num_heads, self.num_kv_heads, cos=cos, sin=sin)
        else:
            eps = qn.eps if qn.eps is not None else float(np.finfo(np.float32).eps)
            z = F.qkv_heads(self.qkv_proj(x), self.num_heads, self.num_kv_heads, self.qk_norm, qn.weight,
                            getattr(qn, "bias", None), kn.weight, getattr(kn, "bias", None), eps, cos, sin)
        out = F.attention_of_heads(z, self.num_heads, self.num_kv_heads, attn_mask=attn_mask, is_causal=is_causal)
        out = out.permute(0, 2, 1, 3).reshape(b, l, self.num_heads * self.head_dim)
        return self.out_proj(out)

    def extra_repr(self):
        s = f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"
        if self.rotary_dim:
            s += f", rotary_dim={self.rotary_dim}"
        if self.qk_norm:
            s += f", qk_norm={self.qk_norm!r}"
        if self.cross_attention:
            s += f", cross_attention=True, kv_dim={self.kv_dim}"
        return s
