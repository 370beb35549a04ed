"""mmu.nn's transformer parts (Attention, MLP, TransformerLayer, TransformerLM, ViTEncoder) against
torch twins written here in the published layouts (separate q/k/v projections, Hugging Face's
rotate-half RoPE with a partial rotary width, repeat_interleave GQA, float64): state_dict keys
mapped, outputs and gradients within 1e-5. Plus logits_at / inputs_embeds / left-padding semantics
and argument validation."""
import numpy as np
import pytest

import mmu
from mmu import nn

try:
    from gradcheck import assert_close, torch_or_skip
except ImportError:  # pragma: no cover
    from tests.gradcheck import assert_close, torch_or_skip

TOL = 1e-5
_TWINS = {}


def twins():
    """torch twin modules (defined lazily: the tests skip cleanly without torch)."""
    torch = torch_or_skip()
    if _TWINS:
        return torch, _TWINS
    tnn, tF = torch.nn, torch.nn.functional

    def rope_tables(pos, R, base):
        inv = 1.0 / (base ** (torch.arange(0, R, 2, dtype=torch.float64) / R))
        f = torch.as_tensor(pos, dtype=torch.float64)[..., None] * inv
        emb = torch.cat([f, f], -1)
        cos, sin = emb.cos(), emb.sin()
        return (cos[:, None], sin[:, None]) if cos.ndim == 3 else (cos, sin)  # (B, 1, L, R) or (L, R)

    def rotate_half(t):
        h = t.shape[-1] // 2
        return torch.cat([-t[..., h:], t[..., :h]], -1)

    def apply_rope(t, cos, sin):
        R = cos.shape[-1]
        cos, sin = cos.to(t.dtype), sin.to(t.dtype)
        rot, pas = t[..., :R], t[..., R:]
        return torch.cat([rot * cos + rotate_half(rot) * sin, pas], -1)

    class Attn(tnn.Module):
        def __init__(self, dim, H, Hkv, hd, bias, qk_norm, R, base, kv_dim=None, out_bias=None):
            super().__init__()
            self.H, self.Hkv, self.hd, self.R, self.base = H, Hkv, hd, R, base
            kv_dim = kv_dim or dim
            self.q_proj = tnn.Linear(dim, H * hd, bias=bias)
            self.k_proj = tnn.Linear(kv_dim, Hkv * hd, bias=bias)
            self.v_proj = tnn.Linear(kv_dim, Hkv * hd, bias=bias)
            self.out_proj = tnn.Linear(H * hd, dim, bias=bias if out_bias is None else out_bias)
            norm = {"layernorm": tnn.LayerNorm, "rmsnorm": tnn.RMSNorm}.get(qk_norm)
            self.q_norm = norm(hd, eps=1e-5) if norm else None
            self.k_norm = norm(hd, eps=1e-5) if norm else None

        def forward(self, x, context=None, mask=None, causal=False, pos=None, rope=None):
            B, L, _ = x.shape
            c = x if context is None else context
            S = c.shape[1]
            q = self.q_proj(x).view(B, L, self.H, self.hd)
            k = self.k_proj(c).view(B, S, self.Hkv, self.hd)
            v = self.v_proj(c).view(B, S, self.Hkv, self.hd).transpose(1, 2)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            if rope is None and self.R:
                rope = rope_tables(torch.arange(L) if pos is None else pos, self.R, self.base)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            rep = self.H // self.Hkv
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            s = q @ k.transpose(-1, -2) / self.hd ** 0.5
            if causal:
                s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
            p = torch.nan_to_num(s.softmax(-1), nan=0.0)  # a row with no key: 0 (as mmu / torch 2.13 sdpa)
            o = (p @ v).transpose(1, 2).reshape(B, L, self.H * self.hd)
            return self.out_proj(o)

    class Mlp(tnn.Module):
        def __init__(self, dim, hidden, act, bias):
            super().__init__()
            self.act = act
            self.fc1 = tnn.Linear(dim, hidden, bias=bias)
            self.fc2 = tnn.Linear(hidden, dim, bias=bias)
            self.fc_gate = tnn.Linear(dim, hidden, bias=bias) if act == "swiglu" else None

        def forward(self, x):
            if self.act == "swiglu":
                return self.fc2(tF.silu(self.fc_gate(x)) * self.fc1(x))
            f = {"gelu": tF.gelu, "gelu_tanh": lambda t: tF.gelu(t, approximate="tanh"), "relu": tF.relu,
                 "silu": tF.silu}[self.act]
            return self.fc2(f(self.fc1(x)))

    def tnorm(kind, dim, eps=1e-5):
        return tnn.LayerNorm(dim, eps=eps) if kind == "layernorm" else tnn.RMSNorm(dim, eps=eps)

    class Layer(tnn.Module):
        def __init__(self, dim, H, Hkv, hd, hidden, act, bias, norm, residual, qk_norm, R, base, eps=1e-5,
                     cross_dim=None):
            super().__init__()
            self.residual = residual
            self.norm1 = tnorm(norm, dim, eps)
            self.attn = Attn(dim, H, Hkv, hd, bias, qk_norm, R, base)
            if cross_dim:
                self.norm_cross = tnorm(norm, dim, eps)
                self.cross_attn = Attn(dim, H, Hkv, hd, bias, qk_norm, 0, base, kv_dim=cross_dim)
            else:
                self.cross_attn = None
            self.norm2 = tnorm(norm, dim, eps) if residual == "sequential" else None
            self.mlp = Mlp(dim, hidden, act, bias)

        def forward(self, x, mask=None, causal=False, pos=None, rope=None, context=None):
            h = self.norm1(x)
            a = self.attn(h, mask=mask, causal=causal, pos=pos, rope=rope)
            if self.residual == "parallel":
                return x + a + self.mlp(h)
            x = x + a
            if self.cross_attn is not None:
                x = x + self.cross_attn(self.norm_cross(x), context=context)
            return x + self.mlp(self.norm2(x))

    class LM(tnn.Module):
        def __init__(self, V, dim, n, H, Hkv, hd, hidden, act, bias, norm, residual, qk_norm, R, base, tie,
                     head_bias, learned=0):
            super().__init__()
            self.embed_tokens = tnn.Embedding(V, dim)
            self.pos_embedding = tnn.Embedding(learned, dim) if learned else None
            self.layers = tnn.ModuleList([Layer(dim, H, Hkv, hd, hidden, act, bias, norm, residual, qk_norm, R, base)
                                          for _ in range(n)])
            self.norm = tnorm(norm, dim)
            self.tie = tie
            if tie:
                self.lm_head_bias = tnn.Parameter(torch.zeros(V)) if head_bias else None
            else:
                self.lm_head = tnn.Linear(dim, V, bias=head_bias)

        def forward(self, ids, mask=None, pos=None, causal=True):
            x = self.embed_tokens(ids)
            L = ids.shape[1]
            pos = torch.arange(L) if pos is None else pos
            if self.pos_embedding is not None:
                x = x + self.pos_embedding(pos)
                pos = None
            for layer in self.layers:
                x = layer(x, mask=mask, causal=causal, pos=pos)
            x = self.norm(x)
            if self.tie:
                return tF.linear(x, self.embed_tokens.weight, self.lm_head_bias)
            return self.lm_head(x)

    _TWINS.update(Attn=Attn, Mlp=Mlp, Layer=Layer, LM=LM, rope_tables=rope_tables, apply_rope=apply_rope,
                  tnorm=tnorm)
    return torch, _TWINS


