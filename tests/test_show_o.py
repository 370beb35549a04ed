"""mmu.models.show_o: Show-o's vocabulary, prompts, omni-attention and training losses.

The expected sequences and masks are written from showlab/Show-o's training/prompting_utils.py
(UniversalPrompting, create_attention_mask_predict_next, create_attention_mask_for_mmu),
training/utils.py (mask_or_random_replace_tokens) and training/train.py (loss weights)."""
import math

import numpy as np
import pytest

import mmu
import mmu.models
from mmu.models.show_o import (IGNORE_INDEX, SPECIAL_TOKENS, ShowO, ShowOConfig, extrapolation_prompt,
                               inpainting_prompt, lm_prompt, mixed_prompt, mmu_attention_mask, mmu_prompt,
                               omni_attention_mask, t2i_prompt)
from mmu.train import TrainConfig, Trainer

from gradcheck import torch_or_skip

# tiny vocabulary: text 0..9 (sot 1, eot 2), [PAD] 10, soi 11, eoi 12, sov 13, eov 14, t2i 15, mmu 16,
# t2v 17, v2v 18, lvg 19, image codes 20..23, [MASK] 24
TINY = dict(llm_vocab_size=10, codebook_size=4, num_vq_tokens=4, max_text_len=5, sot_token_id=1, eot_token_id=2)
PAD, SOI, EOI, T2I, MMU, MASK = 10, 11, 12, 15, 16, 24
N_ = IGNORE_INDEX


def _tiny_config(**kw):
    return ShowOConfig(**{**TINY, **kw})


def _model(seed=0, **kw):
    fields = dict(llm_vocab_size=24, codebook_size=64, num_vq_tokens=16, max_text_len=8, dim=32, num_layers=2,
                  num_heads=2)
    fields.update(kw)
    mmu.manual_seed(seed)
    return ShowO(**fields)


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _ce(logits, targets):
    """Mean cross-entropy over targets != -100 (float64)."""
    lp = _log_softmax(logits)
    keep = targets != IGNORE_INDEX
    return -lp[keep, targets[keep]].mean()


# ------------------------------------------------------------------------------------------ vocabulary

def test_published_vocabulary_layout():
    """configs/showo_demo.yaml: llm_vocab_size 50295, 10 new tokens, 8192 codes, vocab_size 58498;
    UniversalPrompting adds [PAD] first (50295), then <|soi|> .. <|lvg|>; image codes start at
    len(tokenizer) = 50305; [MASK] = vocab_size - 1 = 58497."""
    c = ShowOConfig(llm_vocab_size=50295, codebook_size=8192, num_vq_tokens=256, vocab_size=58498,
                    sot_token_id=50256, eot_token_id=50256, max_text_len=128)
    assert c.num_new_special_tokens == 10 and len(SPECIAL_TOKENS) == 10
    want = {"[PAD]": 50295, "<|soi|>": 50296, "<|eoi|>": 50297, "<|sov|>": 50298, "<|eov|>": 50299,
            "<|t2i|>": 50300, "<|mmu|>": 50301, "<|t2v|>": 50302, "<|v2v|>": 50303, "<|lvg|>": 50304,
            "<|sot|>": 50256, "<|eot|>": 50256}
    assert {t: c.special_token_id(t) for t in want} == want
    assert c.pad_token_id == 50295 and c.image_token_offset == 50305 and c.mask_token_id == 58497
    # Show-o's T2I sequence: 128 + 1 text positions, [SOI], 256 image tokens, [EOI]
    assert c.prompt_len("t2i") == c.prompt_len("mmu") == 387 == c.max_seq_len
    with pytest.raises(ValueError, match="58498"):
        ShowOConfig(llm_vocab_size=50295, codebook_size=8192, num_vq_tokens=256, vocab_size=58497,
                    sot_token_id=50256, eot_token_id=50256)
    with pytest.raises(KeyError, match="not one of"):
        c.special_token_id("<|image|>")


