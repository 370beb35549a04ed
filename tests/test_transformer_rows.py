"""The last layer computed at the rows the logits read (TransformerLM with an index logits_at, and
the rows= argument of Attention / TransformerLayer behind it): outputs and every gradient equal
those of the full computation gathered afterwards, with causal, explicit (bool / additive) and
padding masks, per-row RoPE tables, GQA, one head and repeated rows; the path is really taken;
bad rows are named errors. Show-o's T2I loss reads the masked image tokens only
(ShowO.t2i_loss_positions) and equals the loss over every image logit; its MMU loss reads the
answers' predecessors only (ShowO.mmu_loss_positions) and equals next_token_loss from [EOI] on."""
import numpy as np
import pytest

import mmu
from mmu import nn
from mmu.nn.attention import take_rows

TOL = 2e-5


def _close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    scale = max(np.abs(want).max(), 1e-6)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got - want).max() / scale
    assert err < TOL, (what, err)


def _grads(module):
    return {n: p.grad.numpy().copy() for n, p in module.named_parameters() if p.grad is not None}


def _zero(module):
    for p in module.parameters():
        p.grad = None


LM_CASES = {
    # Show-o / Phi: parallel residual, LayerNorm, QK LayerNorm, partial RoPE, tanh GELU, head bias
    "phi_qknorm": dict(residual="parallel", qk_norm="layernorm", rotary_fraction=0.5, activation="gelu_tanh",
                       head_bias=True),
    # LLaMA: sequential, RMSNorm, GQA, full RoPE, SwiGLU, no biases
    "llama_gqa": dict(residual="sequential", norm="rmsnorm", num_kv_heads=1, rotary_fraction=1.0,
                      activation="swiglu", bias=False),
    # one head, learned positions
    "one_head": dict(num_heads=1, pos="learned", max_seq_len=16),
}


def _lm(name):
    kw = dict(vocab_size=23, dim=16, num_layers=2, num_heads=2)
    kw.update(LM_CASES[name])
    mmu.manual_seed(3)
    return nn.TransformerLM(**kw)


def _run(lm, ids, at, weight, **kw):
    """logits at `at` (B, n) and the gradients of sum(logits * weight): either through the index
    logits_at (the rows path) or all logits gathered afterwards."""
    _zero(lm)
    if at is None:
        logits = lm(mmu.tensor(ids), **kw)
        out = logits
    else:
        out = lm(mmu.tensor(ids), logits_at=at, **kw)
    (out * mmu.tensor(weight)).sum().backward()
    return out.numpy().copy(), _grads(lm)


def _masks(b, l, rng):
    bool_mask = rng.random((b, 1, l, l)) < 0.7
    bool_mask[..., np.arange(l), np.arange(l)] = True  # every row sees itself
    return {"causal": {}, "bool": {"attn_mask": bool_mask},
            "additive": {"attn_mask": np.where(bool_mask[:1], 0.0, -np.inf).astype(np.float32)
                         + rng.normal(size=(1, 1, l, l)).astype(np.float32)},
            "padded": {"attention_mask": np.array([[False, False, True, True, True, True, True, True, True],
                                                   [True] * 9])}}


@pytest.mark.parametrize("name", sorted(LM_CASES))
@pytest.mark.parametrize("masking", ["causal", "bool", "additive", "padded"])
def test_lm_index_logits_equal_the_full_computation_with_their_gradients(name, masking):
    rng = np.random.default_rng(0)
    b, l = 2, 9
    lm = _lm(name)
    ids = rng.integers(0, 23, (b, l))
    at = np.array([[8, 3, 5, 5], [0, 2, 7, 1]])  # unsorted, a repeated row
    kw = _masks(b, l, rng)[masking]
    weight = rng.normal(size=(b, at.shape[1], 23)).astype(np.float32)
    full_weight = np.zeros((b, l, 23), np.float32)
    for i in range(b):
        for j, p in enumerate(at[i]):
            full_weight[i, p] += weight[i, j]
    got, got_grads = _run(lm, ids, at, weight, **kw)
    full, want_grads = _run(lm, ids, None, full_weight, **kw)
    _close(got, np.take_along_axis(full, at[..., None], 1), "logits")
    assert set(got_grads) == set(want_grads)
    for n in want_grads:
        _close(got_grads[n], want_grads[n], n)


