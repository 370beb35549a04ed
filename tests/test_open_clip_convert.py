"""open_clip / OpenAI CLIP checkpoints (mmu/models/vit/convert.py, issue 14 item 2): a state dict in
open_clip's key layout with random values (every parameter, norms and biases included) loads into
mmu.models.vit.VisionTower and gives the outputs of a torch model of that layout written here
(tests/clip_layouts.py) within 1e-5 in float32; configs and key sets mmu does not build are refused
with the reason, and every malformed checkpoint names its keys and shapes."""
import numpy as np
import pytest

from mmu.models.vit import (VisionTower, convert_open_clip_text_state_dict, convert_open_clip_vit_state_dict,
                            load_open_clip_vit, open_clip_text_config, open_clip_vit_config)

ATOL = 1e-5

# a tiny ViT-B-32-like config (open_clip's model_configs/ViT-B-32.json fields at small sizes)
OC = {"embed_dim": 24, "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "head_width": 8, "patch_size": 4},
      "text_cfg": {"context_length": 7, "vocab_size": 50, "width": 32, "heads": 4, "layers": 2}}
# open_clip's SigLIP text side (ViT-B-16-SigLIP.json's text_cfg, tiny)
OC_SIGLIP_TEXT = dict(OC, text_cfg=dict(OC["text_cfg"], no_causal_mask=True, proj_bias=True, pool_type="last",
                                        norm_kwargs={"eps": 1e-6}))


@pytest.fixture(scope="module")
def C():
    pytest.importorskip("torch")
    from tests import clip_layouts, hf_layouts
    clip_layouts.randomize_ = hf_layouts.randomize_
    return clip_layouts


def _sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _images(seed=0):
    return np.random.default_rng(seed).standard_normal((2, 3, 16, 16)).astype(np.float32)


def _close(a, b):
    a = a.numpy() if not isinstance(a, np.ndarray) else a
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu-openai"])
def test_open_clip_vit_matches_torch(C, quick_gelu):
    import torch
    cfg = dict(OC, quick_gelu=quick_gelu)
    ref = C.randomize_(C.OpenClipCLIP(cfg), 11)
    sd = _sd(ref)                                           # the whole CLIP file: text keys and logit_scale too
    sd.update({"input_resolution": np.array(16), "context_length": np.array(7), "vocab_size": np.array(50)})  # OpenAI's
    x = _images()
    pooled, feats = ref.visual(torch.from_numpy(x))
    tower = load_open_clip_vit(sd, cfg)
    assert isinstance(tower, VisionTower) and tower.proj is not None
    assert tower.encoder.layers[0].mlp.activation == ("quick_gelu" if quick_gelu else "gelu")
    got_feats, got_pooled = tower(x)
    _close(got_feats, feats)                                # (B, 1 + N, width), before ln_post
    _close(got_pooled, pooled)                              # encode_image: ln_post(class token) @ visual.proj


def test_open_clip_vit_config_reads_open_clip_defaults():
    c = open_clip_vit_config({"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768,
                                                               "patch_size": 32}})     # ViT-B-32.json
    assert (c["dim"], c["depth"], c["num_heads"], c["hidden_dim"], c["patch_size"], c["projection_dim"]) == \
        (768, 12, 12, 3072, 32, 512)
    assert (c["activation"], c["norm_eps"], c["pooling"], c["layout"]) == ("gelu", 1e-5, "cls", "clip")
    assert open_clip_vit_config({"quick_gelu": True, "vision_cfg": {"final_ln_after_pool": True}})["activation"] == \
        "quick_gelu"


