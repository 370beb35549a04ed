"""scaled_dot_product_attention, window / temporal attention and rotary position embeddings.

Part of mmu.functional (re-exported there).
"""

import builtins

import numpy as np

from . import _C
from ._args import is_int, is_real

__all__ = ["scaled_dot_product_attention", "window_attention", "temporal_attention", "rotary_cos_sin", "apply_rotary",
           "qkv_heads", "attention_of_heads"]


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, query_offset=0, kv_len=None):
    """softmax(q kᵀ·scale + bias) v, as torch.nn.functional.scaled_dot_product_attention.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the batch dims
    broadcast. attn_mask: bool (True = takes part) or float (added to the scores),
    broadcastable to (..., L, S); it is read in place, never expanded. is_causal: the
    top-left causal mask tril(ones(L, S)). scale: default 1/sqrt(E). dropout_p: dropout on
    the attention weights from mmu's seeded RNG. enable_gqa: grouped-query attention,
    key/value with fewer heads (dim -3) than query; query head h uses key/value head
    h // (Hq // Hkv), as torch's repeat_interleave (without copies).

    Cached attention (mmu's extensions; torch semantics when they are left out):
    kv_len: only the first kv_len keys/values, key[..., :kv_len, :], take part; they are read
    in place from the larger buffer (a KV cache of capacity S), nothing is copied, and the
    gradients of the rows past kv_len are 0. query_offset: query row i sits at key position
    query_offset + i, so with is_causal it sees keys j <= query_offset + i (a chunk of L new
    queries after a cached prefix: query_offset = kv_len - L, the bottom-right alignment).
    attn_mask may be given together with is_causal (torch refuses): both apply (a bool mask
    ANDed / a float mask added, and the causal mask). The mask's last dim may be kv_len or
    the buffer's length S (then only its first kv_len columns are read).

    A FlashAttention-2-style C kernel: the (L, S) weights are never stored, the backward
    recomputes them from q, k and the saved logsumexp. A query row that can attend to no key
    gives 0 (and zero gradients), as torch 2.13 does. Up to 16 query rows per key/value head
    (decoding: L = 1, or a short chunk; the query heads of a GQA group count together) take a
    matrix-vector path that reads the cached keys and values in place, once per group.
    """
    if not is_real(dropout_p):
        raise TypeError(f"scaled_dot_product_attention: dropout_p must be a float, got {type(dropout_p).__name__}")
    if not 0.0 <= float(dropout_p) <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"scaled_dot_product_attention: is_causal must be a bool, got {type(is_causal).__name__}")
    if scale is not None and not is_real(scale):
        raise TypeError(f"scaled_dot_product_attention: scale must be a float or None, got {type(scale).__name__}")
    if not isinstance(enable_gqa, (bool, np.bool_)):
        raise TypeError(f"scaled_dot_product_attention: enable_gqa must be a bool, got {type(enable_gqa).__name__}")
    if isinstance(attn_mask, np.ndarray) and attn_mask.dtype != np.bool_ and attn_mask.dtype.kind != "f":
        # checked before conversion, which would turn any integer array into int64
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or float, got {attn_mask.dtype}")
    if not is_int(query_offset):
        raise TypeError("scaled_dot_product_attention: query_offset must be an int, "
                        f"got {type(query_offset).__name__}")
    if query_offset < 0:
        raise ValueError(f"scaled_dot_product_attention: query_offset must be >= 0, got {query_offset}")
    if kv_len is not None:
        if not is_int(kv_len):
            raise TypeError(f"scaled_dot_product_attention: kv_len must be an int or None, got {type(kv_len).__name__}")
        if kv_len < 0:
            raise ValueError(f"scaled_dot_product_attention: kv_len must be >= 0, got {kv_len}")
        if kv_len > 2 ** 62:  # no key buffer is that long (the C core names the buffer's length)
            raise ValueError(f"scaled_dot_product_attention: kv_len {kv_len} is longer than any key buffer")
    # an offset at or past every key position sees every key (causal) or changes nothing: offsets
    # past int64 mean the same as 2**62 (the C core clamps it to the key buffer's length)
    return _C.sdpa(query, key, value, attn_mask, float(dropout_p), bool(is_causal),
                   None if scale is None else float(scale), bool(enable_gqa), int(min(query_offset, 2 ** 62)),
                   -1 if kv_len is None else int(kv_len))