def test_model_registry_and_lm_is_phi_with_qk_norm():
    assert mmu.models.get("show_o") is ShowO and mmu.models.ShowO is ShowO
    m = _model()
    lm = m.lm
    assert lm.vocab_size == m.config.vocab_size == 24 + 10 + 64 + 1
    layer = lm.layers[0]
    assert layer.residual == "parallel" and layer.norm2 is None
    assert layer.attn.q_norm is not None and layer.attn.k_norm is not None
    assert lm.rotary_dim == 8  # partial rotary 0.5 of head_dim 16
    assert lm.lm_head is not None and lm.lm_head.bias is not None and not lm.tie_embeddings
    # the image tokenizer is frozen: none of its parameters trains
    assert all(not p.requires_grad for p in m.image_tokenizer.parameters())
    assert all(p.requires_grad for p in m.lm.parameters())
    m.train()
    assert m.lm.training and not m.image_tokenizer.training


# ------------------------------------------------------------------------------------------ prompts

def test_t2i_prompt_matches_show_o_sequences():
    c = _tiny_config()
    image = np.array([[20, 21, 22, 23]] * 6)
    texts = [[5, 6], [1, 5], [], [3, 4, 5, 6, 7, 8], [3, 4, 5], [7]]
    labels = np.array([[N_, 21, N_, 23]] * 6)
    ids, lab = t2i_prompt(c, texts, image, labels, drop_condition=np.array([0, 0, 0, 0, 0, 1], bool))
    img = [SOI, 20, 21, 22, 23, EOI]
    want = np.array([
        [PAD, T2I, 1, 5, 6, 2] + img,          # left padded to max_text_len + 1 = 6
        [PAD, PAD, T2I, 1, 5, 2] + img,        # a text starting with [SOT] keeps it once
        [PAD, PAD, PAD, T2I, 1, 2] + img,      # empty text -> [SOT] [EOT]
        [T2I, 1, 3, 4, 5, 2] + img,            # too long: cut to 5 and closed with [EOT]
        [T2I, 1, 3, 4, 5, 2] + img,            # exactly fits
        [PAD, PAD, PAD, T2I, 1, 2] + img,      # condition dropped: the empty prompt
    ])
    np.testing.assert_array_equal(ids, want)
    # labels: the prompt with pads -> -100, [SOI], the image labels, [EOI]
    want_lab = np.where(want == PAD, N_, want)
    want_lab[:, 7:11] = labels
    np.testing.assert_array_equal(lab, want_lab)
    # generation prompt (t2i_gen_prompt): no labels, [MASK] image
    ids, lab = t2i_prompt(c, [[5]], np.full((1, 4), MASK))
    assert lab is None
    np.testing.assert_array_equal(ids, [[PAD, PAD, T2I, 1, 5, 2, SOI, MASK, MASK, MASK, MASK, EOI]])
    # a 2-D array of text ids with -1 padding is the same as the lists
    arr = np.array([[5, 6, -1], [1, 5, -1]])
    np.testing.assert_array_equal(t2i_prompt(c, arr, image[:2])[0], t2i_prompt(c, texts[:2], image[:2])[0])


def test_mmu_and_lm_prompts_match_show_o_sequences():
    c = _tiny_config()
    image = np.array([[20, 21, 22, 23]] * 3)
    ids, lab = mmu_prompt(c, image, [[5, 6], [3, 4, 5, 6, 7], []])
    head = [MMU, SOI, 20, 21, 22, 23, EOI]
    np.testing.assert_array_equal(ids, [head + [1, 5, 6, 2, PAD],     # right padded to max_text_len = 5
                                        head + [1, 3, 4, 5, 2],       # too long: cut to 4 + [EOT]
                                        head + [1, 2, PAD, PAD, PAD]])
    np.testing.assert_array_equal(lab, [[N_] * 7 + [1, 5, 6, 2, N_], [N_] * 7 + [1, 3, 4, 5, 2],
                                        [N_] * 7 + [1, 2, N_, N_, N_]])
    # question + answer: only the answer and its [EOT] are targets
    ids, lab = mmu_prompt(c, image[:1], [[5]], answer_ids=[[6, 7]])
    np.testing.assert_array_equal(ids, [head + [1, 5, 6, 7, 2]])
    np.testing.assert_array_equal(lab, [[N_] * 7 + [N_, N_, 6, 7, 2]])
    # LM: [SOT] text [EOT] [PAD]..., labels the ids; too long: cut without [EOT]
    ids, lab = lm_prompt(c, [[5, 6], [3, 4, 5, 6, 7, 8]], max_len=6)
    np.testing.assert_array_equal(ids, [[1, 5, 6, 2, PAD, PAD], [1, 3, 4, 5, 6, 7]])
    np.testing.assert_array_equal(lab, [[1, 5, 6, 2, N_, N_], [1, 3, 4, 5, 6, 7]])
    ids, _ = lm_prompt(c, [[5], [5, 6, 7]])  # max_len None: the longest row
    np.testing.assert_array_equal(ids, [[1, 5, 2, PAD, PAD], [1, 5, 6, 7, 2]])
    with pytest.raises(ValueError, match="MASK|image ids"):
        mmu_prompt(c, np.full((1, 4), MASK), [[5]])
    with pytest.raises(ValueError, match="outside the text ids"):
        mmu_prompt(c, image[:1], [[12]])
    with pytest.raises(ValueError, match="1 rows, the batch has 3"):
        mmu_prompt(c, image, [[5]])