@pytest.mark.parametrize("vision_cfg, reason", [
    ({"layers": [3, 4, 6, 3]}, "ModifiedResNet"),
    ({"timm_model_name": "vit_base_patch16_siglip_224"}, "timm tower"),
    ({"ls_init_value": 1e-5}, "layer scale"),
    ({"attentional_pool": True}, "attention pooler"),
    ({"no_ln_pre": True}, "ln_pre"),
    ({"pool_type": "avg"}, "class token"),
    ({"qk_norm": True}, "CustomResidualAttentionBlock"),
    ({"act_kwargs": {"approximate": "tanh"}}, "act_kwargs"),
    ({"norm_kwargs": {"eps": 1e-6, "elementwise_affine": False}}, "norm_kwargs"),
])
def test_open_clip_vit_config_refuses_what_mmu_does_not_build(vision_cfg, reason):
    with pytest.raises(ValueError, match=reason):
        open_clip_vit_config({"vision_cfg": vision_cfg})


def test_open_clip_keys_errors_name_keys_and_shapes(C):
    sd = _sd(C.randomize_(C.OpenClipCLIP(OC), 12))
    del sd["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    sd["visual.proj"] = np.zeros((32, 16), np.float32)
    sd["visual.transformer.resblocks.0.ls_1.gamma"] = np.ones(32, np.float32)   # layer scale: not this config
    with pytest.raises(ValueError) as e:
        convert_open_clip_vit_state_dict(sd, OC)
    msg = str(e.value)
    assert "missing key(s): ['visual.transformer.resblocks.1.mlp.c_fc.bias']" in msg
    assert "visual.proj has shape (32, 16), the open_clip vision config" in msg and "needs (32, 24)" in msg
    assert "unexpected key(s): ['visual.transformer.resblocks.0.ls_1.gamma']" in msg
    with pytest.raises(ValueError, match="timm vision tower .* names no vision_cfg.timm_model_name"):
        convert_open_clip_vit_state_dict({"visual.trunk.pos_embed": np.zeros((1, 16, 32), np.float32)}, OC)
    with pytest.raises(ValueError, match="Hugging Face keys"):
        convert_open_clip_vit_state_dict({"vision_model.post_layernorm.weight": np.ones(32, np.float32)}, OC)


def test_open_clip_text_keys_map_onto_text_encoder_names(C):
    # the key table, checked without TextEncoder: the CLIP file's top-level text keys and CustomTextCLIP's text.*
    ref = C.randomize_(C.OpenClipCLIP(OC), 13)
    sd = _sd(ref)
    out = convert_open_clip_text_state_dict(sd, OC)
    np.testing.assert_array_equal(out["head.weight"], sd["text_projection"].T)
    np.testing.assert_array_equal(out["layers.1.attn.qkv_proj.weight"],
                                  sd["transformer.resblocks.1.attn.in_proj_weight"])
    np.testing.assert_array_equal(out["pos_embedding"][0], sd["positional_embedding"])
    assert "head.bias" not in out and not any(k.startswith("encoder.") for k in out)
    sig = _sd(C.randomize_(C.OpenClipCustomTextCLIP(OC_SIGLIP_TEXT), 14))
    out = convert_open_clip_text_state_dict(sig, OC_SIGLIP_TEXT)
    np.testing.assert_array_equal(out["head.bias"], sig["text.text_projection.bias"])
    np.testing.assert_array_equal(out["final_norm.weight"], sig["text.ln_final.weight"])
    assert open_clip_text_config(OC_SIGLIP_TEXT)["layout"] == "siglip"
    c = open_clip_text_config(OC)
    assert (c["layout"], c["eot_token_id"], c["activation"], c["norm_eps"], c["embed_dim"]) == \
        ("clip", None, "gelu", 1e-5, 24)


@pytest.mark.parametrize("text_cfg, reason", [
    ({"hf_model_name": "xlm-roberta-base"}, "Hugging Face text tower"),
    ({"text_arch": "modern"}, "ModernTextTransformer"),
    ({"embed_cls": True}, "class token"),
    ({"pool_type": "first"}, "not one of TextEncoder's layouts"),
    ({"no_causal_mask": True}, "not one of TextEncoder's layouts"),          # bidirectional + argmax
    ({"proj_bias": True}, "bias exactly in the SigLIP layout"),
    ({"pool_type": "eos"}, "eos_id"),                                          # eos pooling needs the id
])
def test_open_clip_text_config_refuses_other_layouts(text_cfg, reason):
    with pytest.raises(ValueError, match=reason):
        open_clip_text_config({"text_cfg": text_cfg})


# ------------------------------------------------------------------ Hugging Face text towers' key table

SIGLIP_TEXT = dict(model_type="siglip_text_model", vocab_size=50, hidden_size=32, intermediate_size=48,
                   num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=7)
CLIP_TEXT = dict(model_type="clip_text_model", vocab_size=50, hidden_size=32, intermediate_size=48,
                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=7, eos_token_id=49, projection_dim=24)


def test_hf_text_keys_map_onto_text_encoder_names(C):
    from mmu.models.vit import convert_text_state_dict, text_config_from_hf
    sd = _sd(C.randomize_(C.SiglipTextModel(SIGLIP_TEXT), 15))
    out = convert_text_state_dict(sd, SIGLIP_TEXT)
    q, k, v = (sd[f"text_model.encoder.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    np.testing.assert_array_equal(out["layers.1.attn.qkv_proj.weight"], np.concatenate([q, k, v]))
    np.testing.assert_array_equal(out["head.bias"], sd["text_model.head.bias"])
    np.testing.assert_array_equal(out["pos_embedding"][0], sd["text_model.embeddings.position_embedding.weight"])
    cfg = text_config_from_hf(SIGLIP_TEXT)
    assert (cfg["layout"], cfg["embed_dim"], cfg["activation"], cfg["norm_eps"]) == ("siglip", 32, "gelu_tanh", 1e-6)
    # CLIP: text_projection (no bias) sits beside text_model in CLIPModel / CLIPTextModelWithProjection
    sd = _sd(C.randomize_(C.CLIPTextModel(CLIP_TEXT, projection_dim=24), 16))
    sd["text_model.embeddings.position_ids"] = np.arange(7)[None]          # older files store the buffer
    out = convert_text_state_dict(sd, CLIP_TEXT)
    np.testing.assert_array_equal(out["head.weight"], sd["text_projection.weight"])
    assert "head.bias" not in out
    cfg = text_config_from_hf(CLIP_TEXT, projection=True)
    assert (cfg["layout"], cfg["eot_token_id"], cfg["activation"], cfg["embed_dim"]) == ("clip", 49, "quick_gelu", 24)
    assert text_config_from_hf(dict(CLIP_TEXT, eos_token_id=2), projection=False)["eot_token_id"] is None  # argmax
    without = convert_text_state_dict({k: a for k, a in sd.items() if k != "text_projection.weight"}, CLIP_TEXT)
    assert "head.weight" not in without
    with pytest.raises(ValueError, match="open_clip / OpenAI CLIP keys"):
        convert_text_state_dict({"token_embedding.weight": np.zeros((50, 32), np.float32)}, CLIP_TEXT)
    del sd["text_model.encoder.layers.0.self_attn.v_proj.bias"]
    sd["text_model.final_layer_norm.weight"] = np.ones(30, np.float32)
    with pytest.raises(ValueError) as e:
        convert_text_state_dict(sd, CLIP_TEXT)
    assert "missing key(s): ['text_model.encoder.layers.0.self_attn.v_proj.bias']" in str(e.value)
    assert "text_model.final_layer_norm.weight has shape (30,)" in str(e.value) and "needs (32,)" in str(e.value)


# ------------------------------------------------------------------ text towers -> TextEncoder, parity

def _ids(vocab, L, eot=None, seed=0):
    """(2, L) ids below vocab; with eot the rows hold it once (row 0 at L - 3, row 1 at the end)."""
    ids = np.random.default_rng(seed).integers(0, vocab - 1 if eot is None else vocab, (2, L)).astype(np.int64)
    if eot is not None:
        ids[ids == eot] = 0
        ids[0, L - 3], ids[1, L - 1] = eot, eot
    return ids


@pytest.mark.parametrize("extra", [{}, {"projection_size": 24}], ids=["siglip", "siglip-projection_size"])
def test_hf_siglip_text_matches_torch(C, extra):
    import torch
    from mmu.models.vila_u.convert import load_text_encoder
    cfg = dict(SIGLIP_TEXT, **extra)
    ref = C.randomize_(C.SiglipTextModel(cfg), 17)
    enc = load_text_encoder(_sd(ref), cfg)
    ids = _ids(50, 7)
    last, pooled = ref(torch.from_numpy(ids))
    feats, got = enc(ids)
    _close(feats, last)
    _close(got, pooled)                                      # head(final_layer_norm(x)[:, -1])


@pytest.mark.parametrize("eos, projection", [(49, True), (2, True), (49, False)],
                         ids=["eos-id", "argmax-legacy", "no-projection"])
def test_hf_clip_text_matches_torch(C, eos, projection):
    import torch
    from mmu.models.vila_u.convert import load_text_encoder
    cfg = dict(CLIP_TEXT, eos_token_id=eos)
    ref = C.randomize_(C.CLIPTextModel(cfg, projection_dim=24 if projection else None), 18)
    sd = _sd(ref)
    # a full CLIPModel file: the vision half and logit_scale are skipped
    sd.update({"vision_model.post_layernorm.weight": np.ones(32, np.float32), "logit_scale": np.array(2.6),
               "visual_projection.weight": np.zeros((24, 32), np.float32)})
    full = {"model_type": "clip", "projection_dim": 24,
            "text_config": {k: v for k, v in cfg.items() if k not in ("model_type", "projection_dim")}}
    enc = load_text_encoder(sd, full)
    # eos 49 is the highest id too: the legacy argmax and the eos lookup pick the same position
    ids = _ids(50, 7, eot=49, seed=1)
    last, pooled = ref(torch.from_numpy(ids))
    feats, got = enc(ids)
    _close(feats, last)                                     # causal mask
    _close(got, pooled)                                     # at the eot token, then text_projection (or none)
    assert enc.eot_token_id == (None if eos == 2 else 49)


@pytest.mark.parametrize("cfg", [OC, dict(OC, quick_gelu=True), OC_SIGLIP_TEXT,
                                 dict(OC, text_cfg=dict(OC["text_cfg"], pool_type="eos", eos_id=49))],
                         ids=["clip-argmax", "openai-quick_gelu", "siglip-custom_text", "clip-eos"])
def test_open_clip_text_matches_torch(C, cfg):
    import torch
    from mmu.models.vila_u.convert import load_open_clip_text
    custom = cfg["text_cfg"].get("no_causal_mask", False)
    ref = C.randomize_((C.OpenClipCustomTextCLIP if custom else C.OpenClipCLIP)(cfg), 19)
    enc = load_open_clip_text(_sd(ref), cfg)
    ids = _ids(50, 7, eot=None if custom else 49, seed=2)
    feats, pooled = ref.encode_text(torch.from_numpy(ids))
    got_feats, got = enc(ids)
    _close(got_feats, feats)
    _close(got, pooled)                                     # encode_text before normalisation


# ------------------------------------------------------------------ open_clip's timm SigLIP towers

OC_TIMM = dict(OC_SIGLIP_TEXT, vision_cfg={"image_size": 16, "timm_model_name": "vit_base_patch16_siglip_224",
                                           "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"})


def test_open_clip_timm_siglip_matches_torch(C):
    import torch
    ref = C.randomize_(C.OpenClipSiglip(OC_TIMM, 32, 2, 4, 48, 4), 23)
    sd = _sd(ref)
    tower = load_open_clip_vit(sd, OC_TIMM, num_heads=4)
    assert tower.layout == "siglip" and tower.head is not None and len(tower.encoder.layers) == 2
    x = _images(3)
    feats, pooled = ref.visual.trunk(torch.from_numpy(x))
    got_feats, got_pooled = tower(x)
    _close(got_feats, feats)                                 # forward_features: after the trunk's final norm
    _close(got_pooled, pooled)                               # the MAP head = encode_image with timm_proj 'none'
    with pytest.raises(ValueError, match="num_heads must be given"):
        load_open_clip_vit(sd, OC_TIMM)
    for change, reason in (({"timm_pool": "avg"}, "timm_pool 'avg'"), ({"timm_proj": "linear"}, "projection head"),
                           ({"timm_model_name": "convnext_base"}, "not one of timm's SigLIP ViTs")):
        cfg = dict(OC_TIMM, vision_cfg=dict(OC_TIMM["vision_cfg"], **change))
        with pytest.raises(ValueError, match=reason):
            convert_open_clip_vit_state_dict(sd, cfg, num_heads=4)
    sd["visual.trunk.cls_token"] = np.zeros((1, 1, 32), np.float32)
    with pytest.raises(ValueError, match="class / register token"):
        convert_open_clip_vit_state_dict(sd, OC_TIMM, num_heads=4)
    del sd["visual.trunk.cls_token"], sd["visual.trunk.attn_pool.kv.bias"]
    sd["visual.trunk.attn_pool.q_norm.weight"] = np.ones(8, np.float32)
    with pytest.raises(ValueError) as e:
        convert_open_clip_vit_state_dict(sd, OC_TIMM, num_heads=4)
    assert "missing key(s): ['visual.trunk.attn_pool.kv.bias']" in str(e.value)
    assert "unexpected key(s): ['visual.trunk.attn_pool.q_norm.weight']" in str(e.value)


def test_hf_clip_vision_projection_gives_image_embeds(C):
    # CLIPModel's visual_projection (no bias) on the pooled class token: transformers' image_embeds
    import torch
    from mmu.models.vit import convert_vit_state_dict, load_vit
    from tests.hf_layouts import CLIPVisionModel
    vcfg = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, image_size=16, patch_size=4)
    ref = C.randomize_(CLIPVisionModel(vcfg), 27)
    sd = _sd(ref)
    w = np.random.default_rng(7).standard_normal((24, 32)).astype(np.float32)
    sd["visual_projection.weight"] = w
    full = {"model_type": "clip", "projection_dim": 24,
            "vision_config": {k: v for k, v in vcfg.items() if k != "model_type"}}
    x = _images(5)
    _, pooled, _ = ref(torch.from_numpy(x))
    tower = load_vit(sd, full, projection=True)
    _close(tower(x)[1], pooled.detach().numpy() @ w.T)
    assert load_vit(sd, full).proj is None                   # by default the projection is skipped, as before
    with pytest.raises(ValueError, match=r"visual_projection.weight has shape \(24, 32\)"):
        convert_vit_state_dict(sd, dict(full, projection_dim=16), projection=True)
    with pytest.raises(ValueError, match="projection is CLIP's visual_projection"):
        convert_vit_state_dict(sd, full, projection=True, num_layers=1)


def test_open_clip_text_without_projection_pools_through_an_identity_head(C):
    import torch
    from mmu.models.vila_u.convert import load_open_clip_text
    cfg = dict(OC, text_cfg=dict(OC["text_cfg"], proj_type="none"))
    ref = C.randomize_(C.OpenClipCLIP(OC), 28)
    sd = {k: v for k, v in _sd(ref).items() if k != "text_projection"}
    enc = load_open_clip_text(sd, cfg)
    assert open_clip_text_config(cfg)["embed_dim"] is None and enc.embed_dim == 32
    ids = _ids(50, 7, eot=49, seed=3)
    feats, _ = ref.encode_text(torch.from_numpy(ids))
    got_feats, got = enc(ids)
    _close(got_feats, feats)
    _close(got, feats[torch.arange(2), torch.from_numpy(ids).argmax(-1)])     # ln_final at the eot, unprojected
    with pytest.raises(ValueError, match=r"unexpected key\(s\): \['text_projection'\]"):
        load_open_clip_text(_sd(ref), cfg)
