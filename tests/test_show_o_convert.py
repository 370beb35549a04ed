"""Show-o's published transformer checkpoint (mmu.models.show_o.convert), issue 13: a state dict in
Show-o's layout (showo.model.* / showo.lm_head.*, models/phi.py with QK LayerNorm per head) with random
values in every parameter converts onto mmu's transformer and gives the logits of a torch model of
Show-o's forward (tests/showo_layouts.py) within 1e-5, causal and with an omni-attention mask; the
transformer fields are read off the shapes; the published vocabulary ([SOT] = [EOT] = Phi's
<|endoftext|>) is what the module documents; malformed checkpoints name their keys and shapes."""
import numpy as np
import pytest

import mmu
from mmu.models.magvit2 import MAGVIT2, load_magvit2
from mmu.models.show_o import ShowO, ShowOConfig, load_show_o, show_o_release_config
from mmu.models.show_o.convert import (LM_PREFIX, SHOW_O_RELEASE, convert_show_o_state_dict,
                                       show_o_config_from_state_dict, show_o_phi_config)

ATOL = 1e-5

# a tiny unified vocabulary: 40 text ids (39 = the <|endoftext|> that is both [SOT] and [EOT]), Show-o's 10
# new tokens, 16 image codes, [MASK]
LLM_VOCAB, NEW, CODES = 40, 10, 16
CFG = dict(llm_vocab_size=LLM_VOCAB, num_new_special_tokens=NEW, codebook_size=CODES, num_vq_tokens=16,
           vocab_size=LLM_VOCAB + NEW + CODES + 1, sot_token_id=39, eot_token_id=39, dim=32, num_layers=2,
           num_heads=4, hidden_dim=80, norm_eps=1e-5, rotary_fraction=0.5, rope_base=10000.0, max_text_len=8)
# its MAGVIT-v2: 8 px images -> 4 x 4 codes of 4 bits (16 codes)
TOK = dict(in_channels=3, ch=8, encoder_ch_mult=[1, 2], encoder_num_res_blocks=[1, 2], decoder_ch_mult=[1, 2],
           decoder_num_res_blocks=[2, 1], attn_resolutions=[4], z_channels=4, resolution=8, norm_groups=4,
           codebook_size=CODES)