def to_mmu_state(tsd, cross=False):
    """The twin's published layout -> mmu names: q/k/v projections fuse into qkv_proj (rows [q; k; v]),
    or for cross-attention k/v into kv_proj; everything else keeps its name."""
    out, groups = {}, {}
    for key, val in tsd.items():
        val = val.detach().numpy().astype(np.float32)
        for part in ("q_proj", "k_proj", "v_proj"):
            tag = f".{part}."
            if tag in "." + key:
                pre, suf = ("." + key).split(tag)
                groups.setdefault((pre[1:], suf), {})[part] = val
                break
        else:
            out[key] = val
    for (pre, suf), parts in groups.items():
        p = pre + "." if pre else ""
        is_cross = cross or "cross_attn" in pre
        if is_cross:
            out[f"{p}q_proj.{suf}"] = parts["q_proj"]
            out[f"{p}kv_proj.{suf}"] = np.concatenate([parts["k_proj"], parts["v_proj"]], 0)
        else:
            out[f"{p}qkv_proj.{suf}"] = np.concatenate([parts["q_proj"], parts["k_proj"], parts["v_proj"]], 0)
    return out


def check_grads(mmodel, tmodel, tol=TOL, cross=False):
    """Every parameter's gradient against the float64 twin's, within tol of the tensor's scale
    (float32 sums err in proportion to their largest terms: these gradients reach ~70, and torch
    in float32 is itself off its float64 by up to 7e-5 on them; mmu by less)."""
    want = to_mmu_state({k: p.grad for k, p in tmodel.named_parameters()}, cross)
    got = {k: p.grad for k, p in mmodel.named_parameters()}
    assert set(got) == set(want)
    for k in want:
        scale = max(1.0, float(np.abs(want[k]).max()))
        assert_close(got[k].numpy(), want[k], tol, tol * scale, what=f"grad of {k}")