def test_inpainting_extrapolation_and_mixed_prompts():
    c = _tiny_config()
    codes = np.array([[[0, 1], [2, 3]]])
    known = np.array([[[True, False], [False, True]]])
    ids, lab = inpainting_prompt(c, [[5]], codes, known)
    np.testing.assert_array_equal(ids[0, 6:], [SOI, 20, MASK, MASK, 23, EOI])
    np.testing.assert_array_equal(lab[0, 6:], [SOI, N_, 21, 22, N_, EOI])
    # extrapolation on a 2x4 grid keeping 1 column / row (Show-o: keep = W // 2 - offset)
    c8 = _tiny_config(num_vq_tokens=8)
    grid = np.array([[[0, 1, 2, 3], [3, 2, 1, 0]]])
    M = MASK
    for direction, want in (("left", [[M, M, M, 20], [M, M, M, 23]]), ("right", [[23, M, M, M], [20, M, M, M]]),
                            ("up", [[M, M, M, M], [20, 21, 22, 23]]), ("down", [[23, 22, 21, 20], [M, M, M, M]])):
        ids, img = extrapolation_prompt(c8, [[5]], grid, direction, keep=1)
        np.testing.assert_array_equal(img, np.array(want).reshape(1, -1), err_msg=direction)
        np.testing.assert_array_equal(ids[0, 7:15], img[0])
    with pytest.raises(ValueError, match="keep"):
        extrapolation_prompt(c8, [[5]], grid, "left", keep=4)
    # mixed: text, image, text (right padded)
    ids, lab = mixed_prompt(c, [[("text", [5]), ("image", [20, 21]), ("text", [6])], [("image", [22])]])
    np.testing.assert_array_equal(ids, [[1, 5, 2, SOI, 20, 21, EOI, 1, 6, 2],
                                        [SOI, 22, EOI] + [PAD] * 7])
    np.testing.assert_array_equal(lab, [[1, 5, 2, N_, N_, N_, N_, 1, 6, 2], [N_] * 10])


# ------------------------------------------------------------------------------------------ masks

def _show_o_predict_next(ids, pad, soi, eoi, rm_pad_in_image):
    """create_attention_mask_predict_next's rules in NumPy (True = attend)."""
    b, l = ids.shape
    is_pad = ids == pad
    start, end = np.cumsum(ids == soi, 1), np.cumsum(ids == eoi, 1)
    in_image = (start > end) | (ids == soi) | (ids == eoi)
    causal = np.tril(np.ones((l, l), bool))
    mask_text = (~in_image)[:, :, None] & causal[None]
    mask_bi = np.ones((b, l, l), bool)  # is_text | in_image is every position
    if rm_pad_in_image:
        for i in range(b):
            pads = np.nonzero(is_pad[i])[0]
            if len(pads):
                mask_text[i, pads[-1] + 1:, :pads[-1] + 1] = False
            first_soi = np.nonzero(ids[i] == soi)[0][0]
            mask_bi[i, first_soi:, pads] = False
    return np.where(in_image[:, :, None], mask_bi, mask_text)


def _show_o_for_mmu(ids, eoi):
    """create_attention_mask_for_mmu: causal, every row sees up to (row 0's) first [EOI]."""
    b, l = ids.shape
    m = np.tril(np.ones((b, l, l), bool))
    m[:, :, :np.nonzero(ids[0] == eoi)[0][0] + 1] = True
    return m