def test_lm_last_layer_computes_only_the_rows_asked_for():
    """The rows path is taken: the last layer's MLP sees (B, n, dim), the others (B, L, dim); with
    a cache, or dropout in training, every row is computed (then gathered)."""
    lm = _lm("phi_qknorm")
    seen = []
    for i, layer in enumerate(lm.layers):
        fwd = layer.mlp.forward

        def record(x, fwd=fwd, i=i):
            seen.append((i, tuple(x.shape)))
            return fwd(x)
        layer.mlp.forward = record
    ids = np.arange(14).reshape(2, 7) % 23
    out = lm(mmu.tensor(ids), logits_at=np.array([[6, 2], [1, 1]]))
    assert out.shape == (2, 2, 23)
    assert seen == [(0, (2, 7, 16)), (1, (2, 2, 16))]
    seen.clear()
    with mmu.no_grad():
        lm(mmu.tensor(ids), logits_at=np.array([[6, 2], [1, 1]]), cache=lm.new_cache(2, 7))
    assert seen == [(0, (2, 7, 16)), (1, (2, 7, 16))]
    seen.clear()
    lm.layers[1].dropout.p = 0.5
    lm.train()
    lm(mmu.tensor(ids), logits_at=np.array([[6, 2], [1, 1]]))
    assert seen == [(0, (2, 7, 16)), (1, (2, 7, 16))]


@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (1, 1)])
@pytest.mark.parametrize("masking", ["causal", "bool", "none"])
def test_attention_rows_equal_the_full_rows(heads, masking):
    rng = np.random.default_rng(1)
    b, l, dim = 2, 11, 8
    h, hkv = heads
    mmu.manual_seed(4)
    attn = nn.Attention(dim, h, num_kv_heads=hkv, head_dim=4, qk_norm="layernorm", rotary_fraction=0.5)
    x = rng.normal(size=(b, l, dim)).astype(np.float32)
    rows = np.array([[10, 0, 4, 4, 7], [3, 9, 2, 5, 1]])
    pos = np.array([np.arange(l), np.arange(l) + 3])  # per-row RoPE tables (B, 1, L, R)
    cos, sin = mmu.functional.rotary_cos_sin(pos.reshape(-1), attn.rotary_dim)
    rope = (cos.reshape(b, 1, l, -1), sin.reshape(b, 1, l, -1))
    mask = rng.random((b, 1, l, l)) < 0.6
    kw = {"causal": {"is_causal": True}, "bool": {"attn_mask": mask}, "none": {}}[masking]
    g = rng.normal(size=(b, rows.shape[1], dim)).astype(np.float32)

    xt = mmu.tensor(x, requires_grad=True)
    out = attn(xt, rope=rope, rows=rows, **kw)
    (out * mmu.tensor(g)).sum().backward()
    got, got_dx, got_grads = out.numpy().copy(), xt.grad.numpy().copy(), _grads(attn)
    _zero(attn)
    xt = mmu.tensor(x, requires_grad=True)
    full = take_rows(attn(xt, rope=rope, **kw), rows)
    (full * mmu.tensor(g)).sum().backward()
    _close(got, full.numpy(), "out")
    _close(got_dx, xt.grad.numpy(), "dx")
    for n, want in _grads(attn).items():
        _close(got_grads[n], want, n)


def test_rows_arguments_are_checked():
    attn = nn.Attention(8, 2, rotary_fraction=0.5)
    x = mmu.tensor(np.zeros((2, 5, 8), np.float32))
    for rows, msg in [(np.array([[0, 5], [1, 2]]), r"rows must be positions in \[0, L=5\)"),
                      (np.array([[0, -1], [1, 2]]), "rows must be positions"),
                      (np.array([0, 1]), r"rows must be an integer \(B=2, n >= 1\)"),
                      (np.zeros((2, 0), np.int64), "rows must be an integer"),
                      (np.array([[0.0, 1.0], [1.0, 2.0]]), "rows must be an integer")]:
        with pytest.raises(ValueError, match=msg):
            attn(x, rows=rows)
    with pytest.raises(ValueError, match="Attention: rows is for self-attention without a cache"):
        attn(x, rows=np.array([[0], [1]]), cache=nn.KVCache(1, 2, 2, 8, 4))
    with pytest.raises(ValueError, match="Attention: rows needs an attn_mask that does not require grad"):
        attn(x, rows=np.array([[0], [1]]), attn_mask=mmu.tensor(np.zeros((5, 5), np.float32), requires_grad=True))
    layer = nn.TransformerLayer(8, 2)
    with pytest.raises(ValueError, match="TransformerLayer: rows must be positions"):
        layer(x, rows=np.array([[9], [1]]))