def load(mmodel, tmodel, cross=False):
    torch = torch_or_skip()
    torch.manual_seed(sum(p.numel() for p in tmodel.parameters()))
    for name, p in tmodel.named_parameters():  # random biases and norm weights too: catch every mapping
        with torch.no_grad():
            norm_weight = p.ndim == 1 and name.endswith("weight")
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if norm_weight else 0.0))
    tmodel.double()
    mmodel.load_state_dict(to_mmu_state(tmodel.state_dict(), cross))


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- Attention

ATTN_CASES = [
    # dim, H, Hkv, hd, bias, qk_norm, rotary_fraction
    (16, 4, 2, 4, True, "rmsnorm", 0.5),     # GQA, partial RoPE, QK-norm
    (16, 4, 4, 4, False, "layernorm", 1.0),  # MHA, full RoPE, no bias
    (12, 3, 1, 8, True, None, 0.0),           # MQA, head_dim != dim / H, no RoPE
]


@pytest.mark.parametrize("case", ATTN_CASES)
@pytest.mark.parametrize("masking", ["causal", "bool", "causal+bool", "additive"])
def test_attention_matches_torch_twin(case, masking):
    torch, T = twins()
    dim, H, Hkv, hd, bias, qk_norm, frac = case
    rng = np.random.default_rng(sum(map(ord, masking)) + dim + H)
    m = nn.Attention(dim, H, num_kv_heads=Hkv, head_dim=hd, bias=bias, qk_norm=qk_norm, rotary_fraction=frac)
    t = T["Attn"](dim, H, Hkv, hd, bias, qk_norm, int(hd * frac), 10000.0)
    load(m, t)
    B, L = 2, 5
    x = rnd(rng, B, L, dim)
    mask_np = rng.random((B, 1, L, L)) > 0.3
    causal = masking.startswith("causal")
    if masking in ("bool", "causal+bool"):
        mmask, tmask = mask_np, torch.tensor(mask_np)
    elif masking == "additive":
        add = rnd(rng, 1, H, L, L)
        mmask, tmask = add, torch.tensor(add, dtype=torch.float64)
    else:
        mmask = tmask = None
    mx = mmu.tensor(x, requires_grad=True)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = m(mx, attn_mask=mmask, is_causal=causal)
    ref = t(tx, mask=tmask, causal=causal)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    g = rnd(rng, B, L, dim)
    out.backward(mmu.tensor(g))
    ref.backward(torch.tensor(g, dtype=torch.float64))
    assert_close(mx.grad.numpy(), tx.grad.numpy(), TOL, TOL, what="grad x")
    check_grads(m, t)