def _t2i_batch(c, rng, b):
    texts = [list(rng.integers(3, c.llm_vocab_size, rng.integers(0, c.max_text_len + 2))) for _ in range(b)]
    codes = rng.integers(0, c.codebook_size, (b, c.num_vq_tokens))
    known = rng.random((b, c.num_vq_tokens)) < 0.5
    image = np.where(known, codes + c.image_token_offset, c.mask_token_id)
    # conditional rows and their unconditional twins, as Show-o's CFG batch
    cond, _ = t2i_prompt(c, texts, image)
    uncond, _ = t2i_prompt(c, [[]] * b, image)
    return np.concatenate([cond, uncond])


def test_omni_attention_mask_equals_show_o_rules_on_non_pad_rows():
    c = _tiny_config(max_text_len=7, num_vq_tokens=6, codebook_size=8)
    rng = np.random.default_rng(0)
    ids = _t2i_batch(c, rng, 4)
    mine = omni_attention_mask(c, ids)
    assert mine.shape == (8, 1, ids.shape[1], ids.shape[1]) and mine.dtype == np.bool_
    mine = mine[:, 0]
    ref = _show_o_predict_next(ids, PAD, SOI, EOI, rm_pad_in_image=True)
    real = ids != PAD
    assert (~real).any(axis=1)[4:].all()  # the unconditional rows have pads
    np.testing.assert_array_equal(mine[real], ref[real])
    # where they differ: Show-o's pad row i sees the pads 0..i; here a pad row sees only itself
    bi, li = np.nonzero(~real)
    for b, i in zip(bi, li):
        assert ref[b, i, :i + 1].all() and not ref[b, i, i + 1:].any()
        np.testing.assert_array_equal(np.nonzero(mine[b, i])[0], [i])
    # LM rows (right padded, Show-o's call without rm_pad_in_image): causal on the real rows
    lm, _ = lm_prompt(c, [[5, 6, 7], [4], [3, 4, 5, 6, 7]], max_len=8)
    real = lm != PAD
    np.testing.assert_array_equal(omni_attention_mask(c, lm)[:, 0][real],
                                  _show_o_predict_next(lm, PAD, SOI, EOI, False)[real])
    # a mixed sequence: the second image sees the first one and the text before it, not what follows
    ids, _ = mixed_prompt(c, [[("text", [5]), ("image", [20, 21]), ("text", [6]), ("image", [22, 23])]])
    m = omni_attention_mask(c, ids)[0, 0]
    second = [10, 11, 12, 13]  # [SOI] 22 23 [EOI]
    np.testing.assert_array_equal(m[11], np.arange(14) <= 13)
    np.testing.assert_array_equal(m[4], (np.arange(14) <= 6))  # first image: text before + itself
    np.testing.assert_array_equal(m[8], np.arange(14) <= 8)    # text after an image: causal
    assert m[np.ix_(second, second)].all()


def test_mmu_attention_mask_equals_show_o_for_mmu_on_non_pad_rows():
    c = _tiny_config()
    image = np.array([[20, 21, 22, 23], [23, 22, 21, 20]])
    ids, _ = mmu_prompt(c, image, [[5, 6], [7]])
    mine = mmu_attention_mask(c, ids)[:, 0]
    ref = _show_o_for_mmu(ids, EOI)
    real = ids != PAD
    np.testing.assert_array_equal(mine[real], ref[real])
    assert mine[0, 0, :7].all() and not mine[0, 0, 7:].any()  # [MMU] sees the whole image (Show-o's rule)
    # a pad row: Show-o's sees everything before it, here only itself
    assert ref[1, -1].all() and np.nonzero(mine[1, -1])[0].tolist() == [ids.shape[1] - 1]
    # omni-attention differs only in the [MMU] row, which is causal there
    omni = omni_attention_mask(c, ids)[:, 0]
    diff = np.nonzero((omni != mine).any(-1))
    assert set(diff[1].tolist()) == {0}