def test_show_o_t2i_loss_reads_the_masked_tokens_only():
    from mmu.losses import masked_token_loss
    from mmu.models.show_o import ShowO
    from mmu.models.show_o.prompting import IGNORE_INDEX
    mmu.manual_seed(5)
    model = ShowO(llm_vocab_size=24, codebook_size=64, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=2,
                  num_heads=2)
    c = model.config
    start = c.max_text_len + 2
    labels = np.full((3, start + 17), IGNORE_INDEX, np.int64)
    labels[0, start + np.array([1, 4, 15])] = 100
    labels[1, start + np.array([0])] = 101
    labels[2, start + np.arange(16)] = 102
    labels[:, 3] = 7  # a text label before the image: not an image token, never read
    where, counted = model.t2i_loss_positions(labels)
    assert where.shape == counted.shape == (3, 16)  # 16 masked in row 2; 32 would pass num_vq_tokens
    np.testing.assert_array_equal(where[0, :3], start + np.array([1, 4, 15]))
    np.testing.assert_array_equal(where[0, 3:], start + 1)
    np.testing.assert_array_equal(where[1], start)
    np.testing.assert_array_equal(where[2], start + np.arange(16))
    np.testing.assert_array_equal(counted.sum(1), [3, 1, 16])
    with pytest.raises(ValueError, match="ShowO.t2i_loss_positions: labels must be"):
        model.t2i_loss_positions(labels[:, :-1])
    # 64 image tokens: n rounds the most masked (3) up to 32, the rows repeat their first masked token
    from mmu.models.show_o import default_image_tokenizer
    big = ShowO(llm_vocab_size=24, codebook_size=64, num_vq_tokens=64, max_text_len=8, dim=16, num_layers=1,
                num_heads=2, image_tokenizer=default_image_tokenizer(64, resolution=32))
    labels = np.full((2, start + 65), IGNORE_INDEX, np.int64)
    labels[0, start + np.array([2, 9, 40])] = 100
    labels[1, start + 63] = 101
    where, counted = big.t2i_loss_positions(labels)
    assert where.shape == (2, 32)
    np.testing.assert_array_equal(where[0], start + np.array([2, 9, 40] + [2] * 29))
    np.testing.assert_array_equal(where[1], start + 63)
    np.testing.assert_array_equal(counted.sum(1), [3, 1])

    # the training step's T2I term equals masked_token_loss over every image logit, value and gradients
    codes = np.random.default_rng(2).integers(0, 64, (3, 16))
    batch = {"t2i": {"text_ids": [[5, 6], [7], [8, 9, 10]], "codes": codes}}
    model.train()
    mmu.manual_seed(9)
    loss, _ = model.training_step(batch, 0)
    loss.backward()
    got, got_grads = loss.item(), _grads(model)
    _zero(model)
    mmu.manual_seed(9)
    ids, labels, _, _ = model.t2i_training_inputs(batch["t2i"]["text_ids"], model.image_token_ids(codes))
    at = np.broadcast_to(np.arange(start, start + 16), (3, 16))
    logits = model.lm(mmu.tensor(ids), attn_mask=model.omni_attention_mask(ids), logits_at="all")
    logits = take_rows(logits, np.ascontiguousarray(at))
    target = labels[:, start:start + 16]
    hidden = target != IGNORE_INDEX
    want = masked_token_loss(logits, mmu.tensor(np.where(hidden, target, 0)), mmu.tensor(hidden)) * c.t2i_coeff
    want.backward()
    assert abs(got - want.item()) < 1e-6 * abs(want.item())
    for n, g in _grads(model).items():
        _close(got_grads[n], g, n)


def test_show_o_mmu_loss_reads_the_answers_predecessors_only():
    from mmu.losses import next_token_loss
    from mmu.models.show_o import ShowO
    from mmu.models.show_o.prompting import IGNORE_INDEX, mmu_prompt
    mmu.manual_seed(6)
    model = ShowO(llm_vocab_size=24, codebook_size=64, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=2,
                  num_heads=2)
    c = model.config
    codes = np.random.default_rng(3).integers(0, 64, (2, 16))
    questions, answers = [[5, 6, 7], [8]], [[9], [10, 11, 12]]
    ids, labels = mmu_prompt(c, model.image_token_ids(codes), questions, answers)
    start = 2 + c.num_vq_tokens
    where, counted = model.mmu_loss_positions(labels)
    for b in range(2):  # exactly the positions whose next label is a target, in order
        want = [t for t in range(start, ids.shape[1] - 1) if labels[b, t + 1] != IGNORE_INDEX]
        np.testing.assert_array_equal(where[b, :len(want)], want)
        assert counted[b].sum() == len(want) and (where[b, len(want):] == want[0]).all()
    with pytest.raises(ValueError, match="ShowO.mmu_loss_positions: labels must be"):
        model.mmu_loss_positions(labels[:, :start])

    # the training step's MMU term equals next_token_loss over every logit from [EOI] on, value and gradients
    model.train()
    batch = {"mmu": {"codes": codes, "question_ids": questions, "answer_ids": answers}}
    loss, _ = model.training_step(batch, 0)
    loss.backward()
    got, got_grads = loss.item(), _grads(model)
    _zero(model)
    at = np.ascontiguousarray(np.broadcast_to(np.arange(start, ids.shape[1]), (2, ids.shape[1] - start)))
    logits = take_rows(model.lm(mmu.tensor(ids), attn_mask=model.mmu_attention_mask(ids), logits_at="all"), at)
    want = next_token_loss(logits, mmu.tensor(np.ascontiguousarray(labels[:, start:]))) * c.mmu_coeff
    want.backward()
    assert abs(got - want.item()) < 1e-6 * abs(want.item())
    for n, g in _grads(model).items():
        _close(got_grads[n], g, n)