def test_attention_state_dict_names_and_fused_layout():
    m = nn.Attention(16, 4, num_kv_heads=2, qk_norm="rmsnorm", rotary_fraction=0.5, out_bias=False)
    assert list(m.state_dict()) == ["qkv_proj.weight", "qkv_proj.bias", "out_proj.weight", "q_norm.weight",
                                    "k_norm.weight"]
    assert m.qkv_proj.weight.shape == ((4 + 2 * 2) * 4, 16)
    assert m.rotary_dim == 2 and m.out_proj.bias is None
    c = nn.Attention(16, 4, num_kv_heads=1, cross_attention=True, kv_dim=6)
    assert list(c.state_dict()) == ["q_proj.weight", "q_proj.bias", "kv_proj.weight", "kv_proj.bias",
                                    "out_proj.weight", "out_proj.bias"]
    assert c.kv_proj.weight.shape == (2 * 4, 6)


def test_cross_attention_matches_torch_twin():
    torch, T = twins()
    rng = np.random.default_rng(4)
    dim, H, Hkv, hd, kv_dim = 16, 4, 2, 4, 6
    m = nn.Attention(dim, H, num_kv_heads=Hkv, cross_attention=True, kv_dim=kv_dim, qk_norm="layernorm")
    t = T["Attn"](dim, H, Hkv, hd, True, "layernorm", 0, 10000.0, kv_dim=kv_dim)
    load(m, t, cross=True)
    x, ctx = rnd(rng, 2, 3, dim), rnd(rng, 2, 7, kv_dim)
    cmask = rng.random((2, 1, 1, 7)) > 0.3
    cmask[:, :, :, 0] = True
    mx, mc = mmu.tensor(x, requires_grad=True), mmu.tensor(ctx, requires_grad=True)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tc = torch.tensor(ctx, dtype=torch.float64, requires_grad=True)
    out = m(mx, context=mc, attn_mask=cmask)
    ref = t(tx, context=tc, mask=torch.tensor(cmask))
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    out.sum().backward()
    ref.sum().backward()
    assert_close(mc.grad.numpy(), tc.grad.numpy(), TOL, TOL, what="grad context")
    assert_close(mx.grad.numpy(), tx.grad.numpy(), TOL, TOL, what="grad x")
    check_grads(m, t, cross=True)


def test_attention_given_rope_tables_per_batch():
    """rope=(cos, sin) per batch row (B, 1, L, R): the twin rotates with the same positions."""
    torch, T = twins()
    rng = np.random.default_rng(6)
    m = nn.Attention(16, 2, rotary_fraction=0.5)
    t = T["Attn"](16, 2, 2, 8, True, None, 4, 10000.0)
    load(m, t)
    pos = np.array([[0, 1, 2, 3], [0, 0, 0, 1]])
    cos, sin = mmu.nn.functional.rotary_cos_sin(pos.reshape(-1), 4)
    x = rnd(rng, 2, 4, 16)
    out = m(mmu.tensor(x), is_causal=True, rope=(cos.reshape(2, 1, 4, 4), sin.reshape(2, 1, 4, 4)))
    ref = t(torch.tensor(x, dtype=torch.float64), causal=True, pos=torch.tensor(pos))
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)


# ---------------------------------------------------------------- MLP and layers

@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "swiglu", "relu", "silu"])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_matches_torch_twin(act, bias):
    torch, T = twins()
    rng = np.random.default_rng(len(act) + bias)
    m, t = nn.MLP(8, 12, activation=act, bias=bias), T["Mlp"](8, 12, act, bias)
    load(m, t)
    x = rnd(rng, 2, 3, 8)
    mx, tx = mmu.tensor(x, requires_grad=True), torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, ref = m(mx), t(tx)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    out.sum().backward()
    ref.sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), TOL, TOL)
    check_grads(m, t)
    keys = ["fc1.weight", "fc2.weight"] + (["fc_gate.weight"] if act == "swiglu" else [])
    assert sorted(k for k in m.state_dict() if k.endswith("weight")) == sorted(keys)