def test_attention_with_the_mask_equals_torch_sdpa_with_the_expanded_mask():
    torch = torch_or_skip()
    c = _tiny_config(max_text_len=7, num_vq_tokens=6, codebook_size=8)
    ids = _t2i_batch(c, np.random.default_rng(1), 2)
    mask = omni_attention_mask(c, ids)
    b, l, h, e = ids.shape[0], ids.shape[1], 3, 8
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((b, h, l, e)).astype(np.float32) for _ in range(3))
    out = mmu.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).numpy()
    ref = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
        attn_mask=torch.from_numpy(np.ascontiguousarray(np.broadcast_to(mask, (b, h, l, l))))).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_model_logits_with_omni_mask_equal_show_o_mask_on_non_pad_rows():
    """Non-pad rows never read a pad (either mask), so Show-o's pad rows seeing pads change nothing there."""
    m = _model()
    c = m.config
    ids = _t2i_batch(c, np.random.default_rng(3), 2)
    ref_mask = _show_o_predict_next(ids, c.pad_token_id, c.special_token_id("<|soi|>"),
                                    c.special_token_id("<|eoi|>"), True)[:, None]
    with mmu.no_grad():
        a = m(ids, attn_mask=m.omni_attention_mask(ids)).numpy()
        r = m(ids, attn_mask=ref_mask).numpy()
    real = ids != c.pad_token_id
    np.testing.assert_allclose(a[real], r[real], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ training

def test_mask_ratio_schedule_statistics():
    m = _model(seed=1)
    n, b = m.config.num_vq_tokens, 4000
    image = np.random.default_rng(0).integers(0, 64, (b, n)) + m.config.image_token_offset
    ids, labels, ratio = m.mask_image_tokens(image)
    masked = ids == m.config.mask_token_id
    # exactly max(1, round(N ratio)) tokens masked per row, at least one, labels = true ids there only
    np.testing.assert_array_equal(masked.sum(1), np.maximum(np.round(n * ratio), 1))
    np.testing.assert_array_equal(labels, np.where(masked, image, IGNORE_INDEX))
    np.testing.assert_array_equal(ids[~masked], image[~masked])
    # ratio = cos(pi t / 2), t ~ U(0, 1): mean 2 / pi, P(ratio <= r) = 1 - (2 / pi) arccos(r)
    assert abs(ratio.mean() - 2 / math.pi) < 4 * 0.31 / math.sqrt(b)
    for r in (0.2, 0.5, 0.8, 0.95):
        p = 1 - 2 / math.pi * math.acos(r)
        assert abs((ratio <= r).mean() - p) < 4 * math.sqrt(p * (1 - p) / b), r
    # every position is masked equally often
    per_pos = masked.mean(0)
    assert np.abs(per_pos - masked.mean()).max() < 4 * math.sqrt(0.25 / b)
    # min_masking_rate floors the ratio (Show-o's mask_prob.clip(min_masking_rate))
    m2 = _model(seed=1, min_masking_rate=0.5)
    _, _, ratio2 = m2.mask_image_tokens(image[:500])
    assert ratio2.min() >= 0.5 and (ratio2 == 0.5).mean() > 0.25


def test_condition_dropout_rate():
    m = _model(seed=2)
    c = m.config
    b = 4000
    rng = np.random.default_rng(0)
    texts = [[5, 6, 7]] * b
    image = rng.integers(0, 64, (b, c.num_vq_tokens)) + c.image_token_offset
    ids, _, _, drop = m.t2i_training_inputs(texts, image)
    empty = (ids[:, :c.max_text_len + 1] == t2i_prompt(c, [[]], image[:1])[0][0, :c.max_text_len + 1]).all(1)
    np.testing.assert_array_equal(empty, drop)
    assert abs(drop.mean() - 0.1) < 4 * math.sqrt(0.09 / b)
    m0 = _model(seed=2, cond_dropout_prob=0.0)
    assert not m0.t2i_training_inputs(texts[:200], image[:200])[3].any()


def test_training_step_loss_terms_equal_numpy_references():
    m = _model(seed=3, t2i_coeff=1.0, lm_coeff=0.1, mmu_coeff=0.7)
    c = m.config
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 64, (3, c.num_vq_tokens))
    batch = {"t2i": {"text_ids": [[5, 6], [7], []], "codes": codes},
             "lm.text_ids": np.array([[3, 4, 5, -1], [6, -1, -1, -1]]),
             "mmu": {"codes": codes[:2], "question_ids": [[4, 5], [6]], "answer_ids": [[7], [8, 9]]}}
    mmu.manual_seed(11)
    loss, logs = m.training_step(batch, 0)
    # the same draws again, then every term from the logits in NumPy
    mmu.manual_seed(11)
    ids, labels, ratio, drop = m.t2i_training_inputs(batch["t2i"]["text_ids"], codes + c.image_token_offset)
    with mmu.no_grad():
        logits = m(ids, attn_mask=omni_attention_mask(c, ids)).numpy()
    s = c.max_text_len + 2
    img_labels = labels[:, s:s + c.num_vq_tokens]
    t2i = _ce(logits[:, s:s + c.num_vq_tokens], img_labels)  # unshifted, masked tokens only
    assert (img_labels != IGNORE_INDEX).sum() == np.maximum(np.round(c.num_vq_tokens * ratio), 1).sum()
    lm_ids, lm_labels = lm_prompt(c, [[3, 4, 5], [6]])
    with mmu.no_grad():
        lm_logits = m(lm_ids).numpy()
    lm = _ce(lm_logits[:, :-1], lm_labels[:, 1:])
    mm_ids, mm_labels = mmu_prompt(c, codes[:2] + c.image_token_offset, [[4, 5], [6]], [[7], [8, 9]])
    with mmu.no_grad():
        mm_logits = m(mm_ids, attn_mask=mmu_attention_mask(c, mm_ids)).numpy()
    mm = _ce(mm_logits[:, :-1], mm_labels[:, 1:])
    assert (mm_labels != IGNORE_INDEX).sum() == 5  # 7 [EOT], 8 9 [EOT]
    assert logs["loss_t2i"] == pytest.approx(t2i, rel=1e-4)
    assert logs["loss_lm"] == pytest.approx(lm, rel=1e-4)
    assert logs["loss_mmu"] == pytest.approx(mm, rel=1e-4)
    assert loss.item() == pytest.approx(1.0 * t2i + 0.1 * lm + 0.7 * mm, rel=1e-4)
    assert logs["mask_ratio"] == pytest.approx(ratio.mean())
    loss.backward()
    assert m.lm.embed_tokens.weight.grad is not None
    assert all(p.grad is None for p in m.image_tokenizer.parameters())
    # default weights are Show-o's
    d = ShowOConfig()
    assert (d.t2i_coeff, d.lm_coeff, d.mmu_coeff, d.cond_dropout_prob) == (1.0, 0.1, 1.0, 0.1)


