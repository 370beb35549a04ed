"""The op table (csrc/core/op_table.h) against the tests and the double-backward rules.

Every op the C core can record must (1) be recorded by at least one case of the op test tables
(test_ops.CASES, test_spatial.CASES, test_conv.CASES, test_sort.CASES, and OP_CASES below for the fused ops those
tables do not reach), so it is checked against a float64 reference, finite differences and torch;
and (2) have a double-backward rule in mmu/_double_backward.py or an explicit entry in its
NO_DOUBLE_BACKWARD (op -> why). A new op without either fails here. Walking the recorded graphs
also decodes every node's ctx by the op table's field names (mmu._C Node.ctx), so a field list
that does not match what an op's forward writes fails too.
"""
import itertools
import re

import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu import _C, _double_backward
from mmu.losses import contrastive, reconstruction
from mmu.quantizers.lfq import lfq_entropy

try:
    import gradcheck
    import test_conv
    import test_ops
    import test_sort
    import test_spatial
except ImportError:
    from tests import gradcheck, test_conv, test_ops, test_sort, test_spatial


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Cases for the fused ops the generic tables do not reach; each is checked here against a float64
# NumPy reference (forward) and finite differences of it (backward), as the tables do.
def _sdpa_ref(q, k, v):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def _rotary_ref(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], -1) * sin


def _logsumexp(a, axis):
    m = a.max(axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis, keepdims=True))).squeeze(axis)


def _clip_ref(img, txt, scale):
    logits = np.exp(scale) * img @ txt.T
    diag = np.diagonal(logits)
    return 0.5 * (np.mean(_logsumexp(logits, 1) - diag) + np.mean(_logsumexp(logits, 0) - diag))


def _siglip_ref(img, txt, t, b):
    logits = img @ txt.T * np.exp(t) + b
    labels = 2 * np.eye(len(img)) - 1
    return np.sum(np.logaddexp(0.0, -labels * logits)) / len(img)


def _lpips_ref(f0, f1, w):
    n0 = f0 / (np.sqrt((f0 ** 2).sum(1, keepdims=True)) + 1e-10)
    n1 = f1 / (np.sqrt((f1 ** 2).sum(1, keepdims=True)) + 1e-10)
    return (w.reshape(1, -1, 1, 1) * (n0 - n1) ** 2).sum(1, keepdims=True).mean((2, 3), keepdims=True)


def _batch_norm_ref(x, w, b):
    mean, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)


def _huber_ref(x, t, delta):
    d = np.abs(x - t)
    return np.mean(np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)))


