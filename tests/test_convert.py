"""Converters of published checkpoint layouts (mmu/models/{phi,llama,vit}/convert.py), issue 12: a state
dict in Hugging Face's Phi / LLaMA / SigLIP / CLIP key layout with random values (every parameter,
norms and biases included) loads into mmu and gives the logits / features of a torch model of that
layout built here (tests/hf_layouts.py) within 1e-5 in float32; files written with the safetensors
package load through mmu.io; every malformed checkpoint is refused with its key and shapes named."""
import json

import numpy as np
import pytest

import mmu
from mmu.models.llama import convert_llama_state_dict, llama_config_from_hf, load_llama
from mmu.models.phi import convert_phi_state_dict, phi_config_from_hf, load_phi
from mmu.models.vit import convert_vit_state_dict, load_vit, vit_config_from_hf

ATOL = 1e-5

PHI = dict(model_type="phi", vocab_size=61, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
           num_attention_heads=4, partial_rotary_factor=0.5, rope_theta=10000.0, layer_norm_eps=1e-5,
           hidden_act="gelu_new", qk_layernorm=False, tie_word_embeddings=False)
LLAMA = dict(model_type="llama", vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500.0,
             hidden_act="silu", tie_word_embeddings=False)
SIGLIP = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, image_size=16, patch_size=4, num_channels=3)
CLIP = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, image_size=16, patch_size=4, num_channels=3)


@pytest.fixture(scope="module")
def H():
    """The torch models of the published layouts (skips without torch)."""
    pytest.importorskip("torch")
    from tests import hf_layouts
    return hf_layouts


def _numpy_sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _ids(shape, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int64)


def _images(seed=0):
    return np.random.default_rng(seed).standard_normal((2, 3, 16, 16)).astype(np.float32)


def _close(a, b):
    a = a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


# ------------------------------------------------------------------------------------------- Phi

@pytest.mark.parametrize("extra", [{}, {"qk_layernorm": True, "num_key_value_heads": 2, "partial_rotary_factor": 0.75,
                                        "rope_theta": 100.0}], ids=["phi-1_5", "qk_norm-gqa"])
def test_phi_logits_match_torch(H, extra):
    import torch
    cfg = dict(PHI, **extra)
    ref = H.randomize_(H.PhiForCausalLM(cfg), 0)
    model = load_phi(_numpy_sd(ref), cfg)
    assert model.layers[0].residual == "parallel" and model.lm_head.bias is not None
    assert model.rotary_dim == int(8 * cfg["partial_rotary_factor"])
    ids = _ids((2, 7), cfg["vocab_size"])
    _close(model(ids), ref(torch.from_numpy(ids)))


def test_phi_left_padded_batch_matches_torch(H):
    # a left-padded prompt: the real tokens' logits equal HF's with its attention_mask and position ids
    import torch
    ref = H.randomize_(H.PhiForCausalLM(PHI), 1)
    model = load_phi(_numpy_sd(ref), PHI)
    ids = _ids((2, 6), PHI["vocab_size"], 1)
    am = np.ones((2, 6), bool)
    am[1, :2] = False
    pos = np.maximum(np.cumsum(am, 1) - 1, 0)
    got = model(ids, attention_mask=am, position_ids=pos).numpy()
    want = ref(torch.from_numpy(ids), torch.from_numpy(am), torch.from_numpy(pos)).detach().numpy()
    np.testing.assert_allclose(got[am], want[am], rtol=0, atol=ATOL)


def test_phi_config_defaults_are_phi_1_5():
    cfg = phi_config_from_hf({"model_type": "phi"})
    assert (cfg["vocab_size"], cfg["dim"], cfg["num_layers"], cfg["num_heads"], cfg["hidden_dim"]) == \
        (51200, 2048, 24, 32, 8192)
    assert cfg["rotary_fraction"] == 0.5 and cfg["activation"] == "gelu_tanh" and cfg["residual"] == "parallel"
    assert cfg["head_bias"] and not cfg["tie_embeddings"] and cfg["qk_norm"] is None and cfg["norm_eps"] == 1e-5