def test_packed_training_pass_equals_one_pass_per_task():
    # one batch size for every task: the three sequences run as one packed pass (block-diagonal mask,
    # positions restarting per segment); terms and gradients must be those of one pass per task
    m = _model(seed=4, t2i_coeff=1.0, lm_coeff=0.1, mmu_coeff=0.7)
    c = m.config
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 64, (2, c.num_vq_tokens))
    batch = {"t2i": {"text_ids": [[5, 6, 7], []], "codes": codes},
             "lm": {"text_ids": np.array([[3, 4, 5, 6, -1], [6, -1, -1, -1, -1]])},
             "mmu": {"codes": codes[::-1].copy(), "question_ids": [[4, 5], [6]], "answer_ids": [[7], [8, 9, 3]]}}
    results, passes, forward = [], [], m.lm.forward

    def counted_forward(*args, **kwargs):
        passes[-1] += 1
        return forward(*args, **kwargs)

    object.__setattr__(m.lm, "forward", counted_forward)
    for packed in (True, False):
        object.__setattr__(m, "_pack_tasks", packed)
        m.zero_grad(set_to_none=True)
        mmu.manual_seed(11)
        passes.append(0)
        loss, logs = m.training_step(batch, 0)
        loss.backward()
        grads = {k: p.grad.numpy().copy() for k, p in m.named_parameters() if p.grad is not None}
        results.append((loss.item(), logs, grads))
    (l1, g1, d1), (l2, g2, d2) = results
    assert passes == [1, 3]
    assert l1 == pytest.approx(l2, rel=1e-5)
    for k in ("loss_t2i", "loss_lm", "loss_mmu", "mask_ratio", "cond_dropped"):
        assert g1[k] == pytest.approx(g2[k], rel=1e-5), k
    assert d1.keys() == d2.keys() and len(d1) > 10
    for k in d1:
        np.testing.assert_allclose(d1[k], d2[k], rtol=1e-4, atol=1e-6, err_msg=k)
    # two tasks packed, and the packed terms against NumPy on the separate passes' logits
    object.__delattr__(m.lm, "forward")
    object.__setattr__(m, "_pack_tasks", True)
    mmu.manual_seed(3)
    terms, _ = m.losses({"lm": batch["lm"], "mmu": batch["mmu"]})
    lm_ids, lm_labels = lm_prompt(c, [[3, 4, 5, 6], [6]])
    mm_ids, mm_labels = mmu_prompt(c, codes[::-1] + c.image_token_offset, [[4, 5], [6]], [[7], [8, 9, 3]])
    with mmu.no_grad():
        lm_logits = m(lm_ids).numpy()
        mm_logits = m(mm_ids, attn_mask=mmu_attention_mask(c, mm_ids)).numpy()
    assert sorted(terms) == ["lm", "mmu"]
    assert terms["lm"].item() == pytest.approx(_ce(lm_logits[:, :-1], lm_labels[:, 1:]), rel=1e-4)
    assert terms["mmu"].item() == pytest.approx(_ce(mm_logits[:, :-1], mm_labels[:, 1:]), rel=1e-4)