def _max_pool_ref(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max((3, 5))


def _logit_laplace_ref(x, mu, log_b, eps=0.1):
    xs = (1 - 2 * eps) * x + eps
    lx = np.log(xs / (1 - xs))
    return np.mean(np.abs(lx - mu) * np.exp(-log_b) + log_b + np.log(2 * xs * (1 - xs)))


def _lfq_entropy_ref(x):
    """[mean per-sample entropy, mean over codebooks of the batch-mean code distribution's entropy] of
    softmax(2·x·c) over all c in {-1, 1}^d (inv_temperature = codebook_scale = 1), by enumeration."""
    codes = np.array(list(itertools.product([-1.0, 1.0], repeat=x.shape[-1])))
    logits = 2.0 * np.einsum("nkd,cd->nkc", x, codes)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    avg = p.mean(0)
    return np.array([-(p * np.log(p)).sum(-1).mean(), -(avg * np.log(avg)).sum(-1).mean()])


# FSQ with odd levels (no offset): bound(z) = tanh(z)·(L-1)·1.001/2, out = round(bound) / (L//2), and the
# straight-through backward d(bound)/dz / (L//2). The reference is bound(z) / (L//2) plus the rounding
# offset taken at the case's input, so its value is the forward and its derivative the straight-through one.
FSQ_LEVELS = (5, 3)
FSQ_Z = np.random.default_rng(26).standard_normal((4, 2)).astype(np.float32)


def _fsq_ref(z):
    half_l = np.array([(L - 1) * np.float32(1.001) / 2 for L in FSQ_LEVELS], np.float64)
    hw = np.array([L // 2 for L in FSQ_LEVELS], np.float64)
    b0 = np.tanh(FSQ_Z.astype(np.float64)) * half_l
    return (np.tanh(z) * half_l + (np.round(b0) - b0)) / hw


# Dropout's mask is a function of the seed and the stream position: the case reseeds before the op, and
# the reference applies the mask that seed gives (drawn once here, the RNG state restored afterwards).
DROPOUT_SHAPE, DROPOUT_SEED = (3, 8), 11


def _seeded_dropout(x):
    mmu.manual_seed(DROPOUT_SEED)
    return F.dropout(x, 0.5)


def _dropout_mask():
    state = _C.get_rng_state()
    try:
        return _seeded_dropout(mmu.ones(*DROPOUT_SHAPE)).numpy().astype(np.float64)
    finally:
        _C.set_rng_state(*state)


DROPOUT_MASK = _dropout_mask()

ROT = np.random.default_rng(7).uniform(-1, 1, (2, 3, 4)).astype(np.float32)
# qkv_heads: B 2, L 3, 2 query heads + 1 key/value head of D 4, LayerNorm on q and k, RoPE on the first 2 dims
QKV_ROT = np.random.default_rng(30).uniform(-1, 1, (3, 2)).astype(np.float32)
PACKED_MASK = np.random.default_rng(31).random((2, 1, 3, 3)) < 0.6
PACKED_MASK[..., np.arange(3), np.arange(3)] = True


def _qkv_heads_ref(y, qw, qb, kw, kb):
    z = y.reshape(2, 3, 4, 4).transpose(0, 2, 1, 3)
    out = []
    for j in range(4):
        h = z[:, j]
        if j < 3:
            w, b = (qw, qb) if j < 2 else (kw, kb)
            h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * w + b
            h = np.concatenate([_rotary_ref(h[..., :2], np.cos(QKV_ROT), np.sin(QKV_ROT)), h[..., 2:]], -1)
        out.append(h)
    return np.stack(out, 1)


def _packed_ref(z):
    q, k, v = z[:, :2], np.repeat(z[:, 2:3], 2, 1), np.repeat(z[:, 3:4], 2, 1)
    s = np.where(PACKED_MASK, q @ np.swapaxes(k, -1, -2) / 2.0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def _window_ref(q, k, v, b):
    """window_attention on a (2, 4) grid of (2, 2) windows: each window's tokens cut out and attended"""
    out = np.zeros(q.shape[:-1] + v.shape[-1:])
    for idx in ([0, 1, 4, 5], [2, 3, 6, 7]):
        s = q[..., idx, :] @ np.swapaxes(k[..., idx, :], -1, -2) / np.sqrt(q.shape[-1]) + b
        p = np.exp(s - s.max(-1, keepdims=True))
        out[..., idx, :] = (p / p.sum(-1, keepdims=True)) @ v[..., idx, :]
    return out


def _temporal_ref(q, k, v):
    """temporal_attention over 3 frames of 2 locations, causal: location l is tokens l, l + 2, l + 4"""
    out = np.zeros(q.shape[:-1] + v.shape[-1:])
    for idx in ([0, 2, 4], [1, 3, 5]):
        s = q[..., idx, :] @ np.swapaxes(k[..., idx, :], -1, -2) / np.sqrt(q.shape[-1])
        s = np.where(np.tril(np.ones((3, 3), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[..., idx, :] = (p / p.sum(-1, keepdims=True)) @ v[..., idx, :]
    return out


OP_CASES = [
    ("window_attention", lambda m, q, k, v, b: m.F.window_attention(q, k, v, (2, 4), (2, 2), bias=b), _window_ref,
     [rnd(1, 2, 8, 3, seed=38), rnd(1, 2, 8, 3, seed=39), rnd(1, 2, 8, 2, seed=40), rnd(2, 4, 4, seed=41)]),
    ("temporal_attention", lambda m, q, k, v: m.F.temporal_attention(q, k, v, 3), _temporal_ref,
     [rnd(1, 2, 6, 3, seed=42), rnd(1, 2, 6, 3, seed=43), rnd(1, 2, 6, 2, seed=44)]),
    ("sdpa", lambda m, q, k, v: m.F.scaled_dot_product_attention(q, k, v), _sdpa_ref,
     [rnd(2, 3, 4, seed=1), rnd(2, 5, 4, seed=2), rnd(2, 5, 3, seed=3)]),
    ("apply_rotary", lambda m, x: m.F.apply_rotary(x, m.tensor(np.cos(ROT[0])), m.tensor(np.sin(ROT[0]))),
     lambda x: _rotary_ref(x, np.cos(ROT[0]), np.sin(ROT[0])), [rnd(2, 3, 4, seed=4)]),
    ("qkv_heads", lambda m, y, qw, qb, kw, kb: m.F.qkv_heads(y, 2, 1, "layernorm", qw, qb, kw, kb, 1e-5,
                                                           m.tensor(np.cos(QKV_ROT)), m.tensor(np.sin(QKV_ROT))),
     _qkv_heads_ref, [rnd(2, 3, 16, seed=32), rnd(4, seed=33), rnd(4, seed=34), rnd(4, seed=35), rnd(4, seed=36)]),
    ("attention_of_heads", lambda m, z: m.F.attention_of_heads(z, 2, 1, attn_mask=m.tensor(PACKED_MASK)), _packed_ref,
     [rnd(2, 4, 3, 4, seed=37)]),
    ("clip_loss", lambda m, i, t, s: contrastive.clip_loss(i, t, s), _clip_ref,
     [rnd(3, 4, seed=5) * 0.5, rnd(3, 4, seed=6) * 0.5, np.float32(0.3).reshape(())]),
    ("siglip_loss", lambda m, i, t, a, b: contrastive.siglip_loss(i, t, a, b), _siglip_ref,
     [rnd(3, 4, seed=7) * 0.5, rnd(3, 4, seed=8) * 0.5, np.float32(0.2).reshape(()), np.float32(-1.0).reshape(())]),
    ("lpips_distance", lambda m, a, b, w: m.F.lpips_distance(a, b, w), _lpips_ref,
     [rnd(2, 3, 2, 2, seed=9), rnd(2, 3, 2, 2, seed=10), np.abs(rnd(3, seed=11))]),
    ("batch_norm_train", lambda m, x, w, b: m.F.batch_norm(x, None, None, w, b, training=True), _batch_norm_ref,
     [rnd(3, 2, 2, 2, seed=12), rnd(2, seed=13), rnd(2, seed=14)]),
    ("max_pool2d", lambda m, x: m.F.max_pool2d(x, 2), _max_pool_ref, [rnd(1, 2, 4, 4, seed=15)]),
    ("huber_loss", lambda m, x, t: reconstruction.huber_loss(x, t, delta=0.5), lambda x, t: _huber_ref(x, t, 0.5),
     [rnd(2, 5, seed=16), rnd(2, 5, seed=17)]),
    ("smooth_l1_loss", lambda m, x, t: reconstruction.smooth_l1_loss(x, t, beta=0.5),
     lambda x, t: _huber_ref(x, t, 0.5) / 0.5, [rnd(2, 5, seed=18), rnd(2, 5, seed=19)]),
    ("logit_laplace_loss", lambda m, x, mu, lb: reconstruction.logit_laplace_loss(x, mu, lb), _logit_laplace_ref,
     [np.random.default_rng(20).uniform(0.1, 0.9, (2, 3)).astype(np.float32), rnd(2, 3, seed=21), rnd(2, 3, seed=22) * 0.3]),
    ("group_norm_silu", lambda m, x, w, b: m.F.group_norm_silu(x, 2, w, b),
     lambda x, w, b: (lambda z: z / (1 + np.exp(-z)))(test_spatial.group_norm_ref(x, 2, w, b)),
     [rnd(2, 4, 3, seed=23), rnd(4, seed=24), rnd(4, seed=25)]),
    ("swiglu", lambda m, a, b: m.F.swiglu(a, b), lambda a, b: a / (1 + np.exp(-a)) * b,
     [rnd(2, 5, seed=38), rnd(2, 5, seed=39)]),
    ("lfq_entropy", lambda m, x: lfq_entropy(x, 1.0), _lfq_entropy_ref, [rnd(4, 2, 3, seed=27)]),
    ("fsq", lambda m, z: _C.fsq(z, FSQ_LEVELS, False)[0], _fsq_ref, [FSQ_Z]),
    ("dropout", lambda m, x: _seeded_dropout(x), lambda x: x * DROPOUT_MASK, [rnd(*DROPOUT_SHAPE, seed=28)]),
    ("softplus", lambda m, x: m.F.softplus(x, beta=2.0, threshold=1.0),
     lambda x: np.where(2 * x > 1.0, x, np.log1p(np.exp(2 * x)) / 2), [rnd(3, 5, seed=29)]),
]
OP_IDS = [c[0] for c in OP_CASES]


@pytest.mark.parametrize("case", OP_CASES, ids=OP_IDS)
def test_op_case_forward_and_backward(case):
    _, fn, ref, arrays = case
    out = gradcheck.run_case(gradcheck.MmuBackend(), fn, arrays, [False] * len(arrays))[1]
    gradcheck.assert_close(out, ref(*[a.astype(np.float64) for a in arrays]), rtol=1e-4, atol=1e-5,
                           what=f"{case[0]} forward")
    gradcheck.check_mmu_grads(fn, ref, arrays, rtol=2e-3, atol=2e-4)


def _graph_ops(out):
    """{op name: decoded ctx of one node} of every node in out's graph (each ctx read, so decoded)."""
    seen, found = set(), {}
    node, _ = _C.graph_node(out)
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        found.setdefault(n.op, n.ctx)
        stack.extend(fn for fn, _, _ in n.inputs if isinstance(fn, _C.Node))
    return found


def _recorded_by_tables():
    """Op name -> (case id, ctx) for the ops recorded by a differentiable case of any table."""
    recorded = {}

    def walk(case_id, out):
        for op, ctx in _graph_ops(out).items():
            recorded.setdefault(op, (case_id, ctx))

    mmu_backend = gradcheck.MmuBackend()
    for c in test_ops.DIFF_CASES:
        walk(c.id, gradcheck.run_case(mmu_backend, c.fn, c.make_inputs(), c.grad_flags, c.raw_flags)[0])
    for cid, fn, _, arrays in list(test_spatial.CASES) + list(test_sort.CASES) + OP_CASES:
        walk(cid, gradcheck.run_case(mmu_backend, fn, arrays, [True] * len(arrays))[0])
    for case in test_conv.CASES:
        walk(case[0], test_conv.run(F, test_conv.mmu_tensor, case, test_conv.make_inputs(case))[0])
    return recorded


def test_every_op_has_a_test_case():
    recorded = _recorded_by_tables()
    missing = [op for op in _C.OPS if op not in recorded]
    assert not missing, (f"ops of csrc/core/op_table.h that no case of the op test tables records: {missing}; "
                         "add a case (test_ops.CASES, test_spatial.CASES, test_conv.CASES, test_sort.CASES or OP_CASES here)")


def test_every_op_has_a_double_backward_rule_or_an_explicit_none():
    rules, none = set(_double_backward._RULES), dict(_double_backward.NO_DOUBLE_BACKWARD)
    neither = [op for op in _C.OPS if op not in rules and op not in none]
    assert not neither, (f"ops with neither a double-backward rule nor an entry in NO_DOUBLE_BACKWARD "
                         f"(mmu/_double_backward.py): {neither}")
    assert not rules & set(none), f"ops with a rule and a 'none' entry: {sorted(rules & set(none))}"
    stale = sorted((rules | set(none)) - set(_C.OPS))
    assert not stale, f"double-backward entries for ops the op table does not have: {stale}"
    assert all(isinstance(why, str) and why for why in none.values())


@pytest.mark.parametrize("op", sorted(_double_backward.NO_DOUBLE_BACKWARD))
def test_an_op_without_a_rule_says_why_under_create_graph(op):
    """grad(create_graph=True) through an op marked 'none' raises NotImplementedError naming the op
    and the recorded reason (never a silently wrong second derivative)."""
    case_id, _ = _recorded_by_tables()[op]
    mmu_backend = gradcheck.MmuBackend()
    cases = {c.id: c for c in test_ops.DIFF_CASES}
    if case_id in cases:
        c = cases[case_id]
        out, _, _, _, inputs = gradcheck.run_case(mmu_backend, c.fn, c.make_inputs(), c.grad_flags, c.raw_flags)
    else:
        fn, arrays = {cid: (fn, arrays) for cid, fn, _, arrays in list(test_spatial.CASES) + list(test_sort.CASES) + OP_CASES}[case_id]
        out, _, _, _, inputs = gradcheck.run_case(mmu_backend, fn, arrays, [True] * len(arrays))
    xs = [t for t in inputs if isinstance(t, mmu.Tensor) and t.requires_grad]
    out = out.sum()
    with pytest.raises(NotImplementedError, match=op):
        mmu.autograd.grad(out, xs, create_graph=True, allow_unused=True)
    with pytest.raises(NotImplementedError, match=re.escape(_double_backward.NO_DOUBLE_BACKWARD[op])):
        mmu.autograd.grad(out, xs, create_graph=True, allow_unused=True)


def test_node_ctx_is_decoded_by_name():
    """The ctx of a node comes back as named fields (not positions), with the values the op got."""
    x = mmu.tensor(rnd(2, 3, 5, 6), requires_grad=True)
    w = mmu.tensor(rnd(4, 3, 3, 2))
    geo = _C.graph_node(F.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2)))[0].ctx
    assert geo["transposed"] == 0 and geo["sp"] == 2 and (geo["N"], geo["IC"], geo["OC"], geo["G"]) == (2, 3, 4, 1)
    assert geo["k"] == (3, 2) and geo["stride"] == (2, 1) and geo["dilation"] == (1, 2)
    assert geo["pad_l"] == (1, 0) and geo["in"] == (5, 6) and geo["out"] == (3, 4)
    gn = _C.graph_node(F.group_norm(x, 3, eps=1e-3))[0].ctx
    assert gn == {"N": 2, "C": 3, "S": 30, "G": 3, "act": 0, "eps": pytest.approx(1e-3)}
    pad = _C.graph_node(F.pad(x, (1, 2, 0, 3)))[0].ctx
    assert pad == {"lo": (0, 0, 0, 1), "mode": _C.PAD_MODES["constant"], "hi": (0, 0, 3, 2)}
    assert _C.graph_node(x.permute(2, 0, 3, 1))[0].ctx == {"perm": (2, 0, 3, 1)}
    cat = _C.graph_node(mmu.cat([x, x[:, :1]], dim=1))[0].ctx
    assert cat == {"dim": 1, "sizes": (3, 1)}
    assert _C.graph_node(x.sum(dim=(1, 3)))[0].ctx == {"dim_mask": 0b1010}


def test_codes_exported_by_the_core_run_the_ops_they_name():
    """mmu._C's code tables drive the C ops (Python mirrors none of them by hand)."""
    a, b = rnd(3, 4, seed=1), rnd(3, 4, seed=2)
    np_binary = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "maximum": np.maximum,
                 "minimum": np.minimum, "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
                 "eq": np.equal, "ne": np.not_equal}
    assert set(_C.BINARY_OPS) == set(np_binary) | {"logical_and", "logical_or", "logical_xor"}
    for name, fn in np_binary.items():
        np.testing.assert_allclose(_C.binary(_C.BINARY_OPS[name], a, b).numpy(), fn(a, b), rtol=1e-6, err_msg=name)
    p, q = a > 0, b > 0
    for name, fn in (("logical_and", np.logical_and), ("logical_or", np.logical_or),
                     ("logical_xor", np.logical_xor)):
        np.testing.assert_array_equal(_C.binary(_C.BINARY_OPS[name], p, q).numpy(), fn(p, q), err_msg=name)
    np_unary = {"neg": np.negative, "exp": np.exp, "abs": np.abs, "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0),
                "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "silu": lambda v: v / (1 + np.exp(-v))}
    for name, fn in np_unary.items():
        np.testing.assert_allclose(_C.unary(_C.UNARY_OPS[name], a).numpy(), fn(a), rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("log", "sqrt"):
        np.testing.assert_allclose(_C.unary(_C.UNARY_OPS[name], np.abs(a) + 0.1).numpy(),
                                   getattr(np, name)(np.abs(a) + 0.1), rtol=1e-5, atol=1e-5, err_msg=name)
    for name, fn in (("sum", np.sum), ("mean", np.mean), ("amax", np.max), ("amin", np.min)):
        np.testing.assert_allclose(_C.reduce(_C.REDUCE_OPS[name], a, (1,), False).numpy(), fn(a, axis=1),
                                   rtol=1e-6, err_msg=name)
    for name, fn in (("none", lambda d: d), ("mean", np.mean), ("sum", np.sum)):
        np.testing.assert_allclose(_C.mse_loss(a, b, _C.LOSS_REDUCTIONS[name]).numpy(), fn((a - b) ** 2),
                                   rtol=1e-5, err_msg=name)
    for name, dt in (("float32", np.float32), ("int64", np.int64), ("bool", np.bool_)):
        assert _C.full((2,), _C.DTYPES[name], 1.0).numpy().dtype == dt


def test_max_dims_is_the_core_limit():
    assert mmu.zeros(*([1] * _C.MAX_DIMS)).ndim == _C.MAX_DIMS
    with pytest.raises(ValueError):
        mmu.zeros(*([1] * (_C.MAX_DIMS + 1)))
    from mmu.io import safetensors
    assert safetensors.MAX_DIMS == _C.MAX_DIMS