@pytest.mark.parametrize("residual,norm,qk_norm,frac,Hkv", [
    ("parallel", "layernorm", None, 0.5, 4),      # Phi-1.5: one norm, partial RoPE
    ("sequential", "rmsnorm", "rmsnorm", 1.0, 2),  # LLaMA-like with GQA and QK-norm
])
def test_transformer_layer_matches_torch_twin(residual, norm, qk_norm, frac, Hkv):
    torch, T = twins()
    rng = np.random.default_rng(7)
    dim, H, hd = 16, 4, 4
    act = "swiglu" if norm == "rmsnorm" else "gelu_tanh"
    m = nn.TransformerLayer(dim, H, num_kv_heads=Hkv, hidden_dim=24, activation=act, norm=norm,
                            residual=residual, qk_norm=qk_norm, rotary_fraction=frac)
    t = T["Layer"](dim, H, Hkv, hd, 24, act, True, norm, residual, qk_norm, int(hd * frac), 10000.0)
    load(m, t)
    assert ("norm2.weight" in m.state_dict()) == (residual == "sequential")
    x = rnd(rng, 2, 5, dim)
    mx, tx = mmu.tensor(x, requires_grad=True), torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, ref = m(mx, is_causal=True), t(tx, causal=True)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    g = rnd(rng, 2, 5, dim)
    out.backward(mmu.tensor(g))
    ref.backward(torch.tensor(g, dtype=torch.float64))
    assert_close(mx.grad.numpy(), tx.grad.numpy(), TOL, TOL)
    check_grads(m, t)


def test_transformer_layer_with_cross_attention_matches_torch_twin():
    torch, T = twins()
    rng = np.random.default_rng(8)
    m = nn.TransformerLayer(16, 4, hidden_dim=20, cross_attention=True, context_dim=6)
    t = T["Layer"](16, 4, 4, 4, 20, "gelu", True, "layernorm", "sequential", None, 0, 10000.0, cross_dim=6)
    load(m, t)
    x, ctx = rnd(rng, 2, 3, 16), rnd(rng, 2, 5, 6)
    out = m(mmu.tensor(x), context=mmu.tensor(ctx))
    ref = t(torch.tensor(x, dtype=torch.float64), context=torch.tensor(ctx, dtype=torch.float64))
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)


# ---------------------------------------------------------------- TransformerLM

LM_CASES = {
    "phi": dict(residual="parallel", norm="layernorm", activation="gelu_tanh", rotary_fraction=0.5, bias=True,
                tie_embeddings=False, head_bias=True, num_kv_heads=4, qk_norm=None),
    "llama": dict(residual="sequential", norm="rmsnorm", activation="swiglu", rotary_fraction=1.0, bias=False,
                  tie_embeddings=False, head_bias=False, num_kv_heads=2, qk_norm=None),
    "tied_qknorm": dict(residual="sequential", norm="layernorm", activation="gelu", rotary_fraction=1.0, bias=True,
                        tie_embeddings=True, head_bias=True, num_kv_heads=1, qk_norm="layernorm"),
    "learned": dict(residual="sequential", norm="layernorm", activation="gelu", rotary_fraction=0.0, bias=True,
                    tie_embeddings=True, head_bias=False, num_kv_heads=4, qk_norm=None, pos="learned"),
}


def make_lm(name, V=23, dim=16, n=2, H=4, hidden=24, seed=0):
    """An mmu TransformerLM and its loaded torch twin (None without torch)."""
    kw = dict(LM_CASES[name])
    pos = kw.pop("pos", "rope")
    m = nn.TransformerLM(V, dim, n, H, hidden_dim=hidden, pos=pos, max_seq_len=32, **kw)
    try:
        torch, T = twins()
    except pytest.skip.Exception:
        return m, None
    torch.manual_seed(seed)
    hd = dim // H
    t = T["LM"](V, dim, n, H, kw["num_kv_heads"], hd, hidden, kw["activation"], kw["bias"], kw["norm"],
                kw["residual"], kw["qk_norm"], int(hd * kw["rotary_fraction"]), 10000.0, kw["tie_embeddings"],
                kw["head_bias"], learned=32 if pos == "learned" else 0)
    load(m, t)
    return m, t


