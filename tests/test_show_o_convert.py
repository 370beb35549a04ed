"""Show-o's published transformer checkpoint (mmu.models.show_o.convert), issue 13: a state dict in
Show-o's layout (showo.model.* / showo.lm_head.*, models/phi.py with QK LayerNorm per head) with random
values in every parameter converts onto mmu's transformer and gives the logits of a torch model of
Show-o's forward (tests/showo_layouts.py) within 1e-5, causal and with an omni-attention mask; the
transformer fields are read off the shapes; the published vocabulary ([SOT] = [EOT] = Phi's
<|endoftext|>) is what the module documents; malformed checkpoints name their keys and shapes."""
import numpy as np
import pytest

import mmu
from mmu.models.show_o.convert import (LM_PREFIX, SHOW_O_RELEASE, convert_show_o_state_dict,
                                       show_o_config_from_state_dict, show_o_phi_config, show_o_transformer)

ATOL = 1e-5

# a tiny unified vocabulary: 40 text ids (39 = the <|endoftext|> that is both [SOT] and [EOT]), Show-o's 10
# new tokens, 16 image codes, [MASK]
LLM_VOCAB, NEW, CODES = 40, 10, 16
CFG = dict(llm_vocab_size=LLM_VOCAB, num_new_special_tokens=NEW, codebook_size=CODES, num_vq_tokens=4,
           vocab_size=LLM_VOCAB + NEW + CODES + 1, sot_token_id=39, eot_token_id=39, dim=32, num_layers=2,
           num_heads=4, hidden_dim=80, norm_eps=1e-5, rotary_fraction=0.5, rope_base=10000.0)


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


def _sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _model(sd):
    lm = show_o_transformer(CFG)
    lm.load_state_dict({k[len(LM_PREFIX):]: v for k, v in convert_show_o_state_dict(sd, CFG).items()})
    lm.eval()
    return lm


def _t2i_sequence(rng, B=2):
    """[T2I] [SOT] text [EOT] [SOI] 4 image ids [EOI] with ids in Show-o's vocabulary order."""
    sot = eot = CFG["sot_token_id"]
    t2i, soi, eoi = LLM_VOCAB + 5, LLM_VOCAB + 1, LLM_VOCAB + 2
    rows = []
    for _ in range(B):
        text = list(rng.integers(0, 39, 3))
        img = list(LLM_VOCAB + NEW + rng.integers(0, CODES, 4))
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
    emb = lm.embed_tokens.weight.numpy()
    np.testing.assert_array_equal(emb[CFG["sot_token_id"]], sd["showo.model.embed_tokens.weight"][39])


def test_omni_attention_logits_equal_showo(ref):
    """Show-o's T2I mask: causal over the text, every image position sees the text before it and the whole
    image; given as the 4-D additive mask to Show-o's forward and as a bool mask to mmu's."""
    import torch
    ids = _t2i_sequence(np.random.default_rng(1))
    L = ids.shape[1]
    allowed = np.tril(np.ones((L, L), bool))
    img = slice(7, 13)                                   # [SOI] image [EOI]
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
    assert LM_PREFIX + "layers.0.attn.q_norm.weight" in out


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