def _heads_qkv(op, query, key, value):
    """query, key, value as float32 tensors (B, H, N, d), (B, H, N, d), (B, H, N, dv); errors name op."""
    from .tensor import _as_tensor
    q, k, v = _as_tensor(query, op, "query"), _as_tensor(key, op, "key"), _as_tensor(value, op, "value")
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim != 4:
            raise ValueError(f"{op}: {name} must be (B, H, N, d), got shape {tuple(t.shape)}")
    if tuple(k.shape) != tuple(q.shape) or tuple(v.shape[:3]) != tuple(q.shape[:3]):
        raise ValueError(f"{op}: key {tuple(k.shape)} must have query's shape {tuple(q.shape)} and value "
                         f"{tuple(v.shape)} its (B, H, N)")
    return q, k, v


def _scale_arg(op, scale):
    if scale is not None and not is_real(scale):
        raise TypeError(f"{op}: scale must be a float or None, got {type(scale).__name__}")
    return None if scale is None else float(scale)


def _int_pair(op, name, v):
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(e) for e in v)):
        raise TypeError(f"{op}: {name} must be a pair of ints (h, w), got {v!r}")
    if not (v[0] >= 1 and v[1] >= 1):
        raise ValueError(f"{op}: {name} must be positive, got {tuple(v)}")
    return int(v[0]), int(v[1])


def window_attention(query, key, value, grid, window, bias=None, scale=None):
    """Attention inside the non-overlapping windows of a token grid (Swin's W-MSA, no shift).

    query, key (B, H, N, d) and value (B, H, N, dv), N = gh·gw tokens of a gh x gw grid in
    row-major order; grid = (gh, gw); window = (wh, ww), wh dividing gh and ww dividing gw.
    Every token attends only to the wh·ww tokens of its own window (Swin's window_partition):
    out = softmax(q kᵀ·scale + bias) v within each window, scale default 1/sqrt(d). bias: None
    or (H, wh·ww, wh·ww), added to the scores of every window (Swin's relative position bias,
    gathered from its table by the caller; rows and columns in the window's row-major token
    order); differentiable. Returns (B, H, N, dv) in the grid's token order. No N x N mask and
    no partitioned copy of q, k, v are made.
    """
    op = "window_attention"
    q, k, v = _heads_qkv(op, query, key, value)
    gh, gw = _int_pair(op, "grid", grid)
    wh, ww = _int_pair(op, "window", window)
    B, H, N, d = q.shape
    if gh * gw != N:
        raise ValueError(f"{op}: grid {(gh, gw)} has {gh * gw} tokens but query {tuple(q.shape)} has N = {N}")
    if gh % wh or gw % ww:
        raise ValueError(f"{op}: window {(wh, ww)} must divide grid {(gh, gw)}")
    n = wh * ww
    if bias is not None:
        from .tensor import _as_tensor
        bias = _as_tensor(bias, op, "bias")
        if tuple(bias.shape) != (H, n, n):
            raise ValueError(f"{op}: bias must be (H, wh*ww, wh*ww) = {(H, n, n)}, got {tuple(bias.shape)}")
    return _C.window_attention(q, k, v, bias, gh, gw, wh, ww, _scale_arg(op, scale))


def temporal_attention(query, key, value, frames, causal=True, scale=None):
    """Attention along time at every location of a frame-major token sequence.

    query, key (B, H, T·L, d) and value (B, H, T·L, dv) with token t·L + l at frame t and
    location l (T = frames). Each token attends to the tokens at its own location l in frames
    t' <= t (causal) or in every frame (causal=False): out = softmax(q kᵀ·scale) v over the
    T tokens of location l, scale default 1/sqrt(d). Returns (B, H, T·L, dv) in the same
    order. The per-location sequences are read with stride L in place: no permuted copy to
    (B·L, H, T, d) is made.
    """
    op = "temporal_attention"
    q, k, v = _heads_qkv(op, query, key, value)
    if not is_int(frames):
        raise TypeError(f"{op}: frames must be an int, got {type(frames).__name__}")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"{op}: causal must be a bool, got {type(causal).__name__}")
    B, H, N, d = q.shape
    if frames < 1 or N % frames:
        raise ValueError(f"{op}: frames ({frames}) must be >= 1 and divide the token count N = {N} of query "
                         f"{tuple(q.shape)}")
    return _C.temporal_attention(q, k, v, int(frames), bool(causal), _scale_arg(op, scale))

