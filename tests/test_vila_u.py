"""mmu.models.vila_u: VILA-U's autoregressive model (VILAU), its depth transformer and its generation.

The references are written from mit-han-lab/vila-u's code: rqtransformer/modeling_rqtransformer.py and
attention.py (RQTransformer.forward / generate, AttentionBlock, top_k_logits, top_p_probs),
language_model/vila_u_llama.py (which hidden states predict which codes) and vila_u_arch.py (the CFG rows,
the cumsum of code embeddings fed back)."""
import math

import numpy as np
import pytest

import mmu
import mmu.models
from mmu.models.vila_u import VILAU, DepthTransformer, UnifiedVisionTower, VILAUConfig, tower_geometry
from mmu.train import TrainConfig, Trainer

# tiny vocabulary: text 0..11 (sot 1, eot 2), [SOI] 12, [EOI] 13, [SOV] 14, [EOV] 15
SOT, EOT, SOI, EOI, SOV, EOV = 1, 2, 12, 13, 14, 15
K, D, C, HW = 16, 3, 8, 2  # codebook size, RVQ depth, code width, latent grid side (N = 4 positions)
N = HW * HW


# ------------------------------------------------------------------------------------------ test helpers

class _StandInConfig:
    """Test helper: the fields VILAU reads from a UnifiedVisionTowerConfig."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def to_dict(self):
        return dict(self.__dict__)


class StandInTower:
    """Test helper standing in for the vision tower: a fixed random codebook shared by the D depths
    (code_embeddings), encode / decode as fixed maps over a (HW*4)-px single-channel image."""

    def __init__(self, codebook_size=K, rvq_depth=D, codebook_dim=C, hw=HW, seed=0):
        self.config = _StandInConfig(codebook_size=codebook_size, rvq_depth=rvq_depth, codebook_dim=codebook_dim,
                                     image_size=hw * 4, patch_size=4)
        self.latent_shape = (hw, hw)
        self.codebook = np.random.default_rng(seed).standard_normal((codebook_size, codebook_dim)).astype(np.float32)

    def code_embeddings(self, codes):
        return mmu.tensor(self.codebook[np.asarray(codes)])

    def encode(self, images):
        # the mean of each 4x4 patch, bucketed into codebook_size levels, at every depth
        x = np.asarray(images, np.float32)
        b, _, h, w = x.shape
        m = x.reshape(b, h // 4, 4, w // 4, 4).mean((2, 4))
        level = np.clip(((m + 1) / 2 * self.config.codebook_size).astype(np.int64), 0, self.config.codebook_size - 1)
        return np.repeat(level[..., None], self.config.rvq_depth, -1)

    def decode(self, codes):
        codes = np.asarray(codes)
        level = codes[..., 0].astype(np.float32) / self.config.codebook_size * 2 - 1
        return np.repeat(np.repeat(level, 4, 1), 4, 2)[:, None]


def _model(seed=0, tower=None, **kw):
    fields = dict(llm_vocab_size=12, dim=16, num_layers=2, num_heads=2, depth_dim=16, depth_layers=2,
                  depth_heads=2, max_seq_len=96, depth_dropout=0.0)
    fields.update(kw)
    mmu.manual_seed(seed)
    return VILAU(tower=tower if tower is not None else StandInTower(), **fields)


def _ln(x, w, b, eps=1e-5):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


_erf = np.vectorize(math.erf)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _p(t):
    return np.asarray(t.numpy(), np.float64)


def _lin(x, layer):
    y = x @ _p(layer.weight).T
    return y + _p(layer.bias) if layer.bias is not None else y


def _np_head_transformer(depth, x, heads):
    """VILA-U's AttentionStack (attention.py) in float64: x + attn(ln1(x)), x + mlp(ln2(x)); separate
    query / key / value = the [q; k; v] rows of mmu's qkv_proj; causal; exact GELU."""
    n, length, dim = x.shape
    hd = dim // heads
    for blk in depth.head_transformer:
        wq, wk, wv = np.split(_p(blk.attn.qkv_proj.weight), 3, 0)
        bq, bk, bv = np.split(_p(blk.attn.qkv_proj.bias), 3, 0)
        h = _ln(x, _p(blk.norm1.weight), _p(blk.norm1.bias))
        q, k, v = (h @ w.T + bb for w, bb in ((wq, bq), (wk, bk), (wv, bv)))
        q, k, v = (a.reshape(n, length, heads, hd).transpose(0, 2, 1, 3) for a in (q, k, v))
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        att = np.where(np.tril(np.ones((length, length), bool)), att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(n, length, dim)
        x = x + _lin(y, blk.attn.out_proj)
        h = _ln(x, _p(blk.norm2.weight), _p(blk.norm2.bias))
        x = x + _lin(_gelu(_lin(h, blk.mlp.fc1)), blk.mlp.fc2)
    return x


def _np_rq_forward(depth, hidden, emb, heads):
    """RQTransformer.forward(embed_from_body, code): hidden (B, S, body), emb (B, S, D, C) -> (B, S, D, K)."""
    b, s, dd, c = emb.shape
    ctx = _lin(np.cumsum(emb.astype(np.float64), -2), depth.in_mlp_1)
    body = _lin(hidden.astype(np.float64), depth.in_mlp_2)
    full = np.concatenate([body[:, :, None], ctx[:, :, :-1]], -2).reshape(b * s, dd, -1)
    full = full + _p(depth.pos_emb_d)[:, :dd]
    out = _np_head_transformer(depth, full, heads).reshape(b, s, dd, -1)
    cls = depth.classifier_mlp
    return _lin(_ln(out, _p(cls.layer_norm.weight), _p(cls.layer_norm.bias)), cls.linear)


def _np_rq_step(depth, hidden, emb_prefix, heads):
    """RQTransformer.generate's step i: [in_mlp_2(h), in_mlp_1(cumsum(e)[:i+1])] -> the last depth's logits."""
    body = _lin(hidden.astype(np.float64), depth.in_mlp_2)[:, None]
    if emb_prefix.shape[1]:
        ctx = _lin(np.cumsum(emb_prefix.astype(np.float64), 1), depth.in_mlp_1)
        body = np.concatenate([body, ctx], 1)
    full = body + _p(depth.pos_emb_d)[:, :body.shape[1]]
    out = _np_head_transformer(depth, full, heads)[:, -1]
    cls = depth.classifier_mlp
    return _lin(_ln(out, _p(cls.layer_norm.weight), _p(cls.layer_norm.bias)), cls.linear)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _ce(logits, targets):
    """Mean cross-entropy over targets != -100 (float64)."""
    lp = _log_softmax(logits)
    keep = targets != -100
    return -lp[keep, targets[keep]].mean()


# ------------------------------------------------------------------------------------------ config, layout

def test_vocabulary_config_and_layout():
    m = _model()
    c = m.config
    assert (c.vocab_size, c.soi_token_id, c.eoi_token_id, c.sov_token_id, c.eov_token_id) == (16, SOI, EOI, SOV, EOV)
    # VILA-U: <im_start>, <im_end>, <vi_start>, <vi_end> are vocab_size - 4 .. vocab_size - 1
    assert [c.token_id(t) for t in ("[SOI]", "[EOI]", "[SOV]", "[EOV]")] == list(range(c.vocab_size - 4, c.vocab_size))
    assert c.tower_geometry() == (K, D, C, (HW, HW)) and c.tokens_per_image == N
    assert (c.cfg_scale, c.top_k, c.top_p, c.temperature, c.cond_dropout_prob) == (3.0, 900, 0.96, 1.0, 0.1)
    assert mmu.models.get("vila_u") is VILAU
    lm = m.lm
    layer = lm.layers[0]
    assert isinstance(layer.norm1, mmu.nn.RMSNorm) and layer.mlp.fc_gate is not None and lm.pos == "rope"
    assert all(mod.bias is None for mod in lm.modules() if isinstance(mod, mmu.nn.Linear))
    assert lm.embed_tokens.weight.shape == (16, 16) and lm.lm_head.weight.shape == (16, 16)
    keys = set(m.state_dict())
    for key in ("depth.in_mlp_1.weight", "depth.in_mlp_2.weight", "depth.pos_emb_d",
                "depth.classifier_mlp.layer_norm.weight",
                "depth.classifier_mlp.linear.weight", "depth.head_transformer.1.attn.qkv_proj.bias",
                "mm_projector.layers.0.weight", "mm_projector.layers.2.weight"):
        assert key in keys, key
    assert m.depth.pos_emb_d.shape == (1, D, 16) and m.depth.classifier_mlp.linear.weight.shape == (K, 16)
    linear = _model(mm_projector="linear")
    assert "mm_projector.layers.weight" in linear.state_dict()
    # a config round-trips through JSON and rebuilds the same geometry from the nested tower dict
    again = VILAUConfig.from_dict(c.to_dict())
    assert again == c and tower_geometry(again.tower) == (K, D, C, (HW, HW))


def test_embeddings_are_text_rows_and_projected_code_sums():
    m = _model()
    rng = np.random.default_rng(1)
    codes = rng.integers(0, K, (2, N, D))
    ids, full, _ = m.i2t_sequences(codes, [[3, 4], [5]])
    x = m.embed(ids, full).numpy().astype(np.float64)
    table = _p(m.lm.embed_tokens.weight)
    proj = m.mm_projector.layers
    cb = m.tower.codebook.astype(np.float64)
    for b in range(2):
        for j in range(ids.shape[1]):
            if full[b, j, 0] >= 0:
                want = _lin(_gelu(_lin(cb[full[b, j]].sum(0), proj[0])), proj[2])
            else:
                want = table[ids[b, j]]
            np.testing.assert_allclose(x[b, j], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ depth transformer

def test_depth_transformer_forward_equals_numpy_reference():
    mmu.manual_seed(3)
    depth = DepthTransformer(code_dim=C, body_dim=12, dim=16, num_layers=2, num_heads=4, depth=4, codebook_size=K,
                             dropout=0.0)
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((2, 3, 12)).astype(np.float32)
    emb = rng.standard_normal((2, 3, 4, C)).astype(np.float32)
    got = depth(mmu.tensor(hidden), mmu.tensor(emb)).numpy()
    want = _np_rq_forward(depth, hidden, emb, heads=4)
    assert got.shape == (2, 3, 4, K)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    # generation's short steps (VILA-U recomputes the prefix each depth) give the same logits at each depth
    flat_h, flat_e = hidden.reshape(6, 12), emb.reshape(6, 4, C)
    for d in range(4):
        step = depth(mmu.tensor(flat_h), mmu.tensor(flat_e[:, :d]) if d else None, last_only=True).numpy()
        np.testing.assert_allclose(step, _np_rq_step(depth, flat_h, flat_e[:, :d], heads=4), rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(step, want.reshape(6, 4, K)[:, d], rtol=1e-4, atol=2e-5)
    # the cached steps of generation (one input per depth) give the same logits
    cache = depth.new_cache(6)
    sums = np.cumsum(flat_e, 1)
    with mmu.no_grad():
        for d in range(4):
            step = depth.step(cache, hidden=flat_h) if d == 0 else depth.step(cache, code_sum=sums[:, d - 1])
            np.testing.assert_allclose(step.numpy(), want.reshape(6, 4, K)[:, d], rtol=1e-4, atol=2e-5)
        with pytest.raises(ValueError, match="all D=4 depths"):
            depth.step(cache, code_sum=sums[:, 0])
        cache.reset()
        with pytest.raises(ValueError, match="depth 0 needs hidden"):
            depth.step(cache, code_sum=sums[:, 0])
        with pytest.raises(ValueError, match=r"hidden must be \(rows=6, 12\)"):
            depth.step(cache, hidden=flat_h[:3])
        with pytest.raises(TypeError, match="new_cache"):
            depth.step(mmu.nn.KVCache(2, 6, 4, 9, 4), hidden=flat_h)
    # gradients reach every parameter
    loss = depth(mmu.tensor(hidden), mmu.tensor(emb)).sum()
    loss.backward()
    for name, p in depth.named_parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0, name


def test_depth_transformer_dropout_is_vila_us_resid_pdrop():
    mmu.manual_seed(0)
    depth = DepthTransformer(C, 12, 16, 1, 2, D, K)
    assert depth.head_transformer[0].dropout.p == 0.1
    x, e = np.ones((2, 12), np.float32), np.ones((2, D, C), np.float32)
    depth.eval()
    a, b = depth(x, e).numpy(), depth(x, e).numpy()
    np.testing.assert_array_equal(a, b)
    depth.train()
    assert not np.array_equal(depth(x, e).numpy(), a)


# ------------------------------------------------------------------------------------------ training

def test_training_sequences_match_hand_written_rows():
    m = _model()
    codes = np.arange(2 * N * D).reshape(2, N, D) % K
    ids, full, labels = m.i2t_sequences(codes, [[3, 4], [5]], question_ids=[[6], []])
    _ = -1
    assert ids.tolist() == [[SOI, _, _, _, _, EOI, SOT, 6, 3, 4, EOT],
                            [SOI, _, _, _, _, EOI, SOT, 5, EOT, EOT, EOT]]
    n_ = -100
    assert labels.tolist() == [[n_] * 8 + [3, 4, EOT], [n_] * 7 + [5, EOT, n_, n_]]
    np.testing.assert_array_equal(full[:, 1:1 + N], codes)
    assert (full[:, 0] == -1).all() and (full[:, 1 + N:] == -1).all()
    ids, full, mask, s = m.t2v_sequences([[3, 4], []], codes)
    assert s == 4
    assert ids.tolist() == [[SOT, 3, 4, EOT, SOI, _, _, _, _, EOI], [EOT, EOT, SOT, EOT, SOI, _, _, _, _, EOI]]
    assert mask.tolist() == [[True] * 10, [False, False] + [True] * 8]
    video = np.zeros((1, 2 * N, D), np.int64)
    ids, full, mask, s = m.t2v_sequences([[3]], video, video=True)
    assert ids.tolist() == [[SOT, 3, EOT, SOV] + [_] * (2 * N) + [EOV]] and s == 3


def test_training_loss_terms_equal_numpy_references():
    """Which positions are supervised, per modality order: [image, text] scores the text and [EOT] from the
    position before each; [text, image] / [text, video] score the D codes of each visual position with the
    depth transformer on the hidden state of the position before it (VILA-U's hidden_state[start:end-1])."""
    m = _model(cond_dropout_prob=0.0)
    rng = np.random.default_rng(2)
    i2t_codes, t2i_codes = rng.integers(0, K, (2, N, D)), rng.integers(0, K, (2, N, D))
    t2v_codes = rng.integers(0, K, (2, 2 * N, D))
    texts = [[3, 4, 5], [6]]
    batch = {"i2t.codes": i2t_codes, "i2t.text_ids": texts, "i2t.question_ids": [[7], [8, 9]],
             "t2i.text_ids": texts, "t2i.codes": t2i_codes, "t2v.text_ids": [[10], [3, 4]], "t2v.codes": t2v_codes}
    loss, logs = m.training_step(batch, 0)

    # image -> text: logits of every position, the targets at hand-picked positions
    ids, full, _ = m.i2t_sequences(i2t_codes, texts, [[7], [8, 9]])
    logits = m.lm.head(m(ids, full)).numpy()
    head = N + 3  # [SOI] v.. [EOI] [SOT]
    picks = [(0, head + 0, 3), (0, head + 1, 4), (0, head + 2, 5), (0, head + 3, EOT),  # after the question [7]
             (1, head + 1, 6), (1, head + 2, EOT)]                                       # after [8, 9]
    lp = _log_softmax(logits)
    want_text = -np.mean([lp[b, j, t] for b, j, t in picks])
    np.testing.assert_allclose(logs["loss_text"], want_text, rtol=1e-5)

    def code_terms(text, codes, video):
        ids, full, mask, s = m.t2v_sequences(text, codes, video=video)
        hidden = m(ids, full, attention_mask=mask).numpy()
        p = codes.shape[1]
        h = hidden[:, s:s + p]  # [SOI]/[SOV] .. v_{P-1}: the positions before v_1 .. v_P
        lg = _np_rq_forward(m.depth, h, m.tower.codebook[codes], heads=2)
        lpc = _log_softmax(lg)
        return -np.take_along_axis(lpc, codes[..., None], -1).sum(), codes.size

    si, ni = code_terms(texts, t2i_codes, False)
    sv, nv = code_terms([[10], [3, 4]], t2v_codes, True)
    np.testing.assert_allclose(logs["loss_image"], si / ni, rtol=1e-5)
    np.testing.assert_allclose(logs["loss_video"], sv / nv, rtol=1e-5)
    # VILA-U's sum of the text mean and the (pooled) code mean
    np.testing.assert_allclose(loss.item(), want_text + (si + sv) / (ni + nv), rtol=1e-5)
    assert m.evaluate_step(batch)["loss"] == loss.item()
    # a video's codes may come as frames (B, T, h, w, D): the same rows
    grid = {**batch, "t2v.codes": t2v_codes.reshape(2, 2, HW, HW, D)}
    assert m.training_step(grid, 0)[1] == logs
    # left padding changes nothing: the padded row's code loss equals the row alone
    alone = _model(cond_dropout_prob=0.0).training_step({"t2i.text_ids": [[6]], "t2i.codes": t2i_codes[1:]}, 0)[1]
    pair = _model(cond_dropout_prob=0.0).training_step({"t2i.text_ids": [[6], [6]],
                                                         "t2i.codes": t2i_codes[[1, 1]]}, 0)[1]
    np.testing.assert_allclose(alone["loss_image"], pair["loss_image"], rtol=1e-5)
    two = _model(cond_dropout_prob=0.0).training_step({"t2i.text_ids": [[3, 4, 5], [6]], "t2i.codes": t2i_codes}, 0)[1]
    first = _model(cond_dropout_prob=0.0).training_step({"t2i.text_ids": [[3, 4, 5]], "t2i.codes": t2i_codes[:1]}, 0)[1]
    np.testing.assert_allclose(two["loss_image"], (first["loss_image"] + alone["loss_image"]) / 2, rtol=1e-5)


def test_the_earlier_modality_is_not_supervised():
    """Changing the answer's question or the image prompt's text changes no target: the loss of [text, image]
    has no text term and [image, text] none on the image."""
    m = _model(cond_dropout_prob=0.0)
    rng = np.random.default_rng(4)
    codes = rng.integers(0, K, (1, N, D))
    terms, _ = m.losses({"t2i.text_ids": [[3, 4]], "t2i.codes": codes})
    assert set(terms) == {"visual"}
    terms, _ = m.losses({"i2t.text_ids": [[3, 4]], "i2t.codes": codes})
    assert set(terms) == {"text"}
    # the i2t gradient never reaches the depth transformer, the t2i one never the LM head
    m.zero_grad()
    m.training_step({"i2t.text_ids": [[3, 4]], "i2t.codes": codes}, 0)[0].backward()
    assert all(p.grad is None or not np.abs(p.grad.numpy()).any() for p in m.depth.parameters())
    m.zero_grad()
    m.training_step({"t2i.text_ids": [[3, 4]], "t2i.codes": codes}, 0)[0].backward()
    assert m.lm.lm_head.weight.grad is None or not np.abs(m.lm.lm_head.weight.grad.numpy()).any()
    assert np.abs(m.mm_projector.layers[0].weight.grad.numpy()).any()


def test_condition_dropout_replaces_the_prompt_by_the_empty_text():
    rng = np.random.default_rng(5)
    codes = rng.integers(0, K, (3, N, D))
    always = _model(cond_dropout_prob=1.0).training_step({"t2i.text_ids": [[3, 4], [5], [6, 7, 8]],
                                                           "t2i.codes": codes}, 0)[1]
    empty = _model(cond_dropout_prob=0.0).training_step({"t2i.text_ids": [[], [], []], "t2i.codes": codes}, 0)[1]
    assert always["cond_dropped"] == 1.0 and empty["cond_dropped"] == 0.0
    np.testing.assert_allclose(always["loss_image"], empty["loss_image"], rtol=1e-6)
    # the rate: 400 rows at p = 0.3, within 4 sigma
    m = _model(cond_dropout_prob=0.3, num_layers=1, depth_layers=1)
    many = m.training_step({"t2i.text_ids": [[3]] * 400, "t2i.codes": np.zeros((400, N, D), np.int64)}, 0)[1]
    assert abs(many["cond_dropped"] - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 400)


def _toy_data(rows=32):
    """Four classes: caption [3 + c, 8], a fixed code grid per class."""
    rng = np.random.default_rng(7)
    grids = rng.integers(0, K, (4, N, D))
    cls = np.arange(rows) % 4
    caps = np.stack([3 + cls, np.full(rows, 8)], 1)
    return {"i2t.codes": grids[cls], "i2t.text_ids": caps, "t2i.text_ids": caps, "t2i.codes": grids[cls]}


def test_loss_falls_through_the_trainer_and_resume_is_bit_identical(tmp_path):
    data = _toy_data()
    m = _model(depth_dropout=0.1)
    hist = Trainer(m, data, TrainConfig(steps=30, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1,
                                        progress=False)).fit()
    loss = np.asarray(hist["loss"])
    assert loss[-5:].mean() < 0.6 * loss[:5].mean()
    for key in ("loss_text", "loss_image"):
        assert np.asarray(hist[key])[-5:].mean() < 0.7 * np.asarray(hist[key])[:5].mean(), key
    cfg = dict(steps=6, batch_size=8, lr=3e-3, log_every=1, progress=False, ckpt_every=3, ckpt_dir=str(tmp_path))
    full = _model(depth_dropout=0.1)
    want = Trainer(full, data, TrainConfig(**{**cfg, "ckpt_every": 0, "ckpt_dir": None})).fit()
    first = _model(depth_dropout=0.1)
    Trainer(first, data, TrainConfig(**cfg)).fit(3)
    second = _model(seed=9, depth_dropout=0.1)  # other weights: the checkpoint brings them back
    t2 = Trainer.resume(str(tmp_path), second, data, TrainConfig(**cfg))
    t2.fit()
    np.testing.assert_array_equal(t2.history["loss"], want["loss"])
    for (k, a), b in zip(full.state_dict().items(), second.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)


def test_save_and_load_round_trip(tmp_path):
    m = _model()
    m.depth.pos_emb_d.numpy()[:] = 0.25
    m.save_pretrained(str(tmp_path))
    back = VILAU.from_pretrained(str(tmp_path))
    assert back.config == m.config and back.tower is None  # a stand-in tower is not saved
    for (k, a), b in zip(m.state_dict().items(), back.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
    back.tower = m.tower
    codes = np.zeros((1, N, D), np.int64)
    np.testing.assert_array_equal(back.answer(codes, max_new_tokens=3), m.answer(codes, max_new_tokens=3))


# ------------------------------------------------------------------------------------------ generation

def _full_rows(m, prompts, codes, start, guided):
    """The generated sequences of every guidance row (conditional, then the empty prompt), left padded."""
    c = m.config
    texts = list(prompts) + ([[]] * len(prompts) if guided else [])
    seqs = [[SOT] + t + [EOT, start] for t in texts]
    width = max(len(s) for s in seqs)
    p = codes.shape[1]
    rows = len(seqs)
    ids = np.full((rows, width + p - 1), EOT, np.int64)
    full = np.full((rows, width + p - 1, D), -1, np.int64)
    mask = np.zeros(ids.shape, bool)
    both = np.concatenate([codes, codes]) if guided else codes
    for i, s in enumerate(seqs):
        ids[i, width - len(s):width] = s
        mask[i, width - len(s):] = True
    ids[:, width:] = -1
    full[:, width:] = both[:, :p - 1]
    assert c.eot_token_id == EOT
    return ids, full, mask, width


@pytest.mark.parametrize("video,kv_heads", [(False, None), (True, None), (False, 1)])
def test_cached_generation_equals_recomputation_step_by_step(video, kv_heads):
    m = _model(num_kv_heads=kv_heads)
    prompts = [[3, 4, 5], [6]]
    trace = []
    if video:
        codes = m.generate_video(prompts, 2, trace=trace, generator=mmu.Generator(0))
        assert codes.shape == (2, 2, HW, HW, D)
    else:
        codes = m.generate_images(prompts, trace=trace, generator=mmu.Generator(0))
        assert codes.shape == (2, HW, HW, D)
    flat = codes.reshape(2, -1, D)
    p = flat.shape[1]
    assert len(trace) == p and codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < K
    ids, full, mask, width = _full_rows(m, prompts, flat, SOV if video else SOI, guided=True)
    with mmu.no_grad():
        hidden = m(ids, full, attention_mask=mask).numpy()  # one pass, no cache
    for j in range(p):
        h = hidden[:, width - 1 + j]
        np.testing.assert_allclose(trace[j]["hidden"], h, rtol=1e-5, atol=1e-5)
        both = np.concatenate([flat[:, j], flat[:, j]])
        with mmu.no_grad():
            logits = m.depth(h.astype(np.float32), m.code_embeddings(both)).numpy()  # all D depths at once
        for d in range(D):
            np.testing.assert_allclose(trace[j]["logits"][d], logits[:, d], rtol=1e-4, atol=1e-5)


def test_cfg_is_u_plus_s_times_c_minus_u():
    m = _model(init_std=0.5)  # large weights: the conditional and unconditional logits differ clearly
    prompts = [[3, 4], [5]]
    for s in (3.0, 0.0, 7.5):
        trace, changed = [], 0
        codes = m.generate_images(prompts, cfg_scale=s, do_sample=False, trace=trace).reshape(2, N, D)
        for j, rec in enumerate(trace):
            assert rec["hidden"].shape[0] == 4  # conditional rows, then the unconditional ones
            for d in range(D):
                lg = rec["logits"][d].astype(np.float64)
                guided = lg[2:] + s * (lg[:2] - lg[2:])
                np.testing.assert_array_equal(codes[:, j, d], guided.argmax(-1))
                if s == 3.0:
                    changed += int((guided.argmax(-1) != lg[:2].argmax(-1)).sum())
        if s == 3.0:
            assert changed > 0  # guidance changed some choice against the conditional logits alone
    # s = 1 is the conditional model alone: no unconditional rows are run
    trace = []
    codes = m.generate_images(prompts, cfg_scale=1.0, do_sample=False, trace=trace).reshape(2, N, D)
    assert trace[0]["hidden"].shape[0] == 2
    for j, rec in enumerate(trace):
        for d in range(D):
            np.testing.assert_array_equal(codes[:, j, d], rec["logits"][d].argmax(-1))


def _np_vila_u_filter(logits, top_k, top_p, temperature=1.0):
    """modeling_rqtransformer.sample_from_logits' distribution: top_k_logits, softmax, top_p_probs."""
    x = logits.astype(np.float64) / temperature
    kth = np.sort(x, -1)[:, -top_k][:, None]
    x = np.where(x < kth, -np.inf, x)
    probs = np.exp(x - x.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    order = np.argsort(-probs, -1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, -1)
    remove = np.cumsum(sorted_probs, -1) >= top_p
    remove[:, 1:] = remove[:, :-1].copy()
    remove[:, 0] = False
    drop = np.zeros_like(remove)
    np.put_along_axis(drop, order, remove, -1)
    probs = np.where(drop, 0.0, probs)
    return probs / probs.sum(-1, keepdims=True)


def test_top_k_top_p_sampling_equals_vila_us_filter():
    """VILA-U's defaults (top_k 900, top_p 0.96, temperature 1) on 1000 codes: every draw lies in the support
    of its NumPy filter and its log-probability under mmu's filtered distribution equals the reference's."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((64, 1000)) * 3).astype(np.float32)
    for top_k, top_p, temp in ((900, 0.96, 1.0), (20, 0.9, 1.0), (1000, 0.5, 0.7), (5, 1.0, 1.3)):
        ref = _np_vila_u_filter(logits, top_k, top_p, temp)
        ids, logp = mmu.generate.sample_logits(logits, temperature=temp, top_k=top_k, top_p=top_p,
                                               generator=mmu.Generator(1))
        ids, logp = ids.numpy(), logp.numpy()
        picked = ref[np.arange(64), ids]
        assert (picked > 0).all(), (top_k, top_p)
        np.testing.assert_allclose(logp, np.log(picked), rtol=1e-4, atol=1e-5)
    # the generation defaults are VILA-U's, top_k capped at the codebook size (16 here)
    m = _model()
    a = m.generate_images([[3]], generator=mmu.Generator(5))
    b = m.generate_images([[3]], top_k=900, top_p=0.96, temperature=1.0, cfg_scale=3.0, generator=mmu.Generator(5))
    np.testing.assert_array_equal(a, b)
    c = m.generate_images([[3]], top_k=1, generator=mmu.Generator(5))
    trace = []
    d = m.generate_images([[3]], do_sample=False, trace=trace)
    np.testing.assert_array_equal(c, d)  # top-1 sampling is the argmax of the guided logits


def test_generation_is_reproducible_and_leaves_training_mode():
    m = _model(depth_dropout=0.1)
    m.train()
    a = m.generate_images([[3, 4], [5]], generator=mmu.Generator(3))
    b = m.generate_images([[3, 4], [5]], generator=mmu.Generator(3))
    np.testing.assert_array_equal(a, b)  # dropout is off while generating
    assert m.training and m.depth.training
    mmu.manual_seed(11)
    x = m.generate_images([[3, 4], [5]])
    mmu.manual_seed(11)
    np.testing.assert_array_equal(x, m.generate_images([[3, 4], [5]]))
    # the decoded images have the tower's shape
    assert m.decode(a).shape == (2, 1, HW * 4, HW * 4)
    assert m.decode(m.generate_video([[3]], 3, generator=mmu.Generator(1))).shape == (1, 3, 1, HW * 4, HW * 4)


def test_cached_answer_equals_recomputation():
    m = _model()
    rng = np.random.default_rng(6)
    codes = rng.integers(0, K, (2, HW, HW, D))
    questions = [[7, 8, 9], [10]]
    trace = []
    out = m.answer(codes, questions, max_new_tokens=6, eos_token_id=15, trace=trace)  # 15 never wins: 6 tokens
    assert out.shape[0] == 2 and out.dtype == np.int64
    for b in range(2):
        ids, full, _ = m.i2t_sequences(codes[b:b + 1], [[]], [questions[b]])
        seq, cseq = list(ids[0, :N + 3 + len(questions[b])]), full[0, :N + 3 + len(questions[b])]
        for step in range(out.shape[1]):
            with mmu.no_grad():
                logits = m.lm.head(m(np.asarray([seq]), cseq[None])).numpy()[0, -1]
            np.testing.assert_allclose(trace[step][b], logits, rtol=1e-4, atol=1e-5)
            assert out[b, step] == logits.argmax()
            seq.append(int(out[b, step]))
            cseq = np.concatenate([cseq, np.full((1, D), -1)])
    # images go through the tower's encode
    images = m.decode(codes)
    np.testing.assert_array_equal(m.answer(images=images, question_ids=questions, max_new_tokens=2),
                                  m.answer(m.encode_images(images), questions, max_new_tokens=2))


def test_answer_stops_at_eos_and_pads_with_it():
    m = _model()
    codes = np.zeros((2, N, D), np.int64)
    trace = []
    first = m.answer(codes, max_new_tokens=1, trace=trace)
    eos = int(first[0, 0])  # the greedy first token of row 0 is the stop token
    out = m.answer(codes, max_new_tokens=4, eos_token_id=eos)
    assert out.shape[1] == 1 and (out == eos).all()


# ------------------------------------------------------------------------------------------ errors

def test_bad_input_raises_clear_errors():
    m = _model()
    codes = np.zeros((2, N, D), np.int64)
    with pytest.raises(ValueError, match="codes must be in"):
        m.training_step({"t2i.text_ids": [[3], [4]], "t2i.codes": codes + K}, 0)
    with pytest.raises(ValueError, match="positions"):
        m.training_step({"t2i.text_ids": [[3], [4]], "t2i.codes": codes[:, :3]}, 0)
    with pytest.raises(ValueError, match="a multiple of 4 positions"):
        m.training_step({"t2v.text_ids": [[3], [4]], "t2v.codes": np.zeros((2, 6, D), np.int64)}, 0)
    with pytest.raises(ValueError, match="outside the text ids"):
        m.training_step({"i2t.text_ids": [[3], [SOI]], "i2t.codes": codes}, 0)
    with pytest.raises(ValueError, match="rows, the batch has 2"):
        m.training_step({"i2t.text_ids": [[3]], "i2t.codes": codes}, 0)
    with pytest.raises(KeyError, match="unknown batch key"):
        m.training_step({"mmu.codes": codes}, 0)
    with pytest.raises(KeyError, match="needs 'text_ids'"):
        m.training_step({"t2i.codes": codes}, 0)
    with pytest.raises(KeyError, match="unknown key"):
        m.training_step({"t2i.codes": codes, "t2i.text_ids": [[3], [4]], "t2i.answer_ids": [[1], [2]]}, 0)
    with pytest.raises(TypeError, match="encode texts"):
        m.generate_images(["a red circle"])
    with pytest.raises(ValueError, match="cfg_scale"):
        m.generate_images([[3]], cfg_scale=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        m.generate_images([[3]], top_p=0.0)
    with pytest.raises(ValueError, match="num_frames"):
        m.generate_video([[3]], 0)
    with pytest.raises(ValueError, match="max_seq_len"):
        m.generate_video([[3]], 40)
    with pytest.raises(ValueError, match="codes or images"):
        m.answer(question_ids=[[3]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.answer(codes, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"must be -1 at every depth of a text position"):
        m(np.array([[3, 4]]), np.array([[[-1, -1, -1], [0, -1, 0]]]))
    with pytest.raises(ValueError, match="ids at text positions"):
        m(np.array([[3, 99]]))
    with pytest.raises(ValueError, match="exceed config.max_seq_len"):
        m(np.ones((1, 97), np.int64))
    # the tower: missing, wrong geometry, wrong type
    bare = VILAU(m.config, build_tower=False)
    with pytest.raises(RuntimeError, match="no vision tower"):
        bare.generate_images([[3]])
    with pytest.raises(ValueError, match="differ from config.tower"):
        bare.tower = StandInTower(codebook_size=32)
    with pytest.raises(TypeError, match="code_embeddings"):
        bare.tower = object()
    with pytest.raises(ValueError, match="codebook_dim"):  # the stand-in's fields are no real tower's
        VILAU(m.config)
    with pytest.raises(ValueError, match=r"tower\['rvq_depth'\]"):
        VILAUConfig(tower={"codebook_size": 8, "codebook_dim": 4, "image_size": 8, "patch_size": 4})
    with pytest.raises(ValueError, match="mm_projector"):
        VILAUConfig(mm_projector="mlp3x_relu")
    with pytest.raises(ValueError, match="sot_token_id"):
        VILAUConfig(sot_token_id=64)
    # a failed call leaves the model usable and unchanged
    before = {k: np.asarray(v).copy() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError):
        m.generate_images([[3]], temperature=0.0)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)
    assert m.generate_images([[3]], generator=mmu.Generator(0)).shape == (1, HW, HW, D)


# ------------------------------------------------------------------------------------------ with the real tower

TOWER = dict(image_size=16, patch_size=4, in_channels=1, dim=16, depth=2, num_heads=2, codebook_size=32, rvq_depth=2,
             decoder_ch=8, decoder_ch_mult=[1, 1, 2], decoder_z_channels=8, decoder_norm_groups=8, text_vocab_size=16,
             text_max_len=4, text_dim=16, text_depth=1, text_heads=2)


def _digits(n=48):
    tok = mmu.text.TextTokenizer.train_word_level(mmu.data.caption_corpus("digits"))
    ds = mmu.data.captioned_digits(16, "train")
    return tok, ds.images[:n], ds.captions[:n], ds.questions[:n], ds.answers[:n]


def _real(tok, seed=0, **kw):
    mmu.manual_seed(seed)
    fields = dict(llm_vocab_size=tok.vocab_size, sot_token_id=tok.bos_id, eot_token_id=tok.eos_id, dim=32,
                  num_layers=2, num_heads=2, depth_dim=16, depth_layers=1, depth_heads=2, max_seq_len=64,
                  tower=dict(TOWER))
    fields.update(kw)
    return VILAU(**fields)


def _ids(tok, texts):
    rows = [tok.encode(t) for t in texts]
    out = np.full((len(rows), max(len(r) for r in rows)), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def test_default_model_builds_the_unified_vision_tower():
    mmu.manual_seed(0)
    m = VILAU()
    assert isinstance(m.tower, UnifiedVisionTower) and not m.tower.training
    assert all(not p.requires_grad for p in m.tower.parameters())
    k, d, c, hw = m.config.tower_geometry()
    assert (k, d, c, hw) == (m.tower.config.codebook_size, m.tower.config.rvq_depth, m.tower.config.codebook_dim,
                             m.tower.latent_shape)
    assert any(key.startswith("tower.quantizer") for key in m.state_dict())
    m.train()
    assert m.lm.training and not m.tower.training


def test_end_to_end_with_the_real_tower(tmp_path):
    """Captioned digits through the real UnifiedVisionTower: images -> codes once, the Trainer on
    image -> caption, question -> answer and caption -> image rows (loss falls, resume is bit-identical),
    then generation decodes to images and answers come from images; save / load keeps the tower's weights."""
    tok, images, captions, questions, answers = _digits()
    m = _real(tok)
    codes = m.encode_images(images)
    assert codes.shape == (48, 4, 4, 2) and codes.dtype == np.int64 and codes.max() < 32
    np.testing.assert_array_equal(codes, m.tower.encode(images))
    # images in a batch are encoded by the tower: the same loss as their codes
    small = {"t2i.text_ids": _ids(tok, captions[:4]), "i2t.text_ids": _ids(tok, captions[:4])}
    mmu.manual_seed(1)
    a = m.training_step({**small, "t2i.images": images[:4], "i2t.images": images[:4]}, 0)[1]
    mmu.manual_seed(1)
    b = m.training_step({**small, "t2i.codes": codes[:4], "i2t.codes": codes[:4]}, 0)[1]
    assert a == b
    data = {"i2t.codes": codes, "i2t.question_ids": _ids(tok, questions), "i2t.text_ids": _ids(tok, answers),
            "t2i.text_ids": _ids(tok, captions), "t2i.codes": codes}
    hist = Trainer(m, data, TrainConfig(steps=20, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1,
                                        progress=False)).fit()
    for key in ("loss_text", "loss_image"):
        assert np.mean(hist[key][-4:]) < 0.8 * np.mean(hist[key][:4]), key
    cfg = dict(steps=4, batch_size=8, lr=1e-2, log_every=1, progress=False, ckpt_every=2, ckpt_dir=str(tmp_path / "ck"))
    full = _real(tok)
    want = Trainer(full, data, TrainConfig(**{**cfg, "ckpt_every": 0, "ckpt_dir": None})).fit()
    first = _real(tok)
    Trainer(first, data, TrainConfig(**cfg)).fit(2)
    second = _real(tok, seed=5)
    t2 = Trainer.resume(str(tmp_path / "ck"), second, data, TrainConfig(**cfg))
    t2.fit()
    np.testing.assert_array_equal(t2.history["loss"], want["loss"])
    for (k, x), y in zip(full.state_dict().items(), second.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    # generation: codes in range, decoded by the tower
    prompts = [tok.encode(t) for t in captions[:2]]
    gen = m.generate_images(prompts, generator=mmu.Generator(0))
    assert gen.shape == (2, 4, 4, 2) and gen.dtype == np.int64 and 0 <= gen.min() and gen.max() < 32
    assert m.decode(gen).shape == (2, 1, 16, 16)
    video = m.generate_video(prompts, 2, generator=mmu.Generator(0))
    assert video.shape == (2, 2, 4, 4, 2) and m.decode(video).shape == (2, 2, 1, 16, 16)
    out = m.answer(images=images[:3], question_ids=[tok.encode(q) for q in questions[:3]], max_new_tokens=4)
    assert out.shape[0] == 3 and out.shape[1] <= 4 and out.max() < m.config.vocab_size
    # save / load: the tower is rebuilt from config.tower and its weights come back
    m.save_pretrained(str(tmp_path / "model"))
    back = VILAU.from_pretrained(str(tmp_path / "model"))
    assert isinstance(back.tower, UnifiedVisionTower) and back.config == m.config
    for (k, x), y in zip(m.state_dict().items(), back.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    np.testing.assert_array_equal(back.generate_images(prompts, generator=mmu.Generator(0)), gen)