@pytest.mark.parametrize("name", list(LM_CASES))
def test_lm_matches_torch_twin(name):
    torch, _ = twins()
    m, t = make_lm(name)
    rng = np.random.default_rng(9)
    ids = rng.integers(0, 23, (2, 6)).astype(np.int64)
    out = m(mmu.tensor(ids))
    ref = t(torch.tensor(ids))
    assert out.shape == (2, 6, 23)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    g = rnd(rng, 2, 6, 23)
    out.backward(mmu.tensor(g))
    ref.backward(torch.tensor(g, dtype=torch.float64))
    check_grads(m, t)
    if LM_CASES[name]["tie_embeddings"]:
        assert not any(k.startswith("lm_head.") for k in m.state_dict())


def test_lm_logits_at_inputs_embeds_and_hidden_states():
    m, _ = make_lm("phi")
    rng = np.random.default_rng(10)
    ids = mmu.tensor(rng.integers(0, 23, (3, 5)).astype(np.int64))
    full = m(ids).numpy()
    seen = []
    head = m.head
    m.head = lambda h: (seen.append(h.shape), head(h))[1]
    last = m(ids, logits_at="last")
    assert seen[-1] == (3, 16)  # the head ran on B rows only, never on the L x V logits
    assert_close(last.numpy(), full[:, -1], 1e-6, 1e-6)
    idx = np.array([[0, 4], [2, 2], [1, 3]])
    picked = m(ids, logits_at=idx)
    assert seen[-1] == (3, 2, 16)
    assert_close(picked.numpy(), np.take_along_axis(full, idx[:, :, None], 1), 1e-6, 1e-6)
    del m.head
    hidden = m(ids, logits_at=None)
    assert hidden.shape == (3, 5, 16)
    assert_close(m.head(hidden).numpy(), full, 1e-6, 1e-6)
    emb = m.embed_tokens(ids)
    assert_close(m(inputs_embeds=emb).numpy(), full, 1e-6, 1e-6)


@pytest.mark.parametrize("name", ["phi", "learned"])
def test_lm_left_padding_equals_unpadded_rows(name):
    """A left-padded batch with attention_mask gives each row's real tokens the logits of that
    prompt run alone (positions from the mask's cumulative sum)."""
    m, _ = make_lm(name)
    rng = np.random.default_rng(11)
    lens = [6, 3, 1]
    L = max(lens)
    ids = np.zeros((3, L), np.int64)
    am = np.zeros((3, L), bool)
    prompts = [rng.integers(0, 23, n).astype(np.int64) for n in lens]
    for b, p in enumerate(prompts):
        ids[b, L - len(p):] = p
        am[b, L - len(p):] = True
    out = m(mmu.tensor(ids), attention_mask=am).numpy()
    for b, p in enumerate(prompts):
        alone = m(mmu.tensor(p[None])).numpy()[0]
        assert_close(out[b, L - len(p):], alone, 2e-6, 2e-6, what=f"row {b}")


def test_lm_explicit_attn_mask_matches_torch_twin():
    """An omni-attention style mask: causal text, then a block of image tokens seeing each other."""
    torch, _ = twins()
    m, t = make_lm("llama")
    L = 6
    mask = np.tril(np.ones((L, L), bool))
    mask[3:, 3:] = True
    mask = mask[None, None]
    ids = np.random.default_rng(12).integers(0, 23, (2, L)).astype(np.int64)
    out = m(mmu.tensor(ids), attn_mask=mask)
    ref = t(torch.tensor(ids), mask=torch.tensor(mask), causal=False)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    # with left padding too: the padded key columns drop out
    am = np.ones((2, L), bool)
    am[1, :2] = False
    out2 = m(mmu.tensor(ids), attn_mask=mask, attention_mask=am, position_ids=np.tile(np.arange(L), (2, 1)))
    ref2 = t(torch.tensor(ids), mask=torch.tensor(mask & am[:, None, None, :]), causal=False)
    assert_close(out2.numpy(), ref2.detach().numpy(), TOL, TOL)


# ---------------------------------------------------------------- ViTEncoder