def _positions_array(positions):
    if hasattr(positions, "numpy") and not isinstance(positions, np.ndarray):
        positions = positions.numpy()
    try:
        pos = np.asarray(positions)
    except (ValueError, TypeError) as e:  # ragged lists
        raise ValueError(f"rotary_cos_sin: positions must be an array of numbers ({e})") from None
    if pos.dtype.kind not in "iuf":
        raise TypeError(f"rotary_cos_sin: positions must be integers or floats, got dtype {pos.dtype}")
    return pos.astype(np.float64)


def rotary_cos_sin(positions, head_dim, base=10000.0):
    """cos and sin tables (L, head_dim) for apply_rotary (rotate-half convention).

    1-D positions (L,): pair j = (x[j], x[j + D/2]), j < D/2, rotates by positions·θ_j with
    θ_j = base^(-2j/D) (GPT-NeoX / LLaMA as in Hugging Face), so columns j and j + D/2 of
    cos/sin hold the same angle.

    2-D positions (L, 2) = (row, col) of an image grid (D a multiple of 4): the first D/4
    pairs (j < D/4) rotate with the row, the next D/4 (D/4 <= j < D/2) with the column,
    each axis with the frequencies of a 1-D RoPE of dimension D/2: θ_k = base^(-2k/(D/2)),
    k < D/4. Angles are computed in float64 and rounded once to float32.
    """
    import mmu
    if not is_int(head_dim):
        raise TypeError(f"rotary_cos_sin: head_dim must be an int, got {type(head_dim).__name__}")
    if not is_real(base) or not base > 0:
        raise ValueError(f"rotary_cos_sin: base must be a positive number, got {base!r}")
    head_dim = int(head_dim)
    pos = _positions_array(positions)
    if builtins.max(pos.size, 1) * builtins.max(head_dim, 0) > 2 ** 40:  # (NumPy would fail to allocate, naming nothing)
        raise ValueError(f"rotary_cos_sin: a table of {pos.size} positions x head_dim {head_dim} is too large")
    if pos.ndim == 1:
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"rotary_cos_sin: head_dim must be a positive even number, got {head_dim}")
        half = head_dim // 2
        inv = float(base) ** (-np.arange(half, dtype=np.float64) * 2.0 / head_dim)
        freqs = pos[:, None] * inv[None, :]
    elif pos.ndim == 2 and pos.shape[1] == 2:
        if head_dim <= 0 or head_dim % 4:
            raise ValueError(f"rotary_cos_sin: 2-D positions need head_dim a positive multiple of 4, got {head_dim}")
        quarter = head_dim // 4
        inv = float(base) ** (-np.arange(quarter, dtype=np.float64) * 2.0 / (head_dim // 2))
        freqs = np.concatenate([pos[:, :1] * inv[None, :], pos[:, 1:2] * inv[None, :]], axis=1)
    else:
        raise ValueError(f"rotary_cos_sin: positions must be (L,) or (L, 2), got shape {tuple(pos.shape)}")
    emb = np.concatenate([freqs, freqs], axis=1)
    return (mmu.tensor(np.cos(emb).astype(np.float32)), mmu.tensor(np.sin(emb).astype(np.float32)))


def apply_rotary(x, cos, sin):
    """x·cos + rotate_half(x)·sin with rotate_half(x) = cat(-x[..., R/2:R], x[..., :R/2]).

    x (..., L, D); cos, sin (..., L, R) from rotary_cos_sin, R even and <= D. With R < D
    (partial rotary, Phi-1.5's rotary fraction 0.5) only the first R dims of x rotate and
    the other D - R pass through unchanged. The dims of cos/sin before (L, R) broadcast
    against x's (each 1 or equal, right-aligned): (L, R) serves every batch row and head,
    (B, 1, L, R) gives each batch row its own positions (left-padded batches) for x
    (B, H, L, D). Nothing is expanded or copied: one fused C pass. Differentiable in x
    (the backward is the inverse rotation of the gradient); cos/sin are constants.
    """
    return _C.apply_rotary(x, cos, sin)


_QKV_NORMS = {None: 0, "layernorm": 1, "rmsnorm": 2}


def qkv_heads(qkv, num_heads, num_kv_heads=None, norm=None, q_weight=None, q_bias=None, k_weight=None, k_bias=None,
              eps=1e-5, cos=None, sin=None):
    """The heads of a fused q/k/v projection, with QK-norm and rotary embeddings, in one pass.

    qkv (B, L, (H + 2 Hkv)·D): a self-attention layer's projection, rows [q heads; k heads; v heads]
    of D each (Hkv = num_kv_heads, default num_heads) -> heads (B, H + 2 Hkv, L, D), head-major:
    for q and k heads norm(x)·weight + bias over D (norm 'layernorm', 'rmsnorm' (no bias) or None;
    q_weight/q_bias for the queries, k_weight/k_bias for the keys, each (D,) or None), then
    apply_rotary with cos/sin (L, R) or (B|1, 1, L, R) (R <= D even; None: no rotation); v heads
    copied. The same numbers as reshape + permute + split + layer_norm / rms_norm + apply_rotary,
    without the intermediate copies; differentiable in qkv and the four norm parameters.
    attention_of_heads takes the result as it is."""
    if num_kv_heads is None:
        num_kv_heads = num_heads
    if not is_int(num_heads) or not is_int(num_kv_heads):
        raise TypeError("qkv_heads: num_heads and num_kv_heads must be ints")
    if not (1 <= num_heads < 2 ** 31 and 1 <= num_kv_heads < 2 ** 31):
        raise ValueError(f"qkv_heads: num_heads and num_kv_heads must be >= 1, got {num_heads} and {num_kv_heads}")
    if not (norm is None or isinstance(norm, str)) or norm not in _QKV_NORMS:
        raise ValueError(f"qkv_heads: norm must be 'layernorm', 'rmsnorm' or None, got {norm!r}")
    if not is_real(eps):
        raise TypeError(f"qkv_heads: eps must be a number, got {type(eps).__name__}")
    return _C.qkv_heads(qkv, int(num_heads), int(num_kv_heads), _QKV_NORMS[norm], q_weight, q_bias, k_weight, k_bias,
                        float(eps), cos, sin)


def attention_of_heads(heads, num_heads, num_kv_heads=None, attn_mask=None, is_causal=False, scale=None,
                       query_rows=None):
    """scaled_dot_product_attention over the heads of one tensor, as qkv_heads lays them out.

    heads (B, H + 2 Hkv, L, E) = [q heads; k heads; v heads] -> (B, H, L, E), the same as
    scaled_dot_product_attention(heads[:, :H], heads[:, H:H + Hkv], heads[:, H + Hkv:],
    attn_mask, is_causal=is_causal, scale=scale, enable_gqa=Hkv < H), but q, k and v are read in
    place (no slices are copied) and the gradient comes back as one tensor of heads' shape.
    attn_mask: bool (True = attend) or float (added), broadcastable to (B, H, L, L), not
    requiring grad. Self-attention without dropout or a cache (a training step's layer).

    query_rows: None, or (start, stop) with 0 <= start < stop <= L: only the queries of rows
    start .. stop-1 (against all L keys) -> (B, H, stop - start, E), the rows start:stop of the
    whole result (the same numbers), without computing the others: a last layer of which only
    some tokens are read. is_causal and attn_mask keep their meaning over the L x L scores (row
    start + i sees keys j <= start + i). The other query rows get a zero gradient."""
    if num_kv_heads is None:
        num_kv_heads = num_heads
    if not is_int(num_heads) or not is_int(num_kv_heads):
        raise TypeError("attention_of_heads: num_heads and num_kv_heads must be ints")
    if not (1 <= num_heads < 2 ** 31 and 1 <= num_kv_heads < 2 ** 31):
        raise ValueError(f"attention_of_heads: num_heads and num_kv_heads must be >= 1, got {num_heads} and "
                         f"{num_kv_heads}")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"attention_of_heads: is_causal must be a bool, got {type(is_causal).__name__}")
    if scale is not None and not is_real(scale):
        raise TypeError(f"attention_of_heads: scale must be a float or None, got {type(scale).__name__}")
    if isinstance(attn_mask, np.ndarray) and attn_mask.dtype != np.bool_ and attn_mask.dtype.kind != "f":
        raise TypeError(f"attention_of_heads: attn_mask must be bool or float, got {attn_mask.dtype}")
    r0, r1 = 0, -1
    if query_rows is not None:
        if not (isinstance(query_rows, (tuple, list)) and len(query_rows) == 2 and all(is_int(v) for v in query_rows)):
            raise TypeError(f"attention_of_heads: query_rows must be None or a pair of ints (start, stop), "
                            f"got {query_rows!r}")
        r0, r1 = int(query_rows[0]), int(query_rows[1])
        if not 0 <= r0 < r1 < 2 ** 62:  # the C core checks stop <= L, naming the heads' shape
            raise ValueError(f"attention_of_heads: query_rows {(r0, r1)} must satisfy 0 <= start < stop <= L")
    return _C.sdpa_packed(heads, int(num_heads), int(num_kv_heads), attn_mask, bool(is_causal),
                          None if scale is None else float(scale), r0, r1)