@pytest.fixture(scope="module")
def ref():
    torch = pytest.importorskip("torch")
    from tests.showo_layouts import Showo
    torch.manual_seed(0)
    m = Showo(show_o_phi_config(CFG)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():      # every parameter random, norms and biases included
            p.copy_((1.0 if "layernorm.weight" in name else 0.0) + 0.2 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def ref_tok():
    """Show-o's MAGVITv2 layout at TOK, random parameters."""
    torch = pytest.importorskip("torch")
    from tests.showo_layouts import MAGVITv2
    torch.manual_seed(1)
    m = MAGVITv2(TOK).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".norm" in name or name.startswith("norm"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
    return m


def _sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _model(sd, tok=None):
    return load_show_o(sd, CFG, tok if tok is not None else MAGVIT2(TOK))


def _t2i_sequence(rng, B=2):
    """[T2I] [SOT] text [EOT] [SOI] 16 image ids [EOI] with ids in Show-o's vocabulary order."""
    sot = eot = CFG["sot_token_id"]
    t2i, soi, eoi = LLM_VOCAB + 5, LLM_VOCAB + 1, LLM_VOCAB + 2
    rows = []
    for _ in range(B):
        text = list(rng.integers(0, 39, 3))
        img = list(LLM_VOCAB + NEW + rng.integers(0, CODES, 16))
        img[1] = CFG["vocab_size"] - 1        # a [MASK]
        rows.append([t2i, sot] + text + [eot, soi] + img + [eoi])
    return np.array(rows, np.int64)


def test_release_vocabulary_is_documented_and_consistent():
    r = SHOW_O_RELEASE
    assert r["llm_vocab_size"] + r["num_new_special_tokens"] + r["codebook_size"] + 1 == r["vocab_size"] == 58498
    assert r["sot_token_id"] == r["eot_token_id"] == 50256 < r["llm_vocab_size"]
    assert r["num_vq_tokens"] == 16 * 16 and r["codebook_size"] == 2 ** 13
    doc = mmu.models.show_o.convert.__doc__
    assert "<|endoftext|> = 50256" in doc and "sot_token_id =\neot_token_id = 50256" in doc


def test_causal_logits_equal_showo(ref):
    import torch
    sd = _sd(ref)
    assert all(k.startswith("showo.") for k in sd)
    assert "showo.model.layers.1.self_attn.q_layernorm.weight" in sd and sd[
        "showo.model.layers.1.self_attn.q_layernorm.weight"].shape == (8,)      # per head: head_dim 8
    read = show_o_config_from_state_dict(sd)
    assert read == {k: CFG[k] for k in read}
    lm = _model(sd)
    ids = _t2i_sequence(np.random.default_rng(0))
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).numpy()
    got = lm(ids).numpy()
    assert got.shape == (2, ids.shape[1], CFG["vocab_size"])
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    # the shared [SOT] / [EOT] id gets the same embedding wherever it stands
    emb = lm.lm.embed_tokens.weight.numpy()
    np.testing.assert_array_equal(emb[CFG["sot_token_id"]], sd["showo.model.embed_tokens.weight"][39])


def test_omni_attention_logits_equal_showo(ref):
    """Show-o's T2I mask: causal over the text, every image position sees the text before it and the whole
    image; given as the 4-D additive mask to Show-o's forward and as a bool mask to mmu's."""
    import torch
    ids = _t2i_sequence(np.random.default_rng(1))
    L = ids.shape[1]
    allowed = np.tril(np.ones((L, L), bool))
    img = slice(7, 25)                                   # [SOI] image [EOI]
    allowed[img, img] = True
    allowed = np.broadcast_to(allowed, (2, 1, L, L)).copy()
    additive = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(ids), torch.from_numpy(additive)).numpy()
    got = _model(_sd(ref))(ids, attn_mask=allowed).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_bfloat16_tensors_load(ref):
    import torch
    sd = {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()}
    out = convert_show_o_state_dict(sd, CFG)
    assert all(v.dtype == np.float32 for v in out.values())
    assert LM_PREFIX == "lm." and "lm.layers.0.attn.q_norm.weight" in out
    assert set(out) == {k for k in ShowO(CFG, image_tokenizer=MAGVIT2(TOK)).state_dict() if k.startswith("lm.")}


def test_malformed_checkpoints_name_keys_and_shapes(ref):
    sd = _sd(ref)
    bad = dict(sd)
    del bad["showo.model.layers.1.self_attn.k_layernorm.bias"]
    bad["showo.lm_head.bias"] = np.zeros(5, np.float32)
    bad["showo.model.layers.0.extra"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError) as e:
        convert_show_o_state_dict(bad, CFG)
    msg = str(e.value)
    assert msg.startswith("convert_show_o_state_dict") and "the Show-o config" in msg
    assert "'showo.model.layers.1.self_attn.k_layernorm.bias'" in msg and "missing" in msg
    assert f"showo.lm_head.bias has shape (5,), the Show-o config" in msg and f"({CFG['vocab_size']},)" in msg
    assert "'showo.model.layers.0.extra'" in msg and "unexpected" in msg
    # a vocabulary that does not fit the config names the embedding's shape
    with pytest.raises(ValueError, match=r"showo.model.embed_tokens.weight has shape \(67, 32\).*\(68, 32\)"):
        convert_show_o_state_dict(sd, dict(CFG, vocab_size=68))
    # the CLIP-ViT variant's projector has no counterpart
    with pytest.raises(ValueError, match="mm_projector.0.weight"):
        convert_show_o_state_dict(dict(sd, **{"mm_projector.0.weight": np.zeros((4, 4), np.float32)}), CFG)
    with pytest.raises(TypeError, match="config must be a Show-o config"):
        convert_show_o_state_dict(sd, 3)
    with pytest.raises(ValueError, match="config has no 'num_heads'"):
        convert_show_o_state_dict(sd, {k: v for k, v in CFG.items() if k != "num_heads"})
    with pytest.raises(ValueError, match="showo.model.layers.0.self_attn.q_layernorm.weight"):
        show_o_config_from_state_dict({k: v for k, v in sd.items() if "q_layernorm" not in k})


def _showo_ids(config, name):
    return config.special_token_id(name)


def test_end_to_end_prompt_to_codes_to_image(ref, ref_tok):
    """Both files -> mmu: a T2I prompt (left padded, all image tokens [MASK]) through Show-o gives the
    logits of Show-o's forward with its inference mask (create_attention_mask_predict_next,
    rm_pad_in_image) on every non-pad row; the most likely code at each image position (Show-o's
    t2i_generate reads logits[:, -(N + 1):-1, llm_vocab_size + 10:-1]) is the same, and MAGVIT-v2
    decodes those codes to the same image."""
    import torch
    from tests.showo_layouts import create_attention_mask_predict_next
    model = load_show_o(_sd(ref), CFG, load_magvit2(_sd(ref_tok), resolution=8, norm_groups=4))
    c = model.config
    assert c.sot_token_id == c.eot_token_id == 39
    texts = [[3, 7, 11, 5], [8]]                             # two prompts: the second is left padded
    N = c.num_vq_tokens
    ids, _ = mmu.models.show_o.t2i_prompt(c, texts, np.full((2, N), c.mask_token_id, np.int64))
    assert (ids == c.pad_token_id).sum(1).tolist() == [2, 5]
    assert ids[1, 6] == ids[1, 8] == 39 and ids[1, 7] == 8                 # [SOT] text [EOT]: one id twice
    got = model(ids, attn_mask=model.omni_attention_mask(ids)).numpy()
    t = torch.from_numpy(ids)
    with torch.no_grad():
        mask = create_attention_mask_predict_next(t, c.pad_token_id, _showo_ids(c, "<|soi|>"), _showo_ids(c, "<|eoi|>"),
                                                  rm_pad_in_image=True)
        want = ref(t, mask).numpy()
    real = ids != c.pad_token_id
    np.testing.assert_allclose(got[real], want[real], rtol=0, atol=ATOL)
    off = c.image_token_offset
    codes = got[:, -(N + 1):-1, off:off + c.codebook_size].argmax(-1)
    codes_ref = want[:, -(N + 1):-1, off:-1].argmax(-1)
    np.testing.assert_array_equal(codes, codes_ref)
    img = model.image_tokenizer.decode_code(codes)
    with torch.no_grad():
        img_ref = ref_tok.decode_code(torch.from_numpy(codes_ref)).numpy()
    assert img.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(img, img_ref, rtol=0, atol=ATOL)


def test_end_to_end_image_and_question_to_answer(ref, ref_tok):
    """Image + question -> answer: MAGVIT-v2's codes of the image (+ the image offset), Show-o's MMU
    sequence [MMU] [SOI] image [EOI] [SOT] question, greedy decoding of 6 tokens recomputing the sequence
    with the MMU mask each step: mmu gives Show-o's tokens (Showo.mmu_generate with top_k 1)."""
    import copy

    import torch
    from tests.showo_layouts import create_attention_mask_for_mmu, mmu_generate_greedy
    # a trained model answers in text ids: push the head's bias of the other ids down so the random one
    # does too (a generated [PAD] would be masked by mmu's MMU mask and attended by Show-o's)
    sd = _sd(ref)
    sd["showo.lm_head.bias"][LLM_VOCAB:] -= 30.0
    ref = copy.deepcopy(ref)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    model = load_show_o(sd, dict(CFG, max_seq_len=40), load_magvit2(_sd(ref_tok), resolution=8, norm_groups=4))
    c = model.config
    image = (np.random.default_rng(3).random((1, 3, 8, 8), dtype=np.float32) * 2 - 1).astype(np.float32)
    with torch.no_grad():
        codes_ref = ref_tok.get_code(torch.from_numpy(image)).numpy()
    img_ids = model.image_token_ids(model.tokenize_images(image))
    np.testing.assert_array_equal(img_ids, codes_ref + c.image_token_offset)
    question = [21, 4, 17]
    prompt = np.array([[_showo_ids(c, "<|mmu|>"), _showo_ids(c, "<|soi|>")] + list(img_ids[0]) +
                       [_showo_ids(c, "<|eoi|>"), c.sot_token_id] + question], np.int64)
    seq = prompt
    answer = []
    for _ in range(6):
        logits = model(seq, attn_mask=model.mmu_attention_mask(seq), logits_at="last").numpy()
        top2 = np.sort(logits[0])[-2:]
        assert top2[1] - top2[0] > 1e-4                     # the argmax is not decided by rounding
        nxt = int(logits[0].argmax())
        answer.append(nxt)
        seq = np.concatenate([seq, [[nxt]]], 1)
        if nxt == c.eot_token_id:
            break
    t = torch.from_numpy(prompt)
    with torch.no_grad():
        want, _ = mmu_generate_greedy(ref, t, create_attention_mask_for_mmu(t, _showo_ids(c, "<|eoi|>")), 6,
                                      c.eot_token_id)
    assert answer == want and len(answer) >= 1


def test_release_config_and_load_errors():
    c = show_o_release_config()
    assert (c.vocab_size, c.image_token_offset, c.mask_token_id, c.num_vq_tokens) == (58498, 50305, 58497, 256)
    assert c.sot_token_id == c.eot_token_id == 50256 and c.max_text_len == 128
    assert c.image_tokenizer["class"] == "mmu.models.magvit2.model.MAGVIT2"
    kw = c.lm_kwargs()
    assert (kw["dim"], kw["num_layers"], kw["num_heads"], kw["hidden_dim"], kw["qk_norm"], kw["rotary_fraction"],
            kw["activation"]) == (2048, 24, 32, 8192, "layernorm", 0.5, "gelu_tanh")
    with pytest.raises(TypeError, match="image_tokenizer must be the loaded mmu tokenizer"):
        load_show_o({}, CFG, None)
    with pytest.raises(TypeError, match="load_show_o: config must be a ShowOConfig"):
        load_show_o({}, 5, MAGVIT2(TOK))
    # a tokenizer whose grid does not give num_vq_tokens codes is refused by ShowO
    with pytest.raises(ValueError, match="tokens per image"):
        load_show_o(_sd_phi_only(), CFG, MAGVIT2(dict(TOK, resolution=16)))


def _sd_phi_only():
    """A Show-o state dict of zeros with every key of CFG's transformer (for error paths)."""
    from mmu.models.phi import phi_config_from_hf
    lm = mmu.nn.TransformerLM(**phi_config_from_hf(show_o_phi_config(CFG)))
    shapes = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    d = CFG["dim"]
    sd = {"showo.model.embed_tokens.weight": np.zeros(shapes["embed_tokens.weight"], np.float32),
          "showo.model.final_layernorm.weight": np.zeros(d, np.float32),
          "showo.model.final_layernorm.bias": np.zeros(d, np.float32),
          "showo.lm_head.weight": np.zeros(shapes["lm_head.weight"], np.float32),
          "showo.lm_head.bias": np.zeros(shapes["lm_head.bias"], np.float32)}
    hd, F = d // CFG["num_heads"], CFG["hidden_dim"]
    for i in range(CFG["num_layers"]):
        p = f"showo.model.layers.{i}."
        for b in ("weight", "bias"):
            sd[p + "input_layernorm." + b] = np.zeros(d, np.float32)
            for n in ("q", "k"):
                sd[f"{p}self_attn.{n}_layernorm.{b}"] = np.zeros(hd, np.float32)
        for n in ("q_proj", "k_proj", "v_proj", "dense"):
            sd[f"{p}self_attn.{n}.weight"] = np.zeros((d, d), np.float32)
            sd[f"{p}self_attn.{n}.bias"] = np.zeros(d, np.float32)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = np.zeros((F, d), np.float32), np.zeros(F, np.float32)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = np.zeros((d, F), np.float32), np.zeros(d, np.float32)
    return sd


def test_converted_model_saves_and_loads_with_its_magvit2(ref, ref_tok, tmp_path):
    """A converted Show-o with its MAGVIT-v2 saves in mmu's format and comes back whole (the tokenizer is
    rebuilt from the nested config, its weights from the file)."""
    model = load_show_o(_sd(ref), CFG, load_magvit2(_sd(ref_tok), resolution=8, norm_groups=4))
    model.save_pretrained(str(tmp_path))
    back = ShowO.from_pretrained(str(tmp_path))
    assert isinstance(back.image_tokenizer, MAGVIT2) and back.image_tokenizer.config == model.image_tokenizer.config
    ids = _t2i_sequence(np.random.default_rng(4))
    np.testing.assert_array_equal(back(ids).numpy(), model(ids).numpy())
    codes = np.random.default_rng(5).integers(0, CODES, (2, 16))
    np.testing.assert_array_equal(back.image_tokenizer.decode_code(codes), model.image_tokenizer.decode_code(codes))