# ----------------------------------------------------------------------------------------- LLaMA

@pytest.mark.parametrize("extra", [
    {},                                                                               # GQA, separate head
    {"tie_word_embeddings": True, "num_key_value_heads": 1, "attention_bias": True},  # MQA, tied, biases
    {"num_key_value_heads": 4, "head_dim": 12},                                       # MHA, head_dim != d / H
], ids=["gqa", "tied-mqa-bias", "head_dim"])
def test_llama_logits_match_torch(H, extra):
    import torch
    cfg = dict(LLAMA, **extra)
    ref = H.randomize_(H.LlamaForCausalLM(cfg), 2)
    sd = _numpy_sd(ref)
    assert ("lm_head.weight" in sd) == (not cfg["tie_word_embeddings"])
    model = load_llama(sd, cfg)
    assert model.num_kv_heads == cfg["num_key_value_heads"] and model.tie_embeddings == cfg["tie_word_embeddings"]
    ids = _ids((2, 7), cfg["vocab_size"], 3)
    _close(model(ids), ref(torch.from_numpy(ids)))
    # the KV cache decode of the converted model agrees too (prefill 4, then one token at a time)
    cache = model.new_cache(2, 7)
    with mmu.no_grad():
        steps = [model(ids[:, :4], cache=cache, logits_at="all").numpy()]
        steps += [model(ids[:, j:j + 1], cache=cache, logits_at="all").numpy() for j in range(4, 7)]
    _close(np.concatenate(steps, 1), ref(torch.from_numpy(ids)))


def test_llama_tied_checkpoint_may_store_the_head_if_equal(H):
    cfg = dict(LLAMA, tie_word_embeddings=True)
    ref = H.randomize_(H.LlamaForCausalLM(cfg), 4)
    sd = _numpy_sd(ref)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].copy()
    assert "lm_head.weight" not in convert_llama_state_dict(sd, cfg)
    sd["lm_head.weight"][0, 0] += 1.0
    with pytest.raises(ValueError, match="tie_word_embeddings is true but lm_head.weight"):
        convert_llama_state_dict(sd, cfg)