def test_training_step_rejects_bad_batches():
    m = _model()
    codes = np.zeros((2, 16), np.int64)
    cases = [
        ([1, 2], TypeError, "dict"),
        ({"vqa": {}}, KeyError, "unknown batch key"),
        ({"t2i": {"codes": codes}}, KeyError, "text_ids"),
        ({"t2i": {"text_ids": [[1], [2]]}}, KeyError, "codes"),
        ({"t2i": {"text_ids": [[1], [2]], "codes": np.zeros((2, 15), np.int64)}}, ValueError, "num_vq_tokens"),
        ({"t2i": {"text_ids": [[1]], "codes": codes}}, ValueError, "1 rows, the batch has 2"),
        ({"t2i": {"text_ids": [[1], [99]], "codes": codes}}, ValueError, "outside the text ids"),
        ({"t2i": {"text_ids": [[1], [2]], "codes": codes + 64}}, ValueError, "codebook_size"),
        ({"mmu": {"codes": codes, "question_ids": [[1], [2]]}}, KeyError, "answer_ids"),
        ({"lm": {"text_ids": [[1], [2]], "codes": codes}}, KeyError, "unknown key"),
    ]
    for batch, exc, word in cases:
        with pytest.raises(exc, match=word):
            m.training_step(batch, 0)


def _digits_setup(n=96):
    tok = mmu.text.TextTokenizer.train_word_level(mmu.data.caption_corpus("digits"))
    mmu.manual_seed(0)
    model = ShowO(llm_vocab_size=tok.vocab_size, codebook_size=64, num_vq_tokens=16, max_text_len=10, dim=32,
                  num_layers=2, num_heads=2, sot_token_id=tok.bos_id, eot_token_id=tok.eos_id,
                  image_tokenizer=mmu.tokenizers.VQVAE(in_channels=1, hidden_channels=16, res_channels=8,
                                                       num_res_blocks=1, downsample=4, embed_dim=6,
                                                       codebook_size=64, quantizer="lfq", resolution=16),
                  text_tokenizer=tok)
    ds = mmu.data.captioned_digits(16, "train")
    sub = type("Sub", (), {"images": ds.images[:n], "captions": ds.captions[:n], "questions": ds.questions[:n],
                           "answers": ds.answers[:n]})()
    return model, tok, sub


def test_loss_goes_down_through_the_trainer_on_captioned_digits(tmp_path):
    model, tok, ds = _digits_setup()
    data = model.captioned_token_data(ds)
    assert set(data) == {"t2i.text_ids", "t2i.codes", "lm.text_ids", "mmu.codes", "mmu.question_ids",
                         "mmu.answer_ids"}
    assert data["t2i.codes"].shape == (96, 16) and data["t2i.codes"].max() < 64
    np.testing.assert_array_equal(data["t2i.codes"], model.tokenize_images(ds.images))
    hist = Trainer(model, data, TrainConfig(steps=30, batch_size=16, lr=3e-3, betas=(0.9, 0.95), warmup_steps=2,
                                            log_every=1, progress=False)).fit()
    loss = np.asarray(hist["loss"])
    assert loss[-5:].mean() < 0.8 * loss[:5].mean()
    for key in ("loss_t2i", "loss_lm", "loss_mmu"):
        assert np.asarray(hist[key])[-5:].mean() < np.asarray(hist[key])[:5].mean(), key
    # a checkpoint resumes bit for bit (the masking / dropout draws come from mmu's RNG in the checkpoint)
    cfg = dict(steps=6, batch_size=16, lr=3e-3, log_every=1, progress=False, ckpt_every=3, ckpt_dir=str(tmp_path))
    full, _, _ = _digits_setup()
    want = Trainer(full, data, TrainConfig(**{**cfg, "ckpt_every": 0, "ckpt_dir": None})).fit()
    first, _, _ = _digits_setup()
    Trainer(first, data, TrainConfig(**cfg)).fit(3)
    second, _, _ = _digits_setup()
    second.lm.lm_head.bias.numpy()[:] = 1.0  # other weights: the checkpoint brings them back
    t2 = Trainer.resume(str(tmp_path), second, data, TrainConfig(**cfg))
    t2.fit()
    np.testing.assert_array_equal(t2.history["loss"], want["loss"])
    for (k, a), b in zip(full.state_dict().items(), second.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)