def test_vit_encoder_learned_positions_and_cls_match_torch_twin():
    torch, T = twins()
    rng = np.random.default_rng(13)
    m = nn.ViTEncoder(8, 4, in_channels=3, dim=16, depth=2, num_heads=4, hidden_dim=24, num_extra_tokens=1,
                      pre_norm=True, norm_eps=1e-6)
    layers = torch.nn.ModuleList([T["Layer"](16, 4, 4, 4, 24, "gelu", True, "layernorm", "sequential", None, 0,
                                             10000.0, eps=1e-6) for _ in range(2)])
    t = torch.nn.Module()
    t.patch_embed = torch.nn.Conv2d(3, 16, 4, stride=4)
    t.extra_tokens = torch.nn.Parameter(torch.randn(1, 1, 16))
    t.pos_embedding = torch.nn.Parameter(torch.randn(1, 5, 16))
    t.pre_norm = T["tnorm"]("layernorm", 16, 1e-6)
    t.layers = layers
    t.norm = T["tnorm"]("layernorm", 16, 1e-6)
    load(m, t)
    img = rnd(rng, 2, 3, 8, 8)
    mi, ti = mmu.tensor(img, requires_grad=True), torch.tensor(img, dtype=torch.float64, requires_grad=True)
    x = t.patch_embed(ti).flatten(2).transpose(1, 2)
    x = torch.cat([t.extra_tokens.expand(2, -1, -1), x], 1) + t.pos_embedding
    x = t.pre_norm(x)
    for layer in t.layers:
        x = layer(x)
    ref = t.norm(x)
    out = m(mi)
    assert out.shape == (2, 5, 16)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    out.sum().backward()
    ref.sum().backward()
    assert_close(mi.grad.numpy(), ti.grad.numpy(), TOL, TOL)
    check_grads(m, t)


def test_vit_encoder_rope2d_with_latent_tokens_matches_torch_twin():
    torch, T = twins()
    rng = np.random.default_rng(14)
    m = nn.ViTEncoder((8, 12), 4, in_channels=2, dim=16, depth=1, num_heads=2, hidden_dim=20, pos="rope2d",
                      num_extra_tokens=3, qk_norm="rmsnorm", final_norm=False)
    t = torch.nn.Module()
    t.patch_embed = torch.nn.Conv2d(2, 16, 4, stride=4)
    t.extra_tokens = torch.nn.Parameter(torch.randn(1, 3, 16))
    t.layers = torch.nn.ModuleList([T["Layer"](16, 2, 2, 8, 20, "gelu", True, "layernorm", "sequential", "rmsnorm",
                                               0, 10000.0, eps=1e-6)])
    load(m, t)
    assert "pos_embedding" not in m.state_dict() and "norm.weight" not in m.state_dict()
    img = rnd(rng, 2, 2, 8, 12)
    # 2-D RoPE of head_dim 8: pairs 0-1 follow the row, 2-3 the column (1-D RoPE of dim 4 each)
    rows, cols = np.divmod(np.arange(6), 3)
    inv = 1.0 / 10000.0 ** (np.arange(0, 4, 2) / 4)
    f = np.concatenate([rows[:, None] * inv, cols[:, None] * inv], 1)
    emb = np.concatenate([f, f], 1)
    cos = np.concatenate([np.ones((3, 8)), np.cos(emb)])
    sin = np.concatenate([np.zeros((3, 8)), np.sin(emb)])
    x = t.patch_embed(torch.tensor(img, dtype=torch.float64)).flatten(2).transpose(1, 2)
    x = torch.cat([t.extra_tokens.expand(2, -1, -1), x], 1)
    ref = t.layers[0](x, rope=(torch.tensor(cos), torch.tensor(sin)))
    out = m(mmu.tensor(img))
    assert out.shape == (2, 9, 16)
    assert_close(out.numpy(), ref.detach().numpy(), TOL, TOL)
    # rope2d takes other image sizes that the patch divides
    assert m(mmu.tensor(rnd(rng, 1, 2, 4, 8))).shape == (1, 3 + 2, 16)


# ---------------------------------------------------------------- validation

