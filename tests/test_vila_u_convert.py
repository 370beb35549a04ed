"""VILA-U's release layout (mmu/models/vila_u/convert.py, issue 14 item 2): random state dicts written in
the published key layout (vision_tower/: rqvaesiglip.* + rqtransformer.*; mm_projector/; llm/) at tiny
configs load into mmu and agree with torch models of that layout (tests/vila_u_layouts.py): the same
codes, decoded images, code embeddings, SigLIP vision / text outputs, depth-transformer logits and
projections to float tolerance; malformed files name every key at fault."""
import numpy as np
import pytest

from mmu.models.vila_u.convert import (convert_vila_u_projector_state_dict, convert_vila_u_tower_state_dict,
                                       load_vila_u_tower, vila_u_tower_config)

ATOL = 1e-5

# the SigLIP config rqvaesiglip.pretrained_model names (a SiglipConfig), tiny
SC = {"model_type": "siglip",
      "vision_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
                        "image_size": 16, "patch_size": 4},
      "text_config": {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "max_position_embeddings": 7}}
# vision_tower/config.json (RQVAESIGLIPTransformerConfig), the release's fields at tiny sizes
VT = {"rqvaesiglip": {"embed_dim": 32, "n_embed": 64, "latent_shape": [4, 4, 32], "code_shape": [4, 4, 3],
                      "shared_codebook": True, "restart_unused_codes": True, "decay": 0.99, "latent_loss_weight": 0.25,
                      "decoder_latent_shape": None, "pretrained_model": "google/siglip-large-patch16-256",
                      "ddconfig": {"double_z": False, "z_channels": 32, "resolution": 16, "in_channels": 3,
                                   "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1,
                                   "attn_resolutions": [4], "dropout": 0.0}},
      "rqtransformer": {"block_size": [4, 4, 3], "input_embed_dim_1": 32, "input_embed_dim_2": 48, "embed_dim": 32,
                        "vocab_size": 64, "head": {"block": {"n_head": 4}, "n_layer": 2}},
      "hidden_size": 32}


@pytest.fixture(scope="module")
def L():
    pytest.importorskip("torch")
    from tests import vila_u_layouts
    return vila_u_layouts