def test_save_load_round_trip_with_nested_tokenizer_config(tmp_path):
    model, tok, ds = _digits_setup(8)
    model.lm.lm_head.bias.numpy()[:] = 0.5  # something other than the initial state
    cfg = mmu.get_config(model.config)
    assert cfg["fields"]["image_tokenizer"]["class"] == "mmu.tokenizers.vqvae.VQVAE"
    assert mmu.from_config(cfg) == model.config
    model.save_pretrained(str(tmp_path))
    back = ShowO.from_pretrained(str(tmp_path))
    assert back.config == model.config and back.text_tokenizer.vocab_size == tok.vocab_size
    assert isinstance(back.image_tokenizer, mmu.tokenizers.VQVAE)
    np.testing.assert_array_equal(back.tokenize_images(ds.images), model.tokenize_images(ds.images))
    ids, _ = t2i_prompt(model.config, [tok.encode("seven")], model.image_token_ids(model.tokenize_images(ds.images[:1])))
    with mmu.no_grad():
        np.testing.assert_array_equal(back(ids, attn_mask=back.omni_attention_mask(ids)).numpy(),
                                      model(ids, attn_mask=model.omni_attention_mask(ids)).numpy())
    assert all(not p.requires_grad for p in back.image_tokenizer.parameters())


def test_config_and_constructor_errors():
    with pytest.raises(TypeError, match="unknown field"):
        ShowOConfig.from_dict({"codebook": 3})
    with pytest.raises(TypeError, match="unknown field"):
        ShowO(codebook=3)
    with pytest.raises(ValueError, match="sot_token_id"):
        ShowOConfig(llm_vocab_size=10, sot_token_id=10)
    with pytest.raises(ValueError, match="max_seq_len"):
        ShowOConfig(max_seq_len=8)
    with pytest.raises(ValueError, match="codes"):
        ShowO(codebook_size=128, num_vq_tokens=16, dim=16, num_layers=1, num_heads=2,
              image_tokenizer=mmu.tokenizers.VQVAE(in_channels=1, downsample=4, embed_dim=6, codebook_size=64,
                                                   quantizer="lfq", resolution=16))
    with pytest.raises(ValueError, match="tokens per image"):
        ShowO(codebook_size=64, num_vq_tokens=4, dim=16, num_layers=1, num_heads=2,
              image_tokenizer=mmu.tokenizers.VQVAE(in_channels=1, downsample=4, embed_dim=6, codebook_size=64,
                                                   quantizer="lfq", resolution=16))
    tok = mmu.text.TextTokenizer.train_word_level(mmu.data.caption_corpus("digits"))
    with pytest.raises(ValueError, match="exceeds"):
        _model(llm_vocab_size=20, text_tokenizer=tok)
    with pytest.raises(ValueError, match="bos / eos"):
        _model(llm_vocab_size=64, sot_token_id=3, text_tokenizer=tok)
    m = _model()
    with pytest.raises(ValueError, match="max_seq_len"):
        m(np.zeros((1, m.config.max_seq_len + 1), np.int64))


def test_readme_show_o_snippet_runs(capsys):
    import os
    import re
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    start = text.index("`mmu.models.show_o.ShowO` is Show-o")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    words = capsys.readouterr().out.split()
    assert words[0] == "t2i" and float(words[3].rstrip(",")) < float(words[1])
    assert words[4] == "mmu" and float(words[7]) < float(words[5])