def test_parts_validate_their_arguments():
    with pytest.raises(ValueError, match="Attention: num_heads .* multiple of num_kv_heads"):
        nn.Attention(16, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="Attention: dim .* divisible"):
        nn.Attention(10, 4)
    with pytest.raises(ValueError, match="Attention: the rotary width"):
        nn.Attention(12, 2, rotary_fraction=0.5)  # head_dim 6 -> 3
    with pytest.raises(ValueError, match="Attention: rotary_fraction"):
        nn.Attention(16, 2, rotary_fraction=1.5)
    with pytest.raises(ValueError, match="Attention: qk_norm"):
        nn.Attention(16, 2, qk_norm="batchnorm")
    with pytest.raises(ValueError, match="Attention: rotary embeddings are not supported with cross"):
        nn.Attention(16, 2, cross_attention=True, rotary_fraction=1.0)
    with pytest.raises(ValueError, match="Attention: kv_dim is for cross"):
        nn.Attention(16, 2, kv_dim=4)
    a = nn.Attention(16, 2)
    with pytest.raises(ValueError, match=r"Attention: x must be \(B, L, dim=16\)"):
        a(mmu.randn(2, 3, 8))
    with pytest.raises(ValueError, match="Attention: context is only"):
        a(mmu.randn(2, 3, 16), context=mmu.randn(2, 3, 16))
    with pytest.raises(ValueError, match="needs a context"):
        nn.Attention(16, 2, cross_attention=True)(mmu.randn(2, 3, 16))
    with pytest.raises(TypeError, match="Attention: attn_mask must be bool or float32"):
        a(mmu.randn(2, 3, 16), attn_mask=np.ones((3, 3), np.int64))
    with pytest.raises(ValueError, match="MLP: activation"):
        nn.MLP(8, 16, activation="tanh")
    with pytest.raises(ValueError, match="TransformerLayer: residual"):
        nn.TransformerLayer(16, 2, residual="both")
    with pytest.raises(ValueError, match="TransformerLayer: norm"):
        nn.TransformerLayer(16, 2, norm="batchnorm")
    with pytest.raises(ValueError, match="TransformerLM: pos"):
        nn.TransformerLM(10, 16, 1, 2, pos="alibi")
    m = nn.TransformerLM(10, 16, 1, 2)
    ids = mmu.tensor(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        m()
    with pytest.raises(ValueError, match="input_ids must be \\(B, L\\) int64"):
        m(mmu.tensor(np.zeros(3, np.int64)))
    with pytest.raises(ValueError, match="attention_mask must be bool"):
        m(ids, attention_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="position_ids must be"):
        m(ids, position_ids=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="logits_at must be"):
        m(ids, logits_at="first")
    with pytest.raises(ValueError, match=r"logits_at positions must be in \[0, L=3\)"):
        m(ids, logits_at=np.array([[3], [0]]))
    with pytest.raises(ValueError, match="attn_mask must be"):
        m(ids, attn_mask=np.ones((2, 1, 3, 4), bool))
    with pytest.raises(ValueError, match="beyond the learned positions"):
        nn.TransformerLM(10, 16, 1, 2, pos="learned", max_seq_len=2)(ids)
    with pytest.raises(ValueError, match=r"ViTEncoder: image_size \(3, 3\) is smaller than one patch"):
        nn.ViTEncoder(3, 4, dim=8, depth=1, num_heads=2)
    # a size the patch does not divide: floor(10 / 4) = 2 patches a side, the last 2 rows / columns unread (the
    # stride-patch convolution of SigLIP / CLIP: so400m-patch14-384 sees 27 x 27 patches of 384 px)
    mmu.manual_seed(0)
    odd = nn.ViTEncoder(10, 4, dim=8, depth=1, num_heads=2)
    even = nn.ViTEncoder(8, 4, dim=8, depth=1, num_heads=2)
    even.load_state_dict(odd.state_dict())
    x = mmu.randn(1, 3, 10, 10)
    np.testing.assert_array_equal(odd(x).numpy(), even(x.numpy()[:, :, :8, :8].copy()).numpy())
    v = nn.ViTEncoder(8, 4, dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="learned positions need images"):
        v(mmu.randn(1, 3, 12, 12))
    with pytest.raises(ValueError, match=r"ViTEncoder: images must be \(B, 3, H, W\)"):
        v(mmu.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="rope2d' needs head_dim a multiple of 4"):
        nn.ViTEncoder(8, 4, dim=12, depth=1, num_heads=2, pos="rope2d")