def _randomized(L, seed):
    """The vision_tower/ model with every parameter and the codebook's EMA buffers random."""
    import torch
    from tests.hf_layouts import randomize_
    ref = randomize_(L.RQVAESIGLIPTransformer(VT, SC), seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    book = ref.rqvaesiglip.quantizer.codebooks[0]
    with torch.no_grad():
        book.weight.copy_(torch.randn(book.weight.shape, generator=g))          # codes O(1) apart: no near ties
        book.cluster_size_ema.copy_(torch.rand(book.cluster_size_ema.shape, generator=g) * 5)
        book.embed_ema.copy_(torch.randn(book.embed_ema.shape, generator=g))
    return ref


def _sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _images(seed=0):
    return np.random.default_rng(seed).standard_normal((2, 3, 16, 16)).astype(np.float32)


def _close(a, b, atol=ATOL):
    a = a.numpy() if not isinstance(a, np.ndarray) else a
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_vila_u_tower_matches_torch(L):
    import torch
    from tests.hf_layouts import SiglipVisionModel
    ref = _randomized(L, 20)
    sd = _sd(ref)
    assert "rqvaesiglip.quantizer.codebooks.2.weight" in sd           # the shared module under each depth's name
    tower = load_vila_u_tower(sd, VT, SC)
    x = _images()
    with torch.no_grad():
        codes, z_q = ref.rqvaesiglip.encode_image(torch.from_numpy(x))
        emb = ref.rqvaesiglip.get_code_emb_with_depth(codes)
        images = ref.rqvaesiglip.decode(emb.sum(-2))
    got = tower.encode(x)
    assert got.shape == (2, 4, 4, 3) and len(np.unique(got)) > 8
    np.testing.assert_array_equal(got, codes.numpy())                 # layer len - 2's output, residual VQ
    _close(tower.code_embeddings(got), emb)                           # get_code_emb_with_depth
    _close(tower.decode(got), images, atol=1e-4)                      # post_quant_conv + taming decoder
    # the whole SigLIP two-tower model came along: the vision tower's outputs and the text tower's
    vis = SiglipVisionModel.__new__(SiglipVisionModel)
    torch.nn.Module.__init__(vis)
    vis.vision_model = ref.rqvaesiglip.siglip_model.vision_model
    with torch.no_grad():
        last, pooled, _ = vis(torch.from_numpy(x))
    feats, got_pooled = tower.vision(x)
    _close(feats, last)
    _close(got_pooled, pooled)
    ids = np.random.default_rng(1).integers(0, 50, (2, 7)).astype(np.int64)
    with torch.no_grad():
        t = ref.rqvaesiglip.siglip_model.text_model.features(torch.from_numpy(ids), causal=False)
        t_pooled = ref.rqvaesiglip.siglip_model.text_model.head(t[:, -1])
    got_t, got_tp = tower.text(ids)
    _close(got_t, t)
    _close(got_tp, t_pooled)
    np.testing.assert_allclose(tower.logit_scale.numpy(), sd["rqvaesiglip.siglip_model.logit_scale"][0])
    np.testing.assert_allclose(tower.logit_bias.numpy(), sd["rqvaesiglip.siglip_model.logit_bias"][0])
    # the EMA statistics are the quantizer's: cluster sizes and sums as the file holds them
    q = tower.quantizer.state_dict()
    np.testing.assert_array_equal(q["layers.0.cluster_size"].numpy()[0],
                                  sd["rqvaesiglip.quantizer.codebooks.0.cluster_size_ema"])
    np.testing.assert_array_equal(q["layers.0.embed_avg"].numpy()[0], sd["rqvaesiglip.quantizer.codebooks.0.embed_ema"])


def test_vila_u_tower_config_fields():
    f = vila_u_tower_config(VT, SC)
    assert (f["quantize_after"], f["rvq_depth"], f["codebook_size"], f["codebook_dim"], f["shared_codebook"]) == \
        (2, 3, 64, 32, True)
    assert (f["decoder_ch"], f["decoder_ch_mult"], f["decoder_num_res_blocks"], f["decoder_attn_resolutions"],
            f["decoder_z_channels"]) == (32, [1, 1, 2], 1, [4], 32)
    assert (f["activation"], f["norm_eps"], f["kmeans_init"], f["commitment_weight"]) == ("gelu_tanh", 1e-6, False, 0.25)


@pytest.mark.parametrize("change, reason", [
    ({"decoder_latent_shape": [3, 3]}, "upsamples by 4 the 3 x 3 decoder grid .* not the image size 16"),
    ({"code_shape": [2, 2, 3]}, "groups latent_shape"),
    ({"latent_shape": [4, 4, 16], "embed_dim": 16}, "do not match the SigLIP tower"),
    ({"ddconfig": dict(VT["rqvaesiglip"]["ddconfig"], ch_mult=[1, 2])}, "upsamples by 2"),
])
def test_vila_u_tower_config_refusals(change, reason):
    vt = dict(VT, rqvaesiglip=dict(VT["rqvaesiglip"], **change))
    with pytest.raises(ValueError, match=reason):
        vila_u_tower_config(vt, SC)
    with pytest.raises(ValueError, match="SiglipConfig"):
        vila_u_tower_config(VT, SC["vision_config"])


# the 384-px release's layout at a tiny size: SigLIP so400m-patch14-384 leaves 384 mod 14 = 6 pixels outside its
# 27 x 27 patches, the codes are 16 deep, and decode resizes the 27 x 27 grid to decoder_latent_shape [24, 24]
# (bilinear) so that the 16x decoder gives 384 px. Here: 16 px in patches of 3 (5 x 5, one pixel row and column
# unread), D = 16, the 5 x 5 grid resized to 4 x 4 for a 4x decoder.
SC384 = dict(SC, vision_config=dict(SC["vision_config"], patch_size=3))
VT384 = dict(VT, rqvaesiglip=dict(VT["rqvaesiglip"], latent_shape=[5, 5, 32], code_shape=[5, 5, 16],
                                  decoder_latent_shape=[4, 4]),
             rqtransformer=dict(VT["rqtransformer"], block_size=[5, 5, 16]))


def test_vila_u_384_layout_matches_torch(L):
    # decoder_latent_shape: the grid is resized as VILA-U's decode does it (F.interpolate bilinear,
    # align_corners False, before post_quant_conv), forward and backward (the tower's reconstruction loss)
    import torch
    import mmu
    from tests.hf_layouts import randomize_
    ref = randomize_(L.RQVAESIGLIPTransformer(VT384, SC384), 30).eval()
    g = torch.Generator().manual_seed(31)
    with torch.no_grad():
        book = ref.rqvaesiglip.quantizer.codebooks[0]
        book.weight.copy_(torch.randn(book.weight.shape, generator=g))
    tower = load_vila_u_tower(_sd(ref), VT384, SC384)
    f = vila_u_tower_config(VT384, SC384)
    assert (f["rvq_depth"], f["decoder_latent_shape"], tower.latent_shape, tower.tokens_per_image) == \
        (16, [4, 4], (5, 5), 25)
    x = _images(7)
    with torch.no_grad():
        codes, z_q = ref.rqvaesiglip.encode_image(torch.from_numpy(x))
        emb = ref.rqvaesiglip.get_code_emb_with_depth(codes)
        images = ref.rqvaesiglip.decode(emb.sum(-2))
    got = tower.encode(x)
    assert got.shape == (2, 5, 5, 16)
    np.testing.assert_array_equal(got, codes.numpy())
    _close(tower.decode(got), images, atol=1e-4)
    _close(tower.reconstruct(x), images, atol=1e-4)
    # gradients of a reconstruction loss through the resize reach the quantized grid as torch's do
    z = np.random.default_rng(8).standard_normal((2, 5, 5, 32)).astype(np.float32)
    weight = np.random.default_rng(9).standard_normal((2, 3, 16, 16)).astype(np.float32)
    zt = torch.from_numpy(z).requires_grad_(True)
    (ref.rqvaesiglip.decode(zt) * torch.from_numpy(weight)).sum().backward()
    zm = mmu.tensor(z.reshape(2, 25, 32), requires_grad=True)
    (tower._decode_tokens(zm) * mmu.tensor(weight)).sum().backward()
    _close(zm.grad.reshape(2, 5, 5, 32), zt.grad, atol=1e-4)


def test_load_vila_u_384_layout(L):
    # the whole release at the 384 layout: 25 positions of 16 codes an image, the depth transformer 16 deep
    import torch
    from tests.hf_layouts import LlamaForCausalLM, randomize_
    from mmu.models.vila_u.convert import load_vila_u
    tower_ref = randomize_(L.RQVAESIGLIPTransformer(VT384, SC384), 32).eval()
    llm_ref = randomize_(LlamaForCausalLM(LLAMA), 33)
    proj_ref = randomize_(L.MultimodalProjector("mlp2x_gelu", 32, 48), 34)
    model = load_vila_u(_sd(llm_ref), LLAMA, _sd(tower_ref), VT384, SC384, _sd(proj_ref), PROJ).eval()
    assert model.config.tokens_per_image == 25 and model.config.tower["decoder_latent_shape"] == [4, 4]
    rng = np.random.default_rng(10)
    hidden = rng.standard_normal((1, 25, 48)).astype(np.float32)
    codes = rng.integers(0, 64, (1, 25, 16))
    with torch.no_grad():
        want = tower_ref.rqtransformer(torch.from_numpy(hidden), torch.from_numpy(codes), tower_ref.rqvaesiglip)
        images = tower_ref.rqvaesiglip.decode(tower_ref.rqvaesiglip.get_code_emb_with_depth(
            torch.from_numpy(codes)).sum(-2).reshape(1, 5, 5, 32))
    _close(model.depth(hidden, model.tower.code_embeddings(codes)), want)          # (1, 25, 16, 64)
    _close(model.decode(codes.reshape(1, 5, 5, 16)), images, atol=1e-4)


def test_vila_u_shared_codebook_may_be_stored_once(L):
    # save_pretrained keeps one name of tensors sharing memory: any held copies must be the same tensor
    sd = _sd(_randomized(L, 21))
    want = convert_vila_u_tower_state_dict(sd, VT, SC)
    once = {k: v for k, v in sd.items() if not k.startswith(("rqvaesiglip.quantizer.codebooks.0.",
                                                             "rqvaesiglip.quantizer.codebooks.2."))}
    got = convert_vila_u_tower_state_dict(once, VT, SC)                # only codebooks.1.* left
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    sd["rqvaesiglip.quantizer.codebooks.2.embed_ema"] = sd["rqvaesiglip.quantizer.codebooks.2.embed_ema"] + 1.0
    with pytest.raises(ValueError, match="codebooks.2.embed_ema differs from .*codebooks.0.embed_ema"):
        convert_vila_u_tower_state_dict(sd, VT, SC)


def test_vila_u_tower_errors_name_every_key_across_parts(L):
    sd = _sd(_randomized(L, 22))
    del sd["rqvaesiglip.decoder.up.2.attn.1.proj_out.bias"]                          # decoder
    del sd["rqvaesiglip.siglip_model.vision_model.encoder.layers.2.mlp.fc2.bias"]   # SigLIP vision
    sd["rqvaesiglip.siglip_model.text_model.head.weight"] = np.zeros((16, 32), np.float32)   # SigLIP text
    sd["rqvaesiglip.post_quant_conv.weight"] = np.zeros((32, 16, 1, 1), np.float32)
    sd["rqvaesiglip.encoder.conv_in.weight"] = np.zeros((4, 3, 3, 3), np.float32)   # no encoder in VILA-U's tower
    for k in [k for k in sd if k.startswith("rqvaesiglip.quantizer.codebooks.") and k.endswith("cluster_size_ema")]:
        del sd[k]
    with pytest.raises(ValueError) as e:
        convert_vila_u_tower_state_dict(sd, VT, SC)
    msg = str(e.value)
    assert "rqvaesiglip.decoder.up.2.attn.1.proj_out.bias" in msg
    assert "vision_model.encoder.layers.2.mlp.fc2.bias" in msg
    assert "text_model.head.weight has shape (16, 32)" in msg and "needs (32, 32)" in msg
    assert "rqvaesiglip.post_quant_conv.weight has shape (32, 16, 1, 1)" in msg and "needs (32, 32, 1, 1)" in msg
    assert "unexpected key(s): ['rqvaesiglip.encoder.conv_in.weight']" in msg
    assert "rqvaesiglip.quantizer.codebooks.0.cluster_size_ema" in msg


@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu"])
def test_vila_u_projector_keys(L, kind):
    ref = L.MultimodalProjector(kind, 32, 48)
    sd = _sd(ref)
    out = convert_vila_u_projector_state_dict(sd, {"mm_projector_type": kind}, 32, 48)
    if kind == "linear":
        np.testing.assert_array_equal(out["weight"], sd["layers.weight"])
    else:
        assert sorted(out) == ["0.bias", "0.weight", "2.bias", "2.weight"]
        np.testing.assert_array_equal(out["2.weight"], sd["layers.2.weight"])
    with pytest.raises(ValueError, match="mm_projector_type 'identity' is not supported"):
        convert_vila_u_projector_state_dict(sd, {"mm_projector_type": "identity"}, 32, 48)


# ------------------------------------------------------------------ the depth transformer and the whole release

LLAMA = dict(model_type="llama", vocab_size=68, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500.0, hidden_act="silu",
             tie_word_embeddings=False, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
PROJ = {"mm_projector_type": "mlp2x_gelu"}


def test_vila_u_depth_transformer_matches_torch(L):
    import torch
    from mmu.models.vila_u.convert import convert_vila_u_depth_state_dict
    from mmu.models.vila_u.depth import DepthTransformer
    ref = _randomized(L, 24)
    depth = DepthTransformer(code_dim=32, body_dim=48, dim=32, num_layers=2, num_heads=4, depth=3, codebook_size=64)
    depth.load_state_dict(convert_vila_u_depth_state_dict(_sd(ref), VT))
    depth.eval()
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((2, 5, 48)).astype(np.float32)
    codes = rng.integers(0, 64, (2, 5, 3))
    with torch.no_grad():
        emb = ref.rqvaesiglip.get_code_emb_with_depth(torch.from_numpy(codes))
        want = ref.rqtransformer(torch.from_numpy(hidden), torch.from_numpy(codes), ref.rqvaesiglip)
    _close(depth(hidden, emb.numpy()), want)                 # (B, S, D, K): cumsum of codes, causal over depth


def _llama_hidden(ref, x):
    """tests/hf_layouts.LlamaForCausalLM's final-normed hidden states of inputs_embeds x (B, L, d)."""
    import torch
    from tests.hf_layouts import _causal_additive_mask, rope_cos_sin
    B, n = x.shape[:2]
    cos, sin = rope_cos_sin(torch.arange(n)[None].expand(B, n), ref.model.layers[0].self_attn.D, LLAMA["rope_theta"])
    mask = _causal_additive_mask(None, n)
    for layer in ref.model.layers:
        x = layer(x, cos, sin, mask)
    return ref.model.norm(x)


def _release(L, seed):
    from tests.hf_layouts import LlamaForCausalLM, randomize_
    tower = _randomized(L, seed)
    llm = randomize_(LlamaForCausalLM(LLAMA), seed + 2)
    proj = randomize_(L.MultimodalProjector("mlp2x_gelu", 32, 48), seed + 3)
    return tower, llm, proj


def test_load_vila_u_matches_torch(L):
    import torch
    from mmu.models.vila_u import VILAU
    from mmu.models.vila_u.convert import load_vila_u, vila_u_config
    tower_ref, llm_ref, proj_ref = _release(L, 25)
    model = load_vila_u(_sd(llm_ref), LLAMA, _sd(tower_ref), VT, SC, _sd(proj_ref), PROJ)
    assert isinstance(model, VILAU)
    f = vila_u_config(LLAMA, VT, SC, PROJ)
    assert (f["llm_vocab_size"], model.config.vocab_size, f["sot_token_id"], f["eot_token_id"]) == (64, 68, 1, 2)
    assert model.config.token_id("[SOI]") == 64 and model.config.token_id("[EOV]") == 67
    model.eval()
    x = _images(4)
    with torch.no_grad():
        codes, _ = tower_ref.rqvaesiglip.encode_image(torch.from_numpy(x))
    got = model.tower.encode(x)
    np.testing.assert_array_equal(got, codes.numpy())
    # [SOT] text [EOT] [SOI] v_1 .. v_16 [EOI]: text ids embedded, visual positions mm_projector(sum_d e_d(code_d))
    rng = np.random.default_rng(6)
    n_img = 16
    ids = np.concatenate([[1], rng.integers(3, 64, 4), [2, 64], np.full(n_img, -1), [65]])[None].astype(np.int64)
    cds = np.full((1, ids.shape[1], 3), -1, np.int64)
    cds[0, 7:7 + n_img] = got[0].reshape(n_img, 3)
    with torch.no_grad():
        vis = proj_ref(tower_ref.rqvaesiglip.get_code_emb_with_depth(codes[:1].reshape(1, n_img, 3)).sum(-2))
        emb = llm_ref.model.embed_tokens(torch.from_numpy(np.where(ids < 0, 0, ids)))
        emb[0, 7:7 + n_img] = vis[0]
        hidden = _llama_hidden(llm_ref, emb)
        logits = hidden @ llm_ref.lm_head.weight.T
        # the depth transformer predicts image position i's codes from the hidden state before it
        depth_logits = tower_ref.rqtransformer(hidden[:, 6:6 + n_img], codes[:1].reshape(1, n_img, 3),
                                               tower_ref.rqvaesiglip)
    got_hidden = model(ids, cds)
    _close(got_hidden, hidden)
    _close(model.lm.head(got_hidden), logits)
    got_depth = model.depth(got_hidden[:, 6:6 + n_img], model.tower.code_embeddings(got[:1].reshape(1, n_img, 3)))
    _close(got_depth, depth_logits)


def test_load_vila_u_names_every_key_of_every_part(L):
    from mmu.models.vila_u.convert import load_vila_u
    tower_ref, llm_ref, proj_ref = _release(L, 26)
    llm, tower, proj = _sd(llm_ref), _sd(tower_ref), _sd(proj_ref)
    del llm["model.layers.1.mlp.up_proj.weight"]
    del tower["rqtransformer.head_transformer.blocks.1.attn.value.bias"]
    tower["rqtransformer.pos_emb_d"] = np.zeros((1, 4, 32), np.float32)
    proj["layers.1.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as e:
        load_vila_u(llm, LLAMA, tower, VT, SC, proj, PROJ)
    msg = str(e.value)
    assert "missing key(s): ['model.layers.1.mlp.up_proj.weight']" in msg
    assert "rqtransformer.head_transformer.blocks.1.attn.value.bias" in msg
    assert "rqtransformer.pos_emb_d has shape (1, 4, 32)" in msg and "needs (1, 3, 32)" in msg
    assert "unexpected key(s): ['layers.1.weight']" in msg
    with pytest.raises(ValueError, match="rqtransformer disagrees .*body_dim: \\(48, 32\\)"):
        load_vila_u(llm, dict(LLAMA, hidden_size=32), tower, VT, SC, proj, PROJ)
    with pytest.raises(ValueError, match="head_dim 16"):
        load_vila_u(llm, dict(LLAMA, head_dim=16), tower, VT, SC, proj, PROJ)


@pytest.mark.parametrize("change, reason", [
    ({"ddconfig": dict(VT["rqvaesiglip"]["ddconfig"], attn_resolutions=4)}, "attn_resolutions must be a list"),
    ({"ddconfig": dict(VT["rqvaesiglip"]["ddconfig"], ch_mult=[1, "2"])}, "ch_mult must be a list"),
    ({"decoder_latent_shape": 4}, "decoder_latent_shape must be a list"),
    ({"decay": "0.99"}, "decay must be a number"),
    ({"code_shape": [4, 4]}, "code_shape must be a list of 3 ints"),
    ({"ddconfig": None}, "ddconfig must be a dict"),
])
def test_vila_u_tower_config_names_malformed_fields(change, reason):
    with pytest.raises(ValueError, match=reason):
        vila_u_tower_config(dict(VT, rqvaesiglip=dict(VT["rqvaesiglip"], **change)), SC)
    with pytest.raises(ValueError, match="no 'rqvaesiglip' dict"):
        vila_u_tower_config({}, SC)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        load_vila_u_tower([1, 2], VT, SC)


def test_vila_u_tower_from_a_safetensors_file_with_shared_tensors_removed(L, tmp_path):
    # safetensors.torch.save_model (what save_pretrained does with tensors sharing memory) keeps one name of
    # the shared codebook; the bfloat16 file (VILA-U's model_dtype) is read by mmu.io and upcast
    import torch
    st = pytest.importorskip("safetensors.torch")
    import mmu
    ref = _randomized(L, 29).to(torch.bfloat16)
    st.save_model(ref, str(tmp_path / "model.safetensors"))
    loaded = mmu.io.load_file(tmp_path / "model.safetensors")
    held = [k for k in loaded if k.startswith("rqvaesiglip.quantizer.codebooks.") and k.endswith(".weight")]
    assert len(held) == 1                                    # one name of the shared module survives
    tower = load_vila_u_tower(loaded, VT, SC)
    ref = ref.float()
    x = _images(6)
    with torch.no_grad():
        codes, _ = ref.rqvaesiglip.encode_image(torch.from_numpy(x))
    np.testing.assert_array_equal(tower.encode(x), codes.numpy())