def test_llama_from_float16_safetensors_file_and_config_path(H, tmp_path):
    # a file written by the safetensors package (numpy API, float16 like LLaMA-2's release), read by mmu.io
    import torch
    st = pytest.importorskip("safetensors.numpy")
    ref = H.randomize_(H.LlamaForCausalLM(LLAMA), 5)
    sd16 = {k: v.astype(np.float16) for k, v in _numpy_sd(ref).items()}
    st.save_file(sd16, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    loaded = mmu.io.load_file(tmp_path / "model.safetensors")
    model = load_llama(loaded, tmp_path / "config.json")
    with torch.no_grad():
        for k, p in ref.state_dict().items():
            p.copy_(torch.from_numpy(sd16[k].astype(np.float32)))
    ids = _ids((1, 5), LLAMA["vocab_size"], 6)
    _close(model(ids), ref(torch.from_numpy(ids)))


def test_bfloat16_torch_tensors_upcast(H):
    import torch
    ref = H.randomize_(H.PhiForCausalLM(PHI), 7)
    sd = {k: v.detach().to(torch.bfloat16) for k, v in ref.state_dict().items()}
    model = load_phi(sd, PHI)
    ref.load_state_dict({k: v.float() for k, v in sd.items()})
    ids = _ids((2, 5), PHI["vocab_size"], 8)
    _close(model(ids), ref(torch.from_numpy(ids)))


# ----------------------------------------------------------------------------------- ViT towers

@pytest.mark.parametrize("use_head", [True, False])
def test_siglip_tower_matches_torch(H, use_head):
    import torch
    cfg = dict(SIGLIP, vision_use_head=use_head)
    ref = H.randomize_(H.SiglipVisionModel(cfg), 9)
    sd = _numpy_sd(ref)
    x = _images()
    last, pooled, hidden = ref(torch.from_numpy(x))
    tower = load_vit(sd, cfg)
    feats, got_pooled = tower(x)
    _close(feats, last)                                     # post_layernorm on every token, no cls token
    if use_head:
        _close(got_pooled, pooled)                          # the attention-pooling head
    else:
        assert got_pooled is None and tower.head is None
    # VILA-U reads the second-to-last layer: hidden_states[-2], before any final norm
    cut, none = load_vit(sd, cfg, num_layers=-2)(x)
    assert none is None
    _close(cut, hidden[-2])


def test_clip_tower_matches_torch_from_a_two_tower_checkpoint(H):
    import torch
    ref = H.randomize_(H.CLIPVisionModel(CLIP), 10)
    sd = _numpy_sd(ref)
    # what a CLIPModel file holds besides the vision tower, and the position_ids buffer of old files
    sd.update({"text_model.embeddings.token_embedding.weight": np.zeros((5, 32), np.float32),
               "logit_scale": np.array(2.6, np.float32), "visual_projection.weight": np.zeros((8, 32), np.float32),
               "text_projection.weight": np.zeros((8, 32), np.float32),
               "vision_model.embeddings.position_ids": np.arange(17)[None]})
    x = _images(1)
    last, pooled, hidden = ref(torch.from_numpy(x))
    full = {"model_type": "clip", "vision_config": {k: v for k, v in CLIP.items() if k != "model_type"}}
    tower = load_vit(sd, full)
    feats, got_pooled = tower(x)
    assert feats.shape == (2, 17, 32)                       # class token first
    _close(feats, last)                                     # pre_layrnorm, quick_gelu, no final norm
    _close(got_pooled, pooled)                              # post_layernorm of the class token
    _close(load_vit(sd, full, num_layers=1)(x)[0], hidden[1])


def test_vit_config_reads_layout_and_defaults():
    s = vit_config_from_hf({"model_type": "siglip_vision_model"})
    assert (s["patch_size"], s["activation"], s["norm_eps"], s["pooling"], s["final_norm"]) == \
        (16, "gelu_tanh", 1e-6, "attention", True)
    c = vit_config_from_hf({}, layout="clip")
    assert (c["patch_size"], c["activation"], c["norm_eps"], c["pooling"], c["final_norm"]) == \
        (32, "quick_gelu", 1e-5, "cls", False)
    assert vit_config_from_hf(SIGLIP, num_layers=-2)["depth"] == 2
    assert vit_config_from_hf(SIGLIP, num_layers=3)["depth"] == 3


def test_mlp_quick_gelu():
    # CLIP's activation, added to mmu.nn.MLP for the CLIP tower: x * sigmoid(1.702 x)
    mlp = mmu.nn.MLP(3, 5, activation="quick_gelu")
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    w1, b1 = mlp.fc1.weight.numpy(), mlp.fc1.bias.numpy()
    w2, b2 = mlp.fc2.weight.numpy(), mlp.fc2.bias.numpy()
    mmu.nn.init.normal_(mlp.fc1.bias, 0.0, 1.0)
    b1 = mlp.fc1.bias.numpy()
    h = x @ w1.T + b1
    want = (h / (1.0 + np.exp(-1.702 * h))) @ w2.T + b2
    np.testing.assert_allclose(mlp(x).numpy(), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ errors

def _phi_sd(seed=0):
    """A random Phi state dict of PHI's shapes, without torch."""
    rng = np.random.default_rng(seed)
    d, f, v = 32, 80, 61
    sd = {"model.embed_tokens.weight": rng.standard_normal((v, d)), "model.final_layernorm.weight": np.ones(d),
          "model.final_layernorm.bias": np.zeros(d), "lm_head.weight": rng.standard_normal((v, d)),
          "lm_head.bias": np.zeros(v)}
    for i in range(2):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "dense"):
            sd[p + f"self_attn.{n}.weight"], sd[p + f"self_attn.{n}.bias"] = rng.standard_normal((d, d)), np.zeros(d)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = rng.standard_normal((f, d)), np.zeros(f)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = rng.standard_normal((d, f)), np.zeros(d)
        sd[p + "input_layernorm.weight"], sd[p + "input_layernorm.bias"] = np.ones(d), np.zeros(d)
    return {k: np.asarray(a, np.float32) for k, a in sd.items()}


def test_phi_numpy_state_dict_converts_without_torch():
    sd = _phi_sd()
    out = convert_phi_state_dict(sd, PHI)
    q, k, v = (sd[f"model.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    np.testing.assert_array_equal(out["layers.1.attn.qkv_proj.weight"], np.concatenate([q, k, v]))
    np.testing.assert_array_equal(out["layers.0.attn.out_proj.weight"], sd["model.layers.0.self_attn.dense.weight"])
    model = load_phi(sd, PHI)
    assert model(_ids((1, 3), 61)).shape == (1, 3, 61)


def test_missing_key_is_named():
    sd = _phi_sd()
    del sd["model.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(ValueError, match=r"missing key\(s\): \['model.layers.1.self_attn.k_proj.bias'\]"):
        load_phi(sd, PHI)


def test_misshaped_key_names_both_shapes():
    sd = _phi_sd()
    sd["model.layers.0.mlp.fc1.weight"] = np.zeros((64, 32), np.float32)
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.fc1.weight has shape \(64, 32\), the Phi config "
                                         r"\(hidden_size 32, .*\) needs \(80, 32\)"):
        convert_phi_state_dict(sd, PHI)


def test_unexpected_keys_are_named():
    sd = _phi_sd()
    sd["model.layers.2.mlp.fc1.weight"] = np.zeros((80, 32), np.float32)     # a third layer: config says 2
    with pytest.raises(ValueError, match=r"unexpected key\(s\): \['model.layers.2.mlp.fc1.weight'\]"):
        convert_phi_state_dict(sd, PHI)
    sd = _phi_sd()
    sd["model.layers.0.self_attn.q_layernorm.weight"] = np.ones(8, np.float32)  # qk_layernorm is false
    with pytest.raises(ValueError, match="unexpected key.*q_layernorm"):
        convert_phi_state_dict(sd, PHI)


def test_llama_errors_name_keys_and_shapes():
    cfg = dict(LLAMA, num_hidden_layers=1)
    rng = np.random.default_rng(0)
    sd = {"model.embed_tokens.weight": rng.standard_normal((61, 32)), "model.norm.weight": np.ones(32),
          "lm_head.weight": rng.standard_normal((61, 32)),
          "model.layers.0.input_layernorm.weight": np.ones(32),
          "model.layers.0.post_attention_layernorm.weight": np.ones(32),
          "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((32, 32)),
          "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((32, 32)),   # 4 kv heads; config: 2
          "model.layers.0.self_attn.v_proj.weight": rng.standard_normal((16, 32)),
          "model.layers.0.self_attn.o_proj.weight": rng.standard_normal((32, 32)),
          "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4),
          "model.layers.0.mlp.gate_proj.weight": rng.standard_normal((48, 32)),
          "model.layers.0.mlp.up_proj.weight": rng.standard_normal((48, 32))}
    with pytest.raises(ValueError) as e:
        convert_llama_state_dict(sd, cfg)
    msg = str(e.value)
    assert "missing key(s): ['model.layers.0.mlp.down_proj.weight']" in msg
    assert "model.layers.0.self_attn.k_proj.weight has shape (32, 32)" in msg and "needs (16, 32)" in msg
    assert "inv_freq" not in msg                             # an old checkpoint's rotary table is skipped
    sd["model.layers.0.self_attn.k_proj.weight"] = sd["model.layers.0.self_attn.v_proj.weight"]
    sd["model.layers.0.mlp.down_proj.weight"] = rng.standard_normal((32, 48))
    assert convert_llama_state_dict(sd, cfg)["layers.0.mlp.fc2.weight"].shape == (32, 48)


def test_config_errors():
    with pytest.raises(NotImplementedError, match="rope_scaling"):
        llama_config_from_hf(dict(LLAMA, rope_scaling={"rope_type": "llama3", "factor": 8.0}))
    with pytest.raises(ValueError, match="model_type 'llama', not 'phi'"):
        phi_config_from_hf(LLAMA)
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        llama_config_from_hf(dict(LLAMA, hidden_act="gelu"))
    with pytest.raises(ValueError, match="hidden_size 30 is not a multiple of num_attention_heads 4"):
        phi_config_from_hf(dict(PHI, hidden_size=30))
    with pytest.raises(ValueError, match=r"config\['num_hidden_layers'\] must be an int >= 1"):
        phi_config_from_hf(dict(PHI, num_hidden_layers=0))
    with pytest.raises(TypeError, match="config must be a dict"):
        load_phi({}, [1, 2])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_llama({}, "/nonexistent/config.json")
    with pytest.raises(ValueError, match="layout 'clip' contradicts"):
        vit_config_from_hf(SIGLIP, layout="clip")
    with pytest.raises(ValueError, match="no model_type; pass layout"):
        vit_config_from_hf({})
    with pytest.raises(ValueError, match="num_layers must be an int in 1..3"):
        vit_config_from_hf(SIGLIP, num_layers=0)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        convert_phi_state_dict([1], PHI)
    with pytest.raises(TypeError, match="'model.norm.weight' is not a numeric tensor"):
        convert_llama_state_dict({"model.norm.weight": np.array(["a"])}, LLAMA)


def test_open_clip_layout_is_refused_with_the_reason():
    sd = {"visual.transformer.resblocks.0.attn.in_proj_weight": np.zeros((96, 32), np.float32)}
    with pytest.raises(ValueError, match="open_clip"):
        convert_vit_state_dict(sd, CLIP)


def test_vit_misshaped_position_embedding():
    sd = {"vision_model.embeddings.position_embedding.weight": np.zeros((16, 32), np.float32)}
    with pytest.raises(ValueError) as e:
        convert_vit_state_dict(sd, CLIP)
    assert "vision_model.embeddings.position_embedding.weight has shape (16, 32)" in str(e.value)
    assert "needs (17, 32)" in str(e.value)                 # CLIP: the class position too
    assert "vision_model.embeddings.class_embedding" in str(e.value)


def test_converted_models_save_and_reload_as_mmu_checkpoints(tmp_path):
    # convert once, then the model is an ordinary mmu checkpoint (config.json + model.safetensors)
    lm = load_phi(_phi_sd(1), PHI)
    lm.save_pretrained(tmp_path / "phi")
    again = mmu.nn.TransformerLM.from_pretrained(tmp_path / "phi")
    ids = _ids((1, 4), 61, 2)
    np.testing.assert_array_equal(again(ids).numpy(), lm(ids).numpy())
    from mmu.models.vit import VisionTower
    tower = VisionTower(**vit_config_from_hf(CLIP))
    mmu.nn.init.normal_(tower.post_norm.bias, 0.0, 1.0)
    tower.save_pretrained(tmp_path / "clip")
    back = mmu.nn.Module.from_pretrained(tmp_path / "clip")
    assert isinstance(back, VisionTower) and back.pooling == "cls"
    np.testing.assert_array_equal(back(_images())[1].numpy(), tower(_images())[1].numpy())


def test_prefix_reads_a_model_stored_inside_another():
    # e.g. Show-o keeps its Phi under 'showo.' beside other parts: only those keys are read
    sd = {"showo." + k: v for k, v in _phi_sd(2).items()}
    sd["vq_model.quantize.embedding.weight"] = np.zeros((8, 4), np.float32)
    want = convert_phi_state_dict(_phi_sd(2), PHI)
    got = convert_phi_state_dict(sd, PHI, prefix="showo.")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): \['vq_model.quantize.embedding.weight'"):
        convert_phi_state_dict(dict(_phi_sd(2), **{"vq_model.quantize.embedding.weight": np.zeros(3)}), PHI)
    with pytest.raises(ValueError, match="no key of the state dict starts with prefix 'llm.'"):
        load_llama(sd, LLAMA, prefix="llm.")
